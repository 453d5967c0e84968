//! Two storage nodes holding one PG, through their real chunk service over
//! TCP, with a data map handed to them as the metadata service would: what
//! a node does with its replica's copy.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chuyi_common::credential::{Credential, Door, Principal};
use chuyi_common::ids::{ChunkId, DeviceClass};
use chuyi_common::map::{owner_id, DataMap, NodeAddr, PgMap, PoolMap, Replica};
use chuyi_common::proto::chunk::{ChunkErrorKind, ChunkRequest, ChunkResponse, DiskRequest, ForwardOrder, PgOp};
use chuyi_common::rpc::{Endpoint, FrameHeader, FrameKind, RpcClient, RpcConfig};
use chuyi_storage_node::config::NodeConfig;
use chuyi_storage_node::io::fault::FaultEngine;
use chuyi_storage_node::node::Node;
use chuyi_storage_node::replication::Replicator;
use chuyi_storage_node::store::open::{open_disk_wrapped, DISK_FILE_NAME};
use chuyi_storage_node::store::ChunkStore;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[path = "support/serving.rs"]
mod serving;

use serving::{admin, authenticated, secret, serve, Running};

type Client = RpcClient<ChunkRequest, ChunkResponse>;

const BLOCK: usize = 4096;

fn config(id: u32, dir: &std::path::Path) -> NodeConfig {
    let toml = format!(
        "node_id = {id}\nlisten = \"127.0.0.1:0\"\nscrub_mb_per_s = 0\n\n[[disk]]\nid = 0\npath = \"{}\"\nclass = \"ssd\"\ncapacity = \"64MiB\"\n",
        dir.display()
    );
    let config: NodeConfig = toml::from_str(&toml).expect("config");
    config.validate().expect("valid config");
    config
}

/// Node `id` on `dir`, its disk under a fault engine, not yet serving.
async fn start(id: u32, dir: &std::path::Path) -> (Node, Arc<FaultEngine>) {
    let config = config(id, dir);
    let mut fault = None;
    let disk = open_disk_wrapped(&config.disk_specs()[0], |inner| {
        let f = Arc::new(FaultEngine::new(inner));
        fault = Some(f.clone());
        f
    })
    .await
    .expect("open disk");
    let credential = Credential::issue(&secret(), Principal::node(id)).expect("issue");
    let node = Node::start_on(&config, &credential, ChunkStore::from_disks([disk])).await.expect("node start");
    (node, fault.expect("wrapped"))
}

/// Nodes 1 (the primary) and 2, serving, both handed the map of their one
/// PG.
struct Pair {
    first: Running,
    second: Running,
    /// Node 1's disk.
    fault: Arc<FaultEngine>,
    /// Node 1's replication, for what it has in flight.
    primary: Arc<Replicator>,
}

async fn pair(first: &std::path::Path, second: &std::path::Path) -> Pair {
    let (first, fault) = start(1, first).await;
    let (second, _) = start(2, second).await;
    let map = map(&first.endpoints()[0], &second.endpoints()[0]);
    let primary = first.map_sink();
    primary.view().update(map.clone());
    second.map_sink().view().update(map);
    Pair { first: serve(first), second: serve(second), fault, primary }
}

/// One pool of one PG, on node 1's disk 0 (the primary) and node 2's.
fn map(first: &Endpoint, second: &Endpoint) -> DataMap {
    let replica = |node| Replica { node, disk: 0 };
    let node = |id, endpoint: &Endpoint| NodeAddr { id, addrs: vec![endpoint.to_string()], up: true };
    DataMap {
        epoch: 1,
        nodes: vec![node(1, first), node(2, second)],
        pools: vec![PoolMap {
            id: 1,
            name: "pool".into(),
            class: DeviceClass::Ssd,
            size: 2,
            pgs: vec![PgMap { epoch: 1, replicas: vec![replica(1), replica(2)], recovering: vec![] }],
        }],
    }
}

fn pg(chunk: ChunkId, op: PgOp) -> ChunkRequest {
    ChunkRequest::Pg { chunk, epoch: 1, op, forwarded: false, fence: None, order: None }
}

fn block(tag: u8) -> Bytes {
    Bytes::from(vec![tag; BLOCK])
}

async fn client(endpoint: &Endpoint) -> Client {
    Client::connect(endpoint, &admin(), RpcConfig::default()).await.expect("connect")
}

/// A node's own copy, read raw: no repair from the other replica.
async fn raw_read(endpoint: &Endpoint, chunk: ChunkId) -> Result<Bytes, ChunkResponse> {
    let read = ChunkRequest::Disk(DiskRequest::Read { disk: 0, chunk, offset: 0, len: BLOCK as u32 });
    match client(endpoint).await.call(&read, Bytes::new()).await.expect("raw read") {
        (ChunkResponse::ReadDone { .. }, data) => Ok(data),
        (other, _) => Err(other),
    }
}

/// Where a block holding `data` lies in a node's disk file.
fn find_on_disk(dir: &std::path::Path, data: &[u8]) -> u64 {
    let raw = std::fs::read(dir.join(DISK_FILE_NAME)).expect("disk file");
    raw.chunks_exact(BLOCK).position(|b| b == data).expect("block on disk") as u64 * BLOCK as u64
}

fn flip_a_bit(dir: &std::path::Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(dir.join(DISK_FILE_NAME)).expect("open");
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, at + 1000).expect("read");
    byte[0] ^= 0x10;
    file.write_all_at(&byte, at + 1000).expect("write");
}

