//! `chuyi up` as a user runs it: it comes up, writes up.env, serves its
//! default volume over NBD (qemu-io, TCP and Unix socket), stops cleanly on
//! SIGTERM, a second run reuses the data, and S3 works with the
//! credentials up.env gives (awscli), over TLS too with the CA bundle it
//! names (awscli, boto3 and rclone verifying the certificate).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port base whose ports (`chuyi up` uses base+1..=base+3, base+101 and
/// base+102;
/// the test puts NBD on base+150, S3 on base+151, S3 over TLS on
/// base+152, metrics on base+153 and up its children's on the four after)
/// are free now. Taken below the ephemeral
/// range (32768 and up on Linux), so no client connection of another test
/// can be holding one of them a moment later.
fn free_port_base() -> u16 {
    let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    let start = 20_000 + (std::process::id() % 50) as u16 * 211;
    (0..50)
        .map(|i| 20_000 + (start - 20_000 + i * 211) % 12_000)
        .find(|&base| [1, 2, 3, 101, 102, 150, 151, 152, 153, 154, 155, 156, 157].iter().all(|&p| free(base + p)))
        .expect("no free port base")
}

fn start(dir: &Path, port_base: u16, nbd_port: u16) -> Child {
    start_with(dir, port_base, nbd_port, &[])
}

/// [`start`] with more arguments to `chuyi up`.
fn start_with(dir: &Path, port_base: u16, nbd_port: u16, more: &[&str]) -> Child {
    let _ = std::fs::remove_file(dir.join("up.env"));
    Command::new(env!("CARGO_BIN_EXE_chuyi"))
        .args(["up", "--data-dir"])
        .arg(dir)
        .args(["--port-base", &port_base.to_string(), "--nbd", &format!("127.0.0.1:{nbd_port}")])
        .args(["--s3", &format!("127.0.0.1:{}", nbd_port + 1)])
        .args(["--s3-tls", &format!("127.0.0.1:{}", nbd_port + 2)])
        .args(["--metrics", &format!("127.0.0.1:{}", nbd_port + 3)])
        .args(more)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("up.log")).expect("up.log"))
        .spawn()
        .expect("spawn chuyi up")
}

