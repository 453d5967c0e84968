//! `chuyi backup create|list|info|verify|restore|prune`: volume backups in
//! an S3 target (chuyi-backup does the work). A target is
//! `--target s3://BUCKET[/PREFIX]` at `--endpoint` (default: this
//! cluster's gateway, `$CHUYI_S3_ENDPOINT`), with keys from the AWS
//! variables or `--profile`; every command needs the KEK, which opens the
//! target's backup key.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chuyi_backup::catalog;
use chuyi_backup::create::CreateOptions;
use chuyi_backup::manifest::Manifest;
use chuyi_backup::repo::{Repo, TargetPath};
use chuyi_backup::restore::RestoreOptions;
use chuyi_backup::retention::Retention;
use chuyi_backup::s3::{S3Keys, S3Options, S3};
use chuyi_backup::throttle::{BandwidthSchedule, Throttle};
use chuyi_client::{ClientConfig, Cluster};
use chuyi_common::secret::hex;
use chuyi_common::size::ByteSize;
use chuyi_meta_api::backup_schedule::{secret_context, BackupSchedule};
use chuyi_meta_api::Request;
use indicatif::ProgressBar;

use crate::admin::print_json;
use crate::cluster::ClusterArgs;
use crate::table::Table;

#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    /// Where backups are kept: s3://BUCKET[/PREFIX].
    #[arg(long)]
    target: String,
    /// The S3 endpoint, http(s)://HOST[:PORT]; default this cluster's gateway.
    #[arg(long, env = "CHUYI_S3_ENDPOINT")]
    endpoint: String,
    /// A profile of ~/.aws/credentials (else $AWS_ACCESS_KEY_ID and
    /// $AWS_SECRET_ACCESS_KEY).
    #[arg(long)]
    profile: Option<String>,
    /// The region requests are signed for.
    #[arg(long, env = "AWS_DEFAULT_REGION", default_value = chuyi_backup::s3::DEFAULT_REGION)]
    region: String,
    /// CA certificates (PEM) an https endpoint is checked against; else the system's.
    #[arg(long, env = "AWS_CA_BUNDLE")]
    ca_file: Option<std::path::PathBuf>,
    /// How long a request to the target is retried through faults (a
    /// target cut off for less is waited for).
    #[arg(long, default_value = "5m", value_parser = crate::duration::parse_ms)]
    retry_for: u64,
    /// Bandwidth by time of day: RATE, or HH:MM-HH:MM=RATE,... (RATE:
    /// 50MiB/s, unlimited), in this host's local time.
    #[arg(long)]
    bandwidth: Option<String>,
    /// Pieces sent or fetched at once.
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
}

