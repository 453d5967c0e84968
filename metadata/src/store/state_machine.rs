//! The replicated state machine: the typed tables of `crate::state` in
//! `sm_data` plus the applied log id and membership in `sm_meta`, always
//! written together in one WriteBatch so a crash never separates data from
//! the log id it reflects.
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
use super::overlay::Overlay;
use super::reader::StateReader;
use super::rocks::{Batch, Cf, Durability, Rocks};
use super::snapshot::{
    decode_pairs, read_applied, Membership, SnapshotBuilder, StoredSnapshot, LAST_APPLIED, LAST_MEMBERSHIP, SNAPSHOT,
};
use super::{StoreError, TypeConfig};
use crate::state::apply::{apply, entry_time, Ctx};
use crate::state::{view, MetaError, MetaRequest, MetaResponse, COMMANDS_PER_ENTRY_MAX};

/// The state machine half of the store.
#[derive(Debug)]
pub struct StateMachine {
    rocks: Rocks,
    /// The map epoch after the last apply, for watchers.
    epoch: tokio::sync::watch::Sender<u64>,
}

/// Applies one entry's commands; a refused command is rolled back alone.
fn stage_request(overlay: &mut Overlay<'_>, index: u64, request: &MetaRequest) -> StoreResult<MetaResponse> {
    let mut results = Vec::with_capacity(request.commands.len());
    let now_ms = entry_time(overlay, request.now_ms)?;
    for (position, command) in request.commands.iter().enumerate() {
        if position >= COMMANDS_PER_ENTRY_MAX {
            results
                .push(Err(MetaError::Malformed(format!("more than {COMMANDS_PER_ENTRY_MAX} commands in one entry"))));
            continue;
        }
        let ctx = Ctx { now_ms, seq: (index << 16) | position as u64 };
        let checkpoint = overlay.checkpoint();
        let result = apply(overlay, ctx, command)?;
        if result.is_err() {
            overlay.rollback(checkpoint);
        }
        results.push(result);
    }
    Ok(MetaResponse { results })
}

fn stage_applied(batch: &mut Batch<'_>, applied: &LogId<u64>, membership: &Membership) -> StoreResult<()> {
    batch.put(Cf::StateMeta, LAST_APPLIED, &encode("last applied log id", applied)?);
    batch.put(Cf::StateMeta, LAST_MEMBERSHIP, &encode("last membership", membership)?);
    Ok(())
}

impl StateMachine {
    pub(crate) fn new(rocks: Rocks) -> Result<Self, StoreError> {
        let epoch = view::epoch(&rocks.view())?;
        Ok(Self { rocks, epoch: tokio::sync::watch::Sender::new(epoch) })
    }

    /// A read handle on the applied state; it lives beyond the state machine
    /// (which openraft owns once the group starts).
    pub fn reader(&self) -> StateReader {
        StateReader::new(self.rocks.clone(), self.epoch.subscribe())
    }

    fn publish_epoch(&self) -> StoreResult<()> {
        let epoch = view::epoch(&self.rocks.view())?;
        self.epoch.send_if_modified(|e| std::mem::replace(e, epoch) != epoch);
        Ok(())
    }

    /// Applies `entries` in one batch; one response per entry.
    fn apply_all(&self, entries: impl IntoIterator<Item = Entry<TypeConfig>>) -> StoreResult<Vec<MetaResponse>> {
        let view = self.rocks.view();
        let (mut last, mut membership) = read_applied(&view)?;
        let mut overlay = Overlay::new(view);
        let mut responses = Vec::new();
        for entry in entries {
            let response = match &entry.payload {
                EntryPayload::Blank => MetaResponse::default(),
                EntryPayload::Normal(request) => stage_request(&mut overlay, entry.log_id.index, request)?,
                EntryPayload::Membership(m) => {
                    membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    MetaResponse::default()
                }
            };
            last = Some(entry.log_id);
            responses.push(response);
        }
        let mut batch = self.rocks.batch();
        overlay.stage_into(&mut batch);
        if let Some(last) = &last {
            stage_applied(&mut batch, last, &membership)?;
        }
        batch.commit(Durability::Buffered)?;
        self.publish_epoch()?;
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
        batch.commit(Durability::Sync)?;
        self.publish_epoch()
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
