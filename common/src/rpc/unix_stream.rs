//! A connected Unix stream socket, watched for reading only.
//!
//! tokio registers every socket with its reactor for both readiness kinds,
//! edge-triggered. A Unix stream socket reports "writable" every time its
//! peer reads: the kernel's `unix_write_space` wakes every watcher whenever
//! the receiver frees buffer space, where TCP only does so for a writer that
//! found its buffer full. So each frame a node reads wakes the frontend's
//! runtime thread if it is parked in the reactor, and each reply the
//! frontend reads wakes the node's, to find nothing to do: measured, 1.6 of
//! the 10.5 thread wake-ups of one read at QD1 through NBD (bench/RESULTS.md,
//! "Unix sockets watched for reading only").
//!
//! Here the socket is registered for reading alone. A write goes straight
//! to the socket; one that finds the buffer full registers a duplicate of
//! the descriptor for writability, waits, and lets the duplicate go once a
//! write gets through. Registering checks readiness at once, so room freed
//! between the full write and the registration is not missed.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// Splits `stream` into halves that the reactor watches for reading only.
pub(crate) fn split(stream: tokio::net::UnixStream) -> io::Result<(ReadHalf, WriteHalf)> {
    // into_std deregisters the socket and leaves it non-blocking.
    let stream = Arc::new(watch(stream.into_std()?, Interest::READABLE)?);
    Ok((ReadHalf(stream.clone()), WriteHalf { stream, room: None, shut: false }))
}

/// Registers `socket` with the reactor for `interest` alone.
fn watch(socket: UnixStream, interest: Interest) -> io::Result<AsyncFd<UnixStream>> {
    // SAFETY: a std `UnixStream` owns its descriptor and returns that same
    // one until it is dropped, which the `AsyncFd` holding it does only
    // after taking it off the reactor.
    Ok(unsafe { AsyncFd::register_with_interest(socket, interest) }?)
}

/// The reading half.
#[derive(Debug)]
pub(crate) struct ReadHalf(Arc<AsyncFd<UnixStream>>);

impl AsyncRead for ReadHalf {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut ready = ready!(self.0.poll_read_ready(cx))?;
            // The RPC layer reads into initialised buffers: this fills nothing.
            let unfilled = buf.initialize_unfilled();
            let room = unfilled.len();
            match ready.try_io(|fd| fd.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    // Less than asked for: the socket is drained, so the next
                    // read waits for the next edge instead of making a system
                    // call to learn it (as tokio's own sockets do; readiness
                    // set again since this poll is not cleared).
                    if n > 0 && n < room {
                        ready.clear_ready();
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                // Drained: readiness cleared, wait for the next edge.
                Err(_would_block) => continue,
            }
        }
    }
}

/// The writing half. Dropping it shuts the write side down, as tokio's own
/// halves do, so the peer sees the end of the stream.
#[derive(Debug)]
pub(crate) struct WriteHalf {
    stream: Arc<AsyncFd<UnixStream>>,
    /// A duplicate of the socket registered for writability, only while a
    /// write waits for room in the buffer.
    room: Option<AsyncFd<UnixStream>>,
    shut: bool,
}

impl WriteHalf {
    fn write_now(&self, data: &[u8]) -> io::Result<usize> {
        loop {
            match self.stream.get_ref().write(data) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                result => return result,
            }
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            match self.write_now(data) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                result => {
                    self.room = None;
                    return Poll::Ready(result);
                }
            }
            if self.room.is_none() {
                let dup = self.stream.get_ref().try_clone()?;
                self.room = Some(watch(dup, Interest::WRITABLE)?);
            }
            let written = {
                let this = &*self;
                let Some(room) = &this.room else { continue };
                let mut ready = ready!(room.poll_write_ready(cx))?;
                ready.try_io(|_| this.write_now(data))
            };
            match written {
                Ok(result) => {
                    self.room = None;
                    return Poll::Ready(result);
                }
                // Still full: readiness cleared, wait for the next edge.
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = self.stream.get_ref().shutdown(Shutdown::Write);
        self.shut = result.is_ok();
        Poll::Ready(result)
    }
}

impl Drop for WriteHalf {
    fn drop(&mut self) {
        if !self.shut {
            let _ = self.stream.get_ref().shutdown(Shutdown::Write);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pair() -> ((ReadHalf, WriteHalf), (ReadHalf, WriteHalf)) {
        let (a, b) = tokio::net::UnixStream::pair().expect("socketpair");
        (split(a).expect("split"), split(b).expect("split"))
    }

    /// Far more than the socket buffer holds, so the writer waits for room
    /// many times, while the reader takes it in small reads.
    #[tokio::test]
    async fn a_write_larger_than_the_buffer_waits_for_room_and_arrives_whole() {
        let ((_, mut w), (mut r, _)) = pair();
        let data: Vec<u8> = (0..8 << 20).map(|i: u32| (i * 7 + i / 4096) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await.expect("write");
            w.shutdown().await.expect("shutdown");
        });
        let mut got = Vec::new();
        let mut chunk = [0u8; 1000];
        loop {
            match r.read(&mut chunk).await.expect("read") {
                0 => break,
                n => got.extend_from_slice(&chunk[..n]),
            }
        }
        writer.await.expect("writer");
        assert!(got == data, "{} bytes arrived of {}", got.len(), data.len());
    }

    #[tokio::test]
    async fn dropping_the_write_half_ends_the_peers_stream() {
        let ((_, w), (mut r, _)) = pair();
        drop(w);
        let mut rest = Vec::new();
        assert_eq!(r.read_to_end(&mut rest).await.expect("end of stream"), 0);
    }

    #[tokio::test]
    async fn a_write_to_a_closed_peer_fails() {
        let ((_, mut w), peer) = pair();
        drop(peer);
        let err = w.write_all(b"hello").await.expect_err("the peer is gone");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
