//! Work on a detached volume under its attach lease: a rollback, a
//! flatten, a restore. The lease is taken as `holder`, kept renewed, and
//! the volume's fence raised on every node before the work writes, so
//! nothing attaches meanwhile and a frontend that had it can no longer
//! write; it is released when the work ends, whatever its result.

use std::sync::Arc;
use std::time::Duration;

use chuyi_meta_api::{order, Request};

use crate::fence::AlwaysOpen;
use crate::{ClientError, Cluster, VolumeIo};

/// How long such a lease lasts between renewals.
const LEASE_TTL: Duration = Duration::from_secs(30);

/// Runs `work` on `volume` opened for writing under its attach lease
/// (refused with `LeaseHeld` while a frontend has it), flushes what it
/// wrote, then releases the lease.
pub async fn hold<W, Fut, T>(cluster: &Arc<Cluster>, volume: &str, holder: &str, work: W) -> Result<T, ClientError>
where
    W: FnOnce(Arc<VolumeIo>) -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let acquire = order::AcquireLease { volume: volume.into(), holder: holder.into(), ttl_ms: ttl_ms() };
    let lease = cluster.meta().order(acquire).await?;
    let renewing = Renewing(tokio::spawn(renew(cluster.clone(), volume.to_string(), holder.to_string(), lease.id)));
    let result = async {
        let vol = Arc::new(cluster.open_volume(volume).await?.fenced(lease.id, Arc::new(AlwaysOpen)));
        vol.attach_fence().await?;
        let out = work(vol.clone()).await?;
        vol.flush().await?;
        Ok(out)
    }
    .await;
    drop(renewing);
    let release = Request::ReleaseLease { volume: volume.into(), holder: holder.into(), lease_id: lease.id };
    if let Err(e) = cluster.meta().write(release).await {
        tracing::warn!(volume, error = %e, "lease not released; it runs out by itself");
    }
    result
}

/// The renewing task, stopped when the work ends or is cancelled (a
/// dropped future must not keep a lease alive).
struct Renewing(tokio::task::JoinHandle<()>);

impl Drop for Renewing {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Keeps the lease: a lost one shows as `Fenced` on the next write, once
/// another frontend has raised its own fence.
async fn renew(cluster: Arc<Cluster>, volume: String, holder: String, lease_id: u64) {
    loop {
        tokio::time::sleep(LEASE_TTL / 3).await;
        let renew = order::RenewLease { volume: volume.clone(), holder: holder.clone(), lease_id, ttl_ms: ttl_ms() };
        if let Err(e) = cluster.meta().order(renew).await {
            tracing::warn!(volume, error = %e, "could not renew the lease");
        }
    }
}

fn ttl_ms() -> u64 {
    LEASE_TTL.as_millis() as u64
}
