//! Volume snapshots from the client's side: taking one (a metadata commit,
//! then the new snap sequence raised on every node), deleting one (then the
//! clones only it read trimmed on every node), and rolling a detached
//! volume back (each chunk copied back on its nodes, under the volume's
//! lease). Common/PROTOCOL.md section 5.3 says why this order keeps a
//! snapshot crash-consistent while the volume is written.

use std::sync::Arc;
use std::time::Duration;

use chuyi_common::proto::chunk::VolumeFence;
use chuyi_meta_api::model::{Snapshot, VolumeSnapshots};
use chuyi_meta_api::{ask, order, MetaError, Request};
use futures::StreamExt;

use crate::{ClientError, Cluster, VolumeIo};

/// Chunks rolled back or flattened at once.
const IN_FLIGHT: usize = 16;

/// Takes snapshot `name` of `volume`. Once this returns, every node
/// refuses the volume's writes sent under the old sequence: its writer
/// fetches the new one, and what it writes from then on is kept out of the
/// snapshot by the nodes' clones. A snapshot whose sequence could not be
/// raised everywhere is deleted again, not left half-taken.
pub async fn create(cluster: &Cluster, volume: &str, name: &str) -> Result<Snapshot, ClientError> {
    let owner = cluster.meta().ask(ask::Volume(volume.into())).await?.id;
    let create = order::CreateSnapshot { volume: volume.into(), name: name.into() };
    let snapshots = cluster.meta().order(create).await?;
    let Some(snapshot) = snapshots.find(name).cloned() else {
        return Err(ClientError::Unexpected(format!("snapshot {volume}@{name} missing from {snapshots:?}")));
    };
    if let Err(e) = raise(cluster, owner, snapshot.id).await {
        tracing::error!(volume, snapshot = name, error = %e, "snapshot sequence not raised everywhere; deleting it");
        let _ = delete(cluster, volume, name).await;
        return Err(e);
    }
    Ok(snapshot)
}

/// Raises `owner`'s snap sequence to `seq` on every node.
async fn raise(cluster: &Cluster, owner: u64, seq: u32) -> Result<(), ClientError> {
    cluster.raise_fence(VolumeFence { owner, token: 0, snap: seq }).await
}

/// How often volume frontends look for scheduled snapshots to take and
/// expire (a 15-minute schedule's slot is taken within this of its start).
pub const SCHEDULES_EVERY: Duration = Duration::from_secs(10);

/// Takes the scheduled snapshots that are due and deletes those their
/// schedule keeps no more, every `every`, for as long as the frontend
/// runs. Every volume frontend runs this: the metadata service takes each
/// slot once (`TakeScheduledSnapshot`) and refuses the others.
pub async fn run_schedules(cluster: Arc<Cluster>, every: Duration) {
    loop {
        if let Err(e) = schedules_once(&cluster).await {
            tracing::warn!(error = %e, "snapshot schedules: will try again");
        }
        tokio::time::sleep(every).await;
    }
}

