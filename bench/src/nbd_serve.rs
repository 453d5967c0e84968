//! `chuyi-bench nbd-serve`: a whole cluster of real processes (chuyi-chaos's
//! harness) with a volume `bench`, filled, served over NBD by an in-process
//! frontend, until SIGINT or SIGTERM: the chuyi side of
//! `bench/nbd-vs-nbdkit.sh`. With `--encrypted`, also `bench-enc`, the same
//! size, SM4-XTS encrypted under a random KEK and filled with ciphertext
//! (`bench/nbd-encrypted.sh` compares the two).

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use chuyi_chaos::cluster::{Spec, TestCluster};
use chuyi_client::Cluster;
use chuyi_common::sm4::{generate_kek_hex, new_wrapped_volume_key, open_volume_key, parse_kek, Sm4Xts};
use chuyi_meta_api::ask;
use chuyi_metadata::state::Request;
use chuyi_nbd::server::{NbdOptions, NbdServer};
use futures::FutureExt;

pub async fn run(nodes: usize, volume_mib: u64, listen: &str, node_unix: bool, encrypted: bool) -> anyhow::Result<()> {
    let spec = Spec {
        nodes,
        disk_mib: (volume_mib * 2 * (1 + u64::from(encrypted)) / nodes as u64 + 256) * 2,
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
    fill(&client, "bench", None).await?;
    let kek = if encrypted {
        let kek = parse_kek(&generate_kek_hex())?;
        let meta = cluster.meta()?;
        let volume = Request::CreateVolume {
            name: "bench-enc".into(),
            pool: chuyi_chaos::cluster::POOL.into(),
            size_bytes: volume_mib << 20,
            chunk_size_bytes: chuyi_common::limits::CHUNK_SIZE_MAX_BYTES as u32,
            wrapped_key: new_wrapped_volume_key(&kek, "bench-enc"),
        };
        meta.write(volume).await.context("creating bench-enc")?;
        let v = meta.ask(ask::Volume("bench-enc".into())).await?;
        let xts = open_volume_key(Some(&kek), "bench-enc", &v.wrapped_key)?;
        fill(&client, "bench-enc", Some(&xts)).await?;
        Some(kek)
    } else {
        None
    };
    let server = NbdServer::with_options(client, "bench-frontend".into(), NbdOptions { kek, ..NbdOptions::default() });
    let serving = match listen.strip_prefix("unix:") {
        Some(path) => {
            let listener = NbdServer::bind_unix(std::path::Path::new(path))?;
            // The line the script waits for.
            println!("READY nbd+unix:///bench?socket={path}");
            server.serve_unix(listener).boxed()
        }
        None => {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            println!("READY nbd://{}/bench", listener.local_addr()?);
            server.serve(listener).boxed()
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        served = serving => served?,
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(cluster);
    Ok(())
}

/// Fills a volume, so reads reach the disks (a never-written chunk reads as
/// zeros without any I/O); enciphered as the frontend would when `xts`.
async fn fill(client: &std::sync::Arc<Cluster>, name: &str, xts: Option<&Sm4Xts>) -> anyhow::Result<()> {
    let vol = client.open_volume(name).await?;
    let piece = 1u64 << 20;
    for i in 0..vol.size() / piece {
        let mut data: Vec<u8> = (0..piece).map(|b| ((b ^ i) as u8) | 1).collect();
        if let Some(xts) = xts {
            chuyi_nbd::crypt::encrypt(xts, i * piece, &mut data);
        }
        vol.write(i * piece, Bytes::from(data), false).await.with_context(|| format!("filling {name}"))?;
    }
    vol.flush().await?;
    Ok(())
}
