//! Finding backups in a target: the complete ones (a manifest under
//! `backups/`), the ones under way (a journal under `pending/`), and the
//! last drill of each.

use serde::{Deserialize, Serialize};

use crate::envelope::Kind;
use crate::error::BackupError;
use crate::manifest::Manifest;
use crate::repo::{drill_name, journal_name, manifest_name, Repo};

/// `(volume, backup id)` of every complete backup, oldest first per volume.
pub async fn complete(repo: &Repo) -> Result<Vec<(String, String)>, BackupError> {
    entries(repo, "backups/").await
}

/// `(volume, backup id)` of every backup under way (or killed).
pub async fn pending(repo: &Repo) -> Result<Vec<(String, String)>, BackupError> {
    entries(repo, "pending/").await
}

async fn entries(repo: &Repo, dir: &str) -> Result<Vec<(String, String)>, BackupError> {
    let mut out: Vec<(String, String)> = repo
        .list(dir)
        .await?
        .iter()
        .filter_map(|name| name.strip_prefix(dir)?.split_once('/'))
        .map(|(volume, id)| (volume.to_string(), id.to_string()))
        .collect();
    out.sort();
    Ok(out)
}

pub async fn manifest(repo: &Repo, volume: &str, id: &str) -> Result<Manifest, BackupError> {
    let name = manifest_name(volume, id);
    let bytes =
        repo.get_sealed(Kind::Manifest, &name).await?.ok_or_else(|| BackupError::NotFound(format!("{volume}/{id}")))?;
    Manifest::decode(&bytes, &format!("{}/{name}", repo.path))
}

pub async fn journal(repo: &Repo, volume: &str, id: &str) -> Result<Option<Manifest>, BackupError> {
    let name = journal_name(volume, id);
    match repo.get_sealed(Kind::Journal, &name).await? {
        Some(bytes) => Manifest::decode(&bytes, &format!("{}/{name}", repo.path)).map(Some),
        None => Ok(None),
    }
}

/// The backup `which` names: a backup id, or a volume name for that
/// volume's newest backup.
pub async fn find(repo: &Repo, which: &str) -> Result<Manifest, BackupError> {
    let all = complete(repo).await?;
    if let Some((volume, id)) = all.iter().find(|(_, id)| id == which) {
        return manifest(repo, volume, id).await;
    }
    match all.iter().filter(|(volume, _)| volume == which).max_by(|a, b| a.1.cmp(&b.1)) {
        Some((volume, id)) => manifest(repo, volume, id).await,
        None => Err(BackupError::NotFound(which.to_string())),
    }
}

/// The result of checking a backup against its target (a drill).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drill {
    pub backup: String,
    pub checked_ms: u64,
    pub pieces_checked: u64,
    pub bytes_checked: u64,
    /// `(span, why)` of each span whose piece is missing or bad.
    pub bad: Vec<(u64, String)>,
    /// Whether the image hash recomputed from the data read back matches
    /// the manifest's.
    pub image_hash_ok: bool,
}

impl Drill {
    pub fn passed(&self) -> bool {
        self.bad.is_empty() && self.image_hash_ok
    }
}

pub async fn drill(repo: &Repo, volume: &str, id: &str) -> Result<Option<Drill>, BackupError> {
    let name = drill_name(volume, id);
    match repo.get_sealed(Kind::Drill, &name).await? {
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| BackupError::corrupt(name, e.to_string())),
        None => Ok(None),
    }
}
