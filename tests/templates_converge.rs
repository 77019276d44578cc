//! The role bootstraps converge under failure. Each bootstrap runs in a
//! scratch root against `templates_support/model.sh`, a model of kubeadm,
//! kubelet, kubectl, crictl, helm, k3s and systemctl that writes what the
//! real tools write, phase by phase, and whose preflight refuses leftovers
//! as the real one does. For every role, a failure (or a hang) is injected
//! at each phase in turn; the bootstrap is then started again, as its unit
//! would be, until it sets its done flag. The end state must be complete
//! (token, cluster-info, CNI, Flux, etcd membership, registration), the
//! cluster CA the stamped one, and no tool may be called once the flag is
//! set.

mod templates_support;

use pipeline::flavour::{Flavour, Role};
use std::fs;
use std::net::TcpListener;
use std::path::Path;
use templates_support::*;

/// Starts of the unit before the test gives up on convergence.
const STARTS: usize = 8;

/// Runs the bootstrap until its done flag exists (at most [`STARTS`]
/// starts of three attempts each), with `knob` set on every start (the
/// model fails or hangs only once). Returns the report lines.
fn converge(s: &Scratch, knob: Option<(&str, &str)>) -> Vec<String> {
    let mut reports = Vec::new();
    for _ in 0..STARTS {
        let mut env = vec![("NODEIMG_MAX_ATTEMPTS", "3")];
        if let Some(k) = knob {
            env.push(k);
        }
        let out = s.run_env(&env);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        reports.extend(
            stdout
                .lines()
                .filter(|l| l.starts_with("nodeimg-report: v1 "))
                .map(str::to_string),
        );
        if s.path("/var/lib/nodeimg/bootstrap.done").exists() {
            assert!(
                out.status.success(),
                "done flag but failure\n{}",
                text(&out)
            );
            break;
        }
    }
    let log = fs::read_to_string(s.path("/var/log/nodeimg-bootstrap.log")).unwrap_or_default();
    assert!(
        s.path("/var/lib/nodeimg/bootstrap.done").exists(),
        "{knob:?}: no done flag after {STARTS} starts\n{log}"
    );
    let calls = s.calls();
    assert!(
        !calls.iter().any(|c| c.starts_with("CALLED AFTER")),
        "{knob:?}: a tool ran after the done flag was set:\n{}",
        calls.join("\n")
    );
    for r in &reports {
        assert!(report_line_ok(r), "{knob:?}: malformed report line: {r}");
    }
    assert!(
        reports.last().is_some_and(|r| r.contains(" status=ok ")),
        "{knob:?}: the last report is not ok: {reports:#?}"
    );
    if knob.is_some_and(|(k, _)| k == "NODEIMG_FAIL") {
        assert!(
            reports.iter().any(|r| r.contains(" status=fail ")),
            "{knob:?}: the injected failure was not reported: {reports:#?}"
        );
    }
    reports
}

/// The format of docs/firstboot.md: fixed fields, one word each, in order.
fn report_line_ok(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("nodeimg-report: v1 ") else {
        return false;
    };
    let fields: Vec<&str> = rest.splitn(6, ' ').collect();
    fields.len() == 6
        && fields[0].starts_with("node=")
        && fields[1] == "unit=nodeimg-bootstrap"
        && ["start", "step", "wait", "ok", "fail"]
            .iter()
            .any(|s| fields[2] == format!("status={s}"))
        && fields[3].starts_with("step=")
        && fields[4]
            .strip_prefix("attempt=")
            .is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n >= 1))
        && fields[5].starts_with("msg=")
}

