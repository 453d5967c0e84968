//! The reclaimer: frees object data no record refers to any more. Each
//! pass first moves pending data whose writer died (its time is up), and
//! packs with nothing live left (their grace over), to the garbage; then
//! it deletes the chunks of a page of garbage from the storage nodes and
//! only then forgets it, so a gateway that dies mid-pass leaves
//! the garbage for the next one. Every gateway runs one; deleting a chunk
//! twice is harmless.

use std::time::Duration;

use chuyi_meta_api::ask;
use chuyi_meta_api::limits::RECORDS_PAGE_MAX;
use chuyi_meta_api::Request;

use crate::data::DataPath;

/// How often a pass runs when the last one found nothing.
pub const RECLAIM_IDLE: Duration = Duration::from_secs(2);

/// Runs passes for ever; packs are freed `pack_grace` after their last
/// run died.
pub async fn run(data: DataPath, pack_grace: Duration) {
    loop {
        match pass(&data, pack_grace).await {
            // A full page: more may wait, go on at once.
            Ok(n) if n >= RECORDS_PAGE_MAX as usize => continue,
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "reclaim pass failed"),
        }
        tokio::time::sleep(RECLAIM_IDLE).await;
    }
}

/// One pass; returns how many runs it freed.
pub async fn pass(data: &DataPath, pack_grace: Duration) -> Result<usize, String> {
    let meta = data.cluster().meta();
    // A Raft write only when something expired, not every pass.
    let grace_ms = pack_grace.as_millis() as u64;
    let now_ms = chuyi_common::clock::unix_ms();
    let expired = meta.ask(ask::ExpiredPending { now_ms }).await.map_err(|e| e.to_string())?;
    if expired > 0 {
        meta.write(Request::ExpirePending { max: RECORDS_PAGE_MAX }).await.map_err(|e| e.to_string())?;
    }
    let freeable = meta.ask(ask::FreeablePacks { now_ms, grace_ms }).await.map_err(|e| e.to_string())?;
    if freeable > 0 {
        meta.write(Request::RetirePacks { max: RECORDS_PAGE_MAX, grace_ms }).await.map_err(|e| e.to_string())?;
    }
    let garbage = meta.ask(ask::Garbage { max: RECORDS_PAGE_MAX }).await.map_err(|e| e.to_string())?;
    let mut freed = Vec::with_capacity(garbage.len());
    for run in garbage {
        match data.delete_run(run).await {
            Ok(()) => freed.push(run.owner),
            Err(e) => tracing::debug!(owner = format_args!("{:#x}", run.owner), error = %e, "freeing a run failed"),
        }
    }
    let count = freed.len();
    if !freed.is_empty() {
        meta.write(Request::ForgetGarbage { owners: freed }).await.map_err(|e| e.to_string())?;
    }
    Ok(count)
}
