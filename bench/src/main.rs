//! `chuyi-bench`: load generators against running Chuyi services.
//!
//! `chuyi-bench node-load` drives one storage node's disk through the real
//! RPC; `bench/node-vs-fio.sh` puts it side by side with fio.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use chuyi_bench::load::{self, LoadSpec, Op};
use chuyi_bench::prefill::prefill;
use chuyi_bench::region::Region;
use chuyi_bench::report::Report;
use chuyi_bench::target::NodeTarget;
use chuyi_common::credential::{Credential, Door, Principal};
use chuyi_common::ids::DiskId;
use chuyi_common::rpc::Endpoint;
use chuyi_common::size::ByteSize;
use clap::{Args, Parser, Subcommand};

/// The Rust heap on mimalloc rather than glibc's malloc, measured in
/// bench/RESULTS.md ("Allocator"); C and C++ code (RocksDB) keeps glibc's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// In-flight requests per connection when --connections is not given.
const INFLIGHT_PER_CONNECTION: usize = 8;

#[derive(Debug, Parser)]
#[command(name = "chuyi-bench", version, about = "Load generators for Chuyi")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Random reads or writes on one disk of a running storage node, with a
    /// fixed number of requests in flight.
    NodeLoad(NodeLoad),
    /// Object-index puts from concurrent writers, then linearizable reads,
    /// against a running metadata service.
    MetaLoad(MetaLoad),
    /// One bucket filled to millions of objects on a running metadata
    /// group: PUT rate as it fills, listing latency, members' memory and
    /// disk, snapshot builds, a new member's catch-up (bench/meta-count.sh).
    MetaCount(MetaCount),
    /// Starts a cluster of real processes, fills a volume, kills a node
    /// under load: the I/O stall, backfill rate, time to full redundancy
    /// and (with 2 nodes) the resync of the returning node.
    Recovery(RecoveryArgs),
    /// Starts a cluster of real processes and the S3 gateway in this
    /// process; PUT, GET, LIST and DELETE load through the gateway and, in
    /// the same run, through chuyi-client directly.
    S3Load(S3LoadArgs),
    /// Random reads or writes of one block size over NBD at a fixed queue
    /// depth, one connection per thread (where fio is not installed).
    NbdLoad(NbdLoadArgs),
    /// Starts a cluster of real processes with a filled volume and serves
    /// it over NBD until SIGINT/SIGTERM (for bench/nbd-vs-nbdkit.sh).
    NbdServe {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, default_value_t = 1024)]
        volume_mib: u64,
        /// HOST:PORT, or `unix:PATH` for a Unix socket.
        #[arg(long, default_value = "127.0.0.1:10899")]
        listen: String,
        /// The frontend reaches the nodes over their Unix sockets (a
        /// frontend on the nodes' host) instead of TCP.
        #[arg(long)]
        node_unix: bool,
        /// Also serve `bench-enc`, an encrypted volume of the same size.
        #[arg(long)]
        encrypted: bool,
    },
}

#[derive(Debug, Args)]
struct RecoveryArgs {
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    #[arg(long, default_value_t = 512)]
    volume_mib: u64,
    /// Rewritten while the node is away.
    #[arg(long, default_value_t = 32)]
    degraded_write_mib: u64,
    #[arg(long, default_value_t = 5000)]
    heartbeat_timeout_ms: u64,
    #[arg(long, default_value_t = 200)]
    recovery_mb_per_s: u32,
}

