//! `chuyi-bench s3-load`: PUT, GET, LIST and DELETE load on the S3 gateway
//! with many requests in flight, and, in the same run, the same objects
//! through chuyi-client directly ([`crate::s3_paths`]), so the gateway's own
//! cost shows as the ratio of the two.
//!
//! The paths ([`PathKind`]): the gateway as it runs (small objects packed),
//! the gateway with every object in chunks of its own (the layout before
//! packing), and the direct path. Each PUT phase also measures what the
//! storage nodes' disk files grew by, per byte stored.
//!
//! One cluster of real processes (chuyi-chaos's harness: a metadata member
//! and the storage nodes, a 2-replica pool), a user, one bucket per path.
//! The gateway runs in this process on a runtime of its own, so its CPU
//! time is told apart from the load generator's ([`crate::cpu`]). For each
//! object size, the four phases run on the gateway, then on the direct
//! path; after each path's deletes, the run waits until the reclaimer has
//! freed the deleted data, so no phase pays for the one before.
//!
//! Why one path after the other rather than each phase on both back to
//! back: every object, however small, takes a whole chunk slot on two
//! disks, reserved with fallocate (4 MiB each), so 1000 objects of 4 KiB
//! occupy 8 GiB of real disk; holding both paths' objects at once would
//! double that on a development machine's disk.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chuyi_chaos::cluster::{Spec, TestCluster, POOL};
use chuyi_client::{ClientConfig, Cluster};
use chuyi_common::limits::OBJECT_CHUNK_BYTES;
use chuyi_common::size::ByteSize;
use chuyi_meta_api::ask;
use chuyi_meta_api::model::{BucketConfigKind, BucketSettings};
use chuyi_metadata::state::Request;

use crate::cpu::{self, CpuTimes, GATEWAY_THREAD};
use crate::latency::{nanos, LatencySummary};
use crate::s3_client::{Keys, PayloadSigning, S3Connection};
use crate::s3_paths::{DirectPath, GatewayPath, ObjectBody, ObjectPath, PathError, Resume, Session};
use crate::s3_report::{Measured, PhaseResult, S3Report};

/// The user both paths act as, and their buckets.
const USER: &str = "bench";
/// How long the client retries one operation, and the cluster may take to
/// get ready or to free deleted data.
const DEADLINE: Duration = Duration::from_secs(120);
/// Pages one listing may take before it is called endless.
const LIST_PAGES_MAX: usize = 100_000;

/// One object size's workload.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct SizeSpec {
    pub object_bytes: u64,
    /// Objects each path PUTs, GETs and DELETEs.
    pub objects: usize,
    /// Requests in flight.
    pub concurrency: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct S3LoadSpec {
    pub nodes: usize,
    pub sizes: Vec<SizeSpec>,
    /// Times the GET phase reads every object.
    pub get_rounds: usize,
    /// Full listings each worker makes in the LIST phase.
    pub list_rounds: usize,
    pub payload: PayloadSigning,
    /// Worker threads of the gateway's runtime.
    pub gateway_threads: usize,
    /// The paths measured, in this order.
    pub paths: Vec<PathKind>,
    /// Object bodies cut from this file (repeated to the size), instead of
    /// random bytes: a corpus for the compression paths.
    pub data: Option<std::path::PathBuf>,
}

/// A way objects are written and read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PathKind {
    /// The gateway, small objects packed.
    Gateway,
    /// The gateway with every object in chunks of its own.
    GatewayOwned,
    /// chuyi-client straight to the metadata service and the nodes.
    Direct,
    /// The gateway, into a bucket with compression `capacity` (zstd).
    GatewayCapacity,
    /// The gateway, into a bucket with compression `performance` (lz4).
    GatewayPerformance,
    /// The gateway, into a bucket that encrypts with SM4-GCM by default.
    GatewaySm4,
    /// The gateway, into a bucket that encrypts with AES-256-GCM by default.
    GatewayAes256,
}

