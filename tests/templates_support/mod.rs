//! Shared by the template tests: the seed clusters' variables, rendering a
//! role into a directory, and the recording stand-ins the bootstrap scripts
//! run against.
#![allow(dead_code)]

use pipeline::customise::Op;
use pipeline::flavour::{Flavour, Role};
use pipeline::templates::{render_node, ProfileKind, RenderRequest, Vars};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const TOKEN: &str = "k7x2qa.0p9w8e7r6t5y4u3i";
pub const K3S_TOKEN: &str = "K3sServerSecret0123456789abcdef";
pub const K3S_AGENT_TOKEN: &str = "K3sAgentSecret0123456789abcdef";
pub const AGE_KEY: &str = "# created: 2026-01-01T00:00:00Z\n\
    # public key: age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\n\
    AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX\n";

/// The Raspberry Pi 5 seed cluster (kubeadm) as stamp fills the variables,
/// for a node of `role`; `api` is the API endpoint (`host:port`).
pub fn kubeadm_vars(hostname: &str, role: Role, address: &str, api: &str, ca_hash: &str) -> Vars {
    let (host, port) = api.rsplit_once(':').expect("host:port");
    let mut v = common_vars(hostname, role, address);
    for (k, val) in [
        ("API_ENDPOINT", api),
        ("API_HOST", host),
        ("API_PORT", port),
        ("POD_SUBNET", "10.244.64.0/18"),
        ("SERVICE_SUBNET", "10.244.0.0/20"),
        ("INIT_HOSTNAME", "controlplane"),
        ("INIT_ADDRESS", "192.168.1.10"),
        ("GITOPS_URL", "https://github.com/example/pi5-lab.git"),
        ("GITOPS_BRANCH", "main"),
        ("GITOPS_PATH", "clusters/pi5-lab"),
        ("GITOPS_PULL_SECRET", ""),
        ("KUBEADM_TOKEN", TOKEN),
        ("CA_CERT_HASH", ca_hash),
    ] {
        v.insert(k.into(), val.into());
    }
    v
}

/// The Odroid C4 seed cluster (k3s) for a node of `role`; `server` is the
/// init server's `host:port`.
pub fn k3s_vars(hostname: &str, role: Role, address: &str, server: &str) -> Vars {
    let (host, port) = server.rsplit_once(':').expect("host:port");
    let mut v = common_vars(hostname, role, address);
    let url = format!("https://{server}");
    for (k, val) in [
        ("API_ENDPOINT", server),
        ("API_HOST", host),
        ("API_PORT", port),
        ("POD_SUBNET", "10.42.0.0/16"),
        ("SERVICE_SUBNET", "10.43.0.0/16"),
        ("INIT_HOSTNAME", "node000"),
        ("INIT_ADDRESS", host),
        ("GITOPS_URL", ""),
        ("GITOPS_BRANCH", ""),
        ("GITOPS_PATH", ""),
        ("K3S_TOKEN", K3S_TOKEN),
        ("K3S_AGENT_TOKEN", K3S_AGENT_TOKEN),
        ("K3S_URL", url.as_str()),
    ] {
        v.insert(k.into(), val.into());
    }
    v
}

fn common_vars(hostname: &str, role: Role, address: &str) -> Vars {
    let mut v = Vars::new();
    for (k, val) in [
        ("NODE_HOSTNAME", hostname),
        ("NODE_ROLE", role.name()),
        ("NODE_ADDRESS", address),
        ("NODE_PREFIX", if address.is_empty() { "" } else { "24" }),
        ("CLUSTER_NAME", "pi5-lab"),
        ("CLUSTER_USER", "pi"),
        (
            "AGE_PUBLIC_KEY",
            "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
        ),
        ("CLUSTER_ENV", "/etc/nodeimg/cluster.env"),
    ] {
        v.insert(k.into(), val.into());
    }
    v
}

/// `render_node` for the Debian profile without overrides.
pub fn render(flavour: Flavour, role: Role, vars: &Vars) -> Vec<Op> {
    render_node(&RenderRequest {
        flavour,
        role,
        profile: ProfileKind::Debian,
        vars,
        overrides: None,
    })
    .unwrap_or_else(|e| panic!("rendering {flavour} {role}: {e}"))
}

