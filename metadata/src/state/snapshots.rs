//! Applying the commands of volume snapshots: a snapshot is one more in
//! the volume's snap sequence and a name; no data is touched here. The
//! storage nodes keep what each snapshot reads (storage-node's
//! `store::snaps`), and whoever changes the list raises or trims it there.

use chuyi_common::ids::SNAP_SEQ_MAX;
use chuyi_common::limits::SNAPSHOTS_PER_VOLUME_MAX;
use chuyi_meta_api::model::{CloneParent, Snapshot, VolumeSnapshots};
use chuyi_meta_api::schedule::{
    self, ScheduleScope, SnapshotSchedule, SCHEDULES_PER_SCOPE_MAX, SCHEDULE_EVERY_MAX_MS, SCHEDULE_EVERY_MIN_MS,
};

use super::apply::{Applied, Ctx};
use super::error::{Kind, MetaError};
use super::keys;
use super::names::check_name;
use super::tables::TablesMut;
use super::view;
use super::Reply;

pub(super) fn create_snapshot(
    t: &mut impl TablesMut,
    ctx: Ctx,
    volume: &str,
    name: &str,
    schedule: Option<&str>,
) -> Applied {
    if let Err(e) = check_name("snapshot name", name) {
        refuse!(e);
    }
    if view::volume(t, volume)?.is_none() {
        refuse!(MetaError::not_found(Kind::Volume, volume));
    }
    let mut snaps = view::snapshots(t, volume)?;
    if snaps.find(name).is_some() {
        refuse!(MetaError::exists(Kind::Snapshot, format!("{volume}@{name}")));
    }
    if snaps.snapshots.len() >= SNAPSHOTS_PER_VOLUME_MAX {
        refuse!(MetaError::invalid(
            "snapshot",
            format!("volume {volume} keeps {SNAPSHOTS_PER_VOLUME_MAX} snapshots, the most it may; delete one first")
        ));
    }
    if snaps.seq >= SNAP_SEQ_MAX {
        refuse!(MetaError::invalid("snapshot", format!("volume {volume} has used all {SNAP_SEQ_MAX} snap sequences")));
    }
    snaps.seq += 1;
    let snapshot =
        Snapshot { id: snaps.seq, name: name.into(), created_ms: ctx.now_ms, schedule: schedule.map(String::from) };
    snaps.snapshots.push(snapshot);
    put(t, volume, snaps)
}

pub(super) fn delete_snapshot(t: &mut impl TablesMut, volume: &str, name: &str) -> Applied {
    let id = view::snapshots(t, volume)?.find(name).map(|s| s.id);
    let clone = match id {
        Some(id) => clones_of(t, volume, Some(id))?.into_iter().next(),
        None => None,
    };
    if let Some(clone) = clone {
        refuse!(MetaError::InUse {
            kind: Kind::Snapshot,
            name: format!("{volume}@{name}"),
            user_kind: Kind::Volume,
            user: clone
        });
    }
    let mut snaps = view::snapshots(t, volume)?;
    let before = snaps.snapshots.len();
    snaps.snapshots.retain(|s| s.name != name);
    if snaps.snapshots.len() == before {
        refuse!(MetaError::not_found(Kind::Snapshot, format!("{volume}@{name}")));
    }
    put(t, volume, snaps)
}

pub(super) fn rename_snapshot(t: &mut impl TablesMut, volume: &str, from: &str, to: &str) -> Applied {
    if let Err(e) = check_name("snapshot name", to) {
        refuse!(e);
    }
    let mut snaps = view::snapshots(t, volume)?;
    if snaps.find(to).is_some() {
        refuse!(MetaError::exists(Kind::Snapshot, format!("{volume}@{to}")));
    }
    let Some(snapshot) = snaps.snapshots.iter_mut().find(|s| s.name == from) else {
        refuse!(MetaError::not_found(Kind::Snapshot, format!("{volume}@{from}")));
    };
    snapshot.name = to.into();
    put(t, volume, snaps)
}

