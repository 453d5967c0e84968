//! One look at the cluster: the metadata service's status report (the map,
//! the members, PG health by pool), the volumes, and what each up storage
//! node says of its background work and of its volumes' client I/O.

use std::time::Duration;

use bytes::Bytes;
use chuyi_common::clock::{self, Instant};
use chuyi_common::credential::Identity;
use chuyi_common::ids::NodeId;
use chuyi_common::limits::OWNER_IO_ASK_MAX;
use chuyi_common::proto::chunk::{ChunkRequest, ChunkResponse, NodeReport, OwnerIoCount};
use chuyi_common::rpc::{ConnPool, RpcConfig};
use chuyi_meta_api::ask;
use chuyi_meta_api::client::MetaClient;
use chuyi_meta_api::model::{ClusterMap, NodeRecord, NodeState};
use chuyi_meta_api::proto::StatusReport;

use crate::ConsoleError;

/// How long a node has to answer before it is left out of a survey.
const NODE_ANSWER: Duration = Duration::from_secs(2);

/// Connections to the storage nodes, kept from one survey to the next.
pub type NodePool = ConnPool<NodeId, ChunkRequest, ChunkResponse>;

/// A pool whose calls are `identity`'s (an administrator's node-door
/// identity) and give up on a node after a moment.
pub fn node_pool(identity: Identity) -> NodePool {
    ConnPool::new(
        identity,
        RpcConfig { call_timeout: NODE_ANSWER, connect_timeout: NODE_ANSWER, ..RpcConfig::default() },
    )
}

/// The cluster as seen at `taken_ms`.
#[derive(Clone, Debug)]
pub struct Survey {
    pub taken_ms: u64,
    pub status: StatusReport,
    /// The up nodes that answered, in map order.
    pub nodes: Vec<NodeReport>,
    /// Their client I/O counts for the volumes, each when it was read.
    pub io: Vec<NodeIo>,
}

/// One node's counters, and when they were read (the clock rates are
/// measured with, never the calendar).
#[derive(Clone, Debug)]
pub struct NodeIo {
    pub node: NodeId,
    pub at: Instant,
    /// The volumes' counts, ascending by owner; `None` when the node did
    /// not give them all (a partial count would read as a reset, and a
    /// node of an older release has no `OwnerIo`).
    pub owners: Option<Vec<OwnerIoCount>>,
    pub backfill_bytes: u64,
}

impl Survey {
    /// Asks the metadata service, then every node its map says is up.
    pub async fn take(meta: &MetaClient, nodes: &NodePool) -> Result<Self, ConsoleError> {
        let status = meta.status().await?;
        let mut volumes: Vec<u64> = meta.ask(ask::Volumes).await?.iter().map(|v| v.id).collect();
        volumes.sort_unstable();
        let asks = up(&status.map).map(|n| node_io(nodes, n, &volumes));
        let answers: Vec<(NodeReport, NodeIo)> = futures::future::join_all(asks).await.into_iter().flatten().collect();
        let io = answers.iter().map(|(_, io)| io.clone()).collect();
        let nodes = answers.into_iter().map(|(report, _)| report).collect();
        Ok(Self { taken_ms: clock::unix_ms(), status, nodes, io })
    }

    /// The report of node `id`, if it answered.
    pub fn node(&self, id: NodeId) -> Option<&NodeReport> {
        self.nodes.iter().find(|n| n.node == id)
    }
}

fn up(map: &ClusterMap) -> impl Iterator<Item = &NodeRecord> {
    map.nodes.iter().filter(|n| n.state == NodeState::Up)
}

/// A node's report, and its counters with its counts for `volumes`.
async fn node_io(pool: &NodePool, node: &NodeRecord, volumes: &[u64]) -> Option<(NodeReport, NodeIo)> {
    let report = node_status(pool, node).await?;
    let owners = owner_counts(pool, node, volumes).await;
    let io = NodeIo { node: node.id, at: clock::now(), owners, backfill_bytes: report.backfill_bytes };
    Some((report, io))
}

/// All of a node's counts for `volumes`, asked a page at a time.
async fn owner_counts(pool: &NodePool, node: &NodeRecord, volumes: &[u64]) -> Option<Vec<OwnerIoCount>> {
    let mut owners = Vec::new();
    for page in volumes.chunks(OWNER_IO_ASK_MAX) {
        let ask = ChunkRequest::OwnerIo { owners: page.to_vec() };
        match pool.call(node.id, &node.addrs, &ask, Bytes::new()).await.ok()? {
            (ChunkResponse::OwnerIo(counts), _) => owners.extend(counts),
            _ => return None,
        }
    }
    Some(owners)
}

/// What each up node of `map` says of its recovery and scrub work, asked
/// all at once through `pool`; a node that does not answer within a
/// moment is left out.
pub async fn node_reports(pool: &NodePool, map: &ClusterMap) -> Vec<NodeReport> {
    let asks = up(map).map(|n| node_status(pool, n));
    futures::future::join_all(asks).await.into_iter().flatten().collect()
}

/// What `node` says of its recovery and scrub work, if it answers.
async fn node_status(pool: &NodePool, node: &NodeRecord) -> Option<NodeReport> {
    match pool.call(node.id, &node.addrs, &ChunkRequest::NodeStatus, Bytes::new()).await.ok()? {
        (ChunkResponse::Status(r), _) => Some(r),
        _ => None,
    }
}
