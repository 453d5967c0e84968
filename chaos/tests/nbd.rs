//! The NBD frontend with real clients: nbdinfo (list, info, map), qemu-io
//! patterns at several offsets and sizes, qemu-img convert, compare and
//! map, nbdcopy, fio, over TCP and a Unix socket; an export that does not
//! exist; bad clients; exclusive attach; a storage node killed under
//! writes; a frontend that loses its lease.

use std::process::Command as Process;
use std::sync::Arc;
use std::time::Duration;

use chuyi_chaos::cluster::{Spec, TestCluster};
use chuyi_chaos::sockets::{closed, connect_from};
use chuyi_nbd::server::{NbdOptions, NbdServer};

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Process::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A cluster with one clean volume, and an NBD frontend for it (as each of
/// `holders`) on a free port; the addresses in `holders` order.
async fn serve(volume_mib: u64, holders: &[&str]) -> (TestCluster, Vec<std::net::SocketAddr>) {
    let cluster = TestCluster::start(Spec::default()).await.expect("cluster");
    cluster.create_volume("vol0", volume_mib).await.expect("volume");
    cluster.wait_clean(Duration::from_secs(30)).await.expect("clean");
    let mut addrs = Vec::new();
    for holder in holders {
        let client = cluster.client(Duration::from_secs(30)).await.expect("client");
        addrs.push(serve_tcp(NbdServer::new(client, (*holder).into())).await);
    }
    (cluster, addrs)
}

async fn serve_tcp(server: Arc<NbdServer>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(server.serve(listener));
    addr
}

/// A raw connection through the handshake to `vol0` with EXPORT_NAME;
/// checks the size the server reports.
async fn raw_attach(addr: std::net::SocketAddr, size: u64) -> tokio::net::TcpStream {
    let (s, served, _) = chuyi_chaos::frontend::export_name(addr, "vol0").await.expect("handshake");
    assert_eq!(served, size);
    s
}

/// A READ request of 4 KiB at offset 0.
fn read_request(cookie: u64) -> Vec<u8> {
    let mut req = 0x2560_9513u32.to_be_bytes().to_vec();
    req.extend_from_slice(&0u32.to_be_bytes()); // flags, READ
    req.extend_from_slice(&cookie.to_be_bytes());
    req.extend_from_slice(&0u64.to_be_bytes());
    req.extend_from_slice(&4096u32.to_be_bytes());
    req
}

/// Whether qemu-io reads `uri` within `tries` attempts `pause` apart.
async fn served_within(uri: &str, tries: usize, pause: Duration) -> bool {
    for _ in 0..tries {
        let uri = uri.to_string();
        let (ok, _) = tokio::task::spawn_blocking(move || run("qemu-io", &["-f", "raw", "-c", "read 0 4k", &uri]))
            .await
            .expect("qemu-io");
        if ok {
            return true;
        }
        tokio::time::sleep(pause).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn real_nbd_clients_read_write_and_compare() {
    let (_cluster, addrs) = serve(64, &["test-frontend"]).await;
    let addr = addrs[0];
    let uri = format!("nbd://{addr}/vol0");

    let checks = tokio::task::spawn_blocking(move || {
        let (ok, out) = run("nbdinfo", &["--list", &format!("nbd://{addr}")]);
        assert!(ok && out.contains("vol0"), "{out}");
        let (ok, out) = run("nbdinfo", &[&uri]);
        assert!(ok && out.contains("67108864"), "{out}");
        let (ok, out) = run("nbdinfo", &[&format!("nbd://{addr}/missing")]);
        assert!(!ok, "a missing export must be refused: {out}");

        let io = |cmds: &[&str]| {
            let mut args = vec!["-f", "raw"];
            for c in cmds {
                args.extend_from_slice(&["-c", c]);
            }
            args.push(&uri);
            run("qemu-io", &args)
        };
        let (ok, out) = io(&[
            "write -P 0xab 0 1M",
            "write -P 0xcd 5M 64k",
            "write -P 0x11 8388096 1024",
            "write -z 20M 1M",
            "aio_write -P 0x22 30M 4k",
            "aio_write -P 0x33 31M 8k",
            "aio_flush",
        ]);
        assert!(ok && !out.contains("error") && !out.contains("failed"), "{out}");
        let (ok, out) = io(&[
            "read -P 0xab 0 1M",
            "read -P 0xcd 5M 64k",
            "read -P 0x11 8388096 1024",
            "read -P 0 20M 1M",
            "read -P 0x22 30M 4k",
            "read -P 0x33 31M 8k",
            "read -P 0 40M 4k",
        ]);
        assert!(ok && !out.contains("Pattern verification failed") && !out.contains("error"), "{out}");
        // Past the end: an error, and the connection keeps working.
        let (_, out) = io(&["read 64M 4k", "read -P 0xab 0 4k"]);
        assert!(out.contains("read 4096/4096 bytes at offset 0"), "{out}");

        // A whole image in and back out, compared.
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("in.raw");
        let data: Vec<u8> = (0..(64u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        std::fs::write(&image, &data).expect("image");
        let image = image.to_string_lossy().into_owned();
        let (ok, out) = run("qemu-img", &["convert", "-n", "-f", "raw", "-O", "raw", &image, &uri]);
        assert!(ok, "{out}");
        let (ok, out) = run("qemu-img", &["compare", "-f", "raw", "-F", "raw", &image, &uri]);
        assert!(ok && out.contains("identical"), "{out}");
        let back = dir.path().join("out.raw").to_string_lossy().into_owned();
        let (ok, out) = run("qemu-img", &["convert", "-f", "raw", "-O", "raw", &uri, &back]);
        assert!(ok, "{out}");
        assert!(std::fs::read(&back).expect("read back") == data, "the image read back differs");
        // fio's own NBD engine, 32 in flight, every block verified.
        let (ok, out) = run(
            "fio",
            &[
                "--name=verify",
                "--ioengine=nbd",
                &format!("--uri={uri}"),
                "--rw=randwrite",
                "--bs=4k",
                "--size=8M",
                "--offset=40M",
                "--iodepth=32",
                "--verify=crc32c",
                "--do_verify=1",
                "--verify_fatal=1",
                "--verify_state_save=0",
            ],
        );
        assert!(ok && !out.contains("verify: bad"), "{out}");
    });
    checks.await.expect("client checks");
}

/// A client that breaks the protocol gets errors or is dropped, and another
/// client keeps working throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_nbd_clients_get_errors_and_harm_no_one() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_cluster, addrs) = serve(16, &["test-frontend"]).await;
    let addr = addrs[0];

    // Garbage instead of client flags: dropped.
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut greeting = [0u8; 18];
    s.read_exact(&mut greeting).await.expect("greeting");
    s.write_all(&[0xff; 64]).await.expect("garbage");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await.expect("closed in time");
    assert!(n.is_ok(), "the server closes a garbage handshake");

    // A proper handshake, then bad requests.
    let mut s = raw_attach(addr, 16 << 20).await;
    let request = |kind: u16, cookie: u64, offset: u64, length: u32| {
        let mut b = Vec::new();
        b.extend_from_slice(&0x2560_9513u32.to_be_bytes());
        b.extend_from_slice(&0u16.to_be_bytes());
        b.extend_from_slice(&kind.to_be_bytes());
        b.extend_from_slice(&cookie.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&length.to_be_bytes());
        b
    };
    let reply = async |s: &mut tokio::net::TcpStream| {
        let mut r = [0u8; 16];
        s.read_exact(&mut r).await.expect("reply");
        (u32::from_be_bytes([r[4], r[5], r[6], r[7]]), u64::from_be_bytes(r[8..].try_into().expect("8 bytes")))
    };
    s.write_all(&request(99, 1, 0, 4096)).await.expect("unknown command");
    assert_eq!(reply(&mut s).await, (22, 1), "unknown command: EINVAL");
    s.write_all(&request(0, 2, 16 << 20, 4096)).await.expect("read past the end");
    assert_eq!(reply(&mut s).await, (22, 2), "read past the end: EINVAL");
    s.write_all(&request(0, 3, 0, 64 << 20)).await.expect("oversized read");
    assert_eq!(reply(&mut s).await, (22, 3), "oversized read: EINVAL");
    s.write_all(&request(7, 6, 0, 4096)).await.expect("block status without a context");
    assert_eq!(reply(&mut s).await, (22, 6), "BLOCK_STATUS without base:allocation: EINVAL");
    s.write_all(&request(0, 4, 0, 4096)).await.expect("good read");
    assert_eq!(reply(&mut s).await, (0, 4));
    let mut data = vec![0u8; 4096];
    s.read_exact(&mut data).await.expect("data");
    // An oversized write cannot be skipped: EINVAL, then the connection ends.
    s.write_all(&request(1, 5, 0, 64 << 20)).await.expect("oversized write");
    assert_eq!(reply(&mut s).await, (22, 5));

    // Meanwhile another client is unharmed.
    let uri = format!("nbd://{addr}/vol0");
    let (ok, out) = tokio::task::spawn_blocking(move || {
        run("qemu-io", &["-f", "raw", "-c", "write -P 0x5a 0 64k", "-c", "read -P 0x5a 0 64k", &uri])
    })
    .await
    .expect("qemu-io");
    assert!(ok && !out.contains("Pattern verification failed"), "{out}");
}

/// A volume is attached by one frontend at a time: a second frontend is
/// refused while the first holds the lease, and served once it lets go.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_frontend_is_refused_until_the_first_detaches() {
    let (_cluster, addrs) = serve(16, &["frontend-a", "frontend-b"]).await;
    // A client of frontend A holds vol0 open.
    let held = raw_attach(addrs[0], 16 << 20).await;

    let via_b = format!("nbd://{}/vol0", addrs[1]);
    let uri = via_b.clone();
    let (ok, out) = tokio::task::spawn_blocking(move || run("qemu-io", &["-f", "raw", "-c", "read 0 4k", &uri]))
        .await
        .expect("qemu-io");
    assert!(!ok && out.contains("frontend-a"), "frontend B must refuse while A holds the volume: {out}");

    // A's client goes away: A releases the lease, and B serves.
    drop(held);
    assert!(
        served_within(&via_b, 50, Duration::from_millis(100)).await,
        "frontend B never got the volume after A let go"
    );
}

/// The data extents `nbdinfo --map` reports, as (offset, length); every
/// other extent must be a hole that reads as zeros, and all of them must
/// cover the volume.
fn mapped_data(uri: &str, size: u64) -> Vec<(u64, u64)> {
    let (ok, out) = run("nbdinfo", &["--map", uri]);
    assert!(ok, "{out}");
    let mut data = Vec::new();
    let mut covered = 0;
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (offset, len): (u64, u64) = (f[0].parse().expect("offset"), f[1].parse().expect("length"));
        assert_eq!(offset, covered, "extents must be contiguous: {out}");
        covered += len;
        match f[3] {
            "data" => data.push((offset, len)),
            "hole,zero" => {}
            other => panic!("unexpected extent type {other}: {out}"),
        }
    }
    assert_eq!(covered, size, "{out}");
    data
}

/// What `qemu-img map` (qemu's own NBD client) reports as data.
fn qemu_mapped_data(uri: &str) -> Vec<(u64, u64)> {
    let (ok, out) = run("qemu-img", &["map", "--output=json", "-f", "raw", uri]);
    assert!(ok, "{out}");
    let extents: Vec<serde_json::Value> = serde_json::from_str(&out).expect("qemu-img map JSON");
    extents
        .iter()
        .filter(|e| e["data"] == true)
        .map(|e| (e["start"].as_u64().expect("start"), e["length"].as_u64().expect("length")))
        .collect()
}

/// Structured replies and `base:allocation`: nbdinfo and qemu-img map see
/// written data and nothing else (zeros written or trimmed are holes), and
/// nbdcopy skips the holes in both directions, over TCP and a Unix socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn allocation_is_mapped_and_copies_skip_holes() {
    let (cluster, addrs) = serve(64, &[]).await;
    let server = NbdServer::new(cluster.client(Duration::from_secs(30)).await.expect("client"), "fe".into());
    let tcp = serve_tcp(server.clone()).await;
    let socket = cluster.dir().join("nbd.sock");
    tokio::spawn(server.serve_unix(NbdServer::bind_unix(&socket).expect("bind unix")));
    assert!(addrs.is_empty());
    let size = 64u64 << 20;
    let (mib, kib) = (1u64 << 20, 1u64 << 10);

    tokio::task::spawn_blocking(move || {
        let tcp_uri = format!("nbd://{tcp}/vol0");
        let unix_uri = format!("nbd+unix:///vol0?socket={}", socket.display());
        let (ok, out) = run(
            "qemu-io",
            &[
                "-f",
                "raw",
                "-c",
                "write -P 0xaa 4M 64k",
                "-c",
                "write -P 0xbb 40M 4k",
                "-c",
                "write -P 0 48M 4k",
                "-c",
                "write -P 0xcc 60M 8k",
                "-c",
                "discard 60M 8k",
                &unix_uri,
            ],
        );
        assert!(ok && !out.contains("failed"), "{out}");
        let want = vec![(4 * mib, 64 * kib), (40 * mib, 4 * kib)];
        assert_eq!(mapped_data(&tcp_uri, size), want, "nbdinfo --map over TCP");
        assert_eq!(mapped_data(&unix_uri, size), want, "nbdinfo --map over the Unix socket");
        assert_eq!(qemu_mapped_data(&tcp_uri), want, "qemu-img map");

        // Out: only the data travels, and the copy stays sparse.
        let dir = tempfile::tempdir().expect("tempdir");
        let out_file = dir.path().join("out.raw");
        let (ok, out) = run("nbdcopy", &[&tcp_uri, &out_file.to_string_lossy()]);
        assert!(ok, "{out}");
        let mut expected = vec![0u8; size as usize];
        expected[(4 * mib) as usize..(4 * mib + 64 * kib) as usize].fill(0xaa);
        expected[(40 * mib) as usize..(40 * mib + 4 * kib) as usize].fill(0xbb);
        assert!(std::fs::read(&out_file).expect("copy") == expected, "nbdcopy's copy differs");
        use std::os::unix::fs::MetadataExt;
        let allocated = std::fs::metadata(&out_file).expect("stat").blocks() * 512;
        assert!(allocated < 2 * mib, "the copy should be sparse, {allocated} bytes allocated");

        // In: a sparse image over the volume; its holes become holes.
        let in_file = dir.path().join("in.raw");
        let mut image = vec![0u8; size as usize];
        image[(mib) as usize..(mib + 128 * kib) as usize].fill(0x42);
        image[(33 * mib) as usize..(33 * mib + 4 * kib) as usize].fill(0x43);
        std::fs::write(&in_file, &image).expect("image");
        let (ok, out) = run("nbdcopy", &[&in_file.to_string_lossy(), &unix_uri]);
        assert!(ok, "{out}");
        let (ok, out) = run("qemu-img", &["compare", "-f", "raw", "-F", "raw", &in_file.to_string_lossy(), &tcp_uri]);
        assert!(ok && out.contains("identical"), "{out}");
        assert_eq!(mapped_data(&tcp_uri, size), vec![(mib, 128 * kib), (33 * mib, 4 * kib)]);
    })
    .await
    .expect("client checks");
}

/// A storage node SIGKILLed while qemu-io writes: the writes stall until
/// the node is marked down and its PGs move, then go on; every write
/// qemu-io saw acknowledged reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_under_qemu_io_writes_loses_none() {
    use std::io::BufRead;
    let (mut cluster, addrs) = serve(64, &["test-frontend"]).await;
    let uri = format!("nbd://{}/vol0", addrs[0]);
    const WRITES: u64 = 1024;
    // One 64 KiB write per slot over the whole volume, each its own pattern.
    let write_cmds: Vec<String> = (0..WRITES).map(|i| format!("write -P {} {} 64k", 1 + i % 250, i * 65536)).collect();
    let mut args = vec!["-f".to_string(), "raw".to_string()];
    for c in &write_cmds {
        args.extend(["-c".to_string(), c.clone()]);
    }
    args.push(uri.clone());
    let mut writer = Process::new("qemu-io").args(&args).stdout(std::process::Stdio::piped()).spawn().expect("qemu-io");
    let stdout = writer.stdout.take().expect("stdout");
    let (progress_tx, mut progress) = tokio::sync::mpsc::unbounded_channel();
    let reader = std::thread::spawn(move || {
        let mut wrote = 0u64;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("wrote 65536/65536") {
                wrote += 1;
                let _ = progress_tx.send(wrote);
            }
        }
        wrote
    });
    // Kill a node once a fifth of the writes are done.
    while progress.recv().await.is_some_and(|n| n < WRITES / 5) {}
    let victim = cluster.map().await.expect("map").nodes[1].id;
    cluster.kill_node(victim).expect("kill");
    let status = tokio::task::spawn_blocking(move || writer.wait()).await.expect("join").expect("wait");
    let wrote = reader.join().expect("reader");
    assert!(status.success(), "qemu-io failed");
    assert_eq!(wrote, WRITES, "every write must complete despite the killed node");
    cluster.wait_node(victim, false, Duration::from_secs(30)).await.expect("marked down");

    let (ok, out) = tokio::task::spawn_blocking(move || {
        let mut args = vec!["-f".to_string(), "raw".to_string()];
        for i in 0..WRITES {
            args.extend(["-c".to_string(), format!("read -P {} {} 64k", 1 + i % 250, i * 65536)]);
        }
        args.push(uri);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run("qemu-io", &args)
    })
    .await
    .expect("verify");
    assert!(ok && !out.contains("Pattern verification failed") && !out.contains("failed"), "{out}");
    assert_eq!(out.matches("read 65536/65536").count() as u64, WRITES, "{out}");
}

