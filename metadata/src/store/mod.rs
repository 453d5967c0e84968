//! The Raft storage of the metadata service: openraft's v2 log store and state
//! machine on one RocksDB (the only user of `rocksdb` is [`rocks`]).
//!
//! [`open`] returns the two halves, sharing one database. Layout and value
//! formats: `metadata/KEYSPACE.md`.

mod codec;
mod error;
mod log;
mod rocks;
mod snapshot;
mod state_machine;

use std::io::Cursor;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use error::StoreError;
pub use log::LogStore;
pub use rocks::RocksError;
pub use snapshot::SnapshotBuilder;
pub use state_machine::StateMachine;

openraft::declare_raft_types!(
    /// The Raft types of the metadata group.
    pub TypeConfig:
        D = MetaRequest,
        R = MetaResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// One mutation of the replicated key-value map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Sets `key` to `value`.
    Put { key: Vec<u8>, value: Vec<u8> },
    /// Removes `key`; absent keys are not an error.
    Delete { key: Vec<u8> },
}

/// A metadata command: mutations applied atomically, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaRequest {
    pub ops: Vec<Command>,
}

/// What applying one log entry did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaResponse {
    /// Mutations applied (0 for blank and membership entries).
    pub ops_applied: u64,
}

/// Opens (creating if missing) the store at `path`.
pub fn open(path: &Path) -> Result<(LogStore, StateMachine), StoreError> {
    let rocks = rocks::Rocks::open(path)?;
    Ok((LogStore::new(rocks.clone()), StateMachine::new(rocks)))
}
