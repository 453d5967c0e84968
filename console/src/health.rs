//! What an operator should know first, decided from a survey without I/O:
//! the cluster's health and why, capacity per device class and pool, and
//! recovery's progress and ETA.

use chuyi_common::ids::DeviceClass;
use chuyi_common::proto::chunk::{NodeReport, RecoveryProgress};
use chuyi_meta_api::model::{ClusterMap, DiskState, NodeState};
use chuyi_meta_api::proto::StatusReport;

/// A disk this full is a warning, and past [`DISK_FULL_ERROR`] an error:
/// placement does not weigh fullness, so writes to a full disk's chunks
/// fail once it is full (the map's figure may be up to a heartbeat old).
pub const DISK_FULL_WARNING: f64 = 0.85;
pub const DISK_FULL_ERROR: f64 = 0.95;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warning,
    Error,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// The cluster's health: the worst of its reasons' levels.
#[derive(Clone, Debug, PartialEq)]
pub struct Health {
    pub level: Level,
    /// What is wrong, worst first; empty when all is well.
    pub reasons: Vec<(Level, String)>,
}

/// The health `status` and the nodes' reports show.
pub fn health(status: &StatusReport, nodes: &[NodeReport]) -> Health {
    let mut reasons = Vec::new();
    if status.leader.is_none() {
        reasons.push((Level::Error, "the metadata service has no leader: no change can be made".to_string()));
    }
    for n in &status.map.nodes {
        if n.state == NodeState::Down {
            reasons.push((Level::Error, format!("node {} is down", n.id)));
            continue;
        }
        for d in &n.disks {
            if d.state == DiskState::Failed {
                reasons.push((Level::Error, format!("disk {}/{} failed", n.id, d.id)));
                continue;
            }
            let full = fraction(d.used_bytes, d.capacity_bytes);
            let level = if full >= DISK_FULL_ERROR {
                Level::Error
            } else if full >= DISK_FULL_WARNING {
                Level::Warning
            } else {
                continue;
            };
            reasons.push((level, format!("disk {}/{} is {:.0}% full", n.id, d.id, full * 100.0)));
        }
    }
    let (degraded, recovering) = status
        .pools
        .iter()
        .fold((0u32, 0u32), |(d, r), p| (d.saturating_add(p.degraded), r.saturating_add(p.recovering)));
    if degraded > 0 {
        reasons.push((Level::Error, format!("{degraded} PG(s) degraded: fewer copies than their pool keeps")));
    }
    if recovering > 0 {
        reasons.push((Level::Warning, format!("{recovering} PG(s) recovering: a replica is being backfilled")));
    }
    for n in status.map.nodes.iter().filter(|n| n.state == NodeState::Up) {
        if !nodes.iter().any(|r| r.node == n.id) {
            reasons.push((Level::Warning, format!("node {} is up in the map but did not answer the console", n.id)));
        }
    }
    // Counted since each node started, each read of a bad block again: more
    // errors than repairs means a bad block may still be waiting for one.
    for r in nodes.iter().filter(|r| r.scrub.errors > r.scrub.repairs) {
        let (errors, repairs) = (r.scrub.errors, r.scrub.repairs);
        reasons.push((
            Level::Warning,
            format!("node {}: {errors} checksum error(s), {repairs} repair(s) since it started", r.node),
        ));
    }
    reasons.sort_by_key(|r| std::cmp::Reverse(r.0));
    let level = reasons.first().map_or(Level::Ok, |r| r.0);
    Health { level, reasons }
}

fn fraction(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The disks of one device class: those in service (up, on an up node)
/// and what is offline.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClassCapacity {
    pub class: Option<DeviceClass>,
    pub disks: usize,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    /// Disks failed or on a down node, and their capacity.
    pub offline_disks: usize,
    pub offline_bytes: u64,
}

impl ClassCapacity {
    pub fn used_fraction(&self) -> f64 {
        fraction(self.used_bytes, self.capacity_bytes)
    }

    pub fn free_bytes(&self) -> u64 {
        self.capacity_bytes.saturating_sub(self.used_bytes)
    }
}

/// Capacity by device class, in the order classes first appear in `map`.
pub fn capacity_by_class(map: &ClusterMap) -> Vec<ClassCapacity> {
    let mut classes: Vec<ClassCapacity> = Vec::new();
    for n in &map.nodes {
        for d in &n.disks {
            let at = match classes.iter().position(|c| c.class == Some(d.class)) {
                Some(at) => at,
                None => {
                    classes.push(ClassCapacity { class: Some(d.class), ..ClassCapacity::default() });
                    classes.len() - 1
                }
            };
            let c = &mut classes[at];
            if n.state == NodeState::Up && d.state == DiskState::Up {
                c.disks += 1;
                c.capacity_bytes = c.capacity_bytes.saturating_add(d.capacity_bytes);
                c.used_bytes = c.used_bytes.saturating_add(d.used_bytes);
            } else {
                c.offline_disks += 1;
                c.offline_bytes = c.offline_bytes.saturating_add(d.capacity_bytes);
            }
        }
    }
    classes
}

