//! chuyi-meta-api: the metadata service as its clients see it.
//!
//! It owns the records the service keeps and answers with ([`model`],
//! [`placement`]'s records), the refusals it answers with ([`error`]), and
//! the placement records its map changes are made of. It has no server
//! inside: no RocksDB, no Raft. Frontends, gateways and tools depend on
//! this crate, never on `chuyi-metadata`, which serves it.

pub mod command;
pub mod error;
pub mod listing;
pub mod model;
pub mod placement;
