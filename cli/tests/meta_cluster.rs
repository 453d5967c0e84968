//! The metadata service as real processes: 3 (or 1) `chuyi meta` members
//! on localhost, killed with SIGKILL, frozen with SIGSTOP, restarted from
//! their data directories, grown and shrunk while serving.
//!
//! The property throughout: a write the service acknowledged is never lost,
//! and a member that is no longer the leader never answers a read with
//! stale data.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chuyi_chaos::cluster::eventually;
use chuyi_common::credential::{Credential, Door, Principal};
use chuyi_common::ids::DeviceClass;
use chuyi_common::secret::ClusterSecret;
use chuyi_metadata::client::MetaClient;
use chuyi_metadata::proto::{ApiReply, MetaCall, Query, StatusReport};
use chuyi_metadata::state::model::{DiskRecord, ObjectPut, Redundancy};
use chuyi_metadata::state::{ListCursor, ListRequest, Listing, MetaError, Request};

const SECRET: &str = "meta-cluster-test-secret-0123456789";

struct MemberProc {
    id: u64,
    addr: String,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

struct Cluster {
    _dir: tempfile::TempDir,
    members: Vec<MemberProc>,
    secret_file: PathBuf,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

impl Cluster {
    /// `founders` members found the group; `extra` more start empty and
    /// wait to be added.
    fn start(founders: usize, extra: usize) -> Self {
        Self::start_with(founders, extra, 20)
    }

    /// [`Self::start`] with a snapshot every `snapshot_logs` log entries.
    fn start_with(founders: usize, extra: usize, snapshot_logs: u64) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret_file = dir.path().join("secret");
        std::fs::write(&secret_file, SECRET).expect("secret");
        let addrs: Vec<String> = (0..founders + extra).map(|_| format!("127.0.0.1:{}", free_port())).collect();
        let founder_list: String =
            (0..founders).map(|i| format!("[[member]]\nid = {}\naddr = \"{}\"\n", i + 1, addrs[i])).collect();
        let mut members = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let id = i as u64 + 1;
            let config = dir.path().join(format!("meta{id}.toml"));
            let founders_here = if i < founders { founder_list.as_str() } else { "" };
            let toml = format!(
                "id = {id}\nlisten = \"{addr}\"\ndata_dir = \"{}\"\ncluster_secret_file = \"{}\"\n\
                 snapshot_logs = {snapshot_logs}\nheartbeat_timeout_ms = 3000\n\n{founders_here}",
                dir.path().join(format!("data{id}")).display(),
                secret_file.display(),
            );
            std::fs::write(&config, toml).expect("config");
            let log = dir.path().join(format!("meta{id}.log"));
            members.push(MemberProc { id, addr: addr.clone(), config, log, child: None });
        }
        let mut cluster = Self { _dir: dir, members, secret_file };
        for id in 1..=(founders + extra) as u64 {
            cluster.spawn(id);
        }
        cluster
    }

    fn member(&mut self, id: u64) -> &mut MemberProc {
        self.members.iter_mut().find(|m| m.id == id).expect("member id")
    }

    fn addr(&self, id: u64) -> String {
        self.members.iter().find(|m| m.id == id).map(|m| m.addr.clone()).expect("member id")
    }

