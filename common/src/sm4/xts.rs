//! SM4-XTS: length-preserving encryption of data units (a volume's 4 KiB
//! blocks), each under its own tweak, in one of two standard forms.
//!
//! A data unit of n cipher blocks is encrypted block by block as
//! C_i = E_K1(P_i ⊕ T_i) ⊕ T_i, with T_0 = E_K2(tweak input) and
//! T_(i+1) = T_i·α in GF(2^128). The forms differ only in how T·α is
//! computed from T's 16 bytes, and so give different ciphertext after the
//! first block:
//!
//! ```text
//! GB/T 17964-2021: t = T read big-endian;    T·α = t >> 1, ^ 0xe1 << 120 if t's bit 0 was set
//!                  (GCM's bit-reflected order)
//! IEEE 1619:       t = T read little-endian; T·α = t << 1, ^ 0x87        if t's bit 127 was set
//! ```
//!
//! A unit whose length is not a multiple of 16 bytes ends in ciphertext
//! stealing, the same in both forms: the last full block is encrypted with
//! T_(n-1), the partial block takes the first bytes of that ciphertext, and
//! the partial plaintext padded with the rest of it is encrypted with T_n
//! into the last full block's place. A unit has at least 16 bytes.
//!
//! The tweak input for unit number `u` is `u` as 16 bytes little-endian, in
//! both forms (IEEE 1619's data unit sequence number, and what dm-crypt's
//! `plain64` IV gives; GB/T 17964 leaves the encoding to the user). The
//! `*_with_tweak` methods take the 16 bytes as they are, for the standards'
//! test vectors.
//!
//! The key is K1 (data) then K2 (tweak), 16 bytes each; equal halves are
//! refused, as IEEE 1619 and OpenSSL do.

use zeroize::Zeroize;

use super::block::{Implementation, Sm4};
use super::key_schedule::{Direction, SM4_KEY_BYTES};
use super::CipherBlock;

/// Bytes of an SM4-XTS key: K1 then K2.
pub const XTS_KEY_BYTES: usize = 2 * SM4_KEY_BYTES;

/// The shortest data unit XTS encrypts: one cipher block.
pub const XTS_MIN_UNIT_BYTES: usize = 16;

/// Blocks whose tweaks are computed before one bulk call to the cipher.
const BATCH_BLOCKS: usize = 64;

/// Units whose first tweaks are encrypted in one bulk call.
const TWEAK_BATCH_UNITS: usize = 16;

/// Which standard's XTS: they differ in the tweak's multiplication by α.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum XtsStandard {
    /// GB/T 17964-2021, the Chinese national standard; volumes use it.
    #[default]
    GbT17964,
    /// IEEE P1619 (IEEE 1619-2007), as Linux dm-crypt's `xts` does it.
    Ieee1619,
}

/// Why an XTS key or buffer was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum XtsError {
    #[error("the two halves of an XTS key are equal; IEEE 1619 requires independent data and tweak keys")]
    EqualKeyHalves,
    #[error("this CPU cannot run the {0} implementation of SM4")]
    Unsupported(Implementation),
    #[error("an XTS data unit of {len_bytes} bytes is too short: at least {XTS_MIN_UNIT_BYTES}")]
    UnitTooShort { len_bytes: usize },
    #[error("{len_bytes} bytes are not a whole number of {unit_bytes}-byte data units")]
    NotWholeUnits { len_bytes: usize, unit_bytes: usize },
    #[error("{units} data units from unit number {first_unit} run past the last unit number")]
    UnitNumberOverflow { first_unit: u64, units: usize },
}

/// An SM4-XTS key in one standard's form. Round keys are zeroed on drop.
#[derive(Clone, Debug)]
pub struct Sm4Xts {
    data: Sm4,
    tweak: Sm4,
    standard: XtsStandard,
}

impl Sm4Xts {
    /// The key on the fastest SM4 implementation this CPU has.
    pub fn new(key: &[u8; XTS_KEY_BYTES], standard: XtsStandard) -> Result<Self, XtsError> {
        Self::with_implementation(key, standard, Implementation::fastest())
    }

