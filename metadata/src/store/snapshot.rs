//! Raft snapshots of the state machine: every pair of `sm_data`, read under
//! one RocksDB snapshot together with the applied log id and membership.
//!
//! The payload is one postcard list of pairs, so a snapshot is built, held
//! and sent in memory: fine while the metadata is megabytes, not for a
//! large object index (see KEYSPACE.md, "Snapshots").

use std::io::Cursor;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::{
    BasicNode, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::codec::{decode, decode_opt, encode};
use super::error::{RaftResult, StoreResult};
use super::rocks::{Cf, Durability, Pair, Rocks, View};
use super::TypeConfig;

/// `sm_meta` keys.
pub(crate) const LAST_APPLIED: &[u8] = b"last_applied";
pub(crate) const LAST_MEMBERSHIP: &[u8] = b"last_membership";
pub(crate) const SNAPSHOT: &[u8] = b"snapshot";

pub(crate) type Membership = StoredMembership<u64, BasicNode>;

/// The last snapshot built or installed, kept so `get_current_snapshot`
/// survives a restart.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredSnapshot {
    pub(crate) meta: SnapshotMeta<u64, BasicNode>,
    pub(crate) data: Vec<u8>,
}

impl StoredSnapshot {
    pub(crate) fn into_snapshot(self) -> Snapshot<TypeConfig> {
        Snapshot { meta: self.meta, snapshot: Box::new(Cursor::new(self.data)) }
    }
}

/// Last applied log id and membership as seen by `view`.
pub(crate) fn read_applied(view: &View<'_>) -> StoreResult<(Option<LogId<u64>>, Membership)> {
    let applied = decode_opt("last applied log id", view.get(Cf::StateMeta, LAST_APPLIED)?)?;
    let membership = decode_opt("last membership", view.get(Cf::StateMeta, LAST_MEMBERSHIP)?)?;
    Ok((applied, membership.unwrap_or_default()))
}

pub(crate) fn encode_pairs(pairs: &[Pair]) -> StoreResult<Vec<u8>> {
    encode("snapshot data", pairs)
}

pub(crate) fn decode_pairs(data: &[u8]) -> StoreResult<Vec<Pair>> {
    decode("snapshot data", data)
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
#[derive(Debug, Clone)]
pub struct SnapshotBuilder {
    rocks: Rocks,
}

impl SnapshotBuilder {
    pub(crate) fn new(rocks: Rocks) -> Self {
        Self { rocks }
    }

    fn build(&self) -> StoreResult<StoredSnapshot> {
        let view = self.rocks.view();
        let (last_log_id, last_membership) = read_applied(&view)?;
        let data = encode_pairs(&view.scan_all(Cf::State)?)?;
        drop(view);
        let snapshot_id = snapshot_id(last_log_id);
        let stored = StoredSnapshot { meta: SnapshotMeta { last_log_id, last_membership, snapshot_id }, data };
        let mut batch = self.rocks.batch();
        batch.put(Cf::StateMeta, SNAPSHOT, &encode("snapshot", &stored)?);
        batch.commit(Durability::Buffered)?;
        Ok(stored)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> RaftResult<Snapshot<TypeConfig>> {
        let stored = self.build().map_err(|e| e.at(ErrorSubject::Snapshot(None), ErrorVerb::Write))?;
        Ok(stored.into_snapshot())
    }
}
