//! Cluster secrets, generated once and kept in the state file.
//!
//! The state file (`cluster.state` beside the cluster file, or `--state
//! PATH`) holds everything secret that nodeimg generated for one cluster,
//! so that a node stamped in a month joins the same cluster. It is created
//! with mode 0600 and rewritten (atomically, 0600) only when something is
//! added; existing values are never regenerated. Its contents are never
//! printed, logged or put into `--json`.
//!
//! # Format (TOML, `format = 1`)
//!
//! ```toml
//! format = 1
//! cluster = "pi5-lab"                 # refused for a cluster of another name
//!
//! [kubeadm]                           # flavour kubeadm
//! token = "abcdef.0123456789abcdef"   # bootstrap token, TTL 0 in the init config
//!
//! [pki.ca]                            # cluster CA (CN kubernetes), PEM
//! cert = "-----BEGIN CERTIFICATE-----…"
//! key = "-----BEGIN PRIVATE KEY-----…"
//! [pki.front_proxy_ca]                # CN front-proxy-ca
//! [pki.etcd_ca]                       # CN etcd-ca
//! [pki.sa]                            # service-account key pair
//! key = "-----BEGIN PRIVATE KEY-----…"
//! public = "-----BEGIN PUBLIC KEY-----…"
//!
//! [k3s]                               # flavour k3s
//! token = "<64 hex>"                  # server token (--token-file)
//! agent_token = "<64 hex>"            # agent token (--agent-token-file)
//! [k3s.server_ca]                     # CN k3s-server-ca; clusters made since
//! cert = "…"  key = "…"               #   nodeimg pins the k3s CA (absent in
//! [k3s.client_ca]                     #   older states: plain tokens stay)
//!
//! [age]                               # age_key = "generate"
//! identity = "# created: …\n# public key: age1…\nAGE-SECRET-KEY-1…\n"
//!
//! [gitops_deploy_key]                # gitops_deploy_key (or an SSH URL)
//! private = "-----BEGIN OPENSSH PRIVATE KEY-----…"
//! public = "ssh-ed25519 AAAA… flux@pi5-lab"
//!
//! [password_salts]                    # SHA-512 crypt salt per user, for `password`
//! pi = "<16 characters>"
//!
//! [host_keys.node0]                   # per node, ssh_host_keys = true
//! private = "-----BEGIN OPENSSH PRIVATE KEY-----…"
//! public = "ssh-ed25519 AAAA… root@node0"
//! ```
//!
//! CAs are ECDSA P-256, valid 10 years from their creation (backdated 5
//! minutes), with the extensions `kubeadm init` gives its own CAs. Tables a
//! flavour does not use are absent; a later flavour or node adds its part.
//!
//! The state's [fingerprint](State::fingerprint) (`sha256:<hex>` over the
//! cluster name and the cluster-wide secrets, not the per-node host keys)
//! identifies it in build manifests without revealing anything: adding a
//! node keeps it, a state of another cluster differs.

mod generate;

pub use generate::{random_string, sha512_crypt, spki_pin, CertAndKey, KeyAndPublic};

use crate::cluster::{AgeKeySource, Cluster, Password};
use crate::flavour::Flavour;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The state file's format version.
pub const FORMAT: u32 = 1;

/// The state file's contents.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateData {
    pub format: u32,
    pub cluster: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeadm: Option<KubeadmSecrets>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pki: Option<Pki>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k3s: Option<K3sSecrets>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age: Option<AgeSecret>,
    /// The GitOps repository's deploy key (Flux's `identity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitops_deploy_key: Option<HostKey>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub password_salts: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub host_keys: BTreeMap<String, HostKey>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeadmSecrets {
    pub token: String,
}

/// The CA material kubeadm control planes share.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pki {
    pub ca: CertAndKey,
    pub front_proxy_ca: CertAndKey,
    pub etcd_ca: CertAndKey,
    pub sa: KeyAndPublic,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K3sSecrets {
    pub token: String,
    pub agent_token: String,
    /// The k3s server CA (`server/tls/server-ca.*` of the init server):
    /// its certificate's hash makes the tokens secure (`K10…`) ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_ca: Option<CertAndKey>,
    /// The k3s client CA (`server/tls/client-ca.*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<CertAndKey>,
}

impl K3sSecrets {
    /// The token given to servers: `K10<CA hash>::server:<secret>` when the
    /// state has the server CA, else the plain secret. k3s-io/k3s
    /// pkg/clientaccess/token.go: prefix `K10`, the hex SHA-256 of the CA
    /// bundle the server serves at /cacerts (here server-ca.crt, byte for
    /// byte), `::`, then `user:password`; a joining node refuses a server
    /// whose CA does not hash to it.
    pub fn server_token(&self) -> String {
        self.secure(&self.token, "server")
    }

    /// The token given to agents (`…::node:<secret>`, k3s's agent user).
    pub fn agent_join_token(&self) -> String {
        self.secure(&self.agent_token, "node")
    }

