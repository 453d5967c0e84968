//! Primary-backup replication of a PG's chunks, fenced by epoch.
//!
//! A client sends a write to the PG's primary. The primary holds the
//! written range ([`locks`]), writes locally and forwards to every other
//! replica at once (recovering ones included, so backfill never chases a
//! moving target), and acknowledges only when all have it; with FUA, when
//! all have it on stable storage. Every request carries the PG epoch of the
//! sender's map. A node refuses an older epoch (`StaleEpoch`), so a primary
//! that was frozen or cut off cannot get a write acknowledged once the
//! metadata service has moved the PG: its forward is refused by a replica
//! that knows the new map. A node whose own map is older waits briefly for
//! the newer one, then answers `EpochAhead`.
//!
//! Every mutation is also judged by the volume's fence ([`crate::fence`])
//! under the chunk's range lock, on the primary and on every replica, so a
//! writer that lost its volume cannot change it even with requests still
//! queued from before.
//!
//! A read that finds a bad block is served from another complete replica,
//! and the block is rewritten from it (read repair). A block that is bad
//! on both is mended from the two copies where they show what it was
//! ([`torn`]: a crash of both replicas in the middle of one write).

pub mod locks;
pub mod order;
pub mod peers;
pub mod torn;
pub mod view;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chuyi_common::clock::{self, Instant};

use bytes::Bytes;
use chuyi_common::checksum::crc32c;
use chuyi_common::ids::{ChunkId, NodeId, SNAPSHOT_INDEX_MAX, SNAP_SEQ_MAX};
use chuyi_common::limits::{BLOCK_SIZE_BYTES, PG_SUMS_PAGE_MAX};
use chuyi_common::map::{DataMap, PgId, PgMap, Replica};
use chuyi_common::proto::chunk::{
    ChunkError, ChunkErrorKind, ChunkRequest, ChunkResponse, ChunkSums, ForwardOrder, PgOp, ScrubCounters, Stamp,
};

use self::locks::RangeLocks;
use self::order::{Inbound, Outbound};
use self::peers::Peers;
use self::view::MapView;
use crate::fence::{FenceError, Fences};
use crate::in_flight::{to_completion, InFlight};
use crate::store::disk::poisoned_crc;
use crate::store::{snaps, ChunkStore, DiskStore, StoreError};

/// How long a request from a sender with a newer map waits for this node's
/// map to catch up.
const MAP_CATCH_UP: Duration = Duration::from_secs(2);
/// A forwarded write still waiting for its range after this long is
/// dropped: its primary gives up at 5 s (`peers.rs`).
const FORWARD_WAIT_MAX: Duration = Duration::from_secs(4);

const BLOCK: u64 = BLOCK_SIZE_BYTES as u64;

/// Why a replicated operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fence(#[from] FenceError),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("PG {pg} is at epoch {ours} here; the request used {theirs}")]
    StaleEpoch { pg: PgId, ours: u64, theirs: u64 },
    #[error("this node's map is behind: PG {pg} at epoch {ours}, the request used {theirs}")]
    EpochAhead { pg: PgId, ours: u64, theirs: u64 },
    #[error("pool {pool} is not in this node's map")]
    UnknownPool { pool: u32 },
    #[error("node {node} is not {role} of PG {pg} at epoch {epoch}")]
    WrongNode { node: NodeId, role: &'static str, pg: PgId, epoch: u64 },
    #[error("replica {replica:?} did not take the write: {message}")]
    ReplicaFailed { replica: Replica, message: String },
    /// A replica refused for a reason the client must see as is (no space,
    /// out of range).
    #[error("replica {replica:?}: {error}")]
    Replica { replica: Replica, error: ChunkError },
}

impl From<ReplicationError> for ChunkError {
    fn from(e: ReplicationError) -> Self {
        let kind = match e {
            ReplicationError::Store(s) => return s.into(),
            ReplicationError::Fence(FenceError::Fenced { .. }) => ChunkErrorKind::Fenced,
            ReplicationError::Fence(FenceError::SnapStale { .. }) => ChunkErrorKind::SnapStale,
            ReplicationError::Fence(
                FenceError::Persist { .. } | FenceError::Damaged { .. } | FenceError::Missing { .. },
            ) => ChunkErrorKind::Io,
            ReplicationError::Invalid(_) => ChunkErrorKind::InvalidArgument,
            ReplicationError::StaleEpoch { .. } => ChunkErrorKind::StaleEpoch,
            ReplicationError::EpochAhead { .. } | ReplicationError::UnknownPool { .. } => ChunkErrorKind::EpochAhead,
            ReplicationError::WrongNode { .. } => ChunkErrorKind::WrongNode,
            ReplicationError::ReplicaFailed { .. } => ChunkErrorKind::ReplicaFailed,
            ReplicationError::Replica { ref error, .. } => error.kind,
        };
        ChunkError { kind, message: e.to_string() }
    }
}

/// The role a request asks of this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Takes a client's write and forwards it.
    Primary,
    /// Takes a forwarded write (recovering replicas included).
    Member,
    /// Serves reads: holds the data.
    Complete,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Primary => "the primary",
            Role::Member => "a replica",
            Role::Complete => "a complete replica",
        }
    }
}

