//! Byte-range I/O on a volume: each request is cut at chunk boundaries and
//! the pieces run concurrently, each through the cluster's retry loop.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chuyi_common::ids::ChunkId;
use chuyi_common::limits::BLOCK_SIZE_BYTES;
use chuyi_common::proto::chunk::{ChunkErrorKind, ChunkResponse, Extent};
use chuyi_meta_api::ask;
use chuyi_meta_api::model::Volume;

use crate::cluster::Cluster;
use crate::error::ClientError;
use crate::fence::WriteFence;
use chuyi_common::proto::chunk::PgOp;

/// An open volume. Clone it freely; operations may overlap in time (the
/// frontend decides what overlapping writes mean).
#[derive(Clone, Debug)]
pub struct VolumeIo {
    cluster: Arc<Cluster>,
    volume: Arc<Volume>,
    /// The writer's fence; `None` for a reader or a tool that holds no
    /// lease (its writes are refused once the volume has had a writer).
    fence: Option<WriteFence>,
    /// The volume's snap sequence as this handle knows it, shared by its
    /// clones: every mutation carries it, and a node's `SnapStale` has it
    /// fetched again (common/PROTOCOL.md section 5.3).
    snap: Arc<AtomicU32>,
    /// A read-only view of this snapshot instead of the live volume.
    at: Option<u32>,
    /// A clone volume's parent snapshot (read-only): chunks the clone has
    /// not written read from there, and its first mutation of a chunk
    /// installs the parent's copy first.
    parent: Option<Arc<VolumeIo>>,
    /// Chunks of a clone known to be its own by now.
    present: Arc<std::sync::Mutex<std::collections::HashSet<u64>>>,
}

/// Tries of one mutation refused because a snapshot was taken meanwhile.
const SNAP_TRIES: usize = 8;

/// Chunks asked for their extents at once by one [`VolumeIo::extents`].
const EXTENTS_IN_FLIGHT: usize = 16;

/// A run of a volume's bytes that holds data or reads as zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VolumeExtent {
    pub len: u64,
    pub data: bool,
}

/// One chunk's share of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Piece {
    chunk: ChunkId,
    /// Offset within the chunk.
    offset: u32,
    len: u32,
    /// Offset within the request.
    at: usize,
}

impl VolumeIo {
    pub(crate) fn new(cluster: Arc<Cluster>, volume: Volume, snap: u32) -> Self {
        Self {
            cluster,
            volume: Arc::new(volume),
            fence: None,
            snap: Arc::new(AtomicU32::new(snap)),
            at: None,
            parent: None,
            present: Arc::default(),
        }
    }

    /// This volume as a clone of `parent` (a snapshot's read-only view).
    pub(crate) fn with_parent(mut self, parent: VolumeIo) -> Self {
        self.parent = Some(Arc::new(parent));
        self
    }

    /// Whether this volume is a clone still reading from its parent.
    pub fn is_clone(&self) -> bool {
        self.parent.is_some()
    }

    /// The volume as snapshot `id` saw it, read-only.
    pub fn at_snapshot(&self, id: u32) -> Self {
        Self { fence: None, at: Some(id), ..self.clone() }
    }

    /// The snapshot this handle reads; `None` for the live volume.
    pub fn snapshot(&self) -> Option<u32> {
        self.at
    }

    /// The snap sequence this handle's writes carry now.
    pub fn snap_seq(&self) -> u32 {
        self.snap.load(Ordering::Acquire)
    }

    /// This volume as written by the holder of attach lease `token`:
    /// every mutation carries the token, and none is sent once `gate`
    /// closes. Raise the fence on every node first
    /// ([`Cluster::raise_fence`], done by [`Self::attach_fence`]).
    pub fn fenced(mut self, token: u64, gate: Arc<dyn chuyi_common::rpc::SendGate>) -> Self {
        self.fence = Some(WriteFence { owner: self.volume.id, token, gate });
        self
    }

