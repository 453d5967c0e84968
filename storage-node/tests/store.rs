//! The chunk store's conformance suite. Every test runs on both I/O engines
//! (io_uring and pread threads) over a real file in a temporary directory,
//! so both engines are held to the same behaviour.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use chuyi_common::checksum::crc32c;
use chuyi_common::ids::{ChunkId, DeviceClass};
use chuyi_common::proto::chunk::DiskState;
use chuyi_storage_node::format::layout::Layout;
use chuyi_storage_node::io::fault::{FaultEngine, FaultOn};
use chuyi_storage_node::io::{EngineKind, EngineTuning};
use chuyi_storage_node::store::open::DISK_FILE_NAME;
use chuyi_storage_node::store::{open_disk, open_disk_wrapped, DiskSpec, DiskStore, StoreError};

mod support;

use support::{format_with_ring, newest_tail, raw_superblock};

const MIB: u64 = 1 << 20;
const CHUNK: u64 = 4 * MIB;
const ENGINES: [EngineKind; 3] = [EngineKind::Uring, EngineKind::Pread, EngineKind::Inline];

fn spec(dir: &Path, engine: EngineKind, capacity: u64) -> DiskSpec {
    DiskSpec {
        id: 7,
        class: DeviceClass::Ssd,
        path: dir.to_path_buf(),
        capacity_bytes: Some(capacity),
        chunk_size: CHUNK,
        engine,
        tuning: EngineTuning::default(),
    }
}

async fn open(dir: &Path, engine: EngineKind) -> DiskStore {
    open_disk(&spec(dir, engine, 64 * MIB)).await.expect("open disk")
}

/// Bytes that say where they belong, so a misplaced block is caught.
fn pattern(tag: u64, len: usize) -> Bytes {
    (0..len).map(|i| (tag as usize * 31 + i * 7 + i / 4096) as u8).collect::<Vec<u8>>().into()
}

fn id(index: u64) -> ChunkId {
    ChunkId::new(0xC0FFEE, index)
}

async fn read(disk: &DiskStore, chunk: ChunkId, offset: u64, len: u64) -> Result<Bytes, StoreError> {
    disk.read(chunk, offset, len).await.map(|(data, _)| data)
}

#[tokio::test]
async fn writes_read_back_aligned_and_unaligned() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = open(dir.path(), engine).await;
        let a = pattern(1, 64 * 1024);
        disk.write(id(0), 8192, a.clone(), false).await.expect("aligned write");
        assert_eq!(read(&disk, id(0), 8192, a.len() as u64).await.expect("read"), a, "{engine:?}");
        // An unaligned write inside the aligned one keeps the bytes around it.
        let b = pattern(2, 5000);
        disk.write(id(0), 8192 + 100, b.clone(), false).await.expect("unaligned write");
        let back = read(&disk, id(0), 8192, a.len() as u64).await.expect("read");
        assert_eq!(&back[..100], &a[..100]);
        assert_eq!(&back[100..5100], &b[..]);
        assert_eq!(&back[5100..], &a[5100..]);
        // Odd offsets and lengths read exactly what is there.
        assert_eq!(read(&disk, id(0), 8192 + 101, 3).await.expect("read"), b.slice(1..4));
    }
}

#[tokio::test]
async fn unwritten_ranges_read_as_zeros() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = open(dir.path(), engine).await;
        let (data, allocated) = disk.read(id(5), 0, 4096).await.expect("read");
        assert!(!allocated && data.iter().all(|&b| b == 0));
        disk.write(id(5), CHUNK - 4096, pattern(3, 4096), false).await.expect("write");
        let (data, allocated) = disk.read(id(5), 0, CHUNK - 4096).await.expect("read");
        assert!(allocated && data.iter().all(|&b| b == 0), "{engine:?}: rest of a new chunk is zeros");
    }
}

#[tokio::test]
async fn out_of_range_is_refused_and_changes_nothing() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = open(dir.path(), engine).await;
        let err = disk.write(id(1), CHUNK - 10, pattern(1, 11), false).await.expect_err("past end");
        assert!(matches!(err, StoreError::OutOfRange { .. }), "{err}");
        assert!(matches!(disk.read(id(1), u64::MAX, 2).await, Err(StoreError::OutOfRange { .. })));
        assert_eq!(disk.stat().chunks, 0, "a refused write allocates nothing");
    }
}

#[tokio::test]
async fn trim_and_write_zeroes_leave_zeros() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = open(dir.path(), engine).await;
        let data = pattern(4, 64 * 1024);
        disk.write(id(2), 0, data.clone(), false).await.expect("write");
        disk.zero(id(2), 1000, 20_000, false).await.expect("trim");
        let back = read(&disk, id(2), 0, data.len() as u64).await.expect("read");
        assert_eq!(&back[..1000], &data[..1000]);
        assert!(back[1000..21_000].iter().all(|&b| b == 0), "{engine:?}");
        assert_eq!(&back[21_000..], &data[21_000..]);
        // A write into the trimmed hole works and reads back.
        disk.write(id(2), 8192, pattern(5, 4096), true).await.expect("rewrite hole");
        assert_eq!(read(&disk, id(2), 8192, 4096).await.expect("read"), pattern(5, 4096));
    }
}

#[tokio::test]
async fn deleted_chunks_read_zeros_and_leave_nothing_in_the_file() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = open(dir.path(), engine).await;
        let secret: Bytes = b"PATIENT-RECORD-0042|".repeat(4096 / 20 * 8).into();
        disk.write(id(3), 0, secret.clone(), true).await.expect("write");
        let file = dir.path().join(DISK_FILE_NAME);
        assert!(contains(&std::fs::read(&file).expect("raw"), b"PATIENT-RECORD-0042"), "the search works");
        disk.delete(id(3)).await.expect("delete");
        disk.sync().await.expect("sync");
        assert!(!contains(&std::fs::read(&file).expect("raw"), b"PATIENT-RECORD-0042"), "{engine:?}");
        let (data, allocated) = disk.read(id(3), 0, 4096).await.expect("read");
        assert!(!allocated && data.iter().all(|&b| b == 0));
        // The freed slot is reused by another chunk, which starts as zeros.
        disk.write(id(4), 0, pattern(6, 4096), false).await.expect("write");
        assert!(read(&disk, id(4), 4096, 65536).await.expect("read").iter().all(|&b| b == 0));
        assert_eq!(disk.list(None, 10), (vec![id(4)], false));
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn data_survives_reopen() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let disk = open(dir.path(), engine).await;
            for i in 0..5 {
                disk.write(id(i), i * 4096, pattern(i, 12_345), false).await.expect("write");
            }
            disk.zero(id(2), 0, CHUNK, false).await.expect("trim");
            disk.delete(id(4)).await.expect("delete");
        }
        let disk = open(dir.path(), engine).await;
        assert_eq!(disk.list(None, 100).0, vec![id(0), id(1), id(2), id(3)]);
        for i in [0, 1, 3] {
            assert_eq!(read(&disk, id(i), i * 4096, 12_345).await.expect("read"), pattern(i, 12_345));
        }
        assert!(read(&disk, id(2), 0, CHUNK).await.expect("read").iter().all(|&b| b == 0));
        // A disk formatted as another id or class is refused, not reused.
        let mut other = spec(dir.path(), engine, 64 * MIB);
        other.id = 8;
        assert!(open_disk(&other).await.is_err());
    }
}

