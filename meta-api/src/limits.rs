//! The service's bounds that its clients size their requests by.

/// Most records one page of parts, uploads or garbage returns (S3 pages
/// parts and uploads by 1000): a page of them stays far below the RPC
/// payload limit.
pub const RECORDS_PAGE_MAX: u32 = 1000;

/// Longest object data may stay pending: a part of 5 GiB at 1 MiB/s takes
/// under 1.5 h, so a day is never hit by a live writer.
pub const DATA_TTL_MAX_MS: u64 = 24 * 60 * 60 * 1000;

/// Pending records one expiry pass examines at most.
pub const EXPIRE_SCAN_MAX: usize = 10_000;

/// Longest a pack may stay writable: a gateway rolls to a new pack well
/// before (its window), this bounds a bad client's request.
pub const PACK_TTL_MAX_MS: u64 = 60 * 60 * 1000;

/// Sparse packs one retirement pass examines at most.
pub const RETIRE_SCAN_MAX: usize = 10_000;

/// Longest a lease may be granted for at once.
pub const LEASE_TTL_MAX_MS: u64 = 10 * 60 * 1000;
