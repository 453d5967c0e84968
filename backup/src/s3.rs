//! The S3 client a backup target is reached with: path-style requests
//! signed with SigV4 by AWS's own signer (`aws-sigv4`), over HTTP/1.1 or
//! HTTPS (rustls), on a small pool of kept-alive connections, each request
//! retried through network faults and 5xx/429 answers until `retry_for`
//! has passed (a target cut off for a while is waited for, not failed on).
//!
//! It speaks what a backup needs and no more: PutObject, GetObject,
//! DeleteObject, ListObjectsV2 and CreateBucket. Why not `aws-sdk-s3`: a
//! few hundred crates and many minutes of build on a 2-core machine for
//! five requests; the signature is the part that must be exactly AWS's,
//! and that is what this takes from AWS (as `bench/src/s3_client.rs`
//! does for the benchmark).
//!
//! Over plain HTTP the body's SHA-256 is signed, so the server checks every
//! byte it receives; over TLS, as SDKs do, the payload is `UNSIGNED-PAYLOAD`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::error::S3Error;

/// The region requests are signed for unless told otherwise.
pub const DEFAULT_REGION: &str = "us-east-1";
/// Most bytes of a reply kept: a manifest of a 4 TiB volume.
const REPLY_MAX_BYTES: usize = 256 << 20;
/// One try of one request, connecting included; a black-holed target is
/// given up on after this and tried again.
const TRY_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections kept open for reuse.
const POOL_MAX: usize = 32;
/// Where Debian keeps the system's trusted CAs.
const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// An access key pair.
#[derive(Clone)]
pub struct S3Keys {
    pub access_key: String,
    pub secret_key: String,
}

/// Never prints the secret key.
impl std::fmt::Debug for S3Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Keys").field("access_key", &self.access_key).finish_non_exhaustive()
    }
}

impl S3Keys {
    /// The keys of `$AWS_ACCESS_KEY_ID` and `$AWS_SECRET_ACCESS_KEY` when
    /// no profile is named, else of `profile` (or `$AWS_PROFILE`) in
    /// `$AWS_SHARED_CREDENTIALS_FILE` or `~/.aws/credentials`, as the AWS
    /// CLI reads them.
    pub fn from_env(profile: Option<&str>) -> Result<Self, S3Error> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let profile = profile.map(String::from).or_else(|| env("AWS_PROFILE"));
        if profile.is_none() {
            if let (Some(access_key), Some(secret_key)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
                return Ok(Self { access_key, secret_key });
            }
        }
        let profile = profile.unwrap_or_else(|| "default".into());
        let file = env("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")))
            .ok_or_else(|| S3Error::Credentials("no $AWS_ACCESS_KEY_ID and no credentials file".into()))?;
        let text = std::fs::read_to_string(&file).map_err(|e| {
            S3Error::Credentials(format!("no $AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY, and {}: {e}", file.display()))
        })?;
        profile_keys(&text, &profile)
            .ok_or_else(|| S3Error::Credentials(format!("no keys of profile [{profile}] in {}", file.display())))
    }
}

