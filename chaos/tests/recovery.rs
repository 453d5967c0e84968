//! Backfill as an operator sees it: progress in `chuyi status` (percent,
//! rate, ETA) while a throttled backfill runs, and a backfill that resumes
//! after its primary is killed and restarted without sending everything
//! again. A block torn on both replicas by a crash of both, which must
//! come back as one of its writes, not as an error. And a rebalance, which
//! keeps the replica it moves away from until the new one is filled: a
//! primary lost or a block rotten on it meanwhile loses nothing. Rot in a
//! snapshot's clone, mended as rot in a chunk is.

use std::process::Command as Process;
use std::time::Duration;

use bytes::Bytes;
use chuyi_chaos::cluster::{chuyi_bin, eventually, find_block, overwrite, Spec, TestCluster};
use chuyi_client::attach::attach;
use chuyi_client::volume::VolumeIo;
use chuyi_common::ids::{ChunkId, NodeId};
use chuyi_common::limits::BLOCK_SIZE_BYTES;
use chuyi_common::map::{DataMap, Replica};

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

/// A rebalance moves a replica make before break: a PG keeps the replica it
/// moves away from, written all along, until the new one is backfilled.
/// Here node 3 comes back to a cluster whose data sits on nodes 1 and 2, and
/// node 1 is killed while it backfills one of its PGs onto node 3. That PG
/// had one complete copy besides node 1's only because of the kept replica
/// (before, it named node 1 and the half-filled node 3 and stayed down with
/// node 1). Its kept replica on node 2 takes over as primary, node 3's
/// backfill finishes from it, and every byte reads back with node 1 gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_lost_during_a_rebalance_loses_nothing() {
    const CHUNKS: u64 = 12;
    // 2 MB/s: a chunk's backfill takes two seconds, long enough to kill
    // node 1 in the middle of one.
    let spec = Spec { nodes: 3, recovery_mb_per_s: 2, heartbeat_timeout_ms: 3000, ..Spec::default() };
    let chunk_data = |i: u64| Bytes::from((0..4 * MIB).map(|b| (b as u8) ^ (i as u8) | 1).collect::<Vec<u8>>());
    let (mut cluster, vol) = on_nodes_1_and_2(spec, CHUNKS, chunk_data).await;
    let owner = vol.volume().id;

    // Node 3 returns and draws PGs back. Catch one of node 1's PGs holding
    // data in the middle of its move, node 1 primary, node 2 kept.
    cluster.restart_node(3).expect("restart node 3");
    let moving = eventually(Duration::from_secs(60), "a PG of node 1 moving to node 3", || async {
        let map = cluster.map().await.ok()?;
        (0..CHUNKS).find_map(|i| {
            let (pg, pg_map) = map.locate(ChunkId::new(owner, i))?;
            let nodes: Vec<NodeId> = pg_map.replicas.iter().map(|r| r.node).collect();
            let to_3 = pg_map.recovering.iter().any(|r| r.node == 3);
            (nodes == [1, 3, 2] && to_3).then_some(pg)
        })
    })
    .await;
    cluster.kill_node(1).expect("kill node 1 mid-backfill");
    cluster.wait_node(1, false, Duration::from_secs(30)).await.expect("node 1 marked down");

    // Node 3 was still being filled, so the kept copy on node 2 took over
    // as primary (had node 3's backfill ended first, node 3 would be).
    let map = cluster.wait_clean(Duration::from_secs(120)).await.expect("clean on nodes 2 and 3");
    let nodes: Vec<NodeId> = map.pg(moving).expect("the PG").replicas.iter().map(|r| r.node).collect();
    assert_eq!(nodes, [2, 3], "PG {moving}: the kept copy is primary");
    for i in 0..CHUNKS {
        let read = vol.read(i * 4 * MIB, 4 * MIB).await.expect("read with node 1 gone");
        assert!(read == chunk_data(i), "chunk {i} reads back as written");
    }
}

