//! The transmission phase: requests read in order (each, if a QoS rule has
//! its volume, after its turn in the rule's rates: a throttled client's
//! requests wait unread, holding no memory), served concurrently, answered
//! in the order they complete.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use chuyi_client::qos::{pace_volume, Qos, VolumeLimiter};
use chuyi_client::{ClientError, VolumeExtent};
use chuyi_common::proto::chunk::ChunkErrorKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::crypt;
use crate::metrics::{NbdMetrics, VolumeMetrics};
use crate::proto::*;
use crate::server::{NbdError, Served};

/// Requests of one connection being served at once.
const IN_FLIGHT: usize = 128;
/// Request data of one connection held in memory at once, in MiB: a client
/// sending many large writes waits instead of filling the frontend's memory.
const IN_FLIGHT_MIB: u32 = 256;
/// The most bytes one BLOCK_STATUS reply describes; a client asking about
/// more gets a shorter answer and asks again from where it ends.
const BLOCK_STATUS_MAX: u64 = 1 << 30;

/// How requests of one connection are answered.
#[derive(Clone, Copy, Debug)]
pub struct Session {
    /// Reads and block status answer with structured replies.
    pub structured: bool,
    /// `base:allocation` was selected: BLOCK_STATUS is allowed.
    pub allocation: bool,
}

/// A reply on its way to the socket: the fixed part and the data after it.
type Outgoing = (ReplyHead, Bytes);

/// What a served request produced.
enum Answer {
    Done,
    Data(Bytes),
    Extents(Vec<VolumeExtent>),
}

/// What a connection shares with the frontend's others.
#[derive(Clone, Debug)]
pub(crate) struct Shared {
    /// MiB of request data held at once over every connection.
    pub budget: Arc<Semaphore>,
    /// The budget's size, in MiB.
    pub budget_mib: u32,
    /// How long a connection may send no request; none: forever.
    pub idle_timeout: Option<Duration>,
    /// The volumes' QoS rules (`chuyi volume set --iops --mbps`).
    pub qos: Arc<Qos>,
    /// Where commands are counted for Prometheus.
    pub metrics: Option<Arc<NbdMetrics>>,
}

/// A request's share of both memory budgets, given back once its reply is
/// queued.
struct Held {
    _connection: OwnedSemaphorePermit,
    _frontend: OwnedSemaphorePermit,
}

/// Serves requests until DISC, the connection ends, the volume's fence
/// closes, or (when set) the client sends nothing for the idle timeout.
pub(crate) async fn transmission<R, W>(
    served: Served,
    session: Session,
    shared: Shared,
    mut r: R,
    w: W,
) -> Result<(), NbdError>
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin + Send + 'static,
{
    let (replies, outbox) = mpsc::channel::<Outgoing>(IN_FLIGHT);
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let writer = tokio::spawn(write_replies(outbox, w, slots.clone()));
    let fence = served.fence.clone();
    let served_name = served.vol.volume().name.clone();
    let encrypted = served.crypt.is_some();
    let limiter = VolumeLimiter::new(shared.qos.clone(), &served_name, &served.vol.volume().pool);
    let mut conn = Connection {
        size: served.vol.size(),
        served,
        session,
        slots,
        budget: Arc::new(Semaphore::new(IN_FLIGHT_MIB as usize)),
        metrics: shared.metrics.as_ref().map(|m| Arc::new(m.volume(&served_name, encrypted))),
        limiter,
        shared: shared.clone(),
        tasks: JoinSet::new(),
        replies,
    };
    // Never: a connection without an idle timeout waits as long as it is open.
    let idle = shared.idle_timeout.unwrap_or(Duration::MAX);
    let fence_closed = fence.closed();
    tokio::pin!(fence_closed);
    let result = loop {
        let mut header = [0u8; REQUEST_LEN];
        tokio::select! {
            biased;
            () = &mut fence_closed => {
                // Not even error replies: the client reconnects, and
                // reattaches once the lease is settled.
                conn.tasks.abort_all();
                break Err(NbdError::LeaseLost(conn.served.vol.volume().name.clone()));
            }
            read = tokio::time::timeout(idle, r.read_exact(&mut header)) => {
                match read {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => break Err(e.into()),
                    Err(_) => break Err(NbdError::Protocol(format!("no request for {idle:?}"))),
                }
            }
        }
        let Some(req) = Request::parse(&header) else {
            break Err(NbdError::Protocol("request with a bad magic".into()));
        };
        if let Some(end) = conn.request(req, &mut r).await {
            break end;
        }
        // Reap finished tasks as we go.
        while conn.tasks.try_join_next().is_some() {}
    };
    // Requests already taken are answered before the connection closes.
    while conn.tasks.join_next().await.is_some() {}
    drop(conn);
    let _ = writer.await;
    result
}

