//! `chuyi snapshot create|list|info|delete|rename|rollback`: points in time
//! of a volume, kept by the storage nodes' clones (chuyi-client's
//! `snapshot` takes, deletes and rolls back; ARCHITECTURE.md, "Snapshots").

use anyhow::Context;
use chuyi_client::{ClientConfig, Cluster};
use chuyi_meta_api::ask;
use chuyi_meta_api::model::Snapshot;
use chuyi_meta_api::order;
use chuyi_meta_api::schedule::{ScheduleScope, SnapshotSchedule};
use chuyi_meta_api::Request;

use crate::admin::print_json;
use crate::cluster::ClusterArgs;
use crate::duration;
use crate::progress;
use crate::table::Table;

#[derive(Debug, clap::Subcommand)]
pub enum SnapshotCmd {
    /// Takes a crash-consistent snapshot of a volume, attached or not: no
    /// data is copied, whatever the volume's size.
    Create {
        volume: String,
        name: String,
    },
    /// A volume's snapshots, oldest first.
    List {
        volume: String,
    },
    /// One snapshot.
    Info {
        volume: String,
        name: String,
    },
    /// Deletes a snapshot; the space only it held is freed on every node.
    Delete {
        volume: String,
        name: String,
    },
    Rename {
        volume: String,
        from: String,
        to: String,
    },
    /// Puts a detached volume back as the snapshot saw it (refused while
    /// the volume is attached). Newer snapshots are kept.
    Rollback {
        volume: String,
        name: String,
    },
    /// The byte ranges that differ between snapshot FROM and snapshot TO
    /// (without TO: the volume now), from the nodes' clones: chunks not
    /// written since FROM read nothing.
    Diff {
        volume: String,
        from: String,
        to: Option<String>,
    },
    /// Takes a snapshot of VOLUME (or, with --pool, of each volume of the
    /// pool) every interval, run by the cluster's volume frontends, and
    /// keeps the newest --keep it took; --keep 0 removes the schedule (its
    /// snapshots stay). A slot missed while the cluster was down is taken
    /// once on return.
    Schedule {
        volume: Option<String>,
        #[arg(long, conflicts_with = "volume")]
        pool: Option<String>,
        /// "15m", "1h", "24h", "7d": 15 minutes at least.
        #[arg(long)]
        every: String,
        #[arg(long)]
        keep: u32,
        /// Allow intervals under 15 minutes (down to 1 s; tests, demos).
        #[arg(long)]
        short: bool,
    },
    /// Every snapshot schedule.
    Schedules,
}

/// The shortest interval `schedule` takes without `--short`.
const EVERY_MIN_MS: u64 = 15 * 60_000;

pub async fn run(args: &ClusterArgs, cmd: SnapshotCmd) -> anyhow::Result<()> {
    match cmd {
        SnapshotCmd::Create { volume, name } => {
            let cluster = connect(args).await?;
            let snapshot = chuyi_client::snapshot::create(&cluster, &volume, &name)
                .await
                .with_context(|| format!("taking snapshot {name} of volume {volume}"))?;
            show_one(args, &volume, &snapshot)
        }
        SnapshotCmd::List { volume } => {
            let snapshots = args.client()?.ask(ask::Snapshots(volume.clone())).await?;
            if args.json {
                return print_json(
                    &serde_json::json!({ "volume": volume, "seq": snapshots.seq, "snapshots": snapshots.snapshots }),
                );
            }
            let now = chuyi_common::clock::unix_ms();
            let mut t = Table::new(&["NAME", "ID", "TAKEN", "BY"]);
            for s in &snapshots.snapshots {
                t.row(vec![s.name.clone(), s.id.to_string(), ago(now, s.created_ms), by(s)]);
            }
            t.print();
            Ok(())
        }
        SnapshotCmd::Info { volume, name } => {
            let cluster = connect(args).await?;
            let snapshot = chuyi_client::snapshot::find(&cluster, &volume, &name).await?;
            show_one(args, &volume, &snapshot)
        }
        SnapshotCmd::Delete { volume, name } => {
            let cluster = connect(args).await?;
            let left = chuyi_client::snapshot::delete(&cluster, &volume, &name)
                .await
                .with_context(|| format!("deleting snapshot {name} of volume {volume}"))?;
            if args.json {
                return print_json(&serde_json::json!({ "deleted": name, "left": left.snapshots.len() }));
            }
            println!("snapshot {volume}@{name} deleted; {} left", left.snapshots.len());
            Ok(())
        }
        SnapshotCmd::Rename { volume, from, to } => {
            let rename = order::RenameSnapshot { volume: volume.clone(), from: from.clone(), to: to.clone() };
            args.client()?.order(rename).await?;
            println!("snapshot {volume}@{from} renamed {to}");
            Ok(())
        }
        SnapshotCmd::Rollback { volume, name } => rollback(args, &volume, &name).await,
        SnapshotCmd::Diff { volume, from, to } => diff(args, &volume, &from, to.as_deref()).await,
        SnapshotCmd::Schedule { volume, pool, every, keep, short } => {
            let every_ms = duration::parse_ms(&every).map_err(anyhow::Error::msg)?;
            if every_ms < EVERY_MIN_MS && !short {
                anyhow::bail!("--every {every}: snapshots are scheduled every 15m or more (--short allows less)");
            }
            let scope = match (volume, pool) {
                (Some(volume), None) => ScheduleScope::Volume(volume),
                (None, Some(pool)) => ScheduleScope::Pool(pool),
                _ => anyhow::bail!("name a volume, or a pool with --pool"),
            };
            let schedule = SnapshotSchedule { every_ms, keep };
            args.client()?.write(Request::SetSnapshotSchedule { scope: scope.clone(), schedule }).await?;
            let what = match &scope {
                ScheduleScope::Volume(v) => format!("volume {v}"),
                ScheduleScope::Pool(p) => format!("every volume of pool {p}"),
            };
            match keep {
                0 => println!("the {} schedule of {what} removed; its snapshots stay", schedule.label()),
                _ => println!("{what}: a snapshot every {}, the newest {keep} kept", schedule.label()),
            }
            Ok(())
        }
        SnapshotCmd::Schedules => {
            let all = args.client()?.ask(ask::SnapshotSchedules).await?;
            if args.json {
                let rows: Vec<_> = all
                    .iter()
                    .map(|(scope, s)| serde_json::json!({ "scope": scope, "every_ms": s.every_ms, "keep": s.keep }))
                    .collect();
                return print_json(&serde_json::json!(rows));
            }
            let mut t = Table::new(&["SCOPE", "EVERY", "KEEP"]);
            for (scope, s) in &all {
                let scope = match scope {
                    ScheduleScope::Volume(v) => format!("volume {v}"),
                    ScheduleScope::Pool(p) => format!("pool {p}"),
                };
                t.row(vec![scope, s.label(), s.keep.to_string()]);
            }
            t.print();
            Ok(())
        }
    }
}

