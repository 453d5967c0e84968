//! A storage node through its real interface: the chunk service over TCP,
//! with the cluster secret, as every other role will reach it.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use chuyi_common::credential::{Credential, Door, Principal, Role};
use chuyi_common::ids::ChunkId;
use chuyi_common::proto::chunk::{ChunkErrorKind, ChunkRequest, ChunkResponse, DiskRequest, DiskStat};
use chuyi_common::rpc::{Endpoint, FrameHeader, FrameKind, RpcClient, RpcConfig, RpcError, HEADER_LEN};
use chuyi_common::secret::ClusterSecret;
use chuyi_storage_node::config::NodeConfig;
use chuyi_storage_node::node::Node;
use chuyi_storage_node::store::open::DISK_FILE_NAME;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[path = "support/serving.rs"]
mod serving;
mod support;

use serving::{admin, authenticated, secret, serve, Running};

type Client = RpcClient<ChunkRequest, ChunkResponse>;

async fn start_node(dir: &Path) -> Running {
    start_node_sized(dir, "256MiB").await
}

async fn start_node_sized(dir: &Path, capacity: &str) -> Running {
    let toml = format!(
        "node_id = 3\nlisten = \"127.0.0.1:0\"\nscrub_mb_per_s = 0\n\n[[disk]]\nid = 0\npath = \"{}\"\nclass = \"ssd\"\ncapacity = \"{capacity}\"\n\n\
         [[disk]]\nid = 1\npath = \"{}\"\nclass = \"hdd\"\ncapacity = \"256MiB\"\n",
        dir.join("ssd").display(),
        dir.join("hdd").display()
    );
    let config: NodeConfig = toml::from_str(&toml).expect("config");
    config.validate().expect("valid config");
    let credential = Credential::issue(&secret(), Principal::node(3)).expect("issue");
    serve(Node::start(&config, &credential).await.expect("node start"))
}

async fn client(endpoint: &Endpoint) -> Client {
    Client::connect(endpoint, &admin(), RpcConfig::default()).await.expect("connect")
}

fn data(tag: u64, len: usize) -> Bytes {
    (0..len).map(|i| (tag as usize ^ (i * 13) ^ (i >> 12)) as u8).collect::<Vec<u8>>().into()
}

async fn write(c: &Client, disk: u32, chunk: ChunkId, offset: u32, payload: Bytes) -> ChunkResponse {
    c.call(&ChunkRequest::Disk(DiskRequest::Write { disk, chunk, offset, fua: false }), payload).await.expect("rpc").0
}

async fn read(c: &Client, disk: u32, chunk: ChunkId, offset: u32, len: u32) -> (ChunkResponse, Bytes) {
    c.call(&ChunkRequest::Disk(DiskRequest::Read { disk, chunk, offset, len }), Bytes::new()).await.expect("rpc")
}

async fn disk_stats(c: &Client) -> Vec<DiskStat> {
    match c.call(&ChunkRequest::DiskStats, Bytes::new()).await.expect("stats") {
        (ChunkResponse::Disks { disks }, _) => disks,
        (other, _) => panic!("disk stats answered {other:?}"),
    }
}

fn error_kind(reply: &ChunkResponse) -> Option<ChunkErrorKind> {
    match reply {
        ChunkResponse::Error(e) => Some(e.kind),
        _ => None,
    }
}

