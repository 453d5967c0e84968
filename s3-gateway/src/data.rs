//! Object data on the storage nodes: a request body streamed into a new run
//! of chunks, and a byte range of runs streamed back out.
//!
//! Neither direction holds an object in memory: a write keeps at most
//! [`WRITES_IN_FLIGHT`] chunks buffered, a read [`READS_AHEAD`] plus what
//! the response channel holds.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chuyi_client::Cluster;
use chuyi_common::ids::ChunkId;
use chuyi_common::limits::OBJECT_CHUNK_BYTES;
use chuyi_common::proto::chunk::{ChunkResponse, PgOp};
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
use crate::packs::Packs;

/// Chunk writes one upload keeps in flight.
pub const WRITES_IN_FLIGHT: usize = 4;
/// Chunk reads one download keeps ahead of the client.
pub const READS_AHEAD: usize = 2;
/// Largest body of one PUT or part, as S3.
pub const OBJECT_PUT_MAX_BYTES: u64 = 5 << 30;

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
}

impl DataPath {
    pub fn new(cluster: Arc<Cluster>, pending_ttl: Duration, packs: Packs) -> Self {
        Self { cluster, pending_ttl, packs: Arc::new(packs) }
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Writes exactly `len` bytes of `body` into a new run of `pool`,
    /// computing its MD5 and the checksums `hasher` was set up for.
    pub async fn write<S, E>(&self, pool: &str, len: u64, body: S, hasher: ChecksumHasher) -> S3Result<Written>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        if len > OBJECT_PUT_MAX_BYTES {
            return Err(s3_error!(EntityTooLarge, "{len} bytes; one PUT or part is at most {OBJECT_PUT_MAX_BYTES}"));
        }
        let ttl_ms = pending_ttl(self.pending_ttl, len).as_millis() as u64;
        let begin = order::BeginData { pool: pool.to_string(), len, ttl_ms };
        let owner = self.cluster.meta().order(begin).await.map_err(meta_error)?;
        let run = PendingRun { run: DataRun::owned(owner, len), cluster: Some(self.cluster.clone()) };
        let (md5, checksums) = self.stream_chunks(owner, len, body, hasher).await?;
        Ok(Written { run, md5, checksums })
    }

    async fn stream_chunks<S, E>(
        &self,
        owner: u64,
        len: u64,
        mut body: S,
        hasher: ChecksumHasher,
    ) -> S3Result<([u8; 16], Checksum)>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut check = BodyCheck::new(len, hasher);
        let mut buf = BytesMut::new();
        let mut next_index = 0u64;
        let mut writes = FuturesUnordered::new();
        loop {
            let piece = check.next(&mut body).await?;
            let last = piece.is_none();
            if let Some(piece) = piece {
                buf.extend_from_slice(&piece);
            }
            while buf.len() as u64 >= OBJECT_CHUNK_BYTES || (last && !buf.is_empty()) {
                let take = buf.len().min(OBJECT_CHUNK_BYTES as usize);
                let chunk = ChunkId::new(owner, next_index);
                next_index += 1;
                let data = buf.split_to(take).freeze();
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
        Ok(check.finish())
    }

    /// Writes an object's body: into a pack when it is small (smaller
    /// than a chunk, [`Packs::packs`]), else into a run of its own.
    pub async fn write_object<S, E>(&self, pool: &str, len: u64, body: S, hasher: ChecksumHasher) -> S3Result<Written>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        if !self.packs.packs(len) {
            return self.write(pool, len, body, hasher).await;
        }
        // Whole before its range is taken: the range is committed or dead
        // within a chunk write of being taken, never held open by a slow
        // client, and the body is smaller than the chunks a streamed PUT
        // buffers anyway.
        let mut check = BodyCheck::new(len, hasher);
        let mut buf = BytesMut::with_capacity(len as usize);
        let mut body = body;
        while let Some(piece) = check.next(&mut body).await? {
            buf.extend_from_slice(&piece);
        }
        let (md5, checksums) = check.finish();
        let run = self.packs.reserve(&self.cluster, pool, len).await?;
        self.write_run(run, buf.freeze()).await?;
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

    /// Streams bytes `range` of the object whose data is `runs`.
    pub fn read(&self, runs: &[DataRun], range: Range<u64>) -> StreamingBlob {
        let pieces = pieces(runs, range);
        let (mut tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let cluster = self.cluster.clone();
        tokio::spawn(async move {
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
        StreamingBlob::wrap(rx)
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
    tracing::warn!(error = %e, "object data path failed");
    s3_error!(ServiceUnavailable, "the storage nodes could not be reached in time")
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
