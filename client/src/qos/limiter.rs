//! One QoS rule as a frontend enforces it: a token bucket per rate the
//! rule limits, run at this frontend's share of the rule's rate, and what
//! it used and held back, for its next report and for `chuyi qos status`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chuyi_meta_api::qos::{Dimension, QosCounters, QosLimits, QosScope, RuleUse, Use};

use super::bucket::{Ticket, TokenBucket};

/// One rule's buckets and counts on this frontend.
#[derive(Debug)]
pub struct Limiter {
    scope: QosScope,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    limits: QosLimits,
    buckets: [Option<TokenBucket>; 6],
    /// Taken, and whether anything was held back, since `since`.
    used: [f64; 6],
    pressed: [bool; 6],
    since: Instant,
    counters: QosCounters,
    /// When it last took anything.
    active: Instant,
}

/// Tokens to take from the rates of a rule: (rate, how many).
pub type Takes = [(Dimension, f64)];

/// A taker's places in the lines of a rule's rates.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tickets([Option<Ticket>; 6]);

impl Limiter {
    /// A rule's limiter at `fraction` of each of its rates (its share
    /// until the leader names one).
    pub fn new(scope: QosScope, limits: QosLimits, fraction: f64, now: Instant) -> Self {
        let mut state = State {
            limits: limits.clone(),
            buckets: Default::default(),
            used: [0.0; 6],
            pressed: [false; 6],
            since: now,
            counters: QosCounters::default(),
            active: now,
        };
        state.set_rates(&fractions(&limits, fraction), now);
        Self { scope, state: Mutex::new(state) }
    }

    pub fn scope(&self) -> &QosScope {
        &self.scope
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("qos limiter poisoned")
    }

    /// How long `takes` would wait if taken now; nothing is taken.
    pub fn would_wait(&self, takes: &Takes, now: Instant) -> Duration {
        let mut s = self.lock();
        takes
            .iter()
            .filter_map(|&(d, n)| Some(s.buckets[d.index()].as_mut()?.wait_for(n, now)))
            .max()
            .unwrap_or_default()
    }

    /// Takes `takes`, into debt where need be: the taker's places in line
    /// and how long until they are all reached.
    pub fn take(&self, takes: &Takes, now: Instant) -> (Tickets, Duration) {
        let mut s = self.lock();
        s.active = now;
        let mut tickets = Tickets::default();
        let mut wait = Duration::ZERO;
        for &(d, n) in takes {
            let i = d.index();
            let Some(bucket) = s.buckets[i].as_mut() else { continue };
            let (ticket, w) = bucket.take(n, now);
            tickets.0[i] = Some(ticket);
            s.used[i] += n;
            s.pressed[i] |= !w.is_zero();
            wait = wait.max(w);
        }
        (tickets, wait)
    }

    /// How long the holder of `tickets` still waits, at the current rates.
    pub fn ticket_wait(&self, tickets: &Tickets, now: Instant) -> Duration {
        let mut s = self.lock();
        let waits = s.buckets.iter_mut().zip(tickets.0).filter_map(|(b, t)| Some(b.as_mut()?.ticket_wait(t?, now)));
        waits.max().unwrap_or_default()
    }

    /// A request turned away: what it asked counts as wanted.
    pub fn refused(&self, takes: &Takes, now: Instant) {
        let mut s = self.lock();
        s.active = now;
        s.counters.refused += 1;
        for &(d, _) in takes {
            s.pressed[d.index()] |= s.buckets[d.index()].is_some();
        }
    }

    /// Adds to the counters.
    pub fn count(&self, f: impl FnOnce(&mut QosCounters)) {
        f(&mut self.lock().counters)
    }

    pub fn counters(&self) -> QosCounters {
        self.lock().counters
    }

    /// The rates this frontend runs at now, by [`Dimension::index`].
    pub fn rates(&self) -> [Option<f64>; 6] {
        let s = self.lock();
        std::array::from_fn(|i| s.buckets[i].as_ref().map(TokenBucket::rate))
    }

    /// What it used since the last report, per second, and its counters;
    /// none when it took nothing for `idle`.
    pub fn report(&self, now: Instant, idle: Duration) -> Option<RuleUse> {
        let mut s = self.lock();
        if now.saturating_duration_since(s.active) > idle {
            return None;
        }
        let secs = now.saturating_duration_since(s.since).as_secs_f64().max(1e-3);
        let uses = std::array::from_fn(|i| Use { per_s: s.used[i] / secs, pressed: s.pressed[i] });
        (s.used, s.pressed, s.since) = ([0.0; 6], [false; 6], now);
        Some(RuleUse { scope: self.scope.clone(), uses, counters: s.counters })
    }

