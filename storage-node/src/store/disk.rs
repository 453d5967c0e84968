//! One disk's chunks: allocation of slots, and reads and writes checked
//! against each block's crc32c.
//!
//! Why a crash is harmless: a write sends its data blocks and its new
//! checksums together (into the disk's checksum journal; on a version 1
//! disk, or for a lone write to a slot with nothing in the journal, into
//! the slot's checksum block) and is acknowledged only when both have
//! landed. A crash with one landed and not the other leaves blocks
//! whose data and checksum disagree; they are reported bad, never returned.
//! Such a write was not acknowledged, so nothing acknowledged is lost. Allocation
//! writes the slot-table entry last, after the slot's data has been punched
//! to zeros and its checksum table reset, so a slot is never handed out
//! with old data in it.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use chuyi_common::buf::{is_aligned, AlignedBuf};
use chuyi_common::checksum::{block_crcs, crc32c, zero_block_crc};
use chuyi_common::ids::{ChunkId, DeviceClass, DiskId, SNAPSHOT_INDEX_MAX, SNAP_SEQ_MAX};
use chuyi_common::limits::BLOCK_SIZE_BYTES;
use chuyi_common::proto::chunk::{DiskStat, DiskState, Extent, Stamp};
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use super::error::StoreError;
use super::journal::{write_crc_block, Journal};
use super::slot::{decode_crc_block, Lineage, Slot, SlotRef};
use super::snaps::{self, Source};
use crate::format::journal::runs;
use crate::format::layout::Layout;
use crate::format::slot_table::{SlotEntry, ENTRY_BYTES};
use crate::in_flight::InFlight;
use crate::io::{Engine, FallocMode};

const BLOCK: u64 = BLOCK_SIZE_BYTES as u64;

/// How many times an operation looks a chunk up again after finding its
/// slot deleted under it before giving up.
const SLOT_RETRIES: usize = 8;

/// Blocks a tracked diff reads in one request (1 MiB).
const DIFF_RUN_BLOCKS: usize = 256;

/// Clones a tracked diff follows before it compares every block instead:
/// more than a chunk ever keeps (snapshots are counted in the tens).
const MAX_LINEAGE_LINKS: usize = 4096;

/// What the node knows of a disk's slots, under one short-held lock.
#[derive(Debug)]
pub(crate) struct Index {
    pub chunks: BTreeMap<ChunkId, SlotRef>,
    /// Free slot numbers; the lowest is at the end, so slots fill in order.
    pub free: Vec<u64>,
    /// The slot table as on disk, to rebuild a table block from.
    pub entries: Vec<SlotEntry>,
}

impl Index {
    pub fn from_entries(entries: Vec<SlotEntry>) -> Self {
        let mut chunks = BTreeMap::new();
        let mut free = Vec::new();
        for (slot, entry) in entries.iter().enumerate().rev() {
            match entry {
                SlotEntry::Free => free.push(slot as u64),
                SlotEntry::Used(chunk, stamp) => {
                    chunks.insert(*chunk, Arc::new(RwLock::new(Slot::existing(slot as u64, *stamp))));
                }
                SlotEntry::Damaged => tracing::error!(slot, "slot table entry is damaged; slot left unused"),
            }
        }
        Self { chunks, free, entries }
    }
}

/// One open disk.
#[derive(Debug)]
pub struct DiskStore {
    id: DiskId,
    class: DeviceClass,
    path: PathBuf,
    engine: Engine,
    layout: Layout,
    direct_io: bool,
    index: Mutex<Index>,
    /// Where checksum changes go on a version 2 disk; `None` on version 1,
    /// whose writes rewrite the slot's checksum block.
    journal: Option<Arc<Journal>>,
    /// Serialises rewrites of slot-table blocks, which 128 slots share.
    table_lock: tokio::sync::Mutex<()>,
    failed: AtomicBool,
    checksum_errors: AtomicU64,
    /// Checksum-changing operations (writes, write-zeroes, poisons,
    /// installs, rollbacks) between their start and their answer: more than
    /// one means a change has company, so it is journalled and its commit
    /// waits a moment for the others to share its ring block.
    writes: AtomicU64,
}

impl DiskStore {
    pub(crate) fn new(
        id: DiskId,
        class: DeviceClass,
        path: PathBuf,
        engine: Engine,
        layout: Layout,
        direct_io: bool,
        index: Index,
    ) -> Self {
        Self {
            id,
            class,
            path,
            engine,
            layout,
            direct_io,
            index: Mutex::new(index),
            journal: None,
            table_lock: tokio::sync::Mutex::new(()),
            failed: AtomicBool::new(false),
            checksum_errors: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        }
    }

    /// The disk's checksum journal, opened (and replayed) by the caller.
    pub(crate) fn with_journal(mut self, journal: Option<Arc<Journal>>) -> Self {
        self.journal = journal;
        self
    }

    pub fn id(&self) -> DiskId {
        self.id
    }

    pub fn chunk_size(&self) -> u64 {
        self.layout.chunk_size
    }

    pub fn class(&self) -> DeviceClass {
        self.class
    }

    /// What this disk's I/O has done since it was opened.
    pub fn io_stats(&self) -> &crate::io::stats::IoStats {
        self.engine.stats()
    }

    /// Writes `data` at `offset` of `chunk`, allocating the chunk on first
    /// write. With `fua` the data is on stable storage before returning.
    pub async fn write(&self, chunk: ChunkId, offset: u64, data: Bytes, fua: bool) -> Result<(), StoreError> {
        self.write_snap(chunk, offset, data, fua, 0).await
    }

    /// [`Self::write`] under snap sequence `snap`: a chunk last written
    /// under an older one is first kept in a clone (module `snaps`).
    pub async fn write_snap(
        &self,
        chunk: ChunkId,
        offset: u64,
        data: Bytes,
        fua: bool,
        snap: u32,
    ) -> Result<(), StoreError> {
        self.check_op(offset, data.len() as u64)?;
        if data.is_empty() {
            return self.sync_if(fua).await;
        }
        let _counted = InFlight::start(&self.writes);
        let mut slot = self.slot_for_write(chunk, snap).await?;
        self.keep_clone(&mut slot, chunk, snap).await?;
        self.write_and_sync(slot, chunk, offset, data, fua).await
    }

    /// [`Self::write`] into a chunk (or clone) this disk holds, never
    /// allocating one: a repair's write, which must not bring back a copy
    /// deleted or trimmed while it read another replica's. `NoChunk` when
    /// there is none. Makes no clone (as a write under sequence 0).
    pub async fn rewrite(&self, chunk: ChunkId, offset: u64, data: Bytes, fua: bool) -> Result<(), StoreError> {
        self.check_op(offset, data.len() as u64)?;
        if data.is_empty() {
            return self.sync_if(fua).await;
        }
        let missing = || StoreError::NoChunk { disk: self.id, chunk };
        let _counted = InFlight::start(&self.writes);
        let mut slot = self.lookup(chunk).ok_or_else(missing)?.write_owned().await;
        if !slot.live {
            return Err(missing());
        }
        self.ensure_loaded(&mut slot).await?;
        self.write_and_sync(slot, chunk, offset, data, fua).await
    }

