//! `chuyi qos set|list|delete|status`: QoS rules for S3 users and buckets
//! and for volumes and pools' volumes, and what the frontends did under
//! them lately. The volume side is also `chuyi volume create|set --iops
//! --mbps --burst` (volume.rs), through [`VolumeQosArgs`].

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use chuyi_common::size::ByteSize;
use chuyi_meta_api::ask;
use chuyi_meta_api::qos::{Dimension, QosCounters, QosLimits, QosRule, QosScope, RuleStatus, DEFAULT_BURST_MS};
use chuyi_metadata::client::MetaClient;
use chuyi_metadata::state::Request;
use serde::Serialize;

use crate::admin::print_json;
use crate::cluster::ClusterArgs;
use crate::table::Table;

#[derive(Debug, clap::Subcommand)]
pub enum QosCmd {
    /// Sets the rule of a user, a bucket, a user on a bucket, a volume or
    /// each volume of a pool. Rates not given keep the rule's current
    /// ones; 0 lifts one. Every frontend applies it within two seconds.
    Set {
        #[command(flatten)]
        scope: ScopeArgs,
        #[command(flatten)]
        rates: RateArgs,
    },
    /// Every rule.
    List,
    /// Deletes the rule of a scope.
    Delete {
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// Every rule with its rates now (summed over the frontends), how many
    /// requests and bytes were held back and for how long, and how many
    /// requests were refused (503 SlowDown).
    Status,
}

/// What a rule limits: a user, a bucket, both, a volume, or a pool.
#[derive(Debug, clap::Args)]
pub struct ScopeArgs {
    /// An S3 user (over all buckets; with --bucket, on that bucket only).
    #[arg(long)]
    user: Option<String>,
    /// An S3 bucket (over all users; with --user, that user only).
    #[arg(long)]
    bucket: Option<String>,
    /// A volume.
    #[arg(long, conflicts_with_all = ["user", "bucket", "pool"])]
    volume: Option<String>,
    /// Each volume of a pool (a performance class; a volume's own rule wins).
    #[arg(long, conflicts_with_all = ["user", "bucket", "volume"])]
    pool: Option<String>,
}

impl ScopeArgs {
    fn scope(self) -> anyhow::Result<QosScope> {
        Ok(match self {
            ScopeArgs { user: Some(user), bucket: Some(bucket), .. } => QosScope::UserBucket { user, bucket },
            ScopeArgs { user: Some(user), .. } => QosScope::User(user),
            ScopeArgs { bucket: Some(bucket), .. } => QosScope::Bucket(bucket),
            ScopeArgs { volume: Some(volume), .. } => QosScope::Volume(volume),
            ScopeArgs { pool: Some(pool), .. } => QosScope::Pool(pool),
            _ => bail!("name what the rule limits: --user, --bucket, both, --volume or --pool"),
        })
    }
}

/// The rates of a rule, per second.
#[derive(Debug, Default, clap::Args)]
pub struct RateArgs {
    /// Requests per second (S3 requests; a volume's 4 KiB operations).
    #[arg(long)]
    requests: Option<u64>,
    /// Read requests per second (GET, HEAD, LIST; volume reads).
    #[arg(long)]
    read_requests: Option<u64>,
    /// Write requests per second (every other request; volume writes).
    #[arg(long)]
    write_requests: Option<u64>,
    /// Bytes per second sent to clients, e.g. 20MiB.
    #[arg(long)]
    download: Option<ByteSize>,
    /// Bytes per second received from clients.
    #[arg(long)]
    upload: Option<ByteSize>,
    #[command(flatten)]
    volume: VolumeQosArgs,
}

/// A volume's rates, as `chuyi volume create|set` take them.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct VolumeQosArgs {
    /// Operations per second, each 4 KiB of an I/O counting one (the same
    /// as --requests).
    #[arg(long)]
    pub iops: Option<u64>,
    /// Megabytes (10^6 bytes) per second either way.
    #[arg(long)]
    pub mbps: Option<u64>,
    /// How much may be used at once after a quiet spell, as time at the
    /// rates: "1s" (the default), "500ms", "10s".
    #[arg(long, value_parser = parse_burst)]
    pub burst: Option<u32>,
}

impl VolumeQosArgs {
    pub fn any(&self) -> bool {
        self.iops.is_some() || self.mbps.is_some() || self.burst.is_some()
    }
}

/// A burst given as a duration: milliseconds.
fn parse_burst(s: &str) -> Result<u32, String> {
    let ms = crate::duration::parse_ms(s)?;
    u32::try_from(ms).map_err(|_| format!("{s:?} is too long"))
}

