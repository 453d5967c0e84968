//! `chuyi-bench nbd-serve`: a whole cluster of real processes (chuyi-chaos's
//! harness) with one volume, filled, served over NBD by an in-process
//! frontend, until SIGINT or SIGTERM: the chuyi side of
//! `bench/nbd-vs-nbdkit.sh`.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use chuyi_chaos::cluster::{Spec, TestCluster};
use chuyi_nbd::server::NbdServer;

pub async fn run(nodes: usize, volume_mib: u64, listen: &str, node_unix: bool) -> anyhow::Result<()> {
    let spec = Spec {
        nodes,
        disk_mib: (volume_mib * 2 / nodes as u64 + 256) * 2,
        heartbeat_timeout_ms: 5000,
        pg_count: 64,
        ..Spec::default()
    };
    let cluster = TestCluster::start(spec).await?;
    cluster.create_volume("bench", volume_mib).await?;
    cluster.wait_clean(Duration::from_secs(60)).await?;
    let client = if node_unix {
        cluster.local_client(Duration::from_secs(60)).await?
    } else {
        cluster.client(Duration::from_secs(60)).await?
    };
    let vol = client.open_volume("bench").await?;
    // Filled first: a never-written chunk reads as zeros without any I/O.
    let piece = 1u64 << 20;
    for i in 0..vol.size() / piece {
        let data: Vec<u8> = (0..piece).map(|b| ((b ^ i) as u8) | 1).collect();
        vol.write(i * piece, Bytes::from(data), false).await.context("filling")?;
    }
    vol.flush().await?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    // The line the script waits for.
    println!("READY nbd://{addr}/bench");
    let server = NbdServer::new(client, "bench-frontend".into());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        served = server.serve(listener) => served?,
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(cluster);
    Ok(())
}
