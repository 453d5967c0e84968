//! What a storage node exports for Prometheus, read at scrape time from
//! the counters the data path keeps anyway: per disk its capacity, use,
//! chunks, state, checksum errors and every I/O by kind (bytes, errors,
//! EIO, latency; the latency count is the IOPS); the writes forwarded to
//! replicas; scrub and read repair; backfills, with each running one's
//! progress. Labels are bounded: a disk's id and class, an I/O kind, and
//! a running backfill's PG and target (at most the node's backfills).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use chuyi_common::metrics::prometheus_client;
use chuyi_common::metrics::LatencyHistogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::io::stats::IoKind;
use crate::recovery::Recovery;
use crate::replication::Replicator;

/// Registers the node's metrics (and the process's) in `registry`.
pub fn register(registry: &mut Registry, repl: Arc<Replicator>, recovery: Arc<Recovery>) {
    registry.register_collector(Box::new(NodeCollector { repl, recovery }));
    registry.register_collector(Box::new(chuyi_common::metrics::ProcessCollector));
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Disk {
    disk: String,
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DiskOp {
    disk: String,
    class: String,
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Backfill {
    pg: String,
    target: String,
}

#[derive(Debug)]
struct NodeCollector {
    repl: Arc<Replicator>,
    recovery: Arc<Recovery>,
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_disks(&mut encoder)?;
        self.encode_io(&mut encoder)?;
        self.encode_replication(&mut encoder)?;
        self.encode_recovery(&mut encoder)
    }
}

impl NodeCollector {
    fn encode_disks(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.repl.store().stats();
        let labels =
            |d: &chuyi_common::proto::chunk::DiskStat| Disk { disk: d.id.to_string(), class: d.class.to_string() };
        type Field = fn(&chuyi_common::proto::chunk::DiskStat) -> u64;
        let gauges: [(&str, &str, Field); 4] = [
            ("chuyi_node_disk_capacity_bytes", "Bytes of chunk space on the disk", |d| d.capacity_bytes),
            ("chuyi_node_disk_used_bytes", "Bytes of chunk space held by chunks", |d| d.used_bytes),
            ("chuyi_node_disk_chunks", "Chunks on the disk", |d| d.chunks),
            ("chuyi_node_disk_up", "1 while the disk serves, 0 once an I/O error took it out of service", |d| {
                u64::from(d.state == chuyi_common::proto::chunk::DiskState::Up)
            }),
        ];
        for (name, help, field) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for d in &stats {
                ConstGauge::new(field(d) as i64).encode(family.encode_family(&labels(d))?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "chuyi_node_disk_checksum_errors",
            "Blocks read that did not match their checksum",
            None,
            MetricType::Counter,
        )?;
        for d in &stats {
            ConstCounter::new(d.checksum_errors).encode(family.encode_family(&labels(d))?)?;
        }
        Ok(())
    }

    fn encode_io(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let store = self.repl.store();
        fn each(d: &crate::store::DiskStore, kind: IoKind) -> (DiskOp, &crate::io::stats::KindStats) {
            (
                DiskOp { disk: d.id().to_string(), class: d.class().to_string(), op: kind.name() },
                d.io_stats().kind(kind),
            )
        }
        type Field = fn(&crate::io::stats::KindStats) -> u64;
        let counters: [(&str, &str, Field); 3] = [
            ("chuyi_node_disk_io_bytes", "Bytes the disk's I/Os asked for, by kind", |k| {
                k.bytes.load(Ordering::Relaxed)
            }),
            ("chuyi_node_disk_io_errors", "Disk I/Os that failed, by kind", |k| k.errors.load(Ordering::Relaxed)),
            ("chuyi_node_disk_io_eio", "Disk I/Os that failed with EIO, by kind", |k| k.eio.load(Ordering::Relaxed)),
        ];
        for (name, help, field) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for d in store.disks() {
                for kind in IoKind::ALL {
                    let (labels, stats) = each(d, kind);
                    ConstCounter::new(field(stats)).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "chuyi_node_disk_io_duration_seconds",
            "Disk I/O latency, by kind; its count is the I/Os done",
            None,
            MetricType::Histogram,
        )?;
        for d in store.disks() {
            for kind in IoKind::ALL {
                let (labels, stats) = each(d, kind);
                let histogram: &LatencyHistogram = &stats.latency;
                histogram.encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    fn encode_replication(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let f = self.repl.forward_counters();
        let r = self.repl.counters();
        let counters = [
            ("chuyi_node_forwards", "Writes forwarded to another replica", &f.sent),
            (
                "chuyi_node_forward_failures",
                "Forwarded writes the replica failed (an error, a timeout, unreachable; not a stale epoch or a fence)",
                &f.failed,
            ),
            (
                "chuyi_node_forward_stalls",
                "Forwards given up because the PG moved while the replica held them",
                &f.stalled,
            ),
            ("chuyi_node_partial_writes", "Writes not every copy took; their chunk is marked for copying", &f.partial),
            ("chuyi_node_scrub_bytes", "Bytes read by scrub", &r.scrubbed_bytes),
            ("chuyi_node_scrub_passes", "Scrub passes over the node's chunks", &r.passes),
            ("chuyi_node_bad_blocks", "Bad blocks found by scrub or by reads", &r.errors),
            ("chuyi_node_repairs", "Bad blocks repaired from another replica", &r.repairs),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value.load(Ordering::Relaxed));
            counter.encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)?;
        }
        chuyi_common::metrics::encode_gauge(
            encoder,
            "chuyi_node_client_operations_in_flight",
            "Client operations being served now",
            self.repl.client_ops() as i64,
        )
    }

    fn encode_recovery(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (done, sent) = self.recovery.totals();
        let counters = [
            ("chuyi_node_backfills", "Backfills and resyncs finished", done),
            ("chuyi_node_backfill_bytes", "Bytes sent by backfills and resyncs", sent),
            (
                "chuyi_node_backfill_chunks_compared",
                "Chunks compared by backfills and resyncs (sent or found right)",
                self.recovery.compared(),
            ),
        ];
        for (name, help, value) in counters {
            ConstCounter::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)?;
        }
        let running = self.recovery.progress();
        chuyi_common::metrics::encode_gauge(
            encoder,
            "chuyi_node_backfills_running",
            "Backfills and resyncs running now",
            running.len() as i64,
        )?;
        type Field = fn(&chuyi_common::proto::chunk::RecoveryProgress) -> u64;
        let gauges: [(&str, &str, Field); 3] = [
            ("chuyi_node_backfill_chunks_done", "A running backfill's chunks compared so far", |p| p.chunks_done),
            ("chuyi_node_backfill_chunks_planned", "A running backfill's chunks to compare", |p| p.chunks_total),
            ("chuyi_node_backfill_copied_bytes", "A running backfill's bytes sent", |p| p.bytes_copied),
        ];
        for (name, help, field) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for p in &running {
                let labels = Backfill { pg: p.pg.to_string(), target: format!("{}/{}", p.target.node, p.target.disk) };
                ConstGauge::new(field(p) as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
