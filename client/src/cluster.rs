//! A connection to a cluster: the metadata service, the cached data map and
//! the storage nodes, with the retry loop every chunk operation goes
//! through.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chuyi_common::clock;

use bytes::Bytes;
use chuyi_common::credential::{Credential, Door};
use chuyi_common::ids::{ChunkId, NodeId};
use chuyi_common::map::{DataMap, Replica};
use chuyi_common::proto::chunk::{ChunkError, ChunkErrorKind, ChunkRequest, ChunkResponse, Extent, PgOp, VolumeFence};
use chuyi_common::rpc::{ConnPool, RpcConfig, RpcError};
use chuyi_meta_api::ask;
use chuyi_meta_api::client::MetaClient;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::error::ClientError;
use crate::fence::WriteFence;
use crate::metrics::{RetryReason, RETRIES};
use crate::volume::VolumeIo;

/// How long one map watch waits for a newer epoch before asking again.
const MAP_WATCH: Duration = Duration::from_secs(5);
/// Clones of clones read through at most this many parents.
const CLONE_DEPTH_MAX: usize = 16;
/// The longest pause between two tries of one operation.
const BACKOFF_MAX: Duration = Duration::from_millis(500);

#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// How long an operation keeps retrying (through a failover, which
    /// takes the metadata service's heartbeat timeout plus a moment).
    pub deadline: Duration,
    /// How long one call to a storage node may take.
    pub call_timeout: Duration,
    /// Addresses to reach nodes at instead of the map's (a client on
    /// another network than the nodes' advertised addresses).
    pub node_addrs: HashMap<NodeId, Vec<String>>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self { deadline: Duration::from_secs(30), call_timeout: Duration::from_secs(10), node_addrs: HashMap::new() }
    }
}

type Nodes = ConnPool<NodeId, ChunkRequest, ChunkResponse>;

/// A cluster connection. Cheap to share (`Arc`); every operation may run
/// concurrently with any other.
#[derive(Debug)]
pub struct Cluster {
    meta: MetaClient,
    map: watch::Sender<Arc<DataMap>>,
    nodes: Nodes,
    config: ClientConfig,
    watcher: AbortHandle,
}

/// Why one try failed and another is worth making.
enum Retry {
    /// Try the next replica at once (a read that can go elsewhere).
    NextReplica(String),
    /// Wait for a newer map, or a while.
    Later(String),
    /// This replica's copy is bad and could not be mended: try the others.
    BadCopy(NodeId, ChunkError),
}

/// What a node's refusal of a PG operation means for the client.
#[derive(Debug, PartialEq, Eq)]
enum Choice {
    /// The PG moved or is moving: wait for a newer map.
    Later,
    /// The node or its disk failed this once: try again (another replica,
    /// for a read that has one).
    Again,
    /// This replica's copy of a block is bad: read another copy.
    OtherCopy,
    /// Retrying cannot help: the request itself is refused.
    GiveUp,
}

/// Whether any complete replica answers `op`, so that a try may move to
/// another one (a read, of the volume or of a snapshot); else only the
/// primary does.
fn any_copy_answers(op: &PgOp) -> bool {
    match op {
        PgOp::Read { .. } | PgOp::ReadSnap { .. } | PgOp::Extents { .. } | PgOp::Diff { .. } => true,
        // Between nodes only.
        PgOp::ReadRaw { .. } => false,
        PgOp::Write { .. }
        | PgOp::Zero { .. }
        | PgOp::Rollback { .. }
        | PgOp::Install
        | PgOp::Delete
        | PgOp::Poison { .. }
        | PgOp::Stamp { .. } => false,
    }
}

/// The choice for a refusal of `kind`, of a read or of a write. Every kind
/// is named, so a new one needs a decision here.
fn choice(kind: ChunkErrorKind, read: bool) -> Choice {
    match kind {
        ChunkErrorKind::StaleEpoch | ChunkErrorKind::EpochAhead | ChunkErrorKind::WrongNode => Choice::Later,
        ChunkErrorKind::ReplicaFailed | ChunkErrorKind::DiskFailed | ChunkErrorKind::Io => Choice::Again,
        ChunkErrorKind::Checksum if read => Choice::OtherCopy,
        ChunkErrorKind::Checksum
        | ChunkErrorKind::NoSuchDisk
        | ChunkErrorKind::OutOfRange
        | ChunkErrorKind::InvalidArgument
        | ChunkErrorKind::NoSpace
        | ChunkErrorKind::Fenced
        | ChunkErrorKind::Forbidden
        // Only a raw block read between nodes answers it.
        | ChunkErrorKind::NoChunk
        // The volume's writer fetches the new sequence and sends again
        // (`VolumeIo`): this request, as built, cannot succeed.
        | ChunkErrorKind::SnapStale => Choice::GiveUp,
    }
}

