//! A seeded in-process simulation of a whole cluster: three metadata
//! members (openraft on RocksDB), three storage nodes on in-memory disks
//! and a client running the verifying workload ([`crate::workload`]), all
//! on one thread under turmoil, on its simulated network and clock.
//!
//! A run is a function of its seed: the fault schedule ([`faults`]), the
//! network's message latencies, the order hosts are polled in and every
//! workload choice come from it. What does not: RocksDB's background
//! threads run on the machine's clock, so a replay repeats the schedule and
//! the operations, not necessarily every interleaving. The disks are files
//! in memory on the inline I/O engine, whose I/O completes inside the
//! simulation's step, so the simulated clock never runs ahead of them; the
//! fault engine sits on top, so a schedule can make a disk return EIO. A
//! failing seed is rerun with `chuyi-chaos simulate --seed N`.
//!
//! The check is the real-process scenarios' check: no read ever returns
//! what the model forbids, and after the faults end and the cluster heals,
//! every block reads as the model allows.

pub mod faults;
mod hosts;
mod rot;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use chuyi_client::{ClientConfig, Cluster};
use chuyi_common::ids::DeviceClass;
use chuyi_meta_api::client::MetaClient;
use chuyi_meta_api::model::Redundancy;
use chuyi_meta_api::{ask, order, MetaError};
use rand::rngs::StdRng;
use rand::SeedableRng;

use chuyi_storage_node::io::fault::FaultOn;

use self::faults::{Event, Failing, Fault, Host, Shape};
use crate::cluster::{admin, CHUNK_SIZE, POOL};
use crate::workload::{self, Model, Stats, BLOCK};

/// How one run is sized.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Simulated time with faults, from the workload's start.
    pub window: Duration,
    /// Simulated time after the last fault, before the final check.
    pub heal: Duration,
    pub writers: usize,
    pub volume_mib: u64,
    /// Bit flips on a node's disk besides the other faults. Off by
    /// default: a rot that meets a PG move is a double fault, and its
    /// block then ends unreadable on both copies, which the final check
    /// counts as a failure (ARCHITECTURE.md, "Simulation").
    pub rot: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { window: Duration::from_secs(20), heal: Duration::from_secs(15), writers: 4, volume_mib: 8, rot: false }
    }
}

const SHAPE: Shape = Shape { metas: 3, nodes: 3 };
const VOLUME: &str = "sim";
/// Disk of each node: room for the volume twice over.
const DISK_MIB: u64 = 256;
/// Scrub rate of the nodes in runs with rot.
const ROT_SCRUB_MB_PER_S: u32 = 50;
/// Simulated time a run may take before it is called stuck.
const SIM_LIMIT: Duration = Duration::from_secs(600);

/// What a run did.
#[derive(Debug)]
pub struct Outcome {
    pub seed: u64,
    pub events: Vec<Event>,
    pub stats: Stats,
    /// Blocks read back and found as the model allows, after the heal.
    pub verified: u64,
    /// Everything wrong: reads the model forbids, and failures of the run.
    pub violations: Vec<String>,
    pub simulated: Duration,
    pub real: Duration,
    /// Rots of the schedule that found no data to flip.
    pub rot_missed: u32,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// One line: the seed, the faults, the workload's figures.
    pub fn line(&self) -> String {
        let faults: Vec<String> = self.events.iter().map(ToString::to_string).collect();
        format!(
            "seed {}: {} in {:.0} s simulated, {:.1} s real; {} writes acked, {} failed, {} reads checked, {} blocks verified; faults: {}",
            self.seed,
            if self.passed() { "PASS" } else { "FAIL" },
            self.simulated.as_secs_f64(),
            self.real.as_secs_f64(),
            self.stats.acked_writes,
            self.stats.failed_writes,
            self.stats.reads_checked,
            self.verified,
            if faults.is_empty() { "none".into() } else { faults.join(", ") },
        ) + &if self.rot_missed > 0 { format!(" ({} rot found no data)", self.rot_missed) } else { String::new() }
    }
}

/// What the client host hands back to the driver.
#[derive(Default)]
struct Shared {
    /// Simulated time when the workload started; faults count from it.
    started: Option<Duration>,
    result: Option<(Stats, Result<u64, Vec<String>>)>,
}

