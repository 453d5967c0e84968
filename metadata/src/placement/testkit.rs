//! Cluster builders and map checks shared by the placement tests.

use std::collections::{BTreeMap, BTreeSet};

use chuyi_common::ids::{DeviceClass, DiskId, NodeId};

use chuyi_meta_api::placement::{DiskRef, DiskView, NodeView, PgChange, PoolRule, ReplicaSet};

/// An up node with up disks `(id, class, capacity)`.
pub(crate) fn node(id: NodeId, domain: &str, disks: &[(DiskId, DeviceClass, u64)]) -> NodeView {
    let disks = disks.iter().map(|&(id, class, capacity_bytes)| DiskView { id, class, capacity_bytes, up: true });
    NodeView { id, failure_domain: domain.to_owned(), up: true, disks: disks.collect() }
}

/// A `replicated(2)` rule.
pub(crate) fn rule(class: DeviceClass, pg_count: u32, separate_failure_domains: bool) -> PoolRule {
    PoolRule { class, replicas: 2, pg_count, separate_failure_domains }
}

/// Applies `changes` in order; each must start from the map as it stands.
pub(crate) fn apply(map: &mut [ReplicaSet], changes: &[PgChange]) {
    for c in changes {
        let entry = &mut map[c.pg as usize];
        assert_eq!(*entry, c.from, "pg {}: change does not start from the map", c.pg);
        *entry = c.to.clone();
    }
}

/// Every set full, on eligible disks, one per node, one per domain when the
/// rule asks.
pub(crate) fn check_map(rule: &PoolRule, nodes: &[NodeView], map: &[ReplicaSet]) -> Result<(), String> {
    if map.len() != rule.pg_count as usize {
        return Err(format!("{} PGs, want {}", map.len(), rule.pg_count));
    }
    for (pg, set) in map.iter().enumerate() {
        if set.len() != rule.replicas {
            return Err(format!("pg {pg}: {} replicas", set.len()));
        }
        check_set(rule, nodes, set).map_err(|e| format!("pg {pg}: {e}"))?;
    }
    Ok(())
}

/// One set's constraints, whatever its length.
pub(crate) fn check_set(rule: &PoolRule, nodes: &[NodeView], set: &[DiskRef]) -> Result<(), String> {
    let mut seen_nodes = BTreeSet::new();
    let mut seen_domains = BTreeSet::new();
    for d in set {
        let node = nodes.iter().find(|n| n.id == d.node).ok_or(format!("{d}: no such node"))?;
        let disk = node.disks.iter().find(|x| x.id == d.disk).ok_or(format!("{d}: no such disk"))?;
        if !(node.up && disk.up && disk.class == rule.class && disk.capacity_bytes > 0) {
            return Err(format!("{d} is not eligible"));
        }
        if !seen_nodes.insert(d.node) {
            return Err(format!("two replicas on node {}", d.node));
        }
        if !seen_domains.insert(&node.failure_domain) && rule.separate_failure_domains {
            return Err(format!("two replicas in domain {}", node.failure_domain));
        }
    }
    Ok(())
}

pub(crate) fn replica_counts(map: &[ReplicaSet]) -> BTreeMap<DiskRef, usize> {
    let mut counts = BTreeMap::new();
    for d in map.iter().flatten() {
        *counts.entry(*d).or_default() += 1;
    }
    counts
}

pub(crate) fn primary_counts(map: &[ReplicaSet]) -> BTreeMap<DiskRef, usize> {
    let mut counts = BTreeMap::new();
    for d in map.iter().filter_map(|s| s.first()) {
        *counts.entry(*d).or_default() += 1;
    }
    counts
}
