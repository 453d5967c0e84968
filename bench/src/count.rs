//! The object-count benchmark of issue 14: one bucket filled to N objects
//! through the metadata service's real client (data-less object records,
//! as `meta-load` puts them, with PACS-shaped keys), on a running group
//! whose members' processes and data directories it is told.
//!
//! It fills in stretches (a tenth of N by default) with many concurrent
//! writers and times each, so the PUT rate can be followed as the bucket
//! grows; at the checkpoints it stops writing and measures ListObjectsV2
//! pages (the gateway's `Query::List`), each member's RSS and peak RSS,
//! and its data directory on disk. Snapshot builds are watched throughout
//! from the members' snapshot directories. After the fill it has the
//! leader build a snapshot of everything with the writers stopped, then
//! adds an empty member and times its catch-up (count_snapshot.rs).
//!
//! Listing latency is measured with the writers stopped, not under load:
//! on the 2-core machine 64 writers would make it a measure of CPU
//! contention rather than of the index.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chuyi_metadata::client::MetaClient;
use chuyi_metadata::proto::{ApiReply, MetaCall, Query};
use chuyi_metadata::state::{ListCursor, ListRequest, MetaError, LIST_MAX_KEYS};
use rand::{Rng, SeedableRng};

use crate::count_report::{Checkpoint, CountReport, FillStep, ListStats, MemberSample, StretchCpu};
use crate::count_snapshot::{catch_up, quiet_build, BuildWatch};
use crate::cpu;
use crate::latency::{nanos, LatencySummary};
use crate::meta::{self, BUCKET};
use crate::pacs_keys::{self, SHARDS};
use crate::proc_stat::{self, disk_use};

/// A member of the group, as the machine sees it.
#[derive(Debug, Clone)]
pub struct MemberProcess {
    pub id: u64,
    pub pid: u32,
    pub data_dir: PathBuf,
}

/// An empty member, started and waiting to be added, and its address.
#[derive(Debug, Clone)]
pub struct Joiner {
    pub process: MemberProcess,
    pub addr: String,
}

