//! Backfill and resync: a PG's primary brings each recovering replica up to
//! date, then reports it recovered.
//!
//! Both are one procedure. The primary walks its chunks of the PG and the
//! replica's side by side, in chunk-id order, comparing each block's crc32c
//! (which both keep in memory), and sends only the blocks that differ, and
//! deletes the chunks the replica has and the primary does not. A brand-new
//! replica has nothing, so everything is sent (backfill); a replica that
//! was away for a while differs only in the blocks written meanwhile, so only
//! those are sent (resync). Nothing has to be recorded while degraded, and a
//! restart of either side resumes cheaply: what was already copied compares
//! equal and is skipped.
//!
//! Client writes keep going to the recovering replica throughout (the
//! primary forwards to every replica), and each chunk is copied under the
//! primary's range lock, so a copy never overwrites a newer client write.
//! Copying is throttled to `recovery_mb_per_s` and pauses while client
//! operations are waiting on this node.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chuyi_common::clock::{self, Instant};

use bytes::Bytes;
use chuyi_common::checksum::zero_block_crc;
use chuyi_common::ids::{ChunkId, NodeId};
use chuyi_common::limits::{BLOCK_SIZE_BYTES, RAISE_FENCES_MAX};
use chuyi_common::map::{DataMap, PgId, PgMap, Replica};
use chuyi_common::proto::chunk::{ChunkRequest, ChunkResponse, ChunkSums, PgOp, RecoveryProgress};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use crate::replication::{chunk_sums, in_pg, Placed, ReplicationError, Replicator};
use crate::store::{DiskStore, StoreError};

/// PGs backfilled at once by one node. The PGs of a lost node have their
/// primaries spread over every survivor, so the cluster as a whole rebuilds
/// on all nodes in parallel.
const CONCURRENT_BACKFILLS: usize = 4;
/// Chunks compared per page.
const PAGE: u32 = 64;
/// Blocks sent in one write at most (1 MiB).
const RUN_BLOCKS: usize = 256;
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A replica now holds its PG's data as of `epoch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Recovered {
    pub pg: PgId,
    pub replica: Replica,
    pub epoch: u64,
}

type Key = (PgId, Replica, u64);

#[derive(Debug)]
pub struct Recovery {
    repl: Arc<Replicator>,
    bytes_per_s: u64,
    progress: Mutex<HashMap<Key, RecoveryProgress>>,
    reported: mpsc::UnboundedSender<Recovered>,
    done: AtomicU64,
    sent: AtomicU64,
    /// Chunks compared by every backfill since start: it moves while a
    /// backfill finds the target already right and sends nothing.
    compared: AtomicU64,
    /// When the node's recovery bandwidth is next free: every backfill
    /// books its bytes here, so the rate holds for the node as a whole.
    next_free: Mutex<Instant>,
}

impl Recovery {
    pub fn new(repl: Arc<Replicator>, mb_per_s: u32) -> (Arc<Self>, mpsc::UnboundedReceiver<Recovered>) {
        let (reported, rx) = mpsc::unbounded_channel();
        let this = Self {
            repl,
            bytes_per_s: u64::from(mb_per_s) * 1_000_000,
            progress: Mutex::default(),
            reported,
            done: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            compared: AtomicU64::new(0),
            next_free: Mutex::new(clock::now()),
        };
        (Arc::new(this), rx)
    }

    /// Backfills in flight, for `NodeStatus`.
    pub fn progress(&self) -> Vec<RecoveryProgress> {
        let mut all: Vec<_> = lock(&self.progress).values().cloned().collect();
        all.sort_by_key(|p| (p.pg, p.target));
        all
    }

    /// Backfills finished, and bytes sent by all, since start.
    pub fn totals(&self) -> (u64, u64) {
        (self.done.load(Ordering::Relaxed), self.sent.load(Ordering::Relaxed))
    }

    /// Chunks compared by all backfills since start.
    pub fn compared(&self) -> u64 {
        self.compared.load(Ordering::Relaxed)
    }

