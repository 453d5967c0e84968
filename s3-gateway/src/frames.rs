//! Compressed or encrypted object data: one run written as independent
//! frames of [`FRAME_BYTES`] logical bytes each, followed by an index, so
//! that a range GET decompresses and decrypts only the frames it touches.
//! A frame that does not shrink by at least an eighth is stored raw
//! (uncompressed) and costs no decompression on read (JPEG 2000 pixel
//! data, archives, encrypted backups). A sealed run's frames are each
//! compressed (or not), then encrypted with the run's AEAD
//! ([`crate::sse::RunCipher`]).
//!
//! The layout of a framed run (offsets from the run's first byte, integers
//! little-endian):
//!
//! ```text
//! frame 0 payload | frame 1 payload | ... | frame n-1 payload
//! index:   n × u32   payload length, bit 31 set when the frame is raw
//! salt:    16 bytes, only when sealed (cipher ≠ 0)
//! trailer: u64 logical length | u32 frame bytes | u32 n | u8 codec
//!          | u8 layout version | u8 cipher | u8 zero | "CYFZ"   (24 bytes)
//! ```
//!
//! Codec 0 none, 1 zstd, 2 lz4. Layout version 1 (compression only, the
//! cipher byte zero) or 2 (sealed: cipher 1 SM4-GCM, 2 AES-256-GCM). A
//! sealed frame's payload is its ciphertext and 16-byte tag, sealed with
//! nonce = frame index and associated data = frame index (u64) | logical
//! length (u32) | raw (u8), so frames cannot be swapped, cut or their
//! index entries altered unnoticed; the object's size, kept in the
//! metadata service, fixes the number of frames.
//!
//! A run is framed or not as its version's `ObjectPut::flags` say
//! (`OBJECT_FRAMED`); each framed run describes itself, so a multipart
//! object's parts are framed one by one and a run moves between pools as
//! bytes. Everything here is pure: [`crate::data`] does the I/O.

use bytes::{BufMut, Bytes, BytesMut};

use crate::sse::{new_salt, Algorithm, DataKey, RunCipher, Seal, SALT_BYTES, TAG_BYTES};

/// Logical bytes per frame: a range GET reads at most one frame's worth
/// beyond each end of its range; larger frames compress a little better
/// (bench/RESULTS.md).
pub const FRAME_BYTES: usize = 128 << 10;
/// Bytes of the trailer at a framed run's end.
pub const TRAILER_BYTES: usize = 24;
const MAGIC: &[u8; 4] = b"CYFZ";
const LAYOUT_VERSION: u8 = 1;
const SEALED_LAYOUT_VERSION: u8 = 2;
const RAW_BIT: u32 = 1 << 31;
/// zstd level of the "capacity" policy: the knee of the curve on DICOM,
/// source code and logs (bench/RESULTS.md has the levels tried). Level 9
/// saves 0.2–2.3 % more of the data at 0.55–0.75 times the speed, level
/// 19 4–10 % more at a twentieth of it; level 3 keeps 2–9 % more.
pub const ZSTD_LEVEL: i32 = 6;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("framed data ends in no trailer ({0} bytes)")]
    NoTrailer(u64),
    #[error("framed data has layout version {0}, not 1")]
    Version(u8),
    #[error("framed data names codec {0}")]
    Codec(u8),
    #[error("framed data's index does not add up: {0}")]
    Index(&'static str),
    #[error("frame {frame} does not decompress: {why}")]
    Corrupt { frame: usize, why: String },
    #[error("framed data names cipher {0}")]
    Cipher(u8),
    #[error("the run is encrypted and no key was given for it")]
    NeedsKey,
    #[error("the run is not encrypted, yet its object says it is")]
    NotSealed,
    #[error("frame {0} fails authentication: another key, or altered data")]
    Unauthentic(usize),
}

/// How new frames are made: compressed with a codec, sealed with a key,
/// or both. Neither: the data is stored as sent, unframed.
#[derive(Clone, Debug, Default)]
pub struct Spec {
    pub codec: Option<Codec>,
    pub seal: Option<Seal>,
}

impl Spec {
    /// Whether data written this way is framed.
    pub fn framed(&self) -> bool {
        self.codec.is_some() || self.seal.is_some()
    }
}

/// How frames are compressed: the bucket's policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// "capacity": zstd at [`ZSTD_LEVEL`].
    Zstd,
    /// "performance": lz4.
    Lz4,
}

