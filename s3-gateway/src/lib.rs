//! chuyi-s3: the S3-compatible HTTP gateway.
//!
//! It will own the S3 API (SigV4, buckets, objects, multipart, listing,
//! versioning), per-bucket compression, server-side SM4 encryption and QoS.
//! Object bytes go through chuyi-client; the object index lives in the
//! metadata service.
//!
//! Not built yet: see the issue "S3 gateway: SigV4, buckets, objects,
//! multipart, listing and versioning".