fn knobs(points: &[&'static str]) -> Vec<Option<(&'static str, &'static str)>> {
    let mut v = vec![None];
    v.extend(points.iter().map(|p| Some(("NODEIMG_FAIL", *p))));
    v
}

// ---- kubeadm ----------------------------------------------------------

const INIT_PHASES: &[&str] = &[
    "kubeadm-init:preflight",
    "kubeadm-init:certs",
    "kubeadm-init:kubeconfig",
    "kubeadm-init:etcd",
    "kubeadm-init:control-plane",
    "kubeadm-init:kubelet-start",
    "kubeadm-init:wait-control-plane",
    "kubeadm-init:upload-config",
    "kubeadm-init:upload-certs",
    "kubeadm-init:mark-control-plane",
    "kubeadm-init:bootstrap-token",
    "kubeadm-init:kubelet-finalize",
    "kubeadm-init:addon",
    "kubectl:gateway-api",
    "helm:cilium",
    "helm:flux-operator",
];

fn init_scratch(pki: &Path, hash: &str) -> Scratch {
    let vars = kubeadm_vars(
        "controlplane",
        Role::Init,
        "192.168.1.10",
        "192.168.1.10:6443",
        hash,
    );
    let mut s = Scratch::with_model(&render(Flavour::Kubeadm, Role::Init, &vars), "controlplane");
    s.install_pki(pki);
    s.cluster_on_node("/var/lib/etcd/model");
    fs::create_dir_all(s.path("/root")).expect("mkdir");
    fs::write(s.path("/root/keys.txt"), AGE_KEY).expect("age key");
    s
}

fn assert_init_complete(s: &Scratch, pki: &Path, what: &str) {
    let node = s.object("_", "node", "controlplane");
    assert!(
        node.contains("ready=true"),
        "{what}: node not Ready: {node}"
    );
    assert!(
        node.contains("label:node-role.kubernetes.io/control-plane="),
        "{what}: not marked as a control plane"
    );
    let (id, secret) = TOKEN.split_once('.').expect("token");
    let token = s.object("kube-system", "secret", &format!("bootstrap-token-{id}"));
    assert!(token.contains(secret), "{what}: no bootstrap token");
    for (ns, kind, name) in [
        ("kube-public", "configmap", "cluster-info"),
        ("kube-system", "configmap", "kubeadm-config"),
        ("kube-system", "deployment", "coredns"),
        ("kube-system", "daemonset", "cilium"),
        ("flux-system", "secret", "flux-sops"),
        ("flux-system", "deployment", "flux-operator"),
        ("flux-system", "fluxinstance", "flux"),
    ] {
        assert!(
            s.has_object(ns, kind, name),
            "{what}: no {kind} {ns}/{name}"
        );
    }
    assert!(
        !s.object("kube-system", "daemonset", "cilium")
            .contains("gateway-api=disabled"),
        "{what}: Cilium started before the Gateway API CRDs"
    );
    assert!(
        !s.has_object("kube-system", "daemonset", "kube-proxy"),
        "{what}: kube-proxy installed"
    );
    assert!(
        s.path("/etc/cni/net.d/05-cilium.conflist").exists(),
        "{what}: no CNI configuration"
    );
    assert_eq!(
        fs::read(s.path("/etc/kubernetes/pki/ca.crt")).expect("ca.crt"),
        fs::read(pki.join("ca.crt")).expect("stamped ca.crt"),
        "{what}: the cluster CA was replaced"
    );
    assert!(
        s.path("/home/pi/.kube/config").exists(),
        "{what}: no kubeconfig"
    );
    assert!(
        !s.path("/etc/nodeimg/kubeadm.yaml").exists(),
        "{what}: the join token stayed on the card"
    );
}

#[test]
fn kubeadm_init_converges_after_a_failure_at_every_phase() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    let hash = make_pki(&pki);
    for knob in knobs(INIT_PHASES) {
        let s = init_scratch(&pki, &hash);
        converge(&s, knob);
        assert_init_complete(&s, &pki, &format!("{knob:?}"));
        // A half-done init is reset before it runs again (after preflight
        // and certs nothing is left that the next preflight refuses: kubeadm
        // reuses existing certificates; a failure reported after addon, the
        // last phase, left a complete control plane).
        let calls = s.calls();
        let inits = calls
            .iter()
            .filter(|c| c.starts_with("kubeadm init"))
            .count();
        let resets = calls
            .iter()
            .filter(|c| c.starts_with("kubeadm reset -f"))
            .count();
        if knob.is_some_and(|(_, p)| {
            p.starts_with("kubeadm-init:")
                && ![
                    "kubeadm-init:preflight",
                    "kubeadm-init:certs",
                    "kubeadm-init:addon",
                ]
                .contains(&p)
        }) {
            assert_eq!((inits, resets), (2, 1), "{knob:?}:\n{}", calls.join("\n"));
        }
    }
}