    fn spawn(&mut self, id: u64) {
        let m = self.member(id);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&m.log).expect("log");
        let child = Process::new(env!("CARGO_BIN_EXE_chuyi"))
            .args(["meta", "--config"])
            .arg(&m.config)
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn chuyi meta");
        m.child = Some(child);
    }

    fn signal(&mut self, id: u64, signal: i32) {
        let m = self.member(id);
        let pid = m.child.as_ref().expect("running").id() as i32;
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }

    fn kill(&mut self, id: u64) {
        self.signal(id, libc::SIGKILL);
        let m = self.member(id);
        if let Some(mut child) = m.child.take() {
            let _ = child.wait();
        }
    }

    fn client(&self) -> MetaClient {
        let members = self.members.iter().map(|m| m.addr.clone()).collect();
        MetaClient::new(members, &admin()).expect("client")
    }

    /// Runs the `chuyi` binary against this cluster; returns (ok, stdout, stderr).
    fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let meta = self.members.iter().map(|m| m.addr.clone()).collect::<Vec<_>>().join(",");
        let out = Process::new(env!("CARGO_BIN_EXE_chuyi"))
            .args(["--meta", &meta, "--secret-file"])
            .arg(&self.secret_file)
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run chuyi");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for m in &self.members {
            let text = std::fs::read_to_string(&m.log).unwrap_or_default();
            let tail: Vec<_> = text.lines().rev().take(15).collect();
            all.push_str(&format!("--- member {} ---\n", m.id));
            for line in tail.into_iter().rev() {
                all.push_str(line);
                all.push('\n');
            }
        }
        all
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The administrator: the cluster secret.
fn admin() -> Credential {
    Credential::from_secret(ClusterSecret::new(SECRET.as_bytes().to_vec()).expect("secret"), Principal::admin())
}

/// The status as member `addr` sees it, if it answers.
async fn status_at(client: &MetaClient, addr: &str) -> Option<StatusReport> {
    match client.call_at(addr, &MetaCall::Status).await {
        Ok(ApiReply::Status(s)) => Some(*s),
        _ => None,
    }
}

/// The leader that every member in `ids` agrees on (and that is among them).
async fn agreed_leader(cluster: &Cluster, ids: &[u64]) -> u64 {
    let client = cluster.client();
    eventually(Duration::from_secs(20), "an agreed leader", || async {
        let mut leaders = BTreeSet::new();
        for id in ids {
            leaders.insert(status_at(&client, &cluster.addr(*id)).await?.leader?);
        }
        let leader = *leaders.iter().next()?;
        (leaders.len() == 1 && ids.contains(&leader)).then_some(leader)
    })
    .await
}

/// Nodes, a pool, a user and a bucket, so objects can be indexed.
async fn seed(client: &MetaClient) {
    for id in 1..=2 {
        let disks = vec![DiskRecord::empty(0, DeviceClass::Ssd, 1 << 40)];
        client
            .write(Request::RegisterNode {
                id,
                addrs: vec![format!("127.0.0.1:{}", 9000 + id)],
                failure_domain: String::new(),
                disks,
            })
            .await
            .expect("register node");
    }
    let pool = Request::CreatePool {
        name: "ssd".into(),
        class: DeviceClass::Ssd,
        redundancy: Redundancy::Replicated(2),
        pg_count: 16,
        separate_failure_domains: false,
    };
    client.write(pool).await.expect("pool");
    client.call(&MetaCall::CreateUser { name: "alice".into(), admin: false }).await.expect("user");
    client
        .write(Request::CreateBucket {
            name: "scans".into(),
            owner: "alice".into(),
            pool: "ssd".into(),
            object_lock: false,
        })
        .await
        .expect("bucket");
}

fn object(etag: &str) -> ObjectPut {
    ObjectPut { etag: etag.into(), content_type: "application/dicom".into(), ..ObjectPut::default() }
}

fn put(key: &str, etag: &str) -> Request {
    Request::PutObject { bucket: "scans".into(), key: key.into(), object: object(etag), condition: None }
}

/// A page of 1000 keys of the bucket, after `after`.
fn page_request(after: Option<ListCursor>) -> ListRequest {
    ListRequest {
        bucket: "scans".into(),
        prefix: String::new(),
        delimiter: None,
        after,
        max_keys: 1000,
        versions: false,
    }
}

/// Adds a page's keys to `keys`; where the next page starts, if any.
fn take_page(keys: &mut BTreeSet<String>, page: Listing) -> Option<ListCursor> {
    keys.extend(page.entries.into_iter().map(|e| e.key));
    page.next
}

