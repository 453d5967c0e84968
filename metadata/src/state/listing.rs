//! S3 listings over the object index: ListObjectsV2 (latest versions, delete
//! markers hidden) and ListObjectVersions (every version and marker), both
//! with prefix, delimiter roll-up into common prefixes, a resume position and
//! a page size.
//!
//! A listing is one forward scan of the bucket's range, read in batches;
//! older versions of a key and every key under a common prefix already
//! reported are skipped by seeking past them, so a page costs about
//! `max_keys` reads however many versions or keys sit under a prefix.

pub use chuyi_meta_api::listing::*;

use super::keys;
use super::model::ObjectRecord;
use super::tables::TableError;
use super::tables::Tables;
use crate::store::codec::decode;

/// Index pairs one page may examine; past it the page ends early with a
/// cursor (S3 allows a short truncated page), so a prefix full of delete
/// markers cannot make one request scan without bound.
pub const LIST_SCAN_BUDGET_PAIRS: usize = 100_000;

/// Pairs read per scan of a listing, at most.
const SCAN_BATCH: usize = 256;
/// Pairs read by the first scan after a seek past a common prefix: the
/// next prefix is usually a few pairs on, and a full batch there copied
/// 256 pairs to use one (60 µs per folder of a delimited listing, against
/// 1 µs per key of a flat one: bench/RESULTS.md, the count benchmark).
/// Each batch used to its end doubles the next, up to [`SCAN_BATCH`].
const SCAN_BATCH_AFTER_SEEK: usize = 8;

enum Item {
    Entry(ListEntry),
    Prefix(String),
}

impl Item {
    fn cursor(&self, versions: bool) -> ListCursor {
        match self {
            Item::Entry(e) => {
                ListCursor { key: e.key.clone(), past_prefix: false, seq: versions.then_some(e.object.seq) }
            }
            Item::Prefix(p) => ListCursor { key: p.clone(), past_prefix: true, seq: None },
        }
    }
}

/// First index key after `cursor`.
fn resume_key(bucket: &str, cursor: &ListCursor) -> Vec<u8> {
    let all_after = |k: Vec<u8>| keys::prefix_end(&k).unwrap_or(k);
    match (cursor.past_prefix, cursor.seq) {
        (true, _) => all_after(keys::object_prefix(bucket, &cursor.key)),
        (false, Some(seq)) => {
            let mut k = keys::object_version(bucket, &cursor.key, seq);
            k.push(0);
            k
        }
        (false, None) => all_after(keys::object_versions(bucket, &cursor.key)),
    }
}

fn malformed(raw: &[u8]) -> TableError {
    TableError::Invariant(format!("malformed object index key {raw:02x?}"))
}

pub(crate) fn list(t: &impl Tables, req: &ListRequest) -> Result<Listing, TableError> {
    let max_keys = req.max_keys.min(LIST_MAX_KEYS) as usize;
    if max_keys == 0 {
        return Ok(Listing::default());
    }
    let bucket_prefix = keys::bucket_objects(&req.bucket);
    let range_start = keys::object_prefix(&req.bucket, &req.prefix);
    let end = keys::prefix_end(&range_start).unwrap_or_else(|| vec![0xFF; range_start.len() + 1]);
    let mut start = range_start;
    // Resuming inside a key's versions: is the next one still its latest?
    let mut last_key: Option<String> = None;
    if let Some(cursor) = &req.after {
        start = start.max(resume_key(&req.bucket, cursor));
        if let (false, Some(seq)) = (cursor.past_prefix, cursor.seq) {
            let latest = super::view::latest_object(t, &req.bucket, &cursor.key)?;
            if latest.is_some_and(|l| l.seq >= seq) {
                last_key = Some(cursor.key.clone());
            }
        }
    }

    let mut items: Vec<Item> = Vec::new();
    let mut examined = 0usize;
    let mut out_of_budget: Option<ListCursor> = None;
    let mut batch_size = SCAN_BATCH;
    'scan: while items.len() <= max_keys {
        let batch = t.scan(&start, &end, batch_size)?;
        batch_size = (batch_size * 2).min(SCAN_BATCH);
        let Some((last_raw, _)) = batch.last() else { break };
        let mut next_start = last_raw.clone();
        next_start.push(0);
        for (raw, value) in &batch {
            if *raw < start {
                continue;
            }
            let (key, seq) = keys::parse_object(&bucket_prefix, raw).ok_or_else(|| malformed(raw))?;
            examined += 1;
            if examined > LIST_SCAN_BUDGET_PAIRS {
                // Resume exactly here: just after the (possibly absent)
                // next-newer version of this key.
                out_of_budget = Some(ListCursor { key, past_prefix: false, seq: seq.checked_add(1) });
                break 'scan;
            }
            if req.versions {
                // Delete markers are versions here: every key rolls up.
                if let Some(prefix) = rolled_up(&req.prefix, req.delimiter.as_deref(), &key) {
                    items.push(Item::Prefix(prefix.to_string()));
                    start = keys::prefix_end(&keys::object_prefix(&req.bucket, prefix)).unwrap_or_else(|| end.clone());
                    batch_size = SCAN_BATCH_AFTER_SEEK;
                    continue 'scan;
                }
                let record: ObjectRecord = decode("object", value)?;
                let is_latest = last_key.as_deref() != Some(key.as_str());
                last_key = Some(key.clone());
                items.push(Item::Entry(ListEntry { key, object: record.into(), is_latest }));
                start = raw.clone();
                start.push(0);
            } else {
                // The first version seen is the newest; skip the older ones.
                start = keys::prefix_end(&keys::object_versions(&req.bucket, &key)).unwrap_or_else(|| end.clone());
                let record: ObjectRecord = decode("object", value)?;
                if record.delete_marker {
                    continue; // a deleted key shows neither itself nor its prefix
                }
                if let Some(prefix) = rolled_up(&req.prefix, req.delimiter.as_deref(), &key) {
                    items.push(Item::Prefix(prefix.to_string()));
                    start = keys::prefix_end(&keys::object_prefix(&req.bucket, prefix)).unwrap_or_else(|| end.clone());
                    if items.len() > max_keys {
                        break 'scan;
                    }
                    batch_size = SCAN_BATCH_AFTER_SEEK;
                    continue 'scan;
                }
                items.push(Item::Entry(ListEntry { key, object: record.into(), is_latest: true }));
            }
            if items.len() > max_keys {
                break 'scan;
            }
        }
        start = start.max(next_start);
    }

    let next = if items.len() > max_keys {
        items.truncate(max_keys);
        items.last().map(|i| i.cursor(req.versions))
    } else {
        out_of_budget
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
