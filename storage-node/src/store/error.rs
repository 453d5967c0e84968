//! The chunk store's errors, and their mapping onto the wire.

use std::io;

use chuyi_common::ids::{ChunkId, DiskId};
use chuyi_common::proto::chunk::{ChunkError, ChunkErrorKind};

use crate::format::FormatError;

/// Why a chunk operation failed. Unless the variant says otherwise, the
/// operation changed nothing a later read could see.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no disk {0} on this node")]
    NoSuchDisk(DiskId),
    #[error("range {offset}+{len} reaches past the chunk size {chunk_size}")]
    OutOfRange { offset: u64, len: u64, chunk_size: u64 },
    #[error("disk {disk} has no space for chunk {chunk}")]
    NoSpace { disk: DiskId, chunk: ChunkId },
    #[error("disk {disk} chunk {chunk} block {block}: data does not match its checksum")]
    Checksum { disk: DiskId, chunk: ChunkId, block: u64 },
    #[error("disk {disk} is out of service after an I/O error")]
    DiskFailed { disk: DiskId },
    #[error("disk {disk}: {source}")]
    Io { disk: DiskId, source: io::Error },
    #[error("disk {disk} holds no chunk {chunk}")]
    NoChunk { disk: DiskId, chunk: ChunkId },
    #[error("range {offset}+{len} is not one whole block")]
    NotABlock { offset: u64, len: u64 },
    /// The node failed to run the request (its task panicked).
    #[error("internal error: {0}")]
    Internal(String),
}

impl StoreError {
    pub fn kind(&self) -> ChunkErrorKind {
        match self {
            StoreError::NoSuchDisk(_) => ChunkErrorKind::NoSuchDisk,
            StoreError::OutOfRange { .. } => ChunkErrorKind::OutOfRange,
            StoreError::NoSpace { .. } => ChunkErrorKind::NoSpace,
            StoreError::Checksum { .. } => ChunkErrorKind::Checksum,
            StoreError::DiskFailed { .. } => ChunkErrorKind::DiskFailed,
            StoreError::NoChunk { .. } => ChunkErrorKind::NoChunk,
            StoreError::NotABlock { .. } => ChunkErrorKind::InvalidArgument,
            StoreError::Io { .. } | StoreError::Internal(_) => ChunkErrorKind::Io,
        }
    }
}

impl From<StoreError> for ChunkError {
    fn from(e: StoreError) -> Self {
        ChunkError { kind: e.kind(), message: e.to_string() }
    }
}

/// Why a disk could not be opened at start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("disk {disk} at {path}: {source}")]
    Io { disk: DiskId, path: String, source: io::Error },
    #[error("disk {disk} at {path}: {source}")]
    Format { disk: DiskId, path: String, source: FormatError },
    #[error("disk {disk} at {path} is new and needs a `capacity` in the config")]
    NoCapacity { disk: DiskId, path: String },
    #[error("disk {disk} at {path} was formatted as disk {found} ({class}); the config says disk {disk} ({want})")]
    Mismatch { disk: DiskId, path: String, found: DiskId, class: String, want: String },
    #[error("disk {disk} at {path} is {what}; give a directory, a regular file or a block device")]
    Unsupported { disk: DiskId, path: String, what: &'static str },
}
