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

    let (ok, out, err) = cli(&["volume", "delete", "vol1"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("32 chunks freed"), "{out}");
    assert_eq!(cluster.chunks_of(owner).await.expect("count"), 0, "every chunk freed on every node");
    let (ok, _, err) = cli(&["volume", "info", "vol1"]);
    assert!(!ok && err.contains("no such volume"), "{err}");
    let (ok, _, err) = cli(&["volume", "delete", "vol1"]);
    assert!(!ok && err.contains("no such volume"), "{err}");
}
