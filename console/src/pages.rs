//! The console's pages, drawn from what was read without further I/O:
//! each function takes the survey (or the records a page reads) and gives
//! the page's body. Element ids name what a test or a script looks for.

use std::collections::HashMap;
use std::fmt::Write;

use chuyi_meta_api::model::{Bucket, BucketUsage, DiskState, NodeState, Versioning, Volume, VolumeState};
use chuyi_meta_api::qos::{Dimension, QosLimits, QosRule, QosScope};

use crate::health::{self, Level};
use crate::history::{Rate, Sample};
use crate::html::{self, badge, bytes, esc, table, Series};
use crate::survey::Survey;

/// The login form, with why the last try failed.
pub fn login(problem: Option<&str>) -> String {
    let problem = problem.map_or(String::new(), |p| format!("<p class=\"problem\" id=\"problem\">{}</p>", esc(p)));
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Chuyi · Log in</title>\
         <link rel=\"stylesheet\" href=\"/static/console.css\"></head>\n<body class=\"login\"><main>\
         <h1>Chuyi console</h1><p>Log in with an administrator's S3 access key and secret key.</p>{problem}\
         <form method=\"post\" action=\"/login\" id=\"login\">\
         <label>Access key <input name=\"access_key\" id=\"access_key\" autocomplete=\"username\" required></label>\
         <label>Secret key <input name=\"secret_key\" id=\"secret_key\" type=\"password\" \
         autocomplete=\"current-password\" required></label>\
         <button type=\"submit\" id=\"submit\">Log in</button></form></main></body></html>\n"
    )
}

fn level_badge(level: Level) -> String {
    badge(level.name(), level.name())
}

/// Health, the metadata service, capacity by class and pool, recovery,
/// and the charts of the samples the console keeps.
pub fn overview(survey: &Survey, samples: &[Sample], now_ms: u64) -> String {
    let status = &survey.status;
    let h = health::health(status, &survey.nodes);
    let mut out =
        format!("<section id=\"health\" class=\"{}\"><h2>Health: {}</h2><ul>", h.level.name(), level_badge(h.level));
    for (level, reason) in &h.reasons {
        let _ = write!(out, "<li>{} {}</li>", level_badge(*level), esc(reason));
    }
    if h.reasons.is_empty() {
        out.push_str("<li>every node up, every PG clean, no disk nearly full</li>");
    }
    out.push_str("</ul></section>\n");
    let leader = status.leader.map_or("none".to_string(), |l| l.to_string());
    let up = status.map.nodes.iter().filter(|n| n.state == NodeState::Up).count();
    let _ = writeln!(
        out,
        "<p id=\"summary\">Metadata leader <b>{leader}</b>, term {}, map epoch {}; {} member(s); \
         nodes <b>{up}/{}</b> up.</p>",
        status.term,
        status.map.epoch,
        status.members.len(),
        status.map.nodes.len()
    );
    out.push_str(&capacity(survey));
    out.push_str(&recovery_summary(survey, "recovery"));
    out.push_str(&charts(samples, now_ms));
    out
}

/// Every backfill in flight together: how many, how far, how fast, and
/// when the last ends.
fn recovery_summary(survey: &Survey, id: &str) -> String {
    let r = health::recovery(&survey.nodes);
    let progress = if r.backfills == 0 {
        String::new()
    } else {
        format!(
            ": {} of their chunks compared, {} sent, {}/s, ETA {}",
            html::progress(r.percent()),
            bytes(r.bytes_copied),
            bytes(r.rate as u64),
            r.eta_s.map_or("unknown yet".into(), html::seconds)
        )
    };
    format!("<h2>Recovery</h2><p id=\"{id}\">{} backfill(s) in flight{progress}</p>\n", r.backfills)
}