impl Cluster {
    /// Connects to the metadata service at `members`, fetches the map and
    /// starts following it; calls as `credential`'s principal.
    pub async fn connect(
        members: Vec<String>,
        credential: &Credential,
        config: ClientConfig,
    ) -> Result<Arc<Self>, ClientError> {
        let meta = MetaClient::new(members.clone(), credential)?;
        let first = meta.ask(ask::Map).await?.data_map();
        let (map, _) = watch::channel(Arc::new(first));
        let watcher = MetaClient::new(members, credential)?.with_deadline(MAP_WATCH * 2);
        let follow = tokio::spawn(follow(watcher, map.clone()));
        let rpc = RpcConfig { call_timeout: config.call_timeout, ..RpcConfig::default() };
        Ok(Arc::new(Self {
            meta,
            map,
            nodes: ConnPool::dropping_timed_out(credential.identity(Door::Node), rpc),
            config,
            watcher: follow.abort_handle(),
        }))
    }

    pub fn meta(&self) -> &MetaClient {
        &self.meta
    }

    /// The newest map this client has.
    pub fn map(&self) -> Arc<DataMap> {
        self.map.borrow().clone()
    }

    /// Opens a volume for I/O. Attach leases are the frontend's business:
    /// this only reads the volume's shape.
    pub async fn open_volume(self: &Arc<Self>, name: &str) -> Result<VolumeIo, ClientError> {
        self.open_chain(name, CLONE_DEPTH_MAX).await
    }

    /// A volume and, for a clone, its parents up to `depth` deep.
    async fn open_chain(self: &Arc<Self>, name: &str, depth: usize) -> Result<VolumeIo, ClientError> {
        let volume = self.meta.ask(ask::Volume(name.to_string())).await?;
        let snapshots = self.meta.ask(ask::Snapshots(name.to_string())).await?;
        let io = VolumeIo::new(self.clone(), volume, snapshots.seq);
        let Some(parent) = snapshots.parent else { return Ok(io) };
        if depth == 0 {
            return Err(ClientError::Unexpected(format!("volume {name} is a clone {CLONE_DEPTH_MAX} levels deep")));
        }
        // A clone's parent cannot be deleted before it is flattened, and
        // may be a clone itself; the owner tells a volume of the same name
        // made since from the one the clone reads.
        let parent_io = Box::pin(self.open_chain(&parent.volume, depth - 1)).await?;
        if parent_io.volume().id != parent.owner {
            return Err(ClientError::Unexpected(format!(
                "volume {name} is a clone of {}@{}, which is not the volume of that name now",
                parent.volume, parent.snapshot
            )));
        }
        Ok(io.with_parent(parent_io.at_snapshot(parent.snap)))
    }

    /// Writes `data` at `offset` of a chunk (object data, or a volume's
    /// piece), on every replica.
    pub async fn write_chunk(&self, chunk: ChunkId, offset: u32, data: Bytes, fua: bool) -> Result<(), ClientError> {
        self.chunk_call(chunk, PgOp::Write { offset, fua, snap: 0 }, data).await.map(drop)
    }

    /// Reads `len` bytes at `offset` of a chunk; never-written bytes are zeros.
    pub async fn read_chunk(&self, chunk: ChunkId, offset: u32, len: u32) -> Result<Bytes, ClientError> {
        let (_, data) = self.chunk_call(chunk, PgOp::Read { offset, len }, Bytes::new()).await?;
        Ok(data)
    }

