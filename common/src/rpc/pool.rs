//! Connections to many servers, one per server id, made on first use and
//! replaced once closed (and, in a pool that asks for it, once a call on
//! them timed out). Storage nodes use it to reach their peers, clients to
//! reach storage nodes.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Endpoint, RpcClient, RpcConfig, RpcError, SendGate};
use crate::credential::Identity;
use std::sync::Arc;

pub struct ConnPool<K, Req, Resp> {
    identity: Identity,
    config: RpcConfig,
    /// Whether a connection whose call timed out is dropped too.
    drop_timed_out: bool,
    conns: Mutex<HashMap<K, RpcClient<Req, Resp>>>,
}

impl<K, Req, Resp> std::fmt::Debug for ConnPool<K, Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnPool").field("config", &self.config).finish_non_exhaustive()
    }
}

impl<K, Req, Resp> ConnPool<K, Req, Resp>
where
    K: Copy + Eq + Hash + std::fmt::Display,
    Req: Serialize + Send + Sync + 'static,
    Resp: DeserializeOwned + Send + 'static,
{
    /// A pool that keeps a connection until it closes: calls to one server
    /// stay on one stream, in the order they were sent. Storage nodes
    /// forward writes this way, so a forward that timed out is not left on
    /// a dropped connection while newer ones go on another. (The stream
    /// does not order what the server does: it runs each request in a
    /// task of its own. What keeps a forward given up from landing over a
    /// newer one is its number, `storage-node/src/replication/order.rs`.)
    pub fn new(identity: Identity, config: RpcConfig) -> Self {
        Self { identity, config, drop_timed_out: false, conns: Mutex::new(HashMap::new()) }
    }

    /// A pool that also drops a connection whose call timed out, so the
    /// next call to that server connects anew. For callers that retry a
    /// failed call themselves and order nothing by connection (clients).
    pub fn dropping_timed_out(identity: Identity, config: RpcConfig) -> Self {
        Self { drop_timed_out: true, ..Self::new(identity, config) }
    }

    /// Calls server `id`, connecting to the first of `addrs` that answers
    /// when there is no open connection.
    pub async fn call(
        &self,
        id: K,
        addrs: &[String],
        request: &Req,
        payload: Bytes,
    ) -> Result<(Resp, Bytes), RpcError> {
        self.call_gated(id, addrs, request, payload, None).await
    }

    /// [`Self::call`] sent only while `gate` is open ([`RpcClient::call_gated`]).
    pub async fn call_gated(
        &self,
        id: K,
        addrs: &[String],
        request: &Req,
        payload: Bytes,
        gate: Option<&Arc<dyn SendGate>>,
    ) -> Result<(Resp, Bytes), RpcError> {
        // Connecting is boxed: its future is larger than a call's, and
        // every call's future would carry it for the rare call that has
        // no connection yet.
        let conn = match self.pooled(id) {
            Some(conn) => conn,
            None => Box::pin(self.connect(id, addrs)).await?,
        };
        let result = conn.call_gated(request, payload, gate).await;
        // A connection that closed is of no more use; one whose call timed
        // out leads to a server that froze or is overloaded.
        let timed_out = self.drop_timed_out && matches!(result, Err(RpcError::Timeout));
        if conn.is_closed() || matches!(result, Err(RpcError::Closed)) || timed_out {
            self.drop_conn(id, &conn);
        }
        result
    }

    /// Drops `conn` if it is still the connection pooled for `id`. Another
    /// stays: a caller that reconnected while this call was failing pooled
    /// it, and dropping it would only make the next call connect again.
    fn drop_conn(&self, id: K, conn: &RpcClient<Req, Resp>) {
        let mut conns = self.lock();
        if conns.get(&id).is_some_and(|pooled| pooled.same(conn)) {
            conns.remove(&id);
        }
    }

    /// The open connection to `id`, if there is one.
    fn pooled(&self, id: K) -> Option<RpcClient<Req, Resp>> {
        self.lock().get(&id).filter(|c| !c.is_closed()).cloned()
    }

    /// Connects to the first of `addrs` that answers, and pools it.
    async fn connect(&self, id: K, addrs: &[String]) -> Result<RpcClient<Req, Resp>, RpcError> {
        let mut last = RpcError::Config(format!("server {id} has no address"));
        for addr in addrs {
            let Ok(endpoint) = addr.parse::<Endpoint>() else {
                last = RpcError::Config(format!("server {id} address {addr:?} is not valid"));
                continue;
            };
            match RpcClient::connect(&endpoint, &self.identity, self.config.clone()).await {
                Ok(conn) => return Ok(self.keep(id, conn)),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Pools a new connection to `id` unless another caller, racing to
    /// connect, pooled an open one first: then that one is used, and this
    /// one dropped. A closed one in its place (its server went away) is
    /// replaced, or the first call after a restart would fail on it.
    fn keep(&self, id: K, conn: RpcClient<Req, Resp>) -> RpcClient<Req, Resp> {
        let mut conns = self.lock();
        match conns.get(&id) {
            Some(pooled) if !pooled.is_closed() => pooled.clone(),
            _ => {
                conns.insert(id, conn.clone());
                conn
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, RpcClient<Req, Resp>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    use super::*;
    use crate::credential::{Credential, Door, Principal};
    use crate::rpc::{RpcServer, Service};
    use crate::secret::ClusterSecret;

    /// Echoes a request: 0 after two seconds, anything else at once.
    struct Echo;

    impl Service for Echo {
        type Request = u32;
        type Response = u32;

        async fn call(&self, _: &Principal, request: u32, _: Bytes) -> (u32, Bytes) {
            if request == 0 {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            (request, Bytes::new())
        }
    }

    /// A socket path in a fresh directory (kept alive by the first value),
    /// its endpoint and address list, and a caller's identity.
    fn place() -> (tempfile::TempDir, Endpoint, [String; 1], Identity) {
        let dir = tempfile::tempdir().expect("tempdir");
        let endpoint = Endpoint::Unix(dir.path().join("rpc.sock"));
        let addrs = [endpoint.to_string()];
        (dir, endpoint, addrs, credential(Principal::admin()).identity(Door::Meta))
    }

    /// Calls time out after half a second, well before [`Echo`] answers 0.
    fn short_calls() -> RpcConfig {
        RpcConfig { call_timeout: Duration::from_millis(500), ..RpcConfig::default() }
    }

    fn credential(principal: Principal) -> Credential {
        let secret = ClusterSecret::new(b"pool-test-cluster-secret-0123456789".to_vec()).expect("long enough");
        Credential::from_secret(secret, principal)
    }

    /// Serves [`Echo`] at `endpoint` until the sender is used.
    async fn serve(endpoint: &Endpoint) -> (oneshot::Sender<()>, JoinHandle<Result<(), RpcError>>) {
        let server = RpcServer::bind(endpoint).await.expect("bind");
        let keyring = credential(Principal::member(1)).keyring(Door::Meta).expect("keyring");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(keyring, Arc::new(Echo), async move {
            let _ = stopped.await;
        }));
        (stop, task)
    }

    async fn stop((stop, task): (oneshot::Sender<()>, JoinHandle<Result<(), RpcError>>)) {
        let _ = stop.send(());
        task.await.expect("server task").expect("served");
    }

    /// A server that restarted is reached by the first call after it: the
    /// pooled connection that closed with the old server is replaced.
    #[tokio::test]
    async fn a_connection_closed_by_a_restart_is_replaced_by_the_next_call() {
        let (_dir, endpoint, addrs, identity) = place();
        let pool = ConnPool::<u32, u32, u32>::new(identity, RpcConfig::default());
        let first = serve(&endpoint).await;
        assert_eq!(pool.call(1, &addrs, &7, Bytes::new()).await.expect("call").0, 7);
        stop(first).await;
        let start = Instant::now();
        while !pool.lock().get(&1).is_some_and(RpcClient::is_closed) {
            assert!(start.elapsed() < Duration::from_secs(10), "the pool never saw its connection close");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let second = serve(&endpoint).await;
        let answer = pool.call(1, &addrs, &8, Bytes::new()).await.expect("the first call after the restart");
        assert_eq!(answer.0, 8);
        stop(second).await;
    }

    /// In a pool that drops timed-out connections, a call that timed out
    /// drops the connection it used, and only that one: a connection
    /// pooled by another caller while the call waited stays pooled.
    #[tokio::test]
    async fn a_timed_out_call_drops_its_own_connection_and_no_newer_one() {
        let (_dir, endpoint, addrs, identity) = place();
        let pool = Arc::new(ConnPool::<u32, u32, u32>::dropping_timed_out(identity.clone(), short_calls()));
        let server = serve(&endpoint).await;

        pool.call(1, &addrs, &7, Bytes::new()).await.expect("call");
        let first = pool.pooled(1).expect("pooled");
        assert!(matches!(pool.call(1, &addrs, &0, Bytes::new()).await, Err(RpcError::Timeout)));
        assert!(pool.pooled(1).is_none(), "a connection whose call timed out is not used again");

        pool.call(1, &addrs, &7, Bytes::new()).await.expect("a call on a new connection");
        let second = pool.pooled(1).expect("pooled");
        assert!(!second.same(&first));
        // Another caller's connection, to be pooled while the slow call waits.
        let third = RpcClient::connect(&endpoint, &identity, short_calls()).await.expect("connect");
        let slow = tokio::spawn({
            let (pool, addrs) = (pool.clone(), addrs.clone());
            async move { pool.call(1, &addrs, &0, Bytes::new()).await }
        });
        let start = Instant::now();
        while second.in_flight() == 0 {
            assert!(start.elapsed() < Duration::from_secs(10), "the slow call never went out");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        pool.lock().insert(1, third.clone());
        assert!(!slow.is_finished(), "the slow call was still waiting when the new connection was pooled");
        assert!(matches!(slow.await.expect("joined"), Err(RpcError::Timeout)));
        assert!(pool.pooled(1).is_some_and(|c| c.same(&third)), "the newer connection stays pooled");
        stop(server).await;
    }

    /// A plain pool keeps a connection whose call timed out, so calls to a
    /// server stay on one stream, in order (storage nodes' forwards).
    #[tokio::test]
    async fn a_plain_pool_keeps_a_connection_whose_call_timed_out() {
        let (_dir, endpoint, addrs, identity) = place();
        let pool = ConnPool::<u32, u32, u32>::new(identity, short_calls());
        let server = serve(&endpoint).await;
        pool.call(1, &addrs, &7, Bytes::new()).await.expect("call");
        let first = pool.pooled(1).expect("pooled");
        assert!(matches!(pool.call(1, &addrs, &0, Bytes::new()).await, Err(RpcError::Timeout)));
        assert!(pool.pooled(1).is_some_and(|c| c.same(&first)), "the same connection stays pooled");
        stop(server).await;
    }
}