/// Many clients, each with many requests in flight, writing different
/// chunks on two disks; every byte reads back from where it was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_on_many_chunks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(dir.path()).await;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..4u64 {
        let c = client(&node.endpoint).await;
        for i in 0..24u64 {
            let c = c.clone();
            tasks.spawn(async move {
                let (disk, chunk) = ((i % 2) as u32, ChunkId::new(w, i));
                let offset = ((w * 7 + i) % 64 * 4096) as u32;
                let payload = data(w * 1000 + i, 4096 * (1 + i as usize % 3) + (w as usize) * 100);
                assert_eq!(write(&c, disk, chunk, offset, payload.clone()).await, ChunkResponse::Done);
                let (reply, back) = read(&c, disk, chunk, offset, payload.len() as u32).await;
                assert_eq!(reply, ChunkResponse::ReadDone { allocated: true });
                assert_eq!(back, payload);
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("writer");
    }
    let c = client(&node.endpoint).await;
    let (ChunkResponse::Chunks { chunks, more }, _) = c
        .call(&ChunkRequest::Disk(DiskRequest::ListChunks { disk: 0, start_after: None, max: 1000 }), Bytes::new())
        .await
        .expect("list")
    else {
        panic!("list chunks answered something else")
    };
    assert_eq!((chunks.len(), more), (48, false));
    let disks = disk_stats(&c).await;
    assert_eq!(disks.iter().map(|d| d.chunks).sum::<u64>(), 96);
    node.stop().await;
}

/// A block damaged on disk is reported as a checksum error through the RPC,
/// counted in the disk's stats, and never returned as data.
#[tokio::test]
async fn corrupted_block_reads_as_checksum_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(dir.path()).await;
    let c = client(&node.endpoint).await;
    let chunk = ChunkId::new(77, 0);
    let payload = data(5, 4 * 4096);
    let fua = ChunkRequest::Disk(DiskRequest::Write { disk: 0, chunk, offset: 0, fua: true });
    assert_eq!(c.call(&fua, payload.clone()).await.expect("write").0, ChunkResponse::Done);
    node.stop().await;

    let file = dir.path().join("ssd").join(DISK_FILE_NAME);
    let mut raw = std::fs::read(&file).expect("raw");
    let at = raw.windows(4096).position(|w| w == &payload[8192..12288]).expect("block on disk");
    raw[at + 1000] ^= 0x80;
    std::fs::write(&file, raw).expect("damage");

    let node = start_node(dir.path()).await;
    let c = client(&node.endpoint).await;
    let (reply, data_back) = read(&c, 0, chunk, 0, 4 * 4096).await;
    assert_eq!(error_kind(&reply), Some(ChunkErrorKind::Checksum), "{reply:?}");
    assert!(data_back.is_empty(), "no bytes of a bad read are returned");
    let (reply, good) = read(&c, 0, chunk, 0, 8192).await;
    assert_eq!((reply, good), (ChunkResponse::ReadDone { allocated: true }, payload.slice(..8192)));
    let disks = disk_stats(&c).await;
    assert_eq!(disks[0].checksum_errors, 1);
    node.stop().await;
}

/// Requests the node cannot honour get a precise error and change nothing.
#[tokio::test]
async fn bad_requests_get_precise_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(dir.path()).await;
    let c = client(&node.endpoint).await;
    let chunk = ChunkId::new(1, 1);
    assert_eq!(error_kind(&write(&c, 9, chunk, 0, data(1, 4096)).await), Some(ChunkErrorKind::NoSuchDisk));
    let past_end = write(&c, 0, chunk, (4 << 20) - 100, data(1, 4096)).await;
    assert_eq!(error_kind(&past_end), Some(ChunkErrorKind::OutOfRange));
    let (reply, _) = read(&c, 0, chunk, u32::MAX, 4096).await;
    assert_eq!(error_kind(&reply), Some(ChunkErrorKind::OutOfRange));
    let (reply, _) = c.call(&ChunkRequest::Flush { disk: Some(42), fence: None }, Bytes::new()).await.expect("rpc");
    assert_eq!(error_kind(&reply), Some(ChunkErrorKind::NoSuchDisk));
    let (reply, _) = c
        .call(&ChunkRequest::Disk(DiskRequest::ListChunks { disk: 0, start_after: None, max: 10 }), Bytes::new())
        .await
        .expect("rpc");
    assert_eq!(reply, ChunkResponse::Chunks { chunks: vec![], more: false }, "refused writes allocated nothing");
    node.stop().await;
}

