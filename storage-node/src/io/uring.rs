//! The data-path engine: one io_uring and one thread per disk.
//!
//! Callers hand requests over a channel and, only when the ring thread has
//! said it is about to sleep, poke an eventfd; the ring thread keeps a read
//! on that eventfd in the ring itself, so a single `submit_and_wait` sleeps
//! until either an I/O completes or new work arrives. Under load the thread
//! rarely sleeps, and submitters make no syscall at all. Buffers live in the thread's slot table while the kernel uses
//! them and go back to the caller with the result.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use io_uring::{opcode, types, IoUring};

use super::{IoDone, IoEngine, IoOp, IoRequest};

/// The user_data of the eventfd read; slot indexes are far below it.
const WAKE_TOKEN: u64 = u64::MAX;

/// An [`IoEngine`] on io_uring with one submitting thread.
#[derive(Debug)]
pub struct UringEngine {
    tx: Option<Sender<IoRequest>>,
    wake: OwnedFd,
    /// Set by the ring thread just before it may block in the kernel.
    parked: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UringEngine {
    /// A ring of `entries` submission entries over `file`; one entry is
    /// kept for the wake-up read, the rest bound the I/Os in flight.
    pub fn new(file: File, entries: u32) -> io::Result<Self> {
        let entries = entries.clamp(4, 4096);
        let ring = IoUring::new(entries)?;
        // SAFETY: eventfd takes no pointers; a negative return is an error.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh fd that nothing else owns.
        let wake = unsafe { OwnedFd::from_raw_fd(raw) };
        let (tx, rx) = crossbeam_channel::unbounded();
        let wake_fd = wake.as_raw_fd();
        let capacity = entries as usize - 1;
        let parked = Arc::new(AtomicBool::new(false));
        let thread_parked = parked.clone();
        let thread = std::thread::Builder::new()
            .name("chuyi-uring".into())
            .spawn(move || RingThread::new(ring, file, rx, wake_fd, thread_parked, capacity).run())?;
        Ok(Self { tx: Some(tx), wake, parked, thread: Some(thread) })
    }

    fn poke(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd. It can
        // only fail if the counter overflows, which would still wake us.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

impl IoEngine for UringEngine {
    fn submit(&self, request: IoRequest) {
        if let Some(tx) = &self.tx {
            if tx.send(request).is_ok() {
                // Pairs with the fence in `RingThread::wait`: either the ring
                // thread sees this request before sleeping, or we see it parked.
                fence(Ordering::SeqCst);
                if self.parked.swap(false, Ordering::SeqCst) {
                    self.poke();
                }
            }
        }
    }

    fn name(&self) -> &'static str {
        "uring"
    }
}

impl Drop for UringEngine {
    fn drop(&mut self) {
        self.tx = None;
        self.poke();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct InFlight {
    req: IoRequest,
    /// Bytes done so far: short reads and writes are resubmitted for the rest.
    done_bytes: usize,
}

struct RingThread {
    // Field order matters: the ring is dropped (and its pending wake-up read
    // cancelled) before the buffer that read points into.
    ring: IoUring,
    wake_buf: Box<u64>,
    wake_fd: RawFd,
    wake_armed: bool,
    parked: Arc<AtomicBool>,
    file: File,
    rx: Receiver<IoRequest>,
    slots: Vec<Option<InFlight>>,
    free: Vec<usize>,
    closed: bool,
    cqes: Vec<(u64, i32)>,
}

impl RingThread {
    fn new(
        ring: IoUring,
        file: File,
        rx: Receiver<IoRequest>,
        wake_fd: RawFd,
        parked: Arc<AtomicBool>,
        capacity: usize,
    ) -> Self {
        Self {
            ring,
            wake_buf: Box::new(0),
            wake_fd,
            wake_armed: false,
            parked,
            file,
            rx,
            slots: (0..capacity).map(|_| None).collect(),
            free: (0..capacity).rev().collect(),
            closed: false,
            cqes: Vec::with_capacity(capacity + 1),
        }
    }

    fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn run(mut self) {
        loop {
            self.accept();
            if self.closed && self.in_flight() == 0 {
                return;
            }
            if !self.wake_armed && !self.closed {
                self.arm_wake();
            }
            if let Err(e) = self.wait() {
                tracing::error!(error = %e, "io_uring submit failed; failing all I/O on this disk");
                return self.fail_all(e);
            }
            self.reap();
        }
    }

    /// Submits what is queued and sleeps until a completion, unless new
    /// requests are already waiting. Announces the sleep first, so a
    /// submitter that comes after the announcement pokes the eventfd.
    fn wait(&mut self) -> io::Result<()> {
        self.parked.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let want = if self.rx.is_empty() || self.free.is_empty() { 1 } else { 0 };
        let result = self.ring.submit_and_wait(want);
        self.parked.store(false, Ordering::SeqCst);
        match result {
            Err(e) if !matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Takes new requests while there are free slots.
    fn accept(&mut self) {
        while let Some(&slot) = self.free.last() {
            match self.rx.try_recv() {
                Ok(req) => {
                    self.free.pop();
                    self.slots[slot] = Some(InFlight { req, done_bytes: 0 });
                    self.push(slot);
                }
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.closed = true;
                    return;
                }
            }
        }
    }

    fn arm_wake(&mut self) {
        let buf: *mut u64 = &mut *self.wake_buf;
        let sqe = opcode::Read::new(types::Fd(self.wake_fd), buf.cast(), 8).build().user_data(WAKE_TOKEN);
        self.push_sqe(sqe);
        self.wake_armed = true;
    }

    /// Queues the (remaining part of the) operation in `slot`.
    fn push(&mut self, slot: usize) {
        let fd = types::Fd(self.file.as_raw_fd());
        let Some(inflight) = self.slots[slot].as_mut() else { return };
        let done = inflight.done_bytes;
        let sqe = match &mut inflight.req.op {
            IoOp::Read { offset, buf } => {
                if buf.len() == done {
                    return self.finish(slot, Ok(()));
                }
                let rest = &mut buf[done..];
                opcode::Read::new(fd, rest.as_mut_ptr(), io_len(rest.len())).offset(*offset + done as u64).build()
            }
            IoOp::Write { offset, data } => {
                if data.len() == done {
                    return self.finish(slot, Ok(()));
                }
                let rest = &data[done..];
                opcode::Write::new(fd, rest.as_ptr(), io_len(rest.len())).offset(*offset + done as u64).build()
            }
            IoOp::Sync => opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build(),
            IoOp::Fallocate { mode, offset, len } => {
                opcode::Fallocate::new(fd, *len).offset(*offset).mode(mode.to_libc()).build()
            }
        };
        self.push_sqe(sqe.user_data(slot as u64));
    }

    fn push_sqe(&mut self, sqe: io_uring::squeue::Entry) {
        // The queue holds one entry per slot plus the wake-up read, and it is
        // flushed by every submit, so it is never full here; if it were, a
        // submit makes room.
        // SAFETY: every buffer an entry points into is owned by a slot (or
        // wake_buf) and stays put until that entry's completion is reaped.
        while unsafe { self.ring.submission().push(&sqe) }.is_err() {
            if let Err(e) = self.ring.submit() {
                tracing::error!(error = %e, "io_uring submit failed while the queue was full");
            }
        }
    }

    fn reap(&mut self) {
        self.cqes.clear();
        self.cqes.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
        for i in 0..self.cqes.len() {
            let (token, res) = self.cqes[i];
            if token == WAKE_TOKEN {
                self.wake_armed = false;
                continue;
            }
            self.complete(token as usize, res);
        }
    }

    fn complete(&mut self, slot: usize, res: i32) {
        if res < 0 {
            if matches!(-res, libc::EINTR | libc::EAGAIN) {
                return self.push(slot);
            }
            return self.finish(slot, Err(io::Error::from_raw_os_error(-res)));
        }
        let Some(inflight) = self.slots[slot].as_mut() else { return };
        match inflight.req.op {
            IoOp::Read { .. } | IoOp::Write { .. } if res == 0 => {
                self.finish(slot, Err(io::Error::new(io::ErrorKind::UnexpectedEof, "I/O past the end of the disk")))
            }
            IoOp::Read { .. } | IoOp::Write { .. } => {
                inflight.done_bytes += res as usize;
                self.push(slot);
            }
            IoOp::Sync | IoOp::Fallocate { .. } => self.finish(slot, Ok(())),
        }
    }

    fn finish(&mut self, slot: usize, result: io::Result<()>) {
        let Some(inflight) = self.slots[slot].take() else { return };
        self.free.push(slot);
        let buf = match inflight.req.op {
            IoOp::Read { buf, .. } => Some(buf),
            _ => None,
        };
        let _ = inflight.req.done.send(IoDone { buf, result });
    }

    fn fail_all(&mut self, e: io::Error) {
        for slot in 0..self.slots.len() {
            self.finish(slot, Err(io::Error::new(e.kind(), e.to_string())));
        }
    }
}

/// I/O lengths are capped by the chunk size (4 MiB), far below u32::MAX.
fn io_len(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}
