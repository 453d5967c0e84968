//! A power cut under the chunk store: what the disk's volatile write cache
//! may keep or lose of unsynced writes ([`VolatileEngine`]), for many
//! seeded runs of writes, zeroes, poisons, deletes and syncs, some of them
//! concurrent. After each cut the disk reopens, and every block reads
//! as what was last made durable (a sync, or a FUA write of its own), or
//! as a value written to it since; a block written since may instead be
//! reported torn (its checksum fails, and replication mends it from the
//! peer). A block never reads as anything else: not another block's
//! data, not a deleted chunk's, not a value older than its durable one.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use chuyi_common::ids::{ChunkId, DeviceClass};
use chuyi_storage_node::io::volatile::VolatileEngine;
use chuyi_storage_node::io::{EngineKind, EngineTuning};
use chuyi_storage_node::store::open::DISK_FILE_NAME;
use chuyi_storage_node::store::{open_disk, open_disk_wrapped, DiskSpec, DiskStore, StoreError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod support;

const MIB: u64 = 1 << 20;
const BLOCK: u64 = 4096;
const CHUNKS: u64 = 5;
/// Blocks of each chunk the runs write; the one after stays unwritten.
const BLOCKS: u64 = 8;

fn spec(dir: &Path) -> DiskSpec {
    DiskSpec {
        id: 3,
        class: DeviceClass::Ssd,
        path: dir.to_path_buf(),
        capacity_bytes: Some(64 * MIB),
        chunk_size: 4 * MIB,
        engine: EngineKind::Pread,
        tuning: EngineTuning::default(),
    }
}

fn id(index: u64) -> ChunkId {
    ChunkId::new(0xB0B, index)
}

/// The value of a poisoned block: it reads as a checksum error.
const BAD: u64 = u64::MAX;

/// Value `tag` of a block: its tag repeated; 0 is zeros (never written,
/// zeroed or deleted).
fn block(tag: u64) -> Bytes {
    if tag == 0 {
        return Bytes::from(vec![0u8; BLOCK as usize]);
    }
    tag.to_le_bytes().repeat((BLOCK / 8) as usize).into()
}

/// What a block may read as after a cut.
#[derive(Clone, Debug, Default)]
struct Cell {
    /// Its value at the last sync or FUA write of it.
    durable: u64,
    /// Values it was given since, oldest first.
    since: Vec<u64>,
}

impl Cell {
    fn set(&mut self, tag: u64, durable: bool) {
        if durable {
            *self = Cell { durable: tag, since: Vec::new() };
        } else {
            self.since.push(tag);
        }
    }

    fn synced(&mut self) {
        if let Some(&last) = self.since.last() {
            *self = Cell { durable: last, since: Vec::new() };
        }
    }
}

#[derive(Debug, Default)]
struct Model {
    cells: HashMap<(u64, u64), Cell>,
    next_tag: u64,
}

/// One change the run makes, to one chunk.
#[derive(Clone, Copy, Debug)]
enum Change {
    Write {
        chunk: u64,
        block: u64,
        count: u64,
        fua: bool,
        first_tag: u64,
    },
    Zero {
        chunk: u64,
        block: u64,
        count: u64,
        fua: bool,
    },
    /// What backfill leaves where the only copy's block was bad.
    Poison {
        chunk: u64,
        block: u64,
        count: u64,
    },
    Delete {
        chunk: u64,
    },
}

impl Model {
    fn pick(&mut self, rng: &mut StdRng, chunk: u64) -> Change {
        let block = rng.random_range(0..BLOCKS);
        let count = rng.random_range(1..=(BLOCKS - block).min(3));
        let fua = rng.random_ratio(1, 4);
        match rng.random_range(0..12) {
            0 => Change::Delete { chunk },
            1 => Change::Zero { chunk, block, count, fua },
            2 => Change::Poison { chunk, block, count },
            _ => {
                let first_tag = self.next_tag + 1;
                self.next_tag += count;
                Change::Write { chunk, block, count, fua, first_tag }
            }
        }
    }

    /// Notes an acknowledged `change`.
    fn landed(&mut self, change: Change) {
        match change {
            Change::Write { chunk, block, count, fua, first_tag } => {
                for i in 0..count {
                    self.cells.entry((chunk, block + i)).or_default().set(first_tag + i, fua);
                }
            }
            Change::Zero { chunk, block, count, fua } => {
                for i in 0..count {
                    self.cells.entry((chunk, block + i)).or_default().set(0, fua);
                }
            }
            Change::Poison { chunk, block, count } => {
                for i in 0..count {
                    self.cells.entry((chunk, block + i)).or_default().set(BAD, false);
                }
            }
            // A delete is not durable until a sync: the chunk may come back.
            Change::Delete { chunk } => {
                for b in 0..BLOCKS {
                    self.cells.entry((chunk, b)).or_default().set(0, false);
                }
            }
        }
    }

    fn synced(&mut self) {
        self.cells.values_mut().for_each(Cell::synced);
    }
}

async fn apply(disk: &DiskStore, change: Change) -> Result<(), StoreError> {
    match change {
        Change::Write { chunk, block: b, count, fua, first_tag } => {
            let data: Vec<u8> = (0..count).flat_map(|i| block(first_tag + i).to_vec()).collect();
            disk.write(id(chunk), b * BLOCK, data.into(), fua).await
        }
        Change::Zero { chunk, block, count, fua } => disk.zero(id(chunk), block * BLOCK, count * BLOCK, fua).await,
        Change::Poison { chunk, block, count } => disk.poison(id(chunk), block * BLOCK, count * BLOCK).await,
        Change::Delete { chunk } => disk.delete(id(chunk)).await,
    }
}

/// Ring blocks of the checksum journal: few, so that runs checkpoint and
/// reuse the ring under the cut.
const RING: u64 = 16;

/// Opens the disk at `dir` over a volatile cache, made durable once open.
async fn open_volatile(dir: &Path) -> (DiskStore, Arc<VolatileEngine>) {
    let path = dir.join(DISK_FILE_NAME);
    let mut volatile = None;
    let disk = open_disk_wrapped(&spec(dir), |_real| {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).expect("the disk's file");
        let engine = Arc::new(VolatileEngine::new(file));
        volatile = Some(engine.clone());
        engine
    })
    .await
    .expect("open");
    disk.sync().await.expect("the new disk synced");
    (disk, volatile.expect("wrapped"))
}

