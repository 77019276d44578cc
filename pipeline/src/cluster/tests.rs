use super::*;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@host";

fn parse(text: &str) -> Result<Cluster> {
    Cluster::parse(Path::new("/nonexistent/cluster.toml"), text)
}

fn problems(text: &str) -> Vec<Problem> {
    match parse(text) {
        Err(Error::Invalid { problems, .. }) => problems,
        other => panic!("expected problems, got {other:?}"),
    }
}

fn kubeadm() -> String {
    format!(
        r#"
[cluster]
name = "pi5-lab"
board = "rpi5"
flavour = "kubeadm"
api_endpoint = "192.168.1.10:6443"
pod_subnet = "10.244.64.0/18"
service_subnet = "10.244.0.0/20"

[base]
cmdline_append = ["cgroup_enable=memory", "cgroup_memory=1"]

[defaults]
user = "pi"
ssh_keys = ["{KEY}"]
gateway = "192.168.1.1"
dns = ["192.168.1.1"]
age_key = "generate"

[[node]]
hostname = "controlplane"
address = "192.168.1.10/24"

[[node]]
hostname = "controlplane1"
address = "192.168.1.11/24"

[[node]]
hostname = "node0"

[[node]]
hostname = "node1"
role = "worker"
address = "192.168.1.21/24"
ssh_host_keys = false
"#
    )
}

#[test]
fn a_kubeadm_cluster_parses_with_roles_by_pattern() {
    let c = parse(&kubeadm()).unwrap();
    assert_eq!(c.name, "pi5-lab");
    assert_eq!(c.flavour, Flavour::Kubeadm);
    let roles: Vec<(&str, Role)> = c
        .nodes
        .iter()
        .map(|n| (n.hostname.as_str(), n.role))
        .collect();
    assert_eq!(
        roles,
        [
            ("controlplane", Role::Init),
            ("controlplane1", Role::ControlPlane),
            ("node0", Role::Worker),
            ("node1", Role::Worker)
        ]
    );
    assert_eq!(
        c.api_endpoint.as_ref().unwrap().to_string(),
        "192.168.1.10:6443"
    );
    assert_eq!(c.base.cmdline_append.len(), 2);
    let n0 = c.node("node0").unwrap();
    assert_eq!(n0.user.as_deref(), Some("pi"));
    assert_eq!(n0.ssh_keys, vec![KEY.to_string()]);
    assert_eq!(n0.age_key, Some(AgeKeySource::Generate));
    assert!(n0.address.is_none() && n0.ssh_host_keys);
    assert!(!c.node("node1").unwrap().ssh_host_keys);
    assert_eq!(c.init_node().unwrap().hostname, "controlplane");
}

#[test]
fn every_problem_is_reported_with_its_line() {
    let text = r#"[cluster]
name = "lab"
board = "rpi5"
flavour = "kubeadm"
api_endpoint = "192.168.1.10:6443"
pod_subnet = "10.96.0.0/16"
service_subnet = "10.96.0.0/12"
colour = "blue"

[defaults]
user = "pi"
ssh_keys = ["ssh-ed25519 AAAAbroken me"]
age_key = "/nonexistent/keys.txt"

[[node]]
hostname = "controlplane"
address = "192.168.1.10/24"

[[node]]
hostname = "Bad_Name"

[[node]]
hostname = "controlplane"
address = "192.168.1.10/24"

[[node]]
hostname = "toaster"
address = "10.96.3.4/24"
adress = "typo"
"#;
    let p = problems(text);
    let text_of = |key: &str| -> Vec<String> {
        p.iter()
            .filter(|x| x.key.starts_with(key))
            .map(|x| format!("{}:{}", x.line.unwrap_or(0), x.why))
            .collect()
    };
    // The unknown key in [cluster] hides the rest of that table only.
    assert!(text_of("cluster")[0].starts_with("8:"), "{p:#?}");
    assert!(text_of("cluster")[0].contains("colour"), "{p:#?}");
    assert!(!text_of("defaults.ssh_keys[0]").is_empty(), "{p:#?}");
    assert!(text_of("defaults.age_key")[0].starts_with("13:"), "{p:#?}");
    assert!(
        text_of("node[1].hostname")
            .iter()
            .any(|s| s.starts_with("20:") && s.contains("RFC 1123")),
        "{p:#?}"
    );
    assert!(
        text_of("node[2].hostname")
            .iter()
            .any(|s| s.starts_with("23:") && s.contains("unique")),
        "{p:#?}"
    );
    assert!(
        text_of("node[2].address")
            .iter()
            .any(|s| s.contains("unique")),
        "{p:#?}"
    );
    assert!(
        text_of("node[3]").iter().any(|s| s.contains("adress")),
        "{p:#?}"
    );
    assert!(
        text_of("node[3].hostname")
            .iter()
            .any(|s| s.contains("no role pattern")),
        "{p:#?}"
    );
    let all = Error::Invalid {
        file: "c.toml".into(),
        problems: p.clone(),
    }
    .to_string();
    assert!(all.lines().all(|l| l.starts_with("c.toml")), "{all}");
}

