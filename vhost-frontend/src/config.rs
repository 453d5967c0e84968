//! What the device offers the guest: its virtio features and its
//! configuration space (`struct virtio_blk_config`, virtio 1.2 §5.2.4).
//!
//! The configuration space, as this module writes it (little-endian, 60
//! bytes; the guest reads any part of it through `VHOST_USER_GET_CONFIG`):
//!
//! | offset | size | field | value |
//! |---|---|---|---|
//! | 0 | 8 | capacity | the volume's size in 512-byte sectors |
//! | 8 | 4 | size_max | largest data segment: [`SEGMENT_MAX`] |
//! | 12 | 4 | seg_max | data segments per request: [`SEG_MAX`] |
//! | 16 | 4 | geometry | 0 (none) |
//! | 20 | 4 | blk_size | 512, or 4096 for an encrypted volume |
//! | 24 | 1 | physical_block_exp | log2(4096 / blk_size) |
//! | 25 | 1 | alignment_offset | 0 |
//! | 26 | 2 | min_io_size | 4096 / blk_size (in blocks) |
//! | 28 | 4 | opt_io_size | 1 MiB / blk_size (in blocks) |
//! | 32 | 1 | writeback | 1: the guest must flush (FLUSH offered) |
//! | 33 | 1 | unused | 0 |
//! | 34 | 2 | num_queues | the queues served |
//! | 36 | 4 | max_discard_sectors | [`ZERO_MAX_SECTORS`] |
//! | 40 | 4 | max_discard_seg | [`ZERO_MAX_SEGMENTS`] |
//! | 44 | 4 | discard_sector_alignment | 4096 / 512 |
//! | 48 | 4 | max_write_zeroes_sectors | [`ZERO_MAX_SECTORS`] |
//! | 52 | 4 | max_write_zeroes_seg | [`ZERO_MAX_SEGMENTS`] |
//! | 56 | 1 | write_zeroes_may_unmap | 1: zeroed ranges are freed |
//! | 57 | 3 | unused | 0 |

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

/// Bytes in a virtio-blk sector, whatever the block size.
pub const SECTOR: u64 = 512;
/// The largest data segment the guest may hand over in one descriptor,
/// and the most segments in one request: Linux takes their product as
/// its largest request, which must fit the largest the device serves
/// ([`crate::request::DATA_MAX`]; 254 x 128 KiB = 31.75 MiB). 254 pages
/// of 4 KiB still make a request of about 1 MiB.
pub const SEGMENT_MAX: u32 = 128 << 10;
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Sectors one discard or write-zeroes segment may cover (1 GiB): the
/// volume frees or zeroes them as one request.
pub const ZERO_MAX_SECTORS: u32 = 1 << 21;
/// Segments in one discard or write-zeroes request.
pub const ZERO_MAX_SEGMENTS: u32 = 16;
/// Entries in each virtqueue at most (QEMU's default is 128 for
/// vhost-user-blk; 256 lets a guest keep more in flight).
pub const QUEUE_SIZE: u16 = 256;
/// Size of the configuration space this device writes.
pub const CONFIG_SIZE: usize = 60;

/// What one served volume looks like to the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// The volume's size in bytes.
    pub size: u64,
    /// Logical block size: 4096 for an encrypted volume (enciphered per
    /// 4 KiB block, so no smaller request can be served), 512 otherwise.
    pub block: u32,
    /// Queues the guest may use.
    pub queues: u16,
    /// A snapshot's export: writes are refused.
    pub read_only: bool,
}

/// The virtio features offered: virtio 1.0 rings with indirect
/// descriptors and event suppression, the block features the volume
/// serves, and vhost-user's protocol features.
pub fn features(g: &Geometry) -> u64 {
    let mut bits = [
        VIRTIO_F_VERSION_1,
        VIRTIO_RING_F_INDIRECT_DESC,
        VIRTIO_RING_F_EVENT_IDX,
        VIRTIO_BLK_F_SIZE_MAX,
        VIRTIO_BLK_F_SEG_MAX,
        VIRTIO_BLK_F_BLK_SIZE,
        VIRTIO_BLK_F_TOPOLOGY,
        VIRTIO_BLK_F_FLUSH,
        VIRTIO_BLK_F_MQ,
        VIRTIO_BLK_F_DISCARD,
        VIRTIO_BLK_F_WRITE_ZEROES,
    ]
    .iter()
    .fold(0u64, |acc, &b| acc | 1 << b);
    if g.read_only {
        bits |= 1 << VIRTIO_BLK_F_RO;
    }
    bits | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
}

