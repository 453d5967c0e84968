//! Volume backups against real clusters, through the `chuyi backup` CLI
//! and real clients: data written and checked with qemu-io, qemu-img and
//! fio over NBD, the target this cluster's S3 gateway (a separate `chuyi
//! s3` process) or a second cluster's (`chuyi up`), its objects read raw
//! with an S3 client. Each backup is restored and compared byte for byte
//! with the snapshot it was read from (saved to a file by qemu-img while
//! the snapshot existed).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chuyi_backup::s3::{S3Keys, S3Options, S3};
use chuyi_chaos::cluster::{free_port, GatewayProcess, Spec, TestCluster};
use chuyi_chaos::proxy::Proxy;
use chuyi_common::sm4::load_kek;
use chuyi_nbd::server::{NbdOptions, NbdServer};

/// A cluster with a pool, an S3 gateway and an NBD frontend (with the KEK).
struct Site {
    cluster: TestCluster,
    _gateway: GatewayProcess,
    endpoint: String,
    keys: S3Keys,
    nbd: std::net::SocketAddr,
    kek: PathBuf,
    _dir: tempfile::TempDir,
}

impl Site {
    async fn start() -> Self {
        let cluster = TestCluster::start(Spec::default()).await.expect("cluster");
        cluster.create_pool().await.expect("pool");
        cluster.wait_clean(Duration::from_secs(30)).await.expect("clean");
        let dir = tempfile::tempdir().expect("tempdir");
        let kek = dir.path().join("kek");
        let (ok, out, err) = cluster.cli(&["key", "generate", &kek.to_string_lossy()]).expect("chuyi");
        assert!(ok, "{out}{err}");
        let listen = format!("127.0.0.1:{}", free_port().expect("port"));
        let gateway = cluster.s3_gateway(&listen, &[]).await.expect("gateway");
        let user = cluster.s3_user("backup").expect("user");
        let keys = S3Keys { access_key: user.access, secret_key: user.secret };
        let options = NbdOptions { kek: load_kek(Some(&kek)).expect("kek"), ..NbdOptions::default() };
        let server = NbdServer::with_options(
            cluster.client(Duration::from_secs(60)).await.expect("client"),
            "nbd".into(),
            options,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let nbd = listener.local_addr().expect("addr");
        tokio::spawn(server.serve(listener));
        Self { cluster, _gateway: gateway, endpoint: format!("http://{listen}"), keys, nbd, kek, _dir: dir }
    }

    fn uri(&self, export: &str) -> String {
        format!("nbd://{}/{export}", self.nbd)
    }

    fn cli(&self, args: &[&str]) -> (bool, String, String) {
        self.cli_with(args, &self.kek, &self.endpoint)
    }

    /// `chuyi --kek-file KEK backup ARGS --endpoint ENDPOINT` as the S3 user.
    fn cli_with(&self, args: &[&str], kek: &Path, endpoint: &str) -> (bool, String, String) {
        let out = self.backup_command(args, kek, endpoint).output().expect("chuyi");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    }

    fn backup_command(&self, args: &[&str], kek: &Path, endpoint: &str) -> Command {
        let mut command = self.cluster.command();
        command.arg("--kek-file").arg(kek).arg("backup").args(args).args(["--endpoint", endpoint]);
        command.env("AWS_ACCESS_KEY_ID", &self.keys.access_key).env("AWS_SECRET_ACCESS_KEY", &self.keys.secret_key);
        command
    }

    /// `chuyi --json backup ARGS`, which must pass; its JSON.
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend(args);
        let (ok, out, err) = self.cli(&all);
        assert!(ok, "chuyi backup {args:?}: {out}{err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    fn s3(&self) -> S3 {
        S3::new(&self.endpoint, &self.keys, S3Options::default()).expect("s3")
    }
}

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn qemu_io(uri: &str, commands: &[&str]) {
    let mut args = vec!["-f", "raw"];
    for c in commands {
        args.extend(["-c", c]);
    }
    args.push(uri);
    let (ok, out) = run("qemu-io", &args);
    assert!(ok && !out.contains("failed"), "qemu-io {commands:?}: {out}");
}

/// Copies what `uri` serves into file `to`.
fn save(uri: &str, to: &Path) {
    let (ok, out) = run("qemu-img", &["convert", "-f", "raw", "-O", "raw", uri, &to.to_string_lossy()]);
    assert!(ok, "qemu-img convert {uri}: {out}");
}

/// Asserts that `uri` serves exactly the bytes of file `image`.
fn assert_same(uri: &str, image: &Path) {
    let (ok, out) = run("qemu-img", &["compare", "-f", "raw", "-F", "raw", uri, &image.to_string_lossy()]);
    assert!(ok, "{uri} differs from {}: {out}", image.display());
}

/// Writes file `image` onto the volume `uri` serves (the same size).
fn load(image: &Path, uri: &str) {
    let (ok, out) = run("qemu-img", &["convert", "-n", "-f", "raw", "-O", "raw", &image.to_string_lossy(), uri]);
    assert!(ok, "qemu-img convert onto {uri}: {out}");
}

/// A file of `mib` MiB: `text` MiB of a repeated patient record, then
/// `random` MiB of random bytes, then zeros.
fn image(dir: &Path, name: &str, mib: usize, text: usize, random: usize) -> PathBuf {
    let mut data = b"PATIENT^DOE^JOHN 19700101 CT HEAD ".repeat((text << 20) / 34 + 1);
    data.truncate(text << 20);
    let mut noise = vec![0u8; random << 20];
    chuyi_common::secret::fill_random(&mut noise);
    data.extend(noise);
    data.resize(mib << 20, 0);
    let path = dir.join(name);
    std::fs::write(&path, data).expect("write image");
    path
}

/// Runs `chuyi ARGS` until the NBD frontend has let go of the volume.
fn retry(site: &Site, args: &[&str]) -> serde_json::Value {
    for _ in 0..50 {
        let mut all = vec!["--json"];
        all.extend(args);
        let (ok, out, err) = site.cli(&all);
        if ok {
            return serde_json::from_str(&out).expect("json");
        }
        assert!(err.contains("attached") || err.contains("lease") || err.contains("Lease"), "{err}");
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{args:?} never succeeded");
}

/// A full backup of an encrypted volume taken while fio writes and
/// verifies, incrementals after, each restored and compared byte for byte
/// with its snapshot; a restore over an older copy fetching only what
/// differs; no plaintext and no volume data in the clear in the target;
/// the wrong KEK refused; drills passing, then failing on a damaged piece.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backups_restore_what_their_snapshots_held() {
    let site = Site::start().await;
    let files = tempfile::tempdir().expect("tempdir");
    let kek = site.kek.to_string_lossy().into_owned();
    let (ok, out, err) = site
        .cluster
        .cli(&["--kek-file", &kek, "volume", "create", "disk", "--size", "32M", "--encrypt"])
        .expect("chuyi");
    assert!(ok, "{out}{err}");
    // 8 MiB of text, 8 MiB of noise, 16 MiB never written.
    load(&image(files.path(), "start.img", 32, 8, 8), &site.uri("disk"));
    let target = "s3://backups/site-a";

    // fio writes and verifies 4 KiB blocks in [16M, 24M) while the full
    // backup runs: the backup reads its snapshot, fio's data verifies.
    let fio_uri = site.uri("disk");
    let fio = std::thread::spawn(move || {
        run(
            "fio",
            &[
                "--name=under-backup",
                "--ioengine=nbd",
                &format!("--uri={fio_uri}"),
                "--rw=randwrite",
                "--bs=4k",
                "--offset=16M",
                "--size=8M",
                "--iodepth=8",
                "--rate_iops=800",
                "--verify=crc32c",
                "--do_verify=1",
                "--verify_state_save=0",
            ],
        )
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let b1 = site.json(&["create", "disk", "--target", target]);
    let (fio_ok, fio_out) = tokio::task::spawn_blocking(move || fio.join().expect("fio")).await.expect("join");
    assert!(fio_ok, "fio verifies what it wrote while the backup ran: {fio_out}");
    assert!(b1["parent"].is_null(), "the first backup is full: {b1}");
    assert_eq!(b1["stats"]["spans_read"], 16 + 8, "spans never written are not read: {b1}");
    let b1_id = b1["id"].as_str().expect("id").to_string();
    let b1_img = files.path().join("b1.img");
    save(&site.uri(&format!("disk@{}", b1["snapshot"].as_str().expect("snapshot"))), &b1_img);

    let restored = retry(&site, &["restore", &b1_id, "--to", "r1", "--target", target]);
    assert_eq!(restored["stats"]["created"], true, "{restored}");
    assert_same(&site.uri("r1"), &b1_img);

    // What fio wrote after the snapshot: an incremental on b1.
    let b2 = site.json(&["create", "disk", "--target", target]);
    assert_eq!(b2["parent"].as_str(), Some(b1_id.as_str()), "{b2}");
    let b2_id = b2["id"].as_str().expect("id").to_string();
    let b2_img = files.path().join("b2.img");
    save(&site.uri(&format!("disk@{}", b2["snapshot"].as_str().expect("snapshot"))), &b2_img);
    retry(&site, &["restore", &b2_id, "--to", "r2", "--target", target]);
    assert_same(&site.uri("r2"), &b2_img);

    // Two changed spans: an incremental reads and sends those two.
    qemu_io(&site.uri("disk"), &["write -P 0x5a 4M 1M", "write -P 0xa5 20M 64k"]);
    let b3 = site.json(&["create", "disk", "--target", target]);
    assert_eq!(b3["parent"].as_str(), Some(b2_id.as_str()), "{b3}");
    assert_eq!((&b3["stats"]["spans_read"], &b3["stats"]["pieces_sent"]), (&2.into(), &2.into()), "{b3}");
    let b3_id = b3["id"].as_str().expect("id").to_string();
    let b3_img = files.path().join("b3.img");
    save(&site.uri(&format!("disk@{}", b3["snapshot"].as_str().expect("snapshot"))), &b3_img);
    let (_, snaps, _) = site.cluster.cli(&["--json", "snapshot", "list", "disk"]).expect("chuyi");
    let snaps: serde_json::Value = serde_json::from_str(&snaps).expect("json");
    assert_eq!(
        snaps["snapshots"].as_array().expect("snapshots").len(),
        1,
        "only the newest backup's snapshot stays: {snaps}"
    );

    // Over r2 (b2's copy): only the two spans that differ are fetched.
    let over = retry(&site, &["restore", &b3_id, "--to", "r2", "--overwrite", "--target", target]);
    assert_eq!(over["stats"]["fetched"], 2, "{over}");
    assert_same(&site.uri("r2"), &b3_img);
    // The oldest, again, into a new volume.
    let fresh = retry(&site, &["restore", &b1_id, "--to", "r0", "--target", target]);
    assert_eq!(fresh["stats"]["fetched"], 16 + 8, "{fresh}");
    assert_same(&site.uri("r0"), &b1_img);
    let (ok, _, err) = site.cli(&["restore", &b1_id, "--to", "r0", "--target", target]);
    assert!(!ok && err.contains("--overwrite"), "an existing volume is not restored over by default: {err}");

    // Grown online: the next backup holds the grown part too, and is full
    // (its parent is of another size).
    let (ok, out, err) = site.cluster.cli(&["volume", "resize", "disk", "--size", "40M"]).expect("chuyi");
    assert!(ok, "{out}{err}");
    qemu_io(&site.uri("disk"), &["write -P 0x3c 36M 64k"]);
    let b4 = site.json(&["create", "disk", "--target", target]);
    assert!(b4["parent"].is_null(), "{b4}");
    let b4_img = files.path().join("b4.img");
    save(&site.uri(&format!("disk@{}", b4["snapshot"].as_str().expect("snapshot"))), &b4_img);
    assert_eq!(std::fs::metadata(&b4_img).expect("b4.img").len(), 40 << 20);
    let b4_id = b4["id"].as_str().expect("id").to_string();
    retry(&site, &["restore", &b4_id, "--to", "r4", "--target", target]);
    assert_same(&site.uri("r4"), &b4_img);
    let (ok, out, err) = site.cluster.cli(&["volume", "create", "clear", "--size", "32M"]).expect("chuyi");
    assert!(ok, "{out}{err}");
    let (ok, _, err) = site.cli(&["restore", &b1_id, "--to", "clear", "--overwrite", "--target", target]);
    assert!(!ok && err.contains("encrypted"), "an encrypted volume's data never lands in the clear: {err}");

    // Nothing readable in the target: no record text, no data block.
    let s3 = site.s3();
    let objects = s3.list("backups", "site-a/").await.expect("list");
    let text = b"PATIENT^DOE";
    let b1_bytes = std::fs::read(&b1_img).expect("read");
    for object in &objects {
        let body = s3.get("backups", &object.key).await.expect("get").expect("there");
        assert!(!body.windows(text.len()).any(|w| w == text), "{} holds plaintext", object.key);
        assert!(
            !body.windows(4096).any(|w| w == &b1_bytes[8 << 20..(8 << 20) + 4096]),
            "{} holds volume data",
            object.key
        );
    }
    let sent = b1["stats"]["bytes_sent"].as_u64().expect("sent");
    assert!(sent < 17 << 20, "b1's 8 MiB of text compressed away: {sent} bytes sent for 24 MiB of data");

    // Another KEK does not open the target; no KEK at all is said plainly.
    let other = files.path().join("other.kek");
    let (ok, out, err) = site.cluster.cli(&["key", "generate", &other.to_string_lossy()]).expect("chuyi");
    assert!(ok, "{out}{err}");
    let (ok, _, err) = site.cli_with(&["list", "--target", target], &other, &site.endpoint);
    assert!(!ok && err.contains("does not open with this KEK"), "{err}");

    // Drills: all pass; then one damaged piece fails the drill of each
    // backup holding it, naming its one span, and `list` shows which.
    let ids = [&b1_id, &b2_id, &b3_id, &b4_id];
    for id in ids {
        let drill = site.json(&["verify", id, "--target", target]);
        assert_eq!(drill["passed"], true, "{drill}");
    }
    let piece = objects.iter().find(|o| o.key.contains("/pieces/")).expect("a piece");
    s3.put("backups", &piece.key, bytes::Bytes::from_static(b"bit rot")).await.expect("put");
    let mut passed = Vec::new();
    for id in ids {
        let (ok, out, err) = site.cli(&["verify", id, "--target", target]);
        assert!(ok || (out.contains("1 bad") && err.contains("failed its drill")), "{out}{err}");
        passed.push(ok);
    }
    assert!(passed.contains(&false), "the damaged piece is in a backup");
    let list = site.json(&["list", "--target", target]);
    let drills: Vec<bool> = list["backups"]
        .as_array()
        .expect("backups")
        .iter()
        .map(|b| b["drill_passed"].as_bool().expect("drilled"))
        .collect();
    assert_eq!(drills, passed, "{list}");
}

/// Pieces in the target now (none before its bucket is made).
async fn pieces(s3: &S3, prefix: &str) -> usize {
    match s3.list("backups", &format!("{prefix}/pieces/")).await {
        Ok(listed) => listed.len(),
        Err(chuyi_backup::S3Error::Status { code, .. }) if code == "NoSuchBucket" => 0,
        Err(e) => panic!("listing pieces: {e}"),
    }
}

/// A backup SIGKILLed mid-way resumes, sending only the pieces the target
/// lacks, through a cut to the target; more backups, a prune that keeps
/// every piece the kept ones need (the oldest kept restores whole), and a
/// second cluster (`chuyi up`) as the remote site, restoring there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_backup_resumes_and_prune_keeps_what_backups_need() {
    let site = Site::start().await;
    let files = tempfile::tempdir().expect("tempdir");
    let (ok, out, err) = site.cluster.cli(&["volume", "create", "plain", "--size", "64M"]).expect("chuyi");
    assert!(ok, "{out}{err}");
    let start = image(files.path(), "start.img", 64, 0, 48);
    load(&start, &site.uri("plain"));
    let target = "s3://backups/site-b";
    let s3 = site.s3();

    // Killed while pacing at 4 MiB/s, after some pieces are in.
    let mut first: Child = site
        .backup_command(&["create", "plain", "--target", target, "--bandwidth", "4MiB/s"], &site.kek, &site.endpoint)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let began = Instant::now();
    while pieces(&s3, "site-b").await < 8 {
        assert!(began.elapsed() < Duration::from_secs(60), "the backup never sent 8 pieces");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.kill().expect("kill");
    first.wait().expect("wait");
    let sent_before = pieces(&s3, "site-b").await;
    assert!(sent_before < 48, "killed mid-way: {sent_before}");
    let list = site.json(&["list", "--target", target]);
    assert_eq!(list["backups"].as_array().expect("backups").len(), 0, "a killed backup is not complete: {list}");
    assert_eq!(list["under_way"].as_array().expect("under way").len(), 1, "{list}");

    // Resumed through a proxy cut for 3 s while it runs.
    let proxy = Proxy::start(site.endpoint.trim_start_matches("http://").to_string()).await.expect("proxy");
    let via = format!("http://{}", proxy.addr);
    let args = ["--json", "create", "plain", "--target", target, "--bandwidth", "8MiB/s"];
    let resumed = site.backup_command(&args, &site.kek, &via).stdout(Stdio::piped()).spawn().expect("spawn");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.heal();
    let out = tokio::task::spawn_blocking(move || resumed.wait_with_output()).await.expect("join").expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the resumed backup passes through the cut: {stdout}");
    let b1: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let total = pieces(&s3, "site-b").await;
    assert_eq!(total, 48, "one piece per span of noise");
    assert_eq!(b1["this_run"]["pieces_sent"], total - sent_before, "no piece sent twice: {b1}");
    let b1_img = files.path().join("b1.img");
    save(&site.uri(&format!("plain@{}", b1["snapshot"].as_str().expect("snapshot"))), &b1_img);
    // A restore SIGKILLed mid-way, run again as it was: it goes on in the
    // volume it was making, fetching only what it had not written.
    let b1_id = b1["id"].as_str().expect("id");
    let restore = ["restore", b1_id, "--to", "p1", "--target", target];
    let mut slow: Vec<&str> = restore.to_vec();
    slow.extend(["--bandwidth", "4MiB/s", "--in-flight", "1"]);
    let mut killed =
        site.backup_command(&slow, &site.kek, &site.endpoint).stdout(Stdio::null()).spawn().expect("spawn");
    tokio::time::sleep(Duration::from_secs(3)).await;
    killed.kill().expect("kill");
    killed.wait().expect("wait");
    let (_, snaps, _) = site.cluster.cli(&["--json", "snapshot", "list", "p1"]).expect("chuyi");
    assert!(snaps.contains(&format!("restoring-{b1_id}")), "the half-made volume is marked: {snaps}");
    let r = retry(&site, &restore);
    let fetched = r["stats"]["fetched"].as_u64().expect("fetched");
    assert!(
        r["stats"]["created"] == false
            && fetched < 48
            && fetched + r["stats"]["already"].as_u64().expect("already") == 64,
        "{r}"
    );
    assert_same(&site.uri("p1"), &b1_img);
    let (_, snaps, _) = site.cluster.cli(&["--json", "snapshot", "list", "p1"]).expect("chuyi");
    assert!(!snaps.contains("restoring-"), "the mark goes when the restore ends: {snaps}");

    // Three more backups, each after new data in two spans.
    let mut ids = vec![b1["id"].as_str().expect("id").to_string()];
    let mut images = vec![b1_img];
    for round in 1..4u64 {
        let at = format!("{}M", round * 3);
        let (ok, out) = run(
            "qemu-io",
            &[
                "-f",
                "raw",
                "-c",
                &format!("write -P {round} {at} 512k"),
                "-c",
                &format!("write -P 7 {}M 4k", 50 + round),
                &site.uri("plain"),
            ],
        );
        assert!(ok, "{out}");
        let (_, before, _) = site.cluster.cli(&["--json", "snapshot", "list", "plain"]).expect("chuyi");
        let b = site.json(&["create", "plain", "--target", target]);
        assert_eq!(
            b["parent"].as_str(),
            ids.last().map(String::as_str),
            "{b} {before} {:?}",
            site.cli(&["--json", "list", "--target", target])
        );
        let img = files.path().join(format!("b{}.img", round + 1));
        save(&site.uri(&format!("plain@{}", b["snapshot"].as_str().expect("snapshot"))), &img);
        ids.push(b["id"].as_str().expect("id").to_string());
        images.push(img);
    }
    let before = pieces(&s3, "site-b").await;
    let pruned = site.json(&["prune", "--target", target, "--keep-last", "2"]);
    assert_eq!(pruned["forgotten"].as_array().expect("forgotten").len(), 2, "{pruned}");
    let deleted = pruned["pieces_deleted"].as_u64().expect("deleted") as usize;
    assert!(deleted > 0, "spans rewritten since leave pieces no kept backup holds: {pruned}");
    assert_eq!(pieces(&s3, "site-b").await, before - deleted);
    // The oldest kept backup restores whole.
    let r = retry(&site, &["restore", &ids[2], "--to", "p3", "--target", target]);
    assert_eq!(r["stats"]["created"], true, "{r}");
    assert_same(&site.uri("p3"), &images[2]);
    let list = site.json(&["list", "--target", target]);
    let kept: Vec<&str> =
        list["backups"].as_array().expect("backups").iter().map(|b| b["backup"]["id"].as_str().expect("id")).collect();
    assert_eq!(kept, vec![ids[2].as_str(), ids[3].as_str()]);

    // The remote site: a second cluster, `chuyi up`; backed up to its
    // gateway, restored there with this cluster's KEK.
    let remote = Up::start();
    let remote_target = "s3://dr-site/site-b";
    // As the remote cluster's S3 user (`chuyi up` prints its keys).
    let mut create =
        site.backup_command(&["--json", "create", "plain", "--target", remote_target], &site.kek, &remote.endpoint);
    create.env("AWS_ACCESS_KEY_ID", &remote.access).env("AWS_SECRET_ACCESS_KEY", &remote.secret);
    let out = create.output().expect("chuyi");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let remote_backup: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let remote_img = files.path().join("remote.img");
    save(&site.uri(&format!("plain@{}", remote_backup["snapshot"].as_str().expect("snapshot"))), &remote_img);
    let id = remote_backup["id"].as_str().expect("id");
    let out = Command::new(chuyi_chaos::cluster::chuyi_bin().expect("bin"))
        .env("CHUYI_CONFIG", remote.dir.path().join("chuyi.toml"))
        .env("AWS_ACCESS_KEY_ID", &remote.access)
        .env("AWS_SECRET_ACCESS_KEY", &remote.secret)
        .arg("--kek-file")
        .arg(&site.kek)
        .args(["backup", "restore", id, "--to", "dr-copy", "--target", remote_target, "--endpoint", &remote.endpoint])
        .output()
        .expect("chuyi");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_same(&format!("nbd://{}/dr-copy", remote.nbd), &remote_img);
}

/// `chuyi up` on free ports in a directory of its own; stopped on drop.
struct Up {
    child: Child,
    dir: tempfile::TempDir,
    endpoint: String,
    nbd: String,
    access: String,
    secret: String,
}

impl Up {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        let base = (0..200)
            .map(|_| free_port().expect("port"))
            .find(|&b| b < 65_000 - 110 && [1, 2, 3, 101, 102].iter().all(|&p| free(b + p)))
            .expect("a free port base");
        let port = || free_port().expect("port").to_string();
        let child = Command::new(chuyi_chaos::cluster::chuyi_bin().expect("bin"))
            .args(["up", "--data-dir"])
            .arg(dir.path())
            .args(["--port-base", &base.to_string()])
            .args(["--nbd", &format!("127.0.0.1:{}", port())])
            .args(["--s3", &format!("127.0.0.1:{}", port())])
            .args(["--s3-tls", &format!("127.0.0.1:{}", port())])
            .args(["--metrics", &format!("127.0.0.1:{}", port())])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("up.log")).expect("log"))
            .spawn()
            .expect("chuyi up");
        let began = Instant::now();
        let env = loop {
            if let Ok(env) = std::fs::read_to_string(dir.path().join("up.env")) {
                break env;
            }
            assert!(began.elapsed() < Duration::from_secs(90), "chuyi up did not come up");
            std::thread::sleep(Duration::from_millis(200));
        };
        let var = |name: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .map(|v| v.trim_matches('\'').to_string())
                .unwrap_or_else(|| panic!("no {name} in up.env"))
        };
        let nbd = var("CHUYI_NBD_URI").trim_start_matches("nbd://").split('/').next().expect("addr").to_string();
        Self {
            endpoint: var("CHUYI_S3_ENDPOINT"),
            access: var("AWS_ACCESS_KEY_ID"),
            secret: var("AWS_SECRET_ACCESS_KEY"),
            nbd,
            child,
            dir,
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// A schedule run by the volume frontends: two runners (as frontends,
/// with their own credentials) race for each slot; backups are made,
/// pruned to the newest two, drilled, and reported in `backup schedules`
/// with no failure; the newest restores whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schedules_back_up_prune_and_drill_by_themselves() {
    let site = Site::start().await;
    let files = tempfile::tempdir().expect("tempdir");
    let (ok, out, err) = site.cluster.cli(&["volume", "create", "sched", "--size", "16M"]).expect("chuyi");
    assert!(ok, "{out}{err}");
    load(&image(files.path(), "start.img", 16, 2, 2), &site.uri("sched"));
    let kek = load_kek(Some(&site.kek)).expect("kek").expect("a kek");
    for name in ["nbd-a", "nbd-b"] {
        let credential = chuyi_chaos::cluster::frontend(name);
        let client = site.cluster.client_as(&credential, Duration::from_secs(60)).await.expect("client");
        let every = Duration::from_millis(300);
        tokio::spawn(chuyi_backup::schedule::run_schedules(client, kek.clone(), format!("{name}:1"), every));
    }
    let target = "s3://backups/sched";
    let args = [
        "schedule",
        "sched",
        "--target",
        target,
        "--every",
        "2s",
        "--short",
        "--keep-last",
        "2",
        "--drill-every",
        "1s",
    ];
    let (ok, out, err) = site.cli(&args);
    assert!(ok && out.contains("every 2s"), "{out}{err}");
    let (ok, _, err) = site.cli(&["schedule", "sched", "--target", target, "--every", "2s", "--keep-last", "2"]);
    assert!(!ok && err.contains("--short"), "{err}");

    // Four runs: each made a backup (incremental after the first), the
    // prune kept two, the drill passed.
    let began = Instant::now();
    let made = loop {
        let (ok, out, err) = site.cluster.cli(&["--json", "backup", "schedules"]).expect("chuyi");
        assert!(ok, "{out}{err}");
        let all: serde_json::Value = serde_json::from_str(&out).expect("json");
        let s = &all[0];
        assert!(s["last_error"].is_null(), "no run failed (two runners, one slot each): {s}");
        let list = site.json(&["list", "--target", target]);
        let backups = list["backups"].as_array().expect("backups").len();
        if s["last_drill_passed"] == true && backups == 2 && s["last_ok_ms"].as_u64().unwrap_or(0) > 0 {
            let (_, shown, _) = site.cluster.cli(&["backup", "schedules"]).expect("chuyi");
            assert!(shown.contains("sched") && shown.contains("passed"), "{shown}");
            if began.elapsed() > Duration::from_secs(8) {
                break list;
            }
        }
        assert!(backups <= 2 || began.elapsed() < Duration::from_secs(3), "pruned to 2: {list}");
        assert!(began.elapsed() < Duration::from_secs(90), "the schedule never ran through: {s} {list}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let newest = made["backups"][1]["backup"].clone();
    assert!(newest["parent"].is_string(), "later runs are incremental: {newest}");
    assert!(newest["schedule"] == "2s", "{newest}");
    let (ok, out, err) = site.cluster.cli(&["backup", "unschedule", "sched", "--target", target]).expect("chuyi");
    assert!(ok, "{out}{err}");
    let r = retry(&site, &["restore", "sched", "--to", "sched-copy", "--target", target]);
    assert_eq!(r["stats"]["created"], true, "{r}");
    assert_same(&site.uri("sched-copy"), &files.path().join("start.img"));
}