impl RateArgs {
    /// `current` with the rates given here changed (0: lifted).
    fn apply(&self, current: Option<QosLimits>) -> QosLimits {
        let mut limits = current.unwrap_or(QosLimits { burst_ms: DEFAULT_BURST_MS, ..Default::default() });
        let given = [
            (Dimension::Requests, self.requests.or(self.volume.iops)),
            (Dimension::ReadRequests, self.read_requests),
            (Dimension::WriteRequests, self.write_requests),
            (Dimension::Download, self.download.map(|b| b.0)),
            (Dimension::Upload, self.upload.map(|b| b.0)),
            (Dimension::Bytes, self.volume.mbps.map(|m| m.saturating_mul(1_000_000))),
        ];
        for (d, rate) in given {
            if let Some(rate) = rate {
                limits.set(d, (rate > 0).then_some(rate));
            }
        }
        if let Some(burst) = self.volume.burst {
            limits.burst_ms = burst;
        }
        limits
    }
}

/// Sets the rule of `scope` from `rates` over the one it has; a rule
/// left with no rate is deleted. The rule after, if any.
pub async fn set(meta: &MetaClient, scope: QosScope, rates: &RateArgs) -> anyhow::Result<Option<QosRule>> {
    let (_, rules) = meta.ask(ask::QosRules).await?;
    let current = rules.into_iter().find(|r| r.scope == scope).map(|r| r.limits);
    let had = current.is_some();
    let limits = rates.apply(current);
    if limits.rates.iter().all(Option::is_none) {
        if had {
            meta.write(Request::DeleteQosRule { scope }).await?;
        }
        return Ok(None);
    }
    let rule = QosRule { scope, limits };
    meta.write(Request::SetQosRule { rule: rule.clone() }).await?;
    Ok(Some(rule))
}

/// Sets a volume's rule from `chuyi volume create|set`'s flags.
pub async fn set_volume(meta: &MetaClient, volume: &str, args: &VolumeQosArgs) -> anyhow::Result<Option<QosRule>> {
    let rates = RateArgs { volume: args.clone(), ..Default::default() };
    set(meta, QosScope::Volume(volume.into()), &rates).await
}

pub async fn run(args: &ClusterArgs, cmd: QosCmd) -> anyhow::Result<()> {
    let meta = args.client()?;
    match cmd {
        QosCmd::Set { scope, rates } => {
            let scope = scope.scope()?;
            let shown = scope.to_string();
            match set(&meta, scope, &rates).await? {
                Some(rule) if args.json => print_json(&RuleView::of(&rule.scope, Some(&rule.limits)))?,
                Some(rule) => println!("QoS rule of {shown}: {}", describe(&rule.limits)),
                None => println!("{shown} has no QoS rule"),
            }
        }
        QosCmd::List => {
            let (_, rules) = meta.ask(ask::QosRules).await?;
            let views: Vec<RuleView> = rules.iter().map(|r| RuleView::of(&r.scope, Some(&r.limits))).collect();
            if args.json {
                return print_json(&views);
            }
            let mut t = Table::new(&["SCOPE", "LIMITS"]);
            for r in &rules {
                t.row(vec![r.scope.to_string(), describe(&r.limits)]);
            }
            t.print();
        }
        QosCmd::Delete { scope } => {
            let scope = scope.scope()?;
            let shown = scope.to_string();
            meta.write(Request::DeleteQosRule { scope })
                .await
                .with_context(|| format!("deleting the rule of {shown}"))?;
            println!("deleted the QoS rule of {shown}");
        }
        QosCmd::Status => {
            let status = meta.qos_status().await?;
            let views: Vec<StatusView> = status.iter().map(StatusView::of).collect();
            if args.json {
                return print_json(&views);
            }
            let mut t =
                Table::new(&["SCOPE", "LIMITS", "NOW", "ADMITTED", "DELAYED", "DELAYED FOR", "REFUSED", "FRONTENDS"]);
            for s in &status {
                let c = &s.counters;
                t.row(vec![
                    s.scope.to_string(),
                    s.limits.as_ref().map_or("(its pool's)".into(), describe),
                    describe_rates(&s.rates),
                    c.admitted.to_string(),
                    c.delayed.to_string(),
                    format!("{:.1}s", c.delayed_ms as f64 / 1000.0),
                    c.refused.to_string(),
                    s.frontends.to_string(),
                ]);
            }
            t.print();
        }
    }
    Ok(())
}

/// A rule's limits in a line: "requests 50/s, download 20.0 MiB/s, burst 1s".
pub fn describe(limits: &QosLimits) -> String {
    let mut parts: Vec<String> = Dimension::ALL
        .into_iter()
        .filter_map(|d| Some(format!("{} {}", d.name(), per_s(d, limits.rate(d)? as f64))))
        .collect();
    parts.push(format!("burst {}ms", limits.burst_ms));
    parts.join(", ")
}

