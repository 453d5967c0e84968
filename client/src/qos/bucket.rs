//! A token bucket with reservations: pure, the clock passed in.
//!
//! Tokens refill at `rate` per second up to `burst`. Taking more than
//! there are is allowed and leaves a debt: each take gets a [`Ticket`],
//! its place in the line, and waits until the tokens credited reach it;
//! whoever comes next waits behind it, so takers are served in the order
//! they came. A taker waiting in slices asks again after each one
//! ([`TokenBucket::ticket_wait`]), so a rate raised meanwhile (a larger
//! share) shortens the wait at once.
//!
//! The bucket counts tokens taken and credited since it was made (f64:
//! exact to the byte up to 2^53, 9 PB; past that a few bytes' error).

use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    /// Tokens taken, and tokens credited (never more than `burst` ahead
    /// of those taken), since the bucket was made.
    taken: f64,
    credit: f64,
    at: Instant,
}

/// A taker's place in line: it may go once this many tokens are credited.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ticket(f64);

/// The smallest rate a bucket runs at: a share rounded to nothing must
/// still let a waiting taker through eventually.
const RATE_MIN: f64 = 1e-3;

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        let (rate, burst) = sane(rate, burst);
        Self { rate, burst, taken: 0.0, credit: burst, at: now }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Changes the rate and burst from `now`, keeping what was refilled
    /// before at the old rate (and any debt).
    pub fn set_rate(&mut self, rate: f64, burst: f64, now: Instant) {
        self.refill(now);
        (self.rate, self.burst) = sane(rate, burst);
        self.credit = self.credit.min(self.taken + self.burst);
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.credit = (self.credit + elapsed * self.rate).min(self.taken + self.burst);
        self.at = self.at.max(now);
    }

    /// How long a taker of `n` would wait if it took them now.
    pub fn wait_for(&mut self, n: f64, now: Instant) -> Duration {
        self.refill(now);
        secs((self.taken + n - self.credit) / self.rate)
    }

    /// Takes `n` tokens, into debt if need be: the taker's place in line
    /// and how long it waits for it.
    pub fn take(&mut self, n: f64, now: Instant) -> (Ticket, Duration) {
        self.refill(now);
        self.taken += n;
        (Ticket(self.taken), secs((self.taken - self.credit) / self.rate))
    }

    /// How long the holder of `ticket` still waits, at the current rate.
    pub fn ticket_wait(&mut self, ticket: Ticket, now: Instant) -> Duration {
        self.refill(now);
        // A ticket past every take is another bucket's (a rate the rule
        // dropped and set again): it waits for nothing here.
        secs((ticket.0.min(self.taken) - self.credit) / self.rate)
    }
}

fn sane(rate: f64, burst: f64) -> (f64, f64) {
    let rate = if rate.is_finite() { rate.max(RATE_MIN) } else { RATE_MIN };
    let burst = if burst.is_finite() { burst.max(0.0) } else { 0.0 };
    (rate, burst)
}

/// A wait of `s` seconds (none when not positive), at most an hour.
fn secs(s: f64) -> Duration {
    if s > 0.0 {
        Duration::from_secs_f64(s.min(3600.0))
    } else {
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_full_bucket_serves_its_burst_at_once_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(50.0, 50.0, t0);
        for _ in 0..50 {
            assert_eq!(b.take(1.0, t0).1, Duration::ZERO);
        }
        let (first, wait) = b.take(1.0, t0);
        assert_eq!(wait, 20 * MS, "the 51st waits a fiftieth of a second");
        let (second, wait) = b.take(1.0, t0);
        assert_eq!(wait, 40 * MS, "the next waits behind it");
        assert_eq!(b.ticket_wait(first, t0 + 10 * MS), 10 * MS);
        assert_eq!(b.ticket_wait(first, t0 + 20 * MS), Duration::ZERO, "not behind those after it");
        assert_eq!(b.ticket_wait(second, t0 + 20 * MS), 20 * MS);
    }

    #[test]
    fn over_a_long_run_the_rate_holds_whatever_the_sizes() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000.0, 100.0, t0);
        let mut now = t0;
        let mut taken = 0.0;
        for n in [1.0, 700.0, 3.0, 250.0, 5000.0, 1.0].iter().cycle().take(600) {
            now += b.take(*n, now).1;
            taken += n;
        }
        let elapsed = now.duration_since(t0).as_secs_f64();
        let rate = taken / elapsed;
        assert!((rate - 1000.0).abs() / 1000.0 < 0.01, "{rate} tokens/s");
    }

    #[test]
    fn wait_for_takes_nothing() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 1.0, t0);
        assert_eq!(b.wait_for(1.0, t0), Duration::ZERO);
        assert_eq!(b.wait_for(2.0, t0), 100 * MS);
        assert_eq!(b.take(1.0, t0).1, Duration::ZERO, "nothing was taken by asking");
    }

    #[test]
    fn a_raised_rate_repays_a_debt_sooner_and_a_quiet_spell_refills_only_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 10.0, t0);
        let (ticket, wait) = b.take(30.0, t0);
        assert_eq!(wait, 2000 * MS);
        b.set_rate(100.0, 100.0, t0);
        assert_eq!(b.ticket_wait(ticket, t0), 200 * MS);
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(b.wait_for(100.0, later), Duration::ZERO);
        assert_eq!(b.wait_for(101.0, later), 10 * MS, "no more than the burst saved up");
    }

    #[test]
    fn nonsense_rates_neither_panic_nor_wait_forever() {
        let t0 = Instant::now();
        for rate in [0.0, -5.0, f64::NAN, f64::INFINITY] {
            let mut b = TokenBucket::new(rate, f64::NAN, t0);
            assert!(b.take(1e12, t0).1 <= Duration::from_secs(3600));
        }
    }
}