fn capacity(survey: &Survey) -> String {
    let classes = health::capacity_by_class(&survey.status.map);
    let rows: Vec<Vec<String>> = classes
        .iter()
        .map(|c| {
            vec![
                c.class.map_or("-".into(), |k| k.to_string()),
                c.disks.to_string(),
                bytes(c.capacity_bytes),
                bytes(c.used_bytes),
                format!(
                    "<meter max=\"1\" value=\"{:.3}\"></meter> {}",
                    c.used_fraction(),
                    html::percent(c.used_fraction())
                ),
                if c.offline_disks == 0 {
                    "-".into()
                } else {
                    format!("{} ({})", c.offline_disks, bytes(c.offline_bytes))
                },
            ]
        })
        .collect();
    let mut out = String::from("<h2>Capacity by class</h2>");
    out.push_str(&table("classes", &["CLASS", "DISKS", "CAPACITY", "USED", "FULL", "OFFLINE"], &rows));
    let pools: Vec<Vec<String>> = survey
        .status
        .pools
        .iter()
        .map(|p| {
            let replicas = p.pool.redundancy.replicas();
            vec![
                esc(&p.pool.name),
                p.pool.class.to_string(),
                p.pool.redundancy.to_string(),
                bytes(health::pool_free_bytes(&classes, p.pool.class, replicas)),
                format!("{} / {} / {}", p.clean, p.recovering, p.degraded),
            ]
        })
        .collect();
    out.push_str("<h2>Pools</h2>");
    out.push_str(&table(
        "pools",
        &["POOL", "CLASS", "REDUNDANCY", "FREE (USABLE)", "PGS CLEAN / RECOVERING / DEGRADED"],
        &pools,
    ));
    out
}

