//! Server-side encryption of object data: the algorithms, the keys and the
//! per-run cipher that seals frames ([`crate::frames`]), and the pure
//! decisions of which algorithm a write gets. The S3 operations and the
//! key lookups are in [`crate::encryption`].
//!
//! Keys, from the top:
//!
//! - the master key (KEK), the same as encrypted volumes', held by the
//!   gateway's host and never stored in the cluster;
//! - a bucket key: 32 random bytes made by the first gateway to write an
//!   encrypted object into the bucket, stored in the bucket's record only
//!   wrapped under the KEK (SM4-CTR + HMAC-SM3, bound to the bucket's name
//!   and creation time); or, for SSE-C, the client's own AES-256 key, which
//!   is never stored;
//! - a run key per framed run: HMAC-SHA256(data key, label, algorithm,
//!   salt) with 16 random salt bytes kept in the run's trailer, so no two
//!   runs share a key and a frame's nonce can simply be its index.
//!
//! Rotating the KEK re-wraps each bucket key (one record per bucket),
//! whatever the number of objects. Data is compressed first, then sealed.

use std::sync::Arc;

use chuyi_common::secret::fill_random;
use chuyi_common::sm4::{Sm4Gcm, GCM_TAG_BYTES};
use hmac::{Hmac, Mac};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use s3s::{s3_error, S3Result};
use sha2::Sha256;
use zeroize::Zeroizing;

use chuyi_meta_api::model::{OBJECT_SSE_AES256, OBJECT_SSE_C, OBJECT_SSE_SM4};

/// Bytes of a data key (a bucket's or a client's).
pub const DATA_KEY_BYTES: usize = 32;
/// Bytes of a run's salt.
pub const SALT_BYTES: usize = 16;
/// Bytes a sealed frame adds: its tag.
pub const TAG_BYTES: usize = GCM_TAG_BYTES;

const RUN_KEY_LABEL: &[u8] = b"chuyi object run key v1";

/// A server-side encryption algorithm, as S3's `x-amz-server-side-encryption`
/// names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// SM4-GCM (RFC 8998), GB/T 32907's cipher: what the regulation asks.
    Sm4,
    /// AES-256-GCM.
    Aes256,
}

impl Algorithm {
    pub fn s3_name(self) -> &'static str {
        match self {
            Algorithm::Sm4 => "SM4",
            Algorithm::Aes256 => "AES256",
        }
    }

    pub fn parse(name: &str) -> Option<Algorithm> {
        match name {
            "SM4" => Some(Algorithm::Sm4),
            "AES256" => Some(Algorithm::Aes256),
            _ => None,
        }
    }

    /// Its number in a framed run's trailer.
    pub fn code(self) -> u8 {
        match self {
            Algorithm::Sm4 => 1,
            Algorithm::Aes256 => 2,
        }
    }

    pub fn from_code(code: u8) -> Option<Algorithm> {
        match code {
            1 => Some(Algorithm::Sm4),
            2 => Some(Algorithm::Aes256),
            _ => None,
        }
    }
}

/// How a version's data is sealed, from its flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sealing {
    /// Under its bucket's key.
    Bucket(Algorithm),
    /// SSE-C: AES-256-GCM under the key the client sends with each request.
    Customer,
}

impl Sealing {
    pub fn of_flags(flags: u32) -> Option<Sealing> {
        if flags & OBJECT_SSE_C != 0 {
            Some(Sealing::Customer)
        } else if flags & OBJECT_SSE_SM4 != 0 {
            Some(Sealing::Bucket(Algorithm::Sm4))
        } else if flags & OBJECT_SSE_AES256 != 0 {
            Some(Sealing::Bucket(Algorithm::Aes256))
        } else {
            None
        }
    }

    pub fn flag(self) -> u32 {
        match self {
            Sealing::Bucket(Algorithm::Sm4) => OBJECT_SSE_SM4,
            Sealing::Bucket(Algorithm::Aes256) => OBJECT_SSE_AES256,
            Sealing::Customer => OBJECT_SSE_C,
        }
    }

    pub fn algorithm(self) -> Algorithm {
        match self {
            Sealing::Bucket(a) => a,
            Sealing::Customer => Algorithm::Aes256,
        }
    }
}

/// A data key: a bucket's (unwrapped) or a client's. Zeroed on drop.
#[derive(Clone)]
pub struct DataKey(Zeroizing<[u8; DATA_KEY_BYTES]>);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

