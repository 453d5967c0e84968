//! Wrapping data keys and other short records under a key-encryption key
//! (KEK): SM4-CTR and HMAC-SM3, encrypt-then-MAC, all Chinese standards.
//!
//! A volume's XTS key is stored wrapped under its KEK; the context (e.g.
//! the volume's id) is authenticated but not stored, so a wrapped key copied
//! into another volume's metadata does not unwrap there.
//!
//! # Format, version 1
//!
//! ```text
//! offset  bytes  field
//! 0       1      format version: 1
//! 1       4      key id: HMAC-SM3(KEK, "kid")[0..4], names the KEK that wrapped it
//! 5       16     nonce: fresh random per wrap, the first SM4-CTR counter block
//! 21      n      ciphertext: plaintext XOR the SM4-CTR keystream under the enc key
//! 21+n    16     tag: HMAC-SM3(mac key, bytes 0..21+n || context || len(context))[0..16]
//! ```
//!
//! `len(context)` is 8 bytes, little-endian. The counter is the whole
//! 16-byte block read as a big-endian integer, incremented per block and
//! wrapping modulo 2^128. The keys are independent sub-keys of the KEK:
//!
//! ```text
//! enc key = HMAC-SM3(KEK, "enc")[0..16]   (SM4 key)
//! mac key = HMAC-SM3(KEK, "mac")          (32 bytes)
//! ```
//!
//! The key id tells "wrong KEK" from "tampered with" (it is a hint, covered
//! by the tag like every stored byte; 32 bits of a one-way function of the
//! KEK say nothing useful about it). [`Kek::unwrap`] checks the tag, in
//! constant time, before it decrypts anything.
//!
//! SM4-GCM was the alternative: it was passed over because an HMAC over
//! SM3 is simpler to get right than GHASH, the records are short enough that
//! speed does not matter, and a 128-bit random nonce leaves more room than
//! GCM's 96 bits. [`crate::seal`] is the same construction over SHA-256,
//! for secrets sealed under the cluster secret.

use std::fmt;

use hmac::{Hmac, Mac};
use sm3::Sm3;
use zeroize::{Zeroize, Zeroizing};

use super::block::Sm4;
use super::key_schedule::SM4_KEY_BYTES;
use super::CipherBlock;
use crate::secret::fill_random;

/// The format version this code writes, and the only one it reads.
pub const WRAP_VERSION: u8 = 1;

/// Bytes of the key id.
pub const WRAP_KEY_ID_BYTES: usize = 4;

/// Bytes of the nonce: one SM4 block.
pub const WRAP_NONCE_BYTES: usize = 16;

/// Bytes of the truncated HMAC-SM3 tag.
pub const WRAP_TAG_BYTES: usize = 16;

/// Bytes a wrapped record adds to its plaintext.
pub const WRAP_OVERHEAD_BYTES: usize = HEADER_BYTES + WRAP_TAG_BYTES;

const HEADER_BYTES: usize = 1 + WRAP_KEY_ID_BYTES + WRAP_NONCE_BYTES;

const _: () = assert!(WRAP_TAG_BYTES <= 32 && WRAP_KEY_ID_BYTES <= 32, "both are cut from one HMAC-SM3 output");

/// Blocks of keystream made per bulk call to the cipher.
const KEYSTREAM_BATCH_BLOCKS: usize = 16;

/// Sub-key labels; one array type, so they always have the same length.
type Label = [u8; 3];
const ENC_LABEL: Label = *b"enc";
const MAC_LABEL: Label = *b"mac";
const KEY_ID_LABEL: Label = *b"kid";

type HmacSm3 = Hmac<Sm3>;
type KeyId = [u8; WRAP_KEY_ID_BYTES];

/// Why a wrapped record could not be unwrapped.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WrapError {
    #[error("a wrapped record of {len_bytes} bytes is too short: version 1 needs at least {WRAP_OVERHEAD_BYTES}")]
    TooShort { len_bytes: usize },
    #[error("unknown wrapped-record format version {0}")]
    UnknownVersion(u8),
    #[error("the record was wrapped under another KEK (key id {found:08x}; this KEK's is {expected:08x})")]
    WrongKek { expected: u32, found: u32 },
    #[error("the wrapped record fails authentication: tampered with, or unwrapped with another context")]
    BadTag,
}

/// A key-encryption key with its sub-keys derived. Zeroed on drop.
#[derive(Clone)]
pub struct Kek {
    enc: Sm4,
    mac: Zeroizing<[u8; 32]>,
    key_id: KeyId,
}

