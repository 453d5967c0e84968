//! The HTTP side: one hyper connection per client (HTTP/1.1 and h2), plain
//! or over TLS ([`crate::tls`]), the s3s service routing each request,
//! authenticated by [`Users`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use chuyi_client::Cluster;
use chuyi_common::seal::SealKey;
use chuyi_common::sm4::Kek;
use http::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{Method, Request, Version};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;

use crate::access::check::{Access, Peer, SharedAccess};
use crate::admission::{body_deadline, Admission, ConnectionLimits};
use crate::auth::{UserAuth, Users};
use crate::compact::COMPACT_BYTES_PER_S;
use crate::data::{Budget, DataPath, BUDGET_WAIT, DEFAULT_BUDGET_BYTES, PENDING_TTL};
use crate::domains::Domains;
use crate::gateway::Gateway;
use crate::metrics::{BodyCount, OpSlot, S3Metrics};
use crate::packs::{Packs, PACKED_OBJECT_MAX, PACK_GRACE, PACK_TTL, PACK_WINDOW};
use crate::qos::{Paced, QosSlot};
use crate::tls::Tls;

/// How a gateway serves.
#[derive(Debug, Clone)]
pub struct Options {
    /// The pool new buckets' objects go to.
    pub pool: String,
    /// How long object data being written may stay unclaimed before it is
    /// taken for a dead gateway's (plus as long again per GiB of it).
    pub pending_ttl: Duration,
    /// How long it appends small objects into one pack, and how long a
    /// pack stays writable (packs.rs).
    pub pack_window: Duration,
    pub pack_ttl: Duration,
    /// How long a pack's bytes outlive its last run, for GETs that read
    /// its place just before.
    pub pack_grace: Duration,
    /// How long deleted object data stays readable by GETs already under
    /// way (reclaim.rs).
    pub garbage_grace: Duration,
    /// Bytes per second its compactor copies at most.
    pub compact_bytes_per_s: u64,
    /// Largest object packed (0: every object has chunks of its own).
    pub packed_object_max: u64,
    /// How long a lifecycle day is (a real day; tests shorten it), and how
    /// often lifecycle passes over the buckets.
    pub lifecycle_day: Duration,
    pub lifecycle_every: Duration,
    /// The master key server-side encryption's bucket keys are wrapped
    /// under; none: encrypted objects are refused, the rest served.
    pub kek: Option<Kek>,
    /// Connection caps and timeouts (admission.rs).
    pub connections: ConnectionLimits,
    /// Bytes of request and response bodies held at once ([`Budget`]).
    pub memory_budget_bytes: u64,
    /// Domains under which the host names the bucket (domains.rs); none:
    /// path style only.
    pub domains: Domains,
    /// Where the gateway counts for Prometheus (metrics.rs); none: nothing
    /// counted.
    pub metrics: Option<Arc<S3Metrics>>,
}

impl Options {
    pub fn new(pool: impl Into<String>) -> Self {
        Self {
            pool: pool.into(),
            pending_ttl: PENDING_TTL,
            pack_window: PACK_WINDOW,
            pack_ttl: PACK_TTL,
            pack_grace: PACK_GRACE,
            garbage_grace: crate::reclaim::GARBAGE_GRACE,
            compact_bytes_per_s: COMPACT_BYTES_PER_S,
            packed_object_max: PACKED_OBJECT_MAX,
            lifecycle_day: Duration::from_secs(86_400),
            lifecycle_every: Duration::from_secs(600),
            kek: None,
            connections: ConnectionLimits::default(),
            memory_budget_bytes: DEFAULT_BUDGET_BYTES,
            domains: Domains::default(),
            metrics: None,
        }
    }
}

/// Builds the S3 service of a cluster (new buckets' objects go to `pool`)
/// and starts its reclaimer; `user_seal` opens the users' secret keys (a
/// frontend credential's).
pub fn service(cluster: Arc<Cluster>, user_seal: SealKey, pool: String) -> Service {
    service_with(cluster, user_seal, Options::new(pool))
}

/// What [`serve`] serves: the s3s service, and the buckets' CORS rules,
/// answered around it; and who may connect, for how long.
pub struct Service {
    s3: S3Service,
    cors: crate::cors::Rules,
    admission: Arc<Admission>,
    metrics: Option<Arc<S3Metrics>>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").finish_non_exhaustive()
    }
}