#[derive(Debug, clap::Subcommand)]
pub enum BackupCmd {
    /// Takes a snapshot of VOLUME and backs it up: the first time whole,
    /// then only the 1 MiB spans changed since the previous backup's
    /// snapshot. A backup killed or cut off resumes when run again.
    Create {
        volume: String,
        #[command(flatten)]
        target: TargetArgs,
        /// Read every span even when an incremental is possible.
        #[arg(long)]
        full: bool,
    },
    /// The backups in a target, oldest first per volume, with their last drill.
    List {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long)]
        volume: Option<String>,
    },
    /// One backup: BACKUP is its id, or a volume name for its newest.
    Info {
        backup: String,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// A drill: reads every piece of BACKUP back and checks it and the
    /// whole image's hash, touching no volume; the result is kept and
    /// shown by `list`.
    Verify {
        backup: String,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Restores BACKUP into a new volume (or, with --overwrite, over a
    /// detached one of its size, fetching only the spans that differ).
    Restore {
        backup: String,
        #[arg(long)]
        to: String,
        /// The pool of the new volume.
        #[arg(long, default_value = "ssd")]
        pool: String,
        #[arg(long)]
        overwrite: bool,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Backs VOLUME up to the target every interval, run by the cluster's
    /// volume frontends that have the KEK (one at a time; a run cut short
    /// is resumed), then prunes by the --keep-* policy and drills the
    /// newest backup every --drill-every. The target's secret key is
    /// stored wrapped by the KEK. Setting it again replaces it.
    Schedule {
        volume: String,
        #[command(flatten)]
        target: TargetArgs,
        /// "15m", "1h", "1d": 15 minutes at least.
        #[arg(long)]
        every: String,
        /// Allow intervals under 15 minutes (down to 1 s; tests, demos).
        #[arg(long)]
        short: bool,
        #[command(flatten)]
        keep: KeepArgs,
        /// A drill of the newest backup at least this often ("7d").
        #[arg(long, value_parser = crate::duration::parse_ms)]
        drill_every: Option<u64>,
    },
    /// Every backup schedule and how its last run went.
    Schedules,
    /// Removes VOLUME's backup schedule to the target (its backups stay).
    Unschedule {
        volume: String,
        #[arg(long)]
        target: String,
    },
    /// Forgets the backups the policy does not keep (the newest of each
    /// volume always stays), then deletes the pieces no backup needs.
    Prune {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long)]
        volume: Option<String>,
        #[command(flatten)]
        keep: KeepArgs,
    },
}

/// A retention policy: restic's forget rules.
#[derive(Debug, Clone, clap::Args)]
pub struct KeepArgs {
    #[arg(long, default_value_t = 0)]
    keep_last: u32,
    #[arg(long, default_value_t = 0)]
    keep_hourly: u32,
    #[arg(long, default_value_t = 0)]
    keep_daily: u32,
    #[arg(long, default_value_t = 0)]
    keep_weekly: u32,
    #[arg(long, default_value_t = 0)]
    keep_monthly: u32,
}

impl KeepArgs {
    fn retention(&self) -> Retention {
        Retention {
            last: self.keep_last,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
        }
    }
}

/// The shortest interval `schedule` takes without `--short`.
const EVERY_MIN_MS: u64 = 15 * 60_000;

pub async fn run(args: &ClusterArgs, cmd: BackupCmd) -> anyhow::Result<()> {
    match cmd {
        BackupCmd::Create { volume, target, full } => create(args, &volume, &target, full).await,
        BackupCmd::List { target, volume } => list(args, &target, volume.as_deref()).await,
        BackupCmd::Info { backup, target } => {
            let repo = open(args, &target, false).await?;
            let m = catalog::find(&repo, &backup).await?;
            let drill = catalog::drill(&repo, &m.volume, &m.id).await?;
            if args.json {
                return print_json(&serde_json::json!({ "backup": summary(&m), "drill": drill }));
            }
            show(&m, drill.as_ref());
            Ok(())
        }
        BackupCmd::Verify { backup, target } => verify(args, &backup, &target).await,
        BackupCmd::Restore { backup, to, pool, overwrite, target } => {
            restore(args, &backup, &to, &pool, overwrite, &target).await
        }
        BackupCmd::Schedule { volume, target, every, short, keep, drill_every } => {
            schedule(args, &volume, &target, &every, short, &keep, drill_every.unwrap_or(0)).await
        }
        BackupCmd::Schedules => schedules(args).await,
        BackupCmd::Unschedule { volume, target } => {
            let target = TargetPath::parse(&target)?.to_string();
            args.client()?
                .write(Request::DeleteBackupSchedule { volume: volume.clone(), target: target.clone() })
                .await?;
            println!("volume {volume} is no longer backed up to {target} by schedule; its backups stay");
            Ok(())
        }
        BackupCmd::Prune { target, volume, keep } => {
            let policy = keep.retention();
            if policy.is_empty() {
                anyhow::bail!(
                    "no policy: give --keep-last, --keep-hourly, --keep-daily, --keep-weekly or --keep-monthly"
                );
            }
            let repo = open(args, &target, false).await?;
            let stats = chuyi_backup::prune::prune(&repo, volume.as_deref(), &policy).await?;
            if args.json {
                return print_json(&stats);
            }
            for f in &stats.forgotten {
                println!("forgot {f}");
            }
            println!(
                "{} backups kept, {} forgotten; {} pieces kept, {} deleted",
                stats.backups_kept,
                stats.forgotten.len(),
                stats.pieces_kept,
                stats.pieces_deleted
            );
            Ok(())
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn schedule(
    args: &ClusterArgs,
    volume: &str,
    t: &TargetArgs,
    every: &str,
    short: bool,
    keep: &KeepArgs,
    drill_every_ms: u64,
) -> anyhow::Result<()> {
    let every_ms = crate::duration::parse_ms(every).map_err(anyhow::Error::msg)?;
    if every_ms < EVERY_MIN_MS && !short {
        anyhow::bail!("--every {every}: backups are scheduled every 15m or more (--short allows less)");
    }
    if let Some(text) = &t.bandwidth {
        BandwidthSchedule::parse(text)?;
    }
    let kek = args.kek()?.ok_or(chuyi_backup::BackupError::NoKek)?;
    let target = TargetPath::parse(&t.target)?.to_string();
    let keys = S3Keys::from_env(t.profile.as_deref())?;
    // Opened once now, so a schedule is set only for a target that
    // answers with these keys and opens with this KEK.
    open(args, t, true).await?;
    let schedule = BackupSchedule {
        volume: volume.into(),
        target: target.clone(),
        endpoint: t.endpoint.clone(),
        region: t.region.clone(),
        access_key: keys.access_key.clone(),
        wrapped_secret: kek.wrap(keys.secret_key.as_bytes(), &secret_context(volume, &target)),
        every_ms,
        keep: keep.retention(),
        bandwidth: t.bandwidth.clone().unwrap_or_default(),
        drill_every_ms,
        run: Default::default(),
    };
    args.client()?.write(Request::SetBackupSchedule { schedule: Box::new(schedule) }).await?;
    println!(
        "volume {volume}: backed up to {target} every {} by the volume frontends{}",
        chuyi_meta_api::schedule::label(every_ms),
        if keep.retention().is_empty() { "; nothing pruned" } else { ", then pruned" }
    );
    Ok(())
}

async fn schedules(args: &ClusterArgs) -> anyhow::Result<()> {
    let all = args.client()?.ask(chuyi_meta_api::ask::BackupSchedules).await?;
    if args.json {
        let rows: Vec<_> = all
            .iter()
            .map(|s| {
                serde_json::json!({
                    "volume": s.volume, "target": s.target, "endpoint": s.endpoint, "every_ms": s.every_ms,
                    "keep": s.keep, "bandwidth": s.bandwidth, "drill_every_ms": s.drill_every_ms,
                    "claimed_by": s.run.claim.as_ref().map(|c| &c.holder), "last_ok_ms": s.run.last_ok_ms,
                    "last_backup": s.run.last_backup, "last_error": s.run.last_error.as_ref().map(|e| &e.1),
                    "last_drill_ms": s.run.last_drill_ms, "last_drill_passed": s.run.last_drill_passed,
                })
            })
            .collect();
        return print_json(&rows);
    }
    let mut table = Table::new(&["VOLUME", "TARGET", "EVERY", "LAST BACKUP", "RUNNING", "LAST ERROR", "DRILL"]);
    for s in &all {
        let drill = match s.run.last_drill_passed {
            None => "-".into(),
            Some(true) => "passed".into(),
            Some(false) => "FAILED".into(),
        };
        table.row(vec![
            s.volume.clone(),
            s.target.clone(),
            chuyi_meta_api::schedule::label(s.every_ms),
            s.run.last_backup.clone().unwrap_or_else(|| "-".into()),
            s.run.claim.as_ref().map_or("-".into(), |c| c.holder.clone()),
            s.run.last_error.as_ref().map_or("-".into(), |e| e.1.clone()),
            drill,
        ]);
    }
    table.print();
    Ok(())
}

async fn open(args: &ClusterArgs, t: &TargetArgs, create: bool) -> anyhow::Result<Arc<Repo>> {
    let kek = args.kek()?.ok_or(chuyi_backup::BackupError::NoKek)?;
    let keys = S3Keys::from_env(t.profile.as_deref())?;
    let options = S3Options {
        region: t.region.clone(),
        ca_file: t.ca_file.clone(),
        retry_for: Duration::from_millis(t.retry_for),
    };
    let s3 = S3::new(&t.endpoint, &keys, options)?;
    let path = TargetPath::parse(&t.target)?;
    Ok(Arc::new(Repo::open(s3, path, &kek, create).await.with_context(|| format!("opening {}", t.target))?))
}

fn throttle(t: &TargetArgs) -> anyhow::Result<Arc<Throttle>> {
    let schedule = match &t.bandwidth {
        Some(text) => BandwidthSchedule::parse(text)?,
        None => BandwidthSchedule::unlimited(),
    };
    Ok(Arc::new(Throttle::new(schedule)))
}

async fn connect(args: &ClusterArgs) -> anyhow::Result<Arc<Cluster>> {
    Ok(Cluster::connect(args.members()?, &args.admin()?, ClientConfig::default()).await?)
}

/// A bar of `what`: spans done of all, bytes, rate and ETA.
fn bar(what: &str, json: bool) -> ProgressBar {
    crate::progress::counting(what, "spans", json)
}

fn report(bar: &ProgressBar) -> impl Fn(u64, u64, u64) + Sync + '_ {
    let started = std::time::Instant::now();
    move |done, total, bytes| {
        bar.set_length(total);
        bar.set_position(done);
        let secs = started.elapsed().as_secs_f64().max(0.001);
        bar.set_message(format!("{} ({:.1} MB/s)", ByteSize(bytes).approx(), bytes as f64 / secs / 1e6));
    }
}

async fn create(args: &ClusterArgs, volume: &str, t: &TargetArgs, full: bool) -> anyhow::Result<()> {
    let kek = args.kek()?.ok_or(chuyi_backup::BackupError::NoKek)?;
    let cluster = connect(args).await?;
    let repo = open(args, t, true).await?;
    let options = CreateOptions { schedule: None, in_flight: t.in_flight, throttle: throttle(t)?, full };
    let bar = bar("backing up", args.json);
    let started = std::time::Instant::now();
    let created = chuyi_backup::create::create(&cluster, &repo, &kek, volume, &options, &report(&bar))
        .await
        .with_context(|| format!("backing up volume {volume} to {}", t.target))?;
    bar.finish_and_clear();
    let m = &created.manifest;
    if args.json {
        let mut shown = summary(m);
        shown["this_run"] = serde_json::json!(created.this_run);
        return print_json(&shown);
    }
    let s = &created.this_run;
    println!(
        "backup {} of volume {volume} ({}) done in {:.1} s: {} spans read ({}), {} pieces sent ({}), {} already there, {} holes",
        m.id,
        kind(m),
        started.elapsed().as_secs_f64(),
        s.spans_read,
        ByteSize(s.bytes_read).approx(),
        s.pieces_sent,
        ByteSize(s.bytes_sent).approx(),
        s.pieces_reused,
        s.holes
    );
    Ok(())
}

fn kind(m: &Manifest) -> String {
    match &m.parent {
        Some(p) => format!("incremental on {p}"),
        None => "full".into(),
    }
}

/// What `--json` shows of a backup.
fn summary(m: &Manifest) -> serde_json::Value {
    serde_json::json!({
        "id": m.id,
        "volume": m.volume,
        "volume_bytes": m.volume_bytes,
        "encrypted": m.encrypted,
        "snapshot": m.snapshot,
        "parent": m.parent,
        "schedule": m.schedule,
        "started_ms": m.started_ms,
        "finished_ms": m.finished_ms,
        "data_bytes": m.data_bytes(),
        "spans": m.pieces.len(),
        "image_hash": hex(&m.image_hash),
        "stats": m.stats,
    })
}

fn show(m: &Manifest, drill: Option<&catalog::Drill>) {
    let s = &m.stats;
    println!("backup      : {}", m.id);
    println!(
        "volume      : {} ({}{})",
        m.volume,
        ByteSize(m.volume_bytes),
        if m.encrypted { ", encrypted" } else { "" }
    );
    println!("kind        : {}", kind(m));
    println!("snapshot    : {}", m.snapshot);
    println!("took        : {:.1} s", m.finished_ms.saturating_sub(m.started_ms) as f64 / 1000.0);
    println!("data        : {} in {} spans", ByteSize(m.data_bytes()).approx(), m.pieces.iter().flatten().count());
    println!("changed     : {}", ByteSize(s.changed_bytes).approx());
    println!(
        "transfer    : {} read, {} pieces sent ({}), {} already there, {} holes",
        ByteSize(s.bytes_read).approx(),
        s.pieces_sent,
        ByteSize(s.bytes_sent).approx(),
        s.pieces_reused,
        s.holes
    );
    println!("image hash  : {}", hex(&m.image_hash));
    println!("drill       : {}", drill_text(drill));
}

fn drill_text(drill: Option<&catalog::Drill>) -> String {
    match drill {
        None => "-".into(),
        Some(d) if d.passed() => format!("passed {}", chuyi_backup::manifest::utc_stamp(d.checked_ms)),
        Some(d) => format!("FAILED {} ({} bad spans)", chuyi_backup::manifest::utc_stamp(d.checked_ms), d.bad.len()),
    }
}

async fn list(args: &ClusterArgs, t: &TargetArgs, volume: Option<&str>) -> anyhow::Result<()> {
    let repo = open(args, t, false).await?;
    let wanted = |v: &str| volume.is_none_or(|only| only == v);
    let mut rows = Vec::new();
    for (v, id) in catalog::complete(&repo).await?.into_iter().filter(|(v, _)| wanted(v)) {
        let m = match catalog::manifest(&repo, &v, &id).await {
            Ok(m) => m,
            // Pruned since it was listed (a schedule prunes as it runs).
            Err(chuyi_backup::BackupError::NotFound(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        let drill = catalog::drill(&repo, &v, &id).await?;
        rows.push((m, drill));
    }
    let pending: Vec<(String, String)> =
        catalog::pending(&repo).await?.into_iter().filter(|(v, _)| wanted(v)).collect();
    if args.json {
        let backups: Vec<_> = rows
            .iter()
            .map(|(m, d)| serde_json::json!({ "backup": summary(m), "drill": d, "drill_passed": d.as_ref().map(|d| d.passed()) }))
            .collect();
        let pending: Vec<_> = pending.iter().map(|(v, id)| serde_json::json!({ "volume": v, "id": id })).collect();
        return print_json(
            &serde_json::json!({ "target": repo.path.to_string(), "backups": backups, "under_way": pending }),
        );
    }
    let mut table = Table::new(&["VOLUME", "BACKUP", "KIND", "DATA", "SENT", "DRILL"]);
    for (m, d) in &rows {
        let kind = if m.parent.is_some() { "incremental" } else { "full" };
        table.row(vec![
            m.volume.clone(),
            m.id.clone(),
            kind.into(),
            ByteSize(m.data_bytes()).approx().to_string(),
            ByteSize(m.stats.bytes_sent).approx().to_string(),
            drill_text(d.as_ref()),
        ]);
    }
    for (v, id) in &pending {
        table.row(vec![v.clone(), id.clone(), "under way".into(), "-".into(), "-".into(), "-".into()]);
    }
    table.print();
    Ok(())
}

async fn verify(args: &ClusterArgs, backup: &str, t: &TargetArgs) -> anyhow::Result<()> {
    let repo = open(args, t, false).await?;
    let m = catalog::find(&repo, backup).await?;
    let bar = bar("verifying", args.json);
    let drill = chuyi_backup::verify::verify(&repo, &m, t.in_flight, &*throttle(t)?, &report(&bar)).await?;
    bar.finish_and_clear();
    if args.json {
        print_json(
            &serde_json::json!({ "backup": m.id, "volume": m.volume, "passed": drill.passed(), "drill": drill }),
        )?;
    } else {
        println!(
            "backup {} of volume {}: {} pieces ({}) read back, {} bad, image hash {}",
            m.id,
            m.volume,
            drill.pieces_checked,
            ByteSize(drill.bytes_checked).approx(),
            drill.bad.len(),
            if drill.image_hash_ok { "matches" } else { "DIFFERS" }
        );
        for (span, why) in drill.bad.iter().take(20) {
            println!("  span {span}: {why}");
        }
    }
    if !drill.passed() {
        anyhow::bail!("backup {} failed its drill", m.id);
    }
    Ok(())
}

async fn restore(
    args: &ClusterArgs,
    backup: &str,
    to: &str,
    pool: &str,
    overwrite: bool,
    t: &TargetArgs,
) -> anyhow::Result<()> {
    let kek = args.kek()?.ok_or(chuyi_backup::BackupError::NoKek)?;
    let cluster = connect(args).await?;
    let repo = open(args, t, false).await?;
    let m = catalog::find(&repo, backup).await?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let options = RestoreOptions {
        pool: pool.into(),
        overwrite,
        in_flight: t.in_flight,
        throttle: throttle(t)?,
        holder: format!("restore-{}", host.trim()),
    };
    let bar = bar("restoring", args.json);
    let started = std::time::Instant::now();
    let stats = chuyi_backup::restore::restore(&cluster, &repo, &kek, &m, to, &options, &report(&bar))
        .await
        .with_context(|| format!("restoring backup {} into volume {to}", m.id))?;
    bar.finish_and_clear();
    if args.json {
        return print_json(&serde_json::json!({ "backup": m.id, "volume": to, "stats": stats }));
    }
    println!(
        "backup {} of {} restored into {to}{} in {:.1} s: {} pieces fetched ({}), {} spans already so, {} zeroed",
        m.id,
        m.volume,
        if stats.created { " (created)" } else { "" },
        started.elapsed().as_secs_f64(),
        stats.fetched,
        ByteSize(stats.fetched_bytes).approx(),
        stats.already,
        stats.zeroed
    );
    Ok(())
}