    /// Follows the map: starts a backfill for every recovering replica of a
    /// PG this node is primary of, and drops those the map no longer wants.
    pub async fn run(self: Arc<Self>) {
        let mut maps = self.repl.view().subscribe();
        let permits = Arc::new(Semaphore::new(CONCURRENT_BACKFILLS));
        let mut running: HashMap<Key, JoinHandle<()>> = HashMap::new();
        let mut done: HashSet<Key> = HashSet::new();
        let mut swept_at = None;
        loop {
            let map = self.repl.view().current();
            let wanted = self.wanted(&map);
            // A finished backfill stays done until the map moves on, so a
            // report the metadata service has not applied yet is not redone.
            running.retain(|key, task| {
                let finished = task.is_finished();
                if finished && wanted.contains(key) {
                    done.insert(*key);
                }
                let keep = wanted.contains(key) && !finished;
                if !keep {
                    task.abort();
                    lock(&self.progress).remove(key);
                }
                keep
            });
            done.retain(|key| wanted.contains(key));
            for key in wanted {
                if running.contains_key(&key) || done.contains(&key) {
                    continue;
                }
                let (this, permits) = (self.clone(), permits.clone());
                running.insert(
                    key,
                    tokio::spawn(async move {
                        let Ok(_permit) = permits.acquire_owned().await else { return };
                        this.backfill_until_done(key).await;
                    }),
                );
            }
            self.copy_dirty().await;
            if swept_at != Some(map.epoch) {
                self.sweep_strays(&map).await;
                swept_at = Some(map.epoch);
            }
            tokio::select! {
                changed = maps.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(RETRY_AFTER) => {}
            }
        }
    }

    /// Deletes this node's copies of chunks whose PG has moved elsewhere
    /// and is clean there: the space comes back, and nothing is lost, since
    /// the PG's replicas are complete without this copy. A copy is never
    /// needed again once its PG is clean without it: if the PG comes back
    /// to this disk, it comes as a recovering replica and is backfilled.
    async fn sweep_strays(&self, map: &DataMap) {
        let me = self.repl.node_id();
        for disk in self.repl.store().disks() {
            let stray = |c: ChunkId| {
                map.locate(c).is_some_and(|(pg, pg_map)| {
                    let clean = map.pool(pg.pool).is_some_and(|p| pg_map.replicas.len() == p.size as usize)
                        && pg_map.recovering.is_empty();
                    clean && !pg_map.replicas.iter().any(|r| r.node == me && r.disk == disk.id())
                })
            };
            let mut cursor = None;
            loop {
                let (ids, next) = disk.list_where(cursor, 256, 4096, stray);
                for chunk in ids {
                    let _whole = self.repl.locks().lock(chunk, 0, u64::MAX).await;
                    // Re-checked under the lock against the newest map.
                    let now = self.repl.view().current();
                    if now.epoch != map.epoch {
                        return;
                    }
                    match disk.delete(chunk).await {
                        Ok(()) => tracing::debug!(%chunk, disk = disk.id(), "deleted a copy whose PG moved away"),
                        Err(e) => tracing::warn!(%chunk, error = %e, "could not delete a stray copy"),
                    }
                }
                match next {
                    Some(n) => cursor = Some(n),
                    None => break,
                }
            }
        }
    }

    fn wanted(&self, map: &DataMap) -> HashSet<Key> {
        let me = self.repl.node_id();
        let mut keys = HashSet::new();
        for (pg, pg_map) in map.pgs() {
            if pg_map.primary().is_some_and(|p| p.node == me) {
                keys.extend(pg_map.recovering.iter().map(|&r| (pg, r, pg_map.epoch)));
            }
        }
        keys
    }

