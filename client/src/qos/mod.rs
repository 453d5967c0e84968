//! QoS as a frontend enforces it: the rules it learns from the metadata
//! service, one [`Limiter`] per rule it serves, and the exchange that
//! keeps each limiter at this frontend's share of its rule's rate.
//!
//! Every [`EXCHANGE_EVERY`] the frontend reports to the metadata leader
//! what it used of each rule it served lately and whether it held anything
//! back; the answer is its shares (the leader splits each rate among the
//! frontends by their use: `metadata/src/qos.rs`) and, when they changed,
//! the rules. When the leader cannot be reached for [`FALLBACK_AFTER`],
//! each limiter runs at an equal part of its rule's rate among the
//! frontends last counted (gateways and NBD frontends alike: a part
//! smaller than need be, never a sum above the rate); a volume's limiter
//! keeps its whole rate.
//!
//! The decisions (who takes what, when a request is turned away) are the
//! pure [`bucket`] and [`limiter`]; this module holds them together and
//! waits.

pub mod bucket;
pub mod limiter;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use chuyi_meta_api::qos::{self as rules, Dimension, QosGrant, QosLimits, QosReport, QosRule, QosScope};

pub use limiter::{Limiter, Takes, Tickets};

use crate::Cluster;
use chuyi_common::metrics::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use chuyi_common::metrics::prometheus_client::metrics::counter::ConstCounter;
use chuyi_common::metrics::prometheus_client::metrics::MetricType;

/// How often a frontend reports and gets its shares.
pub const EXCHANGE_EVERY: Duration = Duration::from_secs(1);
/// How long a frontend goes without an answer before it falls back to
/// equal parts.
pub const FALLBACK_AFTER: Duration = Duration::from_secs(3);
/// A limiter that took nothing for this long is no longer reported.
pub const REPORT_IDLE: Duration = Duration::from_secs(60);
/// A taker waits in slices this long, asking again after each: a larger
/// share shortens the wait at once.
pub const WAIT_SLICE: Duration = Duration::from_millis(50);

/// One volume's limiter as a block frontend asks for it on every request:
/// looked up again only when the frontend's rules changed
/// ([`Qos::changes`]), so a rule set or changed online applies to the
/// next request without a map lookup on each.
#[derive(Debug)]
pub struct VolumeLimiter {
    qos: Arc<Qos>,
    volume: String,
    pool: String,
    /// The limiter, and the rule changes it was looked up at (none: not yet).
    cached: Mutex<(Option<u64>, Option<Arc<Limiter>>)>,
}

impl VolumeLimiter {
    pub fn new(qos: Arc<Qos>, volume: &str, pool: &str) -> Self {
        Self { qos, volume: volume.into(), pool: pool.into(), cached: Mutex::new((None, None)) }
    }

    /// The volume's limiter, if a rule has it.
    pub fn get(&self) -> Option<Arc<Limiter>> {
        let changes = self.qos.changes();
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if cached.0 != Some(changes) {
            *cached = (Some(changes), self.qos.volume(&self.volume, &self.pool));
        }
        cached.1.clone()
    }
}

/// The rules and their limiters on one frontend.
#[derive(Debug)]
pub struct Qos {
    instance: u64,
    known: Mutex<Known>,
    /// Frontends the leader counted at the last answer.
    frontends: AtomicU32,
    /// Moves whenever the rules (and so which limiter a scope has) change:
    /// a caller may keep a limiter until it moves.
    changes: AtomicU64,
}

#[derive(Debug, Default)]
struct Known {
    version: u64,
    rules: HashMap<QosScope, QosLimits>,
    /// By the scope it limits, with the scope of the rule whose rates it
    /// runs at (a volume's limiter may run at its pool's).
    limiters: HashMap<QosScope, (QosScope, Arc<Limiter>)>,
    answered: Option<Instant>,
    fallen_back: bool,
}

/// A request turned away: its rates are spent for longer than it may wait.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("QoS: {scope} is over its rate")]
pub struct Refused {
    pub scope: QosScope,
}

