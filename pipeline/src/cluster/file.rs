//! The cluster file's tables as serde reads them, with the position of
//! every value kept for error messages. Unknown keys are refused in every
//! table (`deny_unknown_fields`).

use crate::flavour::Flavour;
use serde::Deserialize;
use toml::Spanned;

/// `[cluster]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub name: Spanned<String>,
    pub board: Spanned<String>,
    pub flavour: Option<Spanned<Flavour>>,
    pub api_endpoint: Option<Spanned<String>>,
    pub pod_subnet: Option<Spanned<String>>,
    pub service_subnet: Option<Spanned<String>>,
    pub server: Option<Spanned<String>>,
    pub token_file: Option<Spanned<String>>,
    pub gitops_url: Option<Spanned<String>>,
    pub gitops_branch: Option<Spanned<String>>,
    pub gitops_path: Option<Spanned<String>>,
    pub gitops_deploy_key: Option<Spanned<bool>>,
    pub gitops_known_hosts: Option<Spanned<String>>,
    pub kubeadm_token_ttl: Option<Spanned<String>>,
    pub sops_secret: Option<Spanned<String>>,
    pub hosts: Option<Spanned<bool>>,
}

/// The settings `[defaults]` gives every node and a `[[node]]` may
/// override.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    pub user: Option<Spanned<String>>,
    pub ssh_keys: Option<Spanned<Vec<String>>>,
    pub password: Option<Spanned<String>>,
    pub password_hash: Option<Spanned<String>>,
    pub age_key: Option<Spanned<String>>,
    pub gateway: Option<Spanned<String>>,
    pub dns: Option<Spanned<Vec<String>>>,
    pub timezone: Option<Spanned<String>>,
    pub ssh_host_keys: Option<Spanned<bool>>,
    pub interface: Option<Spanned<String>>,
}

/// The keys only a `[[node]]` has; the rest of the table is
/// [`RawSettings`].
pub const NODE_KEYS: [&str; 3] = ["hostname", "role", "address"];

/// `[templates]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTemplates {
    pub dir: Option<Spanned<String>>,
}

/// `[versions]`: what the provisioning recipes install and the bootstraps
/// deploy. Every key is optional; [`super::Versions`] has the defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVersions {
    pub kubernetes: Option<Spanned<String>>,
    pub crio: Option<Spanned<String>>,
    pub cilium: Option<Spanned<String>>,
    pub flux: Option<Spanned<String>>,
    pub gateway_api: Option<Spanned<String>>,
    pub helm: Option<Spanned<String>>,
    pub k3s: Option<Spanned<String>>,
}
