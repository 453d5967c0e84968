//! chuyi-s3: the S3-compatible HTTP gateway.
//!
//! It owns the S3 API. Built so far (issue 6, first step): the HTTP server
//! ([`server`]), SigV4 authentication of every request against the users
//! in the metadata service ([`auth`]; the signature forms, presigned URLs
//! and streaming payloads are checked by the s3s crate), and the bucket
//! operations ([`buckets`]: ListBuckets, CreateBucket, HeadBucket,
//! DeleteBucket, GetBucketLocation) with ownership: a bucket belongs to the
//! user who made it, and another user gets AccessDenied.
//!
//! Not built yet: objects, multipart, listing, versioning, compression,
//! server-side SM4 encryption and QoS. Object bytes will go through
//! chuyi-client; the object index lives in the metadata service.
//!
//! Why s3s: it implements SigV4 in all its forms (header, presigned,
//! streaming chunked with every chunk signature checked, unsigned and
//! trailer payloads), the S3 XML and the routing of path- and
//! virtual-hosted-style requests, all of which a gateway must get exactly
//! right; 0.14 builds with this toolchain (Apache-2.0). What is ours is the
//! mapping onto chuyi's metadata and data paths.

pub mod auth;
pub mod buckets;
pub mod server;
