//! SM4's rounds on x86-64 with AES-NI and AVX2, 8 or 16 blocks at once: the
//! only unsafe code of the module.
//!
//! The approach is the one of Linux's `sm4-aesni-avx2` (after libgcrypt and
//! Saarinen's sm4ni): the blocks are word-sliced, so one 256-bit register
//! holds word j of eight blocks and a round is the same instructions for all
//! of them; the S-box is AES's, from `aesenclast` with a zero round key,
//! between two affine maps looked up by nibble with `vpshufb` (see
//! [`super::sbox`]). `aesenclast` also shifts rows; the byte shuffles that L
//! needs for its whole-byte rotations undo that too, for one shuffle more.
//!
//! Two variants differ only in `aesenclast`: with VAES one instruction does
//! both 128-bit lanes of a register; with AES-NI alone each lane is split
//! off, done, and put back. A GFNI variant (`gf2p8affineqb` for both affine
//! maps, `gf2p8affineinvqb` for the inversion) would be shorter still, but
//! no machine here has GFNI to test it on, so there is none.
//!
//! Table lookups, `aesenclast` and the rest all take the same time whatever
//! the key or data: this path is constant-time, unlike [`super::soft`].

use core::arch::x86_64::{
    __m128i, __m256i, _mm256_aesenclast_epi128, _mm256_and_si256, _mm256_broadcastsi128_si256, _mm256_castsi256_si128,
    _mm256_extracti128_si256, _mm256_loadu_si256, _mm256_set1_epi32, _mm256_set1_epi8, _mm256_set_m128i,
    _mm256_setzero_si256, _mm256_shuffle_epi8, _mm256_slli_epi32, _mm256_srli_epi32, _mm256_storeu_si256,
    _mm256_unpackhi_epi32, _mm256_unpackhi_epi64, _mm256_unpacklo_epi32, _mm256_unpacklo_epi64, _mm256_xor_si256,
    _mm_aesenclast_si128, _mm_loadu_si128, _mm_setzero_si128,
};

use super::key_schedule::ROUNDS;
use super::sbox::{POST_HI, POST_LO, PRE_HI, PRE_LO};
use super::CipherBlock;

/// Blocks in one word-sliced group: 4 registers of 8 words.
const GROUP_BLOCKS: usize = 8;
type Group = [CipherBlock; GROUP_BLOCKS];
/// A group in registers: `words[j]` holds word j of each of the 8 blocks.
type Words = [__m256i; 4];

/// Proof that this CPU has what one x86 path needs. Only the constructors
/// below make one, after asking the CPU; `crypt_blocks` relies on that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Engine {
    vaes: bool,
}

impl Engine {
    /// The AES-NI + AVX2 path, where the CPU has both.
    pub(super) fn aesni_avx2() -> Option<Self> {
        let has = std::is_x86_feature_detected!("aes") && std::is_x86_feature_detected!("avx2");
        has.then_some(Self { vaes: false })
    }

    /// The VAES + AVX2 path, where the CPU has AES-NI, AVX2 and VAES.
    pub(super) fn vaes_avx2() -> Option<Self> {
        let has = Self::aesni_avx2().is_some() && std::is_x86_feature_detected!("vaes");
        has.then_some(Self { vaes: true })
    }

    /// Runs every block through the rounds, in the order of `round_keys`.
    pub(super) fn crypt_blocks(self, round_keys: &[u32; ROUNDS], blocks: &mut [CipherBlock]) {
        if self.vaes {
            // SAFETY: `vaes` is true only in an Engine made by `vaes_avx2`,
            // which saw the CPU report aes, avx2 and vaes.
            unsafe { crypt_vaes(round_keys, blocks) }
        } else {
            // SAFETY: every Engine was made by `aesni_avx2` or `vaes_avx2`,
            // which both saw the CPU report aes and avx2.
            unsafe { crypt_aesni(round_keys, blocks) }
        }
    }
}

