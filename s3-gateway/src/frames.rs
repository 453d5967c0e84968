//! Compressed object data: one run written as independent frames of
//! [`FRAME_BYTES`] logical bytes each, followed by an index, so that a
//! range GET decompresses only the frames it touches. A frame that does
//! not shrink by at least an eighth is stored raw and costs no CPU on read
//! (JPEG 2000 pixel data, archives, encrypted backups).
//!
//! The layout of a framed run (offsets from the run's first byte, integers
//! little-endian):
//!
//! ```text
//! frame 0 payload | frame 1 payload | ... | frame n-1 payload
//! index:   n × u32   payload length, bit 31 set when the frame is raw
//! trailer: u64 logical length | u32 frame bytes | u32 n | u8 codec
//!          | u8 layout version (1) | u16 zero | "CYFZ"          (24 bytes)
//! ```
//!
//! A run is framed or not as its version's `ObjectPut::flags` say
//! (`OBJECT_FRAMED`); each framed run describes itself, so a multipart
//! object's parts are framed one by one and a run moves between pools as
//! bytes. Everything here is pure: [`crate::data`] does the I/O.

use bytes::{BufMut, Bytes, BytesMut};

/// Logical bytes per frame: a range GET reads at most one frame's worth
/// beyond each end of its range; larger frames compress a little better
/// (bench/RESULTS.md).
pub const FRAME_BYTES: usize = 128 << 10;
/// Bytes of the trailer at a framed run's end.
pub const TRAILER_BYTES: usize = 24;
const MAGIC: &[u8; 4] = b"CYFZ";
const LAYOUT_VERSION: u8 = 1;
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

    fn code(self) -> u8 {
        match self {
            Codec::Zstd => 1,
            Codec::Lz4 => 2,
        }
    }

    fn from_code(code: u8) -> Result<Codec, FrameError> {
        match code {
            1 => Ok(Codec::Zstd),
            2 => Ok(Codec::Lz4),
            other => Err(FrameError::Codec(other)),
        }
    }
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
    codec: Codec,
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
    pub fn new(codec: Codec) -> Self {
        Self { codec, zstd: None, pending: BytesMut::new(), index: Vec::new(), logical: 0, stored: 0 }
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
        let (entry, payload) = match compress(self.codec, &mut self.zstd, &raw) {
            Some(packed) => (packed.len() as u32, Bytes::from(packed)),
            None => (raw.len() as u32 | RAW_BIT, raw),
        };
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
        let mut tail = BytesMut::with_capacity(self.index.len() * 4 + TRAILER_BYTES);
        for entry in &self.index {
            tail.put_u32_le(*entry);
        }
        tail.put_u64_le(self.logical);
        tail.put_u32_le(FRAME_BYTES as u32);
        tail.put_u32_le(self.index.len() as u32);
        tail.put_u8(self.codec.code());
        tail.put_u8(LAYOUT_VERSION);
        tail.put_u16_le(0);
        tail.put_slice(MAGIC);
        out.push(tail.freeze());
        out
    }

    /// The stored length of `logical` bytes at most: raw frames, the index
    /// and the trailer (what a write reserves before it knows better).
    pub fn stored_bound(logical: u64) -> u64 {
        logical + logical.div_ceil(FRAME_BYTES as u64) * 4 + TRAILER_BYTES as u64
    }
}

/// Encodes `data` whole (a small object, or a test).
pub fn encode(codec: Codec, data: &[u8]) -> Bytes {
    let mut encoder = Encoder::new(codec);
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
    codec: Codec,
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
        let tail = n * 4 + TRAILER_BYTES as u64;
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
        let (index, t) = tail.split_at(need - TRAILER_BYTES);
        let u32_at = |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let logical_len = u64::from_le_bytes(t[0..8].try_into().map_err(|_| FrameError::Index("trailer"))?);
        let frame_bytes = u64::from(u32_at(t, 8));
        if t[17] != LAYOUT_VERSION {
            return Err(FrameError::Version(t[17]));
        }
        let codec = Codec::from_code(t[16])?;
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
        Ok(Layout { logical_len, frame_bytes, codec, frames })
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

    /// Frame `frame`'s logical bytes from its stored `payload`.
    pub fn decode(&self, frame: usize, payload: Bytes) -> Result<Bytes, FrameError> {
        let &(_, len, raw) = self.frames.get(frame).ok_or(FrameError::Index("no such frame"))?;
        if payload.len() != len as usize {
            return Err(FrameError::Index("a payload of the wrong length"));
        }
        let start = self.logical_start(frame);
        let raw_len = (self.logical_len - start).min(self.frame_bytes) as usize;
        if raw {
            return if payload.len() == raw_len { Ok(payload) } else { Err(FrameError::Index("a raw frame's length")) };
        }
        decompress(self.codec, frame, &payload, raw_len)
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

    fn decode_range(stored: &Bytes, range: std::ops::Range<u64>) -> Vec<u8> {
        let layout = Layout::parse(stored, stored.len() as u64).expect("layout");
        let frames = layout.frames_for(&range);
        let at = layout.stored_range(&frames);
        let mut out = Vec::new();
        for (i, payload) in layout.split(&frames, stored.slice(at.start as usize..at.end as usize)) {
            let start = layout.logical_start(i);
            let data = layout.decode(i, payload).expect("decode");
            let from = range.start.saturating_sub(start) as usize;
            let to = ((range.end - start) as usize).min(data.len());
            out.extend_from_slice(&data[from..to]);
        }
        out
    }

    #[test]
    fn frames_round_trip_whole_and_by_range_for_both_codecs() {
        for codec in [Codec::Zstd, Codec::Lz4] {
            for len in [0, 1, FRAME_BYTES - 1, FRAME_BYTES, 3 * FRAME_BYTES + 17] {
                let data = text(len);
                let stored = encode(codec, &data);
                assert_eq!(decode_range(&stored, 0..len as u64), data, "{codec:?} {len}");
                if len > 10 {
                    let r = 5..len as u64 - 3;
                    assert_eq!(decode_range(&stored, r.clone()), data[5..len - 3], "{codec:?} {len}");
                }
            }
            let data = text(3 * FRAME_BYTES + 17);
            let stored = encode(codec, &data);
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
            let stored = encode(codec, &data);
            let layout = Layout::parse(&stored, stored.len() as u64).expect("layout");
            assert!(layout.frames.iter().all(|f| f.2), "{codec:?}: every frame raw");
            assert_eq!(stored.len() as u64, Encoder::stored_bound(data.len() as u64));
            assert_eq!(&stored[..data.len()], &data[..], "raw frames are the data itself");
        }
    }

    #[test]
    fn damaged_framing_is_an_error_not_a_panic() {
        let stored = encode(Codec::Zstd, &text(FRAME_BYTES + 100));
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
        assert!(layout.decode(0, payload).is_err() || layout.frames[0].2);
        assert!(layout.decode(7, Bytes::new()).is_err());
    }

    #[test]
    fn policies_name_codecs() {
        assert_eq!(Codec::of_policy(Some("capacity")), Some(Codec::Zstd));
        assert_eq!(Codec::of_policy(Some("performance")), Some(Codec::Lz4));
        assert_eq!(Codec::of_policy(Some("off")), None);
        assert_eq!(Codec::of_policy(None), None);
    }
}
