//! The chunk service of a storage node: chunk reads and writes addressed by
//! disk and chunk id, and the disk statistics the metadata service collects.
//!
//! Offsets and lengths are bytes within the chunk. Data travels as the
//! frame's payload: a `Write` carries the bytes to write, a `ReadDone` the
//! bytes read.

use serde::{Deserialize, Serialize};

use crate::ids::{ChunkId, DeviceClass, DiskId, NodeId};

/// A request to a storage node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkRequest {
    /// Liveness check; answered with `Pong`.
    Ping,
    /// Write the payload at `offset`. With `fua`, the data is on stable
    /// storage before the reply.
    Write { disk: DiskId, chunk: ChunkId, offset: u32, fua: bool },
    /// Read `len` bytes at `offset`; unwritten ranges read as zeros.
    Read { disk: DiskId, chunk: ChunkId, offset: u32, len: u32 },
    /// Discard a range: it reads as zeros afterwards and its space is freed.
    Trim { disk: DiskId, chunk: ChunkId, offset: u32, len: u32 },
    /// Make a range read as zeros; with `fua`, durably so before the reply.
    WriteZeroes { disk: DiskId, chunk: ChunkId, offset: u32, len: u32, fua: bool },
    /// Make every acknowledged write on `disk` (all disks when `None`) stable.
    Flush { disk: Option<DiskId> },
    /// Remove a chunk and free its space; later reads see zeros.
    DeleteChunk { disk: DiskId, chunk: ChunkId },
    /// Chunk ids on a disk in ascending order, after `start_after`, at most
    /// `max` (capped by the node).
    ListChunks { disk: DiskId, start_after: Option<ChunkId>, max: u32 },
    /// Statistics of every disk of the node.
    DiskStats,
}

/// A storage node's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkResponse {
    Pong {
        node: NodeId,
    },
    /// A write, trim, write-zeroes, flush or delete completed.
    Done,
    /// The payload holds the bytes read. `allocated` is false when the chunk
    /// has never been written (or was deleted): the payload is zeros.
    ReadDone {
        allocated: bool,
    },
    /// One page of chunk ids; `more` when the listing continues.
    Chunks {
        chunks: Vec<ChunkId>,
        more: bool,
    },
    Disks {
        disks: Vec<DiskStat>,
    },
    Error(ChunkError),
}

/// An error a storage node reports; the request changed nothing unless the
/// kind says otherwise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ChunkError {
    pub kind: ChunkErrorKind,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkErrorKind {
    /// The node has no disk with that id.
    NoSuchDisk,
    /// Offset and length reach past the chunk size.
    OutOfRange,
    /// The request is malformed (e.g. payload length disagrees).
    InvalidArgument,
    /// The disk has no room for a new chunk; reads still work.
    NoSpace,
    /// A block's data does not match its checksum: the data is bad, and none
    /// of it is returned.
    Checksum,
    /// The disk returned an I/O error and was taken out of service.
    DiskFailed,
    /// Any other I/O failure.
    Io,
}

/// One disk as the node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskStat {
    pub id: DiskId,
    pub class: DeviceClass,
    pub path: String,
    /// Bytes of chunk space: slots × chunk size.
    pub capacity_bytes: u64,
    /// Bytes of chunk space held by allocated chunks.
    pub used_bytes: u64,
    pub chunks: u64,
    pub state: DiskState,
    /// Blocks found not matching their checksum since start.
    pub checksum_errors: u64,
    /// Whether data goes through O_DIRECT (false on tmpfs and the like).
    pub direct_io: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiskState {
    /// Serving reads and writes.
    Up,
    /// Taken out of service after an I/O error; every request fails.
    Failed,
}
