//! Who may hold a connection to the gateway, and for how long: caps on
//! open connections in total and per client address, and the timeouts a
//! connection lives by (a request head must arrive in time, an idle
//! keep-alive connection is closed, a body that stops is cut). Without
//! them a few thousand half-open connections (slowloris) hold every file
//! descriptor the process has.
//!
//! The decision is [`decide`], pure; [`Admission`] keeps the counts.
//!
//! A client address whose requests keep being refused (403: a wrong or
//! made-up access key, a bad signature, an anonymous request to a private
//! object) past [`ConnectionLimits::refusals_per_s`] is answered `503
//! SlowDown` before anything of its requests is looked at ([`Refusals`]):
//! a refused request costs a signature check or a metadata read, and a
//! client inventing a new access key per request would cost a read each.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chuyi_client::qos::bucket::TokenBucket;

/// The limits a gateway's listeners apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections at most, over every listener (plain and TLS).
    pub max_total: usize,
    /// Open connections at most from one client address.
    pub max_per_client: usize,
    /// How long a connection may take to send a request's head, from when
    /// it opens or its previous response went out: also the keep-alive
    /// idle timeout.
    pub head_timeout: Duration,
    /// How long a request body may fall behind [`Self::body_min_rate`]
    /// before it is cut (and what it wrote freed, as for any failed
    /// upload): it starts with this long for its first byte, and every
    /// `body_min_rate` bytes received buy one more second, up to this
    /// long ahead (as Apache's mod_reqtimeout `body=…,MinRate=…`).
    pub body_stall_timeout: Duration,
    /// Bytes per second a body must keep up on average.
    pub body_min_rate: u64,
    /// Refused requests (403) per second one client address may cause,
    /// with twice as many at once; past it, its requests get 503 SlowDown
    /// unread until it is back under. 0: no limit.
    pub refusals_per_s: u32,
}

/// The defaults: nginx's `client_header_timeout` is 60 s, hyper's 30 s;
/// 10 000 connections fit the 20 000 files a gateway may open with room
/// for its own; 1 024 per address leaves room for a NAT of many clients.
pub const DEFAULT_LIMITS: ConnectionLimits = ConnectionLimits {
    max_total: 10_000,
    max_per_client: 1_024,
    head_timeout: Duration::from_secs(30),
    body_stall_timeout: Duration::from_secs(60),
    body_min_rate: 1024,
    refusals_per_s: 100,
};

/// When a body that had until `deadline` and has just received `bytes` at
/// `now` must have sent more: later by a second per `min_rate` bytes, but
/// never more than `timeout` past now.
pub fn body_deadline(deadline: Duration, now: Duration, bytes: u64, min_rate: u64, timeout: Duration) -> Duration {
    let bought = Duration::from_secs_f64(bytes as f64 / min_rate.max(1) as f64);
    (deadline.max(now) + bought).min(now + timeout)
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        DEFAULT_LIMITS
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the gateway holds its maximum of {0} connections")]
    Total(usize),
    #[error("this client address holds its maximum of {0} connections")]
    Client(usize),
}

/// Whether one more connection may open, given how many are open in all
/// and from its address.
pub fn decide(open: usize, of_client: usize, limits: &ConnectionLimits) -> Result<(), Refused> {
    if open >= limits.max_total {
        return Err(Refused::Total(limits.max_total));
    }
    if of_client >= limits.max_per_client {
        return Err(Refused::Client(limits.max_per_client));
    }
    Ok(())
}

/// The open connections, counted in total and per client address.
#[derive(Debug)]
pub struct Admission {
    pub limits: ConnectionLimits,
    open: Mutex<Open>,
    pub refusals: Refusals,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// An admitted connection; its count goes when this is dropped.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
    client: IpAddr,
}

