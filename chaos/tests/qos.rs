//! QoS held across gateways: two users read one bucket through two `chuyi
//! s3` processes with boto3 (`s3-clients/qos_load.py`); one of them is
//! capped by a user-on-bucket rule set with `chuyi qos set`. Its total over
//! both gateways stays at the cap, the other user is not slowed, a rule
//! changed under load applies within two seconds, a request rate is held
//! with 503 SlowDown past a short wait, and `chuyi qos status` counts it.

use std::path::PathBuf;
use std::process::Command as Process;
use std::time::{Duration, Instant};

use chuyi_chaos::cluster::{free_port, GatewayProcess, S3Keys as Keys, Spec, TestCluster};
use serde_json::Value;

const MB: f64 = 1_000_000.0;
const BIG: usize = 1 << 20;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/s3-clients/qos_load.py")
}

/// Runs qos_load.py with `args`; its JSON.
fn load_script(args: &[String]) -> Value {
    let out = Process::new("python3").arg(script()).args(args).output().expect("python3");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "qos_load.py {args:?}: {text}{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

struct Setup {
    cluster: TestCluster,
    _gateways: Vec<GatewayProcess>,
    endpoints: Vec<String>,
    /// The first gateway's Prometheus metrics.
    metrics: String,
    edge: Keys,
    ward: Keys,
}

async fn setup() -> Setup {
    let cluster = TestCluster::start(Spec::default()).await.expect("cluster");
    cluster.create_pool().await.expect("pool");
    cluster.wait_clean(Duration::from_secs(30)).await.expect("clean");
    let (edge, ward) = (cluster.s3_user("edge").expect("edge"), cluster.s3_user("ward").expect("ward"));
    let mut gateways = Vec::new();
    let mut endpoints = Vec::new();
    let metrics_addr = format!("127.0.0.1:{}", free_port().expect("port"));
    for i in 0..2 {
        let listen = format!("127.0.0.1:{}", free_port().expect("port"));
        let args: &[&str] = if i == 0 { &["--metrics-listen", &metrics_addr] } else { &[] };
        gateways.push(cluster.s3_gateway(&listen, args).await.expect("chuyi s3"));
        endpoints.push(format!("http://{listen}"));
    }
    let owner = format!("edge:{}:{}", edge.access, edge.secret);
    let args: Vec<String> = ["setup", "--endpoint", &endpoints[0], "--owner", &owner, "--reader", "ward"]
        .into_iter()
        .chain(["--bucket", "scans", "--object", &format!("big:{BIG}"), "--object", "small:4096"])
        .map(String::from)
        .collect();
    tokio::task::spawn_blocking(move || load_script(&args)).await.expect("setup");
    Setup { cluster, _gateways: gateways, endpoints, metrics: format!("http://{metrics_addr}/metrics"), edge, ward }
}

/// One user's part of a load: its name, keys and threads.
fn user(name: &str, keys: &Keys, threads: u32) -> String {
    format!("{name}:{}:{}:{threads}", keys.access, keys.secret)
}

/// Reads `key` for `seconds` as `users`, through every gateway.
async fn load(s: &Setup, key: &str, seconds: f64, users: &[String]) -> Value {
    let mut args: Vec<String> =
        ["load", "--endpoints", &s.endpoints.join(","), "--bucket", "scans", "--key", key, "--seconds"]
            .into_iter()
            .map(String::from)
            .collect();
    args.push(seconds.to_string());
    for u in users {
        args.extend(["--user".to_string(), u.clone()]);
    }
    tokio::task::spawn_blocking(move || load_script(&args)).await.expect("load")
}

/// What a user of a load got from `from` to `to` seconds after its
/// start: (successful requests per second, bytes per second, slowdowns).
fn rate(result: &Value, name: &str, from: f64, to: f64) -> (f64, f64, u64) {
    let u = &result["users"][name];
    assert_eq!(u["errors"].as_u64(), Some(0), "{name} met errors: {}", u["first_error"]);
    let (mut ok, mut bytes, mut slow) = (0.0, 0.0, 0);
    for entry in u["series"].as_array().expect("series") {
        let t = entry[0].as_f64().expect("t");
        if t >= from && t < to {
            ok += entry[1].as_f64().expect("ok");
            bytes += entry[2].as_f64().expect("bytes");
            slow += entry[3].as_u64().expect("slowdowns");
        }
    }
    (ok / (to - from), bytes / (to - from), slow)
}

fn chuyi(cluster: &TestCluster, args: &[&str]) -> String {
    let (ok, out, err) = cluster.cli(args).expect("chuyi");
    assert!(ok, "chuyi {args:?}: {out}{err}");
    out
}

/// The status of the rule of user edge on bucket scans.
fn edge_status(cluster: &TestCluster) -> Value {
    let status: Value = serde_json::from_str(&chuyi(cluster, &["--json", "qos", "status"])).expect("status JSON");
    let rules = status.as_array().expect("rules");
    rules.iter().find(|r| r["user"] == "edge" && r["bucket"] == "scans").cloned().expect("edge's rule in the status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_capped_user_is_held_to_its_rates_across_two_gateways_and_others_are_not() {
    let s = setup().await;
    let (edge, ward) = (user("edge", &s.edge, 4), user("ward", &s.ward, 4));

    // No rule: both read as fast as the machine lets them.
    let free = load(&s, "big", 10.0, &[edge.clone(), ward.clone()]).await;
    let (_, ward_free, _) = rate(&free, "ward", 1.0, 10.0);
    let (_, edge_free, _) = rate(&free, "edge", 1.0, 10.0);
    println!("no rule: edge {:.1} MB/s, ward {:.1} MB/s", edge_free / MB, ward_free / MB);
    assert!(edge_free > 30.0 * MB, "the machine must serve well above the cap for the test to mean anything");

    // 20 MB/s and 50 requests/s for edge on scans, over both gateways.
    chuyi(&s.cluster, &["qos", "set", "--user", "edge", "--bucket", "scans", "--download", "20000000"]);
    chuyi(&s.cluster, &["qos", "set", "--user", "edge", "--bucket", "scans", "--requests", "50"]);
    let listed = chuyi(&s.cluster, &["--json", "qos", "list"]);
    let listed: Value = serde_json::from_str(&listed).expect("list JSON");
    assert_eq!(listed[0]["limits"]["download"], 20_000_000, "{listed}");
    assert_eq!(listed[0]["limits"]["requests"], 50, "{listed}");
    // Every gateway learns rules within a second or two.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let capped = load(&s, "big", 30.0, &[edge.clone(), ward.clone()]).await;
    let (_, edge_capped, edge_slow) = rate(&capped, "edge", 0.0, 30.0);
    let (_, ward_capped, _) = rate(&capped, "ward", 1.0, 30.0);
    println!("20 MB/s rule: edge {:.2} MB/s, ward {:.1} MB/s", edge_capped / MB, ward_capped / MB);
    assert!((edge_capped / (20.0 * MB) - 1.0).abs() <= 0.10, "edge at {:.2} MB/s against 20", edge_capped / MB);
    assert_eq!(edge_slow, 0, "bytes are paced, never refused: 1 MiB GETs stay under 50 requests/s");
    assert!(ward_capped >= 0.9 * ward_free, "ward slowed: {ward_capped} against {ward_free} bytes/s with no rule");
    let status = edge_status(&s.cluster);
    assert!(status["delayed"].as_u64() > Some(0) && status["delayed_ms"].as_u64() > Some(1000), "{status}");
    assert_eq!(status["frontends"], 2, "both gateways report the rule: {status}");

    // Small objects: the request rate binds. 64 readers queue for more
    // than the second a request may wait: past it, 503 SlowDown, and the
    // rest are served at the rate.
    let small = load(&s, "small", 15.0, &[user("edge", &s.edge, 64)]).await;
    let (edge_rps, _, slowdowns) = rate(&small, "edge", 2.0, 15.0);
    println!("50 requests/s rule: edge {edge_rps:.1} requests/s, {slowdowns} slowdowns");
    assert!((edge_rps / 50.0 - 1.0).abs() <= 0.10, "edge at {edge_rps:.1} requests/s against 50");
    assert!(slowdowns > 0, "64 readers against 50 requests/s must meet SlowDown");
    let status = edge_status(&s.cluster);
    assert!(status["refused"].as_u64() >= Some(slowdowns), "{status}");
    // The gateway's own metrics count its part, in Prometheus's format.
    let url = s.metrics.clone();
    let scraped = tokio::task::spawn_blocking(move || {
        let script = "import sys, urllib.request\n\
            from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\n\
            for f in parse(urllib.request.urlopen(sys.argv[1]).read().decode()):\n\
            \x20   for s in f.samples:\n\
            \x20       print(s.name, s.labels.get('scope', ''), s.labels.get('code', ''), s.value)\n";
        Process::new("python3").args(["-c", script, &url]).output().expect("python3")
    })
    .await
    .expect("scrape");
    let text = String::from_utf8_lossy(&scraped.stdout);
    assert!(scraped.status.success(), "{text}{}", String::from_utf8_lossy(&scraped.stderr));
    let value = |prefix: &str| -> f64 {
        text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
    };
    assert!(value("chuyi_s3_qos_refused_total user edge on bucket scans") > 0.0, "{text}");
    assert!(value("chuyi_s3_qos_delayed_seconds_total user edge on bucket scans") > 1.0, "{text}");
    assert!(value("chuyi_s3_requests_total  503") > 0.0, "SlowDowns counted by status: {text}");

    // A rule changed under load applies within two seconds.
    let at = Instant::now();
    let change = tokio::spawn({
        let cluster_cli = s.cluster.command();
        async move {
            tokio::time::sleep(Duration::from_secs(6)).await;
            let mut cli = cluster_cli;
            let changed = Instant::now();
            let out = cli
                .args(["qos", "set", "--user", "edge", "--bucket", "scans", "--download", "8000000"])
                .output()
                .expect("chuyi qos set");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            changed
        }
    });
    let changing = load(&s, "big", 14.0, std::slice::from_ref(&edge)).await;
    let changed = change.await.expect("change").duration_since(at).as_secs_f64();
    // The load starts half a second after it is launched.
    let changed = changed - 0.5;
    let (_, before, _) = rate(&changing, "edge", 2.0, changed);
    let (_, after, _) = rate(&changing, "edge", changed + 2.0, 14.0);
    println!("changed at {changed:.1}s: edge {:.1} MB/s before, {:.1} MB/s from 2 s after", before / MB, after / MB);
    assert!((before / (20.0 * MB) - 1.0).abs() <= 0.15, "before the change: {before}");
    assert!((after / (8.0 * MB) - 1.0).abs() <= 0.15, "from 2 s after the change: {after}");

    // Deleted, the rule holds no more.
    chuyi(&s.cluster, &["qos", "delete", "--user", "edge", "--bucket", "scans"]);
    let listed = chuyi(&s.cluster, &["qos", "list"]);
    assert!(!listed.contains("edge"), "{listed}");
}
