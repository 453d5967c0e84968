//! The client end of one connection, shared by many tasks.
//!
//! Callers never touch the socket: a call queues its frame for the writer and
//! waits on a oneshot that the reader fills when the reply with its request
//! id arrives, so replies may come back in any order. One driver task owns
//! both socket halves; either half failing ends the connection and fails
//! every waiting call with [`RpcError::Closed`].

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::timeout;
use tracing::{debug, Instrument};

use super::conn::{decode_body, encode_body, read_frame, write_frames, Frame, OutFrame, READ_BUF_BYTES};
use super::frame::{FrameHeader, FrameKind};
use super::pending::Pending;
use super::transport::{self, Stream};
use super::{handshake, Endpoint, RpcConfig, RpcError, SendGate};
use crate::credential::Identity;
use crate::limits::RPC_SEND_QUEUE_FRAMES;
use crate::unix_stream;

/// A connection to an RPC server speaking `Req` and answering `Resp`.
/// Cloning is cheap; clones share the connection. It is not re-established
/// when lost: once [`Self::is_closed`], connect anew.
pub struct RpcClient<Req, Resp> {
    inner: Arc<Inner>,
    /// `fn` so the client is Send and Sync whatever the message types are.
    _messages: PhantomData<fn(&Req) -> Resp>,
}

struct Inner {
    pending: Arc<Pending>,
    queue: mpsc::Sender<OutFrame>,
    next_id: AtomicU64,
    call_timeout: Duration,
    driver: AbortHandle,
}

impl<Req, Resp> RpcClient<Req, Resp>
where
    Req: Serialize + Send + Sync + 'static,
    Resp: DeserializeOwned + Send + 'static,
{
    /// Connects and authenticates within `config.connect_timeout`.
    pub async fn connect(endpoint: &Endpoint, identity: &Identity, config: RpcConfig) -> Result<Self, RpcError> {
        config.validate()?;
        let opening = Self::open(endpoint, identity, config.clone());
        let client = timeout(config.connect_timeout, opening).await.map_err(|_| RpcError::Timeout)??;
        debug!(%endpoint, "rpc client connected");
        Ok(client)
    }

    /// Sends `request` with `payload` and waits for the matching reply within
    /// the call timeout. Dropping the future abandons the call cleanly.
    pub async fn call(&self, request: &Req, payload: Bytes) -> Result<(Resp, Bytes), RpcError> {
        self.call_gated(request, payload, None).await
    }

    /// [`Self::call`], sent only while `gate` is open: checked now and again
    /// by the writer just before the frame goes out. A request the gate
    /// stops fails with [`RpcError::Gated`] and was never sent.
    pub async fn call_gated(
        &self,
        request: &Req,
        payload: Bytes,
        gate: Option<&Arc<dyn SendGate>>,
    ) -> Result<(Resp, Bytes), RpcError> {
        if gate.is_some_and(|g| !g.open()) {
            return Err(RpcError::Gated);
        }
        // Encode and check sizes before waiting on anything: a message that
        // can never be sent should fail at once.
        let body = encode_body(request)?;
        let header = FrameHeader::new(FrameKind::Request, 0, body.len(), payload.len())?;
        let exchange = self.inner.round_trip(header, body, payload, gate.cloned());
        let reply = timeout(self.inner.call_timeout, exchange).await.map_err(|_| RpcError::Timeout)??;
        match reply.header.kind {
            FrameKind::Response => Ok((decode_body(&reply.body)?, reply.payload)),
            FrameKind::Error => Err(RpcError::Remote(decode_body::<String>(&reply.body)?)),
            FrameKind::Request => Err(RpcError::Decode("a request frame came back as a reply".into())),
        }
    }

    /// Whether the connection has ended; every call now fails with `Closed`.
    pub fn is_closed(&self) -> bool {
        self.inner.pending.is_closed()
    }

    /// Whether `other` is a handle on this same connection.
    pub fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Calls sent and still awaiting their reply.
    pub fn in_flight(&self) -> usize {
        self.inner.pending.len()
    }

    async fn open(endpoint: &Endpoint, identity: &Identity, config: RpcConfig) -> Result<Self, RpcError> {
        match transport::connect(endpoint).await? {
            Stream::Tcp(stream) => {
                let (r, w) = stream.into_split();
                Self::start(r, w, identity, config, endpoint).await
            }
            Stream::Unix(stream) => {
                let (r, w) = unix_stream::split(stream)?;
                Self::start(r, w, identity, config, endpoint).await
            }
            Stream::Sim(stream) => {
                let (r, w) = stream.into_split();
                Self::start(r, w, identity, config, endpoint).await
            }
        }
    }

    /// Authenticates over the halves, then hands them to the driver task.
    async fn start<R, W>(
        r: R,
        mut w: W,
        identity: &Identity,
        config: RpcConfig,
        endpoint: &Endpoint,
    ) -> Result<Self, RpcError>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let mut r = BufReader::with_capacity(READ_BUF_BYTES, r);
        handshake::initiate(&mut r, &mut w, identity).await?;
        let pending = Arc::new(Pending::new(config.inflight_max));
        let (queue, outgoing) = mpsc::channel(RPC_SEND_QUEUE_FRAMES);
        let span = tracing::debug_span!("rpc_client", peer = %endpoint);
        let driver = tokio::spawn(drive(r, w, outgoing, pending.clone()).instrument(span));
        let inner = Inner {
            pending,
            queue,
            next_id: AtomicU64::new(1),
            call_timeout: config.call_timeout,
            driver: driver.abort_handle(),
        };
        Ok(Self { inner: Arc::new(inner), _messages: PhantomData })
    }
}