/// A block rotten on the primary's copy while a rebalance backfills its PG
/// onto a returning node is mended from the replica the move keeps, not
/// poisoned on the new one (before, the primary was the PG's one complete
/// copy during the move, and the block was lost on both once the old
/// replica left).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rot_met_by_a_rebalance_is_mended_from_the_kept_replica() {
    const CHUNKS: u64 = 12;
    let spec = Spec { nodes: 3, heartbeat_timeout_ms: 3000, ..Spec::default() };
    let (mut cluster, vol) = on_nodes_1_and_2(spec, CHUNKS, unique_chunk).await;
    // Rot on node 1: block 5 of every chunk.
    let file = cluster.disk_file(1).expect("node 1's disk file");
    for i in 0..CHUNKS {
        rot(&file, &unique_block(i, 5));
    }

    let owner = vol.volume().id;
    let map = rebalance_onto_node_3(&mut cluster, owner, CHUNKS).await;
    for (i, new) in moved_onto_node_3(&map, owner, CHUNKS) {
        let copy = cluster.read_replica(new, ChunkId::new(owner, i)).await.expect("node 3's copy reads, not poisoned");
        assert!(copy == unique_chunk(i), "chunk {i}: node 3's copy is the data written");
    }
}

/// Rot in a snapshot's own copy of a chunk (its clone, made when the chunk
/// was written after the snapshot, the only place its old bytes are left)
/// is repaired as rot in the chunk is, from the other replica's clone: by a
/// snapshot read and by a snapshot diff that meet it on the primary, and by
/// a rebalance's backfill before it copies the clone onto the new replica.
/// Before, the read and the diff failed with a checksum error though node
/// 2's copy was good, and backfill poisoned the block on node 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rot_in_a_snapshot_is_mended_from_the_other_replica() {
    const CHUNKS: u64 = 12;
    let spec = Spec { nodes: 3, heartbeat_timeout_ms: 3000, ..Spec::default() };
    let (mut cluster, vol) = on_nodes_1_and_2(spec, CHUNKS, unique_chunk).await;
    let (ok, out, err) = cluster.cli(&["snapshot", "create", "v", "s1"]).expect("chuyi");
    assert!(ok, "{out}{err}");
    // Written again by a writer holding the lease (the snapshot fenced the
    // unleased one): the old bytes are then in the clones alone.
    let client = cluster.client(Duration::from_secs(60)).await.expect("client");
    let lease = attach(&client, vol.clone(), "test", Duration::from_secs(60)).await.expect("attach");
    for i in 0..CHUNKS {
        lease.vol.write(i * 4 * MIB, Bytes::from(vec![0xEE; 4 * MIB as usize]), false).await.expect("overwrite");
    }
    let owner = vol.volume().id;
    let file = cluster.disk_file(1).expect("node 1's disk file");
    let map = cluster.map().await.expect("map");
    let primary_1: Vec<u64> = (0..CHUNKS)
        .filter(|&i| map.locate(ChunkId::new(owner, i)).is_some_and(|(_, pg)| pg.replicas[0].node == 1))
        .collect();
    let &[first, ..] = primary_1.as_slice() else { panic!("node 1 is primary of no chunk") };
    let node_1 = |i: u64| map.locate(ChunkId::new(owner, i)).and_then(|(_, pg)| pg.on_node(1)).expect("on node 1");

    // A snapshot read.
    rot(&file, &unique_block(first, 5));
    let snapshot = vol.at_snapshot(1);
    let read = snapshot.read(first * 4 * MIB, 4 * MIB).await.expect("the snapshot reads");
    assert!(read == unique_chunk(first), "chunk {first} reads as the snapshot saw it");
    let copy = clone_copy(&cluster, node_1(first), ChunkId::new(owner, first)).await;
    let copy = copy.expect("node 1's clone mended by the read");
    assert!(copy == unique_chunk(first), "chunk {first}: node 1's clone is whole");

    // A diff, over every chunk.
    for i in 0..CHUNKS {
        rot(&file, &unique_block(i, 5));
    }
    let (ok, out, err) = cluster.cli(&["--json", "snapshot", "diff", "v", "s1"]).expect("chuyi");
    assert!(ok, "the diff against s1 runs: {out}{err}");
    for &i in &primary_1 {
        let copy = clone_copy(&cluster, node_1(i), ChunkId::new(owner, i)).await;
        let copy = copy.expect("node 1's clone mended by the diff");
        assert!(copy == unique_chunk(i), "chunk {i}: node 1's clone is whole");
    }

    // A rebalance's backfill.
    for &i in &primary_1 {
        rot(&file, &unique_block(i, 6));
    }
    let map = rebalance_onto_node_3(&mut cluster, owner, CHUNKS).await;
    for (i, new) in moved_onto_node_3(&map, owner, CHUNKS) {
        let copy = clone_copy(&cluster, new, ChunkId::new(owner, i)).await.expect("node 3's clone reads, not poisoned");
        assert!(copy == unique_chunk(i), "chunk {i}: node 3's clone is the snapshot's data");
    }
    let read = snapshot.read(0, CHUNKS * 4 * MIB).await.expect("the whole snapshot reads");
    assert!(read == (0..CHUNKS).flat_map(|i| unique_chunk(i).to_vec()).collect::<Vec<u8>>(), "the snapshot");
}