/// Counters shared by read repair and scrub.
#[derive(Debug, Default)]
pub struct RepairCounters {
    pub scrubbed_bytes: AtomicU64,
    pub passes: AtomicU64,
    pub errors: AtomicU64,
    pub repairs: AtomicU64,
}

impl RepairCounters {
    pub fn snapshot(&self) -> ScrubCounters {
        ScrubCounters {
            scrubbed_bytes: self.scrubbed_bytes.load(Ordering::Relaxed),
            passes: self.passes.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            repairs: self.repairs.load(Ordering::Relaxed),
        }
    }
}

/// The writes this node forwarded to other replicas as a PG's primary.
#[derive(Debug, Default)]
pub struct ForwardCounters {
    /// Forwards sent.
    pub sent: AtomicU64,
    /// Forwards the replica failed: an error answer, a timeout, a peer
    /// unreachable (stalls included); not the answers the protocol expects
    /// (a stale epoch, a fence, no space, a bad request).
    pub failed: AtomicU64,
    /// Forwards given up because the PG moved while the replica held the
    /// write (a replica frozen or cut off).
    pub stalled: AtomicU64,
    /// Writes not every copy took (their chunk is then marked for copying;
    /// a chunk written so twice counts twice).
    pub partial: AtomicU64,
}

/// A PG placement checked against the request: the map it was checked in,
/// the PG and this node's replica in it.
#[derive(Clone, Debug)]
pub struct Placed {
    pub map: Arc<DataMap>,
    pub pg: PgId,
    pub pg_map: PgMap,
    pub mine: Replica,
}

/// The replicated data path of one node.
#[derive(Debug)]
pub struct Replicator {
    node_id: NodeId,
    store: Arc<ChunkStore>,
    fences: Arc<Fences>,
    view: MapView,
    peers: Peers,
    locks: RangeLocks,
    counters: RepairCounters,
    forwards: ForwardCounters,
    /// Client operations being served now; recovery yields while any are.
    client_ops: AtomicU64,
    /// Chunks whose copies may differ after a failed write, per PG and
    /// replica: recovery copies them from this primary.
    dirty: Mutex<BTreeSet<(PgId, Replica, ChunkId)>>,
    /// This node's forwards to its peers, numbered, and theirs to it.
    outbound: Outbound,
    inbound: Inbound,
}

type Reply = (ChunkResponse, Bytes);

impl Replicator {
    /// `first_forward` is this start's first forward number
    /// ([`order::first_number`]).
    pub fn new(node_id: NodeId, store: Arc<ChunkStore>, fences: Arc<Fences>, peers: Peers, first_forward: u64) -> Self {
        Self {
            node_id,
            store,
            fences,
            view: MapView::default(),
            peers,
            locks: RangeLocks::default(),
            counters: RepairCounters::default(),
            forwards: ForwardCounters::default(),
            client_ops: AtomicU64::new(0),
            dirty: Mutex::new(BTreeSet::new()),
            outbound: Outbound::new(node_id, first_forward, peers::PEER_CALL_TIMEOUT),
            inbound: Inbound::default(),
        }
    }

    fn mark_dirty(&self, placed: &Placed, chunk: ChunkId) {
        self.forwards.partial.fetch_add(1, Ordering::Relaxed);
        let mut dirty = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
        for &replica in placed.pg_map.replicas.iter().filter(|r| **r != placed.mine) {
            dirty.insert((placed.pg, replica, chunk));
        }
    }

