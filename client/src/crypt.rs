//! Encrypted volumes: SM4-XTS (GB/T 17964) per 4 KiB block, the block's
//! number within the volume as the tweak, applied in the frontend (and by
//! backups, which read and restore plaintext) so that storage nodes only
//! ever hold ciphertext.
//!
//! A block never written, trimmed or zeroed reads from the nodes as zeros,
//! and must read as zeros to the client too: an all-zero 4 KiB block is
//! passed through as plaintext zeros instead of being deciphered. A real
//! ciphertext block is all zeros with probability 2^-32768, so no written
//! block is mistaken for one. Holes stay holes for `base:allocation`.

use bytes::{Bytes, BytesMut};
use chuyi_common::limits::BLOCK_SIZE_BYTES;
use chuyi_common::sm4::Sm4Xts;
use chuyi_common::sm4::{open_volume_key, Kek, KeyError};
use chuyi_meta_api::model::{Volume, VolumeState};

const BLOCK: u64 = BLOCK_SIZE_BYTES as u64;

static ZERO_BLOCK: [u8; BLOCK_SIZE_BYTES] = [0; BLOCK_SIZE_BYTES];

pub const UNALIGNED: &str = "encrypted volumes take requests of whole, aligned 4 KiB blocks";

/// Why a volume's cipher could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CipherError {
    /// The volume is being deleted and its key is gone: it must not be
    /// served, not even as the zeros its blocks would read as.
    #[error("volume {0:?}'s key was destroyed: it is being deleted")]
    KeyDestroyed(String),
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// The cipher of `volume` if it is encrypted (its wrapped key opened
/// with `kek`), `None` if it is not: what every frontend and backup
/// asks before touching a volume's blocks.
pub fn volume_cipher(kek: Option<&Kek>, volume: &Volume) -> Result<Option<Sm4Xts>, CipherError> {
    if volume.state == VolumeState::KeyDestroyed {
        return Err(CipherError::KeyDestroyed(volume.name.clone()));
    }
    if volume.wrapped_key.is_empty() {
        return Ok(None);
    }
    Ok(Some(open_volume_key(kek, &volume.name, &volume.wrapped_key)?))
}

/// Whether a request covers whole 4 KiB blocks.
pub fn aligned(offset: u64, length: u32) -> bool {
    offset.is_multiple_of(BLOCK) && u64::from(length).is_multiple_of(BLOCK)
}

/// Enciphers `data`, which starts at `offset` (both whole blocks: the
/// caller checked, see [`aligned`]), in place.
pub fn encrypt(xts: &Sm4Xts, offset: u64, data: &mut [u8]) {
    assert!(aligned(offset, data.len() as u32), "only whole blocks are enciphered");
    for (i, block) in data.chunks_exact_mut(BLOCK_SIZE_BYTES).enumerate() {
        xts.encrypt_unit(offset / BLOCK + i as u64, block).expect("a 4 KiB unit of a volume always enciphers");
    }
}

/// Deciphers `data` read at `offset`, leaving all-zero blocks as zeros;
/// in place when nothing else shares the buffer.
pub fn decrypt(xts: &Sm4Xts, offset: u64, data: Bytes) -> Bytes {
    assert!(aligned(offset, data.len() as u32), "only whole blocks are deciphered");
    let mut out = data.try_into_mut().unwrap_or_else(|shared| BytesMut::from(&shared[..]));
    for (i, block) in out.chunks_exact_mut(BLOCK_SIZE_BYTES).enumerate() {
        if block == ZERO_BLOCK.as_slice() {
            continue;
        }
        xts.decrypt_unit(offset / BLOCK + i as u64, block).expect("a 4 KiB unit of a volume always deciphers");
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chuyi_common::sm4::XtsStandard;

    fn xts() -> Sm4Xts {
        let mut key = [0u8; 32];
        key.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        Sm4Xts::new(&key, XtsStandard::GbT17964).expect("key")
    }

    #[test]
    fn blocks_round_trip_with_their_own_tweaks_and_zeros_stay_zeros() {
        let xts = xts();
        let plain: Vec<u8> = (0..3 * BLOCK_SIZE_BYTES).map(|i| (i % 251) as u8).collect();
        let mut data = plain.clone();
        encrypt(&xts, 8192, &mut data);
        assert_ne!(data, plain);
        // The same plaintext at another offset enciphers differently.
        let mut elsewhere = plain[..BLOCK_SIZE_BYTES].to_vec();
        encrypt(&xts, 0, &mut elsewhere);
        assert_ne!(&elsewhere[..], &data[..BLOCK_SIZE_BYTES]);
        // A hole in the middle reads as zeros.
        data[BLOCK_SIZE_BYTES..2 * BLOCK_SIZE_BYTES].fill(0);
        let back = decrypt(&xts, 8192, Bytes::from(data));
        assert_eq!(&back[..BLOCK_SIZE_BYTES], &plain[..BLOCK_SIZE_BYTES]);
        assert!(back[BLOCK_SIZE_BYTES..2 * BLOCK_SIZE_BYTES].iter().all(|&b| b == 0));
        assert_eq!(&back[2 * BLOCK_SIZE_BYTES..], &plain[2 * BLOCK_SIZE_BYTES..]);
    }

    #[test]
    fn alignment_is_whole_blocks() {
        assert!(aligned(4096, 8192));
        assert!(!aligned(512, 4096));
        assert!(!aligned(4096, 512));
    }
}
