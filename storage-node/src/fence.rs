//! Volume fences: the newest fencing token this node knows for each volume,
//! kept in a file of its own so a restart does not forget them.
//!
//! A volume has one writer, the holder of its attach lease, and every
//! mutation of a volume's chunk carries the writer's token (its lease id;
//! lease ids only grow). The lease alone cannot stop a writer that froze
//! with requests queued: when it resumes, they reach the nodes after the
//! metadata service has given the volume to a newer writer. So a node
//! refuses a mutation whose token is older than the newest it knows for the
//! volume, and learns a newer token before it applies anything under it,
//! durably, so the refusal survives a restart.
//!
//! Why the order holds: a replica checks the token under the chunk's range
//! lock, just before it applies the mutation, and raises its fence before
//! applying a newer writer's. A newer writer's write is acknowledged only
//! once every replica of the chunk has applied it, so from then on each of
//! them refuses the older token; a mutation of the older writer applied
//! earlier is simply overwritten. Replicas that join later get the
//! primary's fences with their backfill before they count as complete, and
//! a new writer raises the fence on every node before its first request
//! (`RaiseFences`), so even chunks it never writes are closed to the old
//! one.
//!
//! Rejected: fencing by client address (Ceph's blocklist) ties the fence to
//! a network identity a restarted or moved frontend does not keep; a token
//! per chunk in the slot table covers only chunks that exist.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

use chuyi_common::proto::chunk::VolumeFence;

/// The file name of the fence table in the node's state directory.
pub const FENCES_FILE: &str = "chuyi-fences";

/// What to do with a mutation, given the owner's fence here and the
/// request's token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Apply it: unfenced data (object chunks), or the current writer.
    Admit,
    /// A newer writer: raise the fence to this token (durably), then apply.
    Raise(u64),
    /// An older writer, or a request without a token for a fenced volume.
    Refuse,
}

/// The decision, without I/O.
pub fn judge(known: Option<u64>, token: Option<u64>) -> Verdict {
    match (known, token) {
        (None, None) => Verdict::Admit,
        (None, Some(t)) => Verdict::Raise(t),
        (Some(_), None) => Verdict::Refuse,
        (Some(k), Some(t)) if t < k => Verdict::Refuse,
        (Some(k), Some(t)) if t == k => Verdict::Admit,
        (Some(_), Some(t)) => Verdict::Raise(t),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    /// The request's token is older than the volume's fence here.
    #[error("volume owner {owner:016x} is fenced at token {known}; the request carries {token:?}")]
    Fenced { owner: u64, known: u64, token: Option<u64> },
    /// The request's snap sequence is older than the volume's newest here.
    #[error("volume owner {owner:016x} has snapshot {known}; the request was sent under {snap}")]
    SnapStale { owner: u64, known: u32, snap: u32 },
    /// The fence table could not be made durable; nothing was applied.
    #[error("the fence table at {path} could not be written: {source}")]
    Persist { path: String, source: std::io::Error },
    #[error("the fence table at {path} is damaged: {problem}")]
    Damaged { path: String, problem: String },
    /// The disks hold chunks but the table is gone (its disk replaced,
    /// `state_dir` moved): starting would take old writers again.
    #[error(
        "the fence table {path} is missing but the disks hold chunks; restore it, or start once with \
         accept_missing_fences = true (a node upgraded from before fencing, or a table known lost)"
    )]
    Missing { path: String },
}

/// What a node knows of one volume: its newest writer's token and its
/// newest snapshot's sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Known {
    pub token: u64,
    pub snap: u32,
}

/// The fence table of a node.
#[derive(Debug)]
pub struct Fences {
    /// `None`: kept in memory only (tests of a bare replicator).
    path: Option<PathBuf>,
    table: RwLock<HashMap<u64, Known>>,
    /// Held while the file is rewritten, so raises are written one at a time
    /// and each file holds every raise made before it.
    writing: tokio::sync::Mutex<()>,
}

