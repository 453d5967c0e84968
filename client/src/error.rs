//! What a client call can fail with.

use std::time::Duration;

use chuyi_common::ids::ChunkId;
use chuyi_common::proto::chunk::ChunkError;
use chuyi_meta_api::MetaError;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("metadata service: {0}")]
    Meta(#[from] MetaError),
    /// A storage node refused for a reason retrying cannot change (no
    /// space, a bad range, every replica's copy bad).
    #[error("chunk {chunk}: {error}")]
    Chunk { chunk: ChunkId, error: ChunkError },
    /// No replica could serve the request before the deadline.
    #[error("chunk {chunk}: not served within {deadline:?}; last problem: {last}")]
    Timeout { chunk: ChunkId, deadline: Duration, last: String },
    #[error("flush not completed within {deadline:?}; last problem: {last}")]
    FlushTimeout { deadline: Duration, last: String },
    #[error("bytes {offset}..{end} are outside volume {volume:?} of {size} bytes")]
    OutOfRange { volume: String, offset: u64, end: u64, size: u64 },
    /// A node knows a newer writer of the volume (a request that is not
    /// about one chunk: a flush).
    #[error("node {node}: {error}")]
    Fenced { node: chuyi_common::ids::NodeId, error: ChunkError },
    /// This writer's lease may be gone: the request was not sent.
    #[error("the volume's attach lease may be gone; the request was not sent")]
    LeaseLost,
    /// Not every storage node could be told of a new writer's fence in time.
    #[error("the fence of volume owner {owner:016x} could not be raised on every node within {deadline:?}: {last}")]
    FenceNotRaised { owner: u64, deadline: Duration, last: String },
    #[error("the metadata service answered {0}")]
    Unexpected(String),
    /// A snapshot is read, never written.
    #[error("snapshot {snapshot} of volume {volume:?} is read-only")]
    ReadOnly { volume: String, snapshot: u32 },
}
