//! A running member's snapshots, seen from outside through its
//! `<data_dir>/snapshots/` directory (the names are the metadata store's,
//! `metadata/KEYSPACE.md` "Snapshots"):
//!
//! - `<leader>-<index>-<nanos>.snap.tmp`: a build in progress, begun at
//!   `<nanos>` (Unix time); renamed to `….snap` once written and synced, so
//!   a finished build took from `<nanos>` to the file's mtime;
//! - `receiving-<nanos>.snap`: a snapshot being received since `<nanos>`;
//!   renamed to the sender's `<leader>-<index>-<nanos>.snap` once whole.
//!
//! The member is not asked: it reports neither, and asking would take a
//! lock the build or install holds.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SUFFIX: &str = ".snap";
const TMP_SUFFIX: &str = ".snap.tmp";
const RECEIVING_PREFIX: &str = "receiving-";

/// A whole snapshot file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    pub name: String,
    pub bytes: u64,
    /// When its last byte was written.
    pub modified: SystemTime,
}

impl SnapshotFile {
    /// When the member (or, for a received file, its sender) began
    /// building it.
    pub fn build_started(&self) -> Option<SystemTime> {
        let id = self.name.strip_suffix(SUFFIX)?;
        unix_nanos(id.rsplit('-').next()?)
    }

    /// How long its build took: from its start to its last write (the
    /// fsync and rename after are not counted).
    pub fn build_time(&self) -> Option<Duration> {
        self.modified.duration_since(self.build_started()?).ok()
    }
}

/// One look at a member's snapshot directory.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Finished snapshots (built here or received), by name.
    pub finished: BTreeMap<String, SnapshotFile>,
    /// A build is writing its file.
    pub building: bool,
    /// Files being received, with when each began.
    pub receiving: BTreeMap<String, SystemTime>,
}

/// The snapshot directory of a member's `data_dir`.
#[derive(Debug, Clone)]
pub struct SnapshotDir(PathBuf);

impl SnapshotDir {
    pub fn of_member(data_dir: &Path) -> Self {
        Self(data_dir.join("snapshots"))
    }

    /// What the directory holds now; empty before the member made it. A
    /// file renamed or removed while we look is left out.
    pub fn scan(&self) -> io::Result<Scan> {
        let mut scan = Scan::default();
        let entries = match std::fs::read_dir(&self.0) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(scan),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.ends_with(TMP_SUFFIX) {
                scan.building = true;
            } else if let Some(nanos) = name.strip_prefix(RECEIVING_PREFIX).and_then(|n| n.strip_suffix(SUFFIX)) {
                scan.receiving.insert(name.clone(), unix_nanos(nanos).unwrap_or(UNIX_EPOCH));
            } else if name.ends_with(SUFFIX) {
                match std::fs::metadata(self.0.join(&name)) {
                    Ok(m) => {
                        let file = SnapshotFile { name: name.clone(), bytes: m.len(), modified: m.modified()? };
                        scan.finished.insert(name, file);
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(scan)
    }
}

fn unix_nanos(text: &str) -> Option<SystemTime> {
    let nanos: u64 = text.parse().ok()?;
    Some(UNIX_EPOCH + Duration::from_nanos(nanos))
}

/// Seconds from `a` to `b`, negative when `b` is earlier.
pub fn seconds_between(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_is_timed_from_its_name_to_its_last_write() {
        let started = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let nanos = started.duration_since(UNIX_EPOCH).expect("test setup").as_nanos();
        let file = SnapshotFile {
            name: format!("T1-N1-4711-{nanos}.snap"),
            bytes: 1,
            modified: started + Duration::from_millis(2500),
        };
        assert_eq!(file.build_started(), Some(started));
        assert_eq!(file.build_time(), Some(Duration::from_millis(2500)));
    }

    #[test]
    fn a_directory_is_read_by_its_names() {
        let dir = std::env::temp_dir().join(format!("chuyi-bench-snapwatch-{}", std::process::id()));
        let snapshots = dir.join("snapshots");
        std::fs::create_dir_all(&snapshots).expect("test setup");
        for name in ["1-9-100.snap", "1-12-200.snap.tmp", "receiving-300.snap"] {
            std::fs::write(snapshots.join(name), b"x").expect("test setup");
        }
        let scan = SnapshotDir::of_member(&dir).scan().expect("test setup");
        std::fs::remove_dir_all(&dir).expect("test setup");
        assert!(scan.building);
        assert_eq!(scan.finished.keys().collect::<Vec<_>>(), ["1-9-100.snap"]);
        assert_eq!(scan.receiving.values().collect::<Vec<_>>(), [&(UNIX_EPOCH + Duration::from_nanos(300))]);
        assert_eq!(SnapshotDir::of_member(Path::new("/nonexistent")).scan().expect("test setup").finished.len(), 0);
    }
}
