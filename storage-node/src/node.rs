//! Running a storage node: open the disks, then serve the chunk service on
//! every configured listener, with recovery and scrub in the background,
//! until shut down.

use std::future::Future;
use std::sync::Arc;

use chuyi_common::credential::{Credential, Door, Keyring};
use chuyi_common::metrics::prometheus_client;
use chuyi_common::rpc::{Endpoint, RpcError, RpcServer};

use tokio::sync::mpsc;

use crate::config::NodeConfig;
use crate::fence::{FenceError, Fences};
use crate::recovery::{Recovered, Recovery};
use crate::replication::peers::Peers;
use crate::replication::{order, Replicator};
use crate::service::ChunkService;
use crate::store::{ChunkStore, OpenError};

/// Why a node stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("listen address {0:?} is not valid")]
    Listen(String),
    #[error("metrics address {addr:?}: {source}")]
    Metrics { addr: String, source: std::io::Error },
    #[error("RPC: {0}")]
    Rpc(#[from] RpcError),
    #[error(transparent)]
    Fences(#[from] FenceError),
    #[error("no state_dir for the fence table (no disk is a directory)")]
    NoStateDir,
    #[error("forward numbers in {dir}: {source}")]
    ForwardNumbers { dir: String, source: std::io::Error },
    #[error(transparent)]
    Credential(#[from] chuyi_common::credential::CredentialError),
}

/// A node with its disks open and its listeners bound, ready to serve.
#[derive(Debug)]
pub struct Node {
    store: Arc<ChunkStore>,
    repl: Arc<Replicator>,
    recovery: Arc<Recovery>,
    recovered: Option<mpsc::UnboundedReceiver<Recovered>>,
    scrub_mb_per_s: u32,
    service: Arc<ChunkService>,
    servers: Vec<RpcServer>,
    /// Where `/metrics` is served, if it is.
    metrics: Option<tokio::net::TcpListener>,
    /// What the listeners check callers with.
    keyring: Keyring,
}

impl Node {
    /// Opens the disks and binds the listeners of `config`. `credential`
    /// (the node's own, or the cluster secret) checks callers and
    /// authenticates the node to its peers when it forwards writes.
    pub async fn start(config: &NodeConfig, credential: &Credential) -> Result<Self, NodeError> {
        let store = ChunkStore::open(&config.disk_specs()).await?;
        Self::start_on(config, credential, store).await
    }

    /// Like [`Node::start`], on disks the caller opened: how the simulation
    /// puts a fault engine under a node's disks.
    pub async fn start_on(config: &NodeConfig, credential: &Credential, store: ChunkStore) -> Result<Self, NodeError> {
        let keyring = credential.keyring(Door::Node)?;
        let store = Arc::new(store);
        let fresh = || config.accept_missing_fences || store.stats().iter().all(|d| d.chunks == 0);
        let state_dir = config.state_dir().ok_or(NodeError::NoStateDir)?;
        let fences = Arc::new(Fences::open(&state_dir, fresh)?);
        let first_forward = order::first_number(&state_dir)
            .map_err(|source| NodeError::ForwardNumbers { dir: state_dir.display().to_string(), source })?;
        let mut servers = Vec::new();
        for listen in std::iter::once(&config.listen).chain(&config.listen_extra) {
            let endpoint: Endpoint = listen.parse().map_err(|_| NodeError::Listen(listen.clone()))?;
            servers.push(RpcServer::bind(&endpoint).await?);
        }
        let repl = Arc::new(Replicator::new(
            config.node_id,
            store.clone(),
            fences,
            Peers::new(credential.identity(Door::Node)),
            first_forward,
        ));
        let (recovery, recovered) = Recovery::new(repl.clone(), config.recovery_mb_per_s);
        let metrics = match &config.metrics_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| NodeError::Metrics { addr: addr.clone(), source })?,
            ),
            None => None,
        };
        Ok(Self {
            service: Arc::new(ChunkService::new(repl.clone(), recovery.clone(), snapshot_truth(config, credential))),
            store,
            repl,
            recovery,
            recovered: Some(recovered),
            scrub_mb_per_s: config.scrub_mb_per_s,
            servers,
            metrics,
            keyring,
        })
    }

    /// Where the node learns the data map: whoever follows the metadata
    /// service pushes each new map here.
    pub fn map_sink(&self) -> Arc<Replicator> {
        self.repl.clone()
    }

    /// Backfills this node finished, to report to the metadata service.
    /// Given out once.
    pub fn take_recovered(&mut self) -> Option<mpsc::UnboundedReceiver<Recovered>> {
        self.recovered.take()
    }

    /// Where the node listens (with real ports for ":0").
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.servers.iter().map(|s| s.local_endpoint().clone()).collect()
    }

    /// Where `/metrics` is served (with the real port for ":0"), if it is.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The disks, for reporting their stats (heartbeats) while serving.
    pub fn store(&self) -> Arc<ChunkStore> {
        self.store.clone()
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), NodeError> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let metrics = self.metrics.map(|listener| {
            let mut registry = prometheus_client::registry::Registry::default();
            crate::metrics::register(&mut registry, self.repl.clone(), self.recovery.clone());
            chuyi_common::metrics::serve(listener, Arc::new(registry))
        });
        let background = [
            tokio::spawn(self.recovery.clone().run()),
            tokio::spawn(crate::scrub::run(self.repl.clone(), self.scrub_mb_per_s)),
            tokio::spawn(async move {
                match metrics {
                    Some(serving) => serving.await,
                    None => std::future::pending().await,
                }
            }),
        ];
        let _stop_background = AbortOnDrop(background);
        let mut tasks = tokio::task::JoinSet::new();
        for server in self.servers {
            let (service, keyring, mut stop) = (self.service.clone(), self.keyring.clone(), stop_rx.clone());
            tasks.spawn(async move {
                server
                    .serve(keyring, service, async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await
            });
        }
        tokio::select! {
            () = shutdown => {}
            Some(first) = tasks.join_next() => {
                // A listener died on its own: stop the rest and report it.
                let _ = stop_tx.send(true);
                return flatten(first);
            }
        }
        let _ = stop_tx.send(true);
        while let Some(done) = tasks.join_next().await {
            flatten(done)?;
        }
        Ok(())
    }
}

struct AbortOnDrop<const N: usize>([tokio::task::JoinHandle<()>; N]);

impl<const N: usize> Drop for AbortOnDrop<N> {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

fn flatten(joined: Result<Result<(), RpcError>, tokio::task::JoinError>) -> Result<(), NodeError> {
    match joined {
        Ok(result) => Ok(result?),
        Err(e) => Err(NodeError::Rpc(RpcError::Io(std::io::Error::other(e)))),
    }
}

/// The metadata client the node asks which snapshots of a volume live
/// before it trims their clones (none without metadata members: such a
/// node refuses `TrimClones`).
fn snapshot_truth(config: &NodeConfig, credential: &Credential) -> Option<chuyi_meta_api::client::MetaClient> {
    if config.meta.is_empty() {
        return None;
    }
    match chuyi_meta_api::client::MetaClient::new(config.meta.clone(), credential) {
        Ok(client) => Some(client),
        Err(e) => {
            tracing::warn!(error = %e, "bad metadata addresses; snapshot clones will not be trimmed");
            None
        }
    }
}
