//! `nodeimg stamp` end to end on upstream-like fixtures, judged by
//! independent tools: `nodeimg delta apply` rebuilds each node image, then
//! `debugfs` (file contents, modes, owners, and a full `rdump` of the root
//! for listings), `e2fsck -fn`, `fsck.vfat -n` and mtools read it back.
//! The cluster files are the ones docs/cluster.md walks through
//! (`examples/*/cluster.toml`).

mod os_support;

use pipeline::secrets::State;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const EPOCH: &str = "1767225600";

fn nodeimg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodeimg"))
        .args(args)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .output()
        .expect("running nodeimg")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "nodeimg failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn example(name: &str) -> PathBuf {
    os_support::repo()
        .join("examples")
        .join(name)
        .join("cluster.toml")
}

/// Stamps every node of `cluster` over `base` into `out` (JSON summary).
fn stamp_all(cluster: &Path, base: &Path, state: &Path, out: &Path) -> (String, String) {
    let o = nodeimg(&[
        "stamp",
        "--config",
        cluster.to_str().unwrap(),
        "--base",
        base.to_str().unwrap(),
        "--all",
        "--out-dir",
        out.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "--init-state",
        "--json",
    ]);
    let stdout = ok(&o);
    (stdout, String::from_utf8_lossy(&o.stderr).into_owned())
}

/// A node image's partitions as files: (boot FAT, root ext4).
struct Parts {
    boot: PathBuf,
    root: PathBuf,
}

fn split(image: &Path, dir: &Path, name: &str) -> Parts {
    let out = Command::new("sfdisk")
        .arg("-J")
        .arg(image)
        .output()
        .unwrap();
    assert!(out.status.success());
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let parts = j["partitiontable"]["partitions"].as_array().unwrap();
    let bytes = fs::read(image).unwrap();
    let cut = |i: usize, suffix: &str| {
        let start = parts[i]["start"].as_u64().unwrap() as usize * 512;
        let size = parts[i]["size"].as_u64().unwrap() as usize * 512;
        let p = dir.join(format!("{name}.{suffix}"));
        fs::write(&p, &bytes[start..start + size]).unwrap();
        p
    };
    Parts {
        boot: cut(0, "boot"),
        root: cut(1, "root"),
    }
}

fn apply(base: &Path, delta: &Path, out: &Path) {
    ok(&nodeimg(&[
        "delta",
        "apply",
        base.to_str().unwrap(),
        delta.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]));
}

