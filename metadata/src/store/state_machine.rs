//! The replicated state machine: a key-value map in `sm_data` plus the
//! applied log id and membership in `sm_meta`, always written together in one
//! WriteBatch so a crash never separates data from the log id it reflects.
//!
//! Applies are buffered (no fsync): the log is synced, and entries applied
//! but lost in a crash are applied again from it on restart.

use std::io::Cursor;

use openraft::storage::RaftStateMachine;
use openraft::{
    Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, Snapshot, SnapshotMeta, StoredMembership,
};

use super::codec::{decode_opt, encode};
use super::error::{RaftResult, StoreResult};
use super::rocks::{Batch, Cf, Durability, Rocks};
use super::snapshot::{
    decode_pairs, read_applied, Membership, SnapshotBuilder, StoredSnapshot, LAST_APPLIED, LAST_MEMBERSHIP, SNAPSHOT,
};
use super::{Command, MetaRequest, MetaResponse, StoreError, TypeConfig};

/// The state machine half of the store.
#[derive(Debug)]
pub struct StateMachine {
    rocks: Rocks,
}

fn stage_request(batch: &mut Batch<'_>, request: &MetaRequest) -> MetaResponse {
    for op in &request.ops {
        match op {
            Command::Put { key, value } => batch.put(Cf::State, key, value),
            Command::Delete { key } => batch.delete(Cf::State, key),
        }
    }
    MetaResponse { ops_applied: request.ops.len() as u64 }
}

fn stage_applied(batch: &mut Batch<'_>, applied: &LogId<u64>, membership: &Membership) -> StoreResult<()> {
    batch.put(Cf::StateMeta, LAST_APPLIED, &encode("last applied log id", applied)?);
    batch.put(Cf::StateMeta, LAST_MEMBERSHIP, &encode("last membership", membership)?);
    Ok(())
}

impl StateMachine {
    pub(crate) fn new(rocks: Rocks) -> Self {
        Self { rocks }
    }

    /// Applies `entries` in one batch; one response per entry.
    fn apply_all(&self, entries: impl IntoIterator<Item = Entry<TypeConfig>>) -> StoreResult<Vec<MetaResponse>> {
        let (mut last, mut membership) = read_applied(&self.rocks.view())?;
        let mut batch = self.rocks.batch();
        let mut responses = Vec::new();
        for entry in entries {
            let response = match &entry.payload {
                EntryPayload::Blank => MetaResponse::default(),
                EntryPayload::Normal(request) => stage_request(&mut batch, request),
                EntryPayload::Membership(m) => {
                    membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    MetaResponse::default()
                }
            };
            last = Some(entry.log_id);
            responses.push(response);
        }
        if let Some(last) = &last {
            stage_applied(&mut batch, last, &membership)?;
        }
        batch.commit(Durability::Buffered)?;
        Ok(responses)
    }

    /// Replaces the whole state with the snapshot's, atomically.
    fn install(&self, meta: &SnapshotMeta<u64, openraft::BasicNode>, data: Vec<u8>) -> StoreResult<()> {
        let pairs = decode_pairs(&data)?;
        let mut batch = self.rocks.batch();
        batch.clear(Cf::State)?;
        for (key, value) in &pairs {
            batch.put(Cf::State, key, value);
        }
        match &meta.last_log_id {
            Some(applied) => stage_applied(&mut batch, applied, &meta.last_membership)?,
            None => batch.clear(Cf::StateMeta)?,
        }
        let stored = StoredSnapshot { meta: meta.clone(), data };
        batch.put(Cf::StateMeta, SNAPSHOT, &encode("snapshot", &stored)?);
        Ok(batch.commit(Durability::Sync)?)
    }

    /// The value of `key` in the applied state (a local, possibly stale read).
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.rocks.get(Cf::State, key)?)
    }

    fn current_snapshot(&self) -> StoreResult<Option<StoredSnapshot>> {
        decode_opt("snapshot", self.rocks.get(Cf::StateMeta, SNAPSHOT)?)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> RaftResult<(Option<LogId<u64>>, Membership)> {
        read_applied(&self.rocks.view()).map_err(|e| e.at(ErrorSubject::StateMachine, ErrorVerb::Read))
    }

    async fn apply<I>(&mut self, entries: I) -> RaftResult<Vec<MetaResponse>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.apply_all(entries).map_err(|e| e.at(ErrorSubject::StateMachine, ErrorVerb::Write))
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder::new(self.rocks.clone())
    }

    async fn begin_receiving_snapshot(&mut self) -> RaftResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> RaftResult<()> {
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        self.install(meta, snapshot.into_inner()).map_err(|e| e.at(subject, ErrorVerb::Write))
    }

    async fn get_current_snapshot(&mut self) -> RaftResult<Option<Snapshot<TypeConfig>>> {
        let stored = self.current_snapshot().map_err(|e| e.at(ErrorSubject::Snapshot(None), ErrorVerb::Read))?;
        Ok(stored.map(StoredSnapshot::into_snapshot))
    }
}
