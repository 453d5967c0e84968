//! Connections from this node to the other storage nodes, by node id, at
//! the addresses the map gives; and which of them this node cannot reach,
//! for the failure reports that catch a network cut between nodes that
//! both still heartbeat.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chuyi_common::clock::{self, Instant};

use bytes::Bytes;
use chuyi_common::credential::Identity;
use chuyi_common::ids::NodeId;
use chuyi_common::map::DataMap;
use chuyi_common::proto::chunk::{ChunkRequest, ChunkResponse};
use chuyi_common::rpc::{ConnPool, RpcConfig, RpcError};

/// How long a forwarded call may take. Shorter than a client's deadline, so
/// a stuck replica fails the write while the client can still retry.
pub(crate) const PEER_CALL_TIMEOUT: Duration = Duration::from_secs(5);
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct Peers {
    pool: ConnPool<NodeId, ChunkRequest, ChunkResponse>,
    /// Peers whose calls fail (connect, send or reply): since when every
    /// call has failed, and when the last one did.
    failing: Mutex<HashMap<NodeId, (Instant, Instant)>>,
}

/// A failure this long after the previous one starts a new streak: the
/// peer was not being called (it was down in the map), not failing.
const STREAK_GAP: Duration = Duration::from_secs(5);
/// A streak counts only while calls keep failing.
const STILL_FAILING: Duration = Duration::from_secs(2);

impl Peers {
    pub fn new(identity: Identity) -> Self {
        let config = RpcConfig {
            call_timeout: PEER_CALL_TIMEOUT,
            connect_timeout: PEER_CONNECT_TIMEOUT,
            ..RpcConfig::default()
        };
        Self { pool: ConnPool::new(identity, config), failing: Mutex::new(HashMap::new()) }
    }

    /// Peers that have failed every call for at least `for_at_least`, and
    /// are still being called and failing.
    pub fn unreachable(&self, for_at_least: Duration) -> Vec<NodeId> {
        let failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        failing
            .iter()
            .filter(|(_, (since, last))| since.elapsed() >= for_at_least && last.elapsed() < STILL_FAILING)
            .map(|(&n, _)| n)
            .collect()
    }

    /// Calls `node` at the address the map gives it.
    pub async fn call(
        &self,
        map: &DataMap,
        node: NodeId,
        request: &ChunkRequest,
        payload: Bytes,
    ) -> Result<(ChunkResponse, Bytes), RpcError> {
        let addrs = map.node(node).map(|n| n.addrs.as_slice()).unwrap_or_default();
        let result = self.pool.call(node, addrs, request, payload).await;
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Ok(_) => {
                failing.remove(&node);
            }
            Err(_) => {
                let now = clock::now();
                let streak = failing.entry(node).or_insert((now, now));
                if streak.1.elapsed() > STREAK_GAP {
                    streak.0 = now;
                }
                streak.1 = now;
            }
        }
        result
    }
}
