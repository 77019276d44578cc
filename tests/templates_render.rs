//! Rendering the templates: envsubst is the oracle of the renderer, YAML
//! parses with python3-yaml and carries token, CA pin, endpoint and subnets,
//! the Nix files parse with `nix-instantiate --parse`, overrides replace
//! embedded files one by one, undefined variables are named, secrets are
//! marked, and docs/templates.md lists every variable and its worked
//! example renders as shown.

mod os_support;
mod templates_support;

use pipeline::customise::Op;
use pipeline::flavour::{Flavour, Role};
use pipeline::templates::{
    cluster_nix, embedded_templates, nixos_firstboot_ops, nixos_module, render_node, render_text,
    ProfileKind, RenderRequest, Vars, BOOTSTRAP_LIB_PATH, FIRSTBOOT_LIST_PATH, FIRSTBOOT_PATH,
    VARIABLES,
};
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;
use templates_support::*;

const HASH: &str = "sha256:7d1f0e4f5a3fe4bb1a3c0b6e6f4e0a1b2c3d4e5f60718293a4b5c6d7e8f9012";

fn init_vars() -> Vars {
    kubeadm_vars(
        "controlplane",
        Role::Init,
        "192.168.1.10",
        "192.168.1.10:6443",
        HASH,
    )
}

#[test]
fn kubeadm_init_config_carries_token_endpoint_and_subnets() {
    let ops = render(Flavour::Kubeadm, Role::Init, &init_vars());
    let docs = yaml(file(&ops, "/etc/nodeimg/kubeadm.yaml"));
    assert_eq!(docs.len(), 3);
    let init = &docs[0];
    assert_eq!(init["apiVersion"], "kubeadm.k8s.io/v1beta4");
    assert_eq!(init["kind"], "InitConfiguration");
    assert_eq!(init["bootstrapTokens"][0]["token"], TOKEN);
    assert_eq!(init["bootstrapTokens"][0]["ttl"], "8760h");
    assert_eq!(init["localAPIEndpoint"]["advertiseAddress"], "192.168.1.10");
    assert_eq!(init["localAPIEndpoint"]["bindPort"], 6443);
    assert_eq!(init["nodeRegistration"]["name"], "controlplane");
    assert_eq!(init["skipPhases"][0], "addon/kube-proxy");
    let cluster = &docs[1];
    assert_eq!(cluster["kind"], "ClusterConfiguration");
    assert_eq!(cluster["controlPlaneEndpoint"], "192.168.1.10:6443");
    assert_eq!(cluster["networking"]["podSubnet"], "10.244.64.0/18");
    assert_eq!(cluster["networking"]["serviceSubnet"], "10.244.0.0/20");
    assert_eq!(cluster["certificatesDir"], "/etc/kubernetes/pki");
    let kubelet = &docs[2];
    assert_eq!(kubelet["kind"], "KubeletConfiguration");
    assert_eq!(kubelet["serverTLSBootstrap"], true);

    let cilium = &yaml(file(&ops, "/etc/nodeimg/cilium-values.yaml"))[0];
    assert_eq!(cilium["kubeProxyReplacement"], true);
    assert_eq!(cilium["gatewayAPI"]["enabled"], true);
    assert_eq!(cilium["l2announcements"]["enabled"], true);
    assert_eq!(cilium["k8sServiceHost"], "192.168.1.10");
    assert_eq!(cilium["k8sServicePort"], 6443);
    assert_eq!(
        cilium["ipam"]["operator"]["clusterPoolIPv4PodCIDRList"][0],
        "10.244.64.0/18"
    );

    let flux = &yaml(file(&ops, "/etc/nodeimg/flux-instance.yaml"))[0];
    assert_eq!(flux["kind"], "FluxInstance");
    assert_eq!(
        flux["spec"]["sync"]["url"],
        "https://github.com/example/pi5-lab.git"
    );
    assert_eq!(flux["spec"]["sync"]["ref"], "refs/heads/main");
    assert_eq!(flux["spec"]["sync"]["path"], "clusters/pi5-lab");
    let patch = flux["spec"]["kustomize"]["patches"][0]["patch"]
        .as_str()
        .expect("patch");
    assert_eq!(
        yaml(patch.as_bytes())[0][0]["value"]["secretRef"]["name"],
        "flux-sops"
    );
}

