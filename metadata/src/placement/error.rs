//! Why placement refused a request.

use chuyi_common::ids::{DeviceClass, NodeId};

use super::model::DiskRef;

/// Bad input to placement: a rule or view it cannot place on. Nothing here
/// describes a single PG's trouble; a degraded or lost PG is a
/// [`PgChange`](super::PgChange), so one bad PG never fails a whole call.
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
