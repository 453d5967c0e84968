//! The Raft log and the Raft meta (vote, committed, last purged) in the
//! `raft_log` and `raft_meta` column families.
//!
//! Durability: a log append is one WriteBatch written with `sync = true`
//! (WAL write plus fsync) and its callback runs only after that returns.
//! Votes and truncations are synced too. Purge and committed are buffered:
//! losing them in a crash only means re-purging or re-applying, and the next
//! synced write of the shared WAL makes them durable anyway.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogId, RaftLogReader, Vote};

use super::codec::{decode, decode_opt, encode, log_key, parse_log_key};
use super::error::{RaftResult, StoreResult};
use super::rocks::{Cf, Durability, Rocks};
use super::{StoreError, TypeConfig};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// The log half of the store. Clones share the database; a clone is the
/// log reader openraft hands to replication tasks.
#[derive(Debug, Clone)]
pub struct LogStore {
    rocks: Rocks,
    /// Bytes of entries appended since this process opened the log: what
    /// the snapshot schedule weighs a snapshot's size against.
    appended: Arc<AtomicU64>,
}

/// Half-open index range `[start, end)`; `end == None` is unbounded.
fn index_range(range: &impl RangeBounds<u64>) -> (u64, Option<u64>) {
    let start = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&i) => i.checked_add(1),
        Bound::Excluded(&i) => Some(i),
        Bound::Unbounded => None,
    };
    (start, end)
}

fn decode_entry(key: &[u8], value: &[u8]) -> StoreResult<Entry<TypeConfig>> {
    let index = parse_log_key(key)?;
    let entry: Entry<TypeConfig> = decode("log entry", value)?;
    if entry.get_log_id().index != index {
        return Err(StoreError::LogIndexMismatch { key: index, entry: entry.get_log_id().index });
    }
    Ok(entry)
}

impl LogStore {
    pub(crate) fn new(rocks: Rocks) -> Self {
        Self { rocks, appended: Arc::default() }
    }

    /// A counter of the bytes of entries appended from now on (shared by
    /// every clone).
    pub fn appended_bytes(&self) -> Arc<AtomicU64> {
        self.appended.clone()
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &'static [u8],
        what: &'static str,
    ) -> StoreResult<Option<T>> {
        decode_opt(what, self.rocks.get(Cf::RaftMeta, key)?)
    }

    fn write_meta<T: serde::Serialize>(
        &self,
        key: &[u8],
        what: &'static str,
        value: &T,
        d: Durability,
    ) -> StoreResult<()> {
        let mut batch = self.rocks.batch();
        batch.put(Cf::RaftMeta, key, &encode(what, value)?);
        Ok(batch.commit(d)?)
    }

    fn last_log_id(&self) -> StoreResult<Option<LogId<u64>>> {
        match self.rocks.last(Cf::Log)? {
            Some((k, v)) => Ok(Some(*decode_entry(&k, &v)?.get_log_id())),
            None => Ok(None),
        }
    }

    fn append_batch(&self, entries: impl IntoIterator<Item = Entry<TypeConfig>>) -> StoreResult<()> {
        let mut batch = self.rocks.batch();
        for entry in entries {
            let value = encode("log entry", &entry)?;
            self.appended.fetch_add(value.len() as u64, Ordering::Relaxed);
            batch.put(Cf::Log, &log_key(entry.get_log_id().index), &value);
        }
        Ok(batch.commit(Durability::Sync)?)
    }

    /// Deletes entries with `index >= from`.
    fn delete_since(&self, from: u64) -> StoreResult<()> {
        let mut batch = self.rocks.batch();
        batch.delete_range(Cf::Log, &log_key(from), &log_key(u64::MAX));
        batch.delete(Cf::Log, &log_key(u64::MAX));
        Ok(batch.commit(Durability::Sync)?)
    }

    /// Records `upto` as purged and deletes entries with `index <= upto`.
    fn delete_upto(&self, upto: LogId<u64>) -> StoreResult<()> {
        let mut batch = self.rocks.batch();
        batch.put(Cf::RaftMeta, LAST_PURGED, &encode("last purged log id", &upto)?);
        batch.delete_range(Cf::Log, &log_key(0), &log_key(upto.index));
        batch.delete(Cf::Log, &log_key(upto.index));
        Ok(batch.commit(Durability::Buffered)?)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> RaftResult<Vec<Entry<TypeConfig>>> {
        let (start, end) = index_range(&range);
        let end_key = end.map(log_key);
        let read = || -> StoreResult<Vec<_>> {
            let pairs = self.rocks.scan(Cf::Log, &log_key(start), end_key.as_ref().map(|k| &k[..]))?;
            pairs.iter().map(|(k, v)| decode_entry(k, v)).collect()
        };
        read().map_err(|e| e.at(ErrorSubject::Logs, ErrorVerb::Read))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> RaftResult<LogState<TypeConfig>> {
        let read = || -> StoreResult<_> {
            let last_purged_log_id = self.read_meta(LAST_PURGED, "last purged log id")?;
            let last_log_id = self.last_log_id()?.or(last_purged_log_id);
            Ok(LogState { last_purged_log_id, last_log_id })
        };
        read().map_err(|e| e.at(ErrorSubject::Logs, ErrorVerb::Read))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> RaftResult<()> {
        self.write_meta(VOTE, "vote", vote, Durability::Sync).map_err(|e| e.at(ErrorSubject::Vote, ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> RaftResult<Option<Vote<u64>>> {
        self.read_meta(VOTE, "vote").map_err(|e| e.at(ErrorSubject::Vote, ErrorVerb::Read))
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> RaftResult<()> {
        self.write_meta(COMMITTED, "committed log id", &committed, Durability::Buffered)
            .map_err(|e| e.at(ErrorSubject::Store, ErrorVerb::Write))
    }

    async fn read_committed(&mut self) -> RaftResult<Option<LogId<u64>>> {
        let committed: StoreResult<Option<Option<LogId<u64>>>> = self.read_meta(COMMITTED, "committed log id");
        committed.map(Option::flatten).map_err(|e| e.at(ErrorSubject::Store, ErrorVerb::Read))
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> RaftResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.append_batch(entries).map_err(|e| e.at(ErrorSubject::Logs, ErrorVerb::Write))?;
        // The batch is on stable storage (synced WAL): tell openraft.
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> RaftResult<()> {
        self.delete_since(log_id.index).map_err(|e| e.at(ErrorSubject::Log(log_id), ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> RaftResult<()> {
        self.delete_upto(log_id).map_err(|e| e.at(ErrorSubject::Log(log_id), ErrorVerb::Delete))
    }
}