#[test]
fn the_flux_instance_names_the_deploy_key_secret_only_with_a_deploy_key() {
    let pull_secret = |value: &str| {
        let mut v = init_vars();
        v.insert(
            "GITOPS_URL".into(),
            "git@github.com:example/pi5-lab.git".into(),
        );
        v.insert("GITOPS_PULL_SECRET".into(), value.into());
        let ops = render(Flavour::Kubeadm, Role::Init, &v);
        let flux = &yaml(file(&ops, "/etc/nodeimg/flux-instance.yaml"))[0];
        assert_eq!(
            flux["spec"]["sync"]["url"],
            "git@github.com:example/pi5-lab.git"
        );
        flux["spec"]["sync"]["pullSecret"].clone()
    };
    assert_eq!(pull_secret("flux-system"), "flux-system");
    // Without a deploy key the field is empty, which the operator reads as
    // absent (a Go string field; no secret is looked up).
    assert_eq!(pull_secret(""), "");
}

#[test]
fn a_configured_token_ttl_and_no_gitops_url() {
    let mut v = init_vars();
    v.insert("KUBEADM_TOKEN_TTL".into(), "720h".into());
    v.insert("GITOPS_URL".into(), String::new());
    let ops = render(Flavour::Kubeadm, Role::Init, &v);
    let init = &yaml(file(&ops, "/etc/nodeimg/kubeadm.yaml"))[0];
    assert_eq!(init["bootstrapTokens"][0]["ttl"], "720h");
    assert!(!ops.iter().any(
        |op| matches!(op, Op::File { path, .. } if path == "/etc/nodeimg/flux-instance.yaml")
    ));
}

#[test]
fn join_configs_carry_token_ca_pin_and_endpoint() {
    for (role, host) in [
        (Role::ControlPlane, "controlplane1"),
        (Role::Worker, "node0"),
    ] {
        let v = kubeadm_vars(host, role, "192.168.1.11", "192.168.1.10:6443", HASH);
        let ops = render(Flavour::Kubeadm, role, &v);
        let join = &yaml(file(&ops, "/etc/nodeimg/kubeadm.yaml"))[0];
        assert_eq!(join["kind"], "JoinConfiguration");
        let bt = &join["discovery"]["bootstrapToken"];
        assert_eq!(bt["token"], TOKEN);
        assert_eq!(bt["apiServerEndpoint"], "192.168.1.10:6443");
        assert_eq!(bt["caCertHashes"][0], HASH);
        assert_eq!(join["nodeRegistration"]["name"], host);
        if role == Role::ControlPlane {
            assert_eq!(
                join["controlPlane"]["localAPIEndpoint"]["advertiseAddress"],
                "192.168.1.11"
            );
            assert!(join["controlPlane"].get("certificateKey").is_none());
        } else {
            assert!(join.get("controlPlane").is_none());
        }
    }
}

#[test]
fn files_modes_and_secrets() {
    let ops = render(Flavour::Kubeadm, Role::Init, &init_vars());
    let mut seen = Vec::new();
    for op in &ops {
        if let Op::File {
            path,
            mode,
            uid,
            gid,
            secret,
            ..
        } = op
        {
            assert_eq!((*uid, *gid), (0, 0), "{path}");
            seen.push((path.as_str(), *mode, *secret));
        }
    }
    assert_eq!(
        seen,
        [
            ("/usr/local/lib/nodeimg/bootstrap.sh", 0o755, false),
            ("/etc/nodeimg/kubeadm.yaml", 0o600, true),
            ("/etc/nodeimg/cilium-values.yaml", 0o600, false),
            ("/usr/local/lib/nodeimg/csr-approver.sh", 0o755, false),
            (
                "/etc/systemd/system/nodeimg-csr-approver.service",
                0o644,
                false
            ),
            ("/etc/nodeimg/flux-instance.yaml", 0o600, false),
            ("/usr/local/lib/nodeimg/bootstrap-lib.sh", 0o644, false),
            (
                "/etc/systemd/system/nodeimg-bootstrap.service",
                0o644,
                false
            ),
            ("/etc/systemd/system-preset/10-nodeimg.preset", 0o644, false),
        ]
    );
    assert_eq!(
        ops.last(),
        Some(&Op::Enable {
            unit: "nodeimg-bootstrap.service".into()
        })
    );
    // Only the kubeadm configuration holds the token.
    for op in &ops {
        if let Op::File {
            path, data, secret, ..
        } = op
        {
            let has = String::from_utf8_lossy(data).contains(TOKEN);
            assert_eq!(has, *secret, "{path}");
        }
    }
    // k3s: the tokens stay in their files; nothing rendered is secret.
    let v = k3s_vars("node000", Role::Init, "192.168.1.50", "192.168.1.50:6443");
    for op in render(Flavour::K3s, Role::Init, &v) {
        if let Op::File {
            path, data, secret, ..
        } = op
        {
            assert!(!secret, "{path}");
            assert!(
                !String::from_utf8_lossy(&data).contains(K3S_TOKEN),
                "{path}"
            );
        }
    }
}

