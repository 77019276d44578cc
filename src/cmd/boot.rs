//! `nodeimg boot`: boots built nodes under QEMU and reports their first
//! boot (docs/boot.md). The machinery is in the `vm` crate.

use crate::exit::Code;
use anyhow::{bail, Context, Result};
use clap::Args;
use pipeline::build::manifest::{BuildManifest, MANIFEST};
use pipeline::secrets::State;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use vm::disk::DiskSource;
use vm::run::{NodeSpec, Options};

/// Boot nodes under QEMU (qemu-system-aarch64) before any card is written:
/// each guest writes to a throw-away copy, SOURCE never changes. Waits for
/// every node's first-boot report (and its role bootstrap's), then powers
/// the guests off and prints a table. Exit 0 when all succeeded, 6 when a
/// node booted but a first-boot unit failed or gave no result, 7 when a
/// node did not boot.
#[derive(Debug, Args)]
pub struct BootArgs {
    /// A node image, a base image (with --delta), or a `nodeimg build`
    /// output directory (with --node or --all).
    #[arg(value_name = "SOURCE")]
    pub source: PathBuf,
    /// Boot this node of a build directory (repeatable); with an image,
    /// the name its log and table row get.
    #[arg(long, value_name = "NAME")]
    pub node: Vec<String>,
    /// Boot every node of a build directory together on one virtual LAN.
    #[arg(long, conflicts_with = "node")]
    pub all: bool,
    /// A node's delta over SOURCE (a base image); repeat to boot several
    /// nodes of that base together (named by --node in the same order, else
    /// by the file names).
    #[arg(long, value_name = "FILE")]
    pub delta: Vec<PathBuf>,
    /// The cluster's state file: opens the secrets a build made with
    /// `--secrets defer` into the throw-away disk.
    #[arg(long, value_name = "STATE")]
    pub secrets: Option<PathBuf>,
    /// A generic arm64 kernel to boot instead of the image's (Raspberry Pi
    /// images whose /boot has none): a kernel file, or a Debian kernel
    /// package (linux-image-VERSION-arm64 .deb, recognised by its content)
    /// by path or by http(s) URL with --kernel-sha256. A package is
    /// unpacked into the temporary directory and booted with an initramfs
    /// made from its modules and the image's klibc-utils. Downloads are
    /// cached by SHA-256 in $XDG_CACHE_HOME/nodeimg (else
    /// ~/.cache/nodeimg), so a second run does not download again.
    #[arg(long, value_name = "FILE|URL")]
    pub kernel: Option<String>,
    /// The SHA-256 (64 hex digits) of --kernel: required for a URL, checked
    /// for a path; a mismatch is refused and nothing is kept.
    #[arg(long, value_name = "HEX", requires = "kernel")]
    pub kernel_sha256: Option<String>,
    /// The initrd for --kernel (for a package: instead of the initramfs
    /// nodeimg makes).
    #[arg(long, value_name = "FILE", requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// Seconds to wait for every result.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub timeout: u64,
    /// Stream every console to the terminal (stderr), prefixed by the node.
    #[arg(long)]
    pub console: bool,
    /// Print the results as JSON (stdout).
    #[arg(long)]
    pub json: bool,
    /// Give the (one) node's console to the terminal (QEMU's Ctrl-A x
    /// quits); nothing is checked.
    #[arg(long, conflicts_with_all = ["json", "console", "all"])]
    pub shell: bool,
    /// Give each guest a second NIC on QEMU's user-mode network (DHCP, the
    /// host's internet) besides the cluster LAN.
    #[arg(long)]
    pub uplink: bool,
    /// Boot an extlinux image by loading its kernel directly, even when
    /// U-Boot's QEMU build (package u-boot-qemu) is installed.
    #[arg(long)]
    pub direct: bool,
    /// Where the console logs go (NODE.log).
    #[arg(long, value_name = "DIR", default_value = "nodeimg-boot-logs")]
    pub log_dir: PathBuf,
    /// Guest memory in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    pub memory: u32,
    /// Guest CPUs.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub cpus: u32,
    /// Wait for each node's first-boot check (nodeimg-firstboot) only, not
    /// for its role bootstrap: for CI under emulation, where a kubeadm or
    /// k3s bootstrap takes longer than a job should wait.
    #[arg(long)]
    pub firstboot_only: bool,
}

static STOP: AtomicBool = AtomicBool::new(false);

pub fn run(a: BootArgs) -> Result<ExitCode> {
    let nodes = nodes(&a)?;
    for (i, n) in nodes.iter().enumerate() {
        if nodes[..i].iter().any(|m| m.name == n.name) {
            bail!("node {} is selected twice", n.name);
        }
    }
    if a.shell && nodes.len() != 1 {
        bail!("--shell boots exactly one node ({} selected)", nodes.len());
    }
    // Before `cooperate`: Ctrl-C during a download ends it at once, its
    // partial file kept in the cache to resume.
    let kernel = kernel_override(&a)?;
    crate::signals::cooperate(
        &STOP,
        "every QEMU was stopped and the temporary files removed",
    );
    let progress = |s: &str| eprintln!("nodeimg: {s}");
    let quiet = |_: &str| {};
    let opts = Options {
        timeout: Duration::from_secs(a.timeout),
        console: a.console,
        log_dir: a.log_dir.clone(),
        kernel,
        shell: a.shell,
        uplink: a.uplink,
        direct: a.direct,
        memory_mib: a.memory,
        cpus: a.cpus,
        firstboot_only: a.firstboot_only,
        stop: &STOP,
        progress: if a.json { &quiet } else { &progress },
    };
    let results = vm::run::run(&nodes, &opts)?;
    if crate::signals::interrupted() || a.shell {
        return Ok(ExitCode::SUCCESS);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        print!("{}", vm::run::table(&results));
    }
    let code = if results.iter().any(|r| r.outcome == "no-boot") {
        Code::NoBoot
    } else if results.iter().any(|r| r.outcome != "ok") {
        Code::FirstBootFailed
    } else {
        return Ok(ExitCode::SUCCESS);
    };
    Ok(code.into())
}

