//! A storage node's link to the metadata service, through its API crate
//! (`chuyi-meta-api`; the node links no RocksDB and no Raft): register
//! once, then heartbeat with the disks' stats every second; follow the map
//! and hand each new one to the node; report finished backfills and peers
//! it cannot reach.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chuyi_common::clock::{self, Instant};
use chuyi_common::credential::Credential;
use chuyi_common::proto::chunk::{DiskStat, DiskState as ChunkDiskState};
use chuyi_meta_api::client::MetaClient;
use chuyi_meta_api::model::{DiskRecord, DiskState};
use chuyi_meta_api::placement::DiskRef;
use chuyi_meta_api::Request;

use crate::config::NodeConfig;
use crate::node::Node;
use crate::recovery::Recovered;
use crate::replication::Replicator;
use crate::store::ChunkStore;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Heartbeat period; the service marks a node down after missing several.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

fn records(stats: Vec<DiskStat>) -> Vec<DiskRecord> {
    stats
        .into_iter()
        .map(|d| DiskRecord {
            id: d.id,
            class: d.class,
            capacity_bytes: d.capacity_bytes,
            used_bytes: d.used_bytes,
            state: match d.state {
                ChunkDiskState::Up => DiskState::Up,
                ChunkDiskState::Failed => DiskState::Failed,
            },
        })
        .collect()
}

/// A peer failing every data-path call this long is reported to the
/// metadata service, which marks it down even though it heartbeats.
const REPORT_UNREACHABLE_AFTER: Duration = Duration::from_secs(3);
/// One report per peer per this long.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Starts the node's links to the metadata service of `config.meta` (none
/// when it names no member): heartbeats, the map, finished backfills. The
/// node is advertised at `config.advertise`, or else at its listeners
/// other than Unix sockets. The tasks run until aborted.
pub fn start(node: &mut Node, config: &NodeConfig, credential: &Credential) -> Vec<JoinHandle<()>> {
    if config.meta.is_empty() {
        return Vec::new();
    }
    let advertise = if config.advertise.is_empty() {
        node.endpoints().iter().map(ToString::to_string).filter(|e| !e.starts_with("unix:")).collect()
    } else {
        config.advertise.clone()
    };
    let meta = config.meta.clone();
    let mut links = vec![
        tokio::spawn(run(config.clone(), advertise, node.store(), node.map_sink(), credential.clone())),
        tokio::spawn(follow_map(meta.clone(), credential.clone(), node.map_sink())),
    ];
    if let Some(done) = node.take_recovered() {
        links.push(tokio::spawn(report_recovered(meta, credential.clone(), done)));
    }
    links
}

/// Runs until the task is aborted; failures are logged and retried.
pub async fn run(
    config: NodeConfig,
    advertise: Vec<String>,
    store: Arc<ChunkStore>,
    repl: Arc<Replicator>,
    credential: Credential,
) {
    let client = match MetaClient::new(config.meta.clone(), &credential) {
        Ok(c) => c.with_deadline(HEARTBEAT_INTERVAL * 3),
        Err(e) => {
            warn!(error = %e, "bad metadata addresses; not registering");
            return;
        }
    };
    let mut registered = false;
    let mut reported: HashMap<u32, Instant> = HashMap::new();
    let mut ticker = tokio::time::interval(HEARTBEAT_INTERVAL);
    loop {
        ticker.tick().await;
        if registered {
            report_unreachable(&client, config.node_id, &repl, &mut reported).await;
        }
        let disks = records(store.stats());
        let command = if registered {
            Request::Heartbeat { id: config.node_id, disks }
        } else {
            Request::RegisterNode {
                id: config.node_id,
                addrs: advertise.clone(),
                failure_domain: config.failure_domain.clone(),
                disks,
            }
        };
        match client.write(command).await {
            Ok(_) if !registered => {
                info!(node_id = config.node_id, "registered with the metadata service");
                registered = true;
            }
            Ok(_) => {}
            // The service forgot us (a group rebuilt from scratch): register again.
            Err(chuyi_meta_api::MetaError::UnknownNode(_)) => registered = false,
            Err(e) => warn!(node_id = config.node_id, error = %e, "heartbeat failed"),
        }
    }
}

/// Reports peers this node has not reached for a while, unless the map
/// already has them down.
async fn report_unreachable(client: &MetaClient, me: u32, repl: &Replicator, reported: &mut HashMap<u32, Instant>) {
    let map = repl.view().current();
    for node in repl.peers().unreachable(REPORT_UNREACHABLE_AFTER) {
        let up = map.node(node).is_some_and(|n| n.up);
        if !up || reported.get(&node).is_some_and(|at| at.elapsed() < REPORT_EVERY) {
            continue;
        }
        reported.insert(node, clock::now());
        warn!(node, "cannot reach this peer on the data path; reporting it");
        if let Err(e) = client.write(Request::ReportUnreachable { reporter: me, node }).await {
            warn!(node, error = %e, "unreachable report failed");
        }
    }
}

/// How long one map watch waits for a newer epoch before asking again.
const MAP_WATCH: Duration = Duration::from_secs(5);

/// Hands every new map to the node, until the task is aborted.
pub async fn follow_map(members: Vec<String>, credential: Credential, repl: Arc<Replicator>) {
    let client = match MetaClient::new(members, &credential) {
        Ok(c) => c.with_deadline(MAP_WATCH * 2),
        Err(e) => {
            warn!(error = %e, "bad metadata addresses; not following the map");
            return;
        }
    };
    loop {
        let known = repl.view().current().epoch;
        match client.watch_map(known, MAP_WATCH).await {
            Ok(map) => {
                if repl.view().update(map.data_map()) {
                    info!(epoch = map.epoch, "new map");
                }
            }
            Err(e) => {
                warn!(error = %e, "map watch failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Tells the metadata service about each finished backfill, so it clears
/// the replica's recovering mark.
pub async fn report_recovered(
    members: Vec<String>,
    credential: Credential,
    mut done: mpsc::UnboundedReceiver<Recovered>,
) {
    let client = match MetaClient::new(members, &credential) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "bad metadata addresses; not reporting recoveries");
            return;
        }
    };
    while let Some(r) = done.recv().await {
        let command = Request::PgRecovered {
            pool: r.pg.pool,
            pg: r.pg.pg,
            disk: DiskRef::new(r.replica.node, r.replica.disk),
            epoch: r.epoch,
        };
        loop {
            match client.write(command.clone()).await {
                Ok(_) => {
                    info!(pg = %r.pg, replica = ?r.replica, epoch = r.epoch, "replica recovered");
                    break;
                }
                // Refused: the PG moved on; the next backfill reports anew.
                Err(e) if e.is_refusal() => {
                    info!(pg = %r.pg, error = %e, "recovery report refused");
                    break;
                }
                Err(e) => {
                    warn!(error = %e, "recovery report failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}
