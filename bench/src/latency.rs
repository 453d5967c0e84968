//! Latency percentiles from every operation's latency, kept exactly: a run
//! of a few hundred thousand operations sorts in milliseconds, so there is
//! no reason to bucket.

use std::time::Duration;

/// Percentiles of a set of latencies, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct LatencySummary {
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl LatencySummary {
    /// Summarises `latencies_ns` (sorted in place); zeros when empty.
    pub fn from_nanos(latencies_ns: &mut [u64]) -> Self {
        if latencies_ns.is_empty() {
            return Self::default();
        }
        latencies_ns.sort_unstable();
        let us = |ns: u64| ns as f64 / 1_000.0;
        let total: u128 = latencies_ns.iter().map(|&ns| u128::from(ns)).sum();
        Self {
            mean_us: total as f64 / latencies_ns.len() as f64 / 1_000.0,
            p50_us: us(percentile(latencies_ns, 500)),
            p99_us: us(percentile(latencies_ns, 990)),
            p999_us: us(percentile(latencies_ns, 999)),
            max_us: us(latencies_ns[latencies_ns.len() - 1]),
        }
    }
}

/// The nearest-rank quantile of non-empty sorted `sorted`, in per mille
/// (integer arithmetic: 99.9 % of 1000 must be rank 999, not 1000).
fn percentile(sorted: &[u64], per_mille: usize) -> u64 {
    let rank = (per_mille * sorted.len()).div_ceil(1000);
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// An operation's latency in nanoseconds, saturating (585 years).
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut ns: Vec<u64> = (1..=1000).rev().map(|i| i * 1000).collect();
        let s = LatencySummary::from_nanos(&mut ns);
        assert_eq!(s.p50_us, 500.0);
        assert_eq!(s.p99_us, 990.0);
        assert_eq!(s.p999_us, 999.0);
        assert_eq!(s.max_us, 1000.0);
        assert_eq!(s.mean_us, 500.5);
    }

    #[test]
    fn one_sample_is_every_percentile() {
        let s = LatencySummary::from_nanos(&mut [7_000]);
        assert_eq!((s.p50_us, s.p99_us, s.max_us), (7.0, 7.0, 7.0));
    }

    #[test]
    fn empty_is_zero() {
        assert_eq!(LatencySummary::from_nanos(&mut []), LatencySummary::default());
    }
}
