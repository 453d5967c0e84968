//! Bucket lifecycle: expiring current versions after days or on a date,
//! noncurrent versions after days (keeping the newest few), delete markers
//! left alone, and incomplete multipart uploads, for keys under a prefix
//! and carrying tags.
//!
//! The rules are kept as the bucket's `lifecycle` document (JSON of
//! [`Config`]). What a rule does to one key's versions is the pure
//! [`key_actions`]; [`run`] applies it to every bucket on a schedule,
//! throttled, with each change a metadata request that is safe to repeat
//! or to race with another gateway's runner: a current version is expired
//! only if it is still the one judged (`ExpireObject`), a version removed
//! only if it is still the one judged too (`RemoveVersion`: the same
//! sequence, so not a null version written since under the same id), and
//! object lock refuses what it protects. A day is
//! a configurable length so tests can run lifecycle in seconds.
//!
//! Transitions move a current version's data to another pool (Chuyi's
//! storage classes are its pools: `StorageClass` HDD is pool `hdd`), copied
//! by the runner and swapped in by the metadata service only if the version
//! is still the one judged (`TransitionObject`); noncurrent versions move
//! the same way, by NoncurrentVersionTransition.

use std::collections::HashMap;
use std::time::Duration;

use chuyi_meta_api::ask;
use chuyi_meta_api::client::MetaClient;
use chuyi_meta_api::listing::{ListCursor, ListEntry, ListRequest};
use chuyi_meta_api::model::{BucketConfigKind, DataRun, ObjectPut, OBJECT_FRAMED};
use chuyi_meta_api::{MetaError, Reply, Request};
use s3s::dto::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, DeleteBucketLifecycleInput,
    DeleteBucketLifecycleOutput, ExpirationStatus, GetBucketLifecycleConfigurationInput,
    GetBucketLifecycleConfigurationOutput, LifecycleExpiration, LifecycleRule, LifecycleRuleAndOperator,
    LifecycleRuleFilter, NoncurrentVersionExpiration, NoncurrentVersionTransition,
    PutBucketLifecycleConfigurationInput, PutBucketLifecycleConfigurationOutput, Tag, Timestamp,
    TransitionStorageClass,
};
use s3s::{s3_error, S3Result};
use serde::{Deserialize, Serialize};

use crate::buckets::JsonDocument;
use crate::data::DataPath;
use crate::frames::Spec;
use crate::tagging::{self, Tags};

/// Rules one configuration holds at most (S3's limit).
pub const RULES_MAX: usize = 1000;

/// One rule, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub id: Option<String>,
    pub enabled: bool,
    pub prefix: String,
    /// Every one of these tags must be on a version for the rule to apply.
    pub tags: Tags,
    pub expiration: Option<Expiration>,
    pub noncurrent: Option<Noncurrent>,
    pub abort_upload_days: Option<u32>,
    /// Moves of the current version to another pool (Chuyi's storage
    /// classes are its pools); older rules have none.
    #[serde(default)]
    pub transitions: Vec<Transition>,
    /// Moves of noncurrent versions to another pool.
    #[serde(default)]
    pub noncurrent_transitions: Vec<NoncurrentTransition>,
}

/// A move of a noncurrent version's data to pool `pool`, `days` after it
/// stopped being current, the newest `newer_kept` noncurrent versions
/// left where they are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoncurrentTransition {
    pub days: u32,
    pub newer_kept: u32,
    pub pool: String,
}