    /// The key on the given SM4 implementation (benchmarks and tests).
    pub fn with_implementation(
        key: &[u8; XTS_KEY_BYTES],
        standard: XtsStandard,
        implementation: Implementation,
    ) -> Result<Self, XtsError> {
        let (mut data_key, mut tweak_key) = ([0u8; SM4_KEY_BYTES], [0u8; SM4_KEY_BYTES]);
        data_key.copy_from_slice(&key[..SM4_KEY_BYTES]);
        tweak_key.copy_from_slice(&key[SM4_KEY_BYTES..]);
        let keys =
            (Sm4::with_implementation(&data_key, implementation), Sm4::with_implementation(&tweak_key, implementation));
        let equal = data_key == tweak_key;
        data_key.zeroize();
        tweak_key.zeroize();
        if equal {
            return Err(XtsError::EqualKeyHalves);
        }
        match keys {
            (Some(data), Some(tweak)) => Ok(Self { data, tweak, standard }),
            _ => Err(XtsError::Unsupported(implementation)),
        }
    }

    pub fn standard(&self) -> XtsStandard {
        self.standard
    }

    pub fn implementation(&self) -> Implementation {
        self.data.implementation()
    }

    /// Encrypts data unit number `unit` (at least 16 bytes) in place.
    pub fn encrypt_unit(&self, unit: u64, data: &mut [u8]) -> Result<(), XtsError> {
        self.crypt_with_tweak(Direction::Encrypt, &tweak_input(unit), data)
    }

    /// Decrypts data unit number `unit` in place.
    pub fn decrypt_unit(&self, unit: u64, data: &mut [u8]) -> Result<(), XtsError> {
        self.crypt_with_tweak(Direction::Decrypt, &tweak_input(unit), data)
    }

    /// Encrypts consecutive units of `unit_bytes` each, numbered from
    /// `first_unit`: a whole multi-block write in one call.
    pub fn encrypt_units(&self, first_unit: u64, data: &mut [u8], unit_bytes: usize) -> Result<(), XtsError> {
        self.crypt_units(Direction::Encrypt, first_unit, data, unit_bytes)
    }

    /// Decrypts consecutive units of `unit_bytes` each, numbered from `first_unit`.
    pub fn decrypt_units(&self, first_unit: u64, data: &mut [u8], unit_bytes: usize) -> Result<(), XtsError> {
        self.crypt_units(Direction::Decrypt, first_unit, data, unit_bytes)
    }

    /// Encrypts one unit under the 16-byte tweak input as given.
    pub fn encrypt_with_tweak(&self, tweak: &CipherBlock, data: &mut [u8]) -> Result<(), XtsError> {
        self.crypt_with_tweak(Direction::Encrypt, tweak, data)
    }

    /// Decrypts one unit under the 16-byte tweak input as given.
    pub fn decrypt_with_tweak(&self, tweak: &CipherBlock, data: &mut [u8]) -> Result<(), XtsError> {
        self.crypt_with_tweak(Direction::Decrypt, tweak, data)
    }

    fn crypt_with_tweak(&self, direction: Direction, tweak: &CipherBlock, data: &mut [u8]) -> Result<(), XtsError> {
        check_unit_len(data.len())?;
        let mut first = [*tweak];
        self.tweak.encrypt_blocks(&mut first);
        self.crypt_unit(direction, first[0], data);
        Ok(())
    }

    fn crypt_units(
        &self,
        direction: Direction,
        first_unit: u64,
        data: &mut [u8],
        unit_bytes: usize,
    ) -> Result<(), XtsError> {
        check_unit_len(unit_bytes)?;
        if !data.len().is_multiple_of(unit_bytes) {
            return Err(XtsError::NotWholeUnits { len_bytes: data.len(), unit_bytes });
        }
        let units = data.len() / unit_bytes;
        let last_unit = u64::try_from(units.saturating_sub(1)).ok().and_then(|n| first_unit.checked_add(n));
        if last_unit.is_none() {
            return Err(XtsError::UnitNumberOverflow { first_unit, units });
        }
        let mut unit = first_unit;
        for batch in data.chunks_mut(TWEAK_BATCH_UNITS * unit_bytes) {
            let mut tweaks = [[0u8; 16]; TWEAK_BATCH_UNITS];
            let tweaks = &mut tweaks[..batch.len() / unit_bytes];
            for (i, tweak) in (0u64..).zip(tweaks.iter_mut()) {
                *tweak = tweak_input(unit + i);
            }
            self.tweak.encrypt_blocks(tweaks);
            for (chunk, tweak) in batch.chunks_mut(unit_bytes).zip(tweaks.iter()) {
                self.crypt_unit(direction, *tweak, chunk);
            }
            unit = unit.wrapping_add(tweaks.len() as u64);
        }
        Ok(())
    }