/// One x86 path: `$name` runs blocks through the rounds with `$sub_bytes`
/// for AES's S-box. A macro rather than a generic function: every function
/// on the way from `$name` to `$sub_bytes` needs `$sub_bytes`'s target
/// features, or LLVM may not inline it (it never inlines VAES code into a
/// function compiled without VAES), and an S-box call per round is slow.
macro_rules! x86_path {
    ($name:ident, $features:literal, $sub_bytes:ident) => {
        /// Two groups at a time where it can (more independent work per
        /// round for the out-of-order core), the rest one group at a time
        /// through a buffer.
        #[target_feature(enable = $features)]
        fn $name(round_keys: &[u32; ROUNDS], blocks: &mut [CipherBlock]) {
            let consts = Consts::load();
            let (groups, tail) = blocks.as_chunks_mut::<GROUP_BLOCKS>();
            let (pairs, single) = groups.as_chunks_mut::<2>();
            for pair in pairs {
                crypt_group_set(round_keys, pair, &consts);
            }
            for leftover in [single.as_flattened_mut(), tail] {
                if leftover.is_empty() {
                    continue;
                }
                let mut buf: Group = [[0; 16]; GROUP_BLOCKS];
                buf[..leftover.len()].copy_from_slice(leftover);
                crypt_group_set(round_keys, core::array::from_mut(&mut buf), &consts);
                leftover.copy_from_slice(&buf[..leftover.len()]);
            }

            #[target_feature(enable = $features)]
            #[inline]
            fn crypt_group_set<const N: usize>(round_keys: &[u32; ROUNDS], groups: &mut [Group; N], consts: &Consts) {
                let mut states: [Words; N] = core::array::from_fn(|i| load(&groups[i], consts));
                // Four rounds per iteration bring the window of words back
                // to where it started, so the rotation costs no moves.
                for quad in round_keys.as_chunks::<4>().0 {
                    for &rk in quad {
                        for words in &mut states {
                            let shifted = $sub_bytes(round_input(words, rk, consts));
                            *words = round_output(words, shifted, consts);
                        }
                    }
                }
                for (group, words) in groups.iter_mut().zip(states) {
                    store(group, words, consts);
                }
            }
        }
    };
}

x86_path!(crypt_vaes, "aes,avx2,vaes", sub_bytes_vaes);
x86_path!(crypt_aesni, "aes,avx2", sub_bytes_aesni);

/// AES's SubBytes and ShiftRows on both 128-bit lanes: `vaesenclast` with a
/// zero round key.
#[target_feature(enable = "aes,avx2,vaes")]
#[inline]
fn sub_bytes_vaes(x: __m256i) -> __m256i {
    _mm256_aesenclast_epi128(x, _mm256_setzero_si256())
}

/// As `sub_bytes_vaes`, one 128-bit lane at a time.
#[target_feature(enable = "aes,avx2")]
#[inline]
fn sub_bytes_aesni(x: __m256i) -> __m256i {
    let low = _mm_aesenclast_si128(_mm256_castsi256_si128(x), _mm_setzero_si128());
    let high = _mm_aesenclast_si128(_mm256_extracti128_si256::<1>(x), _mm_setzero_si128());
    _mm256_set_m128i(high, low)
}

/// A round, up to AES's S-box: pre(X[i+1] ^ X[i+2] ^ X[i+3] ^ rk).
#[target_feature(enable = "aes,avx2")]
#[inline]
fn round_input(words: &Words, rk: u32, consts: &Consts) -> __m256i {
    let [_, x1, x2, x3] = *words;
    let input = _mm256_xor_si256(_mm256_xor_si256(x1, x2), _mm256_xor_si256(x3, _mm256_set1_epi32(rk as i32)));
    affine(input, consts.pre_lo, consts.pre_hi, consts.low_nibbles)
}

