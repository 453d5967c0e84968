//! Connections from this node to the other storage nodes, by node id, at
//! the addresses the map gives.

use std::time::Duration;

use bytes::Bytes;
use chuyi_common::ids::NodeId;
use chuyi_common::map::DataMap;
use chuyi_common::proto::chunk::{ChunkRequest, ChunkResponse};
use chuyi_common::rpc::{ConnPool, RpcConfig, RpcError};
use chuyi_common::secret::ClusterSecret;

/// How long a forwarded call may take. Shorter than a client's deadline, so
/// a stuck replica fails the write while the client can still retry.
const PEER_CALL_TIMEOUT: Duration = Duration::from_secs(5);
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct Peers {
    pool: ConnPool<NodeId, ChunkRequest, ChunkResponse>,
}

impl Peers {
    pub fn new(secret: ClusterSecret) -> Self {
        let config =
            RpcConfig { call_timeout: PEER_CALL_TIMEOUT, connect_timeout: PEER_CONNECT_TIMEOUT, ..RpcConfig::default() };
        Self { pool: ConnPool::new(secret, config) }
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
        self.pool.call(node, addrs, request, payload).await
    }
}
