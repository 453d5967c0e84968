//! The byte range a workload covers, laid over a node's chunks the way a
//! volume is: byte `x` is in chunk `x / chunk_size`, at `x % chunk_size`.

use chuyi_common::ids::ChunkId;
use chuyi_common::limits::BLOCK_SIZE_BYTES;
use rand::Rng;

use crate::LoadError;

/// A contiguous region of `size_bytes` split into blocks of `block_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// The owner id of every chunk in the region.
    pub owner: u64,
    pub size_bytes: u64,
    pub chunk_bytes: u64,
    /// The size of one operation, which never crosses a chunk boundary.
    pub block_bytes: u64,
}

/// Where one operation goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub chunk: ChunkId,
    /// Byte offset within the chunk.
    pub offset: u32,
}

impl Region {
    /// A region, refused unless blocks are whole 4 KiB multiples that tile
    /// both the chunk and the region.
    pub fn new(owner: u64, size_bytes: u64, chunk_bytes: u64, block_bytes: u64) -> Result<Self, LoadError> {
        let block = BLOCK_SIZE_BYTES as u64;
        let invalid = |what: String| Err(LoadError::Invalid(what));
        if block_bytes == 0 || !block_bytes.is_multiple_of(block) {
            return invalid(format!("--bs {block_bytes} is not a positive multiple of {block}"));
        }
        if chunk_bytes == 0 || !chunk_bytes.is_multiple_of(block_bytes) || u32::try_from(chunk_bytes).is_err() {
            return invalid(format!("--chunk-size {chunk_bytes} is not a multiple of --bs {block_bytes}"));
        }
        if size_bytes == 0 || !size_bytes.is_multiple_of(block_bytes) {
            return invalid(format!("--size {size_bytes} is not a positive multiple of --bs {block_bytes}"));
        }
        Ok(Self { owner, size_bytes, chunk_bytes, block_bytes })
    }

    /// Blocks in the region.
    pub fn blocks(&self) -> u64 {
        self.size_bytes / self.block_bytes
    }

    /// The chunk and in-chunk offset of region byte `at`.
    pub fn locate(&self, at: u64) -> Target {
        debug_assert!(at < self.size_bytes);
        let offset = at % self.chunk_bytes;
        // The constructor keeps chunk_bytes within u32.
        Target { chunk: ChunkId::new(self.owner, at / self.chunk_bytes), offset: offset as u32 }
    }

    /// A block chosen uniformly at random, with replacement.
    pub fn random_block(&self, rng: &mut impl Rng) -> Target {
        self.locate(rng.random_range(0..self.blocks()) * self.block_bytes)
    }

    /// Bytes from `at` to the next chunk boundary or the region's end,
    /// capped at `max`: the largest write at `at` that stays in one chunk.
    pub fn run_at(&self, at: u64, max: u64) -> u64 {
        let chunk_end = (at / self.chunk_bytes + 1) * self.chunk_bytes;
        max.min(chunk_end - at).min(self.size_bytes - at)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn bytes_map_onto_chunks_like_a_volume() {
        let region = Region::new(9, 1 << 30, 4 * MIB, 4096).expect("valid");
        assert_eq!(region.locate(0), Target { chunk: ChunkId::new(9, 0), offset: 0 });
        assert_eq!(region.locate(4 * MIB + 8192), Target { chunk: ChunkId::new(9, 1), offset: 8192 });
        assert_eq!(region.locate((1 << 30) - 4096).chunk.index, 255);
    }

    #[test]
    fn random_blocks_are_aligned_and_inside() {
        let region = Region::new(1, 16 * MIB, 4 * MIB, 4096).expect("valid");
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..10_000 {
            let t = region.random_block(&mut rng);
            assert!(t.chunk.index < 4 && t.offset.is_multiple_of(4096) && u64::from(t.offset) < 4 * MIB);
        }
    }

    #[test]
    fn runs_stop_at_chunk_and_region_ends() {
        let region = Region::new(1, 6 * MIB, 4 * MIB, 4096).expect("valid");
        assert_eq!(region.run_at(0, MIB), MIB);
        assert_eq!(region.run_at(4 * MIB - 4096, MIB), 4096);
        assert_eq!(region.run_at(6 * MIB - 8192, MIB), 8192);
    }

    #[test]
    fn refuses_blocks_that_do_not_tile() {
        assert!(Region::new(1, MIB, 4 * MIB, 1000).is_err());
        assert!(Region::new(1, MIB, 4 * MIB, 3 * 4096).is_err());
        assert!(Region::new(1, MIB + 4096, 4 * MIB, 8192).is_err());
        assert!(Region::new(1, 0, 4 * MIB, 4096).is_err());
    }
}