    /// Raises this writer's fence on every node: afterwards no node takes a
    /// mutation of the volume from an older writer.
    pub async fn attach_fence(&self) -> Result<(), ClientError> {
        match &self.fence {
            Some(fence) => self.cluster.raise_fence(fence.volume_fence()).await,
            None => Ok(()),
        }
    }

    pub fn volume(&self) -> &Volume {
        &self.volume
    }

    pub fn size(&self) -> u64 {
        self.volume.size_bytes
    }

    pub async fn read(&self, offset: u64, len: u64) -> Result<Bytes, ClientError> {
        let pieces = self.pieces(offset, len)?;
        let reads = pieces.iter().map(|p| self.read_piece(p));
        let parts = futures::future::try_join_all(reads).await?;
        if parts.len() == 1 {
            return Ok(parts.into_iter().next().unwrap_or_default());
        }
        let mut out = BytesMut::with_capacity(len as usize);
        for part in parts {
            out.extend_from_slice(&part);
        }
        Ok(out.freeze())
    }

    /// Writes `data` at `offset`; with `fua`, stable on every replica before
    /// returning.
    pub async fn write(&self, offset: u64, data: Bytes, fua: bool) -> Result<(), ClientError> {
        let pieces = self.pieces(offset, data.len() as u64)?;
        let writes = pieces.iter().map(|p| {
            let part = data.slice(p.at..p.at + p.len as usize);
            self.mutate(p.chunk, move |snap| PgOp::Write { offset: p.offset, fua, snap }, part)
        });
        futures::future::try_join_all(writes).await.map(drop)
    }

    /// Puts chunk `index` back as snapshot `to` saw it (the nodes copy
    /// locally). The volume must be held by this handle's writer.
    pub async fn rollback_chunk(&self, index: u64, to: u32) -> Result<(), ClientError> {
        let chunk = ChunkId::new(self.volume.id, index);
        self.mutate(chunk, |snap| PgOp::Rollback { to, snap }, Bytes::new()).await
    }

    /// Piece `p`'s bytes, exactly as many as it asks for: a node answering
    /// more or fewer is an error, not a short or long read (a decipher of
    /// the wrong length would fail, a frontend would answer garbage).
    async fn read_piece(&self, p: &Piece) -> Result<Bytes, ClientError> {
        let data = self.read_piece_from_nodes(p).await?;
        if data.len() != p.len as usize {
            return Err(ClientError::Unexpected(format!(
                "chunk {:?} answered {} bytes for a read of {}",
                p.chunk,
                data.len(),
                p.len
            )));
        }
        Ok(data)
    }

    async fn read_piece_from_nodes(&self, p: &Piece) -> Result<Bytes, ClientError> {
        if self.at.is_none() && self.parent.is_none() {
            return self.cluster.read_chunk(p.chunk, p.offset, p.len).await;
        }
        let op = match self.at {
            Some(snap) => PgOp::ReadSnap { offset: p.offset, len: p.len, snap },
            None => PgOp::Read { offset: p.offset, len: p.len },
        };
        let (allocated, data) = self.cluster.read_op(p.chunk, op).await?;
        match &self.parent {
            // Not the clone's own (yet, or when this snapshot was taken).
            Some(parent) if !allocated => {
                let chunk = ChunkId::new(parent.volume.id, p.chunk.index);
                Box::pin(parent.read_piece_from_nodes(&Piece { chunk, ..*p })).await
            }
            _ => Ok(data),
        }
    }