#[derive(Debug, Args)]
struct S3LoadArgs {
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Object sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "4KiB,1MiB,64MiB")]
    sizes: Vec<ByteSize>,
    /// Objects per size and path: one number for every size, or one per
    /// size. Each object takes at least one 4 MiB chunk slot on two disks:
    /// 1100 small objects hold 8.6 GiB of disk until they are deleted.
    #[arg(long, value_delimiter = ',', default_value = "1100,200,16")]
    objects: Vec<usize>,
    /// Requests in flight: one number for every size, or one per size.
    #[arg(long, value_delimiter = ',', default_value = "32,16,4")]
    concurrency: Vec<usize>,
    /// Times the GET phase reads every object.
    #[arg(long, default_value_t = 4)]
    get_rounds: usize,
    /// Full listings of the objects each worker makes in the LIST phase.
    #[arg(long, default_value_t = 16)]
    list_rounds: usize,
    /// How PUT bodies are signed.
    #[arg(long, value_enum, default_value = "unsigned")]
    payload: chuyi_bench::s3_client::PayloadSigning,
    /// Worker threads of the gateway's runtime.
    #[arg(long, default_value_t = 2)]
    gateway_threads: usize,
    /// The paths measured, in this order: the gateway (small objects
    /// packed), the gateway with every object in chunks of its own, and
    /// chuyi-client directly.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "gateway,gateway-owned,direct")]
    paths: Vec<chuyi_bench::s3_load::PathKind>,
    /// Object bodies cut from this file instead of random bytes (a corpus
    /// for the compression paths, bench/compression.sh).
    #[arg(long, value_name = "FILE")]
    data: Option<PathBuf>,
    /// Print the report as one JSON object instead of markdown tables.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    json_out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct MetaLoad {
    /// Metadata members, comma-separated.
    #[arg(long, value_name = "ADDRS")]
    meta: String,
    /// File with the cluster secret; else $CHUYI_CLUSTER_SECRET.
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
    /// Concurrent writers, each with one put outstanding.
    #[arg(long, default_value_t = 1)]
    writers: usize,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Linearizable reads after the writes, one at a time.
    #[arg(long, default_value_t = 2000)]
    reads: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct MetaCount {
    /// Metadata members, comma-separated.
    #[arg(long, value_name = "ADDRS")]
    meta: String,
    /// File with the cluster secret; else $CHUYI_CLUSTER_SECRET.
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
    /// Objects to fill the bucket with.
    #[arg(long, default_value_t = 10_000_000)]
    objects: u64,
    /// Concurrent writers, each with one put outstanding.
    #[arg(long, default_value_t = 64)]
    writers: usize,
    /// Objects per timed stretch of the fill; a tenth of --objects when
    /// not given (a million of ten million).
    #[arg(long)]
    step: Option<u64>,
    /// Bucket sizes at which to stop and measure, comma-separated; 0, a
    /// tenth, half and all of --objects when not given.
    #[arg(long, value_delimiter = ',')]
    checkpoints: Vec<u64>,
    /// Timed pages per kind of listing at each checkpoint.
    #[arg(long, default_value_t = 50)]
    list_pages: usize,
    /// A member's process: ID,PID,DATA_DIR; one per member.
    #[arg(long = "member", value_name = "ID,PID,DIR", value_parser = member_process, required = true)]
    members: Vec<chuyi_bench::count::MemberProcess>,
    /// An empty member, started and not yet added, to add once the bucket
    /// is full: ID,ADDR,PID,DATA_DIR.
    #[arg(long, value_name = "ID,ADDR,PID,DIR", value_parser = joiner)]
    joiner: Option<chuyi_bench::count::Joiner>,
    /// Seed of the listings' random start keys and shards.
    #[arg(long, default_value_t = 14)]
    seed: u64,
    /// Print the report as one JSON object instead of markdown tables.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    json_out: Option<PathBuf>,
}

/// `ID,PID,DIR` (DIR may hold commas).
fn member_process(text: &str) -> Result<chuyi_bench::count::MemberProcess, String> {
    let mut parts = text.splitn(3, ',');
    let mut next = |what: &str| parts.next().filter(|p| !p.is_empty()).ok_or(format!("{text:?} has no {what}"));
    let id = next("member id")?.parse().map_err(|e| format!("member id: {e}"))?;
    let pid = next("pid")?.parse().map_err(|e| format!("pid: {e}"))?;
    Ok(chuyi_bench::count::MemberProcess { id, pid, data_dir: PathBuf::from(next("data dir")?) })
}

/// `ID,ADDR,PID,DIR`.
fn joiner(text: &str) -> Result<chuyi_bench::count::Joiner, String> {
    let (id, rest) = text.split_once(',').ok_or(format!("{text:?} is not ID,ADDR,PID,DIR"))?;
    let (addr, rest) = rest.split_once(',').ok_or(format!("{text:?} is not ID,ADDR,PID,DIR"))?;
    let process = member_process(&format!("{id},{rest}"))?;
    Ok(chuyi_bench::count::Joiner { process, addr: addr.to_string() })
}