/// The data of the file op at `path`.
pub fn file<'a>(ops: &'a [Op], path: &str) -> &'a [u8] {
    ops.iter()
        .find_map(|op| match op {
            Op::File { path: p, data, .. } if p == path => Some(data.as_slice()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no file op for {path}"))
}

/// Writes the file ops into the tree at `root` (what the executor does for
/// them, on a plain directory); other ops are left to the caller.
pub fn write_files(root: &Path, ops: &[Op]) {
    for op in ops {
        if let Op::File {
            path, data, mode, ..
        } = op
        {
            let dst = root.join(path.trim_start_matches('/'));
            fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir");
            fs::write(&dst, data).expect("write");
            fs::set_permissions(&dst, fs::Permissions::from_mode(*mode)).expect("chmod");
        }
    }
}

/// A cluster CA made by openssl under `pki` (ca.crt/.key), the other CA
/// material kubeadm needs as placeholders, and the CA's pin as kubeadm
/// computes it (`sha256:` + SHA-256 of the DER SubjectPublicKeyInfo),
/// worked out from the PEM public key without the bootstrap's pipeline.
pub fn make_pki(pki: &Path) -> String {
    fs::create_dir_all(pki.join("etcd")).expect("mkdir pki");
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args([
            "-nodes",
            "-subj",
            "/CN=kubernetes",
            "-days",
            "3650",
            "-keyout",
        ])
        .arg(pki.join("ca.key"))
        .arg("-out")
        .arg(pki.join("ca.crt"))
        .output()
        .expect("openssl");
    assert!(ok.status.success(), "openssl req: {ok:?}");
    for f in [
        "sa.key",
        "sa.pub",
        "front-proxy-ca.crt",
        "front-proxy-ca.key",
        "etcd/ca.crt",
        "etcd/ca.key",
    ] {
        fs::write(pki.join(f), "placeholder\n").expect("pki file");
    }
    let out = sh(&format!(
        "openssl x509 -in '{}' -noout -pubkey | grep -v -- ----- | base64 -d | sha256sum",
        pki.join("ca.crt").display()
    ));
    format!("sha256:{}", out.split_whitespace().next().expect("hash"))
}

/// Runs a shell command line, returning its stdout; panics on failure.
pub fn sh(line: &str) -> String {
    let out = Command::new("bash")
        .args(["-c", line])
        .output()
        .expect("bash");
    assert!(out.status.success(), "{line}: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

/// A scratch root with recording stand-ins for the commands the bootstraps
/// run: each call is one line `NAME ARG…` in `record`.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub bin: PathBuf,
    pub record: PathBuf,
    /// The API server's objects (NODEIMG_CLUSTER of `model.sh`).
    pub cluster: PathBuf,
}

/// The model of the real tools (see `model.sh`), installed under each of
/// these names by [`Scratch::with_model`].
pub const MODEL: &str = include_str!("model.sh");
pub const MODEL_TOOLS: &[&str] = &[
    "kubeadm",
    "kubelet",
    "kubectl",
    "crictl",
    "helm",
    "k3s",
    "systemctl",
    "crio",
    "timedatectl",
    "ip",
    "iptables",
    "ipvsadm",
];

const RECORDER: &str = r#"#!/bin/bash
# Recording stand-in: one line per call, the scratch root written as /.
# The reading end of a pipe records after the writing end has finished, so
# the record's order is the script's.
case " $* " in *" --filename=- "*) cat >/dev/null ;; esac
name=${0##*/}
line=$name
for a in "$@"; do line+=" ${a//$NODEIMG_ROOT\//\/}"; done
printf '%s\n' "$line" >>"$NODEIMG_RECORD"
"#;

/// Extra behaviour of a stand-in, after recording.
fn behaviour(name: &str) -> &'static str {
    match name {
        // kubeadm leaves what a finished init/join leaves.
        "kubeadm" => {
            r#"case $1 in
init) mkdir -p "$NODEIMG_ROOT/etc/kubernetes"; echo admin >"$NODEIMG_ROOT/etc/kubernetes/admin.conf"; echo kubelet >"$NODEIMG_ROOT/etc/kubernetes/kubelet.conf" ;;
join) mkdir -p "$NODEIMG_ROOT/etc/kubernetes"; echo kubelet >"$NODEIMG_ROOT/etc/kubernetes/kubelet.conf"
  if grep -q '^controlPlane:' "$3"; then echo admin >"$NODEIMG_ROOT/etc/kubernetes/admin.conf"; fi ;;
esac"#
        }
        "k3s" => {
            r#"if [ "$1" = server ] || [ "$1" = agent ]; then exit 0; fi
mkdir -p "$NODEIMG_ROOT/etc/rancher/k3s"; echo k3s-admin >"$NODEIMG_ROOT/etc/rancher/k3s/k3s.yaml""#
        }
        "timedatectl" => "echo yes",
        "ip" => {
            r#"case $1 in
route) echo "default via 192.168.1.1 dev eth0" ;;
*) echo "1: lo    inet 127.0.0.1/8 scope host lo"
   echo "2: eth0    inet 192.168.1.10/24 brd 192.168.1.255 scope global eth0"
   echo "2: eth0    inet 192.168.1.50/24 brd 192.168.1.255 scope global secondary eth0" ;;
esac"#
        }
        _ => "",
    }
}

