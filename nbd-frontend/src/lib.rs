//! chuyi-nbd: the NBD frontend that serves volumes to virtual machines.
//!
//! It owns the NBD protocol server ([`server`], wire format in [`proto`]):
//! the fixed newstyle handshake with EXPORT_NAME, LIST, INFO, GO and ABORT,
//! block size constraints, and transmission with READ, WRITE (FUA), FLUSH,
//! TRIM, WRITE_ZEROES and DISC, many requests in flight per connection and
//! replies in the order they complete. The export name is the volume name;
//! a volume is attached under its metadata lease, renewed while any
//! connection uses it. It reaches storage only through chuyi-client.
//!
//! Not built yet (issue "NBD frontend, volume lifecycle, `chuyi up` and the
//! block benchmark"): structured replies and base:allocation, Unix sockets,
//! and volume encryption (SM4-XTS before data leaves the frontend).

pub mod proto;
pub mod server;
