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
//! off, done, and put back.
//!
//! A third, GFNI + AVX-512, takes 16 blocks at once in 512-bit registers and
//! computes the whole S-box in two instructions, `gf2p8affineqb` then
//! `gf2p8affineinvqb` (the maps are in [`super::sbox`]); there is no
//! ShiftRows to undo, L's rotations are `vprold`, and three-way XORs one
//! `vpternlogd`.
//!
//! Table lookups, `aesenclast` and the rest all take the same time whatever
//! the key or data: this path is constant-time, unlike [`super::soft`].

use core::arch::x86_64::{
    __m128i, __m256i, __m512i, _mm256_aesenclast_epi128, _mm256_and_si256, _mm256_broadcastsi128_si256,
    _mm256_castsi256_si128, _mm256_extracti128_si256, _mm256_loadu_si256, _mm256_set1_epi32, _mm256_set1_epi8,
    _mm256_set_m128i, _mm256_setzero_si256, _mm256_shuffle_epi8, _mm256_slli_epi32, _mm256_srli_epi32,
    _mm256_storeu_si256, _mm256_unpackhi_epi32, _mm256_unpackhi_epi64, _mm256_unpacklo_epi32, _mm256_unpacklo_epi64,
    _mm256_xor_si256, _mm512_broadcast_i32x4, _mm512_gf2p8affine_epi64_epi8, _mm512_gf2p8affineinv_epi64_epi8,
    _mm512_loadu_si512, _mm512_rol_epi32, _mm512_set1_epi32, _mm512_set1_epi64, _mm512_shuffle_epi8,
    _mm512_storeu_si512, _mm512_ternarylogic_epi32, _mm512_unpackhi_epi32, _mm512_unpackhi_epi64,
    _mm512_unpacklo_epi32, _mm512_unpacklo_epi64, _mm512_xor_si512, _mm_aesenclast_si128, _mm_loadu_si128,
    _mm_setzero_si128,
};

use super::key_schedule::ROUNDS;
use super::sbox::{
    GFNI_POST_CONSTANT, GFNI_POST_MATRIX, GFNI_PRE_CONSTANT, GFNI_PRE_MATRIX, POST_HI, POST_LO, PRE_HI, PRE_LO,
};
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
    path: Path,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    Aesni,
    Vaes,
    Gfni,
}

impl Engine {
    /// The AES-NI + AVX2 path, where the CPU has both.
    pub(super) fn aesni_avx2() -> Option<Self> {
        let has = std::is_x86_feature_detected!("aes") && std::is_x86_feature_detected!("avx2");
        has.then_some(Self { path: Path::Aesni })
    }

    /// The VAES + AVX2 path, where the CPU has AES-NI, AVX2 and VAES.
    pub(super) fn vaes_avx2() -> Option<Self> {
        let has = Self::aesni_avx2().is_some() && std::is_x86_feature_detected!("vaes");
        has.then_some(Self { path: Path::Vaes })
    }

    /// The GFNI + AVX-512 path, where the CPU has GFNI, AVX-512F and
    /// AVX-512BW (byte shuffles).
    pub(super) fn gfni_avx512() -> Option<Self> {
        let has = std::is_x86_feature_detected!("gfni")
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw");
        has.then_some(Self { path: Path::Gfni })
    }

