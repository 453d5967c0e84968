//! Backup schedules: a volume backed up to a target every interval, with a
//! retention policy and drills, run by the cluster's volume frontends
//! (chuyi-backup's `schedule`). The metadata service keeps each schedule
//! and its run state and decides, by the leader's clock, which frontend
//! may run the slot due ([`claimable`]): one at a time, under a claim that
//! runs out if its frontend dies, so another picks the backup up (and
//! resumes it from the target's journal).
//!
//! Slots are aligned to the epoch as snapshot schedules' are
//! ([`crate::schedule::due`]).

use serde::{Deserialize, Serialize};

use crate::model::Millis;

/// How the snapshots backups read are named: `backup-<target id>-<backup
/// id>`. Frontends running schedules may take and delete these only.
pub const SNAPSHOT_PREFIX: &str = "backup-";

/// A failed run is tried again after this long, not at every tick.
pub const RETRY_AFTER_MS: Millis = 60_000;
/// Schedules in the cluster at most.
pub const BACKUP_SCHEDULES_MAX: usize = 4096;

/// Which backups a schedule's prune keeps: the newest `last`, and the
/// newest of each of the newest `hourly` hours, `daily` days, `weekly`
/// weeks and `monthly` months (restic's `forget` rules). All zero keeps
/// everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub last: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
}

impl Retention {
    /// Whether the policy says nothing (then nothing is pruned).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Volume `volume` backed up to `target` at `endpoint` every `every_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSchedule {
    pub volume: String,
    /// `s3://BUCKET[/PREFIX]`.
    pub target: String,
    pub endpoint: String,
    pub region: String,
    pub access_key: String,
    /// The target's secret key, wrapped by the KEK (context
    /// [`secret_context`]): only a frontend with the KEK runs backups,
    /// and it needs the KEK for the target's backup key anyway.
    pub wrapped_secret: Vec<u8>,
    pub every_ms: Millis,
    pub keep: Retention,
    /// The bandwidth schedule's text (`08:00-20:00=50MiB/s,...`); empty:
    /// unlimited.
    pub bandwidth: String,
    /// A drill of the newest backup at least this often; 0: none.
    pub drill_every_ms: Millis,
    pub run: BackupRun,
}

/// What became of a schedule's runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRun {
    /// The last slot backed up.
    pub slot_ms: Option<Millis>,
    pub claim: Option<BackupClaim>,
    pub last_ok_ms: Millis,
    pub last_backup: Option<String>,
    /// When the last run failed, and why (cleared by a success).
    pub last_error: Option<(Millis, String)>,
    pub last_drill_ms: Millis,
    pub last_drill_passed: Option<bool>,
}

/// A frontend running a schedule's slot until `until_ms` (renewed as it
/// runs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupClaim {
    pub holder: String,
    pub until_ms: Millis,
    pub slot_ms: Millis,
}

/// What a frontend reports of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupOutcome {
    /// The backup made, or why there is none.
    pub backup: Result<String, String>,
    /// Whether a drill ran, and passed.
    pub drill: Option<bool>,
}

/// Whether `name` is a snapshot a backup takes:
/// `backup-<8 hex>-<YYYYMMDDTHHMMSS.mmmZ>-<6 hex>` exactly, so that a
/// frontend allowed these cannot touch `backup-before-upgrade`.
pub fn is_backup_snapshot(name: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let Some(rest) = name.strip_prefix(SNAPSHOT_PREFIX) else { return false };
    let parts: Vec<&str> = rest.split('-').collect();
    let [target, stamp, random] = parts.as_slice() else { return false };
    let stamp_ok = stamp.len() == 20
        && stamp.bytes().enumerate().all(|(i, b)| match i {
            8 => b == b'T',
            15 => b == b'.',
            19 => b == b'Z',
            _ => b.is_ascii_digit(),
        });
    hex(target, 8) && stamp_ok && hex(random, 6)
}

/// The KEK wrap's context of a schedule's secret key.
pub fn secret_context(volume: &str, target: &str) -> Vec<u8> {
    format!("chuyi backup target secret\0{volume}\0{target}").into_bytes()
}

