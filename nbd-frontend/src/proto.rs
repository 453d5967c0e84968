//! The NBD wire format (NetworkBlockDevice/nbd, doc/proto.md): the fixed
//! newstyle handshake, option haggling, transmission requests, and simple
//! and structured replies. All integers are big-endian.

pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

// Handshake flags (server) and client flags.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

// Options.
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_LIST_META_CONTEXT: u32 = 9;
pub const OPT_SET_META_CONTEXT: u32 = 10;

// Option replies.
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_META_CONTEXT: u32 = 4;
pub const REP_ERR_UNSUP: u32 = (1 << 31) | 1;
pub const REP_ERR_INVALID: u32 = (1 << 31) | 3;
pub const REP_ERR_UNKNOWN: u32 = (1 << 31) | 6;
pub const REP_ERR_SHUTDOWN: u32 = (1 << 31) | 7;
pub const REP_ERR_POLICY: u32 = (1 << 31) | 2;
pub const REP_ERR_BLOCK_SIZE_REQD: u32 = (1 << 31) | 8;

// Info types.
pub const INFO_EXPORT: u16 = 0;
pub const INFO_BLOCK_SIZE: u16 = 3;

// Transmission flags.
pub const TFLAG_HAS_FLAGS: u16 = 1 << 0;
pub const TFLAG_READ_ONLY: u16 = 1 << 1;
pub const TFLAG_SEND_FLUSH: u16 = 1 << 2;
pub const TFLAG_SEND_FUA: u16 = 1 << 3;
pub const TFLAG_SEND_TRIM: u16 = 1 << 5;
pub const TFLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
/// Only with structured replies: reads are never fragmented anyway.
pub const TFLAG_SEND_DF: u16 = 1 << 7;
pub const TFLAG_CAN_MULTI_CONN: u16 = 1 << 8;

/// What every export offers.
pub const TRANSMISSION_FLAGS: u16 = TFLAG_HAS_FLAGS
    | TFLAG_SEND_FLUSH
    | TFLAG_SEND_FUA
    | TFLAG_SEND_TRIM
    | TFLAG_SEND_WRITE_ZEROES
    | TFLAG_CAN_MULTI_CONN;

// Commands and their flags.
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_BLOCK_STATUS: u16 = 7;
pub const CMD_FLAG_FUA: u16 = 1 << 0;
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;

// Structured replies.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
pub const REPLY_TYPE_NONE: u16 = 0;
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) + 1;

/// The one metadata context: which extents are allocated, which read as
/// zeros. Its id on every connection.
pub const ALLOCATION_CONTEXT: &str = "base:allocation";
pub const ALLOCATION_CONTEXT_ID: u32 = 1;
pub const STATE_HOLE: u32 = 1 << 0;
pub const STATE_ZERO: u32 = 1 << 1;

// Errors in replies (errno values, as the protocol fixes them).
pub const EPERM: u32 = 1;
pub const EIO: u32 = 5;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;
pub const ENOTSUP: u32 = 95;

/// Block sizes advertised: any 512-byte-aligned request works (the client
/// library merges partial 4 KiB blocks), 4 KiB is preferred, and one request
/// carries at most [`MAX_REQUEST`] bytes.
pub const MIN_BLOCK: u32 = 1;
pub const PREFERRED_BLOCK: u32 = 4096;
pub const MAX_REQUEST: u32 = 32 << 20;

/// The most bytes of option data the server reads; names are short.
pub const MAX_OPTION_DATA: u32 = 64 << 10;

/// A transmission request header (28 bytes on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub kind: u16,
    pub cookie: u64,
    pub offset: u64,
    pub length: u32,
}

pub const REQUEST_LEN: usize = 28;

impl Request {
    /// `None` when the magic is wrong: the stream is out of step and the
    /// connection must end.
    pub fn parse(b: &[u8; REQUEST_LEN]) -> Option<Self> {
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let u64_at = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_be_bytes(w)
        };
        if u32_at(0) != REQUEST_MAGIC {
            return None;
        }
        Some(Self { flags: u16_at(4), kind: u16_at(6), cookie: u64_at(8), offset: u64_at(16), length: u32_at(24) })
    }
}

