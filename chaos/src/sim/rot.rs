//! Rot: one bit flipped in a block of workload data on a node's disk file,
//! as a disk returning garbage would leave it. The node's checksum must
//! catch it and the block be repaired from its other replica.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rand::rngs::StdRng;
use rand::Rng;

use crate::workload::{decode, BLOCK};

/// Random blocks tried before giving up: the disk file is mostly unused.
const PROBES: u32 = 20_000;
/// Blocks one rot flips. The workload rewrites each block every few
/// seconds, which heals a flipped one silently; of many, some are read
/// (or scrubbed) first and so take the checksum-and-repair path.
pub const ROT_BLOCKS: usize = 16;
/// Where in the block the bit flips: inside the data, past any header.
const FLIP_AT: u64 = 100;

/// Flips a bit in up to [`ROT_BLOCKS`] blocks of `disk` that hold
/// workload writes, chosen by `rng`; their offsets.
pub fn rot(disk: &Path, rng: &mut StdRng) -> io::Result<Vec<u64>> {
    let mut flipped = Vec::new();
    while flipped.len() < ROT_BLOCKS {
        // A flipped block no longer reads as a write, so none is picked twice.
        match flip_a_data_block(disk, rng)? {
            Some(at) => flipped.push(at),
            None => break,
        }
    }
    Ok(flipped)
}

/// Flips a bit in a block of `disk` that holds a workload write, chosen by
/// `rng`; its offset, or `None` when none was found.
fn flip_a_data_block(disk: &Path, rng: &mut StdRng) -> io::Result<Option<u64>> {
    let file = std::fs::OpenOptions::new().read(true).write(true).open(disk)?;
    let blocks = file.metadata()?.len() / BLOCK;
    if blocks == 0 {
        return Ok(None);
    }
    let mut data = vec![0u8; BLOCK as usize];
    for _ in 0..PROBES {
        let at = rng.random_range(0..blocks) * BLOCK;
        file.read_exact_at(&mut data, at)?;
        if holds_a_write(&data) {
            flip(&file, at + FLIP_AT)?;
            return Ok(Some(at));
        }
    }
    Ok(None)
}

/// A workload block: its own address repeated with a sequence above 0.
fn holds_a_write(data: &[u8]) -> bool {
    let Some(head) = data.get(..8) else { return false };
    let mut word = [0u8; 8];
    word.copy_from_slice(head);
    decode(u64::from_le_bytes(word), data).is_some_and(|seq| seq > 0)
}

fn flip(file: &File, at: u64) -> io::Result<()> {
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, at)?;
    byte[0] ^= 0x10;
    file.write_all_at(&byte, at)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::workload::content;

    #[test]
    fn a_written_block_is_found_and_flipped_and_nothing_else_is_touched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("disk.img");
        let mut image = vec![0u8; 64 * BLOCK as usize];
        image[(17 * BLOCK) as usize..(18 * BLOCK) as usize].copy_from_slice(&content(5, 9));
        std::fs::write(&path, &image).expect("write image");
        let at = flip_a_data_block(&path, &mut StdRng::seed_from_u64(1)).expect("flip");
        assert_eq!(at, Some(17 * BLOCK));
        let after = std::fs::read(&path).expect("read image");
        let changed: Vec<usize> = (0..image.len()).filter(|&i| image[i] != after[i]).collect();
        assert_eq!(changed, vec![(17 * BLOCK + FLIP_AT) as usize]);
        assert_eq!(decode(5, &after[(17 * BLOCK) as usize..(18 * BLOCK) as usize]), None);
    }

    #[test]
    fn a_disk_of_zeros_has_nothing_to_rot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("disk.img");
        std::fs::write(&path, vec![0u8; 8 * BLOCK as usize]).expect("write image");
        assert_eq!(flip_a_data_block(&path, &mut StdRng::seed_from_u64(1)).expect("probe"), None);
    }
}
