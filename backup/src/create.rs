//! Taking a backup of a volume into a target.
//!
//! 1. A snapshot of the volume is taken (`backup-<target id>-<backup id>`),
//!    so the backup reads one point in time while the volume is written.
//! 2. The spans to read: against the newest backup of the same volume in
//!    the target whose snapshot still exists, only the spans its snapshot
//!    diff says changed (incremental); else every span holding data (full;
//!    a clone, whose parent's data its own chunks do not show, reads all).
//! 3. The journal (`pending/`) is written: spans to read, pieces so far.
//! 4. Each span is read from the snapshot (deciphered, for an encrypted
//!    volume), hashed into its piece id and, unless the target has that
//!    piece already, sealed and sent, paced by the throttle. The journal
//!    is rewritten every few seconds.
//! 5. The manifest is written, then the journal deleted, then the
//!    volume's older backup snapshots of this target.
//!
//! Killed anywhere, the next run finds the journal and reads only the
//! spans it still lists; the pieces already in the target (listed at the
//! start of every run) are not sent again, even those sent after the
//! journal was last written.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chuyi_client::{crypt, Cluster, VolumeIo};
use chuyi_common::sm4::{Kek, Sm4Xts};
use chuyi_meta_api::backup_schedule::SNAPSHOT_PREFIX;
use futures::StreamExt;

use crate::catalog;
use crate::envelope::Kind;
use crate::error::BackupError;
use crate::lock::{Lock, LockKind};
use crate::manifest::{self, image_hash, Manifest, Stats};
use crate::repo::{journal_name, manifest_name, piece_name, PieceId, Repo, PIECE_BYTES};
use crate::throttle::Throttle;

/// How often a running backup rewrites its journal.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct CreateOptions {
    /// The schedule taking it (its label), recorded in the manifest.
    pub schedule: Option<String>,
    /// Spans read and sent at once.
    pub in_flight: usize,
    pub throttle: Arc<Throttle>,
    /// Read every span, even with a usable parent.
    pub full: bool,
}

/// What a backup run reports as it goes: spans done of all to do this
/// run, and bytes read.
pub type Progress<'a> = &'a (dyn Fn(u64, u64, u64) + Sync);

/// A backup made, and what this run of it did (a resumed backup's
/// manifest sums every run).
#[derive(Clone, Debug)]
pub struct Created {
    pub manifest: Manifest,
    pub this_run: Stats,
}

/// Backs `volume` up into `repo`, resuming a backup of it left under way.
pub async fn create(
    cluster: &Arc<Cluster>,
    repo: &Arc<Repo>,
    kek: &Kek,
    volume: &str,
    options: &CreateOptions,
    progress: Progress<'_>,
) -> Result<Created, BackupError> {
    let vol = cluster.open_volume(volume).await?;
    let xts = volume_key(kek, &vol)?;
    let lock =
        Lock::acquire(repo, LockKind::Backup, Some(volume), &manifest::new_id(chuyi_common::clock::unix_ms())).await?;
    let result = async {
        let (mut journal, vol) = match resumable(cluster, repo, &vol).await? {
            // Opened now, the volume is at least as large as when the
            // journal's snapshot was taken: volumes only grow.
            Some(journal) => (journal, vol),
            None => start(cluster, repo, vol, options).await?,
        };
        let mut this_run = run(repo, &vol, xts.as_ref(), &mut journal, options, progress).await?;
        // Every piece the manifest names must be in the target when it is
        // written: one sent before a long cut could have been swept by a
        // prune that took this backup's lock for a dead process's. Spans
        // whose piece is gone are read and sent again.
        for _ in 0..RECHECKS {
            let present = repo.pieces().await?;
            journal.todo = missing(&journal, &present);
            if journal.todo.is_empty() {
                break;
            }
            tracing::warn!(volume, spans = journal.todo.len(), "pieces gone from the target; sending them again");
            this_run += &run(repo, &vol, xts.as_ref(), &mut journal, options, progress).await?;
        }
        Ok(Created { manifest: finish(cluster, repo, journal).await?, this_run })
    }
    .await;
    lock.release().await;
    result
}