impl Codec {
    /// The codec of a bucket's compression policy; none for `off`.
    pub fn of_policy(policy: Option<&str>) -> Option<Codec> {
        match policy {
            Some("capacity") => Some(Codec::Zstd),
            Some("performance") => Some(Codec::Lz4),
            _ => None,
        }
    }

    fn code(codec: Option<Codec>) -> u8 {
        match codec {
            None => 0,
            Some(Codec::Zstd) => 1,
            Some(Codec::Lz4) => 2,
        }
    }

    fn from_code(code: u8) -> Result<Option<Codec>, FrameError> {
        match code {
            0 => Ok(None),
            1 => Ok(Some(Codec::Zstd)),
            2 => Ok(Some(Codec::Lz4)),
            other => Err(FrameError::Codec(other)),
        }
    }
}

/// A sealed frame's associated data: what the index says of it.
fn frame_aad(frame: usize, raw_len: usize, raw: bool) -> [u8; 13] {
    let mut aad = [0u8; 13];
    aad[..8].copy_from_slice(&(frame as u64).to_le_bytes());
    aad[8..12].copy_from_slice(&(raw_len as u32).to_le_bytes());
    aad[12] = u8::from(raw);
    aad
}

/// Compresses `raw`, or `None` when it would not save an eighth.
fn compress(codec: Codec, zstd: &mut Option<zstd_safe::CCtx<'static>>, raw: &[u8]) -> Option<Vec<u8>> {
    let out = match codec {
        Codec::Lz4 => lz4_flex::block::compress(raw),
        Codec::Zstd => {
            let cctx = zstd.get_or_insert_with(zstd_safe::CCtx::create);
            let mut out = vec![0u8; zstd_safe::compress_bound(raw.len())];
            let n = cctx.compress(&mut out[..], raw, ZSTD_LEVEL).ok()?;
            out.truncate(n);
            out
        }
    };
    (out.len() < raw.len() - raw.len() / 8).then_some(out)
}

fn decompress(codec: Codec, frame: usize, stored: &[u8], raw_len: usize) -> Result<Bytes, FrameError> {
    let corrupt = |why: String| FrameError::Corrupt { frame, why };
    let out = match codec {
        Codec::Lz4 => lz4_flex::block::decompress(stored, raw_len).map_err(|e| corrupt(e.to_string()))?,
        Codec::Zstd => {
            let mut out = vec![0u8; raw_len];
            let n = zstd_safe::decompress(&mut out[..], stored)
                .map_err(|code| corrupt(zstd_safe::get_error_name(code).to_string()))?;
            out.truncate(n);
            out
        }
    };
    if out.len() != raw_len {
        return Err(corrupt(format!("{} bytes, not {raw_len}", out.len())));
    }
    Ok(Bytes::from(out))
}

/// Turns logical bytes into a framed run, a frame at a time. Stored bytes
/// come out as frames fill; [`Encoder::finish`] adds the last frame, the
/// index and the trailer.
pub struct Encoder {
    codec: Option<Codec>,
    /// The run's cipher and salt, when sealed.
    sealed: Option<(RunCipher, Algorithm, [u8; SALT_BYTES])>,
    zstd: Option<zstd_safe::CCtx<'static>>,
    pending: BytesMut,
    index: Vec<u32>,
    logical: u64,
    stored: u64,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").field("codec", &self.codec).field("logical", &self.logical).finish()
    }
}

impl Encoder {
    pub fn new(spec: &Spec) -> Self {
        let sealed = spec.seal.as_ref().map(|seal| {
            let salt = new_salt();
            (RunCipher::new(seal.algorithm, &seal.key, &salt), seal.algorithm, salt)
        });
        let (pending, index) = (BytesMut::new(), Vec::new());
        Self { codec: spec.codec, sealed, zstd: None, pending, index, logical: 0, stored: 0 }
    }

    /// Takes `data`; the stored bytes of the frames it completed.
    pub fn push(&mut self, data: &[u8]) -> Vec<Bytes> {
        self.logical += data.len() as u64;
        self.pending.extend_from_slice(data);
        let mut out = Vec::new();
        while self.pending.len() >= FRAME_BYTES {
            let raw = self.pending.split_to(FRAME_BYTES).freeze();
            out.push(self.frame(raw));
        }
        out
    }

