//! The role bootstraps as a real node runs them: every rendered script
//! passes `bash -n` and `shellcheck`, every unit passes `systemd-analyze
//! verify` in a Raspberry Pi OS-like root, and each role's script, run in a
//! scratch root with recording stand-ins for kubeadm, kubectl, helm, k3s and
//! systemctl, issues the role's commands in order with the cluster's secrets
//! and addresses, and does nothing the second time.

mod os_support;
mod templates_support;

use pipeline::customise::Op;
use pipeline::flavour::{Flavour, Role};
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use templates_support::*;

const KUBEADM_TOOLS: &[&str] = &[
    "kubeadm",
    "kubelet",
    "kubectl",
    "helm",
    "crio",
    "systemctl",
    "timedatectl",
    "ip",
];

/// Every flavour and role with the variables of its seed cluster.
fn all_roles() -> Vec<(Flavour, Role, Vec<Op>)> {
    let hash = "sha256:0d7ac0e4f5a3fe4bb1a3c0b6e6f4e0a1b2c3d4e5f60718293a4b5c6d7e8f9012";
    let api = "192.168.1.10:6443";
    let k3s = "192.168.1.50:6443";
    vec![
        (
            Flavour::Kubeadm,
            Role::Init,
            render(
                Flavour::Kubeadm,
                Role::Init,
                &kubeadm_vars("controlplane", Role::Init, "192.168.1.10", api, hash),
            ),
        ),
        (
            Flavour::Kubeadm,
            Role::ControlPlane,
            render(
                Flavour::Kubeadm,
                Role::ControlPlane,
                &kubeadm_vars(
                    "controlplane1",
                    Role::ControlPlane,
                    "192.168.1.11",
                    api,
                    hash,
                ),
            ),
        ),
        (
            Flavour::Kubeadm,
            Role::Worker,
            render(
                Flavour::Kubeadm,
                Role::Worker,
                &kubeadm_vars("node0", Role::Worker, "", api, hash),
            ),
        ),
        (
            Flavour::K3s,
            Role::Init,
            render(
                Flavour::K3s,
                Role::Init,
                &k3s_vars("node000", Role::Init, "192.168.1.50", k3s),
            ),
        ),
        (
            Flavour::K3s,
            Role::Server,
            render(
                Flavour::K3s,
                Role::Server,
                &k3s_vars("node001", Role::Server, "192.168.1.51", k3s),
            ),
        ),
        (
            Flavour::K3s,
            Role::Agent,
            render(
                Flavour::K3s,
                Role::Agent,
                &k3s_vars("node003", Role::Agent, "", k3s),
            ),
        ),
        (
            Flavour::K3sAgent,
            Role::Agent,
            render(
                Flavour::K3sAgent,
                Role::Agent,
                &k3s_vars("edge0", Role::Agent, "", k3s),
            ),
        ),
    ]
}

#[test]
fn rendered_scripts_pass_bash_n_and_shellcheck() {
    for (flavour, role, ops) in all_roles() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("bootstrap.sh");
        fs::write(&script, file(&ops, "/usr/local/lib/nodeimg/bootstrap.sh")).expect("write");
        fs::write(
            dir.path().join("bootstrap-lib.sh"),
            file(&ops, "/usr/local/lib/nodeimg/bootstrap-lib.sh"),
        )
        .expect("write");
        let mut cmds = vec![
            vec!["bash", "-n", "bootstrap.sh"],
            vec!["bash", "-n", "bootstrap-lib.sh"],
            vec!["shellcheck", "--external-sources", "bootstrap.sh"],
            vec!["shellcheck", "bootstrap-lib.sh"],
        ];
        if role == Role::Init && flavour == Flavour::Kubeadm {
            fs::write(
                dir.path().join("csr-approver.sh"),
                file(&ops, "/usr/local/lib/nodeimg/csr-approver.sh"),
            )
            .expect("write");
            cmds.push(vec!["bash", "-n", "csr-approver.sh"]);
            cmds.push(vec!["shellcheck", "--external-sources", "csr-approver.sh"]);
        }
        for cmd in cmds {
            let out = Command::new(cmd[0])
                .args(&cmd[1..])
                .current_dir(dir.path())
                .output()
                .expect(cmd[0]);
            assert!(
                out.status.success(),
                "{flavour} {role}: {cmd:?}\n{}",
                text(&out)
            );
        }
    }
}

