//! A minimal S3 client for the benchmark: one kept-alive HTTP/1.1
//! connection, path-style URLs, every request signed with SigV4 in the
//! `Authorization` header by AWS's own signer (`aws-sigv4`), so the gateway
//! checks the signatures a real SDK sends. It speaks only what
//! `s3-load` needs: CreateBucket, PutObject, GetObject, ListObjectsV2 and
//! DeleteObject.
//!
//! Why not `aws-sdk-s3`: it compiles a few hundred crates (its own HTTP
//! stack, TLS, the whole S3 model), many minutes on a 2-core machine, to
//! send five kinds of request; the signature is the only part that must be
//! exactly AWS's, and that is what this takes from AWS. Why not a pool of
//! connections: each benchmark worker owns one connection and has one
//! request in flight on it, so "N in flight" is N connections, as N
//! single-threaded clients would be.

use std::net::SocketAddr;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use chuyi_backup::s3::{object_path, parse_list_page, s3_settings};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// The region requests are signed for; the gateway accepts any.
const REGION: &str = "us-east-1";
/// Most bytes of an error or listing reply kept: a page of 1000 keys is
/// about 300 KB of XML.
const REPLY_MAX_BYTES: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum S3ClientError {
    #[error("connecting to {addr}: {error}")]
    Connect { addr: SocketAddr, error: std::io::Error },
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("building the request: {0}")]
    Request(#[from] http::Error),
    #[error("signing: {0}")]
    Sign(String),
    /// The gateway answered with an error status.
    #[error("{op} answered {status}: {body}")]
    Status { op: &'static str, status: StatusCode, body: String },
    /// The gateway's answer does not say what the request needs to know.
    #[error("{op}: {what}")]
    Reply { op: &'static str, what: String },
}

/// How the body's SHA-256 goes into the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum PayloadSigning {
    /// `UNSIGNED-PAYLOAD`: what SDKs send over TLS; the gateway hashes
    /// nothing for the signature.
    Unsigned,
    /// The body's SHA-256 (computed once per object size by the caller),
    /// which the gateway must verify over every byte it receives.
    Sha256,
}

/// The access key pair of a user (chuyi-backup's, which never prints the
/// secret key).
pub use chuyi_backup::s3::S3Keys as Keys;

/// One page of a ListObjectsV2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub keys: usize,
    pub next_token: Option<String>,
}

/// One connection to the gateway, signing as one user.
#[derive(Debug)]
pub struct S3Connection {
    addr: SocketAddr,
    credentials: Credentials,
    payload: PayloadSigning,
    sender: SendRequest<Full<Bytes>>,
}

