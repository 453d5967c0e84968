//! What the NBD frontend counts for Prometheus: operations, bytes and
//! errors per volume and command, latency per command (from the request
//! read to its reply queued), open connections, and the QoS rules'
//! counters. Volume names are labels: one series per volume and command,
//! bounded by the volumes this frontend serves.

use std::sync::{Arc, OnceLock, Weak};

use chuyi_client::metrics::{VolumeOpMetrics, VolumeSeries};
use chuyi_client::qos::Qos;
use chuyi_common::metrics::prometheus_client;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;

use crate::proto::{CMD_BLOCK_STATUS, CMD_FLUSH, CMD_READ, CMD_TRIM, CMD_WRITE, CMD_WRITE_ZEROES};
use crate::server::NbdServer;

/// The frontend's metrics, registered once per process.
#[derive(Debug)]
pub struct NbdMetrics {
    ops: Arc<VolumeOpMetrics>,
    /// Set when the server starts (the collector reads them live).
    pub(crate) server: OnceLock<Weak<NbdServer>>,
    pub(crate) qos: OnceLock<Arc<Qos>>,
}

impl NbdMetrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let nbd = registry.sub_registry_with_prefix("chuyi_nbd");
        let ops = VolumeOpMetrics::register(nbd, "NBD commands");
        let metrics = Arc::new(Self { ops, server: OnceLock::new(), qos: OnceLock::new() });
        registry.register_collector(Box::new(Live(metrics.clone())));
        metrics
    }

    /// `volume`'s counters, for one connection to hold: each series is
    /// looked up (its labels built) the first time it is touched, and from
    /// then on a command touches atomics only.
    /// `encrypted`: the volume's data is enciphered.
    pub fn volume(self: &Arc<Self>, volume: &str, encrypted: bool) -> VolumeMetrics {
        VolumeMetrics(self.ops.volume(volume, &OP_NAMES, encrypted))
    }
}

/// The commands counted apart; the rest are "other".
const OPS: [u16; 6] = [CMD_READ, CMD_WRITE, CMD_FLUSH, CMD_TRIM, CMD_WRITE_ZEROES, CMD_BLOCK_STATUS];
const OP_NAMES: [&str; 6] = ["read", "write", "flush", "trim", "write_zeroes", "block_status"];

/// One volume's counters, as a connection serving it holds them.
#[derive(Debug)]
pub struct VolumeMetrics(VolumeSeries);

impl VolumeMetrics {
    /// A command of `kind` of `bytes`, answered after `seconds`.
    pub fn served(&self, kind: u16, bytes: u64, ok: bool, seconds: f64) {
        let slot = OPS.iter().position(|&k| k == kind).unwrap_or(OPS.len());
        let moved = if matches!(kind, CMD_READ | CMD_WRITE) { bytes } else { 0 };
        self.0.served(slot, moved, ok, seconds);
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
