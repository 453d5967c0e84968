//! A disk's checksum journal at run time: group commit of block checksums,
//! checkpoints into the checksum blocks, and replay at open.
//!
//! The rules that keep a crash harmless (FORMAT.md, "Checksum journal"):
//!
//! - A change is acknowledged once the ring block carrying it has
//!   completed; its write is acknowledged only after that and its data.
//! - On a version 2 disk a checksum change goes through the journal unless
//!   it is lone (no other write in progress on the disk) and its slot is
//!   [`Journal::clean`]: nothing of the slot pending, awaiting a
//!   checkpoint, or in a ring block at or above the durable tail. Such a
//!   change rewrites the slot's checksum block directly, as on version 1,
//!   which replay never touches and no checkpoint holds a table for; every
//!   other checksum block is written only by checkpoints (and by replay),
//!   so nothing lands in one behind a journalled change's back.
//! - A checkpoint writes, for every slot changed since the last one, the
//!   slot's whole table as of the newest change it has seen, fdatasyncs,
//!   and only then records the new tail (alternating tail blocks, each
//!   fdatasynced). A ring block is overwritten only below that durable
//!   tail, so replay never misses a change newer than the checksum blocks,
//!   and only once the write before it at that position has completed.
//! - A ring write that fails fails the journal, as a failed checkpoint
//!   does: its commits' tables are in the next checkpoint's set, and
//!   writing them would bless checksums of writes that reported an error.
//! - Replay applies every whole ring block at or above the tail in
//!   sequence order. Changes set absolute values, so applying one the
//!   checksum block already has changes nothing, and the newest wins.
//!
//! The checkpoint works from the tables committed here, not from the slots,
//! so it never waits for a slot's lock: a writer holding one may be waiting
//! for journal space that only a checkpoint frees.
//!
//! Ring writes and checkpoints run in tasks of their own, which may outlive
//! the [`super::DiskStore`] for a moment: a disk is opened again only once
//! the runtime that served it is gone, as after a crash (tests that reopen
//! a disk in one runtime stay below a checkpoint's worth of writes).

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use chuyi_common::buf::AlignedBuf;
use chuyi_common::limits::BLOCK_SIZE_BYTES;
use futures::future::join_all;
use tokio::sync::futures::Notified;
use tokio::sync::{oneshot, Notify};

use super::slot::{decode_crc_block, encode_crc_block};
use crate::format::journal::{decode_block, encode_block, Change, Tail, CHANGES_PER_BLOCK, TAIL_BLOCKS};
use crate::format::layout::Layout;
use crate::io::{Engine, FallocMode};

/// Sequences and checkpoint numbers stay below this (a disk writing a
/// million ring blocks a second reaches it in 146,000 years), so a damaged
/// record cannot make the arithmetic on them overflow.
const SEQ_MAX: u64 = 1 << 62;

/// Checksum blocks a checkpoint writes at once.
const CHECKPOINT_BATCH: usize = 64;

/// Batches of ring blocks in flight at once, each from a task of its own.
/// One alone made a commit wait for the ring write before its own on a
/// disk whose writes are slow but many at once (bench/RESULTS.md, "The
/// checksum journal, with lone writes direct"); more than a few would leave
/// nothing to batch.
const RING_WRITERS: usize = 2;

/// What a failed journal or checkpoint write tells the writers waiting on
/// it (an `io::Error` is not `Clone`): its OS error kept, so an EIO still
/// takes the disk out of service.
#[derive(Clone, Debug)]
struct Failure {
    os: Option<i32>,
    kind: io::ErrorKind,
    message: String,
}

impl Failure {
    fn of(e: &io::Error) -> Self {
        Self { os: e.raw_os_error(), kind: e.kind(), message: e.to_string() }
    }

    fn to_io(&self) -> io::Error {
        match self.os {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(self.kind, self.message.clone()),
        }
    }
}

type Shared = Result<(), Failure>;

