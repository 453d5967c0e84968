//! chuyi-vhost: the vhost-user-blk frontend that serves a volume to a VM.
//!
//! The VMM (QEMU, Cloud Hypervisor) hands this process the guest's memory
//! and virtqueues over a Unix socket (the vhost-user protocol, rust-vmm's
//! `vhost-user-backend`); the guest's virtio-blk driver then talks to the
//! volume with no VMM thread and no NBD stream in between. It owns the
//! device the guest sees ([`config`]: features and configuration space),
//! the reading of virtio-blk requests out of guest memory ([`request`]),
//! serving them ([`device`]: a thread per queue, completions written back
//! by the task that finished them) and the socket ([`server`]).
//!
//! It reaches storage only through chuyi-client, under the volume's attach
//! lease and fence (chuyi-client's `attach`, as the NBD frontend does);
//! encrypted volumes are enciphered here (SM4-XTS per 4 KiB block, so the
//! device's logical block is 4 KiB for them); QoS rules pace requests as
//! over NBD. It knows nothing of NBD, S3, or how chunks are placed.

pub mod config;
pub mod device;
pub mod metrics;
pub mod request;
pub mod server;
