//! Identifiers shared by every role.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A storage node's id, unique in the cluster.
pub type NodeId = u32;

/// A disk's id, unique within its node (the config names it).
pub type DiskId = u32;

/// The address of a chunk: the thing that owns it (a volume, or an object's
/// data) and the chunk's index within it. Chunk `index` of a volume covers
/// bytes `[index * chunk_size, (index + 1) * chunk_size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChunkId {
    pub owner: u64,
    pub index: u64,
}

impl ChunkId {
    /// Encoded length in formats: owner then index, each u64 little-endian.
    pub const ENCODED_LEN: usize = 16;

    pub const fn new(owner: u64, index: u64) -> Self {
        Self { owner, index }
    }

    pub fn to_le_bytes(self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        out[..8].copy_from_slice(&self.owner.to_le_bytes());
        out[8..].copy_from_slice(&self.index.to_le_bytes());
        out
    }

    /// The id of the clone that keeps this chunk as snapshots up to `snap`
    /// saw it (storage-node/FORMAT.md, "Snapshot clones"): the top bit of
    /// the index set, the chunk's index above [`SNAP_BITS`] bits, the snap
    /// sequence below. A clone sorts after every chunk of its owner, and
    /// the clones of one chunk sort together by sequence.
    pub const fn clone_of(self, snap: u32) -> Self {
        let index = CLONE_BIT | (self.index << SNAP_BITS) | (snap as u64 & SNAP_SEQ_MAX as u64);
        Self { owner: self.owner, index }
    }

    /// Whether this id names a snapshot clone rather than a chunk.
    pub const fn is_clone(self) -> bool {
        self.index & CLONE_BIT != 0
    }

    /// The chunk a clone belongs to; a chunk is its own head.
    pub const fn head(self) -> Self {
        if self.is_clone() {
            Self { owner: self.owner, index: (self.index & !CLONE_BIT) >> SNAP_BITS }
        } else {
            self
        }
    }

    /// The snap sequence a clone keeps the chunk for; `None` for a chunk.
    pub const fn clone_snap(self) -> Option<u32> {
        if self.is_clone() {
            Some((self.index & SNAP_SEQ_MAX as u64) as u32)
        } else {
            None
        }
    }

    pub fn from_le_bytes(bytes: [u8; Self::ENCODED_LEN]) -> Self {
        let mut owner = [0u8; 8];
        let mut index = [0u8; 8];
        owner.copy_from_slice(&bytes[..8]);
        index.copy_from_slice(&bytes[8..]);
        Self { owner: u64::from_le_bytes(owner), index: u64::from_le_bytes(index) }
    }
}

/// Bits of a clone id's index that hold the snap sequence.
pub const SNAP_BITS: u32 = 24;

/// The largest snap sequence a volume reaches (16.7 million snapshots over
/// its life: one every 15 minutes for 478 years).
pub const SNAP_SEQ_MAX: u32 = (1 << SNAP_BITS) - 1;

/// Marks a clone id's index.
const CLONE_BIT: u64 = 1 << 63;

/// The largest index of a chunk that can have snapshot clones: the index
/// must fit between the clone bit and the sequence (2^39 chunks of 4 MiB,
/// 2 EiB).
pub const SNAPSHOT_INDEX_MAX: u64 = (1 << (63 - SNAP_BITS)) - 1;

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.clone_snap() {
            Some(snap) => write!(f, "{:016x}.{}@{snap}", self.owner, self.head().index),
            None => write!(f, "{:016x}.{}", self.owner, self.index),
        }
    }
}

/// The class of device a disk is, which pools select on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceClass {
    Nvme,
    Ssd,
    Hdd,
}

impl DeviceClass {
    /// The byte used for the class in on-disk formats.
    pub fn to_byte(self) -> u8 {
        match self {
            DeviceClass::Nvme => 0,
            DeviceClass::Ssd => 1,
            DeviceClass::Hdd => 2,
        }
    }

    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(DeviceClass::Nvme),
            1 => Some(DeviceClass::Ssd),
            2 => Some(DeviceClass::Hdd),
            _ => None,
        }
    }
}

impl fmt::Display for DeviceClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceClass::Nvme => "nvme",
            DeviceClass::Ssd => "ssd",
            DeviceClass::Hdd => "hdd",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_id_bytes_round_trip() {
        let id = ChunkId::new(0x0102_0304_0506_0708, 42);
        assert_eq!(ChunkId::from_le_bytes(id.to_le_bytes()), id);
        assert_eq!(id.to_le_bytes()[0], 0x08, "little-endian owner first");
    }

    #[test]
    fn a_clone_id_names_its_chunk_and_sequence_and_sorts_after_every_chunk() {
        let chunk = ChunkId::new(7, SNAPSHOT_INDEX_MAX);
        let clone = chunk.clone_of(SNAP_SEQ_MAX);
        assert!(clone.is_clone() && !chunk.is_clone());
        assert_eq!((clone.head(), clone.clone_snap()), (chunk, Some(SNAP_SEQ_MAX)));
        assert_eq!(ChunkId::new(7, 3).clone_of(5).head(), ChunkId::new(7, 3));
        assert!(ChunkId::new(7, 3).clone_of(1) > ChunkId::new(7, u64::MAX >> 1));
        assert!(ChunkId::new(7, 3).clone_of(9) < ChunkId::new(7, 4).clone_of(1));
        assert_eq!(ChunkId::new(7, 3).clone_of(9).to_string(), "0000000000000007.3@9");
    }

    #[test]
    fn device_class_bytes_round_trip() {
        for c in [DeviceClass::Nvme, DeviceClass::Ssd, DeviceClass::Hdd] {
            assert_eq!(DeviceClass::from_byte(c.to_byte()), Some(c));
        }
        assert_eq!(DeviceClass::from_byte(9), None);
    }
}
