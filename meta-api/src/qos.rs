//! QoS rules as the metadata service keeps them, which rules a request
//! answers to, and the messages by which frontends share a rule's rate.
//!
//! A rule names what it limits ([`QosScope`]) and its [`QosLimits`]: rates
//! per [`Dimension`], and a burst. Rules live in the state (committed by
//! `SetQosRule` / `DeleteQosRule`, versioned so that a frontend refetches
//! them only when they changed). The rate of a rule is the cluster's, not
//! one frontend's: every frontend that serves a rule reports what it used
//! and whether it was held back ([`QosReport`]), about once a second, to
//! the metadata leader, which answers with the share of each rule's rate
//! that frontend may use until the next report ([`QosGrant`]). The
//! leader's counters of every frontend are what `chuyi qos status` shows.

use serde::{Deserialize, Serialize};

/// What a rule limits. For S3, a user (over all buckets), a bucket (over
/// all users), or one user on one bucket; for volumes, one volume, or each
/// volume of a pool (a performance class: every volume gets the limits on
/// its own, they are not a pool total).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum QosScope {
    User(String),
    Bucket(String),
    UserBucket { user: String, bucket: String },
    Volume(String),
    Pool(String),
}

impl std::fmt::Display for QosScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QosScope::User(user) => write!(f, "user {user}"),
            QosScope::Bucket(bucket) => write!(f, "bucket {bucket}"),
            QosScope::UserBucket { user, bucket } => write!(f, "user {user} on bucket {bucket}"),
            QosScope::Volume(volume) => write!(f, "volume {volume}"),
            QosScope::Pool(pool) => write!(f, "each volume of pool {pool}"),
        }
    }
}

/// One rate a rule may limit. Requests are S3 requests, or a volume's
/// operations normalised to 4 KiB ([`VOLUME_OP_BYTES`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Dimension {
    /// Every request or operation.
    Requests,
    /// S3 GET, HEAD and LIST; volume reads.
    ReadRequests,
    /// Every other S3 request; volume writes, trims and zeroes (flushes
    /// and block status are not counted).
    WriteRequests,
    /// Bytes sent to clients (S3 response bodies, volume reads).
    Download,
    /// Bytes received from clients (S3 request bodies, volume writes).
    Upload,
    /// Bytes either way.
    Bytes,
}

impl Dimension {
    pub const ALL: [Dimension; 6] = [
        Dimension::Requests,
        Dimension::ReadRequests,
        Dimension::WriteRequests,
        Dimension::Download,
        Dimension::Upload,
        Dimension::Bytes,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Dimension::Requests => "requests",
            Dimension::ReadRequests => "read-requests",
            Dimension::WriteRequests => "write-requests",
            Dimension::Download => "download",
            Dimension::Upload => "upload",
            Dimension::Bytes => "bytes",
        }
    }

    pub fn is_bytes(self) -> bool {
        matches!(self, Dimension::Download | Dimension::Upload | Dimension::Bytes)
    }
}

/// A volume operation counts one request per this many bytes (at least
/// one): a 64 KiB write is 16 of a volume's IOPS.
pub const VOLUME_OP_BYTES: u64 = 4096;

/// A request is never held back longer than this waiting for its turn in
/// a request rate: past it, S3 answers `503 SlowDown`. Body bytes are
/// paced, never refused.
pub const REQUEST_WAIT_MAX_MS: u64 = 1_000;

/// The burst when a rule names none: a second of each rate.
pub const DEFAULT_BURST_MS: u32 = 1_000;

/// The smallest byte rate a rule may set: below it, a paced body would
/// fall behind the gateway's minimum body rate and be cut as a stalled one.
pub const BYTE_RATE_MIN: u64 = 64 * 1024;

/// The most a burst may hold: a minute of each rate.
pub const BURST_MAX_MS: u32 = 60_000;

