//! The S3 error for each way the metadata service refuses or fails a
//! request. Only refusals a client can cause are mapped to client errors;
//! the rest are the service's own trouble (503, which clients retry).

use chuyi_meta_api::{Kind, MetaError, UploadProblem};
use s3s::{s3_error, S3Error};

pub fn meta_error(e: MetaError) -> S3Error {
    match e {
        MetaError::NotFound { kind, name } => not_found(kind, &name),
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
        e @ MetaError::KeyLength { .. } => s3_error!(KeyTooLongError, "{e}"),
        e @ MetaError::ConditionFailed { .. } => s3_error!(PreconditionFailed, "{e}"),
        e @ MetaError::Locked { .. } => {
            s3_error!(AccessDenied, "Access Denied because object protected by object lock: {e}")
        }
        e @ MetaError::BucketState { .. } => s3_error!(InvalidBucketState, "{e}"),
        MetaError::Invalid { what, why } => s3_error!(InvalidArgument, "invalid {what}: {why}"),
        // A name taken or a record still referenced: the client's request
        // conflicts with what exists (the bucket-creating path answers its
        // own BucketAlreadyExists first).
        e @ (MetaError::AlreadyExists { .. } | MetaError::InUse { .. }) => s3_error!(InvalidRequest, "{e}"),
        // The data was written too slowly and given up on: the client may
        // send it again.
        e @ MetaError::DataNotPending { .. } => s3_error!(RequestTimeout, "{e}"),
        // The gateway's own credential lacks a right: its operator's
        // mistake, not the client's.
        e @ MetaError::Forbidden { .. } => {
            tracing::error!(error = %e, "the metadata service refused the gateway's credential");
            s3_error!(InternalError, "the gateway is not allowed this operation")
        }
        // Refusals no S3 request can cause (volumes, leases, nodes) or that
        // mean the gateway sent something wrong: its own fault.
        e @ (MetaError::VolumeTooLarge { .. }
        | MetaError::VolumeShrink { .. }
        | MetaError::LeaseHeld { .. }
        | MetaError::StaleLease { .. }
        | MetaError::UnknownNode(_)
        | MetaError::Malformed(_)) => {
            tracing::error!(error = %e, "the metadata service refused what no S3 request asks");
            s3_error!(InternalError, "{e}")
        }
        // The pool cannot place data now (too few nodes up): the cluster's
        // state, which clients wait out like an unavailable service.
        e @ (MetaError::Placement(_)
        | MetaError::NotLeader { .. }
        | MetaError::Unavailable(_)
        | MetaError::Internal(_)) => unavailable(e),
    }
}

/// The S3 error for a thing the metadata service does not have.
fn not_found(kind: Kind, name: &str) -> S3Error {
    match kind {
        Kind::Bucket => s3_error!(NoSuchBucket, "no bucket {name}"),
        Kind::Object => s3_error!(NoSuchKey, "no object {name}"),
        Kind::Version => s3_error!(NoSuchVersion, "no version {name}"),
        Kind::Upload => s3_error!(NoSuchUpload, "no upload {name}"),
        Kind::Part => s3_error!(InvalidPart, "no part {name}"),
        Kind::User | Kind::AccessKey => s3_error!(InvalidAccessKeyId),
        // The gateway's pool, or things S3 never names: the gateway's
        // configuration or the cluster, not the request.
        Kind::Pool
        | Kind::Node
        | Kind::Volume
        | Kind::Member
        | Kind::QosRule
        | Kind::TrashedVolume
        | Kind::Snapshot => {
            tracing::error!(%kind, name, "the metadata service lacks what the gateway relies on");
            s3_error!(InternalError, "no {kind} {name}")
        }
    }
}

/// The S3 error for a metadata service that could not answer.
pub fn unavailable(e: MetaError) -> S3Error {
    tracing::warn!(error = %e, "metadata service unavailable");
    s3_error!(ServiceUnavailable, "the metadata service is unavailable")
}

/// 507 InsufficientCapacity, which S3 has no code for (AWS never fills):
/// a disk the object's data goes to is full. Ceph RGW answers ENOSPC with
/// it, and MinIO a full drive with 507 too; clients treat it as a server
/// error, and an operator sees what to do.
pub fn insufficient_capacity() -> S3Error {
    let code = s3s::S3ErrorCode::Custom("InsufficientCapacity".into());
    let mut e = S3Error::with_message(code, "a disk of the bucket's pool has no space for the object's data");
    e.set_status_code(http::StatusCode::INSUFFICIENT_STORAGE);
    e
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

#[cfg(test)]
mod tests {
    use super::*;
    use s3s::S3ErrorCode;

    fn code(e: MetaError) -> S3ErrorCode {
        meta_error(e).code().clone()
    }

    #[test]
    fn refusals_a_client_causes_are_its_errors() {
        assert_eq!(code(MetaError::KeyLength { len: 1025, max: 1024 }), S3ErrorCode::KeyTooLongError);
        let failed =
            MetaError::ConditionFailed { key: "k".into(), condition: chuyi_meta_api::model::WriteCondition::Absent };
        assert_eq!(code(failed), S3ErrorCode::PreconditionFailed);
        assert_eq!(code(MetaError::not_found(Kind::Bucket, "b")), S3ErrorCode::NoSuchBucket);
        assert_eq!(code(MetaError::not_found(Kind::Object, "k")), S3ErrorCode::NoSuchKey);
        assert_eq!(code(MetaError::invalid("part number", "0")), S3ErrorCode::InvalidArgument);
        assert_eq!(code(MetaError::BucketNotEmpty("b".into())), S3ErrorCode::BucketNotEmpty);
        assert_eq!(code(MetaError::DataNotPending { owner: 1 }), S3ErrorCode::RequestTimeout);
    }

    #[test]
    fn the_clusters_trouble_is_unavailable_and_the_gateways_is_internal() {
        assert_eq!(code(MetaError::Placement("2 of 3 nodes down".into())), S3ErrorCode::ServiceUnavailable);
        assert_eq!(code(MetaError::NotLeader { leader: None }), S3ErrorCode::ServiceUnavailable);
        assert_eq!(code(MetaError::not_found(Kind::Pool, "ssd")), S3ErrorCode::InternalError);
        let forbidden = MetaError::Forbidden { caller: "frontend gw".into(), action: "mark a node down".into() };
        assert_eq!(code(forbidden), S3ErrorCode::InternalError);
        assert_eq!(
            code(MetaError::StaleLease { volume: "v".into(), holder: "h".into(), lease_id: 1 }),
            S3ErrorCode::InternalError
        );
    }
}
