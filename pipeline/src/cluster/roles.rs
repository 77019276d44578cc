//! Roles chosen by hostname pattern: the first pattern that matches wins.

use crate::flavour::{Flavour, Role};
use regex::Regex;

/// One `[roles]` entry.
#[derive(Debug, Clone)]
pub struct RolePattern {
    pub role: Role,
    pub pattern: Regex,
}

/// The seed clusters' patterns, per flavour, in the order they are tried.
///
/// - kubeadm: `^controlplane$` init, `^controlplane[0-9]+$` control-plane,
///   `^node[0-9]+$` worker;
/// - k3s: `^controlplane$` init, `^controlplane[0-9]+$` server,
///   `^node[0-9]+$` agent;
/// - k3s-agent: every hostname is an agent; none: every hostname is `none`.
pub fn default_roles(flavour: Flavour) -> Vec<(Role, &'static str)> {
    match flavour {
        Flavour::Kubeadm => vec![
            (Role::Init, "^controlplane$"),
            (Role::ControlPlane, "^controlplane[0-9]+$"),
            (Role::Worker, "^node[0-9]+$"),
        ],
        Flavour::K3s => vec![
            (Role::Init, "^controlplane$"),
            (Role::Server, "^controlplane[0-9]+$"),
            (Role::Agent, "^node[0-9]+$"),
        ],
        Flavour::K3sAgent => vec![(Role::Agent, ".")],
        Flavour::None => vec![(Role::None, ".")],
    }
}

/// The role name as the cluster file writes it, among `flavour`'s roles.
pub fn role_by_name(flavour: Flavour, name: &str) -> Result<Role, String> {
    flavour
        .roles()
        .iter()
        .copied()
        .find(|r| r.name() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = flavour.roles().iter().map(|r| r.name()).collect();
            format!(
                "`{name}` is not a role of flavour {flavour} (roles: {})",
                names.join(", ")
            )
        })
}

/// The role of `hostname`: the first pattern that matches.
pub fn match_role(patterns: &[RolePattern], hostname: &str) -> Option<Role> {
    patterns
        .iter()
        .find(|p| p.pattern.is_match(hostname))
        .map(|p| p.role)
}

/// Whether `flavour` needs exactly one init node.
pub fn needs_init(flavour: Flavour) -> bool {
    matches!(flavour, Flavour::Kubeadm | Flavour::K3s)
}
