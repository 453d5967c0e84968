//! The NBD frontend with real clients: nbdinfo (list, info), qemu-io
//! patterns at several offsets and sizes, qemu-img convert and compare, and
//! an export that does not exist.

use std::process::Command as Process;
use std::time::Duration;

use chuyi_chaos::cluster::{Spec, TestCluster};
use chuyi_nbd::server::NbdServer;

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Process::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A cluster with one clean volume, and an NBD frontend for it on a free
/// port (as `holder`).
async fn serve(volume_mib: u64, holders: &[&str]) -> (TestCluster, Vec<std::net::SocketAddr>) {
    let cluster = TestCluster::start(Spec::default()).await.expect("cluster");
    cluster.create_volume("vol0", volume_mib).await.expect("volume");
    cluster.wait_clean(Duration::from_secs(30)).await.expect("clean");
    let mut addrs = Vec::new();
    for holder in holders {
        let client = cluster.client(Duration::from_secs(30)).await.expect("client");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        addrs.push(listener.local_addr().expect("addr"));
        tokio::spawn(NbdServer::new(client, (*holder).into()).serve(listener));
    }
    (cluster, addrs)
}

/// A raw connection through the handshake to `vol0` with EXPORT_NAME;
/// checks the size the server reports.
async fn raw_attach(addr: std::net::SocketAddr, size: u64) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut greeting = [0u8; 18];
    s.read_exact(&mut greeting).await.expect("greeting");
    s.write_u32(3).await.expect("flags");
    s.write_u64(0x4948_4156_454f_5054).await.expect("IHAVEOPT");
    s.write_u32(1).await.expect("EXPORT_NAME");
    s.write_u32(4).await.expect("len");
    s.write_all(b"vol0").await.expect("name");
    assert_eq!(s.read_u64().await.expect("size"), size);
    let _flags = s.read_u16().await.expect("flags");
    s
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
    let io =
        move |uri: String| tokio::task::spawn_blocking(move || run("qemu-io", &["-f", "raw", "-c", "read 0 4k", &uri]));
    let (ok, out) = io(via_b.clone()).await.expect("qemu-io");
    assert!(!ok && out.contains("frontend-a"), "frontend B must refuse while A holds the volume: {out}");

    // A's client goes away: A releases the lease, and B serves.
    drop(held);
    let mut served = false;
    for _ in 0..50 {
        let (ok, _) = io(via_b.clone()).await.expect("qemu-io");
        if ok {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "frontend B never got the volume after A let go");
}
