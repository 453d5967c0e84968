//! The SM4 block cipher over many blocks at once, on the fastest
//! implementation this CPU has (chosen once per process) or a named one.

use std::fmt;
use std::sync::OnceLock;

use super::key_schedule::{Direction, RoundKeys, SM4_KEY_BYTES};
use super::{soft, CipherBlock};

/// One implementation of SM4's rounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Implementation {
    /// Portable Rust, one block at a time, table lookups (not constant-time).
    Portable,
    /// x86-64 AES-NI + AVX2: 16 blocks at a time, `aesenclast` per 128 bits.
    AesniAvx2,
    /// x86-64 VAES + AVX2: as AesniAvx2, `vaesenclast` on 256 bits.
    VaesAvx2,
    /// x86-64 GFNI + AVX-512: 16 blocks at a time, the S-box in two
    /// `gf2p8affine` instructions.
    GfniAvx512,
}

impl Implementation {
    /// Every implementation, slowest first.
    pub const ALL: [Self; 4] = [Self::Portable, Self::AesniAvx2, Self::VaesAvx2, Self::GfniAvx512];

    /// The name benchmarks and logs report: "portable", "aesni-avx2",
    /// "vaes-avx2", "gfni-avx512".
    pub fn name(self) -> &'static str {
        match self {
            Self::Portable => "portable",
            Self::AesniAvx2 => "aesni-avx2",
            Self::VaesAvx2 => "vaes-avx2",
            Self::GfniAvx512 => "gfni-avx512",
        }
    }

    /// The fastest implementation this CPU runs; asked once per process.
    pub fn fastest() -> Self {
        static FASTEST: OnceLock<Implementation> = OnceLock::new();
        *FASTEST.get_or_init(|| {
            let mut supported = Self::ALL.into_iter().filter(|imp| imp.is_supported());
            supported.next_back().unwrap_or(Self::Portable)
        })
    }

    /// Whether this CPU has the instructions this implementation needs.
    pub fn is_supported(self) -> bool {
        Engine::new(self).is_some()
    }
}

impl fmt::Display for Implementation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The code behind one implementation. Only `new` makes one, so holding an
/// x86 engine proves the CPU has its features.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    Portable,
    #[cfg(target_arch = "x86_64")]
    X86(Implementation, super::x86::Engine),
}

impl Engine {
    fn new(implementation: Implementation) -> Option<Self> {
        match implementation {
            Implementation::Portable => Some(Self::Portable),
            #[cfg(target_arch = "x86_64")]
            Implementation::AesniAvx2 => super::x86::Engine::aesni_avx2().map(|e| Self::X86(implementation, e)),
            #[cfg(target_arch = "x86_64")]
            Implementation::VaesAvx2 => super::x86::Engine::vaes_avx2().map(|e| Self::X86(implementation, e)),
            #[cfg(target_arch = "x86_64")]
            Implementation::GfniAvx512 => super::x86::Engine::gfni_avx512().map(|e| Self::X86(implementation, e)),
            #[cfg(not(target_arch = "x86_64"))]
            Implementation::AesniAvx2 | Implementation::VaesAvx2 | Implementation::GfniAvx512 => None,
        }
    }

    fn implementation(self) -> Implementation {
        match self {
            Self::Portable => Implementation::Portable,
            #[cfg(target_arch = "x86_64")]
            Self::X86(implementation, _) => implementation,
        }
    }

    fn crypt_blocks(self, round_keys: &[u32; super::key_schedule::ROUNDS], blocks: &mut [CipherBlock]) {
        match self {
            Self::Portable => soft::crypt_blocks(round_keys, blocks),
            #[cfg(target_arch = "x86_64")]
            Self::X86(_, engine) => engine.crypt_blocks(round_keys, blocks),
        }
    }
}

/// An SM4 key, ready to encrypt and decrypt blocks in bulk (ECB: a building
/// block for modes such as XTS and CTR, not a mode to store data with).
#[derive(Clone)]
pub struct Sm4 {
    round_keys: RoundKeys,
    engine: Engine,
}

impl Sm4 {
    /// The key on the fastest implementation this CPU has.
    pub fn new(key: &[u8; SM4_KEY_BYTES]) -> Self {
        match Self::with_implementation(key, Implementation::fastest()) {
            Some(sm4) => sm4,
            None => unreachable!("the fastest implementation is supported by definition"),
        }
    }

    /// The key on the given implementation; `None` if this CPU lacks it.
    pub fn with_implementation(key: &[u8; SM4_KEY_BYTES], implementation: Implementation) -> Option<Self> {
        let engine = Engine::new(implementation)?;
        Some(Self { round_keys: RoundKeys::expand(key), engine })
    }

    pub fn implementation(&self) -> Implementation {
        self.engine.implementation()
    }

