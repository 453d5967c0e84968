//! A virtio-blk request as the guest lays it out in a descriptor chain
//! (virtio 1.2 §5.2.6), read and checked without doing any I/O.
//!
//! The chain, as every driver we serve writes it (Linux, SeaBIOS):
//!
//! | descriptor | access | content |
//! |---|---|---|
//! | first | device reads | `type: u32, reserved: u32, sector: u64` (exactly 16 bytes, little-endian) |
//! | middle, 0 or more (1 or more for IN and OUT) | device reads (OUT, DISCARD, WRITE_ZEROES) or writes (IN, GET_ID) | the data; for DISCARD and WRITE_ZEROES, segments of `sector: u64, num_sectors: u32, flags: u32` (bit 0: unmap) |
//! | last | device writes | the status byte (exactly 1 byte): 0 OK, 1 IOERR, 2 UNSUPP |
//!
//! A chain that does not have this shape, points outside guest memory, or
//! asks for more than the device said it takes is answered IOERR (or
//! UNSUPP for a command it does not know) and changes nothing. Virtio 1
//! lets a driver lay a header, its data and the status across
//! descriptors as it likes; one that shares a descriptor between them
//! gets IOERR (when the last descriptor is writable, in its last byte),
//! never a request served from a misread chain.

use vm_memory::{Address, Bytes, GuestAddress, GuestMemory};

use crate::config::{Geometry, SECTOR, ZERO_MAX_SECTORS, ZERO_MAX_SEGMENTS};

/// The status byte's values.
pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;

/// Request types (virtio 1.2 §5.2.6).
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const T_DISCARD: u32 = 11;
const T_WRITE_ZEROES: u32 = 13;
/// The unmap flag of a discard or write-zeroes segment.
const UNMAP: u32 = 1;
/// Bytes of the serial number GET_ID answers (`VIRTIO_BLK_ID_BYTES`).
pub const ID_BYTES: usize = 20;
/// The most data one read or write may carry: far above what Linux
/// sends (`max_sectors_kb`), low enough to bound the memory a guest can
/// make the frontend hold per request.
pub const DATA_MAX: u64 = 32 << 20;

/// One descriptor of a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub addr: GuestAddress,
    pub len: u32,
    /// The device writes it (a read's buffer, the status).
    pub writable: bool,
}

/// What a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Read `len` bytes at `offset` into `data`.
    Read {
        offset: u64,
        len: u64,
    },
    /// Write the `len` bytes of `data` at `offset`.
    Write {
        offset: u64,
        len: u64,
    },
    Flush,
    /// Answer the serial number into `data`.
    GetId,
    /// Free, or zero, each byte range (offset, length); both read as
    /// zeros afterwards.
    Zero {
        ranges: Vec<(u64, u64)>,
    },
}

/// A request ready to be served: where its data lies and where its
/// status goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub op: Op,
    pub data: Vec<Segment>,
    pub status: GuestAddress,
}

/// A request that cannot be served: answer `status` at `at` (if the chain
/// had a place for it) and do nothing else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub at: Option<GuestAddress>,
    pub status: u8,
    pub why: &'static str,
}