#[test]
fn units_verify_and_enable_in_a_raspberry_pi_os_root() {
    let tree = os_support::rpios_tree();
    for (flavour, role, ops) in all_roles() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let status = Command::new("cp")
            .arg("-a")
            .arg(&tree)
            .arg(&root)
            .status()
            .expect("cp");
        assert!(status.success());
        write_files(&root, &ops);
        // Stand-ins for what the base image is expected to carry.
        for exe in ["usr/local/bin/k3s", "usr/sbin/modprobe"] {
            let p = root.join(exe);
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            fs::write(&p, "#!/bin/sh\n").expect("stand-in");
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let mut units = vec!["nodeimg-bootstrap.service".to_string()];
        for op in &ops {
            if let Op::File { path, .. } = op {
                if let Some(unit) = path.strip_prefix("/etc/systemd/system/") {
                    if unit != "nodeimg-bootstrap.service" {
                        units.push(unit.to_string());
                    }
                }
            }
        }
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", root.display()))
            .args(&units)
            .output()
            .expect("systemd-analyze");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{flavour} {role}: systemd-analyze verify {units:?}\n{}",
            text(&out)
        );
        // The op stamp executes, checked against systemctl's own enable.
        assert!(ops.contains(&Op::Enable {
            unit: "nodeimg-bootstrap.service".into()
        }));
        let out = Command::new("systemctl")
            .arg(format!("--root={}", root.display()))
            .args(["enable", "nodeimg-bootstrap.service"])
            .output()
            .expect("systemctl");
        assert!(out.status.success(), "{}", text(&out));
        let link =
            root.join("etc/systemd/system/multi-user.target.wants/nodeimg-bootstrap.service");
        assert_eq!(
            fs::read_link(&link).expect("enabled"),
            std::path::Path::new("/etc/systemd/system/nodeimg-bootstrap.service")
        );
        let preset = fs::read_to_string(root.join("etc/systemd/system-preset/10-nodeimg.preset"))
            .expect("preset");
        assert!(preset
            .lines()
            .any(|l| l == "enable nodeimg-bootstrap.service"));
    }
}

/// Runs the bootstrap twice: the first run must succeed, the second must
/// call nothing. Returns the calls of the first run.
fn run_twice(s: &Scratch) -> Vec<String> {
    let out = s.run();
    assert!(out.status.success(), "first run\n{}", text(&out));
    let calls = s.calls();
    assert!(s.path("/var/lib/nodeimg/bootstrap.done").exists());
    let log = fs::read_to_string(s.path("/var/log/nodeimg-bootstrap.log")).expect("log file");
    assert!(log.contains("nodeimg-bootstrap: done"), "{log}");
    let out = s.run();
    assert!(out.status.success(), "second run\n{}", text(&out));
    assert_eq!(s.calls(), calls, "the second run called something");
    assert!(String::from_utf8_lossy(&out.stdout).contains("already bootstrapped"));
    calls
}

/// The calls without the probes the waits and the done checks make.
fn actions(calls: &[String]) -> Vec<&str> {
    calls
        .iter()
        .map(String::as_str)
        .filter(|c| {
            !c.starts_with("ip ")
                && !c.starts_with("timedatectl ")
                && !c.starts_with("kubectl --kubeconfig ")
                && !c.starts_with("k3s kubectl get node")
                && !c.starts_with("k3s kubectl --kubeconfig ")
                && !c.starts_with("systemctl is-active ")
        })
        .collect()
}

fn assert_secrets_not_in(s: &Scratch, secrets: &[&str]) {
    let log = fs::read_to_string(s.path("/var/log/nodeimg-bootstrap.log")).expect("log");
    let calls = s.calls().join("\n");
    for secret in secrets {
        assert!(!log.contains(secret), "a secret is in the log");
        assert!(!calls.contains(secret), "a secret is on a command line");
    }
}