/// The rest of the round from AES's S-box output (in ShiftRows order):
/// X[i+4] = X[i] ^ L(post(..)), and the window of words moves on.
#[target_feature(enable = "aes,avx2")]
#[inline]
fn round_output(words: &Words, aes_sbox_out: __m256i, consts: &Consts) -> Words {
    let [x0, x1, x2, x3] = *words;
    let shifted = affine(aes_sbox_out, consts.post_lo, consts.post_hi, consts.low_nibbles);
    [x1, x2, x3, _mm256_xor_si256(x0, linear(shifted, consts))]
}

/// An affine map on every byte: the low nibble's image XOR the high nibble's.
#[target_feature(enable = "aes,avx2")]
#[inline]
fn affine(x: __m256i, lo_table: __m256i, hi_table: __m256i, low_nibbles: __m256i) -> __m256i {
    let lo = _mm256_and_si256(x, low_nibbles);
    let hi = _mm256_and_si256(_mm256_srli_epi32::<4>(x), low_nibbles);
    _mm256_xor_si256(_mm256_shuffle_epi8(lo_table, lo), _mm256_shuffle_epi8(hi_table, hi))
}

/// L(b) = b ^ rol(b, 2) ^ rol(b, 10) ^ rol(b, 18) ^ rol(b, 24)
///      = b ^ rol(b, 24) ^ rol(b ^ rol(b, 8) ^ rol(b, 16), 2),
/// for b given in ShiftRows order: each shuffle both unshifts and rotates.
#[target_feature(enable = "aes,avx2")]
#[inline]
fn linear(shifted: __m256i, consts: &Consts) -> __m256i {
    let b = _mm256_shuffle_epi8(shifted, consts.unshift[0]);
    let rol8 = _mm256_shuffle_epi8(shifted, consts.unshift[1]);
    let rol16 = _mm256_shuffle_epi8(shifted, consts.unshift[2]);
    let rol24 = _mm256_shuffle_epi8(shifted, consts.unshift[3]);
    let t = _mm256_xor_si256(_mm256_xor_si256(b, rol8), rol16);
    let rol2_t = _mm256_xor_si256(_mm256_slli_epi32::<2>(t), _mm256_srli_epi32::<30>(t));
    _mm256_xor_si256(_mm256_xor_si256(b, rol24), rol2_t)
}

/// Eight blocks into word-sliced registers, each word read big-endian.
#[target_feature(enable = "aes,avx2")]
#[inline]
fn load(group: &Group, consts: &Consts) -> Words {
    let (pairs, _) = group.as_chunks::<2>();
    // SAFETY: each load reads the 32 bytes of one `[CipherBlock; 2]`; loadu
    // needs no alignment.
    let row = |i: usize| _mm256_shuffle_epi8(unsafe { _mm256_loadu_si256(pairs[i].as_ptr().cast()) }, consts.bswap32);
    transpose([row(0), row(1), row(2), row(3)])
}

/// The inverse of `load`, writing each block's words in reverse order, as
/// SM4's last step (R) wants.
#[target_feature(enable = "aes,avx2")]
#[inline]
fn store(group: &mut Group, words: Words, consts: &Consts) {
    let rows = transpose(words);
    let (pairs, _) = group.as_chunks_mut::<2>();
    for (pair, row) in pairs.iter_mut().zip(rows) {
        // SAFETY: writes the 32 bytes of one `[CipherBlock; 2]`; storeu needs no
        // alignment.
        unsafe { _mm256_storeu_si256(pair.as_mut_ptr().cast(), _mm256_shuffle_epi8(row, consts.bswap128)) }
    }
}

