//! `chuyi`: the one binary of the cluster. Each role is a subcommand
//! (`chuyi node`), and so is each admin command.

mod node;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "chuyi", version, about = "Chuyi distributed block and object storage")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a storage node from its config file.
    Node {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Show a storage node's disks.
    Disks {
        /// The node's address: "host:port" or "unix:/path".
        #[arg(long, value_name = "ADDR")]
        node: String,
        /// File with the cluster secret; else $CHUYI_CLUSTER_SECRET.
        #[arg(long, value_name = "FILE")]
        secret_file: Option<PathBuf>,
        /// Print JSON-like debug output instead of a table.
        #[arg(long)]
        raw: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Node { config } => node::run(&config).await,
            Command::Disks { node, secret_file, raw } => node::disks(&node, secret_file.as_deref(), raw).await,
        }
    })
}
