//! Per-volume operation metrics, as a block frontend (NBD, vhost-user-blk)
//! counts them for Prometheus: operations, bytes and errors by volume and
//! operation, the bytes an encrypted volume's key enciphered or
//! deciphered, and latency by operation. Also the process's chunk
//! operations tried again, and given up at their deadline ([`RETRIES`]). Volume names are labels: one
//! series per volume and operation, bounded by the volumes a frontend
//! serves. Each frontend registers them under its own prefix
//! (`chuyi_nbd_`, `chuyi_vhost_`) with its own operation names.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use chuyi_common::metrics::{prometheus_client, LatencyHistogram};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VolumeOp {
    volume: String,
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Op {
    op: &'static str,
}

/// Chunk operations tried again, and rounds of calls to every node
/// (flush, fence raises, clone trims) tried again on the nodes that had
/// not answered, for the whole process: every
/// [`crate::Cluster`] in it counts here, as the process's CPU time is one
/// count, so a frontend registers [`RetryCollector`] before it connects.
pub static RETRIES: Retries = Retries {
    next_replica: AtomicU64::new(0),
    newer_map: AtomicU64::new(0),
    bad_copy: AtomicU64::new(0),
    deadlines: AtomicU64::new(0),
};

/// Why a chunk operation was tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryReason {
    /// A read went to the other replica at once.
    NextReplica,
    /// The PG moved or a node failed: the client waited for a newer map.
    NewerMap,
    /// A replica's copy was bad and could not be mended there.
    BadCopy,
}

#[derive(Debug)]
pub struct Retries {
    next_replica: AtomicU64,
    newer_map: AtomicU64,
    bad_copy: AtomicU64,
    /// Operations that ran out of retries at their deadline.
    deadlines: AtomicU64,
}

impl Retries {
    pub fn retried(&self, why: RetryReason) {
        let count = match why {
            RetryReason::NextReplica => &self.next_replica,
            RetryReason::NewerMap => &self.newer_map,
            RetryReason::BadCopy => &self.bad_copy,
        };
        count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn gave_up(&self) {
        self.deadlines.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// [`RETRIES`] at each scrape: `chuyi_client_chunk_retries_total{reason}`
/// (next_replica, newer_map, bad_copy) and
/// `chuyi_client_chunk_deadlines_total`.
#[derive(Debug, Default)]
pub struct RetryCollector;

impl Collector for RetryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let r = &RETRIES;
        // The family's encoder borrows `encoder` until the block's end.
        {
            let mut family = encoder.encode_descriptor(
                "chuyi_client_chunk_retries",
                "Chunk operations (and rounds of flush or fence calls) tried again, by reason: another replica at once, after a newer map, past a bad copy",
                None,
                MetricType::Counter,
            )?;
            let reasons = [("next_replica", &r.next_replica), ("newer_map", &r.newer_map), ("bad_copy", &r.bad_copy)];
            for (reason, count) in reasons {
                ConstCounter::new(count.load(Ordering::Relaxed)).encode(family.encode_family(&Reason { reason })?)?;
            }
        }
        let deadlines = ConstCounter::new(r.deadlines.load(Ordering::Relaxed));
        deadlines.encode(encoder.encode_descriptor(
            "chuyi_client_chunk_deadlines",
            "Chunk operations (and flush or fence rounds) that failed at their deadline, still failing after their retries",
            None,
            MetricType::Counter,
        )?)
    }
}

/// The label of an operation past a frontend's named ones.
const OTHER: &str = "other";

/// One frontend's per-volume families, registered once per process.
#[derive(Debug)]
pub struct VolumeOpMetrics {
    operations: Family<VolumeOp, Counter>,
    bytes: Family<VolumeOp, Counter>,
    errors: Family<VolumeOp, Counter>,
    /// Bytes read or written of encrypted volumes: written ones all went
    /// through the volume's SM4-XTS key, read ones too except blocks
    /// never written (zeros, left as they are).
    encrypted: Family<VolumeOp, Counter>,
    /// Atomics only (no lock per request, which every queue and
    /// connection of every volume would share).
    latency: Family<Op, LatencyHistogram>,
}

impl VolumeOpMetrics {
    /// Registers `operations`, `bytes`, `errors`, `encrypted_bytes` and
    /// `operation_duration_seconds` in `registry` (a sub-registry with the
    /// frontend's prefix); `what` names the operations in their help
    /// ("NBD commands").
    pub fn register(registry: &mut Registry, what: &str) -> Arc<Self> {
        let metrics = Arc::new(Self {
            operations: Family::default(),
            bytes: Family::default(),
            errors: Family::default(),
            encrypted: Family::default(),
            latency: Family::default(),
        });
        registry.register("operations", format!("{what} served, by volume and operation"), metrics.operations.clone());
        registry.register("bytes", "Bytes read or written, by volume and operation", metrics.bytes.clone());
        registry.register(
            "errors",
            format!("{what} answered with an error, by volume and operation"),
            metrics.errors.clone(),
        );
        registry.register(
            "encrypted_bytes",
            "Bytes read or written on encrypted volumes (through the volume's SM4-XTS key, but for unwritten blocks read as zeros)",
            metrics.encrypted.clone(),
        );
        registry.register(
            "operation_duration_seconds",
            format!("Time from a request to its answer, by operation ({what})"),
            metrics.latency.clone(),
        );
        metrics
    }

