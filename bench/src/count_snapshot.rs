//! Snapshots in the count benchmark, watched from the members' snapshot
//! directories (snapshot_watch.rs) and their `/proc` entries:
//!
//! - [`BuildWatch`]: every snapshot a member builds while the bucket
//!   fills (openraft builds one every `snapshot_logs` entries, each a full
//!   copy of the state), with its time and the member's RSS meanwhile;
//! - [`quiet_build`]: a snapshot of the whole filled state with the
//!   writers stopped, asked of the leader by `MetaCall::BuildSnapshot`;
//! - [`catch_up`]: an empty member added to the filled group, timed from
//!   AddMember through receiving and installing the snapshot to applying
//!   the leader's last entry.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chuyi_metadata::client::MetaClient;
use chuyi_metadata::proto::{ApiReply, MetaCall, StatusReport};
use chuyi_metadata::state::MetaError;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::count::{wait_for, CountError, Joiner, MemberProcess};
use crate::count_report::{CatchUp, QuietBuild, SnapshotBuild};
use crate::proc_stat::{self, reset_peak};
use crate::snapshot_watch::{seconds_between, SnapshotDir, SnapshotFile};

/// How often the watchers look.
const BUILD_POLL: Duration = Duration::from_millis(200);
const CATCH_UP_POLL: Duration = Duration::from_millis(50);
/// A 10-million-object build takes a few minutes.
const QUIET_BUILD_MAX: Duration = Duration::from_secs(30 * 60);
const CATCH_UP_MAX: Duration = Duration::from_secs(60 * 60);

/// Snapshot builds of every member, recorded until [`BuildWatch::stop`].
#[derive(Debug)]
pub struct BuildWatch {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<Vec<SnapshotBuild>, CountError>>,
}

/// What the watch knows of one member.
struct Watched {
    member: MemberProcess,
    dir: SnapshotDir,
    seen: BTreeSet<String>,
    /// The largest RSS sampled while the current build runs.
    build_rss: Option<u64>,
}

impl BuildWatch {
    /// Watches `members`; `objects` is the writers' count of puts done.
    pub fn start(members: Vec<MemberProcess>, objects: Arc<AtomicU64>) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut watched: Vec<Watched> = members
                .into_iter()
                .map(|member| {
                    let dir = SnapshotDir::of_member(&member.data_dir);
                    Watched { member, dir, seen: BTreeSet::new(), build_rss: None }
                })
                .collect();
            for w in &mut watched {
                w.seen = w
                    .dir
                    .scan()
                    .map_err(CountError::io("reading a snapshot directory"))?
                    .finished
                    .into_keys()
                    .collect();
            }
            let mut builds = Vec::new();
            while !*stopped.borrow() {
                for w in &mut watched {
                    builds.extend(w.look(objects.load(Ordering::Relaxed))?);
                }
                let _ = tokio::time::timeout(BUILD_POLL, stopped.changed()).await;
            }
            Ok(builds)
        });
        Self { stop, task }
    }

    /// Stops watching; the builds seen, in order.
    pub async fn stop(self) -> Result<Vec<SnapshotBuild>, CountError> {
        let _ = self.stop.send(true);
        self.task.await?
    }
}

impl Watched {
    /// Samples RSS while a build runs; the builds finished since last time.
    fn look(&mut self, objects: u64) -> Result<Vec<SnapshotBuild>, CountError> {
        let scan = self.dir.scan().map_err(CountError::io("reading a snapshot directory"))?;
        let id = self.member.id;
        if scan.building {
            let rss = proc_stat::memory(self.member.pid).map_err(CountError::io(format!("memory of member {id}")))?;
            self.build_rss = Some(self.build_rss.unwrap_or(0).max(rss.rss_bytes));
        }
        let mut builds = Vec::new();
        for (name, file) in scan.finished {
            if self.seen.insert(name) {
                builds.push(build_of(id, objects, &file, self.build_rss.take()));
            }
        }
        Ok(builds)
    }
}

fn build_of(member: u64, objects: u64, file: &SnapshotFile, sampled_rss_bytes: Option<u64>) -> SnapshotBuild {
    SnapshotBuild {
        member,
        objects,
        bytes: file.bytes,
        build_seconds: file.build_time().map_or(f64::NAN, |d| d.as_secs_f64()),
        sampled_rss_bytes,
    }
}

/// Asks the leader for a snapshot of the whole state and waits for its
/// file; its build time and the leader's peak RSS meanwhile.
pub async fn quiet_build(
    client: &Arc<MetaClient>,
    leader: &MemberProcess,
    objects: u64,
) -> Result<QuietBuild, CountError> {
    let dir = SnapshotDir::of_member(&leader.data_dir);
    let before: BTreeSet<String> =
        dir.scan().map_err(CountError::io("reading a snapshot directory"))?.finished.into_keys().collect();
    let peak_was_reset = reset_peak(leader.pid).is_ok();
    let started = Instant::now();
    client.call_at(&leader_addr(client).await?, &MetaCall::BuildSnapshot).await?;
    let file = wait_for("the leader's snapshot", BUILD_POLL, QUIET_BUILD_MAX, || {
        let scan = dir.scan().map_err(CountError::io("reading a snapshot directory"))?;
        Ok(scan.finished.into_values().find(|f| !before.contains(&f.name)))
    })
    .await?;
    let memory = proc_stat::memory(leader.pid).map_err(CountError::io("memory of the leader"))?;
    Ok(QuietBuild {
        wait_seconds: started.elapsed().as_secs_f64(),
        build: build_of(leader.id, objects, &file, None),
        leader_peak_rss_bytes: memory.peak_rss_bytes,
        peak_was_reset,
    })
}

