//! Applying one command to the tables: validate everything, then write.
//!
//! Pure apart from the [`TablesMut`] it is given: no clock (the entry's
//! `now_ms`), no randomness (ids come from a counter, sequences from the log
//! index), so every member computes the same state. A refusal returns
//! `Ok(Err(MetaError))`; the caller rolls back whatever the command staged,
//! so a refused command changes nothing. `Err(StoreError)` is the store
//! failing, which stops the state machine.

use chuyi_common::ids::NodeId;
use chuyi_common::limits::{BLOCK_SIZE_BYTES, CHUNK_SIZE_MAX_BYTES};

use super::command::{Command, PoolChange, Reply};
use super::error::{Kind, MetaError};
use super::keys;
use super::model::{
    Bucket, Lease, Millis, NodeRecord, NodeState, PgRecord, Pool, PoolDefaults, Quarantine, User, Versioning, Volume,
    VolumeState,
};
use super::names;
use super::tables::TablesMut;
use super::{objects, packs, uploads, view};
use crate::placement::{self, DiskRef, PgChange};
use crate::store::StoreError;

/// What one command may depend on besides the tables.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx {
    pub(crate) now_ms: Millis,
    /// Unique and increasing across the log: `index << 16 | position`.
    pub(crate) seq: u64,
}

pub(crate) type Applied = Result<Result<Reply, MetaError>, StoreError>;

pub use chuyi_meta_api::limits::LEASE_TTL_MAX_MS;

pub(crate) fn apply(t: &mut impl TablesMut, ctx: Ctx, command: &Command) -> Applied {
    match command {
        Command::RegisterNode { id, addrs, failure_domain, disks } => {
            register_node(t, ctx, *id, addrs, failure_domain, disks)
        }
        Command::Heartbeat { id, disks } => heartbeat(t, ctx, *id, disks),
        Command::MarkNodeDown { id, timeout_ms } => mark_down(t, ctx, *id, *timeout_ms),
        Command::Rebalance { max_moves } => rebalance(t, *max_moves),
        Command::PgRecovered { pool, pg, disk, epoch } => pg_recovered(t, *pool, *pg, *disk, *epoch),
        Command::CreatePool { name, class, redundancy, pg_count, separate_failure_domains } => {
            let pool = Pool {
                id: 0,
                name: name.clone(),
                class: *class,
                redundancy: *redundancy,
                pg_count: *pg_count,
                separate_failure_domains: *separate_failure_domains,
            };
            create_pool(t, pool)
        }
        Command::DeletePool { name } => delete_pool(t, name),
        Command::CreateVolume { name, pool, size_bytes, chunk_size_bytes, wrapped_key } => {
            create_volume(t, ctx, name, pool, *size_bytes, *chunk_size_bytes, wrapped_key)
        }
        Command::ResizeVolume { name, size_bytes } => resize_volume(t, name, *size_bytes),
        Command::DeleteVolume { name } => delete_volume(t, ctx, name),
        Command::AcquireLease { volume, holder, ttl_ms } => acquire_lease(t, ctx, volume, holder, *ttl_ms),
        Command::RenewLease { volume, holder, lease_id, ttl_ms } => {
            renew_lease(t, ctx, volume, holder, *lease_id, Some(*ttl_ms))
        }
        Command::ReleaseLease { volume, holder, lease_id } => renew_lease(t, ctx, volume, holder, *lease_id, None),
        Command::CreateUser { name, access_key, secret, admin } => {
            let user = User {
                name: name.clone(),
                access_key: access_key.clone(),
                secret: secret.clone(),
                admin: *admin,
                created_ms: ctx.now_ms,
            };
            create_user(t, user)
        }
        Command::DeleteUser { name } => delete_user(t, name),
        Command::CreateBucket { name, owner, pool } => create_bucket(t, ctx, name, owner, pool),
        Command::DeleteBucket { name } => delete_bucket(t, name),
        Command::SetVersioning { bucket, versioning } => set_versioning(t, bucket, *versioning),
        Command::SetBucketSettings { bucket, settings } => {
            let Some(mut b) = view::bucket(t, bucket)? else { refuse!(MetaError::not_found(Kind::Bucket, bucket)) };
            b.settings = settings.clone();
            t.put_rec("bucket", &keys::bucket(bucket), &b)?;
            Ok(Ok(Reply::Bucket(b)))
        }
        Command::BeginData { pool, len, ttl_ms } => objects::begin_data(t, ctx, pool, *len, *ttl_ms),
        Command::AbandonData { owner } => objects::abandon_data(t, *owner),
        Command::OpenPack { pool, ttl_ms } => packs::open_pack(t, ctx, pool, *ttl_ms),
        Command::MovePacked { bucket, key, seq, from, to } => packs::move_packed(t, ctx, bucket, key, *seq, from, to),
        Command::RetirePacks { max, grace_ms } => packs::retire_packs(t, ctx, *max, *grace_ms),
        Command::PutObject { bucket, key, object } => objects::put_object(t, ctx, bucket, key, object),
        Command::DeleteObject { bucket, key, version_id } => {
            objects::delete_object(t, ctx, bucket, key, version_id.as_deref())
        }
        Command::CreateUpload { bucket, key, object } => uploads::create_upload(t, ctx, bucket, key, object),
        Command::PutPart { bucket, key, upload_id, number, etag, run } => {
            uploads::put_part(t, ctx, uploads::NewPart { bucket, key, upload_id, number: *number, etag, run: *run })
        }
        Command::CompleteUpload { bucket, key, upload_id, parts, etag, min_part_bytes } => {
            let completion =
                uploads::Completion { bucket, key, upload_id, parts, etag, min_part_bytes: *min_part_bytes };
            uploads::complete_upload(t, ctx, completion)
        }
        Command::AbortUpload { bucket, key, upload_id } => uploads::abort_upload(t, bucket, key, upload_id),
        Command::ForgetGarbage { owners } => objects::forget_garbage(t, owners),
        Command::ExpirePending { max } => objects::expire_pending(t, ctx, *max),
        Command::ReportUnreachable { reporter, node } => report_unreachable(t, ctx, *reporter, *node),
        Command::DestroyVolumeKey { name, holder } => destroy_volume_key(t, ctx, name, holder),
        Command::RewrapVolumeKey { name, old, new } => rewrap_volume_key(t, name, old, new),
        Command::SetPoolDefaults { pool, defaults } => set_pool_defaults(t, pool, defaults),
    }
}

