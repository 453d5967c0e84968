//! Snapshot schedules: when a schedule's next snapshot is due and which of
//! the snapshots it took have outlived its keep count. Pure decisions over
//! the schedule, what it took last and the leader's clock; the metadata
//! service applies them (`TakeScheduledSnapshot`, `ExpireSnapshot`) and
//! volume frontends ask for the work and do it (chuyi-client's `snapshot`).
//!
//! Slots are aligned to the Unix epoch (a 24 h schedule takes its snapshot
//! in the first minute after midnight UTC): every frontend computes the
//! same slot, so two taking the same one are refused but for the first,
//! and a cluster that was down over several slots takes one on return, not
//! one per slot missed.

use serde::{Deserialize, Serialize};

use crate::model::{Millis, Snapshot};

/// The shortest interval the service takes; `chuyi snapshot schedule`
/// asks for 15 minutes or more unless told `--short` (tests, demos).
pub const SCHEDULE_EVERY_MIN_MS: Millis = 1_000;
/// The longest: a year.
pub const SCHEDULE_EVERY_MAX_MS: Millis = 366 * 86_400_000;
/// Schedules one volume or pool may have.
pub const SCHEDULES_PER_SCOPE_MAX: usize = 8;

/// Take a snapshot every `every_ms`; keep the newest `keep` it took.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSchedule {
    pub every_ms: Millis,
    pub keep: u32,
}

/// What a schedule is set on: one volume, or every volume of a pool (a
/// volume's own schedule of the same interval wins).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ScheduleScope {
    Volume(String),
    Pool(String),
}

impl SnapshotSchedule {
    /// The schedule's name: its interval ("24h", "15m", "90s"); what its
    /// snapshots record as their schedule.
    pub fn label(&self) -> String {
        label(self.every_ms)
    }
}

/// An interval as the largest whole unit that shows it.
pub fn label(every_ms: Millis) -> String {
    for (per, unit) in [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1_000, "s")] {
        if every_ms >= per && every_ms.is_multiple_of(per) {
            return format!("{}{unit}", every_ms / per);
        }
    }
    format!("{every_ms}ms")
}

/// The slot `now_ms` falls in.
pub fn slot(every_ms: Millis, now_ms: Millis) -> Millis {
    now_ms - now_ms % every_ms.max(1)
}

/// The slot to take now, if the schedule has not taken it yet.
pub fn due(every_ms: Millis, last_slot: Option<Millis>, now_ms: Millis) -> Option<Millis> {
    let now = slot(every_ms, now_ms);
    last_slot.is_none_or(|last| last < now).then_some(now)
}

/// The snapshots schedule `label` took beyond the newest `keep`, oldest
/// first (snapshots are kept oldest first).
pub fn expired<'a>(snapshots: &'a [Snapshot], label: &str, keep: u32) -> Vec<&'a Snapshot> {
    let taken: Vec<&Snapshot> = snapshots.iter().filter(|s| s.schedule.as_deref() == Some(label)).collect();
    let over = taken.len().saturating_sub(keep as usize);
    taken.into_iter().take(over).collect()
}

/// The name of the snapshot schedule `label` takes in slot `slot_ms`:
/// `auto-24h-20261204T000000Z`.
pub fn snapshot_name(label: &str, slot_ms: Millis) -> String {
    let secs = slot_ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("auto-{label}-{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rest / 3600, rest / 60 % 60, rest % 60)
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// civil_from_days).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(id: u32, schedule: Option<&str>) -> Snapshot {
        Snapshot { id, name: format!("s{id}"), created_ms: 0, schedule: schedule.map(String::from) }
    }

    #[test]
    fn a_slot_is_taken_once_and_missed_slots_only_once() {
        let hour = 3_600_000;
        assert_eq!(due(hour, None, 5 * hour + 10), Some(5 * hour), "a new schedule takes the current slot");
        assert_eq!(due(hour, Some(5 * hour), 5 * hour + 59 * 60_000), None, "taken already");
        assert_eq!(due(hour, Some(5 * hour), 6 * hour), Some(6 * hour));
        assert_eq!(due(hour, Some(5 * hour), 9 * hour + 1), Some(9 * hour), "three slots missed: one snapshot");
    }

    #[test]
    fn only_the_schedules_own_snapshots_beyond_keep_expire() {
        let all = [snap(1, Some("1h")), snap(2, None), snap(3, Some("1h")), snap(4, Some("1d")), snap(5, Some("1h"))];
        let names = |v: Vec<&Snapshot>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
        assert_eq!(names(expired(&all, "1h", 2)), vec![1]);
        assert_eq!(names(expired(&all, "1h", 3)), Vec::<u32>::new());
        assert_eq!(names(expired(&all, "1d", 0)), vec![4]);
    }

    #[test]
    fn labels_and_names_read_as_people_write_them() {
        assert_eq!(label(86_400_000), "1d");
        assert_eq!(label(36 * 3_600_000), "36h");
        assert_eq!(label(15 * 60_000), "15m");
        assert_eq!(label(1_500), "1500ms");
        assert_eq!(snapshot_name("24h", 0), "auto-24h-19700101T000000Z");
        // 2026-12-04 00:15:00 UTC.
        assert_eq!(snapshot_name("15m", 1_796_343_300_000), "auto-15m-20261204T001500Z");
        assert_eq!(snapshot_name("1d", 951_782_400_000), "auto-1d-20000229T000000Z", "a leap day");
    }
}