/// A private GitOps repository: the stamped deploy key becomes Flux's
/// pull secret (identity, identity.pub, known_hosts) on every path to done,
/// and the key file stays on the node for a later retry.
#[test]
fn kubeadm_init_creates_the_flux_deploy_key_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    let hash = make_pki(&pki);
    for knob in [
        None,
        Some(("NODEIMG_FAIL", "helm:flux-operator")),
        Some(("NODEIMG_FAIL", "helm:cilium")),
    ] {
        let mut vars = kubeadm_vars(
            "controlplane",
            Role::Init,
            "192.168.1.10",
            "192.168.1.10:6443",
            &hash,
        );
        vars.insert(
            "GITOPS_URL".into(),
            "git@github.com:example/pi5-lab.git".into(),
        );
        vars.insert("GITOPS_PULL_SECRET".into(), "flux-system".into());
        let mut s =
            Scratch::with_model(&render(Flavour::Kubeadm, Role::Init, &vars), "controlplane");
        s.install_pki(&pki);
        s.cluster_on_node("/var/lib/etcd/model");
        fs::create_dir_all(s.path("/root")).expect("mkdir");
        fs::write(s.path("/root/keys.txt"), AGE_KEY).expect("age key");
        for (f, text) in [
            (
                "flux-deploy-key",
                "-----BEGIN OPENSSH PRIVATE KEY-----\nmodel\n-----END OPENSSH PRIVATE KEY-----\n",
            ),
            (
                "flux-deploy-key.pub",
                "ssh-ed25519 AAAAmodel flux@pi5-lab\n",
            ),
            ("flux-known-hosts", "github.com ssh-ed25519 AAAAmodel\n"),
        ] {
            fs::write(s.path(&format!("/etc/nodeimg/{f}")), text).expect("deploy key");
        }
        converge(&s, knob);
        assert_init_complete(&s, &pki, &format!("{knob:?}"));
        let secret = s.object("flux-system", "secret", "flux-system");
        for key in ["identity", "identity.pub", "known_hosts"] {
            assert!(
                secret.lines().any(|l| l == format!("key:{key}")),
                "{knob:?}: no {key} in the pull secret: {secret}"
            );
        }
        assert!(!secret.contains("model"), "the model stored a value");
        // The private key never reached a command line.
        assert!(!s.calls().iter().any(|c| c.contains("PRIVATE KEY")));
        assert!(s.path("/etc/nodeimg/flux-deploy-key").exists());
    }
}

#[test]
fn kubeadm_init_converges_after_a_hang() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    let hash = make_pki(&pki);
    let s = init_scratch(&pki, &hash);
    converge(
        &s,
        Some(("NODEIMG_HANG", "kubeadm-init:wait-control-plane")),
    );
    assert_init_complete(&s, &pki, "hang in wait-control-plane");
}

