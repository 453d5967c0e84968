//! The chunk service of a storage node: chunk reads and writes addressed by
//! disk and chunk id, and the disk statistics the metadata service collects.
//!
//! Offsets and lengths are bytes within the chunk. Data travels as the
//! frame's payload: a `Write` carries the bytes to write, a `ReadDone` the
//! bytes read.

use serde::{Deserialize, Serialize};

use crate::ids::{ChunkId, DeviceClass, DiskId, NodeId};
use crate::map::{PgId, Replica};

/// A request to a storage node. Two services share the node's listener:
/// the fenced PG service every client and peer uses (`Pg`, `PgSums`,
/// `RaiseFences`, flushes, status), and raw operations on one disk
/// ([`DiskRequest`], under `Disk`), which bypass replication and fencing
/// and which only peer nodes and the administrator may send
/// (storage-node/src/access.rs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkRequest {
    /// Liveness check; answered with `Pong`.
    Ping,
    /// A raw operation on one disk.
    Disk(DiskRequest),
    /// Make every acknowledged write on `disk` (all disks when `None`) stable.
    /// A volume's writer names its fence: a fenced writer's flush is refused
    /// like its writes, so it never reports success for a volume it lost.
    Flush { disk: Option<DiskId>, fence: Option<VolumeFence> },
    /// Statistics of every disk of the node.
    DiskStats,
    /// An operation on a chunk's replicated data, fenced by `epoch`: the
    /// chunk's PG epoch in the sender's map. A client sends writes to the
    /// primary and reads to any complete replica; the primary passes writes
    /// on to the other replicas with `forwarded` set. `fence` is the
    /// writer's fencing token for the chunk's owner (a volume's attach
    /// lease id; `None` for object data, which has no single writer): a
    /// node refuses a mutation whose token is older than the newest it
    /// knows for the owner (`Fenced`). `order` places a forwarded mutation
    /// among its sender's forwards to this node ([`ForwardOrder`]); `None`
    /// on everything else.
    Pg { chunk: ChunkId, epoch: u64, op: PgOp, forwarded: bool, fence: Option<u64>, order: Option<ForwardOrder> },
    /// The checksum tables of this node's chunks of a PG, ascending after
    /// `start_after`, at most `max` (capped by the node): what backfill
    /// compares to copy only the blocks that differ.
    PgSums { pg: PgId, epoch: u64, start_after: Option<ChunkId>, max: u32 },
    /// Recovery and scrub progress of the node.
    NodeStatus,
    /// Raise the fences of these owners to at least these tokens and snap
    /// sequences, durably, before answering `Done`: a new volume writer's
    /// attach, a volume delete, a snapshot, and backfill (the primary's
    /// table to a new replica) send it.
    RaiseFences { fences: Vec<VolumeFence> },
    /// Remove this node's snapshot clones of volume `owner` that no live
    /// snapshot reads any more, the node asking the metadata service which
    /// live (never the sender); answered `Done`. Every replica decides
    /// alike from the same clones (section 5.3).
    TrimClones { owner: u64 },
    /// The client I/O this node served for these owners (at most
    /// [`OWNER_IO_ASK_MAX`](crate::limits::OWNER_IO_ASK_MAX)), answered
    /// `OwnerIo` with the owners it has counts for, ascending: what the
    /// console's "IOPS now" of each volume is summed from. Asked by owner,
    /// so the answer stays small however many owners the node serves.
    OwnerIo { owners: Vec<u64> },
}

