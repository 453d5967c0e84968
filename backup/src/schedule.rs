//! Backup schedules, run by the cluster's volume frontends (`chuyi nbd`,
//! `chuyi up`) that have the KEK: every [`EVERY`], each schedule with a
//! slot due is claimed from the metadata service (one frontend wins it;
//! the claim is renewed while the run lasts and runs out if the frontend
//! dies, so another takes the slot over and resumes the backup from the
//! target's journal), backed up, pruned by its retention, drilled when a
//! drill is due, and reported.

use std::sync::Arc;
use std::time::Duration;

use chuyi_client::Cluster;
use chuyi_common::sm4::Kek;
use chuyi_meta_api::backup_schedule::{self, secret_context, BackupOutcome, BackupSchedule};
use chuyi_meta_api::{ask, Reply, Request};

use crate::create::{create, CreateOptions};
use crate::error::BackupError;
use crate::repo::{Repo, TargetPath};
use crate::s3::{S3Keys, S3Options, S3};
use crate::throttle::{BandwidthSchedule, Throttle};

/// How often a frontend looks for schedules due.
pub const EVERY: Duration = Duration::from_secs(10);
/// How long a claim lasts between renewals.
const CLAIM_TTL: Duration = Duration::from_secs(60);
/// Pieces in flight for a scheduled run.
const IN_FLIGHT: usize = 8;

/// Runs the schedules due every `every`, as `holder`, forever.
pub async fn run_schedules(cluster: Arc<Cluster>, kek: Kek, holder: String, every: Duration) {
    loop {
        match once(&cluster, &kek, &holder).await {
            Ok(0) => {}
            Ok(runs) => tracing::info!(runs, "scheduled backups run"),
            Err(e) => tracing::warn!(error = %e, "backup schedules not read; trying again"),
        }
        tokio::time::sleep(every).await;
    }
}

/// One pass: runs each schedule with a slot due that this frontend wins;
/// how many it ran.
pub async fn once(cluster: &Arc<Cluster>, kek: &Kek, holder: &str) -> Result<usize, BackupError> {
    let schedules = cluster.meta().ask(ask::BackupSchedules).await.map_err(chuyi_client::ClientError::from)?;
    let mut runs = 0;
    for s in schedules {
        // The service decides by its clock; this only saves asking.
        if backup_schedule::claimable(&s, holder, chuyi_common::clock::unix_ms()).is_err() {
            continue;
        }
        let Some(claimed) = claim(cluster, &s, holder).await else { continue };
        let renewing = tokio::spawn(renew(cluster.clone(), claimed.clone(), holder.to_string()));
        let outcome = run(cluster, kek, &claimed).await;
        renewing.abort();
        if let Err(why) = &outcome.backup {
            tracing::warn!(volume = s.volume, target = s.target, why, "scheduled backup failed");
        }
        let report = Request::ReportBackupRun {
            volume: s.volume.clone(),
            target: s.target.clone(),
            holder: holder.into(),
            outcome,
        };
        if let Err(e) = cluster.meta().write(report).await {
            tracing::warn!(volume = s.volume, error = %e, "backup run not reported; its claim runs out");
        }
        runs += 1;
    }
    Ok(runs)
}

async fn claim(cluster: &Cluster, s: &BackupSchedule, holder: &str) -> Option<BackupSchedule> {
    let claim = Request::ClaimBackupRun {
        volume: s.volume.clone(),
        target: s.target.clone(),
        holder: holder.into(),
        ttl_ms: CLAIM_TTL.as_millis() as u64,
    };
    match cluster.meta().write(claim).await {
        Ok(Reply::BackupSchedule(s)) => Some(*s),
        Ok(other) => {
            tracing::warn!(?other, "a backup claim answered out of turn");
            None
        }
        // Another frontend got there first, or nothing is due by the
        // service's clock.
        Err(_) => None,
    }
}

async fn renew(cluster: Arc<Cluster>, s: BackupSchedule, holder: String) {
    loop {
        tokio::time::sleep(CLAIM_TTL / 3).await;
        if claim(&cluster, &s, &holder).await.is_none() {
            tracing::warn!(volume = s.volume, "could not renew a backup claim");
        }
    }
}

/// Backs the schedule's volume up, prunes, drills if due.
async fn run(cluster: &Arc<Cluster>, kek: &Kek, s: &BackupSchedule) -> BackupOutcome {
    let mut drill = None;
    let backup = async {
        let repo = Arc::new(open(kek, s).await?);
        let throttle = Arc::new(Throttle::new(match s.bandwidth.as_str() {
            "" => BandwidthSchedule::unlimited(),
            text => BandwidthSchedule::parse(text)?,
        }));
        let label = chuyi_meta_api::schedule::label(s.every_ms);
        let options =
            CreateOptions { schedule: Some(label), in_flight: IN_FLIGHT, throttle: throttle.clone(), full: false };
        let created = create(cluster, &repo, kek, &s.volume, &options, &|_, _, _| {}).await?;
        if !s.keep.is_empty() {
            // A prune that must wait (a drill holds the target) is left
            // to the next run: the backup itself is made.
            if let Err(e) = crate::prune::prune(&repo, Some(&s.volume), &s.keep).await {
                tracing::warn!(volume = s.volume, error = %e, "prune after the scheduled backup failed");
            }
        }
        if backup_schedule::drill_due(s, chuyi_common::clock::unix_ms()) {
            // The backup is made whatever the drill meets: a drill that
            // could not run (a prune holds the target) is tried next time.
            match crate::verify::verify(&repo, &created.manifest, IN_FLIGHT, &throttle, &|_, _, _| {}).await {
                Ok(checked) => drill = Some(checked.passed()),
                Err(e) => tracing::warn!(volume = s.volume, error = %e, "the scheduled drill did not run"),
            }
        }
        Ok::<String, BackupError>(created.manifest.id)
    }
    .await
    .map_err(|e| e.to_string());
    BackupOutcome { backup, drill }
}

/// The schedule's target, opened with its keys.
async fn open(kek: &Kek, s: &BackupSchedule) -> Result<Repo, BackupError> {
    let secret = kek
        .unwrap(&s.wrapped_secret, &secret_context(&s.volume, &s.target))
        .map_err(|e| BackupError::WrongKek(e.to_string()))?;
    let secret_key =
        String::from_utf8(secret.to_vec()).map_err(|_| BackupError::corrupt("the schedule's secret", "not UTF-8"))?;
    let keys = S3Keys { access_key: s.access_key.clone(), secret_key };
    let options = S3Options {
        region: s.region.clone(),
        ca_file: std::env::var_os("AWS_CA_BUNDLE").map(Into::into),
        ..S3Options::default()
    };
    let s3 = S3::new(&s.endpoint, &keys, options)?;
    Repo::open(s3, TargetPath::parse(&s.target)?, kek, true).await
}