#[tokio::test]
async fn corrupted_block_is_reported_not_returned() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = open(dir.path(), engine).await;
        let data = pattern(7, 3 * 4096);
        disk.write(id(9), 0, data.clone(), true).await.expect("write");
        drop(disk);
        flip_byte_of(&dir.path().join(DISK_FILE_NAME), &data[4096..8192]);
        let disk = open(dir.path(), engine).await;
        let err = read(&disk, id(9), 0, 3 * 4096).await.expect_err("bad block");
        assert!(matches!(err, StoreError::Checksum { block: 1, .. }), "{engine:?}: {err}");
        assert_eq!(disk.stat().checksum_errors, 1);
        // Good blocks still read; a partial write cannot bless the bad one.
        assert_eq!(read(&disk, id(9), 0, 4096).await.expect("read"), data.slice(..4096));
        assert!(matches!(disk.write(id(9), 4096 + 10, pattern(8, 10), false).await, Err(StoreError::Checksum { .. })));
        // A whole-block overwrite replaces it.
        disk.write(id(9), 4096, pattern(8, 4096), false).await.expect("overwrite");
        assert_eq!(read(&disk, id(9), 4096, 4096).await.expect("read"), pattern(8, 4096));
    }
}

/// A raw block read hands back a bad block as the disk holds it, with the
/// checksum stored for it, for mending a block both replicas fail; and
/// refuses what it cannot answer rather than passing zeros off as a copy.
#[tokio::test]
async fn a_raw_read_returns_a_bad_block_and_its_stored_checksum() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = open(dir.path(), engine).await;
        let data = pattern(7, 2 * 4096);
        disk.write(id(9), 0, data.clone(), true).await.expect("write");
        drop(disk);
        flip_byte_of(&dir.path().join(DISK_FILE_NAME), &data[4096..]);
        let disk = open(dir.path(), engine).await;
        let (raw, crc) = disk.read_raw(id(9), 4096).await.expect("raw read of the bad block");
        assert_eq!(crc, crc32c(&data[4096..]), "{engine:?}: the stored checksum, of what was written");
        assert_ne!(raw, data.slice(4096..), "{engine:?}: the bytes as the disk holds them");
        assert_eq!(raw[..123], data[4096..4096 + 123], "{engine:?}: only the flipped byte differs");
        let (good, crc) = disk.read_raw(id(9), 0).await.expect("raw read of a good block");
        assert_eq!((good, crc), (data.slice(..4096), crc32c(&data[..4096])));
        assert!(matches!(disk.read_raw(id(10), 0).await, Err(StoreError::NoChunk { .. })), "{engine:?}");
        assert!(matches!(disk.read_raw(id(9), 100).await, Err(StoreError::NotABlock { .. })), "{engine:?}");
        assert!(matches!(disk.read_raw(id(9), CHUNK).await, Err(StoreError::OutOfRange { .. })), "{engine:?}");
    }
}

/// Backfill's poison: the blocks read as bad, here and after a reopen, on
/// a new chunk and over old data alike, the blocks around them are
/// untouched, and a whole-block write heals them.
#[tokio::test]
async fn poisoned_blocks_read_as_bad_until_rewritten() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = open(dir.path(), engine).await;
        let data = pattern(3, 3 * 4096);
        disk.write(id(4), 0, data.clone(), true).await.expect("write");
        disk.poison(id(4), 4096, 4096).await.expect("poison over data");
        disk.poison(id(5), 8192, 4096).await.expect("poison a new chunk");
        drop(disk);
        let disk = open(dir.path(), engine).await;
        let err = read(&disk, id(4), 0, 3 * 4096).await.expect_err("poisoned");
        assert!(matches!(err, StoreError::Checksum { block: 1, .. }), "{engine:?}: {err}");
        assert!(matches!(read(&disk, id(5), 8192, 4096).await, Err(StoreError::Checksum { block: 2, .. })));
        assert_eq!(read(&disk, id(4), 0, 4096).await.expect("block 0"), data.slice(..4096));
        assert_eq!(read(&disk, id(4), 8192, 4096).await.expect("block 2"), data.slice(8192..));
        assert_eq!(read(&disk, id(5), 0, 4096).await.expect("unwritten"), vec![0u8; 4096]);
        disk.write(id(4), 4096, pattern(9, 4096), false).await.expect("rewrite");
        assert_eq!(read(&disk, id(4), 4096, 4096).await.expect("healed"), pattern(9, 4096));
    }
}

/// Flips one bit of the first place in `file` holding `block`.
fn flip_byte_of(file: &Path, block: &[u8]) {
    let mut raw = std::fs::read(file).expect("raw");
    let at = raw.windows(block.len()).position(|w| w == block).expect("block on disk");
    raw[at + 123] ^= 0x04;
    std::fs::write(file, raw).expect("write raw");
}

#[tokio::test]
async fn full_disk_refuses_new_chunks_and_keeps_serving_reads() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().expect("tempdir");
        // 4 slots fit in 20 MiB with the metadata regions.
        let disk = open_disk(&spec(dir.path(), engine, 20 * MIB)).await.expect("open");
        let slots = disk.stat().capacity_bytes / CHUNK;
        for i in 0..slots {
            disk.write(id(i), 0, pattern(i, 4096), false).await.expect("fill");
        }
        let err = disk.write(id(99), 0, pattern(1, 4096), false).await.expect_err("full");
        assert!(matches!(err, StoreError::NoSpace { .. }), "{engine:?}: {err}");
        for i in 0..slots {
            assert_eq!(read(&disk, id(i), 0, 4096).await.expect("read"), pattern(i, 4096));
        }
        disk.delete(id(0)).await.expect("delete");
        disk.write(id(99), 0, pattern(1, 4096), false).await.expect("room again");
    }
}

#[tokio::test]
async fn eio_takes_the_disk_out_of_service() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().expect("tempdir");
        let (disk, fault) = open_with_fault(dir.path(), engine).await;
        disk.write(id(0), 0, pattern(0, 4096), false).await.expect("healthy write");
        fault.inject(FaultOn::Writes, libc::EIO);
        let err = disk.write(id(0), 0, pattern(1, 4096), false).await.expect_err("EIO");
        assert!(matches!(err, StoreError::DiskFailed { .. }), "{err}");
        assert_eq!(disk.stat().state, DiskState::Failed);
        // Not retried: even reads now fail fast, with the disk named.
        fault.inject(FaultOn::Nothing, 0);
        assert!(matches!(read(&disk, id(0), 0, 4096).await, Err(StoreError::DiskFailed { .. })));
    }
}