/// What a pool can still take: its class's free space over its copies
/// (pools of one class share its disks, so each sees all of it).
pub fn pool_free_bytes(classes: &[ClassCapacity], class: DeviceClass, replicas: usize) -> u64 {
    let free = classes.iter().find(|c| c.class == Some(class)).map_or(0, ClassCapacity::free_bytes);
    free / replicas.max(1) as u64
}

/// Every backfill in flight, summed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recovery {
    pub backfills: usize,
    pub chunks_done: u64,
    pub chunks_total: u64,
    pub bytes_copied: u64,
    /// Bytes per second, all backfills together, at their pace so far.
    pub rate: f64,
    /// Seconds until the last one ends at its pace so far (they run side
    /// by side); `None` while one has no pace yet.
    pub eta_s: Option<f64>,
}

impl Recovery {
    pub fn percent(&self) -> f64 {
        if self.chunks_total == 0 {
            return 100.0;
        }
        (self.chunks_done as f64 * 100.0 / self.chunks_total as f64).min(100.0)
    }
}

/// The backfills the nodes report, with the node each runs on (the PG's
/// primary), PG order.
pub fn backfills(nodes: &[NodeReport]) -> Vec<(chuyi_common::ids::NodeId, &RecoveryProgress)> {
    let mut all: Vec<_> = nodes.iter().flat_map(|n| n.recoveries.iter().map(move |r| (n.node, r))).collect();
    all.sort_by_key(|(_, r)| (r.pg.pool, r.pg.pg));
    all
}

/// The sum of every backfill in flight.
pub fn recovery(nodes: &[NodeReport]) -> Recovery {
    let all = backfills(nodes);
    let etas: Vec<Option<f64>> =
        all.iter().filter(|(_, r)| r.chunks_done < r.chunks_total).map(|(_, r)| r.eta_s()).collect();
    Recovery {
        backfills: all.len(),
        chunks_done: all.iter().fold(0u64, |a, (_, r)| a.saturating_add(r.chunks_done)),
        chunks_total: all.iter().fold(0u64, |a, (_, r)| a.saturating_add(r.chunks_total)),
        bytes_copied: all.iter().fold(0u64, |a, (_, r)| a.saturating_add(r.bytes_copied)),
        rate: all.iter().map(|(_, r)| r.rate()).sum(),
        eta_s: etas.into_iter().try_fold(0.0f64, |most, eta| eta.map(|e| most.max(e))),
    }
}

#[cfg(test)]
mod tests {
    use chuyi_common::map::{PgId, Replica};
    use chuyi_meta_api::model::{DiskRecord, NodeRecord, Pool, Redundancy};
    use chuyi_meta_api::proto::PoolHealth;

    use super::*;

    fn node(id: u32, state: NodeState, disks: Vec<DiskRecord>) -> NodeRecord {
        NodeRecord { id, addrs: vec![], failure_domain: String::new(), disks, state, last_heartbeat_ms: 0 }
    }

    fn disk(id: u32, class: DeviceClass, capacity: u64, used: u64) -> DiskRecord {
        DiskRecord { used_bytes: used, ..DiskRecord::empty(id, class, capacity) }
    }

    fn status(nodes: Vec<NodeRecord>, degraded: u32, recovering: u32) -> StatusReport {
        let pool = Pool {
            id: 1,
            name: "ssd".into(),
            class: DeviceClass::Ssd,
            redundancy: Redundancy::Replicated(2),
            pg_count: 8,
            separate_failure_domains: false,
        };
        let map = ClusterMap { epoch: 1, nodes, pools: vec![pool.clone()], pgs: vec![] };
        crate::testing::status(map, vec![PoolHealth { pool, clean: 8 - degraded - recovering, recovering, degraded }])
    }

    fn progress(pg: u32, done: u64, total: u64, elapsed_ms: u64) -> RecoveryProgress {
        RecoveryProgress {
            pg: PgId { pool: 1, pg },
            target: Replica { node: 2, disk: 0 },
            epoch: 1,
            chunks_done: done,
            chunks_total: total,
            bytes_copied: done * 1000,
            elapsed_ms,
        }
    }

    fn answered(node: u32) -> NodeReport {
        NodeReport { node, ..NodeReport::default() }
    }

