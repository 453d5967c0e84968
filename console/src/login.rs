//! Who may see the console: administrators, by their S3 access key and
//! secret key, checked against the metadata service's user records; then
//! a session, named by a random token in an HttpOnly, SameSite=Strict
//! cookie, that lasts [`SESSION_TTL`].
//!
//! Login attempts are counted per client ([`client_key`]: an IPv4 address,
//! or an IPv6 address's /64, what one host is usually given; an IPv4
//! address mapped into IPv6 as itself): an attempt is reserved before the
//! keys are checked, and given back when they were right, so past
//! [`FAILURES_PER_WINDOW`] failures in a [`FAILURE_WINDOW`] that address is
//! refused until the window ends, however many attempts it makes at once.
//! A secret key cannot be guessed at the speed of the network. Behind a
//! proxy every client is the proxy's address, so its limits are shared;
//! no forwarded-for header is trusted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use chuyi_common::clock::{self, Instant};

/// How long a login lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Sessions kept at most; a login past it ends the one closest to expiry.
pub const SESSIONS_MAX: usize = 256;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
pub const FAILURES_PER_WINDOW: u32 = 5;
/// Client addresses whose failures are remembered at most (a bound
/// against a client with many addresses): past it, a new address is
/// refused until a window ends (failing closed, never forgetting).
const FAILING_ADDRS_MAX: usize = 4096;
/// The session cookie's name.
pub const COOKIE: &str = "chuyi_console";

/// The session token a request's `Cookie` header carries, if any.
pub fn token_of(cookie_header: &str) -> Option<&str> {
    cookie_header.split(';').find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// Who a session is: the user, and the access key it logged in with (each
/// page checks the key is still an administrator's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Who {
    pub user: String,
    pub access_key: String,
}

#[derive(Debug)]
struct Session {
    who: Who,
    expires: Instant,
}

/// The client an address counts as, for login attempts and connections:
/// an IPv4 address (also when mapped into IPv6 by a dual-stack listener),
/// or an IPv6 address's /64.
pub fn client_key(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
    }
}

/// A login attempt reserved by [`Sessions::begin_attempt`]: its client and
/// the failure window it was counted in.
#[derive(Clone, Copy, Debug)]
pub struct Attempt {
    client: IpAddr,
    window: Instant,
}