/// The parts of a version-1 wrapped record, borrowed from it.
struct Parts<'a> {
    key_id: &'a KeyId,
    header: &'a [u8; HEADER_BYTES],
    nonce: &'a CipherBlock,
    ciphertext: &'a [u8],
    tag: &'a [u8; WRAP_TAG_BYTES],
}

impl Kek {
    pub fn new(kek: &[u8; SM4_KEY_BYTES]) -> Self {
        let mut enc_full = sub_key(kek, &ENC_LABEL);
        let mut enc = [0u8; SM4_KEY_BYTES];
        enc.copy_from_slice(&enc_full[..SM4_KEY_BYTES]);
        let mut key_id = [0u8; WRAP_KEY_ID_BYTES];
        key_id.copy_from_slice(&sub_key(kek, &KEY_ID_LABEL)[..WRAP_KEY_ID_BYTES]);
        let this = Self { enc: Sm4::new(&enc), mac: Zeroizing::new(sub_key(kek, &MAC_LABEL)), key_id };
        enc_full.zeroize();
        enc.zeroize();
        this
    }

    /// Wraps `plaintext` under a fresh random nonce, bound to `context`.
    pub fn wrap(&self, plaintext: &[u8], context: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; WRAP_NONCE_BYTES];
        fill_random(&mut nonce);
        self.wrap_with_nonce(&nonce, plaintext, context)
    }

    /// The plaintext, if `wrapped` was wrapped by this KEK with this context
    /// and not altered since.
    pub fn unwrap(&self, wrapped: &[u8], context: &[u8]) -> Result<Zeroizing<Vec<u8>>, WrapError> {
        let parts = parse(wrapped)?;
        if *parts.key_id != self.key_id {
            let (expected, found) = (u32::from_be_bytes(self.key_id), u32::from_be_bytes(*parts.key_id));
            return Err(WrapError::WrongKek { expected, found });
        }
        // verify_truncated_left compares in constant time: no timing hint about the tag.
        let tagger = self.tagger(parts.header, parts.ciphertext, context);
        tagger.verify_truncated_left(parts.tag).map_err(|_| WrapError::BadTag)?;
        let mut plaintext = Zeroizing::new(parts.ciphertext.to_vec());
        apply_keystream(&self.enc, parts.nonce, &mut plaintext);
        Ok(plaintext)
    }

    fn wrap_with_nonce(&self, nonce: &CipherBlock, plaintext: &[u8], context: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(WRAP_OVERHEAD_BYTES + plaintext.len());
        out.push(WRAP_VERSION);
        out.extend_from_slice(&self.key_id);
        out.extend_from_slice(nonce);
        out.extend_from_slice(plaintext);
        apply_keystream(&self.enc, nonce, &mut out[HEADER_BYTES..]);
        let (header, ciphertext) = out.split_at(HEADER_BYTES);
        let mut header_bytes = [0u8; HEADER_BYTES];
        header_bytes.copy_from_slice(header);
        let tag = self.tagger(&header_bytes, ciphertext, context).finalize().into_bytes();
        out.extend_from_slice(&tag[..WRAP_TAG_BYTES]);
        out
    }

    /// The HMAC over header || ciphertext || context || len(context).
    fn tagger(&self, header: &[u8; HEADER_BYTES], ciphertext: &[u8], context: &[u8]) -> HmacSm3 {
        let mut mac = hmac_keyed(self.mac.as_slice());
        mac.update(header);
        mac.update(ciphertext);
        mac.update(context);
        mac.update(&(context.len() as u64).to_le_bytes());
        mac
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kek(id {:08x})", u32::from_be_bytes(self.key_id))
    }
}

/// Splits a wrapped record into its parts. The version comes first: a later
/// version may have another layout.
fn parse(bytes: &[u8]) -> Result<Parts<'_>, WrapError> {
    let too_short = || WrapError::TooShort { len_bytes: bytes.len() };
    let (&version, rest) = bytes.split_first().ok_or_else(too_short)?;
    if version != WRAP_VERSION {
        return Err(WrapError::UnknownVersion(version));
    }
    let (key_id, rest) = rest.split_first_chunk::<WRAP_KEY_ID_BYTES>().ok_or_else(too_short)?;
    let (nonce, rest) = rest.split_first_chunk::<WRAP_NONCE_BYTES>().ok_or_else(too_short)?;
    let (ciphertext, tag) = rest.split_last_chunk::<WRAP_TAG_BYTES>().ok_or_else(too_short)?;
    let header = bytes.first_chunk::<HEADER_BYTES>().ok_or_else(too_short)?;
    Ok(Parts { key_id, header, nonce, ciphertext, tag })
}