    async fn backfill_until_done(&self, key: Key) {
        let (pg, target, epoch) = key;
        loop {
            match self.backfill(key).await {
                Ok(()) => {
                    self.done.fetch_add(1, Ordering::Relaxed);
                    lock(&self.progress).remove(&key);
                    let _ = self.reported.send(Recovered { pg, replica: target, epoch });
                    return;
                }
                Err(e) => {
                    tracing::warn!(%pg, ?target, epoch, error = %e, "backfill failed; retrying");
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        }
    }

    async fn backfill(&self, key: Key) -> Result<(), ReplicationError> {
        let (pg, target, epoch) = key;
        let map = self.repl.view().current();
        let Some(mine) = map.pg(pg).filter(|p| p.epoch == epoch).and_then(|p| p.primary()) else {
            return Err(ReplicationError::StaleEpoch { pg, ours: map.pg(pg).map_or(0, |p| p.epoch), theirs: epoch });
        };
        let disk = self.repl.store().disk(mine.disk)?;
        let started = clock::now();
        let total = count_chunks(disk, &map, pg);
        self.set_progress(key, |p| p.chunks_total = total);
        tracing::info!(%pg, ?target, epoch, chunks = total, "backfill started");
        self.send_fences(&map, pg, target).await?;
        let mut walk = Walk::default();
        let mut sent = 0u64;
        loop {
            if walk.local.is_empty() && !walk.local_done {
                let (page, next) = chunk_sums(disk, &map, pg, walk.local_next, PAGE).await?;
                walk.local.extend(page);
                (walk.local_next, walk.local_done) = (next, next.is_none());
            }
            if walk.remote.is_empty() && !walk.remote_done {
                let (page, next) = self.repl.remote_sums(&map, pg, target, epoch, walk.remote_next, PAGE).await?;
                walk.remote.extend(page);
                (walk.remote_next, walk.remote_done) = (next, next.is_none());
            }
            let Some(batch) = walk.take_ready() else { break };
            for (chunk, remote) in batch {
                let route = Route { map: &map, epoch, mine, target };
                // A clone here went with its chunk (`copy_chunk`); one only
                // the target has is deleted.
                let copied = chunk.is_clone() && disk.clones_of(chunk.head()).contains(&chunk);
                let bytes = if copied { 0 } else { self.backfill_chunk(&map, route, pg, chunk, remote).await? };
                sent += bytes;
                self.sent.fetch_add(bytes, Ordering::Relaxed);
                self.compared.fetch_add(1, Ordering::Relaxed);
                self.set_progress(key, |p| {
                    p.chunks_done += 1;
                    p.bytes_copied += bytes;
                    p.elapsed_ms = started.elapsed().as_millis() as u64;
                });
                self.throttle(bytes).await;
            }
        }
        let flush = ChunkRequest::Flush { disk: Some(target.disk), fence: None };
        expect_done(self.repl.peers().call(&map, target.node, &flush, Bytes::new()).await, target)?;
        tracing::info!(%pg, ?target, epoch, bytes = sent, secs = started.elapsed().as_secs_f64(), "backfill done");
        Ok(())
    }

    /// Backfills one chunk. When this copy has a block it cannot read (in
    /// the chunk or in one of its snapshot clones) and the PG has another
    /// complete replica (a rebalance keeps the replica it replaces until
    /// this backfill ends), that copy is first mended from it
    /// (`Replicator::repair`, block by block from the bad one on, outside
    /// the chunk's lock, which the repair takes a range of) and the chunk
    /// copied again; only what is bad there too is poisoned on the target.
    async fn backfill_chunk(
        &self,
        map: &Arc<DataMap>,
        route: Route<'_>,
        pg: PgId,
        chunk: ChunkId,
        mut remote: Option<ChunkSums>,
    ) -> Result<u64, ReplicationError> {
        let pg_map = route.map.pg(pg).filter(|p| p.epoch == route.epoch).cloned();
        let Some(pg_map) = pg_map.filter(|p| p.complete().any(|r| r != route.mine)) else {
            return self.copy_chunk(route, chunk, remote, |_| BadLocal::Poison).await;
        };
        let placed = Placed { map: map.clone(), pg, pg_map, mine: route.mine };
        // Each copy (the chunk, each clone) is mended once; one still bad
        // after that is bad on the other replica too, and is poisoned.
        // Bounded: each round mends a copy not mended before.
        let mut mended = Vec::new();
        loop {
            let bad_local = |copy| if mended.contains(&copy) { BadLocal::Poison } else { BadLocal::Stop };
            match self.copy_chunk(route, chunk, remote, bad_local).await {
                Err(ReplicationError::Store(StoreError::Checksum { chunk: bad, block, .. }))
                    if bad.head() == chunk.head() && !mended.contains(&bad) =>
                {
                    let end = self.repl.store().disk(route.mine.disk)?.chunk_size();
                    let from = block * BLOCK_SIZE_BYTES as u64;
                    if let Err(e) = self.repl.repair(&placed, bad, from, end).await {
                        tracing::warn!(chunk = %bad, block, error = %e, "backfill could not mend a bad block from the other complete copy");
                    }
                    mended.push(bad);
                }
                done => return done,
            }
            // What the last try sent is on the target now: not sent again.
            remote = self.repl.remote_chunk_sums(route.map, pg, route.target, route.epoch, chunk).await?;
        }
    }

    /// Raises `target`'s fences of `pg`'s pool to this node's before any
    /// chunk is copied, so a replica never becomes complete, and so never
    /// a primary, without knowing which writers its volumes refuse.
    async fn send_fences(&self, map: &DataMap, pg: PgId, target: Replica) -> Result<(), ReplicationError> {
        let fences = self.repl.fences().entries(|owner| chuyi_common::map::pool_of(owner) == pg.pool);
        for page in fences.chunks(RAISE_FENCES_MAX) {
            let raise = ChunkRequest::RaiseFences { fences: page.to_vec() };
            expect_done(self.repl.peers().call(map, target.node, &raise, Bytes::new()).await, target)?;
        }
        Ok(())
    }

    /// Brings `target`'s copy of `chunk` to the primary's, under the
    /// primary's lock on the whole chunk; `bad_local` says, per copy (the
    /// chunk, each clone), what a bad block of it does. Returns the bytes
    /// sent.
    async fn copy_chunk(
        &self,
        route: Route<'_>,
        chunk: ChunkId,
        remote: Option<ChunkSums>,
        bad_local: impl Fn(ChunkId) -> BadLocal,
    ) -> Result<u64, ReplicationError> {
        let _whole = self.repl.locks().lock(chunk.head(), 0, u64::MAX).await;
        let mut sent = self.copy_one(route, chunk, remote, bad_local(chunk)).await?;
        if chunk.is_clone() {
            return Ok(sent);
        }
        // A chunk's clones go with it, under its lock: one made after the
        // backfill listed the PG would be missed otherwise, and the target
        // makes none for a write that came before it had the chunk.
        let Route { map, epoch, mine, target } = route;
        let Some((pg, _)) = map.locate(chunk) else { return Ok(sent) };
        for clone in self.repl.store().disk(mine.disk)?.clones_of(chunk) {
            let remote = self.repl.remote_chunk_sums(map, pg, target, epoch, clone).await?;
            sent += self.copy_one(route, clone, remote, bad_local(clone)).await?;
        }
        Ok(sent)
    }

    /// [`Self::copy_chunk`] of one chunk id, its lock held by the caller.
    async fn copy_one(
        &self,
        route: Route<'_>,
        chunk: ChunkId,
        remote: Option<ChunkSums>,
        bad_local: BadLocal,
    ) -> Result<u64, ReplicationError> {
        let Route { map, epoch, mine, target } = route;
        let disk = self.repl.store().disk(mine.disk)?;
        // A copy is as current as this primary's fence: the target, which
        // has this node's fences (`send_fences`), takes it.
        let fence = self.repl.fences().get(chunk.owner);
        let send = |op: PgOp, payload: Bytes| {
            let request = ChunkRequest::Pg { chunk, epoch, op, forwarded: true, fence, order: None };
            // Numbered like a client write's forward: a copy given up on
            // must not land over a write made since (module `order`).
            async move { expect_done(self.repl.call_ordered(map, target.node, &request, payload).await, target) }
        };
        let Some((local, stamp)) = disk.sums(chunk).await? else {
            if remote.is_some() {
                send(PgOp::Delete, Bytes::new()).await?;
            }
            return Ok(0);
        };
        // The stamp first: it says which writes the target's clones have
        // seen, and copies never make clones (they carry sequence 0). It
        // also makes a chunk the target lacks: a clone of zeros has no
        // block to send, yet must exist there for the snapshot it keeps.
        if remote.as_ref().is_none_or(|r| r.stamp != stamp) {
            send(PgOp::Stamp { seq: stamp.seq, born: stamp.born }, Bytes::new()).await?;
        }
        let remote = remote.map(|r| r.crcs);
        let zero = zero_block_crc();
        let differs = |i: usize| local[i] != remote.as_ref().map_or(zero, |r| r.get(i).copied().unwrap_or(zero));
        let mut sent = 0;
        for (first, count) in runs(local.len(), differs) {
            let (offset, len) = ((first * BLOCK_SIZE_BYTES) as u32, (count * BLOCK_SIZE_BYTES) as u32);
            if local[first..first + count].iter().all(|&c| c == zero) {
                send(PgOp::Zero { offset, len, fua: false, snap: 0 }, Bytes::new()).await?;
            } else {
                match disk.read(chunk, offset.into(), len.into()).await {
                    Ok((data, _)) => {
                        send(PgOp::Write { offset, fua: false, snap: 0 }, data).await?;
                        sent += u64::from(len);
                    }
                    // A bad block here, and no complete copy elsewhere to
                    // mend it from (else read repair would have): send the
                    // run's good blocks, poison the bad ones on the target
                    // (they read as bad there too, never as zeros), and let
                    // one bad block not stop the rest of the PG from getting
                    // its second copy.
                    // A complete target may hold the block intact: spoiling
                    // it would lose the block. Stop; read repair or scrub
                    // mends this copy from it, and the copy is tried again.
                    Err(e @ StoreError::Checksum { .. }) if bad_local == BadLocal::Stop => return Err(e.into()),
                    Err(StoreError::Checksum { .. }) => {
                        for block in first..first + count {
                            let at = (block * BLOCK_SIZE_BYTES) as u32;
                            match disk.read(chunk, at.into(), BLOCK_SIZE_BYTES as u64).await {
                                Ok((data, _)) => {
                                    send(PgOp::Write { offset: at, fua: false, snap: 0 }, data).await?;
                                    sent += BLOCK_SIZE_BYTES as u64;
                                }
                                // Lost with both copies; the new one must
                                // say so, not hold zeros repair would take
                                // for the data.
                                Err(StoreError::Checksum { .. }) => {
                                    tracing::error!(%chunk, block, ?target, "block unreadable on the only complete copy; poisoned on the new one");
                                    send(PgOp::Poison { offset: at, len: BLOCK_SIZE_BYTES as u32 }, Bytes::new())
                                        .await?;
                                }
                                Err(e) => return Err(e.into()),
                            }
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(sent)
    }

    /// Copies the chunks marked after failed writes to the replicas they
    /// may differ on ([`dirty_fate`] says when).
    async fn copy_dirty(&self) {
        let me = self.repl.node_id();
        let mut left = Vec::new();
        let dirty = self.repl.take_dirty();
        // Judged on a map at least as new as every mark taken: one from
        // before a write's failure could show this node not yet primary.
        let map = &*self.repl.view().current();
        for (pg, target, chunk) in dirty {
            let (mine, epoch) = match dirty_fate(map.pg(pg), me, target) {
                DirtyFate::Copy { mine, epoch } => (mine, epoch),
                DirtyFate::Wait => {
                    left.push((pg, target, chunk));
                    continue;
                }
                DirtyFate::Forget => continue,
            };
            // A failed write may have made clones here and not there: they
            // are copied with their chunk.
            let copied = async {
                let remote = self.repl.remote_chunk_sums(map, pg, target, epoch, chunk).await?;
                self.copy_chunk(Route { map, epoch, mine, target }, chunk, remote, |_| BadLocal::Stop).await
            };
            match copied.await {
                Ok(bytes) => tracing::info!(%chunk, ?target, bytes, "copies made equal after a failed write"),
                Err(e) => {
                    tracing::debug!(%chunk, ?target, error = %e, "copy after a failed write; will retry");
                    left.push((pg, target, chunk));
                }
            }
        }
        self.repl.return_dirty(left);
    }

    /// Keeps the node's copying under its rate (`bytes` just sent), and
    /// behind client I/O.
    async fn throttle(&self, bytes: u64) {
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_s as f64);
        let until = {
            let mut next = lock(&self.next_free);
            // Idle time is not saved up: at most one second of burst.
            let now = clock::now();
            let start = (*next).max(now.checked_sub(Duration::from_secs(1)).unwrap_or(now));
            *next = start + cost;
            *next
        };
        tokio::time::sleep_until(until).await;
        for _ in 0..20 {
            if self.repl.client_ops() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn set_progress(&self, key: Key, f: impl FnOnce(&mut RecoveryProgress)) {
        let mut all = lock(&self.progress);
        let entry = all.entry(key).or_insert_with(|| RecoveryProgress {
            pg: key.0,
            target: key.1,
            epoch: key.2,
            chunks_done: 0,
            chunks_total: 0,
            bytes_copied: 0,
            elapsed_ms: 0,
        });
        f(entry);
    }
}

/// The two sides of a backfill, read page by page and merged in id order.
#[derive(Default)]
struct Walk {
    local: VecDeque<ChunkSums>,
    local_next: Option<ChunkId>,
    local_done: bool,
    remote: VecDeque<ChunkSums>,
    remote_next: Option<ChunkId>,
    remote_done: bool,
}

impl Walk {
    /// The chunks both sides have listed up to a common bound, each with the
    /// remote side's sums (or `None`: the remote lacks it; chunks only the
    /// remote has come with `Some`). `None` when both sides are exhausted.
    #[allow(clippy::type_complexity)]
    fn take_ready(&mut self) -> Option<Vec<(ChunkId, Option<ChunkSums>)>> {
        if self.local_done && self.remote_done && self.local.is_empty() && self.remote.is_empty() {
            return None;
        }
        // Everything up to a side's cursor has been fetched from it.
        let bound = |done: bool, next: Option<ChunkId>| if done { None } else { next };
        let bound = match (bound(self.local_done, self.local_next), bound(self.remote_done, self.remote_next)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let ready = |c: ChunkId| bound.is_none_or(|b| c <= b);
        let mut remote: HashMap<ChunkId, ChunkSums> = HashMap::new();
        while self.remote.front().is_some_and(|s| ready(s.chunk)) {
            if let Some(s) = self.remote.pop_front() {
                remote.insert(s.chunk, s);
            }
        }
        let mut batch = Vec::new();
        while self.local.front().is_some_and(|s| ready(s.chunk)) {
            if let Some(s) = self.local.pop_front() {
                batch.push((s.chunk, remote.remove(&s.chunk)));
            }
        }
        // Only on the remote: it goes (the copy finds no local chunk).
        batch.extend(remote.into_iter().map(|(chunk, sums)| (chunk, Some(sums))));
        batch.sort_by_key(|(c, _)| *c);
        Some(batch)
    }
}

fn count_chunks(disk: &DiskStore, map: &DataMap, pg: PgId) -> u64 {
    let (mut count, mut cursor) = (0u64, None);
    loop {
        let (ids, next) = disk.list_where(cursor, usize::MAX, 65_536, |c| in_pg(map, c, pg));
        count += ids.len() as u64;
        match next {
            Some(n) => cursor = Some(n),
            None => return count,
        }
    }
}

/// Runs of consecutive blocks for which `differs` holds, each at most
/// [`RUN_BLOCKS`] long: (first block, count).
fn runs(blocks: usize, differs: impl Fn(usize) -> bool) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < blocks {
        if !differs(i) {
            i += 1;
            continue;
        }
        let first = i;
        while i < blocks && differs(i) && i - first < RUN_BLOCKS {
            i += 1;
        }
        out.push((first, i - first));
    }
    out
}

fn expect_done(
    reply: Result<(ChunkResponse, Bytes), chuyi_common::rpc::RpcError>,
    target: Replica,
) -> Result<(), ReplicationError> {
    match reply {
        Ok((ChunkResponse::Done, _)) => Ok(()),
        Ok((other, _)) => {
            Err(ReplicationError::ReplicaFailed { replica: target, message: format!("answered {other:?}") })
        }
        Err(e) => Err(ReplicationError::ReplicaFailed { replica: target, message: e.to_string() }),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a chunk copy goes: from this primary's replica `mine` to
/// `target`, under the PG's `epoch` in `map`.
#[derive(Clone, Copy, Debug)]
struct Route<'a> {
    map: &'a DataMap,
    epoch: u64,
    mine: Replica,
    target: Replica,
}

/// What a copy does with a block it cannot read on this (the primary's)
/// copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BadLocal {
    /// Backfill of a new replica, with no other complete copy to mend the
    /// block from (or bad there too): the new copy's block is poisoned
    /// (reads as bad), never left as zeros.
    Poison,
    /// A copy to a complete replica after a failed write: that replica may
    /// hold the block intact, so the copy stops instead of poisoning it.
    /// Also a backfill's first try when another complete copy exists, to
    /// mend the block from it first.
    Stop,
}

/// What becomes of a chunk marked after a failed write, for one replica it
/// may differ on.
#[derive(Debug, PartialEq, Eq)]
enum DirtyFate {
    /// Copy it now, from this node's replica, under the PG's epoch.
    Copy { mine: Replica, epoch: u64 },
    /// The replica is still recovering: copy once it is complete. Its
    /// backfill may already have passed this chunk, and nothing else would
    /// come back to it (dropping the mark here left a clean PG with two
    /// different copies; the node-freeze scenario found it under load).
    Wait,
    /// Nothing left to make equal: the PG is gone, the replica left it, or
    /// this node is no longer its primary (the primary changes only when
    /// the old one leaves the PG, and the new one's copy then wins by
    /// backfill).
    Forget,
}

fn dirty_fate(pg_map: Option<&PgMap>, me: NodeId, target: Replica) -> DirtyFate {
    let Some(pg_map) = pg_map else { return DirtyFate::Forget };
    let Some(mine) = pg_map.primary().filter(|p| p.node == me) else { return DirtyFate::Forget };
    if !pg_map.replicas.contains(&target) || target == mine {
        DirtyFate::Forget
    } else if pg_map.recovering.contains(&target) {
        DirtyFate::Wait
    } else {
        DirtyFate::Copy { mine, epoch: pg_map.epoch }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dirty_chunk_waits_for_a_recovering_replica_and_is_forgotten_when_it_leaves() {
        let r = |node, disk| Replica { node, disk };
        let pg = PgMap { epoch: 7, replicas: vec![r(2, 0), r(3, 0)], recovering: vec![r(3, 0)] };
        assert_eq!(dirty_fate(Some(&pg), 2, r(3, 0)), DirtyFate::Wait);
        let clean = PgMap { recovering: vec![], ..pg.clone() };
        assert_eq!(dirty_fate(Some(&clean), 2, r(3, 0)), DirtyFate::Copy { mine: r(2, 0), epoch: 7 });
        assert_eq!(dirty_fate(Some(&clean), 2, r(1, 0)), DirtyFate::Forget, "left the PG");
        assert_eq!(dirty_fate(Some(&clean), 3, r(2, 0)), DirtyFate::Forget, "not the primary");
        assert_eq!(dirty_fate(Some(&clean), 2, r(2, 0)), DirtyFate::Forget, "itself");
        assert_eq!(dirty_fate(None, 2, r(3, 0)), DirtyFate::Forget, "no such PG");
    }

    #[test]
    fn runs_split_at_equal_blocks_and_at_the_cap() {
        let differ = [false, true, true, false, true];
        assert_eq!(runs(5, |i| differ[i]), vec![(1, 2), (4, 1)]);
        assert_eq!(runs(600, |_| true), vec![(0, 256), (256, 256), (512, 88)]);
        assert!(runs(10, |_| false).is_empty());
    }

    fn sums(ids: &[u64]) -> VecDeque<ChunkSums> {
        ids.iter()
            .map(|&i| ChunkSums { chunk: ChunkId::new(1, i), crcs: vec![i as u32], stamp: Default::default() })
            .collect()
    }

    #[test]
    fn walk_merges_pages_up_to_the_lower_cursor() {
        let mut walk = Walk {
            local: sums(&[1, 3, 5]),
            local_next: Some(ChunkId::new(1, 5)),
            local_done: false,
            remote: sums(&[2, 3]),
            remote_next: None,
            remote_done: true,
        };
        let batch = walk.take_ready().expect("not exhausted");
        let ids: Vec<_> = batch.iter().map(|(c, r)| (c.index, r.is_some())).collect();
        assert_eq!(ids, vec![(1, false), (2, true), (3, true), (5, false)]);
        walk.local_done = true;
        walk.local_next = None;
        assert_eq!(walk.take_ready().map(|b| b.len()), None);
    }

    #[test]
    fn walk_keeps_what_lies_beyond_the_other_sides_cursor() {
        let mut walk = Walk {
            local: sums(&[1, 9]),
            local_next: Some(ChunkId::new(1, 9)),
            local_done: false,
            remote: sums(&[4]),
            remote_next: Some(ChunkId::new(1, 4)),
            remote_done: false,
        };
        let batch = walk.take_ready().expect("not exhausted");
        assert_eq!(batch.iter().map(|(c, _)| c.index).collect::<Vec<_>>(), vec![1, 4]);
        assert_eq!(walk.local.len(), 1, "chunk 9 waits for the remote's next page");
    }
}
