//! The reclaimer: frees object data no record refers to any more. Each
//! pass first moves pending data whose writer died (its time is up), and
//! packs with nothing live left (their grace over), to the garbage; then
//! it reads the next page of the garbage, deletes from the storage nodes
//! the chunks of the runs it has seen there for the garbage grace, and
//! only then forgets them, so a gateway that dies mid-pass leaves the
//! garbage for the next one. Every gateway runs one; deleting a chunk
//! twice is harmless.
//!
//! The grace is for reads: a GET that looked up an object just before it
//! was deleted, overwritten or moved by lifecycle streams the old data
//! for as long as the grace lasts (Ceph RGW's garbage collector waits
//! likewise, two hours by default). It is counted from this gateway's
//! first sight of the run, which is never before the run became garbage;
//! a restarted gateway counts again from its restart. Every gateway
//! reclaims, so the shortest grace among them is the one that holds.
//!
//! A scan reads page after page without pausing, and rests
//! [`RECLAIM_IDLE`] only at the table's end: new garbage has the highest
//! owners and lands behind the cursor, and a scan that paused between
//! pages could be outrun by it and never come back to the first runs.

use std::collections::HashMap;
use std::time::Duration;

use chuyi_common::clock::{self, Instant};
use chuyi_meta_api::ask;
use chuyi_meta_api::limits::RECORDS_PAGE_MAX;
use chuyi_meta_api::model::DataRun;
use chuyi_meta_api::Request;

use crate::data::DataPath;

/// How often a pass runs when the last one found nothing to free.
pub const RECLAIM_IDLE: Duration = Duration::from_secs(2);

/// How long deleted object data stays readable by GETs already under way.
pub const GARBAGE_GRACE: Duration = Duration::from_secs(15 * 60);

/// How long the reclaimer waits: packs are freed `pack_grace` after their
/// last run died, garbage `garbage_grace` after it was first seen.
#[derive(Clone, Copy, Debug)]
pub struct Graces {
    pub pack: Duration,
    pub garbage: Duration,
}

/// Runs passes for ever.
pub async fn run(data: DataPath, graces: Graces) {
    let mut seen = Sightings::default();
    loop {
        match pass(&data, graces, &mut seen).await {
            // Mid-scan: the next page at once, so a scan of a large
            // garbage table ends (and starts again) however fast new
            // garbage comes in behind it.
            Ok(()) if seen.after.is_some() => continue,
            Ok(()) => {}
            Err(e) => tracing::warn!(error = %e, "reclaim pass failed"),
        }
        tokio::time::sleep(RECLAIM_IDLE).await;
    }
}

/// One pass over the next page of the garbage.
pub async fn pass(data: &DataPath, graces: Graces, seen: &mut Sightings) -> Result<(), String> {
    let meta = data.cluster().meta();
    // A Raft write only when something expired, not every pass.
    let grace_ms = graces.pack.as_millis() as u64;
    let now_ms = chuyi_common::clock::unix_ms();
    let expired = meta.ask(ask::ExpiredPending { now_ms }).await.map_err(|e| e.to_string())?;
    if expired > 0 {
        meta.write(Request::ExpirePending { max: RECORDS_PAGE_MAX }).await.map_err(|e| e.to_string())?;
    }
    let freeable = meta.ask(ask::FreeablePacks { now_ms, grace_ms }).await.map_err(|e| e.to_string())?;
    if freeable > 0 {
        meta.write(Request::RetirePacks { max: RECORDS_PAGE_MAX, grace_ms }).await.map_err(|e| e.to_string())?;
    }
    let page = meta.ask(ask::Garbage { max: RECORDS_PAGE_MAX, after: seen.after }).await.map_err(|e| e.to_string())?;
    let due = seen.due(&page, clock::now(), graces.garbage);
    seen.advance(&page, RECORDS_PAGE_MAX as usize);
    let mut freed = Vec::with_capacity(due.len());
    for run in due {
        match data.delete_run(run).await {
            Ok(()) => freed.push(run.owner),
            Err(e) => tracing::debug!(owner = format_args!("{:#x}", run.owner), error = %e, "freeing a run failed"),
        }
    }
    if !freed.is_empty() {
        // The deletes durable before they are forgotten: a power cut would
        // otherwise bring the chunks back with nothing left to free them.
        data.cluster().flush(None).await.map_err(|e| e.to_string())?;
        meta.write(Request::ForgetGarbage { owners: freed.clone() }).await.map_err(|e| e.to_string())?;
        seen.forget(&freed);
    }
    Ok(())
}