/// A node whose disk sits on a file system that fills up (a 12 MiB tmpfs
/// under a disk that believes it has 256 MiB): new chunks get NoSpace over
/// the RPC, everything written before still reads back, and deleting a
/// chunk makes room again.
#[tokio::test]
async fn full_file_system_through_the_rpc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ssd = dir.path().join("ssd");
    std::fs::create_dir_all(&ssd).expect("mount point");
    let _mount = support::TmpfsMount::new(&ssd, "12m");
    let node = start_node_sized(dir.path(), "256MiB").await;
    let c = client(&node.endpoint).await;
    let mut written = Vec::new();
    let failure = loop {
        let chunk = ChunkId::new(9, written.len() as u64);
        match write(&c, 0, chunk, 0, data(written.len() as u64, 64 * 1024)).await {
            ChunkResponse::Done => written.push(chunk),
            other => break other,
        }
        assert!(written.len() < 16, "a 12 MiB file system took {} chunks", written.len());
    };
    assert_eq!(error_kind(&failure), Some(ChunkErrorKind::NoSpace), "{failure:?}");
    assert!(!written.is_empty());
    for (i, chunk) in written.iter().enumerate() {
        let (reply, back) = read(&c, 0, *chunk, 0, 64 * 1024).await;
        assert_eq!((reply, back), (ChunkResponse::ReadDone { allocated: true }, data(i as u64, 64 * 1024)));
    }
    let delete = ChunkRequest::Disk(DiskRequest::DeleteChunk { disk: 0, chunk: written[0] });
    assert_eq!(c.call(&delete, Bytes::new()).await.expect("delete").0, ChunkResponse::Done);
    assert_eq!(write(&c, 0, ChunkId::new(9, 100), 0, data(100, 4096)).await, ChunkResponse::Done);
    node.stop().await;
}

/// Without the cluster secret a client is refused, and a stranger who skips
/// the handshake and sends a read request gets no bytes of any chunk.
#[tokio::test]
async fn strangers_can_neither_read_nor_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(dir.path()).await;
    let c = client(&node.endpoint).await;
    let chunk = ChunkId::new(5, 5);
    assert_eq!(write(&c, 0, chunk, 0, Bytes::from(b"SECRET-CHUNK-DATA".repeat(241))).await, ChunkResponse::Done);

    let wrong = ClusterSecret::new(b"not-the-cluster-secret".to_vec()).expect("secret");
    let wrong = Credential::from_secret(wrong, Principal::admin()).identity(Door::Node);
    let refused = Client::connect(&node.endpoint, &wrong, RpcConfig::default()).await;
    assert!(matches!(refused, Err(RpcError::Denied)), "{:?}", refused.err());

    let Endpoint::Tcp(addr) = &node.endpoint else { panic!("tcp endpoint") };
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let body = postcard::to_stdvec(&ChunkRequest::Disk(DiskRequest::Read { disk: 0, chunk, offset: 0, len: 4096 }))
        .expect("encode");
    let header = FrameHeader::new(FrameKind::Request, 1, body.len(), 0).expect("header");
    let _ = stream.write_all(&header.encode()).await;
    let _ = stream.write_all(&body).await;
    let received = read_until_closed(&mut stream).await;
    assert!(!contains(&received, b"SECRET-CHUNK-DATA"), "a stranger read chunk data");
    assert!(
        received.len() <= 45,
        "only the server hello (and a refusal) before the handshake: {} bytes",
        received.len()
    );

    // The node still serves its own.
    let (reply, back) = read(&c, 0, chunk, 0, 17).await;
    assert_eq!((reply, &back[..]), (ChunkResponse::ReadDone { allocated: true }, &b"SECRET-CHUNK-DATA"[..]));
    node.stop().await;
}

