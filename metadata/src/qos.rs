//! The leader's side of QoS: what each frontend reported of the rules it
//! serves, in memory only, and the share of each rule's rate it gets.
//!
//! Nothing here goes through the log: reports come every second and mean
//! nothing a second later. A new leader starts empty and is refilled by the
//! next round of reports, which carry each frontend's counters since it
//! started, so `chuyi qos status` loses only a second or two of rates.
//!
//! How a rate is shared ([`allocate`], pure): each frontend's claim is what
//! it used, with a quarter more to grow into; a frontend that held requests
//! or bytes back claims twice what it used, and at least an equal part.
//! Claims are filled smallest first up to an equal part of what is left
//! (max-min fairness), and what nobody claimed is split equally, so the
//! shares always add up to the rule's rate: a frontend that starts using a
//! rule has a little at once, and claims more at its next report.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chuyi_meta_api::qos::{
    Dimension, QosCounters, QosGrant, QosLimits, QosReport, QosRule, QosScope, RuleStatus, RuleUse, Use,
};

/// A frontend not heard from for this long takes no share.
pub const FRESH: Duration = Duration::from_secs(3);
/// Its counters are kept this long after, for `chuyi qos status`.
pub const REMEMBERED: Duration = Duration::from_secs(600);
/// Frontends remembered at most: a caller inventing instances cannot grow
/// the leader's memory without bound.
pub const FRONTENDS_MAX: usize = 1024;
/// Rules one report may carry at most (as many as the cluster may hold).
pub const RULES_PER_REPORT_MAX: usize = 10_000;

/// What a frontend that was not held back claims beyond what it used.
const HEADROOM: f64 = 1.25;
/// What a frontend that was held back claims, times what it used.
const GROWTH: f64 = 2.0;

/// Shares of `limit` for frontends that used `uses` of it, in their order.
/// They add up to `limit` (none when there are no frontends).
pub fn allocate(limit: f64, uses: &[Use]) -> Vec<f64> {
    let n = uses.len();
    if n == 0 {
        return Vec::new();
    }
    let equal = limit / n as f64;
    let claims: Vec<f64> = uses
        .iter()
        .map(|u| if u.pressed { (u.per_s * GROWTH).max(equal) } else { u.per_s * HEADROOM })
        .map(|c| if c.is_finite() { c.max(0.0) } else { 0.0 })
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| claims[a].total_cmp(&claims[b]));
    let mut shares = vec![0.0; n];
    let mut left = limit;
    for (i, &at) in order.iter().enumerate() {
        let fair = left / (n - i) as f64;
        let given = claims[at].min(fair);
        shares[at] = given;
        left -= given;
    }
    let spare = left.max(0.0) / n as f64;
    shares.iter_mut().for_each(|s| *s += spare);
    shares
}

/// One frontend's latest report.
#[derive(Debug)]
struct Heard {
    at: Instant,
    rules: HashMap<QosScope, RuleUse>,
}

/// Every frontend's latest report.
#[derive(Debug, Default)]
pub struct Frontends {
    heard: Mutex<HashMap<u64, Heard>>,
}