    /// One unit of at least 16 bytes, given T_0.
    fn crypt_unit(&self, direction: Direction, first_tweak: CipherBlock, data: &mut [u8]) {
        let mut tweak = Tweak::new(self.standard, first_tweak);
        let (blocks, partial) = data.as_chunks_mut::<16>();
        if partial.is_empty() {
            self.xex(direction, blocks, &mut tweak);
            return;
        }
        let Some((last, head)) = blocks.split_last_mut() else { unreachable!("a unit has at least one full block") };
        self.xex(direction, head, &mut tweak);
        let before = tweak.block();
        tweak.advance();
        let after = tweak.block();
        // Decryption undoes the last two steps of encryption, so it uses
        // the two tweaks the other way round.
        let (first, second) = match direction {
            Direction::Encrypt => (before, after),
            Direction::Decrypt => (after, before),
        };
        let stolen = self.xex_one(direction, *last, &first);
        let mut padded = stolen;
        padded[..partial.len()].copy_from_slice(partial);
        partial.copy_from_slice(&stolen[..partial.len()]);
        *last = self.xex_one(direction, padded, &second);
    }

    /// XORs the tweak in, runs the cipher, XORs it again, for each block,
    /// moving the tweak along; the cipher sees [`BATCH_BLOCKS`] at a time.
    fn xex(&self, direction: Direction, blocks: &mut [CipherBlock], tweak: &mut Tweak) {
        let mut tweaks = [[0u8; 16]; BATCH_BLOCKS];
        for batch in blocks.chunks_mut(BATCH_BLOCKS) {
            let tweaks = &mut tweaks[..batch.len()];
            tweak.fill(tweaks);
            xor_blocks(batch, tweaks);
            self.data.crypt_blocks(direction, batch);
            xor_blocks(batch, tweaks);
        }
    }

    fn xex_one(&self, direction: Direction, mut block: CipherBlock, tweak: &CipherBlock) -> CipherBlock {
        xor_into(&mut block, tweak);
        self.data.crypt_blocks(direction, core::slice::from_mut(&mut block));
        xor_into(&mut block, tweak);
        block
    }
}

fn check_unit_len(len_bytes: usize) -> Result<(), XtsError> {
    if len_bytes < XTS_MIN_UNIT_BYTES {
        return Err(XtsError::UnitTooShort { len_bytes });
    }
    Ok(())
}

/// The tweak input of unit number `unit`: 16 bytes little-endian.
fn tweak_input(unit: u64) -> CipherBlock {
    u128::from(unit).to_le_bytes()
}

fn xor_into(block: &mut CipherBlock, other: &CipherBlock) {
    *block = (u128::from_ne_bytes(*block) ^ u128::from_ne_bytes(*other)).to_ne_bytes();
}

fn xor_blocks(blocks: &mut [CipherBlock], others: &[CipherBlock]) {
    for (block, other) in blocks.iter_mut().zip(others) {
        xor_into(block, other);
    }
}

/// T_i as a 128-bit number in its standard's byte order.
struct Tweak {
    value: u128,
    standard: XtsStandard,
}

impl Tweak {
    fn new(standard: XtsStandard, block: CipherBlock) -> Self {
        let value = match standard {
            XtsStandard::GbT17964 => u128::from_be_bytes(block),
            XtsStandard::Ieee1619 => u128::from_le_bytes(block),
        };
        Self { value, standard }
    }