/// One pass of [`run_schedules`]: how many snapshots it took and expired.
pub async fn schedules_once(cluster: &Cluster) -> Result<(usize, usize), ClientError> {
    let (due, _) = cluster.meta().ask(ask::SnapshotWork).await?;
    let mut took = 0;
    for (volume, every_ms) in due {
        let take = order::TakeScheduledSnapshot { volume: volume.clone(), every_ms };
        let snapshots = match cluster.meta().order(take).await {
            Ok(snapshots) => snapshots,
            // Taken by another frontend, or the volume went meanwhile.
            Err(e @ (MetaError::Invalid { .. } | MetaError::NotFound { .. })) => {
                tracing::debug!(volume, error = %e, "scheduled snapshot not taken here");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let owner = cluster.meta().ask(ask::Volume(volume.clone())).await?.id;
        // A sequence raised late only moves the snapshot's point in time
        // later (its writer learns it at its next refusal or attach).
        raise(cluster, owner, snapshots.seq).await?;
        tracing::info!(volume, seq = snapshots.seq, "scheduled snapshot taken");
        took += 1;
    }
    // Asked again after taking: what this pass took may put an older
    // snapshot past its keep, and it goes in the same pass.
    let (_, expired) = cluster.meta().ask(ask::SnapshotWork).await?;
    let mut gone = 0;
    for (volume, name) in expired {
        let expire = order::ExpireSnapshot { volume: volume.clone(), name: name.clone() };
        match cluster.meta().order(expire).await {
            Ok(_) => {}
            // A clone reads it: it stays until the clone is flattened.
            Err(e @ (MetaError::Invalid { .. } | MetaError::NotFound { .. } | MetaError::InUse { .. })) => {
                tracing::debug!(volume, snapshot = name, error = %e, "expired snapshot not deleted here");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let owner = cluster.meta().ask(ask::Volume(volume.clone())).await?.id;
        cluster.trim_clones(owner).await?;
        tracing::info!(volume, snapshot = name, "scheduled snapshot expired");
        gone += 1;
    }
    Ok((took, gone))
}

/// Forgets snapshot `name` of `volume` and has the nodes drop the clones
/// no other snapshot reads.
pub async fn delete(cluster: &Cluster, volume: &str, name: &str) -> Result<VolumeSnapshots, ClientError> {
    let owner = cluster.meta().ask(ask::Volume(volume.into())).await?.id;
    let left = cluster.meta().order(order::DeleteSnapshot { volume: volume.into(), name: name.into() }).await?;
    cluster.trim_clones(owner).await?;
    Ok(left)
}

/// Finds snapshot `name` of `volume`.
pub async fn find(cluster: &Cluster, volume: &str, name: &str) -> Result<Snapshot, ClientError> {
    let snapshots = cluster.meta().ask(ask::Snapshots(volume.into())).await?;
    snapshots.find(name).cloned().ok_or_else(|| {
        ClientError::Meta(MetaError::not_found(chuyi_meta_api::error::Kind::Snapshot, format!("{volume}@{name}")))
    })
}

/// Puts detached `volume` back as snapshot `name` saw it, chunk by chunk
/// on the nodes, holding the volume's attach lease as `holder` throughout
/// (so nothing attaches meanwhile; refused with `LeaseHeld` while a
/// frontend has it). Snapshots newer than `name` keep their view.
/// `progress(done, total)` is called as chunks finish.
pub async fn rollback(
    cluster: &Arc<Cluster>,
    volume: &str,
    name: &str,
    holder: &str,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Snapshot, ClientError> {
    let snapshot = find(cluster, volume, name).await?;
    let to = snapshot.id;
    let each = move |vol: Arc<VolumeIo>, index| async move { vol.rollback_chunk(index, to).await };
    held(cluster, volume, holder, progress, each, || async { Ok::<(), MetaError>(()) }).await?;
    Ok(snapshot)
}

/// Makes clone volume `volume` independent of its parent snapshot: every
/// chunk the parent held is copied into it (as its first write would),
/// then the parent is forgotten. Detached only, like [`rollback`].
pub async fn flatten(
    cluster: &Arc<Cluster>,
    volume: &str,
    holder: &str,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<(), ClientError> {
    if !cluster.open_volume(volume).await?.is_clone() {
        return Err(ClientError::Meta(MetaError::invalid("flatten", format!("volume {volume} is not a clone"))));
    }
    let forget = || async { cluster.meta().write(Request::FlattenVolume { name: volume.into() }).await.map(drop) };
    held(cluster, volume, holder, progress, |vol, index| async move { vol.copy_up(index).await }, forget).await
}

/// Runs `each` on every chunk index of `volume`, a few at once, holding
/// the volume's attach lease as `holder` (so nothing attaches meanwhile;
/// refused with `LeaseHeld` while a frontend has it), flushes, and runs
/// `last` still holding it.
async fn held<F, Fut, L, LFut>(
    cluster: &Arc<Cluster>,
    volume: &str,
    holder: &str,
    progress: &(dyn Fn(u64, u64) + Sync),
    each: F,
    last: L,
) -> Result<(), ClientError>
where
    F: Fn(Arc<VolumeIo>, u64) -> Fut,
    Fut: std::future::Future<Output = Result<(), ClientError>>,
    L: FnOnce() -> LFut,
    LFut: std::future::Future<Output = Result<(), MetaError>>,
{
    crate::lease::hold(cluster, volume, holder, |vol| async move {
        let chunks = vol.size().div_ceil(u64::from(vol.volume().chunk_size_bytes));
        let mut runs =
            futures::stream::iter(0..chunks).map(|index| each(vol.clone(), index)).buffer_unordered(IN_FLIGHT);
        let mut done = 0;
        while let Some(result) = runs.next().await {
            result?;
            done += 1;
            progress(done, chunks);
        }
        vol.flush().await?;
        Ok(last().await?)
    })
    .await
}

/// Makes volume `name` a clone of snapshot `snapshot` of `volume`. An
/// encrypted parent's data key is wrapped for the clone under `kek`
/// (without it, such a clone is refused).
pub async fn clone_volume(
    cluster: &Cluster,
    (volume, snapshot): (&str, &str),
    name: &str,
    kek: Option<&chuyi_common::sm4::Kek>,
) -> Result<chuyi_meta_api::model::Volume, ClientError> {
    let parent = cluster.meta().ask(ask::Volume(volume.into())).await?;
    let wrapped_key = match (parent.wrapped_key.is_empty(), kek) {
        (true, _) => Vec::new(),
        (false, Some(kek)) => chuyi_common::sm4::rebind_volume_key(kek, volume, name, &parent.wrapped_key)
            .map_err(|e| ClientError::Meta(MetaError::invalid("clone", e.to_string())))?,
        (false, None) => {
            let why = format!("volume {volume} is encrypted: cloning it needs the master key (--kek-file)");
            return Err(ClientError::Meta(MetaError::invalid("clone", why)));
        }
    };
    let clone = order::CloneVolume { volume: volume.into(), snapshot: snapshot.into(), name: name.into(), wrapped_key };
    Ok(cluster.meta().order(clone).await?)
}