/// HMAC-SM3(KEK, label).
fn sub_key(kek: &[u8; SM4_KEY_BYTES], label: &Label) -> [u8; 32] {
    let mut mac = hmac_keyed(kek);
    mac.update(label);
    mac.finalize().into_bytes().into()
}

fn hmac_keyed(key: &[u8]) -> HmacSm3 {
    match HmacSm3::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    }
}

/// XORs `data` with the SM4-CTR keystream from `nonce`; the same call
/// encrypts and decrypts. The keystream comes from the bulk cipher, so the
/// constant-time path makes it where the CPU has one.
fn apply_keystream(cipher: &Sm4, nonce: &CipherBlock, data: &mut [u8]) {
    let mut counter = u128::from_be_bytes(*nonce);
    let mut stream = [[0u8; 16]; KEYSTREAM_BATCH_BLOCKS];
    for chunk in data.chunks_mut(16 * KEYSTREAM_BATCH_BLOCKS) {
        let stream = &mut stream[..chunk.len().div_ceil(16)];
        for block in stream.iter_mut() {
            *block = counter.to_be_bytes();
            counter = counter.wrapping_add(1);
        }
        cipher.encrypt_blocks(stream);
        for (byte, key) in chunk.iter_mut().zip(stream.as_flattened()) {
            *byte ^= key;
        }
    }
    stream.zeroize();
}

#[cfg(test)]
mod tests {
    use ctr::cipher::{KeyIvInit, StreamCipher};
    use proptest::prelude::*;

    use super::*;

