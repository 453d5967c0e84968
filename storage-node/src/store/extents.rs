//! Which bytes of a chunk hold data: what NBD's `base:allocation` reports,
//! so that copying tools skip what reads as zeros.

use chuyi_common::checksum::zero_block_crc;
use chuyi_common::ids::ChunkId;
use chuyi_common::limits::BLOCK_SIZE_BYTES;
use chuyi_common::proto::chunk::Extent;

use super::disk::DiskStore;
use super::error::StoreError;

const BLOCK: u64 = BLOCK_SIZE_BYTES as u64;

impl DiskStore {
    /// The data and zero runs of `[offset, offset + len)` of `chunk`, in
    /// order. A block whose crc32c is the zero block's is only a candidate:
    /// it is read to confirm, because a data block whose crc32c collides
    /// would otherwise pass for zeros and be skipped by a copy. Candidates
    /// are mostly punched holes, which read without touching the device.
    pub async fn extents(&self, chunk: ChunkId, offset: u64, len: u64) -> Result<Vec<Extent>, StoreError> {
        self.check_op(offset, len)?;
        let end = offset + len;
        let mut runs = Runs::default();
        let Some(crcs) = self.block_crcs(chunk).await? else {
            runs.push(len, false);
            return Ok(runs.0);
        };
        let zero = zero_block_crc();
        let maybe_zero = |at: u64| crcs.get((at / BLOCK) as usize).is_some_and(|&c| c == zero);
        let mut at = offset;
        while at < end {
            let candidate = maybe_zero(at);
            let mut run_end = at;
            while run_end < end && maybe_zero(run_end) == candidate {
                run_end = ((run_end / BLOCK + 1) * BLOCK).min(end);
            }
            if candidate {
                let (bytes, _) = self.read(chunk, at, run_end - at).await?;
                let mut piece_at = at;
                for piece in block_pieces(at, &bytes) {
                    runs.push(piece.len() as u64, piece.iter().any(|&b| b != 0));
                    piece_at += piece.len() as u64;
                }
                debug_assert_eq!(piece_at, run_end);
            } else {
                runs.push(run_end - at, true);
            }
            at = run_end;
        }
        Ok(runs.0)
    }
}

/// `bytes` (which start at chunk offset `at`) cut at block boundaries.
fn block_pieces(at: u64, bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let first = ((BLOCK - at % BLOCK) as usize).min(bytes.len());
    let (head, rest) = bytes.split_at(first);
    std::iter::once(head).filter(|h| !h.is_empty()).chain(rest.chunks(BLOCK as usize))
}

/// Extents built up in order, neighbours of one kind merged.
#[derive(Debug, Default)]
struct Runs(Vec<Extent>);

impl Runs {
    fn push(&mut self, len: u64, data: bool) {
        if len == 0 {
            return;
        }
        match self.0.last_mut() {
            Some(last) if last.data == data => last.len += len as u32,
            _ => self.0.push(Extent { len: len as u32, data }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_merge_neighbours_of_one_kind() {
        let mut runs = Runs::default();
        runs.push(4096, false);
        runs.push(100, false);
        runs.push(0, true);
        runs.push(8, true);
        runs.push(8, false);
        assert_eq!(
            runs.0,
            vec![Extent { len: 4196, data: false }, Extent { len: 8, data: true }, Extent { len: 8, data: false }]
        );
    }

    #[test]
    fn pieces_cut_at_block_boundaries() {
        let bytes = vec![0u8; 10_000];
        let lens: Vec<usize> = block_pieces(4000, &bytes).map(<[u8]>::len).collect();
        assert_eq!(lens, vec![96, 4096, 4096, 1712]);
        let lens: Vec<usize> = block_pieces(8192, &bytes[..4096]).map(<[u8]>::len).collect();
        assert_eq!(lens, vec![4096]);
    }
}
