//! What a metadata member exports for Prometheus, read at scrape time:
//! its Raft state (term, leader, voters, log, applied and snapshot index,
//! and on the leader each member's replication lag), the proposals it
//! made and the commands in them (their ratio is the batch size), the
//! newest snapshot file's size, and from the applied map: its epoch, each
//! storage node up or down, PGs per pool by health, and capacity and use
//! per device class. Labels are bounded by members, nodes, pools and the
//! three device classes.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use chuyi_common::metrics::prometheus_client;
use chuyi_common::metrics::{encode_gauge, ProcessCollector};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::service::MetaService;
use crate::proto::StatusReport;
use crate::state::model::NodeState;

/// Registers the member's metrics (and the process's) in `registry`.
pub(crate) fn register(registry: &mut Registry, service: Arc<MetaService>, snapshots: PathBuf) {
    registry.register_collector(Box::new(MemberCollector { service, snapshots }));
    registry.register_collector(Box::new(ProcessCollector));
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Member {
    member: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Node {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolState {
    pool: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Class {
    class: String,
}

#[derive(Debug)]
struct MemberCollector {
    service: Arc<MetaService>,
    snapshots: PathBuf,
}

impl Collector for MemberCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_proposals(&mut encoder)?;
        encode_gauge(
            &mut encoder,
            "chuyi_meta_snapshot_file_bytes",
            "Size of the member's newest snapshot file",
            newest_snapshot_bytes(&self.snapshots) as i64,
        )?;
        // A member that cannot read its own state says nothing of it
        // rather than zeros an alert would take for the truth.
        let Ok(status) = self.service.status() else { return Ok(()) };
        encode_raft(&mut encoder, &status)?;
        encode_replication(&mut encoder, &self.service)?;
        encode_map(&mut encoder, &status)
    }
}

impl MemberCollector {
    fn encode_proposals(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = self.service.proposal_counts();
        let counters = [
            ("chuyi_meta_proposals", "Raft proposals this member made", &counts.proposals),
            ("chuyi_meta_proposed_commands", "Commands in this member's proposals", &counts.commands),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value.load(Ordering::Relaxed));
            counter.encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)?;
        }
        Ok(())
    }
}

fn encode_raft(encoder: &mut DescriptorEncoder, s: &StatusReport) -> Result<(), std::fmt::Error> {
    let index = |i: Option<u64>| i.unwrap_or(0) as i64;
    let gauges = [
        ("chuyi_meta_raft_term", "The member's current Raft term", s.term as i64),
        ("chuyi_meta_raft_leader", "The leader this member knows (0: none)", s.leader.unwrap_or(0) as i64),
        ("chuyi_meta_raft_is_leader", "1 on the leader", i64::from(s.leader == Some(s.member))),
        ("chuyi_meta_raft_voters", "Voting members", s.members.iter().filter(|m| m.voter).count() as i64),
        ("chuyi_meta_raft_last_log_index", "The member's last log index", index(s.last_log_index)),
        ("chuyi_meta_raft_applied_index", "The last log index applied to the state", index(s.last_applied)),
        ("chuyi_meta_raft_snapshot_index", "The last log index in the member's snapshot", index(s.snapshot)),
        (
            "chuyi_meta_raft_apply_lag",
            "Log entries the member holds and has not applied",
            index(s.last_log_index).saturating_sub(index(s.last_applied)),
        ),
    ];
    for (name, help, value) in gauges {
        encode_gauge(encoder, name, help, value)?;
    }
    Ok(())
}

/// On the leader, each member's entries behind the leader's log.
fn encode_replication(encoder: &mut DescriptorEncoder, service: &MetaService) -> Result<(), std::fmt::Error> {
    let metrics = service.raft_metrics();
    let Some(replication) = &metrics.replication else { return Ok(()) };
    let last = metrics.last_log_index.unwrap_or(0);
    let mut family = encoder.encode_descriptor(
        "chuyi_meta_raft_replication_lag",
        "On the leader: log entries a member has not yet matched",
        None,
        MetricType::Gauge,
    )?;
    for (id, matched) in replication {
        let lag = last.saturating_sub(matched.map_or(0, |l| l.index));
        ConstGauge::new(lag as i64).encode(family.encode_family(&Member { member: id.to_string() })?)?;
    }
    Ok(())
}

fn encode_map(encoder: &mut DescriptorEncoder, s: &StatusReport) -> Result<(), std::fmt::Error> {
    encode_gauge(encoder, "chuyi_meta_map_epoch", "The data map's epoch", s.map.epoch as i64)?;
    let mut family = encoder.encode_descriptor(
        "chuyi_meta_node_up",
        "1 while a storage node heartbeats, 0 once it is marked down",
        None,
        MetricType::Gauge,
    )?;
    for n in &s.map.nodes {
        let up = i64::from(n.state == NodeState::Up);
        ConstGauge::new(up).encode(family.encode_family(&Node { node: n.id.to_string() })?)?;
    }
    let mut family = encoder.encode_descriptor("chuyi_meta_pgs", "PGs per pool by health", None, MetricType::Gauge)?;
    for p in &s.pools {
        for (state, count) in [("clean", p.clean), ("recovering", p.recovering), ("degraded", p.degraded)] {
            let labels = PoolState { pool: p.pool.name.clone(), state };
            ConstGauge::new(i64::from(count)).encode(family.encode_family(&labels)?)?;
        }
    }
    let mut by_class = std::collections::BTreeMap::<String, (u64, u64)>::new();
    for disk in s.map.nodes.iter().filter(|n| n.state == NodeState::Up).flat_map(|n| &n.disks) {
        let entry = by_class.entry(disk.class.to_string()).or_default();
        entry.0 += disk.capacity_bytes;
        entry.1 += disk.used_bytes;
    }
    type Field = fn(&(u64, u64)) -> u64;
    let gauges: [(&str, &str, Field); 2] = [
        ("chuyi_meta_class_capacity_bytes", "Chunk space of the up nodes' disks, per device class", |c| c.0),
        ("chuyi_meta_class_used_bytes", "Chunk space used on the up nodes' disks, per device class", |c| c.1),
    ];
    for (name, help, field) in gauges {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (class, totals) in &by_class {
            ConstGauge::new(field(totals) as i64).encode(family.encode_family(&Class { class: class.clone() })?)?;
        }
    }
    Ok(())
}

/// The size of the newest `.snap` file in `dir` (an older one may linger
/// until the next is written).
fn newest_snapshot_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "snap"))
        .filter_map(|e| e.metadata().ok())
        .filter_map(|m| Some((m.modified().ok()?, m.len())))
        .max()
        .map_or(0, |(_, len)| len)
}