/// The chunks of `owner` with a replica on node 3 in `map`, and that
/// replica; at least one of them must have node 1 as its primary (was
/// backfilled from node 1's copy), or a test of mending saw none.
fn moved_onto_node_3(map: &DataMap, owner: u64, chunks: u64) -> Vec<(u64, Replica)> {
    let mut moved = Vec::new();
    let mut from_node_1 = 0;
    for i in 0..chunks {
        let (_, pg) = map.locate(ChunkId::new(owner, i)).expect("the chunk's PG");
        let Some(new) = pg.on_node(3) else { continue };
        from_node_1 += usize::from(pg.replicas[0].node == 1);
        moved.push((i, new));
    }
    assert!(from_node_1 > 0, "no chunk moved onto node 3 with node 1 as its primary: the test saw no mend");
    moved
}

/// `replica`'s copy of `chunk`'s one snapshot clone; `None` when it does
/// not read (a bad block).
async fn clone_copy(cluster: &TestCluster, replica: Replica, chunk: ChunkId) -> Option<Bytes> {
    let held = cluster.list_chunks(replica.node).await.expect("list a node's chunks");
    let clone = held.into_iter().find(|c| c.is_clone() && c.head() == chunk);
    let clone = clone.unwrap_or_else(|| panic!("node {} holds no clone of {chunk}", replica.node));
    cluster.read_replica(replica, clone).await.ok()
}

/// Block `k` of chunk `i`: unique, its chunk and block number repeated.
fn unique_block(i: u64, k: u64) -> Bytes {
    Bytes::from(((i << 16) | k).to_le_bytes().repeat(BLOCK_SIZE_BYTES / 8))
}

/// Chunk `i` made of [`unique_block`]s.
fn unique_chunk(i: u64) -> Bytes {
    Bytes::from((0..1024).flat_map(|k| unique_block(i, k)).collect::<Vec<u8>>())
}

/// Changes one byte of the one copy of `block` in a disk `file`.
fn rot(file: &std::path::Path, block: &[u8]) {
    let at = find_block(file, block).expect("read the disk file").expect("the block on the disk");
    let mut rotten = block.to_vec();
    rotten[100] ^= 0x10;
    overwrite(file, at, &rotten).expect("rot");
}

/// Brings node 3 back to a cluster whose data sits on nodes 1 and 2 and
/// waits until it holds, clean, a chunk of `owner` whose primary is node 1:
/// one backfilled from node 1's copy. The map then.
async fn rebalance_onto_node_3(cluster: &mut TestCluster, owner: u64, chunks: u64) -> DataMap {
    cluster.restart_node(3).expect("restart node 3");
    cluster.wait_node(3, true, Duration::from_secs(30)).await.expect("node 3 up");
    eventually(Duration::from_secs(120), "a chunk moved onto node 3 from node 1", || async {
        let map = cluster.wait_clean(Duration::from_secs(5)).await.ok()?;
        let from_1 = |i: u64| {
            map.locate(ChunkId::new(owner, i))
                .is_some_and(|(_, pg)| pg.on_node(3).is_some() && pg.replicas[0].node == 1)
        };
        (0..chunks).any(from_1).then_some(map)
    })
    .await
}

/// A 3-node cluster with node 3 out before anything is written, so every
/// PG sits on nodes 1 and 2, and a volume of `chunks` 4 MiB chunks filled
/// with `data(i)` in chunk `i`.
async fn on_nodes_1_and_2(spec: Spec, chunks: u64, data: impl Fn(u64) -> Bytes) -> (TestCluster, VolumeIo) {
    let mut cluster = TestCluster::start(spec).await.expect("cluster");
    cluster.kill_node(3).expect("kill node 3");
    cluster.wait_node(3, false, Duration::from_secs(30)).await.expect("node 3 marked down");
    cluster.create_volume("v", chunks * 4).await.expect("volume");
    cluster.wait_clean(Duration::from_secs(30)).await.expect("clean on two nodes");
    let client = cluster.client(Duration::from_secs(60)).await.expect("client");
    let vol = client.open_volume("v").await.expect("open");
    for i in 0..chunks {
        vol.write(i * 4 * MIB, data(i), false).await.expect("fill");
    }
    (cluster, vol)
}
