//! Client I/O per chunk owner (a volume, or an object's data), for the
//! console's "IOPS now" of each volume: counted once per client request
//! that succeeded, on the node the client sent it to (a write at the PG's
//! primary, a read at the replica that served it), never for forwards,
//! backfill or scrub.
//!
//! Owners are ids, not names: the node knows chunks, not volumes. At most
//! [`OWNERS_MAX`] are counted at once. When the table is full, owners idle
//! for [`IDLE_MS`] are forgotten (at most once a second) to make room; a
//! forgotten owner starts again from zero, and readers take a count that
//! went down as a restart, as Prometheus takes a counter reset. A request
//! for an owner already counted takes the table's read lock, a hash lookup
//! and three relaxed atomics; only a new owner takes the write lock. Times
//! are the node's monotonic clock, so a step of the calendar changes
//! nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use chuyi_common::proto::chunk::{OwnerIoCount, PgOp};

/// How long an owner with no request stays counted once room is needed.
pub const IDLE_MS: u64 = 10 * 60_000;
/// Owners counted at once (about 100 bytes each).
pub const OWNERS_MAX: usize = 16_384;
/// A full table is swept for idle owners at most this often.
const SWEEP_EVERY_MS: u64 = 1_000;

#[derive(Debug, Default)]
struct Counts {
    reads: AtomicU64,
    writes: AtomicU64,
    read_bytes: AtomicU64,
    written_bytes: AtomicU64,
    last_ms: AtomicU64,
}

