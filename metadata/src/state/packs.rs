//! Applying the commands of packs: chunk owners whose chunks many small
//! objects share (model.rs, [`Pack`]).
//!
//! A gateway opens a pack and appends objects' data into it for a window
//! of time; each committed object's run is counted live in its pack and
//! indexed by (pack, offset), so the compactor can find the runs to move.
//! A run dies when its version is removed or moved; bytes a writer wrote
//! but never committed (it died, or the PUT failed) were never live. A
//! pack most of which is dead is listed as sparse: the compactor moves its
//! live runs into a current pack ([`move_packed`], committed only if the
//! version still holds the run it read), and a pack with nothing live is
//! freed whole once its writer's window and a grace after its last death
//! are over ([`retire_packs`]), by the same garbage table as every chunk.

use super::apply::{Applied, Ctx};
use super::error::{Kind, MetaError};
use super::keys;
use super::model::{DataRun, ObjectRecord, Pack, PackRef, PackTotals, PACK_BYTES};
use super::tables::TableError;
use super::tables::{Tables, TablesMut};
use super::view;
use super::Reply;

pub use chuyi_meta_api::limits::{PACK_TTL_MAX_MS, RETIRE_SCAN_MAX};

pub(crate) fn pack(t: &impl Tables, owner: u64) -> Result<Option<Pack>, TableError> {
    t.get_rec("pack", &keys::pack(owner))
}

pub(crate) fn totals(t: &impl Tables) -> Result<PackTotals, TableError> {
    Ok(t.get_rec("pack totals", keys::PACK_TOTALS)?.unwrap_or_default())
}

/// Stores `pack` (or removes it, `None`), keeping the sparse index and the
/// totals in step with what it was (`before`).
fn file(t: &mut impl TablesMut, owner: u64, before: Option<&Pack>, pack: Option<&Pack>) -> Result<(), TableError> {
    let mut totals = totals(t)?;
    for (p, sign) in [(before, false), (pack, true)] {
        let Some(p) = p else { continue };
        let add = |n: &mut u64, v: u64| *n = if sign { n.saturating_add(v) } else { n.saturating_sub(v) };
        add(&mut totals.packs, 1);
        add(&mut totals.bytes, p.footprint());
        add(&mut totals.live_bytes, p.live_bytes);
        if p.sparse() {
            add(&mut totals.sparse, 1);
            add(&mut totals.sparse_bytes, p.footprint());
            add(&mut totals.sparse_live_bytes, p.live_bytes);
        }
    }
    t.put_rec("pack totals", keys::PACK_TOTALS, &totals)?;
    match pack {
        Some(p) => t.put_rec("pack", &keys::pack(owner), p)?,
        None => t.delete(&keys::pack(owner)),
    }
    // The sparse index is written only when a pack's sparseness flips:
    // every put would otherwise leave a tombstone in RocksDB.
    let (was, is) = (before.is_some_and(Pack::sparse), pack.is_some_and(Pack::sparse));
    if is && !was {
        t.put(&keys::pack_sparse(owner), Vec::new());
    } else if was && !is {
        t.delete(&keys::pack_sparse(owner));
    }
    Ok(())
}

pub(crate) fn open_pack(t: &mut impl TablesMut, ctx: Ctx, pool: &str, ttl_ms: u64) -> Applied {
    if ttl_ms == 0 || ttl_ms > PACK_TTL_MAX_MS {
        refuse!(MetaError::invalid("pack ttl", format!("{ttl_ms} ms is not within 1..={PACK_TTL_MAX_MS}")));
    }
    let Some(pool) = view::pool(t, pool)? else { refuse!(MetaError::not_found(Kind::Pool, pool)) };
    let Some(owner) = super::apply::next_owner(t, pool.id)? else {
        refuse!(MetaError::invalid("object data", format!("pool {} has given out every chunk owner id", pool.name)))
    };
    let pack = Pack { writable_until_ms: ctx.now_ms.saturating_add(ttl_ms), ..Pack::default() };
    file(t, owner, None, Some(&pack))?;
    Ok(Ok(Reply::Data { owner }))
}