/// A raw operation on one disk of the node: the chunk store's own calls,
/// with no replication and no fence. Offsets and lengths are bytes within
/// the chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiskRequest {
    /// Write the payload at `offset`. With `fua`, the data is on stable
    /// storage before the reply.
    Write { disk: DiskId, chunk: ChunkId, offset: u32, fua: bool },
    /// Read `len` bytes at `offset`; unwritten ranges read as zeros.
    Read { disk: DiskId, chunk: ChunkId, offset: u32, len: u32 },
    /// Discard a range: it reads as zeros afterwards and its space is freed.
    Trim { disk: DiskId, chunk: ChunkId, offset: u32, len: u32 },
    /// Make a range read as zeros; with `fua`, durably so before the reply.
    WriteZeroes { disk: DiskId, chunk: ChunkId, offset: u32, len: u32, fua: bool },
    /// Remove a chunk and free its space; later reads see zeros.
    DeleteChunk { disk: DiskId, chunk: ChunkId },
    /// Chunk ids on a disk in ascending order, after `start_after`, at most
    /// `max` (capped by the node).
    ListChunks { disk: DiskId, start_after: Option<ChunkId>, max: u32 },
}

/// Where a forwarded mutation stands among its sender's forwards to one
/// node. `seq` numbers it: numbers rise over the sender's life and across
/// its restarts (they start from the calendar clock in nanoseconds). Every
/// forward to this node that the sender numbered below `settled_below` has
/// been answered or given up. A replica refuses a forward numbered below
/// the highest `settled_below` it has had from the sender, under the
/// range's lock: the sender gave up on it (a timeout, the PG moved) and may
/// since have written the range again, and landing now would put the older
/// data over the newer (`common/PROTOCOL.md`, section 5.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardOrder {
    pub from: NodeId,
    pub seq: u64,
    pub settled_below: u64,
}

/// A volume's fencing token: the attach lease id of its newest writer.
/// Lease ids only grow (the metadata service's id counter), so a newer
/// writer always has the larger token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeFence {
    /// The volume's chunk owner id.
    pub owner: u64,
    pub token: u64,
    /// The volume's snap sequence: the newest snapshot's. A write carrying
    /// an older one is refused (`SnapStale`) by the chunk's primary.
    pub snap: u32,
}

/// What a [`ChunkRequest::Pg`] does. Offsets are bytes within the chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PgOp {
    /// Write the payload; with `fua`, stable on every replica before the reply.
    /// `snap` is the volume's snap sequence as the writer knows it (0 for
    /// object data and volumes never snapshotted): a replica whose chunk
    /// was last written under an older sequence first keeps it in a clone
    /// (section 5.3).
    Write {
        offset: u32,
        fua: bool,
        snap: u32,
    },
    Read {
        offset: u32,
        len: u32,
    },
    /// Make a range read as zeros (trim and write-zeroes alike); `snap` as
    /// for `Write`.
    Zero {
        offset: u32,
        len: u32,
        fua: bool,
        snap: u32,
    },
    /// Remove the chunk from every replica.
    Delete,
    /// Which bytes of `[offset, offset + len)` hold data and which read as
    /// zeros, answered with `Extents`. Served by any complete replica.
    Extents {
        offset: u32,
        len: u32,
    },
    /// Read the chunk as snapshot `snap` saw it, answered like `Read`
    /// (`allocated` false when the chunk did not exist then).
    ReadSnap {
        offset: u32,
        len: u32,
        snap: u32,
    },
    /// Put the chunk back as snapshot `to` saw it, on every replica, each
    /// copying locally; `snap` is the volume's sequence now, as for
    /// `Write` (the newer snapshots keep their view).
    Rollback {
        to: u32,
        snap: u32,
    },
    /// Which blocks differ between snapshot `from` (`None`: an empty
    /// volume) and snapshot `to` (`None`: the chunk now), answered with
    /// `Extents` over the whole chunk, `data` where they differ. Served by
    /// any complete replica.
    Diff {
        from: Option<u32>,
        to: Option<u32>,
    },
    /// Create the chunk with the payload (the whole chunk) as its data, on
    /// every replica, each atomically: data and checksums first, the
    /// slot-table entry last, so a crash leaves no chunk rather than part
    /// of one. Nothing is written if the chunk exists. A clone volume's
    /// first write to a chunk installs its parent snapshot's copy first.
    Install,
    /// Backfill only (forwarded): set the chunk's snapshot stamp (the
    /// sequence it was last written under and the one it was created
    /// under) to the primary's.
    Stamp {
        seq: u32,
        born: u32,
    },
    /// Backfill only (forwarded): the whole blocks of the range are bad on
    /// the only complete copy, so they must read as bad here too (a
    /// checksum error) until rewritten, never as zeros or older data that
    /// repair would then copy back.
    Poison {
        offset: u32,
        len: u32,
    },
    /// Between nodes only (forwarded): the block at `offset` as it is on
    /// the disk, whether or not it matches its checksum, answered with
    /// `RawBlock`. For mending a block both copies fail (a crash of both
    /// replicas in the middle of one write): see the storage node's
    /// `replication::torn`.
    ReadRaw {
        offset: u32,
    },
}

