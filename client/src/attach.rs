//! The attach lease of a volume a frontend serves (NBD, vhost-user-blk),
//! and the fence that stops serving it once the lease may have run out.
//!
//! [`attach`] takes the lease of an opened volume, fences the volume's
//! older writers on every node, and keeps the lease renewed; [`Fence`]
//! says whether I/O may still be sent.
//!
//! Another frontend may take the volume as soon as the metadata service
//! sees this one's lease expire. So this frontend stops sending I/O for the
//! volume *before* that can happen: a lease renewed by a request sent at
//! `t` is taken to last until `t + ttl - margin`, the margin covering clock
//! rate differences and the time the request took to be applied. When
//! renewals fail (metadata unreachable) for that long, or the metadata
//! service answers that the lease is gone, the fence closes: every
//! connection to the volume stops at once, dropping the requests it has in
//! flight (their retries must not outlive the lease), and closes; its
//! client sees their outcome as unknown, as after any disconnect.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chuyi_common::clock::{self, Instant};

use chuyi_meta_api::{order, MetaError, Request};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::{ClientError, Cluster, VolumeIo};

/// A volume attached for serving: fenced by its lease, which a task keeps
/// renewed until [`Lease::release`] (or until the fence closes).
#[derive(Debug)]
pub struct Lease {
    /// The volume, its writes carrying the lease's token and gated by
    /// [`Self::fence`].
    pub vol: VolumeIo,
    pub fence: Arc<Fence>,
    pub id: u64,
    renew: AbortHandle,
}

/// Why a volume could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The metadata service refused the lease (another holder has it, the
    /// volume is gone, ...) or could not be reached.
    #[error("{0}")]
    Refused(MetaError),
    /// The lease was taken but the nodes could not all learn its fence;
    /// the lease was given back.
    #[error("could not fence the volume's older writers: {0}")]
    Fence(ClientError),
}

/// Takes the attach lease of `vol` as `holder` for `ttl`, renewed in the
/// background; every node learns the lease's token before this returns,
/// so none takes a request of an older writer still holding some.
pub async fn attach(cluster: &Arc<Cluster>, vol: VolumeIo, holder: &str, ttl: Duration) -> Result<Lease, AttachError> {
    let name = vol.volume().name.clone();
    let acquire = order::AcquireLease { volume: name.clone(), holder: holder.into(), ttl_ms: ttl.as_millis() as u64 };
    let sent = clock::now();
    let lease = cluster.meta().order(acquire).await.map_err(AttachError::Refused)?;
    let fence = Fence::new(sent, ttl);
    let vol = vol.fenced(lease.id, fence.clone());
    if let Err(e) = vol.attach_fence().await {
        release(cluster, &name, holder, lease.id);
        return Err(AttachError::Fence(e));
    }
    let renew = tokio::spawn(renew(cluster.clone(), name, holder.to_string(), lease.id, ttl, fence.clone()));
    Ok(Lease { vol, fence, id: lease.id, renew: renew.abort_handle() })
}

impl Lease {
    /// Stops renewing and gives the lease back, in the background (await
    /// the handle to know it was sent).
    pub fn release(&self, cluster: &Arc<Cluster>, holder: &str) -> tokio::task::JoinHandle<()> {
        self.renew.abort();
        release(cluster, &self.vol.volume().name, holder, self.id)
    }

    /// Stops renewing without giving the lease back: a later attach of the
    /// same holder replaced it.
    pub fn abandon(&self) {
        self.renew.abort();
    }
}

/// Releases lease `lease_id` of `volume` in the background; one not
/// released runs out by itself.
pub fn release(cluster: &Arc<Cluster>, volume: &str, holder: &str, lease_id: u64) -> tokio::task::JoinHandle<()> {
    let release = Request::ReleaseLease { volume: volume.into(), holder: holder.into(), lease_id };
    let (cluster, volume) = (cluster.clone(), volume.to_string());
    tokio::spawn(async move {
        if let Err(e) = cluster.meta().write(release).await {
            tracing::warn!(volume, error = %e, "releasing the attach lease failed; it expires by itself");
        }
    })
}

/// Whether this frontend may still send I/O for a volume.
#[derive(Debug)]
pub struct Fence {
    start: Instant,
    /// Milliseconds after `start` until which the lease surely holds; 0
    /// once it is known lost.
    valid_until_ms: AtomicU64,
    /// Wakes [`Self::closed`] once the lease is lost: refused, or run out
    /// (noticed by [`Self::watch`]).
    lost: Notify,
}

impl Fence {
    /// A fence for a lease acquired by a request sent at `sent`.
    pub fn new(sent: Instant, ttl: Duration) -> Arc<Self> {
        let until = ttl.saturating_sub(margin(ttl)).as_millis() as u64;
        Arc::new(Self { start: sent, valid_until_ms: AtomicU64::new(until.max(1)), lost: Notify::new() })
    }

    /// A fence that never closes: a snapshot's export, read-only, needs
    /// no lease.
    pub fn forever() -> Arc<Self> {
        Arc::new(Self { start: clock::now(), valid_until_ms: AtomicU64::new(u64::MAX), lost: Notify::new() })
    }

    /// True while the lease surely holds.
    pub fn holds(&self) -> bool {
        (self.start.elapsed().as_millis() as u64) < self.valid_until_ms.load(Ordering::Acquire)
    }

    /// Resolves once the lease no longer surely holds. Every request in
    /// flight waits on this, so it takes no timer of its own: one
    /// [`Self::watch`] per lease closes the fence when time runs out.
    pub async fn closed(&self) {
        let lost = self.lost.notified();
        tokio::pin!(lost);
        // Registered before the check, so a loss in between still wakes.
        lost.as_mut().enable();
        if self.holds() {
            lost.await;
        }
    }

