//! One member process: open the store, start openraft, bind the listener,
//! found the group on first start, and serve until shut down.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use chuyi_common::credential::{Credential, Door, Keyring, Principal};
use chuyi_common::rpc::{Endpoint, RpcError, RpcServer};
use chuyi_common::seal::{SealKey, USER_SECRET_PURPOSE};
use chuyi_common::secret::ClusterSecret;
use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, Raft, SnapshotPolicy};
use tokio::task::JoinHandle;
use tracing::info;

use super::liveness::Liveness;
use super::network::Network;
use super::proposer::Proposer;
use super::service::MetaService;
use crate::config::MetaConfig;
use crate::store::{self, StateReader, StoreError, TypeConfig};

/// Entries per AppendEntries at most: with proposals of at most
/// `BATCH_BYTES_MAX` (512 KiB) this keeps a message under the RPC payload
/// limit (4 MiB).
const APPEND_ENTRIES_MAX: u64 = 6;
const _: () = assert!(
    APPEND_ENTRIES_MAX as usize * super::proposer::BATCH_BYTES_MAX < chuyi_common::limits::RPC_PAYLOAD_MAX_BYTES
);
/// How long one InstallSnapshot message may take.
const SNAPSHOT_INSTALL_TIMEOUT_MS: u64 = 10_000;
/// Snapshot bytes per InstallSnapshot message.
const SNAPSHOT_CHUNK_BYTES: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error("creating {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("listen address {0:?} is not valid")]
    Listen(String),
    #[error("RPC: {0}")]
    Rpc(#[from] RpcError),
    #[error("metrics address {addr:?}: {source}")]
    Metrics { addr: String, source: std::io::Error },
}

fn raft_error(e: impl std::fmt::Display) -> MemberError {
    MemberError::Raft(e.to_string())
}

/// A started member, bound and ready to serve.
pub struct Member {
    raft: Raft<TypeConfig>,
    reader: StateReader,
    service: Arc<MetaService>,
    server: RpcServer,
    /// What the listener checks callers with: every principal's key.
    keyring: Keyring,
    monitor: JoinHandle<()>,
    snapshots: JoinHandle<()>,
    /// Serves `/metrics`, when the config asks for it.
    metrics: Option<(std::net::SocketAddr, JoinHandle<()>)>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member").field("endpoint", self.server.local_endpoint()).finish_non_exhaustive()
    }
}

fn raft_config(config: &MetaConfig) -> Result<openraft::Config, MemberError> {
    let election = config.election_timeout_ms;
    let raft = openraft::Config {
        cluster_name: "chuyi-meta".into(),
        heartbeat_interval: (election / 4).max(50),
        election_timeout_min: election,
        election_timeout_max: election * 2,
        max_payload_entries: APPEND_ENTRIES_MAX,
        // snapshots.rs triggers them, by count and by the state's size.
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: config.snapshot_logs.min(1000),
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        // The last chunk decodes and installs the whole snapshot before it
        // answers: openraft's 200 ms default would time it out and resend.
        install_snapshot_timeout: SNAPSHOT_INSTALL_TIMEOUT_MS,
        ..openraft::Config::default()
    };
    raft.validate().map_err(raft_error)
}