    /// The rest of a write once its slot is locked and loaded: the data,
    /// then, with `fua`, a flush after the slot is let go.
    async fn write_and_sync(
        &self,
        mut slot: OwnedRwLockWriteGuard<Slot>,
        chunk: ChunkId,
        offset: u64,
        data: Bytes,
        fua: bool,
    ) -> Result<(), StoreError> {
        self.write_locked(&mut slot, chunk, offset, data).await?;
        drop(slot);
        self.sync_if(fua).await
    }

    /// Reads `len` bytes at `offset`. Returns the data and whether the chunk
    /// exists; a chunk never written reads as zeros.
    pub async fn read(&self, chunk: ChunkId, offset: u64, len: u64) -> Result<(Bytes, bool), StoreError> {
        self.check_op(offset, len)?;
        let Some(slot_ref) = self.lookup(chunk) else {
            return Ok((zeros(len), false));
        };
        let slot = self.read_slot(slot_ref).await?;
        self.read_locked(&slot, chunk, offset, len).await
    }

    /// The block at `offset` (a multiple of 4096) as it is on the disk, and
    /// the checksum stored for it, without checking one against the other:
    /// for mending a block both replicas fail (`replication::torn`). A
    /// chunk this disk does not hold is an error (`NoChunk`), not zeros:
    /// there is no copy to compare.
    pub async fn read_raw(&self, chunk: ChunkId, offset: u64) -> Result<(Bytes, u32), StoreError> {
        self.check_op(offset, BLOCK)?;
        if !offset.is_multiple_of(BLOCK) {
            return Err(StoreError::NotABlock { offset, len: BLOCK });
        }
        let missing = || StoreError::NoChunk { disk: self.id, chunk };
        let slot = self.read_slot(self.lookup(chunk).ok_or_else(missing)?).await?;
        let crc = match slot.crcs.as_deref() {
            Some(crcs) if slot.live => crcs[(offset / BLOCK) as usize],
            _ => return Err(missing()),
        };
        let at = self.layout.data_at(slot.index) + offset;
        let data = self.engine.read(at, BLOCK_SIZE_BYTES).await.map_err(|e| self.io_failed(e))?;
        Ok((data.freeze(), crc))
    }

    /// Reads `chunk` as snapshot `snap` saw it: from the head, from the
    /// clone that keeps it, or zeros (and `false`) when the chunk did not
    /// exist then.
    pub async fn read_snap(
        &self,
        chunk: ChunkId,
        offset: u64,
        len: u64,
        snap: u32,
    ) -> Result<(Bytes, bool), StoreError> {
        self.check_op(offset, len)?;
        let Some(slot_ref) = self.lookup(chunk) else {
            return Ok((zeros(len), false));
        };
        // Held while deciding: no clone is made under a read lock.
        let slot = self.read_slot(slot_ref).await?;
        if !slot.live {
            return Ok((zeros(len), false));
        }
        match snaps::resolve(slot.stamp, &self.clone_tags(chunk), snap) {
            Source::Head => self.read_locked(&slot, chunk, offset, len).await,
            Source::Absent => Ok((zeros(len), false)),
            Source::Clone(tag) => {
                drop(slot);
                self.read(chunk.clone_of(tag), offset, len).await
            }
            Source::Missing => Err(self.clone_missing(chunk, snap)),
        }
    }

    async fn read_locked(
        &self,
        slot: &Slot,
        chunk: ChunkId,
        offset: u64,
        len: u64,
    ) -> Result<(Bytes, bool), StoreError> {
        let Some(crcs) = slot.crcs.as_deref().filter(|_| slot.live) else {
            return Ok((zeros(len), false));
        };
        let (start, end) = aligned(offset, len);
        let buf = self.read_verified(chunk, slot.index, crcs, start, end).await?;
        let at = (offset - start) as usize;
        Ok((buf.freeze().slice(at..at + len as usize), true))
    }

    /// Makes `len` bytes at `offset` read as zeros, freeing whole blocks'
    /// space. Trim and write-zeroes share this: both leave zeros behind.
    pub async fn zero(&self, chunk: ChunkId, offset: u64, len: u64, fua: bool) -> Result<(), StoreError> {
        self.zero_snap(chunk, offset, len, fua, 0).await
    }

    /// [`Self::zero`] under snap sequence `snap`, as [`Self::write_snap`].
    pub async fn zero_snap(
        &self,
        chunk: ChunkId,
        offset: u64,
        len: u64,
        fua: bool,
        snap: u32,
    ) -> Result<(), StoreError> {
        self.check_op(offset, len)?;
        let _counted = InFlight::start(&self.writes);
        self.zero_unsynced(chunk, offset, len, snap).await?;
        // Even when there was nothing to zero: a chunk whose delete is not
        // yet durable would come back after a power cut, with its data.
        self.sync_if(fua).await
    }

    async fn zero_unsynced(&self, chunk: ChunkId, offset: u64, len: u64, snap: u32) -> Result<(), StoreError> {
        let Some(slot_ref) = self.lookup(chunk) else { return Ok(()) };
        let mut slot = slot_ref.write_owned().await;
        if !slot.live || len == 0 {
            return Ok(());
        }
        self.ensure_loaded(&mut slot).await?;
        self.keep_clone(&mut slot, chunk, snap).await?;
        let (inner_start, inner_end) = (offset.div_ceil(BLOCK) * BLOCK, (offset + len) / BLOCK * BLOCK);
        if inner_start >= inner_end {
            self.write_locked(&mut slot, chunk, offset, zeros(len)).await?;
        } else {
            if offset < inner_start {
                self.write_locked(&mut slot, chunk, offset, zeros(inner_start - offset)).await?;
            }
            if inner_end < offset + len {
                self.write_locked(&mut slot, chunk, inner_end, zeros(offset + len - inner_end)).await?;
            }
            self.punch_blocks(&mut slot, inner_start, inner_end).await?;
        }
        Ok(())
    }

    /// Makes the whole blocks of `[offset, offset + len)` read as bad (a
    /// checksum error) until they are written again: zeros go to the file
    /// and a checksum no zero block has goes to the table. What backfill
    /// leaves on a new replica where the only complete copy's block was bad.
    pub async fn poison(&self, chunk: ChunkId, offset: u64, len: u64) -> Result<(), StoreError> {
        self.check_op(offset, len)?;
        let (start, end) = (offset.div_ceil(BLOCK) * BLOCK, (offset + len) / BLOCK * BLOCK);
        if start >= end {
            return Ok(());
        }
        let _counted = InFlight::start(&self.writes);
        let mut slot = self.slot_for_write(chunk, 0).await?;
        let (first, count) = ((start / BLOCK) as usize, ((end - start) / BLOCK) as usize);
        let at = self.layout.data_at(slot.index) + start;
        if slot.holes && self.crcs(&slot)?[first..first + count].contains(&zero_block_crc()) {
            self.reserve(chunk, at, end - start).await?;
        }
        // The poisoned checksums first, then the zeros under them: whatever
        // a crash or a power cut keeps of the two, the blocks read as bad
        // (or as they were). Zeros with their own checksum first would read
        // as good zeros if the poisoned checksums were lost.
        self.commit_crcs(&mut slot, first, &vec![poisoned_crc(); count]).await?;
        slot.changing(first, count);
        let zeroed = self.engine.write(at, AlignedBuf::zeroed((end - start) as usize).freeze()).await;
        slot.settled();
        zeroed.map_err(|e| self.io_failed(e))
    }

