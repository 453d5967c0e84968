//! The RocksDB store against openraft's own storage conformance suite, plus
//! what the suite does not check: state surviving a close and reopen.

use chuyi_metadata::store::{self, Command, LogStore, MetaRequest, StateMachine, TypeConfig};
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
fn openraft_storage_suite() -> Result<(), StorageError<u64>> {
    Suite::test_all(RocksBuilder)
}

fn normal(term: u64, index: u64, ops: Vec<Command>) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Normal(MetaRequest { ops }),
    }
}

fn put(key: &[u8], value: &[u8]) -> Command {
    Command::Put { key: key.to_vec(), value: value.to_vec() }
}

/// Vote, log entries and applied state written before a close are all read
/// back after reopening the same directory: they were on disk, not in memory.
#[tokio::test]
async fn state_survives_reopen() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let entries = vec![
        normal(1, 1, vec![put(b"a", b"1"), put(b"b", b"2")]),
        normal(1, 2, vec![Command::Delete { key: b"a".to_vec() }, put(b"c", b"3")]),
    ];
    {
        let (mut log, mut sm) = store::open(dir.path())?;
        log.save_vote(&Vote::new(3, 1)).await?;
        log.blocking_append(entries.clone()).await?;
        let responses = sm.apply(entries.clone()).await?;
        assert_eq!(responses.iter().map(|r| r.ops_applied).collect::<Vec<_>>(), vec![2, 2]);
    }
    let (mut log, mut sm) = store::open(dir.path())?;
    assert_eq!(log.read_vote().await?, Some(Vote::new(3, 1)));
    let read = log.try_get_log_entries(1..=2).await?;
    assert_eq!(format!("{read:?}"), format!("{entries:?}"));
    assert_eq!(sm.applied_state().await?.0, Some(entries[1].log_id));
    assert_eq!(sm.get(b"a")?, None);
    assert_eq!(sm.get(b"b")?, Some(b"2".to_vec()));
    assert_eq!(sm.get(b"c")?, Some(b"3".to_vec()));
    Ok(())
}
