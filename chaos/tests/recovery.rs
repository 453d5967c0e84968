//! Backfill as an operator sees it: progress in `chuyi status` (percent,
//! rate, ETA) while a throttled backfill runs, and a backfill that resumes
//! after its primary is killed and restarted without sending everything
//! again. And a block torn on both replicas by a crash of both, which
//! must come back as one of its writes, not as an error.

use std::process::Command as Process;
use std::time::Duration;

use bytes::Bytes;
use chuyi_chaos::cluster::{chuyi_bin, eventually, find_block, overwrite, Spec, TestCluster};
use chuyi_common::ids::{ChunkId, NodeId};
use chuyi_common::limits::BLOCK_SIZE_BYTES;

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

/// A crash of both replicas in the middle of one write can leave each copy
/// of a block torn: its new data landed, its new checksum did not (or the
/// other way round). Both copies then fail their checksums, and the block's
/// earlier content, acknowledged long before, would be lost to an error.
/// The torn state is made here by writing the new data into both nodes'
/// disk files while both are killed. Once they are back, the block reads
/// as the new data (the two copies agree, and each's checksum is its
/// write's), and both copies are whole again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_block_torn_on_both_replicas_reads_as_one_of_its_writes() {
    const BLOCK: usize = BLOCK_SIZE_BYTES;
    // Two nodes hold every PG; nobody is marked down while they restart;
    // scrub finds the copy the read did not mend.
    let spec = Spec { nodes: 2, heartbeat_timeout_ms: 60_000, scrub_mb_per_s: 500, ..Spec::default() };
    let mut cluster = TestCluster::start(spec).await.expect("cluster");
    cluster.create_volume("v", 16).await.expect("volume");
    cluster.wait_clean(Duration::from_secs(30)).await.expect("clean");
    let client = cluster.client(Duration::from_secs(60)).await.expect("client");
    let vol = client.open_volume("v").await.expect("open");
    let old = Bytes::from(vec![0x0Du8; BLOCK]);
    let new = Bytes::from(vec![0x4Eu8; BLOCK]);
    vol.write(3 * BLOCK as u64, old.clone(), true).await.expect("the old write");

    let chunk = ChunkId::new(vol.volume().id, 0);
    let map = cluster.map().await.expect("map");
    let (_, pg) = map.locate(chunk).expect("the chunk's PG");
    let replicas = pg.replicas.clone();
    assert_eq!(replicas.len(), 2, "two replicas");
    for r in &replicas {
        cluster.kill_node(r.node).expect("SIGKILL");
    }
    for r in &replicas {
        let file = cluster.disk_file(r.node).expect("disk file");
        let at = find_block(&file, &old).expect("read the disk file").expect("the old block on the disk");
        overwrite(&file, at, &new).expect("write the new data into the disk file");
    }
    for r in &replicas {
        cluster.restart_node(r.node).expect("restart");
    }

    let read = eventually(Duration::from_secs(60), "a read of the torn block", || async {
        vol.read(3 * BLOCK as u64, BLOCK as u64).await.ok()
    })
    .await;
    assert_eq!(read, new, "the torn block reads as its new write");
    for r in &replicas {
        let copy = eventually(Duration::from_secs(60), "each copy whole again", || async {
            cluster.read_replica(*r, chunk).await.ok()
        })
        .await;
        assert_eq!(copy.slice(3 * BLOCK..4 * BLOCK), new, "node {}'s copy", r.node);
    }
}
