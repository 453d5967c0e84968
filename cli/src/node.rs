//! `chuyi node` and the commands that talk to one node.

use std::path::Path;

use anyhow::{bail, Context};
use bytes::Bytes;
use chuyi_common::credential::{Credential, Door, Principal};
use chuyi_common::proto::chunk::{ChunkRequest, ChunkResponse};
use chuyi_common::rpc::{Endpoint, RpcClient, RpcConfig};
use chuyi_common::size::ByteSize;
use chuyi_storage_node::config::NodeConfig;
use chuyi_storage_node::node::Node;

/// Runs a storage node until SIGINT or SIGTERM.
pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let config = NodeConfig::load(config_path)?;
    // The node's own credential (`chuyi credential issue --node ID`), or
    // the cluster secret acting as this node.
    let credential = Credential::load(config.credential_file.as_deref(), Principal::node(config.node_id))?;
    if credential.principal() != &Principal::node(config.node_id) {
        bail!("the credential is for {}; this is node {}", credential.principal(), config.node_id);
    }
    let mut node = Node::start(&config, &credential).await?;
    for endpoint in node.endpoints() {
        // The line tests and scripts wait for: the node is serving.
        tracing::info!(node_id = config.node_id, %endpoint, "storage node listening");
    }
    if let Some(addr) = node.metrics_addr() {
        tracing::info!(node_id = config.node_id, url = %format!("http://{addr}/metrics"), "storage node metrics");
    }
    let links = chuyi_storage_node::heartbeat::start(&mut node, &config, &credential);
    node.serve(shutdown_signal()).await?;
    for task in links {
        task.abort();
    }
    tracing::info!(node_id = config.node_id, "storage node stopped");
    Ok(())
}

pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Prints a node's disks as a table.
pub async fn disks(node: &str, secret_file: Option<&Path>, raw: bool) -> anyhow::Result<()> {
    let endpoint: Endpoint = node.parse().with_context(|| format!("bad node address {node:?}"))?;
    let admin = Credential::load(secret_file, Principal::admin())?.identity(Door::Node);
    let client: RpcClient<ChunkRequest, ChunkResponse> = RpcClient::connect(&endpoint, &admin, RpcConfig::default())
        .await
        .with_context(|| format!("connecting to {node}"))?;
    let (reply, _) = client.call(&ChunkRequest::DiskStats, Bytes::new()).await?;
    let ChunkResponse::Disks { disks } = reply else { bail!("node answered {reply:?}") };
    if raw {
        println!("{disks:#?}");
        return Ok(());
    }
    println!(
        "{:<4} {:<5} {:<7} {:>10} {:>10} {:>8} {:>9} {:<6} PATH",
        "DISK", "CLASS", "STATE", "CAPACITY", "USED", "CHUNKS", "CRC-ERRS", "DIRECT"
    );
    for d in disks {
        println!(
            "{:<4} {:<5} {:<7} {:>10} {:>10} {:>8} {:>9} {:<6} {}",
            d.id,
            d.class.to_string(),
            format!("{:?}", d.state),
            ByteSize(d.capacity_bytes).to_string(),
            ByteSize(d.used_bytes).to_string(),
            d.chunks,
            d.checksum_errors,
            d.direct_io,
            d.path
        );
    }
    Ok(())
}
