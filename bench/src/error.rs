//! Why a load run stopped.

use chuyi_common::ids::ChunkId;
use chuyi_common::proto::chunk::{ChunkError, ChunkResponse};
use chuyi_common::rpc::RpcError;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The workload cannot run as described; the text names the setting.
    #[error("invalid workload: {0}")]
    Invalid(String),
    #[error("rpc: {0}")]
    Rpc(#[from] RpcError),
    /// The node answered a request with an error.
    #[error("the node refused {what}: {error}")]
    Node { what: &'static str, error: ChunkError },
    /// The node answered with a message that does not fit the request.
    #[error("the node answered {what} with {answer:?}")]
    Unexpected { what: &'static str, answer: Box<ChunkResponse> },
    /// A read returned fewer or more bytes than asked for.
    #[error("read of chunk {chunk} returned {got} bytes, asked for {want}")]
    ShortRead { chunk: ChunkId, got: usize, want: usize },
    /// A read found a chunk never written: the node served zeros without
    /// touching the disk, so the run would measure nothing.
    #[error("chunk {chunk} has never been written; prefill the region first (--prefill)")]
    NotPrefilled { chunk: ChunkId },
    #[error("a load task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}
