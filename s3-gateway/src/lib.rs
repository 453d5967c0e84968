//! chuyi-s3: the S3-compatible HTTP gateway.
//!
//! It owns the S3 API: the HTTP server ([`server`]); SigV4 authentication
//! of every request against the metadata service's users ([`auth`]), then
//! its access decision from the bucket's owner, policy and ACLs
//! ([`access`]; the
//! signature forms, presigned URLs and streaming payloads are checked by
//! the s3s crate); the operations, by what they act on ([`gateway`] is the
//! one `S3` implementation, which hands each to [`buckets`], [`objects`],
//! [`listing`] or [`multipart`]); object data streamed to and from the
//! storage nodes through chuyi-client ([`data`]), small objects' into
//! ranges of shared packs ([`packs`]); the compactor that moves live
//! objects out of mostly dead packs ([`compact`]); and the reclaimer that
//! frees data no record refers to any more ([`reclaim`]). Data a bucket
//! compresses or encrypts is written in frames ([`frames`]), compressed,
//! then sealed with the keys and ciphers of [`sse`]; the S3 side of
//! encryption (bucket defaults, SSE and SSE-C headers, bucket keys under
//! the KEK) is [`encryption`]; S3 over TLS is [`tls`], virtual-hosted-style
//! addressing under configured domains [`domains`]; who may hold a
//! connection and for how long (caps, timeouts) is [`admission`], and the
//! memory bodies may hold together is [`data::Budget`]; the request and
//! byte rates of users and buckets are [`qos`].
//!
//! An object's bytes are written first, as a reserved run of chunks or a
//! range of a pack; its version record is written to the object index (in
//! the metadata service) only once they are on every replica, so nothing
//! is visible before it is durable, and a failed upload leaves only
//! garbage or dead bytes of a pack.
//!
//! Why s3s: it implements SigV4 in all its forms (header, presigned,
//! streaming chunked with every chunk signature checked, unsigned and
//! trailer payloads), the S3 XML and the routing of path- and
//! virtual-hosted-style requests, all of which a gateway must get exactly
//! right; 0.14 builds with this toolchain (Apache-2.0). What is ours is the
//! mapping onto chuyi's metadata and data paths.

pub mod access;
pub mod admin;
pub mod admission;
pub mod auth;
pub mod buckets;
pub mod certificate;
pub mod compact;
pub mod conditions;
pub mod cors;
pub mod data;
pub mod description;
pub mod digests;
pub mod documents;
pub mod domains;
pub mod encryption;
pub mod errors;
pub mod frames;
#[cfg(test)]
mod fuzz;
pub mod gateway;
pub mod lifecycle;
pub mod listing;
pub mod metrics;
pub mod multipart;
pub mod object_lock;
pub mod objects;
pub mod packs;
pub mod part_checksums;
pub mod presigned;
pub mod qos;
pub mod reclaim;
pub mod server;
pub mod sse;
pub mod tagging;
pub mod tls;