impl PgOp {
    /// Whether the operation changes the chunk (what a replica must apply
    /// in its primary's order), rather than reading it.
    pub fn mutates(&self) -> bool {
        match self {
            PgOp::Write { .. }
            | PgOp::Zero { .. }
            | PgOp::Delete
            | PgOp::Rollback { .. }
            | PgOp::Install
            | PgOp::Stamp { .. }
            | PgOp::Poison { .. } => true,
            PgOp::Read { .. }
            | PgOp::Extents { .. }
            | PgOp::ReadSnap { .. }
            | PgOp::Diff { .. }
            | PgOp::ReadRaw { .. } => false,
        }
    }
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
    /// One page of a PG's chunks. The payload holds each chunk's block
    /// checksums in the same order: `blocks` crc32c values per chunk, u32
    /// little-endian (see [`ChunkSums`]).
    /// `next` is where the following page starts; `None` when this was the
    /// last.
    Sums {
        chunks: Vec<ChunkId>,
        blocks: u32,
        next: Option<ChunkId>,
        /// Each chunk's snapshot stamp, in the same order.
        stamps: Vec<Stamp>,
    },
    Status(NodeReport),
    /// The answer to `PgOp::Extents`: consecutive runs covering the range
    /// asked for, from its offset, neighbours always of different kinds.
    Extents {
        extents: Vec<Extent>,
    },
    OwnerIo(Vec<OwnerIoCount>),
    /// The answer to `PgOp::ReadRaw`: the payload is the block's 4096
    /// bytes as stored, `crc` the checksum stored for it (which they may
    /// not match).
    RawBlock {
        crc: u32,
    },
}

/// A run of bytes within a chunk that holds data or reads as zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    pub len: u32,
    /// False when every byte reads as zero: never written, trimmed,
    /// zeroed, or written with zeros.
    pub data: bool,
}

/// A chunk's snapshot stamp (storage-node/FORMAT.md, "Snapshot clones"):
/// the newest snap sequence it was written under, and the one it was
/// created under. Clones and chunks of volumes never snapshotted carry
/// zeros.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stamp {
    pub seq: u32,
    pub born: u32,
}

/// A chunk and the crc32c of each of its blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkSums {
    pub chunk: ChunkId,
    pub crcs: Vec<u32>,
    pub stamp: Stamp,
}

impl ChunkSums {
    /// The payload of a `Sums` reply.
    pub fn encode(sums: &[ChunkSums]) -> Vec<u8> {
        sums.iter().flat_map(|s| s.crcs.iter().flat_map(|c| c.to_le_bytes())).collect()
    }

    /// Splits a `Sums` payload back into chunks; `None` when its length does
    /// not match `chunks.len() × blocks`, or the stamps are not one per chunk.
    pub fn decode(chunks: &[ChunkId], blocks: u32, stamps: &[Stamp], payload: &[u8]) -> Option<Vec<ChunkSums>> {
        let per = blocks as usize * 4;
        if payload.len() != chunks.len().checked_mul(per)? || stamps.len() != chunks.len() {
            return None;
        }
        let crcs = |b: &[u8]| b.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        if per == 0 {
            let sums = chunks.iter().zip(stamps);
            return Some(sums.map(|(&chunk, &stamp)| ChunkSums { chunk, crcs: Vec::new(), stamp }).collect());
        }
        Some(
            chunks
                .iter()
                .zip(stamps)
                .zip(payload.chunks_exact(per))
                .map(|((&chunk, &stamp), b)| ChunkSums { chunk, crcs: crcs(b), stamp })
                .collect(),
        )
    }
}