/// Writes replies in the order they are queued, as the RPC writer does
/// (`chuyi_common::rpc`): while other requests are in flight (a request
/// holds its slot until just after its reply is queued, so by the time the
/// writer runs, taken slots are those of requests not yet answered) it
/// first yields once, letting the thread's other ready tasks, requests
/// finished with this one, queue theirs; then it writes what is queued, at
/// most one outbox's worth, and flushes: one syscall for the replies of a
/// scheduler round, and no wait at QD1.
async fn write_replies<W: AsyncWriteExt + Unpin>(
    mut outbox: mpsc::Receiver<Outgoing>,
    mut w: W,
    slots: Arc<Semaphore>,
) -> std::io::Result<()> {
    while let Some(reply) = outbox.recv().await {
        if slots.available_permits() < IN_FLIGHT {
            tokio::task::yield_now().await;
        }
        write_reply(&mut w, reply).await?;
        for _ in 1..IN_FLIGHT {
            let Ok(reply) = outbox.try_recv() else { break };
            write_reply(&mut w, reply).await?;
        }
        w.flush().await?;
    }
    w.flush().await
}

async fn write_reply<W: AsyncWriteExt + Unpin>(w: &mut W, (head, data): Outgoing) -> std::io::Result<()> {
    w.write_all(head.as_bytes()).await?;
    w.write_all(&data).await
}

/// One connection's transmission state.
struct Connection {
    served: Served,
    session: Session,
    size: u64,
    /// Requests served at once.
    slots: Arc<Semaphore>,
    /// MiB of request data held at once.
    budget: Arc<Semaphore>,
    shared: Shared,
    /// The volume's counters, when the frontend counts.
    metrics: Option<Arc<VolumeMetrics>>,
    /// The volume's QoS limiter.
    limiter: VolumeLimiter,
    tasks: JoinSet<()>,
    replies: mpsc::Sender<Outgoing>,
}

impl Connection {
    /// The memory a request of `len` bytes holds, from this connection's
    /// budget and the frontend's; `None` once the connection is closing.
    async fn hold(&self, len: u32) -> Option<Held> {
        let connection = self.budget.clone().acquire_many_owned(mib(len)).await.ok()?;
        let frontend =
            self.shared.budget.clone().acquire_many_owned(mib(len).min(self.shared.budget_mib)).await.ok()?;
        Some(Held { _connection: connection, _frontend: frontend })
    }

    /// Takes one request (and a write's payload from `r`) and starts serving
    /// it. `Some` ends the connection with that result.
    async fn request<R: AsyncReadExt + Unpin>(&mut self, req: Request, r: &mut R) -> Option<Result<(), NbdError>> {
        let in_bounds = req.offset.checked_add(u64::from(req.length)).is_some_and(|e| e <= self.size);
        // Encrypted volumes are enciphered per 4 KiB block: a request must
        // cover whole ones (the minimum block size they advertise).
        let whole_blocks = self.served.crypt.is_none() || crypt::aligned(req.offset, req.length);
        let replier = Replier {
            replies: self.replies.clone(),
            cookie: req.cookie,
            offset: req.offset,
            flags: req.flags,
            kind: req.kind,
            length: req.length,
            session: self.session,
        };
        match req.kind {
            CMD_DISC => return Some(Ok(())),
            CMD_WRITE if req.length > MAX_REQUEST => {
                // Its payload cannot be skipped safely: answer and close.
                replier.error(EINVAL, "write larger than the maximum request").await;
                return Some(Err(NbdError::Protocol(format!("write of {} bytes", req.length))));
            }
            CMD_WRITE => return self.write(req, r, replier, in_bounds, whole_blocks).await,
            CMD_TRIM | CMD_WRITE_ZEROES if self.served.read_only() => {
                replier.error(EPERM, "a snapshot is read-only").await;
            }
            CMD_READ if req.length > MAX_REQUEST => replier.error(EINVAL, "read larger than the maximum request").await,
            CMD_READ if !in_bounds => replier.error(EINVAL, "read past the end of the volume").await,
            CMD_READ | CMD_TRIM | CMD_WRITE_ZEROES if !whole_blocks => replier.error(EINVAL, crypt::UNALIGNED).await,
            CMD_READ => {
                // Its turn first, then memory: a throttled volume holds no
                // share of the frontend's budget while it waits.
                pace_volume(self.limiter.get(), true, u64::from(req.length)).await;
                let Some(held) = self.hold(req.length).await else {
                    return Some(Ok(()));
                };
                let (vol, crypt) = (self.served.vol.clone(), self.served.crypt.clone());
                self.spawn(replier, Some(held), async move {
                    let data = vol.read(req.offset, u64::from(req.length)).await?;
                    Ok(Answer::Data(match crypt {
                        Some(xts) => crypt::decrypt(&xts, req.offset, data),
                        None => data,
                    }))
                })
                .await;
            }
            CMD_FLUSH => {
                let vol = self.served.vol.clone();
                self.spawn(replier, None, async move { vol.flush().await.map(|()| Answer::Done) }).await;
            }
            CMD_TRIM | CMD_WRITE_ZEROES if !in_bounds => replier.error(ENOSPC, "past the end of the volume").await,
            CMD_TRIM | CMD_WRITE_ZEROES => {
                let fua = req.flags & CMD_FLAG_FUA != 0;
                let vol = self.served.vol.clone();
                // One operation: it sends no data.
                pace_volume(self.limiter.get(), false, 0).await;
                self.spawn(replier, None, async move {
                    vol.zero(req.offset, u64::from(req.length), fua).await.map(|()| Answer::Done)
                })
                .await;
            }
            CMD_BLOCK_STATUS if !self.session.allocation => {
                replier.error(EINVAL, "no metadata context was selected").await;
            }
            CMD_BLOCK_STATUS if req.length == 0 || !in_bounds => {
                replier.error(EINVAL, "block status of an empty range or past the end").await;
            }
            CMD_BLOCK_STATUS => {
                let vol = self.served.vol.clone();
                let len = u64::from(req.length).min(BLOCK_STATUS_MAX);
                self.spawn(replier, None, async move { vol.extents(req.offset, len).await.map(Answer::Extents) }).await;
            }
            _ => replier.error(EINVAL, "unknown command").await,
        }
        None
    }