/// GNU envsubst with the declared list is the oracle of the renderer, on
/// every embedded template.
#[test]
fn every_template_renders_as_envsubst_does() {
    let mut vars = init_vars();
    vars.extend(k3s_vars(
        "node000",
        Role::Init,
        "192.168.1.50",
        "192.168.1.50:6443",
    ));
    vars.insert(
        "GITOPS_URL".into(),
        "https://github.com/example/pi5-lab.git".into(),
    );
    for v in VARIABLES {
        if let Some(d) = v.default {
            vars.entry(v.name.into()).or_insert_with(|| d.into());
        }
    }
    let shell_format: String = VARIABLES.iter().map(|v| format!("${} ", v.name)).collect();
    for (name, text) in embedded_templates() {
        let ours = render_text(name, text, &vars).expect("renders");
        let out = pipe(
            Command::new("envsubst")
                .arg(&shell_format)
                .env_clear()
                .envs(&vars),
            text.as_bytes(),
        );
        assert!(out.status.success());
        assert_eq!(ours, String::from_utf8_lossy(&out.stdout), "{name}");
    }
}

/// No template refers to an upper-case `${NAME}` that is neither declared
/// nor set by the script itself (a typo would reach the node unrendered).
#[test]
fn templates_use_only_declared_upper_case_names() {
    let declared: BTreeSet<&str> = VARIABLES.iter().map(|v| v.name).collect();
    let runtime = [
        "NODEIMG_ROOT",
        "ROOT",
        "DONE_FLAG",
        "LOG_FILE",
        "PKI",
        "HOME",
        "PIPESTATUS",
        "SLEEP",
        "STEP_TIMEOUT",
        "STATE_DIR",
        "ATTEMPT_FILE",
        "FAIL_FILE",
        "KUBE",
        "NODEIMG_SLEEP",
        "NODEIMG_STEP_TIMEOUT",
        "NODEIMG_MAX_ATTEMPTS",
        "NODEIMG_CSR_WINDOW",
    ];
    for (name, text) in embedded_templates() {
        for n in upper_case_references(text) {
            assert!(
                declared.contains(n.as_str()) || runtime.contains(&n.as_str()),
                "{name}: ${n} is not a declared variable"
            );
        }
    }
}

/// Upper-case names after `$` or `${`.
fn upper_case_references(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    for i in 0..b.len() {
        if b[i] != b'$' {
            continue;
        }
        let mut j = i + 1;
        if b.get(j) == Some(&b'{') {
            j += 1;
        }
        let start = j;
        while j < b.len() && (b[j].is_ascii_uppercase() || b[j].is_ascii_digit() || b[j] == b'_') {
            j += 1;
        }
        if j > start && b[start].is_ascii_uppercase() {
            out.push(text[start..j].to_string());
        }
    }
    out
}

#[test]
fn every_template_file_is_embedded() {
    let top = os_support::repo().join("templates");
    let mut on_disk = BTreeSet::new();
    for flavour in fs::read_dir(&top).expect("templates/") {
        let flavour = flavour.expect("entry").path();
        let fname = flavour
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        for f in fs::read_dir(&flavour).expect("flavour dir") {
            let f = f.expect("entry").file_name().to_string_lossy().to_string();
            // provision/ holds the shipped provisioning recipes, embedded by
            // pipeline::provision::recipes, not role templates.
            if f != "README.md" && fname != "nixos" && fname != "provision" {
                on_disk.insert(format!("{fname}/{f}"));
            }
        }
    }
    let embedded: BTreeSet<String> = embedded_templates()
        .iter()
        .map(|(p, _)| p.to_string())
        .collect();
    assert_eq!(on_disk, embedded);
    assert_eq!(
        nixos_module(),
        fs::read_to_string(top.join("nixos/nodeimg.nix")).expect("nodeimg.nix")
    );
}