impl DataKey {
    pub fn random() -> DataKey {
        let mut key = Zeroizing::new([0u8; DATA_KEY_BYTES]);
        fill_random(key.as_mut_slice());
        DataKey(key)
    }

    /// A key of exactly [`DATA_KEY_BYTES`].
    pub fn from_slice(bytes: &[u8]) -> Option<DataKey> {
        let array: [u8; DATA_KEY_BYTES] = bytes.try_into().ok()?;
        Some(DataKey(Zeroizing::new(array)))
    }

    pub fn bytes(&self) -> &[u8; DATA_KEY_BYTES] {
        &self.0
    }
}

/// What new frames are sealed with: an algorithm and a data key.
#[derive(Clone, Debug)]
pub struct Seal {
    pub algorithm: Algorithm,
    pub key: Arc<DataKey>,
}

/// The AEAD one run's frames are sealed with, its key derived from a data
/// key and the run's salt. Both boxed: the expanded keys are hundreds of
/// bytes, of different sizes.
pub enum RunCipher {
    Sm4(Box<Sm4Gcm>),
    Aes256(Box<LessSafeKey>),
}

impl std::fmt::Debug for RunCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RunCipher::Sm4(_) => "RunCipher(SM4-GCM)",
            RunCipher::Aes256(_) => "RunCipher(AES-256-GCM)",
        })
    }
}

/// A frame failed authentication: another key, or altered bytes.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("a sealed frame fails authentication: another key, or altered data")]
pub struct Unauthentic;

impl RunCipher {
    pub fn new(algorithm: Algorithm, key: &DataKey, salt: &[u8; SALT_BYTES]) -> RunCipher {
        let mut mac = match <Hmac<Sha256>>::new_from_slice(key.bytes()) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(RUN_KEY_LABEL);
        mac.update(&[algorithm.code()]);
        mac.update(salt);
        let run_key = Zeroizing::new(<[u8; 32]>::from(mac.finalize().into_bytes()));
        match algorithm {
            Algorithm::Sm4 => {
                let mut sm4_key = Zeroizing::new([0u8; 16]);
                sm4_key.copy_from_slice(&run_key[..16]);
                RunCipher::Sm4(Box::new(Sm4Gcm::new(&sm4_key)))
            }
            Algorithm::Aes256 => match UnboundKey::new(&AES_256_GCM, run_key.as_slice()) {
                Ok(key) => RunCipher::Aes256(Box::new(LessSafeKey::new(key))),
                Err(_) => unreachable!("AES-256-GCM takes a 32-byte key"),
            },
        }
    }

    /// Encrypts frame `frame`'s payload in place and appends its tag; `aad`
    /// binds what the index says of it.
    pub fn seal(&self, frame: u64, aad: &[u8], data: &mut Vec<u8>) {
        let nonce = nonce(frame);
        match self {
            RunCipher::Sm4(gcm) => {
                let tag = gcm.seal(&nonce, aad, data);
                data.extend_from_slice(&tag);
            }
            RunCipher::Aes256(key) => {
                match key.seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), data) {
                    Ok(tag) => data.extend_from_slice(tag.as_ref()),
                    Err(_) => unreachable!("a frame is far below AES-GCM's length limit"),
                }
            }
        }
    }

    /// Checks and decrypts frame `frame`'s payload (ciphertext then tag)
    /// in place, leaving the plaintext.
    pub fn open(&self, frame: u64, aad: &[u8], data: &mut Vec<u8>) -> Result<(), Unauthentic> {
        let nonce = nonce(frame);
        let Some(text_len) = data.len().checked_sub(TAG_BYTES) else { return Err(Unauthentic) };
        match self {
            RunCipher::Sm4(gcm) => {
                let (text, tag) = data.split_at_mut(text_len);
                let tag: [u8; TAG_BYTES] = (&*tag).try_into().map_err(|_| Unauthentic)?;
                gcm.open(&nonce, aad, text, &tag).map_err(|_| Unauthentic)?;
            }
            RunCipher::Aes256(key) => {
                key.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), data)
                    .map_err(|_| Unauthentic)?;
            }
        }
        data.truncate(text_len);
        Ok(())
    }
}

/// A frame's nonce: its index. Unique, because every run has a key of its
/// own.
fn nonce(frame: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&frame.to_be_bytes());
    n
}