#[test]
fn kubeadm_init_runs_init_cilium_sops_and_flux_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hash = make_pki(&dir.path().join("pki"));
    let vars = kubeadm_vars(
        "controlplane",
        Role::Init,
        "192.168.1.10",
        "192.168.1.10:6443",
        &hash,
    );
    let ops = render(Flavour::Kubeadm, Role::Init, &vars);
    let mut s = Scratch::with_model(&ops, "controlplane");
    s.cluster_on_node("/var/lib/etcd/model");
    s.install_pki(&dir.path().join("pki"));
    fs::create_dir_all(s.path("/root")).expect("mkdir");
    fs::write(s.path("/root/keys.txt"), AGE_KEY).expect("age key");

    let config = fs::read_to_string(s.path("/etc/nodeimg/kubeadm.yaml")).expect("config");
    let calls = run_twice(&s);
    assert_eq!(
        actions(&calls),
        [
            "systemctl enable --now crio.service",
            "systemctl enable kubelet.service",
            "kubeadm init --config /etc/nodeimg/kubeadm.yaml --skip-token-print",
            "kubectl apply --server-side --force-conflicts --filename=https://github.com/\
             kubernetes-sigs/gateway-api/releases/download/v1.3.0/standard-install.yaml",
            "helm upgrade --install cilium cilium --repo https://helm.cilium.io/ --version 1.18.0 \
             --namespace kube-system --values /etc/nodeimg/cilium-values.yaml",
            "kubectl --namespace kube-system rollout status daemonset/cilium --timeout=15m",
            "kubectl wait --for=condition=Ready node/controlplane --timeout=10m",
            "kubectl create namespace flux-system --dry-run=client --output=yaml",
            "kubectl apply --filename=-",
            "kubectl --namespace flux-system create secret generic flux-sops \
             --from-file=age.agekey=/root/keys.txt --dry-run=client --output=yaml",
            "kubectl apply --filename=-",
            "helm upgrade --install flux-operator \
             oci://ghcr.io/controlplaneio-fluxcd/charts/flux-operator --namespace flux-system \
             --create-namespace",
            "kubectl get crd fluxinstances.fluxcd.controlplane.io",
            "kubectl apply --filename=-",
            "kubectl --namespace flux-system wait fluxinstance/flux --for=condition=Ready \
             --timeout=10m",
        ]
    );
    // The configuration kubeadm was given carries the cluster's token (and
    // is gone once the token exists), CA pin is checked against ca.crt, and
    // the user got a kubeconfig.
    assert!(config.contains(TOKEN));
    assert!(!s.path("/etc/nodeimg/kubeadm.yaml").exists());
    let kubeconfig = s.path("/home/pi/.kube/config");
    let meta = fs::metadata(&kubeconfig).expect("kubeconfig");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 1000);
    let log = fs::read_to_string(s.path("/var/log/nodeimg-bootstrap.log")).expect("log");
    assert!(log.contains(&format!("cluster CA {hash} present")), "{log}");
    assert_secrets_not_in(&s, &[TOKEN, "AGE-SECRET-KEY"]);
}

#[test]
fn kubeadm_init_refuses_a_ca_that_is_not_the_clusters() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_pki(&dir.path().join("pki"));
    let wrong = format!("sha256:{}", "0".repeat(64));
    let vars = kubeadm_vars(
        "controlplane",
        Role::Init,
        "192.168.1.10",
        "192.168.1.10:6443",
        &wrong,
    );
    let s = Scratch::new(&render(Flavour::Kubeadm, Role::Init, &vars), KUBEADM_TOOLS);
    s.install_pki(&dir.path().join("pki"));
    let out = s.run();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("error: /etc/kubernetes/pki/ca.crt is not the cluster CA"),
        "{stdout}"
    );
    assert!(!s.calls().iter().any(|c| c.starts_with("kubeadm")));
    assert!(!s.path("/var/lib/nodeimg/bootstrap.done").exists());
}

#[test]
fn a_missing_tool_fails_with_a_clear_line_and_no_flag() {
    let vars = kubeadm_vars("node0", Role::Worker, "", "127.0.0.1:1", "sha256:00");
    let s = Scratch::new(
        &render(Flavour::Kubeadm, Role::Worker, &vars),
        &["systemctl", "crio"],
    );
    let out = s.run();
    assert!(!out.status.success());
    let log = fs::read_to_string(s.path("/var/log/nodeimg-bootstrap.log")).expect("log");
    assert!(
        log.contains("error: not installed in this image: kubeadm kubelet"),
        "{log}"
    );
    assert!(s.calls().is_empty());
    assert!(!s.path("/var/lib/nodeimg/bootstrap.done").exists());
}