impl Counts {
    fn add(&self, write: bool, bytes: u64, now_ms: u64) {
        let (ops, total) = if write { (&self.writes, &self.written_bytes) } else { (&self.reads, &self.read_bytes) };
        ops.fetch_add(1, Ordering::Relaxed);
        total.fetch_add(bytes, Ordering::Relaxed);
        self.last_ms.fetch_max(now_ms, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct Table {
    owners: HashMap<u64, Counts>,
    swept_ms: u64,
}

/// The node's table of [`Counts`] by owner.
#[derive(Debug)]
pub struct OwnerIo {
    table: RwLock<Table>,
    start: chuyi_common::clock::Instant,
}

impl Default for OwnerIo {
    fn default() -> Self {
        Self { table: RwLock::default(), start: chuyi_common::clock::now() }
    }
}

/// One client request as counted: a write (or zeroing) or a read, and
/// its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Io {
    pub write: bool,
    pub bytes: u64,
}

/// What `op` counts as (`payload`: a write's bytes); `None` for what is
/// not I/O a volume's user asked for (extents, delete, install).
pub fn io_of(op: &PgOp, payload: usize) -> Option<Io> {
    match op {
        PgOp::Read { len, .. } => Some(Io { write: false, bytes: u64::from(*len) }),
        PgOp::Write { .. } => Some(Io { write: true, bytes: payload as u64 }),
        PgOp::Zero { len, .. } => Some(Io { write: true, bytes: u64::from(*len) }),
        _ => None,
    }
}

impl OwnerIo {
    /// Now, for [`Self::count`]: milliseconds since the table was made.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Counts one client request `io` ([`io_of`]) on a chunk of `owner`,
    /// served at `now_ms`.
    pub fn count(&self, owner: u64, io: Io, now_ms: u64) {
        let Io { write, bytes } = io;
        {
            let table = self.table.read().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = table.owners.get(&owner) {
                return c.add(write, bytes, now_ms);
            }
            let full = table.owners.len() >= OWNERS_MAX;
            if full && now_ms.saturating_sub(table.swept_ms) < SWEEP_EVERY_MS {
                return;
            }
        }
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        if table.owners.len() >= OWNERS_MAX && !table.owners.contains_key(&owner) {
            // Another thread may have swept while this one waited.
            if now_ms.saturating_sub(table.swept_ms) < SWEEP_EVERY_MS {
                return;
            }
            table.swept_ms = now_ms;
            table.owners.retain(|_, c| now_ms.saturating_sub(c.last_ms.load(Ordering::Relaxed)) < IDLE_MS);
            if table.owners.len() >= OWNERS_MAX {
                return;
            }
        }
        table.owners.entry(owner).or_default().add(write, bytes, now_ms);
    }

    /// The counts of those of `owners` that have any, ascending by owner.
    pub fn report(&self, owners: &[u64]) -> Vec<OwnerIoCount> {
        let mut report: Vec<OwnerIoCount> = {
            let table = self.table.read().unwrap_or_else(|p| p.into_inner());
            owners
                .iter()
                .filter_map(|&owner| {
                    let c = table.owners.get(&owner)?;
                    Some(OwnerIoCount {
                        owner,
                        reads: c.reads.load(Ordering::Relaxed),
                        writes: c.writes.load(Ordering::Relaxed),
                        read_bytes: c.read_bytes.load(Ordering::Relaxed),
                        written_bytes: c.written_bytes.load(Ordering::Relaxed),
                    })
                })
                .collect()
        };
        report.sort_by_key(|c| c.owner);
        report.dedup_by_key(|c| c.owner);
        report
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.read().unwrap_or_else(|p| p.into_inner()).owners.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const READ: PgOp = PgOp::Read { offset: 0, len: 4096 };
    const WRITE: PgOp = PgOp::Write { offset: 0, fua: false, snap: 0 };

    /// A request as the service counts it: only what is client I/O.
    fn count(io: &OwnerIo, owner: u64, op: &PgOp, payload: usize, now_ms: u64) {
        if let Some(counted) = io_of(op, payload) {
            io.count(owner, counted, now_ms);
        }
    }

    #[test]
    fn reads_and_writes_are_counted_by_owner_and_other_ops_are_not() {
        let io = OwnerIo::default();
        count(&io, 7, &READ, 0, 1);
        count(&io, 7, &WRITE, 8192, 2);
        count(&io, 7, &PgOp::Zero { offset: 0, len: 512, fua: false, snap: 0 }, 0, 3);
        count(&io, 9, &PgOp::Delete, 0, 3);
        count(&io, 5, &READ, 0, 3);
        let report = io.report(&[9, 7, 5, 7, 11]);
        assert_eq!(report.iter().map(|c| c.owner).collect::<Vec<_>>(), [5, 7], "ascending; a delete is not I/O");
        assert_eq!(
            report[1],
            OwnerIoCount { owner: 7, reads: 1, writes: 2, read_bytes: 4096, written_bytes: 8192 + 512 }
        );
        assert!(io.report(&[]).is_empty());
    }

    #[test]
    fn a_full_table_forgets_idle_owners_to_make_room_and_no_more_than_that() {
        let io = OwnerIo::default();
        for owner in 0..OWNERS_MAX as u64 {
            count(&io, owner, &READ, 0, if owner == 0 { 2_000 } else { 1_000 });
        }
        count(&io, u64::MAX, &READ, 0, 1_500);
        assert_eq!(io.report(&[u64::MAX]), [], "full, none idle: a new owner waits");
        count(&io, 0, &READ, 0, 1_500);
        assert_eq!(io.report(&[0])[0].reads, 2, "a counted owner still counts");
        count(&io, u64::MAX, &READ, 0, 1_900);
        assert_eq!(io.report(&[u64::MAX]), [], "swept less than a second ago: not again yet");
        let later = 1_000 + IDLE_MS;
        count(&io, u64::MAX, &READ, 0, later);
        assert_eq!(io.report(&[u64::MAX])[0].reads, 1, "the idle ones made room");
        assert_eq!(io.len(), 2, "owner 0 (busy since) and the new one");
        count(&io, 1, &READ, 0, later);
        assert_eq!(io.report(&[1])[0].reads, 1, "a forgotten owner starts again from zero");
    }
}