    /// Before a clone's first mutation of chunk `index`: installs the
    /// parent's copy unless the clone has the chunk (each replica creates
    /// it whole or not at all, and an install of a chunk that exists
    /// writes nothing, so racing first writes are harmless).
    pub async fn copy_up(&self, index: u64) -> Result<(), ClientError> {
        let Some(parent) = &self.parent else { return Ok(()) };
        if self.present.lock().unwrap_or_else(|p| p.into_inner()).contains(&index) {
            return Ok(());
        }
        let chunk = ChunkId::new(self.volume.id, index);
        let probe = PgOp::Read { offset: 0, len: BLOCK_SIZE_BYTES as u32 };
        let (allocated, _) = self.cluster.read_op(chunk, probe).await?;
        if !allocated {
            let len = self.volume.chunk_size_bytes;
            let whole = Piece { chunk: ChunkId::new(parent.volume.id, index), offset: 0, len, at: 0 };
            let data = parent.read_piece(&whole).await?;
            // A chunk of zeros needs no copy: the clone's absent chunk
            // reads as zeros too once written around.
            if data.iter().any(|&b| b != 0) {
                self.cluster.chunk_call_fenced(chunk, PgOp::Install, data, self.fence.as_ref()).await?;
            }
        }
        self.present.lock().unwrap_or_else(|p| p.into_inner()).insert(index);
        Ok(())
    }

    /// Sends a mutation built for the snap sequence this handle knows,
    /// again with the newer one when a node says a snapshot was taken.
    async fn mutate(&self, chunk: ChunkId, op: impl Fn(u32) -> PgOp, payload: Bytes) -> Result<(), ClientError> {
        if let Some(snapshot) = self.at {
            return Err(ClientError::ReadOnly { volume: self.volume.name.clone(), snapshot });
        }
        self.copy_up(chunk.index).await?;
        for _ in 0..SNAP_TRIES {
            let sent = self.snap_seq();
            match self.cluster.chunk_call_fenced(chunk, op(sent), payload.clone(), self.fence.as_ref()).await {
                Err(ClientError::Chunk { error, .. }) if error.kind == ChunkErrorKind::SnapStale => {
                    self.refresh_snap(sent).await?;
                }
                other => return other.map(drop),
            }
        }
        Err(ClientError::Unexpected(format!("the snap sequence of volume {:?} kept moving", self.volume.name)))
    }

