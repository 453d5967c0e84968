//! A storage node serving inside a test's runtime, and the cluster secret,
//! administrator and raw connection its tests reach it with. Included (by
//! path) by the tests that talk to nodes over their chunk service.

use chuyi_common::credential::{Credential, Door, Identity, Principal};
use chuyi_common::rpc::{client_handshake, Endpoint};
use chuyi_common::secret::ClusterSecret;
use chuyi_storage_node::node::Node;
use tokio::net::TcpStream;

const SECRET: &[u8] = b"node-test-cluster-secret";

pub fn secret() -> ClusterSecret {
    ClusterSecret::new(SECRET.to_vec()).expect("secret")
}

/// The test's client: the administrator, who may make raw disk requests.
pub fn admin() -> Identity {
    Credential::from_secret(secret(), Principal::admin()).identity(Door::Node)
}

/// A node serving until [`Running::stop`].
pub struct Running {
    pub endpoint: Endpoint,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("node task");
    }
}

/// Serves `node` in a task of the test's runtime.
pub fn serve(node: Node) -> Running {
    let endpoint = node.endpoints()[0].clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        node.serve(async move {
            let _ = stopped.await;
        })
        .await
        .expect("serve");
    });
    Running { endpoint, stop, task }
}

/// A raw connection to a node's TCP endpoint, past the handshake as the
/// administrator: for frames no client would send.
pub async fn authenticated(endpoint: &Endpoint) -> TcpStream {
    let Endpoint::Tcp(addr) = endpoint else { panic!("a TCP endpoint") };
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let (mut r, mut w) = stream.split();
    client_handshake(&mut r, &mut w, &admin()).await.expect("handshake");
    stream
}
