//! A disk with a volatile write cache, for tests: what a power cut leaves.
//!
//! A SIGKILL ([`super::fault::FaultEngine::cut`]) keeps every write the
//! kernel took; a power cut keeps only what was synced. Between syncs a
//! device (or the page cache in front of it) may have written back any of
//! the writes it holds, in any order, so each 4 KiB block of the disk
//! ends up with its value at the last sync or any value written to it
//! since (the latest written back wins). A block is written whole or not
//! at all: 4 KiB atomic writes, as 4Kn devices and NVMe's atomic write
//! unit give, and as the store's checksums per block assume.
//!
//! [`VolatileEngine::lose_power`] picks each block's outcome from a seed,
//! writes those to the file and stops the engine; a test then reopens the
//! file with a real engine and checks what a power cut may cost: nothing
//! synced (or written FUA), and never a block's data for any other value
//! than its own. The engine does its I/O on the caller's thread, through
//! the page cache, with no threads of its own (as [`super::inline`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;

use super::{FallocMode, IoDone, IoEngine, IoOp, IoRequest};

/// The unit a device writes whole.
const BLOCK: u64 = 4096;

/// A file whose writes stay in a cache until synced; see the module doc.
#[derive(Debug)]
pub struct VolatileEngine {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// `None` once the power is lost: nothing answers.
    file: Option<File>,
    cache: Cache,
}

/// What the device holds that the file does not have yet.
#[derive(Debug, Default)]
struct Cache {
    /// Per block written since the last sync, every value written to it
    /// since, oldest first.
    unsynced: BTreeMap<u64, Vec<Bytes>>,
    /// Syncs completed, for a test to see that the store syncs at all.
    syncs: u64,
}

impl VolatileEngine {
    /// Takes over `file` (opened for reading and writing; buffered or
    /// O_DIRECT alike, since the engine writes only whole aligned blocks).
    pub fn new(file: File) -> Self {
        Self { state: Mutex::new(State { file: Some(file), cache: Cache::default() }) }
    }

    /// How many syncs the engine has done.
    pub fn syncs(&self) -> u64 {
        self.lock().cache.syncs
    }

    /// How many blocks hold writes not yet synced.
    pub fn unsynced_blocks(&self) -> usize {
        self.lock().cache.unsynced.len()
    }

    /// Cuts the power: each unsynced block keeps its synced value or one
    /// of the values written to it since, chosen from `seed`, and the
    /// engine stops (every later operation is dropped unanswered, as
    /// after [`super::fault::FaultEngine::cut`]). Returns how many blocks
    /// kept a value they had not synced.
    pub fn lose_power(&self, seed: u64) -> io::Result<usize> {
        let mut state = self.lock();
        let Some(file) = state.file.take() else { return Ok(0) };
        let mut rng = SplitMix(seed);
        let mut kept = 0;
        for (block, values) in std::mem::take(&mut state.cache.unsynced) {
            // 0: the synced value stays; k: the k-th value written since.
            let k = rng.next() % (values.len() as u64 + 1);
            if k > 0 {
                file.write_all_at(&values[k as usize - 1], block * BLOCK)?;
                kept += 1;
            }
        }
        file.sync_data()?;
        Ok(kept)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Cache {
    /// Block `block` as a reader sees it now: its newest value.
    fn block(&self, file: &File, block: u64) -> io::Result<Vec<u8>> {
        if let Some(newest) = self.unsynced.get(&block).and_then(|v| v.last()) {
            return Ok(newest.to_vec());
        }
        let mut buf = vec![0u8; BLOCK as usize];
        let n = file.read_at(&mut buf, block * BLOCK)?;
        buf[n..].fill(0);
        Ok(buf)
    }

    /// Puts `data` at `offset` into the cache, block by block.
    fn write(&mut self, file: &File, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = offset + data.len() as u64;
        for block in offset / BLOCK..end.div_ceil(BLOCK) {
            let at = block * BLOCK;
            let mut value = self.block(file, block)?;
            let (from, to) = (offset.max(at), end.min(at + BLOCK));
            value[(from - at) as usize..(to - at) as usize]
                .copy_from_slice(&data[(from - offset) as usize..(to - offset) as usize]);
            self.unsynced.entry(block).or_default().push(Bytes::from(value));
        }
        Ok(())
    }

    fn read(&self, file: &File, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let end = offset + out.len() as u64;
        for block in offset / BLOCK..end.div_ceil(BLOCK) {
            let at = block * BLOCK;
            let value = self.block(file, block)?;
            let (from, to) = (offset.max(at), end.min(at + BLOCK));
            out[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&value[(from - at) as usize..(to - at) as usize]);
        }
        Ok(())
    }

    fn sync(&mut self, file: &File) -> io::Result<()> {
        for (block, values) in std::mem::take(&mut self.unsynced) {
            if let Some(newest) = values.last() {
                file.write_all_at(newest, block * BLOCK)?;
            }
        }
        file.sync_data()?;
        self.syncs += 1;
        Ok(())
    }

    fn run(&mut self, file: &File, op: IoOp) -> IoDone {
        match op {
            IoOp::Read { offset, mut buf } => {
                let result = self.read(file, offset, &mut buf);
                IoDone { buf: Some(buf), result }
            }
            IoOp::Write { offset, data } => IoDone { buf: None, result: self.write(file, offset, &data) },
            IoOp::Sync => IoDone { buf: None, result: self.sync(file) },
            // A punched range reads as zeros, and is cached like a write
            // of zeros: until a sync, a power cut may bring the old bytes
            // back. Reserving space changes no byte.
            IoOp::Fallocate { mode: FallocMode::PunchHole, offset, len } => {
                IoDone { buf: None, result: self.write(file, offset, &vec![0u8; len as usize]) }
            }
            IoOp::Fallocate { mode: FallocMode::Allocate, .. } => IoDone { buf: None, result: Ok(()) },
        }
    }
}

impl IoEngine for VolatileEngine {
    fn submit(&self, request: IoRequest) {
        let mut state = self.lock();
        let State { file, cache } = &mut *state;
        // After the power is lost nothing answers: the request is dropped.
        let Some(file) = file else { return };
        let done = cache.run(file, request.op);
        drop(state);
        // A caller that gave up no longer wants the answer.
        let _ = request.done.send(done);
    }

    fn name(&self) -> &'static str {
        "volatile"
    }
}

/// The seeded choices of [`VolatileEngine::lose_power`] (splitmix64).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chuyi_common::buf::AlignedBuf;