    /// Runs every block through the rounds, in the order of `round_keys`.
    pub(super) fn crypt_blocks(self, round_keys: &[u32; ROUNDS], blocks: &mut [CipherBlock]) {
        match self.path {
            // SAFETY: only `vaes_avx2` makes a Vaes engine, after seeing
            // the CPU report aes, avx2 and vaes.
            Path::Vaes => unsafe { crypt_vaes(round_keys, blocks) },
            // SAFETY: only `aesni_avx2` makes an Aesni engine, after seeing
            // the CPU report aes and avx2.
            Path::Aesni => unsafe { crypt_aesni(round_keys, blocks) },
            // SAFETY: only `gfni_avx512` makes a Gfni engine, after seeing
            // the CPU report gfni, avx512f and avx512bw.
            Path::Gfni => unsafe { crypt_gfni(round_keys, blocks) },
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

/// Blocks in one group of the GFNI path: 4 registers of 16 words.
const WIDE_BLOCKS: usize = 16;
type WideGroup = [CipherBlock; WIDE_BLOCKS];
type WideWords = [__m512i; 4];

/// The GFNI + AVX-512 path: 16 blocks at a time, the rest through a buffer.
#[target_feature(enable = "gfni,avx512f,avx512bw")]
fn crypt_gfni(round_keys: &[u32; ROUNDS], blocks: &mut [CipherBlock]) {
    let consts = WideConsts::load();
    let (groups, tail) = blocks.as_chunks_mut::<WIDE_BLOCKS>();
    for group in groups {
        crypt_wide_group(round_keys, group, &consts);
    }
    if !tail.is_empty() {
        let mut buf: WideGroup = [[0; 16]; WIDE_BLOCKS];
        buf[..tail.len()].copy_from_slice(tail);
        crypt_wide_group(round_keys, &mut buf, &consts);
        tail.copy_from_slice(&buf[..tail.len()]);
    }
}

/// The 32 rounds on one group: X[i+4] = X[i] ^ L(S(X[i+1] ^ X[i+2] ^ X[i+3] ^ rk)).
#[target_feature(enable = "gfni,avx512f,avx512bw")]
#[inline]
fn crypt_wide_group(round_keys: &[u32; ROUNDS], group: &mut WideGroup, c: &WideConsts) {
    let mut words = wide_load(group, c);
    for &rk in round_keys {
        let [x0, x1, x2, x3] = words;
        let input = xor3(x1, x2, _mm512_xor_si512(x3, _mm512_set1_epi32(rk as i32)));
        let s = sbox_gfni(input, c);
        // L(s) = s ^ rol(s, 2) ^ rol(s, 10) ^ rol(s, 18) ^ rol(s, 24).
        let l = xor3(
            xor3(s, _mm512_rol_epi32::<2>(s), _mm512_rol_epi32::<10>(s)),
            _mm512_rol_epi32::<18>(s),
            _mm512_rol_epi32::<24>(s),
        );
        words = [x1, x2, x3, _mm512_xor_si512(x0, l)];
    }
    wide_store(group, words, c);
}

/// SM4's S-box on every byte: two GFNI instructions.
#[target_feature(enable = "gfni,avx512f,avx512bw")]
#[inline]
fn sbox_gfni(x: __m512i, c: &WideConsts) -> __m512i {
    const PRE: i32 = GFNI_PRE_CONSTANT as i32;
    const POST: i32 = GFNI_POST_CONSTANT as i32;
    _mm512_gf2p8affineinv_epi64_epi8::<POST>(_mm512_gf2p8affine_epi64_epi8::<PRE>(x, c.pre), c.post)
}

/// a ^ b ^ c in one instruction (truth table 0x96).
#[target_feature(enable = "avx512f")]
#[inline]
fn xor3(a: __m512i, b: __m512i, c: __m512i) -> __m512i {
    _mm512_ternarylogic_epi32::<0x96>(a, b, c)
}

/// Sixteen blocks into word-sliced registers, each word read big-endian:
/// row i holds blocks 4i..4i+4, one per 128-bit lane, and the in-lane
/// transpose leaves word j of blocks l, l+4, l+8, l+12 in lane l of words[j].
#[target_feature(enable = "gfni,avx512f,avx512bw")]
#[inline]
fn wide_load(group: &WideGroup, c: &WideConsts) -> WideWords {
    let (rows, _) = group.as_chunks::<4>();
    // SAFETY: each load reads the 64 bytes of one `[CipherBlock; 4]`; loadu
    // needs no alignment.
    let row = |i: usize| _mm512_shuffle_epi8(unsafe { _mm512_loadu_si512(rows[i].as_ptr().cast()) }, c.bswap32);
    wide_transpose([row(0), row(1), row(2), row(3)])
}

/// The inverse of `wide_load`, each block's words in reverse order (R).
#[target_feature(enable = "gfni,avx512f,avx512bw")]
#[inline]
fn wide_store(group: &mut WideGroup, words: WideWords, c: &WideConsts) {
    let out = wide_transpose(words);
    let (rows, _) = group.as_chunks_mut::<4>();
    for (row, value) in rows.iter_mut().zip(out) {
        // SAFETY: writes the 64 bytes of one `[CipherBlock; 4]`; storeu
        // needs no alignment.
        unsafe { _mm512_storeu_si512(row.as_mut_ptr().cast(), _mm512_shuffle_epi8(value, c.bswap128)) }
    }
}

/// `transpose` on 512-bit registers: the 4x4 word matrix of each lane.
#[target_feature(enable = "avx512f")]
#[inline]
fn wide_transpose([r0, r1, r2, r3]: [__m512i; 4]) -> [__m512i; 4] {
    let (t0, t1) = (_mm512_unpacklo_epi32(r0, r1), _mm512_unpackhi_epi32(r0, r1));
    let (t2, t3) = (_mm512_unpacklo_epi32(r2, r3), _mm512_unpackhi_epi32(r2, r3));
    [
        _mm512_unpacklo_epi64(t0, t2),
        _mm512_unpackhi_epi64(t0, t2),
        _mm512_unpacklo_epi64(t1, t3),
        _mm512_unpackhi_epi64(t1, t3),
    ]
}

/// The GFNI path's matrices and shuffles, broadcast to every byte or lane.
struct WideConsts {
    pre: __m512i,
    post: __m512i,
    bswap32: __m512i,
    bswap128: __m512i,
}

impl WideConsts {
    #[target_feature(enable = "gfni,avx512f,avx512bw")]
    #[inline]
    fn load() -> Self {
        // SAFETY: each reads the 16 bytes of a shuffle table; loadu needs
        // no alignment.
        let lane = |t: &Shuffle| unsafe { _mm_loadu_si128(t.as_ptr().cast()) };
        Self {
            pre: _mm512_set1_epi64(GFNI_PRE_MATRIX as i64),
            post: _mm512_set1_epi64(GFNI_POST_MATRIX as i64),
            bswap32: _mm512_broadcast_i32x4(lane(&BSWAP32)),
            bswap128: _mm512_broadcast_i32x4(lane(&BSWAP128)),
        }
    }
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

    /// The GFNI path's two instructions are SM4's S-box for every byte.
    #[test]
    fn gfni_sbox_is_sm4_sbox() {
        if Engine::gfni_avx512().is_none() {
            return;
        }
        for base in (0..=255u8).step_by(64) {
            let input: [u8; 64] = core::array::from_fn(|i| base.wrapping_add(i as u8));
            // SAFETY: gfni_avx512 saw the CPU report what gfni_sbox_of needs.
            let output = unsafe { gfni_sbox_of(input) };
            for (x, y) in input.iter().zip(output) {
                assert_eq!(y, SBOX[usize::from(*x)], "x = {x:#04x}");
            }
        }
    }

    #[target_feature(enable = "gfni,avx512f,avx512bw")]
    fn gfni_sbox_of(input: [u8; 64]) -> [u8; 64] {
        let mut output = [0u8; 64];
        // SAFETY: 64-byte arrays on both sides; loadu/storeu need no alignment.
        unsafe {
            let x = _mm512_loadu_si512(input.as_ptr().cast());
            _mm512_storeu_si512(output.as_mut_ptr().cast(), sbox_gfni(x, &WideConsts::load()));
        }
        output
    }

    fn sub_bytes_of(engine: Engine, input: [u8; 32]) -> [u8; 32] {
        // SAFETY: `engine` came from a constructor that checked the features.
        unsafe {
            if engine.path == Path::Vaes {
                sub_bytes_vaes_of(input)
            } else {
                sub_bytes_aesni_of(input)
            }
        }
    }

    fn sm4_sbox_of(engine: Engine, input: [u8; 32]) -> [u8; 32] {
        // SAFETY: as above.
        unsafe {
            if engine.path == Path::Vaes {
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