/// The keys of `[profile]` in an AWS credentials file (INI).
fn profile_keys(text: &str, profile: &str) -> Option<S3Keys> {
    let (mut access, mut secret, mut inside) = (None, None, false);
    for line in text.lines().map(str::trim) {
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = section.trim() == profile;
        } else if let (true, Some((k, v))) = (inside, line.split_once('=')) {
            match k.trim() {
                "aws_access_key_id" => access = Some(v.trim().to_string()),
                "aws_secret_access_key" => secret = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    Some(S3Keys { access_key: access?, secret_key: secret? })
}

/// How a client talks to its endpoint.
#[derive(Clone, Debug)]
pub struct S3Options {
    pub region: String,
    /// PEM file of the CAs an HTTPS endpoint's certificate is checked
    /// against (`$AWS_CA_BUNDLE`); else the system's.
    pub ca_file: Option<PathBuf>,
    /// How long a request keeps being retried through faults.
    pub retry_for: Duration,
}

impl Default for S3Options {
    fn default() -> Self {
        Self { region: DEFAULT_REGION.into(), ca_file: None, retry_for: Duration::from_secs(300) }
    }
}

/// `http://host:port` or `https://host[:port]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self, S3Error> {
        let bad = |why: &str| S3Error::Endpoint(format!("{url:?}: {why}"));
        let (tls, rest) = match url.split_once("://") {
            Some(("http", rest)) => (false, rest),
            Some(("https", rest)) => (true, rest),
            _ => return Err(bad("must start with http:// or https://")),
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(bad("must be a scheme and host[:port] only, without a path"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
                (host, port.parse().map_err(|_| bad("the port is not a number"))?)
            }
            _ => (authority, if tls { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Self { tls, host: host.to_string(), port })
    }

    fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", if self.tls { "https" } else { "http" }, self.host, self.port)
    }
}

/// One key of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
}

/// A client of one endpoint, signing as one user. Share it: requests from
/// many tasks run on connections of its pool.
pub struct S3 {
    endpoint: Endpoint,
    credentials: Credentials,
    options: S3Options,
    tls: Option<tokio_rustls::TlsConnector>,
    pool: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl std::fmt::Debug for S3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

impl S3 {
    pub fn new(endpoint: &str, keys: &S3Keys, options: S3Options) -> Result<Self, S3Error> {
        let endpoint = Endpoint::parse(endpoint)?;
        let tls = if endpoint.tls { Some(tls_connector(options.ca_file.as_deref())?) } else { None };
        let credentials = Credentials::new(&keys.access_key, &keys.secret_key, None, None, "chuyi-backup");
        Ok(Self { endpoint, credentials, options, tls, pool: Mutex::new(Vec::new()) })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub async fn put(&self, bucket: &str, key: &str, body: Bytes) -> Result<(), S3Error> {
        self.call("PutObject", Method::PUT, &object_path(bucket, key), body).await.map(drop)
    }

    /// PUT only if the key is absent (`If-None-Match: *`); `false` when it
    /// was there (412), which is also what a retry of a PUT that landed
    /// meets.
    pub async fn put_new(&self, bucket: &str, key: &str, body: Bytes) -> Result<bool, S3Error> {
        match self.call_with("PutObject", Method::PUT, &object_path(bucket, key), body, true).await {
            Ok(_) => Ok(true),
            Err(S3Error::Status { status: StatusCode::PRECONDITION_FAILED, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The object's bytes; `None` when there is no such key.
    pub async fn get(&self, bucket: &str, key: &str) -> Result<Option<Bytes>, S3Error> {
        match self.call("GetObject", Method::GET, &object_path(bucket, key), Bytes::new()).await {
            Ok(body) => Ok(Some(body)),
            Err(S3Error::Status { status: StatusCode::NOT_FOUND, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes a key; deleting one that is not there is no error (S3's own
    /// answer, and what a retried delete meets).
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), S3Error> {
        match self.call("DeleteObject", Method::DELETE, &object_path(bucket, key), Bytes::new()).await {
            Err(S3Error::Status { status: StatusCode::NOT_FOUND, .. }) => Ok(()),
            other => other.map(drop),
        }
    }

    /// Every key under `prefix`, in key order, page after page.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<Listed>, S3Error> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = format!("list-type=2&max-keys=1000&prefix={}", urlencoding::encode(prefix));
            if let Some(token) = &token {
                query.push_str(&format!("&continuation-token={}", urlencoding::encode(token)));
            }
            let path = format!("/{}?{query}", urlencoding::encode(bucket));
            let xml = self.call("ListObjectsV2", Method::GET, &path, Bytes::new()).await?;
            let xml = std::str::from_utf8(&xml)
                .map_err(|_| S3Error::Reply { op: "ListObjectsV2", what: "the reply is not UTF-8".into() })?;
            let page = parse_list_page(xml).map_err(|what| S3Error::Reply { op: "ListObjectsV2", what })?;
            out.extend(page.keys);
            match page.next_token {
                // A server handing back the same token would list forever.
                Some(next) if token.as_ref() == Some(&next) => {
                    return Err(S3Error::Reply {
                        op: "ListObjectsV2",
                        what: "the same continuation token twice".into(),
                    });
                }
                Some(next) => token = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// Makes the bucket; one this user already owns is fine.
    pub async fn create_bucket(&self, bucket: &str) -> Result<(), S3Error> {
        let path = format!("/{}", urlencoding::encode(bucket));
        match self.call("CreateBucket", Method::PUT, &path, Bytes::new()).await {
            Err(S3Error::Status { status: StatusCode::CONFLICT, ref code, .. })
                if code == "BucketAlreadyOwnedByYou" =>
            {
                Ok(())
            }
            other => other.map(drop),
        }
    }

    /// One request, retried through what [`retryable`] says passes.
    async fn call(&self, op: &'static str, method: Method, path: &str, body: Bytes) -> Result<Bytes, S3Error> {
        self.call_with(op, method, path, body, false).await
    }

    async fn call_with(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        body: Bytes,
        only_new: bool,
    ) -> Result<Bytes, S3Error> {
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            let once = self.try_once(op, method.clone(), path, body.clone(), only_new);
            let tried = tokio::time::timeout(TRY_TIMEOUT, once).await;
            let error = match tried {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(e)) => e,
                Err(_) => S3Error::Timeout { op, after: TRY_TIMEOUT },
            };
            let delay = backoff(attempt);
            if !retryable(&error) || started.elapsed() + delay > self.options.retry_for {
                return Err(error);
            }
            tracing::warn!(op, path, error = %error, attempt, "S3 request failed; retrying");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    async fn try_once(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        body: Bytes,
        only_new: bool,
    ) -> Result<Bytes, S3Error> {
        let mut request = self.signed(method, path, body)?;
        if only_new {
            request.headers_mut().insert(http::header::IF_NONE_MATCH, http::HeaderValue::from_static("*"));
        }
        let mut sender = self.connection().await?;
        sender.ready().await?;
        let reply = sender.send_request(request).await?;
        let status = reply.status();
        let body = read_bounded(op, reply.into_body()).await?;
        // Only a connection whose reply was read whole is reused.
        if let Ok(mut pool) = self.pool.lock() {
            if pool.len() < POOL_MAX {
                pool.push(sender);
            }
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            let code = element(&text, "Code").unwrap_or_default().to_string();
            let message = element(&text, "Message").map(unescape).unwrap_or_default();
            return Err(S3Error::Status { op, status, code, message });
        }
        Ok(body)
    }

    fn signed(&self, method: Method, path: &str, body: Bytes) -> Result<Request<Full<Bytes>>, S3Error> {
        let authority = self.endpoint.authority();
        let url = format!("{}://{authority}{path}", if self.endpoint.tls { "https" } else { "http" });
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(http::header::HOST, &authority)
            .body(Full::new(body.clone()))
            .map_err(|e| S3Error::Sign(e.to_string()))?;
        let signable_body = if self.endpoint.tls { SignableBody::UnsignedPayload } else { SignableBody::Bytes(&body) };
        let signable = SignableRequest::new(method.as_str(), url, std::iter::empty(), signable_body)
            .map_err(|e| S3Error::Sign(e.to_string()))?;
        let identity = self.credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.options.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(s3_settings())
            .build()
            .map_err(|e| S3Error::Sign(e.to_string()))?
            .into();
        let (instructions, _) = sign(signable, &params).map_err(|e| S3Error::Sign(e.to_string()))?.into_parts();
        instructions.apply_to_request_http1x(&mut request);
        Ok(request)
    }

    /// A pooled connection that is still open, or a new one.
    async fn connection(&self) -> Result<SendRequest<Full<Bytes>>, S3Error> {
        loop {
            let pooled = self.pool.lock().ok().and_then(|mut pool| pool.pop());
            match pooled {
                Some(sender) if !sender.is_closed() => return Ok(sender),
                Some(_) => continue,
                None => break,
            }
        }
        let authority = self.endpoint.authority();
        let stream = tokio::net::TcpStream::connect(&authority)
            .await
            .map_err(|error| S3Error::Connect { endpoint: self.endpoint.to_string(), error })?;
        let _ = stream.set_nodelay(true);
        match &self.tls {
            None => handshake(TokioIo::new(stream)).await,
            Some(connector) => {
                let name = rustls::pki_types::ServerName::try_from(self.endpoint.host.clone())
                    .map_err(|e| S3Error::Tls(format!("{}: {e}", self.endpoint.host)))?;
                let tls = connector
                    .connect(name, stream)
                    .await
                    .map_err(|e| S3Error::Tls(format!("{}: {e}", self.endpoint)))?;
                handshake(TokioIo::new(tls)).await
            }
        }
    }
}

async fn handshake<T>(io: T) -> Result<SendRequest<Full<Bytes>>, S3Error>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        // It ends when the sender is dropped, or with the error the next
        // request on it reports.
        let _ = connection.await;
    });
    Ok(sender)
}

/// Trusts the CAs of `ca_file`, else the system's.
fn tls_connector(ca_file: Option<&std::path::Path>) -> Result<tokio_rustls::TlsConnector, S3Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let path = ca_file.unwrap_or(std::path::Path::new(SYSTEM_CA_FILE));
    let pem = std::fs::read(path).map_err(|e| S3Error::Tls(format!("reading CAs from {}: {e}", path.display())))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok) {
        // A CA the TLS library cannot use is left out, as browsers do.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(S3Error::Tls(format!("no usable CA certificate in {}", path.display())));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| S3Error::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Whether a failed request may pass when sent again: network faults,
/// timeouts, the server's 5xx, throttling (429, 503 SlowDown) and 408.
/// A 4xx other than those is the request's own fault and never passes.
pub fn retryable(error: &S3Error) -> bool {
    match error {
        S3Error::Connect { .. } | S3Error::Http(_) | S3Error::Timeout { .. } | S3Error::Tls(_) => true,
        S3Error::Status { status, .. } => {
            status.is_server_error()
                || *status == StatusCode::TOO_MANY_REQUESTS
                || *status == StatusCode::REQUEST_TIMEOUT
        }
        S3Error::Endpoint(_) | S3Error::Credentials(_) | S3Error::Sign(_) | S3Error::Reply { .. } => false,
    }
}

/// The pause before try `attempt + 1`: 100 ms doubling to 5 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6)).min(5_000))
}

/// What S3 asks of a SigV4 signer: the path encoded once and not
/// normalised, and `x-amz-content-sha256` sent and signed. (The
/// benchmark's client signs with it too.)
pub fn s3_settings() -> SigningSettings {
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    settings
}

/// `/BUCKET/KEY`, each segment of the key percent-encoded.
pub fn object_path(bucket: &str, key: &str) -> String {
    let key: Vec<String> = key.split('/').map(|part| urlencoding::encode(part).into_owned()).collect();
    format!("/{}/{}", urlencoding::encode(bucket), key.join("/"))
}

async fn read_bounded(op: &'static str, mut body: hyper::body::Incoming) -> Result<Bytes, S3Error> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            if out.len() + data.len() > REPLY_MAX_BYTES {
                return Err(S3Error::Reply { op, what: format!("a reply above {REPLY_MAX_BYTES} bytes") });
            }
            out.extend_from_slice(data);
        }
    }
    Ok(Bytes::from(out))
}

/// One page of a ListObjectsV2 reply.
#[derive(Debug, PartialEq, Eq)]
pub struct ListPage {
    pub keys: Vec<Listed>,
    pub next_token: Option<String>,
}

/// The keys, sizes and continuation of a ListObjectsV2 reply, read by
/// tag: S3's replies are machine-written, one element per tag, and keys
/// come XML-escaped.
pub fn parse_list_page(xml: &str) -> Result<ListPage, String> {
    let mut keys = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find("<Contents>") {
        let end = rest[start..].find("</Contents>").ok_or("a <Contents> without its end")? + start;
        let entry = &rest[start..end];
        let key = element(entry, "Key").ok_or("a <Contents> without a <Key>")?;
        let size = element(entry, "Size").and_then(|s| s.parse().ok()).ok_or("a <Contents> without a <Size>")?;
        keys.push(Listed { key: unescape(key), size });
        rest = &rest[end..];
    }
    let truncated = match element(xml, "IsTruncated") {
        Some("true") => true,
        Some("false") => false,
        other => return Err(format!("IsTruncated is {other:?}")),
    };
    let next_token = match (truncated, element(xml, "NextContinuationToken")) {
        (false, _) => None,
        (true, Some(token)) => Some(unescape(token)),
        (true, None) => return Err("truncated without a NextContinuationToken".into()),
    };
    Ok(ListPage { keys, next_token })
}

/// The text of the first `<name>` element.
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(&xml[start..end])
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_with_default_ports_and_refuse_paths() {
        let e = Endpoint::parse("http://127.0.0.1:9000").expect("parse");
        assert_eq!(e, Endpoint { tls: false, host: "127.0.0.1".into(), port: 9000 });
        assert_eq!(Endpoint::parse("https://s3.example.com/").expect("parse").port, 443);
        assert_eq!(Endpoint::parse("http://[::1]:81").expect("parse").host, "[::1]");
        for bad in ["s3.example.com", "ftp://x", "http://", "http://h:p", "http://h/bucket"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_listing_gives_keys_sizes_and_its_token() {
        let xml = "<ListBucketResult><IsTruncated>true</IsTruncated>\
                   <Contents><Key>p/a&amp;b</Key><Size>12</Size></Contents>\
                   <Contents><Key>p/c</Key><LastModified>x</LastModified><Size>0</Size></Contents>\
                   <NextContinuationToken>t&amp;1</NextContinuationToken></ListBucketResult>";
        let page = parse_list_page(xml).expect("parse");
        assert_eq!(page.keys, vec![Listed { key: "p/a&b".into(), size: 12 }, Listed { key: "p/c".into(), size: 0 }]);
        assert_eq!(page.next_token.as_deref(), Some("t&1"));
        assert!(parse_list_page("<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>").is_err());
        assert!(parse_list_page("<Contents><Key>a</Key></Contents><IsTruncated>false</IsTruncated>").is_err());
    }

    #[test]
    fn object_paths_encode_each_segment() {
        assert_eq!(object_path("b", "4KiB/00000001"), "/b/4KiB/00000001");
        assert_eq!(object_path("b", "a b/c+d"), "/b/a%20b/c%2Bd");
    }

    #[test]
    fn profiles_are_read_from_a_credentials_file() {
        let text = "[default]\naws_access_key_id = AK1\naws_secret_access_key=SK1\n\n[remote]\n\
                    aws_access_key_id=AK2\n# comment\naws_secret_access_key = SK2\n";
        let keys = profile_keys(text, "remote").expect("remote");
        assert_eq!((keys.access_key.as_str(), keys.secret_key.as_str()), ("AK2", "SK2"));
        assert_eq!(profile_keys(text, "default").expect("default").access_key, "AK1");
        assert!(profile_keys(text, "other").is_none());
        assert!(profile_keys("[p]\naws_access_key_id=A\n", "p").is_none(), "no secret");
    }

    #[test]
    fn faults_and_throttling_are_retried_and_refusals_are_not() {
        let status = |s: u16| S3Error::Status {
            op: "PutObject",
            status: StatusCode::from_u16(s).expect("status"),
            code: String::new(),
            message: String::new(),
        };
        assert!(retryable(&status(503)) && retryable(&status(500)) && retryable(&status(429)));
        assert!(!retryable(&status(403)) && !retryable(&status(404)) && !retryable(&status(400)));
        assert!(retryable(&S3Error::Timeout { op: "GetObject", after: TRY_TIMEOUT }));
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(30), Duration::from_secs(5));
    }
}