/// Reads the request `chain` lays out in `mem`, and checks it against what
/// the device offered (`g`).
pub fn parse<M: GuestMemory>(mem: &M, chain: &[Segment], g: &Geometry) -> Result<Request, Refused> {
    let status_at =
        chain.last().filter(|s| s.writable && s.len >= 1).and_then(|s| s.addr.checked_add(u64::from(s.len) - 1));
    let refuse = |status, why| Refused { at: status_at, status, why };
    let Some(status) = status_at else { return Err(refuse(S_IOERR, "no status descriptor")) };
    let Some(head) = chain.first().filter(|s| !s.writable && s.len >= 16 && chain.len() >= 2) else {
        return Err(refuse(S_IOERR, "no request header"));
    };
    if head.len != 16 {
        return Err(refuse(S_IOERR, "the header shares its descriptor with data"));
    }
    if chain.last().is_some_and(|s| s.len != 1) {
        return Err(refuse(S_IOERR, "the status shares its descriptor with data"));
    }
    let mut header = [0u8; 16];
    mem.read_slice(&mut header, head.addr).map_err(|_| refuse(S_IOERR, "header outside guest memory"))?;
    let kind = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let sector = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    let data = chain[1..chain.len() - 1].to_vec();
    let len: u64 = data.iter().map(|s| u64::from(s.len)).sum();
    let device_writes = match kind {
        T_IN | T_GET_ID => true,
        T_OUT | T_DISCARD | T_WRITE_ZEROES => false,
        T_FLUSH => return Ok(Request { op: Op::Flush, data: Vec::new(), status }),
        _ => return Err(refuse(S_UNSUPP, "unknown request type")),
    };
    if data.iter().any(|s| s.writable != device_writes) {
        return Err(refuse(S_IOERR, "a data descriptor has the wrong direction"));
    }
    let op = match kind {
        T_GET_ID => Op::GetId,
        T_IN | T_OUT => {
            let offset = sector.checked_mul(SECTOR).ok_or(refuse(S_IOERR, "sector out of range"))?;
            check_range(g, offset, len).map_err(|why| refuse(S_IOERR, why))?;
            if len == 0 {
                return Err(refuse(S_IOERR, "a read or write of no data"));
            }
            if len > DATA_MAX {
                return Err(refuse(S_IOERR, "request larger than the device takes"));
            }
            if kind == T_IN {
                Op::Read { offset, len }
            } else if g.read_only {
                return Err(refuse(S_IOERR, "the device is read-only"));
            } else {
                Op::Write { offset, len }
            }
        }
        _ if g.read_only => return Err(refuse(S_IOERR, "the device is read-only")),
        _ => {
            Op::Zero { ranges: zero_ranges(mem, &data, len, kind == T_DISCARD, g).map_err(|(s, why)| refuse(s, why))? }
        }
    };
    Ok(Request { op, data, status })
}

/// Whether `[offset, offset + len)` is inside the volume and made of
/// whole logical blocks.
fn check_range(g: &Geometry, offset: u64, len: u64) -> Result<(), &'static str> {
    let block = u64::from(g.block);
    if !offset.is_multiple_of(block) || !len.is_multiple_of(block) {
        return Err("not whole logical blocks");
    }
    match offset.checked_add(len) {
        Some(end) if end <= g.size => Ok(()),
        _ => Err("past the end of the volume"),
    }
}

/// The byte ranges of a discard or write-zeroes request's segments.
fn zero_ranges<M: GuestMemory>(
    mem: &M,
    data: &[Segment],
    len: u64,
    discard: bool,
    g: &Geometry,
) -> Result<Vec<(u64, u64)>, (u8, &'static str)> {
    if len == 0 || !len.is_multiple_of(16) || len / 16 > u64::from(ZERO_MAX_SEGMENTS) {
        return Err((S_IOERR, "discard or write-zeroes segments malformed or too many"));
    }
    let bytes = gather(mem, data).ok_or((S_IOERR, "segments outside guest memory"))?;
    let mut ranges = Vec::with_capacity(bytes.len() / 16);
    for seg in bytes.chunks_exact(16) {
        let sector = u64::from_le_bytes(seg[0..8].try_into().expect("8 bytes"));
        let sectors = u32::from_le_bytes(seg[8..12].try_into().expect("4 bytes"));
        let flags = u32::from_le_bytes(seg[12..16].try_into().expect("4 bytes"));
        // A discard must not ask to unmap, and no other flag exists.
        if flags & !UNMAP != 0 || (discard && flags != 0) {
            return Err((S_UNSUPP, "unknown segment flags"));
        }
        if sectors > ZERO_MAX_SECTORS {
            return Err((S_IOERR, "segment larger than the device takes"));
        }
        let offset = sector.checked_mul(SECTOR).ok_or((S_IOERR, "sector out of range"))?;
        let length = u64::from(sectors) * SECTOR;
        check_range(g, offset, length).map_err(|why| (S_IOERR, why))?;
        ranges.push((offset, length));
    }
    Ok(ranges)
}

