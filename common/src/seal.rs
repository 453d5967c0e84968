//! Sealing small secrets at rest under a key derived from the cluster secret.
//!
//! S3 user secret keys are written through the metadata service's Raft log
//! into its RocksDB, and from there into snapshots, replicas and backups. They
//! are stored sealed, so a copy of the metadata alone does not give away any
//! user's secret: opening one also needs the cluster secret.
//!
//! This is not volume encryption. Volumes (a later issue) need a
//! length-preserving cipher per sector, SM4-XTS; a sealed value is short and
//! can afford [`SEAL_OVERHEAD_BYTES`] of nonce and tag.
//!
//! # Format, version 1
//!
//! ```text
//! offset  bytes  field
//! 0       1      format version: 1
//! 1       16     nonce: fresh random per seal, the first SM4-CTR counter block
//! 17      n      ciphertext: plaintext XOR the SM4-CTR keystream
//! 17+n    16     tag: the first 16 bytes of HMAC-SHA256(mac key, bytes 0..17+n)
//! ```
//!
//! The counter is the whole 16-byte block read as a big-endian integer,
//! incremented per block and wrapping modulo 2^128. The two keys are
//! independent sub-keys of the cluster secret:
//!
//! ```text
//! enc key = HMAC-SHA256(cluster secret, purpose || "enc")[0..16]   (SM4 key)
//! mac key = HMAC-SHA256(cluster secret, purpose || "mac")          (32 bytes)
//! ```
//!
//! The labels have the same length, so `purpose || label` never reads the
//! same for two different (purpose, label) pairs. Other HMACs of the cluster
//! secret (the RPC handshake's) end in a random nonce and so never hit these
//! inputs.
//!
//! Encrypt-then-MAC: [`SealKey::open`] checks the tag, in constant time,
//! before it decrypts anything. SM4-GCM was the alternative; it was passed
//! over because HMAC-SHA256 is already what the handshake relies on, and a
//! 128-bit random nonce leaves more room for collisions than GCM's 96 bits.
//!
//! Changing the cluster secret makes every sealed value unopenable; they must
//! be opened and sealed again under the new one.

use std::fmt;

use ctr::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sm4::Sm4;

use crate::secret::{fill_random, ClusterSecret};

/// The format version this code writes, and the only one it reads.
pub const SEAL_VERSION: u8 = 1;

/// Bytes of the nonce: one SM4 block.
pub const SEAL_NONCE_BYTES: usize = 16;

/// Bytes of the truncated HMAC-SHA256 tag.
pub const SEAL_TAG_BYTES: usize = 16;

/// Bytes a sealed value adds to its plaintext: version, nonce and tag.
pub const SEAL_OVERHEAD_BYTES: usize = 1 + SEAL_NONCE_BYTES + SEAL_TAG_BYTES;

const _: () = assert!(SEAL_TAG_BYTES <= 32, "a tag is at most one HMAC-SHA256 output");

const SM4_KEY_BYTES: usize = 16;

/// Bytes of a [`SealKey`] written out: the SM4 key and the MAC key.
pub const SEAL_KEY_BYTES: usize = SM4_KEY_BYTES + 32;

/// The purpose S3 users' secret keys are sealed for (by the metadata
/// member that creates them, opened by gateways).
pub const USER_SECRET_PURPOSE: &[u8] = b"chuyi user secret v1";

/// Sub-key labels; one array type, so they always have the same length.
type Label = [u8; 3];
const ENC_LABEL: Label = *b"enc";
const MAC_LABEL: Label = *b"mac";

type Sm4Ctr = ctr::Ctr128BE<Sm4>;
type HmacSha256 = Hmac<Sha256>;

/// A sealed (encrypted and authenticated) secret, as stored in metadata.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sealed(pub Vec<u8>);

/// Why a sealed value could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("a sealed value of {len} bytes is too short: version 1 needs at least {SEAL_OVERHEAD_BYTES}")]
    TooShort { len: usize },
    #[error("unknown sealed-value format version {0}")]
    UnknownVersion(u8),
    #[error("the sealed value fails authentication: wrong cluster secret or purpose, or tampered with")]
    BadTag,
}

