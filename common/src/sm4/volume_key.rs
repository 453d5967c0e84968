//! A volume's data key and the master key (KEK) it is kept under.
//!
//! Each encrypted volume has its own random SM4-XTS key (32 bytes: data
//! key and tweak key). It exists in clear only in the memory of the
//! frontend serving the volume; the metadata service stores it wrapped
//! under the KEK ([`super::Kek::wrap`]), bound to the volume's name, and
//! the KEK itself is read at start from a file or the environment and
//! never stored by chuyi: not on a data disk, not in metadata, not in a
//! log. Rotating the KEK re-wraps every volume's key and touches no data;
//! destroying a wrapped key makes the volume's data unreadable for good
//! (crypto-erase).
//!
//! The KEK is written as 32 hex digits (16 bytes), in a file of its own or
//! in [`KEK_ENV`].

use std::path::{Path, PathBuf};

use zeroize::{Zeroize, Zeroizing};

use super::wrap::{Kek, WrapError};
use super::xts::{Sm4Xts, XtsError, XtsStandard, XTS_KEY_BYTES};
use super::SM4_KEY_BYTES;
use crate::secret::{fill_random, hex};

/// The environment variable holding the KEK in hex, when no file is given.
pub const KEK_ENV: &str = "CHUYI_KEK";

/// Why a KEK or a volume key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading the master key (KEK) file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the master key (KEK) must be {} hex digits", 2 * SM4_KEY_BYTES)]
    Malformed,
    #[error("volume {volume:?} is encrypted and no master key (KEK) was given")]
    NoKek { volume: String },
    #[error("volume {volume:?}: its key was wrapped under another master key (KEK): {source}")]
    WrongKek { volume: String, source: WrapError },
    #[error("volume {volume:?}: its wrapped key does not open: {source}")]
    Unwrap { volume: String, source: WrapError },
    #[error("volume {volume:?}: its key is not a usable SM4-XTS key: {source}")]
    BadKey { volume: String, source: XtsError },
}

/// Reads the KEK from `file` if given, else from [`KEK_ENV`]; `None` when
/// neither is there.
pub fn load_kek(file: Option<&Path>) -> Result<Option<Kek>, KeyError> {
    let text = match file {
        Some(path) => Zeroizing::new(
            std::fs::read_to_string(path).map_err(|source| KeyError::Read { path: path.into(), source })?,
        ),
        None => match std::env::var(KEK_ENV) {
            Ok(text) => Zeroizing::new(text),
            Err(_) => return Ok(None),
        },
    };
    parse_kek(&text).map(Some)
}

/// A KEK from its 32 hex digits (surrounding whitespace ignored).
pub fn parse_kek(text: &str) -> Result<Kek, KeyError> {
    let text = text.trim();
    if text.len() != 2 * SM4_KEY_BYTES || !text.is_ascii() {
        return Err(KeyError::Malformed);
    }
    let mut key = Zeroizing::new([0u8; SM4_KEY_BYTES]);
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| KeyError::Malformed)?;
    }
    Ok(Kek::new(&key))
}

/// A fresh random KEK, in hex.
pub fn generate_kek_hex() -> Zeroizing<String> {
    let mut key = Zeroizing::new([0u8; SM4_KEY_BYTES]);
    fill_random(key.as_mut());
    Zeroizing::new(hex(key.as_ref()))
}

/// A fresh data key for volume `volume`, wrapped under `kek`: what the
/// metadata service stores.
pub fn new_wrapped_volume_key(kek: &Kek, volume: &str) -> Vec<u8> {
    let mut key = Zeroizing::new([0u8; XTS_KEY_BYTES]);
    // Equal halves are refused by XTS; a random draw repeats with
    // probability 2^-128, but the check costs nothing.
    while key[..XTS_KEY_BYTES / 2] == key[XTS_KEY_BYTES / 2..] {
        fill_random(key.as_mut());
    }
    kek.wrap(key.as_ref(), &context(volume))
}

/// Opens volume `volume`'s wrapped key under `kek`, ready to encrypt its
/// 4 KiB blocks (GB/T 17964 form, the block's number as the tweak).
pub fn open_volume_key(kek: Option<&Kek>, volume: &str, wrapped: &[u8]) -> Result<Sm4Xts, KeyError> {
    let kek = kek.ok_or_else(|| KeyError::NoKek { volume: volume.into() })?;
    let key = unwrap(kek, volume, wrapped)?;
    let mut bytes = [0u8; XTS_KEY_BYTES];
    bytes.copy_from_slice(&key);
    let xts = Sm4Xts::new(&bytes, XtsStandard::GbT17964);
    bytes.zeroize();
    xts.map_err(|source| KeyError::BadKey { volume: volume.into(), source })
}

