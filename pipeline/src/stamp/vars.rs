//! The template variables of one node (the list in `docs/templates.md`).

use crate::cluster::{AgeKeySource, Cluster, Node};
use crate::flavour::{Flavour, Role};
use crate::secrets::State;
use crate::templates::Vars;
use crate::Result;

/// Where the node's secrets env file goes.
pub const CLUSTER_ENV: &str = "/etc/nodeimg/cluster.env";

/// The secret in flux-system holding the GitOps deploy key: the name
/// `flux bootstrap` gives its own Git credentials, so a cluster can move
/// between the two.
pub const GITOPS_PULL_SECRET: &str = "flux-system";

/// The cluster-wide values every node shares, computed once per run.
#[derive(Clone)]
pub struct Shared {
    pub age_public_key: String,
    pub ca_cert_hash: String,
    /// k3s-agent: the existing server's token, read from `token_file`.
    pub external_token: Option<String>,
}

impl Shared {
    pub fn new(cluster: &Cluster, state: &State) -> Result<Shared> {
        let age_public_key = cluster
            .nodes
            .iter()
            .find_map(|n| match &n.age_key {
                Some(AgeKeySource::Generate) => state.age_public_key(),
                Some(AgeKeySource::File(k)) => Some(k.public.clone()),
                None => None,
            })
            .unwrap_or_default();
        let external_token = match &cluster.token_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| crate::Error::io(p, e))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        Ok(Shared {
            age_public_key,
            ca_cert_hash: state.ca_cert_hash()?.unwrap_or_default(),
            external_token,
        })
    }
}

/// The server URL k3s nodes other than the init node join.
pub fn k3s_url(cluster: &Cluster) -> String {
    match cluster.flavour {
        Flavour::K3sAgent => cluster.server.clone().unwrap_or_default(),
        Flavour::K3s => match (
            cluster.init_node().and_then(|n| n.address),
            &cluster.api_endpoint,
        ) {
            (Some(a), _) => format!("https://{}", endpoint(&a.addr().to_string(), 6443)),
            (None, Some(e)) => format!("https://{e}"),
            (None, None) => String::new(),
        },
        _ => String::new(),
    }
}

fn endpoint(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Every variable stamp fills for `node`. Secret values (tokens) are only
/// those the node's role needs: a k3s agent gets the agent token, never the
/// server token.
pub fn node_vars(cluster: &Cluster, node: &Node, state: &State, shared: &Shared) -> Vars {
    let mut v = Vars::new();
    let mut set = |k: &str, val: String| {
        v.insert(k.to_string(), val);
    };
    set("NODE_HOSTNAME", node.hostname.clone());
    set("NODE_ROLE", node.role.name().to_string());
    set(
        "NODE_ADDRESS",
        node.address
            .map(|a| a.addr().to_string())
            .unwrap_or_default(),
    );
    set(
        "NODE_PREFIX",
        node.address
            .map(|a| a.prefix_len().to_string())
            .unwrap_or_default(),
    );
    set("CLUSTER_NAME", cluster.name.clone());
    set("CLUSTER_USER", node.user.clone().unwrap_or_default());
    let (api, host, port) = match &cluster.api_endpoint {
        Some(e) => (e.to_string(), e.host.clone(), e.port.to_string()),
        None => Default::default(),
    };
    set("API_ENDPOINT", api);
    set("API_HOST", host);
    set("API_PORT", port);
    set(
        "POD_SUBNET",
        cluster
            .pod_subnet
            .map(|s| s.to_string())
            .unwrap_or_default(),
    );
    set(
        "SERVICE_SUBNET",
        cluster
            .service_subnet
            .map(|s| s.to_string())
            .unwrap_or_default(),
    );
    let init = cluster.init_node();
    set(
        "INIT_HOSTNAME",
        init.map(|n| n.hostname.clone()).unwrap_or_default(),
    );
    set(
        "INIT_ADDRESS",
        init.and_then(|n| n.address)
            .map(|a| a.addr().to_string())
            .unwrap_or_default(),
    );
    set("AGE_PUBLIC_KEY", shared.age_public_key.clone());
    let (url, branch, path) = match &cluster.gitops {
        Some(g) => (g.url.clone(), g.branch.clone(), g.path.clone()),
        None => Default::default(),
    };
    set("GITOPS_URL", url);
    set("GITOPS_BRANCH", branch);
    set("GITOPS_PATH", path);
    set(
        "GITOPS_PULL_SECRET",
        match &cluster.gitops {
            Some(g) if g.deploy_key => GITOPS_PULL_SECRET.to_string(),
            _ => String::new(),
        },
    );
    set("CLUSTER_ENV", CLUSTER_ENV.to_string());
    set(
        "KUBEADM_TOKEN",
        state.kubeadm_token().unwrap_or_default().to_string(),
    );
    set("CA_CERT_HASH", shared.ca_cert_hash.clone());
    set("KUBEADM_TOKEN_TTL", cluster.kubeadm_token_ttl.clone());
    set("SOPS_SECRET", cluster.sops_secret.clone());
    let (token, agent_token) = k3s_tokens(cluster, node, state, shared);
    set("K3S_TOKEN", token.unwrap_or_default());
    set("K3S_AGENT_TOKEN", agent_token.unwrap_or_default());
    set("K3S_URL", k3s_url(cluster));
    let versions = &cluster.versions;
    set("KUBERNETES_VERSION", versions.kubernetes.clone());
    set("CRIO_VERSION", versions.crio.clone());
    set("CILIUM_VERSION", versions.cilium.clone());
    set("FLUX_VERSION", versions.flux.clone());
    set("GATEWAY_API_VERSION", versions.gateway_api.clone());
    set("HELM_VERSION", versions.helm.clone());
    set("K3S_VERSION", versions.k3s.clone());
    v
}

/// The k3s tokens a node holds: (server token, agent token).
pub fn k3s_tokens(
    cluster: &Cluster,
    node: &Node,
    state: &State,
    shared: &Shared,
) -> (Option<String>, Option<String>) {
    match cluster.flavour {
        Flavour::K3s => {
            let k = state.k3s();
            let agent = k.map(|k| k.agent_join_token());
            match node.role {
                Role::Init | Role::Server => (k.map(|k| k.server_token()), agent),
                _ => (None, agent),
            }
        }
        Flavour::K3sAgent => (shared.external_token.clone(), None),
        _ => (None, None),
    }
}

/// `KEY='value'` lines for a shell to source (values single-quoted).
pub fn env_file(vars: &Vars) -> String {
    let mut s =
        String::from("# Written by nodeimg stamp: the cluster's addresses and secrets (0600).\n");
    for (k, v) in vars {
        s.push_str(k);
        s.push_str("='");
        s.push_str(&v.replace('\'', r"'\''"));
        s.push_str("'\n");
    }
    s
}