/// The bytes of `segments`, in order; none if one lies outside `mem`.
pub fn gather<M: GuestMemory>(mem: &M, segments: &[Segment]) -> Option<Vec<u8>> {
    let total: usize = segments.iter().map(|s| s.len as usize).sum();
    let mut out = vec![0u8; total];
    let mut at = 0;
    for s in segments {
        mem.read_slice(&mut out[at..at + s.len as usize], s.addr).ok()?;
        at += s.len as usize;
    }
    Some(out)
}

/// Whether every segment lies inside `mem`.
pub fn in_memory<M: GuestMemory>(mem: &M, segments: &[Segment]) -> bool {
    segments.iter().all(|s| s.len == 0 || mem.check_range(s.addr, s.len as usize, vm_memory::Permissions::Write))
}

/// Writes `bytes` across `segments`, in order, as far as both go; false if
/// a segment lies outside `mem`. Returns the bytes written.
pub fn scatter<M: GuestMemory>(mem: &M, segments: &[Segment], bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    for s in segments {
        let n = (s.len as usize).min(bytes.len() - at);
        mem.write_slice(&bytes[at..at + n], s.addr).ok()?;
        at += n;
        if at == bytes.len() {
            break;
        }
    }
    Some(at)
}

/// The serial number GET_ID answers: the volume's name, cut to 20 bytes
/// and zero-padded (Linux shows it in /sys/block/vdX/serial).
pub fn serial(volume: &str) -> [u8; ID_BYTES] {
    let mut id = [0u8; ID_BYTES];
    let n = volume.len().min(ID_BYTES);
    id[..n].copy_from_slice(&volume.as_bytes()[..n]);
    id
}

#[cfg(test)]
mod tests {
    use vm_memory::GuestMemoryMmap;

    use super::*;

    const G: Geometry = Geometry { size: 1 << 30, block: 512, queues: 1, read_only: false };