    const KEK: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
    const CONTEXT: &[u8] = b"volume 42";
    /// A 32-byte SM4-XTS data key, as volumes will wrap.
    const DATA_KEY: [u8; 32] = [0x5a; 32];

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect()
    }

    fn kek() -> Kek {
        Kek::new(&KEK)
    }

    #[test]
    fn round_trip() {
        let wrapped = kek().wrap(&DATA_KEY, CONTEXT);
        assert_eq!(wrapped.len(), DATA_KEY.len() + WRAP_OVERHEAD_BYTES);
        assert_eq!(kek().unwrap(&wrapped, CONTEXT).expect("unwrap").as_slice(), DATA_KEY);
    }

    #[test]
    fn empty_record_round_trips() {
        let wrapped = kek().wrap(b"", b"");
        assert_eq!(wrapped.len(), WRAP_OVERHEAD_BYTES);
        assert_eq!(kek().unwrap(&wrapped, b"").expect("unwrap").as_slice(), b"");
    }

    /// A fresh nonce per wrap: equal keys do not show as equal in metadata.
    #[test]
    fn two_wraps_of_one_key_differ() {
        let (a, b) = (kek().wrap(&DATA_KEY, CONTEXT), kek().wrap(&DATA_KEY, CONTEXT));
        assert_ne!(a, b);
        assert_ne!(a[5..21], b[5..21], "nonces differ");
    }

    /// Another KEK is told apart from tampering by the key id.
    #[test]
    fn other_kek_fails_as_wrong_kek() {
        let wrapped = kek().wrap(&DATA_KEY, CONTEXT);
        let mut other_key = KEK;
        other_key[15] ^= 1;
        let other = Kek::new(&other_key);
        match other.unwrap(&wrapped, CONTEXT) {
            Err(WrapError::WrongKek { expected, found }) => {
                assert_eq!(found, u32::from_be_bytes(kek().key_id));
                assert_eq!(expected, u32::from_be_bytes(other.key_id));
            }
            other => panic!("{other:?}"),
        }
    }

    /// A key wrapped for one volume does not unwrap for another.
    #[test]
    fn other_context_fails() {
        let wrapped = kek().wrap(&DATA_KEY, CONTEXT);
        assert_eq!(kek().unwrap(&wrapped, b"volume 43").map(|_| ()), Err(WrapError::BadTag));
        assert_eq!(kek().unwrap(&wrapped, b"").map(|_| ()), Err(WrapError::BadTag));
    }

    /// Every single-bit change is caught, each with the error that names
    /// it: the version by its check, the key id as another KEK's, every
    /// other bit by the tag.
    #[test]
    fn every_flipped_bit_fails_precisely() {
        let wrapped = kek().wrap(&DATA_KEY, CONTEXT);
        for i in 0..wrapped.len() {
            for bit in 0..8 {
                let mut bad = wrapped.clone();
                bad[i] ^= 1 << bit;
                match (i, kek().unwrap(&bad, CONTEXT).map(|_| ())) {
                    (0, Err(WrapError::UnknownVersion(v))) => assert_eq!(v, WRAP_VERSION ^ (1 << bit)),
                    (1..=4, Err(WrapError::WrongKek { .. })) => {}
                    (5.., Err(WrapError::BadTag)) => {}
                    (_, other) => panic!("byte {i} bit {bit}: {other:?}"),
                }
            }
        }
    }

    /// Cutting bytes off the end is too short below the minimum and a bad
    /// tag above it; adding a byte is a bad tag too.
    #[test]
    fn truncated_or_extended_fails() {
        let wrapped = kek().wrap(&DATA_KEY, CONTEXT);
        for len in 0..wrapped.len() {
            match kek().unwrap(&wrapped[..len], CONTEXT).map(|_| ()) {
                Err(WrapError::TooShort { len_bytes }) if len < WRAP_OVERHEAD_BYTES => assert_eq!(len_bytes, len),
                Err(WrapError::BadTag) if len >= WRAP_OVERHEAD_BYTES => {}
                other => panic!("length {len}: {other:?}"),
            }
        }
        let mut longer = wrapped;
        longer.push(0);
        assert_eq!(kek().unwrap(&longer, CONTEXT).map(|_| ()), Err(WrapError::BadTag));
    }

    /// The format as documented above, byte for byte, so wrapped keys stored
    /// today stay unwrappable. The expected bytes were computed separately
    /// with Python's `cryptography` (OpenSSL's SM4-CTR and HMAC-SM3). The
    /// nonce sits two blocks below 2^128, so the counter wraps inside the
    /// 33-byte record.
    #[test]
    fn format_matches_independent_implementation() {
        let mut nonce = [0xff; WRAP_NONCE_BYTES];
        nonce[15] = 0xfe;
        let record: Vec<u8> = (0x20..0x40).chain([b'!']).collect();
        let wrapped = kek().wrap_with_nonce(&nonce, &record, CONTEXT);
        let expected = unhex(concat!(
            "01d32896bb",
            "fffffffffffffffffffffffffffffffe",
            "e3d2ceb21e05f9a1edf3c1bf7a47d6d85b044f8cfbc7436ad3f6a094eb1a3f8248",
            "7918892b8ccfa9fe6fc731fae4f88d8b",
        ));
        assert_eq!(wrapped, expected);
        assert_eq!(kek().unwrap(&wrapped, CONTEXT).expect("unwrap").as_slice(), record);
    }

    #[test]
    fn debug_shows_only_the_key_id() {
        assert_eq!(format!("{:?}", kek()), "Kek(id d32896bb)");
    }

    proptest! {
        #[test]
        fn unwrap_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = kek().unwrap(&bytes, CONTEXT);
        }

        /// With the right version and key id, arbitrary bytes reach the tag
        /// check and fail it.
        #[test]
        fn forged_records_fail(mut bytes in proptest::collection::vec(any::<u8>(), 5..256)) {
            bytes[0] = WRAP_VERSION;
            bytes[1..5].copy_from_slice(&kek().key_id);
            let refused = matches!(kek().unwrap(&bytes, CONTEXT), Err(WrapError::TooShort { .. } | WrapError::BadTag));
            prop_assert!(refused);
        }

        #[test]
        fn any_record_round_trips(
            record in proptest::collection::vec(any::<u8>(), 0..600),
            context in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let kek = kek();
            let unwrapped = kek.unwrap(&kek.wrap(&record, &context), &context).expect("unwrap");
            prop_assert_eq!(unwrapped.as_slice(), &record[..]);
        }

        /// The keystream (from the bulk cipher, any length, any nonce)
        /// equals the RustCrypto `ctr` crate over the `sm4` crate.
        #[test]
        fn keystream_matches_ctr_crate(
            key in any::<[u8; 16]>(),
            nonce in any::<[u8; 16]>(),
            data in proptest::collection::vec(any::<u8>(), 0..800),
        ) {
            let mut expected = data.clone();
            ctr::Ctr128BE::<::sm4::Sm4>::new(&key.into(), &nonce.into()).apply_keystream(&mut expected);
            let mut got = data;
            apply_keystream(&Sm4::new(&key), &nonce, &mut got);
            prop_assert_eq!(got, expected);
        }
    }
}
