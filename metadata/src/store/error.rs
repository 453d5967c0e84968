//! Store errors, and their mapping to openraft's `StorageError` at the trait
//! boundary (openraft only needs to know what was being done to what).

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageError, StorageIOError};

use super::rocks::RocksError;
use crate::state::tables::TableError;

/// Why a store operation failed. Decode variants mean the bytes on disk are
/// not what this version wrote: corruption or a newer format.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] RocksError),
    #[error("encoding {what}: {source}")]
    Encode { what: &'static str, source: postcard::Error },
    #[error("decoding {what}: {source}")]
    Decode { what: &'static str, source: postcard::Error },
    #[error("{what}: empty value, expected a format version byte")]
    Empty { what: &'static str },
    #[error("{what}: unknown format version {version}")]
    UnknownVersion { what: &'static str, version: u8 },
    #[error("{what}: {len} trailing bytes after the value")]
    TrailingBytes { what: &'static str, len: usize },
    #[error("log entry under key {key} has index {entry}")]
    LogIndexMismatch { key: u64, entry: u64 },
    #[error("log key is {len} bytes, expected 8")]
    BadLogKey { len: usize },
    #[error("{what}: {source}")]
    Io { what: &'static str, source: std::io::Error },
    /// A snapshot file is not whole: cut short, altered, another format.
    #[error("snapshot file damaged: {0}")]
    DamagedSnapshot(String),
    /// The stored state contradicts itself (a PG of a missing pool, a
    /// malformed index key): a bug or corruption, never bad input.
    #[error("state invariant broken: {0}")]
    Invariant(String),
    /// The typed state failed over this store (its own errors inside).
    #[error(transparent)]
    State(#[from] TableError),
}

impl From<StoreError> for TableError {
    fn from(e: StoreError) -> Self {
        TableError::Store(Box::new(e))
    }
}

impl From<RocksError> for TableError {
    fn from(e: RocksError) -> Self {
        TableError::Store(Box::new(StoreError::from(e)))
    }
}

pub(crate) type StoreResult<T> = Result<T, StoreError>;

/// What the openraft traits return.
pub(crate) type RaftResult<T> = Result<T, StorageError<u64>>;

impl StoreError {
    /// This error as openraft sees it: `verb` failed on `subject`.
    pub(crate) fn at(self, subject: ErrorSubject<u64>, verb: ErrorVerb) -> StorageError<u64> {
        StorageIOError::new(subject, verb, AnyError::new(&self)).into()
    }
}
