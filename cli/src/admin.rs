//! The admin commands that talk to the metadata service: status, pools,
//! users, members. Each prints a table, or JSON with `--json`.

use anyhow::bail;
use chuyi_common::credential::Door;
use chuyi_common::ids::DeviceClass;
use chuyi_common::proto::chunk::NodeReport;
use chuyi_common::size::ByteSize;
use chuyi_meta_api::{ask, order};
use chuyi_metadata::client::MetaClient;
use chuyi_metadata::proto::{ApiReply, MetaCall, StatusReport};
use chuyi_metadata::state::model::{BucketConfigKind, NodeState, PackTotals, PoolDefaults, Redundancy};
use chuyi_metadata::state::Request;
use chuyi_s3::lifecycle;
use serde::Serialize;

use crate::cluster::ClusterArgs;
use crate::table::Table;

#[derive(Debug, clap::Subcommand)]
pub enum PoolCmd {
    /// Create a pool and place its PGs.
    Create {
        name: String,
        /// Device class of its disks: nvme, ssd or hdd.
        #[arg(long)]
        class: String,
        #[arg(long, default_value_t = 256)]
        pg_count: u32,
        #[arg(long, default_value_t = 2)]
        replicas: u8,
        /// Keep each PG's replicas in distinct failure domains.
        #[arg(long)]
        separate_failure_domains: bool,
    },
    List,
    /// Set what the pool's new volumes get: with `--encrypt true` every
    /// new volume must be encrypted (`chuyi volume create` then encrypts
    /// without being asked).
    Set {
        name: String,
        #[arg(long, action = clap::ArgAction::Set)]
        encrypt: bool,
    },
    Delete {
        name: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum UserCmd {
    /// Create an S3 user; prints its secret key once.
    Create {
        name: String,
        #[arg(long)]
        admin: bool,
    },
    List,
    Delete {
        name: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum MemberCmd {
    /// Add a started, empty member as a voter.
    Add {
        id: u64,
        addr: String,
    },
    Remove {
        id: u64,
    },
}

pub(crate) fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub async fn status(args: &ClusterArgs) -> anyhow::Result<()> {
    let report = args.client()?.status().await?;
    let nodes = node_reports(args, &report).await;
    let lifecycle = lifecycle_progress(&args.client()?).await?;
    let bin = recycle_bin(&args.client()?).await?;
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        if let Some(object) = value.as_object_mut() {
            object.insert("storage_nodes".into(), serde_json::to_value(&nodes)?);
            object.insert("lifecycle".into(), serde_json::to_value(&lifecycle)?);
            object.insert("recycle_bin".into(), serde_json::to_value(&bin)?);
        }
        return print_json(&value);
    }
    print_status(&report);
    print_packs(&report.packs);
    print_background(&nodes);
    print_lifecycle(&lifecycle, chuyi_common::clock::unix_ms());
    println!(
        "
recycle bin: {} volume(s), {} provisioned ({} being purged)",
        bin.volumes,
        ByteSize(bin.provisioned_bytes).approx(),
        bin.purging
    );
    Ok(())
}

/// What the recycle bin holds: its volumes' chunks stay on the nodes.
#[derive(Serialize)]
struct RecycleBin {
    volumes: usize,
    provisioned_bytes: u64,
    purging: usize,
}

async fn recycle_bin(client: &MetaClient) -> anyhow::Result<RecycleBin> {
    let (_, entries) = client.ask(ask::Trash).await?;
    Ok(RecycleBin {
        volumes: entries.len(),
        provisioned_bytes: entries.iter().map(|e| e.volume.size_bytes).sum(),
        purging: entries.iter().filter(|e| e.purging.is_some()).count(),
    })
}

/// One bucket's last lifecycle pass, as its runner recorded it.
#[derive(Serialize)]
struct LifecycleRow {
    bucket: String,
    #[serde(flatten)]
    progress: lifecycle::Progress,
    percent: f64,
    rate_per_s: f64,
    eta_s: Option<f64>,
}

/// The buckets lifecycle has gone (or is going) over.
async fn lifecycle_progress(client: &MetaClient) -> anyhow::Result<Vec<LifecycleRow>> {
    let mut rows = Vec::new();
    for bucket in client.ask(ask::Buckets).await? {
        let ask = ask::BucketConfig { bucket: bucket.name.clone(), kind: BucketConfigKind::LifecycleProgress };
        let Some(progress) = client.ask(ask).await?.and_then(|d| lifecycle::Progress::decode(&d)) else { continue };
        let (percent, rate_per_s, eta_s) = (progress.percent(), progress.rate(), progress.eta_s());
        rows.push(LifecycleRow { bucket: bucket.name, progress, percent, rate_per_s, eta_s });
    }
    Ok(rows)
}

/// Lifecycle passes running, with percent, rate and ETA, and when each
/// bucket was last gone over.
fn print_lifecycle(rows: &[LifecycleRow], now_ms: u64) {
    if rows.is_empty() {
        println!("\nlifecycle: no pass recorded");
        return;
    }
    let running = rows.iter().filter(|r| r.progress.finished_ms.is_none()).count();
    println!("\nlifecycle: {running} pass(es) running");
    let mut table = Table::new(&["BUCKET", "STATE", "DONE", "VERSIONS", "CHANGES", "RATE", "ETA"]);
    for r in rows {
        let p = &r.progress;
        let state = match p.finished_ms {
            None => "running".to_string(),
            Some(end) => format!("ended {} s ago", now_ms.saturating_sub(end) / 1000),
        };
        table.row(vec![
            r.bucket.clone(),
            state,
            format!("{:.1}%", r.percent),
            format!("{}/{}", p.scanned, p.total),
            p.changes.to_string(),
            format!("{:.0}/s", r.rate_per_s),
            r.eta_s.map_or("-".into(), |s| format!("{s:.0} s")),
        ]);
    }
    table.print();
}

/// Small objects' packs, and the compaction still to do: the space the
/// sparse packs take beyond what is live in them.
fn print_packs(p: &PackTotals) {
    let share = |part: u64, whole: u64| if whole == 0 { 100.0 } else { part as f64 * 100.0 / whole as f64 };
    println!(
        "
object packs: {}, {} taken per replica, {} live ({:.1}%)",
        p.packs,
        ByteSize(p.bytes).approx(),
        ByteSize(p.live_bytes).approx(),
        share(p.live_bytes, p.bytes)
    );
    let waste = p.sparse_bytes.saturating_sub(p.sparse_live_bytes);
    println!(
        "compaction: {} sparse packs, {} to reclaim ({} live to move); {} moved so far",
        p.sparse,
        ByteSize(waste).approx(),
        ByteSize(p.sparse_live_bytes).approx(),
        ByteSize(p.moved_bytes).approx()
    );
}

/// What each up storage node says of its recovery and scrub work; a node
/// that does not answer within a moment is left out.
async fn node_reports(args: &ClusterArgs, report: &StatusReport) -> Vec<NodeReport> {
    let Ok(admin) = args.admin() else { return Vec::new() };
    let pool = chuyi_console::survey::node_pool(admin.identity(Door::Node));
    chuyi_console::survey::node_reports(&pool, &report.map).await
}

/// Backfills in flight with percent, rate and ETA, and scrub counters.
fn print_background(nodes: &[NodeReport]) {
    let recoveries: Vec<_> = nodes.iter().flat_map(|n| n.recoveries.iter().map(move |r| (n.node, r))).collect();
    if recoveries.is_empty() {
        println!("\nrecovery: none in progress");
    } else {
        let all = chuyi_console::health::recovery(nodes);
        println!(
            "\nrecovery: {} backfills, {:.1}% of their chunks compared, {}/s",
            all.backfills,
            all.percent(),
            ByteSize(all.rate as u64)
        );
        let mut table = Table::new(&["PG", "FROM", "TO", "DONE", "CHUNKS", "SENT", "RATE", "ETA"]);
        for (node, r) in recoveries {
            table.row(vec![
                r.pg.to_string(),
                node.to_string(),
                format!("{}/{}", r.target.node, r.target.disk),
                format!("{:.1}%", r.percent()),
                format!("{}/{}", r.chunks_done, r.chunks_total),
                ByteSize(r.bytes_copied).to_string(),
                format!("{}/s", ByteSize(r.rate() as u64)),
                r.eta_s().map_or("-".into(), |s| format!("{s:.0} s")),
            ]);
        }
        table.print();
    }
    let mut scrub = Table::new(&["NODE", "SCRUBBED", "PASSES", "BAD BLOCKS", "REPAIRS"]);
    for n in nodes {
        scrub.row(vec![
            n.node.to_string(),
            ByteSize(n.scrub.scrubbed_bytes).to_string(),
            n.scrub.passes.to_string(),
            n.scrub.errors.to_string(),
            n.scrub.repairs.to_string(),
        ]);
    }
    println!();
    scrub.print();
}

fn print_status(r: &StatusReport) {
    let leader = r.leader.map_or("none".to_string(), |l| l.to_string());
    let index = |i: Option<u64>| i.map_or("-".to_string(), |i| i.to_string());
    println!("metadata: leader {leader}, term {}, map epoch {} (answered by member {})", r.term, r.map.epoch, r.member);
    println!(
        "log: last {}, applied {}, snapshot {}, purged {}",
        index(r.last_log_index),
        index(r.last_applied),
        index(r.snapshot),
        index(r.purged)
    );
    let mut members = Table::new(&["MEMBER", "ADDRESS", "ROLE"]);
    for m in &r.members {
        let role = match (Some(m.id) == r.leader, m.voter) {
            (true, _) => "leader",
            (false, true) => "follower",
            (false, false) => "learner",
        };
        members.row(vec![m.id.to_string(), m.addr.clone(), role.into()]);
    }
    members.print();
    println!();
    let mut nodes = Table::new(&["NODE", "STATE", "ADDRESS", "DOMAIN", "DISKS", "CAPACITY", "USED"]);
    for n in &r.map.nodes {
        let capacity: u64 = n.disks.iter().map(|d| d.capacity_bytes).sum();
        let used: u64 = n.disks.iter().map(|d| d.used_bytes).sum();
        let state = if n.state == NodeState::Up { "up" } else { "down" };
        nodes.row(vec![
            n.id.to_string(),
            state.into(),
            n.addrs.first().cloned().unwrap_or_default(),
            n.failure_domain.clone(),
            n.disks.len().to_string(),
            ByteSize(capacity).to_string(),
            ByteSize(used).to_string(),
        ]);
    }
    nodes.print();
    println!();
    let mut pools = Table::new(&["POOL", "CLASS", "REDUNDANCY", "PGS", "CLEAN", "RECOVERING", "DEGRADED"]);
    for p in &r.pools {
        pools.row(vec![
            p.pool.name.clone(),
            p.pool.class.to_string(),
            p.pool.redundancy.to_string(),
            p.pool.pg_count.to_string(),
            p.clean.to_string(),
            p.recovering.to_string(),
            p.degraded.to_string(),
        ]);
    }
    pools.print();
}

fn parse_class(class: &str) -> anyhow::Result<DeviceClass> {
    Ok(match class {
        "nvme" => DeviceClass::Nvme,
        "ssd" => DeviceClass::Ssd,
        "hdd" => DeviceClass::Hdd,
        other => bail!("unknown device class {other:?}: use nvme, ssd or hdd"),
    })
}

pub async fn pool(args: &ClusterArgs, cmd: PoolCmd) -> anyhow::Result<()> {
    let client = args.client()?;
    match cmd {
        PoolCmd::Create { name, class, pg_count, replicas, separate_failure_domains } => {
            let class = parse_class(&class)?;
            let create = order::CreatePool {
                name,
                class,
                redundancy: Redundancy::Replicated(replicas),
                pg_count,
                separate_failure_domains,
            };
            let p = client.order(create).await?;
            if args.json {
                print_json(&p)?;
            } else {
                println!("pool {} created: {} PGs on {} disks, {}", p.name, p.pg_count, p.class, p.redundancy)
            }
        }
        PoolCmd::List => {
            let pools = client.ask(ask::Pools).await?;
            if args.json {
                return print_json(&pools);
            }
            let mut t = Table::new(&["POOL", "ID", "CLASS", "REDUNDANCY", "PGS", "DOMAINS", "ENCRYPT"]);
            for p in pools {
                let domains = if p.separate_failure_domains { "separate" } else { "any" };
                let defaults = client.ask(ask::PoolDefaults(p.name.clone())).await?;
                t.row(vec![
                    p.name,
                    p.id.to_string(),
                    p.class.to_string(),
                    p.redundancy.to_string(),
                    p.pg_count.to_string(),
                    domains.into(),
                    if defaults.encrypt { "always" } else { "on request" }.into(),
                ]);
            }
            t.print();
        }
        PoolCmd::Set { name, encrypt } => {
            let defaults = PoolDefaults { encrypt };
            client.write(Request::SetPoolDefaults { pool: name.clone(), defaults }).await?;
            println!(
                "pool {name}: new volumes {}",
                if encrypt { "are always encrypted" } else { "are encrypted on request" }
            );
        }
        PoolCmd::Delete { name } => {
            client.write(Request::DeletePool { name: name.clone() }).await?;
            println!("pool {name} deleted");
        }
    }
    Ok(())
}

pub async fn user(args: &ClusterArgs, cmd: UserCmd) -> anyhow::Result<()> {
    let client = args.client()?;
    match cmd {
        UserCmd::Create { name, admin } => {
            let ApiReply::UserCreated { user, secret_key } = client.call(&MetaCall::CreateUser { name, admin }).await?
            else {
                bail!("unexpected reply")
            };
            if args.json {
                #[derive(Serialize)]
                struct Created<'a> {
                    name: &'a str,
                    access_key: &'a str,
                    secret_key: &'a str,
                    admin: bool,
                }
                let created = Created {
                    name: &user.name,
                    access_key: &user.access_key,
                    secret_key: &secret_key,
                    admin: user.admin,
                };
                return print_json(&created);
            }
            println!("user {} created{}", user.name, if user.admin { " (admin)" } else { "" });
            println!("access key: {}", user.access_key);
            println!("secret key: {secret_key}");
            println!("(the secret key is shown only now)");
        }
        UserCmd::List => {
            let users = client.ask(ask::Users).await?;
            if args.json {
                #[derive(Serialize)]
                struct Listed<'a> {
                    name: &'a str,
                    access_key: &'a str,
                    admin: bool,
                    created_ms: u64,
                }
                let listed: Vec<_> = users
                    .iter()
                    .map(|u| Listed {
                        name: &u.name,
                        access_key: &u.access_key,
                        admin: u.admin,
                        created_ms: u.created_ms,
                    })
                    .collect();
                return print_json(&listed);
            }
            let mut t = Table::new(&["USER", "ACCESS KEY", "ADMIN"]);
            for u in users {
                t.row(vec![u.name.clone(), u.access_key.clone(), u.admin.to_string()]);
            }
            t.print();
        }
        UserCmd::Delete { name } => {
            client.write(Request::DeleteUser { name: name.clone() }).await?;
            println!("user {name} deleted");
        }
    }
    Ok(())
}

pub async fn member(args: &ClusterArgs, cmd: MemberCmd) -> anyhow::Result<()> {
    let client: MetaClient = args.client()?;
    match cmd {
        MemberCmd::Add { id, addr } => {
            client.call(&MetaCall::AddMember { id, addr: addr.clone() }).await?;
            println!("member {id} at {addr} added");
        }
        MemberCmd::Remove { id } => {
            client.call(&MetaCall::RemoveMember { id }).await?;
            println!("member {id} removed");
        }
    }
    Ok(())
}