    /// Removes `chunk`, zeroing its data in the file and freeing its slot;
    /// a chunk goes with its snapshot clones.
    pub async fn delete(&self, chunk: ChunkId) -> Result<(), StoreError> {
        self.check_up()?;
        if !chunk.is_clone() {
            for tag in self.clone_tags(chunk) {
                self.delete_one(chunk.clone_of(tag)).await?;
            }
        }
        self.delete_one(chunk).await
    }

    async fn delete_one(&self, chunk: ChunkId) -> Result<(), StoreError> {
        let Some(slot_ref) = self.lock_index().chunks.remove(&chunk) else { return Ok(()) };
        // Until the slot is free on disk, failing (or being cancelled) puts
        // the chunk back: nothing a reader could see has changed.
        let undo = UndoDelete { disk: self, chunk, slot_ref: Some(slot_ref.clone()) };
        let mut slot = slot_ref.write_owned().await;
        // Put back on failure, its bytes maybe half punched; counted in
        // flight like a write, for a punch that lands after a cancel.
        slot.forget_lineage();
        slot.changing(0, self.layout.chunk_blocks());
        let freed = self.free_slot(&slot).await;
        slot.settled();
        freed?;
        undo.disarm();
        slot.live = false;
        slot.crcs = None;
        self.lock_index().free.push(slot.index);
        Ok(())
    }

    /// Puts `chunk` back as snapshot `to` saw it, copying locally from the
    /// clone that keeps it (or zeroing it, if it did not exist then). Under
    /// `snap`, the volume's sequence now, the head is first kept in a
    /// clone as for a write, so newer snapshots keep their view.
    pub async fn rollback(&self, chunk: ChunkId, to: u32, snap: u32) -> Result<(), StoreError> {
        self.check_up()?;
        let _counted = InFlight::start(&self.writes);
        self.rollback_unsynced(chunk, to, snap).await?;
        // Even when there was nothing to do: what the answer reports (as
        // a delete not yet durable) must survive a power cut.
        self.sync().await
    }

    async fn rollback_unsynced(&self, chunk: ChunkId, to: u32, snap: u32) -> Result<(), StoreError> {
        let Some(slot_ref) = self.lookup(chunk) else { return Ok(()) };
        let mut slot = slot_ref.write_owned().await;
        if !slot.live {
            return Ok(());
        }
        self.ensure_loaded(&mut slot).await?;
        // Unchanged since the snapshot: nothing to copy, and no clone to
        // make for the newer ones either.
        if snaps::resolve(slot.stamp, &self.clone_tags(chunk), to) == Source::Head {
            return Ok(());
        }
        self.keep_clone(&mut slot, chunk, snap).await?;
        slot.forget_lineage();
        // Counted in flight like a write: if this is cancelled mid-copy,
        // the copy may still land after the next clone is made, so no
        // lineage may start from it.
        slot.changing(0, self.layout.chunk_blocks());
        let restored = self.restore_from(&mut slot, chunk, to).await;
        slot.settled();
        restored
    }

    /// The body of [`Self::rollback`]: the head's bytes made snapshot `to`'s.
    async fn restore_from(&self, slot: &mut Slot, chunk: ChunkId, to: u32) -> Result<(), StoreError> {
        match snaps::resolve(slot.stamp, &self.clone_tags(chunk), to) {
            Source::Head => {}
            Source::Absent => self.punch_blocks(slot, 0, self.layout.chunk_size).await?,
            Source::Clone(tag) => {
                let Some(clone_ref) = self.lookup(chunk.clone_of(tag)) else {
                    return Err(self.clone_missing(chunk, to));
                };
                let clone = self.read_slot(clone_ref).await?;
                let crcs = self.crcs(&clone)?.to_vec();
                self.copy_slot(clone.index, slot.index, &crcs).await?;
                slot.crcs = Some(crcs.into_boxed_slice());
            }
            Source::Missing => return Err(self.clone_missing(chunk, to)),
        }
        Ok(())
    }

    /// Which blocks of `chunk` differ between snapshot `from` (`None`: an
    /// empty volume) and snapshot `to` (`None`: the chunk now), as runs over
    /// the whole chunk, `data` where they differ. A chunk not written since
    /// `from` is answered from its stamp and clones alone; one written since
    /// is compared byte for byte on this disk (a checksum match is no
    /// proof, and a backup built on this must miss nothing): only the
    /// blocks written since, when this process saw every write in between
    /// ([`Self::tracked_diff`]), else every block. Both views stay locked
    /// while they are read, so a write meanwhile cannot pass for either.
    pub async fn diff(&self, chunk: ChunkId, from: Option<u32>, to: Option<u32>) -> Result<Vec<Extent>, StoreError> {
        match self.compare_views(chunk, from, to, true).await? {
            Some(runs) => Ok(runs),
            None => unreachable!("compare_views compares every block when it cannot follow the writes"),
        }
    }

    /// [`Self::diff`] from what this process saw written, when it can be:
    /// the lineages from `to`'s copy lead back to `from`'s clone through
    /// clones nothing has touched since, and only the blocks written on the
    /// way are compared. `None` when a link is unknown (after a restart,
    /// a rollback, a clone written by backfill or a write cancelled in
    /// flight), or when `from`'s copy is not a clone: then every block
    /// must be compared.
    pub async fn tracked_diff(
        &self,
        chunk: ChunkId,
        from: Option<u32>,
        to: Option<u32>,
    ) -> Result<Option<Vec<Extent>>, StoreError> {
        self.compare_views(chunk, from, to, false).await
    }

    /// Compares the copies `from` and `to` read, on the blocks written
    /// between them when the lineages say which, else on every block
    /// (`every`) or not at all (`None`).
    async fn compare_views(
        &self,
        chunk: ChunkId,
        from: Option<u32>,
        to: Option<u32>,
        every: bool,
    ) -> Result<Option<Vec<Extent>>, StoreError> {
        // Which blocks differ does not depend on the order asked, and the
        // copies are always locked newer first (the head, then higher
        // clones): two diffs asked in opposite orders must not each hold
        // the copy the other waits for.
        let (from, to) = match (from, to) {
            (Some(a), Some(b)) if a > b => (Some(b), Some(a)),
            ordered => ordered,
        };
        let (old, new, head) = match self.diff_sources(chunk, from, to).await? {
            Ends::Same => return Ok(Some(self.unchanged())),
            Ends::Differ { old, new, head } => (old, new, head),
        };
        // The head stays locked only if a view reads it.
        let head = (old == Source::Head || new == Source::Head).then_some(head);
        let newer = self.view(chunk, new, to, head.as_deref()).await?;
        let followed = match (old, &newer) {
            (Source::Clone(base), View::Copy(_, slot)) => self.follow_lineage(chunk, slot, base).await?,
            _ => None,
        };
        let (written, older) = match followed {
            Some((written, slot)) => (Some(written), View::Copy(chunk.clone_of(base_of(old)), SlotView::Guard(slot))),
            None if every => (None, self.view(chunk, old, from, head.as_deref()).await?),
            None => return Ok(None),
        };
        let blocks = self.layout.chunk_blocks();
        let marked = |block: usize| written.as_ref().is_none_or(|w| w.is_marked(block));
        let mut runs = Vec::new();
        for (first, count, compare) in marked_runs(blocks, marked) {
            let len = (count * BLOCK_SIZE_BYTES) as u64;
            if !compare {
                push_run(&mut runs, len as u32, false);
                continue;
            }
            let offset = first as u64 * BLOCK;
            let (a, b) = tokio::join!(self.read_view(&older, offset, len), self.read_view(&newer, offset, len));
            for (a, b) in a?.chunks(BLOCK_SIZE_BYTES).zip(b?.chunks(BLOCK_SIZE_BYTES)) {
                push_run(&mut runs, BLOCK_SIZE_BYTES as u32, a != b);
            }
        }
        Ok(Some(runs))
    }