    /// A write: its payload is read whatever happens (the stream stays in
    /// step), then checked, enciphered if the volume is, and written.
    async fn write<R: AsyncReadExt + Unpin>(
        &mut self,
        req: Request,
        r: &mut R,
        replier: Replier,
        in_bounds: bool,
        whole_blocks: bool,
    ) -> Option<Result<(), NbdError>> {
        // Its turn before its payload is read: a throttled writer's data
        // waits in the client, not in the frontend's memory.
        if in_bounds && whole_blocks {
            pace_volume(self.limiter.get(), false, u64::from(req.length)).await;
        }
        let Some(held) = self.hold(req.length).await else { return Some(Ok(())) };
        let mut data = BytesMut::zeroed(req.length as usize);
        if let Err(e) = r.read_exact(&mut data).await {
            return Some(Err(e.into()));
        }
        if self.served.read_only() {
            replier.error(EPERM, "a snapshot is read-only").await;
        } else if !in_bounds {
            replier.error(ENOSPC, "write past the end of the volume").await;
        } else if !whole_blocks {
            replier.error(EINVAL, crypt::UNALIGNED).await;
        } else {
            let fua = req.flags & CMD_FLAG_FUA != 0;
            let (vol, crypt) = (self.served.vol.clone(), self.served.crypt.clone());
            self.spawn(replier, Some(held), async move {
                if let Some(xts) = crypt {
                    crypt::encrypt(&xts, req.offset, &mut data);
                }
                vol.write(req.offset, data.freeze(), fua).await.map(|()| Answer::Done)
            })
            .await;
        }
        None
    }

    /// Serves `work` on a task of its own, fenced by the volume's lease,
    /// once a slot is free.
    async fn spawn(
        &mut self,
        replier: Replier,
        // Memory budget of the request's data, given back once its reply
        // is queued.
        held: Option<Held>,
        work: impl std::future::Future<Output = Result<Answer, ClientError>> + Send + 'static,
    ) {
        let Ok(slot) = self.slots.clone().acquire_owned().await else { return };
        let fence = self.served.fence.clone();
        let counted = self.metrics.clone();
        let started = std::time::Instant::now();
        self.tasks.spawn(async move {
            // Once the lease may have run out, no retry of this request may
            // reach a storage node: it is dropped unanswered, and the
            // connection closes.
            if !fence.holds() {
                return;
            }
            let outcome = tokio::select! {
                biased;
                () = fence.closed() => return,
                outcome = work => outcome,
            };
            if let Some(metrics) = counted {
                let seconds = started.elapsed().as_secs_f64();
                metrics.served(replier.kind, u64::from(replier.length), outcome.is_ok(), seconds);
            }
            match outcome {
                Ok(answer) => replier.answer(answer).await,
                Err(e) => {
                    tracing::warn!(cookie = replier.cookie, error = %e, "nbd request failed");
                    replier.error(errno(&e), &e.to_string()).await;
                }
            }
            drop((slot, held));
        });
    }
}

