//! The replicated state machine: the typed tables of `crate::state` in
//! `sm_data` plus the applied log id and membership in `sm_meta`, always
//! written together in one WriteBatch so a crash never separates data from
//! the log id it reflects.
//!
//! Applies are buffered (no fsync): the log is synced, and entries applied
//! but lost in a crash are applied again from it on restart.

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
    current, read_applied, Membership, SnapshotBuilder, StoredSnapshot, INSTALLING, LAST_APPLIED, LAST_MEMBERSHIP,
    SNAPSHOT_FILE,
};
use super::snapshot_file::{SnapshotFile, SnapshotFiles, RECEIVING_PREFIX};
use super::{StoreError, TypeConfig};
use crate::state::apply::{apply, entry_time, Ctx};
use crate::state::{view, MetaError, MetaRequest, MetaResponse, COMMANDS_PER_ENTRY_MAX};

/// The state machine half of the store.
#[derive(Debug)]
pub struct StateMachine {
    rocks: Rocks,
    files: SnapshotFiles,
    /// Written for the length of an install: readers wait (reader.rs).
    installing: std::sync::Arc<std::sync::RwLock<()>>,
    /// Applies wait on it while a snapshot builder has not yet taken its
    /// view (snapshot.rs, `SnapshotBuilder`).
    apply_gate: std::sync::Arc<tokio::sync::Mutex<()>>,
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
    /// Opens the state machine; finishes an install a crash cut short
    /// before anything reads the state.
    pub(crate) fn new(rocks: Rocks, files: SnapshotFiles) -> Result<Self, StoreError> {
        let installing: Option<StoredSnapshot> = decode_opt("snapshot install", rocks.get(Cf::StateMeta, INSTALLING)?)?;
        files.remove_receiving(installing.as_ref().map(|s| s.file.as_str()));
        let epoch = view::epoch(&rocks.view())?;
        let machine = Self {
            rocks,
            files,
            installing: std::sync::Arc::default(),
            apply_gate: std::sync::Arc::default(),
            epoch: tokio::sync::watch::Sender::new(epoch),
        };
        if let Some(stored) = installing {
            tracing::warn!(snapshot = stored.meta.snapshot_id, "finishing a snapshot install cut short");
            machine.finish_install(&stored)?;
        }
        Ok(machine)
    }

    /// A read handle on the applied state; it lives beyond the state machine
    /// (which openraft owns once the group starts).
    pub fn reader(&self) -> StateReader {
        StateReader::new(self.rocks.clone(), self.epoch.subscribe(), self.installing.clone())
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

    /// Replaces the whole state with the snapshot in file `name`, which
    /// has just been received: checked whole first, then marked as being
    /// installed (durably), then installed. A crash after the mark
    /// finishes the install at the next start ([`Self::new`]), so the state
    /// is never left half old, half new.
    fn install(&self, meta: &SnapshotMeta<u64, openraft::BasicNode>, received: &str) -> StoreResult<()> {
        let pairs = self.files.verify(received)?;
        let name = format!("{}.snap", meta.snapshot_id);
        if received != name {
            self.files.adopt(received, &name)?;
        }
        let stored = StoredSnapshot { meta: meta.clone(), file: name };
        let mut batch = self.rocks.batch();
        batch.put(Cf::StateMeta, INSTALLING, &encode("snapshot install", &stored)?);
        batch.commit(Durability::Sync)?;
        self.finish_install(&stored)?;
        tracing::info!(snapshot = meta.snapshot_id, pairs, "snapshot installed");
        Ok(())
    }

    /// Clears the state, writes the snapshot's pairs in batches of at most
    /// [`INSTALL_BATCH_BYTES`], then, in one synced batch, the applied log
    /// id and membership, the snapshot as current, and the mark's removal.
    fn finish_install(&self, stored: &StoredSnapshot) -> StoreResult<()> {
        let _readers_wait = self.installing.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut batch = self.rocks.batch();
        batch.clear(Cf::State)?;
        batch.commit(Durability::Buffered)?;
        let mut batch = self.rocks.batch();
        let mut bytes = 0;
        for pair in self.files.pairs(&stored.file)? {
            let (key, value) = pair?;
            bytes += key.len() + value.len();
            batch.put(Cf::State, &key, &value);
            if bytes >= INSTALL_BATCH_BYTES {
                batch.commit(Durability::Buffered)?;
                batch = self.rocks.batch();
                bytes = 0;
            }
        }
        match &stored.meta.last_log_id {
            Some(applied) => stage_applied(&mut batch, applied, &stored.meta.last_membership)?,
            None => batch.clear(Cf::StateMeta)?,
        }
        batch.put(Cf::StateMeta, SNAPSHOT_FILE, &encode("snapshot", stored)?);
        batch.delete(Cf::StateMeta, INSTALLING);
        batch.commit(Durability::Sync)?;
        self.files.remove_others(&stored.file);
        self.publish_epoch()
    }
}

/// A new name for a file being received.
fn receiving_name() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{RECEIVING_PREFIX}{nanos}.snap")
}