impl PathKind {
    pub fn name(self) -> &'static str {
        match self {
            PathKind::Gateway => "gateway",
            PathKind::GatewayOwned => "gateway-owned",
            PathKind::Direct => "direct",
            PathKind::GatewayCapacity => "gateway-capacity",
            PathKind::GatewayPerformance => "gateway-performance",
            PathKind::GatewaySm4 => "gateway-sm4",
            PathKind::GatewayAes256 => "gateway-aes256",
        }
    }

    /// The bucket's default encryption on this path (its S3 name).
    fn encryption(self) -> Option<&'static str> {
        match self {
            PathKind::GatewaySm4 => Some("SM4"),
            PathKind::GatewayAes256 => Some("AES256"),
            PathKind::Gateway
            | PathKind::GatewayOwned
            | PathKind::Direct
            | PathKind::GatewayCapacity
            | PathKind::GatewayPerformance => None,
        }
    }

    /// The bucket's compression policy on this path.
    fn compression(self) -> Option<&'static str> {
        match self {
            PathKind::GatewayCapacity => Some("capacity"),
            PathKind::GatewayPerformance => Some("performance"),
            PathKind::Gateway
            | PathKind::GatewayOwned
            | PathKind::Direct
            | PathKind::GatewaySm4
            | PathKind::GatewayAes256 => None,
        }
    }
}

/// In the order they run (and are reported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Phase {
    Put,
    Get,
    List,
    Delete,
}

impl Phase {
    pub const ALL: [Phase; 4] = [Phase::Put, Phase::Get, Phase::List, Phase::Delete];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Put => "PUT",
            Phase::Get => "GET",
            Phase::List => "LIST",
            Phase::Delete => "DELETE",
        }
    }
}

/// The cluster, the gateways and the paths, ready for load.
struct Bench {
    // Fields drop in order: the gateways stop before the cluster does.
    _gateway_runtime: GatewayRuntime,
    cluster: TestCluster,
    paths: Vec<Arc<dyn ObjectPath>>,
}

/// The gateway's runtime, shut down without waiting when dropped: dropping
/// a runtime inside another's task (here, on any early return) would block
/// a worker, which tokio refuses with a panic.
struct GatewayRuntime(Option<tokio::runtime::Runtime>);

impl Drop for GatewayRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

pub async fn run(spec: S3LoadSpec) -> anyhow::Result<S3Report> {
    anyhow::ensure!(spec.gateway_threads > 0, "--gateway-threads must be above zero");
    anyhow::ensure!(spec.get_rounds > 0 && spec.list_rounds > 0, "--get-rounds and --list-rounds must be above zero");
    for s in &spec.sizes {
        anyhow::ensure!(s.objects > 0 && s.concurrency > 0, "{s:?}: objects and concurrency must be above zero");
        anyhow::ensure!(s.object_bytes > 0, "{s:?}: an object size must be above zero");
    }
    let bench = start(&spec).await?;
    let mut results = Vec::new();
    let (mut md5_mb_per_s, mut sha256_mb_per_s) = (0.0, 0.0);
    for size in &spec.sizes {
        let len = usize::try_from(size.object_bytes)?;
        let body = Arc::new(match &spec.data {
            Some(file) => {
                ObjectBody::from_corpus(&std::fs::read(file).with_context(|| file.display().to_string())?, len)
            }
            None => ObjectBody::random(len),
        });
        (md5_mb_per_s, sha256_mb_per_s) = (body.md5_mb_per_s, body.sha256_mb_per_s);
        let prefix = format!("{}/", ByteSize(size.object_bytes));
        for path in &bench.paths {
            for phase in Phase::ALL {
                let before = disk_bytes(&bench.cluster)?;
                let mut r = run_phase(path.clone(), phase, *size, &prefix, body.clone(), &spec)
                    .await
                    .with_context(|| format!("{} {} {}", ByteSize(size.object_bytes), phase.name(), path.name()))?;
                if phase == Phase::Put {
                    r.disk_bytes = Some(disk_bytes(&bench.cluster)?.saturating_sub(before));
                }
                eprintln!("{}", r.line());
                results.push(r);
            }
            let waited = wait_reclaimed(&bench.cluster).await?;
            eprintln!(
                "s3-load: {}'s deleted data freed {:.1}s after its last DELETE",
                path.name(),
                waited.as_secs_f64()
            );
        }
    }
    drop(bench);
    Ok(S3Report { spec, results, md5_mb_per_s, sha256_mb_per_s })
}

