//! Volume snapshots against a real cluster through real NBD clients:
//! `chuyi snapshot` taken while a frontend serves the volume, read back
//! read-only from the `VOLUME@SNAPSHOT` export with qemu-io, rolled back
//! (refused while attached), and deleted, with the nodes' clone slots
//! counted at each step.

use std::time::Duration;

use chuyi_chaos::cluster::{Spec, TestCluster};
use chuyi_chaos::frontend::export_name;

fn qemu_io(uri: &str, commands: &[&str]) -> (bool, String) {
    let mut args = vec!["-f", "raw"];
    if uri.contains('@') {
        args.push("-r");
    }
    for c in commands {
        args.extend(["-c", c]);
    }
    args.push(uri);
    let out = std::process::Command::new("qemu-io").args(&args).output().expect("qemu-io");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // qemu-io exits 0 after a failed command: its output says so.
    (out.status.success() && !text.contains("failed") && !text.contains("Pattern verification"), text)
}

async fn io(uri: String, commands: &'static [&'static str]) -> (bool, String) {
    tokio::task::spawn_blocking(move || qemu_io(&uri, commands)).await.expect("qemu-io")
}

/// A clean cluster with volume `volume` of `size` ("64M"), an NBD frontend
/// as `holder` on a free port, and the volume's chunk owner id.
async fn serve(volume: &str, size: &str, holder: &str) -> (TestCluster, std::net::SocketAddr, u64) {
    let cluster = TestCluster::start(Spec::default()).await.expect("cluster");
    cluster.create_pool().await.expect("pool");
    cluster.wait_clean(Duration::from_secs(30)).await.expect("clean");
    let (ok, out, err) = cluster.cli(&["volume", "create", volume, "--size", size]).expect("chuyi");
    assert!(ok, "{out}{err}");
    let owner = owner_of(&cluster, volume);
    let client = cluster.client(Duration::from_secs(60)).await.expect("client");
    let server = chuyi_nbd::server::NbdServer::new(client, holder.into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(server.serve(listener));
    (cluster, addr, owner)
}

fn owner_of(cluster: &TestCluster, volume: &str) -> u64 {
    let (_, info, _) = cluster.cli(&["--json", "volume", "info", volume]).expect("chuyi");
    serde_json::from_str::<serde_json::Value>(&info).expect("json")["id"].as_u64().expect("id")
}

/// Runs `chuyi ARGS` until it succeeds: refused only while the frontend
/// still holds the volume's lease for a moment after its last client left.
fn retry(cluster: &TestCluster, args: &[&str]) -> String {
    for _ in 0..50 {
        let (ok, out, err) = cluster.cli(args).expect("chuyi");
        if ok {
            return out;
        }
        assert!(err.contains("attached") || err.contains("lease"), "{err}");
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{args:?} never succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshots_keep_their_view_through_nbd_rollback_and_delete() {
    let (cluster, addr, owner) = serve("disk", "64M", "frontend-snap").await;
    let cli = |args: &[&str]| cluster.cli(args).expect("run chuyi");
    let uri = |export: &str| format!("nbd://{addr}/{export}");

    let (ok, out) = io(uri("disk"), &["write -P 0xaa 0 16M"]).await;
    assert!(ok, "{out}");
    let heads = cluster.chunks_of(owner).await.expect("chunks");
    assert_eq!(heads, 8, "4 chunks on 2 replicas");
    let (ok, out, err) = cli(&["snapshot", "create", "disk", "s1"]);
    assert!(ok && out.contains("id     1"), "{out}{err}");
    assert_eq!(cluster.chunks_of(owner).await.expect("chunks"), heads, "a snapshot copies nothing");
    let (ok, out) = io(uri("disk"), &["write -P 0xbb 4M 4M", "write -P 0xcc 40M 4k"]).await;
    assert!(ok, "{out}");
    // Chunk 1 kept in a clone on each replica; chunk 10 new.
    assert_eq!(cluster.chunks_of(owner).await.expect("chunks"), heads + 2 + 2);

    let (ok, out) = io(uri("disk@s1"), &["read -P 0xaa 0 16M", "read -P 0 40M 4k"]).await;
    assert!(ok, "snapshot s1 reads as taken: {out}");
    let (ok, out) = io(uri("disk"), &["read -P 0xaa 0 4M", "read -P 0xbb 4M 4M", "read -P 0xcc 40M 4k"]).await;
    assert!(ok, "the live volume has the new writes: {out}");
    let (ok, out) = io(uri("disk@s1"), &["write -P 0x11 0 4k"]).await;
    assert!(!ok && (out.to_lowercase().contains("read-only") || out.contains("Operation not permitted")), "{out}");
    let (ok, out) = io(uri("disk@nope"), &["read 0 4k"]).await;
    assert!(!ok, "a missing snapshot is no export: {out}");

    let (ok, out, err) = cli(&["snapshot", "create", "disk", "s2"]);
    assert!(ok, "{out}{err}");
    // What changed, from the clones: chunk 1 rewritten whole, 4 KiB of
    // chunk 10; nothing since s2.
    let diff = |args: &[&str]| {
        let (ok, out, err) = cli(args);
        assert!(ok, "{out}{err}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        let ranges = v["ranges"].as_array().expect("ranges").iter();
        ranges
            .map(|r| (r["offset"].as_u64().expect("offset"), r["length"].as_u64().expect("length")))
            .collect::<Vec<_>>()
    };
    let changed = vec![(4 << 20, 4 << 20), (40 << 20, 4096)];
    assert_eq!(diff(&["--json", "snapshot", "diff", "disk", "s1"]), changed);
    assert_eq!(diff(&["--json", "snapshot", "diff", "disk", "s1", "s2"]), changed);
    assert_eq!(diff(&["--json", "snapshot", "diff", "disk", "s2"]), vec![]);
    let (_, shown, _) = cli(&["snapshot", "diff", "disk", "s1"]);
    assert!(shown.contains("disk@s1 -> now:") && shown.contains("changed in 2 ranges"), "{shown}");
    let (ok, _, err) = cli(&["snapshot", "create", "disk", "s2"]);
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = cli(&["snapshot", "create", "disk", "bad@name"]);
    assert!(!ok && err.contains("snapshot name"), "{err}");
    let (_, list, _) = cli(&["--json", "snapshot", "list", "disk"]);
    let list: serde_json::Value = serde_json::from_str(&list).expect("json");
    assert_eq!(list["seq"], 2);
    let names: Vec<&str> =
        list["snapshots"].as_array().expect("array").iter().map(|s| s["name"].as_str().unwrap_or("")).collect();
    assert_eq!(names, ["s1", "s2"]);

    // Rollback is refused while a connection holds the volume.
    let (held, size, _) = export_name(addr, "disk").await.expect("attach");
    assert_eq!(size, 64 << 20);
    let (ok, _, err) = cli(&["snapshot", "rollback", "disk", "s1"]);
    assert!(!ok && err.contains("is attached by frontend-snap"), "{err}");
    drop(held);
    let rolled = retry(&cluster, &["snapshot", "rollback", "disk", "s1"]);
    assert!(rolled.contains("rolled back to snapshot s1"), "{rolled}");
    let (ok, out) = io(uri("disk"), &["read -P 0xaa 0 16M", "read -P 0 40M 4k"]).await;
    assert!(ok, "the volume is s1 again: {out}");
    let (ok, out) = io(uri("disk@s2"), &["read -P 0xaa 0 4M", "read -P 0xbb 4M 4M", "read -P 0xcc 40M 4k"]).await;
    assert!(ok, "s2 keeps its view after the rollback: {out}");

    // s1's own clone goes with it; s2's last.
    let before = cluster.chunks_of(owner).await.expect("chunks");
    let (ok, out, err) = cli(&["snapshot", "delete", "disk", "s1"]);
    assert!(ok && out.contains("1 left"), "{out}{err}");
    assert_eq!(cluster.chunks_of(owner).await.expect("chunks"), before - 2, "clone of s1 freed on both replicas");
    let (ok, out) = io(uri("disk@s2"), &["read -P 0xbb 4M 4M"]).await;
    assert!(ok, "{out}");
    let (ok, _, err) = cli(&["snapshot", "rename", "disk", "s2", "last"]);
    assert!(ok, "{err}");
    // An export of a snapshot closes once the snapshot is deleted.
    let (mut reader, _, flags) = export_name(addr, "disk@last").await.expect("export");
    assert_ne!(flags & 2, 0, "a snapshot's export is read-only");
    let (ok, out, err) = cli(&["snapshot", "delete", "disk", "last"]);
    assert!(ok && out.contains("0 left"), "{out}{err}");
    {
        use tokio::io::AsyncReadExt;
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut rest)).await;
        assert!(matches!(closed, Ok(Ok(_)) | Ok(Err(_))), "the export of a deleted snapshot stays open");
    }
    // Heads only: chunks 0-3 and the (zeroed) chunk 10.
    assert_eq!(cluster.chunks_of(owner).await.expect("chunks"), heads + 2);
    let (ok, out) = io(uri("disk"), &["read -P 0xaa 0 16M"]).await;
    assert!(ok, "{out}");

    // Snapshots wait in the recycle bin with their volume and come back
    // with it; a purge frees the clones with the chunks.
    let (ok, out, err) = cli(&["snapshot", "create", "disk", "kept"]);
    assert!(ok, "{out}{err}");
    let (ok, out) = io(uri("disk"), &["write -P 0xdd 0 4M"]).await;
    assert!(ok, "{out}");
    retry(&cluster, &["volume", "delete", "disk"]);
    let (ok, list, err) = cli(&["snapshot", "list", "disk"]);
    assert!(ok && list.contains("kept"), "in the bin, its snapshots are listed: {list}{err}");
    let (ok, out, err) = cli(&["trash", "restore", "disk"]);
    assert!(ok, "{out}{err}");
    let (ok, out) = io(uri("disk@kept"), &["read -P 0xaa 0 4M"]).await;
    assert!(ok, "the snapshot came back with its volume: {out}");
    retry(&cluster, &["volume", "delete", "disk", "--now"]);
    assert_eq!(cluster.chunks_of(owner).await.expect("chunks"), 0, "chunks and clones freed on every node");
    let (ok, _, _) = cli(&["snapshot", "list", "disk"]);
    assert!(!ok, "the snapshots went with the purge");
}

/// What qemu-io writes to block `i` (4 KiB at `i` × [`STRIDE`]).
fn pattern(i: usize) -> u8 {
    (i % 250) as u8 + 1
}

const STRIDE: u64 = 64 << 10;

/// Both replicas of every chunk of `owner` hold the same chunk ids (clones
/// included) with the same bytes, and serve snapshot `snap` alike; asked
/// again on a newer map while PGs still move after a restart.
async fn replicas_agree(cluster: &TestCluster, owner: u64, chunks: u64, snap: u32) {
    for _ in 0..20 {
        cluster.wait_clean(Duration::from_secs(60)).await.expect("clean");
        match compare_replicas(cluster, owner, chunks, snap).await {
            Ok(()) => return,
            Err(moved) => eprintln!("asking again: {moved}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the PGs never stayed put long enough to compare replicas");
}

async fn compare_replicas(cluster: &TestCluster, owner: u64, chunks: u64, snap: u32) -> Result<(), String> {
    use bytes::Bytes;
    use chuyi_common::ids::ChunkId;
    use chuyi_common::proto::chunk::{ChunkRequest, ChunkResponse, PgOp};
    let map = cluster.map().await.expect("map");
    let mut held = std::collections::BTreeMap::<chuyi_common::ids::NodeId, Vec<ChunkId>>::new();
    for node in map.nodes.iter().map(|n| n.id) {
        let ids = cluster.list_chunks(node).await.expect("list");
        held.insert(node, ids.into_iter().filter(|c| c.owner == owner).collect());
    }
    for index in 0..chunks {
        let chunk = ChunkId::new(owner, index);
        let (_, pg) = map.locate(chunk).expect("placed");
        let mut views = Vec::new();
        let mut copies = Vec::new();
        for replica in &pg.replicas {
            let request = ChunkRequest::Pg {
                chunk,
                epoch: pg.epoch,
                op: PgOp::ReadSnap { offset: 0, len: 4 << 20, snap },
                forwarded: true,
                fence: None,
                order: None,
            };
            let rpc = cluster.node_rpc(replica.node).await.expect("rpc");
            match rpc.call(&request, Bytes::new()).await.expect("call") {
                (ChunkResponse::ReadDone { .. }, data) => views.push(data),
                (other, _) => return Err(format!("node {} answered {other:?}", replica.node)),
            }
            let mine: Vec<ChunkId> = held[&replica.node].iter().copied().filter(|c| c.head() == chunk).collect();
            let mut bytes = Vec::new();
            for id in &mine {
                bytes.push(cluster.read_replica(*replica, *id).await.expect("raw read"));
            }
            copies.push((mine, bytes));
        }
        assert!(views.windows(2).all(|w| w[0] == w[1]), "replicas of {chunk} differ in snapshot {snap}");
        assert!(copies.windows(2).all(|w| w[0] == w[1]), "replicas of {chunk} hold different clones or bytes");
    }
    Ok(())
}

/// A snapshot taken while qemu-io writes numbered blocks one after another
/// (and fio writes 4 KiB at random at queue depth 16 beside them, then
/// verifies its data) holds exactly a prefix of qemu-io's writes: every
/// write acknowledged before `chuyi snapshot create` began, none begun
/// after it returned. A storage node SIGKILLed during the first writes
/// after the snapshot and brought back changes none of it, and once
/// backfill has run both replicas of every chunk hold the same clones and
/// serve the snapshot alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_under_writes_holds_a_prefix_through_a_node_kill() {
    let (mut cluster, addr, owner) = serve("busy", "64M", "frontend-busy").await;
    let uri = format!("nbd://{addr}/busy");

    let fio_uri = uri.clone();
    let fio = std::thread::spawn(move || {
        let out = std::process::Command::new("fio")
            .args([
                "--name=beside",
                "--ioengine=nbd",
                &format!("--uri={fio_uri}"),
                "--rw=randwrite",
                "--bs=4k",
                "--offset=32M",
                "--size=32M",
                "--iodepth=16",
                "--rate_iops=1500",
                "--verify=crc32c",
                "--do_verify=1",
                // No verify-state file left in the working directory.
                "--verify_state_save=0",
            ])
            .output()
            .expect("fio");
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    });
    const WRITES: usize = 400;
    let writer_uri = uri.clone();
    let writer = std::thread::spawn(move || {
        let mut times = Vec::new();
        for i in 0..WRITES {
            let command = format!("write -P {} {} 4k", pattern(i), i as u64 * STRIDE);
            let started = std::time::Instant::now();
            let (ok, out) = qemu_io(&writer_uri, &[&command]);
            assert!(ok, "write {i}: {out}");
            times.push((started, std::time::Instant::now()));
            std::thread::sleep(Duration::from_millis(5));
        }
        times
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t0 = std::time::Instant::now();
    let (ok, out, err) = cluster.cli(&["snapshot", "create", "busy", "mid"]).expect("chuyi");
    let t1 = std::time::Instant::now();
    assert!(ok, "{out}{err}");
    // The first writes after the snapshot make clones: kill a node then.
    let victim = cluster.map().await.expect("map").nodes[1].id;
    cluster.kill_node(victim).expect("kill");
    let times = tokio::task::spawn_blocking(move || writer.join().expect("writer")).await.expect("join");
    let (fio_ok, fio_out) = tokio::task::spawn_blocking(move || fio.join().expect("fio")).await.expect("join");
    assert!(fio_ok, "fio's writes verify after the snapshot and the kill: {fio_out}");
    cluster.restart_node(victim).expect("restart");
    cluster.wait_clean(Duration::from_secs(120)).await.expect("clean after backfill");

    // The snapshot, copied out through its read-only export.
    let image = tempfile::NamedTempFile::new().expect("temp");
    let path = image.path().to_string_lossy().into_owned();
    let from = format!("{uri}@mid");
    let copied = std::process::Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "raw", &from, &path])
        .output()
        .expect("qemu-img");
    assert!(copied.status.success(), "{}", String::from_utf8_lossy(&copied.stderr));
    let snap = std::fs::read(&path).expect("image");
    let written: Vec<bool> = (0..WRITES)
        .map(|i| {
            let block = &snap[i * STRIDE as usize..i * STRIDE as usize + 4096];
            if block.iter().all(|&b| b == pattern(i)) {
                true
            } else {
                assert!(block.iter().all(|&b| b == 0), "block {i} is neither its write nor zeros");
                false
            }
        })
        .collect();
    let k = written.iter().take_while(|&&w| w).count();
    assert!(written[k..].iter().all(|&w| !w), "the snapshot holds writes {written:?}: not a prefix");
    let acked_before = times.iter().filter(|(_, done)| *done < t0).count();
    let begun_before = times.iter().filter(|(start, _)| *start < t1).count();
    assert!(
        acked_before <= k && k <= begun_before,
        "snapshot holds {k} writes; {acked_before} were acknowledged before it began, {begun_before} begun before it returned"
    );
    assert!(acked_before > 0 && k < WRITES, "the snapshot fell inside the writes ({acked_before}, {k})");
    let (ok, out) = io(uri.clone(), &["read -P 150 25536k 4k"]).await;
    assert!(ok, "the live volume has the last write (block 399, pattern 150): {out}");
    replicas_agree(&cluster, owner, 16, 1).await;
}

/// Schedules run by volume frontends: each slot is taken once however many
/// frontends ask, the newest `--keep` of a schedule's snapshots are kept,
/// a slot missed while nobody ran the schedules is taken once on return,
/// a pool's schedule reaches its volumes, and a frontend may take and
/// expire scheduled snapshots but delete no other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schedules_take_each_slot_once_and_keep_the_newest() {
    use chuyi_client::snapshot::schedules_once;
    use chuyi_meta_api::{ask, order, MetaError};
    let cluster = TestCluster::start(Spec::default()).await.expect("cluster");
    cluster.create_pool().await.expect("pool");
    cluster.wait_clean(Duration::from_secs(30)).await.expect("clean");
    let cli = |args: &[&str]| cluster.cli(args).expect("run chuyi");
    let (ok, out, err) = cli(&["volume", "create", "sched", "--size", "16M"]);
    assert!(ok, "{out}{err}");
    let (ok, _, err) = cli(&["snapshot", "schedule", "sched", "--every", "2s", "--keep", "2"]);
    assert!(!ok && err.contains("15m or more"), "{err}");
    let (ok, out, err) = cli(&["snapshot", "schedule", "sched", "--every", "2s", "--keep", "2", "--short"]);
    assert!(ok && out.contains("a snapshot every 2s, the newest 2 kept"), "{out}{err}");
    let frontend = chuyi_chaos::cluster::frontend("frontend-sched");
    let a = cluster.client_as(&frontend, Duration::from_secs(30)).await.expect("client");
    let b = cluster.client_as(&frontend, Duration::from_secs(30)).await.expect("client");
    let seq = |client: std::sync::Arc<chuyi_client::Cluster>| async move {
        client.meta().ask(ask::Snapshots("sched".into())).await.expect("snapshots")
    };

    // Two frontends at once: one snapshot per slot.
    let (x, y) = tokio::join!(schedules_once(&a), schedules_once(&b));
    let (x, y) = (x.expect("a"), y.expect("b"));
    assert_eq!(x.0 + y.0, 1, "one of the two took the slot: {x:?} {y:?}");
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(7) {
        let _ = tokio::join!(schedules_once(&a), schedules_once(&b));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // One pass alone, so no other frontend's take is still to be expired.
    schedules_once(&a).await.expect("settle");
    let snaps = seq(a.clone()).await;
    assert!(snaps.seq >= 4, "a slot every 2 s for 7 s: {}", snaps.seq);
    assert_eq!(snaps.snapshots.len(), 2, "the newest 2 kept: {:?}", snaps.snapshots);
    assert!(snaps.snapshots.iter().all(|s| s.schedule.as_deref() == Some("2s") && s.name.starts_with("auto-2s-")));
    let (_, listed, _) = cli(&["snapshot", "list", "sched"]);
    assert!(listed.contains("schedule 2s"), "{listed}");

    // Nobody ran the schedules for three slots: one snapshot on return.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let before = seq(a.clone()).await.seq;
    let (took, _) = schedules_once(&a).await.expect("once");
    assert_eq!((took, seq(a.clone()).await.seq), (1, before + 1));
    assert_eq!(schedules_once(&a).await.expect("again").0, 0, "the slot is taken");

    // A frontend deletes only what a schedule expired.
    let kept = seq(a.clone()).await.snapshots[0].name.clone();
    let delete = order::DeleteSnapshot { volume: "sched".into(), name: kept.clone() };
    assert!(matches!(a.meta().order(delete).await, Err(MetaError::Forbidden { .. })));
    let expire = order::ExpireSnapshot { volume: "sched".into(), name: kept };
    assert!(matches!(a.meta().order(expire).await, Err(MetaError::Invalid { .. })));

    // A pool's schedule reaches its volume; the volume's own one removed.
    let (_, info, _) = cli(&["--json", "volume", "info", "sched"]);
    let pool =
        serde_json::from_str::<serde_json::Value>(&info).expect("json")["pool"].as_str().expect("pool").to_string();
    let (ok, out, err) = cli(&["snapshot", "schedule", "--pool", &pool, "--every", "1d", "--keep", "3"]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = cli(&["snapshot", "schedule", "sched", "--every", "2s", "--keep", "0", "--short"]);
    assert!(ok && out.contains("removed"), "{out}{err}");
    let (_, all, _) = cli(&["snapshot", "schedules"]);
    assert!(all.contains(&format!("pool {pool}")) && !all.contains("volume sched"), "{all}");
    let (took, _) = schedules_once(&a).await.expect("pool schedule");
    assert_eq!(took, 1);
    let snaps = seq(a.clone()).await;
    assert!(snaps.snapshots.iter().any(|s| s.schedule.as_deref() == Some("1d")), "{:?}", snaps.snapshots);
    assert_eq!(snaps.snapshots.iter().filter(|s| s.schedule.as_deref() == Some("2s")).count(), 2, "they stay");
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{program} {args:?}: {text}");
    text
}

/// An ext4 file system on a volume: made with known files, copied onto the
/// volume with qemu-img over NBD, snapshotted; files deleted, replaced and
/// added (debugfs on a copy, written back whole); rolled back. e2fsck finds
/// the rolled-back file system clean, every file reads back byte for byte
/// as first written, and the file added after the snapshot is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ext4_file_system_rolls_back_clean_with_every_file_intact() {
    let (cluster, addr, _) = serve("fs", "64M", "frontend-fs").await;
    let cli = |args: &[&str]| cluster.cli(args).expect("run chuyi");
    let uri = format!("nbd://{addr}/fs");

    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    std::fs::create_dir_all(src.join("studies")).expect("mkdir");
    let mut files = Vec::new();
    for (name, len, seed) in
        [("report.txt", 100_000usize, 7u64), ("scan.bin", 3 << 20, 11), ("studies/ct.dcm", 700_000, 13)]
    {
        let mut x = seed;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(src.join(name), &bytes).expect("write file");
        files.push((name, bytes));
    }
    let image = work.path().join("fs.img").to_string_lossy().into_owned();
    let src_dir = src.to_string_lossy().into_owned();
    let fs_uri = uri.clone();
    tokio::task::spawn_blocking(move || {
        run_ok("mkfs.ext4", &["-q", "-F", "-d", &src_dir, &image, "64M"]);
        run_ok("qemu-img", &["convert", "-n", "-f", "raw", "-O", "raw", &image, &fs_uri]);
    })
    .await
    .expect("mkfs");
    let (ok, out, err) = cli(&["snapshot", "create", "fs", "before"]);
    assert!(ok, "{out}{err}");

    // Change the file system: one file deleted, one replaced, one added.
    let changed = work.path().join("changed.img").to_string_lossy().into_owned();
    let new_file = work.path().join("new.txt");
    std::fs::write(&new_file, b"written after the snapshot\n").expect("new file");
    let new_path = new_file.to_string_lossy().into_owned();
    let fs_uri = uri.clone();
    let listing = tokio::task::spawn_blocking(move || {
        run_ok("qemu-img", &["convert", "-f", "raw", "-O", "raw", &fs_uri, &changed]);
        run_ok("debugfs", &["-w", "-R", "rm /report.txt", &changed]);
        run_ok("debugfs", &["-w", "-R", "rm /scan.bin", &changed]);
        run_ok("debugfs", &["-w", "-R", &format!("write {new_path} scan.bin"), &changed]);
        run_ok("debugfs", &["-w", "-R", &format!("write {new_path} added.txt"), &changed]);
        run_ok("qemu-img", &["convert", "-n", "-f", "raw", "-O", "raw", &changed, &fs_uri]);
        let back = format!("{changed}.back");
        run_ok("qemu-img", &["convert", "-f", "raw", "-O", "raw", &fs_uri, &back]);
        run_ok("debugfs", &["-R", "ls -l /", &back])
    })
    .await
    .expect("change");
    assert!(listing.contains("added.txt") && !listing.contains("report.txt"), "{listing}");

    retry(&cluster, &["snapshot", "rollback", "fs", "before"]);

    let back = work.path().join("back.img").to_string_lossy().into_owned();
    let out_dir = work.path().join("out");
    std::fs::create_dir_all(&out_dir).expect("mkdir");
    let (fs_uri, dump_dir) = (uri.clone(), out_dir.clone());
    let names: Vec<&'static str> = files.iter().map(|(n, _)| *n).collect();
    let (fsck, listing) = tokio::task::spawn_blocking(move || {
        run_ok("qemu-img", &["convert", "-f", "raw", "-O", "raw", &fs_uri, &back]);
        let fsck = run_ok("e2fsck", &["-fn", &back]);
        for (i, name) in names.iter().enumerate() {
            let to = dump_dir.join(i.to_string()).to_string_lossy().into_owned();
            run_ok("debugfs", &["-R", &format!("dump /{name} {to}"), &back]);
        }
        (fsck, run_ok("debugfs", &["-R", "ls -l /", &back]))
    })
    .await
    .expect("check");
    assert!(fsck.contains("clean") || fsck.contains("files"), "{fsck}");
    assert!(!listing.contains("added.txt"), "the file added after the snapshot is gone: {listing}");
    for (i, (name, bytes)) in files.iter().enumerate() {
        let read = std::fs::read(out_dir.join(i.to_string())).expect("dumped file");
        assert!(
            read == *bytes,
            "{name} differs after the rollback ({} bytes read, {} written)",
            read.len(),
            bytes.len()
        );
    }
}

/// A clone volume over NBD: it reads its parent snapshot until written,
/// each side's writes stay its own (a chunk is copied up whole on the
/// clone's first write or trim), the snapshot and its volume cannot go
/// while the clone reads them, and once flattened the clone keeps every
/// byte with its parent gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clone_shares_its_snapshot_until_written_and_survives_its_parent_once_flattened() {
    let (cluster, addr, _) = serve("gold", "32M", "frontend-clone").await;
    let cli = |args: &[&str]| cluster.cli(args).expect("run chuyi");
    let uri = |export: &str| format!("nbd://{addr}/{export}");

    let (ok, out) = io(uri("gold"), &["write -P 0x10 0 16M"]).await;
    assert!(ok, "{out}");
    let (ok, out, err) = cli(&["snapshot", "create", "gold", "base"]);
    assert!(ok, "{out}{err}");
    let (ok, _, err) = cli(&["volume", "clone", "gold", "vm2"]);
    assert!(!ok && err.contains("VOLUME@SNAPSHOT"), "{err}");
    let (ok, out, err) = cli(&["volume", "clone", "gold@base", "vm2"]);
    assert!(ok && out.contains("clone of    gold@base"), "{out}{err}");
    let vm2 = owner_of(&cluster, "vm2");
    assert_eq!(cluster.chunks_of(vm2).await.expect("chunks"), 0, "a clone copies nothing when made");
    let (ok, out) = io(uri("vm2"), &["read -P 0x10 0 16M", "read -P 0 16M 16M"]).await;
    assert!(ok, "the clone reads its snapshot: {out}");

    // Each side writes; neither sees the other's writes.
    let (ok, out) = io(uri("vm2"), &["write -P 0x20 4M 4k", "discard 8M 4M", "write -z 12M 4k"]).await;
    assert!(ok, "{out}");
    let (ok, out) = io(uri("gold"), &["write -P 0x30 0 4k"]).await;
    assert!(ok, "{out}");
    let (ok, out) = io(
        uri("vm2"),
        &[
            "read -P 0x10 0 4M",
            "read -P 0x20 4M 4k",
            "read -P 0x10 4100k 4092k",
            "read -P 0 8M 4M",
            "read -P 0 12M 4k",
            "read -P 0x10 12292k 4092k",
        ],
    )
    .await;
    assert!(ok, "the clone has its own writes around its parent's data: {out}");
    let (ok, out) = io(uri("gold"), &["read -P 0x30 0 4k", "read -P 0x10 4M 4M"]).await;
    assert!(ok, "the parent has its own: {out}");
    assert_eq!(cluster.chunks_of(vm2).await.expect("chunks"), 3 * 2, "chunks 1, 2 and 3 copied up, on both replicas");

    // The snapshot and its volume stay while the clone reads them.
    let (ok, _, err) = cli(&["snapshot", "delete", "gold", "base"]);
    assert!(!ok && err.contains("vm2"), "{err}");
    let (ok, _, err) = cli(&["volume", "delete", "gold"]);
    assert!(!ok && err.contains("vm2"), "{err}");
    // Not by a new name, nor while the clone waits in the recycle bin.
    let (ok, _, err) = cli(&["snapshot", "rename", "gold", "base", "renamed"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&["snapshot", "delete", "gold", "renamed"]);
    assert!(!ok && err.contains("vm2"), "{err}");
    retry(&cluster, &["volume", "delete", "vm2"]);
    let (ok, _, err) = cli(&["volume", "delete", "gold"]);
    assert!(!ok && err.contains("vm2"), "a clone in the bin still reads its parent: {err}");
    let (ok, out, err) = cli(&["trash", "restore", "vm2"]);
    assert!(ok, "{out}{err}");

    let out = retry(&cluster, &["volume", "flatten", "vm2"]);
    assert!(out.contains("flattened"), "{out}");
    assert_eq!(cluster.chunks_of(vm2).await.expect("chunks"), 4 * 2, "chunk 0 copied too");
    let (_, info, _) = cli(&["volume", "info", "vm2"]);
    assert!(!info.contains("clone of"), "{info}");
    let (ok, out, err) = cli(&["snapshot", "delete", "gold", "renamed"]);
    assert!(ok, "{out}{err}");
    retry(&cluster, &["volume", "delete", "gold", "--now"]);
    let (ok, out) =
        io(uri("vm2"), &["read -P 0x10 0 4M", "read -P 0x20 4M 4k", "read -P 0 8M 4M", "read -P 0 16M 16M"]).await;
    assert!(ok, "the flattened clone keeps every byte without its parent: {out}");
}
