//! The console's memory of the last hours: a ring of [`Sample`]s, one per
//! survey, that the charts are drawn from (no Prometheus needed to see
//! them), and the client I/O rates by owner that the volumes page shows
//! as "IOPS now".
//!
//! Rates are taken per node, between the last two reads of that node's
//! counters and over the time between them on the monotonic clock, so a
//! slow node neither stretches another's interval nor loses one when it
//! misses a survey. Counters only grow while a node runs: a count lower
//! than the one before means the node restarted or forgot an idle owner,
//! and counts from zero (as Prometheus's `rate()` takes a reset).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chuyi_common::ids::NodeId;
use chuyi_common::proto::chunk::OwnerIoCount;

use crate::survey::{NodeIo, Survey};

/// A node's last counters older than this give no rate: they say nothing
/// of now.
const RATE_BASE_MAX_AGE: Duration = Duration::from_secs(60);

/// One point of the charts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    pub at_ms: u64,
    pub nodes: u32,
    pub nodes_up: u32,
    pub pgs_clean: u32,
    pub pgs_recovering: u32,
    pub pgs_degraded: u32,
    /// Of the disks in service.
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    /// Client I/O per second, all volumes.
    pub io: Rate,
    /// Bytes backfill sent per second.
    pub recovery_bytes: f64,
}

/// Client I/O rates by owner, as the latest survey left them.
pub type Rates = Arc<HashMap<u64, Rate>>;

/// Client operations and bytes per second.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rate {
    pub reads: f64,
    pub writes: f64,
    pub read_bytes: f64,
    pub written_bytes: f64,
}

impl Rate {
    pub fn ops(&self) -> f64 {
        self.reads + self.writes
    }

    fn add_delta(&mut self, before: Option<&OwnerIoCount>, after: &OwnerIoCount, seconds: f64) {
        let d = |b: Option<u64>, a: u64| grown(b.unwrap_or(0), a) as f64 / seconds;
        self.reads += d(before.map(|b| b.reads), after.reads);
        self.writes += d(before.map(|b| b.writes), after.writes);
        self.read_bytes += d(before.map(|b| b.read_bytes), after.read_bytes);
        self.written_bytes += d(before.map(|b| b.written_bytes), after.written_bytes);
    }

    fn add(&mut self, other: &Rate) {
        self.reads += other.reads;
        self.writes += other.writes;
        self.read_bytes += other.read_bytes;
        self.written_bytes += other.written_bytes;
    }
}

/// How much a counter grew from `before` to `after`: all of `after` when
/// it went down (the counter restarted from zero).
fn grown(before: u64, after: u64) -> u64 {
    if after >= before {
        after - before
    } else {
        after
    }
}

/// What one node's two reads say per second: client I/O by owner (added
/// into `rates`) and the bytes backfill sent. Nothing when the reads are
/// not apart in time.
fn node_rates(before: &NodeIo, after: &NodeIo, rates: &mut HashMap<u64, Rate>) -> f64 {
    let seconds = after.at.saturating_duration_since(before.at).as_secs_f64();
    if seconds <= 0.0 {
        return 0.0;
    }
    if let (Some(then), Some(now)) = (&before.owners, &after.owners) {
        for count in now {
            let prior = then.binary_search_by_key(&count.owner, |c| c.owner).ok().map(|i| &then[i]);
            rates.entry(count.owner).or_default().add_delta(prior, count, seconds);
        }
    }
    grown(before.backfill_bytes, after.backfill_bytes) as f64 / seconds
}

/// The chart point of `survey`, with `io_rates` (by owner) and the
/// backfill rate measured from it.
fn sample(survey: &Survey, io_rates: &HashMap<u64, Rate>, recovery_bytes: f64) -> Sample {
    let map = &survey.status.map;
    let classes = crate::health::capacity_by_class(map);
    let mut io = Rate::default();
    io_rates.values().for_each(|r| io.add(r));
    let pools = &survey.status.pools;
    let sum = |f: fn(&chuyi_meta_api::proto::PoolHealth) -> u32| pools.iter().fold(0u32, |a, p| a.saturating_add(f(p)));
    Sample {
        at_ms: survey.taken_ms,
        nodes: map.nodes.len() as u32,
        nodes_up: map.nodes.iter().filter(|n| n.state == chuyi_meta_api::model::NodeState::Up).count() as u32,
        pgs_clean: sum(|p| p.clean),
        pgs_recovering: sum(|p| p.recovering),
        pgs_degraded: sum(|p| p.degraded),
        capacity_bytes: classes.iter().fold(0u64, |a, c| a.saturating_add(c.capacity_bytes)),
        used_bytes: classes.iter().fold(0u64, |a, c| a.saturating_add(c.used_bytes)),
        io,
        recovery_bytes,
    }
}

/// The ring of samples, the latest survey, and each node's last counters.
#[derive(Debug)]
pub struct History {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    samples: VecDeque<Sample>,
    capacity: usize,
    latest: Option<Arc<Survey>>,
    rates: Rates,
    last_io: HashMap<NodeId, NodeIo>,
}

impl History {
    /// Keeps the last `capacity` samples.
    pub fn new(capacity: usize) -> Self {
        let inner = Inner {
            samples: VecDeque::new(),
            capacity: capacity.max(1),
            latest: None,
            rates: Arc::default(),
            last_io: HashMap::new(),
        };
        Self { inner: Mutex::new(inner) }
    }

