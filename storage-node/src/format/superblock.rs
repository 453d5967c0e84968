//! The superblock: the first 4 KiB of a disk, naming what the disk is and
//! how it is laid out. Written once at format time.

use chuyi_common::checksum::crc32c;
use chuyi_common::ids::{DeviceClass, DiskId};
use chuyi_common::limits::{BLOCK_SIZE_BYTES, CHUNK_SIZE_MAX_BYTES};

use super::journal::{RING_BLOCKS_MAX, RING_BLOCKS_MIN};
use super::layout::Layout;
use super::{u32_at, u64_at, FormatError};

pub const MAGIC: [u8; 8] = *b"CHUYIDSK";
/// The version new disks are formatted with: 2 has a checksum journal.
pub const FORMAT_VERSION: u32 = 2;
/// The version before the journal, still read (and written as such).
pub const FORMAT_VERSION_NO_JOURNAL: u32 = 1;
pub const SUPERBLOCK_BYTES: usize = BLOCK_SIZE_BYTES;
/// The superblock's crc32c covers bytes `0..CRC_AT` and is stored at `CRC_AT`.
const CRC_AT: usize = SUPERBLOCK_BYTES - 4;
/// The largest disk a superblock may describe (1 EiB), far past any device.
const CAPACITY_MAX_BYTES: u64 = 1 << 60;

/// What a disk's superblock says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub disk_uuid: [u8; 16],
    pub disk_id: DiskId,
    pub class: DeviceClass,
    /// Bytes of the file or device given to chuyi at format time.
    pub capacity_bytes: u64,
    pub layout: Layout,
}