pub(super) fn set_schedule(t: &mut impl TablesMut, scope: &ScheduleScope, schedule: SnapshotSchedule) -> Applied {
    if !(SCHEDULE_EVERY_MIN_MS..=SCHEDULE_EVERY_MAX_MS).contains(&schedule.every_ms) {
        refuse!(MetaError::invalid(
            "schedule",
            format!("every {} ms: from {SCHEDULE_EVERY_MIN_MS} ms to a year", schedule.every_ms)
        ));
    }
    if schedule.keep as usize > SNAPSHOTS_PER_VOLUME_MAX {
        refuse!(MetaError::invalid("schedule", format!("keep {}: at most {SNAPSHOTS_PER_VOLUME_MAX}", schedule.keep)));
    }
    let place = |list: &mut Vec<SnapshotSchedule>| -> Result<(), MetaError> {
        list.retain(|s| s.every_ms != schedule.every_ms);
        if schedule.keep > 0 {
            if list.len() >= SCHEDULES_PER_SCOPE_MAX {
                return Err(MetaError::invalid(
                    "schedule",
                    format!("at most {SCHEDULES_PER_SCOPE_MAX} schedules each"),
                ));
            }
            list.push(schedule);
            list.sort_by_key(|s| s.every_ms);
        }
        Ok(())
    };
    match scope {
        ScheduleScope::Volume(volume) => {
            if view::volume(t, volume)?.is_none() {
                refuse!(MetaError::not_found(Kind::Volume, volume));
            }
            let mut snaps = view::snapshots(t, volume)?;
            if let Err(e) = place(&mut snaps.schedules) {
                refuse!(e);
            }
            put(t, volume, snaps)
        }
        ScheduleScope::Pool(pool) => {
            if view::pool(t, pool)?.is_none() {
                refuse!(MetaError::not_found(Kind::Pool, pool));
            }
            let mut list = view::pool_schedules(t, pool)?;
            if let Err(e) = place(&mut list) {
                refuse!(e);
            }
            if list.is_empty() {
                t.delete(&keys::pool_schedules(pool));
            } else {
                t.put_rec("pool schedules", &keys::pool_schedules(pool), &list)?;
            }
            Ok(Ok(Reply::Done))
        }
    }
}

/// Takes the snapshot `volume`'s schedule of interval `every_ms` is due
/// for at the entry's time; the slot is recorded, so a second frontend
/// asking for the same one is refused.
pub(super) fn take_scheduled(t: &mut impl TablesMut, ctx: Ctx, volume: &str, every_ms: u64) -> Applied {
    let Some(record) = view::volume(t, volume)? else { refuse!(MetaError::not_found(Kind::Volume, volume)) };
    let snaps = view::snapshots(t, volume)?;
    let schedules = view::volume_schedules(t, &record.pool, &snaps)?;
    let Some(found) = schedules.iter().find(|s| s.every_ms == every_ms) else {
        refuse!(MetaError::invalid("schedule", format!("volume {volume} has no schedule every {every_ms} ms")));
    };
    let label = found.label();
    let last = snaps.taken.iter().find(|(l, _)| *l == label).map(|(_, slot)| *slot);
    let Some(slot) = schedule::due(every_ms, last, ctx.now_ms) else {
        refuse!(MetaError::invalid("schedule", format!("volume {volume}'s {label} snapshot of this slot is taken")));
    };
    let name = schedule::snapshot_name(&label, slot);
    let mut snaps = match create_snapshot(t, ctx, volume, &name, Some(&label))? {
        Ok(Reply::Snapshots(snaps)) => snaps,
        // Refused (too many snapshots, sequences used up): as is.
        other => return Ok(other),
    };
    snaps.taken.retain(|(l, _)| *l != label);
    snaps.taken.push((label, slot));
    put(t, volume, snaps)
}

/// Deletes `name` if a schedule of `volume` took it and keeps it no more.
pub(super) fn expire_snapshot(t: &mut impl TablesMut, volume: &str, name: &str) -> Applied {
    let Some(record) = view::volume(t, volume)? else { refuse!(MetaError::not_found(Kind::Volume, volume)) };
    let snaps = view::snapshots(t, volume)?;
    let schedules = view::volume_schedules(t, &record.pool, &snaps)?;
    let is_expired = schedules
        .iter()
        .any(|s| schedule::expired(&snaps.snapshots, &s.label(), s.keep).iter().any(|x| x.name == name));
    if !is_expired {
        refuse!(MetaError::invalid("snapshot", format!("{volume}@{name} is not a scheduled snapshot past its keep")));
    }
    delete_snapshot(t, volume, name)
}