    fn engine(dir: &std::path::Path) -> VolatileEngine {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("disk"))
            .expect("file");
        file.set_len(4 * BLOCK).expect("size");
        VolatileEngine::new(file)
    }

    fn op(engine: &VolatileEngine, op: IoOp) -> IoDone {
        let (done, mut rx) = tokio::sync::oneshot::channel();
        engine.submit(IoRequest { op, done });
        rx.try_recv().expect("answered at once")
    }

    fn read(engine: &VolatileEngine, offset: u64, len: usize) -> Vec<u8> {
        let done = op(engine, IoOp::Read { offset, buf: AlignedBuf::zeroed(len) });
        done.result.expect("read");
        done.buf.expect("buffer").to_vec()
    }

    fn write(engine: &VolatileEngine, offset: u64, byte: u8, len: usize) {
        op(engine, IoOp::Write { offset, data: Bytes::from(vec![byte; len]) }).result.expect("write");
    }

    #[test]
    fn reads_see_unsynced_writes_and_a_power_cut_keeps_what_was_synced() {
        let dir = tempfile::tempdir().expect("dir");
        let e = engine(dir.path());
        write(&e, 0, 1, 2 * BLOCK as usize);
        op(&e, IoOp::Sync).result.expect("sync");
        write(&e, 100, 2, 10);
        assert_eq!(read(&e, 98, 4), vec![1, 1, 2, 2], "a write within a block, read back before a sync");
        write(&e, BLOCK, 3, BLOCK as usize);
        assert_eq!((e.syncs(), e.unsynced_blocks()), (1, 2));
        e.lose_power(7).expect("power cut");
        assert!(op_dropped(&e), "nothing answers after the cut");
        let raw = std::fs::read(dir.path().join("disk")).expect("file");
        let first = &raw[..BLOCK as usize];
        let second = &raw[BLOCK as usize..2 * BLOCK as usize];
        assert!(first.iter().all(|&b| b == 1) || (first[100..110].iter().all(|&b| b == 2) && first[99] == 1));
        assert!(second.iter().all(|&b| b == 1) || second.iter().all(|&b| b == 3), "a block whole or not at all");
    }

    fn op_dropped(engine: &VolatileEngine) -> bool {
        let (done, mut rx) = tokio::sync::oneshot::channel();
        engine.submit(IoRequest { op: IoOp::Sync, done });
        matches!(rx.try_recv(), Err(tokio::sync::oneshot::error::TryRecvError::Closed))
    }

    #[test]
    fn every_outcome_a_cut_may_leave_is_chosen_by_some_seed() {
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let dir = tempfile::tempdir().expect("dir");
            let e = engine(dir.path());
            for byte in [1, 2, 3] {
                write(&e, 0, byte, BLOCK as usize);
            }
            e.lose_power(seed).expect("power cut");
            seen.insert(std::fs::read(dir.path().join("disk")).expect("file")[0]);
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![0, 1, 2, 3], "the synced zeros or any write since");
    }

    #[test]
    fn a_punched_range_reads_as_zeros_and_may_come_back_after_a_cut() {
        let dir = tempfile::tempdir().expect("dir");
        let e = engine(dir.path());
        write(&e, 0, 9, BLOCK as usize);
        op(&e, IoOp::Sync).result.expect("sync");
        op(&e, IoOp::Fallocate { mode: FallocMode::PunchHole, offset: 0, len: BLOCK }).result.expect("punch");
        assert_eq!(read(&e, 0, 8), vec![0; 8]);
        assert_eq!(e.unsynced_blocks(), 1, "the punch is not synced");
    }
}
