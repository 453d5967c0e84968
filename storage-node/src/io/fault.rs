//! A fault-injecting wrapper around another engine, for tests.
//!
//! It fails chosen operations with a chosen errno (EIO, ENOSPC) so the
//! chunk store's handling of a dying or full disk is tested without a real
//! broken device, holds chosen writes in progress (a stalled device) so
//! a test can keep a write in flight for as long as it needs, and stops the
//! disk as SIGKILL does to its process: after [`FaultEngine::cut`] nothing
//! more reaches the file.

use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use super::{IoDone, IoEngine, IoOp, IoRequest};

/// Which operations a [`FaultEngine`] fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FaultOn {
    Nothing = 0,
    Reads = 1,
    Writes = 2,
    Everything = 3,
}

/// Passes operations to `inner` until told to fail them.
pub struct FaultEngine {
    /// `None` once cut.
    inner: RwLock<Option<Arc<dyn IoEngine>>>,
    /// The wrapped engine's name, kept for `Debug` after the cut.
    inner_name: &'static str,
    on: AtomicU8,
    errno: AtomicI32,
    /// Only operations that start in this range fail (a sync, which has no
    /// offset, fails whatever it is).
    only: Mutex<Range<u64>>,
    /// Writes at these offsets neither land nor fail: they are kept here
    /// (their senders alive, so their callers wait) until the engine drops
    /// or is cut.
    hold: Mutex<(Option<Range<u64>>, Vec<IoRequest>)>,
}

impl std::fmt::Debug for FaultEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultEngine").field("inner", &self.inner_name).finish()
    }
}

impl FaultEngine {
    pub fn new(inner: Arc<dyn IoEngine>) -> Self {
        Self {
            inner_name: inner.name(),
            inner: RwLock::new(Some(inner)),
            on: AtomicU8::new(FaultOn::Nothing as u8),
            errno: AtomicI32::new(libc::EIO),
            only: Mutex::new(0..u64::MAX),
            hold: Mutex::new((None, Vec::new())),
        }
    }

    /// From now on, hold every write that starts in `at`: it stays in
    /// progress, neither landing nor failing, until [`Self::release_held`]
    /// or for as long as the engine lives.
    pub fn hold_writes(&self, at: Range<u64>) {
        self.hold.lock().unwrap_or_else(PoisonError::into_inner).0 = Some(at);
    }

    /// How many writes are being held.
    pub fn held(&self) -> usize {
        self.hold.lock().unwrap_or_else(PoisonError::into_inner).1.len()
    }

    /// Stops holding writes and lets the held ones go on, the newest first:
    /// a device may complete writes in any order, and the one that lands
    /// last wins.
    pub fn release_held(&self) {
        let held = {
            let mut hold = self.hold.lock().unwrap_or_else(PoisonError::into_inner);
            hold.0 = None;
            std::mem::take(&mut hold.1)
        };
        for request in held.into_iter().rev() {
            self.submit(request);
        }
    }

    /// Stops the disk as SIGKILL does to its process. The wrapped engine is
    /// dropped: its threads finish the operations they were already given
    /// (the kernel completes what reached it) and stop. Held writes and
    /// everything submitted from now on are dropped unanswered (the engine
    /// has stopped): they never land. So once this returns, no write of the
    /// old process can still reach the file, and a test that reads or
    /// reopens it sees exactly what the crash left. A host's power loss
    /// would also drop what the page cache or the device's cache holds
    /// unsynced: [`super::volatile::VolatileEngine`] models that. False
    /// when something else still holds the wrapped engine, so that it could
    /// not be stopped.
    pub fn cut(&self) -> bool {
        let inner = self.inner.write().unwrap_or_else(PoisonError::into_inner).take();
        self.hold.lock().unwrap_or_else(PoisonError::into_inner).1.clear();
        // Dropping the last handle joins the engine's threads.
        inner.is_none_or(|inner| Arc::strong_count(&inner) == 1)
    }

    /// From now on, fail operations of `on` with `errno`.
    pub fn inject(&self, on: FaultOn, errno: i32) {
        self.inject_in(on, errno, 0..u64::MAX);
    }

    /// From now on, fail operations of `on` that start in `at` with
    /// `errno`: a device failing one region of the disk, such as a write's
    /// data while its checksums land.
    pub fn inject_in(&self, on: FaultOn, errno: i32, at: Range<u64>) {
        *self.only.lock().unwrap_or_else(PoisonError::into_inner) = at;
        self.errno.store(errno, Ordering::SeqCst);
        self.on.store(on as u8, Ordering::SeqCst);
    }

    fn fails(&self, op: &IoOp) -> bool {
        let on = self.on.load(Ordering::SeqCst);
        let is_read = matches!(op, IoOp::Read { .. });
        let chosen = on == FaultOn::Everything as u8
            || (on == FaultOn::Reads as u8 && is_read)
            || (on == FaultOn::Writes as u8 && !is_read);
        let offset = match op {
            IoOp::Read { offset, .. } | IoOp::Write { offset, .. } | IoOp::Fallocate { offset, .. } => Some(*offset),
            IoOp::Sync => None,
        };
        chosen && offset.is_none_or(|at| self.only.lock().unwrap_or_else(PoisonError::into_inner).contains(&at))
    }
}

impl IoEngine for FaultEngine {
    fn submit(&self, request: IoRequest) {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        // After the cut nothing answers: the request is dropped.
        let Some(inner) = &*inner else { return };
        if let IoOp::Write { offset, .. } = &request.op {
            let mut hold = self.hold.lock().unwrap_or_else(PoisonError::into_inner);
            if hold.0.as_ref().is_some_and(|at| at.contains(offset)) {
                return hold.1.push(request);
            }
        }
        if !self.fails(&request.op) {
            return inner.submit(request);
        }
        let buf = match request.op {
            IoOp::Read { buf, .. } => Some(buf),
            _ => None,
        };
        let result = Err(io::Error::from_raw_os_error(self.errno.load(Ordering::SeqCst)));
        let _ = request.done.send(IoDone { buf, result });
    }

    fn name(&self) -> &'static str {
        "fault"
    }
}