    fn frame(&mut self, raw: Bytes) -> Bytes {
        let packed = self.codec.and_then(|codec| compress(codec, &mut self.zstd, &raw));
        let stored_raw = packed.is_none();
        let payload = match (&self.sealed, packed) {
            (None, Some(packed)) => Bytes::from(packed),
            (None, None) => raw.clone(),
            (Some((cipher, _, _)), packed) => {
                let mut data = packed.unwrap_or_else(|| raw.to_vec());
                cipher.seal(self.index.len() as u64, &frame_aad(self.index.len(), raw.len(), stored_raw), &mut data);
                Bytes::from(data)
            }
        };
        let entry = payload.len() as u32 | if stored_raw { RAW_BIT } else { 0 };
        self.index.push(entry);
        self.stored += payload.len() as u64;
        payload
    }

    /// The last frame, the index and the trailer.
    pub fn finish(mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        if !self.pending.is_empty() {
            let raw = std::mem::take(&mut self.pending).freeze();
            out.push(self.frame(raw));
        }
        let mut tail = BytesMut::with_capacity(self.index.len() * 4 + SALT_BYTES + TRAILER_BYTES);
        for entry in &self.index {
            tail.put_u32_le(*entry);
        }
        let (version, cipher) = match &self.sealed {
            Some((_, algorithm, salt)) => {
                tail.put_slice(salt);
                (SEALED_LAYOUT_VERSION, algorithm.code())
            }
            None => (LAYOUT_VERSION, 0),
        };
        tail.put_u64_le(self.logical);
        tail.put_u32_le(FRAME_BYTES as u32);
        tail.put_u32_le(self.index.len() as u32);
        tail.put_u8(Codec::code(self.codec));
        tail.put_u8(version);
        tail.put_u8(cipher);
        tail.put_u8(0);
        tail.put_slice(MAGIC);
        out.push(tail.freeze());
        out
    }

    /// The stored length of `logical` bytes at most: raw frames, their
    /// tags, the index, the salt and the trailer (what a write reserves
    /// before it knows better).
    pub fn stored_bound(logical: u64, sealed: bool) -> u64 {
        let frames = logical.div_ceil(FRAME_BYTES as u64);
        let sealing = if sealed { frames * TAG_BYTES as u64 + SALT_BYTES as u64 } else { 0 };
        logical + frames * 4 + sealing + TRAILER_BYTES as u64
    }
}

/// Encodes `data` whole (a small object, or a test).
pub fn encode(spec: &Spec, data: &[u8]) -> Bytes {
    let mut encoder = Encoder::new(spec);
    let mut out = BytesMut::new();
    for piece in encoder.push(data) {
        out.extend_from_slice(&piece);
    }
    for piece in encoder.finish() {
        out.extend_from_slice(&piece);
    }
    out.freeze()
}

/// A framed run's index, read from its tail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub logical_len: u64,
    frame_bytes: u64,
    codec: Option<Codec>,
    /// The cipher and salt of a sealed run.
    sealed: Option<(Algorithm, [u8; SALT_BYTES])>,
    /// Each frame's payload: where it starts in the run, its length, raw.
    frames: Vec<(u64, u32, bool)>,
}

impl Layout {
    /// How many bytes at the end of a run of `stored_len` bytes hold its
    /// index and trailer, given the trailer (the last [`TRAILER_BYTES`]).
    pub fn tail_len(trailer: &[u8], stored_len: u64) -> Result<u64, FrameError> {
        let t = trailer.get(trailer.len().saturating_sub(TRAILER_BYTES)..).unwrap_or_default();
        if t.len() != TRAILER_BYTES || &t[20..24] != MAGIC {
            return Err(FrameError::NoTrailer(stored_len));
        }
        let n = u64::from(u32::from_le_bytes([t[12], t[13], t[14], t[15]]));
        let salt = if t[18] != 0 { SALT_BYTES as u64 } else { 0 };
        let tail = n * 4 + salt + TRAILER_BYTES as u64;
        if tail > stored_len {
            return Err(FrameError::Index("the index is longer than the run"));
        }
        Ok(tail)
    }

