//! The checksum journal (format version 2): what a write's new block
//! checksums look like on disk before they reach the slot's checksum block.
//!
//! A write used to cost two I/Os per replica, its data and its slot's
//! whole checksum block. With the journal the checksums go into a shared
//! 4 KiB journal block that carries the changes of every write in flight on
//! the disk at that moment (group commit), and the checksum blocks are
//! written later, together, at a checkpoint. FORMAT.md ("Checksum journal")
//! draws the region and says why a crash is harmless; this module only
//! encodes and decodes, with no I/O.

use chuyi_common::checksum::crc32c;
use chuyi_common::limits::BLOCK_SIZE_BYTES;

use super::{u32_at, u64_at};

pub const BLOCK_MAGIC: [u8; 8] = *b"CHUYIJNL";
pub const TAIL_MAGIC: [u8; 8] = *b"CHUYITAL";

/// Ring blocks a new disk's journal has (8 MiB), after its two tail blocks.
pub const RING_BLOCKS: u64 = 2048;
/// Blocks before the ring: the two alternating tail records.
pub const TAIL_BLOCKS: u64 = 2;
/// The fewest and most ring blocks a superblock may name: the fewest
/// leave room for a whole chunk's distinct checksums (5 blocks) in a batch
/// while a checkpoint frees the rest; the most bound a damaged field.
pub const RING_BLOCKS_MIN: u64 = 16;
pub const RING_BLOCKS_MAX: u64 = 1 << 16;

/// The crc32c of a journal or tail block covers bytes `0..CRC_AT`.
const CRC_AT: usize = BLOCK_SIZE_BYTES - 4;
/// magic 8, disk uuid 16, sequence 8, entry count 4, reserved 4.
const HEADER_BYTES: usize = 40;
pub const CHANGE_BYTES: usize = 16;
/// Changes one journal block holds.
pub const CHANGES_PER_BLOCK: usize = (CRC_AT - HEADER_BYTES) / CHANGE_BYTES;

/// Blocks `first .. first + count` of slot `slot` now have checksum `crc`.
/// A write names one block per change (or a run of blocks whose checksums
/// are equal, such as zeros); a trim or a new slot one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    pub slot: u64,
    pub first: u16,
    pub count: u16,
    pub crc: u32,
}

impl Change {
    /// Applies the change to a slot's checksum table; `false` (and nothing
    /// changed) when it names blocks past the table.
    pub fn apply(&self, table: &mut [u32]) -> bool {
        let (first, count) = (usize::from(self.first), usize::from(self.count));
        match table.get_mut(first..first + count) {
            Some(blocks) => {
                blocks.fill(self.crc);
                true
            }
            None => false,
        }
    }
}

/// The changes that set blocks `first ..` of `slot` to `crcs`: one per run
/// of equal checksums. `first + crcs.len()` is at most a chunk's blocks
/// (1024), so both fit a u16.
pub fn runs(slot: u64, first: usize, crcs: &[u32]) -> Vec<Change> {
    let mut out: Vec<Change> = Vec::new();
    for (i, &crc) in crcs.iter().enumerate() {
        match out.last_mut() {
            Some(last) if last.crc == crc => last.count += 1,
            _ => out.push(Change { slot, first: (first + i) as u16, count: 1, crc }),
        }
    }
    out
}

/// One ring block: journal sequence `seq`'s changes, for the disk whose
/// superblock carries `uuid` (so a block left by an earlier format of the
/// same device is never taken for one of this disk's).
pub fn encode_block(uuid: &[u8; 16], seq: u64, changes: &[Change], out: &mut [u8]) {
    assert!(changes.len() <= CHANGES_PER_BLOCK, "a journal block holds {CHANGES_PER_BLOCK} changes");
    out[..BLOCK_SIZE_BYTES].fill(0);
    out[0..8].copy_from_slice(&BLOCK_MAGIC);
    out[8..24].copy_from_slice(uuid);
    out[24..32].copy_from_slice(&seq.to_le_bytes());
    out[32..36].copy_from_slice(&(changes.len() as u32).to_le_bytes());
    for (c, dst) in changes.iter().zip(out[HEADER_BYTES..].chunks_exact_mut(CHANGE_BYTES)) {
        dst[0..8].copy_from_slice(&c.slot.to_le_bytes());
        dst[8..10].copy_from_slice(&c.first.to_le_bytes());
        dst[10..12].copy_from_slice(&c.count.to_le_bytes());
        dst[12..16].copy_from_slice(&c.crc.to_le_bytes());
    }
    seal(out);
}

/// A ring block's sequence and changes; `None` for anything that is not a
/// whole block of this disk's journal (never written, torn, another
/// format's).
pub fn decode_block(uuid: &[u8; 16], b: &[u8]) -> Option<(u64, Vec<Change>)> {
    if !sealed(b, &BLOCK_MAGIC, uuid) {
        return None;
    }
    let count = u32_at(b, 32) as usize;
    if count > CHANGES_PER_BLOCK {
        return None;
    }
    let changes = b[HEADER_BYTES..]
        .chunks_exact(CHANGE_BYTES)
        .take(count)
        .map(|e| Change {
            slot: u64_at(e, 0),
            first: u16::from_le_bytes([e[8], e[9]]),
            count: u16::from_le_bytes([e[10], e[11]]),
            crc: u32_at(e, 12),
        })
        .collect();
    Some((u64_at(b, 24), changes))
}

/// A tail record: after checkpoint number `checkpoint`, every change of a
/// sequence below `tail` is in the checksum blocks, on stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tail {
    pub checkpoint: u64,
    pub tail: u64,
}

