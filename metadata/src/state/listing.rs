//! S3 listings over the object index: ListObjectsV2 (latest versions, delete
//! markers hidden) and ListObjectVersions (every version and marker), both
//! with prefix, delimiter roll-up into common prefixes, a resume position and
//! a page size.
//!
//! A listing is one forward scan of the bucket's range, read in batches;
//! older versions of a key and every key under a common prefix already
//! reported are skipped by seeking past them, so a page costs about
//! `max_keys` reads however many versions or keys sit under a prefix.

use serde::{Deserialize, Serialize};

use super::keys;
use super::model::ObjectRecord;
use super::tables::Tables;
use crate::store::codec::decode;
use crate::store::StoreError;

/// Most entries one page returns, as S3.
pub const LIST_MAX_KEYS: u32 = 1000;

/// Pairs read per scan of a listing.
const SCAN_BATCH: usize = 256;

/// Where a page resumes: after `key` (all its versions), or after every key
/// under `key` when it was a common prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListCursor {
    pub key: String,
    pub past_prefix: bool,
    /// ListObjectVersions only: resume after this version of `key` instead
    /// of after all of them.
    pub version_id: Option<String>,
}

impl ListCursor {
    pub fn after_key(key: impl Into<String>) -> Self {
        Self { key: key.into(), past_prefix: false, version_id: None }
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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    pub key: String,
    pub record: ObjectRecord,
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

enum Item {
    Entry(ListEntry),
    Prefix(String),
}

impl Item {
    fn cursor(&self) -> ListCursor {
        match self {
            Item::Entry(e) => {
                ListCursor { key: e.key.clone(), past_prefix: false, version_id: Some(e.record.version_id.clone()) }
            }
            Item::Prefix(p) => ListCursor { key: p.clone(), past_prefix: true, version_id: None },
        }
    }
}

/// First scan key after `cursor`.
fn resume_key(t: &impl Tables, bucket: &str, cursor: &ListCursor, versions: bool) -> Result<Vec<u8>, StoreError> {
    let all_after = |k: Vec<u8>| keys::prefix_end(&k).unwrap_or(k);
    if cursor.past_prefix {
        return Ok(all_after(keys::object_prefix(bucket, &cursor.key)));
    }
    if let (true, Some(version_id)) = (versions, &cursor.version_id) {
        if let Some(r) = super::view::object_version(t, bucket, &cursor.key, version_id, usize::MAX)? {
            let mut k = keys::object_version(bucket, &cursor.key, r.seq);
            k.push(0);
            return Ok(k);
        }
    }
    Ok(all_after(keys::object_versions(bucket, &cursor.key)))
}

pub(crate) fn list(t: &impl Tables, req: &ListRequest) -> Result<Listing, StoreError> {
    let max_keys = req.max_keys.min(LIST_MAX_KEYS) as usize;
    if max_keys == 0 {
        return Ok(Listing::default());
    }
    let bucket_prefix = keys::bucket_objects(&req.bucket);
    let range_start = keys::object_prefix(&req.bucket, &req.prefix);
    let end = keys::prefix_end(&range_start).unwrap_or_else(|| vec![0xFF; range_start.len() + 1]);
    let mut start = range_start;
    if let Some(cursor) = &req.after {
        start = start.max(resume_key(t, &req.bucket, cursor, req.versions)?);
    }
    // Resuming inside a key's versions: the first one seen is not its latest.
    let mut last_key: Option<String> =
        req.after.as_ref().filter(|c| req.versions && !c.past_prefix && c.version_id.is_some()).map(|c| c.key.clone());

    let mut items: Vec<Item> = Vec::new();
    'scan: while items.len() <= max_keys {
        let batch = t.scan(&start, &end, SCAN_BATCH)?;
        let Some((last_raw, _)) = batch.last() else { break };
        let mut next_start = last_raw.clone();
        next_start.push(0);
        for (raw, value) in &batch {
            if *raw < start {
                continue;
            }
            let (key, _seq) = keys::parse_object(&bucket_prefix, raw)
                .ok_or_else(|| StoreError::Invariant(format!("malformed object index key {raw:02x?}")))?;
            if let Some(prefix) = rolled_up(&req.prefix, req.delimiter.as_deref(), &key) {
                items.push(Item::Prefix(prefix.to_string()));
                start = keys::prefix_end(&keys::object_prefix(&req.bucket, prefix)).unwrap_or_else(|| end.clone());
                continue 'scan;
            }
            let is_latest = last_key.as_deref() != Some(key.as_str());
            last_key = Some(key.clone());
            let record: ObjectRecord = decode("object", value)?;
            if req.versions {
                items.push(Item::Entry(ListEntry { key, record, is_latest }));
            } else {
                // Only the newest version counts; skip the older ones.
                let skip = keys::prefix_end(&keys::object_versions(&req.bucket, &key)).unwrap_or_else(|| end.clone());
                if !record.delete_marker {
                    items.push(Item::Entry(ListEntry { key, record, is_latest: true }));
                }
                start = skip;
                if items.len() > max_keys {
                    break 'scan;
                }
                continue;
            }
            if items.len() > max_keys {
                break 'scan;
            }
            start = raw.clone();
            start.push(0);
        }
        start = start.max(next_start);
    }

    let next = if items.len() > max_keys {
        items.truncate(max_keys);
        items.last().map(Item::cursor)
    } else {
        None
    };
    let mut listing = Listing { next, ..Listing::default() };
    for item in items {
        match item {
            Item::Entry(e) => listing.entries.push(e),
            Item::Prefix(p) => listing.common_prefixes.push(p),
        }
    }
    Ok(listing)
}

/// The common prefix `key` rolls up into: the part up to and including the
/// first `delimiter` after `prefix`.
fn rolled_up<'k>(prefix: &str, delimiter: Option<&str>, key: &'k str) -> Option<&'k str> {
    let delimiter = delimiter.filter(|d| !d.is_empty())?;
    let rest = key.get(prefix.len()..)?;
    let at = rest.find(delimiter)?;
    key.get(..prefix.len() + at + delimiter.len())
}
