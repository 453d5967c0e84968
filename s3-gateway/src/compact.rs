//! The compactor: moves the live objects out of sparse packs (most of the
//! chunks they take hold dead or never-committed bytes), so the packs can
//! be freed whole.
//!
//! Each live run of a pack whose writer's window is over is read, written
//! into this gateway's open pack, and moved by `MovePacked`, which lands
//! only if the version still holds the run that was read: an object
//! deleted or replaced meanwhile keeps what it has, and the copy is dead
//! bytes of the new pack. A GET that read a run's place before its move
//! still finds the bytes: a pack is freed no earlier than a grace after
//! its last run died (the metadata service's `RetirePacks`, run by the
//! reclaimer). Every gateway runs one; two moving the same run waste one
//! copy and nothing else. Throttled to [`COMPACT_BYTES_PER_S`] per
//! gateway, so it never takes the disks from the clients.

use std::time::Duration;

use chuyi_common::limits::OBJECT_CHUNK_BYTES;
use chuyi_meta_api::ask;
use chuyi_meta_api::limits::RECORDS_PAGE_MAX;
use chuyi_meta_api::model::{DataRun, Pack, PackRef};
use chuyi_meta_api::order;

use crate::data::DataPath;

/// How often a pass runs when the last one found nothing to move.
pub const COMPACT_IDLE: Duration = Duration::from_secs(5);
/// Bytes per second one gateway's compactor copies at most.
pub const COMPACT_BYTES_PER_S: u64 = 32 << 20;

/// Runs passes for ever at `bytes_per_s`.
pub async fn run(data: DataPath, bytes_per_s: u64) {
    loop {
        match pass(&data, bytes_per_s).await {
            Ok(moved) if moved > 0 => continue,
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "compaction pass failed"),
        }
        tokio::time::sleep(COMPACT_IDLE).await;
    }
}

/// The packs of a page of sparse ones to compact now: something live in
/// them and no writer any more (a pack still being appended to may fill
/// up yet), and only if moving them all frees at least a chunk on each
/// replica. Without that last rule a store holding less than half a
/// chunk of small objects would move them for ever: every pack they are
/// moved into is sparse again.
pub fn to_compact(sparse: &[(u64, Pack)], now_ms: u64) -> Vec<u64> {
    let candidates: Vec<_> = sparse.iter().filter(|(_, p)| p.live_runs > 0 && now_ms >= p.writable_until_ms).collect();
    let taken: u64 = candidates.iter().map(|(_, p)| p.footprint()).sum();
    let live: u64 = candidates.iter().map(|(_, p)| p.live_bytes).sum();
    let needed = live.div_ceil(OBJECT_CHUNK_BYTES) * OBJECT_CHUNK_BYTES;
    if taken.saturating_sub(needed) < OBJECT_CHUNK_BYTES {
        return Vec::new();
    }
    candidates.into_iter().map(|(owner, _)| *owner).collect()
}

/// How long copying `bytes` takes at `bytes_per_s`.
pub fn pace(bytes: u64, bytes_per_s: u64) -> Duration {
    Duration::from_secs_f64(bytes as f64 / bytes_per_s.max(1) as f64)
}

/// One pass over every sparse pack, a page at a time; returns the bytes
/// it moved.
pub async fn pass(data: &DataPath, bytes_per_s: u64) -> Result<u64, String> {
    let meta = data.cluster().meta();
    let mut after = 0;
    let mut moved = 0;
    loop {
        let sparse = meta.ask(ask::SparsePacks { after, max: RECORDS_PAGE_MAX }).await.map_err(|e| e.to_string())?;
        let Some(&(last, _)) = sparse.last() else { return Ok(moved) };
        for owner in to_compact(&sparse, chuyi_common::clock::unix_ms()) {
            moved += compact(data, owner, bytes_per_s).await?;
        }
        after = last + 1;
    }
}

/// Moves every live run of pack `owner`; returns the bytes moved.
async fn compact(data: &DataPath, owner: u64, bytes_per_s: u64) -> Result<u64, String> {
    let pool_id = chuyi_common::map::pool_of(owner);
    let Some(pool) = data.cluster().map().pool(pool_id).map(|p| p.name.clone()) else {
        return Err(format!("pack {owner:#x}: pool {pool_id} is not in the map"));
    };
    let meta = data.cluster().meta();
    let mut from = 0;
    let mut moved = 0;
    loop {
        let refs = meta.ask(ask::PackRefs { owner, from, max: RECORDS_PAGE_MAX }).await.map_err(|e| e.to_string())?;
        let Some(last) = refs.last() else { return Ok(moved) };
        from = last.offset + 1;
        for reference in refs {
            let len = reference.len;
            if move_one(data, &pool, owner, reference).await? {
                moved += len;
            }
            // Copied whether or not it landed: the disks did the work.
            tokio::time::sleep(pace(len, bytes_per_s)).await;
        }
    }
}

/// Copies one live run and moves its version onto the copy; false when
/// the version changed meanwhile (the copy is dead).
async fn move_one(data: &DataPath, pool: &str, owner: u64, reference: PackRef) -> Result<bool, String> {
    let from = DataRun { owner, offset: reference.offset, len: reference.len };
    let to = data.copy_packed(pool, from).await?;
    let moved = order::MovePacked { bucket: reference.bucket, key: reference.key, seq: reference.seq, from, to };
    let landed = data.cluster().meta().order(moved).await.map_err(|e| e.to_string())?;
    Ok(landed == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: u64 = OBJECT_CHUNK_BYTES;

    fn pack(live_runs: u64, writable_until_ms: u64, end: u64, live_bytes: u64) -> Pack {
        Pack { live_runs, writable_until_ms, end, live_bytes, ..Pack::default() }
    }

    #[test]
    fn only_packs_with_live_runs_and_no_writer_are_compacted() {
        let sparse =
            [(1, pack(3, 100, C, 3)), (2, pack(0, 100, C, 0)), (3, pack(1, 200, 2 * C, 1)), (4, pack(5, 50, C + 1, 5))];
        assert_eq!(to_compact(&sparse, 150), vec![1, 4]);
        assert_eq!(to_compact(&sparse, 200), vec![1, 3, 4]);
    }

    #[test]
    fn packs_are_compacted_only_when_that_frees_a_chunk() {
        // One chunk barely used: moving it would take a chunk elsewhere.
        assert!(to_compact(&[(1, pack(2, 0, 8192, 8192))], 1).is_empty());
        // Two such: they fit in one.
        assert_eq!(to_compact(&[(1, pack(2, 0, 8192, 8192)), (2, pack(1, 0, 100, 100))], 1), vec![1, 2]);
        // Two chunks with a chunk and a half live: still two chunks.
        assert!(to_compact(&[(1, pack(9, 0, 2 * C, C + C / 2))], 1).is_empty());
        // A full pack mostly dead.
        assert_eq!(to_compact(&[(1, pack(9, 0, 16 * C, 5 * C))], 1), vec![1]);
    }

    #[test]
    fn the_pace_follows_the_rate() {
        assert_eq!(pace(32 << 20, 32 << 20), Duration::from_secs(1));
        assert_eq!(pace(4096, 0), Duration::from_secs(4096));
    }
}