/// The NBD URI from up.env, once it is written.
fn wait_up(dir: &Path, up: &mut Child) -> String {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = up.try_wait() {
            let log = std::fs::read_to_string(dir.join("up.log")).unwrap_or_default();
            panic!("chuyi up exited ({status}) before coming up:\n{log}");
        }
        if let Ok(env) = std::fs::read_to_string(dir.join("up.env")) {
            if let Some(uri) = env.lines().find_map(|l| l.strip_prefix("export CHUYI_NBD_URI=")) {
                return uri.to_string();
            }
        }
        if start.elapsed() > Duration::from_secs(60) {
            let log = std::fs::read_to_string(dir.join("up.log")).unwrap_or_default();
            panic!("chuyi up did not come up in 60 s:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn stop(mut child: Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    assert!(status.success(), "chuyi up did not stop cleanly: {status}");
}

fn qemu_io(uri: &str, cmd: &str) -> (bool, String) {
    qemu_io_all(uri, &[cmd.to_string()])
}

/// Runs `cmds` in one qemu-io session.
fn qemu_io_all(uri: &str, cmds: &[String]) -> (bool, String) {
    let each = cmds.iter().flat_map(|c| ["-c", c.as_str()]);
    let out = Command::new("qemu-io").args(["-f", "raw"]).args(each).arg(uri).output().expect("qemu-io");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn up_serves_a_volume_stops_cleanly_and_restarts_on_its_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Ports above the usual ones, different for every run of the test.
    let port_base = free_port_base();
    let nbd_port = port_base + 150;

    let mut up = start(dir.path(), port_base, nbd_port);
    let uri = wait_up(dir.path(), &mut up);
    let env = std::fs::read_to_string(dir.path().join("up.env")).expect("up.env");
    assert!(env.contains(&format!("export CHUYI_META_ADDR=127.0.0.1:{}", port_base + 101)), "{env}");
    let (ok, out) = qemu_io(&uri, "write -P 0x6b 1M 64k");
    assert!(ok && !out.contains("error"), "{out}");
    let status = Command::new(env!("CARGO_BIN_EXE_chuyi"))
        .args(["--config"])
        .arg(dir.path().join("chuyi.toml"))
        .args(["volume", "info", "vol0"])
        .output()
        .expect("chuyi volume info");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    stop(up);
    for id in 1..=3 {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port_base + id)).is_err(),
            "storage node {id} still listening after chuyi up stopped"
        );
    }

    let mut up = start(dir.path(), port_base, nbd_port);
    let uri = wait_up(dir.path(), &mut up);
    let (ok, out) = qemu_io(&uri, "read -P 0x6b 1M 64k");
    assert!(ok && !out.contains("Pattern verification failed"), "the data did not survive a restart: {out}");
    // The same volume on the Unix socket.
    let env = std::fs::read_to_string(dir.path().join("up.env")).expect("up.env");
    let unix_uri = env
        .lines()
        .find_map(|l| l.strip_prefix("export CHUYI_NBD_UNIX_URI='")?.strip_suffix('\''))
        .unwrap_or_else(|| panic!("no CHUYI_NBD_UNIX_URI in {env}"));
    assert!(unix_uri.starts_with("nbd+unix:///vol0?socket="), "{unix_uri}");
    let (ok, out) = qemu_io(unix_uri, "read -P 0x6b 1M 64k");
    assert!(ok && !out.contains("Pattern verification failed"), "over the Unix socket: {out}");
    // Volume vm0 is served over vhost-user-blk, attached under its lease
    // (a VM boots on it in chaos/tests/vhost.rs).
    let vhost = env
        .lines()
        .find_map(|l| l.strip_prefix("export CHUYI_VHOST_SOCKET="))
        .unwrap_or_else(|| panic!("no CHUYI_VHOST_SOCKET in {env}"));
    let start = std::time::Instant::now();
    while std::os::unix::net::UnixStream::connect(vhost).is_err() {
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "nothing serves {vhost}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (ok, out) = with_env(&env, "chuyi volume info vm0");
    assert!(ok && out.contains("attached by chuyi-up:"), "vm0 is attached to the vhost frontend: {out}");
    // S3 with what up.env says, as a user would after `. up.env`.
    let (ok, out) = with_env(
        &env,
        "set -e; s3() { aws --endpoint-url $CHUYI_S3_ENDPOINT s3 \"$@\"; }; t=$(mktemp -d); \
         head -c 3000000 /dev/urandom > $t/scan.dcm; s3 mb s3://up-test; s3 cp $t/scan.dcm s3://up-test/; \
         s3 cp s3://up-test/scan.dcm $t/back.dcm; cmp $t/scan.dcm $t/back.dcm; s3 ls s3://up-test; rm -r $t; \
         chuyi bucket info up-test",
    );
    assert!(ok && out.contains("scan.dcm"), "S3 with up.env's credentials: {out}");
    // `chuyi` itself is on the PATH up.env sets, reaching this cluster.
    assert!(out.contains("up-test") && out.contains("objects"), "chuyi bucket info after . up.env: {out}");
    // The same over TLS: awscli, boto3 and rclone verify the self-signed
    // certificate through the bundle up.env names, and refuse without it.
    // (rclone takes it as --ca-cert: its AWS SDK refuses AWS_CA_BUNDLE with
    // rclone's own HTTP transport.)
    let (ok, out) = with_env(
        &env,
        "set -e; t=$(mktemp -d); aws --endpoint-url $CHUYI_S3_TLS_ENDPOINT s3 cp s3://up-test/scan.dcm $t/a; \
         head -c 3000000 /dev/urandom > $t/b; \
         python3 -c 'import boto3,os,sys; s3=boto3.client(\"s3\", endpoint_url=os.environ[\"CHUYI_S3_TLS_ENDPOINT\"]); \
           s3.upload_file(sys.argv[1], \"up-test\", \"tls.bin\"); s3.download_file(\"up-test\", \"tls.bin\", sys.argv[2])' \
           $t/b $t/b2; cmp $t/b $t/b2; \
         env -u AWS_CA_BUNDLE rclone --ca-cert \"$AWS_CA_BUNDLE\" lsf \":s3,provider=Other,env_auth=true,endpoint='$CHUYI_S3_TLS_ENDPOINT':up-test\"; \
         echo verified; if env -u AWS_CA_BUNDLE aws --endpoint-url $CHUYI_S3_TLS_ENDPOINT s3 ls 2>$t/err; then exit 1; fi; \
         grep -iE 'certificate.verify.failed' $t/err; \
         aws --endpoint-url $CHUYI_S3_TLS_ENDPOINT s3api put-bucket-policy --bucket up-test --policy \
           '{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Deny\",\"Principal\":\"*\",\"Action\":\"s3:GetObject\",\
             \"Resource\":\"arn:aws:s3:::up-test/*\",\"Condition\":{\"Bool\":{\"aws:SecureTransport\":\"false\"}}}]}'; \
         aws --endpoint-url $CHUYI_S3_TLS_ENDPOINT s3 cp s3://up-test/tls.bin $t/c; cmp $t/b $t/c; echo secure-read; \
         if aws --endpoint-url $CHUYI_S3_ENDPOINT s3api get-object --bucket up-test --key tls.bin $t/d 2>$t/err; then exit 1; fi; \
         grep AccessDenied $t/err; rm -r $t",
    );
    assert!(ok && out.contains("verified") && out.contains("tls.bin"), "S3 over TLS with up.env's bundle: {out}");
    // aws:SecureTransport is true over TLS only.
    assert!(out.contains("secure-read") && out.contains("AccessDenied"), "a policy on aws:SecureTransport: {out}");
    // Prometheus metrics at the URL up.env names, read by Prometheus's own
    // Python parser: the traffic above is counted.
    let (ok, out) = with_env(&env, &format!("python3 -c '{METRICS_CHECK}'"));
    assert!(ok, "{out}");
    for expected in [
        "chuyi_s3_requests 200 PutObject",
        "chuyi_s3_requests 200 GetObject",
        "chuyi_s3_requests 403 GetObject",
        "chuyi_nbd_operations read vol0",
        "chuyi_nbd_bytes read vol0",
        "chuyi_s3_request_duration_seconds",
        "chuyi_nbd_operation_duration_seconds",
        "process_resident_memory_bytes",
    ] {
        assert!(out.contains(expected), "{expected} in\n{out}");
    }
    stop(up);
}

