//! Object data on the storage nodes: a request body streamed into a new run
//! of chunks, and a byte range of runs streamed back out.
//!
//! Neither direction holds an object in memory: a write keeps at most
//! [`WRITES_IN_FLIGHT`] chunks buffered, a read [`READS_AHEAD`] plus what
//! the response channel holds. And all of them together hold at most the
//! gateway's memory budget ([`Budget`]): a body that would take more
//! waits for its share up to [`BUDGET_WAIT`], then gets 503 SlowDown.
//!
//! A bucket with compression, and an encrypted object, has its data
//! written framed ([`crate::frames`]): the body is checked (length, MD5,
//! checksums) as sent, then compressed and sealed a frame at a time on the
//! blocking pool, and the run is as long as what was stored.
//! [`DataPath::read_object`] reads an object's bytes as they were sent,
//! framed or not, given its data key when it is encrypted.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chuyi_client::Cluster;
use chuyi_common::ids::ChunkId;
use chuyi_common::limits::OBJECT_CHUNK_BYTES;
use chuyi_common::proto::chunk::{ChunkErrorKind, ChunkResponse, PgOp};
use chuyi_meta_api::model::DataRun;
use chuyi_meta_api::{order, Request, DATA_TTL_MAX_MS};
use futures::channel::mpsc;
use futures::stream::FuturesUnordered;
use futures::{SinkExt, Stream, StreamExt};
use s3s::checksum::ChecksumHasher;
use s3s::crypto::{Checksum as _, Md5};
use s3s::dto::{Checksum, StreamingBlob};
use s3s::{s3_error, S3Error, S3Result};

use crate::errors::meta_error;
use crate::frames::{Encoder, Layout, Spec};
use crate::metrics::FramingCounts;
use crate::packs::Packs;
use crate::sse::DataKey;
use chuyi_meta_api::model::{ObjectPut, OBJECT_FRAMED, PART_SIZES_HEADER};

/// Chunk writes one upload keeps in flight.
pub const WRITES_IN_FLIGHT: usize = 4;
/// Chunk reads one download keeps ahead of the client.
pub const READS_AHEAD: usize = 2;
/// Largest body of one PUT or part, as S3.
pub const OBJECT_PUT_MAX_BYTES: u64 = 5 << 30;

/// What one write holds of the budget at most: the chunk it fills and
/// those in flight.
const WRITE_HOLD_BYTES: u64 = (WRITES_IN_FLIGHT as u64 + 1) * OBJECT_CHUNK_BYTES;
/// What one read holds at most: the chunks read ahead and the response
/// channel's (framed reads hold less: a batch of frames each).
const READ_HOLD_BYTES: u64 = (READS_AHEAD as u64 + 2) * OBJECT_CHUNK_BYTES;
/// How long a body waits for its share of the budget before SlowDown.
pub const BUDGET_WAIT: Duration = Duration::from_secs(1);
/// The default budget: a hundred uploads of large objects in flight at once.
pub const DEFAULT_BUDGET_BYTES: u64 = 2 << 30;
/// The budget's unit.
const BUDGET_UNIT: u64 = 1 << 20;

/// The bytes of request and response bodies the gateway holds at once, in
/// MiB permits: each write and read takes what it may hold
/// (`WRITE_HOLD_BYTES`, `READ_HOLD_BYTES`, or the body's length when
/// less) before it buffers a byte, and gives it back when it ends.
#[derive(Debug, Clone)]
pub struct Budget {
    permits: Arc<tokio::sync::Semaphore>,
    units: u32,
    wait: Duration,
}

impl Budget {
    pub fn new(bytes: u64, wait: Duration) -> Self {
        let units = bytes.div_ceil(BUDGET_UNIT).clamp(1, u64::from(u32::MAX >> 3)) as u32;
        Self { permits: Arc::new(tokio::sync::Semaphore::new(units as usize)), units, wait }
    }

