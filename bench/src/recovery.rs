//! Failure and recovery figures on a real multi-process cluster (started by
//! chuyi-chaos's harness): the client I/O stall when a node dies, the
//! resync of a returning node, and the backfill and time to full redundancy
//! after losing one of N nodes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use bytes::Bytes;
use chuyi_chaos::cluster::{admin, is_clean, Spec, TestCluster};
use chuyi_chaos::workload::{self, Model};
use chuyi_client::VolumeIo;
use chuyi_common::ids::NodeId;
use chuyi_metadata::client::MetaClient;
use chuyi_metadata::proto::{ApiReply, Query};
use serde::Serialize;

#[derive(Clone, Debug)]
pub struct RecoverySpec {
    pub nodes: usize,
    pub volume_mib: u64,
    /// Written while the node is away (the resync's work).
    pub degraded_write_mib: u64,
    pub heartbeat_timeout_ms: u64,
    pub recovery_mb_per_s: u32,
}

#[derive(Debug, Default, Serialize)]
pub struct RecoveryReport {
    pub nodes: usize,
    pub volume_mib: u64,
    pub heartbeat_timeout_ms: u64,
    pub recovery_mb_per_s: u32,
    /// The slowest acknowledged write under load while the node died.
    pub stall_ms: u128,
    /// Kill to "marked down" in the map.
    pub detect_ms: u128,
    /// Kill to every PG with two complete replicas again.
    pub full_redundancy_ms: u128,
    /// Bytes the survivors backfilled to new replicas, and their rate.
    pub backfill_bytes: u64,
    pub backfill_mb_per_s: f64,
    /// Restart of the victim to "up" in the map (after its penalty, if a
    /// peer reported it), then up to clean, and the bytes sent meanwhile.
    pub rejoin_ms: u128,
    pub resync_ms: u128,
    pub resync_bytes: u64,
    pub degraded_written_bytes: u64,
}

async fn backfilled(cluster: &TestCluster, nodes: &[NodeId]) -> u64 {
    let mut total = 0;
    for &n in nodes {
        if let Ok(r) = cluster.node_report(n).await {
            total += r.backfill_bytes;
        }
    }
    total
}

/// The first bytes of the volume belong to the verifying workload's model.
const MODEL_BYTES: u64 = 16 << 20;

async fn fill(vol: &VolumeIo) -> anyhow::Result<()> {
    let piece = 1u64 << 20;
    let mut offset = MODEL_BYTES;
    while offset < vol.size() {
        let data: Vec<u8> = (0..piece).map(|i| ((offset + i) % 251) as u8 | 1).collect();
        vol.write(offset, Bytes::from(data), false).await?;
        offset += piece;
    }
    vol.flush().await?;
    Ok(())
}

/// Writes `mib` of fresh 1 MiB pieces after the model's blocks.
async fn overwrite(vol: &VolumeIo, mib: u64, stamp: u8) -> anyhow::Result<u64> {
    let piece = 1u64 << 20;
    for i in 0..mib.min((vol.size() - MODEL_BYTES) / piece) {
        vol.write(MODEL_BYTES + i * piece, Bytes::from(vec![stamp; piece as usize]), false).await?;
    }
    Ok(mib * piece)
}

