//! `chuyi bucket list|info|set|lifecycle`: the S3 buckets as the metadata
//! service keeps them, with their owner, versioning, pool, compression,
//! default encryption and what they hold (as sent and as stored), their
//! settings, and what their lifecycle rules would do (a dry run).

use anyhow::bail;
use chuyi_common::size::ByteSize;
use chuyi_meta_api::ask;
use chuyi_metadata::client::MetaClient;
use chuyi_metadata::state::model::{Bucket, BucketConfigKind, BucketUsage};
use chuyi_metadata::state::Request;
use chuyi_s3::admin::BucketInfo;
use chuyi_s3::lifecycle;
use indicatif::{ProgressBar, ProgressStyle};

use crate::admin::print_json;
use crate::cluster::ClusterArgs;
use crate::table::Table;

#[derive(Debug, clap::Subcommand)]
pub enum BucketCmd {
    /// Every bucket, with its owner, versioning, objects and bytes.
    List,
    /// One bucket in full: with its bytes as sent and as stored, and the
    /// compression ratio.
    Info { name: String },
    /// Changes a bucket's settings; they apply to what is written from
    /// then on, by every gateway within seconds.
    Set {
        name: String,
        /// `capacity` (zstd: the best ratio), `performance` (lz4: the
        /// least CPU) or `off`.
        #[arg(long)]
        compression: Option<String>,
        /// Server-side encryption of new objects that ask for none: `sm4`
        /// (SM4-GCM), `aes256` (AES-256-GCM) or `off`; the same as S3's
        /// PutBucketEncryption. The bucket's key is made by the first
        /// gateway that writes an encrypted object.
        #[arg(long)]
        encryption: Option<String>,
    },
    /// What the bucket's lifecycle rules would do now, or `--days-ahead`
    /// days from now: a dry run, nothing is changed.
    Lifecycle {
        name: String,
        #[arg(long, default_value_t = 0)]
        days_ahead: u32,
    },
}

/// What the bucket holds, and its default encryption, for [`BucketInfo`].
async fn usage(client: &MetaClient, name: &str) -> anyhow::Result<(BucketUsage, Option<Vec<u8>>)> {
    let usage = client.ask(ask::BucketUsage(name.into())).await?;
    let encryption = client.ask(ask::BucketConfig { bucket: name.into(), kind: BucketConfigKind::Encryption }).await?;
    Ok((usage, encryption))
}

fn info(bucket: &Bucket, (usage, encryption): (BucketUsage, Option<Vec<u8>>)) -> BucketInfo {
    BucketInfo::new(bucket, usage, encryption.as_deref())
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
            let rows: Vec<BucketInfo> = buckets.iter().zip(usages).map(|(b, u)| info(b, u)).collect();
            if args.json {
                return print_json(&rows);
            }
            let mut t = Table::new(&[
                "BUCKET",
                "OWNER",
                "POOL",
                "VERSIONING",
                "OBJECTS",
                "SIZE",
                "STORED",
                "COMPRESSION",
                "ENCRYPTION",
            ]);
            for r in rows {
                t.row(vec![
                    r.name.clone(),
                    r.owner.clone(),
                    r.pool.clone(),
                    r.versioning.clone(),
                    r.objects.to_string(),
                    ByteSize(r.bytes).to_string(),
                    ByteSize(r.stored_bytes).to_string(),
                    format!("{} ({:.2}x)", r.compression, r.ratio),
                    r.encryption.clone(),
                ]);
            }
            t.print();
        }
        BucketCmd::Info { name } => {
            let bucket = client.ask(ask::Bucket(name.clone())).await?;
            let row = info(&bucket, usage(&client, &name).await?);
            if args.json {
                return print_json(&row);
            }
            println!("bucket     {}", row.name);
            println!("owner      {}", row.owner);
            println!("pool       {}", row.pool);
            println!("versioning {}", row.versioning);
            println!("objects    {} (versions, delete markers not counted)", row.objects);
            println!("size       {} ({} bytes)", ByteSize(row.bytes), row.bytes);
            println!("compression {}", row.compression);
            println!("encryption {}", row.encryption);
            println!("stored     {} ({} bytes per replica)", ByteSize(row.stored_bytes), row.stored_bytes);
            println!("saved      {} ({} bytes), ratio {:.2}", ByteSize(row.saved_bytes), row.saved_bytes, row.ratio);
        }
        BucketCmd::Set { name, compression, encryption } => {
            let mut bucket = client.ask(ask::Bucket(name.clone())).await?;
            if let Some(encryption) = encryption {
                let document = match encryption.as_str() {
                    "sm4" => Some(b"SM4".to_vec()),
                    "aes256" => Some(b"AES256".to_vec()),
                    "off" => None,
                    other => bail!("unknown encryption {other:?}: use sm4, aes256 or off"),
                };
                let kind = BucketConfigKind::Encryption;
                client.write(Request::SetBucketConfig { bucket: name.clone(), kind, document }).await?;
            }
            if let Some(policy) = compression {
                bucket.settings.compression = match policy.as_str() {
                    "capacity" | "performance" => Some(policy),
                    "off" => None,
                    other => bail!("unknown compression {other:?}: use capacity, performance or off"),
                };
            }
            let settings = bucket.settings.clone();
            client.write(Request::SetBucketSettings { bucket: name.clone(), settings }).await?;
            let row = info(&bucket, usage(&client, &name).await?);
            if args.json {
                return print_json(&row);
            }
            println!(
                "bucket {name}: compression {}, encryption {} for what is written from now on",
                row.compression, row.encryption
            );
        }
        BucketCmd::Lifecycle { name, days_ahead } => {
            client.ask(ask::Bucket(name.clone())).await?;
            let at_ms = chuyi_common::clock::unix_ms() + u64::from(days_ahead) * DAY_MS;
            let bar = Bar::new(args.json);
            let dry_run = lifecycle::Mode::DryRun;
            let planned = lifecycle::pass(&client, None, Some(&name), at_ms, DAY_MS, dry_run, &bar).await?;
            bar.0.finish_and_clear();
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

/// The dry run's progress bar: versions looked at of those the bucket
/// holds, with the changes found so far.
struct Bar(ProgressBar);

impl Bar {
    fn new(hidden: bool) -> Self {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("lifecycle dry run {bar:40} {pos}/{len} versions {percent}% {per_sec} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        if hidden {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        Self(bar)
    }
}

#[async_trait::async_trait]
impl lifecycle::Watch for Bar {
    async fn seen(&self, _bucket: &str, progress: &lifecycle::Progress) {
        self.0.set_length(progress.total.max(progress.scanned));
        self.0.set_position(progress.scanned);
        self.0.set_message(format!("{} change(s)", progress.changes));
    }
}

/// A lifecycle day, as the gateways count it.
const DAY_MS: u64 = 86_400_000;
