//! Every limit in one place, with its unit in its name.
//!
//! A limit that lives here is one that a peer could otherwise push without
//! bound: frame sizes, requests in flight, time spent waiting.

/// The unit of checksums, alignment and direct I/O.
pub const BLOCK_SIZE_BYTES: usize = 4096;

/// The largest chunk a storage node stores (and the default chunk size).
pub const CHUNK_SIZE_MAX_BYTES: usize = 4 * 1024 * 1024;

/// Bytes of each chunk of object data (the last of a run holds the rest).
pub const OBJECT_CHUNK_BYTES: u64 = CHUNK_SIZE_MAX_BYTES as u64;

/// Blocks in the largest chunk: the length of a chunk's checksum table.
pub const CHUNK_BLOCKS_MAX: usize = CHUNK_SIZE_MAX_BYTES / BLOCK_SIZE_BYTES;

const _: () = assert!(CHUNK_SIZE_MAX_BYTES.is_multiple_of(BLOCK_SIZE_BYTES));
const _: () = assert!(BLOCK_SIZE_BYTES.is_power_of_two());

/// Largest control-message body in one RPC frame.
pub const RPC_BODY_MAX_BYTES: usize = 64 * 1024;

/// Largest raw data payload in one RPC frame: one whole chunk.
pub const RPC_PAYLOAD_MAX_BYTES: usize = CHUNK_SIZE_MAX_BYTES;

/// Requests one client connection may have outstanding; further calls wait.
pub const RPC_CLIENT_INFLIGHT_MAX: usize = 256;

/// Requests the server works on at once per connection; beyond it the server
/// stops reading that connection, which pushes back through TCP.
pub const RPC_SERVER_INFLIGHT_MAX: usize = 256;

/// Default deadline of one RPC call, from send to reply.
pub const RPC_TIMEOUT_MS: u64 = 30_000;

/// Deadline for establishing a connection and finishing the handshake.
pub const RPC_CONNECT_TIMEOUT_MS: u64 = 5_000;

/// Outgoing frames queued per connection before senders wait.
pub const RPC_SEND_QUEUE_FRAMES: usize = 256;

/// Connections one server accepts at once; further ones are refused.
pub const RPC_SERVER_CONNECTIONS_MAX: usize = 4096;

/// Chunk ids returned by one ListChunks page at most.
pub const LIST_CHUNKS_PAGE_MAX: u32 = 10_000;

/// Volume fences in one RaiseFences request at most: each is at most 25
/// bytes of postcard, so a full request stays well under the 64 KiB body.
pub const RAISE_FENCES_MAX: usize = 2048;

/// Owners one OwnerIo request may name at most: the answer's counts are
/// each at most 50 bytes of postcard (five varint u64s), so a full answer
/// stays under the 64 KiB body.
pub const OWNER_IO_ASK_MAX: usize = 1024;
const _: () = assert!(OWNER_IO_ASK_MAX * 50 + 16 < RPC_BODY_MAX_BYTES);

/// Snapshots a volume keeps at most: also the most live sequences one
/// `TrimClones` names (at most 4 bytes of postcard each).
pub const SNAPSHOTS_PER_VOLUME_MAX: usize = 1024;

/// Chunks in one PgSums page at most: 256 × 4 KiB of checksums (for 4 MiB
/// chunks) is 1 MiB of payload.
pub const PG_SUMS_PAGE_MAX: u32 = 256;