impl Frontends {
    /// Notes `report` at `now` and answers it with its shares of `rules`
    /// (the current ones, at `version`).
    pub fn exchange(&self, report: QosReport, now: Instant, version: u64, rules: &[QosRule]) -> QosGrant {
        let QosReport { instance, rules_version, rules: used } = report;
        let mut heard = self.heard.lock().expect("qos table poisoned");
        heard.retain(|_, h| now.duration_since(h.at) < REMEMBERED);
        if heard.len() >= FRONTENDS_MAX && !heard.contains_key(&instance) {
            // Forget the longest silent, not refuse a live frontend.
            if let Some(oldest) = heard.iter().min_by_key(|(_, h)| h.at).map(|(id, _)| *id) {
                heard.remove(&oldest);
            }
        }
        // Only what a rule limits is kept: rules, and volumes under their
        // pool's class (whose counters `status` shows).
        let ruled = |s: &QosScope| rules.iter().any(|r| &r.scope == s) || matches!(s, QosScope::Volume(_));
        let used: Vec<RuleUse> = used.into_iter().filter(|u| ruled(&u.scope)).take(RULES_PER_REPORT_MAX).collect();
        let reported: Vec<QosScope> = used.iter().map(|u| u.scope.clone()).collect();
        let rules_used = used.into_iter().map(|u| (u.scope.clone(), u)).collect();
        heard.insert(instance, Heard { at: now, rules: rules_used });
        let fresh: Vec<(u64, &Heard)> =
            heard.iter().filter(|(_, h)| now.duration_since(h.at) < FRESH).map(|(id, h)| (*id, h)).collect();
        let limits: HashMap<&QosScope, &QosLimits> = rules.iter().map(|r| (&r.scope, &r.limits)).collect();
        let shares = reported
            .into_iter()
            .filter_map(|scope| {
                let limits = limits.get(&scope)?;
                let shares = shares_of(instance, &scope, limits, &fresh);
                Some((scope, shares))
            })
            .collect();
        QosGrant {
            rules: (rules_version != version).then(|| (version, rules.to_vec())),
            shares,
            frontends: fresh.len().max(1) as u32,
        }
    }

    /// Every rule with the rates and counters reported of it, then every
    /// other scope reported (volumes limited by their pool's class).
    pub fn status(&self, now: Instant, rules: Vec<QosRule>) -> Vec<RuleStatus> {
        let heard = self.heard.lock().expect("qos table poisoned");
        let remembered = || heard.values().filter(|h| now.duration_since(h.at) < REMEMBERED);
        let mut others: Vec<&QosScope> =
            remembered().flat_map(|h| h.rules.keys()).filter(|s| !rules.iter().any(|r| &r.scope == *s)).collect();
        others.sort();
        others.dedup();
        let others: Vec<(QosScope, Option<QosLimits>)> = others.into_iter().map(|s| (s.clone(), None)).collect();
        rules
            .into_iter()
            .map(|rule| (rule.scope, Some(rule.limits)))
            .chain(others)
            .map(|(scope, limits)| {
                let mut status =
                    RuleStatus { scope, limits, rates: [0.0; 6], counters: QosCounters::default(), frontends: 0 };
                for h in remembered() {
                    let Some(used) = h.rules.get(&status.scope) else { continue };
                    status.counters.add(&used.counters);
                    if now.duration_since(h.at) < FRESH {
                        status.frontends += 1;
                        for (rate, u) in status.rates.iter_mut().zip(used.uses) {
                            *rate += u.per_s;
                        }
                    }
                }
                status
            })
            .collect()
    }
}

