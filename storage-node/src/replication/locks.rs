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

/// A range held or waited for: start, end, and its ticket. Each chunk's
/// entries are in arrival order.
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
    fn shard(&self, chunk: ChunkId) -> &Shard {
        &self.shards[(chunk.owner ^ chunk.index.rotate_left(17)) as usize % SHARDS]
    }

    /// How many ranges of `chunk` are held or waited for.
    pub fn queued(&self, chunk: ChunkId) -> usize {
        lock(&self.shard(chunk).held).get(&chunk).map_or(0, Vec::len)
    }

    /// Waits until no range of `chunk` that asked earlier overlaps
    /// `[start, end)`, then holds it. Waiters are served in arrival order,
    /// so a whole-chunk request (backfill, delete) is not starved by a
    /// stream of small overlapping writes.
    pub async fn lock(&self, chunk: ChunkId, start: u64, end: u64) -> RangeGuard<'_> {
        let shard = self.shard(chunk);
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock(&shard.held).entry(chunk).or_default().push((start, end, id));
        // From here the guard owns the queue entry: if this future is
        // dropped while waiting, the entry goes with it.
        let guard = RangeGuard { shard, chunk, id };
        loop {
            let released = shard.released.notified();
            tokio::pin!(released);
            {
                let held = lock(&shard.held);
                let queue = held.get(&chunk).map(Vec::as_slice).unwrap_or_default();
                let earlier = queue.iter().take_while(|&&(_, _, other)| other != id);
                if !earlier.clone().any(|&(s, e, _)| s < end && start < e) {
                    return guard;
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
    async fn a_waiting_whole_chunk_lock_is_not_overtaken() {
        let locks = Arc::new(RangeLocks::default());
        let chunk = ChunkId::new(1, 2);
        let first = locks.lock(chunk, 0, 4096).await;
        let whole = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _g = locks.lock(chunk, 0, u64::MAX).await;
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        // A later small write overlapping the waiting whole-chunk request
        // queues behind it, though it does not overlap what is held.
        let later = tokio::time::timeout(Duration::from_millis(50), locks.lock(chunk, 8192, 12288)).await;
        assert!(later.is_err(), "a later request overtook a waiting one");
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), whole).await.expect("served").expect("task");
        // A dropped waiter leaves nothing behind.
        assert!(tokio::time::timeout(Duration::from_millis(100), locks.lock(chunk, 0, u64::MAX)).await.is_ok());
    }

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
