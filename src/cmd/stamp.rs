//! `nodeimg stamp`: each node's identity, keys, secrets and role bootstrap
//! as a delta over the base (docs/stamp.md).

use super::usage::usage;
use anyhow::{bail, Context, Result};
use clap::Args;
use imagegen::fs::Timestamp;
use pipeline::cluster::Cluster;
use pipeline::secrets::State;
use pipeline::stamp::{cluster_nix, NodeStamp, Output, Shared, Stamper};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Stamp nodes of a cluster over a base image: hostname, SSH keys, host keys,
/// age key, cluster secrets, static address and the role's first-boot
/// bootstrap, written as a small delta (or a full image). Runs without root.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["node", "all"]))]
pub struct StampArgs {
    /// The cluster file (docs/cluster.md).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    /// The base image made by `nodeimg base` (raw). Its manifest
    /// (BASE.json) saves hashing it when it still matches.
    #[arg(long, value_name = "IMAGE")]
    pub base: PathBuf,
    /// Stamp this node (its hostname in the cluster file).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Stamp every node of the cluster file (needs --out-dir).
    #[arg(long)]
    pub all: bool,
    /// Write the node's delta to FILE (with --node).
    #[arg(short = 'o', long = "output", value_name = "FILE", conflicts_with_all = ["out_dir", "image"])]
    pub output: Option<PathBuf>,
    /// Write one delta per node as DIR/HOSTNAME.delta, plus DIR/known_hosts
    /// (when nodes have host keys) and DIR/cluster.nix.
    #[arg(long, value_name = "DIR", conflicts_with = "image")]
    pub out_dir: Option<PathBuf>,
    /// Write a full node image to FILE instead of a delta (with --node):
    /// a reflink of the base where the filesystem can, else a sparse copy.
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    /// The state file holding the cluster's generated secrets (default:
    /// cluster.state beside the cluster file, created 0600 when missing). A
    /// path given here must exist unless --init-state; never printed.
    #[arg(long, value_name = "PATH")]
    pub state: Option<PathBuf>,
    /// Create the --state file when it does not exist (new CA, tokens and
    /// keys). Without it a missing --state is refused, so a mistyped path
    /// never starts a new cluster identity.
    #[arg(long)]
    pub init_state: bool,
    /// Replace outputs that exist.
    #[arg(long)]
    pub force: bool,
    /// Stamp even when the base lacks the tools the flavour's bootstraps run
    /// (kubeadm, kubelet, kubectl, a runtime and helm; k3s), e.g. when they
    /// arrive another way; without it such a base is refused, naming the
    /// provisioning recipe that installs them.
    #[arg(long)]
    pub no_tool_check: bool,
    /// Print a JSON summary (node, role, files written with mode and owner,
    /// sizes; never a secret) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `--json` output.
#[derive(Serialize)]
struct Summary<'a> {
    cluster: &'a str,
    flavour: String,
    base: &'a Path,
    /// Identifies the state's secrets without revealing them.
    state_fingerprint: String,
    nodes: &'a [NodeStamp],
}

/// Loads and validates a cluster file; every problem goes to stderr on its
/// own line before the one-line error.
pub fn load_cluster(path: &Path) -> Result<Cluster> {
    report_problems(path, Cluster::load(path))
}