/// `instance`'s share of each rate of `scope`'s rule among the `fresh`
/// frontends that reported it.
fn shares_of(instance: u64, scope: &QosScope, limits: &QosLimits, fresh: &[(u64, &Heard)]) -> [Option<f64>; 6] {
    let users: Vec<(u64, &RuleUse)> = fresh.iter().filter_map(|(id, h)| Some((*id, h.rules.get(scope)?))).collect();
    let me = users.iter().position(|(id, _)| *id == instance);
    let mut out = [None; 6];
    for d in Dimension::ALL {
        let (Some(limit), Some(me)) = (limits.rate(d), me) else { continue };
        let uses: Vec<Use> = users.iter().map(|(_, u)| u.uses[d.index()]).collect();
        out[d.index()] = allocate(limit as f64, &uses).get(me).copied();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn used(per_s: f64, pressed: bool) -> Use {
        Use { per_s, pressed }
    }

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
    }

    #[test]
    fn shares_add_up_to_the_limit() {
        for uses in [
            vec![],
            vec![used(0.0, false)],
            vec![used(5.0, true), used(0.0, false), used(100.0, true)],
            vec![used(f64::NAN, true), used(f64::INFINITY, false)],
        ] {
            let shares = allocate(20.0, &uses);
            assert_eq!(shares.len(), uses.len());
            if !uses.is_empty() {
                assert!((shares.iter().sum::<f64>() - 20.0).abs() < 1e-6, "{shares:?}");
            }
        }
    }

    #[test]
    fn two_held_back_frontends_split_evenly() {
        assert!(close(&allocate(20.0, &[used(10.0, true), used(10.0, true)]), &[10.0, 10.0]));
        // From an uneven start, one round evens them out.
        assert!(close(&allocate(20.0, &[used(18.0, true), used(2.0, true)]), &[10.0, 10.0]));
    }

    #[test]
    fn a_light_user_keeps_what_it_uses_and_the_rest_goes_to_the_busy_one() {
        let shares = allocate(20.0, &[used(19.0, true), used(2.0, false)]);
        assert!(close(&shares, &[17.5, 2.5]), "{shares:?}");
    }

    #[test]
    fn idle_frontends_split_the_whole_rate() {
        assert!(close(&allocate(20.0, &[used(0.0, false), used(0.0, false)]), &[10.0, 10.0]));
    }

    #[test]
    fn a_frontend_that_starts_being_held_back_gets_at_least_an_equal_part() {
        let shares = allocate(20.0, &[used(17.5, true), used(2.5, true)]);
        assert!(close(&shares, &[10.0, 10.0]), "{shares:?}");
    }

    fn rule(scope: QosScope, rate: u64) -> QosRule {
        let mut limits = QosLimits { burst_ms: 1000, ..Default::default() };
        limits.set(Dimension::Download, Some(rate));
        QosRule { scope, limits }
    }

    fn report(instance: u64, scope: &QosScope, per_s: f64, pressed: bool) -> QosReport {
        let mut uses = [Use::default(); 6];
        uses[Dimension::Download.index()] = used(per_s, pressed);
        let counters = QosCounters { admitted: 10, bytes_out: per_s as u64, ..Default::default() };
        QosReport { instance, rules_version: 7, rules: vec![RuleUse { scope: scope.clone(), uses, counters }] }
    }

    #[test]
    fn frontends_share_a_rule_and_stale_ones_drop_out() {
        let scope = QosScope::User("edge".into());
        let rules = [rule(scope.clone(), 20_000_000)];
        let table = Frontends::default();
        let t0 = Instant::now();
        let first = table.exchange(report(1, &scope, 20e6, true), t0, 7, &rules);
        assert_eq!(first.rules, None, "the frontend has the current rules");
        assert_eq!(first.frontends, 1);
        assert_eq!(first.shares[0].1[Dimension::Download.index()], Some(20e6));
        assert_eq!(first.shares[0].1[Dimension::Requests.index()], None);
        let second = table.exchange(report(2, &scope, 0.0, true), t0, 8, &rules);
        assert_eq!(second.rules.as_ref().map(|r| r.0), Some(8), "an old version gets the rules");
        assert_eq!(second.frontends, 2);
        assert_eq!(second.shares[0].1[Dimension::Download.index()], Some(10e6));
        let status = table.status(t0, rules.to_vec());
        assert_eq!(status[0].frontends, 2);
        assert_eq!(status[0].counters.admitted, 20);
        assert_eq!(status[0].rates[Dimension::Download.index()], 20e6);
        // Frontend 2 falls silent: frontend 1 gets the whole rate again,
        // and frontend 2's counters stay counted.
        let later = t0 + FRESH + Duration::from_millis(1);
        let third = table.exchange(report(1, &scope, 10e6, true), later, 7, &rules);
        assert_eq!(third.shares[0].1[Dimension::Download.index()], Some(20e6));
        let status = table.status(later, rules.to_vec());
        assert_eq!((status[0].frontends, status[0].counters.admitted), (1, 20));
    }

    #[test]
    fn a_report_of_a_rule_that_is_gone_gets_no_share_and_other_scopes_show_apart() {
        let table = Frontends::default();
        let now = Instant::now();
        let volume = QosScope::Volume("db".into());
        let grant = table.exchange(report(1, &volume, 1.0, false), now, 1, &[]);
        assert!(grant.shares.is_empty());
        // A volume limited by its pool's class: no rule of its own, still
        // shown with its counters.
        let status = table.status(now, vec![rule(QosScope::Pool("ssd".into()), 1 << 20)]);
        assert_eq!(status.len(), 2);
        assert_eq!((&status[1].scope, &status[1].limits, status[1].counters.admitted), (&volume, &None, 10));
    }
}
