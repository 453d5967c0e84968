//! chuyi-nbd: the NBD frontend that serves volumes to virtual machines.
//!
//! It will own the NBD protocol server (fixed newstyle handshake, structured
//! replies, base:allocation), volume attach leases and volume encryption
//! (SM4-XTS before data leaves the frontend). It reaches storage only through
//! chuyi-client.
//!
//! Not built yet: see the issue "NBD frontend, volume lifecycle, `chuyi up`
//! and the block benchmark".
