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

    pub fn from_le_bytes(bytes: [u8; Self::ENCODED_LEN]) -> Self {
        let mut owner = [0u8; 8];
        let mut index = [0u8; 8];
        owner.copy_from_slice(&bytes[..8]);
        index.copy_from_slice(&bytes[8..]);
        Self { owner: u64::from_le_bytes(owner), index: u64::from_le_bytes(index) }
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}.{}", self.owner, self.index)
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
    fn device_class_bytes_round_trip() {
        for c in [DeviceClass::Nvme, DeviceClass::Ssd, DeviceClass::Hdd] {
            assert_eq!(DeviceClass::from_byte(c.to_byte()), Some(c));
        }
        assert_eq!(DeviceClass::from_byte(9), None);
    }
}