/// A frontend that cannot renew its attach lease (the metadata service is
/// gone) stops serving the volume before the lease can expire, so another
/// frontend taking the volume afterwards never races it; its clients are
/// disconnected and the other frontend serves once the lease is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frontend_that_loses_its_lease_stops_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut cluster, _) = serve(16, &[]).await;
    let ttl = Duration::from_secs(3);
    let client = cluster.client(Duration::from_secs(30)).await.expect("client");
    let a = serve_tcp(NbdServer::with_options(
        client,
        "frontend-a".into(),
        NbdOptions { lease_ttl: ttl, kek: None, ..NbdOptions::default() },
    ))
    .await;
    let client = cluster.client(Duration::from_secs(30)).await.expect("client");
    let b = serve_tcp(NbdServer::with_options(
        client,
        "frontend-b".into(),
        NbdOptions { lease_ttl: ttl, kek: None, ..NbdOptions::default() },
    ))
    .await;

    let mut s = raw_attach(a, 16 << 20).await;
    s.write_all(&read_request(1)).await.expect("read");
    let mut reply = vec![0u8; 16 + 4096];
    s.read_exact(&mut reply).await.expect("served while the lease holds");

    // The metadata service goes away: A closes the connection on its own
    // within the lease's time, before the lease can expire.
    let member = cluster.meta_leader().await.expect("leader");
    cluster.kill_meta(member).expect("kill meta");
    let killed = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(ttl + Duration::from_secs(2), s.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "A must close, sending nothing: {closed:?} {rest:?}");
    assert!(killed.elapsed() < ttl, "A closed {:?} after losing the metadata service", killed.elapsed());

    // Back, the metadata service lets B take the expired lease, and A,
    // whose renewal is refused, stays off it.
    cluster.restart_meta(member).expect("restart meta");
    assert!(
        served_within(&format!("nbd://{b}/vol0"), 100, Duration::from_millis(200)).await,
        "frontend B never got the volume after A's lease ran out"
    );
}