/// A fresh salt for a new run.
pub fn new_salt() -> [u8; SALT_BYTES] {
    let mut salt = [0u8; SALT_BYTES];
    fill_random(&mut salt);
    salt
}

/// The algorithm a write asked for by header, or the bucket's default;
/// SSE-KMS is refused, not ignored.
pub fn chosen(requested: Option<&str>, bucket_default: Option<Algorithm>) -> S3Result<Option<Algorithm>> {
    let Some(name) = requested else { return Ok(bucket_default) };
    match Algorithm::parse(name) {
        Some(a) => Ok(Some(a)),
        None if name.starts_with("aws:kms") => {
            Err(s3_error!(NotImplemented, "SSE-KMS is not offered: use SM4 or AES256 (keys under the cluster's KEK)"))
        }
        None => Err(s3_error!(InvalidArgument, "x-amz-server-side-encryption {name:?}: SM4 and AES256 are offered")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_under_both_algorithms_and_fail_under_another_key_salt_or_index() {
        let key = DataKey::random();
        let salt = new_salt();
        for algorithm in [Algorithm::Sm4, Algorithm::Aes256] {
            let cipher = RunCipher::new(algorithm, &key, &salt);
            let plain = b"DICM study 1.2.840.10008".repeat(100);
            let mut data = plain.clone();
            cipher.seal(3, b"aad", &mut data);
            assert_eq!(data.len(), plain.len() + TAG_BYTES);
            assert!(!data.windows(4).any(|w| w == b"DICM"), "{algorithm:?}: no plaintext left");
            let sealed = data.clone();
            cipher.open(3, b"aad", &mut data).expect("opens");
            assert_eq!(data, plain);
            let fails = |cipher: &RunCipher, frame: u64, aad: &[u8], mut bytes: Vec<u8>| {
                assert_eq!(cipher.open(frame, aad, &mut bytes), Err(Unauthentic), "{algorithm:?}");
            };
            fails(&cipher, 4, b"aad", sealed.clone());
            fails(&cipher, 3, b"aae", sealed.clone());
            fails(&RunCipher::new(algorithm, &key, &new_salt()), 3, b"aad", sealed.clone());
            fails(&RunCipher::new(algorithm, &DataKey::random(), &salt), 3, b"aad", sealed.clone());
            let other = match algorithm {
                Algorithm::Sm4 => Algorithm::Aes256,
                Algorithm::Aes256 => Algorithm::Sm4,
            };
            fails(&RunCipher::new(other, &key, &salt), 3, b"aad", sealed.clone());
            fails(&cipher, 3, b"aad", sealed[..5].to_vec());
            let mut flipped = sealed.clone();
            flipped[10] ^= 1;
            fails(&cipher, 3, b"aad", flipped);
        }
    }

    #[test]
    fn writes_get_the_requested_algorithm_else_the_buckets() {
        assert_eq!(chosen(None, None).ok(), Some(None));
        assert_eq!(chosen(None, Some(Algorithm::Sm4)).ok(), Some(Some(Algorithm::Sm4)));
        assert_eq!(chosen(Some("AES256"), Some(Algorithm::Sm4)).ok(), Some(Some(Algorithm::Aes256)));
        assert_eq!(chosen(Some("SM4"), None).ok(), Some(Some(Algorithm::Sm4)));
        let code = |r: S3Result<Option<Algorithm>>| r.err().map(|e| e.code().as_str().to_string());
        assert_eq!(code(chosen(Some("aws:kms"), None)).as_deref(), Some("NotImplemented"));
        assert_eq!(code(chosen(Some("sm4"), None)).as_deref(), Some("InvalidArgument"));
    }

    #[test]
    fn flags_name_the_sealing() {
        for s in [Sealing::Bucket(Algorithm::Sm4), Sealing::Bucket(Algorithm::Aes256), Sealing::Customer] {
            assert_eq!(Sealing::of_flags(s.flag() | 1), Some(s));
        }
        assert_eq!(Sealing::of_flags(1), None);
        for a in [Algorithm::Sm4, Algorithm::Aes256] {
            assert_eq!(Algorithm::from_code(a.code()), Some(a));
            assert_eq!(Algorithm::parse(a.s3_name()), Some(a));
        }
        assert_eq!(Algorithm::from_code(0), None);
    }
}