/// Oversized and malformed frames from an authenticated peer: an oversized
/// frame closes that connection only; a body that is not a chunk request is
/// answered with an error frame, and the connection keeps working.
#[tokio::test]
async fn malformed_and_oversized_frames() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(dir.path()).await;
    let bystander = client(&node.endpoint).await;

    let mut stream = authenticated(&node.endpoint).await;
    let mut header = FrameHeader::new(FrameKind::Request, 1, 4, 0).expect("header");
    header.payload_len = 64 << 20;
    stream.write_all(&header.encode()).await.expect("send");
    let _ = stream.write_all(&[0u8; 4]).await;
    let received = read_until_closed(&mut stream).await;
    assert!(received.len() < 1024, "an oversized frame gets the connection closed, not served");

    let mut stream = authenticated(&node.endpoint).await;
    let garbage = [0xFFu8; 9];
    let header = FrameHeader::new(FrameKind::Request, 7, garbage.len(), 0).expect("header");
    stream.write_all(&header.encode()).await.expect("send");
    stream.write_all(&garbage).await.expect("send");
    let mut reply = [0u8; HEADER_LEN];
    stream.read_exact(&mut reply).await.expect("error frame");
    let reply = FrameHeader::decode(&reply).expect("valid header");
    assert_eq!((reply.kind, reply.request_id), (FrameKind::Error, 7));

    let ping = postcard::to_stdvec(&ChunkRequest::Ping).expect("encode");
    let mut skip = vec![0u8; reply.body_len as usize + reply.payload_len as usize];
    stream.read_exact(&mut skip).await.expect("error body");
    let header = FrameHeader::new(FrameKind::Request, 8, ping.len(), 0).expect("header");
    stream.write_all(&header.encode()).await.expect("send");
    stream.write_all(&ping).await.expect("send");
    let mut pong = [0u8; HEADER_LEN];
    stream.read_exact(&mut pong).await.expect("pong");
    let pong = FrameHeader::decode(&pong).expect("valid header");
    assert_eq!((pong.kind, pong.request_id), (FrameKind::Response, 8));

    let (reply, _) = bystander.call(&ChunkRequest::Ping, Bytes::new()).await.expect("bystander");
    assert_eq!(reply, ChunkResponse::Pong { node: 3 });
    node.stop().await;
}

/// A frontend's own credential opens the node's door, but the node serves
/// it no raw disk request (those bypass replication and fencing), and a
/// frontend credential claiming to be a node or the admin is refused at
/// the handshake.
#[tokio::test]
async fn a_frontend_is_refused_raw_disk_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(dir.path()).await;
    let chunk = ChunkId::new(6, 1);
    let admin = client(&node.endpoint).await;
    assert_eq!(write(&admin, 0, chunk, 0, data(1, 4096)).await, ChunkResponse::Done);

    let fe = Credential::issue(&secret(), Principal::new(Role::Frontend, "s3-a").expect("name")).expect("issue");
    let c = Client::connect(&node.endpoint, &fe.identity(Door::Node), RpcConfig::default()).await.expect("connect");
    let raw = [
        ChunkRequest::Disk(DiskRequest::Read { disk: 0, chunk, offset: 0, len: 4096 }),
        ChunkRequest::Disk(DiskRequest::Write { disk: 0, chunk, offset: 0, fua: true }),
        ChunkRequest::Disk(DiskRequest::Trim { disk: 0, chunk, offset: 0, len: 4096 }),
        ChunkRequest::Disk(DiskRequest::DeleteChunk { disk: 0, chunk }),
        ChunkRequest::Disk(DiskRequest::ListChunks { disk: 0, start_after: None, max: 10 }),
    ];
    for request in raw {
        let payload =
            if matches!(request, ChunkRequest::Disk(DiskRequest::Write { .. })) { data(2, 4096) } else { Bytes::new() };
        let (reply, _) = c.call(&request, payload).await.expect("answered");
        assert!(
            matches!(&reply, ChunkResponse::Error(e) if e.kind == ChunkErrorKind::Forbidden && e.message.contains("frontend s3-a")),
            "{request:?}: {reply:?}"
        );
    }
    let (pong, _) = c.call(&ChunkRequest::Ping, Bytes::new()).await.expect("ping");
    assert_eq!(pong, ChunkResponse::Pong { node: 3 });
    // Nothing changed: the chunk still reads as the admin wrote it.
    assert_eq!(read(&admin, 0, chunk, 0, 4096).await, (ChunkResponse::ReadDone { allocated: true }, data(1, 4096)));

    let mut forged = fe.identity(Door::Node);
    for claim in [Principal::node(1), Principal::admin()] {
        forged.principal = claim;
        let refused = Client::connect(&node.endpoint, &forged, RpcConfig::default()).await;
        assert!(matches!(refused, Err(RpcError::Denied)), "{:?}", refused.err());
    }
    node.stop().await;
}

async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("connection still open after 10 s"),
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