/// Every key in the bucket, by paging a linearizable listing.
async fn all_keys(client: &MetaClient) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut after: Option<ListCursor> = None;
    loop {
        let req = page_request(after);
        let Ok(ApiReply::Listing(page)) = client.read(Query::List(req)).await else { panic!("listing failed") };
        after = take_page(&mut keys, page);
        if after.is_none() {
            return keys;
        }
    }
}

/// Writers put distinct keys until stopped; returns the acknowledged ones.
fn start_writers(
    client: Arc<MetaClient>,
    writers: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<String>>> {
    (0..writers)
        .map(|w| {
            let (client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("w{w}/{n:06}");
                    n += 1;
                    if client.write(put(&key, "x")).await.is_ok() {
                        acked.push(key);
                    }
                }
                acked
            })
        })
        .collect()
}

async fn cli_leader(cluster: &Cluster) -> Option<u64> {
    let (ok, out, _) = cluster.cli(&["status", "--json"]);
    if !ok {
        return None;
    }
    let report: serde_json::Value = serde_json::from_str(&out).ok()?;
    report["leader"].as_u64()
}

/// Kill -9 the leader under a stream of writes: a new leader serves within
/// seconds (and `chuyi status` shows it), every acknowledged write is still
/// there, the killed member rejoins and catches up, and after all three stop
/// and restart from disk, every acknowledged write is there again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_kill_rejoin_and_full_restart_lose_no_acknowledged_write() {
    let mut cluster = Cluster::start(3, 0);
    let client = Arc::new(cluster.client());
    seed(&client).await;
    let leader = agreed_leader(&cluster, &[1, 2, 3]).await;
    assert_eq!(cli_leader(&cluster).await, Some(leader), "chuyi status names the leader");

    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(client.clone(), 16, stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before_kill =
        status_at(&client, &cluster.addr(leader)).await.and_then(|s| s.last_log_index).expect("leader status");
    cluster.kill(leader);
    let killed_at = Instant::now();
    let survivors: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    let new_leader = agreed_leader(&cluster, &survivors).await;
    let elected_in = killed_at.elapsed();
    // openraft 0.9 with the default 1 s election timeout: a follower waits
    // out the leader's lease (2 s) and its own timeout (1–2 s) before it
    // stands; a survivor with a shorter log that stood first costs a round,
    // and then waits 4 s more before standing again. Two rounds on a loaded
    // two-core CI machine took 11.6 s, so the bound is three rounds.
    let bound = Duration::from_secs(3 * 4 + 4);
    assert!(elected_in < bound, "new leader after {elected_in:?}\n{}", cluster.logs());
    // A write through the new leader succeeds.
    client.write(put("after-kill", "y")).await.expect("write after the kill");
    // Keep writing until the new leader has compacted its log past
    // everything the killed member had: it can then only catch up from a
    // snapshot.
    let new_leader_addr = cluster.addr(new_leader);
    eventually(Duration::from_secs(30), "the log compacted past the kill", || async {
        let s = status_at(&client, &new_leader_addr).await?;
        s.purged.filter(|p| *p > before_kill).map(|_| ())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = BTreeSet::new();
    for w in writers {
        acked.extend(w.await.expect("writer"));
    }
    acked.insert("after-kill".into());
    assert!(acked.len() > 100, "only {} writes acknowledged\n{}", acked.len(), cluster.logs());
    assert_eq!(cli_leader(&cluster).await, Some(new_leader), "chuyi status shows the leader moved");

    let stored = all_keys(&client).await;
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged writes lost after the leader kill: {lost:?}");

    let now = status_at(&client, &cluster.addr(new_leader)).await.expect("leader status");

    // The killed member rejoins and catches up with the leader's log.
    cluster.spawn(leader);
    let target = now.last_applied.expect("applied");
    eventually(Duration::from_secs(30), "the killed member to catch up", || async {
        let s = status_at(&client, &cluster.addr(leader)).await?;
        (s.last_applied? >= target).then_some(())
    })
    .await;

    // Stop all three, restart from disk: everything acknowledged is there.
    for id in 1..=3 {
        cluster.kill(id);
    }
    for id in 1..=3 {
        cluster.spawn(id);
    }
    let client = cluster.client();
    let stored = all_keys(&client).await;
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged writes lost after a full restart: {lost:?}");
    client.write(put("after-restart", "z")).await.expect("write after restart");
}

/// Freeze the leader with SIGSTOP: the others elect a new leader and accept
/// a newer value; the frozen one, resumed, answers a read with the new value
/// or with NotLeader, never with the value it last knew.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_leader_resumed_does_not_serve_a_stale_read() {
    let mut cluster = Cluster::start(3, 0);
    let client = cluster.client();
    seed(&client).await;
    client.write(put("k", "old")).await.expect("first write");
    let frozen = agreed_leader(&cluster, &[1, 2, 3]).await;
    cluster.signal(frozen, libc::SIGSTOP);
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != frozen).collect();
    let new_leader = agreed_leader(&cluster, &others).await;
    let fresh = MetaClient::new(vec![cluster.addr(new_leader)], &admin()).expect("client");
    fresh.write(put("k", "new")).await.expect("write through the new leader");
    cluster.signal(frozen, libc::SIGCONT);

    let read = MetaCall::Read(Query::Object { bucket: "scans".into(), key: "k".into(), version_id: None });
    let answer = fresh.call_at(&cluster.addr(frozen), &read).await;
    match answer {
        Ok(ApiReply::Object(o)) => assert_eq!(o.data.etag, "new", "the resumed old leader served a stale read"),
        Err(MetaError::NotLeader { .. } | MetaError::Unavailable(_)) => {}
        other => panic!("unexpected answer from the resumed leader: {other:?}"),
    }
    // And through the normal client, the read is the new value.
    let Ok(ApiReply::Object(o)) =
        client.read(Query::Object { bucket: "scans".into(), key: "k".into(), version_id: None }).await
    else {
        panic!("read failed")
    };
    assert_eq!(o.data.etag, "new");
}

