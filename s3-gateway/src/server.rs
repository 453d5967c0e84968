//! The HTTP side: one hyper connection per client (HTTP/1.1 and h2), the
//! s3s service routing each request, authenticated by [`Users`].

use std::sync::Arc;

use chuyi_client::Cluster;
use chuyi_common::secret::ClusterSecret;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;

use crate::auth::{UserAuth, Users};
use crate::data::DataPath;
use crate::gateway::Gateway;

/// Builds the S3 service of a cluster (new buckets' objects go to `pool`)
/// and starts its reclaimer.
pub fn service(cluster: Arc<Cluster>, secret: &ClusterSecret, pool: String) -> S3Service {
    let users = Arc::new(Users::new(cluster.clone(), secret));
    tokio::spawn(crate::reclaim::run(DataPath::new(cluster.clone())));
    let mut builder = S3ServiceBuilder::new(Gateway::new(cluster, users.clone(), pool));
    builder.set_auth(UserAuth(users));
    builder.build()
}

/// Serves S3 on `listener` until it fails; each connection on its own task.
pub async fn serve(listener: TcpListener, service: S3Service) -> std::io::Result<()> {
    let service = Arc::new(service);
    loop {
        let (stream, peer) = listener.accept().await?;
        let service = service.clone();
        tokio::spawn(async move {
            let served = Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service.as_ref().clone())
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "s3 connection ended");
            }
        });
    }
}