/// Runs a joining node's bootstrap twice and checks what it called and the
/// configuration kubeadm got; returns that JoinConfiguration.
fn assert_joins(s: &Scratch, endpoint: &str, hash: &str) -> serde_json::Value {
    let config = yaml(&fs::read(s.path("/etc/nodeimg/kubeadm.yaml")).expect("config"));
    let calls = run_twice(s);
    assert_eq!(
        actions(&calls),
        [
            "systemctl enable --now crio.service",
            "systemctl enable kubelet.service",
            "kubeadm join --config /etc/nodeimg/kubeadm.yaml",
        ]
    );
    // The join token is gone from the node once it has joined.
    assert!(!s.path("/etc/nodeimg/kubeadm.yaml").exists());
    let bt = &config[0]["discovery"]["bootstrapToken"];
    assert_eq!(bt["apiServerEndpoint"], endpoint);
    assert_eq!(bt["token"], TOKEN);
    assert_eq!(bt["caCertHashes"][0], hash);
    assert_secrets_not_in(s, &[TOKEN]);
    config[0].clone()
}

#[test]
fn kubeadm_control_plane_joins_with_the_distributed_ca() {
    let api = TcpListener::bind("127.0.0.1:0").expect("listener");
    let endpoint = format!("127.0.0.1:{}", api.local_addr().expect("addr").port());
    let dir = tempfile::tempdir().expect("tempdir");
    let hash = make_pki(&dir.path().join("pki"));
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
    s.install_pki(&dir.path().join("pki"));
    s.seed_kubeadm_cluster(&hash);
    let join = assert_joins(&s, &endpoint, &hash);
    assert_eq!(join["kind"], "JoinConfiguration");
    assert_eq!(
        join["controlPlane"]["localAPIEndpoint"]["advertiseAddress"],
        "192.168.1.11"
    );
    assert!(s.path("/home/pi/.kube/config").exists());
    assert_secrets_not_in(&s, &[TOKEN]);
}

#[test]
fn kubeadm_worker_joins() {
    let api = TcpListener::bind("127.0.0.1:0").expect("listener");
    let endpoint = format!("127.0.0.1:{}", api.local_addr().expect("addr").port());
    let hash = format!("sha256:{}", "ab".repeat(32));
    let vars = kubeadm_vars("node0", Role::Worker, "", &endpoint, &hash);
    let s = Scratch::with_model(&render(Flavour::Kubeadm, Role::Worker, &vars), "node0");
    s.seed_kubeadm_cluster(&hash);
    let join = assert_joins(&s, &endpoint, &hash);
    assert!(join.get("controlPlane").is_none());
    assert!(!s.path("/home/pi/.kube/config").exists());
}

/// The k3s roles: the k3s binary is found on PATH and linked where the unit
/// runs it, the token files are checked, the unit is started.
fn k3s_scratch(flavour: Flavour, role: Role, hostname: &str, server: &str) -> Scratch {
    let vars = k3s_vars(
        hostname,
        role,
        if role == Role::Agent {
            ""
        } else {
            "192.168.1.50"
        },
        server,
    );
    let mut s = Scratch::with_model(&render(flavour, role, &vars), hostname);
    if role == Role::Init {
        s.cluster_on_node("/var/lib/rancher/k3s/server/db/model");
    } else {
        s.seed_k3s_cluster();
    }
    fs::create_dir_all(s.path("/etc/k3s")).expect("mkdir");
    fs::write(s.path("/etc/k3s/token"), K3S_TOKEN).expect("token");
    if flavour == Flavour::K3s {
        fs::write(s.path("/etc/k3s/agent-token"), K3S_AGENT_TOKEN).expect("token");
    }
    s
}

fn k3s_config(s: &Scratch) -> serde_json::Value {
    yaml(&fs::read(s.path("/etc/rancher/k3s/config.yaml")).expect("config"))
        .into_iter()
        .next()
        .expect("one document")
}

