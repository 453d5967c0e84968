//! Bandwidth by time of day: a schedule such as
//! `08:00-20:00=50MiB/s,20:00-08:00=unlimited`, read in the host's local
//! time, and the pacer a transfer passes each piece through. The rate is
//! looked up again for every piece, so a transfer that runs across a
//! window's edge changes speed there (within one piece, at most 1 MiB).

use std::sync::Arc;
use std::time::Duration;

use chuyi_common::size::ByteSize;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::BackupError;

const DAY_MINUTES: u16 = 24 * 60;

/// Windows of the day and their rates; the first window holding a minute
/// decides it, and a minute no window holds is unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BandwidthSchedule {
    windows: Vec<Window>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Window {
    /// Minutes since midnight; `from > to` runs past midnight, `from ==
    /// to` is the whole day.
    from: u16,
    to: u16,
    /// Bytes per second; `None` is unlimited.
    rate: Option<u64>,
}

impl BandwidthSchedule {
    /// `RATE` alone (all day), or `HH:MM-HH:MM=RATE[,...]`, where RATE is
    /// a size per second (`50MiB/s`, `10M`) or `unlimited`.
    pub fn parse(text: &str) -> Result<Self, BackupError> {
        let bad = |why: String| BackupError::Invalid(format!("bandwidth {text:?}: {why}"));
        let mut windows = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (span, rate) = match part.split_once('=') {
                Some((span, rate)) => (Some(span.trim()), rate.trim()),
                None => (None, part),
            };
            let rate = parse_rate(rate).map_err(bad)?;
            let (from, to) = match span {
                None => (0, 0),
                Some(span) => {
                    let (a, b) = span.split_once('-').ok_or_else(|| bad(format!("{span:?} is not HH:MM-HH:MM")))?;
                    (parse_minute(a).map_err(bad)?, parse_minute(b).map_err(bad)?)
                }
            };
            windows.push(Window { from, to, rate });
        }
        if windows.is_empty() {
            return Err(bad("no window".into()));
        }
        Ok(Self { windows })
    }

    pub fn unlimited() -> Self {
        Self::default()
    }

    /// Bytes per second at `minute` of the day; `None` is unlimited.
    pub fn rate_at(&self, minute: u16) -> Option<u64> {
        let minute = minute % DAY_MINUTES;
        self.windows.iter().find(|w| w.holds(minute)).and_then(|w| w.rate)
    }
}

