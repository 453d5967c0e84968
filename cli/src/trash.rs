//! `chuyi trash list|restore|purge|retention`: the recycle bin of deleted
//! volumes (`chuyi volume delete` moves a volume into it; `--now` purges
//! at once). The purge itself is chuyi-client's `trash`, which frontends
//! also run for what is due.

use anyhow::Context;
use chuyi_client::{ClientConfig, Cluster};
use chuyi_common::size::ByteSize;
use chuyi_meta_api::ask;
use chuyi_meta_api::model::TrashEntry;
use chuyi_metadata::state::Request;

use crate::admin::print_json;
use crate::cluster::ClusterArgs;
use crate::duration;
use crate::progress;
use crate::table::Table;

#[derive(Debug, clap::Subcommand)]
pub enum TrashCmd {
    /// Every deleted volume, when it was deleted and when it will be purged.
    List,
    /// Brings a deleted volume back as it was (data, key, size).
    Restore { name: String },
    /// Frees a deleted volume now (every one, without a name): its key is
    /// destroyed and every chunk freed on every replica.
    Purge { name: Option<String> },
    /// Shows, or with a duration sets, how long deleted volumes stay in
    /// the bin ("7d", "36h"; for those deleted from then on).
    Retention { duration: Option<String> },
}

pub async fn run(args: &ClusterArgs, cmd: TrashCmd) -> anyhow::Result<()> {
    let meta = args.client()?;
    match cmd {
        TrashCmd::List => {
            let (retention, entries) = meta.ask(ask::Trash).await?;
            if args.json {
                return print_json(&serde_json::json!({ "retention_ms": retention, "volumes": entries }));
            }
            let now = chuyi_common::clock::unix_ms();
            let mut t = Table::new(&["VOLUME", "POOL", "SIZE", "DELETED", "PURGED IN"]);
            for e in &entries {
                t.row(vec![
                    e.volume.name.clone(),
                    e.volume.pool.clone(),
                    ByteSize(e.volume.size_bytes).to_string(),
                    format!("{} ago", duration::show(now.saturating_sub(e.deleted_ms) / 1000 * 1000)),
                    purged_in(e, now),
                ]);
            }
            t.print();
            println!("deleted volumes stay {} unless deleted with --retain", duration::show(retention));
        }
        TrashCmd::Restore { name } => {
            meta.write(Request::RestoreVolume { name: name.clone() }).await?;
            println!("volume {name} restored");
        }
        TrashCmd::Purge { name } => {
            let names = match name {
                Some(name) => vec![name],
                None => meta.ask(ask::Trash).await?.1.into_iter().map(|e| e.volume.name).collect(),
            };
            for name in names {
                purge(args, &name, true).await?;
            }
        }
        TrashCmd::Retention { duration: None } => {
            let (retention, _) = meta.ask(ask::Trash).await?;
            println!("deleted volumes stay {} in the recycle bin", duration::show(retention));
        }
        TrashCmd::Retention { duration: Some(d) } => {
            let retain_ms = duration::parse_ms(&d).map_err(anyhow::Error::msg)?;
            meta.write(Request::SetTrashRetention { retain_ms }).await?;
            println!("volumes deleted from now on stay {} in the recycle bin", duration::show(retain_ms));
        }
    }
    Ok(())
}

fn purged_in(e: &TrashEntry, now: u64) -> String {
    match e.purging {
        Some(_) => "being purged".into(),
        None => duration::show(e.purge_at_ms.saturating_sub(now) / 1000 * 1000),
    }
}

/// Purges `name` (before its time if `force`) with a progress bar.
pub async fn purge(args: &ClusterArgs, name: &str, force: bool) -> anyhow::Result<u64> {
    let cluster = Cluster::connect(args.members()?, &args.admin()?, ClientConfig::default()).await?;
    let bar = progress::chunks("freeing", args.json);
    let report = progress::report(&bar);
    let chunks = chuyi_client::trash::purge(&cluster, name, force, &report)
        .await
        .with_context(|| format!("purging volume {name} (chuyi trash purge {name} resumes it; so will the cluster)"))?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::json!({ "purged": name, "chunks_freed": chunks }));
    } else {
        println!("volume {name} purged; {chunks} chunks freed on every replica");
    }
    Ok(chunks)
}
