//! The storage node's crash test: a real `chuyi node` process is SIGKILLed
//! at random moments while writers hammer it, then restarted, and every
//! block is checked against a model of what was acknowledged.
//!
//! The property: after kill -9, every block reads back as its last
//! acknowledged content, or as the content of a write that was in flight at
//! the kill (which may or may not have landed). A block may report a
//! checksum error only if a write to it was in flight. Anything else (old
//! data, zeros, foreign data, a checksum error on a quiet block) is a lost
//! acknowledged write and fails the test.
//!
//! Cycles: `CHUYI_CRASH_CYCLES` (default 200).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chuyi_common::credential::{Credential, Door, Identity, Principal};
use chuyi_common::ids::ChunkId;
use chuyi_common::proto::chunk::{ChunkErrorKind, ChunkRequest, ChunkResponse, DiskRequest};
use chuyi_common::rpc::{Endpoint, RpcClient, RpcConfig};
use chuyi_common::secret::ClusterSecret;
use rand::{Rng, SeedableRng};

const BLOCK: usize = 4096;
/// Blocks per chunk used by the test (the first 1 MiB of each chunk).
const BLOCKS_PER_CHUNK: u64 = 256;
const CHUNKS: u64 = 8;
const BLOCKS: u64 = BLOCKS_PER_CHUNK * CHUNKS;
const WRITERS: u64 = 16;
const MAGIC: &[u8; 8] = b"CHUYICRT";
const DISK: u32 = 0;

type Client = RpcClient<ChunkRequest, ChunkResponse>;

#[derive(Clone, Copy, Debug, Default)]
struct BlockState {
    /// Generation of the last acknowledged write (0: zeros).
    acked: u64,
    /// Generation of a write sent but not acknowledged.
    inflight: Option<u64>,
}

struct Model {
    blocks: Mutex<Vec<BlockState>>,
    next_gen: AtomicU64,
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let cycles: usize = std::env::var("CHUYI_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProcess::setup(dir.path());
    let model = Arc::new(Model {
        blocks: Mutex::new(vec![BlockState::default(); BLOCKS as usize]),
        next_gen: AtomicU64::new(1),
    });
    let started = Instant::now();
    let mut acked_writes = 0;
    for cycle in 0..cycles {
        let mut child = node.spawn();
        let outcome = runtime.block_on(run_cycle(&node, &model, &mut child, cycle));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        match outcome {
            Ok(n) => acked_writes += n,
            Err(e) => panic!("cycle {cycle}: {e}\n--- node log tail ---\n{}", node.log_tail()),
        }
    }
    // A last start proves the final state, too.
    let mut child = node.spawn();
    let last = runtime.block_on(async {
        let client = node.connect().await?;
        verify(&client, &model).await
    });
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    if let Err(e) = last {
        panic!("final check: {e}\n{}", node.log_tail());
    }
    eprintln!("{cycles} kill cycles, {acked_writes} acknowledged writes checked, in {:?}", started.elapsed());
}

/// One cycle: connect, check every block, run writers, kill at a random moment.
async fn run_cycle(node: &NodeProcess, model: &Arc<Model>, child: &mut Child, cycle: usize) -> Result<u64, String> {
    let mut rng = rand::rng();
    if cycle % 10 == 3 {
        // Some kills land while the node is still starting.
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..20))).await;
        return Ok(0);
    }
    let client = node.connect().await?;
    verify(&client, model).await?;
    let acked = Arc::new(AtomicU64::new(0));
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let (client, model, acked) = (client.clone(), model.clone(), acked.clone());
        writers.spawn(async move { writer(w, client, model, acked).await });
    }
    tokio::time::sleep(Duration::from_millis(rng.random_range(5..150))).await;
    child.kill().map_err(|e| format!("kill: {e}"))?;
    while writers.join_next().await.is_some() {}
    Ok(acked.load(Ordering::Relaxed))
}