#[test]
fn ranges_init_nodes_and_addresses_are_checked() {
    let text = r#"[cluster]
name = "lab"
board = "rpi5"
flavour = "kubeadm"
api_endpoint = "192.168.1.10:6443"
pod_subnet = "10.244.0.0/16"
service_subnet = "10.244.0.0/20"

[defaults]
gateway = "192.168.2.1"

[roles]
init = "^cp"
worker = "^n"

[[node]]
hostname = "cp1"
address = "192.168.1.10/24"

[[node]]
hostname = "cp2"
address = "10.244.1.5/24"

[[node]]
hostname = "n1"
address = "192.168.1.0/24"
"#;
    let p = problems(text);
    let has = |key: &str, what: &str| p.iter().any(|x| x.key == key && x.why.contains(what));
    assert!(has("cluster.service_subnet", "overlaps"), "{p:#?}");
    assert!(has("node[1].role", "exactly one init"), "{p:#?}");
    assert!(has("node[1].address", "pod range"), "{p:#?}");
    assert!(has("defaults.gateway", "outside"), "{p:#?}");
    assert!(has("node[2].address", "network address"), "{p:#?}");
}

#[test]
fn role_patterns_keep_file_order_and_first_match_wins() {
    let text = r#"[cluster]
name = "odroid"
board = "odroid-c4"
flavour = "k3s"
api_endpoint = "odroid1.local:6443"

[roles]
init = "^odroid1$"
server = "^odroid[1-3]$"
agent = "^odroid[0-9]+$"

[[node]]
hostname = "odroid1"
[[node]]
hostname = "odroid2"
[[node]]
hostname = "odroid7"
"#;
    let c = parse(text).unwrap();
    let roles: Vec<Role> = c.nodes.iter().map(|n| n.role).collect();
    assert_eq!(roles, [Role::Init, Role::Server, Role::Agent]);
    assert_eq!(c.pod_subnet.unwrap().to_string(), "10.42.0.0/16");
}

#[test]
fn k3s_agent_needs_server_and_token() {
    let p = problems(
        "[cluster]\nname = \"x\"\nboard = \"rpi5\"\nflavour = \"k3s-agent\"\n[[node]]\nhostname = \"a\"\n",
    );
    assert!(p.iter().any(|x| x.key == "cluster.server"), "{p:#?}");
    assert!(p.iter().any(|x| x.key == "cluster.token_file"), "{p:#?}");
}

#[test]
fn secrets_are_not_echoed_in_problems() {
    let text = r#"[cluster]
name = "x"
board = "rpi5"
[defaults]
user = "pi"
password_hash = "hunter2-secret"
[[node]]
hostname = "a"
"#;
    let p = problems(text);
    let all = format!("{p:?}");
    assert!(!all.contains("hunter2"), "{all}");
}

#[test]
fn bad_toml_and_unknown_tables() {
    let p = problems("[cluster\nname=1\n");
    assert_eq!(p[0].line, Some(1), "{p:#?}");
    let p = problems("[cluster]\nname = \"x\"\nboard = \"b\"\n[nodes]\nhostname = \"a\"\n");
    assert!(
        p.iter().any(|x| x.key == "nodes" && x.line == Some(4)),
        "{p:#?}"
    );
}

