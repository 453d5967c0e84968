//! GHASH on x86-64 with PCLMULQDQ, four blocks per reduction: the
//! `ghash` crate multiplies and reduces one block at a time (about 1 GiB/s
//! here), which made it, not SM4, the cost of SM4-GCM. The method is
//! Intel's (Gueron and Kounavis, "Carry-Less Multiplication and Its Usage
//! for Computing the GCM Mode", 2014): blocks byte-reversed, four products
//! with H⁴, H³, H², H summed unreduced, then one shift and one reduction
//! modulo x¹²⁸ + x⁷ + x² + x + 1. The `ghash` crate stays the fallback and
//! the reference the tests compare with.

use core::arch::x86_64::{
    __m128i, _mm_clmulepi64_si128, _mm_loadu_si128, _mm_or_si128, _mm_setr_epi8, _mm_shuffle_epi8, _mm_slli_epi32,
    _mm_slli_si128, _mm_srli_epi32, _mm_srli_si128, _mm_storeu_si128, _mm_xor_si128,
};

use super::CipherBlock;

/// A hash key's powers H, H², H³, H⁴, byte-reversed. Only [`ClmulGhash::new`]
/// makes one, after asking the CPU.
#[derive(Clone)]
pub(super) struct ClmulGhash {
    powers: [CipherBlock; 4],
}

impl ClmulGhash {
    /// The key's powers, where the CPU has PCLMULQDQ and SSSE3.
    pub(super) fn new(h: &CipherBlock) -> Option<Self> {
        let has = std::is_x86_feature_detected!("pclmulqdq") && std::is_x86_feature_detected!("ssse3");
        // SAFETY: the CPU reported both features just now.
        has.then(|| unsafe { powers(h) })
    }

    /// Absorbs `data`, zero-padded to whole blocks, into `state` (kept
    /// byte-reversed; [`ClmulGhash::finish`] turns it back).
    pub(super) fn update_padded(&self, state: &mut CipherBlock, data: &[u8]) {
        let (blocks, tail) = data.as_chunks::<16>();
        // SAFETY: `self` exists only where `new` saw the CPU's features.
        unsafe { absorb(&self.powers, state, blocks) };
        if !tail.is_empty() {
            let mut last = [0u8; 16];
            last[..tail.len()].copy_from_slice(tail);
            // SAFETY: as above.
            unsafe { absorb(&self.powers, state, &[last]) };
        }
    }

    /// The hash, from the byte-reversed state.
    pub(super) fn finish(state: &CipherBlock) -> CipherBlock {
        let mut out = *state;
        out.reverse();
        out
    }
}

impl Drop for ClmulGhash {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(self.powers.as_flattened_mut());
    }
}

#[target_feature(enable = "pclmulqdq,ssse3")]
fn powers(h: &CipherBlock) -> ClmulGhash {
    let h1 = reversed(h);
    let h2 = multiply(h1, h1);
    let h3 = multiply(h2, h1);
    let h4 = multiply(h3, h1);
    ClmulGhash { powers: [store(h1), store(h2), store(h3), store(h4)] }
}

/// Y = (..((Y ⊕ X₁)·H ⊕ X₂)·H ..)·H over `blocks`, four at a time as
/// (Y ⊕ X₁)·H⁴ ⊕ X₂·H³ ⊕ X₃·H² ⊕ X₄·H.
#[target_feature(enable = "pclmulqdq,ssse3")]
fn absorb(powers: &[CipherBlock; 4], state: &mut CipherBlock, blocks: &[CipherBlock]) {
    let [h1, h2, h3, h4] = powers.each_ref().map(|p| load(p));
    let mut y = load(state);
    let (quads, rest) = blocks.as_chunks::<4>();
    for quad in quads {
        let x = quad.each_ref().map(|b| reversed(b));
        let (mut lo, mut hi) = product(_mm_xor_si128(x[0], y), h4);
        for (x, h) in [(x[1], h3), (x[2], h2), (x[3], h1)] {
            let (l, h) = product(x, h);
            lo = _mm_xor_si128(lo, l);
            hi = _mm_xor_si128(hi, h);
        }
        y = reduce(lo, hi);
    }
    for block in rest {
        y = multiply(_mm_xor_si128(reversed(block), y), h1);
    }
    *state = store(y);
}

