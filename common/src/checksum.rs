//! Block checksums: crc32c (Castagnoli), hardware-accelerated where the CPU
//! has it (SSE4.2 on x86_64), through the `crc32c` crate.

use crate::limits::BLOCK_SIZE_BYTES;

/// The crc32c of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// The crc32c of `data` following bytes whose crc32c was `crc`: a running
/// checksum over a stream.
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, data)
}

/// The crc32c of one block of zeros: what an unwritten block checks against.
pub fn zero_block_crc() -> u32 {
    static ZEROS: [u8; BLOCK_SIZE_BYTES] = [0; BLOCK_SIZE_BYTES];
    crc32c(&ZEROS)
}

/// Appends the crc32c of each `BLOCK_SIZE_BYTES` block of `data` to `out`.
/// `data.len()` must be a multiple of the block size.
pub fn block_crcs(data: &[u8], out: &mut Vec<u32>) {
    assert_eq!(data.len() % BLOCK_SIZE_BYTES, 0, "block_crcs needs whole blocks");
    out.extend(data.chunks_exact(BLOCK_SIZE_BYTES).map(crc32c));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer() {
        // RFC 3720 B.4: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        // The value storage-node/FORMAT.md gives for an unwritten block.
        assert_eq!(zero_block_crc(), 0x98F9_4189);
    }

    #[test]
    fn block_crcs_match_single() {
        let mut data = vec![0u8; 3 * BLOCK_SIZE_BYTES];
        data[BLOCK_SIZE_BYTES + 7] = 1;
        let mut out = Vec::new();
        block_crcs(&data, &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0], zero_block_crc());
        assert_ne!(out[1], zero_block_crc());
        assert_eq!(out[2], zero_block_crc());
    }
}