    /// The copy `source` names, locked for reading (the head's lock is the
    /// caller's, passed in): zeros for a chunk absent then, an error for a
    /// clone that should be there and is not (never zeros in its place).
    async fn view<'a>(
        &self,
        chunk: ChunkId,
        source: Source,
        snap: Option<u32>,
        head: Option<&'a Slot>,
    ) -> Result<View<'a>, StoreError> {
        let missing = || self.clone_missing(chunk, snap.unwrap_or(0));
        match source {
            Source::Head => Ok(View::Copy(chunk, SlotView::Head(head.ok_or_else(missing)?))),
            Source::Clone(tag) => match self.live_slot(chunk.clone_of(tag)).await? {
                Some(slot) => Ok(View::Copy(chunk.clone_of(tag), SlotView::Guard(slot))),
                None => Err(missing()),
            },
            Source::Absent => Ok(View::Zeros),
            Source::Missing => Err(missing()),
        }
    }

    async fn read_view(&self, view: &View<'_>, offset: u64, len: u64) -> Result<Bytes, StoreError> {
        match view {
            View::Zeros => Ok(zeros(len)),
            View::Copy(id, slot) => Ok(self.read_locked(slot, *id, offset, len).await?.0),
        }
    }

    /// Which copies snapshots `from` and `to` read, decided under the
    /// head's lock (held on in `Ends::Differ`, so no clone is made
    /// meanwhile).
    async fn diff_sources(&self, chunk: ChunkId, from: Option<u32>, to: Option<u32>) -> Result<Ends, StoreError> {
        self.check_up()?;
        let Some(slot_ref) = self.lookup(chunk) else { return Ok(Ends::Same) };
        let head = self.read_slot(slot_ref).await?;
        if !head.live {
            return Ok(Ends::Same);
        }
        let tags = self.clone_tags(chunk);
        let at = |snap: Option<u32>, otherwise| snap.map_or(otherwise, |s| snaps::resolve(head.stamp, &tags, s));
        let (old, new) = (at(from, Source::Absent), at(to, Source::Head));
        Ok(if old == new { Ends::Same } else { Ends::Differ { old, new, head } })
    }

    /// Walks lineages from `newest` back to clone `base`: the union of the
    /// blocks written on the way, and `base` locked. `None` where a link
    /// is missing or its clone has changed since it was made.
    async fn follow_lineage(
        &self,
        chunk: ChunkId,
        newest: &Slot,
        base: u32,
    ) -> Result<Option<(Lineage, OwnedRwLockReadGuard<Slot>)>, StoreError> {
        let Some(mut link) = newest.lineage.clone() else { return Ok(None) };
        let mut written = link.clone();
        for _ in 0..MAX_LINEAGE_LINKS {
            if link.prev < base {
                return Ok(None);
            }
            let Some(prev) = self.live_slot(chunk.clone_of(link.prev)).await? else { return Ok(None) };
            if prev.version != link.prev_version {
                return Ok(None);
            }
            if link.prev == base {
                return Ok(Some((written, prev)));
            }
            let Some(older) = prev.lineage.clone() else { return Ok(None) };
            written.absorb(&older);
            link = older;
        }
        Ok(None)
    }

    /// Before clone `tag` of `head` goes: the copy whose lineage leads to
    /// it (the next newer clone, or the head) is led past it instead, to
    /// where its own lineage leads, with the blocks written on both steps,
    /// so a diff across a deleted snapshot still follows the writes.
    async fn splice_lineage(&self, head: ChunkId, tag: u32) -> Result<(), StoreError> {
        let Some(going) = self.live_slot(head.clone_of(tag)).await? else { return Ok(()) };
        let (version, Some(older)) = (going.version, going.lineage.clone()) else { return Ok(()) };
        drop(going);
        let newer = match self.clone_tags(head).into_iter().find(|&t| t > tag) {
            Some(t) => head.clone_of(t),
            None => head,
        };
        let Some(slot_ref) = self.lookup(newer) else { return Ok(()) };
        let mut slot = slot_ref.write_owned().await;
        if let Some(lineage) = slot.lineage.as_mut().filter(|l| l.prev == tag && l.prev_version == version) {
            lineage.absorb(&older);
            lineage.prev = older.prev;
            lineage.prev_version = older.prev_version;
        }
        Ok(())
    }

    /// A chunk's slot locked for reading, if it is live.
    async fn live_slot(&self, chunk: ChunkId) -> Result<Option<OwnedRwLockReadGuard<Slot>>, StoreError> {
        let Some(slot_ref) = self.lookup(chunk) else { return Ok(None) };
        let slot = self.read_slot(slot_ref).await?;
        Ok(slot.live.then_some(slot))
    }

    fn unchanged(&self) -> Vec<Extent> {
        vec![Extent { len: self.layout.chunk_size as u32, data: false }]
    }

    /// Creates `chunk` holding `data` (the whole chunk) unless it exists:
    /// space reserved, data and checksums written, and only then the
    /// slot-table entry, so a crash leaves no chunk, never part of one. Its
    /// stamp is zeros: the data is what every snapshot of its volume saw
    /// before (a clone volume's parent's copy).
    pub async fn install(&self, chunk: ChunkId, data: Bytes) -> Result<(), StoreError> {
        self.check_op(0, data.len() as u64)?;
        if data.len() as u64 != self.layout.chunk_size {
            return Err(StoreError::OutOfRange {
                offset: 0,
                len: data.len() as u64,
                chunk_size: self.layout.chunk_size,
            });
        }
        let _counted = InFlight::start(&self.writes);
        let (undo, mut slot) = match self.reserve_slot(chunk) {
            Ok(reserved) => reserved,
            Err(None) => return Ok(()),
            Err(Some(e)) => return Err(e),
        };
        let at = self.layout.data_at(slot.index);
        self.reserve(chunk, at, self.layout.chunk_size).await?;
        let data = if is_aligned(&data) { data } else { AlignedBuf::copy_from(&data).freeze() };
        let mut crcs = Vec::with_capacity(self.layout.chunk_blocks());
        block_crcs(&data, &mut crcs);
        let (written, sums) = tokio::join!(self.engine.write(at, data), self.store_crcs(slot.index, 0, &crcs, &crcs));
        written.map_err(|e| self.io_failed(e))?;
        sums?;
        // The data durable before the entry that makes it the chunk's.
        self.sync().await?;
        self.write_entry(slot.index, SlotEntry::Used(chunk, Stamp::default())).await?;
        slot.crcs = Some(crcs.into_boxed_slice());
        slot.live = true;
        undo.disarm();
        Ok(())
    }

    /// Sets a chunk's snapshot stamp (backfill: the primary's), creating
    /// the chunk if it is missing.
    pub async fn set_stamp(&self, chunk: ChunkId, stamp: Stamp) -> Result<(), StoreError> {
        self.check_up()?;
        let mut slot = self.slot_for_write(chunk, 0).await?;
        if slot.stamp != stamp {
            // Backfill: the copy may now resolve snapshots to clones this
            // node did not make from it.
            slot.forget_lineage();
            slot.stamp = stamp;
            self.write_entry(slot.index, SlotEntry::Used(chunk, stamp)).await?;
            // Durable before the caller moves on (a resync's dirty mark is
            // gone once it returns): a power cut that reverted the stamp
            // would resolve snapshots to the wrong copy.
            self.sync().await?;
        }
        Ok(())
    }

    /// A chunk's snapshot stamp; `None` when it does not exist.
    pub fn stamp(&self, chunk: ChunkId) -> Option<Stamp> {
        let slot_ref = self.lookup(chunk)?;
        // A slot being written holds its lock: its stamp may be changing,
        // and the writer's view is the one that counts. Ask again then.
        let slot = slot_ref.try_read().ok()?;
        slot.live.then_some(slot.stamp)
    }

    /// The stamp of `chunk` (`None`: not held), once a write of it in
    /// progress has settled.
    pub async fn settled_stamp(&self, chunk: ChunkId) -> Result<Option<Stamp>, StoreError> {
        let Some(slot_ref) = self.lookup(chunk) else { return Ok(None) };
        let slot = self.read_slot(slot_ref).await?;
        Ok(slot.live.then_some(slot.stamp))
    }

    /// Removes `owner`'s clones that no snapshot in `live` (ascending)
    /// reads any more, of sequences up to `upto` (the volume's when `live`
    /// was read: a clone above it serves a snapshot taken since). Returns
    /// how many went.
    pub async fn trim_clones(&self, owner: u64, live: &[u32], upto: u32) -> Result<u64, StoreError> {
        self.check_up()?;
        let clones: Vec<ChunkId> = {
            let index = self.lock_index();
            let first = ChunkId::new(owner, 0).clone_of(0);
            index.chunks.range(first..=ChunkId::new(owner, u64::MAX)).map(|(id, _)| *id).collect()
        };
        let mut removed = 0;
        let mut heads: Vec<ChunkId> = clones.iter().map(|c| c.head()).collect();
        heads.dedup();
        for head in heads {
            let born = match self.lookup(head) {
                Some(slot_ref) => slot_ref.read().await.stamp.born,
                // Clones without their chunk: nothing reads them.
                None => SNAP_SEQ_MAX,
            };
            let tags: Vec<u32> = self.clone_tags(head).into_iter().filter(|&t| t <= upto).collect();
            for tag in snaps::unneeded(born, &tags, live) {
                self.splice_lineage(head, tag).await?;
                self.delete_one(head.clone_of(tag)).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// [`Self::sync`] for a request that asked for FUA.
    async fn sync_if(&self, fua: bool) -> Result<(), StoreError> {
        if fua {
            self.sync().await?;
        }
        Ok(())
    }

    /// Makes every completed write stable.
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.check_up()?;
        self.engine.sync().await.map_err(|e| self.io_failed(e))
    }

    /// Chunk ids after `start_after`, ascending, at most `max`; and whether
    /// more follow.
    pub fn list(&self, start_after: Option<ChunkId>, max: usize) -> (Vec<ChunkId>, bool) {
        let index = self.lock_index();
        let mut ids: Vec<ChunkId> = match start_after {
            Some(after) => index
                .chunks
                .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
                .map(|(id, _)| *id)
                .take(max + 1)
                .collect(),
            None => index.chunks.keys().copied().take(max + 1).collect(),
        };
        let more = ids.len() > max;
        ids.truncate(max);
        (ids, more)
    }

    /// Like [`Self::list`], keeping only the chunks `keep` accepts; looks at
    /// no more than `scan_max` chunks, so a sparse filter cannot hold the
    /// index lock for long. The returned cursor is where the next page
    /// starts (`None`: the listing is complete).
    pub fn list_where(
        &self,
        start_after: Option<ChunkId>,
        max: usize,
        scan_max: usize,
        keep: impl Fn(ChunkId) -> bool,
    ) -> (Vec<ChunkId>, Option<ChunkId>) {
        let index = self.lock_index();
        let lower = match start_after {
            Some(after) => std::ops::Bound::Excluded(after),
            None => std::ops::Bound::Unbounded,
        };
        let mut found = Vec::new();
        let mut last = None;
        for (scanned, (&id, _)) in index.chunks.range((lower, std::ops::Bound::Unbounded)).enumerate() {
            if found.len() == max || scanned == scan_max {
                return (found, last);
            }
            last = Some(id);
            if keep(id) {
                found.push(id);
            }
        }
        (found, None)
    }

    /// The crc32c of each block of `chunk`; `None` when it does not exist.
    pub async fn block_crcs(&self, chunk: ChunkId) -> Result<Option<Vec<u32>>, StoreError> {
        Ok(self.sums(chunk).await?.map(|(crcs, _)| crcs))
    }

    /// The crc32c of each block of `chunk` and its snapshot stamp, read
    /// together; `None` when it does not exist.
    pub async fn sums(&self, chunk: ChunkId) -> Result<Option<(Vec<u32>, Stamp)>, StoreError> {
        self.check_up()?;
        let Some(slot_ref) = self.lookup(chunk) else { return Ok(None) };
        let slot = self.read_slot(slot_ref).await?;
        if !slot.live {
            return Ok(None);
        }
        Ok(Some((self.crcs(&slot)?.to_vec(), slot.stamp)))
    }

    pub fn stat(&self) -> DiskStat {
        let chunks = self.lock_index().chunks.len() as u64;
        DiskStat {
            id: self.id,
            class: self.class,
            path: self.path.display().to_string(),
            capacity_bytes: self.layout.slot_count * self.layout.chunk_size,
            used_bytes: chunks * self.layout.chunk_size,
            chunks,
            state: if self.failed.load(Ordering::Relaxed) { DiskState::Failed } else { DiskState::Up },
            checksum_errors: self.checksum_errors.load(Ordering::Relaxed),
            direct_io: self.direct_io,
        }
    }

    pub(super) fn check_op(&self, offset: u64, len: u64) -> Result<(), StoreError> {
        self.check_up()?;
        match offset.checked_add(len) {
            Some(end) if end <= self.layout.chunk_size => Ok(()),
            _ => Err(StoreError::OutOfRange { offset, len, chunk_size: self.layout.chunk_size }),
        }
    }

    fn check_up(&self) -> Result<(), StoreError> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(StoreError::DiskFailed { disk: self.id });
        }
        Ok(())
    }

    /// Classifies an I/O error. EIO takes the disk out of service: after a
    /// failed write or fsync the kernel may have dropped the dirty pages, so
    /// retrying would report success for lost data.
    fn io_failed(&self, e: io::Error) -> StoreError {
        match e.raw_os_error() {
            Some(libc::EIO) => {
                if !self.failed.swap(true, Ordering::SeqCst) {
                    tracing::error!(disk = self.id, path = %self.path.display(), "I/O error: disk taken out of service");
                }
                StoreError::DiskFailed { disk: self.id }
            }
            _ => StoreError::Io { disk: self.id, source: e },
        }
    }

    fn lock_index(&self) -> MutexGuard<'_, Index> {
        // A poisoned lock means a panic mid-update of plain maps; the maps
        // themselves are still consistent, so carry on.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lookup(&self, chunk: ChunkId) -> Option<SlotRef> {
        self.lock_index().chunks.get(&chunk).cloned()
    }

    /// The ids of `chunk`'s clones, ascending.
    pub fn clones_of(&self, chunk: ChunkId) -> Vec<ChunkId> {
        if chunk.is_clone() {
            return Vec::new();
        }
        self.clone_tags(chunk).into_iter().map(|tag| chunk.clone_of(tag)).collect()
    }

    /// The sequences of `chunk`'s clones, ascending.
    fn clone_tags(&self, chunk: ChunkId) -> Vec<u32> {
        // A larger index would alias another chunk's clones.
        if chunk.is_clone() || chunk.index > SNAPSHOT_INDEX_MAX {
            return Vec::new();
        }
        let index = self.lock_index();
        let range = chunk.clone_of(0)..=chunk.clone_of(SNAP_SEQ_MAX);
        index.chunks.range(range).filter_map(|(id, _)| id.clone_snap()).collect()
    }

    fn clone_missing(&self, chunk: ChunkId, snap: u32) -> StoreError {
        StoreError::Io {
            disk: self.id,
            source: io::Error::other(format!(
                "chunk {chunk} was written after snapshot {snap} but keeps no clone of it"
            )),
        }
    }

    /// Before a write under `snap` to a head last written under an older
    /// sequence: copies the head into clone `snap` (data, then checksums,
    /// then the clone's slot-table entry), then records the new sequence in
    /// the head's entry. A crash before the clone's entry leaves no clone
    /// and the head unchanged; one after it leaves a whole clone, found and
    /// kept by the next write.
    async fn keep_clone(&self, slot: &mut Slot, chunk: ChunkId, snap: u32) -> Result<(), StoreError> {
        if chunk.is_clone() || !snaps::needs_clone(slot.stamp, snap) {
            return Ok(());
        }
        let clone = chunk.clone_of(snap);
        // Found made already (by this write's retry, or before a crash):
        // how the head relates to it is not known here.
        let mut lineage = None;
        if self.lookup(clone).is_none() {
            let crcs = self.crcs(slot)?.to_vec();
            let (undo, mut target) = match self.reserve_slot(clone) {
                Ok(reserved) => reserved,
                Err(Some(e)) => return Err(e),
                // Made meanwhile (by a retry of this write, or by backfill):
                // whole, since a clone is entered only once its copy landed,
                // but how the head relates to it is not known here.
                Err(None) => {
                    slot.forget_lineage();
                    return self.stamp_seq(slot, chunk, snap).await;
                }
            };
            let (at, len) = (self.layout.data_at(target.index), self.layout.chunk_size);
            self.reserve(clone, at, len).await?;
            self.copy_slot(slot.index, target.index, &crcs).await?;
            // Each step durable before the next: through a power loss too,
            // the clone's entry never names data that did not land.
            self.sync().await?;
            self.write_entry(target.index, SlotEntry::Used(clone, Stamp::default())).await?;
            self.sync().await?;
            target.crcs = Some(crcs.into_boxed_slice());
            target.live = true;
            // The clone holds the head's bytes, so it takes the head's
            // lineage (its marks cover a cancelled write still in flight,
            // whichever bytes the copy caught). The head starts a new one
            // from the clone, unless such a write may still land on it
            // after the copy, unmarked.
            target.lineage = slot.lineage.take();
            if slot.writes_in_flight == 0 {
                lineage = Some(Lineage::fresh(snap, target.version, self.layout.chunk_blocks()));
            }
            undo.disarm();
        }
        // None until the new stamp is durable: a failure here leaves no
        // lineage naming a clone the head is not yet written after.
        slot.lineage = None;
        self.stamp_seq(slot, chunk, snap).await?;
        slot.lineage = lineage;
        Ok(())
    }

    /// Records that the head is now written under `snap`, durably before
    /// the write that follows changes it: else a power loss could keep the
    /// new data with the old stamp, and the snapshot would read the head.
    async fn stamp_seq(&self, slot: &mut Slot, chunk: ChunkId, snap: u32) -> Result<(), StoreError> {
        let stamp = Stamp { seq: snap, born: slot.stamp.born };
        self.write_entry(slot.index, SlotEntry::Used(chunk, stamp)).await?;
        self.sync().await?;
        slot.stamp = stamp;
        Ok(())
    }

    /// Copies slot `from`'s data and checksums over slot `to`'s, as they
    /// are: a bad block stays bad in the copy (scrub mends both from the
    /// other replica), never blessed with a new checksum.
    async fn copy_slot(&self, from: u64, to: u64, crcs: &[u32]) -> Result<(), StoreError> {
        let len = self.layout.chunk_size as usize;
        let data = self.engine.read(self.layout.data_at(from), len).await.map_err(|e| self.io_failed(e))?;
        let at = self.layout.data_at(to);
        let (data, sums) = tokio::join!(self.engine.write(at, data.freeze()), self.store_crcs(to, 0, crcs, crcs));
        data.map_err(|e| self.io_failed(e))?;
        sums
    }

    /// The chunk's slot, loaded and locked for writing; allocated if new,
    /// stamped as created under `snap`.
    async fn slot_for_write(&self, chunk: ChunkId, snap: u32) -> Result<OwnedRwLockWriteGuard<Slot>, StoreError> {
        for _ in 0..SLOT_RETRIES {
            let mut slot = match self.lookup(chunk) {
                Some(slot_ref) => slot_ref.write_owned().await,
                None => match self.allocate(chunk, snap).await? {
                    Some(slot) => slot,
                    None => continue,
                },
            };
            if slot.live {
                self.ensure_loaded(&mut slot).await?;
                return Ok(slot);
            }
        }
        Err(StoreError::Io { disk: self.id, source: io::Error::other("chunk deleted and recreated too often") })
    }

    /// Allocates a slot for `chunk`. `None` when another writer got there
    /// first (the caller looks up again).
    async fn allocate(&self, chunk: ChunkId, snap: u32) -> Result<Option<OwnedRwLockWriteGuard<Slot>>, StoreError> {
        if self.lookup(chunk).is_some() {
            return Ok(None);
        }
        let (undo, mut slot) = match self.reserve_slot(chunk) {
            Ok(reserved) => reserved,
            Err(None) => return Ok(None),
            Err(Some(e)) => return Err(e),
        };
        // A clone is stamped with zeros; a chunk with the sequence that
        // created it.
        let stamp = if chunk.is_clone() { Stamp::default() } else { Stamp { seq: snap, born: snap } };
        self.init_slot(&mut slot, chunk, stamp).await?;
        undo.disarm();
        Ok(Some(slot))
    }

    /// Takes a free slot for `chunk` into the index, locked and not yet
    /// live. `Err(None)` when the chunk is there already.
    #[allow(clippy::type_complexity)]
    fn reserve_slot(
        &self,
        chunk: ChunkId,
    ) -> Result<(UndoAllocation<'_>, OwnedRwLockWriteGuard<Slot>), Option<StoreError>> {
        let mut index = self.lock_index();
        if index.chunks.contains_key(&chunk) {
            return Err(None);
        }
        let Some(n) = index.free.pop() else {
            return Err(Some(StoreError::NoSpace { disk: self.id, chunk }));
        };
        let slot_ref: SlotRef = Arc::new(RwLock::new(Slot::allocating(n)));
        let Ok(guard) = slot_ref.clone().try_write_owned() else {
            unreachable!("a lock created on the line above is free")
        };
        index.chunks.insert(chunk, slot_ref.clone());
        Ok((UndoAllocation { disk: self, chunk, slot_ref, slot: n, armed: true }, guard))
    }

    /// Prepares a fresh slot: zeros in, space reserved, checksums reset, and
    /// only then the slot-table entry that makes it the chunk's.
    async fn init_slot(&self, slot: &mut Slot, chunk: ChunkId, stamp: Stamp) -> Result<(), StoreError> {
        let (at, len) = (self.layout.data_at(slot.index), self.layout.chunk_size);
        self.zero_file_range(at, len).await?;
        self.reserve(chunk, at, len).await?;
        let crcs = Slot::zero_table(self.layout.chunk_blocks());
        self.store_crcs(slot.index, 0, &crcs, &crcs).await?;
        // The zeros and checksums must be durable before the entry can
        // be: a power cut that kept the entry and lost them would give
        // the chunk the slot's last chunk's data, checksums and all.
        self.sync().await?;
        self.write_entry(slot.index, SlotEntry::Used(chunk, stamp)).await?;
        slot.stamp = stamp;
        slot.crcs = Some(crcs);
        slot.live = true;
        slot.holes = false;
        Ok(())
    }

    async fn free_slot(&self, slot: &Slot) -> Result<(), StoreError> {
        self.zero_file_range(self.layout.data_at(slot.index), self.layout.chunk_size).await?;
        self.write_entry(slot.index, SlotEntry::Free).await
    }

    /// Reserves file space so that writes into `[at, at + len)` cannot fail
    /// half-done for lack of space. Devices without thin provisioning
    /// (block devices) have nothing to reserve.
    async fn reserve(&self, chunk: ChunkId, at: u64, len: u64) -> Result<(), StoreError> {
        match self.engine.fallocate(FallocMode::Allocate, at, len).await {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => Err(StoreError::NoSpace { disk: self.id, chunk }),
            Err(e) => Err(self.io_failed(e)),
        }
    }

    /// Makes a file range read as zeros, freeing it where the file system
    /// can, writing zeros where it cannot.
    async fn zero_file_range(&self, at: u64, len: u64) -> Result<(), StoreError> {
        match self.engine.fallocate(FallocMode::PunchHole, at, len).await {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                self.engine.write(at, AlignedBuf::zeroed(len as usize).freeze()).await.map_err(|e| self.io_failed(e))
            }
            Err(e) => Err(self.io_failed(e)),
        }
    }

    /// Writes `data` at `offset` into a slot already locked and loaded.
    /// Its callers run to completion (`in_flight::to_completion`): dropped
    /// mid-write, it would leave the table holding the new checksums while
    /// the data write may still fail, and the blocks would read as bad
    /// until repaired (as a write abandoned before this change left them
    /// after it landed).
    async fn write_locked(&self, slot: &mut Slot, chunk: ChunkId, offset: u64, data: Bytes) -> Result<(), StoreError> {
        let len = data.len() as u64;
        let (start, end) = aligned(offset, len);
        let whole = offset == start && len == end - start && is_aligned(&data);
        let buf = if whole { data } else { self.merge(slot, chunk, start, end, offset, &data).await? };
        let (first, count) = ((start / BLOCK) as usize, ((end - start) / BLOCK) as usize);
        let at = self.layout.data_at(slot.index) + start;
        if slot.holes && self.crcs(slot)?[first..first + count].contains(&zero_block_crc()) {
            self.reserve(chunk, at, end - start).await?;
        }
        let mut crcs = Vec::with_capacity(count);
        block_crcs(&buf, &mut crcs);
        slot.changing(first, count);
        let index = slot.index;
        let Some(table) = slot.crcs.as_deref_mut() else {
            slot.settled();
            return Err(self.not_loaded());
        };
        // The table takes the new checksums in place (no copy of the whole
        // table per write), and `crcs` keeps the old ones to put back if
        // the write fails: the slot is locked exclusively, so no read sees
        // the table before the write has settled.
        table[first..first + count].swap_with_slice(&mut crcs);
        let old = crcs;
        // Data and checksums go out together: until both have landed the
        // write is not acknowledged, and either one alone makes the blocks
        // read as bad, never as wrong data.
        let (data, stored) = tokio::join!(
            self.engine.write(at, buf),
            self.store_crcs(index, first, &table[first..first + count], table)
        );
        let written = match (data, stored) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(e), stored) => {
                table[first..first + count].copy_from_slice(&old);
                if stored.is_ok() {
                    // Best effort to keep "an error changes nothing": the
                    // old data is still there, so put its checksums back.
                    let _ = self.store_crcs(index, first, &old, table).await;
                }
                Err(self.io_failed(e))
            }
            (Ok(()), Err(e)) => {
                table[first..first + count].copy_from_slice(&old);
                Err(e)
            }
        };
        slot.settled();
        written
    }

    /// Builds whole blocks around an unaligned write: the edge blocks are
    /// read (and checked: a bad block must not be blessed with a new
    /// checksum) and `data` copied over them.
    async fn merge(
        &self,
        slot: &Slot,
        chunk: ChunkId,
        start: u64,
        end: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<Bytes, StoreError> {
        let mut buf = AlignedBuf::zeroed((end - start) as usize);
        let crcs = self.crcs(slot)?;
        if !offset.is_multiple_of(BLOCK) {
            let head = self.read_verified(chunk, slot.index, crcs, start, start + BLOCK).await?;
            buf[..BLOCK_SIZE_BYTES].copy_from_slice(&head);
        }
        if !(offset + data.len() as u64).is_multiple_of(BLOCK) && (end - BLOCK > start || offset.is_multiple_of(BLOCK))
        {
            let tail = self.read_verified(chunk, slot.index, crcs, end - BLOCK, end).await?;
            buf[(end - start - BLOCK) as usize..].copy_from_slice(&tail);
        }
        let at = (offset - start) as usize;
        buf[at..at + data.len()].copy_from_slice(data);
        Ok(buf.freeze())
    }

    /// Punches whole blocks `[start, end)` of a locked slot to zeros.
    async fn punch_blocks(&self, slot: &mut Slot, start: u64, end: u64) -> Result<(), StoreError> {
        slot.changing((start / BLOCK) as usize, ((end - start) / BLOCK) as usize);
        let punched = self.zero_file_range(self.layout.data_at(slot.index) + start, end - start).await;
        slot.settled();
        punched?;
        slot.holes = true;
        let count = ((end - start) / BLOCK) as usize;
        self.commit_crcs(slot, (start / BLOCK) as usize, &vec![zero_block_crc(); count]).await
    }

    /// Stores the slot's checksums `new` at `first`, then takes them into
    /// memory.
    async fn commit_crcs(&self, slot: &mut Slot, first: usize, new: &[u32]) -> Result<(), StoreError> {
        let mut table = self.crcs(slot)?.to_vec();
        table[first..first + new.len()].copy_from_slice(new);
        self.store_crcs(slot.index, first, new, &table).await?;
        slot.crcs = Some(table.into_boxed_slice());
        Ok(())
    }

    /// Makes slot `slot`'s checksums `new` at block `first` (its whole table
    /// then being `table`) durable against a crash of the node: journalled
    /// on a version 2 disk while other writes are in progress or the slot
    /// has changes in the journal, else (and on version 1) by rewriting
    /// the slot's whole checksum block.
    async fn store_crcs(&self, slot: u64, first: usize, new: &[u32], table: &[u32]) -> Result<(), StoreError> {
        let busy = self.writes.load(Ordering::Relaxed) > 1;
        let stored = match &self.journal {
            // A lone write shares no ring block, and journalling it would
            // cost a ring block now and its table at the next checkpoint:
            // more than rewriting the table, which a slot with nothing in
            // the journal allows.
            Some(journal) if busy || !journal.clean(slot) => {
                journal.commit(slot, runs(slot, first, new), table, busy).await
            }
            _ => write_crc_block(&self.engine, &self.layout, slot, table).await,
        };
        stored.map_err(|e| self.io_failed(e))
    }

    /// Rewrites the slot-table block holding `slot`'s entry.
    async fn write_entry(&self, slot: u64, entry: SlotEntry) -> Result<(), StoreError> {
        let _table = self.table_lock.lock().await;
        let table_block = self.layout.table_block_of(slot);
        let per_block = BLOCK_SIZE_BYTES / ENTRY_BYTES;
        let mut block = AlignedBuf::zeroed(BLOCK_SIZE_BYTES);
        {
            let mut index = self.lock_index();
            index.entries[slot as usize] = entry;
            let first = table_block as usize * per_block;
            for (i, e) in index.entries.iter().skip(first).take(per_block).enumerate() {
                e.encode(&mut block[i * ENTRY_BYTES..]);
            }
        }
        let at = self.layout.slot_table_offset + table_block * BLOCK;
        self.engine.write(at, block.freeze()).await.map_err(|e| self.io_failed(e))
    }

    fn crcs<'a>(&self, slot: &'a Slot) -> Result<&'a [u32], StoreError> {
        slot.crcs.as_deref().ok_or_else(|| self.not_loaded())
    }

    fn not_loaded(&self) -> StoreError {
        StoreError::Io { disk: self.id, source: io::Error::other("checksum table used before it was loaded") }
    }

    /// The slot locked for reading, with its checksum table loaded.
    async fn read_slot(&self, slot_ref: SlotRef) -> Result<OwnedRwLockReadGuard<Slot>, StoreError> {
        let slot = slot_ref.clone().read_owned().await;
        if slot.crcs.is_some() || !slot.live {
            return Ok(slot);
        }
        drop(slot);
        let mut slot = slot_ref.write_owned().await;
        self.ensure_loaded(&mut slot).await?;
        Ok(OwnedRwLockWriteGuard::downgrade(slot))
    }

    async fn ensure_loaded(&self, slot: &mut Slot) -> Result<(), StoreError> {
        if slot.crcs.is_some() || !slot.live {
            return Ok(());
        }
        let at = self.layout.crc_table_at(slot.index);
        let block = self.engine.read(at, BLOCK_SIZE_BYTES).await.map_err(|e| self.io_failed(e))?;
        slot.crcs = Some(decode_crc_block(&block, self.layout.chunk_blocks()));
        Ok(())
    }

    /// Reads blocks `[start, end)` of a slot and checks each against its
    /// checksum; a mismatch is counted and returned as an error.
    async fn read_verified(
        &self,
        chunk: ChunkId,
        slot: u64,
        crcs: &[u32],
        start: u64,
        end: u64,
    ) -> Result<AlignedBuf, StoreError> {
        let at = self.layout.data_at(slot) + start;
        let buf = self.engine.read(at, (end - start) as usize).await.map_err(|e| self.io_failed(e))?;
        let first = (start / BLOCK) as usize;
        for (i, block) in buf.chunks_exact(BLOCK_SIZE_BYTES).enumerate() {
            if crc32c(block) != crcs[first + i] {
                self.checksum_errors.fetch_add(1, Ordering::Relaxed);
                let block = (first + i) as u64;
                tracing::warn!(disk = self.id, %chunk, block, "checksum mismatch");
                return Err(StoreError::Checksum { disk: self.id, chunk, block });
            }
        }
        Ok(buf)
    }
}