/// Runs the simulation of `seed`.
pub fn run(seed: u64, options: Options) -> anyhow::Result<Outcome> {
    let real = Instant::now();
    let root = scratch_dir()?;
    let events = faults::schedule(seed, options.window, SHAPE, options.rot);
    let shared = Arc::new(Mutex::new(Shared::default()));

    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .enable_random_order()
        .simulation_duration(SIM_LIMIT)
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_micros(100))
        .max_message_latency(Duration::from_millis(5))
        .build();
    for id in 1..=SHAPE.metas {
        let config = hosts::meta_config(root.path(), id, SHAPE)?;
        sim.host(Host::Meta(id).to_string(), move || hosts::member(config.clone()));
    }
    let disks = hosts::Disks::default();
    for id in 1..=SHAPE.nodes {
        // Scrub finds rot the workload does not read; without rot it only
        // costs time.
        let scrub = if options.rot { ROT_SCRUB_MB_PER_S } else { 0 };
        let config = hosts::node_config(root.path(), id, SHAPE, DISK_MIB, scrub)?;
        let disks = disks.clone();
        sim.host(Host::Node(id).to_string(), move || hosts::node(config.clone(), Host::Node(id), disks.clone()));
    }
    sim.client(Host::Client.to_string(), client(seed, options, shared.clone()));

    let mut in_force = InForce::new(root.path(), seed, disks);
    let mut next = 0;
    let mut ending: Vec<Event> = Vec::new();
    let mut violations = Vec::new();
    loop {
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                violations.push(format!("the simulation stopped: {e}"));
                break;
            }
        }
        let Some(started) = lock(&shared).started else { continue };
        let now = sim.elapsed().saturating_sub(started);
        while next < events.len() && events[next].at <= now {
            in_force.apply(&mut sim, events[next].fault, true);
            ending.push(events[next]);
            next += 1;
        }
        ending.retain(|e| {
            let over = e.ends() <= now;
            if over {
                in_force.apply(&mut sim, e.fault, false);
            }
            !over
        });
    }
    let simulated = sim.elapsed();
    let rot_missed = in_force.rot_missed;
    drop(sim);
    let (stats, verified) = match lock(&shared).result.take() {
        Some((stats, verified)) => (stats, verified),
        None => (Stats::default(), Err(vec!["the client never finished".into()])),
    };
    violations.extend(stats.violations.iter().cloned());
    let verified = verified.unwrap_or_else(|v| {
        violations.extend(v);
        0
    });
    Ok(Outcome { seed, events, stats, verified, violations, simulated, real: real.elapsed(), rot_missed })
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// In memory where the machine has /dev/shm: the "in-memory disks", and a
/// RocksDB whose syncs cost nothing, which keeps the machine's clock and
/// the simulated one close.
fn scratch_dir() -> anyhow::Result<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() };
    dir.context("creating the simulation's directory")
}

/// The faults in force: partitions and holds counted per link, so two
/// faults over the same link end only when both have; and where rot finds
/// the nodes' disks, with the stream that picks its blocks.
struct InForce {
    cut: HashMap<(String, String), u32>,
    held: HashMap<(String, String), u32>,
    root: PathBuf,
    disks: hosts::Disks,
    rot: StdRng,
    /// Rots that found no block of data to flip (too early in the run).
    rot_missed: u32,
}

impl InForce {
    fn new(root: &Path, seed: u64, disks: hosts::Disks) -> Self {
        let rot = StdRng::seed_from_u64(seed.rotate_left(17));
        Self { cut: HashMap::new(), held: HashMap::new(), root: root.to_path_buf(), disks, rot, rot_missed: 0 }
    }

    fn pairs(fault: Fault) -> Vec<(Host, Host)> {
        match fault {
            Fault::Crash(_) | Fault::Rot(_) | Fault::Eio(..) => Vec::new(),
            Fault::Isolate(h) => SHAPE.hosts().into_iter().filter(|o| *o != h).map(|o| (h, o)).collect(),
            Fault::Cut(a, b) | Fault::Hold(a, b) => vec![(a, b)],
        }
    }

    fn key(a: Host, b: Host) -> (String, String) {
        let (a, b) = if a <= b { (a, b) } else { (b, a) };
        (a.to_string(), b.to_string())
    }

    /// Starts (`on`) or ends a failing disk. It ends with the node's
    /// restart: a disk that returned EIO stays out of service until then.
    fn fail_disk(&mut self, sim: &mut turmoil::Sim<'_>, host: Host, failing: Failing, on: bool) {
        let Some(engine) = self.disks.get(host) else {
            return tracing::warn!(%host, "no disk to fail yet");
        };
        if on {
            let on = match failing {
                Failing::Reads => FaultOn::Reads,
                Failing::Writes => FaultOn::Writes,
                Failing::Everything => FaultOn::Everything,
            };
            engine.inject(on, libc::EIO);
        } else {
            engine.inject(FaultOn::Nothing, libc::EIO);
            sim.bounce(host.to_string());
        }
    }

