//! The client of the metadata service, for the CLI, the frontends and the
//! storage nodes' heartbeats: finds the leader among the given members,
//! follows `NotLeader` redirects, and retries transient failures within a
//! deadline.
//!
//! A write retried after a lost reply may have been applied already: its
//! retry then fails as a duplicate (`AlreadyExists`), or applies twice:
//! harmless for heartbeats and for an object put in an unversioned bucket,
//! but an extra version or delete marker in a versioned one. Callers that
//! cannot accept that read back before retrying.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chuyi_common::clock;

use chuyi_common::credential::{Credential, Door, Identity};
use chuyi_common::rpc::{Endpoint, RpcClient, RpcConfig, RpcError};
use tracing::debug;

use crate::ask::Ask;
use crate::error::MetaError;
use crate::model::ClusterMap;
use crate::order::Order;
use crate::proto::{self, ApiReply, ApiResult, Envelope, MetaCall, Query, StatusReport, ENVELOPE, WATCH_WAIT_MAX_MS};
use crate::qos::{QosGrant, QosReport, RuleStatus};
use crate::request::{Reply, Request};

/// How long a call keeps retrying by default: longer than an election.
pub const CALL_DEADLINE: Duration = Duration::from_secs(15);
/// How long one attempt at one member may take (a frozen or partitioned
/// member must not hold a call for the RPC layer's full timeout).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between attempts when no member could answer.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

type Conn = RpcClient<Envelope, Envelope>;

#[derive(Debug)]
pub struct MetaClient {
    members: Vec<String>,
    identity: Identity,
    deadline: Duration,
    state: Mutex<ClientState>,
}

#[derive(Debug, Default)]
struct ClientState {
    conns: HashMap<String, Conn>,
    leader: Option<String>,
    next: usize,
}

impl MetaClient {
    /// A client of the group reachable at any of `members`, calling as
    /// `credential`'s principal.
    pub fn new(members: Vec<String>, credential: &Credential) -> Result<Self, MetaError> {
        if members.is_empty() {
            return Err(MetaError::invalid("metadata addresses", "none given"));
        }
        for m in &members {
            m.parse::<Endpoint>().map_err(|e| MetaError::invalid("metadata address", e.0))?;
        }
        Ok(Self {
            members,
            identity: credential.identity(Door::Meta),
            deadline: CALL_DEADLINE,
            state: Mutex::new(ClientState::default()),
        })
    }

    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClientState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn target(&self) -> String {
        let mut state = self.lock();
        if let Some(leader) = &state.leader {
            return leader.clone();
        }
        state.next = (state.next + 1) % self.members.len();
        self.members[state.next].clone()
    }

    async fn conn(&self, addr: &str) -> Result<Conn, RpcError> {
        if let Some(c) = self.lock().conns.get(addr).filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let endpoint: Endpoint = addr.parse().map_err(|e: chuyi_common::rpc::EndpointError| RpcError::Config(e.0))?;
        // Per-attempt deadlines are `call_at`'s; the RPC layer's must only
        // outlast the longest, a map watch.
        let call_timeout = ATTEMPT_TIMEOUT * 2 + Duration::from_millis(u64::from(WATCH_WAIT_MAX_MS));
        let config = RpcConfig { connect_timeout: Duration::from_secs(2), call_timeout, ..RpcConfig::default() };
        let conn = Conn::connect(&endpoint, &self.identity, config).await?;
        self.lock().conns.insert(addr.to_string(), conn.clone());
        Ok(conn)
    }