#[test]
fn k3s_init_server_starts_with_cluster_init() {
    let s = k3s_scratch(Flavour::K3s, Role::Init, "node000", "192.168.1.50:6443");
    fs::create_dir_all(s.path("/root")).expect("mkdir");
    fs::write(s.path("/root/keys.txt"), AGE_KEY).expect("age key");
    let calls = run_twice(&s);
    assert_eq!(
        actions(&calls),
        [
            "systemctl enable k3s.service",
            "systemctl restart k3s.service",
            "k3s kubectl wait --for=condition=Ready node/node000 --timeout=10m",
            "k3s kubectl create namespace flux-system --dry-run=client --output=yaml",
            "k3s kubectl apply --filename=-",
            "k3s kubectl --namespace flux-system create secret generic flux-sops \
             --from-file=age.agekey=/root/keys.txt --dry-run=client --output=yaml",
            "k3s kubectl apply --filename=-",
        ]
    );
    assert_eq!(
        fs::read_link(s.path("/usr/local/bin/k3s")).expect("k3s linked"),
        s.bin.join("k3s")
    );
    let c = k3s_config(&s);
    assert_eq!(c["cluster-init"], true);
    assert_eq!(c["token-file"], "/etc/k3s/token");
    assert_eq!(c["agent-token-file"], "/etc/k3s/agent-token");
    assert_eq!(c["cluster-cidr"], "10.42.0.0/16");
    assert!(c.get("server").is_none());
    let san = yaml(
        &fs::read(s.path("/etc/rancher/k3s/config.yaml.d/10-nodeimg-tls-san.yaml"))
            .expect("tls-san drop-in"),
    );
    assert_eq!(san[0]["tls-san"][0], "192.168.1.50");
    let unit = fs::read_to_string(s.path("/etc/systemd/system/k3s.service")).expect("unit");
    assert!(unit.contains("\nExecStart=/usr/local/bin/k3s server\n"));
    assert!(s.path("/home/pi/.kube/config").exists());
    assert_secrets_not_in(&s, &[K3S_TOKEN, K3S_AGENT_TOKEN, "AGE-SECRET-KEY"]);
}

#[test]
fn k3s_server_joins_the_init_server() {
    let init = TcpListener::bind("127.0.0.1:0").expect("listener");
    let server = format!("127.0.0.1:{}", init.local_addr().expect("addr").port());
    let s = k3s_scratch(Flavour::K3s, Role::Server, "node001", &server);
    let calls = run_twice(&s);
    assert_eq!(
        actions(&calls),
        [
            "systemctl enable k3s.service",
            "systemctl restart k3s.service",
            "k3s kubectl wait --for=condition=Ready node/node001 --timeout=10m",
        ]
    );
    let c = k3s_config(&s);
    assert_eq!(c["server"], format!("https://{server}").as_str());
    assert_eq!(c["token-file"], "/etc/k3s/token");
    assert!(c.get("cluster-init").is_none());
}

#[test]
fn k3s_agents_join_with_their_token_file() {
    let init = TcpListener::bind("127.0.0.1:0").expect("listener");
    let server = format!("127.0.0.1:{}", init.local_addr().expect("addr").port());
    for (flavour, token_file) in [
        (Flavour::K3s, "/etc/k3s/agent-token"),
        (Flavour::K3sAgent, "/etc/k3s/token"),
    ] {
        let s = k3s_scratch(flavour, Role::Agent, "node003", &server);
        let calls = run_twice(&s);
        assert_eq!(
            actions(&calls),
            [
                "systemctl enable k3s-agent.service",
                "systemctl restart k3s-agent.service",
            ],
            "{flavour}"
        );
        let c = k3s_config(&s);
        assert_eq!(c["server"], format!("https://{server}").as_str());
        assert_eq!(c["token-file"], token_file, "{flavour}");
        let unit =
            fs::read_to_string(s.path("/etc/systemd/system/k3s-agent.service")).expect("unit");
        assert!(unit.contains("\nExecStart=/usr/local/bin/k3s agent\n"));
    }
}

#[test]
fn k3s_without_its_token_file_fails_clearly() {
    let init = TcpListener::bind("127.0.0.1:0").expect("listener");
    let server = format!("127.0.0.1:{}", init.local_addr().expect("addr").port());
    let s = k3s_scratch(Flavour::K3sAgent, Role::Agent, "edge0", &server);
    fs::remove_file(s.path("/etc/k3s/token")).expect("rm token");
    let out = s.run();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("error: token-file /etc/k3s/token is missing or empty"),
        "{}",
        text(&out)
    );
    assert!(!s.calls().iter().any(|c| c.starts_with("systemctl")));
}

/// The shell script `nodeimg.nix` runs at boot, with the module's Nix
/// interpolations replaced as NixOS would: the state directory by `state`,
/// the k3s package by `bin`'s stand-in, the extra flags by one flag.
fn nixos_start_script(state: &std::path::Path, bin: &std::path::Path) -> String {
    let module = pipeline::templates::nixos_module();
    let start = module
        .find("pkgs.writeShellScript \"nodeimg-k3s\" ''\n")
        .expect("the start script");
    let body = &module[start..];
    let body = &body[body.find('\n').expect("newline") + 1..];
    let body = &body[..body.find("\n  '';").expect("end of the script")];
    let script = body
        .replace("${state}", &state.display().to_string())
        .replace(
            "${k3sData}",
            &state.join("rancher-k3s").display().to_string(),
        )
        .replace(
            "${cfg.k3s.package}/bin/k3s",
            &bin.join("k3s").display().to_string(),
        )
        .replace(
            "${lib.escapeShellArgs cfg.k3s.extraFlags}",
            "'--disable=traefik'",
        )
        .replace("''${", "${");
    format!("#!/bin/bash\n{script}\n")
}

