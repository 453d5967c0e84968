//! The RPC layer over real sockets: a test service on TCP and Unix, well
//! behaved clients, and peers that are not (wrong secret, strangers, broken
//! frames), checked against what `common/PROTOCOL.md` promises.
//!
//! Tests wait on conditions with deadlines, never on fixed sleeps.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chuyi_common::buf::is_aligned;
use chuyi_common::credential::{Credential, Door, Identity, Principal, Role};
use chuyi_common::limits::{RPC_CONNECT_TIMEOUT_MS, RPC_PAYLOAD_MAX_BYTES};
use chuyi_common::rpc::{
    Endpoint, FrameHeader, FrameKind, RpcClient, RpcConfig, RpcError, RpcServer, Service, HEADER_LEN,
};
use chuyi_common::secret::ClusterSecret;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;

#[derive(Debug, Serialize, Deserialize)]
enum TestReq {
    /// Answer after `delay_ms` with the tag, echoing the payload.
    Echo {
        tag: u64,
        delay_ms: u64,
    },
    /// Never answer.
    Hang,
    /// Answer only once a `Release` has arrived.
    WaitForRelease,
    Release,
    /// Answer with the caller's principal.
    WhoAmI,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum TestResp {
    /// `aligned`: whether the server received the payload block-aligned.
    Echoed {
        tag: u64,
        aligned: bool,
    },
    Released,
    Woke,
    You(String),
}

struct TestService {
    /// Requests that have started and will never answer.
    hanging: AtomicUsize,
    /// Requests waiting for a release.
    waiting: AtomicUsize,
    releases: Semaphore,
}

impl Default for TestService {
    fn default() -> Self {
        Self { hanging: AtomicUsize::new(0), waiting: AtomicUsize::new(0), releases: Semaphore::new(0) }
    }
}

impl Service for TestService {
    type Request = TestReq;
    type Response = TestResp;

    async fn call(&self, caller: &Principal, request: TestReq, payload: Bytes) -> (TestResp, Bytes) {
        match request {
            TestReq::WhoAmI => (TestResp::You(caller.to_string()), Bytes::new()),
            TestReq::Echo { tag, delay_ms } => {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                (TestResp::Echoed { tag, aligned: is_aligned(&payload) }, payload)
            }
            TestReq::Hang => {
                self.hanging.fetch_add(1, Ordering::SeqCst);
                std::future::pending().await
            }
            TestReq::WaitForRelease => {
                self.waiting.fetch_add(1, Ordering::SeqCst);
                let permit = self.releases.acquire().await.expect("never closed");
                permit.forget();
                (TestResp::Woke, Bytes::new())
            }
            TestReq::Release => {
                self.releases.add_permits(1);
                (TestResp::Released, Bytes::new())
            }
        }
    }
}

type TestClient = RpcClient<TestReq, TestResp>;

const SECRET: &[u8] = b"test-cluster-secret-0123456789";

fn secret() -> ClusterSecret {
    ClusterSecret::new(SECRET.to_vec()).expect("long enough")
}

/// The test client's identity: the administrator, by the cluster secret.
fn admin() -> Identity {
    Credential::from_secret(secret(), Principal::admin()).identity(Door::Meta)
}

/// A server running on its own task until stopped.
struct Running {
    endpoint: Endpoint,
    service: Arc<TestService>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), RpcError>>,
}

async fn start(endpoint: Endpoint) -> Running {
    let server = RpcServer::bind(&endpoint).await.expect("bind");
    let endpoint = server.local_endpoint().clone();
    let service = Arc::new(TestService::default());
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let task = tokio::spawn(server.serve(
        Credential::from_secret(secret(), Principal::member(1)).keyring(Door::Meta).expect("ring"),
        service.clone(),
        shutdown,
    ));
    Running { endpoint, service, stop, task }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("server task").expect("serve");
    }

    fn tcp_addr(&self) -> String {
        match &self.endpoint {
            Endpoint::Tcp(addr) => addr.clone(),
            Endpoint::Unix(_) | Endpoint::Sim(_) => panic!("not a TCP server"),
        }
    }
}

fn tcp_any() -> Endpoint {
    Endpoint::Tcp("127.0.0.1:0".into())
}

async fn connect(endpoint: &Endpoint, config: RpcConfig) -> TestClient {
    TestClient::connect(endpoint, &admin(), config).await.expect("connect")
}

