//! Frames on a connection, shared by client and server: reading one frame
//! from a buffered read half, and the writer loop that drains a send queue.
//!
//! Payloads are read straight into an [`AlignedBuf`], so they arrive
//! block-aligned and reach O_DIRECT without another copy. The writer flushes
//! only when its queue is momentarily empty, and, while other requests are
//! in flight, only after letting the other tasks its thread has ready run
//! once, so replies (or calls) finished in the same round of the scheduler
//! share one syscall (measured in bench/RESULTS.md, issue 20); payloads
//! larger than the write buffer pass through it without being copied
//! (BufWriter writes them directly).

use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, Semaphore};

use super::frame::{FrameHeader, FrameKind, HEADER_LEN};
use super::RpcError;
use crate::buf::AlignedBuf;
use crate::limits::RPC_SEND_QUEUE_FRAMES;

/// Read buffer per connection: many small frames per syscall.
pub(crate) const READ_BUF_BYTES: usize = 64 * 1024;

/// Write buffer per connection; payloads at least this large bypass it.
pub(crate) const WRITE_BUF_BYTES: usize = 64 * 1024;

// A u32 length from the wire must convert to usize without loss.
const _: () = assert!(usize::BITS >= 32);

/// A received frame.
#[derive(Debug)]
pub(crate) struct Frame {
    pub header: FrameHeader,
    pub body: Vec<u8>,
    /// Block-aligned when not empty.
    pub payload: Bytes,
}

/// Whether a queued request may still go out. The writer asks just before
/// the frame's first byte is written: a request from a writer whose right
/// to write lapsed while it sat in the queue (a frontend frozen, then
/// resumed after its lease ran out) is dropped there, never sent.
pub trait SendGate: Send + Sync + std::fmt::Debug {
    fn open(&self) -> bool;
}

/// A frame queued for the writer.
#[derive(Debug)]
pub(crate) struct OutFrame {
    pub header: FrameHeader,
    pub body: Vec<u8>,
    pub payload: Bytes,
    /// Checked right before sending; `None` for frames always sent.
    pub gate: Option<Arc<dyn SendGate>>,
}

impl OutFrame {
    /// A frame carrying `message`, refused when over a size limit.
    pub fn new<T: Serialize + ?Sized>(
        kind: FrameKind,
        request_id: u64,
        message: &T,
        payload: Bytes,
    ) -> Result<Self, RpcError> {
        let body = encode_body(message)?;
        let header = FrameHeader::new(kind, request_id, body.len(), payload.len())?;
        Ok(Self { header, body, payload, gate: None })
    }

    /// A kind=3 error reply for `request_id`. The message is ours and short,
    /// so it always fits the body limit.
    pub fn error(request_id: u64, message: &str) -> Self {
        let body = encode_body(message).unwrap_or_default();
        let header = FrameHeader {
            version: super::frame::FRAME_VERSION,
            kind: FrameKind::Error,
            request_id,
            body_len: body.len() as u32,
            payload_len: 0,
        };
        Self { header, body, payload: Bytes::new(), gate: None }
    }
}

pub(crate) fn encode_body<T: Serialize + ?Sized>(message: &T) -> Result<Vec<u8>, RpcError> {
    postcard::to_stdvec(message).map_err(|e| RpcError::Encode(e.to_string()))
}

/// Decodes a whole body; trailing bytes mean the peer speaks another version
/// of the message, which is an error rather than something to skip.
pub(crate) fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, RpcError> {
    match postcard::take_from_bytes(body) {
        Ok((message, [])) => Ok(message),
        Ok((_, rest)) => Err(RpcError::Decode(format!("{} trailing bytes", rest.len()))),
        Err(e) => Err(RpcError::Decode(e.to_string())),
    }
}

/// Reads the next frame; `None` on a clean end of stream between frames.
/// Not cancel safe: a frame half read is lost, so callers only drop it when
/// they are closing the connection anyway.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Frame>, RpcError> {
    let Some(raw) = read_header(r).await? else { return Ok(None) };
    let header = FrameHeader::decode(&raw)?;
    let mut body = vec![0u8; header.body_len as usize];
    r.read_exact(&mut body).await?;
    let payload = match header.payload_len as usize {
        0 => Bytes::new(),
        len => {
            let mut buf = AlignedBuf::zeroed(len);
            r.read_exact(&mut buf).await?;
            buf.freeze()
        }
    };
    Ok(Some(Frame { header, body, payload }))
}