#[test]
fn an_undefined_variable_is_named_with_its_template() {
    let mut v = kubeadm_vars("node0", Role::Worker, "", "192.168.1.10:6443", HASH);
    v.remove("CA_CERT_HASH");
    let err = render_node(&RenderRequest {
        flavour: Flavour::Kubeadm,
        role: Role::Worker,
        profile: ProfileKind::Debian,
        vars: &v,
        overrides: None,
    })
    .expect_err("refused");
    assert_eq!(
        err.to_string(),
        "template kubeadm/worker.yaml: variable CA_CERT_HASH is not defined"
    );
}

#[test]
fn an_override_replaces_one_file_and_is_held_to_the_same_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::create_dir_all(dir.path().join("kubeadm")).expect("mkdir");
    fs::write(
        dir.path().join("kubeadm/worker.yaml"),
        "# mine\nnode: ${NODE_HOSTNAME}\nkeep: $other ${other}\n",
    )
    .expect("write");
    // A common/ override applies to every flavour without its own file.
    fs::create_dir_all(dir.path().join("common")).expect("mkdir");
    fs::write(
        dir.path().join("common/nodeimg.preset"),
        "enable nodeimg-bootstrap.service\n# mine\n",
    )
    .expect("write");
    let v = kubeadm_vars("node0", Role::Worker, "", "192.168.1.10:6443", HASH);
    let req = RenderRequest {
        flavour: Flavour::Kubeadm,
        role: Role::Worker,
        profile: ProfileKind::Debian,
        vars: &v,
        overrides: Some(dir.path()),
    };
    let ops = render_node(&req).expect("renders");
    assert_eq!(
        file(&ops, "/etc/nodeimg/kubeadm.yaml"),
        b"# mine\nnode: node0\nkeep: $other ${other}\n"
    );
    assert!(
        String::from_utf8_lossy(file(&ops, "/etc/systemd/system-preset/10-nodeimg.preset"))
            .contains("# mine")
    );
    // Everything else is the embedded text.
    let embedded = render(Flavour::Kubeadm, Role::Worker, &v);
    assert_eq!(
        file(&ops, "/usr/local/lib/nodeimg/bootstrap.sh"),
        file(&embedded, "/usr/local/lib/nodeimg/bootstrap.sh")
    );

    fs::write(
        dir.path().join("kubeadm/worker.yaml"),
        "x: ${NODE_GATEWAY_TYPO}${GITOPS_PATH}\n",
    )
    .expect("write");
    let mut v2 = v.clone();
    v2.remove("GITOPS_PATH");
    let err = render_node(&RenderRequest { vars: &v2, ..req }).expect_err("refused");
    assert_eq!(
        err.to_string(),
        format!(
            "template {}: variable GITOPS_PATH is not defined",
            dir.path().join("kubeadm/worker.yaml").display()
        )
    );

    let missing = dir.path().join("nope");
    let err = render_node(&RenderRequest {
        overrides: Some(&missing),
        ..req
    })
    .expect_err("refused");
    assert!(
        err.to_string().starts_with(&missing.display().to_string()),
        "{err}"
    );
}

#[test]
fn nixos_renders_nothing_and_refuses_kubeadm() {
    let v = k3s_vars("node000", Role::Init, "192.168.1.50", "192.168.1.50:6443");
    for (flavour, role) in [
        (Flavour::K3s, Role::Init),
        (Flavour::K3s, Role::Agent),
        (Flavour::K3sAgent, Role::Agent),
        (Flavour::None, Role::None),
    ] {
        let ops = render_node(&RenderRequest {
            flavour,
            role,
            profile: ProfileKind::NixOs,
            vars: &v,
            overrides: None,
        })
        .expect("renders");
        assert!(ops.is_empty(), "{flavour} {role}");
    }
    let err = render_node(&RenderRequest {
        flavour: Flavour::Kubeadm,
        role: Role::Init,
        profile: ProfileKind::NixOs,
        vars: &v,
        overrides: None,
    })
    .expect_err("refused");
    assert!(err.to_string().starts_with("flavour kubeadm on NixOS"));
}

