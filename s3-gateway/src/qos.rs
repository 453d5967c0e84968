//! QoS on the S3 side: each request's turn in the request rates of the
//! rules it answers to (its user on its bucket, or its user and its
//! bucket: `chuyi_meta_api::qos::s3_scopes`), and its bodies paced in
//! their byte rates. The limiters and the shares across gateways are
//! chuyi-client's `qos`.
//!
//! The access check ([`crate::access::check`]) knows the caller and the
//! bucket, so it takes the request's turn ([`admit`]): at once, after a
//! wait of at most [`REQUEST_WAIT_MAX`], or `503 SlowDown` with nothing
//! taken. It leaves the limiters in the request's [`QosSlot`], which the
//! server made before it knew them: the request body, already wrapped in
//! a [`Paced`] body by then, finds them there for its first frame, and the
//! response body is wrapped after the operation. A paced body is never
//! failed, only slowed; requests of other users and buckets share nothing
//! with it but the CPU. The same wrapper counts body bytes for the
//! gateway's metrics.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chuyi_client::qos::{self, Limiter, Tickets, WAIT_SLICE};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use s3s::{s3_error, S3Result};

use crate::metrics::BodyCount;

/// How long a request waits for its turn before `503 SlowDown`.
pub const REQUEST_WAIT_MAX: Duration = Duration::from_millis(chuyi_meta_api::qos::REQUEST_WAIT_MAX_MS);

/// The limiters of one request, set by the access check.
#[derive(Clone, Debug, Default)]
pub struct QosSlot(Arc<OnceLock<Vec<Arc<Limiter>>>>);

impl QosSlot {
    pub fn limiters(&self) -> Option<&[Arc<Limiter>]> {
        self.0.get().map(Vec::as_slice).filter(|l| !l.is_empty())
    }
}

/// Whether s3s's operation `op` reads (the read-request rate) or writes.
pub fn reads(op: &str) -> bool {
    op.starts_with("Get") || op.starts_with("Head") || op.starts_with("List")
}

/// Takes the turn of a request doing `op` in the rates of `limiters`,
/// and leaves them in `slot` for its bodies.
pub async fn admit(limiters: Vec<Arc<Limiter>>, op: &str, slot: Option<&QosSlot>) -> S3Result<()> {
    if limiters.is_empty() {
        return Ok(());
    }
    if let Err(refused) = qos::admit(&limiters, &qos::request_takes(reads(op), 1.0), REQUEST_WAIT_MAX).await {
        tracing::debug!(%refused, op, "request refused by QoS");
        return Err(s3_error!(SlowDown, "Please reduce your request rate: {} is over its rate", refused.scope));
    }
    if let Some(slot) = slot {
        // Set once per request: a second check (none today) keeps the first.
        let _ = slot.0.set(limiters);
    }
    Ok(())
}

/// A body paced by the limiters its request's slot holds (none: passed
/// through as it comes).
pub struct Paced<B> {
    inner: B,
    slot: QosSlot,
    /// To the client (a response) or from it (a request).
    out: bool,
    held: Option<Held>,
    /// Time this body spent paced, for the request body's minimum-rate
    /// watch, which must not count it as the client's.
    paused_us: Arc<AtomicU64>,
    /// Where its bytes are counted.
    counted: Option<BodyCount>,
}

/// A frame waiting for its turn.
struct Held {
    frame: Frame<Bytes>,
    tickets: Vec<Tickets>,
    sleep: Pin<Box<tokio::time::Sleep>>,
    since: Instant,
}

impl<B> std::fmt::Debug for Paced<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Paced").field("out", &self.out).field("held", &self.held.is_some()).finish_non_exhaustive()
    }
}

impl<B> Paced<B> {
    pub fn new(inner: B, slot: QosSlot, out: bool, paused_us: Arc<AtomicU64>, counted: Option<BodyCount>) -> Self {
        Self { inner, slot, out, held: None, paused_us, counted }
    }
}

impl<B> HttpBody for Paced<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(held) = this.held.as_mut() {
                ready!(held.sleep.as_mut().poll(cx));
                let limiters = this.slot.limiters().unwrap_or_default();
                let now = Instant::now();
                let wait = qos::still_waits(limiters, &held.tickets, now);
                if !wait.is_zero() {
                    held.sleep.as_mut().reset((now + wait.min(WAIT_SLICE)).into());
                    continue;
                }
                let held = this.held.take().expect("held");
                let paused = held.since.elapsed();
                this.paused_us.fetch_add(paused.as_micros() as u64, Ordering::Relaxed);
                limiters.iter().for_each(|l| {
                    l.count(|c| {
                        c.delayed += 1;
                        c.delayed_ms += paused.as_millis() as u64;
                    })
                });
                return Poll::Ready(Some(Ok(held.frame)));
            }
            let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                other => return Poll::Ready(other),
            };
            let n = frame.data_ref().map_or(0, |d| d.len() as u64);
            if let Some(counted) = &this.counted {
                counted.add(this.out, n);
            }
            let Some(limiters) = this.slot.limiters().filter(|_| n > 0) else {
                return Poll::Ready(Some(Ok(frame)));
            };
            let out = this.out;
            limiters.iter().for_each(|l| l.count(|c| if out { c.bytes_out += n } else { c.bytes_in += n }));
            let now = Instant::now();
            let (tickets, wait) = qos::take_all(limiters, &qos::byte_takes(out, n), now);
            if wait.is_zero() {
                return Poll::Ready(Some(Ok(frame)));
            }
            let sleep = Box::pin(tokio::time::sleep(wait.min(WAIT_SLICE)));
            this.held = Some(Held { frame, tickets, sleep, since: now });
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.held {
            None => self.inner.size_hint(),
            // The held frame is still to come.
            Some(held) => {
                let n = held.frame.data_ref().map_or(0, |d| d.len() as u64);
                let inner = self.inner.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + n);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + n);
                }
                hint
            }
        }
    }
}
