//! The cluster file (`cluster.toml`): one file that `base`, `stamp` and
//! `build` read. Every key is documented in `docs/cluster.md`.
//!
//! [`Cluster::load`] parses and validates the whole file before anything is
//! written, and reports every problem at once, each with the file, line and
//! key it concerns ([`crate::Error::Invalid`]). What it returns is checked:
//! hostnames are RFC 1123 and unique, every node has exactly one role, the
//! flavour's init node exists once, addresses sit inside their prefix and
//! outside the pod and service ranges, SSH keys and age keys parse.

mod file;
mod keys;
mod net;
mod roles;
mod validate;

pub use keys::{age_public_key, AgeKey, AgeKeySource};
pub use net::Endpoint;
pub use roles::{default_roles, RolePattern};

use crate::base::spec::{BaseSpec, FirmwareSpec};
use crate::flavour::{Flavour, Role};
use crate::{Error, Result};
use ipnet::IpNet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// A validated cluster file.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The cluster file itself.
    pub file: PathBuf,
    /// `[cluster] name`: also the key of the state file.
    pub name: String,
    /// `[cluster] board`: a built-in board name or a path to a board file.
    pub board: String,
    pub flavour: Flavour,
    /// The Kubernetes API endpoint (kubeadm: `controlPlaneEndpoint`).
    pub api_endpoint: Option<Endpoint>,
    pub pod_subnet: Option<IpNet>,
    pub service_subnet: Option<IpNet>,
    /// k3s-agent: the existing server's URL.
    pub server: Option<String>,
    /// k3s-agent: a file holding the existing server's join token.
    pub token_file: Option<PathBuf>,
    pub gitops: Option<Gitops>,
    /// `[cluster] kubeadm_token_ttl`: lifetime of the kubeadm bootstrap
    /// token, a Go duration (`8760h` by default; `0s`: never expires).
    pub kubeadm_token_ttl: String,
    /// `[cluster] sops_secret`: the secret in flux-system that holds the age
    /// key Flux decrypts with (`flux-sops` by default).
    pub sops_secret: String,
    pub base: BaseSpec,
    pub firmware: FirmwareSpec,
    /// Hostname patterns in the order they are tried.
    pub roles: Vec<RolePattern>,
    /// Nodes in file order.
    pub nodes: Vec<Node>,
    /// `[templates] dir`: overrides of the embedded templates.
    pub templates_dir: Option<PathBuf>,
    /// `[versions]`, defaults filled in.
    pub versions: Versions,
    /// `[cluster] hosts`: every node's name and address in each node's
    /// /etc/hosts.
    pub hosts: bool,
}

/// Versions of what the provisioning recipes install and the bootstraps
/// deploy (`[versions]`). Each is a plain string, checked only for
/// characters that are safe in a URL, a package pin and a shell word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versions {
    /// Kubernetes minor (`1.34`) or patch (`1.34.2`) release: the
    /// pkgs.k8s.io repository is per minor, the package pin per patch.
    pub kubernetes: String,
    /// CRI-O minor or patch release, packaged like Kubernetes.
    pub crio: String,
    /// Cilium Helm chart version.
    pub cilium: String,
    /// Flux distribution version (a semver range) of the FluxInstance.
    pub flux: String,
    /// Gateway API release whose standard CRDs go in before Cilium.
    pub gateway_api: String,
    /// Helm release.
    pub helm: String,
    /// k3s release tag (`v1.34.1+k3s1`).
    pub k3s: String,
}

impl Default for Versions {
    fn default() -> Versions {
        Versions {
            kubernetes: "1.34".into(),
            crio: "1.34".into(),
            cilium: "1.18.0".into(),
            flux: "2.x".into(),
            gateway_api: "v1.3.0".into(),
            helm: "3.19.0".into(),
            k3s: "v1.34.1+k3s1".into(),
        }
    }
}

/// The GitOps repository a kubeadm init node bootstraps Flux from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gitops {
    pub url: String,
    pub branch: String,
    pub path: String,
    /// Flux reads the repository with an SSH deploy key generated into the
    /// state (`gitops_deploy_key`; on by default for an SSH URL).
    pub deploy_key: bool,
    /// `known_hosts` lines of the Git host (`gitops_known_hosts`), present
    /// whenever `deploy_key` is.
    pub known_hosts: Option<String>,
}

/// Whether a Git URL is reached over SSH: `ssh://…` or scp-like
/// `[user@]host:path` (git-clone(1), GIT URLS: the scp-like syntax is
/// recognised only when there is no slash before the first colon).
pub fn is_ssh_git_url(url: &str) -> bool {
    if url.starts_with("ssh://") {
        return true;
    }
    if url.contains("://") {
        return false;
    }
    match url.find(':') {
        Some(colon) => colon > 0 && !url[..colon].contains('/'),
        None => false,
    }
}