/// The time an entry applies at: its leader's clock, but never earlier than
/// an entry before it. A new leader whose clock lags cannot move time
/// backwards (un-expiring leases); one whose clock runs ahead still expires
/// leases early, so holders keep a margin on their own clock (DESIGN:
/// leases), and members' clocks are assumed within seconds (NTP).
pub(crate) fn entry_time(t: &mut impl TablesMut, now_ms: Millis) -> Result<Millis, StoreError> {
    let last = t.get_rec::<u64>("last time", keys::LAST_NOW)?.unwrap_or(0);
    let now = now_ms.max(last);
    if now != last {
        t.put_rec("last time", keys::LAST_NOW, &now)?;
    }
    Ok(now)
}

/// A new chunk owner of `pool`, or `None` once the pool's 2^40 are spent
/// (an owner must never be given twice: it would alias another's data).
pub(crate) fn next_owner(t: &mut impl TablesMut, pool: u32) -> Result<Option<u64>, StoreError> {
    let seq = next_id(t)?;
    Ok((seq < 1 << chuyi_common::map::OWNER_SEQ_BITS).then(|| chuyi_common::map::owner_id(pool, seq)))
}

pub(crate) fn next_id(t: &mut impl TablesMut) -> Result<u64, StoreError> {
    let id = t.get_rec::<u64>("next id", keys::NEXT_ID)?.unwrap_or(1);
    t.put_rec("next id", keys::NEXT_ID, &(id + 1))?;
    Ok(id)
}

/// Pool ids have their own counter: they are u32 (PG keys) and must never
/// run out because leases consumed the shared one.
fn next_pool_id(t: &mut impl TablesMut) -> Result<Option<u32>, StoreError> {
    let id = t.get_rec::<u32>("next pool id", keys::NEXT_POOL_ID)?.unwrap_or(1);
    // Pool ids ride in the top bits of chunk owner ids.
    if id > chuyi_common::map::POOL_ID_MAX {
        return Ok(None);
    }
    t.put_rec("next pool id", keys::NEXT_POOL_ID, &(id + 1))?;
    Ok(Some(id))
}

