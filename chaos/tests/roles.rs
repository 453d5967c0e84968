//! Roles on internal RPC, against a real cluster (its nodes run with their
//! own issued credentials, never the secret): each forbidden call, tried
//! with each role that may not make it, is refused with `Forbidden` and
//! changes nothing; the calls a role needs still work; and no credential
//! claims a principal it is not.

use std::time::Duration;

use bytes::Bytes;
use chuyi_chaos::cluster::{admin, frontend, secret, Spec, TestCluster};
use chuyi_common::credential::{Credential, Door, Principal};
use chuyi_common::proto::chunk::{ChunkErrorKind, ChunkRequest, ChunkResponse, DiskRequest};
use chuyi_common::rpc::{Endpoint, RpcClient, RpcConfig, RpcError};
use chuyi_metadata::client::MetaClient;
use chuyi_metadata::proto::{self, ApiReply, Envelope, MetaCall, PeerCall, PeerReply, Query, RAFT_ENVELOPE};
use chuyi_metadata::state::model::NodeState;
use chuyi_metadata::state::{MetaError, Request};

fn client_as(cluster: &TestCluster, credential: &Credential) -> MetaClient {
    MetaClient::new(cluster.meta_addrs(), credential).expect("client").with_deadline(Duration::from_secs(5))
}

fn forbidden<T: std::fmt::Debug>(result: Result<T, MetaError>, who: &str) -> bool {
    matches!(&result, Err(MetaError::Forbidden { caller, .. }) if caller == who)
}

/// Raft's Vote sent on the Raft channel as `credential`'s principal (a
/// vote for a term far ahead: a member would take it).
async fn vote_as(cluster: &TestCluster, credential: &Credential) -> PeerReply {
    let endpoint: Endpoint = cluster.meta_addrs()[0].parse().expect("endpoint");
    let conn: RpcClient<Envelope, Envelope> =
        RpcClient::connect(&endpoint, &credential.identity(Door::Meta), RpcConfig::default()).await.expect("connect");
    let call = PeerCall::Vote(openraft::raft::VoteRequest::new(openraft::Vote::new(99, 9), None));
    let (envelope, payload) = conn.call(&RAFT_ENVELOPE, proto::encode(&call).expect("encode")).await.expect("call");
    proto::decode(envelope, &payload).expect("decode")
}

