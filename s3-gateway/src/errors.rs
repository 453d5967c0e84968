//! The S3 error for each way the metadata service refuses or fails a
//! request. Only refusals a client can cause are mapped to client errors;
//! the rest are the service's own trouble (503, which clients retry).

use chuyi_meta_api::{Kind, MetaError, UploadProblem};
use s3s::{s3_error, S3Error};

pub fn meta_error(e: MetaError) -> S3Error {
    match e {
        MetaError::NotFound { kind, name } => match kind {
            Kind::Bucket => s3_error!(NoSuchBucket, "no bucket {name}"),
            Kind::Object => s3_error!(NoSuchKey, "no object {name}"),
            Kind::Version => s3_error!(NoSuchVersion, "no version {name}"),
            Kind::Upload => s3_error!(NoSuchUpload, "no upload {name}"),
            Kind::Part => s3_error!(InvalidPart, "no part {name}"),
            Kind::User | Kind::AccessKey => s3_error!(InvalidAccessKeyId),
            _ => s3_error!(InvalidRequest, "no {kind} {name}"),
        },
        MetaError::BucketNotEmpty(name) => s3_error!(BucketNotEmpty, "bucket {name} is not empty"),
        MetaError::BadUpload { upload_id, problem } => {
            let message = format!("upload {upload_id}: {problem}");
            match problem {
                UploadProblem::PartOrder => S3Error::with_message(s3s::S3ErrorCode::InvalidPartOrder, message),
                UploadProblem::NoParts => S3Error::with_message(s3s::S3ErrorCode::MalformedXML, message),
                UploadProblem::NoSuchPart(_) => S3Error::with_message(s3s::S3ErrorCode::InvalidPart, message),
                UploadProblem::PartTooSmall { .. } => S3Error::with_message(s3s::S3ErrorCode::EntityTooSmall, message),
            }
        }
        MetaError::Invalid { what, why } if what == "object key" => s3_error!(KeyTooLongError, "{why}"),
        MetaError::Invalid { what, why } => s3_error!(InvalidArgument, "invalid {what}: {why}"),
        // The data was written too slowly and given up on: the client may
        // send it again.
        e @ MetaError::DataNotPending { .. } => s3_error!(RequestTimeout, "{e}"),
        // The gateway's own credential lacks a right: its operator's
        // mistake, not the client's.
        e @ MetaError::Forbidden { .. } => {
            tracing::error!(error = %e, "the metadata service refused the gateway's credential");
            s3_error!(InternalError, "the gateway is not allowed this operation")
        }
        e if e.is_refusal() => s3_error!(InvalidRequest, "{e}"),
        e => unavailable(e),
    }
}

/// The S3 error for a metadata service that could not answer.
pub fn unavailable(e: MetaError) -> S3Error {
    tracing::warn!(error = %e, "metadata service unavailable");
    s3_error!(ServiceUnavailable, "the metadata service is unavailable")
}

/// A metadata reply of a kind the request never asks for.
pub fn unexpected(reply: impl std::fmt::Debug) -> S3Error {
    s3_error!(InternalError, "unexpected metadata reply {reply:?}")
}

/// S3's XAmzContentSHA256Mismatch (400), which s3s has no code for: the
/// body does not match its declared x-amz-content-sha256.
pub fn content_sha256_mismatch() -> S3Error {
    let code = s3s::S3ErrorCode::Custom("XAmzContentSHA256Mismatch".into());
    let mut e =
        S3Error::with_message(code, "The provided 'x-amz-content-sha256' header does not match what was computed.");
    e.set_status_code(http::StatusCode::BAD_REQUEST);
    e
}
