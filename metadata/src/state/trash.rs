//! Applying the commands of the recycle bin: a deleted volume moves into
//! it with its record, its QoS rule and its chunks, comes back as it was,
//! or is purged: its
//! key destroyed and a fence token drawn when the purge begins, the entry
//! removed when its chunks are freed (by whoever purges: `chuyi trash
//! purge`, or a frontend once the entry's time is up).

use chuyi_meta_api::model::{Millis, TrashEntry, DEFAULT_TRASH_RETENTION_MS};
use chuyi_meta_api::qos::{QosRule, QosScope};

use super::apply::{next_id, Applied, Ctx};
use super::error::{Kind, MetaError};
use super::keys;
use super::model::VolumeState;
use super::tables::{TableError, TablesMut};
use super::view;
use super::Reply;

/// The longest a volume may be kept in the bin: ten years.
pub const TRASH_RETENTION_MAX_MS: u64 = 10 * 365 * 86_400_000;

pub(super) fn trash_volume(t: &mut impl TablesMut, ctx: Ctx, name: &str, retain_ms: Option<u64>) -> Applied {
    let Some(mut volume) = view::volume(t, name)? else { refuse!(MetaError::not_found(Kind::Volume, name)) };
    if let Some(lease) = volume.lease.take().filter(|l| l.is_live(ctx.now_ms)) {
        refuse!(MetaError::LeaseHeld { volume: name.into(), holder: lease.holder, expires_ms: lease.expires_ms });
    }
    // Its clones read their unwritten chunks from its snapshots.
    if let Some(e) = super::snapshots::still_cloned(t, name)? {
        refuse!(e);
    }
    let retain_ms = match retain_ms {
        Some(ms) => ms,
        None => view::trash_retention(t)?,
    };
    if retain_ms > TRASH_RETENTION_MAX_MS {
        refuse!(MetaError::invalid("retention", format!("{retain_ms} ms is more than ten years")));
    }
    let scope = QosScope::Volume(name.into());
    let qos = t.get_rec::<QosRule>("QoS rule", &keys::qos(&scope))?.map(|r| r.limits);
    let purge_at_ms = ctx.now_ms.saturating_add(retain_ms);
    let entry = TrashEntry { volume, deleted_ms: ctx.now_ms, purge_at_ms, purging: None, qos };
    t.delete(&keys::volume(name));
    t.put_rec("trash entry", &keys::trash(name), &entry)?;
    super::qos::drop_rules(t, |s| matches!(s, QosScope::Volume(v) if v == name))?;
    Ok(Ok(Reply::Trashed(entry)))
}

pub(super) fn restore_volume(t: &mut impl TablesMut, name: &str) -> Applied {
    let Some(entry) = view::trash_entry(t, name)? else { refuse!(MetaError::not_found(Kind::TrashedVolume, name)) };
    if entry.purging.is_some() {
        refuse!(MetaError::invalid("restore", format!("volume {name} is being purged: its key and data are gone")));
    }
    if view::pool(t, &entry.volume.pool)?.is_none() {
        return Err(TableError::Invariant(format!("trashed volume {name} names missing pool {}", entry.volume.pool)));
    }
    // A clone comes back only to the parent it reads from.
    if let Some(parent) = view::snapshots(t, name)?.parent {
        if view::volume(t, &parent.volume)?.is_none_or(|v| v.id != parent.owner) {
            refuse!(MetaError::invalid(
                "restore",
                format!("volume {name} is a clone of {}@{}, which is not there", parent.volume, parent.snapshot)
            ));
        }
    }
    t.delete(&keys::trash(name));
    t.put_rec("volume", &keys::volume(name), &entry.volume)?;
    if let Some(limits) = entry.qos {
        super::qos::put_rule(t, &QosRule { scope: QosScope::Volume(name.into()), limits })?;
    }
    Ok(Ok(Reply::Volume(entry.volume)))
}

pub(super) fn begin_purge(t: &mut impl TablesMut, ctx: Ctx, name: &str, force: bool) -> Applied {
    let Some(mut entry) = view::trash_entry(t, name)? else { refuse!(MetaError::not_found(Kind::TrashedVolume, name)) };
    if !force && entry.purging.is_none() && ctx.now_ms < entry.purge_at_ms {
        refuse!(MetaError::invalid(
            "purge",
            format!("volume {name} stays in the recycle bin {} s more", (entry.purge_at_ms - ctx.now_ms) / 1000)
        ));
    }
    // Newer than every lease the volume had: lease ids come from the
    // same counter. A purge begun again keeps its token: a newer one would
    // fence off the deletes of a purger still at work (no lease can be
    // taken in the bin, so none can be newer).
    let token = match entry.purging {
        Some(token) => token,
        None => next_id(t)?,
    };
    entry.purging = Some(token);
    if !entry.volume.wrapped_key.is_empty() {
        entry.volume.wrapped_key.clear();
        entry.volume.state = VolumeState::KeyDestroyed;
    }
    t.put_rec("trash entry", &keys::trash(name), &entry)?;
    Ok(Ok(Reply::Purging { volume: entry.volume, token }))
}

pub(super) fn end_purge(t: &mut impl TablesMut, name: &str, token: u64) -> Applied {
    let Some(entry) = view::trash_entry(t, name)? else { refuse!(MetaError::not_found(Kind::TrashedVolume, name)) };
    if entry.purging != Some(token) {
        refuse!(MetaError::invalid("purge", format!("no purge of volume {name} began under token {token}")));
    }
    t.delete(&keys::trash(name));
    super::snapshots::forget(t, name);
    super::backups::forget(t, name)?;
    Ok(Ok(Reply::Done))
}

pub(super) fn set_retention(t: &mut impl TablesMut, retain_ms: Millis) -> Applied {
    if retain_ms > TRASH_RETENTION_MAX_MS {
        refuse!(MetaError::invalid("retention", format!("{retain_ms} ms is more than ten years")));
    }
    t.put_rec("trash retention", keys::TRASH_RETENTION, &retain_ms)?;
    Ok(Ok(Reply::Done))
}

/// The cluster's retention when none was set.
pub(crate) fn default_retention() -> Millis {
    DEFAULT_TRASH_RETENTION_MS
}
