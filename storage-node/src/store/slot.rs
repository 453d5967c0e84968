//! One slot's in-memory state: which slot holds a chunk, and the chunk's
//! checksum table, loaded on first use.
//!
//! A slot sits behind a read-write lock. Reads share it, so a read never
//! sees a block's new data with its old checksum; writes, trims and deletes
//! hold it exclusively, which also serialises the rewrite of the slot's
//! checksum block.

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
}

impl Slot {
    /// A slot being allocated: not live until its on-disk entry is written.
    pub fn allocating(index: u64) -> Self {
        Self { index, crcs: None, live: false, holes: false, stamp: Stamp::default() }
    }

    /// A slot found in the slot table at start.
    pub fn existing(index: u64, stamp: Stamp) -> Self {
        Self { index, crcs: None, live: true, holes: true, stamp }
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