#[derive(Debug, Clone)]
pub struct CountSpec {
    pub objects: u64,
    pub writers: usize,
    /// Objects per timed stretch of the fill.
    pub step: u64,
    /// Bucket sizes at which to stop and measure; each at most `objects`.
    pub checkpoints: BTreeSet<u64>,
    /// Timed pages per kind of listing at each checkpoint.
    pub list_pages: usize,
    pub members: Vec<MemberProcess>,
    pub joiner: Option<Joiner>,
    pub seed: u64,
    /// A label for progress lines ("1 member").
    pub label: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CountError {
    #[error("invalid benchmark: {0}")]
    Invalid(String),
    #[error("metadata service: {0}")]
    Meta(#[from] MetaError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("gave up waiting for {0}")]
    Timeout(&'static str),
    #[error("the service answered {what} with {answer}")]
    Unexpected { what: &'static str, answer: String },
    #[error("a bench task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl CountError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

impl CountSpec {
    /// The default checkpoints of the issue: 0, 1, 5 and 10 million of 10
    /// million, and the same fractions of any other count.
    pub fn default_checkpoints(objects: u64) -> BTreeSet<u64> {
        [0, objects / 10, objects / 2, objects].into_iter().collect()
    }

    fn validate(&self) -> Result<(), CountError> {
        let bad = |why: String| Err(CountError::Invalid(why));
        if self.objects == 0 || self.writers == 0 || self.step == 0 || self.list_pages == 0 {
            return bad("objects, writers, step and list pages must be above zero".into());
        }
        if let Some(c) = self.checkpoints.iter().find(|&&c| c > self.objects) {
            return bad(format!("checkpoint {c} is beyond the {} objects", self.objects));
        }
        if self.members.is_empty() {
            return bad("no member processes given".into());
        }
        Ok(())
    }

    /// Where each timed stretch ends: every `step`, every checkpoint, and
    /// the end, so no stretch spans a checkpoint's pause.
    fn stretch_ends(&self) -> Vec<u64> {
        let steps = (1..).map(|k| k * self.step).take_while(|&n| n < self.objects);
        let mut ends: BTreeSet<u64> = steps.chain(self.checkpoints.iter().copied()).collect();
        ends.insert(self.objects);
        ends.remove(&0);
        ends.into_iter().collect()
    }
}

/// Seeds the bucket, fills it, measures at the checkpoints, then builds a
/// snapshot quietly and adds the joiner.
pub async fn run(client: Arc<MetaClient>, spec: CountSpec) -> Result<CountReport, CountError> {
    spec.validate()?;
    let started = Instant::now();
    settle(&client).await?;
    meta::seed(&client).await?;
    let done = Arc::new(AtomicU64::new(0));
    let watch = BuildWatch::start(spec.members.clone(), done.clone());
    let (steps, checkpoints) = fill_and_measure(&client, &spec, &done, started).await?;
    let builds_during_fill = watch.stop().await?;
    let leader = leader_process(&client, &spec.members).await?;
    let quiet_build = quiet_build(&client, &leader, spec.objects).await?;
    eprintln!("{}: snapshot of the filled state built in {:.2} s", spec.label, quiet_build.build.build_seconds);
    let catch_up = match &spec.joiner {
        Some(joiner) => Some(catch_up(&client, joiner).await?),
        None => None,
    };
    let first = steps.first().map_or(0.0, |s| s.puts_per_s);
    let last = steps.last().map_or(0.0, |s| s.puts_per_s);
    Ok(CountReport {
        members: spec.members.len(),
        writers: spec.writers,
        objects: spec.objects,
        fill_seconds: steps.iter().map(|s| s.seconds).sum(),
        wall_seconds: started.elapsed().as_secs_f64(),
        last_over_first: if first > 0.0 { last / first } else { 0.0 },
        steps,
        checkpoints,
        builds_during_fill,
        quiet_build,
        catch_up,
    })
}

/// The fill, stretch by stretch, stopping at each checkpoint to measure.
async fn fill_and_measure(
    client: &Arc<MetaClient>,
    spec: &CountSpec,
    done: &Arc<AtomicU64>,
    started: Instant,
) -> Result<(Vec<FillStep>, Vec<Checkpoint>), CountError> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed);
    let mut checkpoints = Vec::new();
    if spec.checkpoints.contains(&0) {
        checkpoints.push(checkpoint(client, spec, 0, &mut rng).await?);
    }
    let mut steps = Vec::new();
    let mut from = 0;
    for to in spec.stretch_ends() {
        let cpu = CpuSample::take(&spec.members);
        let mut step = fill(client, from, to, spec.writers, done).await?;
        step.cpu = CpuSample::take(&spec.members).cores_since(&cpu, step.seconds);
        step.rss_bytes = members_rss(&spec.members)?;
        eprintln!(
            "{}: {to}/{} objects, {:.0} puts/s (p99 {:.1} ms), {:.0} s since start",
            spec.label,
            spec.objects,
            step.puts_per_s,
            step.latency.p99_us / 1e3,
            started.elapsed().as_secs_f64()
        );
        steps.push(step);
        if spec.checkpoints.contains(&to) {
            checkpoints.push(checkpoint(client, spec, to, &mut rng).await?);
        }
        from = to;
    }
    Ok((steps, checkpoints))
}

/// How long every member must agree on the leader and term before the
/// run starts: a group just founded on a busy machine may still hold an
/// election, which would stall the first measurements.
const SETTLED_FOR: Duration = Duration::from_secs(2);
const SETTLE_MAX: Duration = Duration::from_secs(60);

/// Waits until every member names the same leader in the same term, and
/// has for [`SETTLED_FOR`].
async fn settle(client: &MetaClient) -> Result<(), CountError> {
    let deadline = Instant::now() + SETTLE_MAX;
    let mut agreed: Option<((Option<u64>, u64), Instant)> = None;
    loop {
        let views = member_views(client).await;
        let now = Instant::now();
        agreed = match (views, agreed) {
            (Some(view), Some((before, since))) if view == before => {
                if now - since >= SETTLED_FOR {
                    return Ok(());
                }
                Some((before, since))
            }
            (Some(view), _) => Some((view, now)),
            (None, _) => None,
        };
        if now >= deadline {
            return Err(CountError::Timeout("the group to agree on a leader"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The (leader, term) every member reports, when they all report the same
/// and there is a leader.
async fn member_views(client: &MetaClient) -> Option<(Option<u64>, u64)> {
    let status = client.status().await.ok()?;
    let mut views = BTreeSet::new();
    for m in &status.members {
        match client.call_at(&m.addr, &MetaCall::Status).await.ok()? {
            ApiReply::Status(s) => views.insert((s.leader, s.term)),
            _ => return None,
        };
    }
    match views.len() {
        1 => views.pop_first().filter(|(leader, _)| leader.is_some()),
        _ => None,
    }
}

/// Bytes of each object's data: a CT slice.
const OBJECT_BYTES: u64 = 500 << 10;

/// Puts objects `from..to`, `writers` at a time, each writer with one put
/// outstanding.
async fn fill(
    client: &Arc<MetaClient>,
    from: u64,
    to: u64,
    writers: usize,
    done: &Arc<AtomicU64>,
) -> Result<FillStep, CountError> {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(from));
    let mut tasks = Vec::with_capacity(writers);
    for _ in 0..writers {
        let (client, next, done) = (client.clone(), next.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut packs = meta::PackCursor::default();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= to {
                    return Ok::<_, MetaError>(latencies);
                }
                let t = Instant::now();
                // As the gateway puts a CT slice: a 500 KiB range of a pack
                // (a pack opened every 131 objects per writer, timed too).
                let run = packs.next(&client, OBJECT_BYTES).await?;
                client.write(meta::put_run(pacs_keys::key(n), Some(run))).await?;
                latencies.push(nanos(t.elapsed()));
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut put_ns = Vec::with_capacity((to - from) as usize);
    for t in tasks {
        put_ns.extend(t.await??);
    }
    let seconds = started.elapsed().as_secs_f64().max(f64::MIN_POSITIVE);
    Ok(FillStep {
        from,
        to,
        seconds,
        puts_per_s: (to - from) as f64 / seconds,
        latency: LatencySummary::from_nanos(&mut put_ns),
        rss_bytes: Vec::new(),
        cpu: StretchCpu::default(),
    })
}

/// Accumulated CPU milliseconds: the machine's, the members', this
/// process's.
struct CpuSample {
    machine_ms: u64,
    members_ms: u64,
    bench_ms: u64,
}

impl CpuSample {
    fn take(members: &[MemberProcess]) -> Self {
        Self {
            machine_ms: cpu::machine_busy_ms().unwrap_or(0),
            members_ms: members.iter().filter_map(|m| cpu::process_ms(m.pid)).sum(),
            bench_ms: cpu::process_ms(std::process::id()).unwrap_or(0),
        }
    }

    fn cores_since(&self, earlier: &Self, seconds: f64) -> StretchCpu {
        let cores = |now: u64, then: u64| now.saturating_sub(then) as f64 / 1e3 / seconds;
        let machine = cores(self.machine_ms, earlier.machine_ms);
        let members_cores = cores(self.members_ms, earlier.members_ms);
        let bench_cores = cores(self.bench_ms, earlier.bench_ms);
        StretchCpu { members_cores, bench_cores, other_cores: (machine - members_cores - bench_cores).max(0.0) }
    }
}

fn members_rss(members: &[MemberProcess]) -> Result<Vec<u64>, CountError> {
    let rss = |m: &MemberProcess| proc_stat::memory(m.pid).map(|mem| mem.rss_bytes);
    members.iter().map(|m| rss(m).map_err(CountError::io(format!("memory of member {}", m.id)))).collect()
}

/// Listing latency and every member's memory and disk, with `filled`
/// objects in the bucket.
async fn checkpoint(
    client: &MetaClient,
    spec: &CountSpec,
    filled: u64,
    rng: &mut impl Rng,
) -> Result<Checkpoint, CountError> {
    let flat = list_pages(client, spec.list_pages, || {
        let after = (filled > 0).then(|| ListCursor::after_key(pacs_keys::key(rng.random_range(0..filled))));
        list_request(String::new(), None, after)
    })
    .await?;
    let delimited = list_pages(client, spec.list_pages, || {
        list_request(pacs_keys::shard_prefix(rng.random_range(0..SHARDS)), Some("/".into()), None)
    })
    .await?;
    let leader = client.status().await?.leader;
    let mut members = Vec::with_capacity(spec.members.len());
    for m in &spec.members {
        members.push(MemberSample {
            id: m.id,
            leader: leader == Some(m.id),
            memory: proc_stat::memory(m.pid).map_err(CountError::io(format!("memory of member {}", m.id)))?,
            disk: disk_use(&m.data_dir).map_err(CountError::io(format!("disk use of {}", m.data_dir.display())))?,
        });
    }
    let c = Checkpoint { objects: filled, flat, delimited, members };
    eprintln!(
        "{}: at {filled} objects: list p50 {:.2} ms, delimited p50 {:.2} ms, leader RSS {:.0} MiB",
        spec.label,
        c.flat.latency.p50_us / 1e3,
        c.delimited.latency.p50_us / 1e3,
        c.members.iter().find(|m| m.leader).map_or(0.0, |m| m.memory.rss_bytes as f64 / f64::from(1 << 20))
    );
    Ok(c)
}

fn list_request(prefix: String, delimiter: Option<String>, after: Option<ListCursor>) -> ListRequest {
    ListRequest { bucket: BUCKET.into(), prefix, delimiter, after, max_keys: LIST_MAX_KEYS, versions: false }
}

/// `pages` timed listings, one at a time, after one untimed one (the
/// connection and the leader's first quorum round).
async fn list_pages(
    client: &MetaClient,
    pages: usize,
    mut request: impl FnMut() -> ListRequest,
) -> Result<ListStats, CountError> {
    let mut latencies = Vec::with_capacity(pages);
    let mut items = 0;
    for i in 0..=pages {
        let t = Instant::now();
        let listing = match client.read(Query::List(request())).await? {
            ApiReply::Listing(listing) => listing,
            other => return Err(CountError::Unexpected { what: "a listing", answer: format!("{other:?}") }),
        };
        if i > 0 {
            latencies.push(nanos(t.elapsed()));
            items += listing.entries.len() + listing.common_prefixes.len();
        }
    }
    Ok(ListStats {
        pages,
        items_per_page: items as f64 / pages as f64,
        latency: LatencySummary::from_nanos(&mut latencies),
    })
}

/// The member process that leads now.
async fn leader_process(client: &MetaClient, members: &[MemberProcess]) -> Result<MemberProcess, CountError> {
    let leader = client.status().await?.leader;
    members
        .iter()
        .find(|m| Some(m.id) == leader)
        .cloned()
        .ok_or_else(|| CountError::Unexpected { what: "who leads", answer: format!("{leader:?}") })
}

/// Polls `check` every `every` until it yields, for at most `limit`.
pub(crate) async fn wait_for<T>(
    what: &'static str,
    every: Duration,
    limit: Duration,
    mut check: impl FnMut() -> Result<Option<T>, CountError>,
) -> Result<T, CountError> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = check()? {
            return Ok(found);
        }
        if Instant::now() >= deadline {
            return Err(CountError::Timeout(what));
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(objects: u64, step: u64, checkpoints: &[u64]) -> CountSpec {
        CountSpec {
            objects,
            writers: 1,
            step,
            checkpoints: checkpoints.iter().copied().collect(),
            list_pages: 1,
            members: vec![MemberProcess { id: 1, pid: 1, data_dir: PathBuf::new() }],
            joiner: None,
            seed: 0,
            label: String::new(),
        }
    }

    #[test]
    fn stretches_end_at_every_step_and_checkpoint() {
        let s = spec(10_000_000, 1_000_000, &[0, 1_000_000, 5_000_000, 10_000_000]);
        assert_eq!(s.stretch_ends(), (1..=10).map(|k| k * 1_000_000).collect::<Vec<_>>());
        let s = spec(1005, 250, &[0, 100, 502, 1005]);
        assert_eq!(s.stretch_ends(), [100, 250, 500, 502, 750, 1000, 1005]);
    }

    #[test]
    fn default_checkpoints_are_the_issues_fractions() {
        let c: Vec<u64> = CountSpec::default_checkpoints(10_000_000).into_iter().collect();
        assert_eq!(c, [0, 1_000_000, 5_000_000, 10_000_000]);
    }

    #[test]
    fn a_checkpoint_beyond_the_fill_is_refused() {
        assert!(spec(100, 10, &[200]).validate().is_err());
        assert!(spec(100, 10, &[0, 100]).validate().is_ok());
    }
}