/// The whole map travels in one reply: its PGs are bounded.
fn check_total_pgs(t: &impl TablesMut, adding: u32) -> Result<Result<(), MetaError>, StoreError> {
    let total: u64 = view::pools(t)?.iter().map(|p| u64::from(p.pg_count)).sum::<u64>() + u64::from(adding);
    if total > u64::from(names::CLUSTER_PGS_MAX) {
        return Ok(Err(MetaError::invalid(
            "pg count",
            format!("the cluster would have {total} PGs; at most {}", names::CLUSTER_PGS_MAX),
        )));
    }
    Ok(Ok(()))
}

fn bump_epoch(t: &mut impl TablesMut) -> Result<u64, StoreError> {
    let epoch = view::epoch(t)? + 1;
    t.put_rec("epoch", keys::EPOCH, &epoch)?;
    Ok(epoch)
}

// ---- nodes and placement ----

fn register_node(
    t: &mut impl TablesMut,
    ctx: Ctx,
    id: NodeId,
    addrs: &[String],
    failure_domain: &str,
    disks: &[super::model::DiskRecord],
) -> Applied {
    if addrs.is_empty() {
        refuse!(MetaError::invalid("node addresses", "a node needs at least one address"));
    }
    if let Err(e) = names::check_disks(disks) {
        refuse!(e);
    }
    let record = NodeRecord {
        id,
        addrs: addrs.to_vec(),
        failure_domain: failure_domain.to_string(),
        disks: disks.to_vec(),
        state: if quarantined(t, ctx, id)? { NodeState::Down } else { NodeState::Up },
        last_heartbeat_ms: ctx.now_ms,
    };
    let before = view::node(t, id)?;
    t.put_rec("node", &keys::node(id), &record)?;
    let map_changed = before.as_ref().is_none_or(|b| b.addrs != record.addrs || changed_for_placement(b, &record));
    reconcile(t, map_changed)
}

fn heartbeat(t: &mut impl TablesMut, ctx: Ctx, id: NodeId, disks: &[super::model::DiskRecord]) -> Applied {
    let Some(before) = view::node(t, id)? else { refuse!(MetaError::UnknownNode(id)) };
    if let Err(e) = names::check_disks(disks) {
        refuse!(e);
    }
    let mut record = before.clone();
    record.disks = disks.to_vec();
    record.state = if quarantined(t, ctx, id)? { NodeState::Down } else { NodeState::Up };
    record.last_heartbeat_ms = ctx.now_ms;
    t.put_rec("node", &keys::node(id), &record)?;
    if changed_for_placement(&before, &record) {
        reconcile(t, true)
    } else {
        Ok(Ok(Reply::Done))
    }
}

/// Whether placement could decide differently: up/down, or a disk's
/// presence, class, capacity or state changed (not its used bytes).
pub(crate) fn changed_for_placement(a: &NodeRecord, b: &NodeRecord) -> bool {
    let shape = |n: &NodeRecord| n.disks.iter().map(|d| (d.id, d.class, d.capacity_bytes, d.state)).collect::<Vec<_>>();
    a.state != b.state || a.failure_domain != b.failure_domain || shape(a) != shape(b)
}

fn mark_down(t: &mut impl TablesMut, ctx: Ctx, id: NodeId, timeout_ms: u64) -> Applied {
    let Some(mut record) = view::node(t, id)? else { refuse!(MetaError::UnknownNode(id)) };
    let silent_for = ctx.now_ms.saturating_sub(record.last_heartbeat_ms);
    if record.state == NodeState::Down || silent_for < timeout_ms {
        return Ok(Ok(Reply::Done));
    }
    record.state = NodeState::Down;
    t.put_rec("node", &keys::node(id), &record)?;
    reconcile(t, true)
}

/// The first penalty of a node reported unreachable, doubled per report in
/// a row up to the cap. A report arriving after a quiet spell of the cap
/// starts again from the first.
const QUARANTINE_FIRST_MS: u64 = 10_000;
const QUARANTINE_MAX_MS: u64 = 600_000;

fn quarantined(t: &mut impl TablesMut, ctx: Ctx, id: NodeId) -> Result<bool, StoreError> {
    let q = t.get_rec::<Quarantine>("quarantine", &keys::quarantine(id))?;
    Ok(q.is_some_and(|q| ctx.now_ms < q.until_ms))
}