/// Creates `name` as a clone of snapshot `snapshot` of `volume`: the
/// parent's pool, size and chunk size, the parent's data key wrapped for
/// the clone (its data, copied as it is, is enciphered under that key),
/// and the link to read unwritten chunks from.
pub(super) fn clone_volume(
    t: &mut impl TablesMut,
    ctx: Ctx,
    (volume, snapshot): (&str, &str),
    name: &str,
    wrapped_key: &[u8],
) -> Applied {
    let Some(parent) = view::volume(t, volume)? else { refuse!(MetaError::not_found(Kind::Volume, volume)) };
    let snaps = view::snapshots(t, volume)?;
    let Some(found) = snaps.find(snapshot) else {
        refuse!(MetaError::not_found(Kind::Snapshot, format!("{volume}@{snapshot}")));
    };
    if parent.wrapped_key.is_empty() != wrapped_key.is_empty() {
        refuse!(MetaError::invalid(
            "clone",
            format!(
                "volume {volume} is {}encrypted: its clone's key must be too",
                if wrapped_key.is_empty() { "" } else { "not " }
            )
        ));
    }
    let link = CloneParent { volume: volume.into(), owner: parent.id, snapshot: snapshot.into(), snap: found.id };
    let (size, chunk) = (parent.size_bytes, parent.chunk_size_bytes);
    let created = super::volumes::create_volume(t, ctx, name, &parent.pool, size, chunk, wrapped_key)?;
    let Ok(Reply::Volume(clone)) = created else { return Ok(created) };
    let mut own = view::snapshots(t, name)?;
    own.parent = Some(link);
    t.put_rec("snapshots", &keys::snapshots(name), &own)?;
    Ok(Ok(Reply::Volume(clone)))
}

pub(super) fn flatten_volume(t: &mut impl TablesMut, name: &str) -> Applied {
    if view::volume(t, name)?.is_none() {
        refuse!(MetaError::not_found(Kind::Volume, name));
    }
    let mut snaps = view::snapshots(t, name)?;
    if snaps.parent.take().is_none() {
        refuse!(MetaError::invalid("flatten", format!("volume {name} is not a clone")));
    }
    put(t, name, snaps)
}

/// Refuses deleting `volume` (or moving it to the recycle bin) while a
/// clone reads its snapshots.
pub(super) fn still_cloned(
    t: &impl super::tables::Tables,
    volume: &str,
) -> Result<Option<MetaError>, super::tables::TableError> {
    Ok(clones_of(t, volume, None)?.into_iter().next().map(|clone| MetaError::InUse {
        kind: Kind::Volume,
        name: volume.into(),
        user_kind: Kind::Volume,
        user: clone,
    }))
}

/// The clones made from `volume`'s snapshot of sequence `snap` (any of
/// its snapshots when `None`) and not flattened yet, those in the recycle
/// bin included (restored, they read it again). Matched by the parent's
/// chunk owner and the snapshot's sequence: a rename changes neither.
pub(super) fn clones_of(
    t: &impl super::tables::Tables,
    volume: &str,
    snap: Option<u32>,
) -> Result<Vec<String>, super::tables::TableError> {
    let owner = match view::volume(t, volume)? {
        Some(v) => v.id,
        None => match view::trash_entry(t, volume)? {
            Some(e) => e.volume.id,
            None => return Ok(Vec::new()),
        },
    };
    let names = view::volumes(t)?.into_iter().map(|v| v.name);
    let binned = view::trash(t)?.into_iter().map(|e| e.volume.name);
    let mut out = Vec::new();
    for name in names.chain(binned) {
        let linked = view::snapshots(t, &name)?.parent.filter(|p| p.owner == owner);
        if linked.is_some_and(|p| snap.is_none_or(|s| p.snap == s)) {
            out.push(name);
        }
    }
    Ok(out)
}

/// Drops a volume's snapshots with the volume (its chunks, clones
/// included, are freed by the purge).
pub(super) fn forget(t: &mut impl TablesMut, volume: &str) {
    t.delete(&keys::snapshots(volume));
}

fn put(t: &mut impl TablesMut, volume: &str, snaps: VolumeSnapshots) -> Applied {
    t.put_rec("snapshots", &keys::snapshots(volume), &snaps)?;
    Ok(Ok(Reply::Snapshots(snaps)))
}