/// A one-member group grows to three while serving, then a member is
/// removed; writes keep succeeding throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_are_added_and_removed_while_serving() {
    let cluster = Cluster::start(1, 2);
    let client = cluster.client();
    seed(&client).await;
    for id in [2u64, 3] {
        let (ok, out, err) = cluster.cli(&["member", "add", &id.to_string(), &cluster.addr(id)]);
        assert!(ok, "member add {id}: {out} {err}");
        client.write(put(&format!("after-add-{id}"), "x")).await.expect("write after add");
    }
    let status = client.status().await.expect("status");
    assert_eq!(status.members.iter().filter(|m| m.voter).count(), 3, "{status:?}");
    let leader = status.leader.expect("leader");
    let follower = [1u64, 2, 3].into_iter().find(|id| *id != leader).expect("a follower");
    let (ok, out, err) = cluster.cli(&["member", "remove", &follower.to_string()]);
    assert!(ok, "member remove: {out} {err}");
    client.write(put("after-remove", "x")).await.expect("write after remove");
    let status = client.status().await.expect("status");
    assert!(status.members.iter().all(|m| m.id != follower), "{status:?}");
    let keys = all_keys(&client).await;
    for key in ["after-add-2", "after-add-3", "after-remove"] {
        assert!(keys.contains(key), "{key} missing");
    }
}