/// Connections racing to attach one volume share one lease: it is renewed
/// past its first term and every connection keeps being served; when the
/// last one goes, the lease is released and another frontend gets the
/// volume at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_attaches_share_one_lease() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (cluster, _) = serve(16, &[]).await;
    let ttl = Duration::from_secs(3);
    let options = || NbdOptions { lease_ttl: ttl, kek: None, ..NbdOptions::default() };
    let client = cluster.client(Duration::from_secs(30)).await.expect("client");
    let a = serve_tcp(NbdServer::with_options(client, "frontend-a".into(), options())).await;
    let client = cluster.client(Duration::from_secs(30)).await.expect("client");
    let b = serve_tcp(NbdServer::with_options(client, "frontend-b".into(), options())).await;

    let mut conns = futures::future::join_all((0..4).map(|_| raw_attach(a, 16 << 20))).await;
    // Past the fence's margin of the first term: only renewals keep it.
    tokio::time::sleep(ttl).await;
    for (i, s) in conns.iter_mut().enumerate() {
        s.write_all(&read_request(i as u64)).await.expect("read request");
        let mut reply = vec![0u8; 16 + 4096];
        s.read_exact(&mut reply).await.unwrap_or_else(|e| panic!("connection {i} was dropped: {e}"));
        assert_eq!(&reply[4..8], &[0, 0, 0, 0], "connection {i} got an error");
    }
    drop(conns);
    assert!(
        served_within(&format!("nbd://{b}/vol0"), 20, Duration::from_millis(100)).await,
        "the lease was not released when the last connection went"
    );
}