/// Why `run` cannot be added to `pack` now, if it cannot.
fn refusal(t: &impl Tables, ctx: Ctx, pack: &Pack, run: &DataRun) -> Result<Option<MetaError>, TableError> {
    let why = if ctx.now_ms >= pack.writable_until_ms {
        "its writer's window is over".to_string()
    } else if run.len == 0 || run.offset.checked_add(run.len).is_none_or(|end| end > PACK_BYTES) {
        format!("bytes {}+{} are not within the pack's {PACK_BYTES}", run.offset, run.len)
    } else if t.get(&keys::pack_ref(run.owner, run.offset))?.is_some() {
        format!("a live run starts at {} already", run.offset)
    } else {
        return Ok(None);
    };
    Ok(Some(MetaError::invalid("packed data", format!("pack {:#x}: {why}", run.owner))))
}

/// When `runs` is exactly one packed run that version of `bucket/key`
/// already holds (a retried `PutObject` whose first try was applied),
/// what that put replied.
pub(crate) fn already_put(
    t: &impl Tables,
    bucket: &str,
    key: &str,
    runs: &[DataRun],
) -> Result<Option<Reply>, TableError> {
    let [run] = runs else { return Ok(None) };
    let Some(held) = t.get_rec::<PackRef>("pack ref", &keys::pack_ref(run.owner, run.offset))? else {
        return Ok(None);
    };
    if held.bucket != bucket || held.key != key || held.len != run.len {
        return Ok(None);
    }
    let record = t.get_rec::<ObjectRecord>("object", &keys::object_version(bucket, key, held.seq))?;
    Ok(record.map(|r| Reply::ObjectPut { version_id: r.version_id, seq: r.seq }))
}

/// The runs of `runs` that lie in packs, once each may be added now:
/// `Err(refusal)` when one may not.
pub(crate) fn check_adds(
    t: &impl Tables,
    ctx: Ctx,
    runs: &[DataRun],
) -> Result<Result<Vec<DataRun>, MetaError>, TableError> {
    let mut packed = Vec::new();
    for run in runs {
        if let Some(pack) = pack(t, run.owner)? {
            if let Some(refused) = refusal(t, ctx, &pack, run)? {
                return Ok(Err(refused));
            }
            packed.push(*run);
        }
    }
    Ok(Ok(packed))
}

/// Counts `run` live in its pack, held by version `seq` of `bucket/key`.
/// The caller checked it with [`check_adds`].
pub(crate) fn add_run(
    t: &mut impl TablesMut,
    run: &DataRun,
    bucket: &str,
    key: &str,
    seq: u64,
) -> Result<(), TableError> {
    let Some(before) = pack(t, run.owner)? else { return Ok(()) };
    let mut after = before.clone();
    after.end = after.end.max(run.offset + run.len);
    after.live_bytes = after.live_bytes.saturating_add(run.len);
    after.live_runs += 1;
    let reference = PackRef { offset: run.offset, len: run.len, bucket: bucket.into(), key: key.into(), seq };
    t.put_rec("pack ref", &keys::pack_ref(run.owner, run.offset), &reference)?;
    file(t, run.owner, Some(&before), Some(&after))
}

/// The run is no longer live: its bytes are dead in its pack. Returns
/// false when `run.owner` is not a pack (the caller frees the run).
pub(crate) fn kill_run(t: &mut impl TablesMut, ctx: Ctx, run: &DataRun) -> Result<bool, TableError> {
    let Some(before) = pack(t, run.owner)? else { return Ok(false) };
    let mut after = before.clone();
    after.live_bytes = after.live_bytes.saturating_sub(run.len);
    after.live_runs = after.live_runs.saturating_sub(1);
    after.died_ms = ctx.now_ms;
    t.delete(&keys::pack_ref(run.owner, run.offset));
    file(t, run.owner, Some(&before), Some(&after))?;
    Ok(true)
}

