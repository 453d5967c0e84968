//! The envelope every object a backup writes to its target is sealed in
//! (pieces, manifests, journals, drill results): compressed with zstd,
//! then encrypted and authenticated with SM4-GCM under the target's backup
//! key. Nothing of a volume's data, nor a manifest, leaves the cluster in
//! the clear.
//!
//! # Format, version 1
//!
//! ```text
//! offset  bytes  field
//! 0       4      kind: "CYBP" piece, "CYBM" manifest, "CYBJ" journal, "CYBD" drill
//! 4       1      format version: 1
//! 5       1      compression: 0 none, 1 zstd
//! 6       2      zero
//! 8       4      plaintext length, little-endian
//! 12      12     nonce: fresh random per object
//! 24      n      ciphertext: SM4-GCM of the (compressed) plaintext
//! 24+n    16     tag, over bytes 0..24 and the object's name as AAD
//! ```
//!
//! The object's name (a piece's id, a manifest's volume and backup id) is
//! in the tag, so an object moved or copied to another name does not open.
//! The plaintext is stored uncompressed when zstd does not make it smaller
//! (already compressed or encrypted data).

use bytes::Bytes;
use chuyi_common::secret::fill_random;
use chuyi_common::sm4::{Sm4Gcm, GCM_NONCE_BYTES, GCM_TAG_BYTES};

use crate::error::BackupError;

pub const HEADER_BYTES: usize = 24;
/// Bytes an envelope adds to what it holds (compressed).
pub const OVERHEAD_BYTES: usize = HEADER_BYTES + GCM_TAG_BYTES;
/// Most bytes an envelope may open to: a manifest of a 4 TiB volume.
pub const PLAINTEXT_MAX_BYTES: usize = 256 << 20;
const VERSION: u8 = 1;
/// zstd's level: its default, about 300 MB/s a core on volume data, where
/// the target link, not the CPU, is the limit.
const ZSTD_LEVEL: i32 = 3;

/// What an envelope holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Piece,
    Manifest,
    Journal,
    Drill,
}

impl Kind {
    fn magic(self) -> &'static [u8; 4] {
        match self {
            Self::Piece => b"CYBP",
            Self::Manifest => b"CYBM",
            Self::Journal => b"CYBJ",
            Self::Drill => b"CYBD",
        }
    }
}

/// Compresses and seals `plain` as a `kind` named `name`.
/// Whether an envelope of `kind` may hold `plain_len` bytes: what [`open`]
/// reads back. A piece holds at most a span; anything else (a manifest
/// grows by 33 bytes a span of data) at most [`PLAINTEXT_MAX_BYTES`].
pub fn holds(kind: Kind, plain_len: usize) -> bool {
    let most = if kind == Kind::Piece { crate::repo::PIECE_BYTES as usize } else { PLAINTEXT_MAX_BYTES };
    plain_len <= most
}

pub fn seal(gcm: &Sm4Gcm, kind: Kind, name: &[u8], plain: &[u8]) -> Bytes {
    let compressed = compress(plain);
    let (codec, body) = match &compressed {
        Some(c) => (1u8, c.as_slice()),
        None => (0u8, plain),
    };
    let mut out = Vec::with_capacity(OVERHEAD_BYTES + body.len());
    out.extend_from_slice(kind.magic());
    out.extend_from_slice(&[VERSION, codec, 0, 0]);
    out.extend_from_slice(&(plain.len() as u32).to_le_bytes());
    let mut nonce = [0u8; GCM_NONCE_BYTES];
    fill_random(&mut nonce);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(body);
    let (header, data) = out.split_at_mut(HEADER_BYTES);
    let tag = gcm.seal(&nonce, &aad(header, name), data);
    out.extend_from_slice(&tag);
    Bytes::from(out)
}

