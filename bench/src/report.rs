//! A workload's result as one plain line, or one JSON object.

use std::fmt;

use crate::latency::LatencySummary;
use crate::load::{LoadResult, LoadSpec, Op};

/// Everything a run printed, and how it was run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub op: Op,
    pub block_bytes: u64,
    pub queue_depth: usize,
    pub connections: usize,
    pub client_threads: usize,
    pub region_bytes: u64,
    pub seconds: f64,
    pub ops: u64,
    pub iops: f64,
    /// Decimal megabytes (10^6 bytes) per second, as fio's "MB/s".
    pub mb_per_s: f64,
    pub latency: LatencySummary,
    /// Whether the node's disk does direct I/O (false: page-cache numbers).
    pub direct_io: bool,
}

impl Report {
    pub fn new(
        spec: &LoadSpec,
        result: &LoadResult,
        connections: usize,
        client_threads: usize,
        direct_io: bool,
    ) -> Self {
        let seconds = result.window.as_secs_f64();
        let iops = result.ops as f64 / seconds;
        Self {
            op: spec.op,
            block_bytes: spec.region.block_bytes,
            queue_depth: spec.queue_depth,
            connections,
            client_threads,
            region_bytes: spec.region.size_bytes,
            seconds,
            ops: result.ops,
            iops,
            mb_per_s: iops * spec.region.block_bytes as f64 / 1e6,
            latency: result.latency,
            direct_io,
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.latency;
        write!(
            f,
            "node-load op={} bs={} qd={} connections={} client_threads={} seconds={:.1} ops={} iops={:.0} \
             MB/s={:.1} lat_us: mean={:.1} p50={:.1} p99={:.1} p99.9={:.1} max={:.1} direct_io={}",
            self.op.name(),
            self.block_bytes,
            self.queue_depth,
            self.connections,
            self.client_threads,
            self.seconds,
            self.ops,
            self.iops,
            self.mb_per_s,
            l.mean_us,
            l.p50_us,
            l.p99_us,
            l.p999_us,
            l.max_us,
            self.direct_io
        )
    }
}
