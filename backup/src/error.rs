//! Errors of the backup layer: the target's (S3) and the backup's own.

use std::time::Duration;

use chuyi_client::ClientError;
use http::StatusCode;

/// What went wrong talking to the target.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("bad endpoint {0}")]
    Endpoint(String),
    #[error("S3 credentials: {0}")]
    Credentials(String),
    #[error("connecting to {endpoint}: {error}")]
    Connect { endpoint: String, error: std::io::Error },
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("tls: {0}")]
    Tls(String),
    #[error("signing: {0}")]
    Sign(String),
    #[error("{op} got no answer in {after:?}")]
    Timeout { op: &'static str, after: Duration },
    /// The target answered with an error status.
    #[error("{op} answered {status} {code}: {message}")]
    Status { op: &'static str, status: StatusCode, code: String, message: String },
    /// The target's answer does not say what the request needs to know.
    #[error("{op}: {what}")]
    Reply { op: &'static str, what: String },
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("the backup target: {0}")]
    Target(#[from] S3Error),
    #[error(transparent)]
    Cluster(#[from] ClientError),
    /// A target, piece or manifest this code cannot read: tampered with,
    /// truncated, or of another format.
    #[error("{what} is corrupt: {why}")]
    Corrupt { what: String, why: String },
    #[error("the target's backup key does not open with this KEK ({0}): restoring needs the KEK the backups were made under")]
    WrongKek(String),
    #[error("backups need the master key (KEK): --kek-file, $CHUYI_KEK_FILE, $CHUYI_KEK or kek_file in the config")]
    NoKek,
    #[error("no backup {0} in the target")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// A snapshot the backup reads from, or diffs against, was deleted
    /// meanwhile: a node would have answered from the next newer view, so
    /// nothing read since can be trusted.
    #[error("snapshot {snapshot} of volume {volume} was deleted while the backup used it; run the backup again")]
    SnapshotGone { volume: String, snapshot: String },
    /// Another process holds the target in a way this one cannot share.
    #[error(
        "the target is locked by {0}; try again when it is done (a lock of a killed process runs out in 5 minutes)"
    )]
    Locked(String),
}

impl BackupError {
    pub fn corrupt(what: impl Into<String>, why: impl Into<String>) -> Self {
        Self::Corrupt { what: what.into(), why: why.into() }
    }
}
