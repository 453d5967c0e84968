//! Byte-range locks within chunks.
//!
//! A primary holds the range of a write while it writes locally and
//! forwards, so overlapping writes reach every replica in the same order and
//! the replicas cannot end up with different last writers. Backfill and
//! repair take the ranges they copy, so a copy never lands over a newer
//! client write.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use chuyi_common::ids::ChunkId;
use tokio::sync::Notify;

const SHARDS: usize = 64;

/// A held range: start, end, and the holder's ticket.
type Held = (u64, u64, u64);

#[derive(Debug, Default)]
struct Shard {
    held: Mutex<HashMap<ChunkId, Vec<Held>>>,
    released: Notify,
}

#[derive(Debug)]
pub struct RangeLocks {
    shards: Vec<Shard>,
    next: std::sync::atomic::AtomicU64,
}

impl Default for RangeLocks {
    fn default() -> Self {
        Self { shards: (0..SHARDS).map(|_| Shard::default()).collect(), next: Default::default() }
    }
}

/// A held range; released on drop.
#[derive(Debug)]
pub struct RangeGuard<'a> {
    shard: &'a Shard,
    chunk: ChunkId,
    id: u64,
}

impl RangeLocks {
    /// Waits until no held range of `chunk` overlaps `[start, end)`, then
    /// holds it.
    pub async fn lock(&self, chunk: ChunkId, start: u64, end: u64) -> RangeGuard<'_> {
        let shard = &self.shards[(chunk.owner ^ chunk.index.rotate_left(17)) as usize % SHARDS];
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        loop {
            let released = shard.released.notified();
            tokio::pin!(released);
            {
                let mut held = lock(&shard.held);
                let ranges = held.entry(chunk).or_default();
                if !ranges.iter().any(|&(s, e, _)| s < end && start < e) {
                    ranges.push((start, end, id));
                    return RangeGuard { shard, chunk, id };
                }
                // Registered before the lock is dropped, so a release
                // between here and the await is not missed.
                released.as_mut().enable();
            }
            released.await;
        }
    }
}

impl Drop for RangeGuard<'_> {
    fn drop(&mut self) {
        let mut held = lock(&self.shard.held);
        if let Some(ranges) = held.get_mut(&self.chunk) {
            ranges.retain(|&(_, _, id)| id != self.id);
            if ranges.is_empty() {
                held.remove(&self.chunk);
            }
        }
        drop(held);
        self.shard.released.notify_waiters();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn overlapping_ranges_wait_and_disjoint_ones_do_not() {
        let locks = Arc::new(RangeLocks::default());
        let chunk = ChunkId::new(1, 2);
        let held = locks.lock(chunk, 0, 8192).await;
        // Disjoint: immediate.
        let other = tokio::time::timeout(Duration::from_millis(100), locks.lock(chunk, 8192, 16384)).await;
        assert!(other.is_ok());
        drop(other);
        // Another chunk: immediate.
        assert!(tokio::time::timeout(Duration::from_millis(100), locks.lock(ChunkId::new(1, 3), 0, 8192))
            .await
            .is_ok());
        // Overlapping: waits until the first is released.
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _g = locks.lock(chunk, 4096, 4097).await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "an overlapping lock must wait");
        drop(held);
        tokio::time::timeout(Duration::from_secs(1), waiter).await.expect("released").expect("task");
    }
}