    fn secure(&self, secret: &str, user: &str) -> String {
        match &self.server_ca {
            Some(ca) => {
                let hash = Sha256::digest(ca.cert.as_bytes());
                let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
                format!("K10{hex}::{user}:{secret}")
            }
            None => secret.to_string(),
        }
    }
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgeSecret {
    /// The identity file, as `age-keygen` writes it.
    pub identity: String,
}

/// An SSH key pair (OpenSSH formats): a node's host key, or the GitOps
/// deploy key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostKey {
    pub private: String,
    pub public: String,
}

/// The state file of one cluster, loaded.
pub struct State {
    path: PathBuf,
    data: StateData,
    /// Something was generated since loading.
    dirty: bool,
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never a secret in debug output.
        f.debug_struct("State")
            .field("path", &self.path)
            .field("cluster", &self.data.cluster)
            .finish_non_exhaustive()
    }
}

impl State {
    /// Loads the state at `path` for `cluster_name`, or starts an empty one
    /// when the file does not exist. A state of another cluster is refused.
    pub fn open(path: &Path, cluster_name: &str) -> Result<State> {
        let data = match std::fs::read_to_string(path) {
            Ok(text) => {
                let data: StateData = toml::from_str(&text).map_err(|e| {
                    // The message may quote the file; say only where.
                    let line = e
                        .span()
                        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
                    Error::refused(
                        format!(
                            "{}{}",
                            path.display(),
                            line.map(|l| format!(":{l}")).unwrap_or_default()
                        ),
                        "not a nodeimg state file",
                    )
                })?;
                if data.format != FORMAT {
                    return Err(Error::refused(
                        path.display().to_string(),
                        format!("state format {} (this nodeimg reads {FORMAT})", data.format),
                    ));
                }
                if data.cluster != cluster_name {
                    return Err(Error::refused(
                        path.display().to_string(),
                        format!(
                            "the state of cluster `{}`, not of `{cluster_name}`; give this cluster's state file",
                            data.cluster
                        ),
                    ));
                }
                data
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StateData {
                format: FORMAT,
                cluster: cluster_name.to_string(),
                ..StateData::default()
            },
            Err(e) => return Err(Error::io(path, e)),
        };
        Ok(State {
            path: path.to_path_buf(),
            data,
            dirty: false,
        })
    }

    /// Loads the state and generates whatever `cluster` needs that it does
    /// not hold yet (nothing that exists is regenerated), then saves it.
    pub fn for_cluster(path: &Path, cluster: &Cluster) -> Result<State> {
        let mut s = State::open(path, &cluster.name)?;
        s.ensure(cluster)?;
        s.save()?;
        Ok(s)
    }

    /// Generates what is missing for `cluster`.
    pub fn ensure(&mut self, cluster: &Cluster) -> Result<()> {
        let d = &mut self.data;
        let before = d.clone();
        match cluster.flavour {
            Flavour::Kubeadm => {
                if d.kubeadm.is_none() {
                    d.kubeadm = Some(KubeadmSecrets {
                        token: generate::kubeadm_token()?,
                    });
                }
                if d.pki.is_none() {
                    d.pki = Some(Pki {
                        ca: generate::ca("kubernetes")?,
                        front_proxy_ca: generate::ca("front-proxy-ca")?,
                        etcd_ca: generate::ca("etcd-ca")?,
                        sa: generate::service_account()?,
                    });
                }
            }
            Flavour::K3s => {
                if d.k3s.is_none() {
                    d.k3s = Some(K3sSecrets {
                        token: generate::k3s_token()?,
                        agent_token: generate::k3s_token()?,
                        server_ca: Some(generate::ca("k3s-server-ca")?),
                        client_ca: Some(generate::ca("k3s-client-ca")?),
                    });
                }
            }
            Flavour::K3sAgent | Flavour::None => {}
        }
        if cluster.gitops.as_ref().is_some_and(|g| g.deploy_key) && d.gitops_deploy_key.is_none() {
            let (private, public) = generate::ssh_ed25519(&format!("flux@{}", cluster.name))?;
            d.gitops_deploy_key = Some(HostKey { private, public });
        }
        for n in &cluster.nodes {
            if n.age_key == Some(AgeKeySource::Generate) && d.age.is_none() {
                let t = time::OffsetDateTime::now_utc();
                let created = format!(
                    "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                    t.year(),
                    u8::from(t.month()),
                    t.day(),
                    t.hour(),
                    t.minute(),
                    t.second()
                );
                d.age = Some(AgeSecret {
                    identity: generate::age_identity(&created),
                });
            }
            if let (Some(Password::Plain(_)), Some(user)) = (&n.password, &n.user) {
                if !d.password_salts.contains_key(user) {
                    d.password_salts
                        .insert(user.clone(), generate::crypt_salt()?);
                }
            }
            if n.ssh_host_keys && !d.host_keys.contains_key(&n.hostname) {
                let (private, public) = generate::ssh_host_key(&n.hostname)?;
                d.host_keys
                    .insert(n.hostname.clone(), HostKey { private, public });
            }
        }
        self.dirty |= *d != before;
        Ok(())
    }

    /// Writes the state file (0600, atomically) when something was added.
    pub fn save(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let text = toml::to_string(&self.data)
            .map_err(|e| Error::internal("encoding the state", e.to_string()))?;
        let text = format!(
            "# nodeimg state of cluster `{}`: generated secrets. Keep it private\n# (mode 0600); never commit it unencrypted.\n{text}",
            self.data.cluster
        );
        // 0600 from creation on (PendingFile's temporary files are).
        imagegen::sink::write_atomic(&self.path, text.as_bytes(), 0o600)?;
        self.dirty = false;
        Ok(())
    }

    /// Where the state lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Everything held (secret).
    pub fn data(&self) -> &StateData {
        &self.data
    }

    /// The kubeadm bootstrap token (secret).
    pub fn kubeadm_token(&self) -> Option<&str> {
        self.data.kubeadm.as_ref().map(|k| k.token.as_str())
    }

    /// The CA material (secret keys).
    pub fn pki(&self) -> Option<&Pki> {
        self.data.pki.as_ref()
    }

    /// `sha256:<hex>` of the cluster CA's SubjectPublicKeyInfo (public).
    pub fn ca_cert_hash(&self) -> Result<Option<String>> {
        self.pki().map(|p| spki_pin(&p.ca.key)).transpose()
    }

    /// The k3s tokens (secret).
    pub fn k3s(&self) -> Option<&K3sSecrets> {
        self.data.k3s.as_ref()
    }

    /// The generated age identity file (secret).
    pub fn age_identity(&self) -> Option<&str> {
        self.data.age.as_ref().map(|a| a.identity.as_str())
    }

    /// The generated age identity's public key (`age1…`).
    pub fn age_public_key(&self) -> Option<String> {
        crate::cluster::age_public_key(self.age_identity()?.as_bytes()).ok()
    }

    /// The hash stored for `user`'s plain `password` (secret).
    pub fn password_hash(&self, user: &str, password: &str) -> Result<Option<String>> {
        self.data
            .password_salts
            .get(user)
            .map(|salt| sha512_crypt(password, salt))
            .transpose()
    }

    /// The GitOps deploy key pair (the private half is secret).
    pub fn gitops_deploy_key(&self) -> Option<&HostKey> {
        self.data.gitops_deploy_key.as_ref()
    }

    /// A node's SSH host key pair (the private half is secret).
    pub fn host_key(&self, hostname: &str) -> Option<&HostKey> {
        self.data.host_keys.get(hostname)
    }

    /// `known_hosts` lines for the nodes of `cluster` that have host keys:
    /// the hostname, its mDNS name `HOSTNAME.local`, and the address when it
    /// has one.
    pub fn known_hosts(&self, cluster: &Cluster) -> String {
        let mut out = String::new();
        for n in &cluster.nodes {
            let Some(k) = self.host_key(&n.hostname) else {
                continue;
            };
            if !n.ssh_host_keys {
                continue;
            }
            let mut names = format!("{0},{0}.local", n.hostname);
            if let Some(a) = n.address {
                names.push(',');
                names.push_str(&a.addr().to_string());
            }
            // The key type and base64, without the comment.
            let key: Vec<&str> = k.public.split_whitespace().take(2).collect();
            out.push_str(&format!("{names} {}\n", key.join(" ")));
        }
        out
    }

    /// `sha256:<hex>` identifying this cluster's secrets (not the per-node
    /// host keys, so adding a node keeps it); reveals nothing about them.
    pub fn fingerprint(&self) -> String {
        let d = &self.data;
        let mut h = Sha256::new();
        let mut field = |name: &str, value: &str| {
            h.update((name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            h.update((value.len() as u64).to_le_bytes());
            h.update(value.as_bytes());
        };
        field("nodeimg-state", &FORMAT.to_string());
        field("cluster", &d.cluster);
        if let Some(k) = &d.kubeadm {
            field("kubeadm.token", &k.token);
        }
        if let Some(p) = &d.pki {
            for (n, c) in [
                ("ca", &p.ca),
                ("front_proxy_ca", &p.front_proxy_ca),
                ("etcd_ca", &p.etcd_ca),
            ] {
                field(n, &c.cert);
                field(n, &c.key);
            }
            field("sa", &p.sa.key);
        }
        if let Some(k) = &d.k3s {
            field("k3s.token", &k.token);
            field("k3s.agent_token", &k.agent_token);
            for (n, c) in [
                ("k3s.server_ca", &k.server_ca),
                ("k3s.client_ca", &k.client_ca),
            ] {
                if let Some(c) = c {
                    field(n, &c.cert);
                    field(n, &c.key);
                }
            }
        }
        if let Some(a) = &d.age {
            field("age", &a.identity);
        }
        if let Some(k) = &d.gitops_deploy_key {
            field("gitops_deploy_key", &k.private);
        }
        let digest = h.finalize();
        format!(
            "sha256:{}",
            digest
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )
    }
}

#[cfg(test)]
mod tests;