impl Tail {
    /// Which of the two tail blocks this record goes to: they alternate,
    /// so a torn write leaves the previous record whole.
    pub fn position(&self) -> u64 {
        self.checkpoint % TAIL_BLOCKS
    }

    pub fn encode(&self, uuid: &[u8; 16], out: &mut [u8]) {
        out[..BLOCK_SIZE_BYTES].fill(0);
        out[0..8].copy_from_slice(&TAIL_MAGIC);
        out[8..24].copy_from_slice(uuid);
        out[24..32].copy_from_slice(&self.checkpoint.to_le_bytes());
        out[32..40].copy_from_slice(&self.tail.to_le_bytes());
        seal(out);
    }

    pub fn decode(uuid: &[u8; 16], b: &[u8]) -> Option<Self> {
        sealed(b, &TAIL_MAGIC, uuid).then(|| Self { checkpoint: u64_at(b, 24), tail: u64_at(b, 32) })
    }

    /// The newest whole record of the two tail blocks, if either is.
    pub fn newest(uuid: &[u8; 16], blocks: &[u8]) -> Option<Self> {
        blocks.chunks_exact(BLOCK_SIZE_BYTES).filter_map(|b| Self::decode(uuid, b)).max_by_key(|t| t.checkpoint)
    }
}

fn seal(out: &mut [u8]) {
    let crc = crc32c(&out[..CRC_AT]);
    out[CRC_AT..BLOCK_SIZE_BYTES].copy_from_slice(&crc.to_le_bytes());
}

fn sealed(b: &[u8], magic: &[u8; 8], uuid: &[u8; 16]) -> bool {
    b.len() >= BLOCK_SIZE_BYTES && b[0..8] == *magic && b[8..24] == *uuid && u32_at(b, CRC_AT) == crc32c(&b[..CRC_AT])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const UUID: [u8; 16] = [9; 16];

    fn block(seq: u64, changes: &[Change]) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK_SIZE_BYTES];
        encode_block(&UUID, seq, changes, &mut b);
        b
    }

    #[test]
    fn blocks_round_trip_and_fill_up() {
        let changes: Vec<Change> = (0..CHANGES_PER_BLOCK as u64)
            .map(|i| Change { slot: i * 7, first: (i % 1024) as u16, count: 1, crc: i as u32 ^ 0xDEAD })
            .collect();
        assert_eq!(decode_block(&UUID, &block(42, &changes)), Some((42, changes)));
        assert_eq!(decode_block(&UUID, &block(0, &[])), Some((0, vec![])));
    }

    #[test]
    fn a_damaged_or_foreign_block_is_no_block() {
        let c = [Change { slot: 1, first: 2, count: 3, crc: 4 }];
        let mut b = block(5, &c);
        b[50] ^= 1;
        assert_eq!(decode_block(&UUID, &b), None);
        assert_eq!(decode_block(&[8; 16], &block(5, &c)), None, "another format's block");
        assert_eq!(decode_block(&UUID, &[0u8; BLOCK_SIZE_BYTES]), None);
        let mut tail = vec![0u8; BLOCK_SIZE_BYTES];
        Tail { checkpoint: 1, tail: 2 }.encode(&UUID, &mut tail);
        assert_eq!(decode_block(&UUID, &tail), None, "a tail record is no ring block");
    }

    #[test]
    fn the_newest_whole_tail_record_wins() {
        let mut two = vec![0u8; 2 * BLOCK_SIZE_BYTES];
        let (a, b) = (Tail { checkpoint: 6, tail: 100 }, Tail { checkpoint: 7, tail: 140 });
        a.encode(&UUID, &mut two[..BLOCK_SIZE_BYTES]);
        b.encode(&UUID, &mut two[BLOCK_SIZE_BYTES..]);
        assert_eq!(Tail::newest(&UUID, &two), Some(b));
        two[BLOCK_SIZE_BYTES + 30] ^= 1; // the newer one torn
        assert_eq!(Tail::newest(&UUID, &two), Some(a));
        assert_eq!(Tail::newest(&UUID, &[0u8; 2 * BLOCK_SIZE_BYTES]), None);
        assert_eq!((a.position(), b.position()), (0, 1));
    }

    #[test]
    fn runs_name_each_block_once_and_apply_in_bounds_only() {
        let crcs = [5, 5, 5, 9, 5, 7, 7];
        let changes = runs(3, 10, &crcs);
        assert_eq!(changes.len(), 4);
        let mut table = vec![0u32; 20];
        for c in &changes {
            assert!(c.apply(&mut table));
        }
        assert_eq!(&table[10..17], &crcs);
        assert!(table[..10].iter().chain(&table[17..]).all(|&c| c == 0));
        assert!(!Change { slot: 3, first: 18, count: 3, crc: 1 }.apply(&mut table));
        assert_eq!(table[18..], [0, 0], "a change past the table changes nothing");
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), BLOCK_SIZE_BYTES), count in any::<u32>()) {
            let mut b = bytes;
            b[0..8].copy_from_slice(&BLOCK_MAGIC);
            b[8..24].copy_from_slice(&UUID);
            b[32..36].copy_from_slice(&count.to_le_bytes());
            seal(&mut b);
            if let Some((_, changes)) = decode_block(&UUID, &b) {
                let mut table = vec![0u32; 1024];
                for c in changes {
                    let _ = c.apply(&mut table);
                }
            }
            let _ = Tail::decode(&UUID, &b);
        }
    }
}