/// A write failing with an error that leaves the disk in service (here
/// ENOSPC from the device) changes nothing: the blocks still read as
/// they were, the blocks beside them too, and so they do after a restart.
#[tokio::test]
async fn a_failed_write_leaves_the_old_blocks_readable() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().expect("tempdir");
        let (disk, fault) = open_with_fault(dir.path(), engine).await;
        disk.write(id(0), 0, pattern(0, 3 * 4096), false).await.expect("healthy write");
        fault.inject(FaultOn::Writes, libc::ENOSPC);
        let err = disk.write(id(0), 4096, pattern(1, 4096), false).await.expect_err("ENOSPC");
        assert!(matches!(err, StoreError::Io { .. }), "{engine:?}: {err}");
        fault.inject(FaultOn::Nothing, 0);
        assert_eq!(read(&disk, id(0), 0, 3 * 4096).await.expect("read"), pattern(0, 3 * 4096), "{engine:?}");
        drop(disk);
        let disk = open_disk(&spec(dir.path(), engine, 64 * MIB)).await.expect("reopen");
        assert_eq!(read(&disk, id(0), 0, 3 * 4096).await.expect("read"), pattern(0, 3 * 4096), "{engine:?}");
    }
}

/// A write of which only one half lands. Its data failing while its
/// checksums land (the device failing the data region alone) changes
/// nothing: the old checksums are put back, on the disk too, so the blocks
/// read as before, and so after a restart. Its checksums failing after its
/// data landed leaves blocks that read as bad (repair's to mend from the
/// other replica), never as other data, and the blocks beside them as they
/// were.
#[tokio::test]
async fn a_write_landing_in_half_reads_as_before_or_as_bad() {
    let data_region = Layout::for_capacity(64 * MIB, CHUNK).expect("layout").data_offset;
    for engine in ENGINES {
        let dir = tempfile::tempdir().expect("tempdir");
        let (disk, fault) = open_with_fault(dir.path(), engine).await;
        disk.write(id(0), 0, pattern(0, 3 * 4096), false).await.expect("healthy write");
        fault.inject_in(FaultOn::Writes, libc::ENOSPC, data_region..u64::MAX);
        let err = disk.write(id(0), 4096, pattern(1, 4096), false).await.expect_err("ENOSPC");
        assert!(matches!(err, StoreError::Io { .. }), "{engine:?}: {err}");
        fault.inject(FaultOn::Nothing, 0);
        assert_eq!(read(&disk, id(0), 0, 3 * 4096).await.expect("read"), pattern(0, 3 * 4096), "{engine:?}");
        drop((disk, fault));
        let (disk, fault) = open_with_fault(dir.path(), engine).await;
        assert_eq!(read(&disk, id(0), 0, 3 * 4096).await.expect("read"), pattern(0, 3 * 4096), "{engine:?}");

        fault.inject_in(FaultOn::Writes, libc::ENOSPC, 0..data_region);
        let err = disk.write(id(0), 4096, pattern(1, 4096), false).await.expect_err("ENOSPC");
        assert!(matches!(err, StoreError::Io { .. }), "{engine:?}: {err}");
        fault.inject(FaultOn::Nothing, 0);
        bad_between_old_blocks(&disk).await;
        drop((disk, fault));
        bad_between_old_blocks(&open_disk(&spec(dir.path(), engine, 64 * MIB)).await.expect("reopen")).await;
    }
}

/// Block 1 of chunk 0 reads as bad, blocks 0 and 2 as `pattern(0, ..)`.
async fn bad_between_old_blocks(disk: &DiskStore) {
    let bad = read(disk, id(0), 4096, 4096).await.expect_err("the half-written block");
    assert!(matches!(bad, StoreError::Checksum { block: 1, .. }), "{bad}");
    let old = pattern(0, 3 * 4096);
    assert_eq!(read(disk, id(0), 0, 4096).await.expect("read"), old.slice(..4096));
    assert_eq!(read(disk, id(0), 8192, 4096).await.expect("read"), old.slice(8192..));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_on_many_chunks() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = Arc::new(open_disk(&spec(dir.path(), engine, 128 * MIB)).await.expect("open"));
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..32u64 {
            let disk = disk.clone();
            tasks.spawn(async move {
                // Writers share chunks (w % 8) but never blocks.
                for round in 0..16u64 {
                    let offset = (w * 16 + round) * 4096 % CHUNK;
                    let data = pattern(w * 100 + round, 4096);
                    disk.write(id(w % 8), offset, data.clone(), round % 4 == 0).await.expect("write");
                    assert_eq!(read(&disk, id(w % 8), offset, 4096).await.expect("read"), data);
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("writer task");
        }
        for w in 0..32u64 {
            for round in 0..16u64 {
                let offset = (w * 16 + round) * 4096 % CHUNK;
                assert_eq!(read(&disk, id(w % 8), offset, 4096).await.expect("read"), pattern(w * 100 + round, 4096));
            }
        }
    }
}

/// A real file system that fills up: a 10 MiB tmpfs under a disk that
/// believes it has 64 MiB. New chunks get NoSpace, not an I/O error, and
/// everything written before still reads back. Needs root (as CI runs).
#[tokio::test]
async fn file_system_full_gives_no_space() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().expect("tempdir");
        let _mount = support::TmpfsMount::new(dir.path(), "10m");
        let disk = open(dir.path(), engine).await;
        let mut written = Vec::new();
        let err = loop {
            let i = written.len() as u64;
            match disk.write(id(i), 0, pattern(i, 64 * 1024), false).await {
                Ok(()) => written.push(i),
                Err(e) => break e,
            }
            assert!(written.len() < 16, "a 10 MiB file system took {} chunks", written.len());
        };
        assert!(matches!(err, StoreError::NoSpace { .. }), "{engine:?}: {err}");
        assert!(!written.is_empty());
        for &i in &written {
            assert_eq!(read(&disk, id(i), 0, 64 * 1024).await.expect("read"), pattern(i, 64 * 1024));
        }
        assert_eq!(disk.stat().state, DiskState::Up);
    }
}

