//! A connected Unix stream socket, watched for reading only.
//!
//! tokio registers every socket with its reactor for both readiness kinds,
//! edge-triggered. A Unix stream socket reports "writable" every time its
//! peer reads: the kernel's `unix_write_space` wakes every watcher whenever
//! the receiver frees buffer space, where TCP only does so for a writer that
//! found its buffer full. So each frame a node reads wakes the frontend's
//! runtime thread if it is parked in the reactor, and each reply the
//! frontend reads wakes the node's, to find nothing to do: measured, 1.6 of
//! the 10.6 thread wake-ups of one read at QD1 through NBD (bench/RESULTS.md,
//! "Unix sockets watched for reading only"). Used by the RPC layer's Unix
//! connections and the NBD frontend's Unix socket.
//!
//! Here the socket is registered for reading alone. A write goes straight
//! to the socket; one that finds the buffer full puts a duplicate of the
//! descriptor on the reactor for writability (epoll tells the two apart by
//! descriptor number) and takes it off once a write goes through whole.
//! Registering checks readiness at once, so room freed between the full
//! write and the registration is not missed.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// Splits `stream` into halves that the reactor watches for reading only.
pub fn split(stream: tokio::net::UnixStream) -> io::Result<(ReadHalf, WriteHalf)> {
    // into_std takes the socket off tokio's reactor (still non-blocking)
    // and forgets that tokio found an accepted socket ready: the first read
    // waits for the reactor's first event, once per connection.
    let stream = stream.into_std()?;
    let spare = Some(stream.try_clone()?);
    let stream = Arc::new(register(stream, Interest::READABLE)?);
    Ok((ReadHalf(stream.clone()), WriteHalf { stream, spare, watched: None, shut: false }))
}

/// Registers `socket` with the reactor for `interest` alone.
fn register(socket: UnixStream, interest: Interest) -> io::Result<AsyncFd<UnixStream>> {
    // SAFETY: a std `UnixStream` owns its descriptor and returns that same
    // one until it is dropped, which the `AsyncFd` holding it does only
    // after taking it off the reactor.
    Ok(unsafe { AsyncFd::register_with_interest(socket, interest) }?)
}

/// The reading half.
#[derive(Debug)]
pub struct ReadHalf(Arc<AsyncFd<UnixStream>>);

impl AsyncRead for ReadHalf {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut ready = ready!(self.0.poll_read_ready(cx))?;
            // The RPC and NBD readers read into initialised buffers: this
            // fills nothing.
            let unfilled = buf.initialize_unfilled();
            let asked = unfilled.len();
            match ready.try_io(|fd| fd.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    // Less than asked for: the socket is drained, so the next
                    // read waits for the next edge instead of making a system
                    // call to learn it, as tokio's own sockets do. Only the
                    // readiness this poll saw is cleared, not a newer edge.
                    if n > 0 && n < asked {
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
pub struct WriteHalf {
    stream: Arc<AsyncFd<UnixStream>>,
    /// A duplicate of the socket, made at the split (so running out of
    /// descriptors fails the connect, not a write), kept off the reactor
    /// while the buffer has room...
    spare: Option<UnixStream>,
    /// ...and on it, watched for writability, while writes find it full.
    watched: Option<AsyncFd<UnixStream>>,
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

    /// The buffer is full: put the duplicate on the reactor.
    fn watch(&mut self) -> io::Result<()> {
        let spare = self.spare.take().ok_or_else(|| io::Error::other("unix socket writer has no spare descriptor"))?;
        self.watched = Some(register(spare, Interest::WRITABLE)?);
        Ok(())
    }

    /// A write took all it was given: take the duplicate off the reactor,
    /// so the peer's reads stop waking it.
    fn unwatch(&mut self) {
        if let Some(watched) = self.watched.take() {
            self.spare = Some(watched.into_inner());
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            let written = match &self.watched {
                None => self.write_now(data),
                Some(watched) => {
                    let mut ready = ready!(watched.poll_write_ready(cx))?;
                    match ready.try_io(|_| self.write_now(data)) {
                        Ok(written) => written,
                        // Still full: readiness cleared, wait for the next edge.
                        Err(_would_block) => continue,
                    }
                }
            };
            match written {
                // Only when not watched yet: a watched write's is caught above.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.watch()?,
                Ok(n) if n == data.len() => {
                    self.unwatch();
                    return Poll::Ready(Ok(n));
                }
                // A short write left the buffer full: stay watched.
                result => return Poll::Ready(result),
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

    /// As with tokio's halves: the peer reads the end of the stream.
    #[tokio::test]
    async fn dropping_the_write_half_ends_the_peers_stream() {
        let ((_, w), (mut r, _)) = pair();
        drop(w);
        let mut rest = Vec::new();
        assert_eq!(r.read_to_end(&mut rest).await.expect("end of stream"), 0);
    }

    /// A precise error, not a wait for room that never comes.
    #[tokio::test]
    async fn a_write_to_a_closed_peer_fails() {
        let ((_, mut w), peer) = pair();
        drop(peer);
        let err = w.write_all(b"hello").await.expect_err("the peer is gone");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