/// What a diff compares: the copies its two snapshots read, the head held
/// locked while they are named.
enum Ends {
    Same,
    Differ { old: Source, new: Source, head: OwnedRwLockReadGuard<Slot> },
}

/// A copy of a chunk a diff reads, locked for as long as it reads.
enum View<'a> {
    /// The chunk did not exist then.
    Zeros,
    Copy(ChunkId, SlotView<'a>),
}

/// The head under the lock its caller holds, or a clone under its own.
enum SlotView<'a> {
    Head(&'a Slot),
    Guard(OwnedRwLockReadGuard<Slot>),
}

impl std::ops::Deref for SlotView<'_> {
    type Target = Slot;

    fn deref(&self) -> &Slot {
        match self {
            SlotView::Head(slot) => slot,
            SlotView::Guard(guard) => guard,
        }
    }
}

/// The clone sequence of a `Source::Clone`; only called on one.
fn base_of(source: Source) -> u32 {
    match source {
        Source::Clone(tag) => tag,
        Source::Head | Source::Absent | Source::Missing => unreachable!("lineages are followed back to clones only"),
    }
}

/// Runs `(first, count, marked)` over `blocks` blocks, each at most
/// [`DIFF_RUN_BLOCKS`] long when marked: what a diff reads at once.
fn marked_runs(blocks: usize, marked: impl Fn(usize) -> bool) -> Vec<(usize, usize, bool)> {
    let mut runs = Vec::new();
    let mut block = 0;
    while block < blocks {
        let (first, m) = (block, marked(block));
        while block < blocks && marked(block) == m && (!m || block - first < DIFF_RUN_BLOCKS) {
            block += 1;
        }
        runs.push((first, block - first, m));
    }
    runs
}

