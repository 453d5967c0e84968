//! What a running member costs the machine, read from outside: its memory
//! from `/proc/<pid>/status` and its data directory's size on disk, as
//! `du` counts it (allocated blocks, so sparse and preallocated files
//! count what they really hold).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::Serialize;

/// A process's resident memory now and its peak (since start, or since
/// [`reset_peak`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Memory {
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
}

/// VmRSS and VmHWM of process `pid`.
pub fn memory(pid: u32) -> io::Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> io::Result<u64> {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no {name} for pid {pid}")))?;
        let kib = line.trim().trim_end_matches("kB").trim();
        kib.parse::<u64>()
            .map(|k| k * 1024)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{name} {kib:?}: {e}")))
    };
    Ok(Memory { rss_bytes: field("VmRSS:")?, peak_rss_bytes: field("VmHWM:")? })
}

/// Sets process `pid`'s peak (VmHWM) back to its current RSS, so the next
/// [`memory`] shows the peak of what happened in between (Linux ≥ 4.0).
pub fn reset_peak(pid: u32) -> io::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), b"5")
}

/// Bytes a member's data directory holds on disk: RocksDB (its SSTs,
/// write-ahead log and manifests: the Raft log and the state together),
/// of which its SST files (what has been flushed from memory; the
/// write-ahead log is preallocated, 75 MiB in a fresh database), and the
/// snapshot files beside it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DiskUse {
    pub rocksdb_bytes: u64,
    pub sst_bytes: u64,
    pub snapshot_bytes: u64,
}

/// What `dir` (a member's `data_dir`) holds; `snapshots/` counted apart.
pub fn disk_use(dir: &Path) -> io::Result<DiskUse> {
    let mut used = DiskUse::default();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let bytes = allocated(&entry.path())?;
        let name = entry.file_name();
        if name == "snapshots" {
            used.snapshot_bytes += bytes;
        } else {
            used.rocksdb_bytes += bytes;
            if name.to_string_lossy().ends_with(".sst") {
                used.sst_bytes += bytes;
            }
        }
    }
    Ok(used)
}

/// Allocated bytes of every file under `path`, as `du` adds them up.
/// A file that vanishes while we walk (RocksDB compacting, a snapshot
/// replaced) counts as nothing.
fn allocated(path: &Path) -> io::Result<u64> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return Ok(meta.blocks() * 512);
    }
    let mut sum = 0;
    for entry in std::fs::read_dir(path)? {
        sum += allocated(&entry?.path())?;
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_a_peak_at_least_as_high() {
        let m = memory(std::process::id()).expect("test setup");
        assert!(m.rss_bytes > 0 && m.peak_rss_bytes >= m.rss_bytes, "{m:?}");
    }

    #[test]
    fn snapshots_are_counted_apart() {
        let dir = std::env::temp_dir().join(format!("chuyi-bench-du-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("snapshots")).expect("test setup");
        std::fs::write(dir.join("000001.sst"), vec![1u8; 64 << 10]).expect("test setup");
        std::fs::write(dir.join("snapshots/a.snap"), vec![1u8; 128 << 10]).expect("test setup");
        let used = disk_use(&dir).expect("test setup");
        std::fs::remove_dir_all(&dir).expect("test setup");
        assert!(used.rocksdb_bytes >= 64 << 10 && used.rocksdb_bytes < 128 << 10, "{used:?}");
        assert_eq!(used.sst_bytes, used.rocksdb_bytes, "{used:?}");
        assert!(used.snapshot_bytes >= 128 << 10, "{used:?}");
    }
}