/// Prints, for each sample with a value above 0 of the scrape, the metric
/// family and its label values (by label name); fails on anything the
/// parser refuses.
const METRICS_CHECK: &str = "
import os, urllib.request
from prometheus_client.openmetrics.parser import text_string_to_metric_families
text = urllib.request.urlopen(os.environ[\"CHUYI_METRICS_URL\"]).read().decode()
for family in text_string_to_metric_families(text):
    for s in family.samples:
        if s.value > 0 and not s.name.endswith((\"_bucket\", \"_created\")):
            print(family.name, *[v for k, v in sorted(s.labels.items()) if k != \"le\"], s.value)
";

/// Runs `script` in bash after sourcing `env` (up.env's text), with a
/// clean AWS configuration.
fn with_env(env: &str, script: &str) -> (bool, String) {
    let home = tempfile::tempdir().expect("home");
    let out = Command::new("bash")
        .args(["-c", &format!("{env}\n{script}")])
        .env("HOME", home.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("bash");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Every sample of every process's `/metrics` (the frontends', the
/// member's and the nodes', at the URLs up.env names), read with
/// Prometheus's own Python parser, which fails on anything malformed.
#[derive(Debug)]
struct Sample {
    /// `frontend`, `meta` or `node<N>` (N from 1, in up.env's order).
    process: String,
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

const SCRAPE_ALL: &str = "
import os, urllib.request
from prometheus_client.openmetrics.parser import text_string_to_metric_families
urls = [(\"frontend\", os.environ[\"CHUYI_METRICS_URL\"]), (\"meta\", os.environ[\"CHUYI_META_METRICS_URL\"])]
urls += [(f\"node{i + 1}\", u) for i, u in enumerate(os.environ[\"CHUYI_NODE_METRICS_URLS\"].split())]
for process, url in urls:
    try:
        text = urllib.request.urlopen(url, timeout=10).read().decode()
    except OSError:
        continue
    for family in text_string_to_metric_families(text):
        print(process, \"family\", family.name, family.type, 0, sep=\"\\t\")
        for s in family.samples:
            labels = \",\".join(f\"{k}={v}\" for k, v in sorted(s.labels.items()))
            print(process, \"sample\", s.name, labels, s.value, sep=\"\\t\")
";

/// The samples (and, as samples named `family:<name>` with the type as
/// their one label, the families) of every process that answers.
fn scrape_all(env: &str) -> Vec<Sample> {
    let (ok, out) = with_env(env, &format!("python3 -c '{SCRAPE_ALL}'"));
    assert!(ok, "a /metrics endpoint that Prometheus's parser refuses:\n{out}");
    out.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            let [process, kind, name, labels, value] = f[..] else { return None };
            if kind == "family" {
                let labels = vec![("type".to_string(), labels.to_string())];
                return Some(Sample { process: process.into(), name: format!("family:{name}"), labels, value: 0.0 });
            }
            let labels = labels
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let name = name.to_string();
            Some(Sample { process: process.into(), name, labels, value: value.parse().ok()? })
        })
        .collect()
}

fn sum(samples: &[Sample], process_prefix: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.process.starts_with(process_prefix) && s.name == name)
        .filter(|s| labels.iter().all(|(k, v)| s.label(k) == Some(v)))
        .map(|s| s.value)
        .sum()
}

/// The names of the metrics a PromQL file uses (`chuyi_...` words, not
/// prefixes such as `chuyi_nbd_*` in comments).
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("chuyi_") {
        let word: String = rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        rest = &rest[at + word.len()..];
        if !word.ends_with('_') {
            names.insert(word);
        }
    }
    names
}

/// Metrics on every process of `chuyi up`, as Prometheus would scrape
/// them: the alert rules pass their unit tests and the prometheus.yml up
/// writes passes promtool; every endpoint parses; a write moves the nodes'
/// disk and forward counters; the member reports the cluster; every metric
/// the rules and the dashboard name is served; and a storage node killed
/// with SIGKILL shows as down while the others backfill.
#[test]
fn every_process_serves_metrics_the_rules_and_dashboard_use_and_a_killed_node_shows() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let rules = repo.join("ops/prometheus");
    let promtool = |args: &[&str], dir: &Path| {
        let out =
            Command::new("promtool").args(args).current_dir(dir).output().expect("promtool (make deps installs it)");
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (ok, out) = promtool(&["test", "rules", "chuyi-alerts.test.yml"], &rules);
    assert!(ok, "the alert rules' unit tests: {out}");

    let dir = tempfile::tempdir().expect("tempdir");
    let port_base = free_port_base();
    let mut up = start(dir.path(), port_base, port_base + 150);
    let uri = wait_up(dir.path(), &mut up);
    let env = std::fs::read_to_string(dir.path().join("up.env")).expect("up.env");
    let (ok, out) = promtool(&["check", "config", "prometheus.yml"], dir.path());
    assert!(ok, "the prometheus.yml chuyi up wrote: {out}");
    let shipped = std::fs::read_to_string(rules.join("chuyi-alerts.yml")).expect("rules");
    let written = std::fs::read_to_string(dir.path().join("chuyi-alerts.yml")).expect("rules up wrote");
    assert_eq!(shipped, written, "up writes the repository's rules, unchanged");

    let before = scrape_all(&env);
    for process in ["frontend", "meta", "node1", "node2", "node3"] {
        assert!(before.iter().any(|s| s.process == process), "{process} serves /metrics: {before:?}");
    }
    let (ok, out) = qemu_io(&uri, "write -P 0x5a 0 4M");
    assert!(ok && !out.contains("error"), "{out}");
    let after = scrape_all(&env);
    let written = |s: &[Sample]| sum(s, "node", "chuyi_node_disk_io_bytes_total", &[("op", "write")]);
    assert!(written(&after) - written(&before) >= 8.0 * 1048576.0, "4 MiB on two replicas reach the disks");
    let forwards = |s: &[Sample]| sum(s, "node", "chuyi_node_forwards_total", &[]);
    assert!(forwards(&after) > forwards(&before), "the primaries forwarded the write");
    assert!(sum(&after, "node", "chuyi_node_disk_io_duration_seconds_count", &[("op", "write")]) > 0.0);
    assert_eq!(sum(&after, "meta", "chuyi_meta_raft_is_leader", &[]), 1.0, "the only member leads");
    assert_eq!(sum(&after, "meta", "chuyi_meta_node_up", &[]), 3.0, "three nodes up");
    assert_eq!(sum(&after, "meta", "chuyi_meta_pgs", &[("state", "clean")]), 128.0, "two pools of 64 PGs, clean");
    assert!(sum(&after, "meta", "chuyi_meta_proposed_commands_total", &[]) >= 1.0);

    // Compression and encryption count the bytes through them: an S3
    // object in a bucket that compresses and seals, and an encrypted
    // volume written and read over NBD.
    let (ok, out) = with_env(
        &env,
        "set -e; s3() { aws --endpoint-url $CHUYI_S3_ENDPOINT s3 \"$@\" >/dev/null; }; \
         s3 mb s3://sealed; chuyi bucket set sealed --compression capacity --encryption sm4; \
         head -c 1048576 /dev/zero > $HOME/zeros; s3 cp $HOME/zeros s3://sealed/z; \
         s3 cp s3://sealed/z $HOME/back; cmp $HOME/zeros $HOME/back; \
         if s3 ls s3://no-such-bucket 2>/dev/null; then echo listed a missing bucket; exit 1; fi; \
         chuyi volume create secret1 --size 64M --encrypt",
    );
    assert!(ok, "{out}");
    let secret = uri.rsplit_once('/').map(|(at, _)| format!("{at}/secret1")).expect("an NBD URI");
    let (ok, out) = qemu_io(&secret, "write -P 0x33 0 1M");
    assert!(ok && !out.contains("error"), "{out}");
    let (ok, out) = qemu_io(&secret, "read -P 0x33 0 1M");
    assert!(ok && !out.contains("verification failed"), "{out}");
    let sealed = scrape_all(&env);
    let mib = 1048576.0;
    let zstd = [("codec", "zstd")];
    let compressed_in = sum(&sealed, "frontend", "chuyi_s3_compression_input_bytes_total", &zstd);
    let compressed_out = sum(&sealed, "frontend", "chuyi_s3_compression_output_bytes_total", &zstd);
    assert_eq!(compressed_in, mib, "the object's bytes went into zstd");
    assert!(compressed_out > 0.0 && compressed_out < mib / 10.0, "a MiB of zeros stored in {compressed_out} bytes");
    assert_eq!(sum(&sealed, "frontend", "chuyi_s3_decompressed_bytes_total", &zstd), mib, "and came back out");
    assert_eq!(sum(&sealed, "frontend", "chuyi_s3_encrypted_bytes_total", &[("algorithm", "SM4")]), mib);
    assert_eq!(sum(&sealed, "frontend", "chuyi_s3_decrypted_bytes_total", &[("algorithm", "SM4")]), mib);
    // The same requests per bucket; a bucket that does not exist is no label.
    for class in ["put", "get"] {
        let labels = [("bucket", "sealed"), ("class", class)];
        assert!(sum(&sealed, "frontend", "chuyi_s3_bucket_requests_total", &labels) >= 1.0, "a {class} of sealed");
    }
    let timed = sum(&sealed, "frontend", "chuyi_s3_bucket_request_duration_seconds_count", &[("bucket", "sealed")]);
    assert!(timed >= 2.0, "the PUT and the GET of sealed were timed");
    let bucket = [("bucket", "sealed")];
    assert!(sum(&sealed, "frontend", "chuyi_s3_bucket_received_bytes_total", &bucket) >= mib);
    assert!(sum(&sealed, "frontend", "chuyi_s3_bucket_sent_bytes_total", &bucket) >= mib);
    assert!(!sealed.iter().any(|s| s.label("bucket") == Some("no-such-bucket")), "a stranger's name is no label");
    for op in ["write", "read"] {
        let labels = [("volume", "secret1"), ("op", op)];
        assert_eq!(sum(&sealed, "frontend", "chuyi_nbd_encrypted_bytes_total", &labels), mib, "{op} of secret1");
    }
    assert_eq!(sum(&sealed, "frontend", "chuyi_nbd_encrypted_bytes_total", &[("volume", "vol0")]), 0.0, "plain vol0");

    let samples: std::collections::BTreeSet<&str> = after.iter().map(|s| s.name.as_str()).collect();
    // Each family with the suffixes its type gives its samples: a family
    // with none yet (no S3 request made) is served by its name alone.
    let families: std::collections::BTreeSet<(String, String)> = after
        .iter()
        .filter_map(|s| Some((s.name.strip_prefix("family:")?.to_string(), s.label("type")?.to_string())))
        .collect();
    fn suffixes(kind: &str) -> &'static [&'static str] {
        match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_count", "_sum"],
            _ => &[""],
        }
    }
    let served = |name: &str| {
        samples.contains(name)
            || families.iter().any(|(family, kind)| suffixes(kind).iter().any(|s| format!("{family}{s}") == name))
    };
    let dashboard = std::fs::read_to_string(repo.join("ops/grafana/chuyi-dashboard.json")).expect("dashboard");
    for name in metric_names(&shipped).into_iter().chain(metric_names(&dashboard)) {
        assert!(served(&name), "{name}, which the rules or the dashboard use, is served as its type names it");
    }

    // A node killed: the member marks it down and the map moves on; the
    // others backfill the PGs it held.
    let epoch = sum(&after, "meta", "chuyi_meta_map_epoch", &[]);
    // A block in each of 64 chunks (4 MiB apart), read back through the
    // freeze below.
    let spread = |cmd: &str| (1..=64u64).map(|i| format!("{cmd} {} 4k", (i * 4) << 20)).collect::<Vec<_>>();
    let (ok, out) = qemu_io_all(&uri, &spread("write -P 0x77"));
    assert!(ok && !out.contains("error"), "{out}");
    let backfills = sum(&after, "node", "chuyi_node_backfills_total", &[]);
    let config = dir.path().join("node3.toml");
    let signal = |sig: &str| {
        let sent = Command::new("pkill").args([sig, "-f"]).arg(format!("node --config {}", config.display())).status();
        assert!(sent.expect("pkill").success(), "node 3 found and sent {sig}");
    };
    // Frozen first: its sockets stay open and it is marked down only at
    // the heartbeat timeout (a killed node is marked down at once). A new
    // NBD connection raises the volume's fence on every node, so the
    // frozen one holds that call until it times out and it is tried
    // again with the newer map.
    let newer_map = |s: &[Sample]| sum(s, "frontend", "chuyi_client_chunk_retries_total", &[("reason", "newer_map")]);
    let before_freeze = newer_map(&scrape_all(&env));
    signal("-STOP");
    let (ok, out) = qemu_io_all(&uri, &spread("read -P 0x77"));
    let through = scrape_all(&env);
    // Killed before anything is checked, so a failed check leaves no
    // frozen node behind.
    signal("-KILL");
    assert!(ok && !out.contains("verification failed") && !out.contains("error"), "read through the freeze: {out}");
    assert!(newer_map(&through) > before_freeze, "the fence call the frozen node held was tried again");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let now = scrape_all(&env);
        let down = sum(&now, "meta", "chuyi_meta_node_up", &[("node", "3")]) == 0.0
            && now
                .iter()
                .any(|s| s.process == "meta" && s.name == "chuyi_meta_node_up" && s.label("node") == Some("3"));
        let moved = sum(&now, "meta", "chuyi_meta_map_epoch", &[]) > epoch;
        // Counted by the survivors: node 3's own count is gone with it.
        let survivors = sum(&now, "node1", "chuyi_node_backfills_total", &[])
            + sum(&now, "node2", "chuyi_node_backfills_total", &[]);
        let before_kill = backfills - sum(&after, "node3", "chuyi_node_backfills_total", &[]);
        let backfilled = survivors > before_kill;
        let gone = !now.iter().any(|s| s.process == "node3");
        if down && moved && backfilled && gone {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 3 down {down}, epoch moved {moved}, backfills {backfilled}, its endpoint gone {gone}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    stop(up);
}

/// What the console showed headless Chromium: the login's outcome and,
/// by path, each page's text and HTML (cli/tests/console_browser.py).
#[derive(Debug, serde::Deserialize)]
struct Browsed {
    bad_login_problem: Option<String>,
    bad_login_then: Option<String>,
    login_problem: Option<String>,
    after_login: String,
    pages: std::collections::HashMap<String, BrowsedPage>,
}

#[derive(Debug, serde::Deserialize)]
struct BrowsedPage {
    url: String,
    text: String,
    html: String,
}

/// Where the console test leaves its screenshots (kept after the run).
fn screenshot_dir() -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// Logs in to the console in headless Chromium and opens `paths`, saving
/// screenshots named `name-<page>.png`.
fn browse(env: &str, name: &str, bad_login: bool, paths: &[&str]) -> Browsed {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console_browser.py");
    let mut args = vec![
        "python3".to_string(),
        script.display().to_string(),
        "\"$CHUYI_CONSOLE_URL\"".into(),
        screenshot_dir().display().to_string(),
        name.into(),
    ];
    if bad_login {
        args.push("--bad-login".into());
    }
    args.extend(paths.iter().map(|p| p.to_string()));
    let (ok, out) = with_env(env, &args.join(" "));
    assert!(ok, "the browser run failed:\n{out}");
    let json = out.lines().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no result:\n{out}"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

/// Browses `path` until its page satisfies `done`, for at most `limit`;
/// the last page seen.
fn browse_until(
    env: &str,
    name: &str,
    path: &str,
    limit: Duration,
    done: impl Fn(&BrowsedPage) -> bool,
) -> BrowsedPage {
    let deadline = Instant::now() + limit;
    loop {
        let mut seen = browse(env, name, false, &[path]);
        let page = seen.pages.remove(path).expect("the page");
        if done(&page) {
            return page;
        }
        assert!(Instant::now() < deadline, "{path} never showed what was waited for:\n{}", page.text);
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// The web console on `chuyi up`, in headless Chromium: a wrong secret key
/// is refused and pages stay behind the login; the administrator up.env
/// names logs in and every page shows the cluster (three nodes up, the
/// volumes with their attachment, a bucket with its objects, charts); a
/// volume being read shows IOPS; a storage node killed with SIGKILL shows
/// as down, and a PG recovering shows its progress. Screenshots are kept
/// in the target's tmp dir (console-screenshots/).
#[test]
fn the_console_shows_the_cluster_a_killed_node_down_and_recovery_progress() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port_base = free_port_base();
    // Backfill at 1 MB/s: the PGs stay recovering after the kill long
    // enough to be seen so.
    let mut up = start_with(dir.path(), port_base, port_base + 150, &["--recovery-mb-per-s", "1"]);
    let uri = wait_up(dir.path(), &mut up);
    let env = std::fs::read_to_string(dir.path().join("up.env")).expect("up.env");
    assert!(env.contains(&format!("CHUYI_CONSOLE_URL=https://127.0.0.1:{}/", port_base + 102)), "{env}");
    let (ok, out) = qemu_io(&uri, "write -P 0x5a 0 48M");
    assert!(ok && !out.contains("error"), "{out}");
    let (ok, out) = with_env(
        &env,
        "set -e; aws --endpoint-url $CHUYI_S3_ENDPOINT s3 mb s3://scans >/dev/null; \
         head -c 100000 /dev/zero > $HOME/zeros; \
         aws --endpoint-url $CHUYI_S3_ENDPOINT s3 cp $HOME/zeros s3://scans/a/1.dcm >/dev/null; \
         c() { curl -s --cacert $AWS_CA_BUNDLE -o /dev/null \"$@\"; }; \
         c -w '%{http_code} %{redirect_url}' $CHUYI_CONSOLE_URL; echo; \
         c -w '%{http_code} %{redirect_url}' ${CHUYI_CONSOLE_URL}nodes; echo; \
         c -w '%{http_code}' -X POST -H 'Origin: https://elsewhere' ${CHUYI_CONSOLE_URL}login; echo; \
         curl -s -o /dev/null -w '%{http_code}' http://${CHUYI_CONSOLE_URL#https://} || true",
    );
    assert!(ok, "{out}");
    let login = format!("https://127.0.0.1:{}/login", port_base + 102);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [format!("303 {login}"), format!("303 {login}"), "403".to_string(), "000".to_string()],
        "no page without a login; no login posted from another site; no plain HTTP"
    );

    let all = ["/", "/nodes", "/pgs", "/volumes", "/buckets"];
    let first = browse(&env, "healthy", true, &all);
    assert!(
        first.bad_login_problem.as_deref().is_some_and(|p| p.contains("wrong access key or secret key")),
        "{first:?}"
    );
    assert!(first.bad_login_then.as_deref().is_some_and(|u| u.ends_with("/login")), "still not logged in");
    assert_eq!(first.login_problem, None);
    assert!(!first.after_login.ends_with("/login"), "logged in: {}", first.after_login);
    let page = |p: &str| first.pages.get(p).unwrap_or_else(|| panic!("{p} browsed"));
    for p in all {
        assert!(!page(p).url.ends_with("/login"), "{p} shown after login");
        assert!(page(p).text.contains("console-admin"), "{p} names the user: {}", page(p).text);
    }
    let overview = page("/");
    assert!(overview.text.contains("nodes 3/3 up"), "{}", overview.text);
    assert!(overview.html.contains("<figure class=\"chart\">") && overview.text.contains("Volume IOPS"));
    assert!(overview.text.contains("Capacity by class") && overview.text.contains("ssd"));
    assert_eq!(page("/nodes").html.matches("class=\"badge ok\">up</span>").count(), 3 + 6, "nodes and disks up");
    let volumes = &page("/volumes").text;
    assert!(volumes.contains("vol0") && volumes.contains("vm0") && volumes.contains("attached"), "{volumes}");
    let buckets = &page("/buckets").text;
    assert!(buckets.contains("scans") && buckets.contains("local"), "{buckets}");

    // Reads while the volumes page is watched: vol0 shows IOPS.
    let reader = Command::new("bash")
        .args(["-c", &format!("for i in $(seq 60); do qemu-io -f raw -c 'read 0 16M' '{uri}' >/dev/null; done")])
        .spawn()
        .expect("reader");
    // The reads' own count: "(N r, M w)" with N above zero.
    let reads_now = |row: &str| {
        let after = row.split("</span> (").nth(1)?;
        after.split(" r,").next()?.parse::<u64>().ok()
    };
    let busy = browse_until(&env, "reading", "/volumes", Duration::from_secs(60), |p| {
        p.html.split("<tr>").any(|row| row.contains(">vol0<") && reads_now(row).is_some_and(|r| r > 0))
    });
    assert!(busy.text.contains("vol0"));
    let mut reader = reader;
    let _ = reader.kill();
    let _ = reader.wait();
    let _ = Command::new("pkill").args(["-f", "qemu-io -f raw -c read 0 16M"]).status();

    let config = dir.path().join("node3.toml");
    let killed =
        Command::new("pkill").args(["-KILL", "-f"]).arg(format!("node --config {}", config.display())).status();
    assert!(killed.expect("pkill").success(), "node 3 found and killed");
    let nodes = browse_until(&env, "node-killed", "/nodes", Duration::from_secs(60), |p| {
        p.html.contains("data-node=\"3\"><span class=\"badge error\">down</span>")
    });
    assert!(nodes.html.contains("data-node=\"1\"><span class=\"badge ok\">up</span>"), "the others stay up");
    let pgs = browse_until(&env, "recovering", "/pgs", Duration::from_secs(90), |p| {
        p.html.contains("<span class=\"pg-progress\"><progress") && p.text.contains("recovering")
    });
    assert!(pgs.html.contains("class=\"badge warning\">recovering</span>"), "{}", pgs.text);
    let overview = browse(&env, "recovering", false, &["/"]).pages.remove("/").expect("overview");
    assert!(overview.text.contains("node 3 is down") && overview.text.contains("nodes 2/3 up"), "{}", overview.text);
    stop(up);
}