#[test]
fn damaged_files_give_problems_with_lines_never_panics() {
    // Every truncation and a sweep of byte substitutions of a real file.
    let text = kubeadm();
    let check = |t: &str| match parse(t) {
        Ok(_) => {}
        Err(Error::Invalid { problems, .. }) => {
            let lines = t.lines().count() + 1;
            assert!(!problems.is_empty());
            for p in problems {
                assert!(p.line.is_none_or(|l| l >= 1 && l <= lines), "{p:?} in\n{t}");
            }
        }
        Err(e) => panic!("unexpected error kind: {e}"),
    };
    for end in (0..text.len()).filter(|&i| text.is_char_boundary(i)) {
        check(&text[..end]);
    }
    let bytes = text.as_bytes();
    for (i, sub) in (0..bytes.len())
        .step_by(3)
        .zip([b'"', b'=', b'[', b'\n', b'x', b']', b'.'].iter().cycle())
    {
        let mut b = bytes.to_vec();
        b[i] = *sub;
        if let Ok(t) = std::str::from_utf8(&b) {
            check(t);
        }
    }
}

#[test]
fn token_ttl_and_sops_secret_have_defaults_and_are_checked() {
    let c = parse(&kubeadm()).expect("parses");
    assert_eq!(c.kubeadm_token_ttl, "8760h");
    assert_eq!(c.sops_secret, "flux-sops");
    let text = kubeadm().replace(
        "service_subnet = \"10.244.0.0/20\"\n",
        "service_subnet = \"10.244.0.0/20\"\nkubeadm_token_ttl = \"720h30m\"\nsops_secret = \"sops-age\"\n",
    );
    let c = parse(&text).expect("parses");
    assert_eq!(c.kubeadm_token_ttl, "720h30m");
    assert_eq!(c.sops_secret, "sops-age");
    for (key, bad) in [
        ("kubeadm_token_ttl", "\"a year\""),
        ("kubeadm_token_ttl", "\"24\""),
        ("kubeadm_token_ttl", "\"\""),
        ("sops_secret", "\"Sops_Age\""),
        ("sops_secret", "\"-x\""),
    ] {
        let text = kubeadm().replace(
            "service_subnet = \"10.244.0.0/20\"\n",
            &format!("service_subnet = \"10.244.0.0/20\"\n{key} = {bad}\n"),
        );
        let p = problems(&text);
        assert!(
            p.iter()
                .any(|p| p.key == format!("cluster.{key}") && p.line == Some(9)),
            "{key} = {bad}: {p:?}"
        );
    }
}

#[test]
fn k3s_join_endpoint_must_be_derivable() {
    // The seeds' layout: every node on DHCP, no api_endpoint.
    let dhcp = "[cluster]\nname = \"o\"\nboard = \"odroid-c4\"\nflavour = \"k3s\"\n\
                [[node]]\nhostname = \"controlplane\"\n[[node]]\nhostname = \"node2\"\n";
    let p = problems(dhcp);
    assert!(
        p.iter().any(|x| x.key == "cluster.api_endpoint"
            && x.why.contains("api_endpoint = \"controlplane.local:6443\"")),
        "{p:#?}"
    );
    // A name-based endpoint, or a single node, is fine.
    let named = dhcp.replace(
        "flavour = \"k3s\"\n",
        "flavour = \"k3s\"\napi_endpoint = \"controlplane.local:6443\"\nhosts = true\n",
    );
    let c = parse(&named).unwrap();
    assert_eq!(c.api_endpoint.unwrap().host, "controlplane.local");
    assert!(c.hosts);
    let single = "[cluster]\nname = \"o\"\nboard = \"odroid-c4\"\nflavour = \"k3s\"\n[[node]]\nhostname = \"controlplane\"\n";
    assert!(parse(single).is_ok());
}

#[test]
fn interface_is_a_name_or_a_mac() {
    let base = "[cluster]\nname = \"o\"\nboard = \"rpi5\"\nflavour = \"none\"\n[[node]]\nhostname = \"a\"\n";
    let c = parse(&format!("{base}interface = \"end0\"\n")).unwrap();
    assert_eq!(c.nodes[0].interface, Some(Interface::Name("end0".into())));
    let c = parse(&format!("{base}interface = \"AA:bb:cc:dd:ee:0F\"\n")).unwrap();
    assert_eq!(
        c.nodes[0].interface,
        Some(Interface::Mac("aa:bb:cc:dd:ee:0f".into()))
    );
    let p = problems(&format!("{base}interface = \"eth0/../x\"\n"));
    assert!(p.iter().any(|x| x.key.ends_with("interface")), "{p:#?}");
}

#[test]
fn ssh_git_urls_are_recognised() {
    for url in [
        "ssh://git@github.com/me/fleet.git",
        "git@github.com:me/fleet.git",
        "forgejo@git.lan:infra/fleet",
        "git.lan:fleet",
    ] {
        assert!(is_ssh_git_url(url), "{url}");
    }
    for url in [
        "https://github.com/me/fleet.git",
        "http://git.lan/fleet",
        "/srv/git/fleet",
        "./fleet:old",
        "file:///srv/fleet",
    ] {
        assert!(!is_ssh_git_url(url), "{url}");
    }
}

