//! The messages spoken over the RPC layer, one module per service.
//!
//! Messages are serde types encoded with postcard in a frame's body; bulk
//! data never goes through serde but rides as the frame's raw payload. Enum
//! variants are encoded by position: add new variants at the end only, and
//! bump the frame version for anything else (see `common/PROTOCOL.md`).

pub mod chunk;
