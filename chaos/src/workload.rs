//! A verifying block workload: writers put self-describing 4 KiB blocks on
//! a volume, every acknowledged write is recorded in a model, and every
//! read is checked against it.
//!
//! What the durability contract allows a block to read as: the last
//! acknowledged write, or a write to it that failed or was in flight after
//! that (its outcome is unknown). Anything else, including a torn block, a
//! block of another address and zeros after an acknowledged write, is a
//! lost write. Each block belongs to one writer, which writes it
//! sequentially, so "last acknowledged" is well defined.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chuyi_client::VolumeIo;
use chuyi_common::clock;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const BLOCK: u64 = 4096;

/// The content of block `block` written with sequence `seq`: the pair
/// repeated, so a torn or misplaced block is recognised.
pub fn content(block: u64, seq: u64) -> Bytes {
    let mut out = Vec::with_capacity(BLOCK as usize);
    while out.len() < BLOCK as usize {
        out.extend_from_slice(&block.to_le_bytes());
        out.extend_from_slice(&seq.to_le_bytes());
    }
    Bytes::from(out)
}

/// What a block read back as: `Some(seq)` for a well-formed block of this
/// address (0 for zeros), `None` for anything else.
pub fn decode(block: u64, data: &[u8]) -> Option<u64> {
    if data.iter().all(|&b| b == 0) {
        return Some(0);
    }
    let head = data.get(..16)?;
    let mut word = [0u8; 8];
    word.copy_from_slice(&head[..8]);
    if u64::from_le_bytes(word) != block || !data.chunks_exact(16).all(|c| c == head) {
        return None;
    }
    word.copy_from_slice(&head[8..]);
    Some(u64::from_le_bytes(word))
}

#[derive(Debug, Default, Clone)]
struct BlockState {
    /// Last acknowledged sequence; 0 = never written (reads as zeros).
    acked: u64,
    /// Writes after it whose outcome is unknown.
    unknown: Vec<u64>,
}

/// Every block's allowed contents.
#[derive(Debug)]
pub struct Model {
    blocks: Mutex<Vec<BlockState>>,
}