    /// A read (`Read` or `ReadSnap`): whether the chunk exists (existed
    /// then), and the bytes.
    pub async fn read_op(&self, chunk: ChunkId, op: PgOp) -> Result<(bool, Bytes), ClientError> {
        match self.chunk_call(chunk, op, Bytes::new()).await? {
            (ChunkResponse::ReadDone { allocated }, data) => Ok((allocated, data)),
            (other, _) => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Which bytes of `[offset, offset + len)` of a chunk hold data.
    pub async fn chunk_extents(&self, chunk: ChunkId, offset: u32, len: u32) -> Result<Vec<Extent>, ClientError> {
        match self.chunk_call(chunk, PgOp::Extents { offset, len }, Bytes::new()).await? {
            (ChunkResponse::Extents { extents }, _) => Ok(extents),
            (other, _) => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Removes a chunk from every replica, freeing its space; a volume's
    /// chunk under the deleting writer's `fence`.
    pub async fn delete_chunk(&self, chunk: ChunkId, fence: Option<&WriteFence>) -> Result<(), ClientError> {
        self.chunk_call_fenced(chunk, PgOp::Delete, Bytes::new(), fence).await.map(drop)
    }

    /// Makes every acknowledged write stable on every replica: each node
    /// the map has up flushes all its disks. A volume's writer names its
    /// `fence`, and a node that knows a newer writer refuses (`Chunk` with
    /// kind `Fenced`).
    pub async fn flush(&self, fence: Option<&WriteFence>) -> Result<(), ClientError> {
        let request = ChunkRequest::Flush { disk: None, fence: fence.map(WriteFence::volume_fence) };
        let gate = fence.map(|f| &f.gate);
        let timeout = |last| ClientError::FlushTimeout { deadline: self.config.deadline, last };
        self.on_every_node(&request, gate, timeout).await
    }

    /// Raises the fence of `fence.owner` to `fence.token` on every node the
    /// map has up, before a new writer's first request: from then on every
    /// node refuses the volume's older writers. A node that cannot be told
    /// is waited for until the map has it down (its replicas are then
    /// backfilled, fences first, before they serve again) or the deadline.
    pub async fn raise_fence(&self, fence: VolumeFence) -> Result<(), ClientError> {
        let request = ChunkRequest::RaiseFences { fences: vec![fence] };
        let deadline = self.config.deadline;
        let timeout = |last| ClientError::FenceNotRaised { owner: fence.owner, deadline, last };
        self.on_every_node(&request, None, timeout).await
    }

    /// Has every node the map has up drop the clones of volume `owner`
    /// that no live snapshot reads, each asking the metadata service which
    /// live (a node down now trims at the next snapshot delete, and
    /// backfill copies a primary's clones only).
    pub async fn trim_clones(&self, owner: u64) -> Result<(), ClientError> {
        let request = ChunkRequest::TrimClones { owner };
        let deadline = self.config.deadline;
        let timeout = |last| ClientError::FenceNotRaised { owner, deadline, last };
        self.on_every_node(&request, None, timeout).await
    }

    /// Sends `request` to every node the map has up until each has
    /// answered `Done`, retrying the others with newer maps until the
    /// deadline. A `Fenced` refusal ends it at once.
    async fn on_every_node(
        &self,
        request: &ChunkRequest,
        gate: Option<&Arc<dyn chuyi_common::rpc::SendGate>>,
        timeout: impl Fn(String) -> ClientError,
    ) -> Result<(), ClientError> {
        let deadline = clock::now() + self.config.deadline;
        let mut backoff = Duration::from_millis(20);
        let mut done: Vec<NodeId> = Vec::new();
        loop {
            let map = self.map();
            let todo = map.nodes.iter().filter(|n| n.up && !done.contains(&n.id));
            let calls = todo.map(|node| async {
                let reply = self.nodes.call_gated(node.id, self.addrs(&map, node.id), request, Bytes::new(), gate);
                (node.id, reply.await)
            });
            let mut last = None;
            for (node, reply) in futures::future::join_all(calls).await {
                match reply {
                    Ok((ChunkResponse::Done, _)) => done.push(node),
                    Ok((ChunkResponse::Error(e), _)) if e.kind == ChunkErrorKind::Fenced => {
                        return Err(ClientError::Fenced { node, error: e });
                    }
                    Err(RpcError::Gated) => return Err(ClientError::LeaseLost),
                    Ok((other, _)) => last = Some(format!("node {node} answered {other:?}")),
                    Err(e) => last = Some(format!("node {node}: {e}")),
                }
            }
            let Some(last) = last else { return Ok(()) };
            if clock::now() >= deadline {
                RETRIES.gave_up();
                return Err(timeout(last));
            }
            RETRIES.retried(RetryReason::NewerMap);
            self.newer_map(map.epoch, backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Sends one PG operation on `chunk` to the replica that should serve
    /// it, retrying through epoch changes and failovers until the deadline.
    pub async fn chunk_call(
        &self,
        chunk: ChunkId,
        op: PgOp,
        payload: Bytes,
    ) -> Result<(ChunkResponse, Bytes), ClientError> {
        self.chunk_call_fenced(chunk, op, payload, None).await
    }

    /// [`Self::chunk_call`] for a volume's writer: the request carries its
    /// token, and no try is sent once its gate has closed.
    pub async fn chunk_call_fenced(
        &self,
        chunk: ChunkId,
        op: PgOp,
        payload: Bytes,
        fence: Option<&WriteFence>,
    ) -> Result<(ChunkResponse, Bytes), ClientError> {
        let deadline = clock::now() + self.config.deadline;
        let mut backoff = Duration::from_millis(10);
        let mut replica_turn = 0usize;
        let mut switched = false;
        let mut bad_copies: Vec<NodeId> = Vec::new();
        loop {
            let map = self.map();
            let retry = match self.try_once(&map, chunk, &op, &payload, replica_turn, fence).await {
                Ok(reply) => return Ok(reply),
                Err(Err(fatal)) => return Err(fatal),
                Err(Ok(retry)) => retry,
            };
            // A read may switch to another replica at once, but only once
            // in a row: then it waits like everything else.
            let bad_copy = matches!(retry, Retry::BadCopy(..));
            let (last, wait) = match retry {
                Retry::NextReplica(last) => {
                    replica_turn += 1;
                    switched = !switched;
                    (last, !switched)
                }
                Retry::Later(last) => (last, true),
                Retry::BadCopy(node, error) => {
                    bad_copies.push(node);
                    let complete = map.locate(chunk).map(|(_, pg)| pg.complete().map(|r| r.node).collect::<Vec<_>>());
                    if complete.unwrap_or_default().iter().all(|n| bad_copies.contains(n)) {
                        return Err(ClientError::Chunk { chunk, error });
                    }
                    replica_turn += 1;
                    (format!("node {node}: {error}"), false)
                }
            };
            if clock::now() >= deadline {
                RETRIES.gave_up();
                return Err(ClientError::Timeout { chunk, deadline: self.config.deadline, last });
            }
            RETRIES.retried(match (bad_copy, wait) {
                (true, _) => RetryReason::BadCopy,
                (false, true) => RetryReason::NewerMap,
                (false, false) => RetryReason::NextReplica,
            });
            tracing::debug!(%chunk, epoch = map.epoch, %last, "retrying");
            if wait {
                self.newer_map(map.epoch, backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }

    /// One try: `Ok` is the answer, `Err(Ok)` a reason to retry, `Err(Err)`
    /// an error retrying cannot fix.
    async fn try_once(
        &self,
        map: &DataMap,
        chunk: ChunkId,
        op: &PgOp,
        payload: &Bytes,
        replica_turn: usize,
        fence: Option<&WriteFence>,
    ) -> Result<(ChunkResponse, Bytes), Result<Retry, ClientError>> {
        let read = any_copy_answers(op);
        let Some((pg, pg_map)) = map.locate(chunk) else {
            return Err(Ok(Retry::Later(format!("the map (epoch {}) has no pool for chunk {chunk}", map.epoch))));
        };
        let targets: Vec<Replica> =
            if read { pg_map.complete().collect() } else { pg_map.primary().into_iter().collect() };
        let Some(&target) = targets.get(replica_turn % targets.len().max(1)) else {
            return Err(Ok(Retry::Later(format!("PG {pg} has no replica to serve it"))));
        };
        let addrs = self.addrs(map, target.node);
        let token = fence.map(|f| f.token);
        let request = ChunkRequest::Pg {
            chunk,
            epoch: pg_map.epoch,
            op: op.clone(),
            forwarded: false,
            fence: token,
            order: None,
        };
        let gate = fence.map(|f| &f.gate);
        let elsewhere = read && targets.len() > 1;
        let retry = |why: String| Err(Ok(if elsewhere { Retry::NextReplica(why) } else { Retry::Later(why) }));
        // A call to a node that froze or died is dropped as soon as the map
        // moves the PG: no need to wait for the call's timeout.
        let moved = async {
            let mut maps = self.map.subscribe();
            let _ = maps.wait_for(|m| m.locate(chunk).is_some_and(|(_, p)| p.epoch != pg_map.epoch)).await;
        };
        let reply = tokio::select! {
            reply = self.nodes.call_gated(target.node, addrs, &request, payload.clone(), gate) => reply,
            () = moved => return Err(Ok(Retry::Later(format!("PG {pg} moved while node {} had the call", target.node)))),
        };
        match reply {
            Ok((ChunkResponse::Error(e), _)) => match choice(e.kind, read) {
                Choice::Later => Err(Ok(Retry::Later(format!("node {}: {e}", target.node)))),
                Choice::Again => retry(format!("node {}: {e}", target.node)),
                Choice::OtherCopy => Err(Ok(Retry::BadCopy(target.node, e))),
                Choice::GiveUp => Err(Err(ClientError::Chunk { chunk, error: e })),
            },
            Ok(reply) => Ok(reply),
            Err(RpcError::Gated) => Err(Err(ClientError::LeaseLost)),
            // The pool has dropped the connection if it closed or the call
            // timed out, so a retry to this node connects anew.
            Err(e) => retry(format!("node {}: {e}", target.node)),
        }
    }

    fn addrs<'a>(&'a self, map: &'a DataMap, node: NodeId) -> &'a [String] {
        match self.config.node_addrs.get(&node) {
            Some(addrs) => addrs,
            None => map.node(node).map(|n| n.addrs.as_slice()).unwrap_or_default(),
        }
    }

    /// Waits up to `wait` for a map newer than `epoch`.
    async fn newer_map(&self, epoch: u64, wait: Duration) {
        let mut rx = self.map.subscribe();
        let _ = tokio::time::timeout(wait, rx.wait_for(|m| m.epoch > epoch)).await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Long-polls the metadata service for each newer map.
async fn follow(meta: MetaClient, map: watch::Sender<Arc<DataMap>>) {
    loop {
        let known = map.borrow().epoch;
        match meta.watch_map(known, MAP_WATCH).await {
            Ok(new) if new.epoch > known => {
                tracing::debug!(epoch = new.epoch, "client took a new map");
                map.send_replace(Arc::new(new.data_map()));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "map watch failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_read_may_go_to_another_copy_and_nothing_else() {
        let snap = 1;
        for op in [
            PgOp::Read { offset: 0, len: 4096 },
            PgOp::ReadSnap { offset: 0, len: 4096, snap },
            PgOp::Extents { offset: 0, len: 4096 },
            PgOp::Diff { from: Some(1), to: None },
        ] {
            assert!(any_copy_answers(&op), "{op:?}");
        }
        for op in [
            PgOp::Write { offset: 0, fua: false, snap },
            PgOp::Zero { offset: 0, len: 4096, fua: false, snap },
            PgOp::Rollback { to: 1, snap },
            PgOp::Install,
            PgOp::Delete,
            PgOp::ReadRaw { offset: 0 },
            PgOp::Poison { offset: 0, len: 4096 },
            PgOp::Stamp { seq: 1, born: 0 },
        ] {
            assert!(!any_copy_answers(&op), "{op:?}");
        }
    }

    #[test]
    fn refusals_are_waited_out_retried_or_reported() {
        for read in [true, false] {
            for kind in [ChunkErrorKind::StaleEpoch, ChunkErrorKind::EpochAhead, ChunkErrorKind::WrongNode] {
                assert_eq!(choice(kind, read), Choice::Later, "{kind:?}");
            }
            for kind in [ChunkErrorKind::ReplicaFailed, ChunkErrorKind::DiskFailed, ChunkErrorKind::Io] {
                assert_eq!(choice(kind, read), Choice::Again, "{kind:?}");
            }
            // A newer writer, a role that may not, a request out of range:
            // no retry makes them succeed, and a fenced writer must stop.
            for kind in [
                ChunkErrorKind::Fenced,
                ChunkErrorKind::Forbidden,
                ChunkErrorKind::OutOfRange,
                ChunkErrorKind::InvalidArgument,
                ChunkErrorKind::NoSpace,
                ChunkErrorKind::NoSuchDisk,
            ] {
                assert_eq!(choice(kind, read), Choice::GiveUp, "{kind:?}");
            }
        }
        assert_eq!(choice(ChunkErrorKind::Checksum, true), Choice::OtherCopy);
        assert_eq!(choice(ChunkErrorKind::Checksum, false), Choice::GiveUp);
    }
}