/// Prints each problem of an invalid cluster file on its own line and
/// returns the one-line summary error.
pub fn report_problems(path: &Path, loaded: pipeline::Result<Cluster>) -> Result<Cluster> {
    match loaded {
        Ok(c) => Ok(c),
        Err(pipeline::Error::Invalid { file, problems }) => {
            for line in pipeline::error::problem_lines(&file, &problems) {
                eprintln!("nodeimg: error: {line}");
            }
            bail!(
                "{}: {} problem{} in the cluster file; nothing was written",
                file.display(),
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            )
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Deltas committed together (see `PendingFile::commit_all`): enough for
/// the journal to group their fsyncs, few enough that a batch is committed
/// while the workers stamp the next nodes.
const COMMIT_BATCH: usize = 16;

pub fn run(args: StampArgs) -> Result<ExitCode> {
    crate::signals::doing(format!("stamping nodes of {}", args.config.display()));
    let _stage = tracing::info_span!("stamp").entered();
    let cluster = load_cluster(&args.config)?;
    let nodes: Vec<&pipeline::cluster::Node> = match &args.node {
        Some(name) => {
            let n = cluster.node(name).with_context(|| {
                let names: Vec<&str> = cluster.nodes.iter().map(|n| n.hostname.as_str()).collect();
                format!(
                    "node {name}: not in {} (nodes: {})",
                    args.config.display(),
                    names.join(", ")
                )
            })?;
            vec![n]
        }
        None => cluster.nodes.iter().collect(),
    };
    let outputs: Vec<Output> = match (&args.output, &args.out_dir, &args.image, args.all) {
        (Some(o), None, None, false) => vec![Output::Delta(o.clone())],
        (None, None, Some(i), false) => vec![Output::Image(i.clone())],
        (None, Some(d), None, _) => nodes
            .iter()
            .map(|n| Output::Delta(d.join(format!("{}.delta", n.hostname))))
            .collect(),
        (_, None, _, true) => {
            return Err(usage("--all writes one delta per node: give --out-dir DIR"))
        }
        (None, None, None, false) => {
            return Err(usage(
                "say where the node goes: -o FILE, --out-dir DIR or --image FILE",
            ))
        }
        _ => return Err(usage("give one of -o, --out-dir and --image")),
    };
    // Refuse before generating or writing anything.
    if !args.force {
        for o in &outputs {
            if o.path().exists() {
                bail!("{}: exists; give --force to replace it", o.path().display());
            }
        }
    }

    // The state first: a missing --state is refused before any work.
    let mut state = open_state(args.state.as_deref(), args.init_state, &cluster)?;
    let now = Timestamp::now()?;
    // A compressed base (`dist/base.img.zst`) is read through a raw copy
    // in a temporary directory, removed at exit or on an interrupt.
    let (base_path, _spool) = raw_base(&args.base)?;
    let stamper = Stamper::open(&base_path, now)
        .with_context(|| format!("opening base {}", args.base.display()))?;
    if !args.no_tool_check {
        stamper.check_tools(&cluster, &nodes)?;
    }
    if let Some(d) = &args.out_dir {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let shared = Shared::new(&cluster, &state)?;

    let mut done = Vec::new();
    // Nodes are independent (each its own overlay over the shared, cached
    // base; the state is read-only here), so they are stamped on every core
    // and one node's fsyncs overlap another's work. Results are reported in
    // the cluster file's order; the first failure, in that order, stops
    // the run (nodes not yet started are not stamped).
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(nodes.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| -> Result<()> {
        for _ in 0..workers {
            let tx = tx.clone();
            let (next, failed, stamper, cluster, nodes, outputs, state, shared) = (
                &next, &failed, &stamper, &cluster, &nodes, &outputs, &state, &shared,
            );
            scope.spawn(move || loop {
                use std::sync::atomic::Ordering;
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= nodes.len() || failed.load(Ordering::SeqCst) {
                    return;
                }
                let t0 = std::time::Instant::now();
                let r = stamper
                    .stamp_pending(cluster, nodes[i], state, shared, &outputs[i], args.force)
                    .with_context(|| format!("stamping {}", nodes[i].hostname));
                if r.is_err() {
                    failed.store(true, Ordering::SeqCst);
                }
                if tx.send((i, r, t0.elapsed())).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        type Stamped = (NodeStamp, Option<imagegen::sink::PendingFile>);
        let mut pending: Vec<Option<(Result<Stamped>, std::time::Duration)>> =
            (0..nodes.len()).map(|_| None).collect();
        let mut reported = 0;
        // Deltas are committed in batches (their fsyncs grouped); a batch
        // stays well under the open-file limit.
        let mut batch = Vec::new();
        for (i, r, took) in rx {
            pending[i] = Some((r, took));
            while let Some(Some((r, took))) = pending.get_mut(reported).map(Option::take) {
                let (s, file) = match r {
                    Ok(v) => v,
                    Err(e) => {
                        // The nodes before it are done, as when they were
                        // stamped one by one.
                        imagegen::sink::PendingFile::commit_all(std::mem::take(&mut batch), 0o600)?;
                        return Err(e);
                    }
                };
                batch.extend(file);
                if batch.len() >= COMMIT_BATCH {
                    imagegen::sink::PendingFile::commit_all(std::mem::take(&mut batch), 0o600)?;
                }
                tracing::info!(
                    node = %s.node,
                    secs = format_args!("{:.3}", took.as_secs_f64()),
                    "stamped"
                );
                if !args.json {
                    sayln!(
                        "{} ({}): {} {} — {} changed, {} operations",
                        s.node,
                        s.role,
                        s.kind,
                        s.output.display(),
                        human(s.changed_bytes),
                        s.files.len()
                    );
                }
                done.push(s);
                reported += 1;
            }
        }
        imagegen::sink::PendingFile::commit_all(batch, 0o600)?;
        Ok(())
    })?;
    // Every node is written: now the secrets they hold are kept.
    drop(shared);
    state
        .save()
        .with_context(|| format!("cluster state {}", state.path().display()))?;
    if let Some(d) = &args.out_dir {
        let known = state.known_hosts(&cluster);
        if !known.is_empty() {
            write_public(&d.join("known_hosts"), &known)?;
        }
        write_public(&d.join("cluster.nix"), &cluster_nix(&cluster))?;
    }
    if args.json {
        let summary = Summary {
            cluster: &cluster.name,
            flavour: cluster.flavour.to_string(),
            base: &args.base,
            state_fingerprint: state.fingerprint(),
            nodes: &done,
        };
        outln!("{}", serde_json::to_string_pretty(&summary)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// `base` itself when it is a raw image; else its decompressed bytes in a
/// sparse file of a registered temporary directory (kept alive by the
/// returned guard).
fn raw_base(base: &Path) -> Result<(PathBuf, Option<imagegen::sink::PendingDir>)> {
    use imagegen::source::{Compression, ImageSource};
    let c = Compression::of_file(base).with_context(|| format!("base {}", base.display()))?;
    if !c.is_compressed() {
        return Ok((base.to_path_buf(), None));
    }
    notice!(
        "{}: {c}-compressed; decompressing it to a temporary file (give the raw base to skip this)",
        base.display()
    );
    let spool = imagegen::sink::PendingDir::temp("nodeimg-stamp-")?;
    let raw = spool.path().join("base.img");
    imagegen::sink::write_image(
        ImageSource::open(base)?,
        &raw,
        imagegen::sink::OutputFormat::Raw,
        None,
    )
    .with_context(|| format!("decompressing {}", base.display()))?;
    Ok((raw, Some(spool)))
}

/// The cluster's state with whatever `cluster` needs generated, in memory:
/// the caller saves it (`State::save`) only once its outputs are written.
/// An explicit `path` must exist unless `init`; the default path (beside
/// the cluster file) is created when missing.
pub fn open_state(path: Option<&Path>, init: bool, cluster: &Cluster) -> Result<State> {
    let state_path = match path {
        Some(p) => {
            if !init && std::fs::symlink_metadata(p).is_err() {
                bail!(
                    "--state {}: no such state file; check the path, or give --init-state to start a new one (new CA, tokens and keys)",
                    p.display()
                );
            }
            p.to_path_buf()
        }
        None => cluster.default_state_path(),
    };
    let mut state = State::open(&state_path, &cluster.name)
        .with_context(|| format!("cluster state {}", state_path.display()))?;
    state
        .ensure(cluster)
        .with_context(|| format!("cluster state {}", state_path.display()))?;
    Ok(state)
}

/// Writes a file that holds nothing secret (0644), replacing it atomically.
fn write_public(path: &Path, text: &str) -> Result<()> {
    Ok(imagegen::sink::write_atomic(path, text.as_bytes(), 0o644)?)
}

fn human(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}