    /// One attempt at one member, no retry.
    pub async fn call_at(&self, addr: &str, call: &MetaCall) -> Result<ApiReply, MetaError> {
        let payload = proto::encode(call).map_err(|e| MetaError::Malformed(e.to_string()))?;
        let unavailable = |e: RpcError| MetaError::Unavailable(format!("{addr}: {e}"));
        let limit = match call {
            MetaCall::WatchMap { wait_ms, .. } => {
                ATTEMPT_TIMEOUT + Duration::from_millis(u64::from((*wait_ms).min(WATCH_WAIT_MAX_MS)))
            }
            _ => ATTEMPT_TIMEOUT,
        };
        let attempt = async {
            let conn = self.conn(addr).await?;
            conn.call(&ENVELOPE, payload).await
        };
        let result = tokio::time::timeout(limit, attempt).await.unwrap_or(Err(RpcError::Timeout));
        let (envelope, payload) = result.map_err(|e| {
            self.lock().conns.remove(addr);
            match e {
                // The member answered, or the request cannot be sent: the
                // same request elsewhere would fail the same way.
                RpcError::Remote(why) => MetaError::Internal(format!("{addr}: {why}")),
                e @ (RpcError::Frame(_) | RpcError::Encode(_) | RpcError::Config(_)) => {
                    MetaError::Malformed(format!("{addr}: {e}"))
                }
                other => unavailable(other),
            }
        })?;
        proto::decode::<ApiResult>(envelope, &payload).map_err(|e| MetaError::Malformed(e.to_string()))?
    }

    /// Calls the leader, following redirects and retrying until the deadline.
    pub async fn call(&self, call: &MetaCall) -> Result<ApiReply, MetaError> {
        let start = clock::now();
        loop {
            let addr = self.target();
            let error = match self.call_at(&addr, call).await {
                Ok(reply) => {
                    self.lock().leader = Some(addr);
                    return Ok(reply);
                }
                Err(e) if !e.is_retryable() => return Err(e),
                Err(e) => e,
            };
            debug!(%addr, %error, "metadata call will be retried");
            let redirect = match &error {
                MetaError::NotLeader { leader: Some(leader) } if *leader != addr => Some(leader.clone()),
                _ => None,
            };
            let follow = redirect.is_some();
            self.lock().leader = redirect;
            if start.elapsed() >= self.deadline {
                return Err(error);
            }
            if !follow {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }

    pub async fn write(&self, request: Request) -> Result<Reply, MetaError> {
        match self.call(&MetaCall::Write(request)).await? {
            ApiReply::Written(reply) => Ok(reply),
            other => Err(unexpected(&other)),
        }
    }

    /// A typed write: the answer `order` names; a reply of another kind (a
    /// version mismatch) is an error here, so no caller handles it.
    pub async fn order<O: Order>(&self, order: O) -> Result<O::Answer, MetaError> {
        let reply = self.write(order.request()).await?;
        O::answer(reply).map_err(|other| MetaError::Malformed(format!("unexpected reply {other}")))
    }

    /// A typed read: the answer `ask` names; a reply of another kind (a
    /// version mismatch) is an error here, so no caller handles it.
    pub async fn ask<A: Ask>(&self, ask: A) -> Result<A::Answer, MetaError> {
        let reply = self.read(ask.query()).await?;
        A::answer(reply).map_err(|other| MetaError::Malformed(format!("unexpected reply {other}")))
    }

    pub async fn read(&self, query: Query) -> Result<ApiReply, MetaError> {
        self.call(&MetaCall::Read(query)).await
    }

    pub async fn status(&self) -> Result<StatusReport, MetaError> {
        match self.call(&MetaCall::Status).await? {
            ApiReply::Status(report) => Ok(*report),
            other => Err(unexpected(&other)),
        }
    }

    /// This frontend's shares of the QoS rules it reports (qos.rs).
    pub async fn qos_exchange(&self, report: QosReport) -> Result<QosGrant, MetaError> {
        match self.call(&MetaCall::QosExchange(report)).await? {
            ApiReply::QosGrant(grant) => Ok(grant),
            other => Err(unexpected(&other)),
        }
    }

    /// Every QoS rule with what the frontends reported of it lately.
    pub async fn qos_status(&self) -> Result<Vec<RuleStatus>, MetaError> {
        match self.call(&MetaCall::QosStatus).await? {
            ApiReply::QosStatus(rules) => Ok(rules),
            other => Err(unexpected(&other)),
        }
    }

    /// The map once its epoch is above `known_epoch` (or after `wait`).
    pub async fn watch_map(&self, known_epoch: u64, wait: Duration) -> Result<ClusterMap, MetaError> {
        let wait_ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX);
        match self.call(&MetaCall::WatchMap { known_epoch, wait_ms }).await? {
            ApiReply::Map(map) => Ok(map),
            other => Err(unexpected(&other)),
        }
    }
}

fn unexpected(reply: &ApiReply) -> MetaError {
    MetaError::Malformed(format!("unexpected reply {reply:?}"))
}