/// A move of the current version's data to pool `pool` when `when` comes
/// (days from its writing, or a date; never a delete marker's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub when: Expiration,
    pub pool: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expiration {
    /// The current version, this many days after it was written.
    Days(u32),
    /// The current version, from this moment (Unix ms).
    Date(u64),
    /// A delete marker with no version left under it.
    ExpiredDeleteMarker,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Noncurrent {
    /// Days after a version stopped being current.
    pub days: u32,
    /// The newest this many noncurrent versions are kept regardless.
    pub newer_kept: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub rules: Vec<Rule>,
}

fn millis(t: &Timestamp) -> u64 {
    let at = time::OffsetDateTime::from(t.clone());
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

fn days(n: Option<i32>, what: &str) -> S3Result<Option<u32>> {
    match n {
        None => Ok(None),
        Some(d) if d > 0 => Ok(Some(d as u32)),
        Some(_) => Err(s3_error!(InvalidArgument, "'{what}' for a lifecycle rule must be a positive integer")),
    }
}

impl Config {
    /// A configuration from PutBucketLifecycleConfiguration, checked.
    pub fn from_document(document: Option<BucketLifecycleConfiguration>) -> S3Result<Self> {
        let rules = document.map(|d| d.rules).unwrap_or_default();
        if rules.is_empty() || rules.len() > RULES_MAX {
            return Err(s3_error!(MalformedXML, "a lifecycle configuration has 1 to {RULES_MAX} rules"));
        }
        let rules = rules.into_iter().map(Rule::from_document).collect::<S3Result<Vec<_>>>()?;
        for (i, rule) in rules.iter().enumerate() {
            if rule.id.is_some() && rules[..i].iter().any(|r| r.id == rule.id) {
                return Err(s3_error!(InvalidArgument, "Rule ID must be unique. Found same ID for more than one rule"));
            }
        }
        Ok(Self { rules })
    }

    pub fn to_document(&self) -> Vec<LifecycleRule> {
        self.rules.iter().map(Rule::to_document).collect()
    }
}

impl JsonDocument for Config {}

impl Rule {
    fn from_document(r: LifecycleRule) -> S3Result<Self> {
        let noncurrent_transitions = r
            .noncurrent_version_transitions
            .unwrap_or_default()
            .into_iter()
            .map(noncurrent_transition)
            .collect::<S3Result<Vec<_>>>()?;
        let transitions =
            r.transitions.unwrap_or_default().into_iter().map(transition).collect::<S3Result<Vec<_>>>()?;
        let (prefix, tags) = match r.filter {
            Some(LifecycleRuleFilter { and: Some(and), .. }) => {
                let LifecycleRuleAndOperator { prefix, tags, .. } = and;
                let tags: Tags = tags
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| (t.key.unwrap_or_default(), t.value.unwrap_or_default()))
                    .collect();
                (prefix.unwrap_or_default(), tags)
            }
            Some(LifecycleRuleFilter { tag: Some(tag), prefix, .. }) => {
                (prefix.unwrap_or_default(), vec![(tag.key.unwrap_or_default(), tag.value.unwrap_or_default())])
            }
            Some(LifecycleRuleFilter { prefix, .. }) => (prefix.unwrap_or_default(), Vec::new()),
            None => (r.prefix.unwrap_or_default(), Vec::new()),
        };
        tagging::check(&tags, tagging::OBJECT_TAGS_MAX)?;
        let expiration = match r.expiration {
            None => None,
            Some(LifecycleExpiration { days: Some(d), date: None, .. }) => days(Some(d), "Days")?.map(Expiration::Days),
            Some(LifecycleExpiration { date: Some(date), days: None, .. }) => Some(Expiration::Date(millis(&date))),
            Some(LifecycleExpiration { expired_object_delete_marker: Some(true), days: None, date: None }) => {
                Some(Expiration::ExpiredDeleteMarker)
            }
            Some(LifecycleExpiration { expired_object_delete_marker: Some(false) | None, days: None, date: None }) => {
                None
            }
            Some(_) => {
                return Err(s3_error!(
                    MalformedXML,
                    "an Expiration names one of Days, Date or ExpiredObjectDeleteMarker"
                ))
            }
        };
        let noncurrent = match r.noncurrent_version_expiration {
            None => None,
            Some(NoncurrentVersionExpiration { noncurrent_days, newer_noncurrent_versions }) => {
                let days = days(noncurrent_days, "NoncurrentDays")?
                    .ok_or_else(|| s3_error!(MalformedXML, "NoncurrentVersionExpiration needs NoncurrentDays"))?;
                let kept = newer_noncurrent_versions.unwrap_or(0);
                if !(0..=100).contains(&kept) {
                    return Err(s3_error!(InvalidArgument, "NewerNoncurrentVersions is 1 to 100"));
                }
                Some(Noncurrent { days, newer_kept: kept as u32 })
            }
        };
        let abort_upload_days =
            days(r.abort_incomplete_multipart_upload.and_then(|a| a.days_after_initiation), "DaysAfterInitiation")?;
        let moves = transitions.is_empty() && noncurrent_transitions.is_empty();
        if expiration.is_none() && noncurrent.is_none() && abort_upload_days.is_none() && moves {
            return Err(s3_error!(MalformedXML, "a lifecycle rule needs at least one action"));
        }
        let enabled = match r.status.as_str() {
            ExpirationStatus::ENABLED => true,
            ExpirationStatus::DISABLED => false,
            other => return Err(s3_error!(MalformedXML, "a rule's Status is Enabled or Disabled, not {other}")),
        };
        Ok(Self {
            id: r.id,
            enabled,
            prefix,
            tags,
            expiration,
            noncurrent,
            abort_upload_days,
            transitions,
            noncurrent_transitions,
        })
    }

    fn to_document(&self) -> LifecycleRule {
        let tag = |(k, v): &(String, String)| Tag { key: Some(k.clone()), value: Some(v.clone()) };
        let filter = if self.tags.is_empty() {
            LifecycleRuleFilter { prefix: Some(self.prefix.clone()), ..Default::default() }
        } else {
            LifecycleRuleFilter {
                and: Some(LifecycleRuleAndOperator {
                    prefix: Some(self.prefix.clone()),
                    tags: Some(self.tags.iter().map(tag).collect()),
                    ..Default::default()
                }),
                ..Default::default()
            }
        };
        let expiration = self.expiration.map(|e| match e {
            Expiration::Days(d) => LifecycleExpiration { days: Some(d as i32), ..Default::default() },
            Expiration::Date(ms) => {
                LifecycleExpiration { date: Some(crate::description::timestamp(ms)), ..Default::default() }
            }
            Expiration::ExpiredDeleteMarker => {
                LifecycleExpiration { expired_object_delete_marker: Some(true), ..Default::default() }
            }
        });
        let status = if self.enabled { ExpirationStatus::ENABLED } else { ExpirationStatus::DISABLED };
        LifecycleRule {
            id: self.id.clone(),
            status: ExpirationStatus::from_static(status),
            filter: Some(filter),
            expiration,
            noncurrent_version_expiration: self.noncurrent.map(|n| NoncurrentVersionExpiration {
                noncurrent_days: Some(n.days as i32),
                newer_noncurrent_versions: (n.newer_kept > 0).then_some(n.newer_kept as i32),
            }),
            abort_incomplete_multipart_upload: self
                .abort_upload_days
                .map(|d| AbortIncompleteMultipartUpload { days_after_initiation: Some(d as i32) }),
            prefix: None,
            transitions: (!self.transitions.is_empty())
                .then(|| self.transitions.iter().map(Transition::to_document).collect()),
            noncurrent_version_transitions: (!self.noncurrent_transitions.is_empty())
                .then(|| self.noncurrent_transitions.iter().map(NoncurrentTransition::to_document).collect()),
        }
    }

    fn applies(&self, key: &str, tags: &Tags) -> bool {
        self.enabled && key.starts_with(&self.prefix) && self.tags.iter().all(|t| tags.contains(t))
    }
}

/// A transition as S3 gives it: Days or Date, and a storage class naming
/// the pool (case aside: `HDD` is pool `hdd`).
fn transition(t: s3s::dto::Transition) -> S3Result<Transition> {
    let when = match (t.days, t.date) {
        (Some(d), None) => Expiration::Days(days(Some(d), "Days")?.unwrap_or(0)),
        (None, Some(date)) => Expiration::Date(millis(&date)),
        _ => return Err(s3_error!(MalformedXML, "a Transition names one of Days or Date")),
    };
    let Some(class) = t.storage_class.filter(|c| !c.as_str().is_empty()) else {
        return Err(s3_error!(MalformedXML, "a Transition names its StorageClass"));
    };
    Ok(Transition { when, pool: class.as_str().to_ascii_lowercase() })
}

/// A noncurrent transition as S3 gives it.
fn noncurrent_transition(t: NoncurrentVersionTransition) -> S3Result<NoncurrentTransition> {
    let days = days(t.noncurrent_days, "NoncurrentDays")?
        .ok_or_else(|| s3_error!(MalformedXML, "NoncurrentVersionTransition needs NoncurrentDays"))?;
    let newer_kept = t.newer_noncurrent_versions.unwrap_or(0);
    if !(0..=100).contains(&newer_kept) {
        return Err(s3_error!(InvalidArgument, "NewerNoncurrentVersions is 1 to 100"));
    }
    let Some(class) = t.storage_class.filter(|c| !c.as_str().is_empty()) else {
        return Err(s3_error!(MalformedXML, "a NoncurrentVersionTransition names its StorageClass"));
    };
    Ok(NoncurrentTransition { days, newer_kept: newer_kept as u32, pool: class.as_str().to_ascii_lowercase() })
}

impl NoncurrentTransition {
    fn to_document(&self) -> NoncurrentVersionTransition {
        NoncurrentVersionTransition {
            noncurrent_days: Some(self.days as i32),
            newer_noncurrent_versions: (self.newer_kept > 0).then_some(self.newer_kept as i32),
            storage_class: Some(TransitionStorageClass::from(self.pool.to_ascii_uppercase())),
        }
    }
}

impl Transition {
    fn to_document(&self) -> s3s::dto::Transition {
        let (days, date) = match self.when {
            Expiration::Days(d) => (Some(d as i32), None),
            Expiration::Date(ms) => (None, Some(crate::description::timestamp(ms))),
            Expiration::ExpiredDeleteMarker => (None, None),
        };
        let storage_class = Some(TransitionStorageClass::from(self.pool.to_ascii_uppercase()));
        s3s::dto::Transition { days, date, storage_class }
    }
}

/// One version of a key as lifecycle judges it, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub version_id: String,
    pub seq: u64,
    pub delete_marker: bool,
    pub modified_ms: u64,
    pub tags: Tags,
    /// The pool holding all its data (none: no data, or not asked).
    pub pool: Option<String>,
}

