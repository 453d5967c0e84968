//! The frame header: 24 bytes in front of every message, pure encode and
//! decode with no I/O. The layout is drawn in `common/PROTOCOL.md`.
//!
//! `decode` validates everything a peer controls before any length is used to
//! allocate, so a hostile header costs at most its own 24 bytes.

use crate::limits::{RPC_BODY_MAX_BYTES, RPC_PAYLOAD_MAX_BYTES};

/// Bytes of a frame header, the `len` field included.
pub const HEADER_LEN: usize = 24;

/// The only frame version this build speaks.
pub const FRAME_VERSION: u8 = 4;

/// Header bytes counted by `len`: everything after the `len` field itself.
const LEN_COUNTED_HEADER_BYTES: u32 = HEADER_LEN as u32 - 4;

// A frame's `len` must fit its u32 field even at the largest body and payload.
const _: () = assert!(
    (LEN_COUNTED_HEADER_BYTES as u64) + (RPC_BODY_MAX_BYTES as u64) + (RPC_PAYLOAD_MAX_BYTES as u64) <= u32::MAX as u64
);

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A call from client to server.
    Request = 1,
    /// The service's answer to the request with the same id.
    Response = 2,
    /// A protocol-level failure of the request with the same id; the body is
    /// a postcard `String` saying why.
    Error = 3,
}

impl FrameKind {
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(FrameKind::Request),
            2 => Some(FrameKind::Response),
            3 => Some(FrameKind::Error),
            _ => None,
        }
    }

    pub fn to_byte(self) -> u8 {
        self as u8
    }
}

/// Why a header was refused. Any of these means framing is lost: the
/// receiver closes the connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame version {0} is not supported (expected {FRAME_VERSION})")]
    BadVersion(u8),
    #[error("unknown frame kind {0}")]
    BadKind(u8),
    #[error("reserved header field is {0:#06x}, not 0")]
    Reserved(u16),
    #[error("frame len {len} disagrees with body_len {body_len} + payload_len {payload_len}")]
    LenMismatch { len: u32, body_len: u32, payload_len: u32 },
    #[error("frame body of {0} bytes exceeds the limit of {RPC_BODY_MAX_BYTES}")]
    BodyTooLarge(u64),
    #[error("frame payload of {0} bytes exceeds the limit of {RPC_PAYLOAD_MAX_BYTES}")]
    PayloadTooLarge(u64),
}

/// A decoded frame header. The `len` field is not stored: it is derived from
/// the two lengths when encoding and checked against them when decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub version: u8,
    pub kind: FrameKind,
    pub request_id: u64,
    pub body_len: u32,
    pub payload_len: u32,
}

impl FrameHeader {
    /// A current-version header, refused when a length exceeds its limit.
    pub fn new(kind: FrameKind, request_id: u64, body_len: usize, payload_len: usize) -> Result<Self, FrameError> {
        Ok(Self {
            version: FRAME_VERSION,
            kind,
            request_id,
            body_len: check_len(body_len, RPC_BODY_MAX_BYTES, FrameError::BodyTooLarge)?,
            payload_len: check_len(payload_len, RPC_PAYLOAD_MAX_BYTES, FrameError::PayloadTooLarge)?,
        })
    }

    /// The header as sent. Fields are written as they are, even invalid ones
    /// (tests build bad frames this way); `len` wraps rather than panics, and a
    /// wrapped `len` is refused by [`Self::decode`].
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let len = LEN_COUNTED_HEADER_BYTES.wrapping_add(self.body_len).wrapping_add(self.payload_len);
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&len.to_le_bytes());
        out[4] = self.version;
        out[5] = self.kind.to_byte();
        // out[6..8]: reserved, zero.
        out[8..16].copy_from_slice(&self.request_id.to_le_bytes());
        out[16..20].copy_from_slice(&self.body_len.to_le_bytes());
        out[20..24].copy_from_slice(&self.payload_len.to_le_bytes());
        out
    }

    /// Parses and validates a header received from a peer.
    pub fn decode(raw: &[u8; HEADER_LEN]) -> Result<Self, FrameError> {
        let len = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let version = raw[4];
        if version != FRAME_VERSION {
            return Err(FrameError::BadVersion(version));
        }
        let kind = FrameKind::from_byte(raw[5]).ok_or(FrameError::BadKind(raw[5]))?;
        let reserved = u16::from_le_bytes([raw[6], raw[7]]);
        if reserved != 0 {
            return Err(FrameError::Reserved(reserved));
        }
        let request_id = u64::from_le_bytes([raw[8], raw[9], raw[10], raw[11], raw[12], raw[13], raw[14], raw[15]]);
        let body_len = u32::from_le_bytes([raw[16], raw[17], raw[18], raw[19]]);
        let payload_len = u32::from_le_bytes([raw[20], raw[21], raw[22], raw[23]]);
        check_len(body_len as usize, RPC_BODY_MAX_BYTES, FrameError::BodyTooLarge)?;
        check_len(payload_len as usize, RPC_PAYLOAD_MAX_BYTES, FrameError::PayloadTooLarge)?;
        let expected = u64::from(LEN_COUNTED_HEADER_BYTES) + u64::from(body_len) + u64::from(payload_len);
        if u64::from(len) != expected {
            return Err(FrameError::LenMismatch { len, body_len, payload_len });
        }
        Ok(Self { version, kind, request_id, body_len, payload_len })
    }
}

