//! `nodeimg cluster`: check a cluster file and show what is public about
//! its cluster (roles, addresses, the age public key, the CA pin, host
//! keys) — never a secret.

use super::stamp::load_cluster;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use pipeline::secrets::State;
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;

/// Check a cluster file and show its public facts.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Validate the cluster file (every problem listed with its line) and
    /// show nodes, roles, addresses, the age public key, the CA's
    /// `sha256:` pin and the state's fingerprint. Reads the state file
    /// without changing it.
    Info {
        /// The cluster file.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
        /// The state file (default: cluster.state beside the cluster file).
        #[arg(long, value_name = "PATH")]
        state: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print `known_hosts` lines for the nodes' SSH host keys (from the
    /// state file), for `~/.ssh/known_hosts`.
    KnownHosts {
        /// The cluster file.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
        /// The state file (default: cluster.state beside the cluster file).
        #[arg(long, value_name = "PATH")]
        state: Option<PathBuf>,
    },
}

#[derive(Serialize)]
struct NodeInfo {
    hostname: String,
    role: String,
    address: Option<String>,
}

#[derive(Serialize)]
struct Info {
    cluster: String,
    board: String,
    flavour: String,
    api_endpoint: Option<String>,
    nodes: Vec<NodeInfo>,
    /// Whether the state file exists yet (stamp creates it).
    state: Option<PathBuf>,
    state_fingerprint: Option<String>,
    age_public_key: Option<String>,
    ca_cert_hash: Option<String>,
    /// The public half of the GitOps deploy key (never the private one).
    gitops_deploy_key: Option<String>,
}

pub fn run(args: ClusterArgs) -> Result<ExitCode> {
    match args.command {
        ClusterCommand::Info {
            config,
            state,
            json,
        } => {
            let c = load_cluster(&config)?;
            let state_path = state.unwrap_or_else(|| c.default_state_path());
            let st = if state_path.exists() {
                Some(State::open(&state_path, &c.name)?)
            } else {
                None
            };
            let file_age = c.nodes.iter().find_map(|n| match &n.age_key {
                Some(pipeline::cluster::AgeKeySource::File(k)) => Some(k.public.clone()),
                _ => None,
            });
            let info = Info {
                cluster: c.name.clone(),
                board: c.board.clone(),
                flavour: c.flavour.to_string(),
                api_endpoint: c.api_endpoint.as_ref().map(|e| e.to_string()),
                nodes: c
                    .nodes
                    .iter()
                    .map(|n| NodeInfo {
                        hostname: n.hostname.clone(),
                        role: n.role.to_string(),
                        address: n.address.map(|a| a.to_string()),
                    })
                    .collect(),
                state: st.as_ref().map(|_| state_path.clone()),
                state_fingerprint: st.as_ref().map(|s| s.fingerprint()),
                age_public_key: file_age.or_else(|| st.as_ref().and_then(|s| s.age_public_key())),
                ca_cert_hash: match &st {
                    Some(s) => s.ca_cert_hash()?,
                    None => None,
                },
                gitops_deploy_key: st
                    .as_ref()
                    .and_then(|s| s.gitops_deploy_key())
                    .map(|k| k.public.clone()),
            };
            if json {
                outln!("{}", serde_json::to_string_pretty(&info)?);
                return Ok(ExitCode::SUCCESS);
            }
            outln!(
                "cluster {} ({}, board {})",
                info.cluster,
                info.flavour,
                info.board
            );
            if let Some(e) = &info.api_endpoint {
                outln!("api endpoint: {e}");
            }
            for n in &info.nodes {
                outln!(
                    "  {:<20} {:<14} {}",
                    n.hostname,
                    n.role,
                    n.address.as_deref().unwrap_or("dhcp")
                );
            }
            match &info.state {
                Some(p) => outln!(
                    "state: {} ({})",
                    p.display(),
                    info.state_fingerprint.as_deref().unwrap_or("")
                ),
                None => outln!(
                    "state: {} does not exist yet (nodeimg stamp creates it)",
                    state_path.display()
                ),
            }
            if let Some(k) = &info.age_public_key {
                outln!("age public key: {k}");
            }
            if let Some(h) = &info.ca_cert_hash {
                outln!("CA cert hash: {h}");
            }
            if let Some(k) = &info.gitops_deploy_key {
                println!("GitOps deploy key (add it to the repository, read-only): {k}");
            }
            Ok(ExitCode::SUCCESS)
        }
        ClusterCommand::KnownHosts { config, state } => {
            let c = load_cluster(&config)?;
            let state_path = state.unwrap_or_else(|| c.default_state_path());
            let st = State::open(&state_path, &c.name)
                .with_context(|| format!("cluster state {}", state_path.display()))?;
            out!("{}", st.known_hosts(&c));
            Ok(ExitCode::SUCCESS)
        }
    }
}