    fn block(&self) -> CipherBlock {
        match self.standard {
            XtsStandard::GbT17964 => self.value.to_be_bytes(),
            XtsStandard::Ieee1619 => self.value.to_le_bytes(),
        }
    }

    /// Writes T_i, T_(i+1), ... into `out` and moves on past them. The
    /// standard is matched once, not per block.
    fn fill(&mut self, out: &mut [CipherBlock]) {
        match self.standard {
            XtsStandard::GbT17964 => self.value = fill_with(self.value, out, gb_times_alpha, u128::to_be_bytes),
            XtsStandard::Ieee1619 => self.value = fill_with(self.value, out, ieee_times_alpha, u128::to_le_bytes),
        }
    }

    fn advance(&mut self) {
        self.value = match self.standard {
            XtsStandard::GbT17964 => gb_times_alpha(self.value),
            XtsStandard::Ieee1619 => ieee_times_alpha(self.value),
        };
    }
}

#[inline(always)]
fn fill_with(
    mut value: u128,
    out: &mut [CipherBlock],
    times_alpha: fn(u128) -> u128,
    bytes: fn(u128) -> CipherBlock,
) -> u128 {
    for block in out {
        *block = bytes(value);
        value = times_alpha(value);
    }
    value
}

/// T·α for GB/T 17964, without a branch on the tweak's bits (they depend on
/// the key).
fn gb_times_alpha(t: u128) -> u128 {
    (t >> 1) ^ (0u128.wrapping_sub(t & 1) & 0xe1 << 120)
}

/// T·α for IEEE 1619, without a branch.
fn ieee_times_alpha(t: u128) -> u128 {
    (t << 1) ^ (0u128.wrapping_sub(t >> 127) & 0x87)
}

#[cfg(test)]
mod tests {
    use ::sm4::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
    use proptest::prelude::*;
    use sha2::{Digest, Sha256};