impl Qos {
    /// A frontend's QoS, kept current by a task that runs while it lives.
    pub fn start(cluster: Arc<Cluster>) -> Arc<Qos> {
        let mut bytes = [0u8; 8];
        chuyi_common::secret::fill_random(&mut bytes);
        let qos = Arc::new(Qos {
            instance: u64::from_le_bytes(bytes),
            known: Mutex::default(),
            frontends: AtomicU32::new(1),
            changes: AtomicU64::new(0),
        });
        tokio::spawn(exchange_loop(Arc::downgrade(&qos), cluster));
        qos
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().expect("qos rules poisoned")
    }

    /// A count that moves whenever the rules change.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Whether any rule is known: without one, nothing is looked up.
    pub fn any(&self) -> bool {
        !self.lock().rules.is_empty()
    }

    /// The limiters of an S3 request of `user` on `bucket`.
    pub fn s3(&self, user: Option<&str>, bucket: Option<&str>) -> Vec<Arc<Limiter>> {
        let mut known = self.lock();
        if known.rules.is_empty() {
            return Vec::new();
        }
        let scopes = rules::s3_scopes(|s| known.rules.contains_key(s), user, bucket);
        scopes.into_iter().filter_map(|s| self.limiter(&mut known, s.clone(), s)).collect()
    }

    /// The limiter of volume `volume` in pool `pool`, if a rule has it.
    /// A pool's class limits each volume on its own: the limiter is the
    /// volume's, at the pool rule's rates.
    pub fn volume(&self, volume: &str, pool: &str) -> Option<Arc<Limiter>> {
        let mut known = self.lock();
        if known.rules.is_empty() {
            return None;
        }
        let source = rules::volume_scope(|s| known.rules.contains_key(s), volume, pool)?;
        self.limiter(&mut known, QosScope::Volume(volume.into()), source)
    }

    /// The limiter of `scope`, at the rates of the rule of `source`.
    fn limiter(&self, known: &mut Known, scope: QosScope, source: QosScope) -> Option<Arc<Limiter>> {
        let limits = known.rules.get(&source)?.clone();
        let fraction = self.fraction_of(&scope);
        let make = || Arc::new(Limiter::new(scope.clone(), limits.clone(), fraction, Instant::now()));
        let entry = known.limiters.entry(scope.clone()).or_insert_with(|| (source.clone(), make()));
        if entry.0 != source {
            // The volume got a rule of its own, or lost it to its pool's.
            *entry = (source, make());
        }
        Some(entry.1.clone())
    }

    /// The part of a rule's rate a limiter of `scope` starts at, and
    /// falls back to: an equal part among the frontends, but a volume's
    /// whole rate, for one frontend at a time serves a volume (its lease).
    fn fraction_of(&self, scope: &QosScope) -> f64 {
        match scope {
            QosScope::Volume(_) => 1.0,
            QosScope::User(_) | QosScope::Bucket(_) | QosScope::UserBucket { .. } | QosScope::Pool(_) => {
                1.0 / f64::from(self.frontends.load(Ordering::Relaxed).max(1))
            }
        }
    }

    /// What this frontend has used lately, for the leader.
    fn report(&self, now: Instant) -> QosReport {
        let known = self.lock();
        let mut rules = Vec::new();
        for (scope, (_, limiter)) in &known.limiters {
            match limiter.report(now, REPORT_IDLE) {
                Some(used) => rules.push(used),
                // No longer reported, so no longer given a share: back to
                // an equal part, or this frontend's old share and the
                // others' new ones could add up to more than the rate.
                None => limiter.set_fraction(self.fraction_of(scope), now),
            }
        }
        QosReport { instance: self.instance, rules_version: known.version, rules }
    }

