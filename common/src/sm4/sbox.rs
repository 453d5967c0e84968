//! The SM4 S-box, and the two affine maps that turn AES's S-box into it.
//!
//! Both S-boxes are an inversion in GF(2^8) between affine maps over GF(2),
//! each in its own representation of the field (GB/T 32907's S-box was shown
//! to be built this way after publication; the tests check every entry):
//!
//! ```text
//! SM4: S(x) = A·inv_f(A·x ⊕ 0xd3) ⊕ 0xd3    f = x^8+x^7+x^6+x^5+x^4+x^2+1, row i of A = rotl(0xa7, i)
//! AES: S(y) = B·inv_g(y) ⊕ 0x63             g = x^8+x^4+x^3+x+1,           row i of B = rotl(0xf1, i)
//! ```
//!
//! (row i of a matrix is the mask of input bits whose parity is output bit i.)
//! The two fields are isomorphic: φ sends x^i to β^i, where β is a root of f
//! in AES's field (0x23, the smallest of its eight), and φ(inv_f(z)) =
//! inv_g(φ(z)). Substituting inv_g = B⁻¹·(S_aes ⊕ 0x63) gives
//!
//! ```text
//! S_sm4(x) = post(S_aes(pre(x)))    pre(x) = φ(A·x ⊕ 0xd3)    post(z) = A·φ⁻¹·B⁻¹·(z ⊕ 0x63) ⊕ 0xd3
//! ```
//!
//! Being affine, `pre` and `post` are each the XOR of two 16-entry tables,
//! one looked up by the low nibble and one by the high nibble: exactly what
//! one `vpshufb` does for 32 bytes at once. The x86 path applies `pre`, lets
//! `aesenclast` apply S_aes, then applies `post`.
//!
//! With GFNI the maps need no tables: `gf2p8affineqb` applies an 8×8 bit
//! matrix and a constant to every byte, and `gf2p8affineinvqb` does the
//! same after inverting the byte in AES's field, so
//!
//! ```text
//! S_sm4(x) = A·φ⁻¹·inv_g(φ·A·x ⊕ φ(0xd3)) ⊕ 0xd3
//!          = gf2p8affineinvqb(gf2p8affineqb(x, φ·A, φ(0xd3)), A·φ⁻¹, 0xd3)
//! ```
//!
//! (the inversions commute with φ, and inv_g(0) = 0 as inv_f(0) = 0).
//!
//! Everything here is computed at compile time from the definitions above,
//! rather than transcribed: the numbers say where they come from.

/// The 256 images of a `const fn(u8) -> u8` (const fns cannot call
/// function pointers, so this is a macro).
macro_rules! table {
    ($f:expr) => {{
        let mut out = [0u8; 256];
        let mut x = 0;
        while x < 256 {
            out[x] = $f(x as u8);
            x += 1;
        }
        out
    }};
}

/// SM4's S-box (GB/T 32907-2016, table 1).
pub(super) const SBOX: [u8; 256] = sm4_sbox();

/// `pre`, split by nibble: pre(x) = PRE_LO[x & 15] ^ PRE_HI[x >> 4].
pub(super) const PRE_LO: [u8; 16] = nibble_table(&PRE, 0);
pub(super) const PRE_HI: [u8; 16] = nibble_table(&PRE, 4);

/// `post`, split by nibble: post(z) = POST_LO[z & 15] ^ POST_HI[z >> 4].
pub(super) const POST_LO: [u8; 16] = nibble_table(&POST, 0);
pub(super) const POST_HI: [u8; 16] = nibble_table(&POST, 4);

/// The GFNI form: `gf2p8affineqb` by [`GFNI_PRE_MATRIX`] with
/// [`GFNI_PRE_CONSTANT`], then `gf2p8affineinvqb` by [`GFNI_POST_MATRIX`]
/// with [`GFNI_POST_CONSTANT`], is SM4's S-box.
pub(super) const GFNI_PRE_MATRIX: u64 = gfni_matrix(&table!(pre_linear));
pub(super) const GFNI_PRE_CONSTANT: u8 = phi(SM4_CONSTANT);
pub(super) const GFNI_POST_MATRIX: u64 = gfni_matrix(&table!(post_linear));
pub(super) const GFNI_POST_CONSTANT: u8 = SM4_CONSTANT;

const PRE: [u8; 256] = table!(pre);
const POST: [u8; 256] = table!(post);
const PHI_INV: [u8; 256] = invert(&table!(phi));
const AES_AFFINE_INV: [u8; 256] = invert(&table!(aes_affine_linear));

