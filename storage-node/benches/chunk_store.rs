//! The chunk store on a real disk, without the network: 4 KiB random reads
//! and writes over a prefilled 64 MiB region (16 chunks), on both I/O
//! engines, at queue depth 1 and 32.
//!
//! Each id reports the time of one operation: at QD1 its latency, at QD32
//! the elapsed time divided by the operations done while 32 run at once
//! (the inverse of IOPS; criterion's element throughput shows the IOPS).
//! QD32 runs 32 tasks that each loop over their share of the operations,
//! so the cost measured is the store's, not that of spawning a task per op.
//!
//! The disk file lives under `$CHUYI_BENCH_DIR` (default `/var/tmp`), which
//! must be a real disk: on tmpfs O_DIRECT is refused and the numbers would
//! be the page cache's.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chuyi_common::buf::AlignedBuf;
use chuyi_common::ids::{ChunkId, DeviceClass};
use chuyi_storage_node::io::{EngineKind, EngineTuning};
use chuyi_storage_node::store::{open_disk, DiskSpec, DiskStore};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

const MIB: u64 = 1 << 20;
const CHUNK_BYTES: u64 = 4 * MIB;
const BLOCK_BYTES: u64 = 4096;
const REGION_BYTES: u64 = 64 * MIB;
/// Room for the region's 16 slots plus the slot and checksum tables.
const DISK_CAPACITY_BYTES: u64 = REGION_BYTES + 8 * MIB;
const REGION_BLOCKS: u64 = REGION_BYTES / BLOCK_BYTES;
const BLOCKS_PER_CHUNK: u64 = CHUNK_BYTES / BLOCK_BYTES;
const PREFILL_WRITE_BYTES: u64 = MIB;
const OWNER: u64 = 0xBE7C_0000;
const QUEUE_DEPTHS: [usize; 2] = [1, 32];
const ENGINES: [EngineKind; 2] = [EngineKind::Uring, EngineKind::Pread];

const _: () = assert!(REGION_BYTES.is_multiple_of(CHUNK_BYTES) && CHUNK_BYTES.is_multiple_of(PREFILL_WRITE_BYTES));

#[derive(Clone, Copy, Debug)]
enum Op {
    RandRead,
    RandWrite,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::RandRead => "randread",
            Op::RandWrite => "randwrite",
        }
    }
}

fn bench_dir() -> PathBuf {
    std::env::var_os("CHUYI_BENCH_DIR").map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from)
}

fn engine_name(engine: EngineKind) -> &'static str {
    match engine {
        EngineKind::Uring => "uring",
        EngineKind::Pread => "pread",
        EngineKind::Inline => "inline",
    }
}

/// A block-aligned buffer whose bytes say where they were written.
fn pattern(tag: u64, len: u64) -> Bytes {
    let data: Vec<u8> = (0..len).map(|i| (tag.wrapping_mul(31) + i * 7 + i / BLOCK_BYTES) as u8).collect();
    AlignedBuf::copy_from(&data).freeze()
}

/// Block `block` of the region: its chunk and the offset in that chunk.
fn locate(block: u64) -> (ChunkId, u64) {
    (ChunkId::new(OWNER, block / BLOCKS_PER_CHUNK), block % BLOCKS_PER_CHUNK * BLOCK_BYTES)
}

/// A fresh disk in a temporary directory with the whole region written.
async fn open_prefilled(dir: &tempfile::TempDir, engine: EngineKind) -> DiskStore {
    let spec = DiskSpec {
        id: 0,
        class: DeviceClass::Ssd,
        path: dir.path().join("disk0"),
        capacity_bytes: Some(DISK_CAPACITY_BYTES),
        chunk_size: CHUNK_BYTES,
        engine,
        tuning: EngineTuning::default(),
    };
    let disk = open_disk(&spec).await.expect("open the bench disk");
    let stat = disk.stat();
    assert!(stat.capacity_bytes >= REGION_BYTES, "bench disk too small: {stat:?}");
    if !stat.direct_io {
        eprintln!("warning: {} refuses O_DIRECT; these are page-cache numbers", dir.path().display());
    }
    for at in (0..REGION_BYTES).step_by(PREFILL_WRITE_BYTES as usize) {
        let chunk = ChunkId::new(OWNER, at / CHUNK_BYTES);
        disk.write(chunk, at % CHUNK_BYTES, pattern(at, PREFILL_WRITE_BYTES), false).await.expect("prefill write");
    }
    disk.sync().await.expect("prefill sync");
    disk
}

/// `count` operations at random blocks, one after the other.
async fn run_serial(disk: &DiskStore, op: Op, count: u64, seed: u64, block: &Bytes) {
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..count {
        let (chunk, offset) = locate(rng.random_range(0..REGION_BLOCKS));
        match op {
            Op::RandRead => {
                let (data, allocated) = disk.read(chunk, offset, BLOCK_BYTES).await.expect("read");
                assert!(allocated && data.len() == BLOCK_BYTES as usize, "read of a prefilled block");
            }
            Op::RandWrite => disk.write(chunk, offset, block.clone(), false).await.expect("write"),
        }
    }
}

/// Time for `iters` operations with `depth` of them in flight at once.
async fn run(disk: Arc<DiskStore>, op: Op, depth: usize, iters: u64, block: Bytes) -> Duration {
    let start = Instant::now();
    if depth == 1 {
        run_serial(&disk, op, iters, iters, &block).await;
        return start.elapsed();
    }
    let mut workers = JoinSet::new();
    for w in 0..depth as u64 {
        // Spread the operations so that the workers together do `iters`.
        let share = iters / depth as u64 + u64::from(w < iters % depth as u64);
        let (disk, block) = (disk.clone(), block.clone());
        workers.spawn(async move { run_serial(&disk, op, share, iters ^ (w << 32), &block).await });
    }
    while let Some(joined) = workers.join_next().await {
        joined.expect("bench worker");
    }
    start.elapsed()
}

fn chunk_store(c: &mut Criterion) {
    let runtime = Runtime::new().expect("tokio runtime");
    let mut group = c.benchmark_group("chunk_store");
    group.measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1)).sample_size(30);
    group.throughput(Throughput::Elements(1));
    for engine in ENGINES {
        let dir = tempfile::Builder::new()
            .prefix("chuyi-chunk-store-bench-")
            .tempdir_in(bench_dir())
            .expect("temporary directory in the bench dir");
        let disk = Arc::new(runtime.block_on(open_prefilled(&dir, engine)));
        let block = pattern(0xB10C, BLOCK_BYTES);
        for op in [Op::RandRead, Op::RandWrite] {
            for depth in QUEUE_DEPTHS {
                let id = BenchmarkId::new(format!("{}_{}", engine_name(engine), op.name()), format!("qd{depth}"));
                group.bench_function(id, |b| {
                    b.to_async(&runtime).iter_custom(|iters| run(disk.clone(), op, depth, iters, block.clone()))
                });
            }
        }
        // The store goes (joining its engine threads) before its directory.
        drop(disk);
        drop(dir);
    }
    group.finish();
}

criterion_group!(benches, chunk_store);
criterion_main!(benches);
