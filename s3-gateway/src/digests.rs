//! Digests of the small bodies s3s parses itself (DeleteObjects,
//! CompleteMultipartUpload, PutBucketVersioning and the other XML
//! requests): checked here, before routing, because the handler only ever
//! sees the parsed XML. A body whose Content-MD5, x-amz-checksum-* or
//! x-amz-content-sha256 does not match is refused (400) and acts on
//! nothing. Object data (PUT, UploadPart) is checked as it streams, in
//! [`crate::objects`].

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Limited};
use hyper::body::Body as HttpBody;
use s3s::crypto::{Checksum as _, Sha256};
use s3s::dto::Checksum;
use s3s::{s3_error, Body, S3Error, S3Result};

use crate::description::{hasher_for, verify_checksums, verify_md5};
use crate::errors::content_sha256_mismatch;

/// Largest body checked (and so held) whole here: S3's XML bodies are
/// well below it (1000 keys to delete, 10000 parts to complete).
pub const CHECKED_BODY_MAX_BYTES: usize = 2 << 20;

fn header<'a, B>(req: &'a Request<B>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn has_query<B>(req: &Request<B>, name: &str) -> bool {
    req.uri().query().is_some_and(|q| q.split('&').any(|p| p.split('=').next() == Some(name)))
}

/// The subresources whose PUT carries an XML document, not object data.
const XML_SUBRESOURCES: &[&str] = &[
    "versioning",
    "tagging",
    "acl",
    "cors",
    "lifecycle",
    "policy",
    "encryption",
    "notification",
    "replication",
    "website",
    "logging",
    "ownershipControls",
    "publicAccessBlock",
    "object-lock",
    "retention",
    "legal-hold",
    "accelerate",
    "requestPayment",
];

/// Whether a request's body is one s3s parses whole: DeleteObjects,
/// CompleteMultipartUpload, or the PUT of an XML subresource; never object
/// data (a presigned or `?x-id=` PUT has a query too).
fn parsed_whole<B>(req: &Request<B>) -> bool {
    let streaming = header(req, "x-amz-content-sha256").is_some_and(|s| s.starts_with("STREAMING-"));
    let xml = match *req.method() {
        Method::POST => has_query(req, "delete") || has_query(req, "uploadId"),
        Method::PUT => XML_SUBRESOURCES.iter().any(|name| has_query(req, name)),
        _ => false,
    };
    !streaming && xml
}

/// The request with its body, checked when it is one s3s parses whole.
pub async fn checked<B>(req: Request<B>) -> S3Result<Request<Body>>
where
    B: HttpBody<Data = Bytes> + Send + Sync + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if !parsed_whole(&req) {
        return Ok(req.map(Body::http_body));
    }
    if req.method() == Method::POST && has_query(&req, "delete") && !names_a_digest(&req) {
        return Err(s3_error!(InvalidRequest, "Missing required header for this request: Content-MD5"));
    }
    let (parts, body) = req.into_parts();
    let bytes = match Limited::new(body, CHECKED_BODY_MAX_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(s3_error!(MaxMessageLengthExceeded, "the request body exceeds {CHECKED_BODY_MAX_BYTES} bytes"));
        }
        Err(e) => return Err(s3_error!(IncompleteBody, "reading the request body: {e}")),
    };
    let req = Request::from_parts(parts, ());
    // On CompleteMultipartUpload, x-amz-checksum-* is the whole object's
    // checksum, not the body's.
    let body_checksums = !(req.method() == Method::POST && has_query(&req, "uploadId"));
    verify(&req, &bytes, body_checksums)?;
    Ok(req.map(|()| Body::from(bytes)))
}

fn names_a_digest<B>(req: &Request<B>) -> bool {
    req.headers().contains_key("content-md5")
        || req.headers().keys().any(|k| k.as_str().starts_with("x-amz-checksum-"))
        || req.headers().contains_key("x-amz-sdk-checksum-algorithm")
}

fn verify(req: &Request<()>, body: &Bytes, body_checksums: bool) -> S3Result<()> {
    let mut md5 = s3s::crypto::Md5::new();
    md5.update(body);
    verify_md5(header(req, "content-md5"), &md5.finalize())?;
    if body_checksums {
        verify_checksum_headers(req, body)?;
    }
    if let Some(declared) = header(req, "x-amz-content-sha256").filter(|s| s.len() == 64) {
        let mut sha = Sha256::new();
        sha.update(body);
        if !declared.eq_ignore_ascii_case(&chuyi_common::secret::hex(&sha.finalize())) {
            return Err(content_sha256_mismatch());
        }
    }
    Ok(())
}

fn verify_checksum_headers(req: &Request<()>, body: &Bytes) -> S3Result<()> {
    let sent = Checksum {
        checksum_crc32: header(req, "x-amz-checksum-crc32").map(String::from),
        checksum_crc32c: header(req, "x-amz-checksum-crc32c").map(String::from),
        checksum_crc64nvme: header(req, "x-amz-checksum-crc64nvme").map(String::from),
        checksum_sha1: header(req, "x-amz-checksum-sha1").map(String::from),
        checksum_sha256: header(req, "x-amz-checksum-sha256").map(String::from),
        ..Checksum::default()
    };
    let mut hasher = hasher_for(&http::HeaderMap::new(), &sent, None);
    hasher.update(body);
    verify_checksums(&sent, &hasher.finalize())
}

/// The HTTP response of an error found here.
pub fn error_response(e: S3Error) -> s3s::HttpResponse {
    e.to_http_response().unwrap_or_else(|_| {
        let mut res = s3s::HttpResponse::new(Body::empty());
        *res.status_mut() = http::StatusCode::BAD_REQUEST;
        res
    })
}