/// The most bytes of pairs one install batch holds: the bound on what an
/// install keeps in memory, whatever the snapshot's size.
const INSTALL_BATCH_BYTES: usize = 4 << 20;

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
        let _builder_has_its_view = self.apply_gate.lock().await;
        self.apply_all(entries).map_err(|e| e.at(ErrorSubject::StateMachine, ErrorVerb::Write))
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        let gate = self.apply_gate.clone().lock_owned().await;
        SnapshotBuilder::new(self.rocks.clone(), self.files.clone(), Some(gate))
    }

    /// A new file under the receiving prefix, which openraft fills chunk by
    /// chunk.
    async fn begin_receiving_snapshot(&mut self) -> RaftResult<Box<SnapshotFile>> {
        let file = SnapshotFile::create(self.files.path(&receiving_name())).await;
        let file = file.map_err(|source| StoreError::Io { what: "creating a snapshot to receive", source });
        Ok(Box::new(file.map_err(|e| e.at(ErrorSubject::Snapshot(None), ErrorVerb::Write))?))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        mut snapshot: Box<SnapshotFile>,
    ) -> RaftResult<()> {
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        let _files = self.files.lock.clone().lock_owned().await;
        let received = async {
            snapshot.sync().await?;
            snapshot.name_in(&self.files, receiving_name()).await
        };
        let name = received.await.map_err(|source| StoreError::Io { what: "keeping a received snapshot", source });
        let name = name.map_err(|e| e.at(subject.clone(), ErrorVerb::Write))?;
        self.install(meta, &name).map_err(|e| e.at(subject, ErrorVerb::Write))
    }

    async fn get_current_snapshot(&mut self) -> RaftResult<Option<Snapshot<TypeConfig>>> {
        let err = |e: StoreError| e.at(ErrorSubject::Snapshot(None), ErrorVerb::Read);
        let _files = self.files.lock.clone().lock_owned().await;
        match current(&self.rocks).map_err(err)? {
            Some(stored) => Ok(Some(stored.open(&self.files).await.map_err(err)?)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn pair(i: u32) -> (Vec<u8>, Vec<u8>) {
        (format!("k{i:06}").into_bytes(), vec![(i % 251) as u8; 100])
    }

    /// An install cut short after its mark (the old state half cleared,
    /// some of the new written) is finished at the next open from the
    /// received file: the state is then the snapshot's, whole, and nothing
    /// of the old state is left.
    #[test]
    fn an_install_cut_short_is_finished_at_the_next_open() {
        let (a_dir, b_dir) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
        let (_, a) = super::super::open(a_dir.path()).expect("open a");
        let mut batch = a.rocks.batch();
        for i in 0..5000 {
            let (k, v) = pair(i);
            batch.put(Cf::State, &k, &v);
        }
        let applied = LogId::new(CommittedLeaderId::new(3, 1), 7);
        stage_applied(&mut batch, &applied, &Membership::default()).expect("staged");
        batch.commit(Durability::Sync).expect("commit");
        let built = SnapshotBuilder::new(a.rocks.clone(), a.files.clone(), None).build().expect("built");
        // A received snapshot installed through the trait is named by its id
        // and survives a restart (the start-up clean-up of unfinished
        // receptions leaves it).
        let c_dir = tempfile::tempdir().expect("dir");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let (_, mut sm) = super::super::open(c_dir.path()).expect("open c");
            let mut file = sm.begin_receiving_snapshot().await.expect("receiving");
            let bytes = std::fs::read(a.files.path(&built.file)).expect("read");
            tokio::io::AsyncWriteExt::write_all(&mut *file, &bytes).await.expect("received");
            sm.install_snapshot(&built.meta, file).await.expect("installed");
        });
        runtime.block_on(async {
            let (_, mut sm) = super::super::open(c_dir.path()).expect("reopen c");
            let current = sm.get_current_snapshot().await.expect("read").expect("a snapshot");
            assert_eq!(current.meta.snapshot_id, built.meta.snapshot_id);
        });
        assert_eq!(built.meta.last_log_id, Some(applied));

        let (_, b) = super::super::open(b_dir.path()).expect("open b");
        let mut batch = b.rocks.batch();
        batch.put(Cf::State, b"zz-old", b"old");
        batch.commit(Durability::Sync).expect("old state");
        // Install names the received file by the snapshot's id before the mark.
        let received = format!("{}.snap", built.meta.snapshot_id);
        std::fs::copy(a.files.path(&built.file), b.files.path(&received)).expect("received");
        let stored = StoredSnapshot { meta: built.meta.clone(), file: received.clone() };
        let mut batch = b.rocks.batch();
        batch.put(Cf::StateMeta, INSTALLING, &encode("snapshot install", &stored).expect("encoded"));
        batch.put(Cf::State, &pair(0).0, &pair(0).1);
        batch.commit(Durability::Sync).expect("marked, then cut short");
        drop(b);

        let (_, b) = super::super::open(b_dir.path()).expect("reopen b");
        let view = b.rocks.view();
        let state: Vec<_> = view.pairs(Cf::State).collect::<Result<_, _>>().expect("state");
        assert_eq!(state, (0..5000).map(pair).collect::<Vec<_>>(), "the snapshot's state, whole, and nothing old");
        assert_eq!(read_applied(&view).expect("applied").0, Some(applied));
        assert!(view.get(Cf::StateMeta, INSTALLING).expect("get").is_none(), "the mark is gone");
        assert_eq!(current(&b.rocks).expect("current").map(|s| s.file), Some(received));
    }
}