/// A node's background work, for `chuyi status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    pub node: NodeId,
    pub recoveries: Vec<RecoveryProgress>,
    pub scrub: ScrubCounters,
    /// Backfills finished since the node started, and the bytes all
    /// backfills (finished or not) have sent.
    pub backfills_done: u64,
    pub backfill_bytes: u64,
}

/// The client requests a node served for one chunk owner (answering
/// [`ChunkRequest::OwnerIo`]): reads where it served them, writes and
/// zeroes where it was the primary. Counts grow while the node runs; an
/// owner forgotten while idle starts again from zero.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerIoCount {
    pub owner: u64,
    pub reads: u64,
    pub writes: u64,
    pub read_bytes: u64,
    pub written_bytes: u64,
}

/// One backfill: this node (the PG's primary) bringing `target` up to date.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryProgress {
    pub pg: PgId,
    pub target: Replica,
    pub epoch: u64,
    /// Chunks compared so far, and the PG's chunks on this node at the start.
    pub chunks_done: u64,
    pub chunks_total: u64,
    /// Bytes sent to the target.
    pub bytes_copied: u64,
    pub elapsed_ms: u64,
}

impl RecoveryProgress {
    pub fn percent(&self) -> f64 {
        if self.chunks_total == 0 {
            return 100.0;
        }
        (self.chunks_done as f64 * 100.0 / self.chunks_total as f64).min(100.0)
    }

    /// Bytes per second sent so far.
    pub fn rate(&self) -> f64 {
        self.bytes_copied as f64 * 1000.0 / self.elapsed_ms.max(1) as f64
    }

    /// Seconds left at the pace so far, when there is a pace.
    pub fn eta_s(&self) -> Option<f64> {
        (self.chunks_done > 0 && self.chunks_done < self.chunks_total).then(|| {
            let per_chunk_ms = self.elapsed_ms as f64 / self.chunks_done as f64;
            per_chunk_ms * (self.chunks_total - self.chunks_done) as f64 / 1000.0
        })
    }
}

/// What scrub and read repair have done since the node started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubCounters {
    pub scrubbed_bytes: u64,
    /// Whole passes over every chunk.
    pub passes: u64,
    /// Bad blocks found, by scrub or by a read.
    pub errors: u64,
    /// Ranges rewritten from the other replica.
    pub repairs: u64,
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
    /// The sender's map is older than the node's for this PG: fetch the map
    /// and retry at the new primary.
    StaleEpoch,
    /// The node's map is older than the sender's: retry shortly.
    EpochAhead,
    /// The node does not hold this PG in the role asked of it (not the
    /// primary for a write, not a complete replica for a read).
    WrongNode,
    /// A replica did not take a forwarded write: nothing was acknowledged;
    /// retry once the map has moved the PG.
    ReplicaFailed,
    /// The request's fencing token is older than the newest this node
    /// knows for the volume (or it carries none for a fenced volume):
    /// another writer has the volume now. Never retried.
    Fenced,
    /// A mutation of a volume's chunk carries an older snap sequence than
    /// the newest this node knows for the volume: a snapshot was taken.
    /// The writer fetches the volume's sequence and sends it again.
    SnapStale,
    /// The caller's role may not make this request (raw per-disk
    /// operations are for nodes and the administrator only:
    /// `storage-node/src/access.rs`).
    Forbidden,
    /// The disk holds no copy of the chunk (answered to a raw block read
    /// between nodes, where zeros would pass for a copy).
    NoChunk,
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
