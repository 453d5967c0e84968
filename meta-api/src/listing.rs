//! The S3 listings the metadata service answers: what a page asks for
//! and what it returns (the scan itself is the service's:
//! `metadata/src/state/listing.rs`).

use serde::{Deserialize, Serialize};

use crate::model::ObjectRecord;

/// Most entries one page returns, as S3.
pub const LIST_MAX_KEYS: u32 = 1000;

/// Where a page resumes: after every version of `key`; after every key
/// under `key` when `past_prefix` (it was a common prefix); or, with `seq`,
/// right after that version of `key`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListCursor {
    pub key: String,
    pub past_prefix: bool,
    pub seq: Option<u64>,
}

impl ListCursor {
    /// S3's start-after / key-marker.
    pub fn after_key(key: impl Into<String>) -> Self {
        Self { key: key.into(), past_prefix: false, seq: None }
    }

    /// S3's key-marker with version-id-marker (the version's sequence).
    pub fn after_version(key: impl Into<String>, seq: u64) -> Self {
        Self { key: key.into(), past_prefix: false, seq: Some(seq) }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListRequest {
    pub bucket: String,
    pub prefix: String,
    pub delimiter: Option<String>,
    pub after: Option<ListCursor>,
    pub max_keys: u32,
    /// Every version and delete marker, not only live latest versions.
    pub versions: bool,
}

/// What a listing shows of a version: not its chunk list or metadata, so a
/// page of 1000 stays far below the RPC payload limit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectSummary {
    pub seq: u64,
    pub version_id: String,
    pub delete_marker: bool,
    pub size: u64,
    pub etag: String,
    pub modified_ms: u64,
}

impl From<ObjectRecord> for ObjectSummary {
    fn from(r: ObjectRecord) -> Self {
        Self {
            seq: r.seq,
            version_id: r.version_id,
            delete_marker: r.delete_marker,
            size: r.data.size,
            etag: r.data.etag,
            modified_ms: r.modified_ms,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    pub key: String,
    pub object: ObjectSummary,
    /// The newest version of its key (always true in a plain listing).
    pub is_latest: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    pub entries: Vec<ListEntry>,
    pub common_prefixes: Vec<String>,
    /// Set when more remain: pass it back as `after`.
    pub next: Option<ListCursor>,
}
