//! When a member builds a snapshot: after at least `snapshot_logs` log
//! entries, and only once the log has written half as much as the last
//! snapshot holds.
//!
//! openraft's own policy counts entries only, so a member of 10 million
//! objects rewrote its whole state (1.5 GB) every 93 000 puts, 16 KB
//! written per put of 400 bytes (bench/RESULTS.md, the count benchmark).
//! Weighed by bytes ([`due`]), snapshots write at most twice what the log
//! does, whatever the state's size; the price is a longer log to replay at
//! a restart, at most half the state's size.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::Raft;

use crate::store::TypeConfig;

/// How often the member looks.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// How long a requested snapshot may take to show before it is asked again.
const REQUEST_PATIENCE: Duration = Duration::from_secs(60);

/// Whether a snapshot is due: `entries` applied and `log_bytes` appended
/// since the last one, whose file holds `snapshot_bytes`; `logs` is the
/// configured least number of entries.
pub fn due(entries: u64, log_bytes: u64, snapshot_bytes: u64, logs: u64) -> bool {
    entries >= logs && log_bytes.saturating_mul(2) >= snapshot_bytes
}

/// Size of the newest snapshot file in `dir` (0 when none).
fn snapshot_bytes(dir: &PathBuf) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "snap"))
        .filter_map(|e| e.metadata().ok())
        .max_by_key(|m| m.modified().ok())
        .map_or(0, |m| m.len())
}

/// Triggers snapshots for ever, by [`due`]; `appended` counts the bytes
/// the log store appends.
pub async fn run(raft: Raft<TypeConfig>, snapshots_dir: PathBuf, logs: u64, appended: Arc<AtomicU64>) {
    let mut requested: Option<(u64, chuyi_common::clock::Instant)> = None;
    // The log's bytes when the last snapshot seen was taken (from this
    // start on: after a restart the first snapshot waits for its bytes
    // again, never less than the entries).
    let (mut seen, mut bytes_then) = (None, 0);
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let metrics = raft.metrics().borrow().clone();
        let applied = metrics.last_applied.map_or(0, |l| l.index);
        let last = metrics.snapshot.map_or(0, |l| l.index);
        let appended_now = appended.load(Ordering::Relaxed);
        if seen != Some(last) {
            (seen, bytes_then) = (Some(last), appended_now);
        }
        // One request per snapshot: a build takes a while to show.
        if requested.is_some_and(|(at, when)| at > last && when.elapsed() < REQUEST_PATIENCE) {
            continue;
        }
        let log_bytes = appended_now.saturating_sub(bytes_then);
        if due(applied.saturating_sub(last), log_bytes, snapshot_bytes(&snapshots_dir), logs) {
            if let Err(e) = raft.trigger().snapshot().await {
                tracing::warn!(error = %e, "requesting a snapshot");
                return;
            }
            requested = Some((applied, chuyi_common::clock::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_states_snapshot_by_count_large_ones_by_bytes() {
        assert!(!due(9_999, 1 << 30, 0, 10_000));
        assert!(due(10_000, 0, 0, 10_000), "no snapshot yet: the count");
        assert!(due(10_000, 60 << 20, 100 << 20, 10_000), "the log wrote more than half the snapshot");
        let big = 1536 << 20;
        assert!(!due(10_000, 60 << 20, big, 10_000), "1.5 GiB waits for 768 MiB of log");
        assert!(due(100_000, 768 << 20, big, 10_000));
    }
}