/// A chart's title, how its values read, and its lines.
type Chart = (&'static str, fn(f64) -> String, Vec<Series>);

fn charts(samples: &[Sample], now_ms: u64) -> String {
    let from = samples.first().map_or(now_ms, |s| s.at_ms);
    let series =
        |name, f: fn(&Sample) -> f64| Series { name, points: samples.iter().map(|s| (s.at_ms, f(s))).collect() };
    let per_s = |v: f64| format!("{v:.0}/s");
    let bytes_per_s = |v: f64| format!("{}/s", bytes(v as u64));
    let count = |v: f64| format!("{v:.0}");
    let byte_count = |v: f64| bytes(v as u64);
    let mut out = format!(
        "<h2>The last {}</h2><div class=\"charts\" id=\"charts\">",
        html::seconds(now_ms.saturating_sub(from) as f64 / 1000.0)
    );
    let charts: [Chart; 6] = [
        ("Volume IOPS", per_s, vec![series("reads", |s| s.io.reads), series("writes", |s| s.io.writes)]),
        (
            "Volume throughput",
            bytes_per_s,
            vec![series("read", |s| s.io.read_bytes), series("written", |s| s.io.written_bytes)],
        ),
        (
            "PGs",
            count,
            vec![
                series("clean", |s| f64::from(s.pgs_clean)),
                series("recovering", |s| f64::from(s.pgs_recovering)),
                series("degraded", |s| f64::from(s.pgs_degraded)),
            ],
        ),
        ("Recovery", bytes_per_s, vec![series("backfill sent", |s| s.recovery_bytes)]),
        (
            "Capacity",
            byte_count,
            vec![series("used", |s| s.used_bytes as f64), series("in service", |s| s.capacity_bytes as f64)],
        ),
        ("Nodes", count, vec![series("up", |s| f64::from(s.nodes_up)), series("in the map", |s| f64::from(s.nodes))]),
    ];
    for (title, label, lines) in &charts {
        out.push_str(&html::chart(title, *label, lines, from, now_ms));
    }
    out.push_str("</div>\n");
    out
}

/// Every node with its state and disks, and what scrub found on it.
pub fn nodes(survey: &Survey, now_ms: u64) -> String {
    let mut rows = Vec::new();
    for n in &survey.status.map.nodes {
        let state = match n.state {
            NodeState::Up => badge("ok", "up"),
            NodeState::Down => badge("error", "down"),
        };
        let heard = now_ms.saturating_sub(n.last_heartbeat_ms) as f64 / 1000.0;
        let report = survey.node(n.id);
        let scrub = report.map_or("no answer".into(), |r| {
            format!("{} scrubbed, {} bad, {} repaired", bytes(r.scrub.scrubbed_bytes), r.scrub.errors, r.scrub.repairs)
        });
        rows.push(vec![
            format!("<span class=\"node-id\">{}</span>", n.id),
            format!("<span class=\"node-state\" data-node=\"{}\">{state}</span>", n.id),
            esc(n.addrs.first().map_or("", String::as_str)),
            esc(&n.failure_domain),
            format!("{} ago", html::seconds(heard)),
            scrub,
        ]);
    }
    let mut out = table("nodes", &["NODE", "STATE", "ADDRESS", "DOMAIN", "LAST HEARTBEAT", "SCRUB"], &rows);
    let mut disks = Vec::new();
    for n in &survey.status.map.nodes {
        for d in &n.disks {
            let state = match (n.state, d.state) {
                (NodeState::Down, _) => badge("error", "node down"),
                (_, DiskState::Failed) => badge("error", "failed"),
                (_, DiskState::Up) => badge("ok", "up"),
            };
            let full = if d.capacity_bytes == 0 { 0.0 } else { d.used_bytes as f64 / d.capacity_bytes as f64 };
            disks.push(vec![
                format!("{}/{}", n.id, d.id),
                d.class.to_string(),
                state,
                bytes(d.capacity_bytes),
                bytes(d.used_bytes),
                format!("<meter max=\"1\" value=\"{full:.3}\"></meter> {}", html::percent(full)),
            ]);
        }
    }
    out.push_str("<h2>Disks</h2>");
    out.push_str(&table("disks", &["DISK", "CLASS", "STATE", "CAPACITY", "USED", "FULL"], &disks));
    out
}

/// PG health by pool, the PGs not clean, and every backfill with its
/// progress, rate and ETA.
pub fn pgs(survey: &Survey) -> String {
    let status = &survey.status;
    let pools: Vec<Vec<String>> = status
        .pools
        .iter()
        .map(|p| {
            vec![
                esc(&p.pool.name),
                p.pool.pg_count.to_string(),
                p.clean.to_string(),
                p.recovering.to_string(),
                p.degraded.to_string(),
            ]
        })
        .collect();
    let mut out = table("pg-health", &["POOL", "PGS", "CLEAN", "RECOVERING", "DEGRADED"], &pools);
    out.push_str(&recovery_summary(survey, "recovery-total"));
    let backfills: Vec<Vec<String>> = health::backfills(&survey.nodes)
        .into_iter()
        .map(|(node, p)| {
            vec![
                format!("<span class=\"pg\">{}</span>", p.pg),
                node.to_string(),
                format!("{}/{}", p.target.node, p.target.disk),
                format!("<span class=\"pg-progress\">{}</span>", html::progress(p.percent())),
                format!("{}/{}", p.chunks_done, p.chunks_total),
                bytes(p.bytes_copied),
                format!("{}/s", bytes(p.rate() as u64)),
                p.eta_s().map_or("-".into(), html::seconds),
            ]
        })
        .collect();
    out.push_str(&table("backfills", &["PG", "FROM", "TO", "DONE", "CHUNKS", "SENT", "RATE", "ETA"], &backfills));
    let pool_of = |id: u32| status.map.pools.iter().find(|p| p.id == id);
    let mut unclean = Vec::new();
    for pg in &status.map.pgs {
        let Some(pool) = pool_of(pg.pool) else { continue };
        let state = match pg.health(pool) {
            chuyi_meta_api::model::PgHealth::Clean => continue,
            chuyi_meta_api::model::PgHealth::Recovering => badge("warning", "recovering"),
            chuyi_meta_api::model::PgHealth::Degraded => badge("error", "degraded"),
        };
        let disks = |list: &mut dyn Iterator<Item = String>| list.collect::<Vec<_>>().join(", ");
        unclean.push(vec![
            format!("{}.{}", pg.pool, pg.pg),
            esc(&pool.name),
            state,
            disks(&mut pg.replicas.iter().map(|d| format!("{}/{}", d.node, d.disk))),
            disks(&mut pg.recovering.iter().map(|d| format!("{}/{}", d.node, d.disk))),
            pg.epoch.to_string(),
        ]);
    }
    out.push_str("<h2>PGs not clean</h2>");
    out.push_str(&table("unclean", &["PG", "POOL", "STATE", "REPLICAS", "BACKFILLING", "EPOCH"], &unclean));
    out
}

/// Every volume: size, attachment and its client I/O now (the rates the
/// nodes' counts gave between the last two surveys).
pub fn volumes(volumes: &[Volume], rates: &HashMap<u64, Rate>, now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = volumes
        .iter()
        .map(|v| {
            let attached = match &v.lease {
                Some(l) if l.is_live(now_ms) => format!("{} {}", badge("ok", "attached"), esc(&l.holder)),
                _ => badge("idle", "detached"),
            };
            let rate = rates.get(&v.id).copied().unwrap_or_default();
            let state = match v.state {
                VolumeState::Ready => "ready",
                VolumeState::KeyDestroyed => "key destroyed",
            };
            vec![
                format!("<span class=\"volume\">{}</span>", esc(&v.name)),
                esc(&v.pool),
                bytes(v.size_bytes),
                if v.wrapped_key.is_empty() { "no".into() } else { "SM4-XTS".into() },
                state.into(),
                attached,
                format!("<span class=\"iops\">{:.0}</span> ({:.0} r, {:.0} w)", rate.ops(), rate.reads, rate.writes),
                format!("{}/s", bytes((rate.read_bytes + rate.written_bytes) as u64)),
            ]
        })
        .collect();
    table("volumes", &["VOLUME", "POOL", "SIZE", "ENCRYPTED", "STATE", "ATTACHMENT", "IOPS NOW", "THROUGHPUT"], &rows)
}

/// A bucket as the buckets page lists it.
#[derive(Clone, Debug)]
pub struct BucketRow {
    pub bucket: Bucket,
    pub usage: BucketUsage,
}

/// Every bucket: objects, bytes as sent and as stored, the compression
/// ratio, and the QoS rules that apply to it.
pub fn buckets(rows: &[BucketRow], rules: &[QosRule]) -> String {
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let (b, u) = (&r.bucket, &r.usage);
            let ratio = if u.stored_bytes == 0 { 1.0 } else { u.bytes as f64 / u.stored_bytes as f64 };
            let versioning = match b.versioning {
                Versioning::Unset => "unversioned",
                Versioning::Enabled => "enabled",
                Versioning::Suspended => "suspended",
            };
            vec![
                format!("<span class=\"bucket\">{}</span>", esc(&b.name)),
                esc(&b.owner),
                esc(&b.pool),
                versioning.into(),
                u.objects.to_string(),
                bytes(u.bytes),
                bytes(u.stored_bytes),
                format!(
                    "<span class=\"ratio\">{ratio:.2}</span> ({})",
                    esc(b.settings.compression.as_deref().unwrap_or("off"))
                ),
                bucket_qos(&b.name, rules),
            ]
        })
        .collect();
    table(
        "buckets",
        &["BUCKET", "OWNER", "POOL", "VERSIONING", "OBJECTS", "BYTES", "STORED", "RATIO (COMPRESSION)", "QOS"],
        &table_rows,
    )
}