    /// A share of `bytes` (at least one unit, at most the whole budget),
    /// waited for up to the budget's wait, else SlowDown.
    async fn hold(&self, bytes: u64) -> S3Result<tokio::sync::OwnedSemaphorePermit> {
        let units = units_for(bytes, self.units);
        let acquire = self.permits.clone().acquire_many_owned(units);
        match tokio::time::timeout(self.wait, acquire).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(s3_error!(InternalError, "the memory budget was closed")),
            Err(_) => Err(s3_error!(
                SlowDown,
                "the gateway holds its memory budget of {} MiB in bodies; retry later",
                self.units
            )),
        }
    }
}

/// The units a body of `bytes` holds: rounded up, at least one, at most
/// the whole budget (a budget smaller than one body still lets it through
/// alone).
fn units_for(bytes: u64, budget_units: u32) -> u32 {
    bytes.div_ceil(BUDGET_UNIT).clamp(1, u64::from(budget_units)) as u32
}

/// How long reserved data stays pending, at least, before it is taken for
/// a dead writer's.
pub const PENDING_TTL: Duration = Duration::from_secs(3600);

/// The time `len` bytes stay pending: the base, plus the base again per
/// GiB, so a writer of 5 GiB has 6 hours by default (0.25 MiB/s).
fn pending_ttl(base: Duration, len: u64) -> Duration {
    let base_ms = base.as_millis() as u64;
    let per_gib = ((u128::from(base_ms) * u128::from(len)) >> 30) as u64;
    Duration::from_millis(base_ms.saturating_add(per_gib).clamp(1, DATA_TTL_MAX_MS))
}

/// What writing a body produced.
#[derive(Debug)]
pub struct Written {
    pub run: PendingRun,
    pub md5: [u8; 16],
    /// The checksums the request asked to be computed (base64).
    pub checksums: Checksum,
}

/// A run that is written but not yet claimed by an object or part. If it
/// is dropped before [`PendingRun::claimed`], its data is abandoned (put in
/// the garbage the reclaimer frees), whatever ended the request: an error,
/// a refusal, or the client going away mid-body.
#[derive(Debug)]
pub struct PendingRun {
    pub run: DataRun,
    cluster: Option<Arc<Cluster>>,
}

impl PendingRun {
    /// The run now belongs to a committed record.
    pub fn claimed(mut self) {
        self.cluster = None;
    }
}

impl Drop for PendingRun {
    fn drop(&mut self) {
        let Some(cluster) = self.cluster.take() else { return };
        let owner = self.run.owner;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            // Failing here leaves it pending until its time is up, when the
            // reclaimer takes it all the same.
            if let Err(e) = cluster.meta().write(Request::AbandonData { owner }).await {
                tracing::warn!(owner = format_args!("{owner:#x}"), error = %e, "abandoning object data failed");
            }
        });
    }
}

/// Reads and writes object data through the cluster's data path.
#[derive(Debug, Clone)]
pub struct DataPath {
    cluster: Arc<Cluster>,
    pending_ttl: Duration,
    packs: Arc<Packs>,
    budget: Budget,
    framing: Arc<FramingCounts>,
}

impl DataPath {
    pub fn new(cluster: Arc<Cluster>, pending_ttl: Duration, packs: Packs, budget: Budget) -> Self {
        Self { cluster, pending_ttl, packs: Arc::new(packs), budget, framing: Arc::default() }
    }

    /// Object bytes compressed, encrypted and back, for the metrics.
    pub fn framing_counts(&self) -> Arc<FramingCounts> {
        self.framing.clone()
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Writes exactly `len` bytes of `body` into a new run of `pool`,
    /// computing its MD5 and the checksums `hasher` was set up for; framed
    /// (compressed, sealed) as `spec` says.
    pub async fn write<S, E>(
        &self,
        pool: &str,
        len: u64,
        body: S,
        hasher: ChecksumHasher,
        spec: &Spec,
    ) -> S3Result<Written>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        if len > OBJECT_PUT_MAX_BYTES {
            return Err(s3_error!(EntityTooLarge, "{len} bytes; one PUT or part is at most {OBJECT_PUT_MAX_BYTES}"));
        }
        let _held = self.budget.hold(len.min(WRITE_HOLD_BYTES)).await?;
        // Compressed data is not known to shrink: room for it stored raw.
        let reserved = if spec.framed() { Encoder::stored_bound(len, spec.seal.is_some()) } else { len };
        let ttl_ms = pending_ttl(self.pending_ttl, reserved).as_millis() as u64;
        let begin = order::BeginData { pool: pool.to_string(), len: reserved, ttl_ms };
        let owner = self.cluster.meta().order(begin).await.map_err(meta_error)?;
        let mut run = PendingRun { run: DataRun::owned(owner, reserved), cluster: Some(self.cluster.clone()) };
        let (md5, checksums, stored) = self.stream_chunks(owner, len, body, hasher, spec).await?;
        self.framing.wrote(spec, len, stored);
        run.run.len = stored;
        Ok(Written { run, md5, checksums })
    }