fn report_unreachable(t: &mut impl TablesMut, ctx: Ctx, reporter: NodeId, id: NodeId) -> Applied {
    if reporter == id {
        refuse!(MetaError::invalid("unreachable report", format!("node {id} reported itself")));
    }
    let Some(from) = view::node(t, reporter)? else { refuse!(MetaError::UnknownNode(reporter)) };
    let Some(mut record) = view::node(t, id)? else { refuse!(MetaError::UnknownNode(id)) };
    // A node that is down itself cannot judge; one already down is done.
    if from.state == NodeState::Down || record.state == NodeState::Down {
        return Ok(Ok(Reply::Done));
    }
    let key = keys::quarantine(id);
    let before = t.get_rec::<Quarantine>("quarantine", &key)?;
    let strikes = match before {
        Some(q) if ctx.now_ms < q.until_ms.saturating_add(QUARANTINE_MAX_MS) => q.strikes.saturating_add(1),
        _ => 1,
    };
    let penalty = QUARANTINE_FIRST_MS.saturating_mul(1 << (strikes - 1).min(16)).min(QUARANTINE_MAX_MS);
    let q = Quarantine { until_ms: ctx.now_ms.saturating_add(penalty), strikes, last_reporter: reporter };
    t.put_rec("quarantine", &key, &q)?;
    record.state = NodeState::Down;
    t.put_rec("node", &keys::node(id), &record)?;
    reconcile(t, true)
}

/// Repairs every pool against the current nodes; bumps the epoch once if
/// anything moved or `map_changed`.
fn reconcile(t: &mut impl TablesMut, map_changed: bool) -> Applied {
    let nodes = view::node_views(t)?;
    let mut changes = Vec::new();
    for pool in view::pools(t)? {
        let current = view::pgs(t, pool.id)?;
        let sets: Vec<_> = current.iter().map(|pg| pg.replicas.clone()).collect();
        match placement::repair(&view::rule(&pool), &nodes, &sets) {
            Ok(moves) => changes.extend(
                moves
                    .into_iter()
                    .filter_map(|change| keep_a_complete_primary(change, &current))
                    .map(|change| PoolChange { pool: pool.name.clone(), change }),
            ),
            // The pool's map and rule are the state machine's own: a
            // mismatch is a broken invariant, reported, never half-applied.
            Err(e) => return Err(StoreError::Invariant(format!("repairing pool {}: {e}", pool.name))),
        }
    }
    changes.retain(|c| c.change.from != c.change.to);
    apply_moves(t, changes, map_changed)
}

fn rebalance(t: &mut impl TablesMut, max_moves: usize) -> Applied {
    let nodes = view::node_views(t)?;
    let mut changes = Vec::new();
    for pool in view::pools(t)? {
        let pgs = view::pgs(t, pool.id)?;
        let frozen = view::recovering_pgs(&pgs);
        let sets: Vec<_> = pgs.into_iter().map(|pg| pg.replicas).collect();
        match placement::rebalance(&view::rule(&pool), &nodes, &sets, &frozen, max_moves) {
            Ok(moves) => changes.extend(moves.into_iter().map(|change| PoolChange { pool: pool.name.clone(), change })),
            Err(e) => return Err(StoreError::Invariant(format!("rebalancing pool {}: {e}", pool.name))),
        }
    }
    apply_moves(t, changes, false)
}

fn apply_moves(t: &mut impl TablesMut, changes: Vec<PoolChange>, map_changed: bool) -> Applied {
    if changes.is_empty() && !map_changed {
        return Ok(Ok(Reply::Done));
    }
    let epoch = bump_epoch(t)?;
    for c in &changes {
        let Some(pool) = view::pool(t, &c.pool)? else {
            return Err(StoreError::Invariant(format!("pool {} vanished while moving its PGs", c.pool)));
        };
        let key = keys::pg(pool.id, c.change.pg);
        let Some(mut pg) = t.get_rec::<PgRecord>("pg", &key)? else {
            return Err(StoreError::Invariant(format!("pool {} has no PG {}", c.pool, c.change.pg)));
        };
        pg.recovering = joined(&c.change, &pg.recovering);
        pg.replicas = c.change.to.clone();
        pg.epoch = epoch;
        t.put_rec("pg", &key, &pg)?;
    }
    Ok(Ok(Reply::Moves { epoch, changes }))
}

