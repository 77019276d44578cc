//! `nodeimg build`: the whole cluster — base and every node — as a
//! directory of reproducible artefacts (docs/build.md).

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use imagegen::fs::Timestamp;
use pipeline::board::Board;
use pipeline::build::{build, BuildRequest, SecretsMode};
use std::path::PathBuf;
use std::process::ExitCode;

/// Build a cluster's artefacts: the base image once (zstd + bmap), then
/// every node as a delta over it, a manifest and SHA256SUMS. Rootless;
/// incremental (only what changed is rebuilt); reproducible with
/// SOURCE_DATE_EPOCH.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The cluster file (docs/cluster.md).
    #[arg(
        long,
        short = 'c',
        value_name = "FILE",
        required_unless_present = "config_positional",
        conflicts_with = "config_positional"
    )]
    pub config: Option<PathBuf>,
    /// The cluster file, given without `--config` (the older form).
    #[arg(value_name = "CONFIG", hide = true)]
    pub config_positional: Option<PathBuf>,
    /// Output directory. Written beside it under a temporary name and
    /// swapped into place at the end; an earlier build there is reused for
    /// what did not change.
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: PathBuf,
    /// Where the nodes' secret files go: `embed` puts them into each node's
    /// delta; `defer` keeps every private key, token, password hash and the
    /// age key out of the artefacts (sealed per node, opened only by
    /// `nodeimg flash DIR --secrets STATE`).
    #[arg(long, value_enum, default_value = "embed")]
    pub secrets: Secrets,
    /// Write full node images (nodes/HOST.img.zst) instead of deltas.
    #[arg(long)]
    pub full_images: bool,
    /// The state file with the cluster's generated secrets (default:
    /// cluster.state beside the cluster file, created 0600 when missing). A
    /// path given here must exist unless --init-state. Written only after
    /// the build succeeded.
    #[arg(long, value_name = "PATH")]
    pub state: Option<PathBuf>,
    /// Create the --state file when it does not exist (new CA, tokens and
    /// keys). Without it a missing --state is refused, so a mistyped path in
    /// CI never starts a new cluster identity.
    #[arg(long)]
    pub init_state: bool,
    /// Rebuild everything, and replace an output directory that does not
    /// hold an earlier build.
    #[arg(long)]
    pub force: bool,
    /// Hash every input again instead of trusting the hashes remembered by
    /// file status (device, inode, size, mtime, ctime) in .DIR.cache/
    /// beside the output (and, for the base's source, in the download
    /// cache), and decompress the base instead of using the raw copy kept
    /// there.
    #[arg(long)]
    pub rehash: bool,
    /// Download cache for a base source given by URL.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Build even when the base lacks the tools the flavour's bootstraps run
    /// (kubeadm, kubelet, kubectl, a runtime and helm; k3s); without it such
    /// a base is refused, naming the provisioning recipe that installs them.
    #[arg(long)]
    pub no_tool_check: bool,
    /// Print a JSON summary (never a secret) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Secrets {
    Embed,
    Defer,
}

pub fn run(args: BuildArgs) -> Result<ExitCode> {
    let config = args
        .config
        .clone()
        .or_else(|| args.config_positional.clone())
        .context("no cluster file: give --config FILE")?;
    crate::signals::doing(format!(
        "building {} into {}",
        config.display(),
        args.out.display()
    ));
    let _stage = tracing::info_span!("build").entered();
    let steps = crate::progress::Steps::new(args.json);
    let cluster = super::stamp::load_cluster(&config)?;
    let (base, firmware) = cluster.base_specs();
    let board = Board::resolve(&cluster.board_ref())?;
    let mut state = super::stamp::open_state(args.state.as_deref(), args.init_state, &cluster)?;
    let state_path = state.path().to_path_buf();
    // [base] provision runs when the base is built (Linux, root); refused
    // here, before anything is written, when this machine cannot run it.
    // Its log goes beside the output directory (DIR.provision.log).
    let provision = super::base::provision_for(&base, &cluster.versions, &args.out)?;
    let epoch = imagegen::fs::timestamp::source_date_epoch()?;
    let now = Timestamp::now().context("reading the time")?;
    let secrets = match args.secrets {
        Secrets::Embed => SecretsMode::Embed,
        Secrets::Defer => SecretsMode::Defer,
    };
    let outcome = build(
        &BuildRequest {
            cluster: &cluster,
            board,
            base,
            firmware,
            out: args.out.clone(),
            state: &state,
            secrets,
            full_images: args.full_images,
            force: args.force,
            rehash: args.rehash,
            cache_dir: args.cache_dir.clone(),
            now,
            epoch,
            provision: provision.as_ref(),
            tool_check: !args.no_tool_check,
        },
        &steps,
    )
    .with_context(|| format!("building {}", config.display()))?;
    steps.done();
    // Only a build that succeeded keeps the secrets it generated.
    state
        .save()
        .with_context(|| format!("cluster state {}", state_path.display()))?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&outcome)?);
        return Ok(ExitCode::SUCCESS);
    }
    // `--out dist/` is shown as `dist`, so the paths below read `dist/…`.
    let out = args.out.display().to_string();
    let out = match out.trim_end_matches('/') {
        "" => "/",
        t => t,
    };
    sayln!(
        "built {} ({} nodes) in {out}/: base {}, {} stamped, {} unchanged",
        cluster.name,
        cluster.nodes.len(),
        if outcome.base_rebuilt {
            "built"
        } else {
            "unchanged"
        },
        outcome.stamped.len(),
        outcome.reused.len()
    );
    sayln!("  {out}/base.img.zst, {out}/base.img.bmap, {out}/nodes/, {out}/manifest.json, {out}/SHA256SUMS");
    let first = cluster
        .nodes
        .first()
        .map_or("NODE", |n| n.hostname.as_str());
    let state_hint = if matches!(secrets, SecretsMode::Defer) {
        format!(" --secrets {}", state_path.display())
    } else {
        String::new()
    };
    sayln!("check:  (cd {out} && sha256sum -c SHA256SUMS)");
    sayln!("flash:  sudo nodeimg flash {out} --device /dev/sdX={first}{state_hint}   (repeat --device DEV=NODE for more cards)");
    Ok(ExitCode::SUCCESS)
}
