//! Encrypted volumes end to end: `chuyi key generate`, `chuyi volume create
//! --encrypt`, the NBD frontend enciphering before data leaves it (a
//! written plaintext appears nowhere in the storage nodes' files, and does
//! for a plain volume, which proves the search works), data read back after
//! every node restarts, a missing or wrong KEK refused with a message that
//! says so, `chuyi key rotate`, a pool that encrypts every volume, and a
//! delete that destroys the key first.

use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::Arc;
use std::time::Duration;

use chuyi_chaos::cluster::{Spec, TestCluster};
use chuyi_common::sm4::load_kek;
use chuyi_nbd::server::{NbdOptions, NbdServer};

const BLOCK: usize = 4096;

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Process::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn cli(cluster: &TestCluster, args: &[&str]) -> String {
    let (ok, out, err) = cluster.cli(args).expect("chuyi");
    assert!(ok, "chuyi {args:?}: {out}{err}");
    out
}

/// An image whose every 4 KiB block starts with `marker` and its number.
fn image(dir: &Path, marker: &str, blocks: usize) -> PathBuf {
    let mut data = Vec::with_capacity(blocks * BLOCK);
    for i in 0..blocks {
        let mut block = format!("{marker}{i:08}").into_bytes();
        block.resize(BLOCK, b'.');
        data.extend_from_slice(&block);
    }
    let path = dir.join(format!("{marker}.raw"));
    std::fs::write(&path, data).expect("image");
    path
}

/// How many 4 KiB blocks of the storage nodes' files start with `marker`.
fn blocks_on_nodes(cluster: &TestCluster, marker: &str) -> usize {
    let files = cluster.node_files();
    assert!(!files.is_empty(), "no storage node files found under {}", cluster.dir().display());
    let mut hits = 0;
    for file in files {
        let data = std::fs::read(&file).expect("node file");
        hits += data.chunks(BLOCK).filter(|b| b.starts_with(marker.as_bytes())).count();
    }
    hits
}

async fn frontend(cluster: &TestCluster, holder: &str, kek_file: Option<&Path>) -> std::net::SocketAddr {
    let client = cluster.client(Duration::from_secs(30)).await.expect("client");
    let kek = kek_file.map(|f| load_kek(Some(f)).expect("kek").expect("a kek"));
    let server: Arc<NbdServer> =
        NbdServer::with_options(client, holder.into(), NbdOptions { kek, ..NbdOptions::default() });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(server.serve(listener));
    addr
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking work")
}

