//! The software of each simulated host: the same library code the `chuyi
//! meta` and `chuyi node` processes run, on turmoil's network (`sim:`
//! endpoints) and in-memory disks (files under /dev/shm).
//!
//! Each node's disk sits on a fault engine the simulation keeps a handle
//! to ([`Disks`]), so a schedule can make it fail with EIO.
//!
//! A host's function is called again when the simulation restarts it
//! after a crash; what it finds on its disks is what the crashed instance
//! left, as after SIGKILL.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chuyi_common::credential::{Credential, Principal};
use chuyi_metadata::config::MetaConfig;
use chuyi_metadata::raft::Member;
use chuyi_storage_node::config::NodeConfig;
use chuyi_storage_node::io::fault::FaultEngine;
use chuyi_storage_node::io::IoEngine;
use chuyi_storage_node::node::{Node, NodeError};
use chuyi_storage_node::store::{open_disk_wrapped, ChunkStore};

use super::faults::{Host, Shape};
use crate::cluster::secret;

/// The port every member listens on, on its own simulated host.
const META_PORT: u16 = 7000;
/// The port every storage node listens on.
const NODE_PORT: u16 = 7100;
/// A restarted host may find its previous instance's files still held for
/// a moment (RocksDB's lock is released when the last handle drops).
const START_RETRIES: u32 = 50;
const START_RETRY_DELAY: Duration = Duration::from_millis(200);

/// Where a host is reached.
pub fn endpoint(host: Host) -> String {
    match host {
        Host::Meta(_) => format!("sim:{host}:{META_PORT}"),
        Host::Node(_) => format!("sim:{host}:{NODE_PORT}"),
        Host::Client => format!("sim:{host}:0"),
    }
}

/// The disk file of node `host` (a directory disk's one file).
pub fn disk_file(root: &Path, host: Host) -> PathBuf {
    root.join(host.to_string()).join("chuyi-disk.img")
}

pub fn meta_endpoints(shape: Shape) -> Vec<String> {
    (1..=shape.metas).map(|id| endpoint(Host::Meta(id))).collect()
}

/// Writes member `id`'s config under `root`; returns its path.
pub fn meta_config(root: &Path, id: u64, shape: Shape) -> std::io::Result<PathBuf> {
    let founders: String =
        (1..=shape.metas).map(|m| format!("[[member]]\nid = {m}\naddr = \"{}\"\n", endpoint(Host::Meta(m)))).collect();
    let path = root.join(format!("meta{id}.toml"));
    std::fs::write(
        &path,
        format!(
            "id = {id}\nlisten = \"sim:0.0.0.0:{META_PORT}\"\nadvertise = \"{}\"\ndata_dir = \"{}\"\n\
             heartbeat_timeout_ms = 3000\nsnapshot_logs = 500\n\n{founders}",
            endpoint(Host::Meta(id)),
            root.join(format!("meta{id}")).display(),
        ),
    )?;
    Ok(path)
}

/// Writes node `id`'s config under `root`; returns its path. Scrub runs at
/// `scrub_mb_per_s` (0: off).
pub fn node_config(root: &Path, id: u64, shape: Shape, disk_mib: u64, scrub_mb_per_s: u32) -> std::io::Result<PathBuf> {
    let metas = meta_endpoints(shape).iter().map(|e| format!("\"{e}\"")).collect::<Vec<_>>().join(", ");
    let path = root.join(format!("node{id}.toml"));
    std::fs::write(
        &path,
        format!(
            "node_id = {id}\nlisten = \"sim:0.0.0.0:{NODE_PORT}\"\nadvertise = [\"{}\"]\nmeta = [{metas}]\n\
             io_engine = \"inline\"\nscrub_mb_per_s = {scrub_mb_per_s}\n\n\
             [[disk]]\nid = 0\npath = \"{}\"\nclass = \"ssd\"\ncapacity = \"{disk_mib}MiB\"\n",
            endpoint(Host::Node(id)),
            root.join(format!("node{id}")).display(),
        ),
    )?;
    Ok(path)
}

/// A metadata member until the simulation crashes it.
pub async fn member(config: PathBuf) -> turmoil::Result {
    let config = MetaConfig::load(&config)?;
    let member = started(|| Member::start(&config, secret())).await?;
    member.serve(std::future::pending()).await?;
    Ok(())
}

/// What `start` gives once it succeeds, trying again while a restarted
/// host's previous instance still holds its files.
async fn started<T, E, F, Fut>(mut start: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut tries = 0;
    loop {
        match start().await {
            Ok(started) => return Ok(started),
            Err(e) if tries < START_RETRIES => {
                tries += 1;
                tracing::debug!(error = %e, "start failed; retrying");
                tokio::time::sleep(START_RETRY_DELAY).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The fault engine under each running node's disk, replaced when the
/// node restarts.
#[derive(Clone, Default)]
pub struct Disks(Arc<Mutex<HashMap<Host, Arc<FaultEngine>>>>);

impl Disks {
    /// The engine under `host`'s disk, once the node has opened it.
    pub fn get(&self, host: Host) -> Option<Arc<FaultEngine>> {
        self.lock().get(&host).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Host, Arc<FaultEngine>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens `config`'s disks on fault engines registered as `host`'s.
    async fn open(&self, host: Host, config: &NodeConfig) -> Result<ChunkStore, NodeError> {
        let mut disks = Vec::new();
        for spec in config.disk_specs() {
            let wrap = |engine: Arc<dyn IoEngine>| -> Arc<dyn IoEngine> {
                let faulty = Arc::new(FaultEngine::new(engine));
                self.lock().insert(host, faulty.clone());
                faulty
            };
            disks.push(open_disk_wrapped(&spec, wrap).await?);
        }
        Ok(ChunkStore::from_disks(disks))
    }
}

/// A storage node and its links to the metadata service until the
/// simulation crashes it; its disk on a fault engine registered in `disks`.
pub async fn node(config: PathBuf, host: Host, disks: Disks) -> turmoil::Result {
    let config = NodeConfig::load(&config)?;
    let credential = Credential::issue(&secret(), Principal::node(u64::from(config.node_id)))?;
    let start = || async { Node::start_on(&config, &credential, disks.open(host, &config).await?).await };
    let mut node = started(start).await?;
    let links = chuyi_storage_node::heartbeat::start(&mut node, &config, &credential);
    let served = node.serve(std::future::pending()).await;
    for link in links {
        link.abort();
    }
    served?;
    Ok(())
}