impl Inner {
    /// Everything between having a message and having its reply; the caller
    /// bounds it with the call deadline. Cancel safe: the slot and the
    /// pending entry are released by drop, and a frame not yet queued is
    /// simply not sent.
    async fn round_trip(
        &self,
        mut header: FrameHeader,
        body: Vec<u8>,
        payload: Bytes,
        gate: Option<Arc<dyn SendGate>>,
    ) -> Result<Frame, RpcError> {
        let _slot = self.pending.slot().await?;
        header.request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply_tx, reply_rx) = oneshot::channel();
        let _registration = self.pending.register(header.request_id, reply_tx)?;
        let frame = OutFrame { header, body, payload, gate: gate.clone() };
        self.queue.send(frame).await.map_err(|_| RpcError::Closed)?;
        // The writer drops the waiter of a frame its gate stopped; a gate
        // that is shut now is why (a connection that ended leaves it open).
        reply_rx.await.map_err(|_| match gate {
            Some(g) if !g.open() => RpcError::Gated,
            _ => RpcError::Closed,
        })
    }
}

/// Owns the connection: reads replies and writes queued calls until either
/// side ends, then fails whatever is still waiting.
async fn drive<R, W>(mut r: BufReader<R>, w: W, outgoing: mpsc::Receiver<OutFrame>, pending: Arc<Pending>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // The losing branch is dropped mid-operation; that is fine because the
    // connection is being torn down either way.
    let ended = tokio::select! {
        result = read_replies(&mut r, &pending) => result,
        result = write_frames(w, outgoing, |f| pending.abandon(f.header.request_id), || pending.others_in_flight()) => {
            result.map_err(RpcError::from)
        }
    };
    match ended {
        Ok(()) => debug!("rpc connection ended"),
        Err(e) => debug!(error = %e, "rpc connection failed"),
    }
    pending.close();
}

async fn read_replies<R: AsyncRead + Unpin>(r: &mut R, pending: &Pending) -> Result<(), RpcError> {
    while let Some(frame) = read_frame(r).await? {
        match frame.header.kind {
            FrameKind::Response | FrameKind::Error => pending.complete(frame),
            FrameKind::Request => {
                debug!(request_id = frame.header.request_id, "server sent a request frame; ignored")
            }
        }
    }
    Ok(())
}

impl Drop for Inner {
    /// The last clone is gone: nobody can be waiting, so stop the driver
    /// rather than let it linger on a peer that stopped reading.
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl<Req, Resp> Clone for RpcClient<Req, Resp> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), _messages: PhantomData }
    }
}

impl<Req, Resp> fmt::Debug for RpcClient<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcClient")
            .field("in_flight", &self.inner.pending.len())
            .field("closed", &self.inner.pending.is_closed())
            .finish()
    }
}