fn compare(image: &Path, uri: &str) -> (bool, String) {
    run("qemu-img", &["compare", "-f", "raw", "-F", "raw", &image.to_string_lossy(), uri])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn encrypted_volumes_hold_only_ciphertext_and_lose_their_key_on_delete() {
    let mut cluster = TestCluster::start(Spec { disk_mib: 256, ..Spec::default() }).await.expect("cluster");
    let keys = tempfile::tempdir().expect("tempdir");
    let kek = keys.path().join("kek");
    let kek_str = kek.to_string_lossy().into_owned();
    cli(&cluster, &["key", "generate", &kek_str]);
    let (ok, _, err) = cluster.cli(&["volume", "create", "nokey", "--size", "16MiB", "--encrypt"]).expect("chuyi");
    assert!(!ok && err.contains("master key"), "--encrypt without a KEK must say why: {err}");
    cluster.create_pool().await.expect("pool");
    let pool = chuyi_chaos::cluster::POOL;
    cli(&cluster, &["volume", "create", "plain", "--size", "16MiB", "--pool", pool]);
    cli(
        &cluster,
        &["--kek-file", &kek_str, "volume", "create", "secret", "--size", "16MiB", "--pool", pool, "--encrypt"],
    );
    let info = cli(&cluster, &["volume", "info", "secret"]);
    assert!(info.contains("sm4-xts"), "{info}");
    // A pool that encrypts every volume: without the KEK a volume cannot
    // be made there, with it every new one is encrypted unasked.
    cli(&cluster, &["pool", "set", pool, "--encrypt", "true"]);
    assert!(cli(&cluster, &["pool", "list"]).contains("always"));
    let (ok, _, err) = cluster.cli(&["volume", "create", "auto", "--size", "16MiB", "--pool", pool]).expect("chuyi");
    assert!(!ok && err.contains("master key"), "{err}");
    cli(&cluster, &["--kek-file", &kek_str, "volume", "create", "auto", "--size", "16MiB", "--pool", pool]);
    assert!(cli(&cluster, &["volume", "info", "auto"]).contains("sm4-xts"));
    cli(&cluster, &["pool", "set", pool, "--encrypt", "false"]);
    cli(&cluster, &["volume", "delete", "auto", "--now"]);
    cluster.wait_clean(Duration::from_secs(30)).await.expect("clean");

    let blocks = 1024; // 4 MiB
    let plain_image = image(keys.path(), "PLAIN-VOLUME-MARKER-", blocks);
    let secret_image = image(keys.path(), "SECRET-VOLUME-MARKER-", blocks);
    let fe = frontend(&cluster, "fe-1", Some(&kek)).await;
    let (plain_uri, secret_uri) = (format!("nbd://{fe}/plain"), format!("nbd://{fe}/secret"));
    {
        let (p, s, pu, su) = (plain_image.clone(), secret_image.clone(), plain_uri.clone(), secret_uri.clone());
        blocking(move || {
            for (image, uri) in [(&p, &pu), (&s, &su)] {
                let (ok, out) =
                    run("qemu-img", &["convert", "-n", "-f", "raw", "-O", "raw", &image.to_string_lossy(), uri]);
                assert!(ok, "{out}");
            }
            let (ok, out) = compare(&s, &su);
            assert!(ok && out.contains("identical"), "the encrypted volume reads back: {out}");
            // Sub-block I/O: the frontend asks for whole 4 KiB blocks, and
            // qemu merges a 512-byte write into one itself.
            let (ok, out) =
                run("qemu-io", &["-f", "raw", "-c", "write -P 0x11 8M 512", "-c", "read -P 0x11 8M 512", &su]);
            assert!(ok && !out.contains("failed"), "{out}");
        })
        .await;
    }
    // A snapshot of the encrypted volume reads back deciphered with the
    // volume's key; what is written after it is not in it.
    cli(&cluster, &["snapshot", "create", "secret", "enc1"]);
    {
        let (s, su, copy) = (secret_image.clone(), secret_uri.clone(), keys.path().join("enc1.img"));
        blocking(move || {
            let (ok, out) = run("qemu-io", &["-f", "raw", "-c", "write -P 0x33 12M 4k", &su]);
            assert!(ok && !out.contains("failed"), "{out}");
            let snap = format!("{su}@enc1");
            let (ok, out) =
                run("qemu-io", &["-r", "-f", "raw", "-c", "read -P 0x11 8M 512", "-c", "read -P 0 12M 4k", &snap]);
            assert!(ok && !out.contains("failed"), "the snapshot has the write before it, not the one after: {out}");
            let (ok, out) = run("qemu-img", &["convert", "-f", "raw", "-O", "raw", &snap, &copy.to_string_lossy()]);
            assert!(ok, "{out}");
            let (image, copied) = (std::fs::read(&s).expect("image"), std::fs::read(&copy).expect("copy"));
            assert!(copied.starts_with(&image), "the snapshot deciphers to what was written");
        })
        .await;
    }
    // A client that cannot learn the 4 KiB block size (EXPORT_NAME) is
    // refused the encrypted volume: the server closes.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(fe).await.expect("connect");
        let mut greeting = [0u8; 18];
        s.read_exact(&mut greeting).await.expect("greeting");
        s.write_u32(3).await.expect("flags");
        s.write_u64(0x4948_4156_454f_5054).await.expect("IHAVEOPT");
        s.write_u32(1).await.expect("EXPORT_NAME");
        s.write_u32(6).await.expect("length");
        s.write_all(b"secret").await.expect("name");
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "EXPORT_NAME of an encrypted volume: {closed:?} {rest:?}");
    }
    assert_eq!(blocks_on_nodes(&cluster, "PLAIN-VOLUME-MARKER-"), 2 * blocks, "a plain volume's blocks are found");
    assert_eq!(blocks_on_nodes(&cluster, "SECRET-VOLUME-MARKER-"), 0, "no plaintext of the encrypted volume");

    // Every node restarts; a new frontend with the same KEK reads it back.
    let ids: Vec<u32> = cluster.map().await.expect("map").nodes.iter().map(|n| n.id).collect();
    for id in &ids {
        cluster.kill_node(*id).expect("kill");
    }
    for id in &ids {
        cluster.restart_node(*id).expect("restart");
    }
    cluster.wait_clean(Duration::from_secs(60)).await.expect("clean after restart");
    let fe2 = frontend(&cluster, "fe-2", Some(&kek)).await;
    let uri2 = format!("nbd://{fe2}/secret");
    {
        let (s, u) = (secret_image.clone(), uri2.clone());
        blocking(move || {
            let mut out = String::new();
            // The first frontend may still hold the lease for a moment.
            for _ in 0..50 {
                out = compare(&s, &u).1;
                if out.contains("identical") || out.contains("mismatch") {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            // The image's 4 MiB read back; the volume is larger, and the
            // first byte past them that is not zero is the 512-byte write.
            assert!(out.contains("Content mismatch at offset 8388608!"), "{out}");
            let (ok, out) = run("qemu-io", &["-f", "raw", "-c", "read -P 0x11 8M 512", "-c", "read -P 0 9M 4k", &u]);
            assert!(ok && !out.contains("failed"), "{out}");
        })
        .await;
    }

    // No KEK, or another one: refused, and the message says why.
    let no_kek = frontend(&cluster, "fe-nokey", None).await;
    let other = keys.path().join("other");
    cli(&cluster, &["key", "generate", &other.to_string_lossy()]);
    let wrong = frontend(&cluster, "fe-wrong", Some(&other)).await;
    for (addr, why) in [(no_kek, "no master key"), (wrong, "another master key")] {
        let uri = format!("nbd://{addr}/secret");
        let (ok, out) = blocking(move || run("qemu-io", &["-f", "raw", "-c", "read 0 4k", &uri])).await;
        assert!(!ok && out.contains(why), "expected {why:?}: {out}");
    }

    // A clone of the encrypted volume's snapshot shares its key (its data
    // is the parent's ciphertext); it writes its own blocks.
    let out = cli(&cluster, &["--kek-file", &kek_str, "volume", "clone", "secret@enc1", "sclone"]);
    assert!(out.contains("sm4-xts") && out.contains("clone of    secret@enc1"), "{out}");
    {
        let uri = format!("nbd://{}/sclone", frontend(&cluster, "fe-clone", Some(&kek)).await);
        let (ok, out) = blocking(move || {
            run("qemu-io", &["-f", "raw", "-c", "write -P 0x44 13M 4k", "-c", "read -P 0x11 8M 512", &uri])
        })
        .await;
        assert!(ok && !out.contains("failed"), "{out}");
    }

    // Rotation: the new KEK opens the key, the old one no longer does.
    let new = keys.path().join("new");
    let new_str = new.to_string_lossy().into_owned();
    cli(&cluster, &["key", "generate", &new_str]);
    let out = cli(&cluster, &["--kek-file", &kek_str, "key", "rotate", "--new-kek-file", &new_str]);
    assert!(out.contains("2 volume keys re-wrapped"), "the volume's and its clone's: {out}");
    let out = cli(&cluster, &["--kek-file", &kek_str, "key", "rotate", "--new-kek-file", &new_str]);
    assert!(
        out.contains("0 volume keys re-wrapped") && out.contains("(2 already were)"),
        "a second run has nothing to do: {out}"
    );
    let old_fe = frontend(&cluster, "fe-old", Some(&kek)).await;
    let new_fe = frontend(&cluster, "fe-new", Some(&new)).await;
    {
        let (old_uri, new_uri) = (format!("nbd://{old_fe}/secret"), format!("nbd://{new_fe}/secret"));
        blocking(move || {
            let (ok, out) = run("qemu-io", &["-f", "raw", "-c", "read 0 4k", &old_uri]);
            assert!(!ok && out.contains("another master key"), "{out}");
            let (ok, out) = run("qemu-io", &["-f", "raw", "-c", "read -P 0x33 12M 4k", &new_uri]);
            assert!(ok && !out.contains("failed"), "{out}");
            let snap = format!("{new_uri}@enc1");
            let (ok, out) = run("qemu-io", &["-r", "-f", "raw", "-c", "read -P 0x11 8M 512", &snap]);
            assert!(ok && !out.contains("failed"), "the snapshot reads under the rotated key: {out}");
            let clone = new_uri.replace("/secret", "/sclone");
            let reads = ["read -P 0x11 8M 512", "read -P 0x44 13M 4k", "read -P 0 12M 4k"];
            let (ok, out) = run("qemu-io", &["-f", "raw", "-c", reads[0], "-c", reads[1], "-c", reads[2], &clone]);
            assert!(ok && !out.contains("failed"), "the clone reads under the rotated key: {out}");
        })
        .await;
    }
    // The clone goes first: its parent cannot be deleted while it reads it.
    let (ok, _, err) = cluster.cli(&["volume", "delete", "secret"]).expect("chuyi");
    assert!(!ok && err.contains("sclone"), "{err}");
    for _ in 0..50 {
        if cluster.cli(&["volume", "delete", "sclone", "--now"]).expect("chuyi").0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // Delete: into the recycle bin with its key and data; purged, the key
    // goes first, then every chunk.
    let info = cli(&cluster, &["--json", "volume", "info", "secret"]);
    let id = serde_json::from_str::<serde_json::Value>(&info).expect("json")["id"].as_u64().expect("id");
    let held = cluster.chunks_of(id).await.expect("chunks");
    assert!(held > 0);
    let mut out = String::new();
    for _ in 0..50 {
        let (ok, o, e) = cluster.cli(&["volume", "delete", "secret"]).expect("chuyi");
        out = format!("{o}{e}");
        if ok {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(out.contains("recycle bin"), "{out}");
    let bin: serde_json::Value = serde_json::from_str(&cli(&cluster, &["--json", "trash", "list"])).expect("json");
    assert_eq!(bin["volumes"][0]["volume"]["name"], "secret", "{bin}");
    assert!(!bin["volumes"][0]["volume"]["wrapped_key"].as_array().expect("key").is_empty(), "its key kept: {bin}");
    assert_eq!(cluster.chunks_of(id).await.expect("chunks"), held, "its data kept in the bin");
    let out = cli(&cluster, &["trash", "purge", "secret"]);
    assert!(out.contains("purged"), "{out}");
    assert_eq!(cluster.chunks_of(id).await.expect("chunks"), 0, "every chunk freed");
    let (ok, _, _) = cluster.cli(&["volume", "info", "secret"]).expect("chuyi");
    assert!(!ok, "the volume is gone");
}