#[derive(Debug, Args)]
struct NodeLoad {
    /// The node's address: "host:port" or "unix:/path".
    #[arg(long, value_name = "ADDR")]
    node: Endpoint,
    /// File with the cluster secret; else $CHUYI_CLUSTER_SECRET.
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    disk: DiskId,
    /// Bytes of the region, from chunk 0 of --owner on ("1GiB").
    #[arg(long, default_value = "1GiB")]
    size: ByteSize,
    /// randread or randwrite.
    #[arg(long)]
    op: Op,
    /// Bytes per request, a multiple of 4096.
    #[arg(long, default_value_t = 4096)]
    bs: u64,
    /// Requests in flight at all times.
    #[arg(long, default_value_t = 1)]
    qd: usize,
    /// Length of the measured window. 0 with --prefill: prefill only.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Load before the window that is not measured.
    #[arg(long, default_value_t = 1.0)]
    warmup_seconds: f64,
    /// Write the whole region (1 MiB writes) before the load.
    #[arg(long)]
    prefill: bool,
    /// Client connections; default one per 8 requests in flight.
    #[arg(long)]
    connections: Option<usize>,
    /// Worker threads of the client's runtime.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// The node's chunk size (4MiB unless its config says otherwise).
    #[arg(long, default_value = "4MiB")]
    chunk_size: ByteSize,
    /// Owner id of the region's chunks.
    #[arg(long, default_value_t = 0xBE7C_0000)]
    owner: u64,
    /// Seed of the offsets; random when not given.
    #[arg(long)]
    seed: Option<u64>,
    /// Print the result as one JSON object instead of the plain line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct NbdLoadArgs {
    /// The NBD server's `host:port`.
    #[arg(long, default_value = "127.0.0.1:10899")]
    addr: String,
    #[arg(long, default_value = "bench")]
    export: String,
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Requests outstanding on each connection.
    #[arg(long, default_value_t = 32)]
    depth: usize,
    #[arg(long, default_value = "4KiB")]
    block: ByteSize,
    /// Offsets within the first SPAN bytes of the export (all of it by
    /// default).
    #[arg(long)]
    span: Option<ByteSize>,
    #[arg(long)]
    write: bool,
    #[arg(long, default_value_t = 3)]
    warmup_seconds: u64,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Print the result as one JSON object instead of the plain line.
    #[arg(long)]
    json: bool,
}

fn nbd_load(args: NbdLoadArgs) -> anyhow::Result<()> {
    let load = chuyi_bench::nbd_load::NbdLoad {
        addr: args.addr,
        export: args.export,
        connections: args.connections,
        depth: args.depth,
        block_bytes: u32::try_from(args.block.0).context("--block")?,
        span_bytes: args.span.map_or(0, |s| s.0),
        write: args.write,
        warmup: Duration::from_secs(args.warmup_seconds),
        duration: Duration::from_secs(args.seconds),
    };
    let r = chuyi_bench::nbd_load::run(&load)?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} x QD{}: {:.0} IOPS, p50 {:.0} us, p99 {:.0} us, others {:.1} us CPU/op",
            r.connections, r.depth, r.iops, r.latency.p50_us, r.latency.p99_us, r.others_us_per_op
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = match Cli::parse().command {
        Command::NodeLoad(args) => args,
        Command::MetaLoad(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            return runtime.block_on(meta_load(args));
        }
        Command::MetaCount(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            return runtime.block_on(meta_count(args));
        }
        Command::NbdServe { nodes, volume_mib, listen, node_unix, encrypted } => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            return runtime.block_on(chuyi_bench::nbd_serve::run(nodes, volume_mib, &listen, node_unix, encrypted));
        }
        Command::NbdLoad(args) => return nbd_load(args),
        Command::S3Load(args) => {
            // The gateway in this process logs why it failed a request.
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
                )
                .with_writer(std::io::stderr)
                .init();
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            return runtime.block_on(s3_load(args));
        }
        Command::Recovery(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let spec = chuyi_bench::recovery::RecoverySpec {
                nodes: args.nodes,
                volume_mib: args.volume_mib,
                degraded_write_mib: args.degraded_write_mib,
                heartbeat_timeout_ms: args.heartbeat_timeout_ms,
                recovery_mb_per_s: args.recovery_mb_per_s,
            };
            let report = runtime.block_on(chuyi_bench::recovery::run(spec))?;
            println!("{}", serde_json::to_string(&report)?);
            return Ok(());
        }
    };
    anyhow::ensure!(args.client_threads > 0, "--client-threads must be above zero");
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.client_threads).enable_all().build()?;
    runtime.block_on(node_load(args))
}

async fn node_load(args: NodeLoad) -> anyhow::Result<()> {
    let region = Region::new(args.owner, args.size.0, args.chunk_size.0, args.bs)?;
    let admin = Credential::load(args.secret_file.as_deref(), Principal::admin())?.identity(Door::Node);
    let connections = args.connections.unwrap_or(args.qd.div_ceil(INFLIGHT_PER_CONNECTION)).max(1);
    let target = NodeTarget::connect(&args.node, &admin, args.disk, connections)
        .await
        .with_context(|| format!("connecting to {}", args.node))?;
    let stat = target.disk_stat().await?;
    anyhow::ensure!(
        stat.capacity_bytes >= region.size_bytes,
        "--size {} is larger than disk {} ({})",
        args.size,
        args.disk,
        ByteSize(stat.capacity_bytes)
    );
    if args.prefill {
        let done = prefill(&target, &region).await.context("prefill")?;
        let mb_per_s = done.bytes as f64 / done.elapsed.as_secs_f64() / 1e6;
        eprintln!("prefilled {} in {:.1}s ({mb_per_s:.0} MB/s)", ByteSize(done.bytes), done.elapsed.as_secs_f64());
        if args.seconds == 0.0 {
            return Ok(());
        }
    }
    let spec = LoadSpec {
        op: args.op,
        region,
        queue_depth: args.qd,
        warmup: seconds("--warmup-seconds", args.warmup_seconds)?,
        measure: seconds("--seconds", args.seconds)?,
        seed: args.seed.unwrap_or_else(rand::random),
    };
    let result = load::run(&target, &spec).await?;
    let report = Report::new(&spec, &result, target.connections(), args.client_threads, stat.direct_io);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}

fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).with_context(|| format!("{flag} {value} is not a number of seconds"))
}

async fn meta_load(args: MetaLoad) -> anyhow::Result<()> {
    anyhow::ensure!(args.writers > 0, "--writers must be above zero");
    let admin = Credential::load(args.secret_file.as_deref(), Principal::admin())?;
    let members = args.meta.split(',').map(str::trim).map(String::from).collect();
    let client = std::sync::Arc::new(chuyi_metadata::client::MetaClient::new(members, &admin)?);
    let spec = chuyi_bench::meta::MetaSpec {
        writers: args.writers,
        measure: seconds("--seconds", args.seconds)?,
        reads: args.reads,
    };
    let r = chuyi_bench::meta::run(client, spec).await?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "writers {:>3}  puts/s {:>8.0}  put p50 {:>7.0} us p99 {:>7.0} us  read p50 {:>6.0} us p99 {:>6.0} us",
            r.writers,
            r.puts_per_s,
            r.put_latency.p50_us,
            r.put_latency.p99_us,
            r.read_latency.p50_us,
            r.read_latency.p99_us
        );
    }
    Ok(())
}

async fn meta_count(args: MetaCount) -> anyhow::Result<()> {
    let admin = Credential::load(args.secret_file.as_deref(), Principal::admin())?;
    let addrs = args.meta.split(',').map(str::trim).map(String::from).collect();
    let client = std::sync::Arc::new(chuyi_metadata::client::MetaClient::new(addrs, &admin)?);
    let checkpoints = if args.checkpoints.is_empty() {
        chuyi_bench::count::CountSpec::default_checkpoints(args.objects)
    } else {
        args.checkpoints.iter().copied().collect()
    };
    let members = args.members.len();
    let spec = chuyi_bench::count::CountSpec {
        objects: args.objects,
        writers: args.writers,
        step: args.step.unwrap_or(args.objects / 10).max(1),
        checkpoints,
        list_pages: args.list_pages,
        members: args.members,
        joiner: args.joiner,
        seed: args.seed,
        label: format!("{members} member{}", if members == 1 { "" } else { "s" }),
    };
    let report = chuyi_bench::count::run(client, spec).await?;
    emit(&report, &report.markdown(), args.json, args.json_out.as_deref())
}

async fn s3_load(args: S3LoadArgs) -> anyhow::Result<()> {
    let per_size = |flag: &str, values: &[usize], i: usize| -> anyhow::Result<usize> {
        match values {
            [one] => Ok(*one),
            many if many.len() == args.sizes.len() => Ok(many[i]),
            _ => anyhow::bail!("--{flag} takes one value or one per size ({} sizes)", args.sizes.len()),
        }
    };
    let mut sizes = Vec::with_capacity(args.sizes.len());
    for (i, size) in args.sizes.iter().enumerate() {
        sizes.push(chuyi_bench::s3_load::SizeSpec {
            object_bytes: size.0,
            objects: per_size("objects", &args.objects, i)?,
            concurrency: per_size("concurrency", &args.concurrency, i)?,
        });
    }
    let spec = chuyi_bench::s3_load::S3LoadSpec {
        nodes: args.nodes,
        sizes,
        get_rounds: args.get_rounds,
        list_rounds: args.list_rounds,
        payload: args.payload,
        gateway_threads: args.gateway_threads,
        paths: args.paths.clone(),
        data: args.data.clone(),
    };
    let report = chuyi_bench::s3_load::run(spec).await?;
    emit(&report, &report.markdown(), args.json, args.json_out.as_deref())
}

/// A report as JSON (`--json`) or markdown on stdout, and as JSON in
/// `json_out` when given.
fn emit(
    report: &impl serde::Serialize,
    markdown: &str,
    json: bool,
    json_out: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    if let Some(file) = json_out {
        std::fs::write(file, serde_json::to_string(report)?).with_context(|| format!("writing {}", file.display()))?;
    }
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        print!("{markdown}");
    }
    Ok(())
}