/// The vhost-user protocol features: the configuration space (QEMU's
/// vhost-user-blk requires it), several queues, and replies to the
/// messages that ask for one.
pub fn protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK
}

/// The configuration space (see the module's table).
pub fn config_space(g: &Geometry) -> [u8; CONFIG_SIZE] {
    let mut c = [0u8; CONFIG_SIZE];
    let blocks_per_4k = (4096 / g.block.max(512)) as u16;
    c[0..8].copy_from_slice(&(g.size / SECTOR).to_le_bytes());
    c[8..12].copy_from_slice(&SEGMENT_MAX.to_le_bytes());
    c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
    c[20..24].copy_from_slice(&g.block.to_le_bytes());
    c[24] = blocks_per_4k.trailing_zeros() as u8;
    c[26..28].copy_from_slice(&blocks_per_4k.to_le_bytes());
    c[28..32].copy_from_slice(&((1u32 << 20) / g.block).to_le_bytes());
    c[32] = 1;
    c[34..36].copy_from_slice(&g.queues.to_le_bytes());
    c[36..40].copy_from_slice(&ZERO_MAX_SECTORS.to_le_bytes());
    c[40..44].copy_from_slice(&ZERO_MAX_SEGMENTS.to_le_bytes());
    c[44..48].copy_from_slice(&(4096 / SECTOR as u32).to_le_bytes());
    c[48..52].copy_from_slice(&ZERO_MAX_SECTORS.to_le_bytes());
    c[52..56].copy_from_slice(&ZERO_MAX_SEGMENTS.to_le_bytes());
    c[56] = 1;
    c
}

/// The part `[offset, offset + size)` of the configuration space; what
/// lies past its end reads as nothing (an empty answer, which QEMU takes
/// as a failed read).
pub fn config_read(g: &Geometry, offset: u32, size: u32) -> Vec<u8> {
    let space = config_space(g);
    let (start, end) = (offset as usize, offset as usize + size as usize);
    space.get(start..end).map(<[u8]>::to_vec).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(block: u32) -> Geometry {
        Geometry { size: 10 << 30, block, queues: 4, read_only: false }
    }

    #[test]
    fn the_config_space_says_size_queues_and_block_size_where_linux_reads_them() {
        let c = config_space(&g(512));
        assert_eq!(u64::from_le_bytes(c[0..8].try_into().expect("field")), (10 << 30) / 512);
        assert_eq!(u32::from_le_bytes(c[20..24].try_into().expect("field")), 512);
        assert_eq!(c[24], 3, "4 KiB physical blocks: 2^3 logical ones");
        assert_eq!(u16::from_le_bytes(c[34..36].try_into().expect("field")), 4);
        let encrypted = config_space(&g(4096));
        assert_eq!(u32::from_le_bytes(encrypted[20..24].try_into().expect("field")), 4096);
        assert_eq!(encrypted[24], 0);
        assert_eq!(u16::from_le_bytes(encrypted[26..28].try_into().expect("field")), 1);
    }

    #[test]
    fn the_largest_request_linux_may_make_is_one_the_device_serves() {
        let c = config_space(&g(512));
        let size_max = u32::from_le_bytes(c[8..12].try_into().expect("field"));
        let seg_max = u32::from_le_bytes(c[12..16].try_into().expect("field"));
        assert!(u64::from(size_max) * u64::from(seg_max) <= crate::request::DATA_MAX);
        assert!(u64::from(seg_max) * 4096 >= 1000 << 10, "a request of scattered pages still nears 1 MiB");
    }

    #[test]
    fn config_reads_past_the_end_answer_nothing() {
        assert_eq!(config_read(&g(512), 0, 8).len(), 8);
        assert_eq!(config_read(&g(512), 34, 2), 4u16.to_le_bytes());
        assert!(config_read(&g(512), 56, 8).is_empty());
        assert!(config_read(&g(512), u32::MAX, 1).is_empty());
    }

    #[test]
    fn a_snapshot_is_offered_read_only() {
        let mut ro = g(512);
        assert_eq!(features(&ro) & (1 << VIRTIO_BLK_F_RO), 0);
        ro.read_only = true;
        assert_ne!(features(&ro) & (1 << VIRTIO_BLK_F_RO), 0);
        assert_ne!(features(&ro) & (1 << VIRTIO_F_VERSION_1), 0);
    }
}