#[test]
fn kubeadm_control_plane_join_converges_after_a_failure_at_every_phase() {
    let api = TcpListener::bind("127.0.0.1:0").expect("listener");
    let endpoint = format!("127.0.0.1:{}", api.local_addr().expect("addr").port());
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    let hash = make_pki(&pki);
    let points = [
        "kubeadm-join:preflight",
        "kubeadm-join:control-plane-prepare",
        "kubeadm-join:kubelet-start",
        "kubeadm-join:etcd",
        "kubeadm-join:mark-control-plane",
    ];
    let mut cases = knobs(&points);
    cases.push(Some(("NODEIMG_HANG", "kubeadm-join:etcd")));
    for knob in cases {
        let vars = kubeadm_vars(
            "controlplane1",
            Role::ControlPlane,
            "192.168.1.11",
            &endpoint,
            &hash,
        );
        let s = Scratch::with_model(
            &render(Flavour::Kubeadm, Role::ControlPlane, &vars),
            "controlplane1",
        );
        s.install_pki(&pki);
        s.seed_kubeadm_cluster(&hash);
        converge(&s, knob);
        let what = format!("{knob:?}");
        assert!(
            s.cluster.join("etcd-members/controlplane1").exists(),
            "{what}: not an etcd member"
        );
        assert!(
            s.cluster.join("etcd-members/controlplane").exists(),
            "{what}: lost a member"
        );
        let node = s.object("_", "node", "controlplane1");
        assert!(
            node.contains("label:node-role.kubernetes.io/control-plane="),
            "{what}: {node}"
        );
        assert!(
            s.has_object("kube-system", "pod", "etcd-controlplane1"),
            "{what}"
        );
        assert!(s.path("/etc/kubernetes/kubelet.conf").exists(), "{what}");
        assert_eq!(
            fs::read(s.path("/etc/kubernetes/pki/ca.key")).expect("ca.key"),
            fs::read(pki.join("ca.key")).expect("stamped"),
            "{what}: the cluster CA was lost"
        );
        assert!(s.path("/home/pi/.kube/config").exists(), "{what}");
        assert!(
            !s.path("/etc/nodeimg/kubeadm.yaml").exists(),
            "{what}: token kept"
        );
    }
}

#[test]
fn kubeadm_worker_join_converges_after_a_failure_at_every_phase() {
    let api = TcpListener::bind("127.0.0.1:0").expect("listener");
    let endpoint = format!("127.0.0.1:{}", api.local_addr().expect("addr").port());
    let hash = format!("sha256:{}", "ab".repeat(32));
    for knob in knobs(&["kubeadm-join:preflight", "kubeadm-join:kubelet-start"]) {
        let vars = kubeadm_vars("node0", Role::Worker, "", &endpoint, &hash);
        let s = Scratch::with_model(&render(Flavour::Kubeadm, Role::Worker, &vars), "node0");
        s.seed_kubeadm_cluster(&hash);
        converge(&s, knob);
        assert!(
            s.object("_", "node", "node0").contains("ready=true"),
            "{knob:?}"
        );
        assert!(s.path("/etc/kubernetes/kubelet.conf").exists(), "{knob:?}");
        assert!(
            !s.path("/etc/nodeimg/kubeadm.yaml").exists(),
            "{knob:?}: token kept"
        );
    }
}