/// The fixed part of a reply, before its data: a simple reply header, or a
/// structured reply chunk header with the fields of its type that precede
/// the data. At most 28 bytes, so no reply allocates for its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyHead {
    buf: [u8; 28],
    len: u8,
}

impl ReplyHead {
    fn new() -> Self {
        Self { buf: [0; 28], len: 0 }
    }

    fn put(mut self, bytes: &[u8]) -> Self {
        let at = usize::from(self.len);
        self.buf[at..at + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len() as u8;
        self
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    /// Simple reply: magic, error, cookie (16 bytes); a successful read's
    /// data follows.
    pub fn simple(error: u32, cookie: u64) -> Self {
        Self::new().put(&SIMPLE_REPLY_MAGIC.to_be_bytes()).put(&error.to_be_bytes()).put(&cookie.to_be_bytes())
    }

    /// Structured chunk header: magic, flags, type, cookie, length (20 bytes).
    fn chunk(kind: u16, cookie: u64, length: u32) -> Self {
        Self::new()
            .put(&STRUCTURED_REPLY_MAGIC.to_be_bytes())
            .put(&REPLY_FLAG_DONE.to_be_bytes())
            .put(&kind.to_be_bytes())
            .put(&cookie.to_be_bytes())
            .put(&length.to_be_bytes())
    }

    /// The final (only) chunk of a reply that carries nothing.
    pub fn none(cookie: u64) -> Self {
        Self::chunk(REPLY_TYPE_NONE, cookie, 0)
    }

    /// The one chunk of a read: `len` bytes read at `offset` follow.
    pub fn offset_data(cookie: u64, offset: u64, len: u32) -> Self {
        Self::chunk(REPLY_TYPE_OFFSET_DATA, cookie, 8 + len).put(&offset.to_be_bytes())
    }

    /// An error chunk; a message of `message_len` bytes follows.
    pub fn error(cookie: u64, error: u32, message_len: u16) -> Self {
        Self::chunk(REPLY_TYPE_ERROR, cookie, 6 + u32::from(message_len))
            .put(&error.to_be_bytes())
            .put(&message_len.to_be_bytes())
    }

    /// A block status chunk for `context`; `descriptors` (8 bytes each)
    /// follow.
    pub fn block_status(cookie: u64, context: u32, descriptors: u32) -> Self {
        Self::chunk(REPLY_TYPE_BLOCK_STATUS, cookie, 4 + 8 * descriptors).put(&context.to_be_bytes())
    }
}

/// An option reply: magic, option, type, length, then `data`.
pub fn option_reply(option: u32, kind: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + data.len());
    out.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// The name and requested info types of an INFO or GO option's data.
pub fn parse_info_request(data: &[u8]) -> Option<(String, Vec<u16>)> {
    let len = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as usize;
    let name = std::str::from_utf8(data.get(4..4usize.checked_add(len)?)?).ok()?.to_string();
    let rest = &data[4 + len..];
    let count = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
    let infos = rest.get(2..)?;
    if infos.len() != count * 2 {
        return None;
    }
    Some((name, infos.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect()))
}

/// The export name and queries of a LIST_META_CONTEXT or SET_META_CONTEXT
/// option's data.
pub fn parse_meta_context_request(data: &[u8]) -> Option<(String, Vec<String>)> {
    let mut rest = data;
    let name = take_string(&mut rest)?;
    let count = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    rest = &rest[4..];
    let mut queries = Vec::new();
    for _ in 0..count {
        queries.push(take_string(&mut rest)?);
    }
    rest.is_empty().then_some((name, queries))
}

/// A 32-bit length and that many bytes of UTF-8, taken off the front.
fn take_string(rest: &mut &[u8]) -> Option<String> {
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let text = std::str::from_utf8(rest.get(4..4usize.checked_add(len)?)?).ok()?.to_string();
    *rest = &rest[4 + len..];
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_bad_magic_is_refused() {
        let mut b = [0u8; REQUEST_LEN];
        b[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&CMD_FLAG_FUA.to_be_bytes());
        b[6..8].copy_from_slice(&CMD_WRITE.to_be_bytes());
        b[8..16].copy_from_slice(&7u64.to_be_bytes());
        b[16..24].copy_from_slice(&4096u64.to_be_bytes());
        b[24..].copy_from_slice(&512u32.to_be_bytes());
        let r = Request::parse(&b).expect("parses");
        assert_eq!(r, Request { flags: CMD_FLAG_FUA, kind: CMD_WRITE, cookie: 7, offset: 4096, length: 512 });
        b[0] ^= 1;
        assert_eq!(Request::parse(&b), None);
    }

    #[test]
    fn reply_heads_have_the_wire_layout() {
        let h = ReplyHead::simple(5, 9);
        assert_eq!(h.as_bytes(), &[0x67, 0x44, 0x66, 0x98, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 9]);
        let h = ReplyHead::offset_data(7, 4096, 512);
        let b = h.as_bytes();
        assert_eq!(b.len(), 28);
        assert_eq!(&b[..4], &STRUCTURED_REPLY_MAGIC.to_be_bytes());
        assert_eq!(&b[4..6], &REPLY_FLAG_DONE.to_be_bytes());
        assert_eq!(&b[6..8], &REPLY_TYPE_OFFSET_DATA.to_be_bytes());
        assert_eq!(&b[8..16], &7u64.to_be_bytes());
        assert_eq!(&b[16..20], &520u32.to_be_bytes(), "the length counts the offset");
        assert_eq!(&b[20..], &4096u64.to_be_bytes());
        let b = ReplyHead::error(7, EINVAL, 3);
        assert_eq!(&b.as_bytes()[16..], &[0, 0, 0, 9, 0, 0, 0, 22, 0, 3]);
        let b = ReplyHead::block_status(7, ALLOCATION_CONTEXT_ID, 2);
        assert_eq!(&b.as_bytes()[16..], &[0, 0, 0, 20, 0, 0, 0, 1]);
        assert_eq!(ReplyHead::none(7).as_bytes().len(), 20);
    }

    #[test]
    fn meta_context_requests_parse_and_bad_ones_do_not() {
        let mut d = Vec::new();
        d.extend_from_slice(&4u32.to_be_bytes());
        d.extend_from_slice(b"vol0");
        d.extend_from_slice(&2u32.to_be_bytes());
        for q in ["base:allocation", "qemu:dirty-bitmap:x"] {
            d.extend_from_slice(&(q.len() as u32).to_be_bytes());
            d.extend_from_slice(q.as_bytes());
        }
        let (name, queries) = parse_meta_context_request(&d).expect("parses");
        assert_eq!(name, "vol0");
        assert_eq!(queries, vec!["base:allocation".to_string(), "qemu:dirty-bitmap:x".to_string()]);
        assert_eq!(parse_meta_context_request(&d[..d.len() - 1]), None, "truncated");
        let mut extra = d.clone();
        extra.push(0);
        assert_eq!(parse_meta_context_request(&extra), None, "trailing bytes");
        let mut many = d[..8].to_vec();
        many.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(parse_meta_context_request(&many), None, "a count larger than the data");
    }

    #[test]
    fn info_requests_parse_and_truncated_ones_do_not() {
        let mut d = Vec::new();
        d.extend_from_slice(&4u32.to_be_bytes());
        d.extend_from_slice(b"vol0");
        d.extend_from_slice(&1u16.to_be_bytes());
        d.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        assert_eq!(parse_info_request(&d), Some(("vol0".into(), vec![INFO_BLOCK_SIZE])));
        assert_eq!(parse_info_request(&d[..d.len() - 1]), None);
        assert_eq!(parse_info_request(&[0xff, 0xff, 0xff, 0xff]), None, "a name longer than the data");
    }
}
