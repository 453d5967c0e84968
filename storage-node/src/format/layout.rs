//! Where each region of a disk starts, derived from its size.

use chuyi_common::limits::BLOCK_SIZE_BYTES;

use super::journal::{RING_BLOCKS, RING_BLOCKS_MIN, TAIL_BLOCKS};
use super::slot_table::ENTRY_BYTES;
use super::FormatError;

const BLOCK: u64 = BLOCK_SIZE_BYTES as u64;

/// Slot data starts on a 1 MiB boundary, friendly to RAID stripes and SSD
/// erase blocks.
const DATA_ALIGN_BYTES: u64 = 1 << 20;

/// The regions of a formatted disk, all in bytes from the start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub chunk_size: u64,
    pub slot_count: u64,
    pub slot_table_offset: u64,
    pub crc_table_offset: u64,
    /// The checksum journal's two tail blocks, then its ring (format
    /// version 2); `journal_blocks` is 0 on a version 1 disk, which has none.
    pub journal_offset: u64,
    pub journal_blocks: u64,
    pub data_offset: u64,
}

impl Layout {
    /// The layout of a new disk: a journal of [`ring_blocks_for`] its
    /// capacity, and as many slots as fit in `capacity_bytes`.
    pub fn for_capacity(capacity_bytes: u64, chunk_size: u64) -> Result<Self, FormatError> {
        let ring = ring_blocks_for(capacity_bytes);
        let per_slot = chunk_size + BLOCK + ENTRY_BYTES as u64;
        let mut slots = capacity_bytes / per_slot;
        while slots > 0 && Self::with_slots(slots, chunk_size, ring).end() > capacity_bytes {
            slots -= 1;
        }
        if slots == 0 {
            return Err(FormatError::TooSmall { capacity_bytes, chunk_size });
        }
        Ok(Self::with_slots(slots, chunk_size, ring))
    }

    /// The layout of `slot_count` slots of `chunk_size` bytes, with a
    /// journal ring of `journal_blocks` (0: none, a version 1 disk).
    pub fn with_slots(slot_count: u64, chunk_size: u64, journal_blocks: u64) -> Self {
        let slot_table_offset = BLOCK;
        let table_bytes = (slot_count * ENTRY_BYTES as u64).div_ceil(BLOCK) * BLOCK;
        let crc_table_offset = slot_table_offset + table_bytes;
        let journal_offset = crc_table_offset + slot_count * BLOCK;
        let journal_bytes = if journal_blocks == 0 { 0 } else { (TAIL_BLOCKS + journal_blocks) * BLOCK };
        let data_offset = (journal_offset + journal_bytes).div_ceil(DATA_ALIGN_BYTES) * DATA_ALIGN_BYTES;
        Self {
            chunk_size,
            slot_count,
            slot_table_offset,
            crc_table_offset,
            journal_offset,
            journal_blocks,
            data_offset,
        }
    }

    /// Where ring block `position` of the journal starts.
    pub fn journal_block_at(&self, position: u64) -> u64 {
        self.journal_offset + (TAIL_BLOCKS + position) * BLOCK
    }

    /// Where tail block `position` (0 or 1) of the journal starts.
    pub fn tail_block_at(&self, position: u64) -> u64 {
        self.journal_offset + position * BLOCK
    }

    /// Bytes the slot table occupies, whole blocks.
    pub fn slot_table_bytes(&self) -> u64 {
        self.crc_table_offset - self.slot_table_offset
    }

    /// First byte past the last slot.
    pub fn end(&self) -> u64 {
        self.data_offset + self.slot_count * self.chunk_size
    }

    /// Where slot `slot`'s checksum table starts.
    pub fn crc_table_at(&self, slot: u64) -> u64 {
        self.crc_table_offset + slot * BLOCK
    }

    /// Where slot `slot`'s data starts.
    pub fn data_at(&self, slot: u64) -> u64 {
        self.data_offset + slot * self.chunk_size
    }

    /// The block of the slot table that holds slot `slot`'s entry.
    pub fn table_block_of(&self, slot: u64) -> u64 {
        slot * ENTRY_BYTES as u64 / BLOCK
    }

    /// Blocks in one chunk.
    pub fn chunk_blocks(&self) -> usize {
        (self.chunk_size / BLOCK) as usize
    }
}

/// The journal ring a new disk of `capacity_bytes` gets: [`RING_BLOCKS`]
/// (8 MiB), but at most 1/64 of a small disk (a test's or a sandbox's) and
/// never fewer than [`RING_BLOCKS_MIN`].
pub fn ring_blocks_for(capacity_bytes: u64) -> u64 {
    (capacity_bytes / 64 / BLOCK).clamp(RING_BLOCKS_MIN, RING_BLOCKS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_do_not_overlap_and_fit() {
        for cap in [7u64 << 20, 64 << 20, 10 << 30, (10 << 40) + 12345] {
            let l = Layout::for_capacity(cap, 4 << 20).expect("fits");
            assert!(l.end() <= cap, "capacity {cap}");
            assert!(l.slot_table_offset >= BLOCK);
            assert!(l.crc_table_offset >= l.slot_table_offset + l.slot_count * ENTRY_BYTES as u64);
            assert_eq!(l.journal_offset, l.crc_table_at(l.slot_count));
            assert!(l.data_offset >= l.journal_block_at(l.journal_blocks));
            assert_eq!(l.tail_block_at(TAIL_BLOCKS), l.journal_block_at(0));
            assert_eq!(l.data_offset % DATA_ALIGN_BYTES, 0);
            // One more slot would not fit.
            assert!(Layout::with_slots(l.slot_count + 1, 4 << 20, l.journal_blocks).end() > cap);
        }
    }

    #[test]
    fn the_ring_is_8_mib_but_on_small_disks() {
        assert_eq!(ring_blocks_for(1 << 20), RING_BLOCKS_MIN);
        assert_eq!(ring_blocks_for(7 << 20), 28);
        assert_eq!(ring_blocks_for(64 << 20), 256);
        assert_eq!(ring_blocks_for(512 << 20), RING_BLOCKS);
        assert_eq!(ring_blocks_for(10 << 40), RING_BLOCKS);
        assert_eq!(Layout::for_capacity(10 << 30, 4 << 20).expect("fits").journal_blocks, RING_BLOCKS);
    }

    #[test]
    fn too_small_is_refused() {
        assert!(matches!(Layout::for_capacity(4 << 20, 4 << 20), Err(FormatError::TooSmall { .. })));
    }

    #[test]
    fn a_version_1_layout_is_unchanged() {
        // What version 1 wrote for 100 slots of 4 MiB: data after the
        // checksum tables, on the next 1 MiB boundary.
        let l = Layout::with_slots(100, 4 << 20, 0);
        assert_eq!((l.crc_table_offset, l.data_offset), (8192, 1 << 20));
    }
}