    /// Encrypts every block in place; blocks are independent (ECB).
    pub fn encrypt_blocks(&self, blocks: &mut [CipherBlock]) {
        self.crypt_blocks(Direction::Encrypt, blocks);
    }

    /// Decrypts every block in place.
    pub fn decrypt_blocks(&self, blocks: &mut [CipherBlock]) {
        self.crypt_blocks(Direction::Decrypt, blocks);
    }

    pub(super) fn crypt_blocks(&self, direction: Direction, blocks: &mut [CipherBlock]) {
        self.engine.crypt_blocks(self.round_keys.get(direction), blocks);
    }
}

impl fmt::Debug for Sm4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sm4(<redacted>, {})", self.implementation())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use sm4::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};

    use super::*;

    /// GB/T 32907-2016, appendix A.1 (the key is also the plaintext).
    const STANDARD_KEY: CipherBlock =
        [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10];
    const STANDARD_CIPHERTEXT: CipherBlock =
        [0x68, 0x1e, 0xdf, 0x34, 0xd2, 0x06, 0x96, 0x5e, 0x86, 0xb3, 0xe9, 0x4f, 0x53, 0x6e, 0x42, 0x46];
    /// Appendix A.2: the same block encrypted 1,000,000 times.
    const STANDARD_CIPHERTEXT_MILLION: CipherBlock =
        [0x59, 0x52, 0x98, 0xc7, 0xc6, 0xfd, 0x27, 0x1f, 0x04, 0x02, 0xf8, 0x04, 0xc3, 0x3d, 0x3f, 0x66];

    fn supported() -> Vec<Implementation> {
        Implementation::ALL.into_iter().filter(|imp| imp.is_supported()).collect()
    }

    /// Every implementation gives the standard's ciphertext, alone and as
    /// each position of a batch of 37 (two groups of 16 and a tail of 5 on
    /// the x86 paths), and decrypts it back.
    #[test]
    fn standard_vector_in_every_position() {
        for imp in supported() {
            let sm4 = Sm4::with_implementation(&STANDARD_KEY, imp).expect("supported");
            let mut blocks = vec![STANDARD_KEY; 37];
            sm4.encrypt_blocks(&mut blocks);
            assert!(blocks.iter().all(|b| *b == STANDARD_CIPHERTEXT), "{imp}");
            sm4.decrypt_blocks(&mut blocks);
            assert!(blocks.iter().all(|b| *b == STANDARD_KEY), "{imp}");
        }
    }

    #[test]
    fn standard_vector_a_million_times() {
        let sm4 = Sm4::new(&STANDARD_KEY);
        let mut block = [STANDARD_KEY];
        for _ in 0..1_000_000 {
            sm4.encrypt_blocks(&mut block);
        }
        assert_eq!(block[0], STANDARD_CIPHERTEXT_MILLION);
    }

    /// Detection picks the best path the CPU has, so a run on a GFNI or
    /// VAES machine tests (and benchmarks) that path by default.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn fastest_is_the_best_supported() {
        let fastest = Implementation::fastest();
        assert!(fastest.is_supported());
        if Implementation::GfniAvx512.is_supported() {
            assert_eq!(fastest, Implementation::GfniAvx512);
        } else if std::is_x86_feature_detected!("vaes") && std::is_x86_feature_detected!("avx2") {
            assert_eq!(fastest, Implementation::VaesAvx2);
        }
        assert_eq!(Sm4::new(&STANDARD_KEY).implementation(), fastest);
    }

    #[test]
    fn debug_shows_no_key() {
        let sm4 = Sm4::with_implementation(&STANDARD_KEY, Implementation::Portable).expect("always");
        assert_eq!(format!("{sm4:?}"), "Sm4(<redacted>, portable)");
    }

    proptest! {
        /// Every implementation equals the `sm4` crate (an independent
        /// implementation with its own key schedule) on random keys and
        /// any number of blocks, and decrypts what it encrypted.
        #[test]
        fn every_implementation_matches_the_sm4_crate(
            key in any::<CipherBlock>(),
            plaintext in proptest::collection::vec(any::<CipherBlock>(), 0..70),
        ) {
            let reference = sm4::Sm4::new(&key.into());
            let mut expected = plaintext.clone();
            for block in &mut expected {
                reference.encrypt_block(block.into());
            }
            for imp in supported() {
                let sm4 = Sm4::with_implementation(&key, imp).expect("supported");
                let mut blocks = plaintext.clone();
                sm4.encrypt_blocks(&mut blocks);
                prop_assert_eq!(&blocks, &expected, "{}", imp);
                sm4.decrypt_blocks(&mut blocks);
                prop_assert_eq!(&blocks, &plaintext, "{}", imp);
            }
            let mut back = expected;
            for block in &mut back {
                reference.decrypt_block(block.into());
            }
            prop_assert_eq!(back, plaintext);
        }
    }
}