impl Scratch {
    /// A scratch root holding the files of `ops`, a passwd with user `pi`,
    /// and stand-ins for `tools` in a directory of their own.
    pub fn new(ops: &[Op], tools: &[&str]) -> Scratch {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let bin = dir.path().join("bin");
        fs::create_dir_all(root.join("etc")).expect("mkdir");
        fs::create_dir_all(root.join("home/pi")).expect("mkdir");
        fs::create_dir_all(&bin).expect("mkdir");
        fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\npi:x:1000:1000:,,,:/home/pi:/bin/bash\n",
        )
        .expect("passwd");
        write_files(&root, ops);
        for t in tools {
            let path = bin.join(t);
            fs::write(&path, format!("{RECORDER}{}\n", behaviour(t))).expect("stand-in");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let record = dir.path().join("record");
        fs::write(&record, "").expect("record");
        let cluster = dir.path().join("cluster");
        Scratch {
            dir,
            root,
            bin,
            record,
            cluster,
        }
    }

    /// A scratch root whose tools are the model of `model.sh`, and whose
    /// `/etc/hostname` is `hostname`. `sleep` is a no-op there too, so
    /// that scripts which sleep without NODEIMG_SLEEP (older ones) run fast.
    pub fn with_model(ops: &[Op], hostname: &str) -> Scratch {
        let s = Scratch::new(ops, &[]);
        for t in MODEL_TOOLS {
            let path = s.bin.join(t);
            fs::write(&path, MODEL).expect("model");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let sleep = s.bin.join("sleep");
        fs::write(&sleep, "#!/bin/sh\nexit 0\n").expect("sleep");
        fs::set_permissions(&sleep, fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::write(s.path("/etc/hostname"), format!("{hostname}\n")).expect("hostname");
        s
    }

    /// The API server's objects live on this node (the first control plane's
    /// etcd, the k3s init server's datastore) at `path`.
    pub fn cluster_on_node(&mut self, path: &str) {
        self.cluster = self.path(path);
    }

    /// The cluster as its first control plane leaves it (kubeadm), for
    /// joining nodes: API server up, cluster-info, the bootstrap token
    /// [`TOKEN`], Cilium, the first control plane as etcd member and node.
    pub fn seed_kubeadm_cluster(&self, ca_hash: &str) {
        let (id, secret) = TOKEN.split_once('.').expect("token");
        let token = format!("bootstrap-token-{id}");
        for (ns, kind, name, body) in [
            ("kube-public", "configmap", "cluster-info", String::new()),
            (
                "kube-system",
                "secret",
                token.as_str(),
                format!("secret={secret}\n"),
            ),
            ("kube-system", "daemonset", "cilium", String::new()),
            (
                "_",
                "node",
                "controlplane",
                "ready=true\nlabel:node-role.kubernetes.io/control-plane=\n".to_string(),
            ),
        ] {
            let d = self.cluster.join("res").join(ns).join(kind);
            fs::create_dir_all(&d).expect("mkdir");
            fs::write(d.join(name), body).expect("object");
        }
        fs::write(self.cluster.join("apiserver-up"), "").expect("api");
        fs::write(self.cluster.join("ca-hash"), ca_hash).expect("hash");
        fs::create_dir_all(self.cluster.join("etcd-members")).expect("mkdir");
        fs::write(self.cluster.join("etcd-members/controlplane"), "").expect("member");
    }

    /// The k3s cluster as its init server (node000) leaves it, with the
    /// tokens [`K3S_TOKEN`] and [`K3S_AGENT_TOKEN`].
    pub fn seed_k3s_cluster(&self) {
        let c = &self.cluster;
        fs::create_dir_all(c.join("etcd-members")).expect("mkdir");
        fs::write(c.join("etcd-members/node000"), "").expect("member");
        fs::write(c.join("apiserver-up"), "").expect("api");
        fs::write(c.join("k3s-token"), K3S_TOKEN).expect("token");
        fs::write(c.join("k3s-agent-token"), K3S_AGENT_TOKEN).expect("token");
    }

    /// An object of the model's API server exists.
    pub fn has_object(&self, namespace: &str, kind: &str, name: &str) -> bool {
        self.cluster
            .join("res")
            .join(namespace)
            .join(kind)
            .join(name)
            .exists()
    }

    /// The lines of an object of the model's API server.
    pub fn object(&self, namespace: &str, kind: &str, name: &str) -> String {
        fs::read_to_string(
            self.cluster
                .join("res")
                .join(namespace)
                .join(kind)
                .join(name),
        )
        .unwrap_or_default()
    }

    /// Runs the real bootstrap script of the scratch root once, as one
    /// start of its unit: one attempt (NODEIMG_MAX_ATTEMPTS=1), no sleeping.
    pub fn run(&self) -> Output {
        self.run_env(&[])
    }

    /// [`Scratch::run`] with further environment variables (the model's
    /// knobs, or NODEIMG_MAX_ATTEMPTS).
    pub fn run_env(&self, extra: &[(&str, &str)]) -> Output {
        // A wait that never ends would hang the suite: bound the run.
        let mut cmd = Command::new("timeout");
        cmd.args(["120", "bash"])
            .arg(self.root.join("usr/local/lib/nodeimg/bootstrap.sh"))
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", self.bin.display()))
            .env("NODEIMG_ROOT", &self.root)
            .env("NODEIMG_RECORD", &self.record)
            .env("NODEIMG_CLUSTER", &self.cluster)
            .env("NODEIMG_MODEL", self.dir.path().join("model"))
            .env("NODEIMG_SLEEP", "true")
            .env("NODEIMG_STEP_TIMEOUT", "2")
            .env("NODEIMG_MAX_ATTEMPTS", "1")
            .env("HOME", self.dir.path());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd.output().expect("running the bootstrap")
    }

    /// The recorded calls, one per line.
    pub fn calls(&self) -> Vec<String> {
        fs::read_to_string(&self.record)
            .expect("record")
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Copies a directory made by [`make_pki`] to `/etc/kubernetes/pki`.
    pub fn install_pki(&self, pki: &Path) {
        fs::create_dir_all(self.path("/etc/kubernetes")).expect("mkdir");
        sh(&format!(
            "cp -a '{}' '{}'",
            pki.display(),
            self.path("/etc/kubernetes/pki").display()
        ));
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }
}

/// The text of an output, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// YAML documents of `data` as JSON values, parsed by python3-yaml.
pub fn yaml(data: &[u8]) -> Vec<serde_json::Value> {
    let out = pipe(
        Command::new("python3").args([
            "-c",
            "import sys, json, yaml; print(json.dumps(list(yaml.safe_load_all(sys.stdin))))",
        ]),
        data,
    );
    assert!(out.status.success(), "YAML does not parse: {out:?}");
    serde_json::from_slice(&out.stdout).expect("json")
}

/// Runs `cmd` with `input` on its stdin and returns what it wrote.
pub fn pipe(cmd: &mut Command, input: &[u8]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning a test oracle");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input).expect("writing to the oracle");
    drop(stdin);
    child.wait_with_output().expect("oracle output")
}
