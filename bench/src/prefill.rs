//! Writing the whole region once before a read workload, so every read
//! goes to data on the disk (a never-written chunk reads as zeros without
//! any I/O, and ext4 serves unwritten extents without the device).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::region::Region;
use crate::target::{payload, write, NodeTarget};
use crate::LoadError;

/// Size of one prefill write.
pub const PREFILL_WRITE_BYTES: u64 = 1 << 20;

/// Prefill writes in flight at once.
const PREFILL_INFLIGHT: usize = 8;

/// What a prefill did.
#[derive(Clone, Copy, Debug)]
pub struct Prefilled {
    pub bytes: u64,
    pub elapsed: Duration,
}

/// Writes every byte of `region`, in writes of up to 1 MiB that stay in one
/// chunk, `PREFILL_INFLIGHT` at a time.
pub async fn prefill(target: &NodeTarget, region: &Region) -> Result<Prefilled, LoadError> {
    let mut pieces = Vec::new();
    let mut at = 0;
    while at < region.size_bytes {
        let len = region.run_at(at, PREFILL_WRITE_BYTES);
        pieces.push((at, len));
        at += len;
    }
    let (pieces, next) = (Arc::new(pieces), Arc::new(AtomicUsize::new(0)));
    let data = payload(PREFILL_WRITE_BYTES as usize);
    let started = Instant::now();
    let mut writers = JoinSet::new();
    for n in 0..PREFILL_INFLIGHT {
        let (client, disk, region) = (target.client(n).clone(), target.disk(), *region);
        let (pieces, next, data) = (pieces.clone(), next.clone(), data.clone());
        writers.spawn(async move {
            while let Some(&(at, len)) = pieces.get(next.fetch_add(1, Ordering::Relaxed)) {
                write(&client, disk, region.locate(at), data.slice(..len as usize)).await?;
            }
            Ok::<(), LoadError>(())
        });
    }
    while let Some(joined) = writers.join_next().await {
        joined??;
    }
    Ok(Prefilled { bytes: region.size_bytes, elapsed: started.elapsed() })
}
