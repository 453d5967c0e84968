//! chuyi-common: what every role shares.
//!
//! It owns the identifiers ([`ids`]), the one seam for time ([`clock`]), the limits every layer obeys
//! ([`limits`]), block checksums ([`checksum`]), aligned I/O buffers
//! ([`buf`]), human-readable sizes for config files ([`size`]), the cluster
//! secret ([`secret`]) and the credentials derived from it that say who
//! a process is on internal RPC ([`credential`]), secrets sealed at rest under it ([`seal`]), the
//! SM4 cipher with its XTS mode for volume data and key wrapping ([`sm4`]),
//! the data map that places chunks on replicas ([`map`]), the
//! internal RPC layer ([`rpc`]) and the messages spoken over it ([`proto`]),
//! Unix sockets: binding them ([`unix_socket`]) and connected ones watched
//! for reading only ([`unix_stream`]), and the Prometheus exporter every
//! process serves its metrics with ([`metrics`]).
//!
//! It knows no role: nothing here opens a disk, holds a map or serves a
//! protocol to users. The wire format is documented in `common/PROTOCOL.md`.

pub mod buf;
pub mod checksum;
pub mod clock;
pub mod credential;
pub mod ids;
pub mod limits;
pub mod map;
pub mod metrics;
pub mod proto;
pub mod rpc;
pub mod seal;
pub mod secret;
pub mod size;
pub mod sm4;
pub mod unix_socket;
pub mod unix_stream;