/// The raw header, or `None` when the stream ends before its first byte.
async fn read_header<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<[u8; HEADER_LEN]>, RpcError> {
    let mut raw = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        match r.read(&mut raw[filled..]).await? {
            0 if filled == 0 => return Ok(None),
            0 => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
            n => filled += n,
        }
    }
    Ok(Some(raw))
}

/// Whether more than one of a connection's `max` in-flight slots is taken:
/// one is accounted for by the frame in the writer's hands (the call it
/// carries, or on a server the reader waiting for the next request), so
/// another means a frame may be about to join it. Read from the semaphore,
/// without a lock, since the writer asks once per frame.
pub(crate) fn others_hold_slots(slots: &Semaphore, max: usize) -> bool {
    slots.available_permits() + 1 < max
}

/// Writes queued frames until every sender is gone, then flushes and shuts
/// the write side down so the peer sees end of stream. A frame whose gate
/// has closed is handed to `gated` instead of being written. `others` says
/// whether requests besides the frame in hand are in flight, whose frames
/// may be about to join it: a lone frame (QD1) goes out at once.
pub(crate) async fn write_frames<W: AsyncWrite + Unpin>(
    w: W,
    mut queue: mpsc::Receiver<OutFrame>,
    gated: impl Fn(&OutFrame),
    others: impl Fn() -> bool,
) -> std::io::Result<()> {
    let mut w = BufWriter::with_capacity(WRITE_BUF_BYTES, w);
    while let Some(frame) = queue.recv().await {
        // The tasks woken with this one (requests whose I/O completed in
        // the same batch) queue their frames now, not after our syscall.
        // Before this frame is written, so each gate is still checked just
        // before its frame's bytes go out with no wait in between.
        if others() {
            tokio::task::yield_now().await;
        }
        write_frame(&mut w, &frame, &gated).await?;
        // Batch what is already queued, but at most one queue's worth, so a
        // steady stream of frames cannot postpone the flush forever.
        for _ in 1..RPC_SEND_QUEUE_FRAMES {
            let Ok(frame) = queue.try_recv() else { break };
            write_frame(&mut w, &frame, &gated).await?;
        }
        w.flush().await?;
    }
    w.shutdown().await
}

async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut BufWriter<W>,
    frame: &OutFrame,
    gated: &impl Fn(&OutFrame),
) -> std::io::Result<()> {
    if frame.gate.as_ref().is_some_and(|g| !g.open()) {
        gated(frame);
        return Ok(());
    }
    w.write_all(&frame.header.encode()).await?;
    w.write_all(&frame.body).await?;
    w.write_all(&frame.payload).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::is_aligned;

    #[tokio::test]
    async fn frames_survive_the_pipe_and_payloads_land_aligned() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (tx, rx) = mpsc::channel(4);
        let writer = tokio::spawn(write_frames(a, rx, |_| {}, || false));
        let payload = Bytes::from(vec![7u8; 8192]);
        let frame = OutFrame::new(FrameKind::Request, 42, "hello", payload.clone()).expect("fits");
        tx.send(frame).await.expect("writer alive");
        drop(tx);
        let mut reader = tokio::io::BufReader::new(b);
        let got = read_frame(&mut reader).await.expect("valid").expect("one frame");
        assert_eq!(got.header.request_id, 42);
        assert_eq!(decode_body::<String>(&got.body).expect("string"), "hello");
        assert_eq!(got.payload, payload);
        assert!(is_aligned(&got.payload));
        assert!(read_frame(&mut reader).await.expect("clean end").is_none());
        writer.await.expect("joined").expect("written");
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut body = encode_body(&5u32).expect("encodes");
        body.push(0);
        assert!(matches!(decode_body::<u32>(&body), Err(RpcError::Decode(_))));
    }
}