/// The garbage this gateway has seen, and when first, as it pages
/// through the table: a pure record, tested without I/O.
#[derive(Debug, Default)]
pub struct Sightings {
    /// Owner: when first seen, and the scan (cycle) that saw it last.
    first: HashMap<u64, (Instant, u64)>,
    /// The owner the next page starts after; `None`: the table's start.
    after: Option<u64>,
    cycle: u64,
}

impl Sightings {
    /// Notes a page of garbage seen at `now`; the runs in it seen for
    /// `grace` or longer.
    pub fn due(&mut self, page: &[DataRun], now: Instant, grace: Duration) -> Vec<DataRun> {
        let cycle = self.cycle;
        page.iter()
            .filter(|run| {
                let (since, last) = self.first.entry(run.owner).or_insert((now, cycle));
                *last = cycle;
                now.duration_since(*since) >= grace
            })
            .copied()
            .collect()
    }

    /// Moves past a page that asked for `max` runs. A shorter page ends a
    /// scan of the table: the next starts again from its first run, and
    /// runs not seen in the one ended (freed by another gateway) are
    /// forgotten.
    pub fn advance(&mut self, page: &[DataRun], max: usize) {
        match page.last() {
            Some(last) if page.len() >= max => self.after = Some(last.owner),
            _ => {
                let ended = self.cycle;
                self.first.retain(|_, (_, last)| *last == ended);
                // A burst of deletes grew the map; give the memory back.
                if self.first.len() < self.first.capacity() / 4 {
                    self.first.shrink_to_fit();
                }
                self.cycle += 1;
                self.after = None;
            }
        }
    }

    /// Forgets runs freed.
    pub fn forget(&mut self, owners: &[u64]) {
        for owner in owners {
            self.first.remove(owner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(owners: &[u64]) -> Vec<DataRun> {
        owners.iter().map(|&o| DataRun::owned(o, 1)).collect()
    }

    #[test]
    fn a_run_is_due_once_it_was_seen_for_the_grace() {
        let mut seen = Sightings::default();
        let t0 = Instant::now();
        let grace = Duration::from_secs(60);
        assert!(seen.due(&runs(&[1, 2]), t0, grace).is_empty());
        assert!(seen.due(&runs(&[1, 2, 3]), t0 + Duration::from_secs(59), grace).is_empty());
        assert_eq!(seen.due(&runs(&[1, 2, 3]), t0 + grace, grace), runs(&[1, 2]), "3 was seen later");
        assert_eq!(Sightings::default().due(&runs(&[4]), t0, Duration::ZERO), runs(&[4]), "no grace: at once");
    }

    #[test]
    fn pages_follow_each_other_and_a_short_page_starts_again() {
        let mut seen = Sightings::default();
        let t0 = Instant::now();
        seen.due(&runs(&[1, 2]), t0, Duration::ZERO);
        seen.advance(&runs(&[1, 2]), 2);
        assert_eq!(seen.after, Some(2));
        seen.due(&runs(&[3]), t0, Duration::ZERO);
        seen.advance(&runs(&[3]), 2);
        assert_eq!(seen.after, None);
        seen.advance(&[], 2);
        assert_eq!(seen.after, None);
    }

    #[test]
    fn runs_freed_elsewhere_are_forgotten_after_a_scan_without_them() {
        let mut seen = Sightings::default();
        let t0 = Instant::now();
        let grace = Duration::from_secs(60);
        seen.due(&runs(&[1, 2]), t0, grace);
        seen.advance(&runs(&[1, 2]), 10);
        assert_eq!(seen.first.len(), 2, "both seen in the scan that ended");
        // Another gateway freed 1: the next scan sees 2 only.
        let later = t0 + Duration::from_secs(30);
        seen.due(&runs(&[2]), later, grace);
        seen.advance(&runs(&[2]), 10);
        assert_eq!(seen.first.len(), 1);
        assert_eq!(seen.due(&runs(&[2]), t0 + grace, grace), runs(&[2]), "2 keeps its first sight");
        seen.forget(&[2]);
        assert!(seen.first.is_empty());
    }
}
