//! Which backups a retention policy keeps: the newest `last`, and the
//! newest of each of the newest `hourly` hours, `daily` days, `weekly` ISO
//! weeks and `monthly` months that have a backup (restic's `forget`
//! rules, in UTC). The newest backup is always kept: the next incremental
//! is read against its snapshot.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Timelike, Utc};
/// The policy, as schedules keep it in the metadata service.
pub use chuyi_meta_api::backup_schedule::Retention;

/// The period a time falls in, as a rule counts them.
type Bucket = fn(DateTime<Utc>) -> (i32, u32, u32);

/// The indexes into `times_ms` (a volume's backups, any order) the policy
/// keeps. An empty policy keeps all.
pub fn kept(times_ms: &[u64], policy: &Retention) -> BTreeSet<usize> {
    if policy.is_empty() {
        return (0..times_ms.len()).collect();
    }
    let mut newest_first: Vec<usize> = (0..times_ms.len()).collect();
    newest_first.sort_by_key(|&i| std::cmp::Reverse(times_ms[i]));
    let mut keep = BTreeSet::new();
    keep.extend(newest_first.first().copied());
    keep.extend(newest_first.iter().copied().take(policy.last as usize));
    let rules: [(u32, Bucket); 4] = [
        (policy.hourly, |t| (t.year(), t.ordinal(), t.hour())),
        (policy.daily, |t| (t.year(), t.ordinal(), 0)),
        (policy.weekly, |t| (t.iso_week().year(), t.iso_week().week(), 0)),
        (policy.monthly, |t| (t.year(), t.month(), 0)),
    ];
    for (count, bucket) in rules {
        let mut seen = BTreeSet::new();
        for &i in &newest_first {
            if seen.len() == count as usize {
                break;
            }
            let t = DateTime::from_timestamp_millis(times_ms[i] as i64).unwrap_or_default();
            if seen.insert(bucket(t)) {
                keep.insert(i);
            }
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;
    const DAY: u64 = 24 * HOUR;
    /// 2026-12-01T00:00:00Z, a Tuesday.
    const T0: u64 = 1_796_083_200_000;

    #[test]
    fn hourly_and_daily_keep_the_newest_of_each() {
        // Every 15 minutes for three days.
        let times: Vec<u64> = (0..3 * 24 * 4).map(|i| T0 + i * HOUR / 4).collect();
        let k = kept(&times, &Retention { hourly: 4, daily: 3, ..Default::default() });
        let newest = times.len() - 1;
        // The newest four hours' last backups, and the last of each day.
        let mut want: BTreeSet<usize> = (0..4).map(|h| newest - 4 * h).collect();
        want.extend([4 * 24 - 1, 8 * 24 - 1]);
        assert_eq!(k, want);
    }

    #[test]
    fn the_newest_is_kept_by_any_policy_and_an_empty_one_keeps_all() {
        let times = [T0, T0 + DAY, T0 + 2 * DAY];
        assert_eq!(kept(&times, &Retention { monthly: 1, ..Default::default() }), BTreeSet::from([2]));
        assert_eq!(kept(&times, &Retention { last: 2, ..Default::default() }), BTreeSet::from([1, 2]));
        assert_eq!(kept(&times, &Retention::default()).len(), 3);
        assert!(kept(&[], &Retention { last: 1, ..Default::default() }).is_empty());
    }

    #[test]
    fn weekly_buckets_are_iso_weeks_and_monthly_calendar_months() {
        // Daily for 40 days from Tuesday 2026-12-01.
        let times: Vec<u64> = (0..40).map(|d| T0 + d * DAY).collect();
        let weekly = kept(&times, &Retention { weekly: 2, ..Default::default() });
        // Day 39 (Saturday 9 January, the newest), and Sunday 3 January ending the week before (day 33).
        assert_eq!(weekly, BTreeSet::from([33, 39]));
        let monthly = kept(&times, &Retention { monthly: 3, ..Default::default() });
        // January's newest (day 39) and December's last day (day 30).
        assert_eq!(monthly, BTreeSet::from([30, 39]));
    }
}
