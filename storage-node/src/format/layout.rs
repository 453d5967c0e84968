//! Where each region of a disk starts, derived from its size.

use chuyi_common::limits::BLOCK_SIZE_BYTES;

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
    pub data_offset: u64,
}

impl Layout {
    /// The layout with as many slots as fit in `capacity_bytes`.
    pub fn for_capacity(capacity_bytes: u64, chunk_size: u64) -> Result<Self, FormatError> {
        let per_slot = chunk_size + BLOCK + ENTRY_BYTES as u64;
        let mut slots = capacity_bytes / per_slot;
        while slots > 0 && Self::with_slots(slots, chunk_size).end() > capacity_bytes {
            slots -= 1;
        }
        if slots == 0 {
            return Err(FormatError::TooSmall { capacity_bytes, chunk_size });
        }
        Ok(Self::with_slots(slots, chunk_size))
    }

    /// The layout of `slot_count` slots of `chunk_size` bytes.
    pub fn with_slots(slot_count: u64, chunk_size: u64) -> Self {
        let slot_table_offset = BLOCK;
        let table_bytes = (slot_count * ENTRY_BYTES as u64).div_ceil(BLOCK) * BLOCK;
        let crc_table_offset = slot_table_offset + table_bytes;
        let crc_end = crc_table_offset + slot_count * BLOCK;
        let data_offset = crc_end.div_ceil(DATA_ALIGN_BYTES) * DATA_ALIGN_BYTES;
        Self { chunk_size, slot_count, slot_table_offset, crc_table_offset, data_offset }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_do_not_overlap_and_fit() {
        for cap in [5u64 << 20, 64 << 20, 10 << 30, (10 << 40) + 12345] {
            let l = Layout::for_capacity(cap, 4 << 20).expect("fits");
            assert!(l.end() <= cap, "capacity {cap}");
            assert!(l.slot_table_offset >= BLOCK);
            assert!(l.crc_table_offset >= l.slot_table_offset + l.slot_count * ENTRY_BYTES as u64);
            assert!(l.data_offset >= l.crc_table_at(l.slot_count));
            assert_eq!(l.data_offset % DATA_ALIGN_BYTES, 0);
            // One more slot would not fit.
            assert!(Layout::with_slots(l.slot_count + 1, 4 << 20).end() > cap);
        }
    }

    #[test]
    fn too_small_is_refused() {
        assert!(matches!(Layout::for_capacity(4 << 20, 4 << 20), Err(FormatError::TooSmall { .. })));
    }
}