/// Placement knows replicas, not which of them hold the data: a replica
/// still being backfilled does not. A repair whose surviving replicas are
/// all such is not applied (the PG keeps naming its complete replicas, whose
/// return is the way back to the data, as for a lost PG); otherwise a
/// complete survivor becomes primary.
fn keep_a_complete_primary(mut change: PgChange, current: &[PgRecord]) -> Option<PgChange> {
    let Some(pg) = current.iter().find(|pg| pg.pg == change.pg) else { return Some(change) };
    let complete = |d: &DiskRef| change.from.contains(d) && !pg.recovering.contains(d);
    let had_complete = change.from.iter().any(|d| !pg.recovering.contains(d));
    match change.to.iter().position(complete) {
        Some(at) => {
            let primary = change.to.remove(at);
            change.to.insert(0, primary);
            Some(change)
        }
        None if had_complete && change.to.iter().any(|d| change.from.contains(d)) => None,
        None => Some(change),
    }
}

/// Replicas of `change.to` without the data yet: new ones, and those still
/// recovering before.
fn joined(change: &PgChange, recovering: &[DiskRef]) -> Vec<DiskRef> {
    change.to.iter().filter(|d| !change.from.contains(d) || recovering.contains(d)).copied().collect()
}

/// `epoch` is the PG's epoch the backfill started at: a report from before
/// a later change (the disk left and rejoined) must not clear the new one.
fn pg_recovered(t: &mut impl TablesMut, pool: u32, pg: u32, disk: DiskRef, epoch: u64) -> Applied {
    let key = keys::pg(pool, pg);
    let Some(mut record) = t.get_rec::<PgRecord>("pg", &key)? else {
        refuse!(MetaError::not_found(Kind::Pool, format!("pool id {pool} PG {pg}")))
    };
    if record.epoch != epoch {
        refuse!(MetaError::invalid(
            "recovery report",
            format!("PG {pool}.{pg} is at epoch {}, not {epoch}", record.epoch)
        ));
    }
    if !record.recovering.contains(&disk) {
        return Ok(Ok(Reply::Done));
    }
    record.recovering.retain(|d| *d != disk);
    record.epoch = bump_epoch(t)?;
    t.put_rec("pg", &key, &record)?;
    Ok(Ok(Reply::Done))
}

// ---- pools and volumes ----

fn create_pool(t: &mut impl TablesMut, mut pool: Pool) -> Applied {
    if let Err(e) = names::check_name("pool name", &pool.name) {
        refuse!(e);
    }
    if let Err(e) = names::check_pool_shape(pool.redundancy, pool.pg_count) {
        refuse!(e);
    }
    if view::pool(t, &pool.name)?.is_some() {
        refuse!(MetaError::exists(Kind::Pool, &pool.name));
    }
    let sets = match placement::place_pool(&view::rule(&pool), &view::node_views(t)?) {
        Ok(sets) => sets,
        Err(e) => refuse!(MetaError::Placement(e.to_string())),
    };
    let Some(id) = next_pool_id(t)? else { refuse!(MetaError::invalid("pool", "pool ids are exhausted")) };
    pool.id = id;
    if let Err(e) = check_total_pgs(t, pool.pg_count)? {
        refuse!(e);
    }
    let epoch = bump_epoch(t)?;
    for (pg, replicas) in (0u32..).zip(sets) {
        let record = PgRecord { pool: pool.id, pg, replicas, recovering: Vec::new(), epoch };
        t.put_rec("pg", &keys::pg(pool.id, pg), &record)?;
    }
    t.put_rec("pool", &keys::pool(&pool.name), &pool)?;
    Ok(Ok(Reply::Pool(pool)))
}

fn delete_pool(t: &mut impl TablesMut, name: &str) -> Applied {
    let Some(pool) = view::pool(t, name)? else { refuse!(MetaError::not_found(Kind::Pool, name)) };
    if let Some(v) = view::volumes(t)?.into_iter().find(|v| v.pool == name) {
        refuse!(MetaError::InUse { kind: Kind::Pool, name: name.into(), user_kind: Kind::Volume, user: v.name });
    }
    if let Some(b) = view::buckets(t)?.into_iter().find(|b| b.pool == name) {
        refuse!(MetaError::InUse { kind: Kind::Pool, name: name.into(), user_kind: Kind::Bucket, user: b.name });
    }
    // Object data still to be freed needs the pool's PGs to be deleted.
    if view::object_data_left(t, pool.id)? {
        refuse!(MetaError::invalid("pool", format!("pool {name} still has object data being written or freed")));
    }
    for pg in 0..pool.pg_count {
        t.delete(&keys::pg(pool.id, pg));
    }
    t.delete(&keys::pool(name));
    t.delete(&keys::pool_defaults(name));
    bump_epoch(t)?;
    Ok(Ok(Reply::Done))
}