/// What lifecycle does to a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Expire the current version (a delete marker, or gone when
    /// unversioned), if it is still `seq`.
    ExpireCurrent { seq: u64 },
    /// Remove this version for good, if it is still `seq` (and, for a
    /// `lone_marker`, still a delete marker with no other version).
    Remove { version_id: String, seq: u64, lone_marker: bool },
    /// Move version `version_id`'s data to `pool`, if it is still `seq`.
    Transition { version_id: String, seq: u64, pool: String },
}

/// What the rules do at `now_ms` to one key's versions (newest first), a
/// day being `day_ms`.
pub fn key_actions(rules: &[Rule], key: &str, versions: &[Version], now_ms: u64, day_ms: u64) -> Vec<Action> {
    let mut actions = Vec::new();
    let Some(current) = versions.first() else { return actions };
    let after = |from: u64, days: u32| from.saturating_add(u64::from(days).saturating_mul(day_ms)) <= now_ms;
    if !current.delete_marker {
        let expires = expiration(rules, key, &current.tags, current.modified_ms, day_ms);
        if expires.is_some_and(|(at, _)| at <= now_ms) {
            actions.push(Action::ExpireCurrent { seq: current.seq });
        } else if let Some(pool) = transition_due(rules, key, current, now_ms, day_ms) {
            actions.push(Action::Transition { version_id: current.version_id.clone(), seq: current.seq, pool });
        }
    } else if versions.len() == 1 {
        let cleanup = rules
            .iter()
            .filter(|r| r.applies(key, &Vec::new()))
            .any(|r| r.expiration == Some(Expiration::ExpiredDeleteMarker));
        if cleanup {
            actions.push(Action::Remove {
                version_id: current.version_id.clone(),
                seq: current.seq,
                lone_marker: true,
            });
        }
    }
    for (rank, pair) in versions.windows(2).enumerate() {
        let (newer, version) = (&pair[0], &pair[1]);
        let expired = rules.iter().filter(|r| r.applies(key, &version.tags)).any(|r| match r.noncurrent {
            Some(n) => rank as u32 >= n.newer_kept && after(newer.modified_ms, n.days),
            None => false,
        });
        if expired {
            actions.push(Action::Remove {
                version_id: version.version_id.clone(),
                seq: version.seq,
                lone_marker: false,
            });
            continue;
        }
        // Of the noncurrent transitions due, the one due last.
        let due = rules
            .iter()
            .filter(|r| r.applies(key, &version.tags) && !version.delete_marker)
            .flat_map(|r| &r.noncurrent_transitions)
            .filter(|t| rank as u32 >= t.newer_kept && after(newer.modified_ms, t.days))
            .max_by_key(|t| t.days);
        if let (Some(t), Some(here)) = (due, version.pool.as_deref()) {
            if t.pool != here {
                let (version_id, seq) = (version.version_id.clone(), version.seq);
                actions.push(Action::Transition { version_id, seq, pool: t.pool.clone() });
            }
        }
    }
    actions
}

/// When a current version of `key` with `tags`, written at `modified_ms`,
/// expires under the rules, and the rule that says so: the earliest of
/// the rules that apply. As S3 does, a rule's days are added to the
/// version's time and rounded up to the next day boundary (midnight UTC
/// for real days), so `x-amz-expiration` and the runner agree.
pub fn expiration<'r>(
    rules: &'r [Rule],
    key: &str,
    tags: &Tags,
    modified_ms: u64,
    day_ms: u64,
) -> Option<(u64, Option<&'r str>)> {
    rules
        .iter()
        .filter(|r| r.applies(key, tags))
        .filter_map(|r| Some((due_at(r.expiration?, modified_ms, day_ms)?, r.id.as_deref())))
        .min_by_key(|(at, _)| *at)
}

/// The pool a current version should move to now: of the transitions due,
/// the one due last (the coldest tier reached); none when its data is
/// already there or its pool is not known.
fn transition_due(rules: &[Rule], key: &str, current: &Version, now_ms: u64, day_ms: u64) -> Option<String> {
    let here = current.pool.as_deref()?;
    let (_, pool) = rules
        .iter()
        .filter(|r| r.applies(key, &current.tags))
        .flat_map(|r| &r.transitions)
        .filter_map(|t| Some((due_at(t.when, current.modified_ms, day_ms)?, &t.pool)))
        .filter(|(at, _)| *at <= now_ms)
        .max_by_key(|(at, _)| *at)?;
    (pool != here).then(|| pool.clone())
}

/// When an expiration or a transition of a version written at
/// `modified_ms` comes: days rounded up to the next day boundary, or the date.
fn due_at(when: Expiration, modified_ms: u64, day_ms: u64) -> Option<u64> {
    let day_ms = day_ms.max(1);
    match when {
        Expiration::Days(d) => Some(
            modified_ms.saturating_add(u64::from(d).saturating_mul(day_ms)).div_ceil(day_ms).saturating_mul(day_ms),
        ),
        Expiration::Date(at) => Some(at),
        Expiration::ExpiredDeleteMarker => None,
    }
}

/// The `x-amz-expiration` header of a version expiring at `at_ms` by rule
/// `rule_id`.
pub fn expiration_header(at_ms: u64, rule_id: Option<&str>) -> String {
    let date = crate::description::http_date(&crate::description::timestamp(at_ms)).unwrap_or_default();
    format!("expiry-date=\"{date}\", rule-id=\"{}\"", rule_id.unwrap_or(""))
}