/// One seeded run: changes in batches of up to four at once (each on its
/// own chunk), syncs between some, then a cut. Returns the model.
async fn run(seed: u64, disk: &DiskStore) -> Model {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = Model::default();
    let batches = rng.random_range(5..60);
    for _ in 0..batches {
        if rng.random_ratio(1, 8) {
            disk.sync().await.expect("sync");
            model.synced();
            continue;
        }
        let mut chunks: Vec<u64> = (1..=CHUNKS).collect();
        let width = rng.random_range(1..=4);
        let changes: Vec<Change> = (0..width)
            .map(|_| {
                let chunk = chunks.swap_remove(rng.random_range(0..chunks.len()));
                model.pick(&mut rng, chunk)
            })
            .collect();
        let results = futures::future::join_all(changes.iter().map(|&c| apply(disk, c))).await;
        for (change, result) in changes.into_iter().zip(results) {
            result.unwrap_or_else(|e| panic!("seed {seed}: {change:?}: {e}"));
            model.landed(change);
        }
    }
    model
}

/// What the reopened disk reads against what the model allows.
async fn check(seed: u64, disk: &DiskStore, model: &Model) -> usize {
    let mut torn = 0;
    for chunk in 1..=CHUNKS {
        for b in 0..=BLOCKS {
            let cell = model.cells.get(&(chunk, b)).cloned().unwrap_or_default();
            let allowed: Vec<u64> = std::iter::once(cell.durable).chain(cell.since.iter().copied()).collect();
            match disk.read(id(chunk), b * BLOCK, BLOCK).await {
                Ok((data, _)) => {
                    let tag = allowed.iter().find(|&&t| t != BAD && block(t) == data);
                    assert!(
                        tag.is_some(),
                        "seed {seed}: chunk {chunk} block {b} reads {:02x?}..., none of {allowed:?}",
                        &data[..16]
                    );
                }
                // Poisoned, or torn by the cut in a write since the sync.
                Err(StoreError::Checksum { .. }) if !cell.since.is_empty() || cell.durable == BAD => torn += 1,
                Err(e) => panic!("seed {seed}: chunk {chunk} block {b} (may be {allowed:?}): {e}"),
            }
        }
    }
    torn
}

/// Seeds `make test` runs; `make chaos` runs more
/// (`CHUYI_POWER_CUT_SEEDS`). 600 took 94 s here.
const SEEDS: u64 = 60;

#[test]
fn after_a_power_cut_every_block_reads_as_synced_or_as_written_since() {
    let seeds = std::env::var("CHUYI_POWER_CUT_SEEDS").ok().and_then(|n| n.parse().ok()).unwrap_or(SEEDS);
    let (mut kept, mut torn, mut syncs, mut checkpointed) = (0, 0, 0, 0);
    for seed in 0..seeds {
        let dir = tempfile::tempdir().expect("tempdir");
        support::format_with_ring(dir.path(), 3, RING);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let (model, volatile) = rt.block_on(async {
            let (disk, volatile) = open_volatile(dir.path()).await;
            let model = run(seed, &disk).await;
            kept += volatile.lose_power(seed).expect("power cut");
            syncs += volatile.syncs();
            (model, volatile)
        });
        drop(rt);
        drop(volatile);
        checkpointed += u64::from(support::newest_tail(dir.path()).is_some_and(|t| t.checkpoint > 0));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        torn += rt.block_on(async {
            let disk = open_disk(&spec(dir.path())).await.unwrap_or_else(|e| panic!("seed {seed}: reopen: {e}"));
            check(seed, &disk, &model).await
        });
    }
    eprintln!(
        "{kept} unsynced blocks kept, {torn} blocks torn or poisoned, {syncs} syncs, {checkpointed} runs checkpointed"
    );
    assert!(kept > 0 && syncs > seeds, "the cuts kept some unsynced blocks, and the runs synced");
    assert!(checkpointed > seeds / 4, "a quarter of the runs or more went through a checkpoint before the cut");
}