#[test]
fn the_nixos_module_starts_k3s_in_the_stamped_role() {
    let s = Scratch::new(&[], &["k3s"]);
    let state = s.path("/var/lib/nodeimg");
    fs::create_dir_all(&state).expect("mkdir");
    let script = s.dir.path().join("nodeimg-k3s");
    fs::write(&script, nixos_start_script(&state, &s.bin)).expect("write");
    for cmd in [vec!["bash", "-n"], vec!["shellcheck"]] {
        let out = Command::new(cmd[0])
            .args(&cmd[1..])
            .arg(&script)
            .output()
            .expect(cmd[0]);
        assert!(out.status.success(), "{cmd:?}\n{}", text(&out));
    }
    let run = |files: &[(&str, &str)]| {
        for f in [
            "role",
            "address",
            "server-url",
            "k3s-token",
            "k3s-agent-token",
        ] {
            let _ = fs::remove_file(state.join(f));
        }
        for (f, content) in files {
            fs::write(state.join(f), content).expect("stamped file");
        }
        fs::write(&s.record, "").expect("record");
        let out = Command::new("bash")
            .arg(&script)
            .env("NODEIMG_ROOT", &s.root)
            .env("NODEIMG_RECORD", &s.record)
            .output()
            .expect("bash");
        (out, s.calls())
    };
    let url = "https://192.168.1.50:6443\n";
    let (out, calls) = run(&[
        ("role", "init\n"),
        ("address", "192.168.1.50/24\n"),
        ("k3s-token", K3S_TOKEN),
        ("k3s-agent-token", K3S_AGENT_TOKEN),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        calls,
        [
            "k3s server --cluster-init --token-file /var/lib/nodeimg/k3s-token \
          --node-ip 192.168.1.50 --agent-token-file /var/lib/nodeimg/k3s-agent-token \
          --disable=traefik"
        ]
    );
    let (_, calls) = run(&[
        ("role", "server\n"),
        ("server-url", url),
        ("k3s-token", K3S_TOKEN),
    ]);
    assert_eq!(
        calls,
        [
            "k3s server --server https://192.168.1.50:6443 --token-file \
          /var/lib/nodeimg/k3s-token --disable=traefik"
        ]
    );
    let (_, calls) = run(&[
        ("role", "agent\n"),
        ("server-url", url),
        ("k3s-token", K3S_TOKEN),
        ("k3s-agent-token", K3S_AGENT_TOKEN),
        ("address", ""),
    ]);
    assert_eq!(
        calls,
        ["k3s agent --server https://192.168.1.50:6443 --token-file \
          /var/lib/nodeimg/k3s-agent-token --disable=traefik"]
    );
    let (_, calls) = run(&[
        ("role", "agent\n"),
        ("server-url", url),
        ("k3s-token", K3S_TOKEN),
    ]);
    assert_eq!(
        calls,
        ["k3s agent --server https://192.168.1.50:6443 --token-file \
          /var/lib/nodeimg/k3s-token --disable=traefik"]
    );
    // A joining server whose last start never became ready loses the etcd
    // data that start left; one that became ready keeps it.
    let db = state.join("rancher-k3s/server/db");
    for (ready, kept) in [(false, false), (true, true)] {
        fs::create_dir_all(&db).expect("db");
        if ready {
            fs::write(state.join("k3s-ready"), "").expect("mark");
        }
        let (out, _) = run(&[
            ("role", "server\n"),
            ("server-url", url),
            ("k3s-token", K3S_TOKEN),
        ]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("unit=nodeimg-k3s status=start step=k3s"),
            "{}",
            text(&out)
        );
        assert_eq!(db.exists(), kept, "ready: {ready}");
    }
    let _ = fs::remove_file(state.join("k3s-ready"));
    let (out, calls) = run(&[("role", "agent\n"), ("k3s-token", K3S_TOKEN)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("server-url is missing for role agent"));
    assert!(calls.is_empty());
    let (out, calls) = run(&[("role", "bogus\n"), ("k3s-token", K3S_TOKEN)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown role 'bogus'"));
    assert!(calls.is_empty());
}