    /// Adds a survey: its sample joins the ring (the oldest leaves when it
    /// is full), the rates since each node's last read replace the old
    /// ones, and it becomes the latest.
    pub fn record(&self, survey: Survey) {
        let mut inner = self.lock();
        let mut rates = HashMap::new();
        let mut recovery = 0.0;
        for io in &survey.io {
            let base =
                inner.last_io.get(&io.node).filter(|b| io.at.saturating_duration_since(b.at) <= RATE_BASE_MAX_AGE);
            if let Some(base) = base {
                recovery += node_rates(base, io, &mut rates);
            }
            inner.last_io.insert(io.node, io.clone());
        }
        let newest = survey.io.iter().map(|io| io.at).max();
        if let Some(newest) = newest {
            inner.last_io.retain(|_, b| newest.saturating_duration_since(b.at) <= RATE_BASE_MAX_AGE);
        }
        let point = sample(&survey, &rates, recovery);
        if inner.samples.len() == inner.capacity {
            inner.samples.pop_front();
        }
        inner.samples.push_back(point);
        inner.rates = Arc::new(rates);
        inner.latest = Some(Arc::new(survey));
    }

    /// The latest survey and the owners' I/O rates it showed.
    pub fn latest(&self) -> Option<(Arc<Survey>, Rates)> {
        let inner = self.lock();
        inner.latest.clone().map(|s| (s, inner.rates.clone()))
    }

    /// About `points` samples (at most one more) spread evenly over the
    /// ring, oldest first, the newest always among them (a chart is only so
    /// many pixels wide).
    pub fn samples(&self, points: usize) -> Vec<Sample> {
        let inner = self.lock();
        let n = inner.samples.len();
        let step = n.div_ceil(points.max(1)).max(1);
        let mut out: Vec<Sample> = inner.samples.iter().step_by(step).cloned().collect();
        if n > 0 && !(n - 1).is_multiple_of(step) {
            out.extend(inner.samples.back().cloned());
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use chuyi_common::clock;

    use super::*;

    fn count(owner: u64, reads: u64, writes: u64) -> OwnerIoCount {
        OwnerIoCount { owner, reads, writes, read_bytes: reads * 4096, written_bytes: writes * 4096 }
    }

    fn io(node: u32, at_s: u64, owners: Vec<OwnerIoCount>, backfill_bytes: u64) -> NodeIo {
        let at = START.with(|s| *s) + Duration::from_secs(at_s);
        NodeIo { node, at, owners: Some(owners), backfill_bytes }
    }

    thread_local! {
        static START: clock::Instant = clock::now();
    }

    fn survey(taken_ms: u64, io: Vec<NodeIo>) -> Survey {
        crate::testing::survey(taken_ms, Default::default(), io)
    }

    #[test]
    fn rates_sum_an_owner_over_nodes_each_over_its_own_interval_and_a_lower_count_is_a_restart() {
        let history = History::new(10);
        history.record(survey(0, vec![io(1, 0, vec![count(7, 100, 10)], 0), io(2, 0, vec![count(7, 50, 0)], 0)]));
        history.record(survey(
            2_000,
            vec![
                io(1, 2, vec![count(7, 300, 30), count(8, 20, 0)], 0),
                // Node 2 answered late: its own 4 s interval; it restarted.
                io(2, 4, vec![count(7, 40, 0)], 0),
                // Node 3 is new: no rate yet.
                io(3, 2, vec![count(7, 9_999, 0)], 0),
            ],
        ));
        let (_, rates) = history.latest().expect("a survey");
        assert_eq!(rates[&7].reads, 100.0 + 10.0, "200 over 2 s on node 1, 40 over 4 s on node 2");
        assert_eq!(rates[&7].writes, 10.0);
        assert_eq!(rates[&7].read_bytes, 110.0 * 4096.0);
        assert_eq!(rates[&8].reads, 10.0, "an owner new on a node counted from zero");
    }

    #[test]
    fn a_node_missing_one_survey_gives_its_rate_at_the_next_from_its_last_read() {
        let history = History::new(10);
        history.record(survey(0, vec![io(1, 0, vec![count(7, 0, 0)], 0)]));
        history.record(survey(5_000, vec![]));
        history.record(survey(10_000, vec![io(1, 10, vec![count(7, 100, 0)], 1_000)]));
        let (_, rates) = history.latest().expect("a survey");
        assert_eq!(rates[&7].reads, 10.0);
        assert_eq!(history.samples(10).last().map(|s| s.recovery_bytes), Some(100.0));
        history.record(survey(100_000, vec![io(1, 100, vec![count(7, 200, 0)], 1_000)]));
        assert!(history.latest().expect("a survey").1.is_empty(), "a base older than a minute gives no rate");
        let mut unknown = io(1, 105, vec![], 6_000);
        unknown.owners = None;
        history.record(survey(105_000, vec![unknown]));
        assert!(history.latest().expect("a survey").1.is_empty(), "no counts, no I/O rate");
        assert_eq!(history.samples(10).last().map(|s| s.recovery_bytes), Some(1_000.0), "backfill still measured");
    }

    #[test]
    fn the_ring_keeps_the_last_samples_and_thins_them_for_a_chart() {
        let history = History::new(5);
        for i in 0..8 {
            history.record(survey(i * 1_000, vec![]));
        }
        let at = |s: Vec<Sample>| s.iter().map(|s| s.at_ms).collect::<Vec<_>>();
        assert_eq!(at(history.samples(100)), [3_000, 4_000, 5_000, 6_000, 7_000], "the oldest left");
        assert_eq!(at(history.samples(2)), [3_000, 6_000, 7_000], "every third, and the newest");
        assert_eq!(at(history.samples(5)), [3_000, 4_000, 5_000, 6_000, 7_000]);
        assert!(History::new(3).samples(10).is_empty());
    }
}