    /// Parses the index and trailer: `tail` is the run's last bytes (at
    /// least [`Layout::tail_len`] of them) of a run of `stored_len`.
    pub fn parse(tail: &[u8], stored_len: u64) -> Result<Layout, FrameError> {
        let need = Self::tail_len(tail, stored_len)? as usize;
        let Some(tail) = tail.get(tail.len().saturating_sub(need)..).filter(|t| t.len() == need) else {
            return Err(FrameError::Index("fewer bytes than the index and trailer"));
        };
        let (rest, t) = tail.split_at(need - TRAILER_BYTES);
        let u32_at = |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let logical_len = u64::from_le_bytes(t[0..8].try_into().map_err(|_| FrameError::Index("trailer"))?);
        let frame_bytes = u64::from(u32_at(t, 8));
        let codec = Codec::from_code(t[16])?;
        let (index, sealed) = match (t[17], t[18]) {
            (LAYOUT_VERSION, 0) => (rest, None),
            (SEALED_LAYOUT_VERSION, code) => {
                let algorithm = Algorithm::from_code(code).ok_or(FrameError::Cipher(code))?;
                let (index, salt) = rest.split_at(rest.len() - SALT_BYTES);
                let salt: [u8; SALT_BYTES] = salt.try_into().map_err(|_| FrameError::Index("salt"))?;
                (index, Some((algorithm, salt)))
            }
            (LAYOUT_VERSION, code) => return Err(FrameError::Cipher(code)),
            (version, _) => return Err(FrameError::Version(version)),
        };
        if frame_bytes == 0 || logical_len.div_ceil(frame_bytes) != (index.len() / 4) as u64 {
            return Err(FrameError::Index("the frame count does not fit the length"));
        }
        let mut frames = Vec::with_capacity(index.len() / 4);
        let mut at = 0u64;
        for i in 0..index.len() / 4 {
            let entry = u32_at(index, i * 4);
            let len = entry & !RAW_BIT;
            frames.push((at, len, entry & RAW_BIT != 0));
            at += u64::from(len);
        }
        if at + need as u64 != stored_len {
            return Err(FrameError::Index("the frames do not fill the run"));
        }
        Ok(Layout { logical_len, frame_bytes, codec, sealed, frames })
    }