/// Times the pieces are checked and the missing ones sent again.
const RECHECKS: usize = 3;

/// Spans whose piece is not among `present`.
fn missing(journal: &Manifest, present: &HashSet<PieceId>) -> Vec<u64> {
    let gone = |p: &Option<PieceId>| p.as_ref().is_some_and(|id| !present.contains(id));
    (0..journal.pieces.len() as u64).filter(|&i| gone(&journal.pieces[i as usize])).collect()
}

/// The volume's data key, for an encrypted volume.
fn volume_key(kek: &Kek, vol: &VolumeIo) -> Result<Option<Sm4Xts>, BackupError> {
    let v = vol.volume();
    crypt::volume_cipher(Some(kek), v).map_err(|e| BackupError::Invalid(format!("volume {}'s key: {e}", v.name)))
}

/// A journal of this volume left by a killed run, if its snapshot is still
/// there; journals of a volume of the same name deleted since, or whose
/// snapshot is gone, are dropped (their pieces are swept by a prune).
async fn resumable(cluster: &Arc<Cluster>, repo: &Repo, vol: &VolumeIo) -> Result<Option<Manifest>, BackupError> {
    let name = &vol.volume().name;
    let mut found = None;
    for (volume, id) in catalog::pending(repo).await? {
        if &volume != name {
            continue;
        }
        let usable = match catalog::journal(repo, &volume, &id).await? {
            Some(j)
                if j.volume_owner == vol.volume().id
                    && snapshot_is(cluster, name, &j.snapshot, j.snapshot_id).await? =>
            {
                Some(j)
            }
            _ => None,
        };
        match usable {
            Some(j) if found.is_none() => found = Some(j),
            _ => repo.delete(&journal_name(&volume, &id)).await?,
        }
    }
    if let Some(j) = &found {
        tracing::info!(volume = name, backup = j.id, left = j.todo.len(), "resuming a backup");
    }
    Ok(found)
}

