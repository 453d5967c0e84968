//! The slot table: one 32-byte entry per slot saying which chunk, if any,
//! the slot holds. 128 entries share a 4 KiB block, which is rewritten whole.

use chuyi_common::checksum::crc32c;
use chuyi_common::ids::ChunkId;
use chuyi_common::proto::chunk::Stamp;

pub const ENTRY_BYTES: usize = 32;
const STATE_USED: u32 = 1;

/// What one slot-table entry says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotEntry {
    /// Never used, or freed. Its data region reads as zeros.
    Free,
    /// Holds `chunk` (a chunk, or a snapshot clone of one), with its
    /// snapshot stamp (zeros for a clone, and on disks written before
    /// snapshots, where the field was reserved and zero).
    Used(ChunkId, Stamp),
    /// The entry's checksum does not match: the slot is neither handed out
    /// nor served until an operator looks at it.
    Damaged,
}

impl SlotEntry {
    pub fn encode(&self, out: &mut [u8]) {
        out[..ENTRY_BYTES].fill(0);
        let (chunk, stamp) = match self {
            SlotEntry::Used(chunk, stamp) => (*chunk, *stamp),
            // A free entry is all zeros, as a fresh disk is; a damaged one is
            // never written back.
            SlotEntry::Free | SlotEntry::Damaged => return,
        };
        out[0..16].copy_from_slice(&chunk.to_le_bytes());
        out[16..20].copy_from_slice(&stamp.seq.to_le_bytes());
        out[20..24].copy_from_slice(&stamp.born.to_le_bytes());
        out[24..28].copy_from_slice(&STATE_USED.to_le_bytes());
        let crc = crc32c(&out[..28]);
        out[28..32].copy_from_slice(&crc.to_le_bytes());
    }

    pub fn decode(b: &[u8]) -> SlotEntry {
        let b = &b[..ENTRY_BYTES];
        if b.iter().all(|&x| x == 0) {
            return SlotEntry::Free;
        }
        let mut crc = [0u8; 4];
        crc.copy_from_slice(&b[28..32]);
        let mut state = [0u8; 4];
        state.copy_from_slice(&b[24..28]);
        if u32::from_le_bytes(crc) != crc32c(&b[..28]) || u32::from_le_bytes(state) != STATE_USED {
            return SlotEntry::Damaged;
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&b[0..16]);
        let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        SlotEntry::Used(ChunkId::from_le_bytes(id), Stamp { seq: u32_at(16), born: u32_at(20) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mut b = [0xAAu8; ENTRY_BYTES];
        let stamped = SlotEntry::Used(ChunkId::new(9, 3), Stamp { seq: 7, born: 2 });
        for e in [SlotEntry::Free, SlotEntry::Used(ChunkId::new(9, 1 << 40), Stamp::default()), stamped] {
            e.encode(&mut b);
            assert_eq!(SlotEntry::decode(&b), e);
        }
    }

    #[test]
    fn damage_is_detected() {
        let mut b = [0u8; ENTRY_BYTES];
        SlotEntry::Used(ChunkId::new(1, 2), Stamp::default()).encode(&mut b);
        b[3] ^= 0x10;
        assert_eq!(SlotEntry::decode(&b), SlotEntry::Damaged);
    }
}