/// Polls the map from the kill on: when the victim is marked down, and when
/// every PG is clean again without it (`None` when it cannot be: two nodes).
async fn watch_failover(meta: Vec<String>, victim: NodeId, killed: Instant) -> (Duration, Option<Duration>) {
    let Ok(client) = MetaClient::new(meta, &admin()) else { return (Duration::MAX, None) };
    let mut detected = None;
    loop {
        if let Ok(ApiReply::Map(map)) = client.read(Query::Map).await {
            let map = map.data_map();
            let down = map.node(victim).is_some_and(|n| !n.up);
            if down && detected.is_none() {
                detected = Some(killed.elapsed());
            }
            let survivors = map.nodes.iter().filter(|n| n.up).count();
            if let Some(d) = detected {
                if survivors < 2 {
                    return (d, None);
                }
                if is_clean(&map) {
                    return (d, Some(killed.elapsed()));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn run(spec: RecoverySpec) -> anyhow::Result<RecoveryReport> {
    let disk_mib = (spec.volume_mib * 2 / spec.nodes as u64 + 64).max(256) * 2;
    let cluster_spec = Spec {
        nodes: spec.nodes,
        disk_mib,
        heartbeat_timeout_ms: spec.heartbeat_timeout_ms,
        recovery_mb_per_s: spec.recovery_mb_per_s,
        pg_count: 32,
        ..Spec::default()
    };
    let mut cluster = TestCluster::start(cluster_spec).await?;
    cluster.create_volume("bench", spec.volume_mib).await?;
    cluster.wait_clean(Duration::from_secs(60)).await?;
    let client = cluster.client(Duration::from_secs(120)).await?;
    let vol = client.open_volume("bench").await?;
    fill(&vol).await.context("filling the volume")?;
    let all: Vec<NodeId> = (1..=spec.nodes as NodeId).collect();
    let mut report = RecoveryReport {
        nodes: spec.nodes,
        volume_mib: spec.volume_mib,
        heartbeat_timeout_ms: spec.heartbeat_timeout_ms,
        recovery_mb_per_s: spec.recovery_mb_per_s,
        ..RecoveryReport::default()
    };

    // A light verifying load over the first 16 MiB while the node dies.
    let model = Arc::new(Model::new(MODEL_BYTES / workload::BLOCK));
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(workload::run(vol.clone(), model.clone(), 4, stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let victim: NodeId = 1;
    let before = backfilled(&cluster, &all).await;
    cluster.kill_node(victim)?;
    let killed = Instant::now();
    let timeline = tokio::spawn(watch_failover(cluster.meta_addrs(), victim, killed));
    tokio::time::sleep(Duration::from_millis(spec.heartbeat_timeout_ms + 2000)).await;
    stop.store(true, Ordering::Relaxed);
    let stats = load.await?;
    ensure!(stats.violations.is_empty(), "lost writes: {:?}", stats.violations.first());
    report.stall_ms = stats.max_write_latency.as_millis();

    // While degraded (or backfilling), rewrite part of the volume.
    report.degraded_written_bytes = overwrite(&vol, spec.degraded_write_mib, 0xA5).await?;
    let survivors: Vec<NodeId> = all.iter().copied().filter(|&n| n != victim).collect();
    let (detected, clean) = tokio::time::timeout(Duration::from_secs(600), timeline).await??;
    report.detect_ms = detected.as_millis();
    if spec.nodes > 2 {
        report.full_redundancy_ms = clean.context("never clean")?.as_millis();
        report.backfill_bytes = backfilled(&cluster, &survivors).await - before;
        let backfill_s = (report.full_redundancy_ms - report.detect_ms) as f64 / 1000.0;
        report.backfill_mb_per_s = report.backfill_bytes as f64 / 1e6 / backfill_s.max(0.001);
    }
    if spec.nodes == 2 {
        // The PGs ran degraded on the survivor; the victim's return makes
        // it a recovering replica of all of them in the same map change,
        // and the resync sends only what changed.
        let before_resync = backfilled(&cluster, &survivors).await;
        cluster.restart_node(victim)?;
        // Up once registered, or once its penalty ends if a peer reported
        // it unreachable; then the resync proper.
        report.rejoin_ms = cluster.wait_node(victim, true, Duration::from_secs(120)).await?.as_millis();
        let rejoined = Instant::now();
        cluster.wait_clean(Duration::from_secs(600)).await?;
        report.resync_ms = rejoined.elapsed().as_millis();
        report.resync_bytes = backfilled(&cluster, &survivors).await - before_resync;
        report.full_redundancy_ms = killed.elapsed().as_millis();
    }
    workload::verify_all(&vol, &model).await.map_err(|v| anyhow::anyhow!("after recovery: {}", v[0]))?;
    Ok(report)
}
