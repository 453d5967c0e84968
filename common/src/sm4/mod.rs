//! SM4 (GB/T 32907-2016), the block cipher Chinese regulation requires for
//! data at rest, and the modes built on it: [`Sm4Xts`] for volume blocks
//! and [`Kek::wrap`]/[`Kek::unwrap`] for data keys and small records.
//!
//! Two implementations of the rounds, chosen once per process at run time
//! ([`implementation`] names the one in use):
//!
//! - `vaes-avx2` / `aesni-avx2` (x86-64): 16 blocks at a time, word-sliced
//!   in AVX2 registers, the S-box computed through AES's with
//!   `(v)aesenclast` between two affine maps ([`sbox`] derives them);
//!   constant-time. The only unsafe code is there, in `x86`.
//! - `portable`: one block at a time with a byte table; the fallback, and
//!   the reference the fast paths are tested against (both also against the
//!   RustCrypto `sm4` crate).
//!
//! A GFNI path (one instruction per affine map) was left out: none of our
//! machines has GFNI, so it could not be tested.
//!
//! XTS over a 4 KiB block is 256 independent SM4 blocks once the tweaks are
//! known, so the cipher's API is bulk: [`Sm4::encrypt_blocks`] on a slice.
//! The round keys are zeroed when a key is dropped.

mod block;
mod key_schedule;
mod sbox;
mod soft;
mod wrap;
#[cfg(target_arch = "x86_64")]
mod x86;
mod xts;

pub use block::{Implementation, Sm4};
pub use key_schedule::SM4_KEY_BYTES;
pub use wrap::{
    Kek, WrapError, WRAP_KEY_ID_BYTES, WRAP_NONCE_BYTES, WRAP_OVERHEAD_BYTES, WRAP_TAG_BYTES, WRAP_VERSION,
};
pub use xts::{Sm4Xts, XtsError, XtsStandard, XTS_KEY_BYTES, XTS_MIN_UNIT_BYTES};

/// One SM4 block.
pub type Block = [u8; 16];

/// The name of the SM4 implementation this process uses: "vaes-avx2",
/// "aesni-avx2" or "portable".
pub fn implementation() -> &'static str {
    Implementation::fastest().name()
}
