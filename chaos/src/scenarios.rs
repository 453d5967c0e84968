//! The fault scenarios. Each starts its own cluster, runs the verifying
//! workload, injects its fault, lets the cluster heal, and then checks:
//! no violation seen by any read, every block reads as the model allows,
//! and the two replicas of every chunk hold the same bytes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use chuyi_client::{ClientError, VolumeIo};
use chuyi_common::ids::{ChunkId, NodeId};
use chuyi_common::map::{owner_id, DataMap};
use chuyi_common::proto::chunk::{ChunkErrorKind, ChunkRequest, ChunkResponse, PgOp};

use crate::cluster::{find_block, overwrite, Spec, TestCluster, CHUNK_SIZE};
use crate::workload::{self, Model, Stats, BLOCK};

/// How long after the PGs are clean the copies of every chunk may still
/// differ (a failed write's chunk waits for the primary's recovery loop).
const REPLICAS_CONVERGE: Duration = Duration::from_secs(10);

/// How hard a scenario runs.
#[derive(Clone, Copy, Debug)]
pub struct Intensity {
    /// Workload time before the fault and after the heal.
    pub settle: Duration,
    pub writers: usize,
    pub volume_mib: u64,
}

impl Intensity {
    pub fn short() -> Self {
        Self { settle: Duration::from_millis(1500), writers: 8, volume_mib: 64 }
    }

    pub fn long() -> Self {
        Self { settle: Duration::from_secs(10), writers: 16, volume_mib: 256 }
    }
}

pub type Scenario =
    fn(Intensity) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<String>> + Send>>;

/// Every scenario by name, in the order `make chaos` runs them.
pub fn all() -> Vec<(&'static str, Scenario)> {
    vec![
        ("node-kill", |i| Box::pin(node_kill(i))),
        ("meta-leader-kill", |i| Box::pin(meta_leader_kill(i))),
        ("node-freeze", |i| Box::pin(node_freeze(i))),
        ("bitflip", |i| Box::pin(bitflip(i))),
        ("disk-full", |i| Box::pin(disk_full(i))),
        ("net-cut", |i| Box::pin(net_cut(i))),
        ("frontend-freeze", |i| Box::pin(frontend_freeze(i))),
    ]
}

/// A `chuyi nbd` frontend frozen with fio's 4 MiB writes in flight until
/// its lease runs out; a second frontend overwrites the volume; the first
/// resumes. No write of the first may land after the second's
/// acknowledged ones: every block holds the second's data on both
/// replicas, and the nodes refuse the first's token outright.
async fn frontend_freeze(intensity: Intensity) -> anyhow::Result<String> {
    use crate::frontend::{stale_writer_rounds, Loss};
    let cluster = TestCluster::start(Spec::default()).await?;
    cluster.create_volume(VOLUME, intensity.volume_mib).await?;
    cluster.wait_clean(Duration::from_secs(30)).await?;
    let rounds = if intensity.settle >= Duration::from_secs(5) { 12 } else { 6 };
    let (line, _) = stale_writer_rounds(&cluster, VOLUME, intensity.volume_mib, rounds, Loss::Freeze).await?;
    Ok(line)
}

const VOLUME: &str = "chaos";

/// A cluster with a clean pool, a volume open through a client, and the
/// workload running on it.
struct Run {
    cluster: TestCluster,
    vol: VolumeIo,
    model: Arc<Model>,
    stop: Arc<AtomicBool>,
    workload: tokio::task::JoinHandle<Stats>,
}

impl Run {
    async fn start(spec: Spec, intensity: Intensity) -> anyhow::Result<Self> {
        let cluster = TestCluster::start(spec).await?;
        cluster.create_volume(VOLUME, intensity.volume_mib).await?;
        cluster.wait_clean(Duration::from_secs(30)).await?;
        let client = cluster.client(Duration::from_secs(60)).await?;
        let vol = client.open_volume(VOLUME).await?;
        let model = Arc::new(Model::new((intensity.volume_mib << 20) / BLOCK));
        let stop = Arc::new(AtomicBool::new(false));
        let workload = tokio::spawn(workload::run(vol.clone(), model.clone(), intensity.writers, stop.clone()));
        Ok(Self { cluster, vol, model, stop, workload })
    }