    /// Fetches the volume's snap sequence after a node refused `sent`.
    async fn refresh_snap(&self, sent: u32) -> Result<(), ClientError> {
        let snapshots = self.cluster.meta().ask(ask::Snapshots(self.volume.name.clone())).await?;
        let now = self.snap.fetch_max(snapshots.seq, Ordering::AcqRel).max(snapshots.seq);
        if now <= sent {
            // The node knows a sequence the metadata service did not show
            // this read yet: a moment, then again.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Makes a range read as zeros, freeing whole blocks (NBD TRIM and
    /// WRITE_ZEROES alike: freed space reads as zeros, never old data).
    pub async fn zero(&self, offset: u64, len: u64, fua: bool) -> Result<(), ClientError> {
        let pieces = self.pieces(offset, len)?;
        let zeros = pieces.iter().map(|p| {
            self.mutate(p.chunk, move |snap| PgOp::Zero { offset: p.offset, len: p.len, fua, snap }, Bytes::new())
        });
        futures::future::try_join_all(zeros).await.map(drop)
    }

    /// Which bytes of `[offset, offset + len)` hold data and which read as
    /// zeros: runs from `offset`, neighbours of different kinds, covering
    /// the range exactly. A few chunks are asked at a time, in order.
    pub async fn extents(&self, offset: u64, len: u64) -> Result<Vec<VolumeExtent>, ClientError> {
        use futures::{StreamExt, TryStreamExt};
        let pieces = self.pieces(offset, len)?;
        // A snapshot's holes are not tracked apart from the head's: all of
        // it is said to hold data, which is never wrong, only slower.
        // Nor are the parent's holes a clone reads through.
        if self.at.is_some() || self.parent.is_some() {
            return Ok(if len == 0 { Vec::new() } else { vec![VolumeExtent { len, data: true }] });
        }
        let asks =
            futures::stream::iter(pieces.iter().copied().map(|p| self.cluster.chunk_extents(p.chunk, p.offset, p.len)));
        let answers: Vec<Vec<Extent>> = asks.buffered(EXTENTS_IN_FLIGHT).try_collect().await?;
        let mut out: Vec<VolumeExtent> = Vec::new();
        for (piece, extents) in pieces.iter().zip(&answers) {
            // A node's answer must cover its piece exactly; a short or long
            // one would shift every extent after it.
            let covered: u64 = extents.iter().map(|e| u64::from(e.len)).sum();
            if covered != u64::from(piece.len) || extents.iter().any(|e| e.len == 0) {
                return Err(ClientError::Unexpected(format!(
                    "extents of chunk {} cover {covered} bytes of {}",
                    piece.chunk, piece.len
                )));
            }
            for extent in extents {
                match out.last_mut() {
                    Some(last) if last.data == extent.data => last.len += u64::from(extent.len),
                    _ => out.push(VolumeExtent { len: u64::from(extent.len), data: extent.data }),
                }
            }
        }
        Ok(out)
    }

    /// The byte ranges that differ between snapshot `from` (`None`: an
    /// empty volume, so every written range) and snapshot `to` (`None`: the
    /// volume now), ascending, adjacent ones merged. Chunks not written
    /// since `from` cost the nodes no data read (module `snaps` of
    /// chuyi-storage-node); a few chunks are asked at a time.
    pub async fn diff(&self, from: Option<u32>, to: Option<u32>) -> Result<Vec<(u64, u64)>, ClientError> {
        use futures::{StreamExt, TryStreamExt};
        let chunk_size = u64::from(self.volume.chunk_size_bytes);
        let chunks = self.volume.size_bytes.div_ceil(chunk_size);
        let owner = self.volume.id;
        let asks = futures::stream::iter((0..chunks).map(|index| async move {
            let op = PgOp::Diff { from, to };
            match self.cluster.chunk_call(ChunkId::new(owner, index), op, Bytes::new()).await? {
                (ChunkResponse::Extents { extents }, _) => Ok((index, extents)),
                (other, _) => Err(ClientError::Unexpected(format!("{other:?}"))),
            }
        }));
        let answers: Vec<(u64, Vec<Extent>)> = asks.buffered(EXTENTS_IN_FLIGHT).try_collect().await?;
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for (index, extents) in answers {
            let mut at = index * chunk_size;
            for extent in extents {
                let len = u64::from(extent.len).min(self.volume.size_bytes.saturating_sub(at));
                if extent.data && len > 0 {
                    match ranges.last_mut() {
                        Some((start, run)) if *start + *run == at => *run += len,
                        _ => ranges.push((at, len)),
                    }
                }
                at += u64::from(extent.len);
            }
        }
        Ok(ranges)
    }

    pub async fn flush(&self) -> Result<(), ClientError> {
        self.cluster.flush(self.fence.as_ref()).await
    }

    fn pieces(&self, offset: u64, len: u64) -> Result<Vec<Piece>, ClientError> {
        let size = self.volume.size_bytes;
        let end = offset.checked_add(len).filter(|&e| e <= size);
        let Some(end) = end else {
            let end = offset.saturating_add(len);
            return Err(ClientError::OutOfRange { volume: self.volume.name.clone(), offset, end, size });
        };
        Ok(split(self.volume.id, u64::from(self.volume.chunk_size_bytes), offset, end))
    }
}

fn split(owner: u64, chunk_size: u64, offset: u64, end: u64) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut at = offset;
    while at < end {
        let index = at / chunk_size;
        let within = at % chunk_size;
        let len = (chunk_size - within).min(end - at);
        pieces.push(Piece {
            chunk: ChunkId::new(owner, index),
            offset: within as u32,
            len: len as u32,
            at: (at - offset) as usize,
        });
        at += len;
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_cuts_at_chunk_boundaries() {
        let mib = 1 << 20;
        let pieces = split(9, 4 * mib, 4 * mib - 4096, 4 * mib + 8192);
        assert_eq!(
            pieces,
            vec![
                Piece { chunk: ChunkId::new(9, 0), offset: (4 * mib - 4096) as u32, len: 4096, at: 0 },
                Piece { chunk: ChunkId::new(9, 1), offset: 0, len: 8192, at: 4096 },
            ]
        );
        assert!(split(9, 4 * mib, 100, 100).is_empty());
        assert_eq!(split(9, 4 * mib, 0, 12 * mib).len(), 3);
    }
}