    /// Takes the leader's answer: new rules, then the shares.
    fn granted(&self, grant: QosGrant, now: Instant) {
        self.frontends.store(grant.frontends.max(1), Ordering::Relaxed);
        let mut known = self.lock();
        known.answered = Some(now);
        known.fallen_back = false;
        if let Some((version, new)) = grant.rules {
            known.version = version;
            known.rules = new.into_iter().map(|QosRule { scope, limits }| (scope, limits)).collect();
            let Known { rules, limiters, .. } = &mut *known;
            limiters.retain(|scope, (source, limiter)| match rules.get(source) {
                Some(limits) => {
                    limiter.set_limits(limits, self.fraction_of(scope), now);
                    true
                }
                None => false,
            });
            self.changes.fetch_add(1, Ordering::AcqRel);
        }
        for (scope, shares) in grant.shares {
            if let Some((_, limiter)) = known.limiters.get(&scope) {
                limiter.set_shares(&shares, now);
            }
        }
    }

    /// No answer: after [`FALLBACK_AFTER`], equal parts.
    fn unanswered(&self, now: Instant) {
        let mut known = self.lock();
        let since = known.answered.map_or(Duration::MAX, |at| now.saturating_duration_since(at));
        if since < FALLBACK_AFTER || known.fallen_back {
            return;
        }
        known.fallen_back = true;
        tracing::warn!(
            frontends = self.frontends.load(Ordering::Relaxed),
            "QoS: no answer from the metadata leader; each rule at an equal part"
        );
        known.limiters.iter().for_each(|(scope, (_, l))| l.set_fraction(self.fraction_of(scope), now));
    }

    /// Every limiter's counters (for a frontend's own status).
    pub fn counters(&self) -> Vec<(QosScope, rules::QosCounters)> {
        self.lock().limiters.iter().map(|(s, (_, l))| (s.clone(), l.counters())).collect()
    }

