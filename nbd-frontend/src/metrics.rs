//! What the NBD frontend counts for Prometheus: operations, bytes and
//! errors per volume and command, latency per command (from the request
//! read to its reply queued), open connections, and the QoS rules'
//! counters. Volume names are labels: one series per volume and command,
//! bounded by the volumes this frontend serves.

use std::sync::{Arc, OnceLock, Weak};

use chuyi_client::qos::Qos;
use chuyi_common::metrics::prometheus_client;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::proto::{CMD_BLOCK_STATUS, CMD_DISC, CMD_FLUSH, CMD_READ, CMD_TRIM, CMD_WRITE, CMD_WRITE_ZEROES};
use crate::server::NbdServer;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VolumeOp {
    volume: String,
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Op {
    op: &'static str,
}

/// The NBD command's name in labels.
pub fn op_name(kind: u16) -> &'static str {
    match kind {
        CMD_READ => "read",
        CMD_WRITE => "write",
        CMD_FLUSH => "flush",
        CMD_TRIM => "trim",
        CMD_WRITE_ZEROES => "write_zeroes",
        CMD_BLOCK_STATUS => "block_status",
        CMD_DISC => "disconnect",
        _ => "other",
    }
}

/// The frontend's metrics, registered once per process.
#[derive(Debug)]
pub struct NbdMetrics {
    operations: Family<VolumeOp, Counter>,
    bytes: Family<VolumeOp, Counter>,
    errors: Family<VolumeOp, Counter>,
    latency: Family<Op, Histogram, fn() -> Histogram>,
    /// Set when the server starts (the collector reads them live).
    pub(crate) server: OnceLock<Weak<NbdServer>>,
    pub(crate) qos: OnceLock<Arc<Qos>>,
}

fn latency_histogram() -> Histogram {
    // 10 µs to about 5 s.
    Histogram::new(exponential_buckets(0.00001, 2.0, 20))
}

impl NbdMetrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Arc::new(Self {
            operations: Family::default(),
            bytes: Family::default(),
            errors: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            server: OnceLock::new(),
            qos: OnceLock::new(),
        });
        let nbd = registry.sub_registry_with_prefix("chuyi_nbd");
        nbd.register("operations", "NBD commands served, by volume and command", metrics.operations.clone());
        nbd.register("bytes", "Bytes read or written, by volume and command", metrics.bytes.clone());
        nbd.register("errors", "NBD commands answered with an error, by volume and command", metrics.errors.clone());
        nbd.register(
            "operation_duration_seconds",
            "Time from a command's request to its reply, by command",
            metrics.latency.clone(),
        );
        registry.register_collector(Box::new(Live(metrics.clone())));
        metrics
    }

    /// `volume`'s counters, for one connection to hold: each series is
    /// looked up (its labels built) the first time it is touched, and from
    /// then on a command touches atomics only.
    pub fn volume(self: &Arc<Self>, volume: &str) -> VolumeMetrics {
        VolumeMetrics { metrics: self.clone(), volume: volume.to_string(), ops: Default::default() }
    }
}

/// The commands counted apart, by [`op_name`]; the rest are "other".
const OPS: [u16; 6] = [CMD_READ, CMD_WRITE, CMD_FLUSH, CMD_TRIM, CMD_WRITE_ZEROES, CMD_BLOCK_STATUS];

/// One volume's series of one command, made on first use.
#[derive(Debug, Default)]
struct OpSeries {
    operations: OnceLock<Counter>,
    bytes: OnceLock<Counter>,
    errors: OnceLock<Counter>,
    latency: OnceLock<Histogram>,
}

/// One volume's counters, as a connection serving it holds them.
#[derive(Debug)]
pub struct VolumeMetrics {
    metrics: Arc<NbdMetrics>,
    volume: String,
    /// By the command's place in [`OPS`], then "other".
    ops: [OpSeries; 7],
}

impl VolumeMetrics {
    /// A command of `kind` of `bytes`, answered after `seconds`.
    pub fn served(&self, kind: u16, bytes: u64, ok: bool, seconds: f64) {
        let slot = OPS.iter().position(|&k| k == kind).unwrap_or(OPS.len());
        let series = &self.ops[slot];
        let m = &self.metrics;
        let labels = || VolumeOp { volume: self.volume.clone(), op: op_name(kind) };
        series.operations.get_or_init(|| m.operations.get_or_create(&labels()).clone()).inc();
        if matches!(kind, CMD_READ | CMD_WRITE) {
            series.bytes.get_or_init(|| m.bytes.get_or_create(&labels()).clone()).inc_by(bytes);
        }
        if !ok {
            series.errors.get_or_init(|| m.errors.get_or_create(&labels()).clone()).inc();
        }
        let latency = series.latency.get_or_init(|| m.latency.get_or_create(&Op { op: op_name(kind) }).clone());
        latency.observe(seconds);
    }
}

#[derive(Debug)]
struct Live(Arc<NbdMetrics>);

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(server) = self.0.server.get().and_then(Weak::upgrade) {
            let open = server.open_connections() as i64;
            chuyi_common::metrics::encode_gauge(
                &mut encoder,
                "chuyi_nbd_connections",
                "Open client connections",
                open,
            )?;
        }
        if let Some(qos) = self.0.qos.get() {
            qos.encode_metrics("chuyi_nbd", &mut encoder)?;
        }
        Ok(())
    }
}