fn nix_parse(path: &Path) {
    let state = tempfile::tempdir().expect("tempdir");
    let out = Command::new("nix-instantiate")
        .arg("--parse")
        .arg(path)
        .env("NIX_STATE_DIR", state.path())
        .env("NIX_CONF_DIR", state.path())
        .env("HOME", state.path())
        .output()
        .expect("nix-instantiate");
    assert!(out.status.success(), "{}: {}", path.display(), text(&out));
}

#[test]
fn nix_files_parse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let module = dir.path().join("nodeimg.nix");
    fs::write(&module, nixos_module()).expect("write");
    nix_parse(&module);
    // Seed 003: seven Odroid C4 nodes, one a server.
    let cp = vec![("node000".to_string(), Some("192.168.1.50".to_string()))];
    let workers: Vec<_> = (1..7)
        .map(|i| {
            (
                format!("node00{i}"),
                (i != 6).then(|| format!("192.168.1.5{i}")),
            )
        })
        .collect();
    let cluster = dir.path().join("cluster.nix");
    let text_nix = cluster_nix("odroid", &cp, &workers);
    fs::write(&cluster, &text_nix).expect("write");
    nix_parse(&cluster);
    // And evaluates to the seed's shape.
    let state = tempfile::tempdir().expect("tempdir");
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json"])
        .arg(&cluster)
        .env("NIX_STATE_DIR", state.path())
        .env("NIX_CONF_DIR", state.path())
        .env("HOME", state.path())
        .output()
        .expect("nix-instantiate");
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["clusterName"], "odroid");
    assert_eq!(v["controlPlane"][0]["ip"], "192.168.1.50");
    assert_eq!(v["workers"].as_array().expect("list").len(), 6);
    assert_eq!(v["workers"][5]["name"], "node006");
    assert!(v["workers"][5]["ip"].is_null());
}

/// nodeimg.nix sets and reads only options that exist in NixOS: its
/// `config`, evaluated with a stand-in for nixpkgs' lib
/// (tests/templates_support/module-options.nix), against the pinned option
/// list fixtures/nixos-options.json (see its `source`).
/// nodeimg.nix's `config` as tests/templates_support/module-options.nix
/// evaluates it with nix-instantiate: `set`, `unknown`, `services`.
fn module_eval() -> serde_json::Value {
    let repo = os_support::repo();
    let options = repo.join("fixtures/nixos-options.json");
    let dir = tempfile::tempdir().expect("tempdir");
    let module = dir.path().join("nodeimg.nix");
    fs::write(&module, nixos_module()).expect("write");
    let expr = format!(
        "import {} {{ module = {}; options = {}; }}",
        repo.join("tests/templates_support/module-options.nix")
            .display(),
        module.display(),
        options.display()
    );
    let state = tempfile::tempdir().expect("tempdir");
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "-E", &expr])
        .env("NIX_STATE_DIR", state.path())
        .env("NIX_CONF_DIR", state.path())
        .env("HOME", state.path())
        .output()
        .expect("nix-instantiate (Debian package nix-bin)");
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("json")
}

/// NixOS nodes run the same first-boot check as Debian nodes: the module's
/// unit runs the script stamp writes (with the store's bash: NixOS has no
/// /bin/bash), after the stamped host name is set, when stamp wrote it.
#[test]
fn nixos_module_runs_the_stamped_firstboot_check() {
    let v = module_eval();
    let unit = &v["services"]["nodeimg-firstboot"];
    assert_eq!(
        unit["serviceConfig"]["ExecStart"],
        format!("/nix/store/bash/bin/bash {FIRSTBOOT_PATH}"),
        "{unit:#}"
    );
    assert_eq!(unit["serviceConfig"]["Type"], "oneshot");
    assert_eq!(
        unit["serviceConfig"]["SyslogIdentifier"],
        "nodeimg-firstboot"
    );
    assert_eq!(unit["wantedBy"], serde_json::json!(["multi-user.target"]));
    let after = unit["after"].as_array().expect("after");
    assert!(
        after.contains(&"nodeimg-hostname.service".into()),
        "{unit:#}"
    );
    let cond = unit["unitConfig"]["ConditionPathExists"]
        .as_array()
        .expect("conditions");
    assert!(cond.contains(&FIRSTBOOT_PATH.into()), "{unit:#}");
    assert!(cond.contains(&FIRSTBOOT_LIST_PATH.into()), "{unit:#}");
    // What the script calls: cat/stat/head/sleep, ping, ip, awk, grep.
    assert_eq!(
        unit["path"],
        serde_json::json!([
            "/nix/store/coreutils",
            "/nix/store/iputils",
            "/nix/store/iproute2",
            "/nix/store/gawk",
            "/nix/store/gnugrep"
        ])
    );
}