/// `len` as a u32 when within `max`, else the error `too_large` makes.
fn check_len(len: usize, max: usize, too_large: fn(u64) -> FrameError) -> Result<u32, FrameError> {
    match u32::try_from(len) {
        Ok(small) if len <= max => Ok(small),
        _ => Err(too_large(len as u64)),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::proto::chunk::{ChunkRequest, ChunkResponse};

    fn kind() -> impl Strategy<Value = FrameKind> {
        prop_oneof![Just(FrameKind::Request), Just(FrameKind::Response), Just(FrameKind::Error)]
    }

    proptest! {
        #[test]
        fn decode_never_panics(raw in any::<[u8; HEADER_LEN]>()) {
            let _ = FrameHeader::decode(&raw);
        }

        #[test]
        fn valid_headers_round_trip(
            kind in kind(),
            request_id in any::<u64>(),
            body_len in 0..=RPC_BODY_MAX_BYTES,
            payload_len in 0..=RPC_PAYLOAD_MAX_BYTES,
        ) {
            let header = FrameHeader::new(kind, request_id, body_len, payload_len)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(FrameHeader::decode(&header.encode()), Ok(header));
        }

        #[test]
        fn chunk_messages_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = postcard::from_bytes::<ChunkRequest>(&bytes);
            let _ = postcard::from_bytes::<ChunkResponse>(&bytes);
        }
    }

    fn valid() -> FrameHeader {
        FrameHeader { version: FRAME_VERSION, kind: FrameKind::Request, request_id: 7, body_len: 3, payload_len: 5 }
    }

    #[test]
    fn layout_is_little_endian_as_documented() {
        let raw = valid().encode();
        assert_eq!(&raw[0..4], &28u32.to_le_bytes());
        assert_eq!(raw[4..8], [FRAME_VERSION, 1, 0, 0]);
        assert_eq!(&raw[8..16], &7u64.to_le_bytes());
        assert_eq!(&raw[16..20], &3u32.to_le_bytes());
        assert_eq!(&raw[20..24], &5u32.to_le_bytes());
    }

    #[test]
    fn each_invalid_field_is_named() {
        let mut raw = valid().encode();
        raw[4] = 1;
        assert_eq!(FrameHeader::decode(&raw), Err(FrameError::BadVersion(1)), "version 1 had other chunk messages");
        let mut raw = valid().encode();
        raw[5] = 9;
        assert_eq!(FrameHeader::decode(&raw), Err(FrameError::BadKind(9)));
        let mut raw = valid().encode();
        raw[7] = 1;
        assert_eq!(FrameHeader::decode(&raw), Err(FrameError::Reserved(0x100)));
        let mut raw = valid().encode();
        raw[0] = 27;
        assert!(matches!(FrameHeader::decode(&raw), Err(FrameError::LenMismatch { len: 27, .. })));
    }

    #[test]
    fn oversized_lengths_are_refused_both_ways() {
        let too_big = RPC_PAYLOAD_MAX_BYTES + 1;
        let header = FrameHeader { payload_len: too_big as u32, ..valid() };
        assert_eq!(FrameHeader::decode(&header.encode()), Err(FrameError::PayloadTooLarge(too_big as u64)));
        assert!(FrameHeader::new(FrameKind::Request, 1, RPC_BODY_MAX_BYTES + 1, 0).is_err());
        assert!(FrameHeader::new(FrameKind::Request, 1, 0, usize::MAX).is_err());
    }
}
