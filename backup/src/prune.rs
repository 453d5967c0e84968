//! Pruning a target: the backups a retention policy no longer keeps are
//! forgotten (manifest, then drill), then every piece no manifest and no
//! journal names is deleted (mark and sweep). It runs alone on the target
//! (lock.rs), so no backup names a piece meanwhile.
//!
//! Interrupted anywhere, nothing a kept backup needs is gone: manifests go
//! first, and a piece is deleted only once no remaining manifest or
//! journal names it; the next prune sweeps what this one left.

use std::collections::HashSet;
use std::sync::Arc;

use serde::Serialize;

use crate::catalog;
use crate::error::BackupError;
use crate::lock::{Lock, LockKind};
use crate::manifest;
use crate::repo::{drill_name, manifest_name, piece_name, PieceId, Repo};
use crate::retention::{kept, Retention};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PruneStats {
    /// Backups forgotten, as `volume/id`.
    pub forgotten: Vec<String>,
    pub backups_kept: u64,
    pub pieces_kept: u64,
    pub pieces_deleted: u64,
}

/// Applies `policy` to the backups of `volume` (every volume when `None`),
/// then sweeps unnamed pieces.
pub async fn prune(repo: &Arc<Repo>, volume: Option<&str>, policy: &Retention) -> Result<PruneStats, BackupError> {
    let lock = Lock::acquire(repo, LockKind::Prune, None, &manifest::new_id(chuyi_common::clock::unix_ms())).await?;
    let result = run(repo, volume, policy).await;
    lock.release().await;
    result
}

async fn run(repo: &Repo, volume: Option<&str>, policy: &Retention) -> Result<PruneStats, BackupError> {
    let mut stats = PruneStats::default();
    let all = catalog::complete(repo).await?;
    let mut volumes: Vec<&str> = all.iter().map(|(v, _)| v.as_str()).collect();
    volumes.dedup();
    for v in volumes.into_iter().filter(|v| volume.is_none_or(|only| only == *v)) {
        let ids: Vec<&str> = all.iter().filter(|(vol, _)| vol == v).map(|(_, id)| id.as_str()).collect();
        let times: Vec<u64> = ids.iter().map(|id| manifest::id_time_ms(id).unwrap_or(0)).collect();
        let keep = kept(&times, policy);
        for (i, id) in ids.iter().enumerate().filter(|(i, _)| !keep.contains(i)) {
            repo.delete(&manifest_name(v, id)).await?;
            repo.delete(&drill_name(v, id)).await?;
            stats.forgotten.push(format!("{v}/{id}"));
            tracing::info!(volume = v, backup = id, index = i, "backup forgotten");
        }
    }
    let named = named_pieces(repo).await?;
    for id in repo.pieces().await? {
        if named.0.contains(&id) {
            stats.pieces_kept += 1;
        } else {
            repo.delete(&piece_name(&id)).await?;
            stats.pieces_deleted += 1;
        }
    }
    stats.backups_kept = named.1;
    Ok(stats)
}

/// Every piece a manifest or journal in the target names, and how many
/// manifests there are.
async fn named_pieces(repo: &Repo) -> Result<(HashSet<PieceId>, u64), BackupError> {
    let mut named = HashSet::new();
    let complete = catalog::complete(repo).await?;
    for (volume, id) in &complete {
        named.extend(catalog::manifest(repo, volume, id).await?.pieces.into_iter().flatten());
    }
    for (volume, id) in catalog::pending(repo).await? {
        if let Some(j) = catalog::journal(repo, &volume, &id).await? {
            named.extend(j.pieces.into_iter().flatten());
        }
    }
    Ok((named, complete.len() as u64))
}