/// a·b reduced.
#[target_feature(enable = "pclmulqdq,ssse3")]
fn multiply(a: __m128i, b: __m128i) -> __m128i {
    let (lo, hi) = product(a, b);
    reduce(lo, hi)
}

/// The 256-bit carry-less product of a and b, as (low, high) halves.
#[target_feature(enable = "pclmulqdq,ssse3")]
fn product(a: __m128i, b: __m128i) -> (__m128i, __m128i) {
    let low = _mm_clmulepi64_si128::<0x00>(a, b);
    let middle = _mm_xor_si128(_mm_clmulepi64_si128::<0x10>(a, b), _mm_clmulepi64_si128::<0x01>(a, b));
    let high = _mm_clmulepi64_si128::<0x11>(a, b);
    (_mm_xor_si128(low, _mm_slli_si128::<8>(middle)), _mm_xor_si128(high, _mm_srli_si128::<8>(middle)))
}

/// The 256-bit product shifted left by one bit (the reflected
/// representation's off-by-one), then reduced modulo the GCM polynomial.
#[target_feature(enable = "pclmulqdq,ssse3")]
fn reduce(lo: __m128i, hi: __m128i) -> __m128i {
    let carry_lo = _mm_srli_epi32::<31>(lo);
    let carry_hi = _mm_srli_epi32::<31>(hi);
    let lo_shifted = _mm_or_si128(_mm_slli_epi32::<1>(lo), _mm_slli_si128::<4>(carry_lo));
    let hi_shifted = _mm_or_si128(
        _mm_or_si128(_mm_slli_epi32::<1>(hi), _mm_slli_si128::<4>(carry_hi)),
        _mm_srli_si128::<12>(carry_lo),
    );
    // First phase: the multiples of x^127, x^126, x^121 of the low half.
    let a = _mm_xor_si128(
        _mm_xor_si128(_mm_slli_epi32::<31>(lo_shifted), _mm_slli_epi32::<30>(lo_shifted)),
        _mm_slli_epi32::<25>(lo_shifted),
    );
    let carried = _mm_srli_si128::<4>(a);
    let lo_folded = _mm_xor_si128(lo_shifted, _mm_slli_si128::<12>(a));
    // Second phase.
    let b = _mm_xor_si128(
        _mm_xor_si128(_mm_srli_epi32::<1>(lo_folded), _mm_srli_epi32::<2>(lo_folded)),
        _mm_xor_si128(_mm_srli_epi32::<7>(lo_folded), carried),
    );
    _mm_xor_si128(hi_shifted, _mm_xor_si128(lo_folded, b))
}

/// A block loaded with its bytes reversed.
#[target_feature(enable = "pclmulqdq,ssse3")]
fn reversed(block: &CipherBlock) -> __m128i {
    let reverse = _mm_setr_epi8(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    _mm_shuffle_epi8(load(block), reverse)
}

#[target_feature(enable = "pclmulqdq,ssse3")]
fn load(block: &CipherBlock) -> __m128i {
    // SAFETY: reads the 16 bytes of `block`; loadu needs no alignment.
    unsafe { _mm_loadu_si128(block.as_ptr().cast()) }
}

#[target_feature(enable = "pclmulqdq,ssse3")]
fn store(value: __m128i) -> CipherBlock {
    let mut out = [0u8; 16];
    // SAFETY: writes the 16 bytes of `out`; storeu needs no alignment.
    unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), value) };
    out
}

#[cfg(test)]
mod tests {
    use ghash::universal_hash::{KeyInit, UniversalHash};
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Equal to the `ghash` crate for any key and any lengths of two
        /// padded inputs (as GCM hashes aad, then ciphertext).
        #[test]
        fn matches_the_ghash_crate(
            h in any::<[u8; 16]>(),
            a in proptest::collection::vec(any::<u8>(), 0..100),
            c in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let Some(ours) = ClmulGhash::new(&h) else { return Ok(()) };
            let mut state = [0u8; 16];
            ours.update_padded(&mut state, &a);
            ours.update_padded(&mut state, &c);
            let mut reference = ghash::GHash::new(&h.into());
            reference.update_padded(&a);
            reference.update_padded(&c);
            let expected: [u8; 16] = reference.finalize().into();
            prop_assert_eq!(ClmulGhash::finish(&state), expected);
        }
    }
}