impl Superblock {
    pub fn encode(&self) -> [u8; SUPERBLOCK_BYTES] {
        let mut b = [0u8; SUPERBLOCK_BYTES];
        let l = &self.layout;
        let version = if l.journal_blocks == 0 { FORMAT_VERSION_NO_JOURNAL } else { FORMAT_VERSION };
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&version.to_le_bytes());
        // 12..16: flags, zero.
        b[16..32].copy_from_slice(&self.disk_uuid);
        b[32..36].copy_from_slice(&self.disk_id.to_le_bytes());
        b[36] = self.class.to_byte();
        b[40..48].copy_from_slice(&self.capacity_bytes.to_le_bytes());
        b[48..52].copy_from_slice(&(BLOCK_SIZE_BYTES as u32).to_le_bytes());
        b[52..56].copy_from_slice(&(l.chunk_size as u32).to_le_bytes());
        b[56..64].copy_from_slice(&l.slot_count.to_le_bytes());
        b[64..72].copy_from_slice(&l.slot_table_offset.to_le_bytes());
        b[72..80].copy_from_slice(&l.crc_table_offset.to_le_bytes());
        b[80..88].copy_from_slice(&l.data_offset.to_le_bytes());
        if l.journal_blocks != 0 {
            b[88..96].copy_from_slice(&l.journal_offset.to_le_bytes());
            b[96..104].copy_from_slice(&l.journal_blocks.to_le_bytes());
        }
        let crc = crc32c(&b[..CRC_AT]);
        b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a superblock; the layout must be the one this
    /// build would derive from the slot count, so a damaged field is caught
    /// even if the checksum were to match.
    pub fn decode(b: &[u8; SUPERBLOCK_BYTES]) -> Result<Self, FormatError> {
        if b[0..8] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        if u32_at(b, CRC_AT) != crc32c(&b[..CRC_AT]) {
            return Err(FormatError::Checksum);
        }
        let version = u32_at(b, 8);
        let journal_blocks = match version {
            FORMAT_VERSION_NO_JOURNAL => 0,
            FORMAT_VERSION => u64_at(b, 96),
            _ => return Err(FormatError::Version(version)),
        };
        if version == FORMAT_VERSION && !(RING_BLOCKS_MIN..=RING_BLOCKS_MAX).contains(&journal_blocks) {
            return Err(FormatError::Field { field: "journal_blocks", value: journal_blocks });
        }
        let class = DeviceClass::from_byte(b[36]).ok_or(FormatError::Field { field: "class", value: b[36].into() })?;
        let block = u32_at(b, 48);
        if block as usize != BLOCK_SIZE_BYTES {
            return Err(FormatError::Field { field: "block_size", value: block.into() });
        }
        let chunk_size = u64::from(u32_at(b, 52));
        if chunk_size == 0 || chunk_size % block as u64 != 0 || chunk_size > CHUNK_SIZE_MAX_BYTES as u64 {
            return Err(FormatError::Field { field: "chunk_size", value: chunk_size });
        }
        let capacity_bytes = u64_at(b, 40);
        let slot_count = u64_at(b, 56);
        // Bound the slot count by the capacity before any arithmetic on it,
        // so a damaged superblock cannot overflow the layout.
        if capacity_bytes > CAPACITY_MAX_BYTES || slot_count > capacity_bytes / chunk_size {
            return Err(FormatError::Field { field: "slot_count", value: slot_count });
        }
        let layout = Layout::with_slots(slot_count, chunk_size, journal_blocks);
        let mut stored = vec![(64, layout.slot_table_offset), (72, layout.crc_table_offset), (80, layout.data_offset)];
        if journal_blocks != 0 {
            stored.push((88, layout.journal_offset));
        }
        for (at, want) in stored {
            if u64_at(b, at) != want {
                return Err(FormatError::Field { field: "region offset", value: u64_at(b, at) });
            }
        }
        let mut disk_uuid = [0u8; 16];
        disk_uuid.copy_from_slice(&b[16..32]);
        Ok(Self { disk_uuid, disk_id: u32_at(b, 32), class, capacity_bytes, layout })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Superblock {
        Superblock {
            disk_uuid: [7; 16],
            disk_id: 3,
            class: DeviceClass::Hdd,
            capacity_bytes: 1 << 30,
            layout: Layout::for_capacity(1 << 30, 4 << 20).expect("fits"),
        }
    }

    #[test]
    fn round_trips() {
        let sb = sample();
        assert_eq!(Superblock::decode(&sb.encode()), Ok(sb));
    }

    #[test]
    fn a_version_1_disk_is_still_read_and_has_no_journal() {
        let old = Superblock { layout: Layout::with_slots(200, 4 << 20, 0), ..sample() };
        let b = old.encode();
        assert_eq!(u32_at(&b, 8), FORMAT_VERSION_NO_JOURNAL);
        assert!(b[88..104].iter().all(|&x| x == 0), "version 1's reserved bytes stay zero");
        assert_eq!(Superblock::decode(&b), Ok(old));
        assert_eq!(u32_at(&sample().encode(), 8), FORMAT_VERSION);
    }

    #[test]
    fn detects_damage() {
        let mut b = sample().encode();
        b[60] ^= 1;
        assert_eq!(Superblock::decode(&b), Err(FormatError::Checksum));
        let mut b = sample().encode();
        b[0] = b'X';
        assert_eq!(Superblock::decode(&b), Err(FormatError::BadMagic));
        let mut b = sample().encode();
        b[96..104].copy_from_slice(&(RING_BLOCKS_MAX + 1).to_le_bytes());
        let crc = crc32c(&b[..CRC_AT]);
        b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(Superblock::decode(&b), Err(FormatError::Field { field: "journal_blocks", .. })));
        assert_eq!(Superblock::decode(&[0u8; SUPERBLOCK_BYTES]), Err(FormatError::BadMagic));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), SUPERBLOCK_BYTES)) {
            let mut b = [0u8; SUPERBLOCK_BYTES];
            b.copy_from_slice(&bytes);
            b[0..8].copy_from_slice(&MAGIC);
            let crc = crc32c(&b[..CRC_AT]);
            b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
            let _ = Superblock::decode(&b);
        }

        #[test]
        fn decode_never_panics_on_any_counts(capacity in any::<u64>(), slots in any::<u64>(), chunk in 1u32..1025) {
            let mut b = sample().encode();
            b[40..48].copy_from_slice(&capacity.to_le_bytes());
            b[52..56].copy_from_slice(&(chunk * 4096).to_le_bytes());
            b[56..64].copy_from_slice(&slots.to_le_bytes());
            let crc = crc32c(&b[..CRC_AT]);
            b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
            let _ = Superblock::decode(&b);
        }
    }
}