impl Admission {
    pub fn new(limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Self { limits, open: Mutex::new(Open::default()), refusals: Refusals::new(limits.refusals_per_s) })
    }

    /// Counts a new connection from `client`, or says why it may not open.
    pub fn admit(self: &Arc<Self>, client: IpAddr) -> Result<Admitted, Refused> {
        let mut open = self.lock();
        let of_client = open.by_client.get(&client).copied().unwrap_or(0);
        decide(open.total, of_client, &self.limits)?;
        open.total += 1;
        *open.by_client.entry(client).or_insert(0) += 1;
        Ok(Admitted { admission: self.clone(), client })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Addresses tracked at most by [`Refusals`]; past it, those back under
/// their rate are forgotten, and a new one is not tracked until there is
/// room (the limit fails open rather than growing without bound).
pub const REFUSALS_TRACKED_MAX: usize = 65_536;

/// Each client address's refused requests, as a token bucket of
/// [`ConnectionLimits::refusals_per_s`].
#[derive(Debug)]
pub struct Refusals {
    per_s: f64,
    by_client: Mutex<HashMap<IpAddr, TokenBucket>>,
}

impl Refusals {
    pub fn new(per_s: u32) -> Self {
        Self { per_s: f64::from(per_s), by_client: Mutex::default() }
    }

    fn burst(&self) -> f64 {
        self.per_s * 2.0
    }

    /// Whether `client` is over its rate of refusals: its request is
    /// answered SlowDown unread.
    pub fn blocked(&self, client: IpAddr, now: Instant) -> bool {
        if self.per_s == 0.0 {
            return false;
        }
        let mut by_client = self.by_client.lock().unwrap_or_else(|p| p.into_inner());
        by_client.get_mut(&client).is_some_and(|b| !b.wait_for(1.0, now).is_zero())
    }

    /// Counts a refusal of `client`'s. Only requests that were looked at
    /// count, so an address that keeps sending is let through once per
    /// 1/rate seconds, and back in full once it stops.
    pub fn refused(&self, client: IpAddr, now: Instant) {
        if self.per_s == 0.0 {
            return;
        }
        let burst = self.burst();
        let mut by_client = self.by_client.lock().unwrap_or_else(|p| p.into_inner());
        if by_client.len() >= REFUSALS_TRACKED_MAX && !by_client.contains_key(&client) {
            by_client.retain(|_, b| !b.wait_for(burst, now).is_zero());
            if by_client.len() >= REFUSALS_TRACKED_MAX {
                return;
            }
        }
        let bucket = by_client.entry(client).or_insert_with(|| TokenBucket::new(self.per_s, burst, now));
        bucket.take(1.0, now);
    }

    pub fn tracked(&self) -> usize {
        self.by_client.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.admission.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.by_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_total: usize, max_per_client: usize) -> ConnectionLimits {
        ConnectionLimits { max_total, max_per_client, ..DEFAULT_LIMITS }
    }

    #[test]
    fn the_total_cap_comes_before_the_client_cap() {
        let l = limits(10, 3);
        assert_eq!(decide(0, 0, &l), Ok(()));
        assert_eq!(decide(9, 2, &l), Ok(()));
        assert_eq!(decide(9, 3, &l), Err(Refused::Client(3)));
        assert_eq!(decide(10, 0, &l), Err(Refused::Total(10)));
        assert_eq!(decide(10, 3, &l), Err(Refused::Total(10)));
    }

    /// A body keeping up its rate keeps its time, a slower one loses it,
    /// a burst buys no more than the timeout.
    #[test]
    fn a_body_buys_a_second_per_min_rate_bytes_up_to_the_timeout() {
        let s = Duration::from_secs;
        let timeout = s(10);
        // 1 000 bytes/s against a minimum of 1 000: the deadline holds.
        let mut deadline = s(10);
        for t in 1..=100 {
            deadline = body_deadline(deadline, s(t), 1_000, 1_000, timeout);
            assert!(deadline > s(t));
        }
        // 500 bytes/s: half a second lost per second; 10 s of slack gone at 19 s.
        let mut deadline = s(10);
        let mut cut = None;
        for t in 1..=40 {
            if deadline <= s(t) {
                cut = Some(t);
                break;
            }
            deadline = body_deadline(deadline, s(t), 500, 1_000, timeout);
        }
        assert_eq!(cut, Some(19));
        // A gigabyte at once buys the timeout, no more.
        assert_eq!(body_deadline(s(10), s(5), 1 << 30, 1_000, timeout), s(15));
    }

    #[test]
    fn an_address_past_its_refusals_is_blocked_until_back_under_and_others_are_not() {
        let refusals = Refusals::new(10);
        let t0 = Instant::now();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().expect("ip"), "10.0.0.2".parse().expect("ip"));
        for _ in 0..20 {
            assert!(!refusals.blocked(a, t0), "twice the rate at once");
            refusals.refused(a, t0);
        }
        assert!(refusals.blocked(a, t0));
        assert!(!refusals.blocked(b, t0), "another address is not touched");
        assert!(refusals.blocked(a, t0 + Duration::from_millis(50)));
        assert!(!refusals.blocked(a, t0 + Duration::from_millis(100)), "one let through per tenth of a second");
        refusals.refused(a, t0 + Duration::from_millis(100));
        assert!(refusals.blocked(a, t0 + Duration::from_millis(150)));
        assert!(!Refusals::new(0).blocked(a, t0), "0: no limit");
    }

    #[test]
    fn tracked_addresses_are_bounded() {
        let refusals = Refusals::new(1);
        let t0 = Instant::now();
        for i in 0..(REFUSALS_TRACKED_MAX as u32 + 10) {
            refusals.refused(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert_eq!(refusals.tracked(), REFUSALS_TRACKED_MAX, "none back under yet: new ones not tracked");
        let later = t0 + Duration::from_secs(3);
        refusals.refused("10.9.9.9".parse().expect("ip"), later);
        assert_eq!(refusals.tracked(), 1, "those back under are forgotten to make room");
    }

    #[test]
    fn counts_go_back_when_connections_close() {
        let admission = Admission::new(limits(3, 2));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().expect("ip"), "10.0.0.2".parse().expect("ip"));
        let first = admission.admit(a).expect("first");
        let second = admission.admit(a).expect("second");
        assert_eq!(admission.admit(a).err(), Some(Refused::Client(2)));
        let other = admission.admit(b).expect("another client");
        assert_eq!(admission.admit(b).err(), Some(Refused::Total(3)));
        drop(first);
        assert_eq!(admission.open(), 2);
        let again = admission.admit(a).expect("room again");
        drop((second, other, again));
        assert_eq!(admission.open(), 0);
        assert!(admission.lock().by_client.is_empty(), "no address is kept once its connections are gone");
    }
}
