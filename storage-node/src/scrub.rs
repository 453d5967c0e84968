//! Background scrub: read every chunk this node holds a complete replica
//! of, at a set rate, checking every block's crc32c; a bad range is
//! rewritten from the other replica.
//!
//! Reading is the check: the store verifies each block on every read, so a
//! flipped bit, a torn write or a misdirected write shows up as a checksum
//! error, counted by the disk and here.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chuyi_common::clock;

use chuyi_common::ids::ChunkId;
use chuyi_common::map::pool_of;

use crate::replication::{Placed, Replicator};
use crate::store::{DiskStore, StoreError};

/// Bytes read per step: also the range repaired when a block in it is bad.
const STEP: u64 = 1 << 20;
/// Pause between passes, so an idle cluster is not scrubbed in a tight loop.
const BETWEEN_PASSES: Duration = Duration::from_secs(10);

/// Scrubs forever at `mb_per_s`; returns at once when it is 0.
pub async fn run(repl: Arc<Replicator>, mb_per_s: u32) {
    if mb_per_s == 0 {
        return;
    }
    let bytes_per_s = u64::from(mb_per_s) * 1_000_000;
    loop {
        let started = clock::now();
        let mut read = 0u64;
        for disk in repl.store().disks() {
            let mut cursor = None;
            loop {
                let (ids, next) = disk.list_where(cursor, 256, 256, |_| true);
                for chunk in ids {
                    read += scrub_chunk(&repl, disk, chunk).await;
                    let due = Duration::from_secs_f64(read as f64 / bytes_per_s as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                }
                match next {
                    Some(n) => cursor = Some(n),
                    None => break,
                }
            }
        }
        repl.counters().passes.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(BETWEEN_PASSES).await;
    }
}

/// Reads one chunk step by step; returns the bytes read.
async fn scrub_chunk(repl: &Arc<Replicator>, disk: &DiskStore, chunk: ChunkId) -> u64 {
    let mut read = 0;
    let mut offset = 0;
    while offset < disk.chunk_size() {
        let len = STEP.min(disk.chunk_size() - offset);
        match disk.read(chunk, offset, len).await {
            Ok(_) => {}
            Err(StoreError::Checksum { block, .. }) => {
                repl.counters().errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(disk = disk.id(), %chunk, block, "scrub found a bad block");
                repair(repl, disk, chunk, offset, offset + len).await;
            }
            // Deleted under us, or the disk failed: the next pass sees.
            Err(_) => return read,
        }
        repl.counters().scrubbed_bytes.fetch_add(len, Ordering::Relaxed);
        read += len;
        offset += len;
    }
    read
}

async fn repair(repl: &Arc<Replicator>, disk: &DiskStore, chunk: ChunkId, start: u64, end: u64) {
    let map = repl.view().current();
    let Some((pg, pg_map)) = map.locate(chunk) else {
        tracing::warn!(%chunk, pool = pool_of(chunk.owner), "bad block in a chunk of no known pool; left as is");
        return;
    };
    let me = repl.node_id();
    let Some(mine) = pg_map.complete().find(|r| r.node == me && r.disk == disk.id()) else {
        // A copy this node is not a complete replica of: recovery owns it.
        return;
    };
    let placed = Placed { map: map.clone(), pg, pg_map: pg_map.clone(), mine };
    if let Err(e) = repl.repair(&placed, chunk, start, end).await {
        tracing::warn!(%chunk, error = %e, "scrub could not repair");
    }
}
