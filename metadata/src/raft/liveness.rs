//! Storage node liveness, kept in the leader's memory.
//!
//! Every node heartbeats each second. Committing each heartbeat cost a
//! Raft log write per node per second (a thousand a second at a thousand
//! nodes) that changed nothing. The leader instead notes when it last heard
//! each node, and commits a heartbeat only when it changes the state: the
//! node comes back up, its disks changed in a way placement sees, or its
//! used bytes moved and the last commit of them is older than
//! [`STATS_COMMIT_INTERVAL`] (what `chuyi status` shows). The leader's
//! monitor marks a node down from this memory; a new leader, which has none,
//! waits one heartbeat timeout before judging anyone (monitor.rs).
//!
//! A leader that lost its quorum without knowing it must not keep nodes
//! alive on its word: it takes heartbeats only while a quorum has
//! acknowledged it recently, else the node tries another member.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chuyi_common::clock::{self, Instant};

use chuyi_common::ids::NodeId;

use crate::state::model::{DiskRecord, NodeRecord, NodeState};
use crate::state::nodes::changed_for_placement;

/// How stale the committed disk statistics of a live node may get.
pub const STATS_COMMIT_INTERVAL: Duration = Duration::from_secs(30);

/// Whether a leader has heard from a quorum recently enough (within half
/// the heartbeat timeout) for its memory of the nodes to count: one that
/// has not may be deposed without knowing it.
pub fn quorum_fresh(millis_since_quorum_ack: Option<u64>, heartbeat_timeout: Duration) -> bool {
    millis_since_quorum_ack.is_some_and(|ms| u128::from(ms) < heartbeat_timeout.as_millis() / 2)
}

#[derive(Debug, Default)]
pub struct Liveness {
    seen: Mutex<HashMap<NodeId, Seen>>,
}

#[derive(Clone, Copy, Debug)]
struct Seen {
    at: Instant,
    /// When this leader last committed one of the node's heartbeats.
    committed: Option<Instant>,
}

/// Whether a heartbeat must be committed, given the node's committed
/// record, the disks it reports now and how long ago this leader last
/// committed one of its heartbeats (`None`: never).
pub fn must_commit(record: &NodeRecord, disks: &[DiskRecord], since_commit: Option<Duration>) -> bool {
    let heard = NodeRecord { disks: disks.to_vec(), state: NodeState::Up, ..record.clone() };
    let used = |d: &[DiskRecord]| d.iter().map(|d| d.used_bytes).collect::<Vec<_>>();
    let stats_due = since_commit.is_none_or(|s| s >= STATS_COMMIT_INTERVAL);
    changed_for_placement(record, &heard) || (stats_due && used(&record.disks) != used(disks))
}

impl Liveness {
    /// Notes a heartbeat of `node` now; returns how long ago one of its
    /// heartbeats was last committed by this leader.
    pub fn heard(&self, node: NodeId) -> Option<Duration> {
        let mut seen = self.lock();
        let entry = seen.entry(node).or_insert(Seen { at: clock::now(), committed: None });
        entry.at = clock::now();
        entry.committed.map(|c| c.elapsed())
    }

    /// A heartbeat of `node` was committed.
    pub fn committed(&self, node: NodeId) {
        if let Some(s) = self.lock().get_mut(&node) {
            s.committed = Some(clock::now());
        }
    }

    /// How long `node` has been silent; `None` when this member never
    /// heard it (since it became leader, or at all).
    pub fn silent_for(&self, node: NodeId) -> Option<Duration> {
        self.lock().get(&node).map(|s| s.at.elapsed())
    }

    /// Forgets everything: this member stopped leading, and what it heard
    /// then says nothing about the nodes when it leads again.
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Seen>> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chuyi_common::ids::DeviceClass;

    use crate::state::model::DiskState;

    fn disk(used_bytes: u64) -> DiskRecord {
        DiskRecord { id: 0, class: DeviceClass::Ssd, capacity_bytes: 1 << 30, used_bytes, state: DiskState::Up }
    }

    fn node(state: NodeState, disks: Vec<DiskRecord>) -> NodeRecord {
        NodeRecord {
            id: 1,
            addrs: vec!["127.0.0.1:1".into()],
            failure_domain: String::new(),
            disks,
            state,
            last_heartbeat_ms: 0,
        }
    }

    #[test]
    fn only_heartbeats_that_change_the_state_are_committed() {
        let up = node(NodeState::Up, vec![disk(10)]);
        let recent = Some(Duration::from_secs(1));
        assert!(!must_commit(&up, &[disk(10)], recent), "a live node with the same disks");
        assert!(!must_commit(&up, &[disk(11)], recent), "used bytes move: not yet");
        assert!(must_commit(&up, &[disk(11)], Some(STATS_COMMIT_INTERVAL)), "used bytes, once stale");
        assert!(must_commit(&up, &[disk(11)], None), "used bytes this leader never committed");
        assert!(!must_commit(&up, &[disk(10)], None), "nothing changed, even for a new leader");
        let failed = DiskRecord { state: DiskState::Failed, ..disk(10) };
        assert!(must_commit(&up, &[failed], recent), "a failed disk, at once");
        assert!(must_commit(&up, &[disk(10), DiskRecord { id: 1, ..disk(0) }], recent), "a new disk");
        assert!(must_commit(&node(NodeState::Down, vec![disk(10)]), &[disk(10)], recent), "a node coming back");
    }

    #[test]
    fn silence_is_measured_from_the_last_heartbeat_heard() {
        let live = Liveness::default();
        assert_eq!(live.silent_for(3), None);
        assert_eq!(live.heard(3), None);
        live.committed(3);
        assert!(live.heard(3).is_some_and(|d| d < Duration::from_secs(1)));
        assert!(live.silent_for(3).is_some_and(|d| d < Duration::from_secs(1)));
        live.clear();
        assert_eq!(live.silent_for(3), None);
    }
}
