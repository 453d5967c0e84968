//! `chuyi credential issue`: a node's or a frontend's own credential,
//! derived from the cluster secret (`common/src/credential.rs`), so that
//! the processes that do not need the secret never hold it: a gateway
//! facing the internet, broken into, can then act as that gateway only.

use std::path::PathBuf;

use anyhow::Context;
use chuyi_common::credential::{Credential, Principal, Role};
use chuyi_common::ids::NodeId;

use crate::cluster::ClusterArgs;

#[derive(Debug, clap::Subcommand)]
pub enum CredentialCmd {
    /// Issue a storage node's or a frontend's credential (needs the
    /// cluster secret); give it to the process as its secret file.
    Issue {
        /// A storage node, by id.
        #[arg(long, conflicts_with = "frontend", required_unless_present = "frontend")]
        node: Option<NodeId>,
        /// A frontend (S3 gateway, NBD frontend), by name: the leases it
        /// may hold are those whose holder is NAME or begins with NAME:.
        #[arg(long, value_name = "NAME")]
        frontend: Option<String>,
        /// Write it to this new file, readable by its owner only, instead
        /// of printing it.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

pub fn run(args: &ClusterArgs, cmd: CredentialCmd) -> anyhow::Result<()> {
    let CredentialCmd::Issue { node, frontend, out } = cmd;
    let principal = match (node, frontend) {
        (Some(id), _) => Principal::node(id),
        (None, Some(name)) => Principal::new(Role::Frontend, name)?,
        (None, None) => anyhow::bail!("give --node ID or --frontend NAME"),
    };
    let secret = args.secret().context("issuing a credential needs the cluster secret")?;
    let credential = Credential::issue(&secret, principal)?;
    let text = credential.to_text().context("an issued credential has a file form")?;
    match out {
        Some(path) => {
            crate::key::write_private(&path, text.trim_end())?;
            println!("credential of {} written to {}", credential.principal(), path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}
