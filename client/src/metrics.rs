//! Per-volume operation metrics, as a block frontend (NBD, vhost-user-blk)
//! counts them for Prometheus: operations, bytes and errors by volume and
//! operation, and latency by operation. Volume names are labels: one
//! series per volume and operation, bounded by the volumes a frontend
//! serves. Each frontend registers them under its own prefix
//! (`chuyi_nbd_`, `chuyi_vhost_`) with its own operation names.

use std::sync::{Arc, OnceLock};

use chuyi_common::metrics::{prometheus_client, LatencyHistogram};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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

/// The label of an operation past a frontend's named ones.
const OTHER: &str = "other";

/// One frontend's per-volume families, registered once per process.
#[derive(Debug)]
pub struct VolumeOpMetrics {
    operations: Family<VolumeOp, Counter>,
    bytes: Family<VolumeOp, Counter>,
    errors: Family<VolumeOp, Counter>,
    /// Atomics only (no lock per request, which every queue and
    /// connection of every volume would share).
    latency: Family<Op, LatencyHistogram>,
}

impl VolumeOpMetrics {
    /// Registers `operations`, `bytes`, `errors` and
    /// `operation_duration_seconds` in `registry` (a sub-registry with the
    /// frontend's prefix); `what` names the operations in their help
    /// ("NBD commands").
    pub fn register(registry: &mut Registry, what: &str) -> Arc<Self> {
        let metrics = Arc::new(Self {
            operations: Family::default(),
            bytes: Family::default(),
            errors: Family::default(),
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
            "operation_duration_seconds",
            format!("Time from a request to its answer, by operation ({what})"),
            metrics.latency.clone(),
        );
        metrics
    }

    /// `volume`'s series of the operations `names` (then "other"), for one
    /// connection to hold: each is looked up (its labels built) the first
    /// time it is touched, and from then on a request touches atomics only.
    pub fn volume(self: &Arc<Self>, volume: &str, names: &'static [&'static str]) -> VolumeSeries {
        let ops = (0..=names.len()).map(|_| OpSeries::default()).collect();
        VolumeSeries { metrics: self.clone(), volume: volume.to_string(), names, ops }
    }
}

/// One volume's series of one operation, made on first use.
#[derive(Debug, Default)]
struct OpSeries {
    operations: OnceLock<Counter>,
    bytes: OnceLock<Counter>,
    errors: OnceLock<Counter>,
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
}

impl VolumeSeries {
    /// Operation `op` (its place in the names given, past them "other")
    /// asking to move `bytes` of data (0 for one that moves none), answered
    /// after `seconds`; its bytes count only if it succeeded.
    pub fn served(&self, op: usize, bytes: u64, ok: bool, seconds: f64) {
        let slot = op.min(self.names.len());
        let name = self.names.get(slot).copied().unwrap_or(OTHER);
        let series = &self.ops[slot];
        let m = &self.metrics;
        let labels = || VolumeOp { volume: self.volume.clone(), op: name };
        series.operations.get_or_init(|| m.operations.get_or_create(&labels()).clone()).inc();
        if ok && bytes > 0 {
            series.bytes.get_or_init(|| m.bytes.get_or_create(&labels()).clone()).inc_by(bytes);
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
    fn each_volume_and_operation_is_a_series_and_unknown_ones_are_other() {
        let mut registry = Registry::default();
        let metrics = VolumeOpMetrics::register(registry.sub_registry_with_prefix("chuyi_test"), "Test requests");
        let vol = metrics.volume("vm1", &["read", "write"]);
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
            "chuyi_test_operation_duration_seconds_count{op=\"read\"} 2",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(!text.contains("chuyi_test_bytes_total{volume=\"vm1\",op=\"other\"}"), "no bytes moved: {text}");
        assert!(
            !text.contains("chuyi_test_bytes_total{volume=\"vm1\",op=\"write\"}"),
            "a failed write moved none: {text}"
        );
    }
}