/// The slot `holder` may run now, or why not: a live claim of another
/// holder, a failure too recent to try again, or no slot due. The claim's
/// own holder renews it whatever the slot.
pub fn claimable(s: &BackupSchedule, holder: &str, now_ms: Millis) -> Result<Millis, String> {
    if let Some(claim) = &s.run.claim {
        if claim.holder == holder {
            return Ok(claim.slot_ms);
        }
        if claim.until_ms > now_ms {
            return Err(format!("run by {} for {} ms more", claim.holder, claim.until_ms - now_ms));
        }
    }
    if let Some((at, _)) = &s.run.last_error {
        if now_ms < at.saturating_add(RETRY_AFTER_MS) {
            return Err(format!("failed {} ms ago; tried again {RETRY_AFTER_MS} ms after", now_ms - at));
        }
    }
    crate::schedule::due(s.every_ms, s.run.slot_ms, now_ms).ok_or_else(|| "not due".to_string())
}

/// Whether a drill is due after a run at `now_ms`.
pub fn drill_due(s: &BackupSchedule, now_ms: Millis) -> bool {
    s.drill_every_ms > 0 && now_ms >= s.run.last_drill_ms.saturating_add(s.drill_every_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> BackupSchedule {
        BackupSchedule {
            volume: "v".into(),
            target: "s3://b".into(),
            endpoint: "http://e".into(),
            region: "r".into(),
            access_key: "A".into(),
            wrapped_secret: vec![],
            every_ms: 60_000,
            keep: Retention::default(),
            bandwidth: String::new(),
            drill_every_ms: 0,
            run: BackupRun::default(),
        }
    }

    #[test]
    fn a_slot_is_run_once_by_one_holder_at_a_time() {
        let mut s = schedule();
        assert_eq!(claimable(&s, "a", 125_000), Ok(120_000));
        s.run.claim = Some(BackupClaim { holder: "a".into(), until_ms: 130_000, slot_ms: 120_000 });
        assert!(claimable(&s, "b", 129_999).is_err(), "a live claim is a's");
        assert_eq!(claimable(&s, "a", 129_999), Ok(120_000), "a renews");
        assert_eq!(claimable(&s, "b", 130_000), Ok(120_000), "a's claim ran out: b takes the slot over");
        s.run.claim = None;
        s.run.slot_ms = Some(120_000);
        assert!(claimable(&s, "b", 170_000).is_err(), "done until the next slot");
        assert_eq!(claimable(&s, "b", 180_000), Ok(180_000));
    }

    #[test]
    fn a_failure_waits_before_it_is_tried_again() {
        let mut s = schedule();
        s.run.last_error = Some((100_000, "target down".into()));
        assert!(claimable(&s, "a", 100_000 + RETRY_AFTER_MS - 1).is_err());
        assert!(claimable(&s, "a", 100_000 + RETRY_AFTER_MS).is_ok());
    }

    #[test]
    fn backup_snapshots_are_told_by_their_whole_name() {
        assert!(is_backup_snapshot("backup-1a2b3c4d-20261204T112233.456Z-abcdef"));
        for name in [
            "backup-before-upgrade",
            "backup-1a2b3c4d-20261204T112233.456Z-abcdeg",
            "backup-1a2b3c4d-20261204T112233Z-abcdef",
            "backup-1a2b3c4-20261204T112233.456Z-abcdef",
            "backup-1a2b3c4d-20261204T112233.456Z-abcdef-x",
            "xbackup-1a2b3c4d-20261204T112233.456Z-abcdef",
        ] {
            assert!(!is_backup_snapshot(name), "{name}");
        }
    }

    #[test]
    fn drills_come_at_their_interval() {
        let mut s = schedule();
        assert!(!drill_due(&s, 1 << 40), "none asked");
        s.drill_every_ms = 1000;
        assert!(drill_due(&s, 1000));
        s.run.last_drill_ms = 1000;
        assert!(!drill_due(&s, 1999) && drill_due(&s, 2000));
    }
}
