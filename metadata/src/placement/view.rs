//! The cluster view indexed for one pool: which disks may take a replica,
//! which replicas are alive, and which sets keep the rule's constraints.

use std::collections::{BTreeMap, BTreeSet};

use chuyi_common::ids::{DeviceClass, NodeId};

use chuyi_meta_api::placement::PlacementError;
use chuyi_meta_api::placement::{ChangeReason, DiskRef, NodeView, PoolRule};

/// A validated view of the nodes, with the disks eligible for one class.
#[derive(Debug)]
pub(crate) struct ClusterView<'a> {
    nodes: BTreeMap<NodeId, &'a NodeView>,
    /// Up disks of the class, with capacity, on up nodes: the only disks
    /// that may receive a replica.
    eligible: BTreeMap<DiskRef, u64>,
    class: DeviceClass,
}

impl<'a> ClusterView<'a> {
    /// Indexes `nodes`; a node or disk listed twice is bad input.
    pub(crate) fn new(nodes: &'a [NodeView], class: DeviceClass) -> Result<Self, PlacementError> {
        let mut index = BTreeMap::new();
        let mut eligible = BTreeMap::new();
        for node in nodes {
            if index.insert(node.id, node).is_some() {
                return Err(PlacementError::DuplicateNode(node.id));
            }
            let mut seen = BTreeSet::new();
            for disk in &node.disks {
                let at = DiskRef::new(node.id, disk.id);
                if !seen.insert(disk.id) {
                    return Err(PlacementError::DuplicateDisk(at));
                }
                if node.up && disk.up && disk.class == class && disk.capacity_bytes > 0 {
                    eligible.insert(at, disk.capacity_bytes);
                }
            }
        }
        Ok(Self { nodes: index, eligible, class })
    }

    /// Eligible disks and their capacities, in id order.
    pub(crate) fn eligible(&self) -> impl Iterator<Item = (DiskRef, u64)> + '_ {
        self.eligible.iter().map(|(&d, &cap)| (d, cap))
    }

    pub(crate) fn is_eligible(&self, disk: DiskRef) -> bool {
        self.eligible.contains_key(&disk)
    }

    /// Why a replica on `disk` is dead, or `None` while its node and disk are
    /// up. A node or disk missing from the view counts as down.
    pub(crate) fn down_reason(&self, at: DiskRef) -> Option<ChangeReason> {
        let Some(node) = self.nodes.get(&at.node).filter(|n| n.up) else {
            return Some(ChangeReason::NodeDown(at.node));
        };
        match node.disks.iter().find(|d| d.id == at.disk) {
            Some(disk) if disk.up => None,
            _ => Some(ChangeReason::DiskDown(at)),
        }
    }

    pub(crate) fn is_alive(&self, at: DiskRef) -> bool {
        self.down_reason(at).is_none()
    }

    fn domain(&self, node: NodeId) -> Option<&'a str> {
        self.nodes.get(&node).map(|n| n.failure_domain.as_str())
    }

    /// Whether `candidate` may join `set`: a node of its own, and a failure
    /// domain of its own when the rule separates them. A member whose node
    /// left the view has no known domain and conflicts with none.
    pub(crate) fn can_join(&self, set: &[DiskRef], candidate: DiskRef, rule: &PoolRule) -> bool {
        if set.iter().any(|d| d.node == candidate.node) {
            return false;
        }
        if !rule.separate_failure_domains {
            return true;
        }
        let domain = self.domain(candidate.node);
        set.iter().all(|d| self.domain(d.node) != domain)
    }

    /// Checks that a full replica set exists at all. With it, the greedy
    /// choice never gets stuck: a set of k < replicas members uses k nodes
    /// (domains), so an eligible disk on another one is always left.
    pub(crate) fn check_room(&self, rule: &PoolRule) -> Result<(), PlacementError> {
        let class = self.class;
        if self.eligible.is_empty() {
            return Err(PlacementError::NoDisksOfClass { class });
        }
        let nodes: BTreeSet<NodeId> = self.eligible.keys().map(|d| d.node).collect();
        if nodes.len() < rule.replicas {
            return Err(PlacementError::NotEnoughNodes { class, needed: rule.replicas, available: nodes.len() });
        }
        if rule.separate_failure_domains {
            let domains: BTreeSet<Option<&str>> = nodes.iter().map(|&n| self.domain(n)).collect();
            if domains.len() < rule.replicas {
                let available = domains.len();
                return Err(PlacementError::NotEnoughFailureDomains { class, needed: rule.replicas, available });
            }
        }
        Ok(())
    }
}