/// Whether an upload started at `initiated_ms` of `key` is abandoned.
pub fn upload_abandoned(rules: &[Rule], key: &str, initiated_ms: u64, now_ms: u64, day_ms: u64) -> bool {
    rules.iter().filter(|r| r.enabled && key.starts_with(&r.prefix) && r.tags.is_empty()).any(|r| {
        r.abort_upload_days.is_some_and(|d| initiated_ms.saturating_add(u64::from(d).saturating_mul(day_ms)) <= now_ms)
    })
}

/// The name of the pool holding every run of `runs`; none when there are
/// none, or they are spread over pools (a transition in progress).
fn pool_of_data(runs: &[DataRun], pools: &HashMap<u32, String>) -> Option<String> {
    let first = chuyi_common::map::pool_of(runs.first()?.owner);
    if runs.iter().any(|r| chuyi_common::map::pool_of(r.owner) != first) {
        return None;
    }
    pools.get(&first).cloned()
}

/// Keys listed per metadata read while scanning.
const SCAN_PAGE: u32 = 1000;
/// Changes made per second at most, so lifecycle never crowds out clients.
const CHANGES_PER_S: u64 = 200;

/// One change lifecycle makes, or in a dry run would make.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Planned {
    pub bucket: String,
    pub key: String,
    /// `expire` (the current version becomes a delete marker, or goes when
    /// unversioned), `remove` (a version for good) or `abort` (an upload).
    pub change: &'static str,
    /// The version removed, or the upload aborted; for `expire`, the
    /// sequence of the version expired.
    pub what: String,
}

/// What a pass does: apply its changes, or only list them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Apply,
    DryRun,
}

/// How far a pass over one bucket has come. The runner keeps it as the
/// bucket's `lifecycle-progress` document, so `chuyi status` shows it
/// whichever gateway runs the pass.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub started_ms: u64,
    /// Versions and delete markers looked at so far.
    pub scanned: u64,
    /// Versions the bucket held when the pass started (its usage counter):
    /// about what the pass has to look at.
    pub total: u64,
    /// Changes made (or, in a dry run, listed) so far.
    pub changes: u64,
    pub updated_ms: u64,
    /// When the pass ended; none while it runs.
    pub finished_ms: Option<u64>,
}

impl Progress {
    /// Percent done: 100 once finished, below it until then (the total is
    /// the usage counter, which delete markers do not count).
    pub fn percent(&self) -> f64 {
        match (self.finished_ms, self.total) {
            (Some(_), _) => 100.0,
            (None, 0) => 0.0,
            (None, total) => (self.scanned as f64 * 100.0 / total as f64).min(99.9),
        }
    }

    /// Versions looked at per second.
    pub fn rate(&self) -> f64 {
        let end = self.finished_ms.unwrap_or(self.updated_ms);
        let secs = end.saturating_sub(self.started_ms) as f64 / 1000.0;
        if secs <= 0.0 {
            return 0.0;
        }
        self.scanned as f64 / secs
    }

    /// Seconds left at the rate so far; none when finished or unknown.
    pub fn eta_s(&self) -> Option<f64> {
        let rate = self.rate();
        (self.finished_ms.is_none() && rate > 0.0).then(|| self.total.saturating_sub(self.scanned) as f64 / rate)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<Progress> {
        serde_json::from_slice(bytes).ok()
    }
}

/// A running pass's progress is written at most this often.
const REPORT_EVERY_MS: u64 = 5_000;
/// A finished pass is written again after this long, so status shows when
/// lifecycle last went over the bucket without a write per pass.
const REPORT_IDLE_MS: u64 = 600_000;

/// What the runner last wrote of a bucket's progress: when, and whether
/// the pass was running then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reported {
    pub at_ms: u64,
    pub running: bool,
}

/// Whether `progress` is worth a metadata write at `now_ms`, `last` being
/// what was written before: a pass running for a while, every
/// `REPORT_EVERY_MS`; a finished one when it was reported running (so it
/// does not stay "running"), when nothing was written yet, or when the
/// last write is `REPORT_IDLE_MS` old. A short pass costs no write.
pub fn worth_reporting(progress: &Progress, last: Option<Reported>, now_ms: u64) -> bool {
    let since = |at: u64| now_ms.saturating_sub(at);
    match (progress.finished_ms, last) {
        (None, None) => since(progress.started_ms) >= REPORT_EVERY_MS,
        (None, Some(last)) => since(progress.started_ms) >= REPORT_EVERY_MS && since(last.at_ms) >= REPORT_EVERY_MS,
        (Some(_), None) => true,
        (Some(_), Some(last)) => last.running || since(last.at_ms) >= REPORT_IDLE_MS,
    }
}

/// Who hears of a pass's progress: the runner (which writes it to the
/// metadata service) or the CLI's bar for a dry run.
#[async_trait::async_trait]
pub trait Watch: Sync {
    async fn seen(&self, bucket: &str, progress: &Progress);
}

/// The runner's watch: writes progress as the bucket's document when
/// [`worth_reporting`] says so. A failed write is only logged: progress is
/// advice, and the next one will do.
#[derive(Debug)]
pub struct Recorder<'a> {
    meta: &'a MetaClient,
    last: std::sync::Mutex<HashMap<String, Reported>>,
}

impl<'a> Recorder<'a> {
    pub fn new(meta: &'a MetaClient) -> Self {
        Self { meta, last: Default::default() }
    }
}

#[async_trait::async_trait]
impl Watch for Recorder<'_> {
    async fn seen(&self, bucket: &str, progress: &Progress) {
        let now_ms = progress.updated_ms;
        let last = self.last.lock().map(|l| l.get(bucket).copied()).unwrap_or(None);
        if !worth_reporting(progress, last, now_ms) {
            return;
        }
        let request = Request::SetBucketConfig {
            bucket: bucket.into(),
            kind: BucketConfigKind::LifecycleProgress,
            document: Some(progress.encode()),
        };
        match self.meta.write(request).await {
            Ok(_) => {
                let reported = Reported { at_ms: now_ms, running: progress.finished_ms.is_none() };
                if let Ok(mut l) = self.last.lock() {
                    l.insert(bucket.to_string(), reported);
                }
            }
            Err(e) => tracing::debug!(bucket, error = %e, "lifecycle progress not recorded"),
        }
    }
}