/// Transposes the 4x4 matrix of 32-bit words in each 128-bit lane: rows of
/// blocks to rows of words and back. Lane 0 of row i holds block 2i, lane 1
/// block 2i+1, so words[j] lane 0 holds word j of blocks 0, 2, 4, 6.
#[target_feature(enable = "aes,avx2")]
#[inline]
fn transpose([r0, r1, r2, r3]: [__m256i; 4]) -> [__m256i; 4] {
    let (t0, t1) = (_mm256_unpacklo_epi32(r0, r1), _mm256_unpackhi_epi32(r0, r1));
    let (t2, t3) = (_mm256_unpacklo_epi32(r2, r3), _mm256_unpackhi_epi32(r2, r3));
    [
        _mm256_unpacklo_epi64(t0, t2),
        _mm256_unpackhi_epi64(t0, t2),
        _mm256_unpacklo_epi64(t1, t3),
        _mm256_unpackhi_epi64(t1, t3),
    ]
}

/// Tables and shuffles, each broadcast to both 128-bit lanes.
struct Consts {
    low_nibbles: __m256i,
    pre_lo: __m256i,
    pre_hi: __m256i,
    post_lo: __m256i,
    post_hi: __m256i,
    /// Undo ShiftRows, then rotate each word left by 0, 8, 16, 24 bits.
    unshift: [__m256i; 4],
    bswap32: __m256i,
    bswap128: __m256i,
}

impl Consts {
    #[target_feature(enable = "aes,avx2")]
    #[inline]
    fn load() -> Self {
        Self {
            low_nibbles: _mm256_set1_epi8(0x0f),
            pre_lo: broadcast(&PRE_LO),
            pre_hi: broadcast(&PRE_HI),
            post_lo: broadcast(&POST_LO),
            post_hi: broadcast(&POST_HI),
            unshift: UNSHIFT_ROTATE.each_ref().map(|t| broadcast(t)),
            bswap32: broadcast(&BSWAP32),
            bswap128: broadcast(&BSWAP128),
        }
    }
}

#[target_feature(enable = "aes,avx2")]
#[inline]
fn broadcast(bytes: &[u8; 16]) -> __m256i {
    // SAFETY: reads the 16 bytes of `bytes`; loadu needs no alignment.
    let lane: __m128i = unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) };
    _mm256_broadcastsi128_si256(lane)
}

/// `vpshufb` indices: out[p] = in[table[p]].
type Shuffle = [u8; 16];

const BSWAP32: Shuffle = [3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12];
const BSWAP128: Shuffle = [15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0];
const UNSHIFT_ROTATE: [Shuffle; 4] = [unshift_rotate(0), unshift_rotate(1), unshift_rotate(2), unshift_rotate(3)];