/// The logged-in sessions and the failed logins.
#[derive(Debug, Default)]
pub struct Sessions {
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Sessions {
    /// Starts a session for `who`; its token.
    pub fn open(&self, who: Who) -> String {
        let mut bytes = [0u8; 32];
        chuyi_common::secret::fill_random(&mut bytes);
        let token = chuyi_common::secret::hex(&bytes);
        let mut sessions = lock(&self.sessions);
        let now = clock::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= SESSIONS_MAX {
            if let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.expires).map(|(t, _)| t.clone()) {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(token.clone(), Session { who, expires: now + SESSION_TTL });
        token
    }

    /// Who a live session is.
    pub fn who(&self, token: &str) -> Option<Who> {
        let sessions = lock(&self.sessions);
        let s = sessions.get(token)?;
        (s.expires > clock::now()).then(|| s.who.clone())
    }

    pub fn close(&self, token: &str) {
        lock(&self.sessions).remove(token);
    }

    /// Reserves a login attempt for `addr`: `None` when its client has
    /// failed too often lately. The attempt counts as failed unless
    /// [`Self::succeeded`] gives it back.
    pub fn begin_attempt(&self, addr: IpAddr) -> Option<Attempt> {
        let client = client_key(addr);
        let mut failures = lock(&self.failures);
        if failures.len() >= FAILING_ADDRS_MAX && !failures.contains_key(&client) {
            failures.retain(|_, (since, _)| since.elapsed() < FAILURE_WINDOW);
            if failures.len() >= FAILING_ADDRS_MAX {
                return None;
            }
        }
        let entry = failures.entry(client).or_insert((clock::now(), 0));
        if entry.0.elapsed() >= FAILURE_WINDOW {
            *entry = (clock::now(), 0);
        }
        if entry.1 >= FAILURES_PER_WINDOW {
            return None;
        }
        entry.1 += 1;
        Some(Attempt { client, window: entry.0 })
    }

    /// Gives back an attempt that succeeded (or could not be judged),
    /// if its window is still the client's: a later window's count is
    /// others' attempts.
    pub fn succeeded(&self, attempt: Attempt) {
        let mut failures = lock(&self.failures);
        if let Some(entry) = failures.get_mut(&attempt.client).filter(|e| e.0 == attempt.window) {
            entry.1 = entry.1.saturating_sub(1);
            if entry.1 == 0 {
                failures.remove(&attempt.client);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_read_from_among_other_cookies() {
        assert_eq!(token_of("a=1; chuyi_console=ff00; b=2"), Some("ff00"));
        assert_eq!(token_of("chuyi_console=ab"), Some("ab"));
        assert_eq!(token_of("chuyi_consolex=ab; x=chuyi_console=1"), None);
        assert_eq!(token_of(""), None);
    }

    fn who(user: &str) -> Who {
        Who { user: user.into(), access_key: format!("AK-{user}") }
    }

    #[test]
    fn a_session_names_its_user_until_closed() {
        let s = Sessions::default();
        let token = s.open(who("alice"));
        assert_eq!(token.len(), 64);
        assert_eq!(s.who(&token), Some(who("alice")));
        assert_ne!(s.open(who("alice")), token, "each login its own token");
        s.close(&token);
        assert_eq!(s.who(&token), None);
        assert_eq!(s.who("not-a-token"), None);
    }

    #[test]
    fn sessions_past_the_limit_end_the_oldest() {
        let s = Sessions::default();
        let first = s.open(who("a"));
        for _ in 0..SESSIONS_MAX {
            s.open(who("b"));
        }
        assert_eq!(s.who(&first), None, "the first ended to make room");
        assert_eq!(lock(&s.sessions).len(), SESSIONS_MAX);
    }

    #[test]
    fn attempts_are_reserved_so_a_burst_cannot_pass_the_limit_and_success_gives_back() {
        let s = Sessions::default();
        let (bad, good): (IpAddr, IpAddr) = ("10.0.0.1".parse().expect("ip"), "10.0.0.2".parse().expect("ip"));
        let began = (0..FAILURES_PER_WINDOW * 3).filter(|_| s.begin_attempt(bad).is_some()).count();
        assert_eq!(began, FAILURES_PER_WINDOW as usize, "attempts at once count before any answer");
        assert!(s.begin_attempt(bad).is_none());
        for _ in 0..FAILURES_PER_WINDOW * 2 {
            let attempt = s.begin_attempt(good).expect("an administrator logging in often is never refused");
            s.succeeded(attempt);
        }
    }

    #[test]
    fn an_ipv6_host_is_counted_by_its_64() {
        let s = Sessions::default();
        for i in 0..FAILURES_PER_WINDOW {
            let addr: IpAddr = format!("2001:db8:1:2::{:x}", i + 1).parse().expect("ip");
            assert!(s.begin_attempt(addr).is_some());
        }
        assert!(s.begin_attempt("2001:db8:1:2:ffff::9".parse().expect("ip")).is_none(), "the same /64");
        assert!(s.begin_attempt("2001:db8:1:3::1".parse().expect("ip")).is_some(), "another /64");
    }

    #[test]
    fn an_ipv4_client_of_a_dual_stack_listener_is_itself() {
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(client_key(mapped), "10.0.0.1".parse::<IpAddr>().expect("ip"));
        let s = Sessions::default();
        for _ in 0..FAILURES_PER_WINDOW {
            assert!(s.begin_attempt(mapped).is_some());
        }
        assert!(s.begin_attempt("::ffff:10.0.0.2".parse().expect("ip")).is_some(), "another IPv4 client");
        assert!(s.begin_attempt("10.0.0.1".parse().expect("ip")).is_none(), "the same client");
    }
}
