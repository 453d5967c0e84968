//! SM4-GCM (RFC 8998 section 3.1, NIST SP 800-38D with SM4 as the block
//! cipher): what the S3 gateway encrypts objects with under
//! `x-amz-server-side-encryption: SM4`. 12-byte nonces, 16-byte tags.
//!
//! The counter mode runs on the bulk cipher ([`Sm4::encrypt_blocks`]), so
//! the constant-time x86 path makes the keystream where the CPU has one;
//! GHASH is ours on PCLMULQDQ, four blocks per reduction (`ghash_x86.rs`),
//! else the RustCrypto `ghash` crate (constant-time software), which
//! reduces after every block and ran at half the cipher's speed.
//!
//! SM4-CTR with HMAC-SM3 (the construction of [`super::Kek::wrap`]) was the
//! other choice the customer allowed; GCM won because RFC 8998 makes it the
//! interoperable SM4 AEAD (TLS 1.3's SM suites, OpenSSL, Alibaba OSS and
//! Huawei OBS), and HMAC-SM3 runs at a fraction of GHASH's speed over
//! object data.

use ghash::universal_hash::{KeyInit, UniversalHash};
use ghash::GHash;
use zeroize::Zeroize;

use super::block::Sm4;
use super::key_schedule::SM4_KEY_BYTES;
use super::CipherBlock;

/// Bytes of a nonce: GCM's 96-bit one.
pub const GCM_NONCE_BYTES: usize = 12;
/// Bytes of a tag.
pub const GCM_TAG_BYTES: usize = 16;

/// Blocks of keystream made per bulk call to the cipher.
const KEYSTREAM_BATCH_BLOCKS: usize = 64;

/// The tag did not match: the ciphertext, the associated data or the
/// nonce is not what was sealed, or the key is another.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("SM4-GCM: the tag does not match (wrong key, or altered data)")]
pub struct GcmTagMismatch;

/// An SM4-GCM key with its hash key derived.
#[derive(Clone)]
pub struct Sm4Gcm {
    cipher: Sm4,
    hash_key: CipherBlock,
    #[cfg(target_arch = "x86_64")]
    clmul: Option<super::ghash_x86::ClmulGhash>,
}

impl std::fmt::Debug for Sm4Gcm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sm4Gcm(<redacted>)")
    }
}

impl Drop for Sm4Gcm {
    fn drop(&mut self) {
        self.hash_key.zeroize();
    }
}

impl Sm4Gcm {
    pub fn new(key: &[u8; SM4_KEY_BYTES]) -> Self {
        Self::with_cipher(Sm4::new(key))
    }

    /// On a given cipher (tests pick its implementation).
    pub fn with_cipher(cipher: Sm4) -> Self {
        let mut h = [[0u8; 16]];
        cipher.encrypt_blocks(&mut h);
        Self {
            cipher,
            hash_key: h[0],
            #[cfg(target_arch = "x86_64")]
            clmul: super::ghash_x86::ClmulGhash::new(&h[0]),
        }
    }

    /// Encrypts `data` in place and returns the tag over it and `aad`.
    pub fn seal(&self, nonce: &[u8; GCM_NONCE_BYTES], aad: &[u8], data: &mut [u8]) -> [u8; GCM_TAG_BYTES] {
        let j0 = first_counter(nonce);
        self.apply_keystream(&j0, data);
        self.tag(&j0, aad, data)
    }

    /// Checks the tag over `data` (ciphertext) and `aad`, then decrypts
    /// `data` in place; on a mismatch `data` is left as it was.
    pub fn open(
        &self,
        nonce: &[u8; GCM_NONCE_BYTES],
        aad: &[u8],
        data: &mut [u8],
        tag: &[u8; GCM_TAG_BYTES],
    ) -> Result<(), GcmTagMismatch> {
        let j0 = first_counter(nonce);
        let expected = self.tag(&j0, aad, data);
        // Constant time: no hint of how many tag bytes matched.
        if !crate::secret::same_bytes(&expected, tag) {
            return Err(GcmTagMismatch);
        }
        self.apply_keystream(&j0, data);
        Ok(())
    }

    /// GHASH over aad, ciphertext and their bit lengths, masked with E(J0).
    fn tag(&self, j0: &CipherBlock, aad: &[u8], ciphertext: &[u8]) -> [u8; GCM_TAG_BYTES] {
        let mut lengths = [0u8; 16];
        lengths[..8].copy_from_slice(&((aad.len() as u64) * 8).to_be_bytes());
        lengths[8..].copy_from_slice(&((ciphertext.len() as u64) * 8).to_be_bytes());
        let mut mask = [*j0];
        self.cipher.encrypt_blocks(&mut mask);
        let mut tag = self.ghash(&[aad, ciphertext, &lengths]);
        for (t, m) in tag.iter_mut().zip(mask[0]) {
            *t ^= m;
        }
        tag
    }

    /// GHASH of `parts`, each zero-padded to whole blocks.
    fn ghash(&self, parts: &[&[u8]]) -> CipherBlock {
        #[cfg(target_arch = "x86_64")]
        if let Some(clmul) = &self.clmul {
            let mut state = [0u8; 16];
            for part in parts {
                clmul.update_padded(&mut state, part);
            }
            return super::ghash_x86::ClmulGhash::finish(&state);
        }
        let mut ghash = GHash::new(&self.hash_key.into());
        for part in parts {
            ghash.update_padded(part);
        }
        ghash.finalize().into()
    }

