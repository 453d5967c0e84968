//! Applying the commands of volume snapshots: a snapshot is one more in
//! the volume's snap sequence and a name; no data is touched here. The
//! storage nodes keep what each snapshot reads (storage-node's
//! `store::snaps`), and whoever changes the list raises or trims it there.

use chuyi_common::ids::SNAP_SEQ_MAX;
use chuyi_common::limits::SNAPSHOTS_PER_VOLUME_MAX;
use chuyi_meta_api::model::{Snapshot, VolumeSnapshots};

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

/// Drops a volume's snapshots with the volume (its chunks, clones
/// included, are freed by the purge).
pub(super) fn forget(t: &mut impl TablesMut, volume: &str) {
    t.delete(&keys::snapshots(volume));
}

fn put(t: &mut impl TablesMut, volume: &str, snaps: VolumeSnapshots) -> Applied {
    t.put_rec("snapshots", &keys::snapshots(volume), &snaps)?;
    Ok(Ok(Reply::Snapshots(snaps)))
}
