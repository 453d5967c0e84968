//! Who uses a target now, so that a prune never deletes a piece a backup
//! under way is about to name (restic's protocol, on S3's read-after-write
//! consistency): each user writes its lock object, then lists the others;
//! if one it cannot share with is there and fresh, it removes its own and
//! gives way. Two that write at once each see the other, and both give
//! way. Backups share the target with each other, but not one volume:
//! two backups of one volume would each drop the other's snapshot.
//!
//! A lock is rewritten every [`REFRESH`]; one not rewritten for
//! [`STALE_MS`] is a killed process's and is ignored, as is one whose
//! process on this host has ended (a killed backup run again at once):
//! see [`ended`].
//!
//! # Format
//!
//! `locks/<backup|prune|verify>-<id>`, JSON: `{"kind", "volume", "host",
//! "pid", "boot_id", "pid_ns", "refreshed_ms"}` (no secret and no data:
//! plain). `boot_id` is the holder's kernel's boot
//! (`/proc/sys/kernel/random/boot_id`), `pid_ns` its PID namespace
//! (`/proc/self/ns/pid`'s link, `pid:[inode]`); both absent from locks of
//! earlier versions.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::BackupError;
use crate::repo::Repo;

pub const REFRESH: Duration = Duration::from_secs(60);
pub const STALE_MS: u64 = 5 * 60_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    /// Writes pieces and a manifest of one volume.
    Backup,
    /// Reads only.
    Verify,
    /// Deletes manifests and pieces: alone.
    Prune,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    pub kind: LockKind,
    pub volume: Option<String>,
    /// The host and process holding it.
    pub host: String,
    pub pid: u32,
    /// The kernel (its boot) and the PID namespace `pid` is numbered in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_ns: Option<String>,
    pub refreshed_ms: u64,
}

/// Whether `theirs` is known to be held by a process that has ended: one
/// of this kernel's boot and this PID namespace whose pid `alive` says is
/// free. Hostnames repeat across machines and containers, and namespace
/// numbers across kernels (the initial one is the same everywhere); a pid
/// read elsewhere says nothing of the process there. A lock without them
/// (an earlier version's) is left to go stale.
pub fn ended(mine: &LockRecord, theirs: &LockRecord, alive: impl Fn(u32) -> bool) -> bool {
    let known = theirs.boot_id.is_some() && theirs.pid_ns.is_some();
    let here = theirs.host == mine.host && theirs.boot_id == mine.boot_id && theirs.pid_ns == mine.pid_ns;
    known && here && !alive(theirs.pid)
}

/// Whether `mine` must give way to `theirs` at `now_ms`; `theirs_gone`:
/// its process is known to have ended (it ran on this host and its pid
/// is free), so its lock holds nothing any more.
pub fn conflicts(mine: &LockRecord, theirs: &LockRecord, now_ms: u64, theirs_gone: bool) -> bool {
    if theirs_gone || now_ms.saturating_sub(theirs.refreshed_ms) >= STALE_MS {
        return false;
    }
    match (mine.kind, theirs.kind) {
        (LockKind::Prune, _) | (_, LockKind::Prune) => true,
        (LockKind::Backup, LockKind::Backup) => mine.volume == theirs.volume,
        _ => false,
    }
}

/// A held lock; [`Lock::release`] it (a dropped one stops being refreshed
/// and runs out).
#[derive(Debug)]
pub struct Lock {
    repo: Arc<Repo>,
    name: String,
    refresher: tokio::task::JoinHandle<()>,
}

