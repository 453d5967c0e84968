//! The chunk service: RPC requests in, chunk store calls out.

use std::sync::Arc;

use bytes::Bytes;
use chuyi_common::credential::Principal;
use chuyi_common::ids::NodeId;
use chuyi_common::ids::SNAP_SEQ_MAX;
use chuyi_common::limits::{LIST_CHUNKS_PAGE_MAX, OWNER_IO_ASK_MAX, RAISE_FENCES_MAX};
use chuyi_common::proto::chunk::{ChunkRequest, ChunkResponse, DiskRequest, NodeReport, PgOp};
use chuyi_common::rpc::Service;

use crate::access;
use crate::in_flight::to_completion;
use crate::owner_io::{self, OwnerIo};
use crate::recovery::Recovery;
use crate::replication::{ReplicationError, Replicator, Sender};
use crate::store::{ChunkStore, StoreError};

/// Serves one node's [`ChunkStore`] over the RPC layer: the replicated PG
/// operations through the [`Replicator`], the raw per-disk ones directly.
#[derive(Debug)]
pub struct ChunkService {
    repl: Arc<Replicator>,
    recovery: Arc<Recovery>,
    /// Where the node learns which snapshots live, before trimming clones:
    /// never from the request, so no caller can have a live snapshot's
    /// clones dropped.
    meta: Option<chuyi_meta_api::client::MetaClient>,
    owner_io: Arc<OwnerIo>,
}

impl ChunkService {
    pub fn new(
        repl: Arc<Replicator>,
        recovery: Arc<Recovery>,
        meta: Option<chuyi_meta_api::client::MetaClient>,
    ) -> Self {
        Self { repl, recovery, meta, owner_io: Arc::default() }
    }

    async fn replicated(
        &self,
        request: ChunkRequest,
        payload: Bytes,
    ) -> Result<(ChunkResponse, Bytes), ReplicationError> {
        match request {
            ChunkRequest::Pg { chunk, epoch, op, forwarded, fence, order } => {
                let sender = Sender::of(forwarded, order)?;
                let read = matches!(op, PgOp::Read { .. } | PgOp::Extents { .. });
                // A client's request is counted once served; a mutation
                // inside the task that finishes it even if the caller goes.
                let io = if forwarded { None } else { owner_io::io_of(&op, payload.len()) };
                if read {
                    let served = self.repl.pg_op(chunk, epoch, op, sender, fence, payload).await;
                    if let (Ok(_), Some(io)) = (&served, io) {
                        self.owner_io.count(chunk.owner, io, self.owner_io.now_ms());
                    }
                    return served;
                }
                let (repl, counter) = (self.repl.clone(), io.map(|io| (self.owner_io.clone(), io)));
                to_completion(async move {
                    let served = repl.pg_op(chunk, epoch, op, sender, fence, payload).await;
                    if let (Ok(_), Some((owner_io, io))) = (&served, counter) {
                        owner_io.count(chunk.owner, io, owner_io.now_ms());
                    }
                    served
                })
                .await
            }
            // Boxed: PG I/O is the hot path, and its future would
            // otherwise be as large as the largest of the rest, and be
            // copied whole at every level of every read.
            other => Box::pin(self.control(other, payload)).await,
        }
    }

    /// Everything but PG I/O: fences, clone trimming, flushes, PG sums,
    /// status and owner I/O reports, and through [`Self::run`] pings,
    /// disk stats and the node's disks themselves.
    async fn control(&self, request: ChunkRequest, payload: Bytes) -> Result<(ChunkResponse, Bytes), ReplicationError> {
        match request {
            ChunkRequest::RaiseFences { fences } => {
                if fences.len() > RAISE_FENCES_MAX {
                    let problem = format!("{} fences in one request; at most {RAISE_FENCES_MAX}", fences.len());
                    return Err(ReplicationError::Invalid(problem));
                }
                if let Some(f) = fences.iter().find(|f| f.snap > SNAP_SEQ_MAX) {
                    return Err(ReplicationError::Invalid(format!("snap sequence {} past {SNAP_SEQ_MAX}", f.snap)));
                }
                let repl = self.repl.clone();
                to_completion(async move { repl.fences().raise(&fences).await.map_err(ReplicationError::from) })
                    .await?;
                Ok((ChunkResponse::Done, Bytes::new()))
            }
            ChunkRequest::TrimClones { owner } => {
                let Some(meta) = &self.meta else {
                    return Err(ReplicationError::Invalid("this node has no metadata service to ask".into()));
                };
                // Read now: a snapshot taken after this read has a newer
                // sequence than `upto`, and its clones are left alone.
                let snapshots = meta
                    .ask(chuyi_meta_api::ask::SnapshotsOf(owner))
                    .await
                    .map_err(|e| ReplicationError::Invalid(format!("the volume's snapshots: {e}")))?;
                let (live, upto) = (snapshots.live(), snapshots.seq);
                let store = self.repl.store().clone();
                let removed = to_completion(async move {
                    let mut removed = 0;
                    for disk in store.disks() {
                        removed += disk.trim_clones(owner, &live, upto).await?;
                    }
                    Ok::<_, StoreError>(removed)
                })
                .await?;
                tracing::info!(owner = format_args!("{owner:016x}"), removed, "trimmed snapshot clones");
                Ok((ChunkResponse::Done, Bytes::new()))
            }
            ChunkRequest::Flush { fence: Some(f), disk } => {
                self.repl.fences().admit(f.owner, Some(f.token)).await?;
                Ok(self.run(ChunkRequest::Flush { disk, fence: None }, payload).await?)
            }
            ChunkRequest::PgSums { pg, epoch, start_after, max } => {
                self.repl.pg_sums(pg, epoch, start_after, max).await
            }
            ChunkRequest::NodeStatus => {
                let (backfills_done, backfill_bytes) = self.recovery.totals();
                let report = NodeReport {
                    node: self.repl.node_id(),
                    recoveries: self.recovery.progress(),
                    scrub: self.repl.counters().snapshot(),
                    backfills_done,
                    backfill_bytes,
                };
                Ok((ChunkResponse::Status(report), Bytes::new()))
            }
            ChunkRequest::OwnerIo { owners } => {
                if owners.len() > OWNER_IO_ASK_MAX {
                    let problem = format!("{} owners in one request; at most {OWNER_IO_ASK_MAX}", owners.len());
                    return Err(ReplicationError::Invalid(problem));
                }
                Ok((ChunkResponse::OwnerIo(self.owner_io.report(&owners)), Bytes::new()))
            }
            other => Ok(self.run(other, payload).await?),
        }
    }

