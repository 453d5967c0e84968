//! The only module that names `rocksdb`: one database, four column families,
//! and the few operations the log store and the state machine need.
//!
//! Everything above this module sees bytes in and bytes out; encodings live in
//! `codec.rs`. One database (not one per role) so a log append and a state
//! write share one WAL: a synced write makes every earlier write durable too.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Direction, IteratorMode, Options, WriteBatch,
    WriteOptions, DB,
};

/// A RocksDB failure, kept opaque so callers never name `rocksdb`.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct RocksError(#[from] rocksdb::Error);

/// The column families; see KEYSPACE.md for what each holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cf {
    /// Raft log entries keyed by big-endian index.
    Log,
    /// Vote, last purged log id, committed log id.
    RaftMeta,
    /// State machine data: the replicated key-value map.
    State,
    /// Last applied log id, last membership, last built snapshot.
    StateMeta,
}

impl Cf {
    const ALL: [Cf; 4] = [Cf::Log, Cf::RaftMeta, Cf::State, Cf::StateMeta];

    fn name(self) -> &'static str {
        match self {
            Cf::Log => "raft_log",
            Cf::RaftMeta => "raft_meta",
            Cf::State => "sm_data",
            Cf::StateMeta => "sm_meta",
        }
    }
}

/// Whether a write must reach stable storage before `write` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// WAL write plus fsync before returning.
    Sync,
    /// WAL write only; made durable by the next `Sync` write (one WAL).
    Buffered,
}

/// An owned key-value pair as read from a column family.
pub(crate) type Pair = (Vec<u8>, Vec<u8>);

/// A shared handle on the open database.
#[derive(Clone)]
pub(crate) struct Rocks {
    db: Arc<DB>,
    path: PathBuf,
}

impl fmt::Debug for Rocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rocks").field("path", &self.path).finish()
    }
}

fn options() -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_compression_type(DBCompressionType::Lz4);
    opts.set_bottommost_compression_type(DBCompressionType::Zstd);
    // The small families (raft_meta, sm_meta) never fill a memtable, so
    // without a cap their oldest write-ahead log files stay until the
    // default cap of 4 × the memtables (2.5 GiB here): a flush at 256 MiB
    // lets RocksDB drop them.
    opts.set_max_total_wal_size(256 << 20);
    opts
}

impl Rocks {
    /// Opens (creating if missing) the database and all column families.
    pub(crate) fn open(path: &Path) -> Result<Self, RocksError> {
        let cfs = Cf::ALL.map(|cf| ColumnFamilyDescriptor::new(cf.name(), options()));
        let db = DB::open_cf_descriptors(&options(), path, cfs)?;
        Ok(Self { db: Arc::new(db), path: path.to_path_buf() })
    }

    fn handle(&self, cf: Cf) -> &ColumnFamily {
        // Invariant: `open` creates every family in `Cf::ALL`.
        self.db.cf_handle(cf.name()).expect("column family created at open")
    }

    pub(crate) fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, RocksError> {
        Ok(self.db.get_cf(self.handle(cf), key)?)
    }

    /// The last pair of `cf` in key order, if any.
    pub(crate) fn last(&self, cf: Cf) -> Result<Option<Pair>, RocksError> {
        let mut iter = self.db.iterator_cf(self.handle(cf), IteratorMode::End);
        let item = iter.next().transpose()?;
        Ok(item.map(|(k, v)| (k.into_vec(), v.into_vec())))
    }

    /// Pairs with `from <= key < to` (no upper bound when `to` is None).
    pub(crate) fn scan(&self, cf: Cf, from: &[u8], to: Option<&[u8]>) -> Result<Vec<Pair>, RocksError> {
        let mode = IteratorMode::From(from, Direction::Forward);
        let mut pairs = Vec::new();
        for item in self.db.iterator_cf(self.handle(cf), mode) {
            let (k, v) = item?;
            if to.is_some_and(|to| *k >= *to) {
                break;
            }
            pairs.push((k.into_vec(), v.into_vec()));
        }
        Ok(pairs)
    }

    /// A consistent point-in-time view across all column families.
    pub(crate) fn view(&self) -> View<'_> {
        View { rocks: self, snap: self.db.snapshot() }
    }

    pub(crate) fn batch(&self) -> Batch<'_> {
        Batch { rocks: self, inner: WriteBatch::default() }
    }
}

/// A read-only snapshot of the database (RocksDB snapshot, not a Raft one).
pub(crate) struct View<'a> {
    rocks: &'a Rocks,
    snap: rocksdb::Snapshot<'a>,
}

impl fmt::Debug for View<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("View").field("rocks", self.rocks).finish()
    }
}

impl View<'_> {
    pub(crate) fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, RocksError> {
        Ok(self.snap.get_cf(self.rocks.handle(cf), key)?)
    }

    /// Up to `limit` pairs with `from <= key < to`, in key order.
    pub(crate) fn scan(&self, cf: Cf, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Pair>, RocksError> {
        let mut pairs = Vec::new();
        if from >= to || limit == 0 {
            return Ok(pairs);
        }
        let mode = IteratorMode::From(from, Direction::Forward);
        for item in self.snap.iterator_cf(self.rocks.handle(cf), mode) {
            let (k, v) = item?;
            if *k >= *to {
                break;
            }
            pairs.push((k.into_vec(), v.into_vec()));
            if pairs.len() >= limit {
                break;
            }
        }
        Ok(pairs)
    }

    /// Every pair of `cf` in key order, one at a time.
    pub(crate) fn pairs(&self, cf: Cf) -> impl Iterator<Item = Result<Pair, RocksError>> + '_ {
        let iter = self.snap.iterator_cf(self.rocks.handle(cf), IteratorMode::Start);
        iter.map(|item| {
            let (k, v) = item?;
            Ok((k.into_vec(), v.into_vec()))
        })
    }
}

/// Writes applied atomically by `commit`.
pub(crate) struct Batch<'a> {
    rocks: &'a Rocks,
    inner: WriteBatch,
}

impl fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch").field("len", &self.inner.len()).finish()
    }
}

impl Batch<'_> {
    pub(crate) fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        self.inner.put_cf(self.rocks.handle(cf), key, value);
    }

    pub(crate) fn delete(&mut self, cf: Cf, key: &[u8]) {
        self.inner.delete_cf(self.rocks.handle(cf), key);
    }

    /// Deletes keys with `from <= key < to`.
    pub(crate) fn delete_range(&mut self, cf: Cf, from: &[u8], to: &[u8]) {
        self.inner.delete_range_cf(self.rocks.handle(cf), from, to);
    }

    /// Deletes every key of `cf` as it is now: one range tombstone up to the
    /// last key plus a point delete of that key, instead of one per key.
    pub(crate) fn clear(&mut self, cf: Cf) -> Result<(), RocksError> {
        if let Some((last, _)) = self.rocks.last(cf)? {
            self.delete_range(cf, &[], &last);
            self.delete(cf, &last);
        }
        Ok(())
    }

    pub(crate) fn commit(self, durability: Durability) -> Result<(), RocksError> {
        let mut opts = WriteOptions::default();
        opts.set_sync(durability == Durability::Sync);
        Ok(self.rocks.db.write_opt(self.inner, &opts)?)
    }
}
