//! Fencing at the storage nodes, with real processes: a frontend cut off
//! from the metadata service while fio has its 4 MiB writes in flight stops
//! before its lease runs out, a newer frontend overwrites the volume, and
//! nothing of the old one lands afterwards; the nodes go on refusing the
//! old frontend's token after the primary is SIGKILLed and restarted (the
//! fence table is on disk), and a node whose table is lost refuses to start. The frozen-frontend form is the chaos scenario
//! `frontend-freeze` (tests/scenarios.rs).

use std::time::Duration;

use bytes::Bytes;
use chuyi_chaos::cluster::{eventually, Spec, TestCluster};
use chuyi_chaos::frontend::{check_old_tokens_refused, stale_writer_rounds, volume_record, Loss};
use chuyi_common::ids::ChunkId;
use chuyi_common::proto::chunk::{ChunkRequest, ChunkResponse};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frontend_cut_from_the_metadata_service_never_writes_after_the_next_one() {
    let mut cluster = TestCluster::start(Spec::default()).await.expect("cluster");
    cluster.create_volume("vol0", 64).await.expect("volume");
    cluster.wait_clean(Duration::from_secs(30)).await.expect("clean");
    let (line, tokens) =
        stale_writer_rounds(&cluster, "vol0", 64, 2, Loss::MetaCut).await.unwrap_or_else(|e| panic!("{e:#}"));
    println!("{line}");

    // The fence survives a restart of the node that holds it.
    let map = cluster.map().await.expect("map");
    let owner = volume_record(&cluster, "vol0").await.expect("volume").id;
    let primary = map.locate(ChunkId::new(owner, 0)).and_then(|(_, pg)| pg.primary()).expect("a primary").node;
    cluster.kill_node(primary).expect("kill");
    cluster.restart_node(primary).expect("restart");
    cluster.wait_node(primary, true, Duration::from_secs(30)).await.expect("back up");
    cluster.wait_clean(Duration::from_secs(60)).await.expect("clean");
    let ping = ChunkRequest::Ping;
    eventually(Duration::from_secs(30), "the restarted node to answer", || async {
        let rpc = cluster.node_rpc(primary).await.ok()?;
        matches!(rpc.call(&ping, Bytes::new()).await, Ok((ChunkResponse::Pong { .. }, _))).then_some(())
    })
    .await;
    let refused = check_old_tokens_refused(&cluster, "vol0", &tokens).await.unwrap_or_else(|e| panic!("{e:#}"));
    println!("after node {primary} restarted: {refused}");

    // Without its fence table, a node whose disks hold chunks refuses to
    // start (read as empty, it would take the old tokens again); with the
    // table put back, it starts and still refuses them.
    let table = cluster.disk_file(primary).expect("disk").with_file_name("chuyi-fences");
    cluster.kill_node(primary).expect("kill");
    let kept = std::fs::read(&table).expect("the fence table");
    std::fs::remove_file(&table).expect("lose it");
    cluster.restart_node(primary).expect("restart");
    let log = cluster.nodes.iter().find(|n| n.id == u64::from(primary)).expect("node").log.clone();
    eventually(Duration::from_secs(20), "the node refusing to start without its fence table", || async {
        std::fs::read_to_string(&log).ok()?.contains("is missing but the disks hold chunks").then_some(())
    })
    .await;
    assert!(!table.exists(), "no empty table was made in its place");
    std::fs::write(&table, kept).expect("put back");
    cluster.restart_node(primary).expect("restart");
    cluster.wait_node(primary, true, Duration::from_secs(30)).await.expect("back up");
    cluster.wait_clean(Duration::from_secs(60)).await.expect("clean");
    eventually(Duration::from_secs(30), "the restarted node to answer", || async {
        let rpc = cluster.node_rpc(primary).await.ok()?;
        matches!(rpc.call(&ChunkRequest::Ping, Bytes::new()).await, Ok((ChunkResponse::Pong { .. }, _))).then_some(())
    })
    .await;
    let refused = check_old_tokens_refused(&cluster, "vol0", &tokens).await.unwrap_or_else(|e| panic!("{e:#}"));
    println!("with its table put back: {refused}");
}