/// Volume `volume`'s wrapped key, unwrapped with `old` and wrapped again
/// with `new`. The data key, and so the data, stay as they are.
pub fn rewrap_volume_key(old: &Kek, new: &Kek, volume: &str, wrapped: &[u8]) -> Result<Vec<u8>, KeyError> {
    let key = unwrap(old, volume, wrapped)?;
    Ok(new.wrap(&key, &context(volume)))
}

/// Volume `from`'s wrapped key wrapped for volume `to` under the same
/// `kek` (the wrap is bound to the volume's name): a clone's, which reads
/// its parent's ciphertext and so needs its parent's data key.
pub fn rebind_volume_key(kek: &Kek, from: &str, to: &str, wrapped: &[u8]) -> Result<Vec<u8>, KeyError> {
    let key = unwrap(kek, from, wrapped)?;
    Ok(kek.wrap(&key, &context(to)))
}

/// Whether volume `volume`'s `wrapped` key opens under `kek` (a full
/// unwrap: the 32-bit key id alone could collide, and a rotation that
/// skipped a volume on a collision would lose it with the old KEK).
pub fn is_wrapped_under(kek: &Kek, volume: &str, wrapped: &[u8]) -> bool {
    unwrap(kek, volume, wrapped).is_ok()
}

fn unwrap(kek: &Kek, volume: &str, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let key = kek.unwrap(wrapped, &context(volume)).map_err(|source| match source {
        WrapError::WrongKek { .. } => KeyError::WrongKek { volume: volume.into(), source },
        source => KeyError::Unwrap { volume: volume.into(), source },
    })?;
    if key.len() != XTS_KEY_BYTES {
        return Err(KeyError::Unwrap { volume: volume.into(), source: WrapError::BadTag });
    }
    Ok(key)
}

/// What a volume's wrapped key is bound to: its name, so the key of one
/// volume copied into another's record does not open there.
fn context(volume: &str) -> Vec<u8> {
    let mut c = b"chuyi volume data key\0".to_vec();
    c.extend_from_slice(volume.as_bytes());
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek() -> Kek {
        parse_kek(&generate_kek_hex()).expect("a generated KEK parses")
    }

    #[test]
    fn a_volume_key_opens_under_its_kek_and_name_only() {
        let (a, b) = (kek(), kek());
        let wrapped = new_wrapped_volume_key(&a, "vm1");
        let xts = open_volume_key(Some(&a), "vm1", &wrapped).expect("opens");
        let mut block = [7u8; 4096];
        xts.encrypt_unit(3, &mut block).expect("encrypts");
        assert_ne!(block, [7u8; 4096]);
        assert!(matches!(open_volume_key(None, "vm1", &wrapped), Err(KeyError::NoKek { .. })));
        assert!(matches!(open_volume_key(Some(&b), "vm1", &wrapped), Err(KeyError::WrongKek { .. })));
        assert!(matches!(open_volume_key(Some(&a), "vm2", &wrapped), Err(KeyError::Unwrap { .. })));
        assert!(is_wrapped_under(&a, "vm1", &wrapped) && !is_wrapped_under(&b, "vm1", &wrapped));
        assert!(!is_wrapped_under(&a, "vm2", &wrapped));
    }

    #[test]
    fn rewrapping_keeps_the_data_key() {
        let (old, new) = (kek(), kek());
        let wrapped = new_wrapped_volume_key(&old, "vm1");
        let rewrapped = rewrap_volume_key(&old, &new, "vm1", &wrapped).expect("rewraps");
        let (mut x, mut y) = ([9u8; 4096], [9u8; 4096]);
        open_volume_key(Some(&old), "vm1", &wrapped).expect("old").encrypt_unit(1, &mut x).expect("enc");
        open_volume_key(Some(&new), "vm1", &rewrapped).expect("new").encrypt_unit(1, &mut y).expect("enc");
        assert_eq!(x, y, "the same data key under the new KEK");
        assert!(matches!(open_volume_key(Some(&old), "vm1", &rewrapped), Err(KeyError::WrongKek { .. })));
    }

    #[test]
    fn keks_parse_from_hex_only() {
        assert!(parse_kek(" 00112233445566778899aabbccddeeff\n").is_ok());
        assert!(matches!(parse_kek("00112233"), Err(KeyError::Malformed)));
        assert!(matches!(parse_kek("zz112233445566778899aabbccddeeff"), Err(KeyError::Malformed)));
        assert!(matches!(parse_kek("é0112233445566778899aabbccddeef"), Err(KeyError::Malformed)));
    }
}
