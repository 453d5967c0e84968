//! Applying the commands about pools: create, delete, defaults.

use super::apply::{bump_epoch, Applied};
use super::error::{Kind, MetaError};
use super::keys;
use super::model::{PgRecord, Pool, PoolDefaults};
use super::names;
use super::tables::TableError;
use super::tables::TablesMut;
use super::view;
use super::Reply;
use crate::placement;
use chuyi_meta_api::qos::QosScope;

/// Pool ids have their own counter: they are u32 (PG keys) and must never
/// run out because leases consumed the shared one.
pub(super) fn next_pool_id(t: &mut impl TablesMut) -> Result<Option<u32>, TableError> {
    let id = t.get_rec::<u32>("next pool id", keys::NEXT_POOL_ID)?.unwrap_or(1);
    // Pool ids ride in the top bits of chunk owner ids.
    if id > chuyi_common::map::POOL_ID_MAX {
        return Ok(None);
    }
    t.put_rec("next pool id", keys::NEXT_POOL_ID, &(id + 1))?;
    Ok(Some(id))
}

/// The whole map travels in one reply: its PGs are bounded.
pub(super) fn check_total_pgs(t: &impl TablesMut, adding: u32) -> Result<Result<(), MetaError>, TableError> {
    let total: u64 = view::pools(t)?.iter().map(|p| u64::from(p.pg_count)).sum::<u64>() + u64::from(adding);
    if total > u64::from(names::CLUSTER_PGS_MAX) {
        return Ok(Err(MetaError::invalid(
            "pg count",
            format!("the cluster would have {total} PGs; at most {}", names::CLUSTER_PGS_MAX),
        )));
    }
    Ok(Ok(()))
}

pub(super) fn create_pool(t: &mut impl TablesMut, mut pool: Pool) -> Applied {
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

pub(super) fn delete_pool(t: &mut impl TablesMut, name: &str) -> Applied {
    let Some(pool) = view::pool(t, name)? else { refuse!(MetaError::not_found(Kind::Pool, name)) };
    if let Some(v) = view::volumes(t)?.into_iter().find(|v| v.pool == name) {
        refuse!(MetaError::InUse { kind: Kind::Pool, name: name.into(), user_kind: Kind::Volume, user: v.name });
    }
    if let Some(v) = view::trash(t)?.into_iter().find(|e| e.volume.pool == name) {
        let user = v.volume.name;
        refuse!(MetaError::InUse { kind: Kind::Pool, name: name.into(), user_kind: Kind::TrashedVolume, user });
    }
    if let Some(b) = view::buckets(t)?.into_iter().find(|b| b.pool == name) {
        refuse!(MetaError::InUse { kind: Kind::Pool, name: name.into(), user_kind: Kind::Bucket, user: b.name });
    }
    // Object data still to be freed needs the pool's PGs to be deleted.
    if view::object_data_left(t, pool.id)? {
        refuse!(MetaError::invalid("pool", format!("pool {name} still has object data being written or freed (deleted data waits out the gateways' garbage grace, 15 min by default)")));
    }
    for pg in 0..pool.pg_count {
        t.delete(&keys::pg(pool.id, pg));
    }
    t.delete(&keys::pool(name));
    t.delete(&keys::pool_defaults(name));
    t.delete(&keys::pool_schedules(name));
    super::qos::drop_rules(t, |s| matches!(s, QosScope::Pool(p) if p == name))?;
    bump_epoch(t)?;
    Ok(Ok(Reply::Done))
}

pub(super) fn set_pool_defaults(t: &mut impl TablesMut, name: &str, defaults: &PoolDefaults) -> Applied {
    if view::pool(t, name)?.is_none() {
        refuse!(MetaError::not_found(Kind::Pool, name));
    }
    t.put_rec("pool defaults", &keys::pool_defaults(name), defaults)?;
    Ok(Ok(Reply::Done))
}