/// The address of the member that leads now.
async fn leader_addr(client: &MetaClient) -> Result<String, CountError> {
    let status = client.status().await?;
    status
        .members
        .iter()
        .find(|m| Some(m.id) == status.leader)
        .map(|m| m.addr.clone())
        .ok_or_else(|| CountError::Unexpected { what: "who leads", answer: format!("{:?}", status.leader) })
}

/// Adds `joiner` to the group and times its catch-up.
pub async fn catch_up(client: &Arc<MetaClient>, joiner: &Joiner) -> Result<CatchUp, CountError> {
    let leader_addr = leader_addr(client).await?;
    let started = SystemTime::now();
    let (target_tx, target_rx) = watch::channel(None);
    let progress = tokio::spawn(follow_joiner(client.clone(), joiner.clone(), target_rx));
    let added = async {
        let timed_out = add_member(client, &leader_addr, joiner).await?;
        let returned = SystemTime::now();
        Ok::<_, CountError>((timed_out, returned, leader_applied(client, &leader_addr).await?))
    };
    let (timed_out, add_returned, log_index) = match added.await {
        Ok(added) => added,
        Err(e) => {
            progress.abort();
            return Err(e);
        }
    };
    let _ = target_tx.send(Some(log_index));
    let seen = progress.await??;
    let at = |t: SystemTime| seconds_between(started, t);
    let received = seen.received.as_ref();
    Ok(CatchUp {
        member: joiner.process.id,
        add_attempts_timed_out: timed_out,
        add_returned_s: at(add_returned),
        transfers: seen.receiving.len(),
        receive_started_s: seen.receiving.values().min().map(|&t| at(t)),
        received_s: received.map(|f| at(f.modified)),
        snapshot_bytes: received.map(|f| f.bytes),
        installed_s: seen.installed.map(at),
        caught_up_s: at(seen.caught_up),
        log_index,
        memory: proc_stat::memory(joiner.process.pid).map_err(CountError::io("memory of the new member"))?,
    })
}

/// AddMember at the leader until it answers. The leader answers once the
/// learner is up to date, which takes longer than one attempt's 5 s for
/// a large state; then the client gives up on the attempt and asks again
/// (re-adding a learner is harmless). Returns the attempts that timed out.
async fn add_member(client: &MetaClient, leader_addr: &str, joiner: &Joiner) -> Result<u32, CountError> {
    let call = MetaCall::AddMember { id: joiner.process.id, addr: joiner.addr.clone() };
    let started = Instant::now();
    let mut timed_out = 0;
    loop {
        match client.call_at(leader_addr, &call).await {
            Ok(_) => return Ok(timed_out),
            Err(e) if e.is_retryable() && started.elapsed() < CATCH_UP_MAX => timed_out += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

async fn leader_applied(client: &MetaClient, leader_addr: &str) -> Result<u64, CountError> {
    Ok(status_at(client, leader_addr).await?.last_applied.unwrap_or(0))
}

async fn status_at(client: &MetaClient, addr: &str) -> Result<StatusReport, MetaError> {
    match client.call_at(addr, &MetaCall::Status).await? {
        ApiReply::Status(report) => Ok(*report),
        other => Err(MetaError::Malformed(format!("status answered with {other:?}"))),
    }
}

/// What the new member did, seen from outside.
#[derive(Debug)]
struct JoinerSeen {
    receiving: BTreeMap<String, SystemTime>,
    /// The first whole snapshot file it held (the one received).
    received: Option<SnapshotFile>,
    installed: Option<SystemTime>,
    caught_up: SystemTime,
}

/// Watches the joiner's snapshot directory and asks its status until it
/// has applied the index `target` will carry. Its status waits while an
/// install runs (the install holds the readers' lock), so a status that
/// answers at all after a snapshot appeared means the install is over.
async fn follow_joiner(
    client: Arc<MetaClient>,
    joiner: Joiner,
    mut target: watch::Receiver<Option<u64>>,
) -> Result<JoinerSeen, CountError> {
    let dir = SnapshotDir::of_member(&joiner.process.data_dir);
    let mut seen =
        JoinerSeen { receiving: BTreeMap::new(), received: None, installed: None, caught_up: SystemTime::UNIX_EPOCH };
    let deadline = Instant::now() + CATCH_UP_MAX;
    loop {
        let scan = dir.scan().map_err(CountError::io("reading the new member's snapshot directory"))?;
        seen.receiving.extend(scan.receiving);
        if seen.received.is_none() {
            seen.received = scan.finished.into_values().min_by_key(|f| f.modified);
        }
        // A member not yet added, or busy installing, does not answer:
        // look again.
        if let Ok(status) = status_at(&client, &joiner.addr).await {
            if status.snapshot.is_some() && seen.installed.is_none() {
                seen.installed = Some(SystemTime::now());
            }
            let applied = status.last_applied.unwrap_or(0);
            if target.borrow_and_update().is_some_and(|t| applied >= t) {
                seen.caught_up = SystemTime::now();
                return Ok(seen);
            }
        }
        if Instant::now() >= deadline {
            return Err(CountError::Timeout("the new member to catch up"));
        }
        tokio::time::sleep(CATCH_UP_POLL).await;
    }
}