/// The plaintext of a `kind` named `name`, if it is one, sealed under this
/// key, and unaltered; `what` names it in errors.
pub fn open(gcm: &Sm4Gcm, kind: Kind, name: &[u8], sealed: &[u8], what: &str) -> Result<Vec<u8>, BackupError> {
    let bad = |why: &str| BackupError::corrupt(what, why);
    if sealed.len() < OVERHEAD_BYTES {
        return Err(bad("shorter than an envelope"));
    }
    let (header, rest) = sealed.split_at(HEADER_BYTES);
    if &header[0..4] != kind.magic() {
        return Err(bad("not the kind of object its name says"));
    }
    if header[4] != VERSION {
        return Err(bad(&format!("envelope format {} (this build reads {VERSION})", header[4])));
    }
    let codec = header[5];
    let plain_len = u32::from_le_bytes([header[8], header[9], header[10], header[11]]) as usize;
    // Checked before anything is allocated for it: a piece never holds
    // more than a span, whatever a damaged or hostile target says.
    if !holds(kind, plain_len) {
        return Err(bad("says it holds more than an envelope of its kind may"));
    }
    let mut nonce = [0u8; GCM_NONCE_BYTES];
    nonce.copy_from_slice(&header[12..24]);
    let (body, tag) = rest.split_at(rest.len() - GCM_TAG_BYTES);
    let tag: [u8; GCM_TAG_BYTES] = tag.try_into().map_err(|_| bad("no tag"))?;
    let mut body = body.to_vec();
    gcm.open(&nonce, &aad(header, name), &mut body, &tag)
        .map_err(|_| bad("fails authentication (altered, renamed, or sealed under another key)"))?;
    let plain = match codec {
        0 => body,
        1 => decompress(&body, plain_len).ok_or_else(|| bad("does not decompress"))?,
        other => return Err(bad(&format!("compression {other} is unknown"))),
    };
    if plain.len() != plain_len {
        return Err(bad("holds another length than its header says"));
    }
    Ok(plain)
}

fn aad(header: &[u8], name: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + name.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(name);
    aad
}

/// zstd of `plain`, if it is smaller.
fn compress(plain: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![0u8; zstd_safe::compress_bound(plain.len())];
    let n = zstd_safe::compress(&mut out[..], plain, ZSTD_LEVEL).ok()?;
    out.truncate(n);
    (n < plain.len()).then_some(out)
}

fn decompress(stored: &[u8], plain_len: usize) -> Option<Vec<u8>> {
    let mut out = vec![0u8; plain_len];
    let n = zstd_safe::decompress(&mut out[..], stored).ok()?;
    out.truncate(n);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gcm(k: u8) -> Sm4Gcm {
        Sm4Gcm::new(&[k; 16])
    }

    #[test]
    fn an_envelope_holds_no_more_than_is_read_back() {
        assert!(holds(Kind::Manifest, PLAINTEXT_MAX_BYTES));
        assert!(!holds(Kind::Manifest, PLAINTEXT_MAX_BYTES + 1), "a manifest no reader opens");
        assert!(holds(Kind::Piece, crate::repo::PIECE_BYTES as usize));
        assert!(!holds(Kind::Piece, crate::repo::PIECE_BYTES as usize + 1));
    }

    #[test]
    fn sealed_objects_open_to_what_was_sealed_compressed_or_not() {
        let text = b"medical image header ".repeat(500);
        let mut noise = vec![0u8; 5000];
        fill_random(&mut noise);
        for plain in [&text[..], &noise[..], &[][..]] {
            let sealed = seal(&gcm(1), Kind::Piece, b"id", plain);
            assert_eq!(open(&gcm(1), Kind::Piece, b"id", &sealed, "p").expect("open"), plain);
        }
        assert!(seal(&gcm(1), Kind::Piece, b"id", &text).len() < text.len() / 10, "text compresses");
        assert!(seal(&gcm(1), Kind::Piece, b"id", &noise).len() == noise.len() + OVERHEAD_BYTES);
    }

    #[test]
    fn no_plaintext_is_in_the_envelope() {
        let plain = b"PATIENT-NAME^DOE^JOHN ".repeat(200);
        let sealed = seal(&gcm(1), Kind::Piece, b"id", &plain);
        assert!(!sealed.windows(8).any(|w| w == b"PATIENT-"));
    }

    #[test]
    fn another_key_name_kind_or_any_flipped_bit_is_refused() {
        let sealed = seal(&gcm(1), Kind::Manifest, b"vol/1", b"manifest bytes");
        assert!(open(&gcm(2), Kind::Manifest, b"vol/1", &sealed, "m").is_err());
        assert!(open(&gcm(1), Kind::Manifest, b"vol/2", &sealed, "m").is_err());
        assert!(open(&gcm(1), Kind::Journal, b"vol/1", &sealed, "m").is_err());
        for i in 0..sealed.len() {
            let mut bad = sealed.to_vec();
            bad[i] ^= 0x10;
            assert!(open(&gcm(1), Kind::Manifest, b"vol/1", &bad, "m").is_err(), "bit in byte {i}");
        }
        assert!(open(&gcm(1), Kind::Manifest, b"vol/1", &sealed[..10], "m").is_err());
        let big = seal(&gcm(1), Kind::Piece, b"id", &vec![0u8; (crate::repo::PIECE_BYTES + 1) as usize]);
        assert!(open(&gcm(1), Kind::Piece, b"id", &big, "p").is_err(), "a piece above a span");
    }
}