#[test]
fn a_worker_waits_for_the_first_control_plane_however_long_it_takes() {
    // Nothing listens: the worker waits, reporting each wait, and never
    // sets the flag; once the API server is there, it joins.
    let api = TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = api.local_addr().expect("addr").port();
    drop(api);
    let endpoint = format!("127.0.0.1:{port}");
    let hash = format!("sha256:{}", "ab".repeat(32));
    let vars = kubeadm_vars("node0", Role::Worker, "", &endpoint, &hash);
    let s = Scratch::with_model(&render(Flavour::Kubeadm, Role::Worker, &vars), "node0");
    s.seed_kubeadm_cluster(&hash);
    // Bounded only by the test's own timeout: a few seconds of waits that
    // would be hours on a node (the sleep is a no-op here).
    let out = std::process::Command::new("timeout")
        .args(["3", "bash"])
        .arg(s.path("/usr/local/lib/nodeimg/bootstrap.sh"))
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", s.bin.display()))
        .env("NODEIMG_ROOT", &s.root)
        .env("NODEIMG_RECORD", &s.record)
        .env("NODEIMG_CLUSTER", &s.cluster)
        .env("NODEIMG_MODEL", s.dir.path().join("model"))
        .env("NODEIMG_SLEEP", "true")
        .output()
        .expect("bash");
    assert_eq!(out.status.code(), Some(124), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let waits = stdout
        .lines()
        .filter(|l| l.contains(" status=wait step=join ") && l.contains(&endpoint))
        .count();
    assert!(
        waits > 100,
        "{waits} waits\n{}",
        &stdout[..stdout.len().min(2000)]
    );
    assert!(!stdout.contains("status=fail"));
    assert!(!s.path("/var/lib/nodeimg/bootstrap.done").exists());
    let _api = TcpListener::bind(("127.0.0.1", port)).expect("listener again");
    converge(&s, None);
}

// ---- k3s --------------------------------------------------------------

fn k3s_scratch(flavour: Flavour, role: Role, hostname: &str, server: &str) -> Scratch {
    let address = if role == Role::Agent {
        ""
    } else {
        "192.168.1.50"
    };
    let vars = k3s_vars(hostname, role, address, server);
    let mut s = Scratch::with_model(&render(flavour, role, &vars), hostname);
    fs::create_dir_all(s.path("/etc/k3s")).expect("mkdir");
    fs::write(s.path("/etc/k3s/token"), K3S_TOKEN).expect("token");
    if flavour == Flavour::K3s {
        fs::write(s.path("/etc/k3s/agent-token"), K3S_AGENT_TOKEN).expect("token");
    }
    if role == Role::Init {
        s.cluster_on_node("/var/lib/rancher/k3s/server/db/model");
        fs::create_dir_all(s.path("/root")).expect("mkdir");
        fs::write(s.path("/root/keys.txt"), AGE_KEY).expect("age key");
    } else {
        s.seed_k3s_cluster();
    }
    s
}

#[test]
fn k3s_init_converges_after_a_failure_at_every_phase() {
    for knob in knobs(&["k3s-server:start", "k3s-server:register"]) {
        let s = k3s_scratch(Flavour::K3s, Role::Init, "node000", "192.168.1.50:6443");
        converge(&s, knob);
        let node = s.object("_", "node", "node000");
        assert!(
            node.contains("label:node-role.kubernetes.io/etcd=true"),
            "{knob:?}"
        );
        assert!(
            s.has_object("flux-system", "secret", "flux-sops"),
            "{knob:?}"
        );
        assert!(s.path("/home/pi/.kube/config").exists(), "{knob:?}");
    }
}

#[test]
fn k3s_server_join_converges_after_a_failure_at_every_phase() {
    let init = TcpListener::bind("127.0.0.1:0").expect("listener");
    let server = format!("127.0.0.1:{}", init.local_addr().expect("addr").port());
    for knob in knobs(&["k3s-server:start", "k3s-server:etcd", "k3s-server:register"]) {
        let s = k3s_scratch(Flavour::K3s, Role::Server, "node001", &server);
        converge(&s, knob);
        assert!(s.cluster.join("etcd-members/node001").exists(), "{knob:?}");
        let node = s.object("_", "node", "node001");
        assert!(
            node.contains("label:node-role.kubernetes.io/etcd=true"),
            "{knob:?}"
        );
    }
}

#[test]
fn k3s_agents_converge_after_a_failure_at_every_phase() {
    let init = TcpListener::bind("127.0.0.1:0").expect("listener");
    let server = format!("127.0.0.1:{}", init.local_addr().expect("addr").port());
    for flavour in [Flavour::K3s, Flavour::K3sAgent] {
        for knob in knobs(&["k3s-agent:start", "k3s-agent:register"]) {
            let s = k3s_scratch(flavour, Role::Agent, "node003", &server);
            converge(&s, knob);
            assert!(
                s.object("_", "node", "node003").contains("ready=true"),
                "{flavour} {knob:?}"
            );
            assert!(
                s.path("/var/lib/rancher/k3s/agent/kubelet.kubeconfig")
                    .exists(),
                "{flavour} {knob:?}"
            );
        }
    }
}

#[test]
fn the_model_passes_shellcheck() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("model.sh");
    fs::write(&path, MODEL).expect("write");
    let out = std::process::Command::new("shellcheck")
        .arg(&path)
        .output()
        .expect("shellcheck (Debian package shellcheck)");
    assert!(out.status.success(), "{}", text(&out));
}