/// Runs lifecycle over every bucket every `every`, a day lasting `day`;
/// transitions copy data through `data`.
pub async fn run(data: DataPath, day: Duration, every: Duration) {
    let day_ms = day.as_millis().max(1) as u64;
    let recorder = Recorder::new(data.cluster().meta());
    loop {
        tokio::time::sleep(every).await;
        let now_ms = chuyi_common::clock::unix_ms();
        match pass(data.cluster().meta(), Some(&data), None, now_ms, day_ms, Mode::Apply, &recorder).await {
            Ok(done) if done.is_empty() => {}
            Ok(done) => tracing::info!(changes = done.len(), "lifecycle pass"),
            Err(e) => tracing::debug!(error = %e, "lifecycle pass stopped; next time"),
        }
    }
}

/// One pass over every bucket with rules (or only `bucket`) as of
/// `now_ms`: the changes made, or in a dry run those it would make.
/// Transitions are made only with `data` to copy through. `watch` hears
/// each bucket's progress after every page of versions and at its end.
pub async fn pass(
    meta: &MetaClient,
    data: Option<&DataPath>,
    bucket: Option<&str>,
    now_ms: u64,
    day_ms: u64,
    mode: Mode,
    watch: &dyn Watch,
) -> Result<Vec<Planned>, MetaError> {
    let names = match bucket {
        Some(name) => vec![name.to_string()],
        None => meta.ask(ask::Buckets).await?.into_iter().map(|b| b.name).collect(),
    };
    let pools: HashMap<u32, String> =
        meta.ask(ask::Map).await?.data_map().pools.into_iter().map(|p| (p.id, p.name)).collect();
    let mut done = Vec::new();
    for name in names {
        let ask = ask::BucketConfig { bucket: name.clone(), kind: BucketConfigKind::Lifecycle };
        let Some(config) = meta.ask(ask).await?.and_then(|d| Config::decode(&d)) else { continue };
        let total = meta.ask(ask::BucketUsage(name.clone())).await?.objects;
        let scan = Scan { meta, data, pools: &pools, bucket: &name, config: &config, now_ms, day_ms, mode, watch };
        let mut progress = Progress { started_ms: chuyi_common::clock::unix_ms(), total, ..Progress::default() };
        let before = done.len();
        scan.objects(&mut progress, &mut done).await?;
        scan.uploads(&mut done).await?;
        let end = chuyi_common::clock::unix_ms();
        progress.changes = (done.len() - before) as u64;
        (progress.updated_ms, progress.finished_ms) = (end, Some(end));
        watch.seen(&name, &progress).await;
    }
    Ok(done)
}

/// One bucket's pass.
struct Scan<'a> {
    meta: &'a MetaClient,
    data: Option<&'a DataPath>,
    /// Pool names by id.
    pools: &'a HashMap<u32, String>,
    bucket: &'a str,
    config: &'a Config,
    now_ms: u64,
    day_ms: u64,
    mode: Mode,
    watch: &'a dyn Watch,
}