async fn start(spec: &S3LoadSpec) -> anyhow::Result<Bench> {
    let cluster = TestCluster::start(cluster_spec(spec)).await?;
    cluster.create_pool().await?;
    cluster.wait_clean(DEADLINE).await?;
    let keys = tokio::task::block_in_place(|| create_user(&cluster))?;
    let meta = cluster.meta()?;

    let gateway_runtime = GatewayRuntime(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(spec.gateway_threads)
            .thread_name(GATEWAY_THREAD)
            .enable_all()
            .build()?,
    ));
    let runtime = gateway_runtime.0.as_ref().context("the gateway's runtime")?;
    let mut paths: Vec<Arc<dyn ObjectPath>> = Vec::new();
    for &kind in &spec.paths {
        let bucket = format!("bench-{}", kind.name());
        let path: Arc<dyn ObjectPath> = match kind {
            PathKind::Gateway
            | PathKind::GatewayOwned
            | PathKind::GatewayCapacity
            | PathKind::GatewayPerformance
            | PathKind::GatewaySm4
            | PathKind::GatewayAes256 => {
                let addr = start_gateway(&cluster, runtime, gateway_options(kind)).await?;
                S3Connection::connect(addr, &keys, spec.payload).await?.create_bucket(&bucket).await?;
                if let Some(policy) = kind.compression() {
                    let settings = BucketSettings { compression: Some(policy.into()), ..BucketSettings::default() };
                    meta.write(Request::SetBucketSettings { bucket: bucket.clone(), settings })
                        .await
                        .context("setting the bucket's compression")?;
                }
                if let Some(algorithm) = kind.encryption() {
                    let kind = BucketConfigKind::Encryption;
                    let document = Some(algorithm.as_bytes().to_vec());
                    meta.write(Request::SetBucketConfig { bucket: bucket.clone(), kind, document })
                        .await
                        .context("setting the bucket's encryption")?;
                }
                Arc::new(GatewayPath { name: kind.name(), addr, keys: keys.clone(), payload: spec.payload, bucket })
            }
            PathKind::Direct => {
                meta.write(Request::CreateBucket {
                    name: bucket.clone(),
                    owner: USER.into(),
                    pool: POOL.into(),
                    object_lock: false,
                })
                .await
                .context("creating the direct path's bucket")?;
                Arc::new(DirectPath { cluster: cluster.client(DEADLINE).await?, bucket, pool: POOL.into() })
            }
        };
        paths.push(path);
    }
    for path in &paths {
        warm_up(path.as_ref()).await.with_context(|| format!("warming up {}", path.name()))?;
    }
    Ok(Bench { _gateway_runtime: gateway_runtime, cluster, paths })
}

/// Room for the largest size's objects on two replicas, twice over (PGs
/// do not spread them evenly); each object takes whole chunk slots. The
/// disks are sparse files: only slots in use take space.
fn cluster_spec(spec: &S3LoadSpec) -> Spec {
    let slots = |s: &SizeSpec| s.object_bytes.div_ceil(OBJECT_CHUNK_BYTES) * OBJECT_CHUNK_BYTES;
    let largest: u64 = spec.sizes.iter().map(|s| slots(s) * s.objects as u64).max().unwrap_or(0);
    let nodes = spec.nodes.max(1) as u64;
    Spec {
        nodes: spec.nodes,
        disk_mib: ((largest * 2 * 2 / nodes) >> 20) + 1024,
        heartbeat_timeout_ms: 5000,
        pg_count: 64,
        ..Spec::default()
    }
}