impl Model {
    pub fn new(blocks: u64) -> Self {
        Self { blocks: Mutex::new(vec![BlockState::default(); blocks as usize]) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<BlockState>> {
        self.blocks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn acked(&self, block: u64, seq: u64) {
        let mut all = self.lock();
        let state = &mut all[block as usize];
        state.acked = seq;
        state.unknown.clear();
    }

    fn unknown(&self, block: u64, seq: u64) {
        self.lock()[block as usize].unknown.push(seq);
    }

    /// `Err` describes a read that breaks the contract.
    pub fn check(&self, block: u64, data: &[u8]) -> Result<(), String> {
        let state = self.lock()[block as usize].clone();
        match decode(block, data) {
            Some(seq) if seq == state.acked || state.unknown.contains(&seq) => Ok(()),
            Some(seq) => Err(format!(
                "block {block} reads as write {seq}; last acknowledged {}, unknown {:?}",
                state.acked, state.unknown
            )),
            None => Err(format!("block {block} reads as garbage (head {:02x?})", &data[..16.min(data.len())])),
        }
    }

    pub fn blocks(&self) -> u64 {
        self.lock().len() as u64
    }
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Stats {
    pub acked_writes: u64,
    pub failed_writes: u64,
    pub reads_checked: u64,
    pub failed_reads: u64,
    /// The slowest acknowledged write: how long I/O stalled in a failover.
    pub max_write_latency: Duration,
    pub violations: Vec<String>,
}

/// Runs `writers` writers over the model's blocks until `stop` is set; a
/// quarter of writes carry FUA, and every fourth operation reads one of the
/// writer's blocks back and checks it.
pub async fn run(vol: VolumeIo, model: Arc<Model>, writers: usize, stop: Arc<AtomicBool>) -> Stats {
    run_seeded(vol, model, writers, stop, rand::random()).await
}

/// [`run`] with each writer's choices (block, FUA) drawn from `seed`, so a
/// simulation replays the same operations.
pub async fn run_seeded(vol: VolumeIo, model: Arc<Model>, writers: usize, stop: Arc<AtomicBool>, seed: u64) -> Stats {
    let seq = Arc::new(AtomicU64::new(1));
    let mut tasks = Vec::new();
    for w in 0..writers as u64 {
        let (vol, model, stop, seq) = (vol.clone(), model.clone(), stop.clone(), seq.clone());
        let rng = StdRng::seed_from_u64(seed.wrapping_add(w));
        tasks.push(tokio::spawn(async move { writer(vol, model, w, writers as u64, seq, stop, rng).await }));
    }
    let mut total = Stats::default();
    for task in tasks {
        match task.await {
            Ok(s) => {
                total.acked_writes += s.acked_writes;
                total.failed_writes += s.failed_writes;
                total.reads_checked += s.reads_checked;
                total.failed_reads += s.failed_reads;
                total.max_write_latency = total.max_write_latency.max(s.max_write_latency);
                total.violations.extend(s.violations);
            }
            Err(e) => total.violations.push(format!("a writer panicked: {e}")),
        }
    }
    total
}

async fn writer(
    vol: VolumeIo,
    model: Arc<Model>,
    me: u64,
    writers: u64,
    seq: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    mut rng: StdRng,
) -> Stats {
    let mut stats = Stats::default();
    let owned = model.blocks().saturating_sub(me).div_ceil(writers);
    if owned == 0 {
        return stats;
    }
    let mut op = 0u64;
    while !stop.load(Ordering::Relaxed) {
        op += 1;
        let (pick, fua) = (rng.random_range(0..owned), rng.random_ratio(1, 4));
        let block = me + pick * writers;
        if op.is_multiple_of(4) {
            match vol.read(block * BLOCK, BLOCK).await {
                Ok(data) => {
                    stats.reads_checked += 1;
                    if let Err(v) = model.check(block, &data) {
                        stats.violations.push(v);
                    }
                }
                Err(_) => stats.failed_reads += 1,
            }
            continue;
        }
        let s = seq.fetch_add(1, Ordering::Relaxed);
        let started = clock::now();
        match vol.write(block * BLOCK, content(block, s), fua).await {
            Ok(()) => {
                model.acked(block, s);
                stats.acked_writes += 1;
                stats.max_write_latency = stats.max_write_latency.max(started.elapsed());
            }
            Err(_) => {
                model.unknown(block, s);
                stats.failed_writes += 1;
            }
        }
    }
    stats
}

/// What reading every block back found.
#[derive(Debug, Default)]
pub struct Check {
    /// Blocks read that hold what the model allows.
    pub verified: u64,
    /// Blocks read that hold what the model forbids: lost writes.
    pub violations: Vec<String>,
    /// Ranges whose read failed: nothing known about them.
    pub unreadable: Vec<String>,
}

/// Reads every block of the model back and checks it.
pub async fn check_all(vol: &VolumeIo, model: &Model) -> Check {
    let mut check = Check::default();
    let blocks = model.blocks();
    let per_read = 256u64;
    let mut first = 0;
    while first < blocks {
        let count = per_read.min(blocks - first);
        match vol.read(first * BLOCK, count * BLOCK).await {
            Ok(data) => {
                for i in 0..count {
                    let at = (i * BLOCK) as usize;
                    match model.check(first + i, &data[at..at + BLOCK as usize]) {
                        Ok(()) => check.verified += 1,
                        Err(v) => check.violations.push(v),
                    }
                }
            }
            Err(e) => check.unreadable.push(format!("blocks {first}..{}: read failed: {e}", first + count)),
        }
        first += count;
    }
    check
}

/// Reads every block of the model back and checks it; returns the
/// violations and failed reads.
pub async fn verify_all(vol: &VolumeIo, model: &Model) -> Result<u64, Vec<String>> {
    let check = check_all(vol, model).await;
    if check.violations.is_empty() && check.unreadable.is_empty() {
        Ok(check.verified)
    } else {
        Err(check.violations.into_iter().chain(check.unreadable).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_decode_to_what_was_written_and_nothing_else() {
        assert_eq!(decode(7, &content(7, 42)), Some(42));
        assert_eq!(decode(7, &[0u8; 4096]), Some(0));
        assert_eq!(decode(8, &content(7, 42)), None, "another block's content");
        let mut torn = content(7, 42).to_vec();
        torn[2048..].copy_from_slice(&content(7, 43)[2048..]);
        assert_eq!(decode(7, &torn), None, "a torn block");
    }

    #[test]
    fn the_model_allows_the_last_ack_and_later_unknowns_only() {
        let model = Model::new(4);
        assert!(model.check(1, &[0u8; 4096]).is_ok());
        model.acked(1, 5);
        assert!(model.check(1, &[0u8; 4096]).is_err(), "zeros after an ack is a lost write");
        model.unknown(1, 6);
        assert!(model.check(1, &content(1, 5)).is_ok());
        assert!(model.check(1, &content(1, 6)).is_ok());
        assert!(model.check(1, &content(1, 4)).is_err());
        model.acked(1, 7);
        assert!(model.check(1, &content(1, 6)).is_err(), "an ack supersedes the unknowns");
    }
}