/// A member added long after the log was compacted (20 entries kept, 2000
/// writes made) can only catch up from a snapshot, which the leader streams
/// from its snapshot file and the member installs from the file it received.
/// Then the old leader is SIGKILLed: the two members that have the state
/// only through that snapshot still hold every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_members_catch_up_from_a_streamed_snapshot() {
    use futures::StreamExt;
    let mut cluster = Cluster::start(1, 2);
    let client = cluster.client();
    seed(&client).await;
    const KEYS: usize = 2000;
    let writes = futures::stream::iter(0..KEYS).map(|i| {
        let client = &client;
        async move { client.write(put(&format!("k{i:05}"), "x")).await }
    });
    let written: Vec<_> = writes.buffer_unordered(32).collect().await;
    assert!(written.iter().all(Result::is_ok), "every write acknowledged");
    // Snapshots are built by a timer (raft/snapshots.rs): wait for one, so
    // the log's start is purged and a new member can only catch up from it.
    let leader_addr = cluster.addr(1);
    eventually(Duration::from_secs(30), "a snapshot of the writes", || async {
        let status = status_at(&client, &leader_addr).await?;
        status.purged.is_some().then_some(())
    })
    .await;
    for id in [2u64, 3] {
        let (ok, out, err) = cluster.cli(&["member", "add", &id.to_string(), &cluster.addr(id)]);
        assert!(ok, "member add {id}: {out} {err}\n{}", cluster.logs());
    }
    let installed = |id: u64| {
        let log = cluster.members.iter().find(|m| m.id == id).map(|m| m.log.clone()).expect("member");
        std::fs::read_to_string(log).unwrap_or_default().contains("snapshot installed")
    };
    eventually(Duration::from_secs(30), "both new members installing a snapshot", || async {
        (installed(2) && installed(3)).then_some(())
    })
    .await;
    cluster.kill(1);
    let client = cluster.client();
    let keys = all_keys(&client).await;
    let missing = (0..KEYS).map(|i| format!("k{i:05}")).filter(|k| !keys.contains(k)).count();
    assert_eq!(missing, 0, "keys missing on the members that caught up by snapshot\n{}", cluster.logs());
}

/// A member catches up from a snapshot of a state larger than the memory
/// it uses: 2000 objects of 200 KiB of metadata each (400 MiB of state),
/// a snapshot of most of it, then a new member. Its peak RSS stays below
/// the snapshot's size (nothing holds the state whole), and it serves
/// every object once the old leader is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_catches_up_from_a_snapshot_larger_than_its_memory() {
    use futures::StreamExt;
    let mut cluster = Cluster::start_with(1, 1, 800);
    let client = cluster.client();
    seed(&client).await;
    const KEYS: usize = 2000;
    let note = "n".repeat(200 << 10);
    let writes = futures::stream::iter(0..KEYS).map(|i| {
        let (client, note) = (&client, &note);
        let mut object = object("big");
        object.user_meta = vec![("note".into(), note.clone())];
        async move {
            client
                .write(Request::PutObject { bucket: "scans".into(), key: format!("k{i:05}"), object, condition: None })
                .await
        }
    });
    let written: Vec<_> = writes.buffer_unordered(4).collect().await;
    assert!(written.iter().all(Result::is_ok), "every write acknowledged");
    let snapshots = cluster._dir.path().join("data1/snapshots");
    let snapshot_bytes = eventually(Duration::from_secs(60), "the leader's snapshot", || async {
        let files = std::fs::read_dir(&snapshots).ok()?;
        let sizes: Vec<u64> = files
            .flatten()
            .filter(|f| f.path().extension().is_some_and(|e| e == "snap"))
            .filter_map(|f| f.metadata().ok().map(|m| m.len()))
            .collect();
        sizes.into_iter().max().filter(|&b| b > 300 << 20)
    })
    .await;
    let (ok, out, err) = cluster.cli(&["member", "add", "2", &cluster.addr(2)]);
    assert!(ok, "member add: {out} {err}\n{}", cluster.logs());
    let log = cluster.members.iter().find(|m| m.id == 2).map(|m| m.log.clone()).expect("member");
    eventually(Duration::from_secs(120), "the new member installing the snapshot", || async {
        std::fs::read_to_string(&log).unwrap_or_default().contains("snapshot installed").then_some(())
    })
    .await;
    let pid = cluster.members.iter().find(|m| m.id == 2).and_then(|m| m.child.as_ref()).expect("running").id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM");
    eprintln!("new member's peak RSS {peak_kib} KiB; snapshot {snapshot_bytes} bytes");
    assert!(
        peak_kib * 1024 < snapshot_bytes,
        "peak RSS {peak_kib} KiB while installing a snapshot of {snapshot_bytes} bytes"
    );
    // The snapshot covers only part of the log (a timer builds it): the
    // entries after it are still being replicated when the install is
    // logged. Member 2 is stopped only once it has applied all the leader
    // has.
    let target = status_at(&client, &cluster.addr(1)).await.and_then(|s| s.last_applied).expect("leader applied");
    eventually(Duration::from_secs(60), "the new member applying the leader's log", || async {
        (status_at(&client, &cluster.addr(2)).await?.last_applied? >= target).then_some(())
    })
    .await;
    // What member 2 holds, read from its own store once it is stopped
    // (alone it is no quorum to ask): every object, from the snapshot and
    // the log after it.
    cluster.kill(2);
    let (_, state) = chuyi_metadata::store::open(&cluster._dir.path().join("data2")).expect("member 2's store");
    let reader = state.reader();
    let mut keys = BTreeSet::new();
    let mut after: Option<ListCursor> = None;
    loop {
        after = take_page(&mut keys, reader.list(&page_request(after)).expect("list"));
        if after.is_none() {
            break;
        }
    }
    let missing = (0..KEYS).map(|i| format!("k{i:05}")).filter(|k| !keys.contains(k)).count();
    assert_eq!(missing, 0, "keys missing on the member that caught up by snapshot\n{}", cluster.logs());
}