/// The rules naming `bucket`, as `scope: limits`.
fn bucket_qos(bucket: &str, rules: &[QosRule]) -> String {
    let applies = |s: &QosScope| match s {
        QosScope::Bucket(b) | QosScope::UserBucket { bucket: b, .. } => b == bucket,
        _ => false,
    };
    let shown: Vec<String> =
        rules.iter().filter(|r| applies(&r.scope)).map(|r| format!("{}: {}", r.scope, limits(&r.limits))).collect();
    if shown.is_empty() {
        "none".into()
    } else {
        esc(&shown.join("; "))
    }
}

/// A rule's rates as `requests 100/s, download 10.0 MiB/s`.
pub fn limits(l: &QosLimits) -> String {
    let rates: Vec<String> = Dimension::ALL
        .iter()
        .filter_map(|&d| {
            let rate = l.rate(d)?;
            Some(if d.is_bytes() {
                format!("{} {}/s", d.name(), bytes(rate))
            } else {
                format!("{} {rate}/s", d.name())
            })
        })
        .collect();
    rates.join(", ")
}

#[cfg(test)]
mod tests {
    use chuyi_common::ids::DeviceClass;
    use chuyi_meta_api::model::{BucketSettings, ClusterMap, DiskRecord, Lease, NodeRecord};

