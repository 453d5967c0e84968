//! The server end: a listener that accepts connections and runs a
//! [`Service`] on their requests (each connection in [`super::session`]).
//!
//! Shutdown is by dropping: every connection task, and every request task
//! under it, is aborted, which closes the sockets, so clients see their
//! calls fail with `Closed` instead of waiting for their deadline.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, warn, Instrument};

use super::transport::{Listener, Stream};
use super::{session, Endpoint, RpcError};
use crate::credential::{Keyring, Principal};
use crate::limits::RPC_SERVER_CONNECTIONS_MAX;
use crate::unix_stream;

/// Pause after a failed accept (e.g. out of file descriptors), so the loop
/// does not spin while the condition lasts.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// What a server does with requests.
pub trait Service: Send + Sync + 'static {
    type Request: serde::de::DeserializeOwned + Send + 'static;
    type Response: serde::Serialize + Send + 'static;

    /// Handle one request of `caller` (the principal the connection's
    /// handshake proved); `payload` is the request's raw data. Returns the
    /// response and its payload (`Bytes::new()` when none).
    ///
    /// Requests of one connection run concurrently. The future is dropped
    /// unfinished when the server shuts down or the connection breaks.
    fn call(
        &self,
        caller: &Principal,
        request: Self::Request,
        payload: Bytes,
    ) -> impl Future<Output = (Self::Response, Bytes)> + Send;
}

/// A bound, not yet serving, RPC listener.
#[derive(Debug)]
pub struct RpcServer {
    listener: Listener,
    local: Endpoint,
}

impl RpcServer {
    /// Binds a TCP (`127.0.0.1:0` allowed) or Unix endpoint. A stale Unix
    /// socket file is removed first; a live one is an error.
    pub async fn bind(endpoint: &Endpoint) -> Result<RpcServer, RpcError> {
        let (listener, local) = Listener::bind(endpoint).await?;
        Ok(RpcServer { listener, local })
    }

    /// The bound address, with the real port for `:0`.
    pub fn local_endpoint(&self) -> &Endpoint {
        &self.local
    }

    /// Serves connections until `shutdown` resolves, then closes them all.
    /// Beyond `RPC_SERVER_CONNECTIONS_MAX` connections, new ones are closed
    /// as soon as they are accepted.
    pub async fn serve<S: Service>(
        self,
        keyring: Keyring,
        service: Arc<S>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), RpcError> {
        let slots = Arc::new(Semaphore::new(RPC_SERVER_CONNECTIONS_MAX));
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let Ok(slot) = slots.clone().try_acquire_owned() else {
                            warn!(%peer, "rpc connection limit reached; refusing connection");
                            continue;
                        };
                        let span = tracing::debug_span!("rpc_conn", %peer);
                        let conn = run_connection(stream, keyring.clone(), service.clone());
                        connections.spawn(async move { conn.await; drop(slot) }.instrument(span));
                    }
                    Err(e) => {
                        warn!(error = %e, "rpc accept failed");
                        tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                    }
                },
                Some(joined) = connections.join_next() => session::reap(joined),
            }
        }
        debug!(connections = connections.len(), "rpc server shutting down");
        connections.shutdown().await;
        Ok(())
    }
}

async fn run_connection<S: Service>(stream: Stream, keyring: Keyring, service: Arc<S>) {
    match stream {
        Stream::Tcp(stream) => {
            let (r, w) = stream.into_split();
            session::run(r, w, keyring, service).await
        }
        Stream::Unix(stream) => match unix_stream::split(stream) {
            Ok((r, w)) => session::run(r, w, keyring, service).await,
            // Out of descriptors or epoll watches: the host's trouble, not the peer's.
            Err(e) => warn!(error = %e, "cannot watch a unix connection; dropped"),
        },
        Stream::Sim(stream) => {
            let (r, w) = stream.into_split();
            session::run(r, w, keyring, service).await
        }
    }
}