fn check_fits(t: &impl TablesMut, pool: &Pool, size_bytes: u64) -> Result<Option<MetaError>, StoreError> {
    let available = view::pool_capacity(t, pool)?;
    Ok((size_bytes > available).then(|| MetaError::VolumeTooLarge {
        pool: pool.name.clone(),
        requested: size_bytes,
        available,
    }))
}

fn create_volume(
    t: &mut impl TablesMut,
    ctx: Ctx,
    name: &str,
    pool_name: &str,
    size_bytes: u64,
    chunk_size_bytes: u32,
    wrapped_key: &[u8],
) -> Applied {
    if let Err(e) = names::check_name("volume name", name) {
        refuse!(e);
    }
    if let Err(e) = check_volume_size(size_bytes) {
        refuse!(e);
    }
    let chunk = chunk_size_bytes as usize;
    if !chunk.is_power_of_two() || !(BLOCK_SIZE_BYTES * 16..=CHUNK_SIZE_MAX_BYTES).contains(&chunk) {
        refuse!(MetaError::invalid(
            "chunk size",
            format!("{chunk} is not a power of two from {} to {CHUNK_SIZE_MAX_BYTES}", BLOCK_SIZE_BYTES * 16)
        ));
    }
    if view::volume(t, name)?.is_some() {
        refuse!(MetaError::exists(Kind::Volume, name));
    }
    let Some(pool) = view::pool(t, pool_name)? else { refuse!(MetaError::not_found(Kind::Pool, pool_name)) };
    if wrapped_key.is_empty() && view::pool_defaults(t, pool_name)?.encrypt {
        refuse!(MetaError::invalid(
            "volume",
            format!("pool {pool_name} encrypts every volume: create {name} encrypted (this needs the KEK)")
        ));
    }
    if let Some(e) = check_fits(t, &pool, size_bytes)? {
        refuse!(e);
    }
    let Some(id) = next_owner(t, pool.id)? else {
        refuse!(MetaError::invalid("volume", format!("pool {pool_name} has given out every chunk owner id")))
    };
    let volume = Volume {
        id,
        name: name.to_string(),
        pool: pool_name.to_string(),
        size_bytes,
        chunk_size_bytes,
        wrapped_key: wrapped_key.to_vec(),
        state: VolumeState::Ready,
        lease: None,
        created_ms: ctx.now_ms,
    };
    t.put_rec("volume", &keys::volume(name), &volume)?;
    Ok(Ok(Reply::Volume(volume)))
}

fn check_volume_size(size_bytes: u64) -> Result<(), MetaError> {
    if size_bytes == 0 || !size_bytes.is_multiple_of(BLOCK_SIZE_BYTES as u64) {
        return Err(MetaError::invalid("volume size", format!("{size_bytes} is not a positive multiple of 4096")));
    }
    Ok(())
}

fn resize_volume(t: &mut impl TablesMut, name: &str, size_bytes: u64) -> Applied {
    let Some(mut volume) = view::volume(t, name)? else { refuse!(MetaError::not_found(Kind::Volume, name)) };
    if let Err(e) = check_volume_size(size_bytes) {
        refuse!(e);
    }
    if size_bytes < volume.size_bytes {
        refuse!(MetaError::VolumeShrink { volume: name.into(), current: volume.size_bytes, requested: size_bytes });
    }
    let Some(pool) = view::pool(t, &volume.pool)? else {
        return Err(StoreError::Invariant(format!("volume {name} names missing pool {}", volume.pool)));
    };
    if let Some(e) = check_fits(t, &pool, size_bytes)? {
        refuse!(e);
    }
    volume.size_bytes = size_bytes;
    t.put_rec("volume", &keys::volume(name), &volume)?;
    Ok(Ok(Reply::Volume(volume)))
}

fn delete_volume(t: &mut impl TablesMut, ctx: Ctx, name: &str) -> Applied {
    let Some(volume) = view::volume(t, name)? else { refuse!(MetaError::not_found(Kind::Volume, name)) };
    if let Some(lease) = volume.lease.filter(|l| l.is_live(ctx.now_ms)) {
        refuse!(MetaError::LeaseHeld { volume: name.into(), holder: lease.holder, expires_ms: lease.expires_ms });
    }
    t.delete(&keys::volume(name));
    Ok(Ok(Reply::Done))
}