fn debugfs(root: &Path, req: &str) -> String {
    let o = Command::new("debugfs")
        .arg("-R")
        .arg(req)
        .arg(root)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Mode (octal permission bits), uid, gid of a path, from `debugfs stat`.
fn stat(root: &Path, path: &str) -> Option<(u32, u32, u32)> {
    let s = debugfs(root, &format!("stat {path}"));
    let mode_at = s.find("Mode:")?;
    let mode = u32::from_str_radix(s[mode_at + 5..].split_whitespace().next()?, 8).ok()?;
    let user_at = s.find("User:")?;
    let uid = s[user_at + 5..].split_whitespace().next()?.parse().ok()?;
    let group_at = s.find("Group:")?;
    let gid = s[group_at + 6..].split_whitespace().next()?.parse().ok()?;
    Some((mode & 0o7777, uid, gid))
}

fn cat(root: &Path, path: &str) -> String {
    debugfs(root, &format!("cat {path}"))
}

fn fsck(parts: &Parts) {
    let e = Command::new("e2fsck")
        .arg("-fn")
        .arg(&parts.root)
        .output()
        .unwrap();
    assert!(
        e.status.success(),
        "e2fsck: {}",
        String::from_utf8_lossy(&e.stdout)
    );
    let f = Command::new("fsck.vfat")
        .arg("-n")
        .arg(&parts.boot)
        .output()
        .unwrap();
    assert!(
        f.status.success(),
        "fsck.vfat: {}",
        String::from_utf8_lossy(&f.stdout)
    );
}

fn mtype(boot: &Path, path: &str) -> Option<String> {
    let o = Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(boot)
        .arg(format!("::{path}"))
        .output()
        .unwrap();
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Every entry of an ext4 image (via `debugfs rdump`, which keeps modes
/// and owners): path → kind, mode, uid, gid, content.
fn listing(root: &Path, scratch: &Path) -> BTreeMap<String, String> {
    let dir = scratch.join(format!(
        "rdump-{}",
        root.file_name().unwrap().to_string_lossy()
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let o = Command::new("debugfs")
        .arg("-R")
        .arg(format!("rdump / {}", dir.display()))
        .arg(root)
        .output()
        .unwrap();
    assert!(o.status.success());
    let mut out = BTreeMap::new();
    walk(&dir, &dir, &mut out);
    let _ = fs::remove_dir_all(&dir);
    out
}

fn walk(top: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        let m = fs::symlink_metadata(&p).unwrap();
        let rel = format!("/{}", p.strip_prefix(top).unwrap().display());
        let head = format!(
            "{:o} {}:{}",
            m.permissions().mode() & 0o7777,
            m.uid(),
            m.gid()
        );
        let what = if m.file_type().is_symlink() {
            format!("link {} -> {}", head, fs::read_link(&p).unwrap().display())
        } else if m.is_dir() {
            walk(top, &p, out);
            format!("dir {head}")
        } else {
            let data = fs::read(&p).unwrap();
            use sha2::Digest;
            format!("file {head} {:x}", sha2::Sha256::digest(&data))
        };
        out.insert(rel, what);
    }
}

/// Paths whose entries differ between two listings.
fn differences(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> BTreeSet<String> {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

/// The paths a node's `--json` summary lists as written.
fn written(summary: &serde_json::Value, node: &str) -> Vec<(String, String)> {
    summary["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == node)
        .unwrap()["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["action"].as_str().unwrap().to_string(),
                f["path"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every secret value the state holds, as strings to search output for.
fn secrets_of(state: &State) -> Vec<String> {
    let mut s = Vec::new();
    if let Some(t) = state.kubeadm_token() {
        s.push(t.to_string());
    }
    if let Some(p) = state.pki() {
        for k in [&p.ca.key, &p.front_proxy_ca.key, &p.etcd_ca.key, &p.sa.key] {
            // The base64 body's first line.
            s.push(k.lines().nth(1).unwrap().to_string());
        }
    }
    if let Some(k) = state.k3s() {
        s.push(k.token.clone());
        s.push(k.agent_token.clone());
    }
    if let Some(a) = state.age_identity() {
        s.push(
            a.lines()
                .find(|l| l.starts_with("AGE-SECRET-KEY-"))
                .unwrap()
                .to_string(),
        );
    }
    for k in state.data().host_keys.values() {
        s.push(k.private.lines().nth(2).unwrap().to_string());
    }
    s
}

#[test]
fn kubeadm_cluster_on_rpios() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let base = os_support::rpios();
    let cluster = example("pi5-kubeadm");
    let state_path = t.join("cluster.state");
    let (json, stderr) = stamp_all(&cluster, &base, &state_path, &t.join("out"));
    let summary: serde_json::Value = serde_json::from_str(&json).unwrap();
    let state = State::open(&state_path, "pi5-lab").unwrap();
    let mode = fs::metadata(&state_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "state file mode");

    // Nothing secret on stdout, stderr or in --json.
    for secret in secrets_of(&state) {
        assert!(
            !json.contains(&secret) && !stderr.contains(&secret),
            "a secret was printed"
        );
    }

    // Roles follow the patterns.
    let roles: Vec<(String, String)> = summary["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap().into(),
                n["role"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expect = [
        ("controlplane", "init"),
        ("controlplane1", "control-plane"),
        ("node0", "worker"),
        ("node1", "worker"),
    ];
    assert_eq!(
        roles,
        expect
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
    );

    // The base, split once, for listings.
    let base_parts = split(&base, t, "base");
    let base_list = listing(&base_parts.root, t);
    let token = state.kubeadm_token().unwrap().to_string();
    let ca_hash = state.ca_cert_hash().unwrap().unwrap();
    let age = state.age_identity().unwrap().to_string();
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl admin@laptop\n";

    for (node, role) in expect {
        let delta = t.join("out").join(format!("{node}.delta"));
        let size = fs::metadata(&delta).unwrap().len();
        assert!(size < 1 << 20, "{node}: delta of {size} bytes");
        let img = t.join(format!("{node}.img"));
        apply(&base, &delta, &img);
        let p = split(&img, t, node);
        fsck(&p);
        let r = &p.root;

        // Identity.
        assert_eq!(cat(r, "/etc/hostname"), format!("{node}\n"));
        assert_eq!(stat(r, "/etc/hostname"), Some((0o644, 0, 0)));
        assert!(cat(r, "/etc/hosts").contains(&format!("\n127.0.1.1\t{node}\n")));
        assert!(cat(r, "/etc/hosts").starts_with("127.0.0.1\tlocalhost\n"));
        let cmdline = mtype(&p.boot, "cmdline.txt").unwrap();
        assert_eq!(cmdline.lines().count(), 1, "{cmdline}");
        assert!(
            cmdline.contains(&format!(" systemd.hostname={node}")),
            "{cmdline}"
        );
        assert!(cmdline.contains("root=PARTUUID=8a438930-02"), "{cmdline}");
        assert!(mtype(&p.boot, "meta-data")
            .unwrap()
            .contains(&format!("local-hostname: {node}")));
        assert_eq!(mtype(&p.boot, "ssh").as_deref(), Some(""));
        let cloud = cat(r, "/etc/cloud/cloud.cfg.d/99-nodeimg.cfg");
        assert!(
            cloud.contains("preserve_hostname: true") && cloud.contains("manage_etc_hosts: false")
        );

        // The user's keys, owned by the user as /etc/passwd says (1000).
        assert_eq!(stat(r, "/home/pi/.ssh"), Some((0o700, 1000, 1000)));
        assert_eq!(
            stat(r, "/home/pi/.ssh/authorized_keys"),
            Some((0o600, 1000, 1000))
        );
        assert_eq!(cat(r, "/home/pi/.ssh/authorized_keys"), key);

        // Password hash, host keys, age key: secrets, 0600.
        let shadow = cat(r, "/etc/shadow");
        assert!(
            shadow.contains("\npi:$6$nodeimgexample$fi7u8rYj"),
            "{shadow}"
        );
        assert!(
            shadow.contains("root:*:20362:0:99999:7:::"),
            "other users kept"
        );
        assert_eq!(stat(r, "/etc/shadow"), Some((0o600, 0, 42)));
        let hk = state.host_key(node).unwrap();
        assert_eq!(cat(r, "/etc/ssh/ssh_host_ed25519_key"), hk.private);
        assert_eq!(
            stat(r, "/etc/ssh/ssh_host_ed25519_key"),
            Some((0o600, 0, 0))
        );
        assert_eq!(
            cat(r, "/etc/ssh/ssh_host_ed25519_key.pub"),
            format!("{}\n", hk.public)
        );
        assert_eq!(
            stat(r, "/etc/ssh/ssh_host_ed25519_key.pub"),
            Some((0o644, 0, 0))
        );
        assert_eq!(cat(r, "/root/keys.txt"), age);
        assert_eq!(stat(r, "/root/keys.txt"), Some((0o600, 0, 0)));

        // Cluster secrets env file: the shared token and pin.
        let env = cat(r, "/etc/nodeimg/cluster.env");
        assert_eq!(stat(r, "/etc/nodeimg/cluster.env"), Some((0o600, 0, 0)));
        assert!(env.contains(&format!("KUBEADM_TOKEN='{token}'\n")));
        assert!(env.contains(&format!("CA_CERT_HASH='{ca_hash}'\n")));
        assert!(env.contains(&format!("NODE_HOSTNAME='{node}'\n")));
        assert!(env.contains("API_ENDPOINT='192.168.1.10:6443'\n"));
        let shell = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "set -eu; . /dev/stdin; [ \"$KUBEADM_TOKEN\" = '{token}' ]"
            ))
            .stdin(
                fs::File::open({
                    let p = t.join("env");
                    fs::write(&p, &env).unwrap();
                    p
                })
                .unwrap(),
            )
            .status()
            .unwrap();
        assert!(shell.success(), "cluster.env sources in a shell");

        // CA material on control planes only.
        let pki = state.pki().unwrap();
        if matches!(role, "init" | "control-plane") {
            assert_eq!(cat(r, "/etc/kubernetes/pki/ca.crt"), pki.ca.cert);
            assert_eq!(stat(r, "/etc/kubernetes/pki/ca.crt"), Some((0o644, 0, 0)));
            assert_eq!(cat(r, "/etc/kubernetes/pki/ca.key"), pki.ca.key);
            for k in ["ca.key", "sa.key", "front-proxy-ca.key", "etcd/ca.key"] {
                assert_eq!(
                    stat(r, &format!("/etc/kubernetes/pki/{k}")),
                    Some((0o600, 0, 0)),
                    "{k}"
                );
            }
            assert_eq!(cat(r, "/etc/kubernetes/pki/etcd/ca.crt"), pki.etcd_ca.cert);
            assert_eq!(cat(r, "/etc/kubernetes/pki/sa.pub"), pki.sa.public);
        } else {
            assert_eq!(stat(r, "/etc/kubernetes/pki/ca.key"), None);
        }

        // Static address: a NetworkManager keyfile (root 0600), or none.
        let nm = "/etc/NetworkManager/system-connections/nodeimg.nmconnection";
        if node == "node1" {
            assert_eq!(stat(r, nm), None);
        } else {
            assert_eq!(stat(r, nm), Some((0o600, 0, 0)));
            let k = cat(r, nm);
            let want = format!(
                "address1={}/24,192.168.1.1\n",
                match node {
                    "controlplane" => "192.168.1.10",
                    "controlplane1" => "192.168.1.11",
                    _ => "192.168.1.20",
                }
            );
            assert!(k.contains(&want) && k.contains("dns=192.168.1.1;\n"), "{k}");
        }
        assert_eq!(cat(r, "/etc/timezone"), "Europe/Berlin\n");

        // The role bootstrap: script, unit enabled, kubeadm config.
        assert_eq!(
            stat(r, "/usr/local/lib/nodeimg/bootstrap.sh"),
            Some((0o755, 0, 0))
        );
        assert!(debugfs(
            r,
            "stat /etc/systemd/system/multi-user.target.wants/nodeimg-bootstrap.service"
        )
        .contains("Type: symlink"));
        assert_eq!(stat(r, "/etc/nodeimg/kubeadm.yaml"), Some((0o600, 0, 0)));
        let docs = yaml_docs(&cat(r, "/etc/nodeimg/kubeadm.yaml"));
        if role == "init" {
            assert_eq!(docs[0]["bootstrapTokens"][0]["token"], token.as_str());
            assert_eq!(docs[0]["bootstrapTokens"][0]["ttl"], "0s");
            assert_eq!(docs[1]["controlPlaneEndpoint"], "192.168.1.10:6443");
            assert_eq!(docs[1]["networking"]["podSubnet"], "10.244.64.0/18");
            assert_eq!(docs[1]["networking"]["serviceSubnet"], "10.244.0.0/20");
        } else {
            let bt = &docs[0]["discovery"]["bootstrapToken"];
            assert_eq!(docs[0]["kind"], "JoinConfiguration");
            assert_eq!(bt["token"], token.as_str());
            assert_eq!(bt["apiServerEndpoint"], "192.168.1.10:6443");
            assert_eq!(bt["caCertHashes"][0], ca_hash.as_str());
        }

        // Nothing else differs: every changed path was written (or is a
        // directory above one, or the unit's enabling link).
        let paths: Vec<String> = written(&summary, node)
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        let diff = differences(&base_list, &listing(r, t));
        for d in &diff {
            let ok = paths
                .iter()
                .any(|p| p == d || p.starts_with(&format!("{d}/")))
                || (d.starts_with("/etc/systemd/system/") && d.contains("nodeimg-bootstrap"))
                || d == "/etc/systemd/system"
                || d.ends_with(".target.wants");
            assert!(ok, "{node}: {d} changed but was not written ({:?})", diff);
        }
        for p in [
            "/etc/hostname",
            "/root/keys.txt",
            "/etc/nodeimg/cluster.env",
        ] {
            assert!(diff.contains(p), "{node}: {p} unchanged?");
        }
        // And the FAT boot partition: only cmdline.txt, meta-data, ssh.
        let fat_diff = differences(&fat_listing(&base_parts.boot, t), &fat_listing(&p.boot, t));
        let want: BTreeSet<String> = ["/cmdline.txt", "/meta-data", "/ssh"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(fat_diff, want, "{node}: boot partition changes");
    }

    // Reproducible: a second run gives the same bytes.
    stamp_all(&cluster, &base, &state_path, &t.join("again"));
    for (node, _) in expect {
        let a = fs::read(t.join("out").join(format!("{node}.delta"))).unwrap();
        let b = fs::read(t.join("again").join(format!("{node}.delta"))).unwrap();
        assert!(a == b, "{node}: deltas differ between runs");
    }
    assert_eq!(
        fs::read_to_string(t.join("out/known_hosts"))
            .unwrap()
            .lines()
            .count(),
        4
    );

    // --image gives what the delta gives.
    let img = t.join("node0-full.img");
    ok(&nodeimg(&[
        "stamp",
        "-c",
        cluster.to_str().unwrap(),
        "--base",
        base.to_str().unwrap(),
        "--node",
        "node0",
        "--image",
        img.to_str().unwrap(),
        "--state",
        state_path.to_str().unwrap(),
        "--init-state",
    ]));
    assert!(fs::read(&img).unwrap() == fs::read(t.join("node0.img")).unwrap());
    assert_eq!(
        fs::metadata(&img).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // An output that exists is refused without --force.
    let o = nodeimg(&[
        "stamp",
        "-c",
        cluster.to_str().unwrap(),
        "--base",
        base.to_str().unwrap(),
        "--node",
        "node0",
        "--image",
        img.to_str().unwrap(),
        "--state",
        state_path.to_str().unwrap(),
        "--init-state",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
}

/// The documents of a YAML text, parsed by python3-yaml, as JSON.
fn yaml_docs(text: &str) -> Vec<serde_json::Value> {
    use std::io::Write;
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import json,sys,yaml; print(json.dumps(list(yaml.safe_load_all(sys.stdin))))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "not YAML:\n{text}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every file of a FAT image (copied out with `mcopy -s`): path → content.
fn fat_listing(boot: &Path, scratch: &Path) -> BTreeMap<String, String> {
    let dir = scratch.join(format!(
        "mcopy-{}",
        boot.file_name().unwrap().to_string_lossy()
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let o = Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-s", "-n", "-i"])
        .arg(boot)
        .arg("::*")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut out = BTreeMap::new();
    walk(&dir, &dir, &mut out);
    let _ = fs::remove_dir_all(&dir);
    // Modes and owners of copied-out files say nothing about FAT.
    out.into_iter()
        .map(|(k, v)| {
            let kind = v.split(' ').next().unwrap_or("").to_string();
            let hash = if kind == "file" {
                v.rsplit(' ').next().unwrap_or("").to_string()
            } else {
                String::new()
            };
            (k, format!("{kind} {hash}"))
        })
        .collect()
}

#[test]
fn nixos_k3s_cluster_changes_only_unmanaged_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let base = os_support::nixos();
    let cluster = example("odroid-k3s-nixos");
    let state_path = t.join("state");
    let (json, stderr) = stamp_all(&cluster, &base, &state_path, &t.join("out"));
    let summary: serde_json::Value = serde_json::from_str(&json).unwrap();
    let state = State::open(&state_path, "odroid").unwrap();
    for secret in secrets_of(&state) {
        assert!(!json.contains(&secret) && !stderr.contains(&secret));
    }
    let k3s = state.k3s().unwrap();
    let base_parts = split(&base, t, "base");
    let base_list = listing(&base_parts.root, t);
    let base_boot = fs::read(&base_parts.boot).unwrap();
    for i in 1..=7 {
        let node = format!("odroid{i}");
        let role = match i {
            1 => "init",
            2 | 3 => "server",
            _ => "agent",
        };
        let img = t.join(format!("{node}.img"));
        apply(&base, &t.join("out").join(format!("{node}.delta")), &img);
        let p = split(&img, t, &node);
        fsck(&p);
        assert!(
            fs::read(&p.boot).unwrap() == base_boot,
            "{node}: the firmware partition changed"
        );
        let r = &p.root;
        let s = "/var/lib/nodeimg";
        assert_eq!(cat(r, "/etc/hostname"), format!("{node}\n"));
        assert_eq!(cat(r, &format!("{s}/role")), format!("{role}\n"));
        assert_eq!(cat(r, &format!("{s}/address")), format!("10.0.0.1{i}\n"));
        if role == "init" {
            assert_eq!(stat(r, &format!("{s}/server-url")), None);
        } else {
            assert_eq!(
                cat(r, &format!("{s}/server-url")),
                "https://10.0.0.11:6443\n"
            );
        }
        let token = cat(r, &format!("{s}/k3s-token"));
        assert_eq!(stat(r, &format!("{s}/k3s-token")), Some((0o600, 0, 0)));
        if role == "agent" {
            assert_eq!(
                token,
                format!("{}\n", k3s.agent_token),
                "agents never hold the server token"
            );
        } else {
            assert_eq!(token, format!("{}\n", k3s.token));
        }
        assert_eq!(
            cat(r, &format!("{s}/k3s-agent-token")),
            format!("{}\n", k3s.agent_token)
        );
        assert!(cat(r, &format!("{s}/authorized_keys/admin")).starts_with("ssh-ed25519 "));
        assert_eq!(
            cat(r, "/var/lib/sops-nix/key.txt"),
            state.age_identity().unwrap()
        );
        assert_eq!(stat(r, "/var/lib/sops-nix/key.txt"), Some((0o600, 0, 0)));
        let nix = cat(r, &format!("{s}/cluster.nix"));
        let f = t.join("cluster.nix");
        fs::write(&f, &nix).unwrap();
        let parse = Command::new("nix-instantiate")
            .arg("--parse")
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            parse.status.success(),
            "{}",
            String::from_utf8_lossy(&parse.stderr)
        );
        assert!(
            nix.contains("name = \"odroid7\"; ip = \"10.0.0.17\";"),
            "{nix}"
        );

        // Only what NixOS leaves alone: /etc/hostname, the SSH host key,
        // /var/lib/nodeimg and /var/lib/sops-nix (and the directories above).
        let diff = differences(&base_list, &listing(r, t));
        let paths: Vec<String> = written(&summary, &node)
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        for d in &diff {
            let allowed = [
                "/etc/hostname",
                "/etc/ssh/ssh_host_ed25519_key",
                "/etc/ssh/ssh_host_ed25519_key.pub",
            ]
            .contains(&d.as_str())
                || d.starts_with("/var/lib/nodeimg")
                || d.starts_with("/var/lib/sops-nix")
                || ["/etc", "/etc/ssh", "/var", "/var/lib"].contains(&d.as_str());
            assert!(allowed, "{node}: {d} changed");
            assert!(
                paths
                    .iter()
                    .any(|p| p == d || p.starts_with(&format!("{d}/"))),
                "{node}: {d} not listed"
            );
        }
    }
    let nix = fs::read_to_string(t.join("out/cluster.nix")).unwrap();
    assert!(nix.contains("clusterName = \"odroid\";"));
}

#[test]
fn k3s_agents_join_an_existing_server() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let base = os_support::rpios();
    let cluster = example("k3s-agents");
    let (json, _) = stamp_all(&cluster, &base, &t.join("state"), &t.join("out"));
    let given = fs::read_to_string(cluster.parent().unwrap().join("server-token")).unwrap();
    assert!(!json.contains(given.trim()));
    let img = t.join("w1.img");
    apply(&base, &t.join("out/worker1.delta"), &img);
    let p = split(&img, t, "w1");
    fsck(&p);
    assert_eq!(
        cat(&p.root, "/etc/k3s/token"),
        format!("{}\n", given.trim())
    );
    assert_eq!(stat(&p.root, "/etc/k3s/token"), Some((0o600, 0, 0)));
    let cfg = cat(&p.root, "/etc/rancher/k3s/config.yaml");
    assert!(
        cfg.contains("server: \"https://192.168.1.5:6443\""),
        "{cfg}"
    );
    assert!(cat(&p.root, "/etc/nodeimg/cluster.env").contains("K3S_URL='https://192.168.1.5:6443'"));
}

#[test]
fn a_bad_cluster_file_lists_every_problem_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let cluster = t.join("cluster.toml");
    fs::write(
        &cluster,
        "[cluster]\nname = \"lab\"\nboard = \"rpi5\"\nflavour = \"kubeadm\"\napi_endpoint = \"10.0.0.1:6443\"\n\n[[node]]\nhostname = \"controlplane\"\naddress = \"10.96.0.5/24\"\n\n[[node]]\nhostname = \"Node_1\"\nsshkeys = []\n",
    )
    .unwrap();
    let base = os_support::rpios();
    let o = nodeimg(&[
        "stamp",
        "-c",
        cluster.to_str().unwrap(),
        "--base",
        base.to_str().unwrap(),
        "--all",
        "--out-dir",
        t.join("out").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let file = cluster.display().to_string();
    assert!(err.contains(&format!("{file}:9: node[0].address")), "{err}");
    assert!(
        err.contains(&format!("{file}:12: node[1].hostname")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{file}:13: node[1]: unknown field `sshkeys`")),
        "{err}"
    );
    assert!(
        err.lines().all(|l| l.starts_with("nodeimg: error: ")),
        "{err}"
    );
    assert!(!t.join("out").exists() && !t.join("cluster.state").exists());
}