    /// Each rule's counters on this frontend for Prometheus, by scope (as
    /// many series as rules served), named `{prefix}_qos_...` so that two
    /// frontends in one process (`chuyi up`) keep apart.
    pub fn encode_metrics(&self, prefix: &str, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        type Value = fn(&rules::QosCounters) -> f64;
        let counters = self.counters();
        let families: [(&str, &str, Value); 4] = [
            ("qos_admitted", "Requests or 4 KiB operations admitted under a QoS rule", |c| c.admitted as f64),
            ("qos_delayed", "Requests and bodies held back by a QoS rule", |c| c.delayed as f64),
            ("qos_delayed_seconds", "Time held back by a QoS rule", |c| c.delayed_ms as f64 / 1000.0),
            ("qos_refused", "Requests refused (503 SlowDown) by a QoS rule", |c| c.refused as f64),
        ];
        for (name, help, value) in families {
            let name = format!("{prefix}_{name}");
            let mut family = encoder.encode_descriptor(&name, help, None, MetricType::Counter)?;
            for (scope, c) in &counters {
                let labels = [("scope", scope.to_string())];
                ConstCounter::new(value(c)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

async fn exchange_loop(qos: Weak<Qos>, cluster: Arc<Cluster>) {
    let mut tick = tokio::time::interval(EXCHANGE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(qos) = qos.upgrade() else { return };
        let report = qos.report(Instant::now());
        let answer = tokio::time::timeout(EXCHANGE_EVERY, cluster.meta().qos_exchange(report)).await;
        match answer {
            Ok(Ok(grant)) => qos.granted(grant, Instant::now()),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "QoS exchange failed");
                qos.unanswered(Instant::now());
            }
            Err(_) => qos.unanswered(Instant::now()),
        }
    }
}

/// A request's takes of its request rates: `ops` requests (S3: one; a
/// volume: its 4 KiB operations), from the read or the write rate too.
pub fn request_takes(read: bool, ops: f64) -> [(Dimension, f64); 2] {
    let kind = if read { Dimension::ReadRequests } else { Dimension::WriteRequests };
    [(Dimension::Requests, ops), (kind, ops)]
}

/// `n` body bytes' takes: to the client (`out`) or from it.
pub fn byte_takes(out: bool, n: u64) -> [(Dimension, f64); 2] {
    let way = if out { Dimension::Download } else { Dimension::Upload };
    [(way, n as f64), (Dimension::Bytes, n as f64)]
}

/// Takes `takes` from every limiter: the tickets, and the longest wait.
pub fn take_all(limiters: &[Arc<Limiter>], takes: &Takes, now: Instant) -> (Vec<Tickets>, Duration) {
    let mut wait = Duration::ZERO;
    let tickets = limiters
        .iter()
        .map(|l| {
            let (t, w) = l.take(takes, now);
            wait = wait.max(w);
            t
        })
        .collect();
    (tickets, wait)
}

/// What the holder of `tickets` still waits.
pub fn still_waits(limiters: &[Arc<Limiter>], tickets: &[Tickets], now: Instant) -> Duration {
    limiters.iter().zip(tickets).map(|(l, t)| l.ticket_wait(t, now)).max().unwrap_or_default()
}

/// Waits, in slices, until `tickets` are reached.
pub async fn wait_for(limiters: &[Arc<Limiter>], tickets: &[Tickets], mut wait: Duration) {
    while !wait.is_zero() {
        tokio::time::sleep(wait.min(WAIT_SLICE)).await;
        wait = still_waits(limiters, tickets, Instant::now());
    }
}

/// A request's turn: taken at once when every limiter would have it
/// within `max_wait` (then waited for), or refused with nothing taken.
/// The wait, for the counters.
pub async fn admit(limiters: &[Arc<Limiter>], takes: &Takes, max_wait: Duration) -> Result<Duration, Refused> {
    if limiters.is_empty() {
        return Ok(Duration::ZERO);
    }
    let now = Instant::now();
    if let Some(over) = limiters.iter().find(|l| l.would_wait(takes, now) > max_wait) {
        limiters.iter().for_each(|l| l.refused(takes, now));
        return Err(Refused { scope: over.scope().clone() });
    }
    let (tickets, wait) = take_all(limiters, takes, now);
    wait_for(limiters, &tickets, wait).await;
    let waited = now.elapsed();
    limiters.iter().for_each(|l| {
        l.count(|c| {
            c.admitted += 1;
            if !wait.is_zero() {
                c.delayed += 1;
                c.delayed_ms += waited.as_millis() as u64;
            }
        })
    });
    Ok(waited)
}

/// Paces one block request of a volume (NBD, vhost-user-blk): `bytes`
/// read (`read`) or written, as 4 KiB operations (at least one) and bytes;
/// waits its turn in the volume's rule (none: at once), then counts it.
pub async fn pace_volume(limiter: Option<Arc<Limiter>>, read: bool, bytes: u64) {
    let Some(limiter) = limiter else { return };
    let ops = bytes.div_ceil(chuyi_meta_api::qos::VOLUME_OP_BYTES).max(1) as f64;
    let [requests, kind] = request_takes(read, ops);
    let [way, size] = byte_takes(read, bytes);
    let limiters = [limiter];
    pace(&limiters, &[requests, kind, way, size]).await;
    limiters[0].count(|c| {
        c.admitted += ops as u64;
        if read {
            c.bytes_out += bytes;
        } else {
            c.bytes_in += bytes;
        }
    });
}

/// Paces `takes` (a volume operation, a body's bytes): waits its turn,
/// however long; never refuses.
pub async fn pace(limiters: &[Arc<Limiter>], takes: &Takes) {
    if limiters.is_empty() {
        return;
    }
    let now = Instant::now();
    let (tickets, wait) = take_all(limiters, takes, now);
    wait_for(limiters, &tickets, wait).await;
    if !wait.is_zero() {
        let waited = now.elapsed().as_millis() as u64;
        limiters.iter().for_each(|l| {
            l.count(|c| {
                c.delayed += 1;
                c.delayed_ms += waited;
            })
        });
    }
}

#[cfg(test)]
mod tests {
    use chuyi_meta_api::qos::DEFAULT_BURST_MS;

    use super::*;

    /// A frontend's QoS with no exchange running: the test plays the leader.
    fn detached() -> Qos {
        Qos { instance: 7, known: Mutex::default(), frontends: AtomicU32::new(1), changes: AtomicU64::new(0) }
    }

    fn rule(scope: QosScope, d: Dimension, rate: u64) -> QosRule {
        let mut limits = QosLimits { burst_ms: DEFAULT_BURST_MS, ..Default::default() };
        limits.set(d, Some(rate));
        QosRule { scope, limits }
    }

    fn grant(
        rules: Option<(u64, Vec<QosRule>)>,
        shares: Vec<(QosScope, [Option<f64>; 6])>,
        frontends: u32,
    ) -> QosGrant {
        QosGrant { rules, shares, frontends }
    }

    #[test]
    fn rules_arrive_with_a_grant_and_shares_then_set_the_rates() {
        let qos = detached();
        let t0 = Instant::now();
        assert!(qos.s3(Some("edge"), Some("scans")).is_empty(), "no rules: nothing to take");
        let both = QosScope::UserBucket { user: "edge".into(), bucket: "scans".into() };
        let rules = vec![rule(both.clone(), Dimension::Download, 20_000_000)];
        qos.granted(grant(Some((3, rules)), vec![], 2), t0);
        let limiters = qos.s3(Some("edge"), Some("scans"));
        assert_eq!(limiters.len(), 1);
        let download = Dimension::Download.index();
        assert_eq!(limiters[0].rates()[download], Some(10e6), "an equal part of two until a share comes");
        assert_eq!(qos.report(t0).rules_version, 3);
        let mut shares = [None; 6];
        shares[download] = Some(15e6);
        qos.granted(grant(None, vec![(both.clone(), shares)], 2), t0);
        assert_eq!(limiters[0].rates()[download], Some(15e6));
        // The rule deleted: its limiter goes, and the user is free again.
        qos.granted(grant(Some((4, vec![])), vec![], 2), t0);
        assert!(qos.s3(Some("edge"), Some("scans")).is_empty());
    }

    #[test]
    fn without_an_answer_for_a_while_each_limiter_falls_back_to_an_equal_part() {
        let qos = detached();
        let t0 = Instant::now();
        let bucket = QosScope::Bucket("scans".into());
        qos.granted(grant(Some((1, vec![rule(bucket.clone(), Dimension::Requests, 90)])), vec![], 3), t0);
        let limiter = qos.s3(None, Some("scans")).pop().expect("the bucket's limiter");
        let requests = Dimension::Requests.index();
        let mut shares = [None; 6];
        shares[requests] = Some(80.0);
        qos.granted(grant(None, vec![(bucket, shares)], 3), t0);
        assert_eq!(limiter.rates()[requests], Some(80.0));
        qos.unanswered(t0 + Duration::from_secs(1));
        assert_eq!(limiter.rates()[requests], Some(80.0), "a missed answer or two changes nothing");
        qos.unanswered(t0 + FALLBACK_AFTER);
        assert_eq!(limiter.rates()[requests], Some(30.0), "a third of the rule among three frontends");
    }

    #[test]
    fn a_volume_runs_at_its_own_rule_or_its_pools_whole_rate() {
        let qos = detached();
        let t0 = Instant::now();
        let pool = rule(QosScope::Pool("ssd".into()), Dimension::Requests, 1000);
        qos.granted(grant(Some((1, vec![pool.clone()])), vec![], 4), t0);
        let requests = Dimension::Requests.index();
        let by_pool = qos.volume("db", "ssd").expect("the pool's class");
        assert_eq!(by_pool.rates()[requests], Some(1000.0), "a volume has one frontend: the whole rate");
        assert!(qos.volume("db", "hdd").is_none());
        let own = rule(QosScope::Volume("db".into()), Dimension::Requests, 2000);
        qos.granted(grant(Some((2, vec![pool, own])), vec![], 4), t0);
        let by_own = qos.volume("db", "ssd").expect("its own rule");
        assert_eq!(by_own.rates()[requests], Some(2000.0));
    }
}