/// SM4's field polynomial f, and AES's g, with the x^8 term.
const SM4_POLY: u16 = 0x1f5;
const AES_POLY: u16 = 0x11b;
const SM4_AFFINE: [u8; 8] = circulant(0xa7);
const SM4_CONSTANT: u8 = 0xd3;
const AES_AFFINE: [u8; 8] = circulant(0xf1);
const AES_CONSTANT: u8 = 0x63;
/// A root of f in AES's field.
const BETA: u8 = 0x23;

const _: () = assert!(sm4_poly_at(BETA) == 0, "BETA is a root of f");

/// f(b), computed in AES's field.
const fn sm4_poly_at(b: u8) -> u8 {
    let mut sum = 0;
    let mut i = 0;
    while i <= 8 {
        if SM4_POLY >> i & 1 == 1 {
            sum ^= gf_pow(b, i, AES_POLY);
        }
        i += 1;
    }
    sum
}

const fn sm4_sbox() -> [u8; 256] {
    let mut sbox = [0u8; 256];
    let mut x = 0;
    while x < 256 {
        let inner = linear(&SM4_AFFINE, x as u8) ^ SM4_CONSTANT;
        sbox[x] = linear(&SM4_AFFINE, gf_inv(inner, SM4_POLY)) ^ SM4_CONSTANT;
        x += 1;
    }
    sbox
}

const fn pre(x: u8) -> u8 {
    phi(linear(&SM4_AFFINE, x) ^ SM4_CONSTANT)
}

const fn post(z: u8) -> u8 {
    let in_sm4_field = PHI_INV[AES_AFFINE_INV[(z ^ AES_CONSTANT) as usize] as usize];
    linear(&SM4_AFFINE, in_sm4_field) ^ SM4_CONSTANT
}

/// φ·A: `pre` without its constant.
const fn pre_linear(x: u8) -> u8 {
    phi(linear(&SM4_AFFINE, x))
}

/// A·φ⁻¹: the linear map after the inversion in AES's field.
const fn post_linear(w: u8) -> u8 {
    linear(&SM4_AFFINE, PHI_INV[w as usize])
}

/// A linear map on bytes as GFNI's 64-bit matrix operand: byte 7 - i of
/// the matrix is the mask of input bits whose parity is output bit i
/// (Intel SDM, GF2P8AFFINEQB).
const fn gfni_matrix(map: &[u8; 256]) -> u64 {
    let mut matrix = 0u64;
    let mut i = 0;
    while i < 8 {
        let mut row = 0u8;
        let mut j = 0;
        while j < 8 {
            row |= ((map[1 << j] >> i) & 1) << j;
            j += 1;
        }
        matrix |= (row as u64) << (8 * (7 - i));
        i += 1;
    }
    matrix
}

/// The field isomorphism: bit i of `x` stands for β^i.
const fn phi(x: u8) -> u8 {
    let mut image = 0;
    let mut i = 0;
    while i < 8 {
        if x >> i & 1 == 1 {
            image ^= gf_pow(BETA, i, AES_POLY);
        }
        i += 1;
    }
    image
}

const fn aes_affine_linear(y: u8) -> u8 {
    linear(&AES_AFFINE, y)
}

/// AES's S-box, from the same definitions; the tests compare it with
/// `aesenclast` and check that post(S_aes(pre(x))) is SM4's S-box.
#[cfg(test)]
pub(super) const AES_SBOX: [u8; 256] = aes_sbox();

#[cfg(test)]
const fn aes_sbox() -> [u8; 256] {
    let mut sbox = [0u8; 256];
    let mut y = 0;
    while y < 256 {
        sbox[y] = linear(&AES_AFFINE, gf_inv(y as u8, AES_POLY)) ^ AES_CONSTANT;
        y += 1;
    }
    sbox
}

/// Rows rotl(base, i): the circulant matrices both S-boxes use.
const fn circulant(base: u8) -> [u8; 8] {
    let mut rows = [0u8; 8];
    let mut i = 0;
    while i < 8 {
        rows[i] = base.rotate_left(i as u32);
        i += 1;
    }
    rows
}

/// The matrix with these rows times `x`, over GF(2).
const fn linear(rows: &[u8; 8], x: u8) -> u8 {
    let mut out = 0;
    let mut i = 0;
    while i < 8 {
        out |= (((rows[i] & x).count_ones() & 1) as u8) << i;
        i += 1;
    }
    out
}