    /// Starts (`on`) or ends `fault`.
    fn apply(&mut self, sim: &mut turmoil::Sim<'_>, fault: Fault, on: bool) {
        tracing::info!(%fault, on, "fault");
        if let (Fault::Rot(h), true) = (fault, on) {
            let disk = hosts::disk_file(&self.root, h);
            match rot::rot(&disk, &mut self.rot) {
                Ok(flipped) if flipped.is_empty() => self.rot_missed += 1,
                Ok(flipped) => tracing::info!(%h, ?flipped, "bits flipped"),
                Err(e) => tracing::warn!(%h, error = %e, "cannot rot the disk"),
            }
            return;
        }
        if let Fault::Eio(h, failing) = fault {
            return self.fail_disk(sim, h, failing, on);
        }
        if let Fault::Crash(h) = fault {
            if on {
                sim.crash(h.to_string());
            } else {
                sim.bounce(h.to_string());
            }
            return;
        }
        let hold = matches!(fault, Fault::Hold(..));
        for (a, b) in Self::pairs(fault) {
            let key = Self::key(a, b);
            let counts = if hold { &mut self.held } else { &mut self.cut };
            let count = counts.entry(key.clone()).or_default();
            // The first fault over a link sets it; the last to end clears it.
            let edge = if on {
                *count += 1;
                *count == 1
            } else {
                *count = count.saturating_sub(1);
                *count == 0
            };
            if *count == 0 {
                counts.remove(&key);
            }
            if edge {
                let (a, b) = (key.0.as_str(), key.1.as_str());
                match (hold, on) {
                    (true, true) => sim.hold(a, b),
                    (true, false) => sim.release(a, b),
                    (false, true) => sim.partition(a, b),
                    (false, false) => sim.repair(a, b),
                }
            }
        }
    }
}

/// The client host: waits for the cluster, makes the volume, runs the
/// workload through the faults and the heal, then reads every block back.
async fn client(seed: u64, options: Options, shared: Arc<Mutex<Shared>>) -> turmoil::Result {
    let metas = hosts::meta_endpoints(SHAPE);
    let meta = MetaClient::new(metas.clone(), &admin())?;
    wait_for_nodes(&meta).await?;
    make_volume(&meta, options.volume_mib).await?;
    let config =
        ClientConfig { deadline: Duration::from_secs(20), call_timeout: Duration::from_secs(2), ..Default::default() };
    let cluster = Cluster::connect(metas, &admin(), config).await?;
    let vol = cluster.open_volume(VOLUME).await?;
    let model = Arc::new(Model::new((options.volume_mib << 20) / BLOCK));
    let stop = Arc::new(AtomicBool::new(false));
    lock(&shared).started = turmoil::sim_elapsed();
    let work = tokio::spawn(workload::run_seeded(vol.clone(), model.clone(), options.writers, stop.clone(), seed));
    tokio::time::sleep(options.window + options.heal).await;
    stop.store(true, Ordering::Relaxed);
    let stats = work.await?;
    let verified = verify(&vol, &model).await;
    lock(&shared).result = Some((stats, verified));
    Ok(())
}

/// Every node registered and up.
async fn wait_for_nodes(meta: &MetaClient) -> anyhow::Result<()> {
    for _ in 0..600 {
        if let Ok(map) = meta.ask(ask::Map).await {
            if map.data_map().nodes.iter().filter(|n| n.up).count() == SHAPE.nodes as usize {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(anyhow!("the storage nodes never all registered"))
}

async fn make_volume(meta: &MetaClient, volume_mib: u64) -> anyhow::Result<()> {
    let pool = order::CreatePool {
        name: POOL.into(),
        class: DeviceClass::Ssd,
        redundancy: Redundancy::Replicated(2),
        pg_count: 8,
        separate_failure_domains: false,
    };
    match meta.order(pool).await {
        Ok(_) | Err(MetaError::AlreadyExists { .. }) => {}
        Err(e) => return Err(e).context("creating the pool"),
    }
    let volume = order::CreateVolume {
        name: VOLUME.into(),
        pool: POOL.into(),
        size_bytes: volume_mib << 20,
        chunk_size_bytes: CHUNK_SIZE,
        wrapped_key: Vec::new(),
    };
    meta.order(volume).await.context("creating the volume")?;
    Ok(())
}

/// The final check. A read that fails outright is retried for a while (a
/// node may still be rejoining); a read that returns what the model
/// forbids is a violation at once.
async fn verify(vol: &chuyi_client::VolumeIo, model: &Model) -> Result<u64, Vec<String>> {
    let mut check = workload::Check::default();
    for _ in 0..10 {
        check = workload::check_all(vol, model).await;
        if !check.violations.is_empty() {
            return Err(check.violations);
        }
        if check.unreadable.is_empty() {
            return Ok(check.verified);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Err(check.unreadable)
}
