//! What the vhost-user-blk frontend counts for Prometheus, per volume and
//! request type as the NBD frontend does (`chuyi_client::metrics`):
//! `chuyi_vhost_operations_total{volume,op}`, `chuyi_vhost_bytes_total`,
//! `chuyi_vhost_errors_total`, `chuyi_vhost_encrypted_bytes_total` and
//! `chuyi_vhost_operation_duration_seconds{op}`
//! (from the request popped off its virtqueue to its completion).

use std::sync::Arc;

use chuyi_client::metrics::VolumeOpMetrics;
use chuyi_common::metrics::prometheus_client::registry::Registry;

use crate::request::Op;

/// The request types counted apart: discard and write-zeroes both zero
/// their ranges; a request refused before it is served (out of range, of
/// a type not offered, malformed) is "other", as an error.
pub const OP_NAMES: [&str; 5] = ["read", "write", "flush", "get_id", "zero"];

/// Where refused requests are counted: past the named ones ("other").
pub(crate) const REFUSED: usize = OP_NAMES.len();

/// Registers the frontend's families under `chuyi_vhost_`.
pub fn register(registry: &mut Registry) -> Arc<VolumeOpMetrics> {
    VolumeOpMetrics::register(registry.sub_registry_with_prefix("chuyi_vhost"), "virtio-blk requests")
}

/// `op`'s place in [`OP_NAMES`], and the data bytes it moves.
pub(crate) fn counted(op: &Op) -> (usize, u64) {
    match op {
        Op::Read { len, .. } => (0, *len),
        Op::Write { len, .. } => (1, *len),
        Op::Flush => (2, 0),
        Op::GetId => (3, 0),
        Op::Zero { .. } => (4, 0),
    }
}