impl Lock {
    /// Takes a lock named `id` (a backup's id: a resumed backup takes its
    /// own lock again).
    pub async fn acquire(
        repo: &Arc<Repo>,
        kind: LockKind,
        volume: Option<&str>,
        id: &str,
    ) -> Result<Self, BackupError> {
        let kind_name = serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        let name = format!("locks/{kind_name}-{id}");
        let mine = LockRecord {
            kind,
            volume: volume.map(String::from),
            host: hostname(),
            pid: std::process::id(),
            boot_id: boot_id(),
            pid_ns: pid_namespace(),
            refreshed_ms: chuyi_common::clock::unix_ms(),
        };
        write(repo, &name, &mine).await?;
        let now = chuyi_common::clock::unix_ms();
        for other in repo.list("locks/").await? {
            if other == name {
                continue;
            }
            let Some(theirs) = read(repo, &other).await? else { continue };
            let gone = ended(&mine, &theirs, |pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
            if conflicts(&mine, &theirs, now, gone) {
                repo.delete(&name).await?;
                let by = format!("{} pid {}", theirs.host, theirs.pid);
                let what = match &theirs.volume {
                    Some(v) => format!("a {:?} of volume {v} ({by})", theirs.kind),
                    None => format!("a {:?} ({by})", theirs.kind),
                };
                return Err(BackupError::Locked(what));
            }
        }
        let refresher = tokio::spawn(refresh(repo.clone(), name.clone(), mine));
        Ok(Self { repo: repo.clone(), name, refresher })
    }

    pub async fn release(mut self) {
        self.refresher.abort();
        // A refresh under way could land after the delete and bring the
        // lock back: waited out first.
        let _ = (&mut self.refresher).await;
        if let Err(e) = self.repo.delete(&self.name).await {
            tracing::warn!(lock = self.name, error = %e, "lock not removed; it runs out by itself");
        }
    }
}

/// A lock dropped without `release` (its task cancelled) stops being
/// refreshed, and runs out.
impl Drop for Lock {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

async fn refresh(repo: Arc<Repo>, name: String, mut record: LockRecord) {
    loop {
        tokio::time::sleep(REFRESH).await;
        record.refreshed_ms = chuyi_common::clock::unix_ms();
        if let Err(e) = write(&repo, &name, &record).await {
            tracing::warn!(lock = name, error = %e, "could not refresh the lock");
        }
    }
}

async fn write(repo: &Repo, name: &str, record: &LockRecord) -> Result<(), BackupError> {
    let json = serde_json::to_vec(record).map_err(|e| BackupError::Invalid(e.to_string()))?;
    Ok(repo.s3.put(&repo.path.bucket, &repo.path.key(name), Bytes::from(json)).await?)
}

/// A lock's record; `None` if it went meanwhile or is not one.
async fn read(repo: &Repo, name: &str) -> Result<Option<LockRecord>, BackupError> {
    let Some(bytes) = repo.s3.get(&repo.path.bucket, &repo.path.key(name)).await? else { return Ok(None) };
    Ok(serde_json::from_slice(&bytes).ok())
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|b| b.trim().to_string())
}

fn pid_namespace() -> Option<String> {
    std::fs::read_link("/proc/self/ns/pid").ok().map(|l| l.to_string_lossy().into_owned())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(kind: LockKind, volume: Option<&str>, at: u64) -> LockRecord {
        LockRecord {
            kind,
            volume: volume.map(String::from),
            host: "h".into(),
            pid: 1,
            boot_id: Some("b".into()),
            pid_ns: Some("pid:[1]".into()),
            refreshed_ms: at,
        }
    }

    #[test]
    fn only_a_process_of_this_boot_and_pid_namespace_is_known_ended() {
        let mine = lock(LockKind::Prune, None, 0);
        let theirs = LockRecord { pid: 7, ..lock(LockKind::Backup, Some("a"), 0) };
        let free = |_| false;
        assert!(ended(&mine, &theirs, free));
        assert!(!ended(&mine, &theirs, |pid| pid == 7), "its pid is in use");
        let other_host = LockRecord { host: "g".into(), ..theirs.clone() };
        assert!(!ended(&mine, &other_host, free));
        let other_ns = LockRecord { pid_ns: Some("pid:[2]".into()), ..theirs.clone() };
        assert!(!ended(&mine, &other_ns, free), "a container of the same hostname");
        let other_boot = LockRecord { boot_id: Some("c".into()), ..theirs.clone() };
        assert!(!ended(&mine, &other_boot, free), "another machine of the same hostname");
        let unknown = LockRecord { pid_ns: None, boot_id: None, ..theirs.clone() };
        assert!(!ended(&mine, &unknown, free), "an earlier version's lock");
    }

    #[test]
    fn a_lock_of_an_earlier_version_reads() {
        let old = br#"{"kind":"backup","volume":"a","host":"h","pid":3,"refreshed_ms":5}"#;
        let record: LockRecord = serde_json::from_slice(old).expect("reads");
        assert_eq!((record.pid, record.boot_id, record.pid_ns), (3, None, None));
    }

    #[test]
    fn prune_is_alone_and_backups_share_all_but_their_volume() {
        let now = 10 * STALE_MS;
        let b1 = lock(LockKind::Backup, Some("a"), now);
        let b2 = lock(LockKind::Backup, Some("b"), now);
        let p = lock(LockKind::Prune, None, now);
        let v = lock(LockKind::Verify, None, now);
        assert!(!conflicts(&b1, &b2, now, false));
        assert!(conflicts(&b1, &lock(LockKind::Backup, Some("a"), now), now, false));
        assert!(conflicts(&p, &b1, now, false) && conflicts(&b1, &p, now, false) && conflicts(&v, &p, now, false));
        assert!(!conflicts(&v, &b1, now, false) && !conflicts(&b1, &v, now, false));
    }

    #[test]
    fn a_stale_lock_is_ignored() {
        let now = 10 * STALE_MS;
        let p = lock(LockKind::Prune, None, now);
        assert!(!conflicts(&p, &lock(LockKind::Backup, Some("a"), now - STALE_MS), now, false));
        assert!(conflicts(&p, &lock(LockKind::Backup, Some("a"), now - STALE_MS + 1), now, false));
        assert!(!conflicts(&p, &lock(LockKind::Backup, Some("a"), now), now, true), "its process has ended");
    }
}