/// Moves one run of version `seq` of `bucket/key` from `from` to `to` (a
/// copy the compactor wrote), only if the version still holds `from`:
/// `Count(1)` when moved, `Count(0)` when the version changed meanwhile
/// (then `to`'s bytes were never live and stay dead).
pub(crate) fn move_packed(
    t: &mut impl TablesMut,
    ctx: Ctx,
    bucket: &str,
    key: &str,
    seq: u64,
    from: &DataRun,
    to: &DataRun,
) -> Applied {
    if from.len != to.len {
        refuse!(MetaError::invalid("packed move", format!("{} bytes moved into {}", from.len, to.len)));
    }
    let Some(to_pack) = pack(t, to.owner)? else {
        refuse!(MetaError::invalid("packed move", format!("{:#x} is not a pack", to.owner)))
    };
    if let Some(refused) = refusal(t, ctx, &to_pack, to)? {
        refuse!(refused);
    }
    let version_key = keys::object_version(bucket, key, seq);
    let Some(mut record) = t.get_rec::<ObjectRecord>("object", &version_key)? else { return Ok(Ok(Reply::Count(0))) };
    let Some(slot) = record.data.data.iter_mut().find(|run| *run == from) else { return Ok(Ok(Reply::Count(0))) };
    *slot = *to;
    t.put_rec("object", &version_key, &record)?;
    kill_run(t, ctx, from)?;
    add_run(t, to, bucket, key, seq)?;
    let mut totals = totals(t)?;
    totals.moved_bytes = totals.moved_bytes.saturating_add(to.len);
    t.put_rec("pack totals", keys::PACK_TOTALS, &totals)?;
    Ok(Ok(Reply::Count(1)))
}

/// Frees up to `max` packs with nothing live whose grace is over: each
/// goes to the garbage whole, for the gateway to delete its chunks.
pub(crate) fn retire_packs(t: &mut impl TablesMut, ctx: Ctx, max: u32, grace_ms: u64) -> Applied {
    let mut retired = 0u64;
    for (owner, pack) in sparse(t, 0, RETIRE_SCAN_MAX)? {
        if retired >= u64::from(max) {
            break;
        }
        if pack.freeable(ctx.now_ms, grace_ms) {
            file(t, owner, Some(&pack), None)?;
            super::objects::to_garbage(t, DataRun::owned(owner, PACK_BYTES))?;
            retired += 1;
        }
    }
    Ok(Ok(Reply::Count(retired)))
}

/// Up to `max` sparse packs, owners from `after` on.
pub(crate) fn sparse(t: &impl Tables, after: u64, max: usize) -> Result<Vec<(u64, Pack)>, TableError> {
    let (_, to) = keys::table_range(keys::T_PACK_SPARSE);
    let mut out = Vec::new();
    for (k, _) in t.scan(&keys::pack_sparse(after), &to, max)? {
        let Some(owner) = keys::parse_owner(&k) else { continue };
        if let Some(p) = pack(t, owner)? {
            out.push((owner, p));
        }
    }
    Ok(out)
}

/// Up to `max` live runs of pack `owner` at offsets from `from` on.
pub(crate) fn refs(t: &impl Tables, owner: u64, from: u64, max: usize) -> Result<Vec<PackRef>, TableError> {
    let to = keys::pack_ref(owner, u64::MAX);
    let recs = t.scan_recs_limited::<PackRef>("pack ref", &keys::pack_ref(owner, from), &to, max)?;
    Ok(recs.into_iter().map(|(_, r)| r).collect())
}

/// Sparse packs with nothing live whose grace is over at `now_ms`, among
/// the first `scan_max`: whether a `RetirePacks` write is worth making.
pub(crate) fn freeable(t: &impl Tables, now_ms: u64, grace_ms: u64, scan_max: usize) -> Result<u64, TableError> {
    Ok(sparse(t, 0, scan_max)?.iter().filter(|(_, p)| p.freeable(now_ms, grace_ms)).count() as u64)
}
