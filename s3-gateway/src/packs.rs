//! Where small objects' data goes: byte ranges of this gateway's open
//! pack, one per pool (metadata's `Pack`: a chunk owner many objects
//! share).
//!
//! A range is handed out once, aligned to a block, so concurrent PUTs
//! write disjoint blocks of the same chunks and no write ever reads and
//! rewrites another object's block. A gateway writes into a pack only for
//! [`PACK_WINDOW`]; the pack stays writable for [`PACK_TTL`], so a PUT that
//! took its range at the end of the window still has minutes to commit.
//! Ranges written but never committed (the PUT failed, the gateway died)
//! are dead bytes of the pack from the start: the compactor leaves them
//! behind and the pack's chunks are freed with it.

use std::collections::HashMap;
use std::time::Duration;

use chuyi_common::clock::{self, Instant};

use chuyi_client::Cluster;
use chuyi_common::limits::{BLOCK_SIZE_BYTES, OBJECT_CHUNK_BYTES};
use chuyi_meta_api::model::{DataRun, PACK_BYTES};
use chuyi_meta_api::order;
use s3s::{s3_error, S3Result};
use tokio::sync::Mutex;

use crate::errors::meta_error;

/// Largest object whose data goes into a pack: smaller than a chunk, so
/// no object of its own takes a whole chunk's slot on every replica.
pub const PACKED_OBJECT_MAX: u64 = OBJECT_CHUNK_BYTES - 1;

/// How long a gateway appends into one pack before it opens the next.
pub const PACK_WINDOW: Duration = Duration::from_secs(10 * 60);
/// How long a pack stays writable from its opening: the window, and as
/// long again for the PUTs that took a range in it to commit.
pub const PACK_TTL: Duration = Duration::from_secs(20 * 60);
/// How long a pack outlives its last run before its chunks go to the
/// garbage (where they wait out the garbage grace, reclaim.rs, which is
/// what lets a GET that read a run's place just before it was moved or
/// deleted finish reading it).
pub const PACK_GRACE: Duration = Duration::from_secs(60);

/// The pack being appended to in one pool.
#[derive(Debug)]
struct Open {
    owner: u64,
    /// The next free byte: every range before it is taken.
    next: u64,
    opened: Instant,
}

impl Open {
    /// Takes `len` bytes if they fit and the `window` is not over.
    fn take(&mut self, len: u64, now: Instant, window: Duration) -> Option<DataRun> {
        let end = self.next.checked_add(len)?;
        if end > PACK_BYTES || now.duration_since(self.opened) >= window {
            return None;
        }
        let run = DataRun { owner: self.owner, offset: self.next, len };
        self.next = end.next_multiple_of(BLOCK_SIZE_BYTES as u64);
        Some(run)
    }
}

/// This gateway's open packs.
#[derive(Debug)]
pub struct Packs {
    open: Mutex<HashMap<String, Open>>,
    /// How long it appends into one pack ([`PACK_WINDOW`]).
    window: Duration,
    /// How long a pack stays writable ([`PACK_TTL`]), more than `window`.
    ttl: Duration,
    /// Largest object packed ([`PACKED_OBJECT_MAX`]; 0: none).
    object_max: u64,
}

impl Default for Packs {
    fn default() -> Self {
        Self::new(PACK_WINDOW, PACK_TTL, PACKED_OBJECT_MAX)
    }
}

impl Packs {
    pub fn new(window: Duration, ttl: Duration, object_max: u64) -> Self {
        Self { open: Mutex::default(), window, ttl: ttl.max(window), object_max: object_max.min(PACKED_OBJECT_MAX) }
    }

    /// Whether an object of `len` bytes goes into a pack.
    pub fn packs(&self, len: u64) -> bool {
        len > 0 && len <= self.object_max
    }

    /// A range of `len` bytes (1 ..= [`PACK_BYTES`]) for one object in
    /// `pool`, in the open pack or a new one.
    pub async fn reserve(&self, cluster: &Cluster, pool: &str, len: u64) -> S3Result<DataRun> {
        debug_assert!(len > 0 && len <= PACK_BYTES);
        // Held while a new pack is opened, so concurrent PUTs wait for the
        // one pack instead of each opening its own.
        let mut open = self.open.lock().await;
        let now = clock::now();
        if let Some(run) = open.get_mut(pool).and_then(|o| o.take(len, now, self.window)) {
            return Ok(run);
        }
        let open_pack = order::OpenPack { pool: pool.to_string(), ttl_ms: self.ttl.as_millis() as u64 };
        let owner = cluster.meta().order(open_pack).await.map_err(meta_error)?;
        let mut fresh = Open { owner, next: 0, opened: now };
        let run = fresh
            .take(len, now, self.window)
            .ok_or_else(|| s3_error!(InternalError, "{len} bytes do not fit a pack"))?;
        open.insert(pool.to_string(), fresh);
        Ok(run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_disjoint_block_aligned_and_end_with_the_pack_or_the_window() {
        let t0 = clock::now();
        let mut open = Open { owner: 7, next: 0, opened: t0 };
        assert_eq!(open.take(100, t0, PACK_WINDOW), Some(DataRun { owner: 7, offset: 0, len: 100 }));
        assert_eq!(open.take(4096, t0, PACK_WINDOW), Some(DataRun { owner: 7, offset: 4096, len: 4096 }));
        assert_eq!(open.take(1, t0, PACK_WINDOW), Some(DataRun { owner: 7, offset: 8192, len: 1 }));
        assert_eq!(open.next, 12288);
        assert_eq!(open.take(PACK_BYTES - 12288 + 1, t0, PACK_WINDOW), None, "past the pack's end");
        assert_eq!(open.take(PACK_BYTES - 12288, t0, PACK_WINDOW).map(|r| r.offset), Some(12288), "exactly to its end");
        assert_eq!(open.take(1, t0, PACK_WINDOW), None, "full");
        let mut open = Open { owner: 8, next: 0, opened: t0 };
        assert_eq!(open.take(1, t0 + PACK_WINDOW, PACK_WINDOW), None, "the window is over");
    }
}