    use super::*;

    fn survey(nodes: Vec<NodeRecord>) -> Survey {
        crate::testing::survey(0, ClusterMap { epoch: 9, nodes, pools: vec![], pgs: vec![] }, vec![])
    }

    fn node(id: u32, state: NodeState) -> NodeRecord {
        NodeRecord {
            id,
            addrs: vec!["127.0.0.1:1".into()],
            failure_domain: "<rack>".into(),
            disks: vec![DiskRecord::empty(0, DeviceClass::Ssd, 1 << 30)],
            state,
            last_heartbeat_ms: 0,
        }
    }

    #[test]
    fn a_down_node_reads_down_with_its_disks_and_the_overview_says_why() {
        let s = survey(vec![node(1, NodeState::Up), node(2, NodeState::Down)]);
        let page = nodes(&s, 5_000);
        assert!(page.contains("data-node=\"2\"><span class=\"badge error\">down</span>"), "{page}");
        assert!(page.contains("data-node=\"1\"><span class=\"badge ok\">up</span>"));
        assert!(page.contains("node down") && page.contains("&lt;rack&gt;"), "escaped domain");
        let over = overview(&s, &[], 5_000);
        assert!(over.contains("node 2 is down") && over.contains("nodes <b>1/2</b> up"), "{over}");
    }

    #[test]
    fn a_volume_shows_its_lease_holder_and_iops() {
        let v = Volume {
            id: 7,
            name: "vm<1>".into(),
            pool: "ssd".into(),
            size_bytes: 1 << 30,
            chunk_size_bytes: 4 << 20,
            wrapped_key: vec![1],
            state: VolumeState::Ready,
            lease: Some(Lease { holder: "nbd-a".into(), id: 1, expires_ms: 10_000 }),
            created_ms: 0,
        };
        let rates = HashMap::from([(7, Rate { reads: 90.0, writes: 10.0, read_bytes: 0.0, written_bytes: 0.0 })]);
        let page = volumes(std::slice::from_ref(&v), &rates, 5_000);
        assert!(page.contains("vm&lt;1&gt;") && page.contains("attached</span> nbd-a"), "{page}");
        assert!(page.contains("<span class=\"iops\">100</span> (90 r, 10 w)") && page.contains("SM4-XTS"));
        let expired = volumes(&[v], &HashMap::new(), 10_000);
        assert!(expired.contains("detached") && expired.contains("<span class=\"iops\">0</span>"));
    }

    #[test]
    fn a_bucket_shows_its_ratio_and_the_rules_naming_it() {
        let bucket = Bucket {
            name: "scans".into(),
            owner: "pacs".into(),
            pool: "hdd".into(),
            created_ms: 0,
            versioning: Versioning::Enabled,
            settings: BucketSettings { compression: Some("capacity".into()), ..BucketSettings::default() },
        };
        let usage = BucketUsage { objects: 3, bytes: 3000, stored_bytes: 1000 };
        let mut l = QosLimits::default();
        l.set(Dimension::Requests, Some(100));
        l.set(Dimension::Download, Some(1 << 20));
        let rules = vec![
            QosRule { scope: QosScope::Bucket("scans".into()), limits: l.clone() },
            QosRule { scope: QosScope::Bucket("other".into()), limits: l },
        ];
        let page = buckets(&[BucketRow { bucket, usage }], &rules);
        assert!(page.contains("<span class=\"ratio\">3.00</span> (capacity)"), "{page}");
        assert!(page.contains("bucket scans: requests 100/s, download 1.00 MiB/s"), "{page}");
        assert!(!page.contains("bucket other"));
    }

    #[test]
    fn the_login_form_shows_the_problem_escaped() {
        let page = login(Some("<bad>"));
        assert!(
            page.contains("&lt;bad&gt;") && page.contains("name=\"secret_key\" id=\"secret_key\" type=\"password\"")
        );
        assert!(!login(None).contains("id=\"problem\""));
    }
}