fn create_user(cluster: &TestCluster) -> anyhow::Result<Keys> {
    let (ok, out, err) = cluster.cli(&["--json", "user", "create", USER])?;
    anyhow::ensure!(ok, "chuyi user create: {out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).context("chuyi user create --json")?;
    let field = |name: &str| v[name].as_str().map(String::from).with_context(|| format!("no {name} in {out}"));
    Ok(Keys { access_key: field("access_key")?, secret_key: field("secret_key")? })
}

/// Starts the gateway on `runtime`, with a cluster client of its own
/// (created there, so its connections' tasks run there too); returns
/// where it listens.
async fn start_gateway(
    cluster: &TestCluster,
    runtime: &tokio::runtime::Runtime,
    options: chuyi_s3::server::Options,
) -> anyhow::Result<std::net::SocketAddr> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind("127.0.0.1:0".parse()?)?;
    let addr = socket.local_addr()?;
    // Listening before this returns, so the first request finds it; the
    // listener belongs to the gateway's runtime.
    let listener = {
        let _inside = runtime.enter();
        socket.listen(1024)?
    };
    let meta_addrs = cluster.meta_addrs();
    let node_addrs = cluster.nodes.iter().map(|n| (n.id as chuyi_common::ids::NodeId, vec![n.addr.clone()])).collect();
    let config = ClientConfig { deadline: DEADLINE, node_addrs, ..ClientConfig::default() };
    let client: Arc<Cluster> = runtime
        .spawn(async move { Cluster::connect(meta_addrs, &chuyi_chaos::cluster::frontend("s3-bench"), config).await })
        .await?
        .context("the gateway's cluster client")?;
    runtime.spawn(async move {
        let user_seal = chuyi_chaos::cluster::frontend("s3-bench").user_seal().expect("a frontend opens user keys");
        let service = chuyi_s3::server::service_with(client, user_seal, options);
        if let Err(e) = chuyi_s3::server::serve(listener, service).await {
            eprintln!("s3-load: the gateway stopped: {e}");
        }
    });
    Ok(addr)
}

/// One object through every operation, so connections, the map and the
/// user cache are warm before anything is timed.
async fn warm_up(path: &dyn ObjectPath) -> Result<(), PathError> {
    let body = ObjectBody::random(4096);
    let mut s = path.session().await?;
    s.put("warm-up", &body).await?;
    s.get("warm-up", &body).await?;
    s.list_page("warm-up", None).await?;
    s.delete("warm-up").await
}

/// What one worker did in a phase.
#[derive(Debug, Default)]
struct Done {
    latencies_ns: Vec<u64>,
    objects: u64,
    bytes: u64,
}

async fn run_phase(
    path: Arc<dyn ObjectPath>,
    phase: Phase,
    size: SizeSpec,
    prefix: &str,
    body: Arc<ObjectBody>,
    spec: &S3LoadSpec,
) -> Result<PhaseResult, PathError> {
    // Connections are opened before the clock starts.
    let mut sessions = Vec::with_capacity(size.concurrency);
    for _ in 0..size.concurrency {
        sessions.push(path.session().await?);
    }
    let jobs = match phase {
        Phase::Get => size.objects * spec.get_rounds,
        Phase::List => size.concurrency * spec.list_rounds,
        Phase::Put | Phase::Delete => size.objects,
    };
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = cpu::sample();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(sessions.len());
    for session in sessions {
        let worker = Worker { next: next.clone(), jobs, phase, size, prefix: prefix.to_string(), body: body.clone() };
        tasks.push(tokio::spawn(worker.run(session)));
    }
    let mut all = Done::default();
    for task in tasks {
        let done = task.await.map_err(|e| PathError::Mismatch {
            op: phase.name(),
            key: prefix.to_string(),
            what: format!("a worker failed: {e}"),
        })??;
        all.latencies_ns.extend(done.latencies_ns);
        all.objects += done.objects;
        all.bytes += done.bytes;
    }
    let elapsed = started.elapsed();
    let cpu: CpuTimes = cpu::sample().since(&cpu_before);
    let measured = Measured {
        requests: all.latencies_ns.len() as u64,
        objects: all.objects,
        bytes: all.bytes,
        elapsed,
        latency: LatencySummary::from_nanos(&mut all.latencies_ns),
        cpu,
    };
    Ok(PhaseResult::new(phase, path.name(), size, measured))
}

