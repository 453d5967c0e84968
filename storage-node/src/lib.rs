//! chuyi-storage-node: a storage node's disks, its on-disk chunk format and
//! its data path.
//!
//! A node owns one or more disks (a directory, a file or a block device,
//! each of a device class) and stores chunks of up to 4 MiB on them,
//! addressed by disk and chunk id. Every 4 KiB block carries a crc32c that
//! is checked on every read. Data moves through an I/O engine (io_uring, or
//! pread threads) behind the [`io::IoEngine`] seam. The node serves the
//! chunk service of `chuyi_common::proto::chunk` over the RPC layer.
//!
//! It replicates: a PG's primary forwards every write to the other replica
//! and acknowledges when both have it, fenced by the PG's epoch
//! ([`replication`]) and refuses mutations of a volume from any writer
//! older than the newest it knows ([`fence`]); it backfills and resyncs replicas ([`recovery`]) and
//! scrubs its chunks ([`scrub`]); it registers and heartbeats with the
//! metadata service and follows its map ([`heartbeat`]), through the
//! service's API crate only. It serves a caller only what the caller's
//! role may ask ([`access`]: no raw disk operation for a frontend). It
//! exports what it counts for Prometheus ([`metrics`]) and the client I/O
//! of each chunk owner for the console ([`owner_io`]). It
//! knows chunks, not volumes or objects; which disks hold a chunk is the
//! data map's answer, which the metadata service decides and the node is
//! handed. The on-disk format is drawn in `storage-node/FORMAT.md`.

pub mod access;
pub mod config;
pub mod fence;
pub mod format;
pub mod heartbeat;
mod in_flight;
pub mod io;
pub mod metrics;
pub mod node;
pub mod owner_io;
pub mod recovery;
pub mod replication;
pub mod scrub;
pub mod service;
pub mod store;
