//! What a metadata request can be refused for. It travels to clients, so it
//! is serializable and carries the names a CLI or S3 error needs.

use chuyi_common::ids::NodeId;
use serde::{Deserialize, Serialize};

/// A refused request. Every variant leaves the state unchanged: the state
/// machine validates a command completely before staging any write.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum MetaError {
    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: Kind, name: String },
    #[error("no such {kind} {name:?}")]
    NotFound { kind: Kind, name: String },
    #[error("invalid {what}: {why}")]
    Invalid { what: String, why: String },
    #[error("volume of {requested} bytes exceeds what pool {pool:?} can hold ({available} bytes)")]
    VolumeTooLarge { pool: String, requested: u64, available: u64 },
    #[error("volume {volume:?} can only grow: it is {current} bytes, asked {requested}")]
    VolumeShrink { volume: String, current: u64, requested: u64 },
    #[error("volume {volume:?} is attached by {holder:?} until {expires_ms}")]
    LeaseHeld { volume: String, holder: String, expires_ms: u64 },
    #[error("lease {lease_id} of {holder:?} on volume {volume:?} is not the live lease")]
    StaleLease { volume: String, holder: String, lease_id: u64 },
    #[error("{kind} {name:?} is in use by {user_kind} {user:?}")]
    InUse { kind: Kind, name: String, user_kind: Kind, user: String },
    #[error("bucket {0:?} is not empty")]
    BucketNotEmpty(String),
    #[error("object data {owner:#x} is no longer pending: it expired or was abandoned")]
    DataNotPending { owner: u64 },
    #[error("upload {upload_id:?}: {problem}")]
    BadUpload { upload_id: String, problem: UploadProblem },
    #[error("placement: {0}")]
    Placement(String),
    #[error("node {0} is not registered")]
    UnknownNode(NodeId),
    #[error("this member is not the leader; the leader is {leader:?}")]
    NotLeader { leader: Option<String> },
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The caller's role may not make this call (`access.rs`): a
    /// misconfigured credential, or a process trying what is not its own.
    #[error("{caller} may not {action}")]
    Forbidden { caller: String, action: String },
    #[error("metadata service unavailable: {0}")]
    Unavailable(String),
    #[error("internal metadata error: {0}")]
    Internal(String),
    /// An object key of no bytes or more than S3 allows (its own variant:
    /// S3 answers KeyTooLongError, not InvalidArgument). Last, so the
    /// variants before keep their wire numbers.
    #[error("object key of {len} bytes: keys are 1 to {max} bytes")]
    KeyLength { len: usize, max: usize },
    /// A conditional write's condition does not hold for the key's current
    /// object (S3's PreconditionFailed). Appended for the same reason.
    #[error("object {key:?}: {condition} does not hold")]
    ConditionFailed { key: String, condition: crate::model::WriteCondition },
    /// Object lock refuses removing or shortening the lock of a version.
    #[error("{what} is protected by object lock: {why}")]
    Locked { what: String, why: crate::model::LockRefusal },
    /// What the bucket's state does not allow (versioning suspended under
    /// object lock, object lock on an unversioned bucket): S3's
    /// InvalidBucketState.
    #[error("bucket {bucket:?}: {why}")]
    BucketState { bucket: String, why: String },
}

/// The kinds of named things in error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Node,
    Pool,
    Volume,
    User,
    AccessKey,
    Bucket,
    Object,
    Version,
    Member,
    Upload,
    Part,
    QosRule,
    /// A volume in the recycle bin.
    TrashedVolume,
    Snapshot,
}

/// Why a multipart upload cannot complete (S3's InvalidPartOrder,
/// InvalidPart and EntityTooSmall).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum UploadProblem {
    #[error("parts must be listed in ascending order, each once")]
    PartOrder,
    #[error("no parts were listed")]
    NoParts,
    #[error("part {0} was not uploaded, or was replaced since it was listed")]
    NoSuchPart(u32),
    #[error("part {number} is {size} bytes; every part but the last must be at least {min}")]
    PartTooSmall { number: u32, size: u64, min: u64 },
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Node => "node",
            Kind::Pool => "pool",
            Kind::Volume => "volume",
            Kind::User => "user",
            Kind::AccessKey => "access key",
            Kind::Bucket => "bucket",
            Kind::Object => "object",
            Kind::Version => "version",
            Kind::Member => "member",
            Kind::Upload => "upload",
            Kind::Part => "part",
            Kind::QosRule => "QoS rule",
            Kind::TrashedVolume => "volume in the recycle bin",
            Kind::Snapshot => "snapshot",
        })
    }
}

impl MetaError {
    /// Whether the service decided against the request (as opposed to not
    /// being reached): retrying the same request gets the same answer.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, MetaError::NotLeader { .. } | MetaError::Unavailable(_) | MetaError::Internal(_))
    }

    pub fn exists(kind: Kind, name: impl Into<String>) -> Self {
        MetaError::AlreadyExists { kind, name: name.into() }
    }

    pub fn not_found(kind: Kind, name: impl Into<String>) -> Self {
        MetaError::NotFound { kind, name: name.into() }
    }

    pub fn invalid(what: impl Into<String>, why: impl Into<String>) -> Self {
        MetaError::Invalid { what: what.into(), why: why.into() }
    }

    /// Whether a client may retry the same request elsewhere or later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, MetaError::NotLeader { .. } | MetaError::Unavailable(_))
    }
}
