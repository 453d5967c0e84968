//! SM4's key schedule (GB/T 32907-2016, section 7.3): one 128-bit key to 32
//! round keys, shared by every implementation of the rounds.

use zeroize::Zeroize;

use super::soft::tau;

/// Bytes of an SM4 key.
pub const SM4_KEY_BYTES: usize = 16;

/// Rounds of SM4, one round key each.
pub(super) const ROUNDS: usize = 32;

/// The system parameter FK.
const FK: [u32; 4] = [0xa3b1_bac6, 0x56aa_3350, 0x677d_9197, 0xb270_22dc];

/// The fixed parameters CK: byte j of CK[i] is (4i + j) * 7 mod 256.
const CK: [u32; ROUNDS] = fixed_parameters();

/// Which way a block goes through the rounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Direction {
    Encrypt,
    Decrypt,
}

/// The round keys of one SM4 key: in order to encrypt, reversed to decrypt.
/// Both orders are kept so that neither direction reverses them per call.
/// Zeroed on drop.
#[derive(Clone)]
pub(super) struct RoundKeys {
    encrypt: [u32; ROUNDS],
    decrypt: [u32; ROUNDS],
}

impl RoundKeys {
    pub(super) fn expand(key: &[u8; SM4_KEY_BYTES]) -> Self {
        let mut k = [0u32; 4];
        for (i, (word, fk)) in k.iter_mut().zip(FK).enumerate() {
            *word = u32::from_be_bytes([key[4 * i], key[4 * i + 1], key[4 * i + 2], key[4 * i + 3]]) ^ fk;
        }
        let mut encrypt = [0u32; ROUNDS];
        for (rk, ck) in encrypt.iter_mut().zip(CK) {
            let next = k[0] ^ key_linear(tau(k[1] ^ k[2] ^ k[3] ^ ck));
            k = [k[1], k[2], k[3], next];
            *rk = next;
        }
        k.zeroize();
        let mut decrypt = encrypt;
        decrypt.reverse();
        Self { encrypt, decrypt }
    }

    pub(super) fn get(&self, direction: Direction) -> &[u32; ROUNDS] {
        match direction {
            Direction::Encrypt => &self.encrypt,
            Direction::Decrypt => &self.decrypt,
        }
    }
}

impl Drop for RoundKeys {
    fn drop(&mut self) {
        self.encrypt.zeroize();
        self.decrypt.zeroize();
    }
}

/// L', the key schedule's linear map (the rounds use L).
fn key_linear(b: u32) -> u32 {
    b ^ b.rotate_left(13) ^ b.rotate_left(23)
}

const fn fixed_parameters() -> [u32; ROUNDS] {
    let mut ck = [0u32; ROUNDS];
    let mut i = 0;
    while i < ROUNDS {
        let mut j = 0;
        while j < 4 {
            ck[i] = ck[i] << 8 | ((4 * i + j) * 7 % 256) as u32;
            j += 1;
        }
        i += 1;
    }
    ck
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first and last CK of the standard's table.
    #[test]
    fn fixed_parameters_match_the_standard() {
        assert_eq!((CK[0], CK[1], CK[31]), (0x0007_0e15, 0x1c23_2a31, 0x646b_7279));
    }

    /// GB/T 32907-2016, appendix A.1: rk0 and rk31 of key 0123456789abcdeffedcba9876543210.
    #[test]
    fn round_keys_match_the_standard() {
        let key = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10];
        let keys = RoundKeys::expand(&key);
        assert_eq!(keys.get(Direction::Encrypt)[0], 0xf121_86f9);
        assert_eq!(keys.get(Direction::Encrypt)[31], 0x9124_a012);
        assert_eq!(keys.get(Direction::Decrypt)[0], 0x9124_a012);
    }
}