    /// The cipher to open this run's frames with, given its object's data
    /// key (none for an object that is not encrypted).
    pub fn cipher(&self, key: Option<&DataKey>) -> Result<Option<RunCipher>, FrameError> {
        match (&self.sealed, key) {
            (Some((algorithm, salt)), Some(key)) => Ok(Some(RunCipher::new(*algorithm, key, salt))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(FrameError::NeedsKey),
            (None, Some(_)) => Err(FrameError::NotSealed),
        }
    }

    /// The frames holding logical bytes `range` (not empty).
    pub fn frames_for(&self, range: &std::ops::Range<u64>) -> std::ops::Range<usize> {
        let first = (range.start / self.frame_bytes) as usize;
        let end = range.end.div_ceil(self.frame_bytes) as usize;
        first.min(self.frames.len())..end.min(self.frames.len())
    }

    /// Where frames `frames` are stored in the run.
    pub fn stored_range(&self, frames: &std::ops::Range<usize>) -> std::ops::Range<u64> {
        if frames.is_empty() {
            return 0..0;
        }
        let start = self.frames[frames.start].0;
        let (at, len, _) = self.frames[frames.end - 1];
        start..at + u64::from(len)
    }

    /// The logical bytes where frame `frame` starts.
    pub fn logical_start(&self, frame: usize) -> u64 {
        frame as u64 * self.frame_bytes
    }

    /// What decoding frame `frame` undoes: its codec when it is stored
    /// compressed (not raw), and the run's cipher when it is sealed.
    pub fn undoes(&self, frame: usize) -> (Option<Codec>, Option<Algorithm>) {
        let raw = self.frames.get(frame).is_none_or(|&(_, _, raw)| raw);
        (self.codec.filter(|_| !raw), self.sealed.map(|(algorithm, _)| algorithm))
    }

    /// Frame `frame`'s logical bytes from its stored `payload`, opened
    /// with `cipher` ([`Layout::cipher`]) when the run is sealed.
    pub fn decode(&self, frame: usize, payload: Bytes, cipher: Option<&RunCipher>) -> Result<Bytes, FrameError> {
        let &(_, len, raw) = self.frames.get(frame).ok_or(FrameError::Index("no such frame"))?;
        if payload.len() != len as usize {
            return Err(FrameError::Index("a payload of the wrong length"));
        }
        let start = self.logical_start(frame);
        let raw_len = (self.logical_len - start).min(self.frame_bytes) as usize;
        let payload = match (cipher, &self.sealed) {
            (Some(cipher), Some(_)) => {
                let mut data = payload.to_vec();
                let aad = frame_aad(frame, raw_len, raw);
                cipher.open(frame as u64, &aad, &mut data).map_err(|_| FrameError::Unauthentic(frame))?;
                Bytes::from(data)
            }
            (None, None) => payload,
            (None, Some(_)) => return Err(FrameError::NeedsKey),
            (Some(_), None) => return Err(FrameError::NotSealed),
        };
        if raw {
            return if payload.len() == raw_len { Ok(payload) } else { Err(FrameError::Index("a raw frame's length")) };
        }
        let codec = self.codec.ok_or(FrameError::Index("a compressed frame in a run without a codec"))?;
        decompress(codec, frame, &payload, raw_len)
    }

    /// Splits the stored bytes of frames `frames` (read as one range) into
    /// each frame's payload.
    pub fn split(&self, frames: &std::ops::Range<usize>, mut stored: Bytes) -> Vec<(usize, Bytes)> {
        let mut out = Vec::with_capacity(frames.len());
        for i in frames.clone() {
            let len = (self.frames[i].1 as usize).min(stored.len());
            out.push((i, stored.split_to(len)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(len: usize) -> Vec<u8> {
        let words = b"patient study series instance modality CT MR ";
        (0..len).map(|i| words[i % words.len()] ^ (i / 7919) as u8).collect()
    }

    fn noise(len: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn compressed(codec: Codec) -> Spec {
        Spec { codec: Some(codec), seal: None }
    }

    fn sealed(codec: Option<Codec>, algorithm: Algorithm, key: &std::sync::Arc<DataKey>) -> Spec {
        Spec { codec, seal: Some(Seal { algorithm, key: key.clone() }) }
    }

    fn decode_range(stored: &Bytes, range: std::ops::Range<u64>) -> Vec<u8> {
        decode_range_with(stored, range, None).expect("decode")
    }

    fn decode_range_with(
        stored: &Bytes,
        range: std::ops::Range<u64>,
        key: Option<&DataKey>,
    ) -> Result<Vec<u8>, FrameError> {
        let layout = Layout::parse(stored, stored.len() as u64)?;
        let cipher = layout.cipher(key)?;
        let frames = layout.frames_for(&range);
        let at = layout.stored_range(&frames);
        let mut out = Vec::new();
        for (i, payload) in layout.split(&frames, stored.slice(at.start as usize..at.end as usize)) {
            let start = layout.logical_start(i);
            let data = layout.decode(i, payload, cipher.as_ref())?;
            let from = range.start.saturating_sub(start) as usize;
            let to = ((range.end - start) as usize).min(data.len());
            out.extend_from_slice(&data[from..to]);
        }
        Ok(out)
    }

    #[test]
    fn frames_round_trip_whole_and_by_range_for_both_codecs() {
        for codec in [Codec::Zstd, Codec::Lz4] {
            for len in [0, 1, FRAME_BYTES - 1, FRAME_BYTES, 3 * FRAME_BYTES + 17] {
                let data = text(len);
                let stored = encode(&compressed(codec), &data);
                assert_eq!(decode_range(&stored, 0..len as u64), data, "{codec:?} {len}");
                if len > 10 {
                    let r = 5..len as u64 - 3;
                    assert_eq!(decode_range(&stored, r.clone()), data[5..len - 3], "{codec:?} {len}");
                }
            }
            let data = text(3 * FRAME_BYTES + 17);
            let stored = encode(&compressed(codec), &data);
            assert!(stored.len() * 4 < data.len(), "{codec:?} text shrinks: {}", stored.len());
            // A range inside one frame reads only that frame.
            let layout = Layout::parse(&stored, stored.len() as u64).expect("layout");
            let r = (FRAME_BYTES + 10) as u64..(2 * FRAME_BYTES - 10) as u64;
            assert_eq!(layout.frames_for(&r), 1..2);
            assert_eq!(decode_range(&stored, r.clone()), data[r.start as usize..r.end as usize]);
        }
    }

    #[test]
    fn data_that_does_not_shrink_is_stored_raw() {
        let data = noise(2 * FRAME_BYTES + 5);
        for codec in [Codec::Zstd, Codec::Lz4] {
            let stored = encode(&compressed(codec), &data);
            let layout = Layout::parse(&stored, stored.len() as u64).expect("layout");
            assert!(layout.frames.iter().all(|f| f.2), "{codec:?}: every frame raw");
            assert_eq!(stored.len() as u64, Encoder::stored_bound(data.len() as u64, false));
            assert_eq!(&stored[..data.len()], &data[..], "raw frames are the data itself");
        }
    }

    #[test]
    fn damaged_framing_is_an_error_not_a_panic() {
        let stored = encode(&compressed(Codec::Zstd), &text(FRAME_BYTES + 100));
        let n = stored.len() as u64;
        assert!(Layout::parse(&stored[..stored.len() - 1], n - 1).is_err());
        assert!(Layout::parse(b"short", 5).is_err());
        let mut bad = stored.to_vec();
        let at = bad.len() - 8;
        bad[at] = 9; // the codec
        assert_eq!(Layout::parse(&bad, n), Err(FrameError::Codec(9)));
        let mut bad = stored.to_vec();
        bad[0] ^= 0xff; // the first frame's payload
        let layout = Layout::parse(&bad, n).expect("layout");
        let payload = Bytes::copy_from_slice(&bad[..layout.frames[0].1 as usize]);
        assert!(layout.decode(0, payload, None).is_err() || layout.frames[0].2);
        assert!(layout.decode(7, Bytes::new(), None).is_err());
    }

    /// Sealed runs, compressed or not, round-trip whole and by ranges; the
    /// stored bytes hold no plaintext; another key, no key, or any altered
    /// byte is an error, never other data.
    #[test]
    fn sealed_frames_round_trip_and_refuse_what_is_not_theirs() {
        let key = std::sync::Arc::new(DataKey::random());
        let data = text(3 * FRAME_BYTES + 17);
        for algorithm in [Algorithm::Sm4, Algorithm::Aes256] {
            for codec in [None, Some(Codec::Zstd), Some(Codec::Lz4)] {
                let spec = sealed(codec, algorithm, &key);
                let stored = encode(&spec, &data);
                let whole = decode_range_with(&stored, 0..data.len() as u64, Some(&key)).expect("decode");
                assert_eq!(whole, data, "{algorithm:?} {codec:?}");
                let r = (FRAME_BYTES + 10) as u64..(2 * FRAME_BYTES + 5) as u64;
                let part = decode_range_with(&stored, r.clone(), Some(&key)).expect("decode");
                assert_eq!(part, data[r.start as usize..r.end as usize]);
                assert!(!stored.windows(16).any(|w| w == &data[..16]), "{algorithm:?} {codec:?}: plaintext stored");
                if codec.is_none() {
                    assert_eq!(stored.len() as u64, Encoder::stored_bound(data.len() as u64, true));
                }
                let all = 0..data.len() as u64;
                let other = DataKey::random();
                assert!(matches!(
                    decode_range_with(&stored, all.clone(), Some(&other)),
                    Err(FrameError::Unauthentic(0))
                ));
                assert_eq!(decode_range_with(&stored, all.clone(), None), Err(FrameError::NeedsKey));
                for at in [0, stored.len() / 3, stored.len() - 30] {
                    let mut bad = stored.to_vec();
                    bad[at] ^= 4;
                    assert!(decode_range_with(&Bytes::from(bad), all.clone(), Some(&key)).is_err(), "byte {at}");
                }
            }
        }
        // Two runs of the same data under the same key differ (salts).
        let spec = sealed(None, Algorithm::Sm4, &key);
        assert_ne!(encode(&spec, &data), encode(&spec, &data));
        // A plain run is not taken for a sealed one's.
        let plain = encode(&compressed(Codec::Lz4), &data);
        assert_eq!(decode_range_with(&plain, 0..10, Some(&key)), Err(FrameError::NotSealed));
        // An empty sealed run is its salt and trailer.
        let empty = encode(&spec, b"");
        assert_eq!(empty.len(), SALT_BYTES + TRAILER_BYTES);
        assert_eq!(decode_range_with(&empty, 0..0, Some(&key)), Ok(vec![]));
    }

    #[test]
    fn policies_name_codecs() {
        assert_eq!(Codec::of_policy(Some("capacity")), Some(Codec::Zstd));
        assert_eq!(Codec::of_policy(Some("performance")), Some(Codec::Lz4));
        assert_eq!(Codec::of_policy(Some("off")), None);
        assert_eq!(Codec::of_policy(None), None);
    }
}