async fn connect(args: &ClusterArgs) -> anyhow::Result<std::sync::Arc<Cluster>> {
    Ok(Cluster::connect(args.members()?, &args.admin()?, ClientConfig::default()).await?)
}

async fn diff(args: &ClusterArgs, volume: &str, from: &str, to: Option<&str>) -> anyhow::Result<()> {
    let cluster = connect(args).await?;
    let from_id = chuyi_client::snapshot::find(&cluster, volume, from).await?.id;
    let to_id = match to {
        Some(to) => Some(chuyi_client::snapshot::find(&cluster, volume, to).await?.id),
        None => None,
    };
    let vol = cluster.open_volume(volume).await?;
    let ranges = vol.diff(Some(from_id), to_id).await.with_context(|| format!("comparing {volume}@{from}"))?;
    let changed: u64 = ranges.iter().map(|(_, len)| len).sum();
    if args.json {
        let ranges: Vec<_> =
            ranges.iter().map(|(offset, length)| serde_json::json!({ "offset": offset, "length": length })).collect();
        let shown =
            serde_json::json!({ "volume": volume, "from": from, "to": to, "changed_bytes": changed, "ranges": ranges });
        return print_json(&shown);
    }
    let mut t = Table::new(&["OFFSET", "LENGTH"]);
    for (offset, length) in &ranges {
        t.row(vec![offset.to_string(), length.to_string()]);
    }
    t.print();
    let to_shown = to.map_or_else(|| "now".to_string(), |t| format!("@{t}"));
    let size = chuyi_common::size::ByteSize(changed);
    println!("{volume}@{from} -> {to_shown}: {size} changed in {} ranges", ranges.len());
    Ok(())
}

async fn rollback(args: &ClusterArgs, volume: &str, name: &str) -> anyhow::Result<()> {
    let cluster = connect(args).await?;
    let bar = progress::chunks("rolling back", args.json);
    let report = progress::report(&bar);
    let holder = format!("rollback:{}", std::process::id());
    let rolled = chuyi_client::snapshot::rollback(&cluster, volume, name, &holder, &report).await;
    bar.finish_and_clear();
    let snapshot = match rolled {
        Ok(snapshot) => snapshot,
        Err(chuyi_client::ClientError::Meta(chuyi_meta_api::MetaError::LeaseHeld { holder, .. })) => {
            anyhow::bail!(
                "volume {volume} is attached by {holder}: detach it (stop its NBD clients) before rolling it back"
            )
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!("rolling volume {volume} back to {name} (run it again to finish: each chunk is copied whole)")
            })
        }
    };
    if args.json {
        return print_json(&serde_json::json!({ "volume": volume, "rolled_back_to": snapshot }));
    }
    println!(
        "volume {volume} rolled back to snapshot {name} (taken {})",
        ago(chuyi_common::clock::unix_ms(), snapshot.created_ms)
    );
    Ok(())
}

fn show_one(args: &ClusterArgs, volume: &str, s: &Snapshot) -> anyhow::Result<()> {
    if args.json {
        return print_json(&serde_json::json!({ "volume": volume, "snapshot": s }));
    }
    println!("snapshot {volume}@{}", s.name);
    println!("  id     {}", s.id);
    println!("  taken  {}", ago(chuyi_common::clock::unix_ms(), s.created_ms));
    println!("  by     {}", by(s));
    Ok(())
}

fn ago(now: u64, ms: u64) -> String {
    format!("{} ago", duration::show(now.saturating_sub(ms) / 1000 * 1000))
}

fn by(s: &Snapshot) -> String {
    s.schedule.clone().map_or("hand".into(), |sched| format!("schedule {sched}"))
}
