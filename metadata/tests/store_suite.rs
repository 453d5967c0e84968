//! The RocksDB store against openraft's own storage conformance suite, plus
//! what the suite does not check: state surviving a close and reopen.

use chuyi_common::ids::DeviceClass;
use chuyi_metadata::state::model::DiskRecord;
use chuyi_metadata::state::{Command, MetaError, MetaRequest};
use chuyi_metadata::store::{self, LogStore, StateMachine, TypeConfig};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    AnyError, CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, StorageError, StorageIOError, Vote,
};
use tempfile::TempDir;

/// Opens a fresh store in a temp dir; the dir is the guard, dropped last.
struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().map_err(|e| setup_error(&e))?;
        let (log, sm) = store::open(dir.path()).map_err(|e| setup_error(&e))?;
        Ok((dir, log, sm))
    }
}

fn setup_error(e: &(impl std::error::Error + 'static)) -> StorageError<u64> {
    StorageIOError::write(AnyError::new(e)).into()
}

/// Every test of openraft's suite, each on a fresh database.
#[test]
#[allow(clippy::result_large_err)] // openraft's StorageError, as its suite returns it
fn openraft_storage_suite() -> Result<(), StorageError<u64>> {
    Suite::test_all(RocksBuilder)
}

fn normal(term: u64, index: u64, commands: Vec<Command>) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Normal(MetaRequest { now_ms: 1000, commands }),
    }
}

fn register(id: u32) -> Command {
    let disks = vec![DiskRecord::empty(0, DeviceClass::Ssd, 1 << 40)];
    Command::RegisterNode { id, addrs: vec![format!("127.0.0.1:{id}")], failure_domain: String::new(), disks }
}

/// Vote, log entries and applied state written before a close are all read
/// back after reopening the same directory: they were on disk, not in memory.
#[tokio::test]
async fn state_survives_reopen() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let entries = vec![
        normal(1, 1, vec![register(1), register(2)]),
        // The second heartbeat names a node never registered: refused alone.
        normal(1, 2, vec![Command::Heartbeat { id: 1, disks: vec![] }, Command::Heartbeat { id: 9, disks: vec![] }]),
    ];
    {
        let (mut log, mut sm) = store::open(dir.path())?;
        log.save_vote(&Vote::new(3, 1)).await?;
        log.blocking_append(entries.clone()).await?;
        let responses = sm.apply(entries.clone()).await?;
        assert_eq!(responses[1].results[1], Err(MetaError::UnknownNode(9)));
    }
    let (mut log, mut sm) = store::open(dir.path())?;
    assert_eq!(log.read_vote().await?, Some(Vote::new(3, 1)));
    let read = log.try_get_log_entries(1..=2).await?;
    assert_eq!(format!("{read:?}"), format!("{entries:?}"));
    assert_eq!(sm.applied_state().await?.0, Some(entries[1].log_id));
    let map = sm.reader().map()?;
    assert_eq!(map.nodes.iter().map(|n| n.id).collect::<Vec<_>>(), vec![1, 2]);
    assert!(map.nodes[0].disks.is_empty(), "node 1's heartbeat applied");
    assert_eq!(map.epoch, 3, "two registrations and one disk change");
    Ok(())
}