    /// Stops the workload and runs every check; returns the workload's
    /// figures.
    async fn finish(self) -> anyhow::Result<(TestCluster, Stats)> {
        self.stop.store(true, Ordering::Relaxed);
        let stats = self.workload.await.context("workload task")?;
        if let Some(v) = stats.violations.first() {
            bail!("{} reads broke the contract; first: {v}", stats.violations.len());
        }
        ensure!(stats.acked_writes > 0, "the workload acknowledged no write");
        let checked = workload::verify_all(&self.vol, &self.model)
            .await
            .map_err(|v| anyhow::anyhow!("{} blocks lost or wrong after the run; first: {}", v.len(), v[0]))?;
        let map = self.cluster.wait_clean(Duration::from_secs(90)).await?;
        let chunks = self.vol.size() / u64::from(CHUNK_SIZE);
        // A write that failed on one copy is copied over by the primary's
        // recovery loop after the fact (PROTOCOL.md 5.1): the copies must
        // become equal soon, not at the instant the PGs are clean.
        let start = Instant::now();
        loop {
            match compare_replicas(&self.cluster, &map, self.vol.volume().id, chunks).await {
                Ok(()) => break,
                Err(e) if start.elapsed() < REPLICAS_CONVERGE => {
                    tracing::info!(error = %e, "replicas not equal yet");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e.context(format!("still after {REPLICAS_CONVERGE:?}"))),
            }
        }
        // Copies left behind by PG moves are deleted once the PG is clean.
        let start = Instant::now();
        loop {
            let strays = self.cluster.stray_chunks().await?;
            if strays.is_empty() {
                break;
            }
            ensure!(start.elapsed() < Duration::from_secs(30), "copies never reclaimed: {strays:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tracing::info!(checked, "verified");
        Ok((self.cluster, stats))
    }
}

/// Reads every chunk of the volume from each replica directly and requires
/// the same bytes.
pub async fn compare_replicas(cluster: &TestCluster, map: &DataMap, owner: u64, chunks: u64) -> anyhow::Result<()> {
    for index in 0..chunks {
        let chunk = ChunkId::new(owner, index);
        let Some((pg, pg_map)) = map.locate(chunk) else { bail!("chunk {chunk} has no PG") };
        let mut copies = Vec::new();
        for &replica in &pg_map.replicas {
            copies.push((replica, cluster.read_replica(replica, chunk).await?));
        }
        ensure!(copies.len() == 2, "PG {pg} has {} replicas", copies.len());
        if copies[0].1 != copies[1].1 {
            let at = copies[0].1.iter().zip(copies[1].1.iter()).position(|(a, b)| a != b).unwrap_or(0);
            bail!("chunk {chunk}: replicas {:?} and {:?} differ from byte {at}", copies[0].0, copies[1].0);
        }
    }
    Ok(())
}

fn summary(stats: &Stats, extra: &str) -> String {
    format!(
        "{} acked writes, {} reads checked, {} write errors, longest write {} ms{extra}",
        stats.acked_writes,
        stats.reads_checked,
        stats.failed_writes,
        stats.max_write_latency.as_millis()
    )
}

/// The primary of the volume's first chunk: the node whose loss hurts.
fn a_primary(map: &DataMap, owner: u64) -> anyhow::Result<NodeId> {
    map.locate(ChunkId::new(owner, 0))
        .and_then(|(_, pg)| pg.primary())
        .map(|r| r.node)
        .context("chunk 0 has no primary")
}

/// SIGKILL a storage node under load; restart it later. The survivor
/// serves, a third node takes over the replicas, the victim is resynced.
pub async fn node_kill(intensity: Intensity) -> anyhow::Result<String> {
    let mut run = Run::start(Spec::default(), intensity).await?;
    tokio::time::sleep(intensity.settle).await;
    let victim = a_primary(&run.cluster.map().await?, run.vol.volume().id)?;
    run.cluster.kill_node(victim)?;
    let down_after = run.cluster.wait_node(victim, false, Duration::from_secs(30)).await?;
    tokio::time::sleep(intensity.settle).await;
    run.cluster.restart_node(victim)?;
    let restarted = Instant::now();
    // Back, given PGs again (as recovering replicas, then backfilled or
    // resynced), and every PG clean.
    run.cluster
        .wait_map(Duration::from_secs(90), "the victim back with PGs, all clean", |m| {
            m.node(victim).is_some_and(|n| n.up)
                && crate::cluster::is_clean(m)
                && m.pgs().any(|(_, pg)| pg.replicas.iter().any(|r| r.node == victim))
        })
        .await?;
    let clean_after = restarted.elapsed();
    tokio::time::sleep(intensity.settle).await;
    let (_, stats) = run.finish().await?;
    Ok(summary(
        &stats,
        &format!(
            ", node {victim} marked down after {} ms, clean {} ms after restart",
            down_after.as_millis(),
            clean_after.as_millis()
        ),
    ))
}

/// SIGKILL the metadata leader of three: the data path does not notice;
/// a new leader takes over; the old one rejoins.
pub async fn meta_leader_kill(intensity: Intensity) -> anyhow::Result<String> {
    let spec = Spec { metas: 3, ..Spec::default() };
    let mut run = Run::start(spec, intensity).await?;
    tokio::time::sleep(intensity.settle).await;
    let leader = run.cluster.meta_leader().await?;
    run.cluster.kill_meta(leader)?;
    tokio::time::sleep(intensity.settle).await;
    // The group still commits: a second volume can be made.
    run.cluster.create_volume("after-leader-kill", 16).await?;
    let new_leader = run.cluster.meta_leader().await?;
    ensure!(new_leader != leader, "member {leader} was killed but is still named leader");
    run.cluster.restart_meta(leader)?;
    tokio::time::sleep(intensity.settle).await;
    let (_, stats) = run.finish().await?;
    Ok(summary(&stats, &format!(", leader {leader} killed, {new_leader} took over")))
}

/// SIGSTOP a storage node past the heartbeat timeout, then SIGCONT: it must
/// not get a write acknowledged under its old epoch.
pub async fn node_freeze(intensity: Intensity) -> anyhow::Result<String> {
    let mut run = Run::start(Spec::default(), intensity).await?;
    tokio::time::sleep(intensity.settle).await;
    let owner = run.vol.volume().id;
    let before = run.cluster.map().await?;
    let victim = a_primary(&before, owner)?;
    let chunk = ChunkId::new(owner, 0);
    let old_epoch = before.locate(chunk).map(|(_, pg)| pg.epoch).context("chunk 0 PG")?;
    run.cluster.freeze_node(victim)?;
    run.cluster
        .wait_map(Duration::from_secs(30), "the frozen node's PGs moved", |m| {
            m.locate(chunk)
                .is_some_and(|(_, pg)| pg.epoch > old_epoch && pg.primary().is_some_and(|p| p.node != victim))
        })
        .await?;
    // Let the new primary take some writes, then wake the old one and at
    // once send it a write under the epoch it last knew.
    tokio::time::sleep(intensity.settle).await;
    run.cluster.thaw_node(victim)?;
    let fenced = ChunkRequest::Pg {
        chunk,
        epoch: old_epoch,
        op: PgOp::Write { offset: 0, fua: true, snap: 0 },
        forwarded: false,
        fence: None,
        order: None,
    };
    let rpc = run.cluster.node_rpc(victim).await?;
    let stale = Bytes::from(vec![0xEEu8; BLOCK as usize]);
    match rpc.call(&fenced, stale).await? {
        (ChunkResponse::Error(e), _) => {
            ensure!(
                matches!(
                    e.kind,
                    ChunkErrorKind::StaleEpoch | ChunkErrorKind::WrongNode | ChunkErrorKind::ReplicaFailed
                ),
                "the old primary refused, but with {e}"
            );
        }
        (other, _) => bail!("the old primary accepted a write under epoch {old_epoch}: {other:?}"),
    }
    tokio::time::sleep(intensity.settle).await;
    let (_, stats) = run.finish().await?;
    Ok(summary(&stats, &format!(", node {victim} frozen; its old-epoch write was refused")))
}

/// Flip a bit in one replica's copy of a block: reads stay right (served by,
/// or repaired from, the other replica) and scrub repairs the copy.
pub async fn bitflip(intensity: Intensity) -> anyhow::Result<String> {
    let spec = Spec { scrub_mb_per_s: 500, ..Spec::default() };
    let run = Run::start(spec, intensity).await?;
    tokio::time::sleep(intensity.settle).await;
    // A block outside the workload's range would be simpler, but the
    // workload covers the volume: use a second volume.
    run.cluster.create_volume("flip", 16).await?;
    let client = run.cluster.client(Duration::from_secs(30)).await?;
    let vol = client.open_volume("flip").await?;
    let pattern = workload::content(0xF11F, 1);
    vol.write(BLOCK * 3, pattern.clone(), true).await?;
    let chunk = ChunkId::new(vol.volume().id, 0);
    let map = run.cluster.map().await?;
    let (_, pg) = map.locate(chunk).context("flip chunk PG")?;
    let target = pg.replicas[1];
    let file = run.cluster.disk_file(target.node)?;
    let at = find_block(&file, &pattern)?.with_context(|| format!("pattern not found in {}", file.display()))?;
    flip_bit(&file, at + 100)?;
    // Reads through the client stay right, whichever replica serves them.
    for _ in 0..4 {
        ensure!(vol.read(BLOCK * 3, BLOCK).await? == pattern, "a read returned the flipped block");
    }
    // Scrub (or read repair) fixes the bad copy in place.
    let start = Instant::now();
    loop {
        if let Ok(data) = run.cluster.read_replica(target, chunk).await {
            if data.slice(3 * BLOCK as usize..4 * BLOCK as usize) == pattern {
                break;
            }
        }
        ensure!(start.elapsed() < Duration::from_secs(60), "the flipped block was not repaired within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A bad block on the primary, which serves the reads: the read itself
    // finds it, repairs it from the secondary, and answers right.
    let primary = pg.replicas[0];
    let second = workload::content(0xF11F, 2);
    vol.write(BLOCK * 5, second.clone(), true).await?;
    let file = run.cluster.disk_file(primary.node)?;
    let at = find_block(&file, &second)?.with_context(|| format!("pattern not found in {}", file.display()))?;
    flip_bit(&file, at + 7)?;
    ensure!(vol.read(BLOCK * 5, BLOCK).await? == second, "a read returned the primary's flipped block");
    let fixed = run.cluster.read_replica(primary, chunk).await?;
    ensure!(
        fixed.slice(5 * BLOCK as usize..6 * BLOCK as usize) == second,
        "the read did not repair the primary's copy"
    );
    let primary_report = run.cluster.node_report(primary.node).await?;
    ensure!(primary_report.scrub.repairs >= 1, "the read repair was not counted: {:?}", primary_report.scrub);
    let report = run.cluster.node_report(target.node).await?;
    ensure!(report.scrub.errors >= 1 && report.scrub.repairs >= 1, "no error or repair counted: {:?}", report.scrub);
    let repaired_after = start.elapsed();
    let (_, stats) = run.finish().await?;
    Ok(summary(
        &stats,
        &format!(
            ", flipped a bit on node {}; repaired in {} ms (errors {}, repairs {})",
            target.node,
            repaired_after.as_millis(),
            report.scrub.errors,
            report.scrub.repairs
        ),
    ))
}

/// Fill the disks: writes to new chunks get a clear "no space" error,
/// writes into existing chunks go on, nothing acknowledged is lost, and
/// space comes back when the filler is deleted.
pub async fn disk_full(intensity: Intensity) -> anyhow::Result<String> {
    let spec = Spec { disk_mib: 128, ..Spec::default() };
    let intensity = Intensity { volume_mib: 32, ..intensity };
    let run = Run::start(spec, intensity).await?;
    // Every chunk of the volume exists before the disks fill.
    let client = run.cluster.client(Duration::from_secs(30)).await?;
    let pool = run.cluster.map().await?.pools.first().map(|p| p.id).context("no pool")?;
    let filler = owner_id(pool, (1 << 39) + 7);
    let mut written = Vec::new();
    let full = loop {
        let chunk = ChunkId::new(filler, written.len() as u64);
        match client.write_chunk(chunk, 0, workload::content(chunk.index, 1), false).await {
            Ok(()) => written.push(chunk),
            Err(ClientError::Chunk { error, .. }) if error.kind == ChunkErrorKind::NoSpace => break error,
            Err(e) => bail!("filling: expected a no-space error, got {e}"),
        }
        ensure!(written.len() < 10_000, "the disks never filled");
    };
    tokio::time::sleep(intensity.settle).await;
    for chunk in &written {
        client.delete_chunk(*chunk, None).await?;
    }
    // The write that failed may have landed on one copy only; once there
    // is room, the primary copies it over and the two agree again.
    let failed = ChunkId::new(filler, written.len() as u64);
    let start = Instant::now();
    loop {
        let map = run.cluster.map().await?;
        let (_, pg) = map.locate(failed).context("failed chunk PG")?;
        let a = run.cluster.read_replica(pg.replicas[0], failed).await?;
        let b = run.cluster.read_replica(pg.replicas[1], failed).await?;
        if a == b {
            break;
        }
        ensure!(start.elapsed() < Duration::from_secs(30), "the copies of the failed write never agreed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Space is back.
    client.write_chunk(ChunkId::new(filler, 0), 0, workload::content(0, 2), false).await?;
    client.delete_chunk(ChunkId::new(filler, 0), None).await?;
    let (_, stats) = run.finish().await?;
    Ok(summary(&stats, &format!(", disks full after {} filler chunks: {}", written.len(), full.message)))
}

/// Cut a storage node off from its peers (not from the metadata service,
/// where it keeps heartbeating, nor from the client): the primaries that
/// cannot forward to it report it, it is marked down and its PGs move;
/// healed, it comes back after its penalty and is resynced.
pub async fn net_cut(intensity: Intensity) -> anyhow::Result<String> {
    let spec = Spec { proxied: true, ..Spec::default() };
    let run = Run::start(spec, intensity).await?;
    tokio::time::sleep(intensity.settle).await;
    let map = run.cluster.map().await?;
    let (_, pg) = map.locate(ChunkId::new(run.vol.volume().id, 0)).context("chunk 0 PG")?;
    let victim = pg.replicas.get(1).context("chunk 0 has no secondary")?.node;
    run.cluster.cut_node(victim)?;
    let down_after = run.cluster.wait_node(victim, false, Duration::from_secs(60)).await?;
    tokio::time::sleep(intensity.settle).await;
    run.cluster.heal_node(victim)?;
    let up_after = run.cluster.wait_node(victim, true, Duration::from_secs(60)).await?;
    tokio::time::sleep(intensity.settle).await;
    let (_, stats) = run.finish().await?;
    Ok(summary(
        &stats,
        &format!(
            ", node {victim} cut off: reported down after {} ms, back {} ms after the heal",
            down_after.as_millis(),
            up_after.as_millis()
        ),
    ))
}

fn flip_bit(file: &std::path::Path, at: u64) -> anyhow::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut byte = [0u8; 1];
    std::fs::File::open(file)?.read_exact_at(&mut byte, at)?;
    byte[0] ^= 0x10;
    overwrite(file, at, &byte)
}