/// The keys that seal and open secrets for one purpose.
#[derive(Clone)]
pub struct SealKey {
    enc: [u8; SM4_KEY_BYTES],
    mac: [u8; 32],
}

/// The parts of a version-1 sealed value, borrowed from it.
struct Parts<'a> {
    nonce: &'a [u8; SEAL_NONCE_BYTES],
    ciphertext: &'a [u8],
    tag: &'a [u8; SEAL_TAG_BYTES],
}

impl SealKey {
    /// Derives the sealing key for `purpose` (e.g. b"chuyi user secret v1") from the cluster secret.
    pub fn derive(secret: &ClusterSecret, purpose: &[u8]) -> Self {
        let enc_full = sub_key(secret, purpose, &ENC_LABEL);
        let mut enc = [0u8; SM4_KEY_BYTES];
        enc.copy_from_slice(&enc_full[..SM4_KEY_BYTES]);
        Self { enc, mac: sub_key(secret, purpose, &MAC_LABEL) }
    }

    /// The key as bytes (encryption key, then MAC key), for a credential
    /// file that carries it to a process without the cluster secret.
    pub fn to_bytes(&self) -> [u8; SEAL_KEY_BYTES] {
        let mut out = [0u8; SEAL_KEY_BYTES];
        out[..SM4_KEY_BYTES].copy_from_slice(&self.enc);
        out[SM4_KEY_BYTES..].copy_from_slice(&self.mac);
        out
    }

    /// The key [`Self::to_bytes`] wrote.
    pub fn from_bytes(bytes: &[u8; SEAL_KEY_BYTES]) -> Self {
        let (mut enc, mut mac) = ([0u8; SM4_KEY_BYTES], [0u8; 32]);
        enc.copy_from_slice(&bytes[..SM4_KEY_BYTES]);
        mac.copy_from_slice(&bytes[SM4_KEY_BYTES..]);
        Self { enc, mac }
    }

    /// Seals `plaintext` under a fresh random nonce.
    pub fn seal(&self, plaintext: &[u8]) -> Sealed {
        let mut nonce = [0u8; SEAL_NONCE_BYTES];
        fill_random(&mut nonce);
        self.seal_with_nonce(&nonce, plaintext)
    }

    /// The plaintext, if `sealed` was sealed by this key and not altered since.
    pub fn open(&self, sealed: &Sealed) -> Result<Vec<u8>, SealError> {
        let parts = parse(&sealed.0)?;
        // verify_truncated_left compares in constant time: no timing hint about the tag.
        self.tagger(parts.nonce, parts.ciphertext).verify_truncated_left(parts.tag).map_err(|_| SealError::BadTag)?;
        let mut plaintext = parts.ciphertext.to_vec();
        apply_keystream(&self.enc, parts.nonce, &mut plaintext);
        Ok(plaintext)
    }

    fn seal_with_nonce(&self, nonce: &[u8; SEAL_NONCE_BYTES], plaintext: &[u8]) -> Sealed {
        let mut ciphertext = plaintext.to_vec();
        apply_keystream(&self.enc, nonce, &mut ciphertext);
        let tag = self.tagger(nonce, &ciphertext).finalize().into_bytes();
        let mut out = Vec::with_capacity(SEAL_OVERHEAD_BYTES + plaintext.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(nonce);
        out.extend_from_slice(&ciphertext);
        out.extend_from_slice(&tag[..SEAL_TAG_BYTES]);
        Sealed(out)
    }

    /// The HMAC over version || nonce || ciphertext, ready to finalize or verify.
    fn tagger(&self, nonce: &[u8; SEAL_NONCE_BYTES], ciphertext: &[u8]) -> HmacSha256 {
        let mut mac = hmac_keyed(&self.mac);
        mac.update(&[SEAL_VERSION]);
        mac.update(nonce);
        mac.update(ciphertext);
        mac
    }
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(<redacted>)")
    }
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealed(<{} bytes>)", self.0.len())
    }
}