    /// Runs a request to completion even if the caller stops waiting (the
    /// RPC layer aborts a connection's requests when it breaks, and every
    /// request at shutdown). Reads are safe to abandon; a mutation is not
    /// ([`to_completion`] says why), so mutations get a task of their own.
    async fn run(&self, request: ChunkRequest, payload: Bytes) -> Result<(ChunkResponse, Bytes), StoreError> {
        let read_only = matches!(
            request,
            ChunkRequest::Ping
                | ChunkRequest::DiskStats
                | ChunkRequest::Disk(DiskRequest::Read { .. } | DiskRequest::ListChunks { .. })
        );
        if read_only {
            return handle(self.repl.store(), self.repl.node_id(), request, payload).await;
        }
        let (store, node_id) = (self.repl.store().clone(), self.repl.node_id());
        to_completion(async move { handle(&store, node_id, request, payload).await }).await
    }
}

async fn handle(
    store: &ChunkStore,
    node_id: NodeId,
    request: ChunkRequest,
    payload: Bytes,
) -> Result<(ChunkResponse, Bytes), StoreError> {
    let done = Ok((ChunkResponse::Done, Bytes::new()));
    match request {
        ChunkRequest::Ping => Ok((ChunkResponse::Pong { node: node_id }, Bytes::new())),
        ChunkRequest::Disk(op) => disk_op(store, op, payload).await,
        ChunkRequest::Flush { disk: Some(disk), .. } => {
            store.disk(disk)?.sync().await?;
            done
        }
        ChunkRequest::Flush { disk: None, .. } => {
            for disk in store.disks() {
                disk.sync().await?;
            }
            done
        }
        ChunkRequest::DiskStats => Ok((ChunkResponse::Disks { disks: store.stats() }, Bytes::new())),
        ChunkRequest::Pg { .. }
        | ChunkRequest::PgSums { .. }
        | ChunkRequest::NodeStatus
        | ChunkRequest::RaiseFences { .. }
        | ChunkRequest::OwnerIo { .. }
        | ChunkRequest::TrimClones { .. } => {
            Err(StoreError::Internal("a replicated request reached the raw path".into()))
        }
    }
}

/// A raw operation on one disk: the chunk store's own call.
async fn disk_op(store: &ChunkStore, op: DiskRequest, payload: Bytes) -> Result<(ChunkResponse, Bytes), StoreError> {
    let done = Ok((ChunkResponse::Done, Bytes::new()));
    match op {
        DiskRequest::Write { disk, chunk, offset, fua } => {
            store.disk(disk)?.write(chunk, offset.into(), payload, fua).await?;
            done
        }
        DiskRequest::Read { disk, chunk, offset, len } => {
            let (data, allocated) = store.disk(disk)?.read(chunk, offset.into(), len.into()).await?;
            Ok((ChunkResponse::ReadDone { allocated }, data))
        }
        DiskRequest::Trim { disk, chunk, offset, len } => {
            store.disk(disk)?.zero(chunk, offset.into(), len.into(), false).await?;
            done
        }
        DiskRequest::WriteZeroes { disk, chunk, offset, len, fua } => {
            store.disk(disk)?.zero(chunk, offset.into(), len.into(), fua).await?;
            done
        }
        DiskRequest::DeleteChunk { disk, chunk } => {
            store.disk(disk)?.delete(chunk).await?;
            done
        }
        DiskRequest::ListChunks { disk, start_after, max } => {
            let (chunks, more) = store.disk(disk)?.list(start_after, max.min(LIST_CHUNKS_PAGE_MAX) as usize);
            Ok((ChunkResponse::Chunks { chunks, more }, Bytes::new()))
        }
    }
}

impl Service for ChunkService {
    type Request = ChunkRequest;
    type Response = ChunkResponse;

    async fn call(&self, caller: &Principal, request: ChunkRequest, payload: Bytes) -> (ChunkResponse, Bytes) {
        if let Err(refused) = access::check(caller, &request) {
            tracing::warn!(%caller, error = %refused, "refused a request outside the caller's role");
            return (ChunkResponse::Error(refused), Bytes::new());
        }
        match self.replicated(request, payload).await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::debug!(error = %e, "chunk request failed");
                (ChunkResponse::Error(e.into()), Bytes::new())
            }
        }
    }
}
