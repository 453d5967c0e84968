//! SM4's rounds in portable Rust, one block at a time: the fallback where
//! the CPU lacks AES-NI and AVX2, and the reference the x86 path is tested
//! against.
//!
//! It looks bytes up in the 256-byte S-box rather than in four 1 KiB
//! "T-tables" (S-box and L merged), which would be about twice as fast: the
//! smaller table spans fewer cache lines, so less of the key leaks through
//! cache timing. Neither is constant-time; the x86 path is.

use super::key_schedule::ROUNDS;
use super::sbox::SBOX;
use super::CipherBlock;

/// Encrypts or decrypts (by the order of `round_keys`) every block in place.
pub(super) fn crypt_blocks(round_keys: &[u32; ROUNDS], blocks: &mut [CipherBlock]) {
    for block in blocks {
        crypt_block(round_keys, block);
    }
}

fn crypt_block(round_keys: &[u32; ROUNDS], block: &mut CipherBlock) {
    let word = |i: usize| u32::from_be_bytes([block[4 * i], block[4 * i + 1], block[4 * i + 2], block[4 * i + 3]]);
    let mut x = [word(0), word(1), word(2), word(3)];
    for &rk in round_keys {
        let next = x[0] ^ round_linear(tau(x[1] ^ x[2] ^ x[3] ^ rk));
        x = [x[1], x[2], x[3], next];
    }
    // The output is the last four words in reverse order (the standard's R).
    for (i, w) in x.iter().rev().enumerate() {
        block[4 * i..4 * i + 4].copy_from_slice(&w.to_be_bytes());
    }
}

/// τ: the S-box on each byte of a word.
pub(super) fn tau(a: u32) -> u32 {
    u32::from_be_bytes(a.to_be_bytes().map(|b| SBOX[usize::from(b)]))
}

/// L, the rounds' linear map.
fn round_linear(b: u32) -> u32 {
    b ^ b.rotate_left(2) ^ b.rotate_left(10) ^ b.rotate_left(18) ^ b.rotate_left(24)
}
