//! Restoring a backup into a volume, on this cluster or another one with
//! the KEK: a new volume of the backup's size (encrypted under a key of
//! its own if the backed-up volume was), or a detached existing one of
//! that size, written under its attach lease.
//!
//! A volume the restore creates is marked with a snapshot named
//! `restoring-<backup id>` (taken while it is empty, so it costs nothing)
//! until the restore ends: it tells an operator the volume is not whole
//! yet, and tells the same restore run again that it may continue there.
//!
//! Into an existing volume (that one, or any with `--overwrite`), each span
//! is read first and its piece fetched only when the volume's bytes hash
//! to another id; spans of zeros in the backup are zeroed only where the
//! volume holds data. So a restore that was killed and run again fetches
//! only what it had not written, and a restore over an older copy of the
//! volume fetches only what differs.

use std::sync::Arc;

use bytes::Bytes;
use chuyi_client::{crypt, Cluster, VolumeIo};
use chuyi_common::sm4::{new_wrapped_volume_key, open_volume_key, Kek, Sm4Xts};
use chuyi_meta_api::error::Kind;
use chuyi_meta_api::{ask, order, MetaError};
use futures::StreamExt;
use serde::Serialize;

use crate::create::is_zero;
use crate::error::BackupError;
use crate::lock::{Lock, LockKind};
use crate::manifest::Manifest;
use crate::repo::Repo;
use crate::throttle::Throttle;

#[derive(Debug)]
pub struct RestoreOptions {
    /// The pool of a volume the restore creates.
    pub pool: String,
    /// Write into `to` if it exists (detached, the backup's size).
    pub overwrite: bool,
    pub in_flight: usize,
    pub throttle: Arc<Throttle>,
    /// Who holds the volume's lease meanwhile (`restore-<host>`).
    pub holder: String,
}

/// What a restore did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RestoreStats {
    pub created: bool,
    pub spans: u64,
    /// Pieces fetched from the target, and their plaintext bytes.
    pub fetched: u64,
    pub fetched_bytes: u64,
    /// Spans the volume already held as the backup has them.
    pub already: u64,
    /// Spans zeroed because the backup holds zeros there.
    pub zeroed: u64,
}

/// Restores backup `m` into volume `to`. `progress(done, total, bytes)`.
pub async fn restore(
    cluster: &Arc<Cluster>,
    repo: &Arc<Repo>,
    kek: &Kek,
    m: &Manifest,
    to: &str,
    options: &RestoreOptions,
    progress: &(dyn Fn(u64, u64, u64) + Sync),
) -> Result<RestoreStats, BackupError> {
    // Shared with backups and drills, not with a prune: the backup read
    // cannot be forgotten and swept under the restore.
    let id = crate::manifest::new_id(chuyi_common::clock::unix_ms());
    let lock = Lock::acquire(repo, LockKind::Verify, Some(&m.volume), &id).await?;
    // Read again under the lock: a prune that forgot the backup before the
    // lock was taken has swept its pieces, and a restore from it would
    // overwrite part of the volume and then stop.
    let result = async {
        let m = crate::catalog::manifest(repo, &m.volume, &m.id).await?;
        restore_locked(cluster, repo, kek, &m, to, options, progress).await
    }
    .await;
    lock.release().await;
    result
}

async fn restore_locked(
    cluster: &Arc<Cluster>,
    repo: &Repo,
    kek: &Kek,
    m: &Manifest,
    to: &str,
    options: &RestoreOptions,
    progress: &(dyn Fn(u64, u64, u64) + Sync),
) -> Result<RestoreStats, BackupError> {
    let created = prepare(cluster, kek, m, to, options).await?;
    let marker = marker(m);
    let work = |vol: Arc<VolumeIo>| async move {
        let xts = match vol.volume().wrapped_key.is_empty() {
            true => None,
            false => Some(
                open_volume_key(Some(kek), to, &vol.volume().wrapped_key)
                    .map_err(|e| chuyi_client::ClientError::Unexpected(format!("volume {to}'s key: {e}")))?,
            ),
        };
        Ok(write_spans(repo, m, &vol, xts.as_ref(), created, options, progress).await)
    };
    let mut stats = chuyi_client::lease::hold(cluster, to, &options.holder, work).await??;
    if chuyi_client::snapshot::find(cluster, to, &marker).await.is_ok() {
        chuyi_client::snapshot::delete(cluster, to, &marker).await?;
    }
    stats.created = created;
    Ok(stats)
}

/// The snapshot marking a volume this restore is making.
fn marker(m: &Manifest) -> String {
    format!("restoring-{}", m.id)
}

