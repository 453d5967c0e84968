//! `chuyi bucket list|info|lifecycle`: the S3 buckets as the metadata
//! service keeps them, with their owner, versioning, pool and what they
//! hold, and what their lifecycle rules would do (a dry run).

use chuyi_common::size::ByteSize;
use chuyi_meta_api::ask;
use chuyi_metadata::client::MetaClient;
use chuyi_metadata::state::model::{Bucket, BucketUsage, Versioning};
use chuyi_s3::lifecycle;
use serde::Serialize;

use crate::admin::print_json;
use crate::cluster::ClusterArgs;
use crate::table::Table;

#[derive(Debug, clap::Subcommand)]
pub enum BucketCmd {
    /// Every bucket, with its owner, versioning, objects and bytes.
    List,
    /// One bucket in full.
    Info { name: String },
    /// What the bucket's lifecycle rules would do now, or `--days-ahead`
    /// days from now: a dry run, nothing is changed.
    Lifecycle {
        name: String,
        #[arg(long, default_value_t = 0)]
        days_ahead: u32,
    },
}

#[derive(Serialize)]
struct Shown<'a> {
    name: &'a str,
    owner: &'a str,
    pool: &'a str,
    versioning: &'static str,
    created_ms: u64,
    /// Versions that are not delete markers.
    objects: u64,
    bytes: u64,
}

fn versioning(v: Versioning) -> &'static str {
    match v {
        Versioning::Unset => "unversioned",
        Versioning::Enabled => "enabled",
        Versioning::Suspended => "suspended",
    }
}

fn shown<'a>(b: &'a Bucket, usage: BucketUsage) -> Shown<'a> {
    Shown {
        name: &b.name,
        owner: &b.owner,
        pool: &b.pool,
        versioning: versioning(b.versioning),
        created_ms: b.created_ms,
        objects: usage.objects,
        bytes: usage.bytes,
    }
}

async fn usage(client: &MetaClient, name: &str) -> anyhow::Result<BucketUsage> {
    Ok(client.ask(ask::BucketUsage(name.into())).await?)
}

pub async fn run(args: &ClusterArgs, cmd: BucketCmd) -> anyhow::Result<()> {
    let client = args.client()?;
    match cmd {
        BucketCmd::List => {
            let buckets = client.ask(ask::Buckets).await?;
            let mut usages = Vec::with_capacity(buckets.len());
            for b in &buckets {
                usages.push(usage(&client, &b.name).await?);
            }
            let rows: Vec<Shown<'_>> = buckets.iter().zip(usages).map(|(b, u)| shown(b, u)).collect();
            if args.json {
                return print_json(&rows);
            }
            let mut t = Table::new(&["BUCKET", "OWNER", "POOL", "VERSIONING", "OBJECTS", "SIZE"]);
            for r in rows {
                t.row(vec![
                    r.name.into(),
                    r.owner.into(),
                    r.pool.into(),
                    r.versioning.into(),
                    r.objects.to_string(),
                    ByteSize(r.bytes).to_string(),
                ]);
            }
            t.print();
        }
        BucketCmd::Info { name } => {
            let bucket = client.ask(ask::Bucket(name.clone())).await?;
            let row = shown(&bucket, usage(&client, &name).await?);
            if args.json {
                return print_json(&row);
            }
            println!("bucket     {}", row.name);
            println!("owner      {}", row.owner);
            println!("pool       {}", row.pool);
            println!("versioning {}", row.versioning);
            println!("objects    {} (versions, delete markers not counted)", row.objects);
            println!("size       {} ({} bytes)", ByteSize(row.bytes), row.bytes);
        }
        BucketCmd::Lifecycle { name, days_ahead } => {
            client.ask(ask::Bucket(name.clone())).await?;
            let at_ms = chuyi_common::clock::unix_ms() + u64::from(days_ahead) * DAY_MS;
            let planned = lifecycle::pass(&client, None, Some(&name), at_ms, DAY_MS, lifecycle::Mode::DryRun).await?;
            if args.json {
                return print_json(&planned);
            }
            let mut t = Table::new(&["CHANGE", "KEY", "VERSION, SEQUENCE OR UPLOAD"]);
            for p in &planned {
                t.row(vec![p.change.into(), p.key.clone(), p.what.clone()]);
            }
            t.print();
            println!("{} change(s) lifecycle would make (a dry run: nothing changed)", planned.len());
        }
    }
    Ok(())
}

/// A lifecycle day, as the gateways count it.
const DAY_MS: u64 = 86_400_000;