/// Appends `len` bytes that do (`data`) or do not differ to `runs`,
/// merged with the last run when it says the same.
fn push_run(runs: &mut Vec<Extent>, len: u32, data: bool) {
    match runs.last_mut() {
        Some(last) if last.data == data => last.len += len,
        _ => runs.push(Extent { len, data }),
    }
}

/// The checksum a poisoned block carries: not a zero block's, and a
/// poisoned block holds zeros, so it never verifies.
pub fn poisoned_crc() -> u32 {
    !zero_block_crc()
}

/// Rolls back a slot allocation that did not finish (an error, or the
/// request's task being cancelled): the chunk leaves the index and the slot
/// returns to the free list.
struct UndoAllocation<'a> {
    disk: &'a DiskStore,
    chunk: ChunkId,
    slot_ref: SlotRef,
    slot: u64,
    armed: bool,
}

impl UndoAllocation<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for UndoAllocation<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut index = self.disk.lock_index();
        if index.chunks.get(&self.chunk).is_some_and(|s| Arc::ptr_eq(s, &self.slot_ref)) {
            index.chunks.remove(&self.chunk);
        }
        index.free.push(self.slot);
    }
}

/// Puts a chunk back into the index when its delete did not finish.
struct UndoDelete<'a> {
    disk: &'a DiskStore,
    chunk: ChunkId,
    slot_ref: Option<SlotRef>,
}

impl UndoDelete<'_> {
    fn disarm(mut self) {
        self.slot_ref = None;
    }
}

impl Drop for UndoDelete<'_> {
    fn drop(&mut self) {
        if let Some(slot_ref) = self.slot_ref.take() {
            self.disk.lock_index().chunks.entry(self.chunk).or_insert(slot_ref);
        }
    }
}

/// The whole-block range covering `[offset, offset + len)`.
fn aligned(offset: u64, len: u64) -> (u64, u64) {
    (offset / BLOCK * BLOCK, (offset + len).div_ceil(BLOCK) * BLOCK)
}

fn zeros(len: u64) -> Bytes {
    Bytes::from(vec![0u8; len as usize])
}