/// One of the phase's workers: takes jobs (objects, or whole listings)
/// from a shared counter until none are left.
struct Worker {
    next: Arc<AtomicUsize>,
    jobs: usize,
    phase: Phase,
    size: SizeSpec,
    prefix: String,
    body: Arc<ObjectBody>,
}

impl Worker {
    async fn run(self, mut session: Box<dyn Session>) -> Result<Done, PathError> {
        let mut done = Done::default();
        loop {
            let job = self.next.fetch_add(1, Ordering::Relaxed);
            if job >= self.jobs {
                return Ok(done);
            }
            // GET's later rounds read the same objects again.
            let key = format!("{}{:08}", self.prefix, job % self.size.objects);
            let t = Instant::now();
            match self.phase {
                Phase::Put => {
                    session.put(&key, &self.body).await?;
                    done.bytes += self.body.data.len() as u64;
                }
                Phase::Get => done.bytes += session.get(&key, &self.body).await?,
                Phase::Delete => session.delete(&key).await?,
                // A job is a whole listing, each page timed on its own.
                Phase::List => {
                    self.list_all(session.as_mut(), &mut done).await?;
                    continue;
                }
            }
            done.latencies_ns.push(nanos(t.elapsed()));
            done.objects += 1;
        }
    }

    /// Every page of the prefix; each page is one timed request, and the
    /// listing must hold exactly the objects written.
    async fn list_all(&self, session: &mut dyn Session, done: &mut Done) -> Result<(), PathError> {
        let mut from: Option<Resume> = None;
        let mut keys = 0usize;
        for _ in 0..LIST_PAGES_MAX {
            let t = Instant::now();
            let (n, next) = session.list_page(&self.prefix, from).await?;
            done.latencies_ns.push(nanos(t.elapsed()));
            keys += n;
            from = next;
            if from.is_none() {
                break;
            }
        }
        if keys != self.size.objects || from.is_some() {
            let what = format!("listed {keys} keys (complete: {}), written {}", from.is_none(), self.size.objects);
            return Err(PathError::Mismatch { op: "LIST", key: self.prefix.clone(), what });
        }
        done.objects += keys as u64;
        Ok(())
    }
}

/// A gateway as `kind` runs it. Packs close after 5 s and are freed 1 s
/// after their last object goes, and deleted data 1 s after (production:
/// 10 min, 60 s and 15 min), so a path's deleted data is freed before the
/// next path runs; how many objects share a pack is the same either way
/// at this rate.
fn gateway_options(kind: PathKind) -> chuyi_s3::server::Options {
    chuyi_s3::server::Options {
        pack_window: Duration::from_secs(5),
        pack_ttl: Duration::from_secs(10),
        pack_grace: Duration::from_secs(1),
        garbage_grace: Duration::from_secs(1),
        packed_object_max: if kind == PathKind::GatewayOwned { 0 } else { chuyi_s3::packs::PACKED_OBJECT_MAX },
        // A KEK of the run's own, for the encrypted paths' bucket keys.
        kek: kind.encryption().map(|_| {
            let mut key = [0u8; 16];
            chuyi_common::secret::fill_random(&mut key);
            chuyi_common::sm4::Kek::new(&key)
        }),
        ..chuyi_s3::server::Options::new(POOL)
    }
}

/// What the storage nodes' disk files take on the file system (du).
fn disk_bytes(cluster: &TestCluster) -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for node in &cluster.nodes {
        let file = cluster.disk_file(node.id as chuyi_common::ids::NodeId)?;
        total += std::fs::metadata(&file).with_context(|| format!("{}", file.display()))?.blocks() * 512;
    }
    Ok(total)
}

/// Waits until no deleted data waits to be freed, packs included;
/// returns how long.
async fn wait_reclaimed(cluster: &TestCluster) -> anyhow::Result<Duration> {
    let meta = cluster.meta()?;
    let started = Instant::now();
    loop {
        let packs = meta.status().await?.packs.packs;
        if meta.ask(ask::Garbage { max: 1, after: None }).await?.is_empty() && packs == 0 {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(started.elapsed() < DEADLINE, "deleted data not freed after {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