/// A regular file and a block device (a loop device over a file) work as
/// disks too, at their own size, and keep their data across a reopen.
#[tokio::test]
async fn file_and_block_device_disks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("disk.img");
    std::fs::File::create(&image).and_then(|f| f.set_len(48 * MIB)).expect("image");
    let loop_dev = LoopDevice::attach(&image);
    for engine in ENGINES {
        let mut s = spec(&loop_dev.0, engine, 0);
        s.capacity_bytes = None;
        let disk = open_disk(&s).await.expect("open device");
        assert!(disk.stat().capacity_bytes >= 8 * CHUNK, "uses the device's own size");
        disk.write(id(1), 4096, pattern(1, 8192), true).await.expect("write");
        drop(disk);
        let disk = open_disk(&s).await.expect("reopen device");
        assert_eq!(read(&disk, id(1), 4096, 8192).await.expect("read"), pattern(1, 8192));
        assert!(disk.stat().direct_io, "a block device takes O_DIRECT");
    }
    let file = dir.path().join("plain.img");
    std::fs::File::create(&file).and_then(|f| f.set_len(40 * MIB)).expect("file");
    let mut s = spec(&file, EngineKind::Uring, 0);
    s.capacity_bytes = None;
    let disk = open_disk(&s).await.expect("open file");
    assert_eq!(disk.stat().capacity_bytes, 9 * CHUNK, "40 MiB holds 9 slots after the metadata");
    disk.write(id(2), 0, pattern(2, 4096), false).await.expect("write");
    assert_eq!(read(&disk, id(2), 0, 4096).await.expect("read"), pattern(2, 4096));
}

struct LoopDevice(std::path::PathBuf);

impl LoopDevice {
    fn attach(file: &Path) -> Self {
        let out =
            std::process::Command::new("losetup").args(["--find", "--show"]).arg(file).output().expect("run losetup");
        assert!(out.status.success(), "losetup needs root (as CI runs): {}", String::from_utf8_lossy(&out.stderr));
        Self(String::from_utf8_lossy(&out.stdout).trim().into())
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

async fn read_at(disk: &DiskStore, chunk: ChunkId, snap: u32) -> (Bytes, bool) {
    disk.read_snap(chunk, 0, 8192, snap).await.expect("snapshot read")
}

/// Snapshot clones: the first write under a newer sequence keeps the chunk
/// in a clone, reads of each snapshot find the right copy after a restart,
/// rollback copies a snapshot back while newer snapshots keep their view,
/// and trimming drops only the clones no live snapshot reads.
#[tokio::test]
async fn snapshot_clones_keep_each_snapshots_view() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = open(dir.path(), engine).await;
        let (a, b, c) = (pattern(1, 8192), pattern(2, 8192), pattern(3, 8192));
        // Written before any snapshot; snapshot 1; written under 1 (clone 1).
        disk.write_snap(id(0), 0, a.clone(), false, 0).await.expect("write a");
        disk.write_snap(id(0), 0, b.clone(), false, 1).await.expect("write b under 1");
        disk.write_snap(id(0), 4096, b.slice(..4096), false, 1).await.expect("again under 1: no new clone");
        // Chunk 1 is created under 1: not in snapshot 1.
        disk.write_snap(id(1), 0, c.clone(), false, 1).await.expect("new chunk under 1");
        assert_eq!(disk.clones_of(id(0)), vec![id(0).clone_of(1)], "{engine:?}: one clone");
        assert!(disk.clones_of(id(1)).is_empty(), "{engine:?}: a new chunk needs no clone");
        // Snapshots 2 and 3 with no write between; a write under 3.
        disk.write_snap(id(0), 0, c.clone(), false, 3).await.expect("write c under 3");
        drop(disk);
        let disk = open(dir.path(), engine).await;
        assert_eq!(read_at(&disk, id(0), 1).await, (a.clone(), true), "{engine:?}: snapshot 1 after reopen");
        let mut b_twice = b.slice(..4096).to_vec();
        b_twice.extend_from_slice(&b.slice(..4096));
        assert_eq!(read_at(&disk, id(0), 2).await.0, Bytes::from(b_twice.clone()), "{engine:?}: snapshot 2");
        assert_eq!(read_at(&disk, id(0), 3).await.0, Bytes::from(b_twice.clone()), "{engine:?}: snapshot 3");
        assert_eq!(read_at(&disk, id(0), 4).await.0, c, "{engine:?}: no snapshot 4 yet: the head");
        assert_eq!(read_at(&disk, id(1), 1).await, (Bytes::from(vec![0u8; 8192]), false), "{engine:?}");
        assert_eq!(read_at(&disk, id(1), 2).await.0, c, "{engine:?}: chunk 1 is in snapshot 2");
        // Rollback to 1 under sequence 3: the head is snapshot 1 again and
        // snapshot 3 still reads its own view.
        disk.rollback(id(0), 1, 3).await.expect("rollback");
        assert_eq!(read(&disk, id(0), 0, 8192).await.expect("head"), a, "{engine:?}: rolled back");
        assert_eq!(read_at(&disk, id(0), 3).await.0, Bytes::from(b_twice.clone()), "{engine:?}: 3 kept");
        // Rolling chunk 1 back to 1 empties it: it did not exist then.
        disk.rollback(id(1), 1, 3).await.expect("rollback chunk 1");
        assert_eq!(read(&disk, id(1), 0, 8192).await.expect("head"), Bytes::from(vec![0u8; 8192]));
        // Deleting snapshot 1 (live: 2, 3) drops clone 1 only.
        assert_eq!(disk.trim_clones(0xC0FFEE, &[], 2).await.expect("trim"), 1, "{engine:?}: clone 3 is above 2");
        assert_eq!(disk.clones_of(id(0)), vec![id(0).clone_of(3)], "{engine:?}: a newer snapshot's clone stays");
        assert_eq!(disk.trim_clones(0xC0FFEE, &[2, 3], 3).await.expect("trim"), 0, "{engine:?}: 2 and 3 read clone 3");
        assert_eq!(read_at(&disk, id(0), 3).await.0, Bytes::from(b_twice), "{engine:?}: 3 reads clone 3");
        // A clone's data is not kept after its chunk is deleted.
        disk.delete(id(0)).await.expect("delete");
        assert!(disk.clones_of(id(0)).is_empty(), "{engine:?}: clones go with their chunk");
        let file = std::fs::read(dir.path().join(DISK_FILE_NAME)).expect("read file");
        assert!(!contains(&file, &b[..4096]), "{engine:?}: no clone's data left in the file");
    }
}

/// The changed blocks between two snapshots, and between one and the chunk
/// now, exactly: a block rewritten with the same bytes is no change.
#[tokio::test]
async fn snapshot_diff_names_exactly_the_blocks_that_changed() {
    use chuyi_common::proto::chunk::Extent;
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = open(dir.path(), EngineKind::Pread).await;
    let block = |n: u32| Extent { len: n * 4096, data: true };
    let same = |n: u32| Extent { len: n * 4096, data: false };
    disk.write_snap(id(0), 0, pattern(1, 16384), false, 0).await.expect("write");
    // Snapshot 1; block 1 rewritten, block 2 rewritten with the same bytes.
    disk.write_snap(id(0), 4096, pattern(2, 4096), false, 1).await.expect("write under 1");
    disk.write_snap(id(0), 8192, pattern(1, 16384).slice(8192..12288), false, 1).await.expect("same bytes");
    let all = (CHUNK / 4096) as u32;
    assert_eq!(disk.diff(id(0), Some(1), None).await.expect("diff"), vec![same(1), block(1), same(all - 2)]);
    assert_eq!(disk.diff(id(0), None, Some(1)).await.expect("diff"), vec![block(4), same(all - 4)], "from empty");
    // Snapshot 2 with nothing written since: no data is compared.
    assert_eq!(disk.diff(id(0), Some(2), None).await.expect("diff"), vec![same(all)]);
    assert_eq!(disk.diff(id(0), Some(1), Some(2)).await.expect("diff"), vec![same(1), block(1), same(all - 2)]);
    assert_eq!(disk.diff(id(5), Some(1), None).await.expect("diff"), vec![same(all)], "a chunk never written");
}