/// Product in GF(2^8) modulo `poly`.
const fn gf_mul(mut a: u8, mut b: u8, poly: u16) -> u8 {
    let mut product = 0u8;
    while b != 0 {
        if b & 1 == 1 {
            product ^= a;
        }
        let carry = a & 0x80 != 0;
        a <<= 1;
        if carry {
            a ^= (poly & 0xff) as u8;
        }
        b >>= 1;
    }
    product
}

const fn gf_pow(base: u8, exponent: u32, poly: u16) -> u8 {
    let mut power = 1;
    let mut i = 0;
    while i < exponent {
        power = gf_mul(power, base, poly);
        i += 1;
    }
    power
}

/// x^254, the inverse of x in GF(2^8), with 0 for 0 as both S-boxes define.
const fn gf_inv(x: u8, poly: u16) -> u8 {
    gf_pow(x, 254, poly)
}

/// The inverse of a bijection given as a table; fails compilation if it is none.
const fn invert(forward: &[u8; 256]) -> [u8; 256] {
    let mut inverse = [0u8; 256];
    let mut seen = [false; 256];
    let mut x = 0;
    while x < 256 {
        let y = forward[x] as usize;
        assert!(!seen[y], "not a bijection");
        seen[y] = true;
        inverse[y] = x as u8;
        x += 1;
    }
    inverse
}

/// The 16 images of one nibble of an affine map: with the constant in the
/// low table (shift 0), without it in the high table (shift 4).
const fn nibble_table(affine: &[u8; 256], shift: u32) -> [u8; 16] {
    let constant = if shift == 0 { 0 } else { affine[0] };
    let mut out = [0u8; 16];
    let mut n = 0;
    while n < 16 {
        out[n] = affine[n << shift] ^ constant;
        n += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// First and last rows of the table in GB/T 32907-2016.
    #[test]
    fn sbox_matches_the_standard() {
        let first_row =
            [0xd6, 0x90, 0xe9, 0xfe, 0xcc, 0xe1, 0x3d, 0xb7, 0x16, 0xb6, 0x14, 0xc2, 0x28, 0xfb, 0x2c, 0x05];
        let last_row = [0x18, 0xf0, 0x7d, 0xec, 0x3a, 0xdc, 0x4d, 0x20, 0x79, 0xee, 0x5f, 0x3e, 0xd7, 0xcb, 0x39, 0x48];
        assert_eq!(SBOX[..16], first_row);
        assert_eq!(SBOX[240..], last_row);
    }

    /// FIPS-197's S-box: S(0x00) = 0x63, S(0x53) = 0xed, S(0xff) = 0x16.
    #[test]
    fn aes_sbox_matches_fips_197() {
        assert_eq!((AES_SBOX[0x00], AES_SBOX[0x53], AES_SBOX[0xff]), (0x63, 0xed, 0x16));
    }

    /// GF2P8AFFINEQB / GF2P8AFFINEINVQB as the Intel SDM defines them, in
    /// software: the GFNI form of the S-box is SM4's for every byte (the
    /// x86 tests then check the instructions against the same table).
    #[test]
    fn sm4_sbox_is_two_gfni_affine_maps() {
        let affine = |matrix: u64, x: u8, constant: u8| {
            let mut out = 0u8;
            for i in 0..8 {
                let row = (matrix >> (8 * (7 - i))) as u8;
                out |= (((row & x).count_ones() & 1) as u8) << i;
            }
            out ^ constant
        };
        for x in 0..=255u8 {
            let y = affine(GFNI_PRE_MATRIX, x, GFNI_PRE_CONSTANT);
            let s = affine(GFNI_POST_MATRIX, gf_inv(y, AES_POLY), GFNI_POST_CONSTANT);
            assert_eq!(s, SBOX[usize::from(x)], "x = {x:#04x}");
        }
    }

    /// The whole point: SM4's S-box through AES's, for every byte, with the
    /// affine maps as the x86 path looks them up (by nibble).
    #[test]
    fn sm4_sbox_is_affine_aes_sbox() {
        for x in 0..=255u8 {
            let pre = PRE_LO[usize::from(x & 15)] ^ PRE_HI[usize::from(x >> 4)];
            let z = AES_SBOX[usize::from(pre)];
            let post = POST_LO[usize::from(z & 15)] ^ POST_HI[usize::from(z >> 4)];
            assert_eq!(post, SBOX[usize::from(x)], "x = {x:#04x}");
        }
    }
}