/// One disk's checksum journal.
pub(crate) struct Journal {
    engine: Engine,
    layout: Layout,
    uuid: [u8; 16],
    state: Mutex<State>,
    /// Woken when a checkpoint ends, and when a batch written at positions
    /// now below the tail completes: for a batch waiting for ring space.
    room: Notify,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("ring_blocks", &self.layout.journal_blocks).finish()
    }
}

enum Taken {
    Nothing,
    Full,
    Batch(u64, Vec<Commit>),
}

struct Commit {
    slot: u64,
    changes: Vec<Change>,
    done: oneshot::Sender<Shared>,
}

struct State {
    /// Commits not yet given a ring block.
    pending: Vec<Commit>,
    /// Tasks writing ring blocks, at most [`RING_WRITERS`]: each takes the
    /// pending commits, writes them and takes more until none are left.
    writers: usize,
    /// The first sequence of each batch those tasks are writing. A ring
    /// position is reused only once the write before it there has
    /// completed, whatever the tail: two writes in flight to one place
    /// could land in either order.
    in_flight: Vec<u64>,
    /// The sequence the next ring block gets.
    next_seq: u64,
    /// Every change below this sequence is in the checksum blocks, durably.
    tail: u64,
    checkpoint: u64,
    checkpointing: bool,
    /// The newest committed table of every slot changed since the last
    /// checkpoint began: what the next one writes.
    dirty: HashMap<u64, Box<[u32]>>,
    /// The last ring block holding each slot's changes, for slots with
    /// changes at or above the tail (pruned at each checkpoint).
    last_seq: HashMap<u64, u64>,
    /// A checkpoint failed: the ring cannot advance, every commit fails.
    failed: Option<Failure>,
}