impl Fences {
    /// A table kept in memory only.
    pub fn in_memory() -> Self {
        Self { path: None, table: RwLock::default(), writing: tokio::sync::Mutex::new(()) }
    }

    /// Opens the table in `dir`. A missing table is started empty (and
    /// written at once, so the next start finds it) only when `fresh`
    /// says the node holds no data it could guard: read as empty on a node
    /// whose disks hold chunks, a lost table would take old writers again.
    pub fn open(dir: &Path, fresh: impl FnOnce() -> bool) -> Result<Self, FenceError> {
        let path = dir.join(FENCES_FILE);
        let shown = path.display().to_string();
        let table = match std::fs::read(&path) {
            Ok(bytes) => decode(&bytes).map_err(|problem| FenceError::Damaged { path: shown, problem })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !fresh() {
                    return Err(FenceError::Missing { path: shown });
                }
                std::fs::create_dir_all(dir).map_err(|source| FenceError::Persist { path: shown.clone(), source })?;
                let table = HashMap::new();
                write_atomically(&path, &encode(&table))
                    .map_err(|source| FenceError::Persist { path: shown, source })?;
                table
            }
            Err(source) => return Err(FenceError::Persist { path: shown, source }),
        };
        Ok(Self { path: Some(path), table: RwLock::new(table), writing: tokio::sync::Mutex::new(()) })
    }

    /// The newest token known for `owner`.
    pub fn get(&self, owner: u64) -> Option<u64> {
        self.known(owner).map(|k| k.token)
    }

    /// The newest snap sequence known for `owner` (0: never snapshotted).
    pub fn snap(&self, owner: u64) -> u32 {
        self.known(owner).map_or(0, |k| k.snap)
    }

    fn known(&self, owner: u64) -> Option<Known> {
        self.table.read().unwrap_or_else(PoisonError::into_inner).get(&owner).copied()
    }

    /// Lets a mutation of `owner`'s chunk under snap sequence `snap`
    /// through (the chunk's primary asks): a newer sequence is made
    /// durable first, as a newer token is; an older one means the writer
    /// has not seen the newest snapshot (`SnapStale`), and its write would
    /// land outside that snapshot's clones.
    pub async fn admit_snap(&self, owner: u64, snap: u32) -> Result<(), FenceError> {
        let known = self.snap(owner);
        if snap > known {
            let token = self.get(owner).unwrap_or(0);
            self.raise(&[VolumeFence { owner, token, snap }]).await?;
        }
        let known = self.snap(owner);
        if snap < known {
            return Err(FenceError::SnapStale { owner, known, snap });
        }
        Ok(())
    }

    /// Lets a mutation of `owner`'s chunk under `token` through, raising the
    /// fence first when the token is newer; refuses an older one.
    pub async fn admit(&self, owner: u64, token: Option<u64>) -> Result<(), FenceError> {
        let mut known = self.get(owner);
        if let Verdict::Raise(t) = judge(known, token) {
            self.raise(&[VolumeFence { owner, token: t, snap: 0 }]).await?;
            // Judged again: a newer writer may have raised it past us meanwhile.
            known = self.get(owner);
        }
        match judge(known, token) {
            Verdict::Admit | Verdict::Raise(_) => Ok(()),
            Verdict::Refuse => Err(FenceError::Fenced { owner, known: known.unwrap_or(0), token }),
        }
    }

    /// Raises each owner's fence to at least its token and snap sequence,
    /// durably before returning. A fence never goes down.
    pub async fn raise(&self, fences: &[VolumeFence]) -> Result<(), FenceError> {
        let _writing = self.writing.lock().await;
        let mut next = self.table.read().unwrap_or_else(PoisonError::into_inner).clone();
        let mut changed = false;
        for f in fences {
            let known = next.get(&f.owner).copied();
            let raised = known.map_or(Known { token: f.token, snap: f.snap }, |k| Known {
                token: k.token.max(f.token),
                snap: k.snap.max(f.snap),
            });
            if known != Some(raised) {
                next.insert(f.owner, raised);
                changed = true;
            }
        }
        if !changed {
            return Ok(());
        }
        if let Some(path) = &self.path {
            let (path, bytes) = (path.clone(), encode(&next));
            let written = tokio::task::spawn_blocking(move || write_atomically(&path, &bytes)).await;
            let written = written.unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
            written.map_err(|source| FenceError::Persist { path: self.shown(), source })?;
        }
        // Published only once durable: no request is admitted under a fence
        // a crash could forget.
        *self.table.write().unwrap_or_else(PoisonError::into_inner) = next;
        Ok(())
    }

    /// The fences of owners `keep` selects, for a new replica's backfill.
    pub fn entries(&self, keep: impl Fn(u64) -> bool) -> Vec<VolumeFence> {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<VolumeFence> = table
            .iter()
            .filter(|(&o, _)| keep(o))
            .map(|(&owner, k)| VolumeFence { owner, token: k.token, snap: k.snap })
            .collect();
        out.sort_by_key(|f| f.owner);
        out
    }

    fn shown(&self) -> String {
        self.path.as_ref().map_or_else(|| "memory".into(), |p| p.display().to_string())
    }
}

