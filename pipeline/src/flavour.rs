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

impl Flavour {
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
