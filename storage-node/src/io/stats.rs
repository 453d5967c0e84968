//! What a disk's engine did, counted at the [`Engine`](super::Engine) seam:
//! every I/O the store makes (data, checksum blocks, slot tables, clones,
//! scrub and backfill reads) is counted once, as the device sees it, by
//! kind: bytes, errors, EIO, and a latency histogram whose count is the
//! operations. Atomics only: this runs for every I/O of the node.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chuyi_common::metrics::LatencyHistogram;

/// The kinds of I/O an engine does, as metrics label them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoKind {
    Read,
    Write,
    Sync,
    Fallocate,
}

impl IoKind {
    pub const ALL: [IoKind; 4] = [IoKind::Read, IoKind::Write, IoKind::Sync, IoKind::Fallocate];

    pub fn name(self) -> &'static str {
        match self {
            IoKind::Read => "read",
            IoKind::Write => "write",
            IoKind::Sync => "sync",
            IoKind::Fallocate => "fallocate",
        }
    }
}

/// One kind's counters.
#[derive(Debug, Default)]
pub struct KindStats {
    /// Bytes the I/Os asked for (a fallocate: its range), failed or not.
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
    /// Errors that were EIO: the device itself failing.
    pub eio: AtomicU64,
    pub latency: LatencyHistogram,
}

/// One disk's I/O counters.
#[derive(Debug, Default)]
pub struct IoStats {
    kinds: [KindStats; 4],
}

impl IoStats {
    pub fn kind(&self, kind: IoKind) -> &KindStats {
        &self.kinds[kind as usize]
    }

    /// Counts one I/O of `kind` over `bytes` that took `took` and failed
    /// with `error`, if it did.
    pub fn record(&self, kind: IoKind, bytes: u64, took: Duration, error: Option<&io::Error>) {
        let k = self.kind(kind);
        k.bytes.fetch_add(bytes, Ordering::Relaxed);
        k.latency.observe(took);
        if let Some(e) = error {
            k.errors.fetch_add(1, Ordering::Relaxed);
            if e.raw_os_error() == Some(libc::EIO) {
                k.eio.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_counts_its_own_bytes_errors_and_eio() {
        let stats = IoStats::default();
        let (eio, enospc) = (io::Error::from_raw_os_error(libc::EIO), io::Error::from_raw_os_error(libc::ENOSPC));
        stats.record(IoKind::Read, 4096, Duration::from_micros(30), None);
        stats.record(IoKind::Read, 8192, Duration::from_micros(30), Some(&eio));
        stats.record(IoKind::Write, 512, Duration::from_micros(30), Some(&enospc));
        let (read, write, sync) = (stats.kind(IoKind::Read), stats.kind(IoKind::Write), stats.kind(IoKind::Sync));
        assert_eq!(read.bytes.load(Ordering::Relaxed), 12288);
        assert_eq!(read.latency.count(), 2);
        assert_eq!((read.errors.load(Ordering::Relaxed), read.eio.load(Ordering::Relaxed)), (1, 1));
        assert_eq!(
            (write.errors.load(Ordering::Relaxed), write.eio.load(Ordering::Relaxed)),
            (1, 0),
            "ENOSPC is no EIO"
        );
        assert_eq!(sync.latency.count(), 0);
    }
}
