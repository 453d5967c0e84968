//! Connections to many servers, one per server id, made on first use and
//! replaced once closed. Storage nodes use it to reach their peers, clients
//! to reach storage nodes.

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
    pub fn new(identity: Identity, config: RpcConfig) -> Self {
        Self { identity, config, conns: Mutex::new(HashMap::new()) }
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
        if conn.is_closed() {
            self.lock().remove(&id);
        }
        result
    }

    /// Drops the connection to `id`, so the next call connects anew.
    pub fn forget(&self, id: K) {
        self.lock().remove(&id);
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
                Ok(conn) => {
                    // Two callers may race to connect; keep one, drop the other.
                    let kept = self.lock().entry(id).or_insert(conn).clone();
                    return Ok(kept);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, RpcClient<Req, Resp>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }
}