/// A clone written by anything but the head's own copy (backfill writing
/// a recovering replica's clone) is no link a tracked diff follows: it
/// declines, and the full comparison still answers.
#[tokio::test]
async fn a_clone_written_by_backfill_is_no_link_to_follow() {
    use chuyi_common::proto::chunk::Extent;
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = open(dir.path(), EngineKind::Pread).await;
    let block = |n: u32| Extent { len: n * 4096, data: true };
    let same = |n: u32| Extent { len: n * 4096, data: false };
    let all = (CHUNK / 4096) as u32;
    disk.write_snap(id(0), 0, pattern(1, 16384), false, 0).await.expect("write");
    disk.write_snap(id(0), 4096, pattern(2, 4096), false, 1).await.expect("write under 1");
    let tracked = disk.tracked_diff(id(0), Some(1), None).await.expect("tracked diff");
    assert_eq!(tracked, Some(vec![same(1), block(1), same(all - 2)]), "followed while untouched");
    disk.write(id(0).clone_of(1), 8192, pattern(3, 4096), false).await.expect("backfill writes the clone");
    assert_eq!(disk.tracked_diff(id(0), Some(1), None).await.expect("tracked diff"), None);
    assert_eq!(disk.diff(id(0), Some(1), None).await.expect("diff"), vec![same(1), block(2), same(all - 3)]);
}

/// One step of [`tracked_diffs_match_a_model_of_every_snapshot`].
#[derive(Clone, Debug)]
enum Step {
    /// Writes `count` blocks at `block` with bytes of `tag` (0: zeros).
    Write { block: u64, count: u64, tag: u8 },
    /// Writes `count` blocks at `block` with the bytes they hold already.
    Rewrite { block: u64, count: u64 },
    /// Zeroes (trims) `count` blocks at `block`.
    Zero { block: u64, count: u64 },
    /// Takes a snapshot: later writes go under the next sequence.
    Snapshot,
    /// Deletes the `n`th live snapshot (modulo how many there are) and
    /// drops the clones no live one reads.
    Forget { n: usize },
    /// Rolls the chunk back to the `n`th live snapshot.
    Rollback { n: usize },
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (0..48u64, 1..12u64, 1..5u8).prop_map(|(block, count, tag)| Step::Write { block, count, tag }),
        1 => (0..48u64, 1..12u64).prop_map(|(block, count)| Step::Rewrite { block, count }),
        1 => (0..48u64, 1..12u64).prop_map(|(block, count)| Step::Zero { block, count }),
        2 => Just(Step::Snapshot),
        1 => (0..8usize).prop_map(|n| Step::Forget { n }),
        1 => (0..8usize).prop_map(|n| Step::Rollback { n }),
    ]
}

/// A block of `tag`'s bytes, different at every block index.
fn tagged_block(tag: u8, block: u64) -> Vec<u8> {
    if tag == 0 {
        return vec![0; 4096];
    }
    (0..4096u64).map(|i| (1 + (i * 13 + block * 7 + u64::from(tag) * 101) % 255) as u8).collect()
}

/// The runs a diff must answer between two block-tag models.
fn model_diff(old: &[u8], new: &[u8]) -> Vec<chuyi_common::proto::chunk::Extent> {
    let mut runs: Vec<chuyi_common::proto::chunk::Extent> = Vec::new();
    for (a, b) in old.iter().zip(new) {
        match runs.last_mut() {
            Some(last) if last.data == (a != b) => last.len += 4096,
            _ => runs.push(chuyi_common::proto::chunk::Extent { len: 4096, data: a != b }),
        }
    }
    runs
}

/// The diff answered from the writes this process saw (lineages) is the
/// byte-for-byte answer, for every pair of live snapshots and the chunk
/// now, through rewrites of the same bytes, trims, and snapshots deleted in
/// between; after a restart it declines and the full comparison answers.
#[test]
fn tracked_diffs_match_a_model_of_every_snapshot() {
    use proptest::prelude::*;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let config = ProptestConfig { cases: 48, ..ProptestConfig::default() };
    let tracked_answers = std::cell::Cell::new(0usize);
    proptest!(config, |(steps in proptest::collection::vec(step(), 1..40))| {
        tracked_answers.set(tracked_answers.get() + runtime.block_on(check_diff_steps(&steps)));
    });
    assert!(tracked_answers.get() > 100, "the tracked diff answered {} times", tracked_answers.get());
}

/// Writes blocks from `block` on with the bytes of `tags`, under `seq`,
/// to chunk 0 and to the model.
async fn write_tags(disk: &DiskStore, seq: u32, block: u64, tags: &[u8], now: &mut [u8]) {
    let data: Vec<u8> = tags.iter().zip(block..).flat_map(|(&tag, b)| tagged_block(tag, b)).collect();
    disk.write_snap(id(0), block * 4096, data.into(), false, seq).await.expect("write");
    now[block as usize..block as usize + tags.len()].copy_from_slice(tags);
}

