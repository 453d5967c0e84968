//! The cluster view placement decides on, the decisions it returns, and
//! why it refuses (the decisions themselves are the metadata service's:
//! `metadata/src/placement/`).
//!
//! These types are serde-serializable because the state machine keeps them:
//! the view is built from its cluster map, the changes go into its log.

use std::fmt;

use chuyi_common::ids::{DeviceClass, DiskId, NodeId};
use serde::{Deserialize, Serialize};

/// One disk in the cluster: the node that holds it and its id there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DiskRef {
    pub node: NodeId,
    pub disk: DiskId,
}

impl DiskRef {
    pub const fn new(node: NodeId, disk: DiskId) -> Self {
        Self { node, disk }
    }
}

impl fmt::Display for DiskRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {} disk {}", self.node, self.disk)
    }
}

/// A PG's replicas, primary first: `[primary, secondary]` for `replicated(2)`.
pub type ReplicaSet = Vec<DiskRef>;

/// A storage node as the metadata service sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub id: NodeId,
    /// Nodes sharing a failure domain (a rack, a power feed) may fail
    /// together; a pool can ask for its replicas in distinct domains.
    pub failure_domain: String,
    /// False once the node missed heartbeats for the configured time.
    pub up: bool,
    pub disks: Vec<DiskView>,
}

/// One disk of a [`NodeView`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskView {
    pub id: DiskId,
    pub class: DeviceClass,
    /// Balancing gives each disk a share of replicas proportional to this;
    /// a disk of capacity 0 receives none.
    pub capacity_bytes: u64,
    /// False once the node reported the disk failed.
    pub up: bool,
}

/// What a pool asks of placement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRule {
    /// Only disks of this class hold the pool's replicas.
    pub class: DeviceClass,
    /// Replicas per PG: 2 for `replicated(2)`, the default.
    pub replicas: usize,
    pub pg_count: u32,
    /// Replicas of one PG in distinct failure domains, not only on distinct
    /// nodes.
    pub separate_failure_domains: bool,
}

impl PoolRule {
    /// A rule that places nothing is bad input, not an empty map.
    pub fn validate(&self) -> Result<(), PlacementError> {
        if self.replicas == 0 {
            return Err(PlacementError::ZeroReplicas);
        }
        if self.pg_count == 0 {
            return Err(PlacementError::ZeroPgCount);
        }
        Ok(())
    }
}

/// One explicit change of the PG map: PG `pg` goes from `from` to `to`.
/// The state machine applies a list of them under one epoch bump.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgChange {
    pub pg: u32,
    pub from: ReplicaSet,
    pub to: ReplicaSet,
    pub reason: ChangeReason,
}

impl PgChange {
    /// True when the PG keeps running with fewer replicas than the pool asks
    /// for (no eligible disk was free for a new one). A lost PG is not
    /// degraded: it has no replica left to run on.
    pub fn is_degraded(&self, rule: &PoolRule) -> bool {
        self.reason != ChangeReason::Lost && self.to.len() < rule.replicas
    }
}

/// Why a PG changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChangeReason {
    /// A replica's node is down (or gone from the view).
    NodeDown(NodeId),
    /// A replica's disk is down (or gone from its node) on an up node.
    DiskDown(DiskRef),
    /// The PG had fewer replicas than the pool asks for, all alive, and a
    /// disk became available for another.
    Underreplicated,
    /// Every replica is down: no survivor holds the data. Reported with
    /// `to == from`: the map keeps naming the last replicas, because the
    /// return of one of them is the only way back to the data.
    Lost,
    /// Moved to even out disk load after a node or disk joined.
    Rebalance,
}

/// Bad input to placement: a rule or view it cannot place on. Nothing here
/// describes a single PG's trouble; a degraded or lost PG is a
/// [`PgChange`], so one bad PG never fails a whole call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("a pool needs at least one replica per placement group")]
    ZeroReplicas,
    #[error("a pool needs at least one placement group")]
    ZeroPgCount,
    #[error("no up {class} disk with non-zero capacity on an up node")]
    NoDisksOfClass { class: DeviceClass },
    #[error("{needed} replicas need {needed} nodes with an up {class} disk; {available} have one")]
    NotEnoughNodes { class: DeviceClass, needed: usize, available: usize },
    #[error("{needed} replicas need {needed} failure domains with an up {class} disk; {available} have one")]
    NotEnoughFailureDomains { class: DeviceClass, needed: usize, available: usize },
    #[error("node {0} appears twice in the cluster view")]
    DuplicateNode(NodeId),
    #[error("{0} appears twice in the cluster view")]
    DuplicateDisk(DiskRef),
    #[error("the PG map has {actual} placement groups; the pool has {expected}")]
    MapSize { expected: u32, actual: usize },
}