/// `--kernel`, `--kernel-sha256` and `--initrd`: a URL is downloaded
/// into the cache (pipeline's fetch: verified, resumed, kept by SHA-256),
/// and a Debian package is handed to the vm crate to unpack.
fn kernel_override(a: &BootArgs) -> Result<vm::bootspec::Override> {
    let Some(k) = &a.kernel else {
        return Ok(vm::bootspec::Override {
            kernel: None,
            initrd: a.initrd.clone(),
            package: None,
        });
    };
    let url = pipeline::base::fetch::is_url(k);
    if url && a.kernel_sha256.is_none() {
        return Err(crate::cmd::usage::usage(format!(
            "--kernel {k}: a URL needs --kernel-sha256 HEX (the SHA-256 of the package, e.g. from Debian's Packages index)"
        )));
    }
    if let Some(h) = &a.kernel_sha256 {
        if pipeline::base::manifest::from_hex32(h).is_none() {
            return Err(crate::cmd::usage::usage(format!(
                "--kernel-sha256 {h:?}: not a SHA-256 (64 hex digits)"
            )));
        }
    }
    if url && !a.json {
        eprintln!("nodeimg: fetching {k} (cached by SHA-256)");
    }
    let fetched = pipeline::base::fetch::fetch(
        k,
        a.kernel_sha256.as_deref(),
        &pipeline::base::fetch::FetchOptions::default(),
        &mut |_, _| {},
    )?;
    let path = fetched.path;
    if vm::kernel_pkg::is_deb(&path) {
        return Ok(vm::bootspec::Override {
            kernel: None,
            initrd: a.initrd.clone(),
            package: Some(path),
        });
    }
    if url {
        bail!(pipeline::Error::refused(
            k.as_str(),
            "not a Debian package (no ar archive starting with debian-binary): a --kernel URL must name a linux-image .deb"
        ));
    }
    Ok(vm::bootspec::Override {
        kernel: Some(path),
        initrd: a.initrd.clone(),
        package: None,
    })
}

/// The nodes SOURCE and the flags select.
fn nodes(a: &BootArgs) -> Result<Vec<NodeSpec>> {
    if a.source.is_dir() {
        return build_nodes(a);
    }
    if a.all {
        bail!("--all needs a build directory as SOURCE");
    }
    if !a.source.is_file() {
        bail!("{}: no such image or build directory", a.source.display());
    }
    let deltas: Vec<Option<PathBuf>> = if a.delta.is_empty() {
        vec![None]
    } else {
        a.delta.iter().cloned().map(Some).collect()
    };
    if !a.node.is_empty() && a.node.len() != deltas.len() {
        bail!(
            "{} --node names for {} node(s): give one name per --delta, or none",
            a.node.len(),
            deltas.len()
        );
    }
    Ok(deltas
        .into_iter()
        .enumerate()
        .map(|(i, delta)| NodeSpec {
            name: match (a.node.get(i), &delta) {
                (Some(n), _) => n.clone(),
                (None, Some(d)) => stem(d),
                (None, None) => stem(&a.source),
            },
            disk: DiskSource {
                image: a.source.clone(),
                delta,
            },
            ops: Vec::new(),
        })
        .collect())
}

fn stem(p: &Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy())
        .unwrap_or_default()
        .split('.')
        .next()
        .unwrap_or("node")
        .to_string()
}

fn build_nodes(a: &BootArgs) -> Result<Vec<NodeSpec>> {
    let dir = &a.source;
    if !a.delta.is_empty() {
        bail!("--delta: a build directory already holds each node's delta");
    }
    let m = BuildManifest::load(&dir.join(MANIFEST))?;
    let names: Vec<String> = if a.all {
        m.nodes.iter().map(|n| n.hostname.clone()).collect()
    } else if a.node.is_empty() {
        bail!(
            "{}: a build directory; choose nodes with --node NAME or --all",
            dir.display()
        );
    } else {
        a.node.clone()
    };
    let state = match &a.secrets {
        Some(p) => Some(State::open(p, &m.cluster)?),
        None => None,
    };
    let base = dir.join(&m.base.image);
    let mut out = Vec::new();
    for name in names {
        let n = m.node(&name).ok_or_else(|| {
            pipeline::Error::refused(
                format!("node {name}"),
                format!("not in {}", dir.join(MANIFEST).display()),
            )
        })?;
        let artefact = dir.join(&n.artefact);
        let disk = if n.artefact.ends_with(".delta") {
            DiskSource {
                image: base.clone(),
                delta: Some(artefact),
            }
        } else {
            DiskSource {
                image: artefact,
                delta: None,
            }
        };
        let ops = match (&n.secrets, &state) {
            (Some(file), Some(st)) => {
                let p = dir.join(file);
                let sealed = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
                pipeline::build::deferred::open(st, &name, &sealed, &p.display().to_string())?
            }
            (Some(_), None) => bail!(
                "node {name} was built with --secrets defer: give the cluster's state file with --secrets STATE"
            ),
            (None, _) => Vec::new(),
        };
        out.push(NodeSpec { name, disk, ops });
    }
    Ok(out)
}
