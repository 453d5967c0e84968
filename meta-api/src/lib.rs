//! chuyi-meta-api: the metadata service as its clients see it.
//!
//! It owns the records the service keeps and answers with ([`model`],
//! [`placement`]'s records), the refusals it answers with ([`error`]), and
//! the placement records its map changes are made of. It has no server
//! inside: no RocksDB, no Raft. Frontends, gateways and tools depend on
//! this crate, never on `chuyi-metadata`, which serves it.

pub mod ask;
pub mod backup_schedule;
pub mod client;
pub mod error;
pub mod limits;
pub mod listing;
pub mod model;
pub mod order;
pub mod placement;
pub mod proto;
pub mod qos;
pub mod request;
pub mod schedule;

pub use error::{Kind, MetaError, UploadProblem};
pub use limits::{DATA_TTL_MAX_MS, EXPIRE_SCAN_MAX, PACK_TTL_MAX_MS, RETIRE_SCAN_MAX};
pub use listing::{ListCursor, ListEntry, ListRequest, Listing, ObjectSummary, LIST_MAX_KEYS};
pub use request::{Reply, Request};