pub fn service_with(cluster: Arc<Cluster>, user_seal: SealKey, options: Options) -> Service {
    let users = Arc::new(Users::new(cluster.clone(), user_seal));
    let packs = Packs::new(options.pack_window, options.pack_ttl, options.packed_object_max);
    let budget = Budget::new(options.memory_budget_bytes, BUDGET_WAIT);
    let data = DataPath::new(cluster.clone(), options.pending_ttl, packs, budget);
    let graces = crate::reclaim::Graces { pack: options.pack_grace, garbage: options.garbage_grace };
    tokio::spawn(crate::reclaim::run(data.clone(), graces));
    tokio::spawn(crate::compact::run(data.clone(), options.compact_bytes_per_s));
    tokio::spawn(crate::lifecycle::run(data.clone(), options.lifecycle_day, options.lifecycle_every));
    let qos = chuyi_client::qos::Qos::start(cluster.clone());
    let access = Arc::new(Access::new(users.clone(), cluster.clone(), qos.clone()));
    let admission = Admission::new(options.connections);
    if let Some(m) = &options.metrics {
        m.serving(admission.clone(), qos, data.framing_counts());
    }
    let mut builder = S3ServiceBuilder::new(Gateway::new(
        data,
        access.clone(),
        options.pool,
        options.lifecycle_day,
        options.kek.map(Arc::new),
    ));
    if !options.domains.is_empty() {
        builder.set_host(options.domains);
    }
    builder.set_route(crate::admin::AdminRoute { users: users.clone(), cluster: cluster.clone() });
    builder.set_auth(UserAuth(users));
    builder.set_access(SharedAccess(access));
    Service { s3: builder.build(), cors: crate::cors::rules(cluster), admission, metrics: options.metrics }
}

/// Bytes of request line and headers one request may send, as S3 (8 KiB)
/// with room for long presigned URLs: larger gets 431.
pub const REQUEST_HEAD_MAX_BYTES: usize = 32 * 1024;

/// Serves S3 on `listener` until it fails; each connection on its own task.
pub async fn serve(listener: TcpListener, service: Service) -> std::io::Result<()> {
    serve_on(listener, Arc::new(service), None).await
}

