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
//! It knows chunks, not volumes, objects or placement: which disk holds a
//! chunk, and which node is its other replica, is decided by the metadata
//! service. The on-disk format is drawn in `storage-node/FORMAT.md`.

pub mod config;
pub mod format;
pub mod io;
pub mod node;
pub mod service;
pub mod store;