/// Bad input through the real interfaces: precise errors, nothing changed,
/// nothing crashed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_get_precise_errors_and_change_nothing() {
    let cluster = Cluster::start(1, 0);
    let client = cluster.client();
    seed(&client).await;
    let (ok, _, err) = cluster.cli(&["pool", "create", "ssd", "--class", "ssd", "--pg-count", "8"]);
    assert!(!ok && err.contains("pool \"ssd\" already exists"), "{err}");
    let (ok, _, err) = cluster.cli(&["pool", "create", "p2", "--class", "floppy"]);
    assert!(!ok && err.contains("unknown device class"), "{err}");
    let (ok, _, err) = cluster.cli(&["pool", "create", "p3", "--class", "hdd"]);
    assert!(!ok && err.contains("no up hdd disk"), "{err}");
    let huge = Request::CreateVolume {
        name: "vm".into(),
        pool: "ssd".into(),
        size_bytes: 1 << 50,
        chunk_size_bytes: 4 << 20,
        wrapped_key: vec![],
    };
    assert!(matches!(client.write(huge).await, Err(MetaError::VolumeTooLarge { .. })));
    // Leases: a second holder is refused, a stale lease id cannot renew.
    let vol = Request::CreateVolume {
        name: "vm".into(),
        pool: "ssd".into(),
        size_bytes: 1 << 30,
        chunk_size_bytes: 4 << 20,
        wrapped_key: vec![],
    };
    client.write(vol).await.expect("volume");
    let lease = match client
        .write(Request::AcquireLease { volume: "vm".into(), holder: "fe-a".into(), ttl_ms: 60_000 })
        .await
    {
        Ok(chuyi_metadata::state::Reply::Lease(l)) => l,
        other => panic!("{other:?}"),
    };
    let other = Request::AcquireLease { volume: "vm".into(), holder: "fe-b".into(), ttl_ms: 60_000 };
    assert!(matches!(client.write(other).await, Err(MetaError::LeaseHeld { .. })));
    let stale =
        Request::RenewLease { volume: "vm".into(), holder: "fe-a".into(), lease_id: lease.id + 1, ttl_ms: 60_000 };
    assert!(matches!(client.write(stale).await, Err(MetaError::StaleLease { .. })));
    let dup = Request::CreateVolume {
        name: "vm".into(),
        pool: "ssd".into(),
        size_bytes: 1 << 30,
        chunk_size_bytes: 4 << 20,
        wrapped_key: vec![],
    };
    assert!(matches!(client.write(dup).await, Err(MetaError::AlreadyExists { .. })));

    let (ok, out, _) = cluster.cli(&["pool", "list", "--json"]);
    assert!(ok);
    let pools: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(pools.as_array().map(Vec::len), Some(1), "a refused create added a pool: {out}");

    // A user's secret is printed once and never listed.
    let (ok, out, err) = cluster.cli(&["user", "create", "bob", "--json"]);
    assert!(ok, "{err}");
    let created: serde_json::Value = serde_json::from_str(&out).expect("json");
    let secret_key = created["secret_key"].as_str().expect("secret").to_string();
    let (ok, listed, _) = cluster.cli(&["user", "list", "--json"]);
    assert!(ok && listed.contains("bob") && !listed.contains(&secret_key));
    let (ok, _, err) = cluster.cli(&["user", "create", "bob"]);
    assert!(!ok && err.contains("user \"bob\" already exists"), "{err}");
    let (ok, _, _) = cluster.cli(&["user", "delete", "bob"]);
    assert!(ok);

    // Garbage on the wire: a precise error, and the member still serves.
    use chuyi_common::rpc::{Endpoint, RpcClient, RpcConfig};
    use chuyi_metadata::proto::{ApiResult, Channel, Envelope, META_PROTOCOL_VERSION};
    let endpoint: Endpoint = cluster.addr(1).parse().expect("endpoint");
    let raw: RpcClient<Envelope, Envelope> =
        RpcClient::connect(&endpoint, &admin().identity(Door::Meta), RpcConfig::default()).await.expect("connect");
    for (version, payload) in [(META_PROTOCOL_VERSION, vec![0xFFu8; 64]), (99, vec![5])] {
        let (env, reply) = raw.call(&Envelope { version, channel: Channel::Api }, payload.into()).await.expect("reply");
        let reply: ApiResult = chuyi_metadata::proto::decode(env, &reply).expect("decodable reply");
        assert!(matches!(reply, Err(MetaError::Malformed(_))), "{reply:?}");
    }
    client.write(put("still-serving", "x")).await.expect("member still serves");
}