#[test]
fn a_deploy_key_follows_the_url_or_the_key_and_needs_known_hosts() {
    const HOST: &str = "github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    let with = |extra: &str| {
        kubeadm().replace(
            "service_subnet = \"10.244.0.0/20\"\n",
            &format!("service_subnet = \"10.244.0.0/20\"\n{extra}"),
        )
    };
    // HTTPS: no deploy key unless asked for.
    let c = parse(&with("gitops_url = \"https://github.com/me/fleet.git\"\n")).unwrap();
    let g = c.gitops.unwrap();
    assert!(!g.deploy_key && g.known_hosts.is_none());

    // SSH with known_hosts lines: a deploy key.
    let c = parse(&with(&format!(
        "gitops_url = \"git@github.com:me/fleet.git\"\ngitops_known_hosts = \"{HOST}\"\n"
    )))
    .unwrap();
    let g = c.gitops.unwrap();
    assert!(g.deploy_key);
    assert_eq!(g.known_hosts.as_deref(), Some(format!("{HOST}\n").as_str()));

    // Asked for explicitly, or turned off for an SSH URL.
    let c = parse(&with(&format!(
        "gitops_url = \"https://git.lan/fleet\"\ngitops_deploy_key = true\ngitops_known_hosts = \"{HOST}\"\n"
    )))
    .unwrap();
    assert!(c.gitops.unwrap().deploy_key);
    let c = parse(&with(
        "gitops_url = \"ssh://git@git.lan/fleet\"\ngitops_deploy_key = false\n",
    ))
    .unwrap();
    assert!(!c.gitops.unwrap().deploy_key);

    // k3s installs no Flux: no deploy key, and asking for one is refused.
    let k3s = with("gitops_url = \"ssh://git@git.lan/fleet\"\n")
        .replace("flavour = \"kubeadm\"", "flavour = \"k3s\"")
        .replace("role = \"worker\"", "role = \"agent\"");
    assert!(!parse(&k3s).unwrap().gitops.unwrap().deploy_key);
    let p = problems(&k3s.replace("gitops_url = ", "gitops_deploy_key = true\ngitops_url = "));
    assert!(
        p.iter()
            .any(|p| p.key == "cluster.gitops_deploy_key" && p.why.contains("kubeadm")),
        "{p:?}"
    );

    // SSH without known_hosts: one clear problem.
    let p = problems(&with("gitops_url = \"ssh://git@git.lan/fleet\"\n"));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "cluster.gitops_known_hosts");
    assert!(p[0].why.contains("ssh-keyscan"), "{p:?}");

    // Unreadable file, lines that are not known_hosts lines, keys without a URL.
    for (extra, key) in [
        (
            "gitops_url = \"ssh://git@git.lan/fleet\"\ngitops_known_hosts = \"no-such-file\"\n",
            "cluster.gitops_known_hosts",
        ),
        (
            "gitops_url = \"ssh://git@git.lan/fleet\"\ngitops_known_hosts = \"git.lan only\"\n",
            "cluster.gitops_known_hosts",
        ),
        ("gitops_deploy_key = true\n", "cluster.gitops_deploy_key"),
        (
            &format!("gitops_known_hosts = \"{HOST}\"\n"),
            "cluster.gitops_known_hosts",
        ),
    ] {
        let p = problems(&with(extra));
        assert!(p.iter().any(|p| p.key == key), "{extra}: {p:?}");
    }
}

#[test]
fn known_hosts_may_be_a_file_beside_the_cluster_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("known_hosts"),
        "# git.lan\ngit.lan ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n\n",
    )
    .unwrap();
    let text = kubeadm().replace(
        "service_subnet = \"10.244.0.0/20\"\n",
        "service_subnet = \"10.244.0.0/20\"\ngitops_url = \"ssh://git@git.lan/fleet\"\ngitops_known_hosts = \"known_hosts\"\n",
    );
    let c = Cluster::parse(&dir.path().join("cluster.toml"), &text).unwrap();
    let kh = c.gitops.unwrap().known_hosts.unwrap();
    assert!(kh.starts_with("git.lan ssh-ed25519 ") && kh.lines().count() == 1);
}