impl Scan<'_> {
    async fn objects(&self, progress: &mut Progress, done: &mut Vec<Planned>) -> Result<(), MetaError> {
        let before = done.len();
        let (mut after, mut key_versions) = (None::<ListCursor>, Vec::<ListEntry>::new());
        loop {
            let request = ListRequest {
                bucket: self.bucket.into(),
                prefix: String::new(),
                delimiter: None,
                after,
                max_keys: SCAN_PAGE,
                versions: true,
            };
            let page = self.meta.ask(ask::List(request)).await?;
            progress.scanned += page.entries.len() as u64;
            for entry in page.entries {
                if key_versions.first().is_some_and(|e| e.key != entry.key) {
                    self.key(&std::mem::take(&mut key_versions), done).await?;
                }
                key_versions.push(entry);
            }
            progress.changes = (done.len() - before) as u64;
            progress.updated_ms = chuyi_common::clock::unix_ms();
            self.watch.seen(self.bucket, progress).await;
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        self.key(&key_versions, done).await
    }

    /// One key's versions (newest first, as listed) under the rules.
    async fn key(&self, entries: &[ListEntry], done: &mut Vec<Planned>) -> Result<(), MetaError> {
        let Some(key) = entries.first().map(|e| e.key.clone()) else { return Ok(()) };
        let needs_tags = self.config.rules.iter().any(|r| !r.tags.is_empty());
        let moves = self.config.rules.iter().any(|r| !r.transitions.is_empty());
        let moves_old = self.config.rules.iter().any(|r| !r.noncurrent_transitions.is_empty());
        let mut versions = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            let o = &e.object;
            // Tags and the data's pool are in the version's record.
            let wanted = !o.delete_marker && (needs_tags || moves_old || (moves && i == 0));
            let record = if wanted {
                let ask = ask::Object {
                    bucket: self.bucket.into(),
                    key: key.clone(),
                    version_id: Some(o.version_id.clone()),
                };
                self.meta.ask(ask).await.ok()
            } else {
                None
            };
            versions.push(Version {
                version_id: o.version_id.clone(),
                seq: o.seq,
                delete_marker: o.delete_marker,
                modified_ms: o.modified_ms,
                tags: record.as_ref().map(|r| tagging::of_object(&r.data)).unwrap_or_default(),
                pool: record.as_ref().and_then(|r| pool_of_data(&r.data.data, self.pools)),
            });
        }
        for action in key_actions(&self.config.rules, &key, &versions, self.now_ms, self.day_ms) {
            let (request, planned) = match action {
                Action::ExpireCurrent { seq } => (
                    Request::ExpireObject { bucket: self.bucket.into(), key: key.clone(), seq },
                    self.planned(&key, "expire", seq.to_string()),
                ),
                Action::Remove { version_id, seq, lone_marker } => (
                    Request::RemoveVersion {
                        bucket: self.bucket.into(),
                        key: key.clone(),
                        version_id: version_id.clone(),
                        seq,
                        lone_marker,
                    },
                    self.planned(&key, "remove", version_id),
                ),
                Action::Transition { version_id, seq, pool } => {
                    self.transition(&key, &version_id, seq, &pool, done).await?;
                    continue;
                }
            };
            self.make(request, planned, done).await?;
        }
        Ok(())
    }

    /// Moves version `seq` of `key` to `pool`: its data copied there, then
    /// swapped in by the metadata service if the version is still as read.
    /// A copy that fails is logged and tried again next pass.
    async fn transition(
        &self,
        key: &str,
        version_id: &str,
        seq: u64,
        pool: &str,
        done: &mut Vec<Planned>,
    ) -> Result<(), MetaError> {
        let planned = self.planned(key, "transition", format!("{version_id} to {pool}"));
        let (Mode::Apply, Some(data)) = (self.mode, self.data) else {
            done.push(planned);
            return Ok(());
        };
        let ask = ask::Object { bucket: self.bucket.into(), key: key.into(), version_id: Some(version_id.into()) };
        let record = match self.meta.ask(ask).await {
            Ok(record) if record.seq == seq && !record.delete_marker => record,
            Ok(_) | Err(MetaError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let written = match copy_data(data, &record.data, pool).await {
            Ok(written) => written,
            Err(e) => {
                tracing::warn!(bucket = self.bucket, key, pool, error = %e, "lifecycle transition: copy failed");
                return Ok(());
            }
        };
        let request = Request::TransitionObject {
            bucket: self.bucket.into(),
            key: key.into(),
            seq,
            from: record.data.data.clone(),
            to: written.iter().map(|w| w.run.run).collect(),
        };
        // Count(0): moved or changed meanwhile; the copy is abandoned, as
        // it is when the move is refused (tried again next pass).
        match self.meta.write(request).await {
            Ok(Reply::Count(1)) => {
                for w in written {
                    w.run.claimed();
                }
                done.push(planned);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(bucket = self.bucket, key, pool, error = %e, "lifecycle transition refused"),
        }
        tokio::time::sleep(Duration::from_millis(1000 / CHANGES_PER_S)).await;
        Ok(())
    }

    async fn uploads(&self, done: &mut Vec<Planned>) -> Result<(), MetaError> {
        let mut after = None;
        loop {
            let ask = ask::Uploads {
                bucket: self.bucket.into(),
                prefix: String::new(),
                after: after.clone(),
                max: SCAN_PAGE,
            };
            let uploads = self.meta.ask(ask).await?;
            for u in &uploads {
                if upload_abandoned(&self.config.rules, &u.key, u.initiated_ms, self.now_ms, self.day_ms) {
                    let request = Request::AbortUpload {
                        bucket: self.bucket.into(),
                        key: u.key.clone(),
                        upload_id: u.upload_id.clone(),
                    };
                    self.make(request, self.planned(&u.key, "abort", u.upload_id.clone()), done).await?;
                }
            }
            match uploads.last() {
                Some(last) if uploads.len() == SCAN_PAGE as usize => {
                    after = Some((last.key.clone(), last.upload_id.clone()));
                }
                _ => return Ok(()),
            }
        }
    }

    fn planned(&self, key: &str, change: &'static str, what: String) -> Planned {
        Planned { bucket: self.bucket.into(), key: key.into(), change, what }
    }

    /// Makes one change (or, in a dry run, lists it), throttled.
    async fn make(&self, request: Request, planned: Planned, done: &mut Vec<Planned>) -> Result<(), MetaError> {
        if self.mode == Mode::DryRun {
            done.push(planned);
            return Ok(());
        }
        match self.meta.write(request).await {
            // `ExpireObject` or `RemoveVersion` found the version already
            // replaced: nothing done.
            Ok(Reply::Count(0)) => {}
            Ok(_) => done.push(planned),
            // Object lock keeps what it protects; another runner may have
            // been first. Neither stops the pass.
            Err(e @ (MetaError::Locked { .. } | MetaError::NotFound { .. } | MetaError::BadUpload { .. })) => {
                tracing::debug!(bucket = self.bucket, key = planned.key, error = %e, "lifecycle left it");
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(Duration::from_millis(1000 / CHANGES_PER_S)).await;
        Ok(())
    }
}

/// Copies an object's data into `pool` for a transition. Plain data
/// becomes one run (packed when small); framed runs are copied as they
/// are stored, one by one (each names its own frames), never packed but
/// for a lone one, so no move adds more than one run to a pack.
async fn copy_data(data: &DataPath, object: &ObjectPut, pool: &str) -> S3Result<Vec<crate::data::Written>> {
    let runs = &object.data;
    if object.flags & OBJECT_FRAMED == 0 || runs.len() == 1 {
        let len: u64 = runs.iter().map(|run| run.len).sum();
        let body = data.read(runs, 0..len).await?;
        return Ok(vec![data.write_object(pool, len, body, Default::default(), &Spec::default()).await?]);
    }
    let mut written = Vec::with_capacity(runs.len());
    for run in runs {
        let body = data.read(std::slice::from_ref(run), 0..run.len).await?;
        written.push(data.write(pool, run.len, body, Default::default(), &Spec::default()).await?);
    }
    Ok(written)
}

/// Get/Put/DeleteBucketLifecycleConfiguration, kept as the bucket's
/// `lifecycle` document, and what it says of one version.
impl crate::gateway::Gateway {
    /// `x-amz-expiration` for the current version `object` of `key`,
    /// written at `modified_ms`: none when no rule expires it, or when the
    /// rules cannot be read now (the header is advice, not worth a
    /// request's failure).
    pub(crate) async fn expiration_of(
        &self,
        bucket: &str,
        key: &str,
        object: &ObjectPut,
        modified_ms: u64,
    ) -> Option<String> {
        let config = self.lifecycles.of(bucket).await.ok().flatten()?;
        let day_ms = u64::try_from(self.lifecycle_day.as_millis()).unwrap_or(u64::MAX);
        let tags = tagging::of_object(object);
        let (at, rule) = expiration(&config.rules, key, &tags, modified_ms, day_ms)?;
        Some(expiration_header(at, rule))
    }

    pub(crate) async fn bucket_lifecycle(
        &self,
        req: s3s::S3Request<GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<s3s::S3Response<GetBucketLifecycleConfigurationOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let missing = s3_error!(NoSuchLifecycleConfiguration, "The lifecycle configuration does not exist");
        let config = self.bucket_document(bucket, BucketConfigKind::Lifecycle, Config::decode, missing).await?;
        let output = GetBucketLifecycleConfigurationOutput { rules: Some(config.to_document()), ..Default::default() };
        Ok(s3s::S3Response::new(output))
    }

    pub(crate) async fn set_bucket_lifecycle(
        &self,
        req: s3s::S3Request<PutBucketLifecycleConfigurationInput>,
    ) -> S3Result<s3s::S3Response<PutBucketLifecycleConfigurationOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let config = Config::from_document(req.input.lifecycle_configuration)?;
        let map = self.data.cluster().map();
        let pools = config.rules.iter().flat_map(|r| {
            let current = r.transitions.iter().map(|t| &t.pool);
            current.chain(r.noncurrent_transitions.iter().map(|t| &t.pool))
        });
        for pool in pools {
            if !map.pools.iter().any(|p| p.name == *pool) {
                let class = pool.to_ascii_uppercase();
                return Err(s3_error!(InvalidStorageClass, "storage class {class} names no pool of this cluster"));
            }
        }
        self.set_bucket_document(bucket, BucketConfigKind::Lifecycle, Some(config.encode())).await?;
        Ok(s3s::S3Response::new(PutBucketLifecycleConfigurationOutput::default()))
    }

    pub(crate) async fn delete_lifecycle(
        &self,
        req: s3s::S3Request<DeleteBucketLifecycleInput>,
    ) -> S3Result<s3s::S3Response<DeleteBucketLifecycleOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        self.set_bucket_document(bucket, BucketConfigKind::Lifecycle, None).await?;
        Ok(s3s::S3Response::new(DeleteBucketLifecycleOutput::default()))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn progress_shows_percent_rate_and_eta() {
        let mut p = Progress { started_ms: 0, scanned: 250, total: 1000, updated_ms: 5_000, ..Progress::default() };
        assert_eq!((p.percent(), p.rate(), p.eta_s()), (25.0, 50.0, Some(15.0)));
        // Delete markers are not in the total: never 100 % before the end.
        p.scanned = 1200;
        assert_eq!(p.percent(), 99.9);
        p.finished_ms = Some(6_000);
        assert_eq!((p.percent(), p.eta_s()), (100.0, None));
        assert_eq!(Progress::decode(&p.encode()), Some(p));
        assert_eq!(Progress::default().eta_s(), None);
    }

    #[test]
    fn progress_is_written_for_long_passes_and_their_end_not_for_every_short_pass() {
        let running = Progress { started_ms: 0, ..Progress::default() };
        assert!(!worth_reporting(&running, None, 4_999), "a pass just begun");
        assert!(worth_reporting(&running, None, 5_000));
        let written = Some(Reported { at_ms: 5_000, running: true });
        assert!(!worth_reporting(&running, written, 9_000), "written a moment ago");
        assert!(worth_reporting(&running, written, 10_000));
        let finished = Progress { finished_ms: Some(12_000), ..running.clone() };
        assert!(worth_reporting(&finished, written, 12_000), "a pass reported running is reported ended");
        assert!(worth_reporting(&finished, None, 12_000), "the first pass is recorded");
        let idle = Some(Reported { at_ms: 12_000, running: false });
        assert!(!worth_reporting(&finished, idle, 20_000), "a short pass after a recorded one costs no write");
        assert!(worth_reporting(&finished, idle, 12_000 + REPORT_IDLE_MS));
    }
    use super::*;

    #[test]
    fn an_expiry_past_year_9999_is_reported_at_its_end() {
        // Days is any positive i32: 2^31 days from now is past what a
        // timestamp holds, and the PUT, GET or HEAD reporting it must not
        // panic.
        let at = due_at(Expiration::Days(i32::MAX as u32), 1_800_000_000_000, 86_400_000).expect("due");
        let header = expiration_header(at, Some("far"));
        assert!(header.contains("9999"), "{header}");
    }

    const DAY: u64 = 1000;

    fn rule(prefix: &str) -> Rule {
        Rule {
            id: None,
            enabled: true,
            prefix: prefix.into(),
            tags: Vec::new(),
            expiration: None,
            noncurrent: None,
            abort_upload_days: None,
            transitions: Vec::new(),
            noncurrent_transitions: Vec::new(),
        }
    }

    fn v(id: &str, seq: u64, marker: bool, modified_ms: u64) -> Version {
        Version { version_id: id.into(), seq, delete_marker: marker, modified_ms, tags: Vec::new(), pool: None }
    }

    #[test]
    fn current_versions_expire_after_their_days_or_on_the_date() {
        let rules = vec![Rule { expiration: Some(Expiration::Days(2)), ..rule("logs/") }];
        let versions = [v("b", 2, false, 1000)];
        assert!(key_actions(&rules, "logs/a", &versions, 2999, DAY).is_empty());
        assert_eq!(key_actions(&rules, "logs/a", &versions, 3000, DAY), vec![Action::ExpireCurrent { seq: 2 }]);
        assert!(key_actions(&rules, "scans/a", &versions, 9999, DAY).is_empty(), "outside the prefix");
        let dated = vec![Rule { expiration: Some(Expiration::Date(5000)), ..rule("") }];
        assert!(key_actions(&dated, "k", &versions, 4999, DAY).is_empty());
        assert_eq!(key_actions(&dated, "k", &versions, 5000, DAY).len(), 1);
        let off = vec![Rule { enabled: false, ..rules[0].clone() }];
        assert!(key_actions(&off, "logs/a", &versions, 9999, DAY).is_empty(), "a disabled rule");
        // Days end at the next day boundary, as S3's midnight UTC.
        let midday = [v("b", 2, false, 1500)];
        assert!(key_actions(&rules, "logs/a", &midday, 3999, DAY).is_empty());
        assert_eq!(key_actions(&rules, "logs/a", &midday, 4000, DAY).len(), 1);
    }

    #[test]
    fn a_current_version_moves_to_the_coldest_pool_due_once() {
        let to = |pool: &str, days| Transition { when: Expiration::Days(days), pool: pool.into() };
        let rules = vec![Rule { transitions: vec![to("hdd", 1), to("archive", 3)], ..rule("scans/") }];
        let at = |pool: &str| Version { pool: Some(pool.into()), ..v("b", 2, false, 0) };
        let moves = |version: &Version, now| key_actions(&rules, "scans/a", std::slice::from_ref(version), now, DAY);
        assert!(moves(&at("ssd"), 999).is_empty(), "not yet");
        let to_pool = |pool: &str| vec![Action::Transition { version_id: "b".into(), seq: 2, pool: pool.into() }];
        assert_eq!(moves(&at("ssd"), 1000), to_pool("hdd"));
        assert!(moves(&at("hdd"), 2000).is_empty(), "already there");
        assert_eq!(moves(&at("hdd"), 3000), to_pool("archive"));
        assert_eq!(moves(&at("ssd"), 9000), to_pool("archive"), "straight on");
        assert!(moves(&Version { pool: None, ..at("ssd") }, 9000).is_empty(), "data spread over pools: wait");
        let expiring = vec![Rule { expiration: Some(Expiration::Days(2)), ..rules[0].clone() }];
        let expired = key_actions(&expiring, "scans/a", &[at("hdd")], 3000, DAY);
        assert_eq!(expired, vec![Action::ExpireCurrent { seq: 2 }], "expiry outranks a move");
    }

    #[test]
    fn noncurrent_versions_move_a_day_after_they_were_replaced_keeping_the_newest_in_place() {
        let t = NoncurrentTransition { days: 1, newer_kept: 1, pool: "hdd".into() };
        let rules = vec![Rule { noncurrent_transitions: vec![t], ..rule("") }];
        let on =
            |id: &str, seq, modified, pool: &str| Version { pool: Some(pool.into()), ..v(id, seq, false, modified) };
        // Current c (t=3000); b replaced at 3000, a at 2000.
        let versions = [on("c", 3, 3000, "ssd"), on("b", 2, 2000, "ssd"), on("a", 1, 100, "ssd")];
        let moved = |now| key_actions(&rules, "k", &versions, now, DAY);
        assert!(moved(2999).is_empty(), "a was replaced less than a day ago");
        let a_moves = vec![Action::Transition { version_id: "a".into(), seq: 1, pool: "hdd".into() }];
        assert_eq!(moved(3000), a_moves);
        assert_eq!(moved(99_000), a_moves, "b, the newest noncurrent, stays");
        let there = [versions[0].clone(), versions[1].clone(), on("a", 1, 100, "hdd")];
        assert!(key_actions(&rules, "k", &there, 9000, DAY).is_empty(), "already moved");
    }

    #[test]
    fn the_expiration_header_names_the_earliest_rule() {
        let rules = vec![
            Rule { id: Some("late".into()), expiration: Some(Expiration::Days(30)), ..rule("") },
            Rule { id: Some("scans".into()), expiration: Some(Expiration::Days(1)), ..rule("scans/") },
            Rule { id: Some("markers".into()), expiration: Some(Expiration::ExpiredDeleteMarker), ..rule("") },
        ];
        let real_day = 86_400_000;
        // 2012-12-21 15:00 UTC plus one day, rounded up to midnight.
        let written = 1_356_102_000_000;
        let (at, id) = expiration(&rules, "scans/a", &Vec::new(), written, real_day).expect("expires");
        assert_eq!((at, id), (1_356_220_800_000, Some("scans")));
        assert_eq!(expiration_header(at, id), r#"expiry-date="Sun, 23 Dec 2012 00:00:00 GMT", rule-id="scans""#);
        assert_eq!(expiration(&rules, "logs/a", &Vec::new(), written, real_day).map(|e| e.1), Some(Some("late")));
        assert_eq!(expiration(&rules[2..], "k", &Vec::new(), written, real_day), None, "no date to give");
    }

    #[test]
    fn noncurrent_versions_expire_from_when_they_were_replaced_keeping_the_newest() {
        let rules = vec![Rule { noncurrent: Some(Noncurrent { days: 1, newer_kept: 1 }), ..rule("") }];
        // Current d (t=5000); c replaced at 5000, b at 3000, a at 2000.
        let versions = [v("d", 4, false, 5000), v("c", 3, false, 3000), v("b", 2, false, 2000), v("a", 1, false, 100)];
        let removed = |now| {
            key_actions(&rules, "k", &versions, now, DAY)
                .into_iter()
                .map(|a| match a {
                    Action::Remove { version_id, seq, lone_marker: false } => {
                        assert_eq!(versions.iter().find(|v| v.version_id == version_id).map(|v| v.seq), Some(seq));
                        version_id
                    }
                    other => panic!("{other:?}"),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(removed(3999), vec!["a".to_string()], "a a day after b replaced it; c is the one kept");
        assert_eq!(removed(4000), vec!["b".to_string(), "a".to_string()]);
        assert_eq!(removed(1_000_000), vec!["b".to_string(), "a".to_string()], "c stays: the newest noncurrent");
    }

    #[test]
    fn a_lone_delete_marker_goes_only_when_asked_and_tags_filter() {
        let cleanup = vec![Rule { expiration: Some(Expiration::ExpiredDeleteMarker), ..rule("") }];
        let lone = [v("m", 3, true, 100)];
        assert_eq!(
            key_actions(&cleanup, "k", &lone, 200, DAY),
            vec![Action::Remove { version_id: "m".into(), seq: 3, lone_marker: true }]
        );
        let over = [v("m", 3, true, 100), v("a", 1, false, 50)];
        assert!(key_actions(&cleanup, "k", &over, 200, DAY).is_empty(), "a marker over versions stays");
        let tagged = vec![Rule {
            tags: vec![("class".into(), "temp".into())],
            expiration: Some(Expiration::Days(1)),
            ..rule("")
        }];
        let mut version = v("a", 1, false, 0);
        assert!(key_actions(&tagged, "k", &[version.clone()], 9999, DAY).is_empty(), "untagged: left");
        version.tags = vec![("class".into(), "temp".into()), ("x".into(), "y".into())];
        assert_eq!(key_actions(&tagged, "k", &[version], 9999, DAY).len(), 1);
    }

    #[test]
    fn uploads_are_abandoned_after_their_days() {
        let rules = vec![Rule { abort_upload_days: Some(3), ..rule("tmp/") }];
        assert!(!upload_abandoned(&rules, "tmp/x", 1000, 3999, DAY));
        assert!(upload_abandoned(&rules, "tmp/x", 1000, 4000, DAY));
        assert!(!upload_abandoned(&rules, "keep/x", 0, 1_000_000, DAY));
    }

    #[test]
    fn configurations_round_trip_and_bad_ones_are_refused() {
        let rules = vec![
            Rule { id: Some("a".into()), expiration: Some(Expiration::Days(30)), ..rule("logs/") },
            Rule {
                id: Some("b".into()),
                tags: vec![("k".into(), "v".into())],
                noncurrent: Some(Noncurrent { days: 7, newer_kept: 2 }),
                abort_upload_days: Some(1),
                ..rule("x/")
            },
        ];
        let config = Config { rules };
        let document = BucketLifecycleConfiguration { rules: config.to_document() };
        assert_eq!(Config::from_document(Some(document)).ok(), Some(config.clone()));
        assert_eq!(Config::decode(&config.encode()), Some(config.clone()));
        let code = |r: S3Result<Config>| r.err().map(|e| e.code().as_str().to_string());
        let mut twice = config.to_document();
        twice[1].id = Some("a".into());
        assert_eq!(
            code(Config::from_document(Some(BucketLifecycleConfiguration { rules: twice }))).as_deref(),
            Some("InvalidArgument")
        );
        let mut none = config.to_document();
        none.truncate(1);
        none[0].expiration = None;
        assert_eq!(
            code(Config::from_document(Some(BucketLifecycleConfiguration { rules: none }))).as_deref(),
            Some("MalformedXML")
        );
        assert_eq!(code(Config::from_document(None)).as_deref(), Some("MalformedXML"));
    }
}
