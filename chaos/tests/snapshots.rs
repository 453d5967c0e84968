//! Volume snapshots against a real cluster through real NBD clients:
//! `chuyi snapshot` taken while a frontend serves the volume, read back
//! read-only from the `VOLUME@SNAPSHOT` export with qemu-io, rolled back
//! (refused while attached), and deleted, with the nodes' clone slots
//! counted at each step.

use std::time::Duration;

use chuyi_chaos::cluster::{Spec, TestCluster};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshots_keep_their_view_through_nbd_rollback_and_delete() {
    let cluster = TestCluster::start(Spec::default()).await.expect("cluster");
    cluster.create_pool().await.expect("pool");
    cluster.wait_clean(Duration::from_secs(30)).await.expect("clean");
    let cli = |args: &[&str]| cluster.cli(args).expect("run chuyi");
    let (ok, out, err) = cli(&["volume", "create", "disk", "--size", "64M"]);
    assert!(ok, "{out}{err}");
    let (_, info, _) = cli(&["--json", "volume", "info", "disk"]);
    let owner = serde_json::from_str::<serde_json::Value>(&info).expect("json")["id"].as_u64().expect("id");
    let client = cluster.client(Duration::from_secs(30)).await.expect("client");
    let server = chuyi_nbd::server::NbdServer::new(client, "frontend-snap".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(server.serve(listener));
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
    assert!(!ok && out.to_lowercase().contains("read-only") || out.contains("Operation not permitted"), "{out}");
    let (ok, out) = io(uri("disk@nope"), &["read 0 4k"]).await;
    assert!(!ok, "a missing snapshot is no export: {out}");

    let (ok, out, err) = cli(&["snapshot", "create", "disk", "s2"]);
    assert!(ok, "{out}{err}");
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
    let held = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut greeting = [0u8; 18];
        s.read_exact(&mut greeting).await.expect("greeting");
        s.write_u32(3).await.expect("flags");
        s.write_u64(0x4948_4156_454f_5054).await.expect("IHAVEOPT");
        s.write_u32(1).await.expect("EXPORT_NAME");
        s.write_u32(4).await.expect("len");
        s.write_all(b"disk").await.expect("name");
        assert_eq!(s.read_u64().await.expect("size"), 64 << 20);
        s
    };
    let (ok, _, err) = cli(&["snapshot", "rollback", "disk", "s1"]);
    assert!(!ok && err.contains("is attached by frontend-snap"), "{err}");
    drop(held);
    let mut rolled = None;
    for _ in 0..50 {
        let (ok, out, err) = cli(&["snapshot", "rollback", "disk", "s1"]);
        if ok {
            rolled = Some(out);
            break;
        }
        assert!(err.contains("attached"), "{err}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rolled = rolled.expect("rollback once detached");
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
    let (ok, out, err) = cli(&["snapshot", "delete", "disk", "last"]);
    assert!(ok && out.contains("0 left"), "{out}{err}");
    // Heads only: chunks 0-3 and the (zeroed) chunk 10.
    assert_eq!(cluster.chunks_of(owner).await.expect("chunks"), heads + 2);
    let (ok, out) = io(uri("disk"), &["read -P 0xaa 0 16M"]).await;
    assert!(ok, "{out}");
}
