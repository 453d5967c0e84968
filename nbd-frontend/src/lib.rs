//! chuyi-nbd: the NBD frontend that serves volumes to virtual machines.
//!
//! It owns the NBD protocol server, over TCP and Unix sockets ([`server`]):
//! the fixed newstyle handshake ([`handshake`]: EXPORT_NAME, LIST, INFO,
//! GO, ABORT, STRUCTURED_REPLY and the `base:allocation` meta context),
//! block size constraints, and transmission ([`transmission`]: READ, WRITE
//! with FUA, FLUSH, TRIM, WRITE_ZEROES, BLOCK_STATUS and DISC, many
//! requests in flight per connection, replies in the order they complete).
//! The wire format is in [`proto`].
//!
//! The export name is the volume name. A volume is attached under its
//! metadata lease, renewed while any connection uses it; a frontend that
//! cannot keep the lease stops sending I/O before another may take the
//! volume (chuyi-client's [`lease`], shared with the vhost-user frontend). It reaches storage only through chuyi-client.
//!
//! Encrypted volumes are enciphered here, before data leaves the frontend
//! (chuyi-client's [`crypt`]: SM4-XTS per 4 KiB block, shared with backups;
//! the key opened with the master key the frontend was started with).

pub use chuyi_client::attach as lease;
pub use chuyi_client::crypt;
#[cfg(test)]
mod fuzz;
pub mod handshake;
pub mod metrics;
pub mod proto;
pub mod server;
pub mod transmission;