// The file (storage-node/FORMAT.md, "Fence table"): magic, version, count,
// (owner, token, snap, zero) entries in owner order, crc32c of everything
// before it. Version 1 tables (no snap, 16-byte entries) are read with
// snap 0 and written back as version 2 at the next raise.
const MAGIC: &[u8; 8] = b"CHUYIFNC";
const VERSION: u32 = 2;
const HEAD_BYTES: usize = 16;
const ENTRY_BYTES: usize = 24;
const V1_ENTRY_BYTES: usize = 16;

fn encode(table: &HashMap<u64, Known>) -> Vec<u8> {
    let mut entries: Vec<(u64, Known)> = table.iter().map(|(&o, &k)| (o, k)).collect();
    entries.sort_unstable_by_key(|(owner, _)| *owner);
    let mut out = Vec::with_capacity(HEAD_BYTES + entries.len() * ENTRY_BYTES + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (owner, known) in entries {
        out.extend_from_slice(&owner.to_le_bytes());
        out.extend_from_slice(&known.token.to_le_bytes());
        out.extend_from_slice(&known.snap.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
    }
    let crc = chuyi_common::checksum::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> Result<HashMap<u64, Known>, String> {
    let u32_at = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let u64_at = |at: usize| {
        bytes.get(at..at + 8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    };
    if bytes.get(..8) != Some(MAGIC.as_slice()) {
        return Err("no fence table magic".into());
    }
    let entry_bytes = match u32_at(8) {
        Some(VERSION) => ENTRY_BYTES,
        Some(1) => V1_ENTRY_BYTES,
        other => return Err(format!("version {other:?}, this build reads 1 and {VERSION}")),
    };
    let count = u32_at(12).ok_or("short header")? as usize;
    let body = HEAD_BYTES + count * entry_bytes;
    if bytes.len() != body + 4 {
        return Err(format!("{} bytes for {count} entries", bytes.len()));
    }
    if u32_at(body) != Some(chuyi_common::checksum::crc32c(&bytes[..body])) {
        return Err("crc32c mismatch".into());
    }
    let mut table = HashMap::with_capacity(count);
    for i in 0..count {
        let at = HEAD_BYTES + i * entry_bytes;
        let token = u64_at(at + 8).ok_or("short entry")?;
        let snap = if entry_bytes == ENTRY_BYTES { u32_at(at + 16).ok_or("short entry")? } else { 0 };
        table.insert(u64_at(at).ok_or("short entry")?, Known { token, snap });
    }
    Ok(table)
}

/// Replaces `path` with `bytes` so that a crash leaves the old file or the
/// new one, never a mix: a temporary file, fsync, rename, fsync of the
/// directory.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judge_admits_the_current_writer_raises_for_a_newer_and_refuses_an_older() {
        assert_eq!(judge(None, None), Verdict::Admit, "object data is never fenced");
        assert_eq!(judge(None, Some(5)), Verdict::Raise(5));
        assert_eq!(judge(Some(5), Some(5)), Verdict::Admit);
        assert_eq!(judge(Some(5), Some(6)), Verdict::Raise(6));
        assert_eq!(judge(Some(5), Some(4)), Verdict::Refuse);
        assert_eq!(judge(Some(5), None), Verdict::Refuse, "a fenced volume takes no unfenced write");
    }

    #[tokio::test]
    async fn raised_fences_survive_reopening_and_never_go_down() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fences = Fences::open(dir.path(), || true).expect("open");
        fences.admit(7, Some(10)).await.expect("first writer");
        let raise = [VolumeFence { owner: 7, token: 3, snap: 4 }, VolumeFence { owner: 8, token: 2, snap: 0 }];
        fences.raise(&raise).await.expect("raise");
        assert_eq!(fences.get(7), Some(10), "a fence never goes down");
        drop(fences);
        let reopened = Fences::open(dir.path(), || false).expect("reopen: the file is there");
        assert_eq!(reopened.get(7), Some(10));
        assert_eq!(reopened.snap(7), 4, "a snap sequence is raised beside the token");
        assert_eq!(reopened.get(8), Some(2));
        assert!(matches!(reopened.admit(7, Some(9)).await, Err(FenceError::Fenced { known: 10, .. })));
        assert!(matches!(reopened.admit(7, None).await, Err(FenceError::Fenced { .. })));
        reopened.admit(7, Some(11)).await.expect("a newer writer");
        assert!(matches!(reopened.admit(7, Some(10)).await, Err(FenceError::Fenced { known: 11, .. })));
        reopened.admit(99, None).await.expect("an unfenced owner");
        assert_eq!(reopened.entries(|o| o == 8), vec![VolumeFence { owner: 8, token: 2, snap: 0 }]);
        assert!(matches!(reopened.admit_snap(7, 3).await, Err(FenceError::SnapStale { known: 4, snap: 3, .. })));
        reopened.admit_snap(7, 4).await.expect("the current sequence");
        reopened.admit_snap(7, 6).await.expect("a newer one raises");
        assert_eq!((reopened.snap(7), reopened.get(7)), (6, Some(11)));
        reopened.admit_snap(99, 0).await.expect("object data carries none");
    }

    #[test]
    fn a_version_1_table_reads_with_no_snapshots() {
        let mut v1 = Vec::new();
        v1.extend_from_slice(MAGIC);
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(&5u64.to_le_bytes());
        v1.extend_from_slice(&9u64.to_le_bytes());
        let crc = chuyi_common::checksum::crc32c(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&v1).expect("v1"), HashMap::from([(5, Known { token: 9, snap: 0 })]));
    }

    #[test]
    fn a_missing_table_is_refused_once_the_disks_hold_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(Fences::open(dir.path(), || false), Err(FenceError::Missing { .. })));
        Fences::open(dir.path(), || true).expect("a fresh node starts its table");
        Fences::open(dir.path(), || false).expect("and finds it at the next start");
        std::fs::remove_file(dir.path().join(FENCES_FILE)).expect("lost");
        assert!(matches!(Fences::open(dir.path(), || false), Err(FenceError::Missing { .. })));
    }

    #[test]
    fn a_damaged_table_is_refused_not_read_as_empty() {
        let mut table = HashMap::new();
        table.insert(1u64, Known { token: 2, snap: 3 });
        let bytes = encode(&table);
        assert_eq!(decode(&bytes).expect("valid"), table);
        let mut flipped = bytes.clone();
        flipped[HEAD_BYTES] ^= 1;
        assert!(decode(&flipped).is_err(), "crc");
        assert!(decode(&bytes[..bytes.len() - 1]).is_err(), "short");
        let mut version = bytes;
        version[8] = 9;
        assert!(decode(&version).is_err(), "version");
    }
}