/// Rates now, those not zero.
pub fn describe_rates(rates: &[f64; 6]) -> String {
    let parts: Vec<String> = Dimension::ALL
        .into_iter()
        .filter(|d| rates[d.index()] > 0.0)
        .map(|d| format!("{} {}", d.name(), per_s(d, rates[d.index()])))
        .collect();
    if parts.is_empty() {
        "idle".into()
    } else {
        parts.join(", ")
    }
}

fn per_s(d: Dimension, rate: f64) -> String {
    if d.is_bytes() {
        format!("{}/s", ByteSize(rate as u64).approx())
    } else {
        format!("{rate:.1}/s")
    }
}

/// A rule as `--json` shows it: the scope's names and the rates by name.
#[derive(Debug, Serialize)]
pub struct RuleView {
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Per second, by rate name; none for a volume under its pool's rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<BTreeMap<&'static str, u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst_ms: Option<u32>,
}

impl RuleView {
    pub fn of(scope: &QosScope, limits: Option<&QosLimits>) -> Self {
        let mut view = RuleView {
            scope: scope.to_string(),
            user: None,
            bucket: None,
            volume: None,
            pool: None,
            limits: limits.map(|l| Dimension::ALL.into_iter().filter_map(|d| Some((d.name(), l.rate(d)?))).collect()),
            burst_ms: limits.map(|l| l.burst_ms),
        };
        match scope.clone() {
            QosScope::User(u) => view.user = Some(u),
            QosScope::Bucket(b) => view.bucket = Some(b),
            QosScope::UserBucket { user, bucket } => (view.user, view.bucket) = (Some(user), Some(bucket)),
            QosScope::Volume(v) => view.volume = Some(v),
            QosScope::Pool(p) => view.pool = Some(p),
        }
        view
    }
}

/// A rule's status as `--json` shows it.
#[derive(Debug, Serialize)]
pub struct StatusView {
    #[serde(flatten)]
    pub rule: RuleView,
    /// Per second now, by rate name, summed over the frontends.
    pub rates: BTreeMap<&'static str, f64>,
    /// admitted, bytes_in, bytes_out, delayed, delayed_ms, refused.
    #[serde(flatten)]
    pub counters: QosCounters,
    pub frontends: u32,
    /// For the text form only.
    #[serde(skip)]
    pub describe_limits: String,
    #[serde(skip)]
    pub describe_rates: String,
}

impl StatusView {
    pub fn of(s: &RuleStatus) -> Self {
        StatusView {
            rule: RuleView::of(&s.scope, s.limits.as_ref()),
            rates: Dimension::ALL.into_iter().map(|d| (d.name(), s.rates[d.index()])).collect(),
            counters: s.counters,
            frontends: s.frontends,
            describe_limits: s.limits.as_ref().map(describe).unwrap_or_default(),
            describe_rates: describe_rates(&s.rates),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_are_durations() {
        assert_eq!(parse_burst("1s"), Ok(1000));
        assert_eq!(parse_burst("500ms"), Ok(500));
        assert_eq!(parse_burst("2m"), Ok(120_000));
        assert_eq!(parse_burst("3"), Ok(3000));
        assert!(parse_burst("100d").is_err(), "past u32 milliseconds");
        assert!(parse_burst("s").is_err());
    }

    #[test]
    fn given_rates_change_the_rule_and_zero_lifts_one() {
        let rates = RateArgs { requests: Some(50), download: Some(ByteSize(20 << 20)), ..Default::default() };
        let limits = rates.apply(None);
        assert_eq!(limits.rate(Dimension::Requests), Some(50));
        assert_eq!(limits.rate(Dimension::Download), Some(20 << 20));
        assert_eq!(limits.burst_ms, DEFAULT_BURST_MS);
        let lift = RateArgs { requests: Some(0), ..Default::default() };
        let limits = lift.apply(Some(limits));
        assert_eq!(limits.rate(Dimension::Requests), None);
        assert_eq!(limits.rate(Dimension::Download), Some(20 << 20), "kept");
        let volume = RateArgs {
            volume: VolumeQosArgs { iops: Some(2000), mbps: Some(100), burst: Some(2000) },
            ..Default::default()
        };
        let limits = volume.apply(None);
        assert_eq!(limits.rate(Dimension::Requests), Some(2000));
        assert_eq!(limits.rate(Dimension::Bytes), Some(100_000_000));
        assert_eq!(limits.burst_ms, 2000);
    }
}
