//! What the NBD frontend counts for Prometheus: operations, bytes and
//! errors per volume and command, latency per command (from the request
//! read to its reply queued), open connections, and the QoS rules'
//! counters. Volume names are labels: one series per volume and command,
//! bounded by the volumes this frontend serves.

use std::sync::{Arc, OnceLock, Weak};

use chuyi_client::qos::Qos;
use chuyi_common::metrics::prometheus_client;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
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

    /// A command of `kind` on `volume` of `bytes`, answered after `seconds`.
    pub fn served(&self, volume: &str, kind: u16, bytes: u64, ok: bool, seconds: f64) {
        let op = op_name(kind);
        let labels = VolumeOp { volume: volume.to_string(), op };
        self.operations.get_or_create(&labels).inc();
        if matches!(kind, CMD_READ | CMD_WRITE) {
            self.bytes.get_or_create(&labels).inc_by(bytes);
        }
        if !ok {
            self.errors.get_or_create(&labels).inc();
        }
        self.latency.get_or_create(&Op { op }).observe(seconds);
    }
}

#[derive(Debug)]
struct Live(Arc<NbdMetrics>);

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(server) = self.0.server.get().and_then(Weak::upgrade) {
            let open = ConstGauge::new(server.open_connections() as i64);
            open.encode(encoder.encode_descriptor(
                "chuyi_nbd_connections",
                "Open client connections",
                None,
                open.metric_type(),
            )?)?;
        }
        if let Some(qos) = self.0.qos.get() {
            qos.encode_metrics("chuyi_nbd", &mut encoder)?;
        }
        Ok(())
    }
}
