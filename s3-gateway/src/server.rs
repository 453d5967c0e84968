//! The HTTP side: one hyper connection per client (HTTP/1.1 and h2), the
//! s3s service routing each request, authenticated by [`Users`].

use std::sync::Arc;

use chuyi_common::secret::ClusterSecret;
use chuyi_metadata::client::MetaClient;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;

use crate::auth::{UserAuth, Users};
use crate::buckets::Gateway;

/// Builds the S3 service of a cluster: buckets go to `pool`.
pub fn service(meta: MetaClient, secret: &ClusterSecret, pool: String) -> S3Service {
    let meta = Arc::new(meta);
    let users = Arc::new(Users::new(meta.clone(), secret));
    let mut builder = S3ServiceBuilder::new(Gateway::new(meta, users.clone(), pool));
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
