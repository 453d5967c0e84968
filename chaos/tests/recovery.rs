//! Backfill as an operator sees it: progress in `chuyi status` (percent,
//! rate, ETA) while a throttled backfill runs, and a backfill that resumes
//! after its primary is killed and restarted without sending everything
//! again.

use std::process::Command as Process;
use std::time::Duration;

use bytes::Bytes;
use chuyi_chaos::cluster::{chuyi_bin, eventually, Spec, TestCluster};
use chuyi_common::ids::{ChunkId, NodeId};

const MIB: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backfill_shows_progress_and_resumes_after_a_restart() {
    // 4 MB/s per node: a backfill of a few chunks takes seconds.
    let spec = Spec { nodes: 3, recovery_mb_per_s: 4, heartbeat_timeout_ms: 5000, ..Spec::default() };
    let mut cluster = TestCluster::start(spec).await.expect("cluster");
    cluster.create_volume("v", 64).await.expect("volume");
    cluster.wait_clean(Duration::from_secs(30)).await.expect("clean");
    let client = cluster.client(Duration::from_secs(60)).await.expect("client");
    let vol = client.open_volume("v").await.expect("open");
    for i in 0..48 {
        let data: Vec<u8> = (0..MIB).map(|b| (b as u8) ^ (i as u8) | 1).collect();
        vol.write(i * MIB, Bytes::from(data), false).await.expect("fill");
    }

    // What each survivor, as primary, will have to send: the 12 written
    // chunks of the PGs it shares with node 3 (it is their only complete
    // replica once node 3 is gone).
    let owner = vol.volume().id;
    let before = cluster.map().await.expect("map");
    let share = |node: NodeId| -> u64 {
        let with_3 = |i: u64| {
            before.locate(ChunkId::new(owner, i)).is_some_and(|(_, pg)| {
                pg.replicas.iter().any(|r| r.node == 3) && pg.replicas.iter().any(|r| r.node == node)
            })
        };
        (0..12).filter(|&i| with_3(i)).count() as u64 * 4 * MIB
    };
    cluster.kill_node(3).expect("kill");
    // A survivor part-way through, with progress.
    let (primary, progress) = eventually(Duration::from_secs(30), "a backfill part-way", || async {
        for node in [1, 2] {
            let report = cluster.node_report(node).await.ok()?;
            let running = report.recoveries.iter().find(|p| p.bytes_copied > 0 && p.chunks_done < p.chunks_total);
            if let Some(p) = running.filter(|_| report.backfill_bytes >= 2 * MIB && report.backfill_bytes < share(node))
            {
                return Some((node as NodeId, p.clone()));
            }
        }
        None
    })
    .await;
    assert!(progress.percent() < 100.0 && progress.rate() > 0.0, "{progress:?}");

    // `chuyi status` shows it.
    let out = Process::new(chuyi_bin().expect("bin"))
        .args(["--meta", &cluster.meta_addrs().join(","), "--secret-file"])
        .arg(cluster.dir().join("secret"))
        .arg("status")
        .env("RUST_LOG", "warn")
        .output()
        .expect("chuyi status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("recovery: ") && text.contains("% of their chunks compared"), "{text}");
    assert!(text.contains("ETA") && text.contains("/s"), "{text}");

    // Kill the backfilling primary and start it again at once (within the
    // heartbeat timeout, so its PGs stay put): its backfills start over,
    // and what was already copied compares equal and is not sent again.
    let sent_before = cluster.node_report(primary).await.expect("report").backfill_bytes;
    cluster.kill_node(primary).expect("kill primary");
    cluster.restart_node(primary).expect("restart primary");
    cluster.wait_clean(Duration::from_secs(120)).await.expect("clean again");
    let sent_after = eventually(Duration::from_secs(10), "the restarted node's report", || async {
        cluster.node_report(primary).await.ok().map(|r| r.backfill_bytes)
    })
    .await;
    let owed = share(primary);
    assert!(
        sent_before + sent_after <= owed + MIB,
        "node {primary} owed {owed} bytes; it sent {sent_before} before its restart and {sent_after} after"
    );
}
