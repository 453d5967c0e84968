//! Replicated requests a node must refuse, each with its precise error and
//! no change: a stale or future epoch, the wrong node, a chunk of no known
//! pool, a range past the chunk, a payload where none belongs, a checksum
//! page of a PG the node does not hold, and writes of a volume's older
//! writers (its fencing tokens).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chuyi_chaos::cluster::{Spec, TestCluster};
use chuyi_client::fence::AlwaysOpen;
use chuyi_client::ClientError;
use chuyi_common::ids::ChunkId;
use chuyi_common::limits::RAISE_FENCES_MAX;
use chuyi_common::map::{owner_id, PgId};
use chuyi_common::proto::chunk::{ChunkErrorKind, ChunkRequest, ChunkResponse, PgOp, VolumeFence};

fn kind(reply: &ChunkResponse) -> Option<ChunkErrorKind> {
    match reply {
        ChunkResponse::Error(e) => Some(e.kind),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_pg_requests_get_precise_errors_and_change_nothing() {
    let cluster = TestCluster::start(Spec::default()).await.expect("cluster");
    cluster.create_volume("v", 16).await.expect("volume");
    let map = cluster.wait_clean(Duration::from_secs(30)).await.expect("clean");
    let client = cluster.client(Duration::from_secs(20)).await.expect("client");
    let vol = client.open_volume("v").await.expect("open");
    let good = Bytes::from(vec![7u8; 4096]);
    vol.write(0, good.clone(), true).await.expect("write");

    let chunk = ChunkId::new(vol.volume().id, 0);
    let (pg, pg_map) = map.locate(chunk).expect("located");
    let primary = pg_map.primary().expect("primary");
    let secondary = pg_map.replicas[1];
    let third = map.nodes.iter().map(|n| n.id).find(|&n| n != primary.node && n != secondary.node).expect("third");
    let at_primary = cluster.node_rpc(primary.node).await.expect("rpc");
    let call = |rpc: &chuyi_common::rpc::RpcClient<ChunkRequest, ChunkResponse>, req: ChunkRequest, payload: Bytes| {
        let rpc = rpc.clone();
        async move { rpc.call(&req, payload).await.expect("rpc").0 }
    };
    let write = |epoch: u64, forwarded: bool| ChunkRequest::Pg {
        chunk,
        epoch,
        op: PgOp::Write { offset: 0, fua: true, snap: 0 },
        forwarded,
        fence: None,
        order: None,
    };
    let junk = Bytes::from(vec![0xEEu8; 4096]);

    // An epoch older than the PG's.
    let stale = call(&at_primary, write(pg_map.epoch - 1, false), junk.clone()).await;
    assert_eq!(kind(&stale), Some(ChunkErrorKind::StaleEpoch), "{stale:?}");
    // An epoch from the future: the node waits for its map, then says so.
    let ahead = call(&at_primary, write(pg_map.epoch + 100, false), junk.clone()).await;
    assert_eq!(kind(&ahead), Some(ChunkErrorKind::EpochAhead), "{ahead:?}");
    // A client write to the secondary, and anything to a non-member.
    let at_secondary = cluster.node_rpc(secondary.node).await.expect("rpc");
    let wrong = call(&at_secondary, write(pg_map.epoch, false), junk.clone()).await;
    assert_eq!(kind(&wrong), Some(ChunkErrorKind::WrongNode), "{wrong:?}");
    let at_third = cluster.node_rpc(third).await.expect("rpc");
    let stranger = call(&at_third, write(pg_map.epoch, true), junk.clone()).await;
    assert_eq!(kind(&stranger), Some(ChunkErrorKind::WrongNode), "{stranger:?}");
    let read_at_third = ChunkRequest::Pg {
        chunk,
        epoch: pg_map.epoch,
        op: PgOp::Read { offset: 0, len: 4096 },
        forwarded: false,
        fence: None,
        order: None,
    };
    assert_eq!(kind(&call(&at_third, read_at_third, Bytes::new()).await), Some(ChunkErrorKind::WrongNode));
    // A chunk of a pool nobody has.
    let nowhere = ChunkRequest::Pg {
        chunk: ChunkId::new(owner_id(4242, 1), 0),
        epoch: 1,
        op: PgOp::Read { offset: 0, len: 4096 },
        forwarded: false,
        fence: None,
        order: None,
    };
    assert_eq!(kind(&call(&at_primary, nowhere, Bytes::new()).await), Some(ChunkErrorKind::EpochAhead));
    // Past the chunk's end; a payload on a zeroing; a read past the end.
    let past = ChunkRequest::Pg {
        chunk,
        epoch: pg_map.epoch,
        op: PgOp::Write { offset: (4 << 20) - 100, fua: false, snap: 0 },
        forwarded: false,
        fence: None,
        order: None,
    };
    assert_eq!(kind(&call(&at_primary, past, junk.clone()).await), Some(ChunkErrorKind::OutOfRange));
    let zero_with_payload = ChunkRequest::Pg {
        chunk,
        epoch: pg_map.epoch,
        op: PgOp::Zero { offset: 0, len: 4096, fua: false, snap: 0 },
        forwarded: false,
        fence: None,
        order: None,
    };
    assert_eq!(kind(&call(&at_primary, zero_with_payload, junk.clone()).await), Some(ChunkErrorKind::InvalidArgument));
    let read_past = ChunkRequest::Pg {
        chunk,
        epoch: pg_map.epoch,
        op: PgOp::Read { offset: u32::MAX, len: 4096 },
        forwarded: false,
        fence: None,
        order: None,
    };
    assert_eq!(kind(&call(&at_primary, read_past, Bytes::new()).await), Some(ChunkErrorKind::OutOfRange));
    // Checksums of a PG the node does not hold, and of no PG at all.
    let sums = ChunkRequest::PgSums { pg, epoch: pg_map.epoch, start_after: None, max: 10 };
    assert_eq!(kind(&call(&at_third, sums, Bytes::new()).await), Some(ChunkErrorKind::WrongNode));
    let no_pg = ChunkRequest::PgSums { pg: PgId { pool: 4242, pg: 0 }, epoch: 1, start_after: None, max: 10 };
    assert_eq!(kind(&call(&at_primary, no_pg, Bytes::new()).await), Some(ChunkErrorKind::EpochAhead));

    // Nothing changed: both replicas still hold the good block.
    assert_eq!(vol.read(0, 4096).await.expect("read"), good);
    for replica in &pg_map.replicas {
        let data = cluster.read_replica(*replica, chunk).await.expect("raw read");
        assert_eq!(data.slice(..4096), good, "replica {replica:?}");
    }
    // The node is still serving.
    vol.write(4096, good.clone(), false).await.expect("still serving");

    // Fences: too many in one request is refused whole.
    let owner = chunk.owner;
    let too_many =
        (0..=RAISE_FENCES_MAX as u64).map(|i| VolumeFence { owner: owner + 1 + i, token: 1, snap: 0 }).collect();
    let raise = ChunkRequest::RaiseFences { fences: too_many };
    assert_eq!(kind(&call(&at_primary, raise, Bytes::new()).await), Some(ChunkErrorKind::InvalidArgument));
    // A writer with token 100 raises its fence everywhere: from then on an
    // unfenced write, and one under an older token, are refused by the
    // primary and by the other replica, and change nothing.
    let writer = vol.clone().fenced(100, Arc::new(AlwaysOpen));
    writer.attach_fence().await.expect("raised on every node");
    let unfenced = vol.write(0, junk.clone(), true).await;
    assert!(
        matches!(&unfenced, Err(ClientError::Chunk { error, .. }) if error.kind == ChunkErrorKind::Fenced),
        "{unfenced:?}"
    );
    let fenced = |token: u64, forwarded: bool| ChunkRequest::Pg {
        chunk,
        epoch: pg_map.epoch,
        op: PgOp::Write { offset: 0, fua: true, snap: 0 },
        forwarded,
        fence: Some(token),
        order: None,
    };
    let older = call(&at_primary, fenced(99, false), junk.clone()).await;
    assert_eq!(kind(&older), Some(ChunkErrorKind::Fenced), "{older:?}");
    let older = call(&at_secondary, fenced(99, true), junk.clone()).await;
    assert_eq!(kind(&older), Some(ChunkErrorKind::Fenced), "{older:?}");
    let flush = ChunkRequest::Flush { disk: None, fence: Some(VolumeFence { owner, token: 99, snap: 0 }) };
    assert_eq!(kind(&call(&at_primary, flush, Bytes::new()).await), Some(ChunkErrorKind::Fenced));
    for replica in &pg_map.replicas {
        let data = cluster.read_replica(*replica, chunk).await.expect("raw read");
        assert_eq!(data.slice(..4096), good, "replica {replica:?} took a fenced write");
    }
    // The current writer writes; a newer one (101) takes over by its first
    // write alone, and 100 is refused from then on.
    let mine = Bytes::from(vec![9u8; 4096]);
    writer.write(0, mine.clone(), true).await.expect("the current writer");
    writer.flush().await.expect("the current writer's flush");
    let newer = vol.clone().fenced(101, Arc::new(AlwaysOpen));
    newer.write(0, good.clone(), true).await.expect("a newer writer");
    let late = writer.write(0, mine, true).await;
    assert!(matches!(&late, Err(ClientError::Chunk { error, .. }) if error.kind == ChunkErrorKind::Fenced), "{late:?}");
    assert_eq!(newer.read(0, 4096).await.expect("read"), good);
}