    /// Runs at the leader's `shares` (per second, by dimension); a rate
    /// the leader named no share of keeps its own.
    pub fn set_shares(&self, shares: &[Option<f64>; 6], now: Instant) {
        let mut s = self.lock();
        let current = std::array::from_fn(|i| shares[i].or_else(|| s.buckets[i].as_ref().map(TokenBucket::rate)));
        s.set_rates(&current, now);
    }

    /// New limits for the rule, at `fraction` of each rate until the next
    /// share.
    pub fn set_limits(&self, limits: &QosLimits, fraction: f64, now: Instant) {
        let mut s = self.lock();
        s.limits = limits.clone();
        s.set_rates(&fractions(limits, fraction), now);
    }

    /// Runs at `fraction` of each of the rule's rates.
    pub fn set_fraction(&self, fraction: f64, now: Instant) {
        let mut s = self.lock();
        let rates = fractions(&s.limits, fraction);
        s.set_rates(&rates, now);
    }
}

impl State {
    /// Each rate the rule limits at `rates` (a rate it does not limit has
    /// no bucket), with the rule's burst.
    fn set_rates(&mut self, rates: &[Option<f64>; 6], now: Instant) {
        let burst_s = f64::from(self.limits.burst_ms) / 1000.0;
        for d in Dimension::ALL {
            let i = d.index();
            let rate = self.limits.rate(d).and(rates[i]);
            self.buckets[i] = match (rate, self.buckets[i].take()) {
                (None, _) => None,
                (Some(r), None) => Some(TokenBucket::new(r, burst(r, burst_s, d), now)),
                (Some(r), Some(mut b)) => {
                    b.set_rate(r, burst(r, burst_s, d), now);
                    Some(b)
                }
            };
        }
    }
}

/// A bucket's depth: the burst's worth of its rate, and at least one
/// request (or a 4 KiB operation), so that a small share still admits.
fn burst(rate: f64, burst_s: f64, d: Dimension) -> f64 {
    let least = if d.is_bytes() { 4096.0 } else { 1.0 };
    (rate * burst_s).max(least)
}

fn fractions(limits: &QosLimits, fraction: f64) -> [Option<f64>; 6] {
    std::array::from_fn(|i| limits.rates[i].map(|r| r as f64 * fraction))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(requests: u64, download: u64) -> QosLimits {
        let mut l = QosLimits { burst_ms: 1000, ..Default::default() };
        l.set(Dimension::Requests, Some(requests));
        l.set(Dimension::Download, Some(download));
        l
    }

    #[test]
    fn takes_only_from_the_rates_the_rule_limits_and_reports_use_per_second() {
        let t0 = Instant::now();
        let l = Limiter::new(QosScope::User("edge".into()), limits(10, 1 << 20), 1.0, t0);
        let takes = [(Dimension::Requests, 1.0), (Dimension::ReadRequests, 1.0)];
        for _ in 0..10 {
            assert_eq!(l.take(&takes, t0).1, Duration::ZERO);
        }
        assert_eq!(l.would_wait(&takes, t0), Duration::from_millis(100));
        l.refused(&takes, t0);
        let report = l.report(t0 + Duration::from_secs(2), Duration::from_secs(10)).expect("active");
        let requests = report.uses[Dimension::Requests.index()];
        assert_eq!((requests.per_s, requests.pressed), (5.0, true));
        assert_eq!(report.uses[Dimension::ReadRequests.index()], Use::default(), "not limited: not counted");
        assert_eq!(report.counters.refused, 1);
        assert!(l.report(t0 + Duration::from_secs(30), Duration::from_secs(10)).is_none(), "idle");
    }

    #[test]
    fn shares_and_fractions_set_the_rates() {
        let t0 = Instant::now();
        let l = Limiter::new(QosScope::Bucket("scans".into()), limits(10, 1 << 20), 0.5, t0);
        assert_eq!(l.rates()[Dimension::Requests.index()], Some(5.0));
        let mut shares = [None; 6];
        shares[Dimension::Download.index()] = Some(1000.0 * 1024.0);
        l.set_shares(&shares, t0);
        assert_eq!(l.rates()[Dimension::Download.index()], Some(1000.0 * 1024.0));
        assert_eq!(l.rates()[Dimension::Requests.index()], Some(5.0), "no share named: kept");
        l.set_limits(&limits(40, 1 << 20), 0.25, t0);
        assert_eq!(l.rates()[Dimension::Requests.index()], Some(10.0));
        assert_eq!(l.rates()[Dimension::Upload.index()], None);
    }
}