    /// Takes the chunks marked for copying after failed writes.
    pub fn take_dirty(&self) -> BTreeSet<(PgId, Replica, ChunkId)> {
        std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Puts back what could not be copied yet.
    pub fn return_dirty(&self, left: impl IntoIterator<Item = (PgId, Replica, ChunkId)>) {
        self.dirty.lock().unwrap_or_else(|p| p.into_inner()).extend(left);
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn view(&self) -> &MapView {
        &self.view
    }

    pub fn store(&self) -> &Arc<ChunkStore> {
        &self.store
    }

    pub fn fences(&self) -> &Fences {
        &self.fences
    }

    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    pub fn locks(&self) -> &RangeLocks {
        &self.locks
    }

    pub fn forward_counters(&self) -> &ForwardCounters {
        &self.forwards
    }

    pub fn counters(&self) -> &RepairCounters {
        &self.counters
    }

    pub fn client_ops(&self) -> u64 {
        self.client_ops.load(Ordering::Relaxed)
    }

    /// Serves a [`ChunkRequest::Pg`] from `sender`, as [`Sender::of`]
    /// judged it (a forward's order is trusted here).
    pub async fn pg_op(
        self: &Arc<Self>,
        chunk: ChunkId,
        epoch: u64,
        op: PgOp,
        sender: Sender,
        fence: Option<u64>,
        payload: Bytes,
    ) -> Result<Reply, ReplicationError> {
        let arrived = clock::now();
        let forwarded = sender.forwarded();
        let _busy = (!forwarded).then(|| InFlight::start(&self.client_ops));
        let role = match (&op, forwarded) {
            (PgOp::Read { .. } | PgOp::ReadSnap { .. } | PgOp::Extents { .. } | PgOp::Diff { .. }, _) => Role::Complete,
            (PgOp::ReadRaw { .. }, false) => {
                return Err(ReplicationError::Invalid("raw block reads are between nodes only".into()));
            }
            (PgOp::ReadRaw { .. }, true) => Role::Complete,
            (_, false) => Role::Primary,
            (_, true) => Role::Member,
        };
        let placed = self.place(chunk, epoch, role).await?;
        match op {
            PgOp::Read { offset, len } => self.read(&placed, chunk, offset.into(), len.into(), forwarded).await,
            // Snapshot reads, diffs and mutations are boxed: a read's future
            // need not be as large as theirs (see `read`).
            PgOp::Diff { from, to } => {
                let disk = self.store.disk(placed.mine.disk)?;
                let whole = (0, disk.chunk_size());
                let diff = || disk.diff(chunk, from, to);
                let extents = Box::pin(self.mending(&placed, chunk, whole, forwarded, diff)).await?;
                Ok((ChunkResponse::Extents { extents }, Bytes::new()))
            }
            PgOp::ReadSnap { offset, len, snap } => {
                let disk = self.store.disk(placed.mine.disk)?;
                let (offset, len) = (u64::from(offset), u64::from(len));
                let span = (offset / BLOCK * BLOCK, (offset + len).div_ceil(BLOCK) * BLOCK);
                let read = || disk.read_snap(chunk, offset, len, snap);
                let (data, allocated) = Box::pin(self.mending(&placed, chunk, span, forwarded, read)).await?;
                Ok((ChunkResponse::ReadDone { allocated }, data))
            }
            PgOp::Extents { offset, len } => {
                let disk = self.store.disk(placed.mine.disk)?;
                let extents = disk.extents(chunk, offset.into(), len.into()).await?;
                Ok((ChunkResponse::Extents { extents }, Bytes::new()))
            }
            PgOp::ReadRaw { offset } => {
                let (data, crc) = self.store.disk(placed.mine.disk)?.read_raw(chunk, offset.into()).await?;
                Ok((ChunkResponse::RawBlock { crc }, data))
            }
            op => Box::pin(self.mutate(&placed, chunk, Mutation { op, sender, fence }, payload, arrived)).await,
        }
    }

    /// Finds `chunk`'s PG in this node's map and checks the epoch and this
    /// node's role in it, waiting briefly if the sender's map is newer.
    pub async fn place(&self, chunk: ChunkId, epoch: u64, role: Role) -> Result<Placed, ReplicationError> {
        let pool = chuyi_common::map::pool_of(chunk.owner);
        self.place_pg(|m| m.locate(chunk).map(|(pg, _)| pg), pool, epoch, role).await
    }

    /// [`Self::place`] for the PG `find` picks in a map (`None`: the map
    /// does not have `pool`).
    async fn place_pg(
        &self,
        find: impl Fn(&DataMap) -> Option<PgId>,
        pool: u32,
        epoch: u64,
        role: Role,
    ) -> Result<Placed, ReplicationError> {
        let at_least = |m: &DataMap| find(m).and_then(|pg| m.pg(pg)).is_some_and(|p| p.epoch >= epoch);
        let mut map = self.view.current();
        if !at_least(&map) {
            map = self.view.wait_for(MAP_CATCH_UP, at_least).await;
        }
        let Some((pg, pg_map)) = find(&map).and_then(|pg| Some((pg, map.pg(pg)?))) else {
            return Err(ReplicationError::UnknownPool { pool });
        };
        if pg_map.epoch > epoch {
            return Err(ReplicationError::StaleEpoch { pg, ours: pg_map.epoch, theirs: epoch });
        }
        if pg_map.epoch < epoch {
            return Err(ReplicationError::EpochAhead { pg, ours: pg_map.epoch, theirs: epoch });
        }
        let mine = match role {
            Role::Primary => pg_map.primary().filter(|r| r.node == self.node_id),
            Role::Member => pg_map.on_node(self.node_id),
            Role::Complete => pg_map.complete().find(|r| r.node == self.node_id),
        };
        let Some(mine) = mine else {
            return Err(ReplicationError::WrongNode { node: self.node_id, role: role.name(), pg, epoch });
        };
        let pg_map = pg_map.clone();
        Ok(Placed { map, pg, pg_map, mine })
    }

    async fn mutate(
        &self,
        placed: &Placed,
        chunk: ChunkId,
        Mutation { op, sender, fence }: Mutation,
        payload: Bytes,
        arrived: Instant,
    ) -> Result<Reply, ReplicationError> {
        let forwarded = sender.forwarded();
        let disk = self.store.disk(placed.mine.disk)?;
        let (start, end) = match op {
            PgOp::Write { offset, .. } => (u64::from(offset), u64::from(offset) + payload.len() as u64),
            PgOp::Zero { offset, len, .. } | PgOp::Poison { offset, len } => {
                (u64::from(offset), u64::from(offset) + u64::from(len))
            }
            PgOp::Delete
            | PgOp::Read { .. }
            | PgOp::ReadSnap { .. }
            | PgOp::Extents { .. }
            | PgOp::Diff { .. }
            | PgOp::ReadRaw { .. }
            | PgOp::Rollback { .. }
            | PgOp::Install
            | PgOp::Stamp { .. } => (0, u64::MAX),
        };
        if !matches!(op, PgOp::Write { .. } | PgOp::Install) && !payload.is_empty() {
            return Err(ReplicationError::Invalid("only a write or an install carries a payload".into()));
        }
        check_snapshot_op(chunk, &op, forwarded)?;
        // A write that makes a clone takes the whole chunk at the primary:
        // every write sent before it has then reached every replica, so
        // each replica's clone holds the same writes (section 5.3).
        let clones = !forwarded
            && op_snap(&op).is_some_and(|snap| disk.stamp(chunk).is_none_or(|s| snaps::needs_clone(s, snap)));
        let (start, end) = if clones { (0, u64::MAX) } else { (start, end) };
        let _range = self.locks.lock(chunk, start, end).await;
        // The map may have moved while this waited for the range: a write
        // placed under the old epoch must not land (a backfill may already
        // have copied this chunk to a replica the old epoch does not name).
        let now = self.view.current().pg(placed.pg).map_or(0, |p| p.epoch);
        if now != placed.pg_map.epoch {
            return Err(ReplicationError::StaleEpoch { pg: placed.pg, ours: now, theirs: placed.pg_map.epoch });
        }
        // A forward that waited this long (for the map, then the range) has
        // been given up by its primary, which may have gone on to newer
        // writes of this range: landing now would put old data over them.
        if forwarded && arrived.elapsed() > FORWARD_WAIT_MAX {
            return Err(ReplicationError::ReplicaFailed {
                replica: placed.mine,
                message: format!("forwarded write waited {:?} for its range; dropped", arrived.elapsed()),
            });
        }
        // One its primary gave up on, arriving after a newer forward of the
        // sender's raised the mark (module `order`): the same, however
        // long it lay in a socket buffer first.
        if let Sender::Peer(Some(order)) = sender {
            self.inbound.admit(&order).map_err(|given_up| {
                tracing::info!(%chunk, from = order.from, seq = given_up.seq, mark = given_up.settled_below, "a forward its sender gave up on arrived late; dropped");
                ReplicationError::ReplicaFailed {
                    replica: placed.mine,
                    message: format!(
                        "forward {} of node {} was given up by its sender (all below {} settled); dropped",
                        given_up.seq, order.from, given_up.settled_below
                    ),
                }
            })?;
        }
        // Judged here, holding the range, right before the disk: a newer
        // writer's fence raised while this waited is seen (crate::fence).
        self.fences.admit(chunk.owner, fence).await?;
        // The primary alone judges the snap sequence: replicas apply what
        // it forwards, in its order, and so make the same clones.
        if let (false, Some(snap)) = (forwarded, op_snap(&op)) {
            self.fences.admit_snap(chunk.owner, snap).await?;
        }
        let request =
            ChunkRequest::Pg { chunk, epoch: placed.pg_map.epoch, op: op.clone(), forwarded: true, fence, order: None };
        let local = async {
            match op {
                PgOp::Write { offset, fua, snap } => {
                    disk.write_snap(chunk, offset.into(), payload.clone(), fua, snap).await
                }
                PgOp::Zero { offset, len, fua, snap } => {
                    disk.zero_snap(chunk, offset.into(), len.into(), fua, snap).await
                }
                PgOp::Poison { offset, len } => disk.poison(chunk, offset.into(), len.into()).await,
                PgOp::Delete => disk.delete(chunk).await,
                PgOp::Rollback { to, snap } => disk.rollback(chunk, to, snap).await,
                PgOp::Install => disk.install(chunk, payload.clone()).await,
                PgOp::Stamp { seq, born } => disk.set_stamp(chunk, Stamp { seq, born }).await,
                PgOp::Read { .. }
                | PgOp::ReadSnap { .. }
                | PgOp::Extents { .. }
                | PgOp::Diff { .. }
                | PgOp::ReadRaw { .. } => Ok(()),
            }
        };
        if forwarded {
            local.await?;
            return Ok((ChunkResponse::Done, Bytes::new()));
        }
        let others = placed.pg_map.replicas.iter().filter(|r| **r != placed.mine);
        let forwards = others.map(|&replica| self.forward(&placed.map, replica, &request, payload.clone()));
        let (local, forwards) = tokio::join!(local, futures::future::join_all(forwards));
        if local.is_err() || forwards.iter().any(Result::is_err) {
            // Some copies may have the write and others not. It was not
            // acknowledged, but the copies must not stay different: the
            // chunk is copied from here to the others later (recovery).
            self.mark_dirty(placed, chunk);
        }
        local?;
        forwards.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok((ChunkResponse::Done, Bytes::new()))
    }

    async fn forward(
        &self,
        map: &DataMap,
        replica: Replica,
        request: &ChunkRequest,
        payload: Bytes,
    ) -> Result<(), ReplicationError> {
        // A replica that froze is dropped as soon as the map moves the PG,
        // rather than after the call's timeout: the client's retry goes to
        // the new primary at once.
        let (pg, epoch) = match request {
            ChunkRequest::Pg { chunk, epoch, .. } => (map.locate(*chunk).map(|(pg, _)| pg), *epoch),
            _ => (None, 0),
        };
        let moved = async {
            let Some(pg) = pg else { return std::future::pending().await };
            let mut maps = self.view.subscribe();
            let _ = maps.wait_for(|m| m.pg(pg).is_some_and(|p| p.epoch != epoch)).await;
        };
        self.forwards.sent.fetch_add(1, Ordering::Relaxed);
        let reply = tokio::select! {
            reply = self.call_ordered(map, replica.node, request, payload) => reply,
            () = moved => {
                self.forwards.stalled.fetch_add(1, Ordering::Relaxed);
                self.forwards.failed.fetch_add(1, Ordering::Relaxed);
                return Err(ReplicationError::ReplicaFailed { replica, message: "the PG moved while the replica had the write".into() });
            }
        };
        let outcome = Self::forward_outcome(replica, reply);
        if let Err(ReplicationError::ReplicaFailed { .. }) = &outcome {
            self.forwards.failed.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    /// Calls `node` with `request`; a forwarded mutation goes numbered
    /// (module `order`), in flight until the call ends here, answered or
    /// given up.
    pub async fn call_ordered(
        &self,
        map: &DataMap,
        node: NodeId,
        request: &ChunkRequest,
        payload: Bytes,
    ) -> Result<Reply, chuyi_common::rpc::RpcError> {
        let numbered = matches!(request, ChunkRequest::Pg { op, forwarded: true, order: None, .. } if op.mutates());
        if !numbered {
            return self.peers.call(map, node, request, payload).await;
        }
        let ticket = self.outbound.start(node);
        let mut request = request.clone();
        if let ChunkRequest::Pg { order, .. } = &mut request {
            *order = Some(ticket.order());
        }
        // Given up at the deadline whatever the call is doing, connecting
        // included: give-ups then come in number order.
        let reply =
            match tokio::time::timeout_at(ticket.deadline(), self.peers.call(map, node, &request, payload)).await {
                Ok(reply) => reply,
                Err(_) => Err(chuyi_common::rpc::RpcError::Timeout),
            };
        drop(ticket);
        reply
    }

    /// What a replica's answer to a forward means for the write.
    fn forward_outcome(
        replica: Replica,
        reply: Result<Reply, chuyi_common::rpc::RpcError>,
    ) -> Result<(), ReplicationError> {
        match reply {
            Ok((ChunkResponse::Done, _)) => Ok(()),
            Ok((ChunkResponse::Error(error), _)) => match error.kind {
                // The replica knows a newer map: so must the client. Or a
                // newer writer of the volume: the client must stop.
                ChunkErrorKind::StaleEpoch
                | ChunkErrorKind::Fenced
                | ChunkErrorKind::NoSpace
                | ChunkErrorKind::OutOfRange
                | ChunkErrorKind::InvalidArgument => Err(ReplicationError::Replica { replica, error }),
                _ => Err(ReplicationError::ReplicaFailed { replica, message: error.to_string() }),
            },
            Ok((other, _)) => Err(ReplicationError::ReplicaFailed { replica, message: format!("answered {other:?}") }),
            Err(e) => Err(ReplicationError::ReplicaFailed { replica, message: e.to_string() }),
        }
    }

    /// A read; one that finds a bad block repairs it from another replica,
    /// unless it is itself a peer's repair read (`forwarded`), which must
    /// not start a repair back: two bad copies would wait on each other.
    async fn read(
        self: &Arc<Self>,
        placed: &Placed,
        chunk: ChunkId,
        offset: u64,
        len: u64,
        forwarded: bool,
    ) -> Result<Reply, ReplicationError> {
        let disk = self.store.disk(placed.mine.disk)?;
        match disk.read(chunk, offset, len).await {
            Ok((data, allocated)) => Ok((ChunkResponse::ReadDone { allocated }, data)),
            Err(bad @ StoreError::Checksum { .. }) if !forwarded => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                let (start, end) = (offset / BLOCK * BLOCK, (offset + len).div_ceil(BLOCK) * BLOCK);
                // Unrepaired, the reader learns the block is bad (and may
                // try another replica), not that some peer was unreachable.
                if self.repair(placed, chunk, start, end).await.is_err() {
                    return Err(bad.into());
                }
                let (data, allocated) = disk.read(chunk, offset, len).await?;
                Ok((ChunkResponse::ReadDone { allocated }, data))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Runs `read`, a read of this node's copy of `chunk` as some snapshot
    /// saw it (the head, or one of its clones); when that finds a bad
    /// block, repairs the copy it read from the bad block to the end of
    /// `span` from another complete replica's (as [`Self::read`] does for
    /// the head) and reads again. Not for a peer's repair read
    /// (`forwarded`), which must not start a repair back.
    async fn mending<T, F: std::future::Future<Output = Result<T, StoreError>>>(
        self: &Arc<Self>,
        placed: &Placed,
        chunk: ChunkId,
        (start, end): (u64, u64),
        forwarded: bool,
        read: impl Fn() -> F,
    ) -> Result<T, ReplicationError> {
        match read().await {
            Err(bad @ StoreError::Checksum { chunk: copy, block, .. }) if !forwarded && copy.head() == chunk => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                if self.repair(placed, copy, (block * BLOCK).max(start), end).await.is_err() {
                    return Err(bad.into());
                }
                Ok(read().await?)
            }
            done => Ok(done?),
        }
    }

    /// Rewrites the bad blocks of `[start, end)` of this node's copy of
    /// `chunk` from another complete replica: the whole range at once, or,
    /// when the other copy has a bad block of its own in it, block by block,
    /// mending a block bad on both from the two copies ([`torn`]).
    ///
    /// In a task of its own, which ends even if the caller stops waiting (a
    /// reader whose client went): abandoned mid-write, the repair would
    /// release its range with its write still running, and that write,
    /// holding what the other replica had before, could land after a newer
    /// write of the range. The caller's future also stays small: it holds
    /// the task's handle, not the repair (2096 bytes against a disk read's
    /// 496, which every read's future would otherwise carry).
    pub fn repair(
        self: &Arc<Self>,
        placed: &Placed,
        chunk: ChunkId,
        start: u64,
        end: u64,
    ) -> impl std::future::Future<Output = Result<(), ReplicationError>> {
        let (this, placed) = (self.clone(), placed.clone());
        to_completion(async move { this.repair_here(&placed, chunk, start, end).await })
    }

    async fn repair_here(&self, placed: &Placed, chunk: ChunkId, start: u64, end: u64) -> Result<(), ReplicationError> {
        if self.repair_range(placed, chunk, start, end).await.is_ok() {
            return Ok(());
        }
        let disk = self.store.disk(placed.mine.disk)?;
        let mut result = Ok(());
        for at in (start..end).step_by(BLOCK as usize) {
            let bad = matches!(disk.read(chunk, at, BLOCK).await, Err(StoreError::Checksum { .. }));
            if bad && self.repair_range(placed, chunk, at, at + BLOCK).await.is_err() {
                if let Err(e) = self.mend_torn(placed, chunk, at).await {
                    result = Err(e);
                }
            }
        }
        result
    }

    async fn repair_range(
        &self,
        placed: &Placed,
        chunk: ChunkId,
        start: u64,
        end: u64,
    ) -> Result<(), ReplicationError> {
        let _range = self.locks.lock(chunk, start, end).await;
        let request = ChunkRequest::Pg {
            chunk,
            epoch: placed.pg_map.epoch,
            op: PgOp::Read { offset: start as u32, len: (end - start) as u32 },
            forwarded: true,
            fence: None,
            order: None,
        };
        let mut last = None;
        for source in placed.pg_map.complete().filter(|r| *r != placed.mine) {
            match self.peers.call(&placed.map, source.node, &request, Bytes::new()).await {
                // A source without the copy answers zeros (`allocated`
                // false): that is no evidence of what it held.
                Ok((ChunkResponse::ReadDone { allocated: true }, data)) if data.len() as u64 == end - start => {
                    if let Err(why) = self.not_ahead(placed, chunk, source).await {
                        last = Some(why);
                        continue;
                    }
                    self.store.disk(placed.mine.disk)?.rewrite(chunk, start, data, true).await?;
                    self.counters.repairs.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%chunk, start, end, from = source.node, "repaired a bad range from the other replica");
                    return Ok(());
                }
                Ok((other, _)) => last = Some(format!("{other:?}")),
                Err(e) => last = Some(e.to_string()),
            }
        }
        let message = last.unwrap_or_else(|| "no other complete replica".into());
        tracing::warn!(%chunk, start, end, %message, "could not repair a bad range");
        Err(ReplicationError::ReplicaFailed { replica: placed.mine, message })
    }

    /// Refuses `source` as the source of a repair of `chunk`'s head when
    /// its copy has taken a write under a newer snap sequence than this
    /// one ([`snaps::may_repair_from`]); asked after the source's bytes
    /// were read, which its stamp then covers. A clone never changes and
    /// needs no check.
    async fn not_ahead(&self, placed: &Placed, chunk: ChunkId, source: Replica) -> Result<(), String> {
        if chunk.is_clone() {
            return Ok(());
        }
        let theirs = self.remote_chunk_sums(&placed.map, placed.pg, source, placed.pg_map.epoch, chunk).await;
        let theirs = theirs.map_err(|e| e.to_string())?.map(|s| s.stamp);
        let disk = self.store.disk(placed.mine.disk).map_err(|e| e.to_string())?;
        let mine = disk.settled_stamp(chunk).await.map_err(|e| e.to_string())?;
        match (mine, theirs) {
            (Some(mine), Some(theirs)) if snaps::may_repair_from(mine, theirs) => Ok(()),
            (Some(mine), Some(theirs)) => Err(format!(
                "node {}'s copy has writes of snap sequence {} this one ({}) has not had yet",
                source.node, theirs.seq, mine.seq
            )),
            (None, _) => Err("this copy is gone".into()),
            (_, None) => Err(format!("node {} no longer holds the chunk", source.node)),
        }
    }

    /// Rewrites block `at` of this node's copy of `chunk`, which fails its
    /// checksum, as [`torn::mend`] judges it from this copy and the other
    /// replica's, both as stored. The other copy, bad too, then mends from
    /// this one (its scrub or its next read's repair). Only with exactly
    /// two complete copies: with more, two nodes could judge different
    /// pairs and keep different bytes.
    async fn mend_torn(&self, placed: &Placed, chunk: ChunkId, at: u64) -> Result<(), ReplicationError> {
        let others: Vec<Replica> = placed.pg_map.complete().filter(|r| *r != placed.mine).collect();
        let [source] = others[..] else {
            return Err(ReplicationError::ReplicaFailed {
                replica: placed.mine,
                message: format!(
                    "a block bad on every copy is mended with two complete copies only, not {}",
                    others.len() + 1
                ),
            });
        };
        let _range = self.locks.lock(chunk, at, at + BLOCK).await;
        let disk = self.store.disk(placed.mine.disk)?;
        let (mine, crc) = disk.read_raw(chunk, at).await?;
        if crc32c(&mine) == crc {
            // Mended meanwhile (the other copy's repair, or a write).
            return Ok(());
        }
        let request = ChunkRequest::Pg {
            chunk,
            epoch: placed.pg_map.epoch,
            op: PgOp::ReadRaw { offset: at as u32 },
            forwarded: true,
            fence: None,
            order: None,
        };
        let message = match self.peers.call(&placed.map, source.node, &request, Bytes::new()).await {
            Ok((ChunkResponse::RawBlock { crc: theirs_crc }, theirs)) if theirs.len() as u64 == BLOCK => {
                let ours = torn::Stored { data: &mine, crc };
                let theirs = torn::Stored { data: &theirs, crc: theirs_crc };
                let mended = torn::mend(ours, theirs, poisoned_crc());
                // The same check as a repair's: a source ahead by a snap
                // sequence must not lend its bytes (`not_ahead`).
                let ahead = match mended {
                    Some(_) => self.not_ahead(placed, chunk, source).await.err(),
                    None => None,
                };
                if let (Some(data), None) = (mended, &ahead) {
                    disk.rewrite(chunk, at, Bytes::copy_from_slice(data), true).await?;
                    self.counters.repairs.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%chunk, block = at / BLOCK, with = source.node, "mended a block both replicas had torn");
                    return Ok(());
                }
                ahead.unwrap_or_else(|| format!("node {}'s copy does not show what the block was", source.node))
            }
            Ok((other, _)) => format!("{other:?}"),
            Err(e) => e.to_string(),
        };
        tracing::warn!(%chunk, block = at / BLOCK, %message, "could not mend a block bad on both replicas");
        Err(ReplicationError::ReplicaFailed { replica: placed.mine, message })
    }

    /// Serves a [`ChunkRequest::PgSums`]: this node's chunks of `pg`.
    pub async fn pg_sums(
        &self,
        pg: PgId,
        epoch: u64,
        start_after: Option<ChunkId>,
        max: u32,
    ) -> Result<Reply, ReplicationError> {
        let placed = self.place_pg(|_| Some(pg), pg.pool, epoch, Role::Member).await?;
        let (map, mine) = (&placed.map, placed.mine);
        let disk = self.store.disk(mine.disk)?;
        let (sums, next) = chunk_sums(disk, map, pg, start_after, max.clamp(1, PG_SUMS_PAGE_MAX)).await?;
        let blocks = (disk.chunk_size() / BLOCK) as u32;
        let chunks = sums.iter().map(|s| s.chunk).collect();
        let stamps = sums.iter().map(|s| s.stamp).collect();
        Ok((ChunkResponse::Sums { chunks, blocks, next, stamps }, Bytes::from(ChunkSums::encode(&sums))))
    }

    /// One chunk's block checksums on `target` (`None`: it has none).
    pub async fn remote_chunk_sums(
        &self,
        map: &DataMap,
        pg: PgId,
        target: Replica,
        epoch: u64,
        chunk: ChunkId,
    ) -> Result<Option<ChunkSums>, ReplicationError> {
        let before = if chunk.index > 0 {
            Some(ChunkId::new(chunk.owner, chunk.index - 1))
        } else {
            chunk.owner.checked_sub(1).map(|owner| ChunkId::new(owner, u64::MAX))
        };
        let (sums, _) = self.remote_sums(map, pg, target, epoch, before, 1).await?;
        Ok(sums.into_iter().find(|s| s.chunk == chunk))
    }

    /// A page of `target`'s chunks of `pg` after `start_after`, with their
    /// block checksums and stamps (`PgSums`), and where the next starts.
    pub async fn remote_sums(
        &self,
        map: &DataMap,
        pg: PgId,
        target: Replica,
        epoch: u64,
        start_after: Option<ChunkId>,
        max: u32,
    ) -> Result<(Vec<ChunkSums>, Option<ChunkId>), ReplicationError> {
        let request = ChunkRequest::PgSums { pg, epoch, start_after, max };
        let failed = |message: String| ReplicationError::ReplicaFailed { replica: target, message };
        match self.peers.call(map, target.node, &request, Bytes::new()).await {
            Ok((ChunkResponse::Sums { chunks, blocks, next, stamps }, payload)) => {
                let sums = ChunkSums::decode(&chunks, blocks, &stamps, &payload)
                    .ok_or_else(|| failed("malformed sums".into()))?;
                Ok((sums, next))
            }
            Ok((other, _)) => Err(failed(format!("answered {other:?}"))),
            Err(e) => Err(failed(e.to_string())),
        }
    }
}

/// This node's chunks of `pg` on `disk` after `start_after`, at most `max`,
/// with their block checksums; and where the next page starts.
pub async fn chunk_sums(
    disk: &DiskStore,
    map: &DataMap,
    pg: PgId,
    start_after: Option<ChunkId>,
    max: u32,
) -> Result<(Vec<ChunkSums>, Option<ChunkId>), ReplicationError> {
    // A sparse PG may need a long scan for one page; cap it so the disk's
    // index lock is not held for long, and let the cursor carry on.
    let (ids, next) = disk.list_where(start_after, max as usize, max as usize * 256, |c| in_pg(map, c, pg));
    let mut sums = Vec::with_capacity(ids.len());
    for chunk in ids {
        // Deleted since listed: leave it out.
        if let Some((crcs, stamp)) = disk.sums(chunk).await? {
            sums.push(ChunkSums { chunk, crcs, stamp });
        }
    }
    Ok((sums, next))
}

/// The snap sequence a mutation is sent under, if it carries one.
fn op_snap(op: &PgOp) -> Option<u32> {
    match op {
        PgOp::Write { snap, .. } | PgOp::Zero { snap, .. } | PgOp::Rollback { snap, .. } => Some(*snap),
        PgOp::Read { .. }
        | PgOp::ReadSnap { .. }
        | PgOp::Extents { .. }
        | PgOp::Diff { .. }
        | PgOp::ReadRaw { .. }
        | PgOp::Install
        | PgOp::Delete
        | PgOp::Poison { .. }
        | PgOp::Stamp { .. } => None,
    }
}

/// Refuses what only a node may do to snapshot data: a client writes
/// chunks, never clones (each replica makes its own), and a chunk whose
/// index leaves no room for a sequence in its clones' ids takes no
/// snapshot sequence.
fn check_snapshot_op(chunk: ChunkId, op: &PgOp, forwarded: bool) -> Result<(), ReplicationError> {
    if forwarded {
        return Ok(());
    }
    if chunk.is_clone() {
        return Err(ReplicationError::Invalid(format!("{chunk} is a snapshot clone: nodes alone change it")));
    }
    if matches!(op, PgOp::Stamp { .. } | PgOp::Poison { .. }) {
        return Err(ReplicationError::Invalid("stamps and poison come from a PG's primary only".into()));
    }
    if op_snap(op).is_some_and(|s| s > 0) && chunk.index > SNAPSHOT_INDEX_MAX {
        return Err(ReplicationError::Invalid(format!("chunk index {} is too large for snapshots", chunk.index)));
    }
    let named = match op {
        PgOp::ReadSnap { snap, .. } => Some(*snap),
        PgOp::Rollback { to, .. } => Some(*to),
        _ => None,
    };
    if let Some(s) = named.into_iter().chain(op_snap(op)).find(|&s| s > SNAP_SEQ_MAX) {
        return Err(ReplicationError::Invalid(format!("snap sequence {s} past {SNAP_SEQ_MAX}")));
    }
    Ok(())
}

/// Whether `chunk` belongs to `pg` in `map`.
pub fn in_pg(map: &DataMap, chunk: ChunkId, pg: PgId) -> bool {
    map.locate(chunk).is_some_and(|(id, _)| id == pg)
}

/// A mutation as asked: what, who sent it (a client, or a primary
/// forwarding it, and where among its forwards), and the writer's fencing
/// token.
struct Mutation {
    op: PgOp,
    sender: Sender,
    fence: Option<u64>,
}

/// Who sent a [`ChunkRequest::Pg`]: a client, or a peer forwarding it
/// (with the forward's place among that peer's, for a mutation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    Client,
    Peer(Option<ForwardOrder>),
}

impl Sender {
    /// The sender a request's `forwarded` and `order` name, or why they
    /// cannot be: only forwards are numbered, and a forward cannot count
    /// itself among those its sender has settled.
    pub fn of(forwarded: bool, order: Option<ForwardOrder>) -> Result<Self, ReplicationError> {
        match (forwarded, order) {
            (false, None) => Ok(Sender::Client),
            (false, Some(_)) => Err(ReplicationError::Invalid("a client's request carries a forward's order".into())),
            (true, Some(order)) if order.settled_below > order.seq => Err(ReplicationError::Invalid(format!(
                "forward {} says forwards below {} are settled, itself among them",
                order.seq, order.settled_below
            ))),
            (true, order) => Ok(Sender::Peer(order)),
        }
    }

    fn forwarded(self) -> bool {
        matches!(self, Sender::Peer(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(seq: u64, settled_below: u64) -> Option<ForwardOrder> {
        Some(ForwardOrder { from: 1, seq, settled_below })
    }

    #[test]
    fn a_client_sends_unnumbered_and_a_peer_either_way() {
        assert_eq!(Sender::of(false, None).expect("client"), Sender::Client);
        assert_eq!(Sender::of(true, None).expect("peer's read"), Sender::Peer(None));
        assert_eq!(Sender::of(true, order(7, 7)).expect("peer"), Sender::Peer(order(7, 7)));
        assert_eq!(Sender::of(true, order(7, 3)).expect("peer"), Sender::Peer(order(7, 3)));
    }

    #[test]
    fn a_numbered_client_request_or_a_forward_settled_by_its_own_number_is_invalid() {
        assert!(matches!(Sender::of(false, order(7, 7)), Err(ReplicationError::Invalid(_))));
        assert!(matches!(Sender::of(true, order(7, 8)), Err(ReplicationError::Invalid(_))));
    }
}