impl Journal {
    /// Replays the journal of a version 2 disk into its checksum blocks and
    /// starts an empty one after it.
    pub(crate) async fn open(engine: Engine, layout: Layout, uuid: [u8; 16]) -> io::Result<Arc<Self>> {
        let ring = layout.journal_blocks;
        let tails = engine.read(layout.tail_block_at(0), TAIL_BLOCKS as usize * BLOCK_SIZE_BYTES).await?;
        // Formatting writes one, so a disk with neither whole has lost
        // where its journal starts: replaying from anywhere else could put
        // back checksums a checkpoint had replaced.
        let last = Tail::newest(&uuid, &tails)
            .filter(|t| t.tail < SEQ_MAX && t.checkpoint < SEQ_MAX)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "checksum journal has no whole tail record"))?;
        let blocks = engine.read(layout.journal_block_at(0), ring as usize * BLOCK_SIZE_BYTES).await?;
        let mut found: Vec<(u64, Vec<Change>)> = blocks
            .chunks_exact(BLOCK_SIZE_BYTES)
            .enumerate()
            .filter_map(|(position, b)| {
                let (seq, changes) = decode_block(&uuid, b)?;
                // At most a ring's length past the tail: a block further on
                // cannot have been written after it.
                let live = seq >= last.tail && seq - last.tail < ring && seq % ring == position as u64;
                live.then_some((seq, changes))
            })
            .collect();
        found.sort_by_key(|(seq, _)| *seq);
        let next_seq = found.last().map_or(last.tail, |(seq, _)| seq + 1);
        replay(&engine, &layout, &found).await?;
        engine.sync().await?;
        let journal = Arc::new(Self {
            engine,
            layout,
            uuid,
            state: Mutex::new(State {
                pending: Vec::new(),
                writers: 0,
                in_flight: Vec::new(),
                next_seq,
                // Recorded below, before the journal is shared.
                tail: next_seq,
                checkpoint: last.checkpoint,
                checkpointing: false,
                dirty: HashMap::new(),
                last_seq: HashMap::new(),
                failed: None,
            }),
            room: Notify::new(),
        });
        journal.record_tail(next_seq).await?;
        Ok(journal)
    }

    /// Writes the first tail record of a newly formatted disk (and clears
    /// the other tail block, which may hold anything on a block device),
    /// after reserving the journal's space in a disk file, so that a full
    /// file system cannot fail a ring write (which would fail the journal).
    pub(crate) async fn format(engine: &Engine, layout: &Layout, uuid: &[u8; 16]) -> io::Result<()> {
        let region = layout.journal_block_at(layout.journal_blocks) - layout.tail_block_at(0);
        match engine.fallocate(FallocMode::Allocate, layout.tail_block_at(0), region).await {
            Err(e) if e.raw_os_error() != Some(libc::EOPNOTSUPP) => return Err(e),
            _ => {}
        }
        let mut blocks = AlignedBuf::zeroed(TAIL_BLOCKS as usize * BLOCK_SIZE_BYTES);
        Tail { checkpoint: 0, tail: 0 }.encode(uuid, &mut blocks[..BLOCK_SIZE_BYTES]);
        engine.write(layout.tail_block_at(0), blocks.freeze()).await
    }

    /// Journals `changes` to `slot`'s checksums, whose whole table is now
    /// `table`, and returns once they are in a completed ring block.
    ///
    /// A commit that finds every ring-writing task with a batch in flight
    /// (or none at all) starts another, up to [`RING_WRITERS`]; it writes
    /// ring blocks until no commit is pending. A task of its own, not the
    /// committer, so that a cancelled request (its client gone) cannot
    /// drop a half-written batch and leave the journal with a writer that
    /// never returns. With `busy` (other writes are in progress on the
    /// disk) the task first lets the runtime's round run on, so the writes
    /// woken with this one share its ring block.
    pub(crate) async fn commit(
        self: &Arc<Self>,
        slot: u64,
        changes: Vec<Change>,
        table: &[u32],
        busy: bool,
    ) -> io::Result<()> {
        let (done, landed) = oneshot::channel();
        {
            let mut s = self.lock();
            if let Some(e) = &s.failed {
                return Err(e.to_io());
            }
            // The slot's table awaiting a checkpoint, overwritten in place
            // when it already waits (most writes at depth): no allocation.
            match s.dirty.get_mut(&slot) {
                Some(waiting) if waiting.len() == table.len() => waiting.copy_from_slice(table),
                _ => {
                    s.dirty.insert(slot, table.into());
                }
            }
            s.pending.push(Commit { slot, changes, done });
            if s.writers == s.in_flight.len() && s.writers < RING_WRITERS {
                s.writers += 1;
                let journal = self.clone();
                tokio::spawn(async move {
                    if busy {
                        tokio::task::yield_now().await;
                    }
                    while journal.more() {
                        journal.write_batch().await;
                    }
                });
            }
        }
        match landed.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_io()),
            Err(_) => Err(io::Error::other("checksum journal dropped a commit")),
        }
    }

    /// Whether `slot` has no change in the journal at or above its durable
    /// tail: then replay never touches its checksum block, no checkpoint
    /// holds its table, and a lone write may rewrite the block directly
    /// (the caller holds the slot's lock; a commit of a cancelled write may
    /// still be pending, which is why `pending` is looked at too).
    pub(crate) fn clean(&self, slot: u64) -> bool {
        let s = self.lock();
        s.failed.is_none()
            && !s.dirty.contains_key(&slot)
            && !s.pending.iter().any(|c| c.slot == slot)
            && s.last_seq.get(&slot).is_none_or(|seq| *seq < s.tail)
    }

    /// Whether commits are pending; if not, the calling writer stops.
    fn more(&self) -> bool {
        let mut s = self.lock();
        if s.pending.is_empty() {
            s.writers -= 1;
            return false;
        }
        true
    }

    /// Writes the first pending commits into ring blocks (waiting for a
    /// checkpoint if the ring is full) and tells their writers.
    async fn write_batch(self: &Arc<Self>) {
        let (seq, batch) = loop {
            let room = self.room.notified();
            tokio::pin!(room);
            match self.take(room.as_mut()) {
                Taken::Nothing => return,
                Taken::Full => room.await,
                Taken::Batch(seq, batch) => break (seq, batch),
            }
        };
        let written = self.write_ring(seq, &batch).await.map_err(|e| Failure::of(&e));
        let below_tail = {
            let mut s = self.lock();
            s.in_flight.retain(|&first| first != seq);
            if let Err(e) = &written {
                tracing::error!(error = %e.message, "checksum journal write failed; the disk's writes fail from now on");
                s.failed.get_or_insert_with(|| e.clone());
            }
            seq < s.tail
        };
        if below_tail {
            // A writer may be waiting for this ring position.
            self.room.notify_waiters();
        }
        for c in batch {
            let _ = c.done.send(written.clone());
        }
    }

    /// Takes the next batch and its ring blocks; when the ring is full (or
    /// the positions it needs are still being written), leaves the batch
    /// pending, starts a checkpoint if that is what frees them, and enables
    /// `room` to hear of it.
    fn take(self: &Arc<Self>, room: Pin<&mut Notified<'_>>) -> Taken {
        let mut s = self.lock();
        if let Some(e) = s.failed.clone() {
            for c in s.pending.drain(..) {
                let _ = c.done.send(Err(e.clone()));
            }
            return Taken::Nothing;
        }
        let batch = take_batch(&mut s.pending, self.layout.journal_blocks / 4);
        if batch.is_empty() {
            return Taken::Nothing;
        }
        let blocks = blocks_for(&batch);
        let ring = self.layout.journal_blocks;
        let reusable_below = s.in_flight.iter().fold(s.tail, |low, &first| low.min(first));
        if s.next_seq + blocks - reusable_below > ring {
            s.pending.splice(0..0, batch);
            room.enable();
            // Only the tail is a checkpoint's to move; a write still in
            // flight below it wakes `room` itself when it completes.
            if s.next_seq + blocks - s.tail > ring {
                self.start_checkpoint(&mut s);
            }
            return Taken::Full;
        }
        let seq = s.next_seq;
        s.next_seq += blocks;
        s.in_flight.push(seq);
        for c in &batch {
            s.last_seq.insert(c.slot, seq + blocks - 1);
        }
        if s.next_seq - s.tail >= self.layout.journal_blocks / 2 {
            self.start_checkpoint(&mut s);
        }
        Taken::Batch(seq, batch)
    }

    /// Writes `batch`'s changes into ring blocks `seq ..`, all at once.
    async fn write_ring(&self, seq: u64, batch: &[Commit]) -> io::Result<()> {
        let changes: Vec<Change> = batch.iter().flat_map(|c| c.changes.iter().copied()).collect();
        let writes = changes.chunks(CHANGES_PER_BLOCK).enumerate().map(|(i, part)| {
            let seq = seq + i as u64;
            let mut block = AlignedBuf::zeroed(BLOCK_SIZE_BYTES);
            encode_block(&self.uuid, seq, part, &mut block);
            self.engine.write(self.layout.journal_block_at(seq % self.layout.journal_blocks), block.freeze())
        });
        join_all(writes).await.into_iter().collect()
    }

    fn start_checkpoint(self: &Arc<Self>, s: &mut State) {
        if std::mem::replace(&mut s.checkpointing, true) {
            return;
        }
        let tables = std::mem::take(&mut s.dirty);
        let upto = s.next_seq;
        let journal = self.clone();
        tokio::spawn(async move {
            let result = journal.checkpoint(tables, upto).await;
            let mut s = journal.lock();
            s.checkpointing = false;
            match result {
                Ok(()) => {
                    s.tail = upto;
                    s.last_seq.retain(|_, seq| *seq >= upto);
                }
                Err(e) => {
                    tracing::error!(error = %e, "checksum journal checkpoint failed; the disk's writes fail from now on");
                    s.failed = Some(Failure::of(&e));
                }
            }
            drop(s);
            journal.room.notify_waiters();
        });
    }

    /// Writes `tables` into their checksum blocks, durably, then records
    /// that every change below `upto` is there. Every change below `upto`
    /// was committed, with its table, before `tables` was taken.
    async fn checkpoint(&self, tables: HashMap<u64, Box<[u32]>>, upto: u64) -> io::Result<()> {
        let tables: Vec<(u64, Box<[u32]>)> = tables.into_iter().collect();
        for part in tables.chunks(CHECKPOINT_BATCH) {
            let writes = part.iter().map(|(slot, table)| write_crc_block(&self.engine, &self.layout, *slot, table));
            join_all(writes).await.into_iter().collect::<io::Result<()>>()?;
        }
        self.engine.sync().await?;
        self.record_tail(upto).await
    }

    /// Records, durably, that the tail is `tail` (the caller has made every
    /// change below it durable in the checksum blocks).
    async fn record_tail(&self, tail: u64) -> io::Result<()> {
        let record = {
            let mut s = self.lock();
            s.checkpoint += 1;
            Tail { checkpoint: s.checkpoint, tail }
        };
        let mut block = AlignedBuf::zeroed(BLOCK_SIZE_BYTES);
        record.encode(&self.uuid, &mut block);
        self.engine.write(self.layout.tail_block_at(record.position()), block.freeze()).await?;
        self.engine.sync().await
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The first commits of `pending`, in order, that fit `max_blocks` ring
/// blocks (at least one commit, whatever its size).
fn take_batch(pending: &mut Vec<Commit>, max_blocks: u64) -> Vec<Commit> {
    let mut changes = 0;
    let mut n = 0;
    for c in pending.iter() {
        if n > 0 && (changes + c.changes.len()).div_ceil(CHANGES_PER_BLOCK) as u64 > max_blocks.max(1) {
            break;
        }
        changes += c.changes.len();
        n += 1;
    }
    pending.drain(..n).collect()
}

fn blocks_for(batch: &[Commit]) -> u64 {
    (batch.iter().map(|c| c.changes.len()).sum::<usize>().div_ceil(CHANGES_PER_BLOCK) as u64).max(1)
}

/// Applies the ring blocks `found` (in sequence order) to the checksum
/// blocks they name, each slot's block read, changed and written once.
async fn replay(engine: &Engine, layout: &Layout, found: &[(u64, Vec<Change>)]) -> io::Result<()> {
    let mut by_slot: HashMap<u64, Vec<Change>> = HashMap::new();
    let mut changes = 0;
    for c in found.iter().flat_map(|(_, changes)| changes) {
        // Slots past the disk cannot come from this build; skip, not trust.
        if c.slot < layout.slot_count {
            by_slot.entry(c.slot).or_default().push(*c);
            changes += 1;
        }
    }
    for (slot, changes) in &by_slot {
        let block = engine.read(layout.crc_table_at(*slot), BLOCK_SIZE_BYTES).await?;
        let mut table = decode_crc_block(&block, layout.chunk_blocks());
        for c in changes {
            c.apply(&mut table);
        }
        write_crc_block(engine, layout, *slot, &table).await?;
    }
    if !found.is_empty() {
        tracing::info!(blocks = found.len(), changes, slots = by_slot.len(), "checksum journal replayed");
    }
    Ok(())
}

/// Rewrites slot `slot`'s whole checksum block with `table`: what a
/// checkpoint, replay and a lone write (and every write on a version 1
/// disk) do.
pub(super) async fn write_crc_block(engine: &Engine, layout: &Layout, slot: u64, table: &[u32]) -> io::Result<()> {
    let mut block = AlignedBuf::zeroed(BLOCK_SIZE_BYTES);
    encode_crc_block(table, &mut block);
    engine.write(layout.crc_table_at(slot), block.freeze()).await
}
