//! The Raft storage of the metadata service: openraft's v2 log store and state
//! machine on one RocksDB (the only user of `rocksdb` is [`rocks`]).
//!
//! [`open`] returns the two halves, sharing one database. Layout and value
//! formats: `metadata/KEYSPACE.md`.

pub(crate) mod codec;
mod error;
mod log;
mod overlay;
mod reader;
mod rocks;
mod snapshot;
mod snapshot_file;
mod state_machine;

use std::path::Path;

pub use error::StoreError;
pub use log::LogStore;
pub use reader::StateReader;
pub use rocks::RocksError;
pub use snapshot::SnapshotBuilder;
pub use snapshot_file::SnapshotFile;
pub use state_machine::StateMachine;

use crate::state::{MetaRequest, MetaResponse};

openraft::declare_raft_types!(
    /// The Raft types of the metadata group.
    pub TypeConfig:
        D = MetaRequest,
        R = MetaResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = SnapshotFile,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Opens (creating if missing) the store at `path`.
pub fn open(path: &Path) -> Result<(LogStore, StateMachine), StoreError> {
    let rocks = rocks::Rocks::open(path)?;
    let files = snapshot_file::SnapshotFiles::open(path.join("snapshots"))?;
    Ok((LogStore::new(rocks.clone()), StateMachine::new(rocks, files)?))
}