impl Member {
    pub async fn start(config: &MetaConfig, secret: ClusterSecret) -> Result<Self, MemberError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|source| MemberError::DataDir { path: config.data_dir.display().to_string(), source })?;
        // Bound first: a bad address must fail the start before Raft runs.
        let metrics_listener = match &config.metrics_listen {
            Some(addr) => Some(bind_metrics(addr).await?),
            None => None,
        };
        let (log, state_machine) = store::open(&config.data_dir)?;
        let appended = log.appended_bytes();
        let reader = state_machine.reader();
        let credential = Credential::from_secret(secret.clone(), Principal::member(config.id));
        let keyring = credential.keyring(Door::Meta).map_err(|e| MemberError::Raft(e.to_string()))?;
        let network = Network::new(credential.identity(Door::Meta));
        let raft = Raft::new(config.id, Arc::new(raft_config(config)?), network, log, state_machine)
            .await
            .map_err(raft_error)?;
        let endpoint: Endpoint = config.listen.parse().map_err(|_| MemberError::Listen(config.listen.clone()))?;
        let server = RpcServer::bind(&endpoint).await?;
        found(&raft, config).await?;

        let proposer = Proposer::start(raft.clone());
        let seal = SealKey::derive(&secret, USER_SECRET_PURPOSE);
        let liveness = Arc::new(Liveness::default());
        let timeout = config.heartbeat_timeout();
        let service = Arc::new(MetaService::new(
            config.id,
            raft.clone(),
            reader.clone(),
            proposer.clone(),
            seal,
            liveness.clone(),
            timeout,
        ));
        let monitor = tokio::spawn(super::monitor::run(raft.clone(), reader.clone(), proposer, liveness, timeout));
        let snapshots_dir = config.data_dir.join("snapshots");
        let metrics = metrics_listener
            .map(|(listener, addr)| (addr, serve_metrics(listener, service.clone(), snapshots_dir.clone())));
        let snapshots =
            tokio::spawn(super::snapshots::run(raft.clone(), snapshots_dir, config.snapshot_logs, appended));
        Ok(Self { raft, reader, service, server, keyring, monitor, snapshots, metrics })
    }

    /// Where `/metrics` is served (the real port for ":0"), if it is.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics.as_ref().map(|(addr, _)| *addr)
    }

    /// Where the member listens (the real port for ":0").
    pub fn endpoint(&self) -> &Endpoint {
        self.server.local_endpoint()
    }

    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    pub fn reader(&self) -> &StateReader {
        &self.reader
    }

    /// Serves until `shutdown` resolves, then stops Raft.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), MemberError> {
        let served = self.server.serve(self.keyring, self.service, shutdown).await;
        self.monitor.abort();
        self.snapshots.abort();
        if let Some((_, metrics)) = &self.metrics {
            metrics.abort();
        }
        self.raft.shutdown().await.map_err(raft_error)?;
        Ok(served?)
    }
}

/// The listener of the member's metrics, and its address.
async fn bind_metrics(addr: &str) -> Result<(tokio::net::TcpListener, std::net::SocketAddr), MemberError> {
    let failed = |source| MemberError::Metrics { addr: addr.into(), source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(failed)?;
    let local = listener.local_addr().map_err(failed)?;
    Ok((listener, local))
}

/// Serves the member's metrics on `listener`.
fn serve_metrics(
    listener: tokio::net::TcpListener,
    service: Arc<MetaService>,
    snapshots: std::path::PathBuf,
) -> JoinHandle<()> {
    let mut registry = chuyi_common::metrics::prometheus_client::registry::Registry::default();
    super::metrics::register(&mut registry, service, snapshots);
    tokio::spawn(chuyi_common::metrics::serve(listener, Arc::new(registry)))
}

/// On a founder's first start, initializes the group with the founders.
/// Every founder does it with the same list, which openraft allows: the
/// first election settles it, and a member already initialized says so.
async fn found(raft: &Raft<TypeConfig>, config: &MetaConfig) -> Result<(), MemberError> {
    let founder = config.members.iter().any(|m| m.id == config.id);
    if !founder || raft.is_initialized().await.map_err(raft_error)? {
        return Ok(());
    }
    let members: BTreeMap<u64, BasicNode> =
        config.members.iter().map(|m| (m.id, BasicNode::new(m.addr.clone()))).collect();
    match raft.initialize(members).await {
        Ok(()) => {
            info!(member = config.id, founders = config.members.len(), "metadata group founded");
            Ok(())
        }
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(e) => Err(raft_error(e)),
    }
}
