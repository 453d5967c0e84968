//! `chuyi key generate|rotate`: the master key (KEK) of encrypted volumes
//! and of the buckets' server-side encryption keys.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::Context;
use chuyi_common::sm4::{generate_kek_hex, is_wrapped_under, load_kek, rewrap_volume_key};
use chuyi_meta_api::ask;
use chuyi_metadata::state::Request;
use chuyi_s3::encryption::{unwrap_bucket_key, wrap_bucket_key};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cluster::ClusterArgs;

#[derive(Debug, clap::Subcommand)]
pub enum KeyCmd {
    /// Write a fresh random KEK (32 hex digits) to FILE, readable by its
    /// owner only; refuses to overwrite one.
    Generate { file: PathBuf },
    /// Re-wrap every encrypted volume's key and every bucket's
    /// server-side encryption key under the KEK in NEW_KEK_FILE (the
    /// current KEK, from --kek-file or the config, opens them). No data is
    /// touched: one record per volume or bucket, whatever they hold. Run it
    /// again to finish an interrupted rotation. Frontends must be given the
    /// new KEK before they next attach, gateways before they next start.
    Rotate {
        #[arg(long, value_name = "NEW_KEK_FILE")]
        new_kek_file: PathBuf,
    },
}

pub async fn run(args: &ClusterArgs, cmd: KeyCmd) -> anyhow::Result<()> {
    match cmd {
        KeyCmd::Generate { file } => generate(&file),
        KeyCmd::Rotate { new_kek_file } => rotate(args, &new_kek_file).await,
    }
}

fn generate(file: &std::path::Path) -> anyhow::Result<()> {
    write_new_kek(file)?;
    println!("a new master key (KEK) is in {}; keep a copy off the cluster's disks", file.display());
    Ok(())
}

/// Creates `file` (it must not exist) with a fresh KEK, readable by its
/// owner only from the start.
pub fn write_new_kek(file: &std::path::Path) -> anyhow::Result<()> {
    write_private(file, &generate_kek_hex())
}

/// Creates `file` (it must not exist) holding `text` and a newline,
/// readable by its owner only from the start, and syncs it.
pub fn write_private(file: &std::path::Path, text: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("creating {}", file.display()))?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    Ok(())
}

async fn rotate(args: &ClusterArgs, new_file: &std::path::Path) -> anyhow::Result<()> {
    let old = args.kek()?.context("rotating needs the current KEK: --kek-file, $CHUYI_KEK_FILE or kek_file")?;
    let new = load_kek(Some(new_file))?.context("no new KEK")?;
    let meta = args.client()?;
    let volumes = meta.ask(ask::Volumes).await?;
    let encrypted: Vec<_> = volumes.into_iter().filter(|v| !v.wrapped_key.is_empty()).collect();
    let buckets = meta.ask(ask::Buckets).await?;
    let keyed: Vec<_> = buckets.into_iter().filter(|b| b.settings.wrapped_key.is_some()).collect();
    let bar = ProgressBar::new((encrypted.len() + keyed.len()) as u64);
    bar.set_style(
        ProgressStyle::with_template("re-wrapping volume and bucket keys {bar:40} {pos}/{len} {percent}%")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if args.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let (mut rewrapped, mut already) = (0, 0);
    for v in &encrypted {
        if is_wrapped_under(&new, &v.name, &v.wrapped_key) {
            already += 1;
        } else {
            let wrapped = rewrap_volume_key(&old, &new, &v.name, &v.wrapped_key)?;
            let command = Request::RewrapVolumeKey { name: v.name.clone(), old: v.wrapped_key.clone(), new: wrapped };
            meta.write(command).await.with_context(|| format!("storing volume {}'s re-wrapped key", v.name))?;
            rewrapped += 1;
        }
        bar.inc(1);
    }
    let (mut buckets_rewrapped, mut buckets_already) = (0, 0);
    for b in &keyed {
        let Some(wrapped) = b.settings.wrapped_key.clone() else { continue };
        if unwrap_bucket_key(&new, b, &wrapped).is_ok() {
            buckets_already += 1;
        } else {
            let key = unwrap_bucket_key(&old, b, &wrapped)
                .map_err(|e| anyhow::anyhow!("bucket {}'s key does not open with the current KEK: {e}", b.name))?;
            let command = Request::SetBucketKey {
                bucket: b.name.clone(),
                old: Some(wrapped),
                new: wrap_bucket_key(&new, b, &key),
            };
            meta.write(command).await.with_context(|| format!("storing bucket {}'s re-wrapped key", b.name))?;
            buckets_rewrapped += 1;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if args.json {
        let json = serde_json::json!({
            "rewrapped": rewrapped,
            "already_under_new_kek": already,
            "buckets_rewrapped": buckets_rewrapped,
            "buckets_already_under_new_kek": buckets_already,
        });
        println!("{json}");
    } else {
        println!("{rewrapped} volume keys re-wrapped under the new KEK ({already} already were)");
        println!("{buckets_rewrapped} bucket keys re-wrapped under the new KEK ({buckets_already} already were)");
    }
    Ok(())
}