/// Writes 1–4 block runs (or trims one block) in its own slice of blocks
/// until the node dies. One writer per block keeps one write in flight per
/// block, which is what the model tracks.
async fn writer(w: u64, client: Client, model: Arc<Model>, acked: Arc<AtomicU64>) {
    let per_writer = BLOCKS / WRITERS;
    let mut rng = rand::rngs::StdRng::from_os_rng();
    loop {
        let first = w * per_writer + rng.random_range(0..per_writer);
        let room = (per_writer - first % per_writer).min(BLOCKS_PER_CHUNK - first % BLOCKS_PER_CHUNK);
        let count = rng.random_range(1..=4).min(room);
        let trim = rng.random_ratio(1, 10);
        let gen = if trim { 0 } else { model.next_gen.fetch_add(1, Ordering::Relaxed) };
        set_inflight(&model, first, count, gen);
        let (chunk, offset) = locate(first);
        let len = (count as usize * BLOCK) as u32;
        let (request, payload) = if trim {
            (ChunkRequest::Disk(DiskRequest::Trim { disk: DISK, chunk, offset, len }), Bytes::new())
        } else {
            let fua = rng.random_ratio(1, 4);
            let payload: Vec<u8> = (first..first + count).flat_map(|b| content(b, gen)).collect();
            (ChunkRequest::Disk(DiskRequest::Write { disk: DISK, chunk, offset, fua }), Bytes::from(payload))
        };
        match client.call(&request, payload).await {
            Ok((ChunkResponse::Done, _)) => {
                set_acked(&model, first, count, gen);
                acked.fetch_add(1, Ordering::Relaxed);
            }
            // The node died (or refused): stop; the write stays in flight.
            _ => return,
        }
    }
}

fn set_inflight(model: &Model, first: u64, count: u64, gen: u64) {
    let mut blocks = model.blocks.lock().expect("model lock");
    for b in first..first + count {
        blocks[b as usize].inflight = Some(gen);
    }
}

fn set_acked(model: &Model, first: u64, count: u64, gen: u64) {
    let mut blocks = model.blocks.lock().expect("model lock");
    for b in first..first + count {
        blocks[b as usize] = BlockState { acked: gen, inflight: None };
    }
}

/// Reads every block and checks it against the model; settles the model to
/// what is there (an in-flight write either landed or did not) and rewrites
/// blocks torn by the kill.
async fn verify(client: &Client, model: &Model) -> Result<(), String> {
    for c in 0..CHUNKS {
        let first = c * BLOCKS_PER_CHUNK;
        let whole = read(client, first, BLOCKS_PER_CHUNK).await?;
        for i in 0..BLOCKS_PER_CHUNK {
            let b = first + i;
            let data = match &whole {
                Ok(data) => Ok(data.slice(i as usize * BLOCK..(i as usize + 1) * BLOCK)),
                Err(_) => read(client, b, 1).await?,
            };
            settle(client, model, b, data).await?;
        }
    }
    Ok(())
}

async fn settle(client: &Client, model: &Model, b: u64, data: Result<Bytes, ChunkErrorKind>) -> Result<(), String> {
    let state = model.blocks.lock().expect("model lock")[b as usize];
    let seen = match data {
        Ok(data) => decode(b, &data).ok_or_else(|| format!("block {b}: foreign data ({state:?})"))?,
        Err(ChunkErrorKind::Checksum) if state.inflight.is_some() => {
            // Torn by the kill mid-write; allowed. Make it whole again.
            let gen = model.next_gen.fetch_add(1, Ordering::Relaxed);
            let (chunk, offset) = locate(b);
            let req = ChunkRequest::Disk(DiskRequest::Write { disk: DISK, chunk, offset, fua: false });
            return match client.call(&req, Bytes::from(content(b, gen))).await {
                Ok((ChunkResponse::Done, _)) => {
                    model.blocks.lock().expect("model lock")[b as usize] = BlockState { acked: gen, inflight: None };
                    Ok(())
                }
                other => Err(format!("block {b}: rewrite after torn write failed: {other:?}")),
            };
        }
        Err(kind) => return Err(format!("block {b}: {kind:?} with no write in flight ({state:?})")),
    };
    if seen != state.acked && Some(seen) != state.inflight {
        return Err(format!("block {b}: lost acknowledged write: read generation {seen}, model {state:?}"));
    }
    model.blocks.lock().expect("model lock")[b as usize] = BlockState { acked: seen, inflight: None };
    Ok(())
}