/// One `[[node]]`, with `[defaults]` applied.
#[derive(Debug, Clone)]
pub struct Node {
    pub hostname: String,
    pub role: Role,
    /// Static address with its prefix; `None`: DHCP.
    pub address: Option<IpNet>,
    /// The login user whose keys and password are set.
    pub user: Option<String>,
    /// OpenSSH public key lines, each checked to parse.
    pub ssh_keys: Vec<String>,
    pub password: Option<Password>,
    pub age_key: Option<AgeKeySource>,
    pub gateway: Option<IpAddr>,
    pub dns: Vec<IpAddr>,
    pub timezone: Option<String>,
    /// Give the node its own SSH host key (from the state file).
    pub ssh_host_keys: bool,
    /// The interface the static address goes to; `None`: every wired one.
    pub interface: Option<Interface>,
}

/// An interface named by its kernel name or its MAC address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interface {
    Name(String),
    /// Lower-case `aa:bb:cc:dd:ee:ff`.
    Mac(String),
}

/// How the user's password is given.
#[derive(Clone, PartialEq, Eq)]
pub enum Password {
    /// A crypt(3) hash (`$6$…`, `$y$…`) used as is.
    Hash(String),
    /// A plain password, hashed with SHA-512 crypt and a salt kept in the
    /// state file (so the hash is stable across runs).
    Plain(String),
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a password or its hash, even in debug output.
        match self {
            Password::Hash(_) => f.write_str("Password::Hash(…)"),
            Password::Plain(_) => f.write_str("Password::Plain(…)"),
        }
    }
}

impl Cluster {
    /// Reads and validates the cluster file at `path`.
    pub fn load(path: &Path) -> Result<Cluster> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Cluster::parse(path, &text)
    }

    /// Loads a cluster file for the base stage alone: like [`Cluster::load`],
    /// but a file without `[[node]]` is accepted.
    pub fn load_base(path: &Path) -> Result<Cluster> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        validate::validate_with(path, &text, false)
    }

    /// Validates `text` as the cluster file `path` (relative paths inside
    /// it are resolved against `path`'s directory).
    pub fn parse(path: &Path, text: &str) -> Result<Cluster> {
        validate::validate(path, text)
    }

    /// Only the `[versions]` of the cluster file at `path` (what the
    /// provisioning recipes of `nodeimg base --config` need).
    pub fn load_versions(path: &Path) -> Result<Versions> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        validate::versions_only(path, &text)
    }

    /// The directory relative paths in the file are resolved against.
    pub fn dir(&self) -> &Path {
        match self.file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    }

    /// `[base]` and `[firmware]` as the base stage takes them: relative
    /// paths resolved against the file's directory, URLs, absolute paths and
    /// literal SHA-256 values as written.
    pub fn base_specs(&self) -> (BaseSpec, FirmwareSpec) {
        let dir = self.dir();
        let rel = |p: &str| -> String {
            if crate::base::fetch::is_url(p) || Path::new(p).is_absolute() {
                p.to_string()
            } else {
                dir.join(p).display().to_string()
            }
        };
        let relp =
            |p: &Option<PathBuf>| p.as_ref().map(|p| PathBuf::from(rel(&p.to_string_lossy())));
        let mut base = self.base.clone();
        let mut fw = self.firmware.clone();
        base.source = base.source.as_deref().map(rel);
        // `sha256` is a digest, or a file of digests beside the source.
        if let Some(s) = &base.sha256 {
            if s.len() != 64 {
                base.sha256 = Some(rel(s));
            }
        }
        base.overlay = relp(&base.overlay);
        base.owner_map = relp(&base.owner_map);
        fw.boot_files = relp(&fw.boot_files);
        fw.towboot = fw.towboot.as_deref().map(rel);
        (base, fw)
    }

    /// `[cluster] board`: a built-in board name, or a board file's path
    /// resolved against the cluster file's directory.
    pub fn board_ref(&self) -> String {
        if self.board.contains('/') || self.board.ends_with(".toml") {
            self.dir().join(&self.board).display().to_string()
        } else {
            self.board.clone()
        }
    }

    /// The node called `hostname`.
    pub fn node(&self, hostname: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.hostname == hostname)
    }

    /// The node with role `init`, when the flavour has one.
    pub fn init_node(&self) -> Option<&Node> {
        self.nodes.iter().find(|n| n.role == Role::Init)
    }

    /// The default state file: `cluster.state` beside the cluster file.
    pub fn default_state_path(&self) -> PathBuf {
        self.dir().join("cluster.state")
    }
}

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Where in the file: `cluster.pod_subnet`, `node[2].address`.
    pub key: String,
    pub why: String,
}

#[cfg(test)]
mod tests;