    #[test]
    fn a_healthy_cluster_has_no_reasons() {
        let s = status(vec![node(1, NodeState::Up, vec![disk(0, DeviceClass::Ssd, 100, 10)])], 0, 0);
        assert_eq!(health(&s, &[answered(1)]), Health { level: Level::Ok, reasons: vec![] });
    }

    #[test]
    fn a_silent_node_and_unrepaired_bad_blocks_are_warnings_repaired_ones_are_not() {
        let nodes =
            vec![node(1, NodeState::Up, vec![]), node(2, NodeState::Up, vec![]), node(3, NodeState::Up, vec![])];
        let mut scrubbed = answered(1);
        scrubbed.scrub.errors = 3;
        scrubbed.scrub.repairs = 1;
        let mut repaired = answered(3);
        repaired.scrub.errors = 2;
        repaired.scrub.repairs = 2;
        let h = health(&status(nodes, 0, 0), &[scrubbed, repaired]);
        assert_eq!(h.level, Level::Warning);
        let texts: Vec<&str> = h.reasons.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(
            texts,
            [
                "node 2 is up in the map but did not answer the console",
                "node 1: 3 checksum error(s), 1 repair(s) since it started"
            ]
        );
    }

    #[test]
    fn a_down_node_and_degraded_pgs_are_errors_listed_before_warnings() {
        let nodes = vec![
            node(1, NodeState::Up, vec![disk(0, DeviceClass::Ssd, 100, 90)]),
            node(2, NodeState::Down, vec![disk(0, DeviceClass::Ssd, 100, 99)]),
        ];
        let h = health(&status(nodes, 2, 3), &[answered(1)]);
        assert_eq!(h.level, Level::Error);
        let texts: Vec<&str> = h.reasons.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(
            texts,
            [
                "node 2 is down",
                "2 PG(s) degraded: fewer copies than their pool keeps",
                "disk 1/0 is 90% full",
                "3 PG(s) recovering: a replica is being backfilled",
            ],
            "a down node's disks are not judged full"
        );
    }

    #[test]
    fn no_leader_and_a_full_disk_are_errors() {
        let mut s = status(vec![node(1, NodeState::Up, vec![disk(3, DeviceClass::Ssd, 100, 96)])], 0, 0);
        s.leader = None;
        let h = health(&s, &[answered(1)]);
        assert_eq!(h.level, Level::Error);
        assert_eq!(h.reasons.len(), 2);
        assert!(h.reasons.iter().all(|(l, _)| *l == Level::Error), "{h:?}");
    }

    #[test]
    fn capacity_counts_in_service_disks_and_sets_the_rest_apart() {
        let map = ClusterMap {
            nodes: vec![
                node(1, NodeState::Up, vec![disk(0, DeviceClass::Ssd, 100, 40), disk(1, DeviceClass::Hdd, 1000, 0)]),
                node(2, NodeState::Down, vec![disk(0, DeviceClass::Ssd, 100, 10)]),
            ],
            ..ClusterMap::default()
        };
        let classes = capacity_by_class(&map);
        assert_eq!(classes.len(), 2);
        let ssd = &classes[0];
        assert_eq!((ssd.disks, ssd.capacity_bytes, ssd.used_bytes), (1, 100, 40));
        assert_eq!((ssd.offline_disks, ssd.offline_bytes), (1, 100));
        assert_eq!(pool_free_bytes(&classes, DeviceClass::Ssd, 2), 30, "60 free over two copies");
        assert_eq!(pool_free_bytes(&classes, DeviceClass::Nvme, 2), 0, "no such disks");
    }

    #[test]
    fn recovery_sums_backfills_and_its_eta_is_the_slowest() {
        let report = |node, recoveries| NodeReport { node, recoveries, ..NodeReport::default() };
        let nodes = vec![
            report(1, vec![progress(5, 1, 4, 1_000)]),
            report(2, vec![progress(2, 2, 4, 1_000), progress(9, 4, 4, 500)]),
        ];
        let r = recovery(&nodes);
        assert_eq!((r.backfills, r.chunks_done, r.chunks_total), (3, 7, 12));
        assert_eq!(r.eta_s, Some(3.0), "PG 1.5: 1 s a chunk, three to go; the finished one is not waited for");
        assert_eq!(backfills(&nodes).iter().map(|(_, p)| p.pg.pg).collect::<Vec<_>>(), [2, 5, 9]);
        let unpaced = recovery(&[report(1, vec![progress(1, 0, 4, 100)])]);
        assert_eq!(unpaced.eta_s, None, "no chunk done yet: no pace");
        assert_eq!(recovery(&[]).percent(), 100.0);
    }
}