/// Silent clients cannot hold the frontend: past the connection cap a new
/// one is closed at once, the rest at the handshake timeout, and a real
/// client is served all the while.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_connections_are_capped_and_closed_at_the_handshake_timeout() {
    let (cluster, _) = serve(16, &[]).await;
    let client = cluster.client(Duration::from_secs(30)).await.expect("client");
    let options =
        NbdOptions { handshake_timeout: Duration::from_secs(8), max_connections: 5_100, ..NbdOptions::default() };
    let server = NbdServer::with_options(client, "frontend-a".into(), options);
    let addr = serve_tcp(server.clone()).await;
    let start = std::time::Instant::now();
    let mut silent = connect_from("127.0.0.2", addr, 5_000, b"").await.expect("connect");
    // A real client is served while 5 000 silent ones are held.
    let uri = format!("nbd://{addr}/vol0");
    let (ok, out) = tokio::task::spawn_blocking(move || run("nbdinfo", &[&uri])).await.expect("nbdinfo");
    assert!(ok && out.contains("16777216"), "{out}");
    // 200 more: the last 100 are over the cap, closed without a greeting.
    silent.extend(connect_from("127.0.0.2", addr, 200, b"").await.expect("connect"));
    let opened = start.elapsed();
    let over = closed(&mut silent[5_100..], Duration::from_millis(500)).await;
    assert_eq!(over, 100, "connections past the cap are closed at once");
    assert_eq!(server.open_connections(), 5_100);
    assert!(start.elapsed() < Duration::from_secs(8), "all this before the silent ones time out");
    // The silent ones are closed once their handshake time is up.
    // Each connection's time runs from its own accept: wait for the last.
    tokio::time::sleep((opened + Duration::from_secs(9)).saturating_sub(start.elapsed())).await;
    assert_eq!(closed(&mut silent[..5_100], Duration::from_millis(200)).await, 5_100, "closed at the timeout");
    assert_eq!(server.open_connections(), 0);
}