fn raft_refused(reply: &PeerReply, who: &str) -> bool {
    matches!(reply, PeerReply::Refused(MetaError::Forbidden { caller, .. }) if caller == who)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_role_is_refused_what_is_not_its_own() {
    let cluster = TestCluster::start(Spec::default()).await.expect("cluster");
    cluster.create_volume("v", 16).await.expect("volume");
    cluster.wait_clean(Duration::from_secs(30)).await.expect("clean");
    let admin_client = cluster.meta().expect("admin");

    // A frontend: none of what the issue names (a volume key destroyed,
    // another frontend's lease; a node marked down is no request at all,
    // only members commit it), nor any other administration, nor Raft
    // traffic.
    let fe = client_as(&cluster, &frontend("fe-a"));
    let calls = [
        MetaCall::Write(Request::RewrapVolumeKey { name: "v".into(), old: vec![], new: vec![1] }),
        MetaCall::Write(Request::DestroyVolumeKey { name: "v".into(), holder: "fe-a".into() }),
        MetaCall::Write(Request::AcquireLease { volume: "v".into(), holder: "fe-b:1".into(), ttl_ms: 60_000 }),
        MetaCall::Write(Request::DeleteVolume { name: "v".into() }),
        MetaCall::Write(Request::Heartbeat { id: 1, disks: vec![] }),
        MetaCall::CreateUser { name: "mallory".into(), admin: true },
        MetaCall::RemoveMember { id: 1 },
    ];
    for call in &calls {
        assert!(forbidden(fe.call(call).await, "frontend fe-a"), "{call:?}");
    }
    let reply = vote_as(&cluster, &frontend("fe-a")).await;
    assert!(raft_refused(&reply, "frontend fe-a"), "{reply:?}");
    // A storage node: its own heartbeat, never another's, nor
    // administration.
    let node1_credential = Credential::issue(&secret(), Principal::node(1)).expect("issue");
    let node1 = client_as(&cluster, &node1_credential);
    for call in [
        MetaCall::Write(Request::Heartbeat { id: 2, disks: vec![] }),
        MetaCall::Write(Request::DeletePool { name: "default".into() }),
        MetaCall::Write(Request::ReportUnreachable { reporter: 2, node: 3 }),
        MetaCall::CreateUser { name: "mallory".into(), admin: true },
    ] {
        assert!(forbidden(node1.call(&call).await, "node 1"), "{call:?}");
    }
    let reply = vote_as(&cluster, &node1_credential).await;
    assert!(raft_refused(&reply, "node 1"), "{reply:?}");
    // The administrator: everything but Raft traffic.
    let reply = vote_as(&cluster, &admin()).await;
    assert!(raft_refused(&reply, "admin admin"), "{reply:?}");

    // Nothing changed: every node is up, the volume is there unleased, no
    // user was made.
    let ApiReply::Map(map) = admin_client.read(Query::Map).await.expect("map") else { panic!("not a map") };
    assert!(map.nodes.iter().all(|n| n.state == NodeState::Up), "{:?}", map.nodes);
    let ApiReply::Volume(volume) = admin_client.read(Query::Volume("v".into())).await.expect("volume") else {
        panic!("not a volume")
    };
    assert!(volume.lease.is_none(), "{:?}", volume.lease);
    assert!(matches!(admin_client.read(Query::Users).await, Ok(ApiReply::Users(u)) if u.is_empty()));

    // What a frontend needs works: its own leases, reads.
    let own = Request::AcquireLease { volume: "v".into(), holder: "fe-a:7".into(), ttl_ms: 60_000 };
    assert!(fe.write(own).await.is_ok());
    assert!(fe.read(Query::Volumes).await.is_ok());
}

/// At a storage node (a real process holding its own node credential): a
/// frontend gets no raw disk request, its own node-door key claims no
/// other principal, and its meta-door key opens no node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_serve_frontends_no_raw_disk_requests() {
    let cluster = TestCluster::start(Spec::default()).await.expect("cluster");
    let addr: Endpoint = cluster.nodes[0].addr.parse().expect("endpoint");
    let fe = frontend("fe-a");
    let conn: RpcClient<ChunkRequest, ChunkResponse> =
        RpcClient::connect(&addr, &fe.identity(Door::Node), RpcConfig::default()).await.expect("connect");
    let list = ChunkRequest::Disk(DiskRequest::ListChunks { disk: 0, start_after: None, max: 10 });
    let (reply, _) = conn.call(&list, Bytes::new()).await.expect("answered");
    assert!(matches!(&reply, ChunkResponse::Error(e) if e.kind == ChunkErrorKind::Forbidden), "{reply:?}");
    let (reply, _) = conn.call(&ChunkRequest::NodeStatus, Bytes::new()).await.expect("answered");
    assert!(matches!(reply, ChunkResponse::Status(_)), "{reply:?}");
    // The administrator may.
    let (reply, _) = cluster.node_rpc(1).await.expect("admin").call(&list, Bytes::new()).await.expect("answered");
    assert!(matches!(reply, ChunkResponse::Chunks { .. }), "{reply:?}");

    let mut forged = fe.identity(Door::Node);
    forged.principal = Principal::admin();
    let refused = RpcClient::<ChunkRequest, ChunkResponse>::connect(&addr, &forged, RpcConfig::default()).await;
    assert!(matches!(refused, Err(RpcError::Denied)), "{:?}", refused.err());
    let wrong_door =
        RpcClient::<ChunkRequest, ChunkResponse>::connect(&addr, &fe.identity(Door::Meta), RpcConfig::default()).await;
    assert!(matches!(wrong_door, Err(RpcError::Denied)), "{:?}", wrong_door.err());
}

/// The CLI: `chuyi credential issue` writes a frontend's credential; an
/// administrative command given it instead of the secret says whose it is
/// and does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_issues_credentials_and_refuses_them_for_administration() {
    let cluster = TestCluster::start(Spec::default()).await.expect("cluster");
    let file = cluster.dir().join("fe-x.cred");
    let path = file.to_string_lossy().into_owned();
    let (ok, out, err) = cluster.cli(&["credential", "issue", "--frontend", "fe-x", "--out", &path]).expect("cli");
    assert!(ok, "{out}{err}");
    let text = std::fs::read_to_string(&file).expect("written");
    assert!(text.starts_with("chuyi-credential-v1\nprincipal frontend fe-x\n"), "{text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777, 0o600);

    let out = std::process::Command::new(chuyi_chaos::cluster::chuyi_bin().expect("bin"))
        .args(["--meta", &cluster.meta_addrs().join(","), "--secret-file", &path, "pool", "list"])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("frontend fe-x"), "{err}");
    let (ok, _, err) = cluster.cli(&["credential", "issue", "--node", "1", "--frontend", "x"]).expect("cli");
    assert!(!ok && err.contains("cannot be used with"), "{err}");
}
