//! Raft snapshots of the state machine, streamed through files: built by
//! iterating `sm_data` under one RocksDB snapshot into a snapshot file
//! ([`super::snapshot_file`]), sent from that file in chunks by openraft,
//! received into a file, checked whole, and installed from it in bounded
//! batches (state_machine.rs). No step holds the state in memory, so a
//! member's memory does not grow with the object index.
//!
//! `sm_meta` names the current snapshot (`StoredSnapshot`: its openraft
//! meta and file name); its file lives in `<data_dir>/snapshots/`.

use std::time::{SystemTime, UNIX_EPOCH};

use openraft::{
    BasicNode, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::codec::{decode_opt, encode};
use super::error::{RaftResult, StoreError, StoreResult};
use super::rocks::{Cf, Durability, Rocks, View};
use super::snapshot_file::{SnapshotFile, SnapshotFiles};
use super::TypeConfig;

/// `sm_meta` keys.
pub(crate) const LAST_APPLIED: &[u8] = b"last_applied";
pub(crate) const LAST_MEMBERSHIP: &[u8] = b"last_membership";
/// The current snapshot: a [`StoredSnapshot`]. (`snapshot`, the key of
/// the in-memory snapshots of before, is ignored and dropped.)
pub(crate) const SNAPSHOT_FILE: &[u8] = b"snapshot_file";
pub(crate) const OLD_SNAPSHOT: &[u8] = b"snapshot";
/// Present while a received snapshot is being installed: the
/// [`StoredSnapshot`] to finish installing (again, after a crash).
pub(crate) const INSTALLING: &[u8] = b"installing";

pub(crate) type Membership = StoredMembership<u64, BasicNode>;

/// A snapshot's openraft meta and the file holding its pairs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredSnapshot {
    pub(crate) meta: SnapshotMeta<u64, BasicNode>,
    pub(crate) file: String,
}

impl StoredSnapshot {
    pub(crate) async fn open(self, files: &SnapshotFiles) -> StoreResult<Snapshot<TypeConfig>> {
        let file = SnapshotFile::open(files.path(&self.file))
            .await
            .map_err(|source| StoreError::Io { what: "opening the current snapshot", source })?;
        Ok(Snapshot { meta: self.meta, snapshot: Box::new(file) })
    }
}

/// Last applied log id and membership as seen by `view`.
pub(crate) fn read_applied(view: &View<'_>) -> StoreResult<(Option<LogId<u64>>, Membership)> {
    let applied = decode_opt("last applied log id", view.get(Cf::StateMeta, LAST_APPLIED)?)?;
    let membership = decode_opt("last membership", view.get(Cf::StateMeta, LAST_MEMBERSHIP)?)?;
    Ok((applied, membership.unwrap_or_default()))
}

/// The current snapshot, if one was built or installed.
pub(crate) fn current(rocks: &Rocks) -> StoreResult<Option<StoredSnapshot>> {
    decode_opt("snapshot", rocks.get(Cf::StateMeta, SNAPSHOT_FILE)?)
}

/// Unique enough to tell two snapshots of the same log id apart.
fn snapshot_id(last: Option<LogId<u64>>) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    match last {
        Some(id) => format!("{}-{}-{nanos}", id.leader_id, id.index),
        None => format!("none-{nanos}"),
    }
}

/// Builds snapshots from a clone of the database handle.
///
/// openraft asks for the builder at one applied position and builds on a
/// task of its own while applies go on; the snapshot must be of that
/// position. So the builder holds the state machine's apply gate from its
/// creation until it has taken its RocksDB view.
#[derive(Debug)]
pub struct SnapshotBuilder {
    rocks: Rocks,
    files: SnapshotFiles,
    applies_wait: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl SnapshotBuilder {
    pub(crate) fn new(
        rocks: Rocks,
        files: SnapshotFiles,
        applies_wait: Option<tokio::sync::OwnedMutexGuard<()>>,
    ) -> Self {
        Self { rocks, files, applies_wait }
    }

    /// Streams the state at one instant into a new file, then makes it
    /// the current snapshot and deletes the older ones. Call with
    /// `files.lock` held; lets applies go on once its view is taken.
    pub(crate) fn build(&mut self) -> StoreResult<StoredSnapshot> {
        let view = self.rocks.view();
        self.applies_wait = None;
        let (last_log_id, last_membership) = read_applied(&view)?;
        let snapshot_id = snapshot_id(last_log_id);
        let file = format!("{snapshot_id}.snap");
        self.files.write(&file, view.pairs(Cf::State).map(|p| p.map_err(StoreError::from)))?;
        drop(view);
        let stored = StoredSnapshot { meta: SnapshotMeta { last_log_id, last_membership, snapshot_id }, file };
        let mut batch = self.rocks.batch();
        batch.put(Cf::StateMeta, SNAPSHOT_FILE, &encode("snapshot", &stored)?);
        batch.delete(Cf::StateMeta, OLD_SNAPSHOT);
        // Synced before the older file goes: the name on disk always
        // points at a file that exists.
        batch.commit(Durability::Sync)?;
        self.files.remove_others(&stored.file);
        Ok(stored)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> RaftResult<Snapshot<TypeConfig>> {
        let err = |e: StoreError| e.at(ErrorSubject::Snapshot(None), ErrorVerb::Write);
        let _files = self.files.lock.clone().lock_owned().await;
        // Synchronous: the view is not `'static`, so it cannot go to a
        // blocking task; this is openraft's own task for the build.
        let stored = self.build().map_err(err)?;
        stored.open(&self.files).await.map_err(err)
    }
}