    /// `volume`'s series of the operations `names` (then "other"), for one
    /// connection to hold: each is looked up (its labels built) the first
    /// time it is touched, and from then on a request touches atomics only.
    /// `encrypted`: the volume's data is enciphered, so the bytes it moves
    /// are counted as `encrypted_bytes` too.
    pub fn volume(self: &Arc<Self>, volume: &str, names: &'static [&'static str], encrypted: bool) -> VolumeSeries {
        let ops = (0..=names.len()).map(|_| OpSeries::default()).collect();
        VolumeSeries { metrics: self.clone(), volume: volume.to_string(), names, ops, encrypted }
    }
}

/// One volume's series of one operation, made on first use.
#[derive(Debug, Default)]
struct OpSeries {
    operations: OnceLock<Counter>,
    bytes: OnceLock<Counter>,
    errors: OnceLock<Counter>,
    encrypted: OnceLock<Counter>,
    latency: OnceLock<LatencyHistogram>,
}

/// One volume's counters, as a connection serving it holds them.
#[derive(Debug)]
pub struct VolumeSeries {
    metrics: Arc<VolumeOpMetrics>,
    volume: String,
    names: &'static [&'static str],
    /// By the operation's place in `names`, then "other".
    ops: Box<[OpSeries]>,
    encrypted: bool,
}

impl VolumeSeries {
    /// Operation `op` (its place in the names given, past them "other")
    /// asking to move `bytes` of data (0 for one that moves none), answered
    /// after `seconds`; its bytes count only if it succeeded (and, on an
    /// encrypted volume, as `encrypted_bytes`: a frontend passes bytes
    /// only for reads and writes, which go through the key).
    pub fn served(&self, op: usize, bytes: u64, ok: bool, seconds: f64) {
        let slot = op.min(self.names.len());
        let name = self.names.get(slot).copied().unwrap_or(OTHER);
        let series = &self.ops[slot];
        let m = &self.metrics;
        let labels = || VolumeOp { volume: self.volume.clone(), op: name };
        series.operations.get_or_init(|| m.operations.get_or_create(&labels()).clone()).inc();
        if ok && bytes > 0 {
            series.bytes.get_or_init(|| m.bytes.get_or_create(&labels()).clone()).inc_by(bytes);
            if self.encrypted {
                series.encrypted.get_or_init(|| m.encrypted.get_or_create(&labels()).clone()).inc_by(bytes);
            }
        }
        if !ok {
            series.errors.get_or_init(|| m.errors.get_or_create(&labels()).clone()).inc();
        }
        let latency = series.latency.get_or_init(|| m.latency.get_or_create(&Op { op: name }).clone());
        latency.observe_seconds(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_counted_by_reason() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(RetryCollector));
        let value = |line: &str| {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
            let found = text.lines().find_map(|l| l.strip_prefix(line)).unwrap_or_else(|| panic!("{line} in {text}"));
            found.trim().parse::<u64>().expect("a count")
        };
        let (map, deadlines) =
            ("chuyi_client_chunk_retries_total{reason=\"newer_map\"}", "chuyi_client_chunk_deadlines_total");
        let (map_before, deadlines_before) = (value(map), value(deadlines));
        RETRIES.retried(RetryReason::NewerMap);
        RETRIES.retried(RetryReason::NewerMap);
        RETRIES.gave_up();
        // Other tests of this binary may count too: at least ours.
        assert!(value(map) >= map_before + 2);
        assert!(value(deadlines) > deadlines_before);
        // Every reason is served, counted or not (value panics otherwise).
        for reason in ["next_replica", "bad_copy"] {
            value(&format!("chuyi_client_chunk_retries_total{{reason=\"{reason}\"}}"));
        }
    }

    #[test]
    fn each_volume_and_operation_is_a_series_and_unknown_ones_are_other() {
        let mut registry = Registry::default();
        let metrics = VolumeOpMetrics::register(registry.sub_registry_with_prefix("chuyi_test"), "Test requests");
        let vol = metrics.volume("vm1", &["read", "write"], false);
        let sealed = metrics.volume("vm2", &["read", "write"], true);
        sealed.served(0, 4096, true, 0.001);
        sealed.served(1, 8192, true, 0.001);
        sealed.served(1, 512, false, 0.001);
        vol.served(0, 4096, true, 0.001);
        vol.served(0, 4096, true, 0.001);
        vol.served(1, 512, false, 0.002);
        vol.served(7, 0, true, 0.0001);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for line in [
            "chuyi_test_operations_total{volume=\"vm1\",op=\"read\"} 2",
            "chuyi_test_bytes_total{volume=\"vm1\",op=\"read\"} 8192",
            "chuyi_test_errors_total{volume=\"vm1\",op=\"write\"} 1",
            "chuyi_test_operations_total{volume=\"vm1\",op=\"other\"} 1",
            "chuyi_test_operation_duration_seconds_count{op=\"read\"} 3",
            "chuyi_test_encrypted_bytes_total{volume=\"vm2\",op=\"read\"} 4096",
            "chuyi_test_encrypted_bytes_total{volume=\"vm2\",op=\"write\"} 8192",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(!text.contains("chuyi_test_bytes_total{volume=\"vm1\",op=\"other\"}"), "no bytes moved: {text}");
        assert!(!text.contains("chuyi_test_encrypted_bytes_total{volume=\"vm1\""), "vm1 is not encrypted: {text}");
        assert!(
            !text.contains("chuyi_test_bytes_total{volume=\"vm1\",op=\"write\"}"),
            "a failed write moved none: {text}"
        );
    }
}