async fn check_diff_steps(steps: &[Step]) -> usize {
    let blocks = (CHUNK / 4096) as usize;
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = open(dir.path(), EngineKind::Pread).await;
    let chunk = id(0);
    let (mut now, mut seq) = (vec![0u8; blocks], 0u32);
    let mut live: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut tracked_answers = 0;
    // A rollback copies bytes the lineage does not follow: the tracked
    // diff may decline from then on.
    let mut rolled_back = false;
    for step in steps {
        match *step {
            Step::Write { block, count, tag } => {
                write_tags(&disk, seq, block, &vec![tag; count as usize], &mut now).await;
            }
            Step::Rewrite { block, count } => {
                let tags = now[block as usize..(block + count) as usize].to_vec();
                write_tags(&disk, seq, block, &tags, &mut now).await;
            }
            Step::Zero { block, count } => {
                disk.zero_snap(chunk, block * 4096, count * 4096, false, seq).await.expect("zero");
                now[block as usize..(block + count) as usize].fill(0);
            }
            Step::Snapshot => {
                seq += 1;
                live.push((seq, now.clone()));
            }
            Step::Forget { n } => {
                if live.is_empty() {
                    continue;
                }
                live.remove(n % live.len());
                let seqs: Vec<u32> = live.iter().map(|(s, _)| *s).collect();
                disk.trim_clones(0xC0FFEE, &seqs, seq).await.expect("trim");
            }
            Step::Rollback { n } => {
                if live.is_empty() {
                    continue;
                }
                let (to, state) = &live[n % live.len()];
                disk.rollback(chunk, *to, seq).await.expect("rollback");
                now.clone_from(state);
                rolled_back = true;
            }
        }
        for (i, (from, old)) in live.iter().enumerate() {
            let later = live[i + 1..].iter().map(|(s, m)| (Some(*s), m)).chain([(None, &now)]);
            for (to, new) in later {
                let want = model_diff(old, new);
                assert_eq!(
                    disk.diff(chunk, Some(*from), to).await.expect("diff"),
                    want,
                    "{from}..{to:?} after {step:?}"
                );
                match disk.tracked_diff(chunk, Some(*from), to).await.expect("tracked diff") {
                    Some(runs) => {
                        assert_eq!(runs, want, "tracked {from}..{to:?} after {step:?}");
                        tracked_answers += 1;
                    }
                    // Every write was seen: only a chunk created after
                    // `from` (nothing to follow back to) is declined.
                    None => assert!(
                        rolled_back || disk.stamp(chunk).is_some_and(|s| s.born >= *from),
                        "{from}..{to:?} declined"
                    ),
                }
            }
        }
    }
    // After a restart nothing is known of what was written: the tracked
    // diff declines wherever data was, and the full one still answers.
    drop(disk);
    let disk = open(dir.path(), EngineKind::Pread).await;
    for (from, old) in &live {
        let want = model_diff(old, &now);
        assert_eq!(disk.diff(chunk, Some(*from), None).await.expect("diff after restart"), want);
        if let Some(runs) = disk.tracked_diff(chunk, Some(*from), None).await.expect("tracked diff after restart") {
            assert!(runs.iter().all(|r| !r.data), "after a restart only an unchanged chunk is answered");
        }
    }
    tracked_answers
}

/// A diff asked newer-to-older answers as older-to-newer does, and diffs
/// asked both ways at once, beside writes, all finish: the copies are
/// locked in one order whichever way a diff is asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diffs_asked_in_either_order_agree_and_do_not_deadlock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = std::sync::Arc::new(open(dir.path(), EngineKind::Pread).await);
    disk.write_snap(id(0), 0, pattern(1, 16384), false, 0).await.expect("write");
    disk.write_snap(id(0), 4096, pattern(2, 4096), false, 1).await.expect("write under 1");
    disk.write_snap(id(0), 12288, pattern(3, 4096), false, 2).await.expect("write under 2");
    let forward = disk.diff(id(0), Some(1), Some(2)).await.expect("diff 1..2");
    assert_eq!(disk.diff(id(0), Some(2), Some(1)).await.expect("diff 2..1"), forward);
    assert_eq!(disk.tracked_diff(id(0), Some(2), Some(1)).await.expect("tracked 2..1"), Some(forward.clone()));
    let rounds = (0..50u64).map(|i| {
        let disk = disk.clone();
        tokio::spawn(async move {
            let (from, to) = if i % 2 == 0 { (Some(1), Some(2)) } else { (Some(2), Some(1)) };
            let diffed = disk.diff(id(0), from, to).await.expect("diff");
            disk.write_snap(id(0), 32768 + (i % 4) * 4096, pattern(9, 4096), false, 3).await.expect("write");
            diffed
        })
    });
    let all = tokio::time::timeout(std::time::Duration::from_secs(30), futures::future::join_all(rounds))
        .await
        .expect("diffs asked both ways at once finish");
    for diffed in all {
        assert_eq!(diffed.expect("task"), forward, "the snapshots' views do not move with the head");
    }
}

/// Slot `slot`'s checksum block as the raw file holds it.
fn raw_crc_block(dir: &Path, slot: u64) -> Vec<u8> {
    let at = raw_superblock(dir).layout.crc_table_at(slot) as usize;
    std::fs::read(dir.join(DISK_FILE_NAME)).expect("raw disk")[at..at + 4096].to_vec()
}

/// Runs `work` on a disk in a runtime of its own, then crashes as SIGKILL
/// does: the runtime is dropped with whatever it was still doing, and its
/// engine is cut, so the writes the engine was given finish and
/// nothing lands after this returns (held and later writes never do). The
/// disk is [`open_holding_slot_0`]'s.
fn crash_after<F, Fut>(dir: &Path, engine: EngineKind, work: F)
where
    F: FnOnce(DiskStore) -> Fut,
    Fut: std::future::Future<Output = DiskStore>,
{
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let (disk, fault) = rt.block_on(async {
        let (disk, fault) = open_holding_slot_0(dir, engine).await;
        (work(disk).await, fault)
    });
    drop(rt);
    assert!(fault.cut(), "{engine:?}: the engine under the disk stopped");
    drop(disk);
}

/// A 64 MiB disk on `engine` under a fault engine, and that fault engine.
async fn open_with_fault(dir: &Path, engine: EngineKind) -> (DiskStore, Arc<FaultEngine>) {
    let mut fault = None;
    let disk = open_disk_wrapped(&spec(dir, engine, 64 * MIB), |inner| {
        let f = Arc::new(FaultEngine::new(inner));
        fault = Some(f.clone());
        f
    })
    .await
    .expect("open");
    (disk, fault.expect("wrapped"))
}

/// A disk whose slot 0 holds chunk 99, and whose engine from then on holds
/// every write into slot 0's data in progress (for [`beside`]).
async fn open_holding_slot_0(dir: &Path, engine: EngineKind) -> (DiskStore, Arc<FaultEngine>) {
    let (disk, fault) = open_with_fault(dir, engine).await;
    disk.write(id(99), 0, pattern(99, 4096), false).await.expect("chunk 99 into slot 0");
    let data = raw_superblock(dir).layout.data_at(0);
    fault.hold_writes(data..data + CHUNK);
    (disk, fault)
}

/// Runs `work` while a write to chunk 99 is in progress on the disk, so
/// that every write, write-zeroes or poison `work` makes has company and
/// goes through the checksum journal (a lone one to a clean slot rewrites
/// the slot's checksum block instead). The disk must be
/// [`open_holding_slot_0`]'s.
async fn beside<T>(disk: &DiskStore, work: impl std::future::Future<Output = T>) -> T {
    let company = disk.write(id(99), 0, pattern(99, 4096), false);
    tokio::pin!(company);
    assert!(futures::poll!(company.as_mut()).is_pending(), "the company's write is held");
    work.await
}

fn reopened<T>(dir: &Path, engine: EngineKind, check: impl AsyncFnOnce(DiskStore) -> T) -> T {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async { check(open(dir, engine).await).await })
}

