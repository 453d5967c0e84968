//! Applying the commands about storage nodes and PG placement: registering,
//! heartbeats, marking down, reports of unreachable peers, moving PGs
//! (repair and rebalance) and recovered replicas.

use chuyi_common::ids::NodeId;

use super::apply::{bump_epoch, Applied, Ctx};
use super::error::{Kind, MetaError};
use super::keys;
use super::model::{NodeRecord, NodeState, PgRecord, Quarantine};
use super::names;
use super::tables::TableError;
use super::tables::TablesMut;
use super::view;
use super::{PoolChange, Reply};
use crate::placement::{self, DiskRef, PgChange};

pub(super) fn register_node(
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

pub(super) fn heartbeat(t: &mut impl TablesMut, ctx: Ctx, id: NodeId, disks: &[super::model::DiskRecord]) -> Applied {
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

pub(super) fn mark_down(t: &mut impl TablesMut, ctx: Ctx, id: NodeId, timeout_ms: u64) -> Applied {
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

pub(super) fn quarantined(t: &mut impl TablesMut, ctx: Ctx, id: NodeId) -> Result<bool, TableError> {
    let q = t.get_rec::<Quarantine>("quarantine", &keys::quarantine(id))?;
    Ok(q.is_some_and(|q| ctx.now_ms < q.until_ms))
}

pub(super) fn report_unreachable(t: &mut impl TablesMut, ctx: Ctx, reporter: NodeId, id: NodeId) -> Applied {
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
pub(super) fn reconcile(t: &mut impl TablesMut, map_changed: bool) -> Applied {
    let nodes = view::node_views(t)?;
    let mut changes = Vec::new();
    for pool in view::pools(t)? {
        let current = view::pgs(t, pool.id)?;
        // Complete replicas first: a repair keeps survivors in this order
        // while they fit the pool's rule, so one that must go (a rebalance's
        // new replica in the failure domain of the one it replaces, when the
        // primary is lost mid-move) is a half-filled one.
        let sets: Vec<_> = current.iter().map(complete_first).collect();
        match placement::repair(&view::rule(&pool), &nodes, &sets) {
            Ok(moves) => changes.extend(
                moves
                    .into_iter()
                    .filter_map(|change| keep_a_complete_primary(change, &current))
                    .filter(|change| change.from != change.to)
                    .map(|change| as_recorded(change, &current))
                    .map(|change| PoolChange { pool: pool.name.clone(), change }),
            ),
            // The pool's map and rule are the state machine's own: a
            // mismatch is a broken invariant, reported, never half-applied.
            Err(e) => return Err(TableError::Invariant(format!("repairing pool {}: {e}", pool.name))),
        }
    }
    apply_moves(t, changes, map_changed)
}

pub(super) fn rebalance(t: &mut impl TablesMut, max_moves: usize) -> Applied {
    let nodes = view::node_views(t)?;
    let mut changes = Vec::new();
    for pool in view::pools(t)? {
        let pgs = view::pgs(t, pool.id)?;
        let frozen = view::recovering_pgs(&pgs);
        let sets = view::placed_sets(pgs, pool.redundancy.replicas());
        match placement::rebalance(&view::rule(&pool), &nodes, &sets, &frozen, max_moves) {
            Ok(moves) => changes.extend(moves.into_iter().map(|change| PoolChange { pool: pool.name.clone(), change })),
            Err(e) => return Err(TableError::Invariant(format!("rebalancing pool {}: {e}", pool.name))),
        }
    }
    apply_moves(t, changes, false)
}

/// `change` with its `from` in the record's order (repair saw the complete
/// replicas first), as the Moves reply and the log report it. Only for a
/// change that moves something: one that does not (a lost PG's) is
/// dropped before, while `from` and `to` are still in the same order.
fn as_recorded(mut change: PgChange, current: &[PgRecord]) -> PgChange {
    if let Some(pg) = current.iter().find(|pg| pg.pg == change.pg) {
        change.from = pg.replicas.clone();
    }
    change
}

/// `pg`'s replicas, the complete ones first, each group in its order.
fn complete_first(pg: &PgRecord) -> Vec<DiskRef> {
    let (complete, recovering): (Vec<DiskRef>, Vec<DiskRef>) =
        pg.replicas.iter().partition(|d| !pg.recovering.contains(d));
    [complete, recovering].concat()
}

/// The replicas a PG names while `change` is under way. A repair's target
/// is taken at once: what it drops is down. A rebalance drops a replica
/// that is up and complete, so it keeps that replica, after the new ones,
/// until every new replica is backfilled ([`pg_recovered`]): until then
/// the PG still has as many complete copies as the pool asks for, and a
/// node lost mid-backfill leaves one whole copy that has had every write,
/// not only the one being copied from. A replica moving to another disk of
/// the same node is dropped at once: a node serves one replica of a PG.
pub(super) fn during(change: &PgChange) -> Vec<DiskRef> {
    let mut replicas = change.to.clone();
    if change.reason == placement::ChangeReason::Rebalance {
        let on_a_new_node = |d: &&DiskRef| !change.to.iter().any(|t| t.node == d.node);
        replicas.extend(change.from.iter().filter(on_a_new_node));
    }
    replicas
}

pub(super) fn apply_moves(t: &mut impl TablesMut, changes: Vec<PoolChange>, map_changed: bool) -> Applied {
    if changes.is_empty() && !map_changed {
        return Ok(Ok(Reply::Done));
    }
    let epoch = bump_epoch(t)?;
    for c in &changes {
        let Some(pool) = view::pool(t, &c.pool)? else {
            return Err(TableError::Invariant(format!("pool {} vanished while moving its PGs", c.pool)));
        };
        let key = keys::pg(pool.id, c.change.pg);
        let Some(mut pg) = t.get_rec::<PgRecord>("pg", &key)? else {
            return Err(TableError::Invariant(format!("pool {} has no PG {}", c.pool, c.change.pg)));
        };
        pg.recovering = joined(&c.change, &pg.recovering);
        pg.replicas = during(&c.change);
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
pub(super) fn keep_a_complete_primary(mut change: PgChange, current: &[PgRecord]) -> Option<PgChange> {
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
pub(super) fn joined(change: &PgChange, recovering: &[DiskRef]) -> Vec<DiskRef> {
    change.to.iter().filter(|d| !change.from.contains(d) || recovering.contains(d)).copied().collect()
}

/// `epoch` is the PG's epoch the backfill started at: a report from before
/// a later change (the disk left and rejoined) must not clear the new one.
pub(super) fn pg_recovered(t: &mut impl TablesMut, pool: u32, pg: u32, disk: DiskRef, epoch: u64) -> Applied {
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
    if record.recovering.is_empty() {
        // A rebalance's replicas kept past the pool's count ([`during`])
        // leave now that the new ones hold the data.
        let Some(size) = view::pools(t)?.into_iter().find(|p| p.id == pool).map(|p| p.redundancy.replicas()) else {
            return Err(TableError::Invariant(format!("PG {pool}.{pg} names no pool")));
        };
        record.replicas.truncate(size);
    }
    record.epoch = bump_epoch(t)?;
    t.put_rec("pg", &key, &record)?;
    Ok(Ok(Reply::Done))
}

// ---- pools and volumes ----