/// A rule's rates, per second, by [`Dimension::index`] (`None`: not
/// limited), and its burst: how much of each rate may be used at once
/// after a quiet spell, as time at that rate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QosLimits {
    pub rates: [Option<u64>; 6],
    pub burst_ms: u32,
}

impl QosLimits {
    pub fn rate(&self, d: Dimension) -> Option<u64> {
        self.rates[d.index()]
    }

    pub fn set(&mut self, d: Dimension, rate: Option<u64>) {
        self.rates[d.index()] = rate;
    }

    /// Why these limits cannot be a rule, if they cannot.
    pub fn problem(&self) -> Option<String> {
        if self.rates.iter().all(Option::is_none) {
            return Some("a rule must limit at least one rate".into());
        }
        for d in Dimension::ALL {
            match self.rate(d) {
                Some(0) => return Some(format!("{} must be above 0 (delete the rule to lift it)", d.name())),
                Some(r) if d.is_bytes() && r < BYTE_RATE_MIN => {
                    return Some(format!("{} must be at least {BYTE_RATE_MIN} bytes/s", d.name()))
                }
                _ => {}
            }
        }
        if self.burst_ms == 0 || self.burst_ms > BURST_MAX_MS {
            return Some(format!("the burst must be 1 ms to {} s", BURST_MAX_MS / 1000));
        }
        None
    }
}

/// A rule as the metadata service keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QosRule {
    pub scope: QosScope,
    pub limits: QosLimits,
}

/// The rules an S3 request of `user` (none: anonymous) on `bucket` (none:
/// ListBuckets, CreateBucket) answers to, each enforced: the rule of that
/// user on that bucket when there is one, for it is the most specific;
/// otherwise the user's rule and the bucket's rule, either or both.
pub fn s3_scopes(has_rule: impl Fn(&QosScope) -> bool, user: Option<&str>, bucket: Option<&str>) -> Vec<QosScope> {
    if let (Some(user), Some(bucket)) = (user, bucket) {
        let both = QosScope::UserBucket { user: user.into(), bucket: bucket.into() };
        if has_rule(&both) {
            return vec![both];
        }
    }
    let user = user.map(|u| QosScope::User(u.into()));
    let bucket = bucket.map(|b| QosScope::Bucket(b.into()));
    [user, bucket].into_iter().flatten().filter(|s| has_rule(s)).collect()
}

/// The rule a volume answers to: its own, else its pool's class.
pub fn volume_scope(has_rule: impl Fn(&QosScope) -> bool, volume: &str, pool: &str) -> Option<QosScope> {
    [QosScope::Volume(volume.into()), QosScope::Pool(pool.into())].into_iter().find(|s| has_rule(s))
}

/// How much of one rate a frontend used in its last period, and whether
/// it held anything back for it (then it wanted more than it had).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Use {
    pub per_s: f64,
    pub pressed: bool,
}

/// What a frontend counted for a rule since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QosCounters {
    /// Requests (or volume operations, normalised) admitted.
    pub admitted: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Requests that waited for their turn, and bytes paced, and for how
    /// long in all.
    pub delayed: u64,
    pub delayed_ms: u64,
    /// Requests refused (503 SlowDown) after the longest wait.
    pub refused: u64,
}

impl QosCounters {
    /// Adds `other` (a frontend's report: saturating, never a panic).
    pub fn add(&mut self, other: &QosCounters) {
        self.admitted = self.admitted.saturating_add(other.admitted);
        self.bytes_in = self.bytes_in.saturating_add(other.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(other.bytes_out);
        self.delayed = self.delayed.saturating_add(other.delayed);
        self.delayed_ms = self.delayed_ms.saturating_add(other.delayed_ms);
        self.refused = self.refused.saturating_add(other.refused);
    }
}

/// One rule as a frontend reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleUse {
    pub scope: QosScope,
    /// By [`Dimension::index`].
    pub uses: [Use; 6],
    pub counters: QosCounters,
}

