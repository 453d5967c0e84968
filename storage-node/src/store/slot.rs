//! One slot's in-memory state: which slot holds a chunk, and the chunk's
//! checksum table, loaded on first use; and what this process saw written
//! to it since its last snapshot clone was made (its lineage).
//!
//! A slot sits behind a read-write lock. Reads share it, so a read never
//! sees a block's new data with its old checksum; writes, trims and deletes
//! hold it exclusively, which also serialises the rewrite of the slot's
//! checksum block.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chuyi_common::checksum::zero_block_crc;
use chuyi_common::limits::BLOCK_SIZE_BYTES;
use chuyi_common::proto::chunk::Stamp;
use tokio::sync::RwLock;

/// A chunk's slot, shared by every operation on the chunk.
pub type SlotRef = Arc<RwLock<Slot>>;

#[derive(Debug)]
pub struct Slot {
    /// The slot number on disk.
    pub index: u64,
    /// crc32c of each block; `None` until loaded from disk.
    pub crcs: Option<Box<[u32]>>,
    /// False once deleted (or if allocation failed): an operation that finds
    /// a dead slot looks the chunk up again.
    pub live: bool,
    /// Whether some blocks may be holes in the file (after a trim, or when
    /// unknown after a restart): writes then reserve space first, so a full
    /// file system fails them before any byte changes.
    pub holes: bool,
    /// The chunk's snapshot stamp, as in its slot-table entry.
    pub stamp: Stamp,
    /// Changes whenever the slot's bytes may have: unique in this process,
    /// so a lineage naming a clone at a version proves the clone untouched.
    pub version: u64,
    /// How the bytes relate to an older clone of the same chunk, when this
    /// process knows; `None` when it does not (after a restart, a rollback,
    /// a clone found already made).
    pub lineage: Option<Lineage>,
    /// I/Os that change the bytes, submitted and not seen to finish. A
    /// request cancelled mid-write leaves its I/O running and this count
    /// above zero for the slot's life: that I/O may land after the slot is
    /// copied to a clone, so no lineage can start from such a copy.
    pub writes_in_flight: u32,
}

/// A slot's bytes equal clone `prev`'s, as it was at `prev_version`,
/// except at most in the blocks marked `written`. Kept in memory only:
/// a snapshot diff that can follow lineages back to its older snapshot's
/// clone compares only the marked blocks instead of every block, and one
/// that cannot (after a restart, say) compares every block as before.
#[derive(Clone, Debug)]
pub struct Lineage {
    pub prev: u32,
    pub prev_version: u64,
    pub written: Box<[u64]>,
}

impl Lineage {
    /// A clone `prev` at `prev_version` just copied from this slot.
    pub fn fresh(prev: u32, prev_version: u64, blocks: usize) -> Self {
        Self { prev, prev_version, written: vec![0; blocks.div_ceil(64)].into_boxed_slice() }
    }

    pub fn mark(&mut self, first: usize, count: usize) {
        for block in first..first + count {
            self.written[block / 64] |= 1 << (block % 64);
        }
    }

    pub fn is_marked(&self, block: usize) -> bool {
        self.written[block / 64] & (1 << (block % 64)) != 0
    }

    /// Adds the blocks `older` marks, for a diff across more than one clone.
    pub fn absorb(&mut self, older: &Lineage) {
        debug_assert_eq!(self.written.len(), older.written.len(), "lineages of one chunk size");
        for (mine, theirs) in self.written.iter_mut().zip(older.written.iter()) {
            *mine |= theirs;
        }
    }
}

/// A version no slot has had before in this process.
pub fn next_version() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Slot {
    /// A slot being allocated: not live until its on-disk entry is written.
    pub fn allocating(index: u64) -> Self {
        Self {
            index,
            crcs: None,
            live: false,
            holes: false,
            stamp: Stamp::default(),
            version: next_version(),
            lineage: None,
            writes_in_flight: 0,
        }
    }

    /// A slot found in the slot table at start.
    pub fn existing(index: u64, stamp: Stamp) -> Self {
        Self {
            index,
            crcs: None,
            live: true,
            holes: true,
            stamp,
            version: next_version(),
            lineage: None,
            writes_in_flight: 0,
        }
    }

    /// Before blocks `[first, first + count)` change: a new version, the
    /// blocks marked in the lineage, and one more write in flight until
    /// [`Self::settled`]. Marked before the bytes move, so a failed write
    /// leaves them marked (a diff then compares them).
    pub fn changing(&mut self, first: usize, count: usize) {
        self.version = next_version();
        self.writes_in_flight += 1;
        if let Some(lineage) = &mut self.lineage {
            lineage.mark(first, count);
        }
    }

    /// After the I/O [`Self::changing`] announced has finished (landed or
    /// failed). Never reached when the request is cancelled meanwhile.
    pub fn settled(&mut self) {
        self.writes_in_flight -= 1;
    }

    /// Before the bytes change in a way the lineage cannot follow.
    pub fn forget_lineage(&mut self) {
        self.version = next_version();
        self.lineage = None;
    }

    /// The checksum table of a chunk whose blocks are all zeros.
    pub fn zero_table(blocks: usize) -> Box<[u32]> {
        vec![zero_block_crc(); blocks].into_boxed_slice()
    }
}

/// Encodes a checksum table as the 4 KiB on-disk block (u32 little-endian
/// each; entries past the chunk's blocks are zero).
pub fn encode_crc_block(crcs: &[u32], out: &mut [u8]) {
    out[..BLOCK_SIZE_BYTES].fill(0);
    for (dst, crc) in out.chunks_exact_mut(4).zip(crcs) {
        dst.copy_from_slice(&crc.to_le_bytes());
    }
}

/// Decodes the first `blocks` entries of an on-disk checksum block.
pub fn decode_crc_block(block: &[u8], blocks: usize) -> Box<[u32]> {
    block.chunks_exact(4).take(blocks).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_block_round_trips() {
        let crcs: Vec<u32> = (0..1024u32).map(|i| i.wrapping_mul(0x9E37_79B9)).collect();
        let mut block = vec![0u8; BLOCK_SIZE_BYTES];
        encode_crc_block(&crcs, &mut block);
        assert_eq!(&*decode_crc_block(&block, 1024), &crcs[..]);
        assert_eq!(&*decode_crc_block(&block, 3), &crcs[..3]);
    }
}