impl S3Connection {
    pub async fn connect(addr: SocketAddr, keys: &Keys, payload: PayloadSigning) -> Result<Self, S3ClientError> {
        let stream =
            tokio::net::TcpStream::connect(addr).await.map_err(|error| S3ClientError::Connect { addr, error })?;
        // Requests are small or one large body: Nagle would only delay them.
        stream.set_nodelay(true).map_err(|error| S3ClientError::Connect { addr, error })?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // It ends when the sender is dropped, or with the error the
            // next request on it reports.
            let _ = connection.await;
        });
        let credentials = Credentials::new(&keys.access_key, &keys.secret_key, None, None, "chuyi-bench");
        Ok(Self { addr, credentials, payload, sender })
    }

    pub async fn create_bucket(&mut self, bucket: &str) -> Result<(), S3ClientError> {
        let reply = self.send(Method::PUT, &format!("/{bucket}"), Bytes::new(), None).await?;
        drain("CreateBucket", reply).await.map(drop)
    }

    /// PUT of `body`, whose SHA-256 (hex) is `sha256`; returns the ETag
    /// without its quotes.
    pub async fn put_object(
        &mut self,
        bucket: &str,
        key: &str,
        body: Bytes,
        sha256: &str,
    ) -> Result<String, S3ClientError> {
        let reply = self.send(Method::PUT, &object_path(bucket, key), body, Some(sha256)).await?;
        let etag = etag("PutObject", &reply)?;
        drain("PutObject", reply).await?;
        Ok(etag)
    }

    /// GET of a whole object, counting its bytes as they arrive (never
    /// holding the body); returns (bytes, ETag).
    pub async fn get_object(&mut self, bucket: &str, key: &str) -> Result<(u64, String), S3ClientError> {
        let reply = self.send(Method::GET, &object_path(bucket, key), Bytes::new(), None).await?;
        if !reply.status().is_success() {
            return Err(status_error("GetObject", reply).await);
        }
        let etag = etag("GetObject", &reply)?;
        let mut body = reply.into_body();
        let mut received = 0u64;
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame?.data_ref() {
                received += data.len() as u64;
            }
        }
        Ok((received, etag))
    }

    /// One ListObjectsV2 page of up to 1000 keys under `prefix`.
    pub async fn list_page(
        &mut self,
        bucket: &str,
        prefix: &str,
        token: Option<&str>,
    ) -> Result<ListPage, S3ClientError> {
        let mut query = format!("list-type=2&max-keys=1000&prefix={}", urlencoding::encode(prefix));
        if let Some(token) = token {
            query.push_str(&format!("&continuation-token={}", urlencoding::encode(token)));
        }
        let reply = self.send(Method::GET, &format!("/{bucket}?{query}"), Bytes::new(), None).await?;
        let xml = drain("ListObjectsV2", reply).await?;
        let xml = std::str::from_utf8(&xml)
            .map_err(|_| S3ClientError::Reply { op: "ListObjectsV2", what: "the reply is not UTF-8".into() })?;
        let page = parse_list_page(xml).map_err(|what| S3ClientError::Reply { op: "ListObjectsV2", what })?;
        Ok(ListPage { keys: page.keys.len(), next_token: page.next_token })
    }

    pub async fn delete_object(&mut self, bucket: &str, key: &str) -> Result<(), S3ClientError> {
        let reply = self.send(Method::DELETE, &object_path(bucket, key), Bytes::new(), None).await?;
        drain("DeleteObject", reply).await.map(drop)
    }

    /// Signs and sends one request; `path` is already URL-encoded.
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
        sha256: Option<&str>,
    ) -> Result<Response<Incoming>, S3ClientError> {
        let url = format!("http://{}{path}", self.addr);
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(http::header::HOST, self.addr.to_string())
            .body(Full::new(body.clone()))?;
        let signable_body = match (self.payload, sha256) {
            (PayloadSigning::Unsigned, _) => SignableBody::UnsignedPayload,
            (PayloadSigning::Sha256, Some(hex)) => SignableBody::Precomputed(hex.to_string()),
            (PayloadSigning::Sha256, None) => SignableBody::Bytes(&body),
        };
        let signable = SignableRequest::new(method.as_str(), url, std::iter::empty(), signable_body)
            .map_err(|e| S3ClientError::Sign(e.to_string()))?;
        let identity = self.credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(REGION)
            .name("s3")
            .time(SystemTime::now())
            .settings(s3_settings())
            .build()
            .map_err(|e| S3ClientError::Sign(e.to_string()))?
            .into();
        let (instructions, _) = sign(signable, &params).map_err(|e| S3ClientError::Sign(e.to_string()))?.into_parts();
        instructions.apply_to_request_http1x(&mut request);
        self.sender.ready().await?;
        Ok(self.sender.send_request(request).await?)
    }
}

fn etag(op: &'static str, reply: &Response<Incoming>) -> Result<String, S3ClientError> {
    let value = reply.headers().get(http::header::ETAG).and_then(|v| v.to_str().ok());
    match value {
        Some(v) => Ok(v.trim_matches('"').to_string()),
        None if !reply.status().is_success() => Ok(String::new()),
        None => Err(S3ClientError::Reply { op, what: "no ETag".into() }),
    }
}

/// The whole reply body of a successful request (bounded), or its error.
async fn drain(op: &'static str, reply: Response<Incoming>) -> Result<Bytes, S3ClientError> {
    if !reply.status().is_success() {
        return Err(status_error(op, reply).await);
    }
    read_bounded(op, reply.into_body()).await
}

async fn read_bounded(op: &'static str, mut body: Incoming) -> Result<Bytes, S3ClientError> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            if out.len() + data.len() > REPLY_MAX_BYTES {
                return Err(S3ClientError::Reply { op, what: format!("a reply above {REPLY_MAX_BYTES} bytes") });
            }
            out.extend_from_slice(data);
        }
    }
    Ok(Bytes::from(out))
}

async fn status_error(op: &'static str, reply: Response<Incoming>) -> S3ClientError {
    let status = reply.status();
    let body = match read_bounded(op, reply.into_body()).await {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => format!("(reading the error body: {e})"),
    };
    S3ClientError::Status { op, status, body }
}