/// Polls `condition` until it holds; panics naming `what` after `within`.
async fn wait_until(what: &str, within: Duration, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Varied sizes: empty, whole blocks, odd lengths, and one MiB.
fn payload_for(tag: u64) -> Bytes {
    let len = match tag % 100 {
        0 => 1 << 20,
        1 => 0,
        2..=19 => 4096 * (tag % 7 + 1),
        _ => (tag * 7919) % 65_536,
    };
    (0..len).map(|i| (i ^ tag.wrapping_mul(31)) as u8).collect::<Vec<u8>>().into()
}

/// What `is_aligned` must say of a payload that went through the RPC layer.
fn expect_aligned(len: usize) -> bool {
    len > 0 && len.is_multiple_of(4096)
}

/// 1000 calls in flight on one connection, answered after pseudo-random
/// delays so replies come back out of order: each caller must get exactly
/// its own reply and its own payload, block-aligned where it can be.
async fn many_concurrent_calls(endpoint: Endpoint) {
    let server = start(endpoint).await;
    let client = connect(&server.endpoint, RpcConfig::default()).await;
    let mut calls = JoinSet::new();
    for tag in 0..1000u64 {
        let client = client.clone();
        calls.spawn(async move {
            let payload = payload_for(tag);
            let request = TestReq::Echo { tag, delay_ms: tag * 7 % 5 };
            let (response, echoed) = client.call(&request, payload.clone()).await.expect("call");
            let aligned = expect_aligned(payload.len());
            assert_eq!(response, TestResp::Echoed { tag, aligned });
            assert_eq!(echoed, payload, "payload of call {tag}");
            assert_eq!(is_aligned(&echoed), aligned);
        });
    }
    while let Some(done) = calls.join_next().await {
        done.expect("call task");
    }
    assert_eq!(client.in_flight(), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_calls_over_tcp() {
    many_concurrent_calls(tcp_any()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_calls_over_unix() {
    let dir = tempfile::tempdir().expect("tempdir");
    many_concurrent_calls(Endpoint::Unix(dir.path().join("rpc.sock"))).await;
}

/// A socket file left behind by a server that is gone does not block the
/// next bind; the new server serves on the same path.
#[tokio::test]
async fn stale_unix_socket_is_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = Endpoint::Unix(dir.path().join("rpc.sock"));
    drop(RpcServer::bind(&endpoint).await.expect("first bind"));
    assert!(dir.path().join("rpc.sock").exists(), "the dead server's socket file remains");
    let server = start(endpoint).await;
    let client = connect(&server.endpoint, RpcConfig::default()).await;
    client.call(&TestReq::Release, Bytes::new()).await.expect("call");
    server.stop().await;
}

/// A reply can overtake an earlier call: the first call waits until the
/// second arrives, so the second's reply must be delivered first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_come_back_out_of_order() {
    let server = start(tcp_any()).await;
    let client = connect(&server.endpoint, RpcConfig::default()).await;
    let first = tokio::spawn({
        let client = client.clone();
        async move { client.call(&TestReq::WaitForRelease, Bytes::new()).await }
    });
    let service = server.service.clone();
    wait_until("the first call waits", Duration::from_secs(5), || service.waiting.load(Ordering::SeqCst) == 1).await;
    let (second, _) = client.call(&TestReq::Release, Bytes::new()).await.expect("second call");
    assert_eq!(second, TestResp::Released);
    let (first, _) = first.await.expect("joined").expect("first call");
    assert_eq!(first, TestResp::Woke);
    server.stop().await;
}

/// Whole-block payloads land block-aligned on both sides, ready for O_DIRECT.
#[tokio::test]
async fn block_payloads_arrive_aligned() {
    let server = start(tcp_any()).await;
    let client = connect(&server.endpoint, RpcConfig::default()).await;
    for len in [4096, 3 * 4096, RPC_PAYLOAD_MAX_BYTES] {
        let payload = Bytes::from(vec![0xa5; len]);
        let (response, echoed) =
            client.call(&TestReq::Echo { tag: 1, delay_ms: 0 }, payload.clone()).await.expect("call");
        assert_eq!(response, TestResp::Echoed { tag: 1, aligned: true }, "server side, {len} bytes");
        assert!(is_aligned(&echoed), "client side, {len} bytes");
        assert_eq!(echoed, payload);
    }
    server.stop().await;
}

/// A client holding another secret is refused at the handshake, and the
/// server goes on serving clients that hold the right one.
#[tokio::test]
async fn wrong_secret_is_denied_and_server_keeps_serving() {
    let server = start(tcp_any()).await;
    let wrong = ClusterSecret::new(b"some-other-cluster-secret".to_vec()).expect("long enough");
    let wrong = Credential::from_secret(wrong, Principal::admin()).identity(Door::Meta);
    let refused = TestClient::connect(&server.endpoint, &wrong, RpcConfig::default()).await;
    assert!(matches!(refused, Err(RpcError::Denied)), "{refused:?}");
    let client = connect(&server.endpoint, RpcConfig::default()).await;
    client.call(&TestReq::Echo { tag: 2, delay_ms: 0 }, Bytes::new()).await.expect("good client served");
    server.stop().await;
}

/// The service is told, with each request, the principal its connection
/// proved: an issued frontend credential calls as that frontend.
#[tokio::test]
async fn the_service_sees_the_proven_principal() {
    let server = start(tcp_any()).await;
    let fe = Principal::new(Role::Frontend, "s3-a").expect("name");
    let issued = Credential::issue(&secret(), fe).expect("issue").identity(Door::Meta);
    for (identity, shown) in [(issued, "frontend s3-a"), (admin(), "admin admin")] {
        let client = TestClient::connect(&server.endpoint, &identity, RpcConfig::default()).await.expect("connect");
        let (answer, _) = client.call(&TestReq::WhoAmI, Bytes::new()).await.expect("call");
        assert_eq!(answer, TestResp::You(shown.into()));
    }
    server.stop().await;
}

/// Reads until the server closes; returns what it sent before closing.
/// A reset counts as closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut rest = Vec::new();
    match timeout(within, stream.read_to_end(&mut rest)).await {
        Err(_) => panic!("the server did not close the connection within {within:?}"),
        Ok(Ok(_)) => rest,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => rest,
        Ok(Err(e)) => panic!("unexpected read error: {e}"),
    }
}

fn handshake_deadline() -> Duration {
    Duration::from_millis(RPC_CONNECT_TIMEOUT_MS)
}

/// A stranger that answers the challenge with garbage is refused (at most
/// the deny byte) and disconnected.
#[tokio::test]
async fn stranger_sending_garbage_is_disconnected() {
    let server = start(tcp_any()).await;
    let mut stranger = TcpStream::connect(server.tcp_addr()).await.expect("connect");
    let mut hello = [0u8; 44];
    stranger.read_exact(&mut hello).await.expect("server hello");
    stranger.write_all(&[0x5a; 76]).await.expect("send garbage");
    let rest = read_until_closed(&mut stranger, handshake_deadline()).await;
    assert!(rest.is_empty() || rest == [0x01], "got {rest:?}");
    server.stop().await;
}

/// A stranger that connects and stays silent is disconnected once the
/// handshake deadline passes, so it cannot hold a connection slot forever.
#[tokio::test]
async fn silent_stranger_is_disconnected_after_the_deadline() {
    let server = start(tcp_any()).await;
    let mut stranger = TcpStream::connect(server.tcp_addr()).await.expect("connect");
    let mut hello = [0u8; 44];
    stranger.read_exact(&mut hello).await.expect("server hello");
    let rest = read_until_closed(&mut stranger, handshake_deadline() + Duration::from_secs(5)).await;
    assert!(rest.is_empty(), "got {rest:?}");
    server.stop().await;
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// The handshake done by hand from the documented layout, so these tests
/// also check PROTOCOL.md rather than only our own implementation.
async fn raw_connect(addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut hello = [0u8; 44];
    stream.read_exact(&mut hello).await.expect("server hello");
    assert_eq!(&hello[..12], b"CHUYIRPC\x02\x00\x00\x00");
    let server_nonce = &hello[12..];
    let client_nonce = [0x42u8; 32];
    // The administrator at the meta door: role 2, name "admin".
    let key = hmac(SECRET, &[b"chuyi-role-v1 meta admin admin"]);
    let mut reply = b"CHUYIRPC\x02\x00\x02\x05".to_vec();
    reply.extend_from_slice(&client_nonce);
    reply.extend_from_slice(b"admin");
    reply.extend_from_slice(&hmac(&key, &[b"chuyi-rpc-v2 client", server_nonce, &client_nonce]));
    stream.write_all(&reply).await.expect("client hello");
    let mut verdict = [0u8; 33];
    stream.read_exact(&mut verdict).await.expect("verdict");
    assert_eq!(verdict[0], 0x00, "accepted");
    assert_eq!(verdict[1..], hmac(&key, &[b"chuyi-rpc-v2 server", &client_nonce, server_nonce]));
    stream
}

async fn send_frame(stream: &mut TcpStream, request_id: u64, body: &[u8], payload: &[u8]) {
    let header = FrameHeader::new(FrameKind::Request, request_id, body.len(), payload.len()).expect("fits");
    stream.write_all(&header.encode()).await.expect("header");
    stream.write_all(body).await.expect("body");
    stream.write_all(payload).await.expect("payload");
}

async fn recv_frame(stream: &mut TcpStream) -> (FrameHeader, Vec<u8>, Vec<u8>) {
    let mut raw = [0u8; HEADER_LEN];
    stream.read_exact(&mut raw).await.expect("header");
    let header = FrameHeader::decode(&raw).expect("valid header");
    let mut body = vec![0u8; header.body_len as usize];
    stream.read_exact(&mut body).await.expect("body");
    let mut payload = vec![0u8; header.payload_len as usize];
    stream.read_exact(&mut payload).await.expect("payload");
    (header, body, payload)
}

/// A header announcing a payload over the limit loses framing: the server
/// closes that connection, without reading the payload, and nobody else
/// notices.
#[tokio::test]
async fn oversized_payload_header_closes_only_that_connection() {
    let server = start(tcp_any()).await;
    let bystander = connect(&server.endpoint, RpcConfig::default()).await;
    let mut raw = raw_connect(&server.tcp_addr()).await;
    let too_big = (RPC_PAYLOAD_MAX_BYTES + 1) as u32;
    let header = FrameHeader {
        version: chuyi_common::rpc::FRAME_VERSION,
        kind: FrameKind::Request,
        request_id: 1,
        body_len: 0,
        payload_len: too_big,
    };
    raw.write_all(&header.encode()).await.expect("header");
    let rest = read_until_closed(&mut raw, handshake_deadline()).await;
    assert!(rest.is_empty(), "got {rest:?}");
    let (response, _) = bystander.call(&TestReq::Echo { tag: 3, delay_ms: 0 }, Bytes::new()).await.expect("bystander");
    assert_eq!(response, TestResp::Echoed { tag: 3, aligned: false });
    server.stop().await;
}

/// A well-framed request whose body is not a message gets a kind=3 error
/// reply for its id, and the connection goes on to serve the next request.
#[tokio::test]
async fn garbage_body_gets_an_error_reply_and_the_connection_survives() {
    let server = start(tcp_any()).await;
    let mut raw = raw_connect(&server.tcp_addr()).await;
    send_frame(&mut raw, 7, &[0xff; 10], &[]).await;
    let (header, body, payload) = recv_frame(&mut raw).await;
    assert_eq!((header.kind, header.request_id), (FrameKind::Error, 7));
    let message: String = postcard::from_bytes(&body).expect("error body is a string");
    assert!(!message.is_empty() && payload.is_empty());

    let good = postcard::to_stdvec(&TestReq::Echo { tag: 9, delay_ms: 0 }).expect("encode");
    send_frame(&mut raw, 8, &good, b"abc").await;
    let (header, body, payload) = recv_frame(&mut raw).await;
    assert_eq!((header.kind, header.request_id), (FrameKind::Response, 8));
    let response: TestResp = postcard::from_bytes(&body).expect("response");
    assert_eq!(response, TestResp::Echoed { tag: 9, aligned: false });
    assert_eq!(payload, b"abc");
    server.stop().await;
}

/// Calls the server never answers time out, leave no pending entry behind,
/// and leave the connection usable for the next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_calls_do_not_leak() {
    let server = start(tcp_any()).await;
    let config = RpcConfig { call_timeout: Duration::from_millis(200), ..RpcConfig::default() };
    let client = connect(&server.endpoint, config).await;
    let mut calls = JoinSet::new();
    for _ in 0..10 {
        let client = client.clone();
        calls.spawn(async move { client.call(&TestReq::Hang, Bytes::new()).await });
    }
    while let Some(done) = calls.join_next().await {
        let result = done.expect("call task");
        assert!(matches!(result, Err(RpcError::Timeout)), "{result:?}");
    }
    assert_eq!(client.in_flight(), 0);
    let (response, _) = client.call(&TestReq::Echo { tag: 4, delay_ms: 0 }, Bytes::new()).await.expect("later call");
    assert_eq!(response, TestResp::Echoed { tag: 4, aligned: false });
    assert!(!client.is_closed());
    server.stop().await;
}

/// A caller that drops its call future (here through `select!`) leaves no
/// pending entry behind either.
#[tokio::test]
async fn dropped_calls_do_not_leak() {
    let server = start(tcp_any()).await;
    let client = connect(&server.endpoint, RpcConfig::default()).await;
    let service = server.service.clone();
    let hung = client.call(&TestReq::Hang, Bytes::new());
    let started = wait_until("the call reaches the server", Duration::from_secs(5), || {
        service.hanging.load(Ordering::SeqCst) == 1
    });
    tokio::select! {
        result = hung => panic!("a hanging call returned: {result:?}"),
        () = started => {}
    }
    assert_eq!(client.in_flight(), 0);
    server.stop().await;
}

/// Shutting the server down fails calls in flight with `Closed` promptly
/// rather than leaving them to their deadline, and the client knows it is
/// closed afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_shutdown_fails_pending_calls_with_closed() {
    let server = start(tcp_any()).await;
    let client = connect(&server.endpoint, RpcConfig::default()).await;
    let pending = spawn_call(&client, TestReq::Hang);
    let service = server.service.clone();
    wait_until("the call reaches the server", Duration::from_secs(5), || service.hanging.load(Ordering::SeqCst) == 1)
        .await;
    server.stop().await;
    let result = timeout(Duration::from_secs(5), pending).await.expect("call ended promptly").expect("joined");
    assert!(matches!(result, Err(RpcError::Closed)), "{result:?}");
    wait_until("the client sees the connection closed", Duration::from_secs(5), || client.is_closed()).await;
    let after = client.call(&TestReq::Release, Bytes::new()).await;
    assert!(matches!(after, Err(RpcError::Closed)), "{after:?}");
}

fn spawn_call(
    client: &TestClient,
    request: TestReq,
) -> impl Future<Output = Result<Result<(TestResp, Bytes), RpcError>, tokio::task::JoinError>> {
    let client = client.clone();
    tokio::spawn(async move { client.call(&request, Bytes::new()).await })
}

/// A gate open for its first `opens` checks, then shut.
#[derive(Debug)]
struct Closing {
    opens: AtomicUsize,
}

impl chuyi_common::rpc::SendGate for Closing {
    fn open(&self) -> bool {
        self.opens.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    }
}

/// A request whose gate shuts between the call and the writer (a frontend
/// frozen with it queued, resumed past its lease) is never sent: the server
/// sees nothing, the caller gets `Gated`, and the connection serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_gate_shut_while_queued_is_never_sent() {
    let server = start(tcp_any()).await;
    let client = connect(&server.endpoint, RpcConfig::default()).await;
    let shut_at_the_writer: Arc<dyn chuyi_common::rpc::SendGate> = Arc::new(Closing { opens: AtomicUsize::new(1) });
    let sent = client.call_gated(&TestReq::Hang, Bytes::new(), Some(&shut_at_the_writer)).await;
    assert!(matches!(sent, Err(RpcError::Gated)), "{sent:?}");
    let shut: Arc<dyn chuyi_common::rpc::SendGate> = Arc::new(Closing { opens: AtomicUsize::new(0) });
    let sent = client.call_gated(&TestReq::Hang, Bytes::new(), Some(&shut)).await;
    assert!(matches!(sent, Err(RpcError::Gated)), "{sent:?}");
    let echo = client.call(&TestReq::Echo { tag: 5, delay_ms: 0 }, Bytes::new()).await.expect("served on");
    assert!(matches!(echo.0, TestResp::Echoed { tag: 5, .. }), "{echo:?}");
    assert_eq!(server.service.hanging.load(Ordering::SeqCst), 0, "a gated request reached the server");
    assert_eq!(client.in_flight(), 0, "the gated calls left nothing pending");
}
