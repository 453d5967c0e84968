//! SM4 (GB/T 32907-2016), the block cipher Chinese regulation requires for
//! data at rest, and the modes built on it: [`Sm4Xts`] (GB/T 17964-2021 by
//! default, IEEE 1619 as dm-crypt does it) for volume blocks, and
//! [`Kek::wrap`]/[`Kek::unwrap`] for data keys and small records, and
//! [`Sm4Gcm`] (RFC 8998) for object data.
//!
//! Volume data keys, the master key (KEK) they are wrapped under, and
//! their rotation and destruction are in `volume_key.rs`.
//!
//! Implementations of the rounds, chosen once per process at run time;
//! [`implementation`] names the one in use, [`Implementation`] lets tests
//! and benchmarks pick one:
//!
//! - `gfni-avx512` (x86-64 with GFNI, AVX-512F and AVX-512BW): 16 blocks
//!   at a time in 512-bit registers, the whole S-box two GFNI affine
//!   instructions (`sbox.rs` derives their matrices); constant-time.
//! - `vaes-avx2` / `aesni-avx2` (x86-64): 16 blocks at a time, word-sliced
//!   in AVX2 registers, the S-box computed through AES's with
//!   `(v)aesenclast` between two affine maps (`sbox.rs` derives them at
//!   compile time); constant-time. The only unsafe code is there, in
//!   `x86.rs`.
//! - `portable`: one block at a time with a byte table, not constant-time;
//!   the fallback, and the reference the x86 paths are tested against.
//!
//! The RustCrypto `sm4` crate
//! alone was the simpler choice, but it works as our portable path does, a
//! block at a time through a table (about 75 MB/s here), far below the
//! 262.5 MB/s per core that volumes need. The x86 paths are intrinsics
//! rather than assembly, so the build needs no assembler and the borrow
//! checker sees every load and store.
//!
//! XTS over a 4 KiB block is 256 independent cipher blocks once the tweaks
//! are known, so the cipher's API is bulk: [`Sm4::encrypt_blocks`] on a
//! slice. The round keys are zeroed when a key is dropped.
//!
//! Words: in this module's code and comments "block" alone means a cipher
//! block ([`CipherBlock`], 16 bytes), as cryptography uses it; the
//! project's 4096-byte block is always "4 KiB block" or "data unit" here.
//!
//! Tested against known answers (GB/T 32907's appendix A, OpenSSL's SM4-XTS
//! vectors in both forms) and against separately written implementations:
//! the RustCrypto `sm4`, `xts-mode` and `ctr` crates, a reference XTS in the
//! tests, and Python's `cryptography` (OpenSSL) for 4 KiB units and the
//! wrap format. Every implementation this CPU has runs every test.

mod block;
mod gcm;
#[cfg(target_arch = "x86_64")]
mod ghash_x86;
mod key_schedule;
mod sbox;
mod soft;
mod volume_key;
mod wrap;
#[cfg(target_arch = "x86_64")]
mod x86;
mod xts;

pub use block::{Implementation, Sm4};
pub use gcm::{GcmTagMismatch, Sm4Gcm, GCM_NONCE_BYTES, GCM_TAG_BYTES};
pub use key_schedule::SM4_KEY_BYTES;
pub use volume_key::{
    generate_kek_hex, is_wrapped_under, load_kek, new_wrapped_volume_key, open_volume_key, parse_kek,
    rebind_volume_key, rewrap_volume_key, KeyError, KEK_ENV,
};
pub use wrap::{
    Kek, WrapError, WRAP_KEY_ID_BYTES, WRAP_NONCE_BYTES, WRAP_OVERHEAD_BYTES, WRAP_TAG_BYTES, WRAP_VERSION,
};
pub use xts::{Sm4Xts, XtsError, XtsStandard, XTS_KEY_BYTES, XTS_MIN_UNIT_BYTES};

/// One cipher block: the 16 bytes SM4 encrypts at a time (a "block" alone
/// is the 4096-byte one, see docs/glossary.md).
pub type CipherBlock = [u8; 16];

/// The name of the SM4 implementation this process uses: "gfni-avx512",
/// "vaes-avx2", "aesni-avx2" or "portable".
pub fn implementation() -> &'static str {
    Implementation::fastest().name()
}
