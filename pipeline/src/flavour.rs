//! Cluster flavours and node roles: the words the cluster file, the
//! templates and the manifests share.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How a cluster is bootstrapped; each flavour ships its own templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flavour {
    /// kubeadm with pre-generated CAs (Raspberry Pi 5 seed cluster).
    Kubeadm,
    /// k3s servers and agents sharing a token (Odroid C4 seed cluster).
    K3s,
    /// Agents joining an existing k3s server given by URL and token.
    K3sAgent,
    /// Identity only: no bootstrap.
    None,
}

/// What a node does in its cluster, chosen by hostname pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The first control plane / server: `kubeadm init`, or k3s `--cluster-init`.
    Init,
    /// kubeadm: a further control plane joining with `--control-plane`.
    ControlPlane,
    /// kubeadm: a worker joining the cluster.
    Worker,
    /// k3s: a further server joining the init server.
    Server,
    /// k3s / k3s-agent: an agent joining as a worker.
    Agent,
    /// Identity only (flavour `none`).
    None,
}

/// A program a flavour's bootstrap runs, which the base must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    /// How messages name it (`kubeadm`, `a container runtime`).
    pub what: &'static str,
    /// Program names, any one of which will do (`crio`, `containerd`).
    pub any_of: &'static [&'static str],
    /// The shipped provisioning recipe that installs it.
    pub recipe: &'static str,
    /// Only nodes of these roles need it; empty: every node.
    pub roles: &'static [Role],
}

const fn tool(what: &'static str, any_of: &'static [&'static str], recipe: &'static str) -> Tool {
    Tool {
        what,
        any_of,
        recipe,
        roles: &[],
    }
}

/// kubeadm: the node agent, the CLI, a CRI runtime, and helm where the
/// init node installs Cilium and Flux with it.
const KUBEADM_TOOLS: &[Tool] = &[
    tool("kubeadm", &["kubeadm"], "kubeadm"),
    tool("kubelet", &["kubelet"], "kubeadm"),
    tool("kubectl", &["kubectl"], "kubeadm"),
    tool(
        "a container runtime (crio or containerd)",
        &["crio", "containerd"],
        "kubeadm",
    ),
    Tool {
        what: "helm",
        any_of: &["helm"],
        recipe: "helm",
        roles: &[Role::Init],
    },
];

/// k3s and k3s-agent: the one k3s binary.
const K3S_TOOLS: &[Tool] = &[tool("k3s", &["k3s"], "k3s")];

impl Tool {
    /// Whether a node of `role` needs this tool.
    pub fn needed_by(&self, role: Role) -> bool {
        self.roles.is_empty() || self.roles.contains(&role)
    }
}

impl Flavour {
    /// What the base must hold for this flavour's bootstraps, and the
    /// recipe that installs each (checked by `stamp` and `build`).
    pub fn tools(self) -> &'static [Tool] {
        match self {
            Flavour::Kubeadm => KUBEADM_TOOLS,
            Flavour::K3s | Flavour::K3sAgent => K3S_TOOLS,
            Flavour::None => &[],
        }
    }

    /// The roles this flavour knows, in the order the defaults are tried.
    pub fn roles(self) -> &'static [Role] {
        match self {
            Flavour::Kubeadm => &[Role::Init, Role::ControlPlane, Role::Worker],
            Flavour::K3s => &[Role::Init, Role::Server, Role::Agent],
            Flavour::K3sAgent => &[Role::Agent],
            Flavour::None => &[Role::None],
        }
    }

    /// The name used in the cluster file and in `templates/<name>/`.
    pub fn name(self) -> &'static str {
        match self {
            Flavour::Kubeadm => "kubeadm",
            Flavour::K3s => "k3s",
            Flavour::K3sAgent => "k3s-agent",
            Flavour::None => "none",
        }
    }
}

impl Role {
    /// The name used in the cluster file's `[roles]` and in manifests.
    pub fn name(self) -> &'static str {
        match self {
            Role::Init => "init",
            Role::ControlPlane => "control-plane",
            Role::Worker => "worker",
            Role::Server => "server",
            Role::Agent => "agent",
            Role::None => "none",
        }
    }
}

impl fmt::Display for Flavour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
