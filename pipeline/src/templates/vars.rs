//! The variables templates may use: what `stamp` fills, what has a default,
//! and which values are secret. `docs/templates.md` documents the same list
//! (a test keeps the two in step).

/// One variable templates may reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variable {
    pub name: &'static str,
    /// Used when the caller's [`Vars`](super::Vars) does not set it; `None`:
    /// the caller must set it when a rendered template uses it.
    pub default: Option<&'static str>,
    /// A file rendered with a non-empty value of it is secret (0600).
    pub secret: bool,
    /// One line for docs and error messages.
    pub doc: &'static str,
}

const fn var(name: &'static str, doc: &'static str) -> Variable {
    Variable {
        name,
        default: None,
        secret: false,
        doc,
    }
}

const fn secret(name: &'static str, doc: &'static str) -> Variable {
    Variable {
        name,
        default: None,
        secret: true,
        doc,
    }
}

const fn defaulted(name: &'static str, default: &'static str, doc: &'static str) -> Variable {
    Variable {
        name,
        default: Some(default),
        secret: false,
        doc,
    }
}

/// Every declared variable, in the order the docs list them.
pub const VARIABLES: &[Variable] = &[
    var("NODE_HOSTNAME", "the node's hostname"),
    var(
        "NODE_ROLE",
        "the node's role: init, control-plane, worker, server, agent, none",
    ),
    var(
        "NODE_ADDRESS",
        "the node's static IP address; empty for DHCP",
    ),
    var(
        "NODE_PREFIX",
        "prefix length of the static address (e.g. 24); empty for DHCP",
    ),
    var("CLUSTER_NAME", "the cluster's name"),
    var(
        "CLUSTER_USER",
        "the login user; gets a kubeconfig on control planes",
    ),
    var("API_ENDPOINT", "the Kubernetes API endpoint, host:port"),
    var("API_HOST", "host part of API_ENDPOINT"),
    var("API_PORT", "port part of API_ENDPOINT"),
    var("POD_SUBNET", "the pod network, CIDR"),
    var("SERVICE_SUBNET", "the service network, CIDR"),
    var("INIT_HOSTNAME", "hostname of the init node"),
    var("INIT_ADDRESS", "address of the init node; empty for DHCP"),
    var(
        "AGE_PUBLIC_KEY",
        "public key of the cluster's age identity (/root/keys.txt)",
    ),
    var(
        "GITOPS_URL",
        "Git repository Flux syncs from; empty: no Flux step",
    ),
    var("GITOPS_BRANCH", "branch of GITOPS_URL"),
    var("GITOPS_PATH", "path in GITOPS_URL Flux applies"),
    var(
        "GITOPS_PULL_SECRET",
        "secret in flux-system with the deploy key Flux reads GITOPS_URL with (flux-system); empty: none",
    ),
    var(
        "CLUSTER_ENV",
        "path of the node's secrets env file (/etc/nodeimg/cluster.env)",
    ),
    secret(
        "KUBEADM_TOKEN",
        "kubeadm bootstrap token [a-z0-9]{6}.[a-z0-9]{16}",
    ),
    var(
        "CA_CERT_HASH",
        "sha256:<hex> of the cluster CA's SubjectPublicKeyInfo (not secret)",
    ),
    secret("K3S_TOKEN", "k3s server token"),
    secret("K3S_AGENT_TOKEN", "k3s agent token"),
    var(
        "K3S_URL",
        "k3s server URL agents and joining servers use (https://HOST:6443)",
    ),
    defaulted(
        "KUBEADM_TOKEN_TTL",
        "8760h",
        "[cluster] kubeadm_token_ttl: lifetime of the bootstrap token; 0s: never expires",
    ),
    defaulted(
        "SOPS_SECRET",
        "flux-sops",
        "[cluster] sops_secret: secret in flux-system holding the age key Flux decrypts with",
    ),
    defaulted(
        "KUBERNETES_VERSION",
        "1.34",
        "[versions] kubernetes: Kubernetes release of kubeadm, kubelet, kubectl",
    ),
    defaulted("CRIO_VERSION", "1.34", "[versions] crio: CRI-O release"),
    defaulted(
        "CILIUM_VERSION",
        "1.18.0",
        "[versions] cilium: version of the Cilium Helm chart the init node installs",
    ),
    defaulted(
        "FLUX_VERSION",
        "2.x",
        "[versions] flux: Flux distribution version (semver range) of the FluxInstance",
    ),
    defaulted(
        "GATEWAY_API_VERSION",
        "v1.3.0",
        "[versions] gateway_api: Gateway API release whose CRDs go in before Cilium",
    ),
    defaulted("HELM_VERSION", "3.19.0", "[versions] helm: Helm release"),
    defaulted("K3S_VERSION", "v1.34.1+k3s1", "[versions] k3s: k3s release"),
];

/// The declared variable called `name`.
pub fn variable(name: &str) -> Option<&'static Variable> {
    VARIABLES.iter().find(|v| v.name == name)
}
