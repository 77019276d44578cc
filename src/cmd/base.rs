//! `nodeimg base`: stage 1, a board image from an upstream OS image or a
//! root tree. The work is `pipeline::base::build_base`; this module turns
//! flags and the cluster file into a request and reports the result.

use anyhow::{Context, Result};
use clap::Args;
use imagegen::fs::Timestamp;
use pipeline::base::spec::{BaseSpec, FirmwareSpec};
use pipeline::base::{build_base, BaseRequest, ProvisionHook};
use pipeline::board::Board;
use pipeline::cluster::{Cluster, Versions};
use pipeline::provision::{self, Provision};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Build a base image for a board, once, from an upstream OS image or a root tree.
///
/// Flags override the `[base]` and `[firmware]` tables of --config. Runs without
/// root and without mounts, except --provision (Linux, root, aarch64 binfmt).
#[derive(Debug, Args)]
pub struct BaseArgs {
    /// Cluster file: its `[cluster] board`, `[base]` and `[firmware]` tables
    /// are read; relative paths in it are relative to the file.
    #[arg(long, value_name = "CLUSTER.toml")]
    pub config: Option<PathBuf>,
    /// Board: `rpi5`, `odroid-c4`, or a path to a board file of the same shape.
    #[arg(long)]
    pub board: Option<String>,
    /// Source: a disk image (.img, .xz, .zst, .gz) by path or http(s) URL, or a
    /// root tree (directory or tarball); recognised by content, not by name.
    #[arg(long, value_name = "PATH|URL")]
    pub from: Option<String>,
    /// SHA-256 of the source: 64 hex digits or a SHA256SUMS file. Required for URLs.
    #[arg(long, value_name = "HEX|FILE")]
    pub sha256: Option<String>,
    /// Size of the result (e.g. 8GiB): grows the root partition and its ext4
    /// filesystem; for a root tree, the whole disk (default: content plus headroom).
    #[arg(long)]
    pub size: Option<String>,
    /// Raspberry Pi boot files (directory or tarball) laid over the boot partition.
    #[arg(long, value_name = "DIR|TARBALL")]
    pub firmware: Option<PathBuf>,
    /// Tow-Boot (Odroid C4): a release .tar.xz, its shared.disk-image.img, or a
    /// raw .bin, by path or URL; written from byte 512 with a 0xF8 MBR entry.
    #[arg(long, value_name = "PATH|URL")]
    pub towboot: Option<String>,
    /// SHA-256 of --towboot (hex or SHA256SUMS file); required for a URL.
    #[arg(long, value_name = "HEX|FILE")]
    pub towboot_sha256: Option<String>,
    /// Move OS partitions that start inside the firmware region instead of refusing.
    #[arg(long)]
    pub relocate: bool,
    /// Directory tree copied into the root filesystem.
    #[arg(long, value_name = "DIR")]
    pub overlay: Option<PathBuf>,
    /// Owners and modes for --overlay (the `--owner-map` format of `nodeimg fs`).
    #[arg(long, value_name = "FILE")]
    pub owner_map: Option<PathBuf>,
    /// Enable a systemd unit as `systemctl --root enable` does (repeatable).
    #[arg(long, value_name = "UNIT")]
    pub enable: Vec<String>,
    /// Disable a systemd unit (repeatable).
    #[arg(long, value_name = "UNIT")]
    pub disable: Vec<String>,
    /// Mask a systemd unit (repeatable).
    #[arg(long, value_name = "UNIT")]
    pub mask: Vec<String>,
    /// Add a word to the kernel command line (repeatable).
    #[arg(long, value_name = "WORD")]
    pub cmdline_append: Vec<String>,
    /// Remove a word from the kernel command line (repeatable).
    #[arg(long, value_name = "WORD")]
    pub cmdline_remove: Vec<String>,
    /// Add a line to the Raspberry Pi config.txt (repeatable).
    #[arg(long, value_name = "LINE")]
    pub config_txt: Vec<String>,
    /// Set a sysctl in /etc/sysctl.d/90-nodeimg.conf (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub sysctl: Vec<String>,
    /// Load a kernel module at boot (/etc/modules-load.d/nodeimg.conf; repeatable).
    #[arg(long, value_name = "MODULE")]
    pub modules_load: Vec<String>,
    /// Remove swap from /etc/fstab and mask the swap services.
    #[arg(long)]
    pub disable_swap: bool,
    /// Enable the SSH server (and the RPi boot partition's `ssh` file).
    #[arg(long)]
    pub ssh: bool,
    /// Time zone, e.g. Europe/Berlin.
    #[arg(long)]
    pub timezone: Option<String>,
    /// Locale, e.g. en_GB.UTF-8.
    #[arg(long)]
    pub locale: Option<String>,
    /// Run SCRIPT as root inside the image's root filesystem (a chroot; aarch64
    /// programs through binfmt_misc) after the customisations; repeatable, in
    /// order; added after `[base]` provision. A shipped recipe's name (kubeadm,
    /// helm, k3s) runs that recipe with the `[versions]` of --config (see
    /// docs/base.md). Linux and root only. Output goes to OUT.provision.log.
    #[arg(long, value_name = "SCRIPT|RECIPE")]
    pub provision: Vec<PathBuf>,
    /// A directory copied to /run/nodeimg-provision inside the root for the
    /// scripts (the working directory; gone afterwards).
    #[arg(long, value_name = "DIR")]
    pub provision_files: Option<PathBuf>,
    /// Output image; written under a temporary name and renamed when complete.
    /// The manifest goes to OUT.json.
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// Replace existing outputs.
    #[arg(long)]
    pub force: bool,
    /// Also write OUT.bmap (bmaptool format 2.0, SHA-256) from the filesystems' maps.
    #[arg(long)]
    pub bmap: bool,
    /// Also write OUT.zst (zstd-compressed copy).
    #[arg(long)]
    pub zstd: bool,
    /// Download cache, where local sources' SHA-256s are also remembered
    /// (source-hashes/) (default: $XDG_CACHE_HOME/nodeimg, ~/.cache/nodeimg,
    /// or ~/Library/Caches/nodeimg on macOS).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Hash a local source again instead of trusting the SHA-256 remembered
    /// for it by file status (device, inode, size, mtime, ctime).
    #[arg(long)]
    pub rehash: bool,
    /// Print a JSON summary (the manifest, outputs and notes) on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: BaseArgs) -> Result<ExitCode> {
    crate::signals::doing(format!("building the base image {}", args.output.display()));
    let (board_name, mut spec, mut fw) = match &args.config {
        Some(c) => cluster_base(c)?,
        None => (None, BaseSpec::default(), FirmwareSpec::default()),
    };
    let versions = match &args.config {
        Some(c) => {
            pipeline::cluster::Cluster::load_versions(c).map_err(|e| report_invalid(e, c))?
        }
        None => Versions::default(),
    };
    merge_flags(&args, &mut spec, &mut fw)?;
    let board_name = args
        .board
        .clone()
        .or(board_name)
        .context("no board: give --board rpi5|odroid-c4|PATH or [cluster] board in --config")?;
    let board = Board::resolve(&board_name)?;
    let now = Timestamp::now().context("reading the time")?;
    let _stage = tracing::info_span!("base").entered();
    let bar = crate::progress::Steps::new(args.json);
    let req = BaseRequest {
        board,
        spec,
        firmware: fw,
        out: args.output.clone(),
        bmap: args.bmap,
        zstd: args.zstd,
        force: args.force,
        cache_dir: args.cache_dir.clone(),
        now,
        provision: None,
        fetch: pipeline::base::fetch::FetchOptions {
            rehash: args.rehash,
            ..Default::default()
        },
    };
    // Provisioning (the one root-only step) is refused before any download
    // or write when this machine cannot do it.
    let provision = provision_for(&req.spec, &versions, &req.out)?;
    let hook = |image: &Path, board: &Board, _: &BaseSpec| -> pipeline::error::Result<()> {
        match &provision {
            Some(p) => provision::run(image, board, p),
            None => Ok(()),
        }
    };
    let req = BaseRequest {
        provision: provision.as_ref().map(|_| &hook as ProvisionHook),
        ..req
    };
    let outcome = build_base(&req, &bar)?;
    bar.done();
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        for n in &outcome.notes {
            notice!("nodeimg: note: {n}");
        }
        let m = &outcome.manifest;
        let os = match &m.os {
            pipeline::os::OsProfile::Debian { pretty, .. } => pretty.clone(),
            pipeline::os::OsProfile::NixOs { version } => {
                format!("NixOS {}", version.as_deref().unwrap_or(""))
            }
        };
        sayln!(
            "{}: {} base for {} ({} bytes, sha256 {})",
            outcome.image.display(),
            os,
            m.board,
            m.image.size,
            m.image.sha256
        );
        sayln!("  manifest {}", outcome.manifest_path.display());
        for p in [&outcome.bmap, &outcome.zstd].into_iter().flatten() {
            sayln!("  {}", p.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The provisioning of `spec` (recipes rendered with `versions`), refused
/// before any download or write when this machine cannot do it; `None`
/// when there is nothing to run.
pub(crate) fn provision_for(
    spec: &BaseSpec,
    versions: &Versions,
    out: &Path,
) -> Result<Option<Provision>> {
    if spec.provision.is_empty() {
        return Ok(None);
    }
    let p = Provision::new(
        &spec.provision,
        versions,
        spec.provision_files.clone(),
        provision::log_path(out),
    )?;
    provision::preflight(&p)?;
    Ok(Some(p))
}

/// Prints the problems of an invalid cluster file, one a line, and returns
/// the error.
fn report_invalid(e: pipeline::Error, path: &Path) -> anyhow::Error {
    if let pipeline::Error::Invalid { file, problems } = &e {
        for line in pipeline::error::problem_lines(file, problems) {
            eprintln!("nodeimg: error: {line}");
        }
    }
    anyhow::Error::new(e).context(format!("reading {}", path.display()))
}

/// Flags win over the cluster file; list flags add to its lists.
fn merge_flags(a: &BaseArgs, s: &mut BaseSpec, f: &mut FirmwareSpec) -> Result<()> {
    let set = |dst: &mut Option<String>, v: &Option<String>| {
        if v.is_some() {
            dst.clone_from(v)
        }
    };
    set(&mut s.source, &a.from);
    set(&mut s.sha256, &a.sha256);
    set(&mut s.size, &a.size);
    set(&mut s.timezone, &a.timezone);
    set(&mut s.locale, &a.locale);
    if a.overlay.is_some() {
        s.overlay.clone_from(&a.overlay);
    }
    if a.owner_map.is_some() {
        s.owner_map.clone_from(&a.owner_map);
    }
    s.enable.extend(a.enable.iter().cloned());
    s.disable.extend(a.disable.iter().cloned());
    s.mask.extend(a.mask.iter().cloned());
    s.cmdline_append.extend(a.cmdline_append.iter().cloned());
    s.cmdline_remove.extend(a.cmdline_remove.iter().cloned());
    s.config_txt.extend(a.config_txt.iter().cloned());
    s.modules_load.extend(a.modules_load.iter().cloned());
    for kv in &a.sysctl {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--sysctl {kv:?}: expected KEY=VALUE"))?;
        s.sysctl.insert(k.trim().into(), v.trim().into());
    }
    s.provision.extend(a.provision.iter().cloned());
    if a.provision_files.is_some() {
        s.provision_files.clone_from(&a.provision_files);
    }
    s.disable_swap |= a.disable_swap;
    s.ssh |= a.ssh;
    if a.firmware.is_some() {
        f.boot_files.clone_from(&a.firmware);
    }
    set(&mut f.towboot, &a.towboot);
    set(&mut f.sha256, &a.towboot_sha256);
    f.relocate |= a.relocate;
    Ok(())
}

/// `[cluster] board`, `[base]` and `[firmware]` of a cluster file, read by
/// the one cluster-file parser (`pipeline::cluster`), paths resolved there.
pub(crate) fn cluster_base(path: &Path) -> Result<(Option<String>, BaseSpec, FirmwareSpec)> {
    // Nodes are not the base's business: a file without [[node]] will do.
    let cluster = super::stamp::report_problems(path, Cluster::load_base(path))?;
    let (base, fw) = cluster.base_specs();
    Ok((Some(cluster.board_ref()), base, fw))
}