/// A kubectl that lists three pending kubelet-serving requests (one from a
/// registered node, one from an unknown node, one not from a node) and an
/// approved one, and records approvals.
const CSR_KUBECTL: &str = r#"#!/bin/bash
printf '%s\n' "kubectl $*" >>"$NODEIMG_RECORD"
case "$*" in
*" get csr "*)
	printf 'csr-a system:node:node0 \ncsr-b system:node:stranger \ncsr-c system:serviceaccount:x:y \ncsr-d system:node:node0 Approved\n' ;;
*" get node node0") exit 0 ;;
*" get node "*) exit 1 ;;
esac
"#;

#[test]
fn the_csr_approver_approves_this_clusters_nodes_for_a_time_box() {
    let hash = format!("sha256:{}", "ab".repeat(32));
    let vars = kubeadm_vars(
        "controlplane",
        Role::Init,
        "192.168.1.10",
        "192.168.1.10:6443",
        &hash,
    );
    let ops = render(Flavour::Kubeadm, Role::Init, &vars);
    assert!(ops.contains(&pipeline::customise::Op::Enable {
        unit: "nodeimg-csr-approver.service".into()
    }));
    let s = Scratch::new(&ops, &[]);
    let kubectl = s.bin.join("kubectl");
    fs::write(&kubectl, CSR_KUBECTL).expect("kubectl");
    std::process::Command::new("chmod")
        .arg("755")
        .arg(&kubectl)
        .status()
        .expect("chmod");
    fs::create_dir_all(s.path("/etc/kubernetes")).expect("mkdir");
    fs::write(s.path("/etc/kubernetes/admin.conf"), "admin\n").expect("admin");
    // The window opened 23 h 59 min 55 s ago: rounds for five seconds at most
    // (the 30 s pause is a no-op here), then it closes.
    fs::create_dir_all(s.path("/var/lib/nodeimg")).expect("mkdir");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    fs::write(
        s.path("/var/lib/nodeimg/csr-approver.since"),
        format!("{}\n", now - 86395),
    )
    .expect("since");
    let run = || {
        std::process::Command::new("timeout")
            .args(["20", "bash"])
            .arg(s.path("/usr/local/lib/nodeimg/csr-approver.sh"))
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", s.bin.display()))
            .env("NODEIMG_ROOT", &s.root)
            .env("NODEIMG_RECORD", &s.record)
            .env("NODEIMG_SLEEP", "true")
            .output()
            .expect("bash")
    };
    let out = run();
    assert!(out.status.success(), "{}", text(&out));
    let approvals: Vec<String> = s
        .calls()
        .into_iter()
        .filter(|c| c.contains("certificate approve"))
        .collect();
    let want = format!(
        "kubectl --kubeconfig {}/etc/kubernetes/admin.conf certificate approve csr-a",
        s.root.display()
    );
    assert!(
        !approvals.is_empty() && approvals.iter().all(|a| *a == want),
        "{approvals:?}"
    );
    // Once closed, the window stays closed.
    fs::write(&s.record, "").expect("record");
    let out = run();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!s.calls().iter().any(|c| c.contains("approve")));
    assert!(s.path("/var/lib/nodeimg/csr-approver.done").exists());
    let unit = fs::read_to_string(s.path("/etc/systemd/system/nodeimg-csr-approver.service"))
        .expect("unit");
    assert!(unit.contains("ConditionPathExists=!/var/lib/nodeimg/csr-approver.done"));
}