/// Splits a sealed value into its parts. The version comes first: a later
/// version may have another minimum length.
fn parse(bytes: &[u8]) -> Result<Parts<'_>, SealError> {
    let too_short = || SealError::TooShort { len: bytes.len() };
    let (&version, rest) = bytes.split_first().ok_or_else(too_short)?;
    if version != SEAL_VERSION {
        return Err(SealError::UnknownVersion(version));
    }
    let (nonce, rest) = rest.split_first_chunk::<SEAL_NONCE_BYTES>().ok_or_else(too_short)?;
    let (ciphertext, tag) = rest.split_last_chunk::<SEAL_TAG_BYTES>().ok_or_else(too_short)?;
    Ok(Parts { nonce, ciphertext, tag })
}

/// HMAC-SHA256(cluster secret, purpose || label).
fn sub_key(secret: &ClusterSecret, purpose: &[u8], label: &Label) -> [u8; 32] {
    let mut mac = hmac_keyed(secret.as_bytes());
    mac.update(purpose);
    mac.update(label);
    mac.finalize().into_bytes().into()
}

fn hmac_keyed(key: &[u8]) -> HmacSha256 {
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    }
}

/// XORs `buf` with the SM4-CTR keystream; the same call encrypts and decrypts.
fn apply_keystream(enc: &[u8; SM4_KEY_BYTES], nonce: &[u8; SEAL_NONCE_BYTES], buf: &mut [u8]) {
    // The 128-bit counter wraps instead of running out, so this cannot fail.
    Sm4Ctr::new(&(*enc).into(), &(*nonce).into()).apply_keystream(buf);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const PURPOSE: &[u8] = b"chuyi user secret v1";
    /// The example secret key from AWS's documentation: 40 bytes, as real ones.
    const USER_SECRET: &[u8] = b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn cluster_secret(text: &str) -> ClusterSecret {
        ClusterSecret::new(text.as_bytes().to_vec()).expect("long enough")
    }

    fn key() -> SealKey {
        SealKey::derive(&cluster_secret("0123456789abcdef-test-cluster-secret"), PURPOSE)
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect()
    }

    #[test]
    fn round_trip() {
        let key = key();
        let sealed = key.seal(USER_SECRET);
        assert_eq!(sealed.0.len(), USER_SECRET.len() + SEAL_OVERHEAD_BYTES);
        assert_eq!(key.open(&sealed).expect("open"), USER_SECRET);
    }

    #[test]
    fn empty_plaintext_round_trips() {
        let key = key();
        let sealed = key.seal(b"");
        assert_eq!(sealed.0.len(), SEAL_OVERHEAD_BYTES);
        assert_eq!(key.open(&sealed).expect("open"), b"");
    }

    /// A fresh nonce per seal: equal secrets do not show as equal in metadata.
    #[test]
    fn two_seals_of_one_plaintext_differ() {
        let key = key();
        let (a, b) = (key.seal(USER_SECRET), key.seal(USER_SECRET));
        assert_ne!(a, b);
        assert_ne!(a.0[1..17], b.0[1..17], "nonces differ");
    }

    /// Every single-bit change is caught, each with the error that names it:
    /// the version byte by its check, every other bit by the tag.
    #[test]
    fn every_flipped_bit_fails_precisely() {
        let key = key();
        let sealed = key.seal(USER_SECRET);
        for i in 0..sealed.0.len() {
            for bit in 0..8 {
                let mut bad = sealed.clone();
                bad.0[i] ^= 1 << bit;
                match (i, key.open(&bad)) {
                    (0, Err(SealError::UnknownVersion(v))) => assert_eq!(v, SEAL_VERSION ^ (1 << bit)),
                    (1.., Err(SealError::BadTag)) => {}
                    (_, other) => panic!("byte {i} bit {bit}: {other:?}"),
                }
            }
        }
    }

    /// Cutting bytes off the end is too short below the minimum and a bad tag
    /// above it; adding a byte is a bad tag too.
    #[test]
    fn truncated_or_extended_fails() {
        let key = key();
        let sealed = key.seal(USER_SECRET);
        for len in 0..sealed.0.len() {
            let cut = Sealed(sealed.0[..len].to_vec());
            match key.open(&cut) {
                Err(SealError::TooShort { len: got }) if len < SEAL_OVERHEAD_BYTES => assert_eq!(got, len),
                Err(SealError::BadTag) if len >= SEAL_OVERHEAD_BYTES => {}
                other => panic!("length {len}: {other:?}"),
            }
        }
        let mut longer = sealed.clone();
        longer.0.push(0);
        assert!(matches!(key.open(&longer), Err(SealError::BadTag)));
    }

    #[test]
    fn other_cluster_secret_fails() {
        let sealed = key().seal(USER_SECRET);
        let other = SealKey::derive(&cluster_secret("0123456789abcdef-another-secret"), PURPOSE);
        assert!(matches!(other.open(&sealed), Err(SealError::BadTag)));
    }

    #[test]
    fn other_purpose_fails() {
        let sealed = key().seal(USER_SECRET);
        let other = SealKey::derive(&cluster_secret("0123456789abcdef-test-cluster-secret"), b"chuyi user secret v2");
        assert!(matches!(other.open(&sealed), Err(SealError::BadTag)));
    }

    /// The cipher is SM4: the standard's example (GB/T 32907-2016, A.1),
    /// as the keystream of the counter block equal to the plaintext.
    #[test]
    fn keystream_is_sm4() {
        let raw = unhex("0123456789abcdeffedcba9876543210");
        let (mut enc, mut nonce) = ([0u8; 16], [0u8; 16]);
        enc.copy_from_slice(&raw);
        nonce.copy_from_slice(&raw);
        let mut block = [0u8; 16];
        apply_keystream(&enc, &nonce, &mut block);
        assert_eq!(block.to_vec(), unhex("681edf34d206965e86b3e94f536e4246"));
    }

    /// The format as documented above, byte for byte, so sealed values stored
    /// today stay openable. The expected bytes were computed independently
    /// with Python's `cryptography` (OpenSSL's SM4-CTR) and `hmac`. The nonce
    /// sits two blocks below 2^128, so the counter wraps inside the plaintext.
    #[test]
    fn format_matches_independent_implementation() {
        let mut nonce = [0xff; SEAL_NONCE_BYTES];
        nonce[15] = 0xfe;
        let sealed = key().seal_with_nonce(&nonce, USER_SECRET);
        let expected = unhex(concat!(
            "01fffffffffffffffffffffffffffffffe",
            "9bf5795b4960d3e2f12aa23421a030c3dad1c3ec655266bc01c5cf50c1d6761bfc2d2d36fecb7fc0",
            "37788c98d37c786b0e18bbb2a765b3ac",
        ));
        assert_eq!(sealed.0, expected);
        assert_eq!(key().open(&sealed).expect("open"), USER_SECRET);
    }

    #[test]
    fn debug_shows_no_bytes() {
        assert_eq!(format!("{:?}", key()), "SealKey(<redacted>)");
        assert_eq!(format!("{:?}", Sealed(USER_SECRET.to_vec())), "Sealed(<40 bytes>)");
    }

    proptest! {
        #[test]
        fn open_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = key().open(&Sealed(bytes));
        }

        /// With the right version byte, arbitrary bytes reach the tag check
        /// and fail it.
        #[test]
        fn forged_values_fail(mut bytes in proptest::collection::vec(any::<u8>(), 1..256)) {
            bytes[0] = SEAL_VERSION;
            let refused = matches!(key().open(&Sealed(bytes)), Err(SealError::TooShort { .. } | SealError::BadTag));
            prop_assert!(refused);
        }

        #[test]
        fn any_plaintext_round_trips(plaintext in proptest::collection::vec(any::<u8>(), 0..512)) {
            let key = key();
            prop_assert_eq!(key.open(&key.seal(&plaintext)).expect("open"), plaintext);
        }
    }
}
