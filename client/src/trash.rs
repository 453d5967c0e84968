//! Emptying the recycle bin: a deleted volume's purge (its key destroyed
//! and a fence token drawn by `BeginPurge`, every chunk deleted on every
//! replica under that fence, zeroed by the nodes as any freed chunk, then
//! `EndPurge`), and the loop by which frontends purge what is due.
//!
//! A purge interrupted at any point is begun again by the next purger,
//! under the same token; deleting a chunk twice is no error. Two purgers
//! at once (the loop of two frontends, or `chuyi trash purge`) do the same
//! deletes under the same fence; the second `EndPurge` finds nothing and
//! is done.

use std::sync::Arc;
use std::time::Duration;

use chuyi_common::ids::ChunkId;
use chuyi_meta_api::model::Volume;
use chuyi_meta_api::request::{Reply, Request};
use chuyi_meta_api::{ask, Kind, MetaError};
use futures::StreamExt;

use crate::fence::AlwaysOpen;
use crate::{ClientError, Cluster, WriteFence};

/// Chunk deletes in flight at once in one purge.
pub const DELETES_IN_FLIGHT: usize = 32;

/// How often a frontend looks for volumes due to be purged.
pub const REAP_EVERY: Duration = Duration::from_secs(60);

/// Purges `name` from the recycle bin (before its time only if `force`):
/// the number of chunk slots freed. `progress(done, total)` after each.
pub async fn purge(
    cluster: &Cluster,
    name: &str,
    force: bool,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<u64, ClientError> {
    let begin = Request::BeginPurge { name: name.into(), force };
    let (volume, token) = match cluster.meta().write(begin).await? {
        Reply::Purging { volume, token } => (volume, token),
        other => return Err(ClientError::Unexpected(format!("{other:?}"))),
    };
    let chunks = free_chunks(cluster, &volume, token, progress).await?;
    // The deletes durable before the purge ends: a power cut would
    // otherwise bring the chunks back with no volume to free them.
    cluster.flush(None).await?;
    match cluster.meta().write(Request::EndPurge { name: name.into(), token }).await {
        // Another purger finished first.
        Ok(_) | Err(MetaError::NotFound { kind: Kind::TrashedVolume, .. }) => Ok(chunks),
        Err(e) => Err(e.into()),
    }
}

/// Deletes every chunk of `volume` on every replica, fenced by `token`: a
/// frontend that lost the volume long ago and still has writes queued
/// cannot bring a chunk back once the fence is raised.
pub async fn free_chunks(
    cluster: &Cluster,
    volume: &Volume,
    token: u64,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<u64, ClientError> {
    let fence = WriteFence { owner: volume.id, token, gate: Arc::new(AlwaysOpen) };
    cluster.raise_fence(fence.volume_fence()).await?;
    let chunks = volume.size_bytes.div_ceil(u64::from(volume.chunk_size_bytes));
    let fence = &fence;
    let mut deletes = futures::stream::iter(0..chunks)
        .map(|index| async move { cluster.delete_chunk(ChunkId::new(volume.id, index), Some(fence)).await })
        .buffer_unordered(DELETES_IN_FLIGHT);
    let mut done = 0;
    while let Some(deleted) = deletes.next().await {
        deleted?;
        done += 1;
        progress(done, chunks);
    }
    Ok(chunks)
}

/// Purges, every `every`, the volumes whose time in the recycle bin is up,
/// for as long as the frontend runs.
pub async fn reap(cluster: Arc<Cluster>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let entries = match cluster.meta().ask(ask::Trash).await {
            Ok((_, entries)) => entries,
            Err(e) => {
                tracing::debug!(error = %e, "recycle bin: not read");
                continue;
            }
        };
        let now = chuyi_common::clock::unix_ms();
        // The leader's clock decides (BeginPurge refuses what is not due);
        // this one only saves asking about the rest.
        for entry in entries.into_iter().filter(|e| e.purging.is_some() || e.purge_at_ms <= now) {
            let name = entry.volume.name;
            match purge(&cluster, &name, false, &|_, _| {}).await {
                Ok(chunks) => tracing::info!(volume = %name, chunks, "recycle bin: purged"),
                Err(e) => tracing::warn!(volume = %name, error = %e, "recycle bin: purge failed; retried later"),
            }
        }
    }
}