    fn mem() -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).expect("guest memory")
    }

    fn header(mem: &GuestMemoryMmap<()>, kind: u32, sector: u64) -> Segment {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&kind.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&h, GuestAddress(0)).expect("guest memory");
        Segment { addr: GuestAddress(0), len: 16, writable: false }
    }

    fn seg(addr: u64, len: u32, writable: bool) -> Segment {
        Segment { addr: GuestAddress(addr), len, writable }
    }

    #[test]
    fn a_read_and_a_write_name_their_bytes_and_status() {
        let m = mem();
        let chain = [header(&m, T_IN, 8), seg(4096, 4096, true), seg(8192, 1, true)];
        let req = parse(&m, &chain, &G).expect("parsed");
        assert_eq!(req.op, Op::Read { offset: 4096, len: 4096 });
        assert_eq!(req.status, GuestAddress(8192));
        let chain = [header(&m, T_OUT, 0), seg(4096, 512, false), seg(4608, 512, false), seg(8192, 1, true)];
        assert_eq!(parse(&m, &chain, &G).expect("parsed").op, Op::Write { offset: 0, len: 1024 });
        let chain = [header(&m, T_FLUSH, 0), seg(8192, 1, true)];
        assert_eq!(parse(&m, &chain, &G).expect("parsed").op, Op::Flush);
    }

    #[test]
    fn bad_requests_are_refused_with_the_status_the_spec_names() {
        let m = mem();
        let refused = |chain: &[Segment], g: &Geometry| parse(&m, chain, g).expect_err("refused");
        // Past the end, misaligned for 4 KiB blocks, the wrong direction.
        let past = [header(&m, T_IN, (1 << 30) / 512), seg(4096, 512, true), seg(8192, 1, true)];
        assert_eq!(refused(&past, &G).status, S_IOERR);
        let g4k = Geometry { block: 4096, ..G };
        let unaligned = [header(&m, T_OUT, 1), seg(4096, 4096, false), seg(8192, 1, true)];
        assert_eq!(refused(&unaligned, &g4k).why, "not whole logical blocks");
        let backwards = [header(&m, T_IN, 0), seg(4096, 512, false), seg(8192, 1, true)];
        assert_eq!(refused(&backwards, &G).status, S_IOERR);
        // Unknown type; a write to a snapshot; no status at all.
        let unknown = [header(&m, 99, 0), seg(8192, 1, true)];
        assert_eq!(
            refused(&unknown, &G),
            Refused { at: Some(GuestAddress(8192)), status: S_UNSUPP, why: "unknown request type" }
        );
        let write = [header(&m, T_OUT, 0), seg(4096, 512, false), seg(8192, 1, true)];
        assert_eq!(refused(&write, &Geometry { read_only: true, ..G }).why, "the device is read-only");
        let no_status = [header(&m, T_IN, 0), seg(4096, 512, true)];
        assert_eq!(refused(&no_status[..1], &G).at, None);
        // A sector whose byte offset overflows, and a header outside memory.
        let huge = [header(&m, T_IN, u64::MAX), seg(4096, 512, true), seg(8192, 1, true)];
        assert_eq!(refused(&huge, &G).why, "sector out of range");
        let outside = [seg(2 << 20, 16, false), seg(8192, 1, true)];
        assert_eq!(refused(&outside, &G).why, "header outside guest memory");
        // Layouts that share a descriptor: the header with a write's data,
        // a read's data with the status; and a read of nothing.
        let shared_head = [seg(0, 16 + 512, false), seg(8192, 1, true)];
        assert_eq!(refused(&shared_head, &G).why, "the header shares its descriptor with data");
        let shared_status = [header(&m, T_IN, 0), seg(4096, 513, true)];
        let r = refused(&shared_status, &G);
        assert_eq!((r.at, r.why), (Some(GuestAddress(4096 + 512)), "the status shares its descriptor with data"));
        let nothing = [header(&m, T_IN, 0), seg(8192, 1, true)];
        assert_eq!(refused(&nothing, &G).why, "a read or write of no data");
    }

    #[test]
    fn discard_and_write_zeroes_segments_become_byte_ranges() {
        let m = mem();
        let mut segs = Vec::new();
        for (sector, n, flags) in [(0u64, 8u32, 0u32), (2048, 16, 0)] {
            segs.extend_from_slice(&sector.to_le_bytes());
            segs.extend_from_slice(&n.to_le_bytes());
            segs.extend_from_slice(&flags.to_le_bytes());
        }
        m.write_slice(&segs, GuestAddress(4096)).expect("guest memory");
        let chain = [header(&m, T_DISCARD, 0), seg(4096, 32, false), seg(8192, 1, true)];
        assert_eq!(parse(&m, &chain, &G).expect("parsed").op, Op::Zero { ranges: vec![(0, 4096), (1 << 20, 8192)] });
        // Unmap on a discard is refused; on write-zeroes it is allowed.
        m.write_slice(&UNMAP.to_le_bytes(), GuestAddress(4096 + 12)).expect("guest memory");
        assert_eq!(parse(&m, &chain, &G).expect_err("refused").status, S_UNSUPP);
        let chain = [header(&m, T_WRITE_ZEROES, 0), seg(4096, 32, false), seg(8192, 1, true)];
        assert!(parse(&m, &chain, &G).is_ok());
        let ragged = [header(&m, T_WRITE_ZEROES, 0), seg(4096, 20, false), seg(8192, 1, true)];
        assert_eq!(parse(&m, &ragged, &G).expect_err("refused").status, S_IOERR);
    }

    #[test]
    fn scatter_and_gather_cross_segments_in_order() {
        let m = mem();
        let segs = [seg(100, 3, true), seg(5000, 5, true)];
        assert_eq!(scatter(&m, &segs, b"abcdefgh"), Some(8));
        assert_eq!(gather(&m, &segs).expect("in memory"), b"abcdefgh");
        assert_eq!(scatter(&m, &segs, b"xy"), Some(2), "a short answer fills the front");
        assert_eq!(gather(&m, &[seg(1 << 20, 1, true)]), None);
        assert!(in_memory(&m, &segs) && !in_memory(&m, &[seg((1 << 20) - 1, 2, true)]));
        assert_eq!(&serial("vm1")[..4], b"vm1\0");
    }
}