/// An export takes at most its cap of connections (a further attach is
/// refused, the others keep working), and with an idle timeout set an
/// attached connection that sends nothing is closed, making room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exports_are_capped_and_idle_attached_connections_closed_when_asked() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (cluster, _) = serve(16, &[]).await;
    let client = cluster.client(Duration::from_secs(30)).await.expect("client");
    let options = NbdOptions { max_per_export: 2, idle_timeout: Some(Duration::from_secs(3)), ..NbdOptions::default() };
    let server = NbdServer::with_options(client, "frontend-a".into(), options);
    let addr = serve_tcp(server.clone()).await;
    let mut first = raw_attach(addr, 16 << 20).await;
    let mut second = raw_attach(addr, 16 << 20).await;
    let uri = format!("nbd://{addr}/vol0");
    let u = uri.clone();
    let (ok, out) = tokio::task::spawn_blocking(move || run("nbdinfo", &[&u])).await.expect("nbdinfo");
    assert!(!ok, "a third connection to the export is refused: {out}");
    // The two attached ones still work, and the busy one stays open.
    second.write_all(&read_request(1)).await.expect("read");
    let mut reply = vec![0u8; 16 + 4096];
    second.read_exact(&mut reply).await.expect("served");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    second.write_all(&read_request(2)).await.expect("read");
    second.read_exact(&mut reply).await.expect("served again within its idle time");
    // The idle one is closed at its timeout, and its place is free again.
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(5), first.read(&mut buf)).await.expect("closed in time");
    assert!(matches!(closed, Ok(0) | Err(_)), "the idle connection is closed: {closed:?}");
    let (ok, out) = tokio::task::spawn_blocking(move || run("nbdinfo", &[&uri])).await.expect("nbdinfo");
    assert!(ok && out.contains("16777216"), "a place is free once the idle one is gone: {out}");
}