/// Whether `volume` still has snapshot `name` with id `id`; an error
/// other than "not found" is an error, not a "no" (that would drop a
/// resumable journal over a metadata hiccup).
async fn snapshot_is(cluster: &Cluster, volume: &str, name: &str, id: u32) -> Result<bool, BackupError> {
    use chuyi_meta_api::MetaError;
    match chuyi_client::snapshot::find(cluster, volume, name).await {
        Ok(s) => Ok(s.id == id),
        Err(chuyi_client::ClientError::Meta(MetaError::NotFound { .. })) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// `SnapshotGone` unless `volume` still has snapshot `name` with id `id`.
async fn still_there(cluster: &Cluster, volume: &str, name: &str, id: u32) -> Result<(), BackupError> {
    if snapshot_is(cluster, volume, name, id).await? {
        return Ok(());
    }
    Err(BackupError::SnapshotGone { volume: volume.into(), snapshot: name.into() })
}

/// A new backup's journal, its snapshot taken and its spans chosen, and
/// the volume as it was opened after the snapshot.
async fn start(
    cluster: &Arc<Cluster>,
    repo: &Repo,
    opened: VolumeIo,
    options: &CreateOptions,
) -> Result<(Manifest, VolumeIo), BackupError> {
    let now = chuyi_common::clock::unix_ms();
    let id = manifest::new_id(now);
    let snapshot_name = format!("{SNAPSHOT_PREFIX}{}-{id}", repo.id);
    let snapshot = chuyi_client::snapshot::create(cluster, &opened.volume().name, &snapshot_name).await?;
    let vol = match after_snapshot(cluster, &opened).await {
        Ok(vol) => vol,
        Err(e) => {
            let _ = chuyi_client::snapshot::delete(cluster, &opened.volume().name, &snapshot_name).await;
            return Err(e);
        }
    };
    let v = vol.volume();
    let parent = if options.full { None } else { parent(cluster, repo, &vol).await? };
    let spans = Manifest::spans(v.size_bytes);
    let (pieces, changed) = match &parent {
        Some(p) => (p.pieces.clone(), vol.diff(Some(p.snapshot_id), Some(snapshot.id)).await?),
        None if vol.is_clone() => (vec![None; spans as usize], vec![(0, v.size_bytes)]),
        None => (vec![None; spans as usize], vol.diff(None, Some(snapshot.id)).await?),
    };
    // Refused now, not when a checkpoint or the manifest grows past what
    // can be read back: a journal resumed would fail there again for good.
    let todo = spans_of(&changed);
    let data_spans = pieces.iter().filter(|p| p.is_some()).count() as u64 + todo.len() as u64;
    if !manifest::fits(spans, data_spans) {
        return Err(BackupError::Invalid(format!(
            "volume {} has {data_spans} spans of data: its backup's manifest would be larger than can be read back; it cannot be backed up yet",
            v.name
        )));
    }
    // A snapshot deleted under a diff is read as the next newer one by the
    // nodes, which would miss changes: the parent must outlive the diff.
    if let Some(p) = &parent {
        still_there(cluster, &v.name, &p.snapshot, p.snapshot_id).await?;
    }
    let journal = Manifest {
        format: manifest::FORMAT,
        id,
        volume: v.name.clone(),
        volume_owner: v.id,
        volume_bytes: v.size_bytes,
        encrypted: !v.wrapped_key.is_empty(),
        snapshot: snapshot_name,
        snapshot_id: snapshot.id,
        parent: parent.map(|p| p.id),
        schedule: options.schedule.clone(),
        started_ms: now,
        finished_ms: 0,
        piece_bytes: PIECE_BYTES,
        pieces,
        todo,
        image_hash: [0; 32],
        stats: Stats { changed_bytes: changed.iter().map(|(_, len)| len).sum(), ..Stats::default() },
    };
    repo.put_sealed(Kind::Journal, &journal_name(&journal.volume, &journal.id), &journal.encode()).await?;
    Ok((journal, vol))
}

/// The volume opened again once its snapshot is taken. Grown between the
/// first open and the snapshot, the snapshot holds more than the first
/// open's size: a backup of that size would leave the grown part's data
/// out. Volumes only grow, so a size read after the snapshot covers it
/// (a part grown later reads as zeros in the snapshot). A volume deleted
/// and made again under the same name took the snapshot instead.
async fn after_snapshot(cluster: &Arc<Cluster>, opened: &VolumeIo) -> Result<VolumeIo, BackupError> {
    let name = &opened.volume().name;
    let vol = cluster.open_volume(name).await?;
    if vol.volume().id != opened.volume().id {
        return Err(BackupError::Invalid(format!(
            "volume {name} was deleted and made again while its backup started; run the backup again"
        )));
    }
    Ok(vol)
}

/// The newest complete backup of this very volume (same owner and size)
/// whose snapshot the cluster still has.
async fn parent(cluster: &Arc<Cluster>, repo: &Repo, vol: &VolumeIo) -> Result<Option<Manifest>, BackupError> {
    let v = vol.volume();
    let newest = catalog::complete(repo).await?.into_iter().rfind(|(volume, _)| volume == &v.name);
    let Some((volume, id)) = newest else { return Ok(None) };
    let m = catalog::manifest(repo, &volume, &id).await?;
    let same = m.volume_owner == v.id && m.volume_bytes == v.size_bytes;
    Ok((same && snapshot_is(cluster, &v.name, &m.snapshot, m.snapshot_id).await?).then_some(m))
}

/// The spans byte ranges touch, ascending.
pub fn spans_of(ranges: &[(u64, u64)]) -> Vec<u64> {
    let piece = u64::from(PIECE_BYTES);
    let mut out: Vec<u64> = Vec::new();
    for &(start, len) in ranges.iter().filter(|(_, len)| *len > 0) {
        let first = (start / piece).max(out.last().map_or(0, |l| l + 1));
        out.extend(first..=(start + len - 1) / piece);
    }
    out
}

/// Reads and sends the journal's spans, checkpointing as it goes; what
/// this run did.
async fn run(
    repo: &Arc<Repo>,
    vol: &VolumeIo,
    xts: Option<&Sm4Xts>,
    journal: &mut Manifest,
    options: &CreateOptions,
    progress: Progress<'_>,
) -> Result<Stats, BackupError> {
    let known = Mutex::new(repo.pieces().await?);
    let snap = vol.at_snapshot(journal.snapshot_id);
    let todo = journal.todo.clone();
    let total = todo.len() as u64;
    let ctx = SpanCtx { repo, snap: &snap, xts, known: &known, throttle: &options.throttle, journal: &*journal };
    let mut sends = futures::stream::iter(todo.iter().copied())
        .map(|index| {
            let ctx = &ctx;
            async move { ctx.back_up(index).await.map(|(piece, stats)| (index, piece, stats)) }
        })
        .buffer_unordered(options.in_flight.max(1));
    let mut done: HashSet<u64> = HashSet::new();
    let mut results: Vec<(u64, Option<PieceId>, Stats)> = Vec::new();
    let mut last_checkpoint = Instant::now();
    let mut bytes = 0;
    let mut failed = None;
    while let Some(next) = sends.next().await {
        match next {
            Ok(r) => {
                bytes += r.2.bytes_read;
                done.insert(r.0);
                results.push(r);
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
        progress(done.len() as u64, total, bytes);
        if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            checkpoint(repo, with_results(ctx.journal, &results, &done)).await?;
            last_checkpoint = Instant::now();
        }
    }
    drop(sends);
    apply(journal, &results, &done);
    if let Some(e) = failed {
        // What finished is kept for the next run.
        checkpoint(repo, journal.clone()).await?;
        return Err(e);
    }
    let mut this_run = Stats::default();
    results.iter().for_each(|(_, _, s)| this_run += s);
    Ok(this_run)
}

/// The journal as it is with `results` applied.
fn with_results(journal: &Manifest, results: &[(u64, Option<PieceId>, Stats)], done: &HashSet<u64>) -> Manifest {
    let mut j = journal.clone();
    apply(&mut j, results, done);
    j
}

async fn checkpoint(repo: &Repo, journal: Manifest) -> Result<(), BackupError> {
    let name = journal_name(&journal.volume, &journal.id);
    repo.put_sealed(Kind::Journal, &name, &journal.encode()).await.map(drop)
}

fn apply(journal: &mut Manifest, results: &[(u64, Option<PieceId>, Stats)], done: &HashSet<u64>) {
    for (index, piece, stats) in results {
        journal.pieces[*index as usize] = *piece;
        journal.stats += stats;
    }
    journal.todo.retain(|i| !done.contains(i));
}

/// What each span's task shares.
struct SpanCtx<'a> {
    repo: &'a Arc<Repo>,
    snap: &'a VolumeIo,
    xts: Option<&'a Sm4Xts>,
    known: &'a Mutex<HashSet<PieceId>>,
    throttle: &'a Throttle,
    journal: &'a Manifest,
}

impl SpanCtx<'_> {
    /// Reads span `index` and stores its piece unless the target has it.
    async fn back_up(&self, index: u64) -> Result<(Option<PieceId>, Stats), BackupError> {
        let (start, end) = self.journal.span_range(index);
        let mut data = self.snap.read(start, end - start).await?;
        if let Some(xts) = self.xts {
            data = crypt::decrypt(xts, start, data);
        }
        let mut stats = Stats { spans_read: 1, bytes_read: data.len() as u64, ..Stats::default() };
        if is_zero(&data) {
            stats.holes = 1;
            return Ok((None, stats));
        }
        let id = self.repo.piece_id(&data);
        let new = self.known.lock().map(|mut k| k.insert(id)).unwrap_or(true);
        if !new {
            stats.pieces_reused = 1;
            return Ok((Some(id), stats));
        }
        let sent = self.send(&id, &data).await;
        if sent.is_err() {
            // Not in the target after all: another span of it must send it.
            if let Ok(mut k) = self.known.lock() {
                k.remove(&id);
            }
        }
        stats.bytes_sent = sent?;
        stats.pieces_sent = 1;
        Ok((Some(id), stats))
    }

    async fn send(&self, id: &PieceId, data: &Bytes) -> Result<u64, BackupError> {
        let name = piece_name(id);
        let sealed = self.repo.seal(Kind::Piece, &name, data);
        let len = sealed.len() as u64;
        self.throttle.take(len).await;
        self.repo.s3.put(&self.repo.path.bucket, &self.repo.path.key(&name), sealed).await?;
        Ok(len)
    }
}

/// Whether a span reads as zeros (a hole: stored nowhere).
pub fn is_zero(data: &[u8]) -> bool {
    data.iter().all(|&b| b == 0)
}

/// Writes the manifest, drops the journal and the volume's older backup
/// snapshots of this target.
async fn finish(cluster: &Arc<Cluster>, repo: &Repo, mut journal: Manifest) -> Result<Manifest, BackupError> {
    if !journal.todo.is_empty() {
        return Err(BackupError::Invalid(format!(
            "backup {} still has {} spans to read",
            journal.id,
            journal.todo.len()
        )));
    }
    // Likewise the backup's own snapshot must outlive every read of it.
    still_there(cluster, &journal.volume, &journal.snapshot, journal.snapshot_id).await?;
    journal.finished_ms = chuyi_common::clock::unix_ms();
    journal.image_hash = image_hash(journal.volume_bytes, &journal.pieces);
    if journal.parent.is_none() {
        journal.stats.changed_bytes = journal.data_bytes();
    }
    repo.put_sealed(Kind::Manifest, &manifest_name(&journal.volume, &journal.id), &journal.encode()).await?;
    repo.delete(&journal_name(&journal.volume, &journal.id)).await?;
    let prefix = format!("{SNAPSHOT_PREFIX}{}-", repo.id);
    let snapshots = cluster
        .meta()
        .ask(chuyi_meta_api::ask::Snapshots(journal.volume.clone()))
        .await
        .map_err(chuyi_client::ClientError::from)?;
    for old in snapshots.snapshots.iter().filter(|s| s.name.starts_with(&prefix) && s.name != journal.snapshot) {
        if let Err(e) = chuyi_client::snapshot::delete(cluster, &journal.volume, &old.name).await {
            tracing::warn!(volume = journal.volume, snapshot = old.name, error = %e, "an old backup snapshot stays");
        }
    }
    Ok(journal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_ranges_become_the_spans_they_touch() {
        let m = u64::from(PIECE_BYTES);
        assert_eq!(spans_of(&[]), Vec::<u64>::new());
        assert_eq!(spans_of(&[(0, 1)]), vec![0]);
        assert_eq!(spans_of(&[(m - 1, 2)]), vec![0, 1]);
        assert_eq!(spans_of(&[(0, 4096), (8192, 4096), (3 * m, m)]), vec![0, 3]);
        assert_eq!(spans_of(&[(0, 2 * m), (2 * m - 5, 10), (5 * m, 0)]), vec![0, 1, 2]);
    }

    #[test]
    fn zeros_are_told_from_data_anywhere_in_a_span() {
        let mut span = vec![0u8; 4099];
        assert!(is_zero(&span));
        span[4098] = 1;
        assert!(!is_zero(&span));
        span[4098] = 0;
        span[17] = 1;
        assert!(!is_zero(&span));
    }
}
