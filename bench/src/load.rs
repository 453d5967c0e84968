//! The closed-loop load: exactly `queue_depth` requests in flight, each
//! worker sending its next request as soon as its last one is answered, to
//! uniformly random blocks of the region (with replacement, as fio's
//! `norandommap`).
//!
//! Counting is by completion time: an operation counts, and its latency is
//! kept, when it completes inside the measured window `[from, end)`. With a
//! constant number in flight that is an unbiased estimate of throughput,
//! unlike counting by start time, which loses the operations straddling
//! each edge. A warm-up before `from` fills the pipeline and the caches
//! of the connection, the node and the disk.

use std::str::FromStr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::task::JoinSet;

use crate::latency::{nanos, LatencySummary};
use crate::region::Region;
use crate::target::{payload, read, write, ChunkClient, NodeTarget};
use crate::LoadError;

/// Latencies a worker expects to keep, to avoid regrowing at the start.
const LATENCIES_RESERVED: usize = 1 << 16;

/// What every request of a workload does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    RandRead,
    RandWrite,
}

impl FromStr for Op {
    type Err = LoadError;

    fn from_str(s: &str) -> Result<Self, LoadError> {
        match s {
            "randread" => Ok(Op::RandRead),
            "randwrite" => Ok(Op::RandWrite),
            _ => Err(LoadError::Invalid(format!("--op {s:?}: expected randread or randwrite"))),
        }
    }
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::RandRead => "randread",
            Op::RandWrite => "randwrite",
        }
    }
}

/// One workload.
#[derive(Clone, Copy, Debug)]
pub struct LoadSpec {
    pub op: Op,
    pub region: Region,
    pub queue_depth: usize,
    pub warmup: Duration,
    pub measure: Duration,
    pub seed: u64,
}

/// What a workload measured inside its window.
#[derive(Clone, Copy, Debug)]
pub struct LoadResult {
    pub ops: u64,
    pub window: Duration,
    pub latency: LatencySummary,
}

/// The measured window, shared by every worker.
#[derive(Clone, Copy, Debug)]
struct Window {
    from: Instant,
    end: Instant,
}

/// Runs `spec` against `target` and gathers every worker's latencies.
pub async fn run(target: &NodeTarget, spec: &LoadSpec) -> Result<LoadResult, LoadError> {
    if spec.queue_depth == 0 || spec.measure.is_zero() {
        return Err(LoadError::Invalid("--qd and --seconds must be above zero".into()));
    }
    let data = payload(spec.region.block_bytes as usize);
    let from = Instant::now() + spec.warmup;
    let window = Window { from, end: from + spec.measure };
    let mut workers = JoinSet::new();
    for n in 0..spec.queue_depth {
        let (client, disk, spec, data) = (target.client(n).clone(), target.disk(), *spec, data.clone());
        let seed = spec.seed ^ (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        workers.spawn(async move { worker(client, disk, spec, seed, window, data).await });
    }
    let mut latencies_ns = Vec::new();
    while let Some(joined) = workers.join_next().await {
        latencies_ns.extend(joined??);
    }
    let ops = latencies_ns.len() as u64;
    Ok(LoadResult { ops, window: spec.measure, latency: LatencySummary::from_nanos(&mut latencies_ns) })
}

/// One request at a time until the window ends; returns the latencies of
/// the requests that completed inside it.
async fn worker(
    client: ChunkClient,
    disk: u32,
    spec: LoadSpec,
    seed: u64,
    window: Window,
    data: Bytes,
) -> Result<Vec<u64>, LoadError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut latencies_ns = Vec::with_capacity(LATENCIES_RESERVED);
    let len = spec.region.block_bytes as u32;
    loop {
        let at = spec.region.random_block(&mut rng);
        let started = Instant::now();
        if started >= window.end {
            return Ok(latencies_ns);
        }
        match spec.op {
            Op::RandRead => read(&client, disk, at, len).await?,
            Op::RandWrite => write(&client, disk, at, data.clone()).await?,
        }
        let done = Instant::now();
        if done >= window.from && done < window.end {
            latencies_ns.push(nanos(done - started));
        }
    }
}