/// fio over NBD for `secs` seconds after a 2 s ramp (the burst spent):
/// (read IOPS, write IOPS).
fn fio_iops(uri: &str, rw: &str, bs: &str, secs: u32) -> (f64, f64) {
    let (ok, out) = run(
        "fio",
        &[
            "--name=qos",
            "--ioengine=nbd",
            &format!("--uri={uri}"),
            &format!("--rw={rw}"),
            &format!("--bs={bs}"),
            "--size=32M",
            "--iodepth=16",
            "--time_based",
            "--ramp_time=2",
            &format!("--runtime={secs}"),
            "--output-format=json",
        ],
    );
    assert!(ok, "{out}");
    let start = out.find('{').expect("fio JSON");
    let v: serde_json::Value = serde_json::from_str(&out[start..]).unwrap_or_else(|e| panic!("{e}: {out}"));
    let job = &v["jobs"][0];
    (job["read"]["iops"].as_f64().expect("read iops"), job["write"]["iops"].as_f64().expect("write iops"))
}

/// Volume QoS: `chuyi volume set --iops` online holds fio to the rate, 4 KiB
/// per operation (a 64 KiB write is 16), a pool's class applies to a
/// volume with no rule of its own, and `chuyi volume info` counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_volumes_iops_cap_holds_fio_to_it_and_changes_online() {
    let (cluster, addrs) = serve(64, &["test-frontend"]).await;
    let uri = format!("nbd://{}/vol0", addrs[0]);
    let cli = |args: &[&str]| {
        let (ok, out, err) = cluster.cli(args).expect("chuyi");
        assert!(ok, "chuyi {args:?}: {out}{err}");
        out
    };
    cli(&["volume", "set", "vol0", "--iops", "2000"]);
    // The frontend learns rules at its next exchange, within a second or two.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let uri2 = uri.clone();
    let (read, _) = tokio::task::spawn_blocking(move || fio_iops(&uri2, "randread", "4k", 8)).await.expect("fio");
    println!("2000 IOPS rule: fio randread {read:.0} IOPS");
    assert!((read / 2000.0 - 1.0).abs() <= 0.10, "randread at {read:.0} IOPS against 2000");
    let uri2 = uri.clone();
    let (_, write) = tokio::task::spawn_blocking(move || fio_iops(&uri2, "randwrite", "64k", 6)).await.expect("fio");
    println!("2000 IOPS rule: fio 64 KiB randwrite {write:.0} IOPS");
    assert!((write / 125.0 - 1.0).abs() <= 0.10, "64 KiB writes count 16 each: {write:.0} against 125");

    let info: serde_json::Value = serde_json::from_str(&cli(&["--json", "volume", "info", "vol0"])).expect("JSON");
    let qos = &info["qos"];
    assert_eq!(qos["limits"]["requests"], 2000, "{info}");
    assert!(qos["admitted"].as_u64() > Some(20_000) && qos["delayed"].as_u64() > Some(0), "{info}");
    assert!(qos["bytes_in"].as_u64() > Some(0) && qos["bytes_out"].as_u64() > Some(0), "{info}");

    // The volume's rule lifted, its pool's class applies.
    cli(&["qos", "set", "--pool", "ssd", "--iops", "1000"]);
    cli(&["volume", "set", "vol0", "--iops", "0"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let uri2 = uri.clone();
    let (read, _) = tokio::task::spawn_blocking(move || fio_iops(&uri2, "randread", "4k", 6)).await.expect("fio");
    println!("pool class of 1000 IOPS: fio randread {read:.0} IOPS");
    assert!((read / 1000.0 - 1.0).abs() <= 0.10, "randread at {read:.0} IOPS against the pool's 1000");
    let info = cli(&["volume", "info", "vol0"]);
    assert!(info.contains("pool ssd's class"), "{info}");

    // No rule at all: well above either.
    cli(&["qos", "delete", "--pool", "ssd"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (read, _) = tokio::task::spawn_blocking(move || fio_iops(&uri, "randread", "4k", 4)).await.expect("fio");
    println!("no rule: fio randread {read:.0} IOPS");
    // Well above both caps; not more (a VM test beside it can take a core).
    assert!(read > 3000.0, "randread at {read:.0} IOPS with no rule");
}

/// A process's resident memory now and at its peak, in bytes.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name}"));
        line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).expect("kB") * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The frontend's memory budget holds over every connection: four
/// nbdcopy writers, each with 64 requests of 4 MiB in flight (a GiB asked
/// for in all, 256 MiB each within their own connection's budget), through
/// a `chuyi nbd` with a 16 MiB budget: every byte lands, and the process's
/// peak RSS stays within the budget and a fixed margin.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_frontends_memory_budget_holds_over_every_connection() {
    let cluster = TestCluster::start(Spec::default()).await.expect("cluster");
    let volumes = ["w1", "w2", "w3", "w4"];
    for v in volumes {
        cluster.create_volume(v, 64).await.expect("volume");
    }
    cluster.wait_clean(Duration::from_secs(30)).await.expect("clean");
    let addr = format!("127.0.0.1:{}", chuyi_chaos::cluster::free_port().expect("port"));
    let mut child = cluster
        .frontend_command("nbd-budget", &cluster.meta_addrs().join(","))
        .expect("command")
        .args(["nbd", "--listen", &addr, "--memory-budget-mib", "16"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chuyi nbd");
    let start = std::time::Instant::now();
    while tokio::net::TcpStream::connect(&addr).await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "chuyi nbd never listened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = child.id();
    let (before, _) = rss(pid);
    let dir = tempfile::tempdir().expect("dir");
    let image = dir.path().join("image.raw");
    let mut data = vec![0u8; 64 << 20];
    chuyi_common::secret::fill_random(&mut data);
    std::fs::write(&image, &data).expect("image");
    let image = image.to_string_lossy().into_owned();
    let out = tokio::task::spawn_blocking(move || {
        let copies: Vec<_> = volumes
            .iter()
            .map(|v| {
                Process::new("nbdcopy")
                    .args(["--requests=64", "--request-size=4194304", "--flush", &image])
                    .arg(format!("nbd://{addr}/{v}"))
                    .spawn()
                    .expect("nbdcopy")
            })
            .collect();
        for mut c in copies {
            assert!(c.wait().expect("nbdcopy").success(), "nbdcopy failed");
        }
        volumes
            .iter()
            .map(|v| run("qemu-img", &["compare", "-f", "raw", "-F", "raw", &image, &format!("nbd://{addr}/{v}")]))
            .collect::<Vec<_>>()
    })
    .await
    .expect("copies");
    for (ok, text) in out {
        assert!(ok && text.contains("identical"), "{text}");
    }
    let (_, peak) = rss(pid);
    let _ = child.kill();
    let _ = child.wait();
    println!("chuyi nbd RSS {} MiB before, peak {} MiB", before >> 20, peak >> 20);
    assert!(peak <= before + (16 << 20) + (64 << 20), "peak RSS {} MiB from {} MiB", peak >> 20, before >> 20);
}