/// The crash the tests below rely on: once the engine is cut, the write
/// held in progress and every later write fail (the engine has stopped),
/// and neither reaches the file.
#[test]
fn nothing_lands_after_the_engine_is_cut() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let (disk, fault) = open_holding_slot_0(dir.path(), engine).await;
            {
                let held = disk.write(id(99), 0, pattern(7, 4096), false);
                tokio::pin!(held);
                assert!(futures::poll!(held.as_mut()).is_pending(), "{engine:?}: the write is held");
                assert!(fault.cut(), "{engine:?}: the engine under the disk stopped");
                held.await.expect_err("the held write never lands");
            }
            disk.write(id(1), 0, pattern(1, 4096), false).await.expect_err("nothing is written after the cut");
        });
        let raw = std::fs::read(dir.path().join(DISK_FILE_NAME)).expect("raw disk");
        assert!(!contains(&raw, &pattern(7, 4096)), "{engine:?}: the held write's data is nowhere in the file");
        assert!(!contains(&raw, &pattern(1, 4096)), "{engine:?}: the write after the cut is nowhere in the file");
        reopened(dir.path(), engine, async |disk| {
            // The held write was alone on a clean slot, so its checksum block
            // went beside its data and landed: the block may read as bad (an
            // unacknowledged write torn), never as the new data.
            match read(&disk, id(99), 0, 4096).await {
                Ok(data) => assert_eq!(data, pattern(99, 4096), "{engine:?}"),
                Err(e) => assert!(matches!(e, StoreError::Checksum { block: 0, .. }), "{engine:?}: {e}"),
            }
            let fresh = read(&disk, id(1), 0, 4096).await.expect("read");
            assert!(fresh.iter().all(|&b| b == 0), "{engine:?}: chunk 1 was never written");
        });
    }
}

/// Slot `slot`'s checksums `0..n` as the raw file holds them.
fn raw_crcs(dir: &Path, slot: u64, n: usize) -> Vec<u32> {
    raw_crc_block(dir, slot).chunks_exact(4).take(n).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// A write's checksums are in the journal, not yet in the slot's checksum
/// block, when it is acknowledged; a crash then loses nothing, and the
/// reopen puts them where they belong.
#[test]
fn acknowledged_checksums_in_the_journal_survive_a_crash() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().expect("tempdir");
        crash_after(dir.path(), engine, |disk| async move {
            beside(&disk, async {
                disk.write(id(1), 0, pattern(1, 3 * 4096), false).await.expect("aligned");
                disk.write(id(1), 5 * 4096 + 100, pattern(2, 9000), false).await.expect("unaligned");
                disk.zero(id(1), 4096, 4096, false).await.expect("zero a block");
                disk.write(id(2), 0, pattern(3, 4096), false).await.expect("second chunk");
            })
            .await;
            disk
        });
        // Chunk 99 (the company) is slot 0, chunk 1 slot 1.
        assert!(raw_crc_block(dir.path(), 1).iter().all(|&b| b == 0), "{engine:?}: no checksum block written yet");
        reopened(dir.path(), engine, async |disk| {
            let expect = |at: u64, len: u64| -> Vec<u8> {
                let mut whole = pattern(1, 3 * 4096).to_vec();
                whole.resize(8 * 4096, 0);
                whole[4096..8192].fill(0);
                whole[5 * 4096 + 100..5 * 4096 + 9100].copy_from_slice(&pattern(2, 9000));
                whole[at as usize..(at + len) as usize].to_vec()
            };
            assert_eq!(read(&disk, id(1), 0, 8 * 4096).await.expect("read").to_vec(), expect(0, 8 * 4096));
            assert_eq!(read(&disk, id(2), 0, 4096).await.expect("read"), pattern(3, 4096));
        });
        let mut want = Vec::new();
        chuyi_common::checksum::block_crcs(&pattern(1, 3 * 4096), &mut want);
        let on_disk = raw_crcs(dir.path(), 1, 3);
        assert_eq!(on_disk[0], want[0], "{engine:?}: replay wrote the checksum block");
        assert_eq!(on_disk[1], chuyi_common::checksum::zero_block_crc());
        assert_eq!(on_disk[2], want[2]);
    }
}

/// A write with no other in progress, to a slot with nothing in the
/// journal, rewrites the slot's checksum block at once (as a version 1
/// disk does: journalling it would cost a ring block now and the block at
/// the next checkpoint); one to a slot the journal still holds changes of
/// goes through the journal, so replay cannot put older checksums over it.
#[test]
fn a_lone_write_rewrites_a_clean_slots_checksum_block_and_journals_otherwise() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().expect("tempdir");
        crash_after(dir.path(), engine, |disk| async move {
            beside(&disk, disk.write(id(1), 0, pattern(1, 4096), false)).await.expect("with company");
            // Over block 0 again: were it not journalled, replay would put
            // block 0's older checksum back over it.
            disk.write(id(1), 0, pattern(2, 2 * 4096), false).await.expect("alone, slot 1 in the journal");
            disk.write(id(2), 0, pattern(3, 4096), false).await.expect("alone, slot 2 clean");
            disk
        });
        assert!(raw_crc_block(dir.path(), 1).iter().all(|&b| b == 0), "{engine:?}: slot 1's changes journalled");
        let mut want = Vec::new();
        chuyi_common::checksum::block_crcs(&pattern(3, 4096), &mut want);
        assert_eq!(raw_crcs(dir.path(), 2, 1), want, "{engine:?}: slot 2's checksum block written directly");
        reopened(dir.path(), engine, async |disk| {
            assert_eq!(read(&disk, id(1), 0, 2 * 4096).await.expect("read"), pattern(2, 2 * 4096));
            assert_eq!(read(&disk, id(2), 0, 4096).await.expect("read"), pattern(3, 4096));
        });
    }
}

/// Write `n` of [`writes_through_many_checkpoints_read_back_after_a_crash`]:
/// chunks 1 to 3 in turn, 64 blocks each.
async fn lap_write(disk: &DiskStore, n: u64) -> Result<(), StoreError> {
    disk.write(id(1 + n % 3), (n * 7) % 64 * 4096, pattern(n, 4096), false).await
}

/// The newest whole tail record in the raw file: the journal's durable tail.
fn raw_tail(dir: &Path) -> u64 {
    newest_tail(dir).expect("a whole tail record").tail
}