/// A real `chuyi node` heartbeating to the cluster under test.
fn spawn_node(cluster: &Cluster, id: u32) -> Child {
    let dir = cluster._dir.path();
    let config = dir.join(format!("node{id}.toml"));
    let toml = format!(
        "node_id = {id}\nlisten = \"127.0.0.1:{}\"\ncluster_secret_file = \"{}\"\nio_engine = \"pread\"\n\
         meta = [\"{}\"]\nfailure_domain = \"rack{id}\"\n\n[[disk]]\nid = 0\npath = \"{}\"\nclass = \"ssd\"\ncapacity = \"64MiB\"\n",
        free_port(),
        cluster.secret_file.display(),
        cluster.addr(1),
        dir.join(format!("node{id}-disk")).display(),
    );
    std::fs::write(&config, toml).expect("node config");
    let log = std::fs::File::create(dir.join(format!("node{id}.log"))).expect("log");
    Process::new(env!("CARGO_BIN_EXE_chuyi"))
        .args(["node", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn chuyi node")
}

/// Three real storage nodes heartbeat, which writes nothing to the Raft log
/// while nothing changes; one is killed. Within the heartbeat
/// timeout (3 s here) it is marked down, its PGs move to the survivors with
/// an epoch bump, and a watcher blocked on the old epoch hears of it at
/// once, not at its 20 s timeout. Restarted, the node comes back up and the
/// leader moves PGs back onto it a few at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_node_is_marked_down_its_pgs_move_and_watchers_learn_at_once() {
    let cluster = Cluster::start(1, 0);
    let client = cluster.client();
    let mut nodes: Vec<Child> = (1..=3).map(|id| spawn_node(&cluster, id)).collect();
    eventually(Duration::from_secs(20), "three registered nodes", || async {
        let map = client.read(Query::Map).await.ok()?;
        let ApiReply::Map(map) = map else { return None };
        (map.nodes.len() == 3).then_some(())
    })
    .await;
    let (ok, out, err) = cluster.cli(&["pool", "create", "ssd", "--class", "ssd", "--pg-count", "32"]);
    assert!(ok, "{out}{err}");
    let ApiReply::Map(before) = client.read(Query::Map).await.expect("map") else { panic!() };
    assert!(before.pgs.iter().any(|pg| pg.replicas.iter().any(|d| d.node == 3)), "node 3 holds replicas");

    // Heartbeats that change nothing are not written to the log: three
    // nodes beating every second for 4 s add 12 entries when each is
    // committed, and none when only the leader notes them.
    let log_index = || {
        let (ok, out, _) = cluster.cli(&["status", "--json"]);
        assert!(ok, "{out}");
        let status: serde_json::Value = serde_json::from_str(&out).expect("status json");
        status["last_log_index"].as_u64().expect("last_log_index")
    };
    let first = log_index();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let grown = log_index() - first;
    println!("log entries in 4 s of idle heartbeats: {grown}");
    assert!(grown < 3, "idle heartbeats wrote {grown} log entries in 4 s");

    let watcher = {
        let client = cluster.client();
        let epoch = before.epoch;
        tokio::spawn(async move {
            let mut known = epoch;
            loop {
                let map = client.watch_map(known, Duration::from_secs(20)).await.expect("watch");
                if map.nodes.iter().any(|n| n.id == 3 && n.state == chuyi_metadata::state::model::NodeState::Down) {
                    return (map, Instant::now());
                }
                known = map.epoch;
            }
        })
    };
    let mut victim = nodes.remove(2);
    victim.kill().expect("kill node 3");
    let killed_at = Instant::now();
    let _ = victim.wait();
    let (after, seen_at) =
        tokio::time::timeout(Duration::from_secs(15), watcher).await.expect("watch in time").expect("watcher");
    let took = seen_at - killed_at;
    assert!(took < Duration::from_secs(7), "node down seen after {took:?} (timeout 3 s)");
    assert!(after.epoch > before.epoch);
    for pg in &after.pgs {
        assert!(pg.replicas.iter().all(|d| d.node != 3), "PG {} still on the down node", pg.pg);
        assert_eq!(pg.replicas.len(), 2, "PG {} was not given a new secondary", pg.pg);
        let was = &before.pgs.iter().find(|b| b.pg == pg.pg).expect("same PG").replicas;
        if !was.iter().any(|d| d.node == 3) {
            assert_eq!(&pg.replicas, was, "PG {} moved though node 3 did not hold it", pg.pg);
        } else if was[0].node != 3 {
            assert_eq!(pg.replicas[0], was[0], "PG {}: the surviving primary stays primary", pg.pg);
        }
    }
    let (ok, out, _) = cluster.cli(&["status", "--json"]);
    assert!(ok);
    let status: serde_json::Value = serde_json::from_str(&out).expect("status json");
    let pool = &status["pools"][0];
    assert_eq!(pool["clean"].as_u64().unwrap_or(0) + pool["recovering"].as_u64().unwrap_or(0), 32, "{out}");
    // The new secondaries are backfilled by their primaries (empty here, so
    // at once) and reported: every PG ends clean.
    eventually(Duration::from_secs(20), "every PG clean after the move", || async {
        let (ok, out, _) = cluster.cli(&["status", "--json"]);
        let status: serde_json::Value = serde_json::from_str(&out).ok()?;
        (ok && status["pools"][0]["clean"].as_u64() == Some(32)).then_some(())
    })
    .await;

    // Back up: the node rejoins and rebalancing gives it PGs again.
    nodes.push(spawn_node(&cluster, 3));
    eventually(Duration::from_secs(30), "PGs back on node 3", || async {
        let ApiReply::Map(map) = client.read(Query::Map).await.ok()? else { return None };
        let on_3 = map.pgs.iter().filter(|pg| pg.replicas.iter().any(|d| d.node == 3)).count();
        (on_3 >= 8).then_some(())
    })
    .await;
    for mut n in nodes {
        let _ = n.kill();
        let _ = n.wait();
    }
}