async fn send(stream: &mut TcpStream, request: &ChunkRequest) {
    let body = postcard::to_stdvec(request).expect("encode");
    let header = FrameHeader::new(FrameKind::Request, 1, body.len(), 0).expect("header");
    stream.write_all(&header.encode()).await.expect("send");
    stream.write_all(&body).await.expect("send");
}

/// Waits up to 10 s for `now()` to be `n`.
async fn becomes(what: &str, now: impl Fn() -> u64, n: u64) {
    for _ in 0..1000 {
        if now() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} {what}, not {n}", now());
}

/// A read that finds a bad block repairs it from the other replica; a
/// reader that goes away meanwhile (its connection closed) must not take
/// the repair's lock on the range with it while the repair's write is
/// still under way, or a newer write of the block could land first and
/// the repair's copy of the older data after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_read_repair_keeps_its_range_until_its_write_lands() {
    let (dir1, dir2) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let Pair { first, second, fault, primary } = pair(dir1.path(), dir2.path()).await;
    let chunk = ChunkId::new(owner_id(1, 7), 0);
    let writer = client(&first.endpoint).await;
    let write = pg(chunk, PgOp::Write { offset: 0, fua: true, snap: 0 });
    let reply = writer.call(&write, block(1)).await.expect("first write");
    assert_eq!(reply.0, ChunkResponse::Done);

    // The primary's copy rots; its repair's write will be held in flight.
    let at = find_on_disk(dir1.path(), &block(1));
    flip_a_bit(dir1.path(), at);
    fault.hold_writes(at..at + BLOCK as u64);
    let mut reader = authenticated(&first.endpoint).await;
    send(&mut reader, &pg(chunk, PgOp::Read { offset: 0, len: BLOCK as u32 })).await;
    becomes("writes held", || fault.held() as u64, 1).await;
    // The reader vanishes (a reset, not a clean close, which the node
    // would answer by letting the read finish): the node aborts its read.
    // Deprecated for a lingering close, which blocks; a zero linger resets
    // at once.
    #[allow(deprecated)]
    reader.set_linger(Some(Duration::ZERO)).expect("linger");
    drop(reader);
    becomes("client requests in flight", || primary.client_ops(), 0).await;

    // The newer write reaches the primary and queues for the range behind
    // the repair (a build that let the repair's range go would see it
    // never queue, and its write held at the disk instead).
    let newer = tokio::spawn(async move { writer.call(&write, block(2)).await });
    becomes("ranges of the chunk held or queued", || primary.locks().queued(chunk) as u64, 2).await;
    assert_eq!(fault.held(), 1, "the newer write reached the disk while the repair's was in flight");
    fault.release_held();
    let reply = tokio::time::timeout(Duration::from_secs(10), newer).await.expect("answered").expect("task");
    assert_eq!(reply.expect("newer write").0, ChunkResponse::Done);
    assert_eq!(raw_read(&first.endpoint, chunk).await, Ok(block(2)), "the primary's copy");
    assert_eq!(raw_read(&second.endpoint, chunk).await, Ok(block(2)), "the other copy");
    first.stop().await;
    second.stop().await;
}

/// A primary's forwards carry their place among its forwards to the
/// replica; a forward arriving after a later one raised the sender's mark
/// past it (one its primary gave up on, lying in a socket buffer while
/// the primary went on to newer writes of the range) is refused, and the
/// newer data stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_its_primary_gave_up_on_never_lands_over_a_newer_write() {
    let (dir1, dir2) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let Pair { first, second, .. } = pair(dir1.path(), dir2.path()).await;
    let chunk = ChunkId::new(owner_id(1, 9), 0);
    let write = pg(chunk, PgOp::Write { offset: 0, fua: true, snap: 0 });
    let reply = client(&first.endpoint).await.call(&write, block(2)).await.expect("write");
    assert_eq!(reply.0, ChunkResponse::Done, "through the primary, forwarded numbered");

    // What the primary numbered long before (its numbers start from the
    // clock at its start, so 5 is far below), arriving only now.
    let stale = ChunkRequest::Pg {
        chunk,
        epoch: 1,
        op: PgOp::Write { offset: 0, fua: true, snap: 0 },
        forwarded: true,
        fence: None,
        order: Some(ForwardOrder { from: 1, seq: 5, settled_below: 5 }),
    };
    // Numbered in node 1's name: the admin may not send it, node 1 may.
    let (reply, _) = client(&second.endpoint).await.call(&stale, block(1)).await.expect("answered");
    assert!(matches!(&reply, ChunkResponse::Error(e) if e.kind == ChunkErrorKind::Forbidden), "{reply:?}");
    let as_first = Credential::issue(&secret(), Principal::node(1)).expect("issue").identity(Door::Node);
    let first_link = Client::connect(&second.endpoint, &as_first, RpcConfig::default()).await.expect("connect");
    let (reply, _) = first_link.call(&stale, block(1)).await.expect("answered");
    let ChunkResponse::Error(error) = reply else { panic!("the stale forward was taken: {reply:?}") };
    assert_eq!(error.kind, ChunkErrorKind::ReplicaFailed, "{error:?}");
    assert!(error.message.contains("given up"), "{error:?}");
    assert_eq!(raw_read(&second.endpoint, chunk).await, Ok(block(2)), "the newer write stays");
    assert_eq!(raw_read(&first.endpoint, chunk).await, Ok(block(2)));

    // The primary's next write of the range still lands on both.
    let reply = client(&first.endpoint).await.call(&write, block(3)).await.expect("write");
    assert_eq!(reply.0, ChunkResponse::Done);
    assert_eq!(raw_read(&second.endpoint, chunk).await, Ok(block(3)));
    first.stop().await;
    second.stop().await;
}
