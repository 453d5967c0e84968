//! `chuyi volume` against a real cluster: create, list, info, grow, a
//! refused shrink, a delete refused while attached, and a delete that frees
//! every chunk on every node.

use std::time::Duration;

use bytes::Bytes;
use chuyi_chaos::cluster::{Spec, TestCluster};
use chuyi_metadata::state::{Reply, Request};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn volume_lifecycle_through_the_cli_frees_every_chunk() {
    let cluster = TestCluster::start(Spec::default()).await.expect("cluster");
    cluster.create_pool().await.expect("pool");
    cluster.wait_clean(Duration::from_secs(30)).await.expect("clean");
    let cli = |args: &[&str]| cluster.cli(args).expect("run chuyi");

    let (ok, out, err) = cli(&["volume", "create", "vol1", "--size", "64M", "--pool", "ssd"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("volume vol1") && out.contains("64MiB"), "{out}");
    let (ok, _, err) = cli(&["volume", "create", "vol1", "--size", "64M"]);
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = cli(&["volume", "create", "bad", "--size", "1000"]);
    assert!(!ok && err.contains("multiple of 4096"), "{err}");
    let (ok, out, _) = cli(&["volume", "list"]);
    assert!(ok && out.contains("vol1"), "{out}");
    let (ok, out, err) = cli(&["volume", "resize", "vol1", "--size", "128M"]);
    assert!(ok && out.contains("128MiB"), "{out}{err}");
    let (ok, _, err) = cli(&["volume", "resize", "vol1", "--size", "32M"]);
    assert!(!ok && err.contains("can only grow"), "{err}");
    let (ok, out, _) = cli(&["volume", "info", "vol1", "--json"]);
    assert!(ok);
    let info: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(info["size_bytes"].as_u64(), Some(128 << 20));

    // Data in every chunk, so every chunk exists on two nodes.
    let client = cluster.client(Duration::from_secs(30)).await.expect("client");
    let vol = client.open_volume("vol1").await.expect("open");
    for i in 0..32u64 {
        vol.write(i * (4 << 20), Bytes::from(vec![0xABu8; 4096]), false).await.expect("write");
    }
    let owner = vol.volume().id;
    assert_eq!(cluster.chunks_of(owner).await.expect("count"), 64, "32 chunks × 2 replicas");

    // Attached: refused, nothing freed.
    let meta = cluster.meta().expect("meta");
    let attach = Request::AcquireLease { volume: "vol1".into(), holder: "frontend-a".into(), ttl_ms: 60_000 };
    let Reply::Lease(lease) = meta.write(attach).await.expect("lease") else { panic!("lease") };
    let (ok, _, err) = cli(&["volume", "delete", "vol1"]);
    assert!(!ok && err.contains("frontend-a"), "{err}");
    assert_eq!(cluster.chunks_of(owner).await.expect("count"), 64, "a refused delete frees nothing");
    let detach = Request::ReleaseLease { volume: "vol1".into(), holder: "frontend-a".into(), lease_id: lease.id };
    meta.write(detach).await.expect("release");

    let (ok, out, err) = cli(&["volume", "delete", "vol1", "--now"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("32 chunks freed"), "{out}");
    assert_eq!(cluster.chunks_of(owner).await.expect("count"), 0, "every chunk freed on every node");
    let (ok, _, err) = cli(&["volume", "info", "vol1"]);
    assert!(!ok && err.contains("no such volume"), "{err}");
    let (ok, _, err) = cli(&["volume", "delete", "vol1"]);
    assert!(!ok && err.contains("no such volume"), "{err}");
}

fn qemu_io(uri: &str, command: &str) -> (bool, String) {
    let out = std::process::Command::new("qemu-io").args(["-f", "raw", "-c", command, uri]).output().expect("qemu-io");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success() && !text.contains("failed") && !text.contains("Pattern verification"), text)
}

/// `chuyi volume delete` moves a volume into the recycle bin with its data
/// (its name stays taken, nothing can attach it); `chuyi trash restore`
/// brings it back as it was; a frontend's reaper purges it once its time
/// is up, and `chuyi trash purge` at once, freeing every chunk on every
/// node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleted_volumes_wait_in_the_recycle_bin_until_restored_or_purged() {
    let cluster = TestCluster::start(Spec::default()).await.expect("cluster");
    cluster.create_pool().await.expect("pool");
    cluster.wait_clean(Duration::from_secs(30)).await.expect("clean");
    let cli = |args: &[&str]| cluster.cli(args).expect("run chuyi");
    for name in ["bin1", "bin2"] {
        let (ok, out, err) = cli(&["volume", "create", name, "--size", "16M"]);
        assert!(ok, "{out}{err}");
    }
    let client = cluster.client(Duration::from_secs(30)).await.expect("client");
    let server = chuyi_nbd::server::NbdServer::new(client, "frontend-bin".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(server.serve(listener));
    let uri = |name: &str| format!("nbd://{addr}/{name}");
    let (u1, u2) = (uri("bin1"), uri("bin2"));
    let written =
        tokio::task::spawn_blocking(move || (qemu_io(&u1, "write -P 0xab 0 4M"), qemu_io(&u2, "write -P 0xcd 4M 4M")));
    let ((ok1, out1), (ok2, out2)) = written.await.expect("qemu-io");
    assert!(ok1 && ok2, "{out1}{out2}");
    let id = |name: &str| {
        let (_, out, _) = cli(&["--json", "volume", "info", name]);
        serde_json::from_str::<serde_json::Value>(&out).expect("json")["id"].as_u64().expect("id")
    };
    let (id1, id2) = (id("bin1"), id("bin2"));
    let held = cluster.chunks_of(id1).await.expect("chunks");
    assert!(held > 0);

    // Into the bin once the frontend has let it go.
    let delete = |args: &[&str]| {
        for _ in 0..50 {
            let (ok, out, err) = cli(args);
            if ok {
                return out;
            }
            assert!(err.contains("lease"), "{err}");
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("{args:?} never succeeded");
    };
    let out = delete(&["volume", "delete", "bin1"]);
    assert!(out.contains("recycle bin for 7d"), "{out}");
    let (_, list, _) = cli(&["volume", "list"]);
    assert!(!list.contains("bin1"), "{list}");
    let (_, bin, _) = cli(&["trash", "list"]);
    assert!(bin.contains("bin1") && bin.contains("16MiB"), "{bin}");
    let (_, status, _) = cli(&["status"]);
    assert!(status.contains("recycle bin: 1 volume(s), 16.0 MiB provisioned"), "{status}");
    let (ok, _, err) = cli(&["volume", "create", "bin1", "--size", "16M"]);
    assert!(!ok && err.contains("recycle bin"), "the name stays taken: {err}");
    let u1 = uri("bin1");
    let (ok, out) = tokio::task::spawn_blocking(move || qemu_io(&u1, "read 0 4k")).await.expect("qemu-io");
    assert!(!ok, "a volume in the bin cannot be attached: {out}");
    assert_eq!(cluster.chunks_of(id1).await.expect("chunks"), held, "its data stays");

    // Restored as it was.
    let (ok, out, err) = cli(&["trash", "restore", "bin1"]);
    assert!(ok && out.contains("restored"), "{out}{err}");
    let u1 = uri("bin1");
    let (ok, out) = tokio::task::spawn_blocking(move || qemu_io(&u1, "read -P 0xab 0 4M")).await.expect("qemu-io");
    assert!(ok, "{out}");

    // Due in a second: a frontend's reaper (a frontend's credential: due
    // purges are its to do) frees it.
    delete(&["volume", "delete", "bin1", "--retain", "1s"]);
    delete(&["volume", "delete", "bin2"]);
    let credential = chuyi_chaos::cluster::frontend("reaper");
    let reaper_client = cluster.client_as(&credential, Duration::from_secs(30)).await.expect("client");
    let reaper = tokio::spawn(chuyi_client::trash::reap(reaper_client, Duration::from_millis(300)));
    let start = std::time::Instant::now();
    while cluster.chunks_of(id1).await.expect("chunks") > 0 || cli(&["trash", "list"]).1.contains("bin1") {
        assert!(start.elapsed() < Duration::from_secs(20), "bin1 not purged in time");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(cli(&["trash", "list"]).1.contains("bin2"), "bin2 is not due for 7 days");
    assert!(cluster.chunks_of(id2).await.expect("chunks") > 0);
    reaper.abort();

    // Purged at once by the administrator; the name is free again.
    let (ok, out, err) = cli(&["trash", "purge"]);
    assert!(ok && out.contains("volume bin2 purged"), "{out}{err}");
    assert_eq!(cluster.chunks_of(id2).await.expect("chunks"), 0, "every chunk freed on every node");
    let (_, bin, _) = cli(&["--json", "trash", "list"]);
    let bin: serde_json::Value = serde_json::from_str(&bin).expect("json");
    assert_eq!(bin["volumes"].as_array().map(Vec::len), Some(0), "{bin}");
    let (ok, out, err) = cli(&["volume", "create", "bin1", "--size", "16M"]);
    assert!(ok, "{out}{err}");
}