/// How long a client has to finish its TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves S3 on `listener`, over TLS with `tls`'s certificate of the
/// moment when given, until accepting fails.
pub async fn serve_on(listener: TcpListener, service: Arc<Service>, tls: Option<Arc<Tls>>) -> std::io::Result<()> {
    if let (Some(metrics), Some(tls)) = (&service.metrics, &tls) {
        metrics.watching_tls(tls.clone());
    }
    loop {
        let (stream, peer) = listener.accept().await?;
        // Over a cap, closed at once: it costs nothing more.
        let admitted = match service.admission.admit(peer.ip()) {
            Ok(admitted) => admitted,
            Err(refused) => {
                tracing::debug!(%peer, %refused, "connection refused");
                continue;
            }
        };
        // Small responses go out at once, not after the peer's delayed
        // ACK (40 ms per 4 KiB GET without it, bench/RESULTS.md).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "TCP_NODELAY");
        }
        let service = service.clone();
        let acceptor = tls.as_ref().map(|tls| tls.acceptor());
        tokio::spawn(async move {
            let _admitted = admitted;
            let Some(acceptor) = acceptor else {
                if let Err(why) = first_bytes(&stream, service.admission.limits.head_timeout).await {
                    tracing::debug!(%peer, why, "connection closed before its first request");
                    return;
                }
                return connection(stream, Peer { addr: peer, secure: false }, service).await;
            };
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => connection(stream, Peer { addr: peer, secure: true }, service).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// HTTP/2's connection preface: hyper-util reads up to this much to tell
/// HTTP/2 from HTTP/1, with no timeout of its own.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits, up to `limit`, until a plain connection has sent enough for
/// its protocol to be told (any byte that is not HTTP/2's preface, or the
/// whole preface): before hyper's own header timeout runs, a silent client
/// would hold its connection forever.
async fn first_bytes(stream: &tokio::net::TcpStream, limit: Duration) -> Result<(), &'static str> {
    let wait = async {
        let mut buf = [0u8; 24];
        loop {
            let n = stream.peek(&mut buf).await.map_err(|_| "read error")?;
            if n == 0 {
                return Err("closed");
            }
            if n == buf.len() || !H2_PREFACE.starts_with(&buf[..n]) {
                return Ok(());
            }
            // A part of the preface: peek answers at once until more
            // comes, so wait a little between looks.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(limit, wait).await.unwrap_or(Err("no request in time"))
}

/// One client's connection, plain or TLS, served until it ends.
async fn connection<S>(stream: S, peer: Peer, service: Arc<Service>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let addr = peer.addr;
    let limits = service.admission.limits;
    let handle = hyper::service::service_fn(move |req| {
        let service = service.clone();
        async move {
            if req.method() == Method::OPTIONS {
                return Ok::<_, s3s::HttpError>(crate::cors::preflight(&service.cors, &req).await);
            }
            let arrived = std::time::Instant::now();
            if service.admission.refusals.blocked(addr.ip(), arrived) {
                let mut response = crate::digests::error_response(s3s::s3_error!(
                    SlowDown,
                    "Too many refused requests from this address: slow down"
                ));
                if wants_close(&req) {
                    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
                }
                if let Some(m) = &service.metrics {
                    m.answered(None, response.status().as_u16(), arrived.elapsed().as_secs_f64());
                }
                return Ok(response);
            }
            let slot = QosSlot::default();
            let op = OpSlot::default();
            let metrics = service.metrics.clone();
            let paused_us = Arc::new(AtomicU64::new(0));
            let (req, read) = watched(req, limits, paused_us.clone());
            let counted = metrics.clone().map(|metrics| BodyCount { metrics, noted: op.clone() });
            let mut req = req.map(|body| Paced::new(body, slot.clone(), false, paused_us, counted.clone()));
            req.extensions_mut().insert(slot.clone());
            req.extensions_mut().insert(op.clone());
            let closes = wants_close(&req);
            let origin = crate::cors::Origin::of(&req);
            let now = chuyi_common::clock::unix_ms() as i64 / 1000;
            let mut response = match crate::presigned::check(req.uri().query(), now) {
                Err(e) => crate::digests::error_response(e),
                Ok(()) => match crate::digests::checked(req).await {
                    Ok(mut req) => {
                        req.extensions_mut().insert(peer);
                        service.s3.call(req).await?
                    }
                    Err(e) => crate::digests::error_response(e),
                },
            };
            if response.status() == http::StatusCode::FORBIDDEN {
                service.admission.refusals.refused(addr.ip(), std::time::Instant::now());
            }
            if let Some(origin) = origin {
                origin.allow(&service.cors, response.headers_mut()).await;
            }
            if let Some(m) = &metrics {
                m.answered(Some(&op), response.status().as_u16(), arrived.elapsed().as_secs_f64());
            }
            if slot.limiters().is_some() || counted.is_some() {
                let paced = |body| Paced::new(body, slot, true, Arc::new(AtomicU64::new(0)), counted);
                response = response.map(|body| s3s::Body::http_body_unsync(paced(body)));
            }
            if closes && !read.load(Ordering::Acquire) {
                // The body was refused unread (403, 404, 400 before
                // the data): hyper will not reuse the connection
                // past the unread bytes, so say so, or the client
                // sends its next request into a closing socket.
                response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, s3s::HttpError>(response)
        }
    });
    let mut builder = Builder::new(TokioExecutor::new());
    // hyper's header timeout runs from when a connection waits for a
    // request's head: it is the idle keep-alive timeout too.
    builder
        .http1()
        .max_buf_size(REQUEST_HEAD_MAX_BYTES)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout);
    let served = builder.serve_connection(TokioIo::new(stream), handle).await;
    if let Err(e) = served {
        tracing::debug!(peer = %addr, error = %e, "s3 connection ended");
    }
}

/// A request body that notes when it has been read to its end, and is
/// cut when it falls behind its minimum rate ([`body_deadline`]).
struct Watched {
    inner: Incoming,
    read: Arc<AtomicBool>,
    limits: ConnectionLimits,
    /// When the body began, and by when (from then) it must send more.
    started: tokio::time::Instant,
    deadline: Duration,
    /// Made the first time the body has nothing to give, moved by each frame.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Time the body was held back by QoS pacing (crate::qos::Paced): the
    /// gateway's, not the client's, so it moves the deadline.
    paused_us: Arc<AtomicU64>,
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error(transparent)]
    Http(#[from] hyper::Error),
    #[error("the body fell behind {0} bytes/s for {1:?}")]
    Stalled(u64, Duration),
}

/// The request with its body watched, and the flag it sets once read whole.
fn watched(
    req: Request<Incoming>,
    limits: ConnectionLimits,
    paused_us: Arc<AtomicU64>,
) -> (Request<Watched>, Arc<AtomicBool>) {
    let read = Arc::new(AtomicBool::new(req.body().is_end_stream()));
    let flag = read.clone();
    let (started, deadline) = (tokio::time::Instant::now(), limits.body_stall_timeout);
    (req.map(|inner| Watched { inner, read: flag, limits, started, deadline, stall: None, paused_us }), read)
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.read.store(true, Ordering::Release);
        }
        let paused = Duration::from_micros(self.paused_us.load(Ordering::Relaxed));
        let (limits, started) = (self.limits, self.started + paused);
        match polled {
            Poll::Ready(frame) => {
                let bytes = match &frame {
                    Some(Ok(f)) => f.data_ref().map_or(0, |d| d.len() as u64),
                    _ => 0,
                };
                let now = started.elapsed();
                self.deadline =
                    body_deadline(self.deadline, now, bytes, limits.body_min_rate, limits.body_stall_timeout);
                let at = started + self.deadline;
                if let Some(stall) = self.stall.as_mut() {
                    stall.as_mut().reset(at);
                }
                Poll::Ready(frame.map(|f| f.map_err(BodyError::from)))
            }
            Poll::Pending => {
                let at = started + self.deadline;
                let stall = self.stall.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                // Time paced by QoS since the timer was set moves it later.
                if stall.deadline() != at {
                    stall.as_mut().reset(at);
                }
                match stall.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Some(Err(BodyError::Stalled(limits.body_min_rate, limits.body_stall_timeout))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether an unread body must close the connection: an HTTP/1 request
/// that sent one (h2 resets the stream by itself).
fn wants_close<B>(req: &Request<B>) -> bool {
    let has_body = req.headers().contains_key(TRANSFER_ENCODING)
        || req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).is_some_and(|v| v != "0");
    has_body && req.version() <= Version::HTTP_11
}