fn set_pool_defaults(t: &mut impl TablesMut, name: &str, defaults: &PoolDefaults) -> Applied {
    if view::pool(t, name)?.is_none() {
        refuse!(MetaError::not_found(Kind::Pool, name));
    }
    t.put_rec("pool defaults", &keys::pool_defaults(name), defaults)?;
    Ok(Ok(Reply::Done))
}

fn destroy_volume_key(t: &mut impl TablesMut, ctx: Ctx, name: &str, holder: &str) -> Applied {
    let Some(mut volume) = view::volume(t, name)? else { refuse!(MetaError::not_found(Kind::Volume, name)) };
    if let Some(lease) = volume.lease.clone().filter(|l| l.is_live(ctx.now_ms) && l.holder != holder) {
        refuse!(MetaError::LeaseHeld { volume: name.into(), holder: lease.holder, expires_ms: lease.expires_ms });
    }
    if volume.wrapped_key.is_empty() && volume.state != VolumeState::KeyDestroyed {
        refuse!(MetaError::invalid("volume key", format!("volume {name} is not encrypted")));
    }
    volume.wrapped_key.clear();
    volume.state = VolumeState::KeyDestroyed;
    t.put_rec("volume", &keys::volume(name), &volume)?;
    Ok(Ok(Reply::Volume(volume)))
}

fn rewrap_volume_key(t: &mut impl TablesMut, name: &str, old: &[u8], new: &[u8]) -> Applied {
    let Some(mut volume) = view::volume(t, name)? else { refuse!(MetaError::not_found(Kind::Volume, name)) };
    if volume.wrapped_key.is_empty() || new.is_empty() {
        refuse!(MetaError::invalid(
            "volume key",
            format!("volume {name} has no key to rewrap, or the new one is empty")
        ));
    }
    if volume.wrapped_key != old {
        refuse!(MetaError::invalid("volume key", format!("volume {name}'s key changed meanwhile")));
    }
    volume.wrapped_key = new.to_vec();
    t.put_rec("volume", &keys::volume(name), &volume)?;
    Ok(Ok(Reply::Volume(volume)))
}

fn check_ttl(ttl_ms: u64) -> Result<(), MetaError> {
    if ttl_ms == 0 || ttl_ms > LEASE_TTL_MAX_MS {
        return Err(MetaError::invalid("lease ttl", format!("{ttl_ms} ms is not within 1..={LEASE_TTL_MAX_MS}")));
    }
    Ok(())
}

fn acquire_lease(t: &mut impl TablesMut, ctx: Ctx, name: &str, holder: &str, ttl_ms: u64) -> Applied {
    if let Err(e) = check_ttl(ttl_ms).and(names::check_name("lease holder", holder)) {
        refuse!(e);
    }
    let Some(mut volume) = view::volume(t, name)? else { refuse!(MetaError::not_found(Kind::Volume, name)) };
    if let Some(lease) = volume.lease.as_ref().filter(|l| l.is_live(ctx.now_ms) && l.holder != holder) {
        refuse!(MetaError::LeaseHeld {
            volume: name.into(),
            holder: lease.holder.clone(),
            expires_ms: lease.expires_ms
        });
    }
    let lease = Lease { holder: holder.to_string(), id: next_id(t)?, expires_ms: ctx.now_ms.saturating_add(ttl_ms) };
    volume.lease = Some(lease.clone());
    t.put_rec("volume", &keys::volume(name), &volume)?;
    Ok(Ok(Reply::Lease(lease)))
}

