//! Applying the commands of backup schedules: the schedule and its run
//! state, one record per volume and target (key `0x1E`). Which slot a
//! frontend may run is `chuyi_meta_api::backup_schedule::claimable`, by
//! the entry's time; the backups themselves live in the target.

use chuyi_meta_api::backup_schedule::{self, BackupClaim, BackupOutcome, BackupSchedule, BACKUP_SCHEDULES_MAX};
use chuyi_meta_api::limits::LEASE_TTL_MAX_MS;
use chuyi_meta_api::schedule::{SCHEDULE_EVERY_MAX_MS, SCHEDULE_EVERY_MIN_MS};

use super::apply::{Applied, Ctx};
use super::error::{Kind, MetaError};
use super::keys;
use super::tables::{TableError, TablesMut};
use super::view;
use super::Reply;

/// Longest text of a schedule's target, endpoint, keys or bandwidth.
const FIELD_MAX_BYTES: usize = 1024;

pub(super) fn set_schedule(t: &mut impl TablesMut, schedule: &BackupSchedule) -> Applied {
    let invalid = |why: String| MetaError::invalid("backup schedule", why);
    if view::volume(t, &schedule.volume)?.is_none() {
        refuse!(MetaError::not_found(Kind::Volume, &schedule.volume));
    }
    if !(SCHEDULE_EVERY_MIN_MS..=SCHEDULE_EVERY_MAX_MS).contains(&schedule.every_ms) {
        refuse!(invalid(format!("every {} ms: from {SCHEDULE_EVERY_MIN_MS} ms to a year", schedule.every_ms)));
    }
    let fields = [&schedule.target, &schedule.endpoint, &schedule.region, &schedule.access_key, &schedule.bandwidth];
    if fields.iter().any(|f| f.len() > FIELD_MAX_BYTES) || schedule.wrapped_secret.len() > FIELD_MAX_BYTES {
        refuse!(invalid(format!("a field above {FIELD_MAX_BYTES} bytes")));
    }
    if !schedule.target.starts_with("s3://") {
        refuse!(invalid(format!("target {:?} is not s3://BUCKET[/PREFIX]", schedule.target)));
    }
    let key = keys::backup_schedule(&schedule.volume, &schedule.target);
    let old: Option<BackupSchedule> = t.get_rec("backup schedule", &key)?;
    if old.is_none() && view::backup_schedules(t)?.len() >= BACKUP_SCHEDULES_MAX {
        refuse!(invalid(format!("at most {BACKUP_SCHEDULES_MAX} backup schedules")));
    }
    let mut new = schedule.clone();
    new.run = old.map(|o| o.run).unwrap_or_default();
    t.put_rec("backup schedule", &key, &new)?;
    Ok(Ok(Reply::Done))
}

pub(super) fn delete_schedule(t: &mut impl TablesMut, volume: &str, target: &str) -> Applied {
    let key = keys::backup_schedule(volume, target);
    if t.get_rec::<BackupSchedule>("backup schedule", &key)?.is_none() {
        refuse!(MetaError::invalid("backup schedule", format!("volume {volume} has none to {target}")));
    }
    t.delete(&key);
    Ok(Ok(Reply::Done))
}

/// A volume's schedules go with it when it is deleted for good: nothing
/// could back it up any more, and a volume created later under its name
/// starts with none. Its backups stay in their targets, restorable.
pub(super) fn forget(t: &mut impl TablesMut, volume: &str) -> Result<(), TableError> {
    for s in view::backup_schedules(t)?.into_iter().filter(|s| s.volume == volume) {
        t.delete(&keys::backup_schedule(&s.volume, &s.target));
    }
    Ok(())
}

pub(super) fn claim(t: &mut impl TablesMut, ctx: Ctx, at: (&str, &str), holder: &str, ttl_ms: u64) -> Applied {
    let Some((key, mut s)) = find(t, at)? else { refuse!(none(at)) };
    if ttl_ms == 0 || ttl_ms > LEASE_TTL_MAX_MS || holder.is_empty() || holder.len() > FIELD_MAX_BYTES {
        refuse!(MetaError::invalid("backup claim", format!("ttl {ttl_ms} ms (1 to {LEASE_TTL_MAX_MS}) or holder")));
    }
    let slot_ms = match backup_schedule::claimable(&s, holder, ctx.now_ms) {
        Ok(slot) => slot,
        Err(why) => refuse!(MetaError::invalid("backup claim", format!("{} to {}: {why}", at.0, at.1))),
    };
    s.run.claim = Some(BackupClaim { holder: holder.into(), until_ms: ctx.now_ms.saturating_add(ttl_ms), slot_ms });
    t.put_rec("backup schedule", &key, &s)?;
    Ok(Ok(Reply::BackupSchedule(Box::new(s))))
}

pub(super) fn report(
    t: &mut impl TablesMut,
    ctx: Ctx,
    at: (&str, &str),
    holder: &str,
    outcome: &BackupOutcome,
) -> Applied {
    let Some((key, mut s)) = find(t, at)? else { refuse!(none(at)) };
    let Some(claim) = s.run.claim.take().filter(|c| c.holder == holder) else {
        refuse!(MetaError::invalid("backup report", format!("{holder} holds no claim of {} to {}", at.0, at.1)));
    };
    match &outcome.backup {
        Ok(id) => {
            s.run.slot_ms = Some(claim.slot_ms);
            s.run.last_ok_ms = ctx.now_ms;
            s.run.last_backup = Some(id.clone());
            s.run.last_error = None;
        }
        Err(why) => s.run.last_error = Some((ctx.now_ms, why.chars().take(FIELD_MAX_BYTES).collect())),
    }
    if let Some(passed) = outcome.drill {
        s.run.last_drill_ms = ctx.now_ms;
        s.run.last_drill_passed = Some(passed);
    }
    t.put_rec("backup schedule", &key, &s)?;
    Ok(Ok(Reply::Done))
}

type Found = Option<(Vec<u8>, BackupSchedule)>;

fn find(t: &mut impl TablesMut, (volume, target): (&str, &str)) -> Result<Found, super::tables::TableError> {
    let key = keys::backup_schedule(volume, target);
    Ok(t.get_rec("backup schedule", &key)?.map(|s| (key, s)))
}

fn none((volume, target): (&str, &str)) -> MetaError {
    MetaError::invalid("backup schedule", format!("volume {volume} has none to {target}"))
}