/// The check NixOS nodes get is the Debian nodes' script: it passes
/// `bash -n` and shellcheck, and run in a scratch root (NODEIMG_ROOT) it
/// reports `ok` in the first-boot line format when the hostname and the
/// listed file's mode and owner are as stamped, `fail step=identity` with
/// what differs otherwise.
#[test]
fn nixos_firstboot_check_passes_shellcheck_and_reports() {
    let host = fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let host = host.trim();
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    // The file's owner: whoever runs the test.
    let (uid, gid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    let list = format!("hostname {host}\nfile 600 {uid} {gid} /var/lib/nodeimg/k3s-token\n");
    let v = k3s_vars(host, Role::Init, "10.0.0.11", "10.0.0.11:6443");
    let ops = nixos_firstboot_ops(&list, &v, None).expect("renders");
    assert!(
        !ops.iter().any(|op| matches!(op, Op::Enable { .. })),
        "NixOS declares its units itself"
    );
    write_files(r, &ops);
    assert_eq!(file(&ops, FIRSTBOOT_LIST_PATH), list.as_bytes());
    let lib = r.join(BOOTSTRAP_LIB_PATH.trim_start_matches('/'));
    let script = r.join(FIRSTBOOT_PATH.trim_start_matches('/'));
    for cmd in [vec!["bash", "-n"], vec!["shellcheck", "--external-sources"]] {
        for f in [&script, &lib] {
            let out = Command::new(cmd[0])
                .args(&cmd[1..])
                .arg(f)
                .output()
                .unwrap_or_else(|e| panic!("{} ({e}): apt-get install shellcheck", cmd[0]));
            assert!(
                out.status.success(),
                "{cmd:?} {}: {}",
                f.display(),
                text(&out)
            );
        }
    }
    fs::create_dir_all(r.join("etc")).expect("mkdir");
    fs::write(r.join("etc/hostname"), format!("{host}\n")).expect("hostname");
    let token = r.join("var/lib/nodeimg/k3s-token");
    fs::create_dir_all(token.parent().expect("parent")).expect("mkdir");
    fs::write(&token, "K10x\n").expect("token");
    let run = || {
        let out = Command::new("bash")
            .arg(&script)
            .env("NODEIMG_ROOT", r)
            .output()
            .expect("bash");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let (ok, out) = run();
    assert!(ok, "{out}");
    assert!(
        out.lines().last().is_some_and(|l| l.starts_with(&format!(
            "nodeimg-report: v1 node={host} unit=nodeimg-firstboot status=ok step=- attempt=1 msg="
        ))),
        "{out}"
    );
    fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");
    let (ok, out) = run();
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "nodeimg-report: v1 node={host} unit=nodeimg-firstboot status=fail step=identity attempt=1 msg=/var/lib/nodeimg/k3s-token is mode 644"
        )),
        "{out}"
    );
}

#[test]
fn nixos_module_uses_options_that_exist() {
    let options = os_support::repo().join("fixtures/nixos-options.json");
    let v = module_eval();
    assert_eq!(v["unknown"], serde_json::json!([]), "options NixOS lacks");
    let set: BTreeSet<&str> = v["set"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|x| x.as_str())
        .collect();
    for o in [
        "networking.useNetworkd",
        "systemd.network.enable",
        "services.avahi.nssmdns4",
        "systemd.tmpfiles.rules",
        "assertions",
    ] {
        assert!(set.contains(o), "{o} not set: {set:?}");
    }
    // The host name comes from the stamp at boot, never as "" at build time.
    assert!(!set.contains("networking.hostName"), "{set:?}");
    // What the module reads from config (outside its own options) exists too.
    let known: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&options).expect("options")).expect("json");
    let text_nix = nixos_module();
    let mut reads = 0;
    for (i, _) in text_nix.match_indices("config.") {
        let rest = &text_nix[i + "config.".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '_')
            .collect();
        let name = name.trim_end_matches('.');
        // `config.` as an expression (not inside a path like config.yaml.d).
        let before = text_nix[..i].chars().last().unwrap_or(' ');
        if !" (!".contains(before) || name.starts_with("services.nodeimg") || name.is_empty() {
            continue;
        }
        reads += 1;
        assert!(
            known["options"].get(name).is_some(),
            "reads {name}, which NixOS lacks"
        );
    }
    assert!(
        reads >= 3,
        "the module reads services.k3s.enable, time.timeZone, systemd.network.enable"
    );
}

