//! openraft's network over the common RPC layer: one lazily opened,
//! authenticated connection per peer, re-opened after it breaks.

use std::time::Duration;

use chuyi_common::credential::Identity;
use chuyi_common::rpc::{Endpoint, RpcClient, RpcConfig, RpcError};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;

use crate::proto::{self, Envelope, PeerCall, PeerReply, RAFT_ENVELOPE};
use crate::store::TypeConfig;

pub(crate) type MetaRpc = RpcClient<Envelope, Envelope>;

type RpcResult<T, E = openraft::error::Infallible> = Result<T, RPCError<u64, BasicNode, RaftError<u64, E>>>;

/// Makes a [`Peer`] per target member.
#[derive(Debug, Clone)]
pub struct Network {
    identity: Identity,
}

impl Network {
    pub fn new(identity: Identity) -> Self {
        Self { identity }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        Peer { target, addr: node.addr.clone(), identity: self.identity.clone(), conn: None }
    }
}

/// The connection to one member.
#[derive(Debug)]
pub struct Peer {
    target: u64,
    addr: String,
    identity: Identity,
    conn: Option<MetaRpc>,
}

/// What went wrong on the way, before openraft's error types.
enum Failure {
    Unreachable(RpcError),
    Network(String),
}

impl Failure {
    fn into_rpc<E: std::error::Error>(self) -> RPCError<u64, BasicNode, RaftError<u64, E>> {
        match self {
            Failure::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            Failure::Network(why) => RPCError::Network(NetworkError::new(&std::io::Error::other(why))),
        }
    }
}

impl Peer {
    async fn connection(&mut self, timeout: Duration) -> Result<MetaRpc, Failure> {
        if let Some(conn) = self.conn.as_ref().filter(|c| !c.is_closed()) {
            return Ok(conn.clone());
        }
        let endpoint: Endpoint = self.addr.parse().map_err(|e| Failure::Network(format!("member address: {e}")))?;
        let config = RpcConfig { call_timeout: timeout, connect_timeout: timeout, ..RpcConfig::default() };
        let conn = MetaRpc::connect(&endpoint, &self.identity, config).await.map_err(Failure::Unreachable)?;
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    async fn send(&mut self, call: &PeerCall, option: &RPCOption) -> Result<PeerReply, Failure> {
        let payload = proto::encode(call).map_err(|e| Failure::Network(e.to_string()))?;
        let conn = self.connection(option.hard_ttl()).await?;
        match conn.call(&RAFT_ENVELOPE, payload).await {
            Ok((envelope, payload)) => proto::decode(envelope, &payload).map_err(|e| Failure::Network(e.to_string())),
            Err(e) => {
                self.conn = None;
                Err(match e {
                    RpcError::Remote(why) => Failure::Network(why),
                    other => Failure::Unreachable(other),
                })
            }
        }
    }

    // openraft's RPCError is what the trait returns; boxing it is not ours to do.
    #[allow(clippy::result_large_err)]
    fn remote<T, E: std::error::Error>(&self, result: Result<T, RaftError<u64, E>>) -> RpcResult<T, E> {
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

fn unexpected<E: std::error::Error>(reply: &PeerReply) -> RPCError<u64, BasicNode, RaftError<u64, E>> {
    Failure::Network(format!("unexpected reply {reply:?}")).into_rpc()
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>> {
        match self.send(&PeerCall::AppendEntries(rpc), &option).await.map_err(Failure::into_rpc)? {
            PeerReply::AppendEntries(result) => self.remote(result),
            other => Err(unexpected(&other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        match self.send(&PeerCall::InstallSnapshot(rpc), &option).await.map_err(Failure::into_rpc)? {
            PeerReply::InstallSnapshot(result) => self.remote(result),
            other => Err(unexpected(&other)),
        }
    }

    async fn vote(&mut self, rpc: VoteRequest<u64>, option: RPCOption) -> RpcResult<VoteResponse<u64>> {
        match self.send(&PeerCall::Vote(rpc), &option).await.map_err(Failure::into_rpc)? {
            PeerReply::Vote(result) => self.remote(result),
            other => Err(unexpected(&other)),
        }
    }
}
