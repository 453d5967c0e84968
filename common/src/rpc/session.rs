//! One server connection: handshake, then a reader loop that spawns a task
//! per request and a writer task that sends their replies in whatever order
//! they finish.
//!
//! All of a connection's tasks live in one `JoinSet`, so dropping the
//! connection task (server shutdown) aborts them and closes the socket.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::{JoinError, JoinSet};
use tokio::time::timeout;
use tracing::{debug, error, warn, Instrument};

use super::conn::{decode_body, others_hold_slots, read_frame, write_frames, Frame, OutFrame, READ_BUF_BYTES};
use super::frame::FrameKind;
use super::{handshake, RpcError, Service};
use crate::credential::{Keyring, Principal};
use crate::limits::{RPC_CONNECT_TIMEOUT_MS, RPC_SEND_QUEUE_FRAMES, RPC_SERVER_INFLIGHT_MAX, RPC_TIMEOUT_MS};

/// Serves one accepted connection until the peer leaves or breaks framing.
pub(crate) async fn run<S, R, W>(r: R, mut w: W, keyring: Keyring, service: Arc<S>)
where
    S: Service,
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut r = BufReader::with_capacity(READ_BUF_BYTES, r);
    // The deadline is what stops a silent stranger from holding this task
    // (and a connection slot) forever.
    let deadline = Duration::from_millis(RPC_CONNECT_TIMEOUT_MS);
    let outcome = match timeout(deadline, handshake::accept(&mut r, &mut w, &keyring)).await {
        Ok(result) => result,
        Err(_) => Err(RpcError::Timeout),
    };
    match outcome {
        Ok(caller) => {
            debug!(%caller, "rpc peer authenticated");
            serve_requests(r, w, service, Arc::new(caller)).await
        }
        Err(e) => debug!(error = %e, "rpc handshake failed"),
    }
}

/// The authenticated part of a connection.
async fn serve_requests<S, R, W>(mut r: R, w: W, service: Arc<S>, caller: Arc<Principal>)
where
    S: Service,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (queue, outgoing) = mpsc::channel(RPC_SEND_QUEUE_FRAMES);
    let slots = Arc::new(Semaphore::new(RPC_SERVER_INFLIGHT_MAX));
    let mut tasks = JoinSet::new();
    let in_flight = slots.clone();
    // Taken slots are the reader's, held while it reads (waits for) the
    // next request, and those of requests not yet answered (a request gives its
    // slot back just after queueing its reply): more than one taken means
    // another reply may follow the one in the writer's hands.
    let others = move || others_hold_slots(&in_flight, RPC_SERVER_INFLIGHT_MAX);
    tasks.spawn(async move {
        if let Err(e) = write_frames(w, outgoing, |_| {}, others).await {
            debug!(error = %e, "rpc write failed");
        }
    });
    // A dead writer closes the queue; stop reading requests nobody can answer.
    let result = tokio::select! {
        result = read_requests(&mut r, &queue, &slots, &service, &caller, &mut tasks) => result,
        () = queue.closed() => Err(RpcError::Closed),
    };
    drop(queue);
    match result {
        Ok(()) => drain(tasks).await,
        // Framing is lost or the socket broke: dropping `tasks` aborts the
        // requests and the writer, which closes the connection.
        Err(e) => debug!(error = %e, "rpc connection closed"),
    }
}

/// The peer finished sending: let its requests complete (a write half done
/// is worse than a write done), then the writer flushes and closes. Past the
/// call deadline nobody waits for the replies, so a request that takes
/// longer is aborted rather than left holding the connection slot.
async fn drain(mut tasks: JoinSet<()>) {
    let all_done = async {
        while let Some(joined) = tasks.join_next().await {
            reap(joined);
        }
    };
    if timeout(Duration::from_millis(RPC_TIMEOUT_MS), all_done).await.is_err() {
        debug!("rpc requests outlived their connection; aborted");
    }
}

/// Reads requests and spawns a task for each, at most
/// `RPC_SERVER_INFLIGHT_MAX` at a time. `Ok` on a clean end of stream.
async fn read_requests<S, R>(
    r: &mut R,
    queue: &mpsc::Sender<OutFrame>,
    slots: &Arc<Semaphore>,
    service: &Arc<S>,
    caller: &Arc<Principal>,
    tasks: &mut JoinSet<()>,
) -> Result<(), RpcError>
where
    S: Service,
    R: AsyncRead + Unpin,
{
    loop {
        // Waiting for a slot before reading is the backpressure: at the
        // limit we stop reading, the socket buffers fill and TCP slows the
        // client down.
        let slot = slots.clone().acquire_owned().await.map_err(|_| RpcError::Closed)?;
        let Some(frame) = read_frame(r).await? else { return Ok(()) };
        while let Some(joined) = tasks.try_join_next() {
            reap(joined);
        }
        let (service, queue, caller) = (service.clone(), queue.clone(), caller.clone());
        let span = tracing::debug_span!("rpc_request", request_id = frame.header.request_id);
        tasks.spawn(
            async move {
                let reply = handle(&*service, &caller, frame).await;
                // The slot is held until the reply is queued, so it also
                // bounds replies waiting for the writer. A failed send means
                // the connection is gone; there is nobody to tell.
                let _ = queue.send(reply).await;
                drop(slot);
            }
            .instrument(span),
        );
    }
}

/// Runs one request; any failure of ours becomes a kind=3 error reply, so
/// the connection stays usable.
async fn handle<S: Service>(service: &S, caller: &Principal, frame: Frame) -> OutFrame {
    let id = frame.header.request_id;
    if frame.header.kind != FrameKind::Request {
        debug!(kind = ?frame.header.kind, "non-request frame sent to a server");
        return OutFrame::error(id, "expected a request frame");
    }
    let request = match decode_body::<S::Request>(&frame.body) {
        Ok(request) => request,
        Err(e) => {
            debug!(error = %e, "undecodable request");
            return OutFrame::error(id, &e.to_string());
        }
    };
    let (response, payload) = service.call(caller, request, frame.payload).await;
    OutFrame::new(FrameKind::Response, id, &response, payload).unwrap_or_else(|e| {
        warn!(error = %e, "service response cannot be framed");
        OutFrame::error(id, &format!("the server cannot send its response: {e}"))
    })
}

pub(crate) fn reap(joined: Result<(), JoinError>) {
    if let Err(e) = joined {
        if e.is_panic() {
            error!(error = %e, "rpc task panicked");
        }
    }
}