/// Many more writes than the ring holds, one in four of them alone: the
/// checkpoints free the ring while writers wait, and after a crash at any
/// point every acknowledged block reads back. Then a slot journalled once
/// and left for more than a ring's worth of writes is clean again: its
/// next lone write rewrites its checksum block at once.
#[test]
fn writes_through_many_checkpoints_read_back_after_a_crash() {
    const RING: u64 = 64;
    for engine in ENGINES {
        let dir = tempfile::tempdir().expect("tempdir");
        format_with_ring(dir.path(), 7, RING);
        // Each journalled write alone is one ring block: five laps.
        let writes = 5 * RING * 4 / 3;
        crash_after(dir.path(), engine, |disk| async move {
            for n in 0..writes {
                let written =
                    if n % 4 == 3 { lap_write(&disk, n).await } else { beside(&disk, lap_write(&disk, n)).await };
                written.expect("write");
            }
            beside(&disk, disk.write(id(4), 0, pattern(1000, 4096), false)).await.expect("chunk 4, journalled");
            // A ring's worth of ring blocks after chunk 4's: the tail is
            // past it, so no checkpoint to come holds chunk 4's table.
            for n in writes..writes + RING {
                beside(&disk, lap_write(&disk, n)).await.expect("write");
            }
            disk.write(id(4), 0, pattern(1001, 4096), false).await.expect("chunk 4, alone");
            disk
        });
        assert!(raw_tail(dir.path()) > 0, "{engine:?}: a checkpoint ran");
        let mut want = Vec::new();
        chuyi_common::checksum::block_crcs(&pattern(1001, 4096), &mut want);
        // Chunk 99 is slot 0, chunks 1 to 3 slots 1 to 3, chunk 4 slot 4.
        assert_eq!(raw_crcs(dir.path(), 4, 1), want, "{engine:?}: chunk 4's lone write went to its block");
        reopened(dir.path(), engine, async |disk| {
            let mut last = std::collections::HashMap::new();
            for n in 0..writes + RING {
                last.insert((1 + n % 3, (n * 7) % 64), n);
            }
            for ((chunk, block), n) in last {
                let got = read(&disk, id(chunk), block * 4096, 4096).await.expect("read");
                assert_eq!(got, pattern(n, 4096), "{engine:?}: chunk {chunk} block {block}");
            }
            assert_eq!(read(&disk, id(4), 0, 4096).await.expect("read"), pattern(1001, 4096));
        });
    }
}

/// Concurrent writers share ring blocks (group commit) and all land.
#[test]
fn concurrent_writes_share_the_journal_and_survive_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    crash_after(dir.path(), EngineKind::Uring, |disk| async move {
        let disk = Arc::new(disk);
        beside(&disk, async {
            let tasks: Vec<_> = (0..64u64)
                .map(|t| {
                    let disk = disk.clone();
                    tokio::spawn(async move {
                        for k in 0..8u64 {
                            let at = (t * 8 + k) * 4096;
                            disk.write(id(1 + t % 4), at, pattern(t * 8 + k, 4096), false).await.expect("write");
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("writer");
            }
        })
        .await;
        Arc::into_inner(disk).expect("writers done")
    });
    reopened(dir.path(), EngineKind::Uring, async |disk| {
        for t in 0..64u64 {
            for k in 0..8u64 {
                let got = read(&disk, id(1 + t % 4), (t * 8 + k) * 4096, 4096).await.expect("read");
                assert_eq!(got, pattern(t * 8 + k, 4096));
            }
        }
    });
}

/// A disk whose two tail records are both damaged has lost where its
/// journal starts: it is refused, not replayed from a guess.
#[test]
fn a_disk_with_no_whole_tail_record_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    crash_after(dir.path(), EngineKind::Pread, |disk| async move {
        beside(&disk, disk.write(id(1), 0, pattern(1, 4096), false)).await.expect("write");
        disk
    });
    let layout = raw_superblock(dir.path()).layout;
    let file = dir.path().join(DISK_FILE_NAME);
    let mut raw = std::fs::read(&file).expect("raw");
    for p in 0..2 {
        raw[layout.tail_block_at(p) as usize + 30] ^= 1;
    }
    std::fs::write(&file, raw).expect("damage");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let err = rt.block_on(open_disk(&spec(dir.path(), EngineKind::Pread, 64 * MIB))).expect_err("refused");
    assert!(err.to_string().contains("no whole tail record"), "{err}");
}

/// A torn ring block: the write it carried was not acknowledged, so its
/// blocks may read as bad, never as wrong data; everything before it reads.
#[test]
fn a_torn_journal_block_costs_only_its_own_writes() {
    use chuyi_storage_node::format::journal::decode_block;
    for engine in ENGINES {
        let dir = tempfile::tempdir().expect("tempdir");
        crash_after(dir.path(), engine, |disk| async move {
            beside(&disk, async {
                disk.write(id(1), 0, pattern(1, 2 * 4096), false).await.expect("first");
                disk.write(id(1), 4096, pattern(2, 4096), false).await.expect("second, over block 1");
            })
            .await;
            disk
        });
        let sb = raw_superblock(dir.path());
        let file = dir.path().join(DISK_FILE_NAME);
        let mut raw = std::fs::read(&file).expect("raw");
        let newest = (0..sb.layout.journal_blocks)
            .filter_map(|p| {
                let at = sb.layout.journal_block_at(p) as usize;
                decode_block(&sb.disk_uuid, &raw[at..at + 4096]).map(|(seq, _)| (seq, at))
            })
            .max()
            .expect("ring blocks");
        raw[newest.1 + 60] ^= 0x10;
        std::fs::write(&file, raw).expect("tear");
        reopened(dir.path(), engine, async |disk| {
            assert_eq!(read(&disk, id(1), 0, 4096).await.expect("block 0"), pattern(1, 4096));
            let err = read(&disk, id(1), 4096, 4096).await.expect_err("the torn write's block");
            assert!(matches!(err, StoreError::Checksum { block: 1, .. }), "{engine:?}: {err}");
        });
    }
}

/// A disk formatted before the journal (version 1) opens, is written the
/// old way (the checksum block with each write) and keeps its data.
#[tokio::test]
async fn a_version_1_disk_is_served_without_a_journal() {
    use chuyi_storage_node::format::layout::Layout;
    use chuyi_storage_node::format::superblock::Superblock;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join(DISK_FILE_NAME);
    let layout = Layout::with_slots(10, CHUNK, 0);
    let sb = Superblock { disk_uuid: [1; 16], disk_id: 7, class: DeviceClass::Ssd, capacity_bytes: 64 * MIB, layout };
    let mut raw = vec![0u8; (64 * MIB) as usize];
    raw[..4096].copy_from_slice(&sb.encode());
    std::fs::write(&file, raw).expect("version 1 disk");
    let disk = open(dir.path(), EngineKind::Uring).await;
    disk.write(id(1), 0, pattern(1, 4096), false).await.expect("write");
    assert!(raw_crc_block(dir.path(), 0).iter().any(|&b| b != 0), "the checksum block is written with the data");
    drop(disk);
    assert_eq!(raw_superblock(dir.path()), sb, "still version 1");
    let disk = open(dir.path(), EngineKind::Uring).await;
    assert_eq!(read(&disk, id(1), 0, 4096).await.expect("read"), pattern(1, 4096));
}