    use super::*;

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect()
    }

    fn array<const N: usize>(text: &str) -> [u8; N] {
        unhex(text).try_into().expect("length")
    }

    fn supported() -> Vec<Implementation> {
        Implementation::ALL.into_iter().filter(|imp| imp.is_supported()).collect()
    }

    /// One known answer: encrypts under every implementation, decrypts back.
    fn check_vector(standard: XtsStandard, key: &str, tweak: &str, plaintext: &str, ciphertext: &str) {
        let (key, tweak) = (array::<32>(key), array::<16>(tweak));
        let (plaintext, ciphertext) = (unhex(plaintext), unhex(ciphertext));
        for imp in supported() {
            let xts = Sm4Xts::with_implementation(&key, standard, imp).expect("valid key");
            let mut data = plaintext.clone();
            xts.encrypt_with_tweak(&tweak, &mut data).expect("long enough");
            assert_eq!(data, ciphertext, "{standard:?} on {imp}");
            xts.decrypt_with_tweak(&tweak, &mut data).expect("long enough");
            assert_eq!(data, plaintext, "{standard:?} on {imp}");
        }
    }

    const KEY: &str = "2b7e151628aed2a6abf7158809cf4f3c000102030405060708090a0b0c0d0e0f";
    const TWEAK: &str = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
    /// 56 bytes: three blocks and a half, so ciphertext stealing too.
    const PLAINTEXT: &str = concat!(
        "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51",
        "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17",
    );

    /// GB/T 17964-2021's example, as in OpenSSL's evpciph_sm4.txt.
    #[test]
    fn gb_t_17964_vector() {
        let ciphertext = concat!(
            "e9538251c71d7b80bbe4483fef497bd12c5c581bd6242fc51e08964fb4f60fdb",
            "0ba42f63499279213d318d2c11f6886e903be7f93a1b3479",
        );
        check_vector(XtsStandard::GbT17964, KEY, TWEAK, PLAINTEXT, ciphertext);
    }

    /// The same key and data in IEEE 1619's form (OpenSSL's evpciph_sm4.txt):
    /// the first block, with T_0, is the same; the rest differ.
    #[test]
    fn ieee_1619_vector() {
        let ciphertext = concat!(
            "e9538251c71d7b80bbe4483fef497bd1b3db1a3e60408c575d63ff7db39f8326",
            "0869f9e2585fec9f0b863bf8fd784b8627d16c0db6d2cfc7",
        );
        check_vector(XtsStandard::Ieee1619, KEY, TWEAK, PLAINTEXT, ciphertext);
    }

    /// 17 bytes, the shortest unit with stealing (OpenSSL's evpciph_sm4.txt,
    /// which runs it in its default form, GB/T).
    #[test]
    fn gb_t_17964_seventeen_bytes() {
        check_vector(
            XtsStandard::GbT17964,
            "fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0bfbebdbcbbbab9b8b7b6b5b4b3b2b1b0",
            "9a785634120000000000000000000000",
            "000102030405060708090a0b0c0d0e0f10",
            "9e52443a35410ca0ba5637b94c0766f469",
        );
    }

    /// Whole 4 KiB units numbered as volumes number them, and one of 4093
    /// bytes. The SHA-256 of each ciphertext was computed with a separate
    /// Python implementation of both forms over `cryptography`'s SM4-ECB
    /// (OpenSSL's), itself checked against the vectors above: this pins the
    /// unit number's encoding and 255 steps of T·α.
    #[test]
    fn four_kib_units_match_independent_implementation() {
        let key = array::<32>(KEY);
        let data: Vec<u8> = (0..4096usize).map(|i| ((i * 31 + i / 251) % 256) as u8).collect();
        let cases = [
            (XtsStandard::GbT17964, 0, 4096, "bb8f67943dbec3adc7badba33417581c31fe400125daeec69cfe54325ca2126f"),
            (
                XtsStandard::GbT17964,
                0x0123_4567_89ab_cdef,
                4096,
                "f73eed75e946555dfa67c330802607b88a5bd1eae0ca2c68f308db4527553285",
            ),
            (XtsStandard::Ieee1619, 0, 4096, "28ee0dfdd39c79ba7a1df03fa6cdfc170b4002146b077fa5aeb2202d826b7d6c"),
            (
                XtsStandard::Ieee1619,
                0x0123_4567_89ab_cdef,
                4096,
                "f55c85ab4a30350b5ad863c487ea2619454ead09ac3d327359933771416d05ec",
            ),
            (XtsStandard::GbT17964, 7, 4093, "8c5e38fc63b81a7efe94648ffc15f54d2b53c7d09e398055a40dca9f9a672320"),
            (XtsStandard::Ieee1619, 7, 4093, "da944820f97f264a8c934de783dfd698614b5f4d3ad7e0ca6a79ec077b00d602"),
        ];
        for (standard, unit, len, digest) in cases {
            for imp in supported() {
                let xts = Sm4Xts::with_implementation(&key, standard, imp).expect("valid key");
                let mut unit_data = data[..len].to_vec();
                xts.encrypt_unit(unit, &mut unit_data).expect("long enough");
                assert_eq!(Sha256::digest(&unit_data).to_vec(), unhex(digest), "{standard:?} unit {unit} on {imp}");
            }
        }
    }

    #[test]
    fn refuses_equal_key_halves() {
        let key = [7u8; XTS_KEY_BYTES];
        assert!(matches!(Sm4Xts::new(&key, XtsStandard::GbT17964), Err(XtsError::EqualKeyHalves)));
    }

    /// Short units and ragged buffers are errors, and leave the data alone.
    #[test]
    fn refuses_bad_lengths() {
        let xts = Sm4Xts::new(&array::<32>(KEY), XtsStandard::GbT17964).expect("valid key");
        let mut data = vec![0xa5u8; 15];
        assert_eq!(xts.encrypt_unit(0, &mut data), Err(XtsError::UnitTooShort { len_bytes: 15 }));
        assert_eq!(xts.decrypt_unit(0, &mut []), Err(XtsError::UnitTooShort { len_bytes: 0 }));
        assert_eq!(xts.encrypt_units(0, &mut data, 8), Err(XtsError::UnitTooShort { len_bytes: 8 }));
        assert!(data.iter().all(|&b| b == 0xa5));
        let mut ragged = vec![0u8; 4096 + 512];
        let expected = XtsError::NotWholeUnits { len_bytes: 4608, unit_bytes: 4096 };
        assert_eq!(xts.encrypt_units(0, &mut ragged, 4096), Err(expected));
        let overflow = XtsError::UnitNumberOverflow { first_unit: u64::MAX, units: 2 };
        assert_eq!(xts.encrypt_units(u64::MAX, &mut [0u8; 64], 32), Err(overflow));
        assert_eq!(xts.encrypt_units(u64::MAX, &mut [0u8; 32], 32), Ok(()));
        assert_eq!(xts.encrypt_units(0, &mut [], 4096), Ok(()));
    }

    /// A tiny XTS straight on the `sm4` crate, written from the standards
    /// rather than from the code above: the tweak moves byte by byte as the
    /// standards draw it, and stealing is spelled out.
    fn reference_xts(key: &[u8; 32], standard: XtsStandard, unit: u64, data: &[u8], encrypt: bool) -> Vec<u8> {
        let data_cipher = ::sm4::Sm4::new(key[..16].into());
        let tweak_cipher = ::sm4::Sm4::new(key[16..].into());
        let crypt = |block: &[u8], tweak: &CipherBlock| -> CipherBlock {
            let mut b: CipherBlock = core::array::from_fn(|i| block[i] ^ tweak[i]);
            if encrypt {
                data_cipher.encrypt_block((&mut b).into());
            } else {
                data_cipher.decrypt_block((&mut b).into());
            }
            core::array::from_fn(|i| b[i] ^ tweak[i])
        };
        let mut tweak = u128::from(unit).to_le_bytes();
        tweak_cipher.encrypt_block((&mut tweak).into());
        let (full, partial) = (data.len() / 16, data.len() % 16);
        let mut tweaks = Vec::new();
        for _ in 0..=full {
            tweaks.push(tweak);
            reference_times_alpha(standard, &mut tweak);
        }
        let plain_blocks = if partial == 0 { full } else { full - 1 };
        let mut out: Vec<u8> = (0..plain_blocks).flat_map(|i| crypt(&data[16 * i..16 * i + 16], &tweaks[i])).collect();
        if partial > 0 {
            let (a, b) = if encrypt { (full - 1, full) } else { (full, full - 1) };
            let stolen = crypt(&data[16 * (full - 1)..16 * full], &tweaks[a]);
            let mut padded = stolen;
            padded[..partial].copy_from_slice(&data[16 * full..]);
            out.extend_from_slice(&crypt(&padded, &tweaks[b]));
            out.extend_from_slice(&stolen[..partial]);
        }
        out
    }

    /// IEEE 1619, 5.2: shift left through the bytes from byte 0 (least
    /// significant), 0x87 into byte 0 on carry out of byte 15. GB/T 17964:
    /// shift right through the bytes from byte 0 (most significant), 0xe1
    /// into byte 0 on carry out of byte 15.
    fn reference_times_alpha(standard: XtsStandard, tweak: &mut CipherBlock) {
        let mut carry = 0u8;
        match standard {
            XtsStandard::Ieee1619 => {
                for byte in tweak.iter_mut() {
                    let out = *byte >> 7;
                    *byte = *byte << 1 | carry;
                    carry = out;
                }
                tweak[0] ^= 0x87 * carry;
            }
            XtsStandard::GbT17964 => {
                for byte in tweak.iter_mut() {
                    let out = *byte & 1;
                    *byte = *byte >> 1 | carry << 7;
                    carry = out;
                }
                tweak[0] ^= 0xe1 * carry;
            }
        }
    }

    fn standards() -> impl Strategy<Value = XtsStandard> {
        prop_oneof![Just(XtsStandard::GbT17964), Just(XtsStandard::Ieee1619)]
    }

    fn xts_key() -> impl Strategy<Value = [u8; 32]> {
        any::<[u8; 32]>().prop_filter("halves differ", |k| k[..16] != k[16..])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Every implementation gives the reference's ciphertext, for both
        /// forms and any length from one block to past a 4 KiB unit,
        /// whole or ragged; and decrypts it back.
        #[test]
        fn matches_reference_on_every_implementation(
            key in xts_key(),
            standard in standards(),
            unit in any::<u64>(),
            plaintext in proptest::collection::vec(any::<u8>(), 16..4200),
        ) {
            let expected = reference_xts(&key, standard, unit, &plaintext, true);
            prop_assert_eq!(reference_xts(&key, standard, unit, &expected, false), plaintext.clone());
            for imp in supported() {
                let xts = Sm4Xts::with_implementation(&key, standard, imp).expect("valid key");
                let mut data = plaintext.clone();
                xts.encrypt_unit(unit, &mut data).expect("long enough");
                prop_assert_eq!(&data, &expected, "{:?} on {}", standard, imp);
                xts.decrypt_unit(unit, &mut data).expect("long enough");
                prop_assert_eq!(&data, &plaintext, "{:?} on {}", standard, imp);
            }
        }

        /// The fast path (whichever this CPU picks) and the portable
        /// fallback give the same bytes, whole and ragged, both ways.
        #[test]
        fn fastest_equals_portable(
            key in xts_key(),
            standard in standards(),
            unit in any::<u64>(),
            plaintext in proptest::collection::vec(any::<u8>(), 16..9000),
        ) {
            let fast = Sm4Xts::new(&key, standard).expect("valid key");
            let portable = Sm4Xts::with_implementation(&key, standard, Implementation::Portable).expect("valid key");
            let (mut a, mut b) = (plaintext.clone(), plaintext.clone());
            fast.encrypt_unit(unit, &mut a).expect("long enough");
            portable.encrypt_unit(unit, &mut b).expect("long enough");
            prop_assert_eq!(&a, &b);
            fast.decrypt_unit(unit, &mut a).expect("long enough");
            portable.decrypt_unit(unit, &mut b).expect("long enough");
            prop_assert_eq!(&a, &plaintext);
            prop_assert_eq!(b, plaintext);
        }

        /// The IEEE form equals the RustCrypto `xts-mode` crate run over the
        /// `sm4` crate: a second, separately written IEEE 1619 XTS.
        #[test]
        fn ieee_matches_xts_mode_crate(
            key in xts_key(),
            unit in any::<u64>(),
            plaintext in proptest::collection::vec(any::<u8>(), 16..1100),
        ) {
            let mut expected = plaintext.clone();
            let reference = xts_mode::Xts128::new(::sm4::Sm4::new(key[..16].into()), ::sm4::Sm4::new(key[16..].into()));
            reference.encrypt_sector(&mut expected, u128::from(unit).to_le_bytes());
            let xts = Sm4Xts::new(&key, XtsStandard::Ieee1619).expect("valid key");
            let mut data = plaintext;
            xts.encrypt_unit(unit, &mut data).expect("long enough");
            prop_assert_eq!(data, expected);
        }

        /// A multi-unit call is the units one by one, numbered on from the first.
        #[test]
        fn units_are_unit_by_unit(
            key in xts_key(),
            standard in standards(),
            first_unit in 0u64..u64::MAX / 2,
            unit_bytes in prop_oneof![Just(16usize), Just(17), Just(512), Just(4096), 16usize..700],
            units in 0usize..40,
            seed in any::<u8>(),
        ) {
            let xts = Sm4Xts::new(&key, standard).expect("valid key");
            let plaintext: Vec<u8> = (0..units * unit_bytes).map(|i| (i as u8).wrapping_mul(seed)).collect();
            let mut whole = plaintext.clone();
            xts.encrypt_units(first_unit, &mut whole, unit_bytes).expect("whole units");
            let mut one_by_one = plaintext.clone();
            for (unit, chunk) in (first_unit..).zip(one_by_one.chunks_mut(unit_bytes)) {
                xts.encrypt_unit(unit, chunk).expect("long enough");
            }
            prop_assert_eq!(&whole, &one_by_one);
            xts.decrypt_units(first_unit, &mut whole, unit_bytes).expect("whole units");
            prop_assert_eq!(whole, plaintext);
        }
    }
}
