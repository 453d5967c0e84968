//! The chunk store: a node's disks and the chunks on them.
//!
//! Chunks are addressed by (disk, chunk id); which disk holds a chunk is the
//! placement's decision, not the node's. Each [`DiskStore`] keeps its
//! chunks in fixed-size slots of one file or device (see FORMAT.md).

pub mod disk;
pub mod error;
mod extents;
mod journal;
pub mod open;
pub mod slot;
pub mod snaps;

use std::collections::BTreeMap;

use chuyi_common::ids::DiskId;
use chuyi_common::proto::chunk::DiskStat;

pub use disk::DiskStore;
pub use error::{OpenError, StoreError};
pub use open::{open_disk, open_disk_wrapped, DiskSpec};

/// Every disk of a node.
#[derive(Debug)]
pub struct ChunkStore {
    disks: BTreeMap<DiskId, DiskStore>,
}

impl ChunkStore {
    /// Opens every disk; the node does not start with a disk missing.
    pub async fn open(specs: &[DiskSpec]) -> Result<Self, OpenError> {
        let mut disks = BTreeMap::new();
        for spec in specs {
            disks.insert(spec.id, open_disk(spec).await?);
        }
        Ok(Self { disks })
    }

    pub fn from_disks(disks: impl IntoIterator<Item = DiskStore>) -> Self {
        Self { disks: disks.into_iter().map(|d| (d.id(), d)).collect() }
    }

    pub fn disk(&self, id: DiskId) -> Result<&DiskStore, StoreError> {
        self.disks.get(&id).ok_or(StoreError::NoSuchDisk(id))
    }

    pub fn disks(&self) -> impl Iterator<Item = &DiskStore> {
        self.disks.values()
    }

    pub fn stats(&self) -> Vec<DiskStat> {
        self.disks.values().map(DiskStore::stat).collect()
    }
}