#[test]
fn the_docs_list_every_variable_and_their_example_renders() {
    let doc = fs::read_to_string(os_support::repo().join("docs/templates.md")).expect("docs");
    for v in VARIABLES {
        assert!(
            doc.contains(&format!("`{}`", v.name)),
            "docs/templates.md lacks {}",
            v.name
        );
    }
    // The worked example: its variables, the template, the output.
    let block = |tag: &str| -> String {
        let start = doc
            .find(&format!("<!-- example:{tag} -->"))
            .unwrap_or_else(|| panic!("example:{tag}"));
        let body = &doc[start..];
        let open = body.find("```").expect("fence") + 3;
        let body = &body[open..];
        let body = &body[body.find('\n').expect("newline") + 1..];
        body[..body.find("```").expect("closing fence")].to_string()
    };
    let vars: Vars = block("vars")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let ops = render(Flavour::Kubeadm, Role::Worker, &vars);
    assert_eq!(
        String::from_utf8_lossy(file(&ops, "/etc/nodeimg/kubeadm.yaml")),
        block("kubeadm.yaml")
    );
}

#[test]
fn k3s_tls_san_only_for_a_known_api_host() {
    let mut v = k3s_vars("node000", Role::Init, "", "192.168.1.50:6443");
    let drop_in = "/etc/rancher/k3s/config.yaml.d/10-nodeimg-tls-san.yaml";
    let has = |ops: &[Op]| {
        ops.iter()
            .any(|op| matches!(op, Op::File { path, .. } if path == drop_in))
    };
    assert!(has(&render(Flavour::K3s, Role::Init, &v)));
    assert!(!has(&render(Flavour::K3s, Role::Agent, &v)));
    v.insert("API_HOST".into(), String::new());
    assert!(!has(&render(Flavour::K3s, Role::Init, &v)));
}

/// Every rendered YAML file of every role passes yamllint's default rules
/// (comments before the first document and long comment lines allowed).
#[test]
fn rendered_yaml_passes_yamllint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k3s = "192.168.1.50:6443";
    let roles = [
        (Flavour::Kubeadm, Role::Init, init_vars()),
        (
            Flavour::Kubeadm,
            Role::ControlPlane,
            kubeadm_vars(
                "controlplane1",
                Role::ControlPlane,
                "192.168.1.11",
                "192.168.1.10:6443",
                HASH,
            ),
        ),
        (
            Flavour::Kubeadm,
            Role::Worker,
            kubeadm_vars("node0", Role::Worker, "", "192.168.1.10:6443", HASH),
        ),
        (
            Flavour::K3s,
            Role::Init,
            k3s_vars("node000", Role::Init, "192.168.1.50", k3s),
        ),
        (
            Flavour::K3s,
            Role::Server,
            k3s_vars("node001", Role::Server, "", k3s),
        ),
        (
            Flavour::K3s,
            Role::Agent,
            k3s_vars("node002", Role::Agent, "", k3s),
        ),
        (
            Flavour::K3sAgent,
            Role::Agent,
            k3s_vars("edge0", Role::Agent, "", k3s),
        ),
    ];
    let mut n = 0;
    for (flavour, role, vars) in roles {
        for op in render(flavour, role, &vars) {
            if let Op::File { path, data, .. } = op {
                if path.ends_with(".yaml") {
                    n += 1;
                    let name = format!("{n}-{}", path.replace('/', "_"));
                    fs::write(dir.path().join(name), data).expect("write");
                }
            }
        }
    }
    assert_eq!(n, 11);
    let out = Command::new("yamllint")
        .args([
            "--strict",
            "-d",
            "{extends: default, rules: {document-start: disable, line-length: {max: 120}}}",
        ])
        .arg(dir.path())
        .output()
        .expect("yamllint");
    assert!(out.status.success(), "{}", text(&out));
}