/// Reads `count` blocks from block `first`: data, or the node's error kind.
async fn read(client: &Client, first: u64, count: u64) -> Result<Result<Bytes, ChunkErrorKind>, String> {
    let (chunk, offset) = locate(first);
    let req = ChunkRequest::Disk(DiskRequest::Read { disk: DISK, chunk, offset, len: (count as usize * BLOCK) as u32 });
    match client.call(&req, Bytes::new()).await {
        Ok((ChunkResponse::ReadDone { .. }, data)) if data.len() == count as usize * BLOCK => Ok(Ok(data)),
        Ok((ChunkResponse::Error(e), _)) => Ok(Err(e.kind)),
        other => Err(format!("read of block {first}+{count}: {other:?}")),
    }
}

fn locate(block: u64) -> (ChunkId, u32) {
    (ChunkId::new(0xC4A5, block / BLOCKS_PER_CHUNK), ((block % BLOCKS_PER_CHUNK) as usize * BLOCK) as u32)
}

/// The bytes of generation `gen` of block `b`: self-describing, so a block
/// in the wrong place or from the wrong write is recognised.
fn content(b: u64, gen: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(BLOCK);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&b.to_le_bytes());
    out.extend_from_slice(&gen.to_le_bytes());
    let mut x = b.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ gen;
    while out.len() < BLOCK {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// The generation a block holds: 0 for zeros, `None` for anything that is
/// not exactly some generation of this block.
fn decode(b: u64, data: &[u8]) -> Option<u64> {
    if data.iter().all(|&x| x == 0) {
        return Some(0);
    }
    let gen = u64::from_le_bytes(data.get(16..24)?.try_into().ok()?);
    (data == content(b, gen).as_slice()).then_some(gen)
}

/// How to start, reach and read the logs of the node under test.
struct NodeProcess {
    config: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    /// The administrator, who may make the raw disk requests the test makes.
    admin: Identity,
}

impl NodeProcess {
    fn setup(dir: &Path) -> Self {
        let secret_text = "crash-test-secret-0123456789";
        let secret_file = dir.join("secret");
        std::fs::write(&secret_file, secret_text).expect("secret");
        let socket = dir.join("node.sock");
        let config = dir.join("node.toml");
        let toml = format!(
            "node_id = 1\nlisten = \"unix:{}\"\ncluster_secret_file = \"{}\"\nio_engine = \"uring\"\n\n\
             [[disk]]\nid = 0\npath = \"{}\"\nclass = \"ssd\"\ncapacity = \"128MiB\"\n",
            socket.display(),
            secret_file.display(),
            dir.join("disk0").display()
        );
        std::fs::write(&config, toml).expect("config");
        let secret = ClusterSecret::new(secret_text.as_bytes().to_vec()).expect("secret");
        let admin = Credential::from_secret(secret, Principal::admin()).identity(Door::Node);
        Self { config, socket, log: dir.join("node.log"), admin }
    }

    fn spawn(&self) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log");
        Command::new(env!("CARGO_BIN_EXE_chuyi"))
            .args(["node", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn chuyi node")
    }

    /// Connects once the node serves, polling with a deadline.
    async fn connect(&self) -> Result<Client, String> {
        let endpoint = Endpoint::Unix(self.socket.clone());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match Client::connect(&endpoint, &self.admin, RpcConfig::default()).await {
                Ok(client) => return Ok(client),
                Err(e) if Instant::now() > deadline => return Err(format!("node did not come up: {e}")),
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}