/// Answers one request in the form the session and command call for.
struct Replier {
    replies: mpsc::Sender<Outgoing>,
    cookie: u64,
    offset: u64,
    flags: u16,
    kind: u16,
    length: u32,
    session: Session,
}

impl Replier {
    /// Reads and block status answer in structured chunks once structured
    /// replies are on; everything else keeps simple replies, which the
    /// protocol allows.
    fn structured(&self) -> bool {
        self.session.structured && matches!(self.kind, CMD_READ | CMD_BLOCK_STATUS)
    }

    async fn send(&self, head: ReplyHead, data: Bytes) {
        let _ = self.replies.send((head, data)).await;
    }

    async fn error(&self, errno: u32, message: &str) {
        if self.structured() {
            let message = Bytes::copy_from_slice(truncate(message, MAX_MESSAGE).as_bytes());
            self.send(ReplyHead::error(self.cookie, errno, message.len() as u16), message).await;
        } else {
            self.send(ReplyHead::simple(errno, self.cookie), Bytes::new()).await;
        }
    }

    async fn answer(&self, answer: Answer) {
        let cookie = self.cookie;
        match answer {
            Answer::Data(data) if self.structured() && data.is_empty() => {
                self.send(ReplyHead::none(cookie), data).await
            }
            Answer::Data(data) if self.structured() => {
                // `len` fits: reads are at most MAX_REQUEST.
                let head = ReplyHead::offset_data(cookie, self.offset, data.len() as u32);
                self.send(head, data).await;
            }
            Answer::Extents(extents) => {
                let one = self.flags & CMD_FLAG_REQ_ONE != 0;
                match descriptors(&extents, one) {
                    Some((count, descriptors)) => {
                        self.send(ReplyHead::block_status(cookie, ALLOCATION_CONTEXT_ID, count), descriptors).await;
                    }
                    None => self.error(EIO, "no allocation information for this range").await,
                }
            }
            Answer::Data(data) => self.send(ReplyHead::simple(0, cookie), data).await,
            Answer::Done => self.send(ReplyHead::simple(0, cookie), Bytes::new()).await,
        }
    }
}

/// Block status descriptors (length, flags) of `base:allocation`: zero runs
/// are holes that read as zeros. With `one`, only the first. `None` when
/// there is nothing to describe (a reply needs at least one descriptor) or
/// a run does not fit a descriptor.
fn descriptors(extents: &[VolumeExtent], one: bool) -> Option<(u32, Bytes)> {
    let take = if one { 1 } else { extents.len() };
    let mut out = BytesMut::with_capacity(8 * take);
    for e in extents.iter().take(take) {
        out.put_u32(u32::try_from(e.len).ok().filter(|&l| l > 0)?);
        out.put_u32(if e.data { 0 } else { STATE_HOLE | STATE_ZERO });
    }
    let count = (out.len() / 8) as u32;
    (count > 0).then(|| (count, out.freeze()))
}

/// The longest error message sent: the protocol's limit on strings.
const MAX_MESSAGE: usize = 4096;

/// `s` cut to at most `max` bytes, at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Whole MiB of the memory budget a request of `len` bytes takes (at least one).
fn mib(len: u32) -> u32 {
    len.div_ceil(1 << 20).max(1)
}

fn errno(e: &ClientError) -> u32 {
    match e {
        ClientError::Chunk { error, .. } if error.kind == ChunkErrorKind::NoSpace => ENOSPC,
        ClientError::OutOfRange { .. } => EINVAL,
        ClientError::Chunk { error, .. } if error.kind == ChunkErrorKind::InvalidArgument => EINVAL,
        _ => EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_mark_zero_runs_as_holes_and_req_one_keeps_the_first() {
        let extents = [VolumeExtent { len: 8192, data: true }, VolumeExtent { len: 4096, data: false }];
        let (n, d) = descriptors(&extents, false).expect("described");
        assert_eq!(n, 2);
        assert_eq!(&d[..], &[0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 3]);
        let (n, d) = descriptors(&extents, true).expect("described");
        assert_eq!((n, d.len()), (1, 8));
        assert_eq!(descriptors(&[], false), None, "a reply needs a descriptor");
        assert_eq!(descriptors(&[VolumeExtent { len: 1 << 32, data: true }], false), None);
    }
}