/// Creates `to`, or checks that the existing one may be written over;
/// says whether it was created (and so holds nothing yet).
async fn prepare(
    cluster: &Cluster,
    kek: &Kek,
    m: &Manifest,
    to: &str,
    options: &RestoreOptions,
) -> Result<bool, BackupError> {
    let ours = chuyi_client::snapshot::find(cluster, to, &marker(m)).await.is_ok();
    match cluster.meta().ask(ask::Volume(to.into())).await {
        Ok(v) if !options.overwrite && !ours => Err(BackupError::Invalid(format!(
            "volume {to} exists ({} bytes): --overwrite restores over it, detached (spans it already holds as \
             the backup has them are not fetched)",
            v.size_bytes
        ))),
        Ok(v) if v.size_bytes != m.volume_bytes => Err(BackupError::Invalid(format!(
            "volume {to} holds {} bytes and backup {} {}: restore into a volume of the backup's size",
            v.size_bytes, m.id, m.volume_bytes
        ))),
        // An encrypted volume's data is never written in the clear.
        Ok(v) if m.encrypted && v.wrapped_key.is_empty() => Err(BackupError::Invalid(format!(
            "backup {} is of an encrypted volume and volume {to} is not: restore it into an encrypted volume \
             (or a new one)",
            m.id
        ))),
        Ok(_) => Ok(false),
        Err(MetaError::NotFound { kind: Kind::Volume, .. }) => {
            let wrapped_key = if m.encrypted { new_wrapped_volume_key(kek, to) } else { Vec::new() };
            let create = order::CreateVolume {
                name: to.into(),
                pool: options.pool.clone(),
                size_bytes: m.volume_bytes,
                chunk_size_bytes: chuyi_common::limits::CHUNK_SIZE_MAX_BYTES as u32,
                wrapped_key,
            };
            cluster.meta().order(create).await.map_err(chuyi_client::ClientError::from)?;
            chuyi_client::snapshot::create(cluster, to, &marker(m)).await?;
            Ok(true)
        }
        Err(e) => Err(chuyi_client::ClientError::from(e).into()),
    }
}

async fn write_spans(
    repo: &Repo,
    m: &Manifest,
    vol: &VolumeIo,
    xts: Option<&Sm4Xts>,
    fresh: bool,
    options: &RestoreOptions,
    progress: &(dyn Fn(u64, u64, u64) + Sync),
) -> Result<RestoreStats, BackupError> {
    let total = m.pieces.len() as u64;
    let mut spans = futures::stream::iter(0..total)
        .map(|index| restore_span(repo, m, vol, xts, fresh, &options.throttle, index))
        .buffer_unordered(options.in_flight.max(1));
    let mut stats = RestoreStats { spans: total, ..RestoreStats::default() };
    let mut done = 0;
    while let Some(span) = spans.next().await {
        match span? {
            Outcome::Fetched(bytes) => {
                stats.fetched += 1;
                stats.fetched_bytes += bytes;
            }
            Outcome::Already => stats.already += 1,
            Outcome::Zeroed => stats.zeroed += 1,
        }
        done += 1;
        progress(done, total, stats.fetched_bytes);
    }
    Ok(stats)
}

enum Outcome {
    Fetched(u64),
    Already,
    Zeroed,
}

async fn restore_span(
    repo: &Repo,
    m: &Manifest,
    vol: &VolumeIo,
    xts: Option<&Sm4Xts>,
    fresh: bool,
    throttle: &Throttle,
    index: u64,
) -> Result<Outcome, BackupError> {
    let (start, end) = m.span_range(index);
    let want = m.pieces[index as usize];
    if !fresh {
        let mut have = vol.read(start, end - start).await?;
        if let Some(xts) = xts {
            have = crypt::decrypt(xts, start, have);
        }
        let same = match &want {
            None => is_zero(&have),
            Some(id) => !is_zero(&have) && repo.piece_id(&have) == *id,
        };
        if same {
            return Ok(Outcome::Already);
        }
    }
    let Some(id) = want else {
        if !fresh {
            vol.zero(start, end - start, false).await?;
        }
        return Ok(if fresh { Outcome::Already } else { Outcome::Zeroed });
    };
    let plain = repo.get_piece(&id).await?;
    throttle.take(plain.len() as u64).await;
    if plain.len() as u64 != end - start {
        return Err(BackupError::corrupt(format!("span {index} of backup {}", m.id), "its piece has another length"));
    }
    let len = plain.len() as u64;
    let mut data = plain;
    if let Some(xts) = xts {
        crypt::encrypt(xts, start, &mut data);
    }
    vol.write(start, Bytes::from(data), false).await?;
    Ok(Outcome::Fetched(len))
}