    /// Closes the fence when its deadline passes without a renewal having
    /// moved it; returns then.
    pub async fn watch(&self) {
        loop {
            let until = self.valid_until_ms.load(Ordering::Acquire);
            if until != 0 {
                tokio::time::sleep_until(self.start + Duration::from_millis(until)).await;
            }
            if !self.holds() {
                self.lost();
                return;
            }
        }
    }

    /// A renewal sent at `sent` succeeded.
    fn renewed(&self, sent: Instant, ttl: Duration) {
        let until = sent.saturating_duration_since(self.start) + ttl.saturating_sub(margin(ttl));
        // Never extend a lease already known lost.
        let _ = self.valid_until_ms.fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
            (now != 0).then_some(now.max(until.as_millis() as u64))
        });
    }

    /// The lease is known lost (or the export must close): closes the
    /// fence for good.
    pub fn lost(&self) {
        self.valid_until_ms.store(0, Ordering::Release);
        self.lost.notify_waiters();
    }
}

/// The fence is the gate of the volume's requests to storage nodes: the RPC
/// writer asks it right before each request goes out, so requests queued
/// while this frontend was frozen are dropped once it resumes too late.
impl chuyi_common::rpc::SendGate for Fence {
    fn open(&self) -> bool {
        self.holds()
    }
}

/// How much sooner than the metadata service this frontend gives a lease up.
fn margin(ttl: Duration) -> Duration {
    ttl / 6
}

/// Renews the lease every third of its time to live until aborted, or until
/// the metadata service refuses (the lease is gone) or the renewals fail
/// for too long: then the fence closes.
pub async fn renew(
    cluster: Arc<Cluster>,
    volume: String,
    holder: String,
    lease_id: u64,
    ttl: Duration,
    fence: Arc<Fence>,
) {
    tokio::select! {
        () = renewals(&cluster, &volume, &holder, lease_id, ttl, &fence) => {}
        () = fence.watch() => {
            tracing::error!(volume, "the attach lease could not be renewed in time; no more I/O is sent");
        }
    }
}

async fn renewals(cluster: &Cluster, volume: &str, holder: &str, lease_id: u64, ttl: Duration, fence: &Fence) {
    let mut wait = ttl / 3;
    loop {
        tokio::time::sleep(wait).await;
        let renew = Request::RenewLease {
            volume: volume.to_string(),
            holder: holder.to_string(),
            lease_id,
            ttl_ms: ttl.as_millis() as u64,
        };
        let sent = clock::now();
        match tokio::time::timeout(ttl / 3, cluster.meta().write(renew)).await {
            Ok(Ok(_)) => {
                fence.renewed(sent, ttl);
                wait = ttl / 3;
            }
            Ok(Err(e)) if e.is_refusal() => {
                tracing::error!(volume, error = %e, "the attach lease is gone; no more I/O is sent for this volume");
                fence.lost();
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(volume, error = %e, "renewing the attach lease failed; retrying");
                wait = retry_wait(ttl);
            }
            Err(_) => {
                tracing::warn!(volume, "renewing the attach lease timed out; retrying");
                wait = retry_wait(ttl);
            }
        }
    }
}

fn retry_wait(ttl: Duration) -> Duration {
    (ttl / 10).max(Duration::from_millis(100))
}

/// How often a snapshot's export checks that its snapshot still exists.
pub const SNAPSHOT_CHECK: Duration = Duration::from_secs(1);

/// Closes a snapshot export's fence (so its connections close) once
/// snapshot `id` of `volume` is deleted: its clones are trimmed after the
/// delete, and reads would then find another point in time. Ends when the
/// export's connections are all gone.
/// `clone`: the volume was a clone when the export opened; a clone's
/// snapshot reads through the parent link, and once the clone is
/// flattened its parent snapshot may go too, so the export closes then.
pub async fn watch_snapshot(
    cluster: Arc<Cluster>,
    volume: String,
    id: u32,
    clone: bool,
    fence: std::sync::Weak<Fence>,
) {
    loop {
        tokio::time::sleep(SNAPSHOT_CHECK).await;
        let Some(fence) = fence.upgrade() else { return };
        match cluster.meta().ask(chuyi_meta_api::ask::Snapshots(volume.clone())).await {
            Ok(snapshots) if snapshots.snapshots.iter().any(|s| s.id == id) && snapshots.parent.is_some() == clone => {}
            Ok(_) | Err(chuyi_meta_api::MetaError::NotFound { .. }) => {
                tracing::info!(volume, snapshot = id, "snapshot deleted: its export closes");
                fence.lost();
                return;
            }
            Err(e) => tracing::debug!(volume, error = %e, "could not check the snapshot; will again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_holds_until_the_margin_and_never_reopens_once_lost() {
        let ttl = Duration::from_millis(600);
        let fence = Fence::new(clock::now(), ttl);
        assert!(fence.holds());
        std::thread::sleep(Duration::from_millis(520));
        assert!(!fence.holds(), "closed by ttl - ttl/6 = 500 ms");
        fence.renewed(clock::now(), ttl);
        assert!(fence.holds(), "a renewal reopens a fence that ran out");
        fence.lost();
        fence.renewed(clock::now(), ttl);
        assert!(!fence.holds(), "a lost lease stays lost");
    }

    #[tokio::test]
    async fn a_lost_lease_closes_the_fence_at_once() {
        let fence = Fence::new(clock::now(), Duration::from_secs(60));
        let waiter = tokio::spawn({
            let fence = fence.clone();
            async move { fence.closed().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "open while the lease holds");
        fence.lost();
        tokio::time::timeout(Duration::from_secs(1), waiter).await.expect("closed at once").expect("joined");
    }
}