    /// XORs `data` with the keystream from inc32(J0): GCM's counter mode,
    /// which counts in the last 32 bits only.
    fn apply_keystream(&self, j0: &CipherBlock, data: &mut [u8]) {
        let prefix: [u8; 12] = j0[..12].try_into().unwrap_or_default();
        let mut counter = u32::from_be_bytes([j0[12], j0[13], j0[14], j0[15]]);
        let mut stream = [[0u8; 16]; KEYSTREAM_BATCH_BLOCKS];
        for chunk in data.chunks_mut(16 * KEYSTREAM_BATCH_BLOCKS) {
            let stream = &mut stream[..chunk.len().div_ceil(16)];
            for block in stream.iter_mut() {
                counter = counter.wrapping_add(1);
                block[..12].copy_from_slice(&prefix);
                block[12..].copy_from_slice(&counter.to_be_bytes());
            }
            self.cipher.encrypt_blocks(stream);
            for (byte, key) in chunk.iter_mut().zip(stream.as_flattened()) {
                *byte ^= key;
            }
        }
        stream.zeroize();
    }
}

/// J0 for a 96-bit nonce: the nonce, then the counter 1.
fn first_counter(nonce: &[u8; GCM_NONCE_BYTES]) -> CipherBlock {
    let mut j0 = [0u8; 16];
    j0[..12].copy_from_slice(nonce);
    j0[15] = 1;
    j0
}

#[cfg(test)]
mod tests {
    use aes_gcm::aead::{AeadInPlace, KeyInit};
    use proptest::prelude::*;

    use super::super::Implementation;
    use super::*;

    fn unhex(text: &str) -> Vec<u8> {
        let text: String = text.split_whitespace().collect();
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect()
    }

    /// RFC 8998 appendix A.1.
    #[test]
    fn rfc_8998_known_answer() {
        let key: [u8; 16] = unhex("0123456789ABCDEFFEDCBA9876543210").try_into().expect("key");
        let nonce: [u8; 12] = unhex("00001234567800000000ABCD").try_into().expect("nonce");
        let aad = unhex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2");
        let plaintext = unhex(
            "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBB CCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD
             EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFF EEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA",
        );
        let ciphertext = unhex(
            "17F399F08C67D5EE19D0DC9969C4BB7D 5FD46FD3756489069157B282BB200735
             D82710CA5C22F0CCFA7CBF93D496AC15 A56834CBCF98C397B4024A2691233B8D",
        );
        let tag = unhex("83DE3541E4C2B58177E065A9BF7B62EC");
        for implementation in Implementation::ALL.into_iter().filter(|i| i.is_supported()) {
            let gcm = Sm4Gcm::with_cipher(Sm4::with_implementation(&key, implementation).expect("supported"));
            let mut data = plaintext.clone();
            let got = gcm.seal(&nonce, &aad, &mut data);
            assert_eq!(data, ciphertext, "{implementation}");
            assert_eq!(got.as_slice(), tag, "{implementation}");
            gcm.open(&nonce, &aad, &mut data, &got).expect("opens");
            assert_eq!(data, plaintext);
        }
    }

    /// Any change to the ciphertext, aad, nonce or tag fails, and leaves
    /// the data as it was.
    #[test]
    fn altered_input_fails_and_changes_nothing() {
        let gcm = Sm4Gcm::new(&[7; 16]);
        let nonce = [1u8; 12];
        let mut sealed = b"patient 42: CT chest, no findings".to_vec();
        let tag = gcm.seal(&nonce, b"frame 0", &mut sealed);
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x10;
            let before = bad.clone();
            assert_eq!(gcm.open(&nonce, b"frame 0", &mut bad, &tag), Err(GcmTagMismatch));
            assert_eq!(bad, before);
        }
        let mut data = sealed.clone();
        assert_eq!(gcm.open(&nonce, b"frame 1", &mut data, &tag), Err(GcmTagMismatch));
        assert_eq!(gcm.open(&[2; 12], b"frame 0", &mut data, &tag), Err(GcmTagMismatch));
        let mut bad_tag = tag;
        bad_tag[15] ^= 1;
        assert_eq!(gcm.open(&nonce, b"frame 0", &mut data, &bad_tag), Err(GcmTagMismatch));
        assert_eq!(Sm4Gcm::new(&[8; 16]).open(&nonce, b"frame 0", &mut data, &tag), Err(GcmTagMismatch));
        gcm.open(&nonce, b"frame 0", &mut data, &tag).expect("the original opens");
    }

    proptest! {
        /// Equal to RustCrypto's generic GCM over RustCrypto's SM4, written
        /// apart from ours, on every implementation this CPU has.
        #[test]
        fn matches_rustcrypto_gcm(
            key in any::<[u8; 16]>(),
            nonce in any::<[u8; 12]>(),
            aad in proptest::collection::vec(any::<u8>(), 0..40),
            data in proptest::collection::vec(any::<u8>(), 0..3000),
        ) {
            let reference = aes_gcm::AesGcm::<sm4::Sm4, aes_gcm::aead::consts::U12>::new(&key.into());
            let mut expected = data.clone();
            let expected_tag = reference.encrypt_in_place_detached(&nonce.into(), &aad, &mut expected).expect("seal");
            for implementation in Implementation::ALL.into_iter().filter(|i| i.is_supported()) {
                let gcm = Sm4Gcm::with_cipher(Sm4::with_implementation(&key, implementation).expect("supported"));
                let mut got = data.clone();
                let tag = gcm.seal(&nonce, &aad, &mut got);
                prop_assert_eq!(&got, &expected);
                prop_assert_eq!(tag.as_slice(), expected_tag.as_slice());
            }
        }
    }
}
