//! Applying the commands about volumes: create, resize, delete, their keys,
//! and their attach leases.

use chuyi_common::limits::{BLOCK_SIZE_BYTES, CHUNK_SIZE_MAX_BYTES};
use chuyi_meta_api::qos::QosScope;

use super::apply::{next_id, next_owner, Applied, Ctx, LEASE_TTL_MAX_MS};
use super::error::{Kind, MetaError};
use super::keys;
use super::model::{Lease, Pool, Volume, VolumeState};
use super::names;
use super::tables::TableError;
use super::tables::TablesMut;
use super::view;
use super::Reply;

pub(super) fn check_fits(t: &impl TablesMut, pool: &Pool, size_bytes: u64) -> Result<Option<MetaError>, TableError> {
    let available = view::pool_capacity(t, pool)?;
    Ok((size_bytes > available).then(|| MetaError::VolumeTooLarge {
        pool: pool.name.clone(),
        requested: size_bytes,
        available,
    }))
}

pub(super) fn create_volume(
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
    if view::trash_entry(t, name)?.is_some() {
        refuse!(MetaError::exists(Kind::TrashedVolume, name));
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

pub(super) fn check_volume_size(size_bytes: u64) -> Result<(), MetaError> {
    if size_bytes == 0 || !size_bytes.is_multiple_of(BLOCK_SIZE_BYTES as u64) {
        return Err(MetaError::invalid("volume size", format!("{size_bytes} is not a positive multiple of 4096")));
    }
    Ok(())
}

pub(super) fn resize_volume(t: &mut impl TablesMut, name: &str, size_bytes: u64) -> Applied {
    let Some(mut volume) = view::volume(t, name)? else { refuse!(MetaError::not_found(Kind::Volume, name)) };
    if let Err(e) = check_volume_size(size_bytes) {
        refuse!(e);
    }
    if size_bytes < volume.size_bytes {
        refuse!(MetaError::VolumeShrink { volume: name.into(), current: volume.size_bytes, requested: size_bytes });
    }
    let Some(pool) = view::pool(t, &volume.pool)? else {
        return Err(TableError::Invariant(format!("volume {name} names missing pool {}", volume.pool)));
    };
    if let Some(e) = check_fits(t, &pool, size_bytes)? {
        refuse!(e);
    }
    volume.size_bytes = size_bytes;
    t.put_rec("volume", &keys::volume(name), &volume)?;
    Ok(Ok(Reply::Volume(volume)))
}

pub(super) fn delete_volume(t: &mut impl TablesMut, ctx: Ctx, name: &str) -> Applied {
    let Some(volume) = view::volume(t, name)? else { refuse!(MetaError::not_found(Kind::Volume, name)) };
    if let Some(lease) = volume.lease.filter(|l| l.is_live(ctx.now_ms)) {
        refuse!(MetaError::LeaseHeld { volume: name.into(), holder: lease.holder, expires_ms: lease.expires_ms });
    }
    if let Some(e) = super::snapshots::still_cloned(t, name)? {
        refuse!(e);
    }
    t.delete(&keys::volume(name));
    super::snapshots::forget(t, name);
    super::backups::forget(t, name)?;
    super::qos::drop_rules(t, |s| matches!(s, QosScope::Volume(v) if v == name))?;
    Ok(Ok(Reply::Done))
}

pub(super) fn destroy_volume_key(t: &mut impl TablesMut, ctx: Ctx, name: &str, holder: &str) -> Applied {
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

pub(super) fn rewrap_volume_key(t: &mut impl TablesMut, name: &str, old: &[u8], new: &[u8]) -> Applied {
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

pub(super) fn check_ttl(ttl_ms: u64) -> Result<(), MetaError> {
    if ttl_ms == 0 || ttl_ms > LEASE_TTL_MAX_MS {
        return Err(MetaError::invalid("lease ttl", format!("{ttl_ms} ms is not within 1..={LEASE_TTL_MAX_MS}")));
    }
    Ok(())
}

pub(super) fn acquire_lease(t: &mut impl TablesMut, ctx: Ctx, name: &str, holder: &str, ttl_ms: u64) -> Applied {
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
pub(super) fn renew_lease(
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