/// Undoes AES's ShiftRows, then rotates each 32-bit word left by `bytes`.
///
/// In AES's column-major state, byte p = row + 4·column, and ShiftRows
/// moves row r left by r columns: out[r + 4c] = in[r + 4((c + r) mod 4)].
/// So in[r + 4c] = out[r + 4((c - r) mod 4)]. A left rotation by k bytes of
/// a little-endian word takes byte b of the result from byte (b - k) mod 4.
const fn unshift_rotate(bytes: usize) -> Shuffle {
    let mut table = [0u8; 16];
    let mut p = 0;
    while p < 16 {
        let rotated_from = p / 4 * 4 + (p % 4 + 4 - bytes) % 4;
        let (row, column) = (rotated_from % 4, rotated_from / 4);
        table[p] = (row + 4 * ((column + 4 - row) % 4)) as u8;
        p += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::super::sbox::{AES_SBOX, SBOX};
    use super::*;

    fn engines() -> Vec<Engine> {
        [Engine::aesni_avx2(), Engine::vaes_avx2()].into_iter().flatten().collect()
    }

    /// The byte moves are what the comment says: ShiftRows undone is the
    /// textbook inverse (FIPS-197, 5.3.1), and a rotation by 0 adds nothing.
    #[test]
    fn unshift_is_inverse_shift_rows() {
        assert_eq!(UNSHIFT_ROTATE[0], [0, 13, 10, 7, 4, 1, 14, 11, 8, 5, 2, 15, 12, 9, 6, 3]);
    }

    /// `aesenclast` with a zero key is ShiftRows(SubBytes(x)), on both
    /// variants, for every byte value in every position.
    #[test]
    fn aesenclast_is_shifted_aes_sbox() {
        for engine in engines() {
            for base in (0..=255u8).step_by(32) {
                let input: [u8; 32] = core::array::from_fn(|i| base.wrapping_add(i as u8));
                let output = sub_bytes_of(engine, input);
                for lane in 0..2 {
                    for p in 0..16 {
                        // ShiftRows moves row r left by r columns (FIPS-197, 5.1.2).
                        let (row, column) = (p % 4, p / 4);
                        let from = row + 4 * ((column + row) % 4);
                        let expected = AES_SBOX[usize::from(input[16 * lane + from])];
                        assert_eq!(output[16 * lane + p], expected, "{engine:?} lane {lane} byte {p}");
                    }
                }
            }
        }
    }

    /// The S-box as the rounds compute it (affine, aesenclast, affine,
    /// unshift), for all 256 bytes, is SM4's.
    #[test]
    fn round_sbox_is_sm4_sbox() {
        for engine in engines() {
            for base in (0..=255u8).step_by(32) {
                let input: [u8; 32] = core::array::from_fn(|i| base.wrapping_add(i as u8));
                let output = sm4_sbox_of(engine, input);
                for (i, (x, y)) in input.iter().zip(output).enumerate() {
                    assert_eq!(y, SBOX[usize::from(*x)], "{engine:?} byte {i}");
                }
            }
        }
    }

    fn sub_bytes_of(engine: Engine, input: [u8; 32]) -> [u8; 32] {
        // SAFETY: `engine` came from a constructor that checked the features.
        unsafe {
            if engine.vaes {
                sub_bytes_vaes_of(input)
            } else {
                sub_bytes_aesni_of(input)
            }
        }
    }

    fn sm4_sbox_of(engine: Engine, input: [u8; 32]) -> [u8; 32] {
        // SAFETY: as above.
        unsafe {
            if engine.vaes {
                sm4_sbox_vaes(input)
            } else {
                sm4_sbox_aesni(input)
            }
        }
    }

    #[target_feature(enable = "aes,avx2,vaes")]
    fn sub_bytes_vaes_of(input: [u8; 32]) -> [u8; 32] {
        apply(input, |x| sub_bytes_vaes(x))
    }

    #[target_feature(enable = "aes,avx2")]
    fn sub_bytes_aesni_of(input: [u8; 32]) -> [u8; 32] {
        apply(input, |x| sub_bytes_aesni(x))
    }

    #[target_feature(enable = "aes,avx2,vaes")]
    fn sm4_sbox_vaes(input: [u8; 32]) -> [u8; 32] {
        apply(input, |x| sm4_sbox(x, |y| sub_bytes_vaes(y)))
    }

    #[target_feature(enable = "aes,avx2")]
    fn sm4_sbox_aesni(input: [u8; 32]) -> [u8; 32] {
        apply(input, |x| sm4_sbox(x, |y| sub_bytes_aesni(y)))
    }

    #[target_feature(enable = "aes,avx2")]
    fn sm4_sbox(x: __m256i, sub_bytes: impl Fn(__m256i) -> __m256i) -> __m256i {
        let c = Consts::load();
        let shifted =
            affine(sub_bytes(affine(x, c.pre_lo, c.pre_hi, c.low_nibbles)), c.post_lo, c.post_hi, c.low_nibbles);
        _mm256_shuffle_epi8(shifted, c.unshift[0])
    }

    #[target_feature(enable = "aes,avx2")]
    fn apply(input: [u8; 32], f: impl Fn(__m256i) -> __m256i) -> [u8; 32] {
        let mut output = [0u8; 32];
        // SAFETY: 32-byte arrays on both sides; loadu/storeu need no alignment.
        unsafe {
            let x = _mm256_loadu_si256(input.as_ptr().cast());
            _mm256_storeu_si256(output.as_mut_ptr().cast(), f(x));
        }
        output
    }
}
