//! chuyi-client: the only way frontends and the CLI reach the cluster's data.
//!
//! It owns the map cache by epoch, kept fresh by a long poll on the
//! metadata service ([`cluster`]); chunk → placement group → replica set
//! resolution (`chuyi_common::map`); connections to storage nodes; retries
//! on an epoch change or a node failure within a deadline; and the APIs the
//! frontends are written against: byte-range volume I/O ([`volume`]) and
//! whole-chunk object data I/O ([`Cluster::write_chunk`] and friends). It
//! knows volumes and chunks, not NBD or HTTP.
//!
//! Writes go to the PG's primary, which forwards them to the other replica;
//! reads go to the primary, and to the other complete replica when the
//! primary cannot serve them.
//!
//! The recycle bin is emptied through [`trash`]: a purge frees every chunk
//! of a deleted volume under a fence, and frontends purge what is due.
//!
//! Block frontends count their per-volume operations for Prometheus
//! through [`metrics`].
//!
//! Frontends enforce QoS rules through [`qos`]: a limiter per rule, run
//! at the share of its rate the metadata leader gives this frontend.
//!
//! A volume's writer fences its requests ([`fence`]): each mutation carries
//! the token of its attach lease, and none is sent once the lease may be
//! gone. Frontends take that lease and keep it through [`attach`].

pub mod attach;
pub mod cluster;
pub mod crypt;
pub mod error;
pub mod fence;
pub mod lease;
pub mod metrics;
pub mod qos;
pub mod snapshot;
pub mod trash;
pub mod volume;

pub use cluster::{ClientConfig, Cluster};
pub use error::ClientError;
pub use fence::WriteFence;
pub use volume::{VolumeExtent, VolumeIo};