    /// Streams the body into chunks of `owner`: its MD5, checksums and the
    /// bytes stored.
    async fn stream_chunks<S, E>(
        &self,
        owner: u64,
        len: u64,
        mut body: S,
        hasher: ChecksumHasher,
        spec: &Spec,
    ) -> S3Result<([u8; 16], Checksum, u64)>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut check = BodyCheck::new(len, hasher);
        let mut framing = spec.framed().then(|| Framing::new(spec));
        // The most the body stores: what a chunk's buffer is sized by.
        let bound = if spec.framed() { Encoder::stored_bound(len, spec.seal.is_some()) } else { len };
        let mut chunker = Chunker::new(bound);
        let mut next_index = 0u64;
        let mut stored = 0u64;
        let mut writes = FuturesUnordered::new();
        loop {
            let piece = check.next(&mut body).await?;
            let last = piece.is_none();
            let mut full = match (&mut framing, piece) {
                (None, Some(piece)) => chunker.push(piece),
                (Some(framing), piece) => {
                    framing.take(piece).await?.into_iter().flat_map(|p| chunker.push(p)).collect()
                }
                (None, None) => Vec::new(),
            };
            if last {
                full.extend(chunker.finish());
            }
            for data in full {
                let chunk = ChunkId::new(owner, next_index);
                next_index += 1;
                stored += data.len() as u64;
                // FUA: an acknowledged PUT is on stable storage on both
                // replicas (DESIGN's durability contract), not only in
                // their write path.
                writes.push(async move { self.cluster.write_chunk(chunk, 0, data, true).await });
                while writes.len() >= WRITES_IN_FLIGHT {
                    wait_one(&mut writes).await?;
                }
            }
            if last {
                break;
            }
        }
        while !writes.is_empty() {
            wait_one(&mut writes).await?;
        }
        let (md5, checksums) = check.finish();
        Ok((md5, checksums, stored))
    }

    /// Writes an object's body: into a pack when it is small (smaller
    /// than a chunk, [`Packs::packs`]), else into a run of its own; framed
    /// as `spec` says.
    pub async fn write_object<S, E>(
        &self,
        pool: &str,
        len: u64,
        body: S,
        hasher: ChecksumHasher,
        spec: &Spec,
    ) -> S3Result<Written>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        if !self.packs.packs(len) {
            return self.write(pool, len, body, hasher, spec).await;
        }
        // Whole before its range is taken: the range is committed or dead
        // within a chunk write of being taken, never held open by a slow
        // client, and the body is smaller than the chunks a streamed PUT
        // buffers anyway.
        let _held = self.budget.hold(len).await?;
        let mut check = BodyCheck::new(len, hasher);
        let mut buf = BytesMut::with_capacity(len as usize);
        let mut body = body;
        while let Some(piece) = check.next(&mut body).await? {
            buf.extend_from_slice(&piece);
        }
        let (md5, checksums) = check.finish();
        let data = if spec.framed() {
            let (raw, spec) = (buf.freeze(), spec.clone());
            tokio::task::spawn_blocking(move || crate::frames::encode(&spec, &raw))
                .await
                .map_err(|e| s3_error!(InternalError, "framing: {e}"))?
        } else {
            buf.freeze()
        };
        let stored = data.len() as u64;
        let run = self.packs.reserve(&self.cluster, pool, stored).await?;
        self.write_run(run, data).await?;
        self.framing.wrote(spec, len, stored);
        // Nothing to abandon if it is never claimed: a pack's uncommitted
        // bytes are dead from the start.
        Ok(Written { run: PendingRun { run, cluster: None }, md5, checksums })
    }

    /// Writes `data` (the run's length) at the run's place, FUA.
    async fn write_run(&self, run: DataRun, mut data: Bytes) -> S3Result<()> {
        let writes = FuturesUnordered::new();
        for (chunk, offset, len) in pieces(&[run], 0..run.len) {
            let piece = data.split_to(len as usize);
            writes.push(async move { self.cluster.write_chunk(chunk, offset, piece, true).await });
        }
        futures::pin_mut!(writes);
        while !writes.is_empty() {
            wait_one(&mut writes).await?;
        }
        Ok(())
    }

    /// Reads bytes `range` of the object whose data is `runs` into memory
    /// (the compactor's copy of one small object).
    pub async fn read_all(&self, runs: &[DataRun], range: Range<u64>) -> Result<Bytes, String> {
        let mut out = BytesMut::with_capacity((range.end - range.start) as usize);
        for (chunk, offset, len) in pieces(runs, range) {
            out.extend_from_slice(&read_written(&self.cluster, chunk, offset, len).await?);
        }
        Ok(out.freeze())
    }

    /// Copies one packed run into this gateway's open pack (the
    /// compactor): the new run, written on every replica.
    pub async fn copy_packed(&self, pool: &str, run: DataRun) -> Result<DataRun, String> {
        let data = self.read_all(&[run], 0..run.len).await?;
        let to = self.packs.reserve(&self.cluster, pool, run.len).await.map_err(|e| format!("{e:?}"))?;
        self.write_run(to, data).await.map_err(|e| format!("{e:?}"))?;
        Ok(to)
    }

    /// Streams bytes `range` of `object` as they were sent: its runs' bytes,
    /// or for a framed object the frames `range` touches, opened with `key`
    /// (an encrypted object's) and decompressed.
    pub async fn read_object(
        &self,
        object: &ObjectPut,
        range: Range<u64>,
        key: Option<Arc<DataKey>>,
    ) -> S3Result<StreamingBlob> {
        if object.flags & OBJECT_FRAMED == 0 {
            return self.read(&object.data, range).await;
        }
        let held = self.budget.hold((range.end - range.start).min(READ_HOLD_BYTES)).await?;
        let parts = framed_parts(object);
        let (mut tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(READS_AHEAD);
        let this = self.clone();
        tokio::spawn(async move {
            let _held = held;
            let result = match parts {
                Ok(parts) => this.send_framed(&parts, range, key.as_deref(), &mut tx).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "framed object read failed mid-body");
                let _ = tx.send(Err(std::io::Error::other(format!("{UNREADABLE}: {e}")))).await;
            }
        });
        Ok(StreamingBlob::wrap(rx))
    }

    /// Sends the logical bytes `range` of framed runs (each with the
    /// logical range it holds), a batch of frames at a time.
    async fn send_framed(
        &self,
        parts: &[(DataRun, Range<u64>)],
        range: Range<u64>,
        key: Option<&DataKey>,
        tx: &mut mpsc::Sender<Result<Bytes, std::io::Error>>,
    ) -> Result<(), String> {
        for (run, holds) in parts {
            let (start, end) = (range.start.max(holds.start), range.end.min(holds.end));
            if start >= end {
                continue;
            }
            let local = start - holds.start..end - holds.start;
            let layout = self.layout(*run).await?;
            // The object's size, kept by the metadata service, fixes each
            // run's length: a run cut short (or grown) on a disk shows here.
            if layout.logical_len != holds.end - holds.start {
                return Err(format!(
                    "a framed run holds {} bytes, not {}",
                    layout.logical_len,
                    holds.end - holds.start
                ));
            }
            let cipher = Arc::new(layout.cipher(key).map_err(|e| e.to_string())?);
            let frames = layout.frames_for(&local);
            let mut first = frames.start;
            while first < frames.end {
                let batch = first..(first + FRAMES_PER_READ).min(frames.end);
                first = batch.end;
                let at = layout.stored_range(&batch);
                let stored = self.read_all(&[*run], at).await?;
                let (layout, batch, local, cipher) = (layout.clone(), batch.clone(), local.clone(), cipher.clone());
                let counts = self.framing.clone();
                let pieces = tokio::task::spawn_blocking(move || {
                    decode_batch(&layout, &batch, stored, &local, cipher.as_ref().as_ref(), &counts)
                })
                .await
                .map_err(|e| e.to_string())??;
                for piece in pieces {
                    // The client went away: stop reading.
                    if tx.send(Ok(piece)).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// A framed run's index, from its tail.
    async fn layout(&self, run: DataRun) -> Result<Layout, String> {
        let guess = run.len.min(TAIL_GUESS);
        let tail = self.read_all(&[run], run.len - guess..run.len).await?;
        let need = Layout::tail_len(&tail, run.len).map_err(|e| e.to_string())?;
        let tail = if need <= guess { tail } else { self.read_all(&[run], run.len - need..run.len).await? };
        Layout::parse(&tail, run.len).map_err(|e| e.to_string())
    }

    /// Streams bytes `range` of the object whose data is `runs`.
    pub async fn read(&self, runs: &[DataRun], range: Range<u64>) -> S3Result<StreamingBlob> {
        let held = self.budget.hold((range.end - range.start).min(READ_HOLD_BYTES)).await?;
        let pieces = pieces(runs, range);
        let (mut tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let cluster = self.cluster.clone();
        tokio::spawn(async move {
            let _held = held;
            let reads =
                futures::stream::iter(pieces)
                    .map(|(chunk, offset, len)| {
                        let cluster = cluster.clone();
                        async move {
                            read_written(&cluster, chunk, offset, len).await.map_err(|e| format!("{UNREADABLE}: {e}"))
                        }
                    })
                    .buffered(READS_AHEAD);
            futures::pin_mut!(reads);
            while let Some(read) = reads.next().await {
                let failed = read.is_err();
                let item = read.map_err(|e| {
                    tracing::warn!(error = %e, "object read failed mid-body");
                    std::io::Error::other(e)
                });
                // The client went away: stop reading.
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(StreamingBlob::wrap(rx))
    }

    /// Deletes every chunk a run may have, from every replica.
    pub async fn delete_run(&self, run: DataRun) -> Result<(), chuyi_client::ClientError> {
        let deletes = futures::stream::iter(run.chunks())
            .map(|index| self.cluster.delete_chunk(ChunkId::new(run.owner, index), None))
            .buffer_unordered(WRITES_IN_FLIGHT);
        futures::pin_mut!(deletes);
        while let Some(done) = deletes.next().await {
            done?;
        }
        Ok(())
    }
}

/// Frames read and decompressed at a time: 1 MiB of logical bytes.
const FRAMES_PER_READ: usize = 8;
/// Bytes read from a framed run's end for its index: the whole index of
/// objects up to about 120 MiB, and a second read beyond.
const TAIL_GUESS: u64 = 4096;

/// The bytes each of an object's runs holds as sent: the runs' lengths,
/// or for a framed object the one run's size, or a multipart object's
/// parts' sizes as its [`PART_SIZES_HEADER`] lists them.
pub fn part_sizes(object: &ObjectPut) -> Result<Vec<u64>, String> {
    let sizes: Vec<u64> = if object.flags & OBJECT_FRAMED == 0 {
        object.data.iter().map(|run| run.len).collect()
    } else if object.data.len() == 1 {
        vec![object.size]
    } else {
        let header = object.headers.iter().find(|(n, _)| n == PART_SIZES_HEADER).map(|(_, v)| v.as_str());
        let parsed: Option<Vec<u64>> = header.and_then(|h| h.split(',').map(|s| s.parse().ok()).collect());
        parsed.ok_or("a framed multipart object without its part sizes")?
    };
    if sizes.len() != object.data.len() || sizes.iter().sum::<u64>() != object.size {
        return Err("a framed object's part sizes do not add up".into());
    }
    Ok(sizes)
}

/// A framed object's runs, each with the logical bytes it holds.
fn framed_parts(object: &ObjectPut) -> Result<Vec<(DataRun, Range<u64>)>, String> {
    let sizes = part_sizes(object)?;
    let mut at = 0;
    Ok(object
        .data
        .iter()
        .zip(sizes)
        .map(|(run, size)| {
            at += size;
            (*run, at - size..at)
        })
        .collect())
}

/// Decompresses a batch of frames read as one range, keeping what falls
/// in `local` (the run's logical range wanted); counted in `counts`.
fn decode_batch(
    layout: &Layout,
    batch: &Range<usize>,
    stored: Bytes,
    local: &Range<u64>,
    cipher: Option<&crate::sse::RunCipher>,
    counts: &FramingCounts,
) -> Result<Vec<Bytes>, String> {
    let mut out = Vec::with_capacity(batch.len());
    for (i, payload) in layout.split(batch, stored) {
        let start = layout.logical_start(i);
        let mut data = layout.decode(i, payload, cipher).map_err(|e| e.to_string())?;
        counts.read_frame(layout.undoes(i), data.len() as u64);
        let end = (local.end.saturating_sub(start) as usize).min(data.len());
        data.truncate(end);
        let from = (local.start.saturating_sub(start) as usize).min(data.len());
        out.push(data.split_off(from));
    }
    Ok(out)
}

/// Feeds a body through an [`Encoder`] on the blocking pool, a batch at a
/// time (compression and sealing take milliseconds per MiB).
struct Framing {
    encoder: Option<Encoder>,
    batch: BytesMut,
}

/// Logical bytes compressed per trip to the blocking pool.
const FRAMING_BATCH: usize = 1 << 20;

impl Framing {
    fn new(spec: &Spec) -> Self {
        Self { encoder: Some(Encoder::new(spec)), batch: BytesMut::new() }
    }

    /// Takes the next piece of the body (`None` at its end): what is
    /// stored of it and of the pieces before, once a batch is framed.
    async fn take(&mut self, piece: Option<Bytes>) -> S3Result<Vec<Bytes>> {
        let last = piece.is_none();
        if let Some(piece) = piece {
            self.batch.extend_from_slice(&piece);
        }
        if self.batch.len() < FRAMING_BATCH && !last {
            return Ok(Vec::new());
        }
        let mut encoder = self.encoder.take().ok_or_else(|| s3_error!(InternalError, "framing after its end"))?;
        let batch = std::mem::take(&mut self.batch).freeze();
        let (encoder, stored) = tokio::task::spawn_blocking(move || {
            let mut stored = encoder.push(&batch);
            if last {
                stored.extend(encoder.finish());
                return (None, stored);
            }
            (Some(encoder), stored)
        })
        .await
        .map_err(|e| s3_error!(InternalError, "compressing: {e}"))?;
        self.encoder = encoder;
        Ok(stored)
    }
}

/// How a read error of object data starts, so a copy reading it reports
/// the service's failure (5xx), not the client's body (4xx).
const UNREADABLE: &str = "object data unreadable";

/// Reads object data that must exist: a chunk that is not there (its
/// version was deleted and reclaimed while this read ran) is an error, not
/// the zeros an unwritten volume chunk reads as.
async fn read_written(cluster: &Cluster, chunk: ChunkId, offset: u32, len: u32) -> Result<Bytes, String> {
    let op = PgOp::Read { offset, len };
    match cluster.chunk_call(chunk, op, Bytes::new()).await {
        Ok((ChunkResponse::ReadDone { allocated: true }, data)) if data.len() == len as usize => Ok(data),
        Ok((ChunkResponse::ReadDone { allocated: false }, _)) => Err(format!("chunk {chunk} is gone")),
        Ok((other, data)) => Err(format!("chunk {chunk}: {other:?} with {} bytes", data.len())),
        Err(e) => Err(e.to_string()),
    }
}

/// A request body as it arrives: its length held to the declared one,
/// its MD5 and checksums computed.
struct BodyCheck {
    len: u64,
    received: u64,
    md5: Md5,
    hasher: ChecksumHasher,
}

impl BodyCheck {
    fn new(len: u64, hasher: ChecksumHasher) -> Self {
        Self { len, received: 0, md5: Md5::new(), hasher }
    }

    /// The next piece, `None` at the end of a body of exactly the
    /// declared length.
    async fn next<S, E>(&mut self, body: &mut S) -> S3Result<Option<Bytes>>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let (len, received) = (self.len, self.received);
        match body.next().await {
            Some(Ok(piece)) => {
                self.received += piece.len() as u64;
                if self.received > len {
                    return Err(s3_error!(IncompleteBody, "the body is longer than its declared {len} bytes"));
                }
                self.md5.update(&piece);
                self.hasher.update(&piece);
                Ok(Some(piece))
            }
            Some(Err(e)) => Err(body_error(&e)),
            None if received < len => Err(s3_error!(IncompleteBody, "the body ended after {received} of {len} bytes")),
            None => Ok(None),
        }
    }

    fn finish(self) -> ([u8; 16], Checksum) {
        (self.md5.finalize(), self.hasher.finalize())
    }
}

async fn wait_one(writes: &mut (impl Stream<Item = Result<(), chuyi_client::ClientError>> + Unpin)) -> S3Result<()> {
    match writes.next().await {
        Some(Err(e)) => Err(data_error(e)),
        _ => Ok(()),
    }
}

/// The S3 error for a request body that could not be read. s3s checks a
/// declared x-amz-content-sha256 as the body streams, and its error type
/// is private: it is known by its text.
fn body_error(e: &dyn std::fmt::Display) -> S3Error {
    let text = e.to_string();
    if text.starts_with(UNREADABLE) {
        tracing::warn!(error = %text, "object data could not be read");
        s3_error!(ServiceUnavailable, "the object's data could not be read: {text}")
    } else if text.contains("Sha256Mismatch") {
        crate::errors::content_sha256_mismatch()
    } else {
        s3_error!(IncompleteBody, "reading the request body: {text}")
    }
}

/// The S3 error for a data path that failed under a request.
pub fn data_error(e: chuyi_client::ClientError) -> S3Error {
    use chuyi_client::ClientError;
    match e {
        // A full disk: retrying soon does not help, and a 503 would have
        // clients retry it as a busy service. Ceph RGW answers ENOSPC so.
        ClientError::Chunk { error, .. } if error.kind == ChunkErrorKind::NoSpace => {
            tracing::warn!(%error, "a disk has no space for an object's data");
            crate::errors::insufficient_capacity()
        }
        ClientError::Meta(e) => meta_error(e),
        e @ (ClientError::Chunk { .. }
        | ClientError::Timeout { .. }
        | ClientError::FlushTimeout { .. }
        | ClientError::Fenced { .. }
        | ClientError::LeaseLost
        | ClientError::FenceNotRaised { .. }
        | ClientError::Unexpected(_)
        | ClientError::OutOfRange { .. }
        | ClientError::ReadOnly { .. }) => {
            tracing::warn!(error = %e, "object data path failed");
            s3_error!(ServiceUnavailable, "the storage nodes could not be reached in time")
        }
    }
}

/// A streamed body's bytes cut into chunks. Each chunk's buffer is sized
/// once, for a chunk or the body's tail, and filled only to the chunk, so
/// it never grows: growing held the old and the new copy at once, outside
/// the memory budget.
struct Chunker {
    buf: BytesMut,
    /// What the body may still store, at most.
    left: u64,
}

impl Chunker {
    /// For a body that stores `bound` bytes at most.
    fn new(bound: u64) -> Self {
        Self { buf: BytesMut::with_capacity(bound.min(OBJECT_CHUNK_BYTES) as usize), left: bound }
    }

    /// Takes `piece`: the chunks it fills.
    fn push(&mut self, mut piece: Bytes) -> Vec<Bytes> {
        let mut full = Vec::new();
        while !piece.is_empty() {
            let room = OBJECT_CHUNK_BYTES as usize - self.buf.len();
            let part = piece.split_to(room.min(piece.len()));
            self.left = self.left.saturating_sub(part.len() as u64);
            self.buf.extend_from_slice(&part);
            if self.buf.len() as u64 == OBJECT_CHUNK_BYTES {
                let next = BytesMut::with_capacity(self.left.min(OBJECT_CHUNK_BYTES) as usize);
                full.push(std::mem::replace(&mut self.buf, next).freeze());
            }
        }
        full
    }

    /// The body's last chunk, when it fills only part of one.
    fn finish(&mut self) -> Option<Bytes> {
        (!self.buf.is_empty()).then(|| std::mem::take(&mut self.buf).freeze())
    }
}

/// The chunk reads that cover `range` of the concatenated `runs`: (chunk,
/// offset in it, length), in order.
fn pieces(runs: &[DataRun], range: Range<u64>) -> Vec<(ChunkId, u32, u32)> {
    let mut out = Vec::new();
    let mut run_start = 0u64;
    for run in runs {
        let run_end = run_start + run.len;
        let from = range.start.max(run_start);
        let to = range.end.min(run_end);
        let mut at = from;
        while at < to {
            let in_run = at - run_start + run.offset;
            let index = in_run / OBJECT_CHUNK_BYTES;
            let offset = in_run % OBJECT_CHUNK_BYTES;
            let len = (OBJECT_CHUNK_BYTES - offset).min(to - at);
            out.push((ChunkId::new(run.owner, index), offset as u32, len as u32));
            at += len;
        }
        run_start = run_end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: u64 = OBJECT_CHUNK_BYTES;

    #[test]
    fn a_streamed_body_is_cut_into_chunks_whose_buffers_never_grow() {
        // Pieces that do not divide a chunk, so some cross its boundary.
        let body: Vec<u8> = (0..(2 * C + C / 2)).map(|i| (i % 251) as u8).collect();
        let mut chunker = Chunker::new(body.len() as u64);
        let mut chunks = Vec::new();
        for piece in body.chunks(300 << 10) {
            chunks.extend(chunker.push(Bytes::copy_from_slice(piece)));
            assert!(chunker.buf.capacity() <= C as usize, "a buffer grew past its chunk");
        }
        assert_eq!(chunker.buf.capacity(), C as usize / 2, "the tail's buffer is sized for the tail");
        chunks.extend(chunker.finish());
        assert_eq!(chunks.iter().map(Bytes::len).collect::<Vec<_>>(), [C as usize, C as usize, C as usize / 2]);
        assert_eq!(chunks.concat(), body);
        assert_eq!(
            Chunker::new(1000).push(Bytes::from(vec![1; 1000])),
            Vec::<Bytes>::new(),
            "a small body: no chunk full"
        );
    }

    #[test]
    fn bodies_hold_their_length_in_whole_mib_within_the_budget() {
        assert_eq!(units_for(0, 100), 1);
        assert_eq!(units_for(1, 100), 1);
        assert_eq!(units_for(BUDGET_UNIT + 1, 100), 2);
        assert_eq!(units_for(WRITE_HOLD_BYTES, 100), 20);
        assert_eq!(units_for(WRITE_HOLD_BYTES, 8), 8, "never more than the whole budget");
    }

    #[test]
    fn pending_time_grows_with_the_data() {
        let hour = Duration::from_secs(3600);
        assert_eq!(pending_ttl(hour, 0), hour);
        assert_eq!(pending_ttl(hour, 1 << 30), 2 * hour);
        assert_eq!(pending_ttl(Duration::from_secs(2), 64 << 20), Duration::from_millis(2125));
        assert_eq!(pending_ttl(hour * 100, 5 << 30), Duration::from_millis(DATA_TTL_MAX_MS));
    }

    #[test]
    fn pieces_cover_a_range_across_chunks_and_runs() {
        let runs = [DataRun::owned(1, C + 10), DataRun::owned(2, 5)];
        assert_eq!(
            pieces(&runs, 0..C + 15),
            vec![(ChunkId::new(1, 0), 0, C as u32), (ChunkId::new(1, 1), 0, 10), (ChunkId::new(2, 0), 0, 5)]
        );
        assert_eq!(
            pieces(&runs, C - 2..C + 12),
            vec![(ChunkId::new(1, 0), C as u32 - 2, 2), (ChunkId::new(1, 1), 0, 10), (ChunkId::new(2, 0), 0, 2)]
        );
        assert!(pieces(&runs, 3..3).is_empty());
        // A packed run starts inside its owner's chunks.
        let packed = [DataRun { owner: 3, offset: C - 4, len: 10 }];
        assert_eq!(pieces(&packed, 2..10), vec![(ChunkId::new(3, 0), C as u32 - 2, 2), (ChunkId::new(3, 1), 0, 6)]);
        assert!(pieces(&[], 0..10).is_empty());
    }
}
