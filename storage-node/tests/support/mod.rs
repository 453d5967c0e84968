//! Helpers shared by the storage node's integration tests.

use std::path::{Path, PathBuf};

use chuyi_common::ids::{DeviceClass, DiskId};
use chuyi_storage_node::format::journal::{Tail, TAIL_BLOCKS};
use chuyi_storage_node::format::layout::Layout;
use chuyi_storage_node::format::superblock::{Superblock, SUPERBLOCK_BYTES};
use chuyi_storage_node::store::open::DISK_FILE_NAME;

/// A small tmpfs mounted for a test: a real file system that fills up.
/// Mounting needs root, as CI runs; without it the test fails loudly.
#[allow(dead_code)] // Not every test binary mounts one.
pub struct TmpfsMount(PathBuf);

#[allow(dead_code)]
impl TmpfsMount {
    pub fn new(at: &Path, size: &str) -> Self {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs needs root (CI runs as root)");
        Self(at.to_path_buf())
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A version 2 disk of disk id `disk`, 64 MiB with 10 slots of 4 MiB,
/// formatted by hand at `dir` with a journal ring of `ring` blocks, so a
/// test laps it in a few hundred writes (the default ring takes
/// thousands). Its uuid is the id repeated.
#[allow(dead_code)] // Not every test binary formats a disk.
pub fn format_with_ring(dir: &Path, disk: DiskId, ring: u64) {
    const MIB: u64 = 1 << 20;
    let layout = Layout::with_slots(10, 4 * MIB, ring);
    let sb = Superblock {
        disk_uuid: [disk as u8; 16],
        disk_id: disk,
        class: DeviceClass::Ssd,
        capacity_bytes: 64 * MIB,
        layout,
    };
    let mut raw = vec![0u8; (64 * MIB) as usize];
    raw[..SUPERBLOCK_BYTES].copy_from_slice(&sb.encode());
    let at = layout.tail_block_at(0) as usize;
    Tail { checkpoint: 0, tail: 0 }.encode(&sb.disk_uuid, &mut raw[at..at + 4096]);
    std::fs::write(dir.join(DISK_FILE_NAME), raw).expect("version 2 disk");
}

/// The superblock of the disk file at `dir`.
#[allow(dead_code)] // Not every test binary reads a disk's file.
pub fn raw_superblock(dir: &Path) -> Superblock {
    let raw = std::fs::read(dir.join(DISK_FILE_NAME)).expect("raw disk");
    let mut block = [0u8; SUPERBLOCK_BYTES];
    block.copy_from_slice(&raw[..SUPERBLOCK_BYTES]);
    Superblock::decode(&block).expect("superblock")
}

/// The newest whole tail record of the disk file at `dir`: the journal's
/// durable tail and the checkpoint that wrote it.
#[allow(dead_code)] // Not every test binary reads a disk's file.
pub fn newest_tail(dir: &Path) -> Option<Tail> {
    let sb = raw_superblock(dir);
    let at = sb.layout.tail_block_at(0) as usize;
    let raw = std::fs::read(dir.join(DISK_FILE_NAME)).expect("raw disk");
    Tail::newest(&sb.disk_uuid, &raw[at..at + TAIL_BLOCKS as usize * 4096])
}