/// A frontend's report to the leader, about once a second.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QosReport {
    /// Chosen at random when the frontend starts: two frontends with one
    /// credential are still two.
    pub instance: u64,
    /// The rules' version the frontend has (0: none yet).
    pub rules_version: u64,
    /// The rules it served in the last few periods.
    pub rules: Vec<RuleUse>,
}

/// The leader's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QosGrant {
    /// Every rule, when the frontend's version is not the current one.
    pub rules: Option<(u64, Vec<QosRule>)>,
    /// This frontend's share of each rate of the rules it reported, per
    /// second, by [`Dimension::index`].
    pub shares: Vec<(QosScope, [Option<f64>; 6])>,
    /// Frontends heard from lately: without an answer, a frontend takes
    /// this fraction of a rule's rate.
    pub frontends: u32,
}

/// One rule as `chuyi qos status` shows it, or one volume limited by its
/// pool's class: the sum over the frontends that reported it lately.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleStatus {
    pub scope: QosScope,
    /// The rule's limits; none for a volume under its pool's rule.
    pub limits: Option<QosLimits>,
    /// By [`Dimension::index`], per second, over the last period.
    pub rates: [f64; 6],
    pub counters: QosCounters,
    pub frontends: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(scopes: &[QosScope]) -> impl Fn(&QosScope) -> bool + '_ {
        move |s| scopes.contains(s)
    }

    #[test]
    fn the_user_on_the_bucket_rule_wins_over_the_user_and_the_bucket_rules() {
        let user = QosScope::User("edge".into());
        let bucket = QosScope::Bucket("scans".into());
        let both = QosScope::UserBucket { user: "edge".into(), bucket: "scans".into() };
        let all = [user.clone(), bucket.clone(), both.clone()];
        assert_eq!(s3_scopes(rules(&all), Some("edge"), Some("scans")), vec![both]);
        assert_eq!(s3_scopes(rules(&all), Some("edge"), Some("other")), vec![user.clone()]);
        assert_eq!(s3_scopes(rules(&all), Some("ward"), Some("scans")), vec![bucket.clone()]);
        let apart = [user.clone(), bucket.clone()];
        assert_eq!(s3_scopes(rules(&apart), Some("edge"), Some("scans")), vec![user.clone(), bucket.clone()]);
        assert_eq!(s3_scopes(rules(&apart), None, Some("scans")), vec![bucket]);
        assert_eq!(s3_scopes(rules(&apart), Some("edge"), None), vec![user]);
        assert!(s3_scopes(rules(&[]), Some("edge"), Some("scans")).is_empty());
    }

    #[test]
    fn a_volume_rule_wins_over_its_pools_class() {
        let vol = QosScope::Volume("db".into());
        let pool = QosScope::Pool("ssd".into());
        assert_eq!(volume_scope(rules(&[vol.clone(), pool.clone()]), "db", "ssd"), Some(vol));
        assert_eq!(volume_scope(rules(std::slice::from_ref(&pool)), "db", "ssd"), Some(pool));
        assert_eq!(volume_scope(rules(&[]), "db", "ssd"), None);
    }

    #[test]
    fn limits_are_checked() {
        let mut limits = QosLimits { burst_ms: DEFAULT_BURST_MS, ..Default::default() };
        assert!(limits.problem().unwrap_or_default().contains("at least one"));
        limits.set(Dimension::Requests, Some(0));
        assert!(limits.problem().unwrap_or_default().contains("above 0"));
        limits.set(Dimension::Requests, Some(50));
        assert_eq!(limits.problem(), None);
        limits.set(Dimension::Download, Some(1000));
        assert!(limits.problem().unwrap_or_default().contains("at least"));
        limits.set(Dimension::Download, Some(20_000_000));
        limits.burst_ms = 0;
        assert!(limits.problem().unwrap_or_default().contains("burst"));
    }
}