/// Renews (`ttl_ms` given) or releases the live lease `lease_id` of `holder`.
fn renew_lease(
    t: &mut impl TablesMut,
    ctx: Ctx,
    name: &str,
    holder: &str,
    lease_id: u64,
    ttl_ms: Option<u64>,
) -> Applied {
    if let Some(Err(e)) = ttl_ms.map(check_ttl) {
        refuse!(e);
    }
    let Some(mut volume) = view::volume(t, name)? else { refuse!(MetaError::not_found(Kind::Volume, name)) };
    let current = volume.lease.as_ref().filter(|l| l.holder == holder && l.id == lease_id);
    // A release may come after expiry (nothing else took the lease); a
    // renewal may not: the holder must already have stopped writing.
    let usable = current.is_some_and(|l| ttl_ms.is_none() || l.is_live(ctx.now_ms));
    if !usable {
        refuse!(MetaError::StaleLease { volume: name.into(), holder: holder.into(), lease_id });
    }
    let reply = match ttl_ms {
        Some(ttl) => {
            let lease = Lease { holder: holder.into(), id: lease_id, expires_ms: ctx.now_ms.saturating_add(ttl) };
            volume.lease = Some(lease.clone());
            Reply::Lease(lease)
        }
        None => {
            volume.lease = None;
            Reply::Done
        }
    };
    t.put_rec("volume", &keys::volume(name), &volume)?;
    Ok(Ok(reply))
}

// ---- users and buckets ----

fn create_user(t: &mut impl TablesMut, user: User) -> Applied {
    if let Err(e) = names::check_name("user name", &user.name).and(names::check_access_key(&user.access_key)) {
        refuse!(e);
    }
    if t.get(&keys::user_name(&user.name))?.is_some() {
        refuse!(MetaError::exists(Kind::User, &user.name));
    }
    if t.get(&keys::user(&user.access_key))?.is_some() {
        refuse!(MetaError::exists(Kind::AccessKey, &user.access_key));
    }
    t.put_rec("user name", &keys::user_name(&user.name), &user.access_key)?;
    t.put_rec("user", &keys::user(&user.access_key), &user)?;
    Ok(Ok(Reply::User(user)))
}

fn delete_user(t: &mut impl TablesMut, name: &str) -> Applied {
    let Some(user) = view::user_by_name(t, name)? else { refuse!(MetaError::not_found(Kind::User, name)) };
    if let Some(b) = view::buckets(t)?.into_iter().find(|b| b.owner == name) {
        refuse!(MetaError::InUse { kind: Kind::User, name: name.into(), user_kind: Kind::Bucket, user: b.name });
    }
    t.delete(&keys::user_name(name));
    t.delete(&keys::user(&user.access_key));
    Ok(Ok(Reply::Done))
}

fn create_bucket(t: &mut impl TablesMut, ctx: Ctx, name: &str, owner: &str, pool: &str) -> Applied {
    if let Err(e) = names::check_bucket_name(name) {
        refuse!(e);
    }
    if view::bucket(t, name)?.is_some() {
        refuse!(MetaError::exists(Kind::Bucket, name));
    }
    if view::user_by_name(t, owner)?.is_none() {
        refuse!(MetaError::not_found(Kind::User, owner));
    }
    if view::pool(t, pool)?.is_none() {
        refuse!(MetaError::not_found(Kind::Pool, pool));
    }
    let bucket = Bucket {
        name: name.into(),
        owner: owner.into(),
        pool: pool.into(),
        created_ms: ctx.now_ms,
        versioning: Versioning::Unset,
        settings: Default::default(),
    };
    t.put_rec("bucket", &keys::bucket(name), &bucket)?;
    Ok(Ok(Reply::Bucket(bucket)))
}

fn delete_bucket(t: &mut impl TablesMut, name: &str) -> Applied {
    if view::bucket(t, name)?.is_none() {
        refuse!(MetaError::not_found(Kind::Bucket, name));
    }
    let objects = keys::bucket_objects(name);
    let end = keys::prefix_end(&objects).unwrap_or_default();
    if !t.scan(&objects, &end, 1)?.is_empty() {
        refuse!(MetaError::BucketNotEmpty(name.into()));
    }
    uploads::abort_all(t, name)?;
    t.delete(&keys::bucket(name));
    t.delete(&keys::bucket_usage(name));
    Ok(Ok(Reply::Done))
}

fn set_versioning(t: &mut impl TablesMut, name: &str, versioning: Versioning) -> Applied {
    let Some(mut bucket) = view::bucket(t, name)? else { refuse!(MetaError::not_found(Kind::Bucket, name)) };
    if versioning == Versioning::Unset {
        refuse!(MetaError::invalid("versioning", "a bucket's versioning can be Enabled or Suspended, not unset"));
    }
    bucket.versioning = versioning;
    t.put_rec("bucket", &keys::bucket(name), &bucket)?;
    Ok(Ok(Reply::Bucket(bucket)))
}