impl std::fmt::Display for BandwidthSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.windows.is_empty() {
            return f.write_str("unlimited");
        }
        let parts: Vec<String> = self
            .windows
            .iter()
            .map(|w| {
                let rate = w.rate.map_or("unlimited".to_string(), |r| format!("{}/s", ByteSize(r)));
                format!("{:02}:{:02}-{:02}:{:02}={rate}", w.from / 60, w.from % 60, w.to / 60, w.to % 60)
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl Window {
    fn holds(&self, minute: u16) -> bool {
        match self.from.cmp(&self.to) {
            std::cmp::Ordering::Less => (self.from..self.to).contains(&minute),
            std::cmp::Ordering::Greater => minute >= self.from || minute < self.to,
            std::cmp::Ordering::Equal => true,
        }
    }
}

fn parse_minute(text: &str) -> Result<u16, String> {
    let (h, m) = text.trim().split_once(':').ok_or_else(|| format!("{text:?} is not HH:MM"))?;
    let (h, m): (u16, u16) = (
        h.parse().map_err(|_| format!("{text:?}: bad hour"))?,
        m.parse().map_err(|_| format!("{text:?}: bad minute"))?,
    );
    if h > 24 || m > 59 || (h == 24 && m > 0) {
        return Err(format!("{text:?} is not a time of day"));
    }
    Ok((h * 60 + m) % DAY_MINUTES)
}

fn parse_rate(text: &str) -> Result<Option<u64>, String> {
    if text.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    let size = text.strip_suffix("/s").unwrap_or(text);
    match size.parse::<ByteSize>() {
        Ok(ByteSize(0)) => Err(format!("{text:?}: a rate of 0 would never finish (pause by not running)")),
        Ok(ByteSize(n)) => Ok(Some(n)),
        Err(e) => Err(e.to_string()),
    }
}

/// The minute of the local day now.
pub fn local_minute() -> u16 {
    use chrono::Timelike;
    let now = chrono::Local::now();
    (now.hour() * 60 + now.minute()) as u16
}

/// Paces a transfer's bytes to its schedule's rate. Shared by a
/// transfer's tasks: each reserves its piece's time on one timeline.
pub struct Throttle {
    schedule: BandwidthSchedule,
    clock: Arc<dyn Fn() -> u16 + Send + Sync>,
    next_free: tokio::sync::Mutex<Instant>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle").field("schedule", &self.schedule.to_string()).finish_non_exhaustive()
    }
}

impl Throttle {
    pub fn new(schedule: BandwidthSchedule) -> Self {
        Self::with_clock(schedule, Arc::new(local_minute))
    }

    /// With another clock of the day (tests).
    pub fn with_clock(schedule: BandwidthSchedule, clock: Arc<dyn Fn() -> u16 + Send + Sync>) -> Self {
        Self { schedule, clock, next_free: tokio::sync::Mutex::new(Instant::now()) }
    }

    /// Waits until `bytes` may be sent at the rate of this minute. An idle
    /// transfer saves up no burst.
    pub async fn take(&self, bytes: u64) {
        let Some(rate) = self.schedule.rate_at((self.clock)()) else { return };
        let start = {
            let mut next = self.next_free.lock().await;
            let start = (*next).max(Instant::now());
            *next = start + Duration::from_secs_f64(bytes as f64 / rate as f64);
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU16, Ordering};

    #[test]
    fn windows_pick_the_rate_across_midnight() {
        let s = BandwidthSchedule::parse("08:00-20:00=50MiB/s, 20:00-08:00=unlimited").expect("parse");
        assert_eq!(s.rate_at(8 * 60), Some(50 << 20));
        assert_eq!(s.rate_at(20 * 60 - 1), Some(50 << 20));
        assert_eq!(s.rate_at(20 * 60), None);
        assert_eq!(s.rate_at(3 * 60), None);
        let night = BandwidthSchedule::parse("22:00-06:00=1G").expect("parse");
        assert_eq!(night.rate_at(23 * 60), Some(1 << 30));
        assert_eq!(night.rate_at(5 * 60 + 59), Some(1 << 30));
        assert_eq!(night.rate_at(12 * 60), None, "outside every window is unlimited");
        assert_eq!(BandwidthSchedule::parse("10MiB/s").expect("parse").rate_at(700), Some(10 << 20));
        assert_eq!(s.to_string(), "08:00-20:00=50MiB/s,20:00-08:00=unlimited");
    }

    #[test]
    fn bad_schedules_say_why() {
        for bad in ["", "08:00=1M", "25:00-01:00=1M", "08:00-09:60=1M", "08:00-09:00=fast", "0", "08-09=1M"] {
            assert!(BandwidthSchedule::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_transfer_changes_speed_at_a_window_edge() {
        // 1 MiB/s until minute 600 of the day, then 4 MiB/s.
        let minute = Arc::new(AtomicU16::new(599));
        let clock = minute.clone();
        let s = BandwidthSchedule::parse("00:00-10:00=1MiB/s,10:00-00:00=4MiB/s").expect("parse");
        let t = Throttle::with_clock(s, Arc::new(move || clock.load(Ordering::Relaxed)));
        let started = Instant::now();
        for _ in 0..4 {
            t.take(1 << 20).await;
        }
        // Four pieces at 1 MiB/s: the fourth may start after three seconds.
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        minute.store(600, Ordering::Relaxed);
        let edge = Instant::now();
        for _ in 0..4 {
            t.take(1 << 20).await;
        }
        // The first piece past the edge waits out the last slow one (1 s),
        // then four at 4 MiB/s take 0.25 s each.
        assert_eq!(edge.elapsed(), Duration::from_millis(1750));
    }
}
