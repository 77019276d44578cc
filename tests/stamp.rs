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
    // The fixture bases hold no kubeadm or k3s: the tool check (tested in
    // tests/stamp.rs, tool_check_*) is turned off here.
    let check_off: &[&str] = match args.first() {
        Some(&"build") | Some(&"stamp") => &["--no-tool-check"],
        _ => &[],
    };
    Command::new(env!("CARGO_BIN_EXE_nodeimg"))
        .args(args)
        .args(check_off)
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

/// Stamps `node` of `cluster` over `base` as a whole image `img`.
fn stamp_image(cluster: &Path, base: &Path, node: &str, img: &Path, state: &Path) -> Output {
    nodeimg(&[
        "stamp",
        "-c",
        cluster.to_str().unwrap(),
        "--base",
        base.to_str().unwrap(),
        "--node",
        node,
        "--image",
        img.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "--init-state",
    ])
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
            assert_eq!(docs[0]["bootstrapTokens"][0]["ttl"], "8760h");
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
                || (d.starts_with("/etc/systemd/system/")
                    && (d.contains("nodeimg-bootstrap")
                        || d.contains("nodeimg-csr-approver")
                        || d.contains("nodeimg-firstboot")))
                // Masks are recorded by unit name.
                || d
                    .strip_prefix("/etc/systemd/system/")
                    .is_some_and(|u| paths.iter().any(|p| p == u))
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
        // And the FAT boot partition: only cmdline.txt, the NoCloud seed's
        // meta-data and user-data, ssh.
        let fat_diff = differences(&fat_listing(&base_parts.boot, t), &fat_listing(&p.boot, t));
        let want: BTreeSet<String> = ["/cmdline.txt", "/meta-data", "/ssh", "/user-data"]
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
    ok(&stamp_image(&cluster, &base, "node0", &img, &state_path));
    assert!(fs::read(&img).unwrap() == fs::read(t.join("node0.img")).unwrap());
    assert_eq!(
        fs::metadata(&img).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // An output that exists is refused without --force.
    let o = stamp_image(&cluster, &base, "node0", &img, &state_path);
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
                format!("{}\n", k3s.agent_join_token()),
                "agents never hold the server token"
            );
        } else {
            assert_eq!(token, format!("{}\n", k3s.server_token()));
        }
        assert!(token.starts_with("K10"), "a secure token pins the CA");
        assert_eq!(
            cat(r, &format!("{s}/k3s-agent-token")),
            format!("{}\n", k3s.agent_join_token())
        );
        // The init server holds the k3s CA the tokens pin; the others get
        // it from the cluster.
        let tls = "/var/lib/rancher/k3s/server/tls";
        let ca = k3s.server_ca.as_ref().unwrap();
        if role == "init" {
            assert_eq!(cat(r, &format!("{tls}/server-ca.crt")), ca.cert);
            assert_eq!(
                stat(r, &format!("{tls}/server-ca.key")),
                Some((0o600, 0, 0))
            );
            assert!(stat(r, &format!("{tls}/client-ca.key")).is_some());
        } else {
            assert_eq!(stat(r, &format!("{tls}/server-ca.key")), None);
        }
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

        // What nodeimg.nix applies at boot: the address with its prefix,
        // gateway and DNS (systemd-networkd), the host name, every node in
        // /etc/hosts; the time zone; k3s's CIDRs for servers.
        let net = cat(r, &format!("{s}/network/10-nodeimg.network"));
        assert!(
            net.contains("[Match]\nType=ether\n")
                && net.contains(&format!(
                    "Address=10.0.0.{}/24\n",
                    &node[6..].parse::<u32>().unwrap() + 10
                ))
                && net.contains("Gateway=10.0.0.1\nDNS=10.0.0.1\n"),
            "{net}"
        );
        assert_eq!(cat(r, &format!("{s}/hostname")), format!("{node}\n"));
        assert!(cat(r, &format!("{s}/hosts")).contains("10.0.0.17\todroid7 odroid7.local\n"));
        assert!(debugfs(r, "stat /etc/localtime")
            .contains("Fast link dest: \"/etc/zoneinfo/Europe/Berlin\""));
        let k3s = cat(r, "/etc/rancher/k3s/config.yaml.d/10-nodeimg.yaml");
        if ["odroid1", "odroid2", "odroid3"].contains(&node.as_str()) {
            let y = &yaml_docs(&k3s)[0];
            assert_eq!(y["cluster-cidr"], "10.42.0.0/16", "{k3s}");
            assert_eq!(y["service-cidr"], "10.43.0.0/16", "{k3s}");
        } else {
            assert_eq!(k3s, "", "agents take the CIDRs from the servers");
        }

        // The first-boot check nodeimg.nix runs: the Debian nodes' script
        // and library, and what to check (the stamped name, the secrets).
        let list = cat(r, "/etc/nodeimg/firstboot.list");
        assert!(list.starts_with(&format!("hostname {node}\n")), "{list}");
        assert!(
            list.contains("file 600 0 0 /var/lib/nodeimg/k3s-token\n")
                && list.contains("file 600 0 0 /var/lib/sops-nix/key.txt\n")
                && list.contains("peer 10.0.0.11\n") == (node != "odroid1"),
            "{list}"
        );
        assert_eq!(
            stat(r, "/usr/local/lib/nodeimg/firstboot.sh"),
            Some((0o755, 0, 0))
        );
        assert!(stat(r, "/usr/local/lib/nodeimg/bootstrap-lib.sh").is_some());

        // Only what NixOS leaves alone: /etc/hostname, /etc/localtime (while
        // time.timeZone is null), the SSH host key, /etc/rancher (declared only
        // by services.k3s, which nodeimg.nix forbids), /etc/nodeimg,
        // /usr/local, /var/lib/nodeimg and /var/lib/sops-nix (and the
        // directories above).
        let diff = differences(&base_list, &listing(r, t));
        let paths: Vec<String> = written(&summary, &node)
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        for d in &diff {
            let allowed = [
                "/etc/hostname",
                "/etc/localtime",
                "/etc/ssh/ssh_host_ed25519_key",
                "/etc/ssh/ssh_host_ed25519_key.pub",
            ]
            .contains(&d.as_str())
                || d.starts_with("/var/lib/nodeimg")
                || d.starts_with("/var/lib/sops-nix")
                // The k3s CAs of the init server, which k3s itself reads.
                || (node == "odroid1" && d.starts_with("/var/lib/rancher"))
                || d.starts_with("/etc/rancher")
                || d.starts_with("/etc/nodeimg")
                || d.starts_with("/usr/local")
                || ["/etc", "/etc/ssh", "/usr", "/var", "/var/lib"].contains(&d.as_str());
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

/// Runs `tests/os_support/cloud_init_firstboot.py` (cloud-init's own ssh,
/// hostname and users modules) over `root` in a private mount namespace in
/// which `root`'s /etc/ssh is /etc/ssh (and /root, /home are scratch), so
/// cc_ssh deletes and makes keys in the tree, never on the host.
/// With `system` false, cloud-init runs with its built-in defaults instead
/// of the tree's /etc/cloud.
fn cloud_init_first_boot(root: &Path, system: bool, user_data: &str) -> serde_json::Value {
    let script = os_support::repo().join("tests/os_support/cloud_init_firstboot.py");
    let ssh = root.join("etc/ssh");
    let o = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount --bind \"$3\" /etc/ssh && mount -t tmpfs none /root && mount -t tmpfs none /home \
             && exec /usr/bin/python3 \"$0\" \"$1\" \"$2\" \"$3\"",
        )
        .arg(&script)
        .arg(if system { root.as_os_str() } else { "-".as_ref() })
        .arg(user_data)
        .arg(&ssh)
        .output()
        .expect("unshare (util-linux)");
    assert!(
        o.status.success(),
        "cloud-init's modules (Debian package cloud-init): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(out.lines().last().unwrap_or("")).expect("JSON from the driver")
}

fn systemctl_root(root: &Path, args: &[&str]) -> String {
    let o = Command::new("systemctl")
        .arg(format!("--root={}", root.display()))
        .args(args)
        .output()
        .expect("systemctl (Debian package systemd)");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A node stamped over Raspberry Pi OS keeps its stamped host key, user,
/// password and hostname through the OS's first boot: the real
/// cloud-init modules run over the node's tree, systemd's own view of the
/// units after the presets a first boot applies, the wizard off.
#[test]
fn rpios_first_boot_keeps_the_stamped_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let base = os_support::rpios();
    let cluster = example("pi5-kubeadm");
    let state_path = t.join("cluster.state");
    let img = t.join("node0.img");
    ok(&stamp_image(&cluster, &base, "node0", &img, &state_path));
    let state = State::open(&state_path, "pi5-lab").unwrap();
    let hk = state.host_key("node0").unwrap();
    let p = split(&img, t, "node0");
    fsck(&p);
    let tree = t.join("tree");
    fs::create_dir(&tree).unwrap();
    let o = Command::new("debugfs")
        .arg("-R")
        .arg(format!("rdump / {}", tree.display()))
        .arg(&p.root)
        .output()
        .unwrap();
    assert!(o.status.success());
    let user_data = mtype(&p.boot, "user-data").expect("user-data on the boot partition");
    let ud_path = t.join("user-data");
    fs::write(&ud_path, &user_data).unwrap();
    assert!(user_data.contains("\nhostname: node0\n"), "{user_data}");

    // systemd: the key regenerator and the wizard are masked, and stay so
    // when a first boot applies the presets; the bootstrap stays enabled
    // and starts after cloud-init and the resize.
    for unit in ["regenerate_ssh_host_keys.service", "userconfig.service"] {
        assert_eq!(
            systemctl_root(&tree, &["is-enabled", unit]),
            "masked",
            "{unit}"
        );
    }
    systemctl_root(&tree, &["preset-all"]);
    for unit in ["regenerate_ssh_host_keys.service", "userconfig.service"] {
        assert_eq!(
            systemctl_root(&tree, &["is-enabled", unit]),
            "masked",
            "{unit} after preset-all"
        );
    }
    assert_eq!(
        systemctl_root(&tree, &["is-enabled", "nodeimg-bootstrap.service"]),
        "enabled"
    );
    let order = fs::read_to_string(
        tree.join("etc/systemd/system/nodeimg-bootstrap.service.d/10-after-first-boot.conf"),
    )
    .unwrap();
    assert!(
        order.contains("After=cloud-final.service rpi-resize.service"),
        "{order}"
    );

    // cloud-init's own modules over the node: the stamped key is neither
    // deleted nor joined by new ones, the hostname is left alone, the user
    // is neither re-passworded nor locked.
    let d = cloud_init_first_boot(&tree, true, ud_path.to_str().unwrap());
    assert_eq!(d["ssh_deletekeys"], false, "{d}");
    let mut keys: Vec<String> = fs::read_dir(tree.join("etc/ssh"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ssh_host_"))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"],
        "host keys after cloud-init"
    );
    assert_eq!(
        fs::read_to_string(tree.join("etc/ssh/ssh_host_ed25519_key")).unwrap(),
        hk.private
    );
    assert_eq!(d["set_hostname"], serde_json::json!([]), "{d}");
    assert_eq!(d["update_hostname"], serde_json::json!([]), "{d}");
    let users = d["create_user"].as_array().unwrap();
    assert_eq!(users.len(), 1, "{d}");
    assert_eq!(users[0]["args"][0], "pi");
    let kw = &users[0]["kwargs"];
    assert_eq!(kw["lock_passwd"], false, "{d}");
    assert!(kw.get("plain_text_passwd").is_none() && kw.get("hashed_passwd").is_none());
    let shadow = fs::read_to_string(tree.join("etc/shadow")).unwrap();
    assert!(shadow.contains("\npi:$6$nodeimgexample$"), "{shadow}");

    // The oracle can fail: with cloud-init's defaults (no configuration),
    // the same module deletes the stamped key and makes new ones.
    let d = cloud_init_first_boot(&tree, false, "-");
    assert_eq!(d["ssh_deletekeys"], true, "{d}");
    let after = fs::read_to_string(tree.join("etc/ssh/ssh_host_ed25519_key")).unwrap();
    assert_ne!(after, hk.private, "cloud-init's defaults replace host keys");
}

/// Writes `data` at `path` inside the root (second) partition of `image`
/// with `debugfs -w` (the test's own byte surgery on a copy of a base).
fn debugfs_write(image: &Path, path: &str, data: &str, scratch: &Path) {
    let out = Command::new("sfdisk")
        .arg("-J")
        .arg(image)
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let start = j["partitiontable"]["partitions"][1]["start"]
        .as_u64()
        .unwrap()
        * 512;
    let local = scratch.join("debugfs-write");
    fs::write(&local, data).unwrap();
    let o = Command::new("debugfs")
        .arg("-w")
        .arg("-R")
        .arg(format!("write {} {path}", local.display()))
        .arg(format!("{}?offset={start}", image.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A k3s cluster whose init node is on DHCP reaches it by its mDNS name:
/// refused while the base cannot resolve `.local`, stamped once it can;
/// `hosts = true` puts every node in /etc/hosts, known_hosts has names,
/// `.local` names and addresses, `interface` reaches the keyfile.
#[test]
fn mdns_endpoint_needs_a_base_that_resolves_it() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let cluster = t.join("cluster.toml");
    fs::write(
        &cluster,
        "[cluster]\nname = \"mdns\"\nboard = \"rpi5\"\nflavour = \"k3s\"\n\
         api_endpoint = \"controlplane.local:6443\"\nhosts = true\n\
         [[node]]\nhostname = \"controlplane\"\n\
         [[node]]\nhostname = \"node1\"\naddress = \"192.168.1.21/24\"\ninterface = \"end0\"\n",
    )
    .unwrap();
    let state = t.join("cluster.state");
    let base = os_support::copy_to(&os_support::rpios(), t, "base.img");
    let o = nodeimg(&[
        "stamp",
        "-c",
        cluster.to_str().unwrap(),
        "--base",
        base.to_str().unwrap(),
        "--all",
        "--out-dir",
        t.join("refused").to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "--init-state",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("api_endpoint controlplane.local:6443")
            && err.contains("no avahi-daemon, no libnss-mdns")
            && err.contains("apt-get install -y avahi-daemon libnss-mdns"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    // The base with avahi-daemon and libnss-mdns's nsswitch entry.
    debugfs_write(&base, "/usr/sbin/avahi-daemon", "#!/bin/sh\n", t);
    debugfs_write(
        &base,
        "/etc/nsswitch.conf",
        "passwd: files\nhosts: files mdns4_minimal [NOTFOUND=return] dns\n",
        t,
    );
    let (_, _) = stamp_all(&cluster, &base, &state, &t.join("out"));
    let known = fs::read_to_string(t.join("out/known_hosts")).unwrap();
    assert!(
        known.contains("controlplane,controlplane.local ssh-ed25519 "),
        "{known}"
    );
    assert!(
        known.contains("node1,node1.local,192.168.1.21 ssh-ed25519 "),
        "{known}"
    );
    let img = t.join("node1.img");
    apply(&base, &t.join("out/node1.delta"), &img);
    let p = split(&img, t, "node1");
    fsck(&p);
    let hosts = cat(&p.root, "/etc/hosts");
    assert!(
        hosts.contains("\n192.168.1.21\tnode1 node1.local\n"),
        "{hosts}"
    );
    let nm = cat(
        &p.root,
        "/etc/NetworkManager/system-connections/nodeimg.nmconnection",
    );
    assert!(nm.contains("interface-name=end0\n"), "{nm}");
    let k3s = cat(&p.root, "/etc/rancher/k3s/config.yaml");
    assert!(k3s.contains("https://controlplane.local:6443"), "{k3s}");
}

/// Raspberry Pi OS Bookworm: no cloud-init, the first boot runs
/// raspberrypi-sys-mods' firstboot as init; the key regenerator and the
/// wizard are masked all the same and the init= resize is kept.
#[test]
fn rpios_bookworm_first_boot_keeps_the_stamped_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let base = os_support::rpios_bookworm();
    let cluster = example("pi5-kubeadm");
    let state_path = t.join("cluster.state");
    let img = t.join("node0.img");
    ok(&stamp_image(&cluster, &base, "node0", &img, &state_path));
    let p = split(&img, t, "node0");
    fsck(&p);
    let tree = t.join("tree");
    fs::create_dir(&tree).unwrap();
    let o = Command::new("debugfs")
        .arg("-R")
        .arg(format!("rdump / {}", tree.display()))
        .arg(&p.root)
        .output()
        .unwrap();
    assert!(o.status.success());
    systemctl_root(&tree, &["preset-all"]);
    for unit in ["regenerate_ssh_host_keys.service", "userconfig.service"] {
        assert_eq!(
            systemctl_root(&tree, &["is-enabled", unit]),
            "masked",
            "{unit}"
        );
    }
    let cmdline = mtype(&p.boot, "cmdline.txt").unwrap();
    assert!(
        cmdline.contains(" init=/usr/lib/raspberrypi-sys-mods/firstboot ")
            && cmdline.contains(" systemd.hostname=node0"),
        "{cmdline}"
    );
    assert_eq!(mtype(&p.boot, "user-data"), None);
    assert!(!tree.join("etc/cloud").exists());
    // Nothing to order after: no cloud-init, no rpi-resize.service.
    assert!(!tree
        .join("etc/systemd/system/nodeimg-bootstrap.service.d")
        .exists());
    let hk = State::open(&state_path, "pi5-lab")
        .unwrap()
        .host_key("node0")
        .unwrap()
        .private
        .clone();
    assert_eq!(
        fs::read_to_string(tree.join("etc/ssh/ssh_host_ed25519_key")).unwrap(),
        hk
    );
}

/// `nodeimg` with the tool check left on (the helper above turns it off).
fn nodeimg_checked(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodeimg"))
        .args(args)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .output()
        .expect("running nodeimg")
}

/// Puts an executable stand-in at `path` in the root partition of `img`.
fn put_tool(img: &Path, dir: &Path, path: &str) {
    mkdir_local_bin(img);
    let local = dir.join("stand-in");
    fs::write(&local, "#!/bin/sh\necho stand-in\n").unwrap();
    ok(&nodeimg(&[
        "fs",
        "put",
        img.to_str().unwrap(),
        "--part",
        "2",
        local.to_str().unwrap(),
        path,
        "--mode",
        "755",
    ]));
}

fn mkdir_local_bin(img: &Path) {
    ok(&nodeimg(&[
        "fs",
        "mkdir",
        "-p",
        img.to_str().unwrap(),
        "--part",
        "2",
        "/usr/local/bin",
    ]));
}

fn stamp_checked(cluster: &Path, base: &Path, t: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "stamp",
        "--config",
        cluster.to_str().unwrap(),
        "--base",
        base.to_str().unwrap(),
        "--state",
        t.join("state").to_str().unwrap().to_string().leak(),
        "--init-state",
    ];
    args.extend_from_slice(extra);
    nodeimg_checked(&args)
}

#[test]
fn tool_check_refuses_a_kubeadm_base_without_kubeadm_naming_the_recipes() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let base = os_support::copy_to(&os_support::rpios(), t, "base.img");
    let cluster = example("pi5-kubeadm");
    let out = t.join("out");
    let o = stamp_checked(
        &cluster,
        &base,
        t,
        &["--all", "--out-dir", out.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("has no kubeadm, kubelet, kubectl, a container runtime (crio or containerd), helm for the kubeadm flavour"),
        "{err}"
    );
    assert!(
        err.contains(r#"build the base with [base] provision = ["kubeadm", "helm"]"#),
        "{err}"
    );
    // Nothing written: no outputs, no state.
    assert!(!out.exists() && !t.join("state").exists());

    // kubeadm's tools present (kubectl as a symlink, the runtime as
    // containerd), helm still missing: refused for helm alone.
    for p in [
        "/usr/bin/kubeadm",
        "/usr/bin/kubelet",
        "/usr/local/bin/containerd",
    ] {
        put_tool(&base, t, p);
    }
    ok(&nodeimg(&[
        "fs",
        "symlink",
        base.to_str().unwrap(),
        "--part",
        "2",
        "/usr/bin/kubeadm",
        "/usr/bin/kubectl",
    ]));
    let o = stamp_checked(
        &cluster,
        &base,
        t,
        &["--all", "--out-dir", out.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("has no helm for the kubeadm flavour"), "{err}");
    assert!(err.contains(r#"provision = ["helm"]"#), "{err}");
    // A worker does not run helm: stamping it alone passes.
    let o = stamp_checked(
        &cluster,
        &base,
        t,
        &[
            "--node",
            "node0",
            "-o",
            t.join("node0.delta").to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // With helm, the whole cluster passes.
    put_tool(&base, t, "/usr/local/bin/helm");
    ok(&stamp_checked(
        &cluster,
        &base,
        t,
        &["--all", "--out-dir", out.to_str().unwrap()],
    ));
}

#[test]
fn tool_check_refuses_k3s_without_k3s_and_the_flag_overrides() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let base = os_support::copy_to(&os_support::rpios(), t, "base.img");
    let cluster = example("k3s-agents");
    let out = t.join("out");
    let o = stamp_checked(
        &cluster,
        &base,
        t,
        &["--all", "--out-dir", out.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains(r#"has no k3s for the k3s-agent flavour: build the base with [base] provision = ["k3s"]"#),
        "{err}"
    );
    // The override stamps the same base.
    ok(&stamp_checked(
        &cluster,
        &base,
        t,
        &[
            "--all",
            "--out-dir",
            out.to_str().unwrap(),
            "--no-tool-check",
        ],
    ));
    // A non-executable k3s does not count; an executable one does.
    let local = t.join("k3s");
    fs::write(&local, "not a program\n").unwrap();
    let put = |mode: &str| {
        ok(&nodeimg(&[
            "fs",
            "put",
            base.to_str().unwrap(),
            "--part",
            "2",
            local.to_str().unwrap(),
            "/usr/local/bin/k3s",
            "--mode",
            mode,
        ]))
    };
    mkdir_local_bin(&base);
    put("644");
    let again = t.join("again");
    let o = stamp_checked(
        &cluster,
        &base,
        t,
        &["--all", "--out-dir", again.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(3));
    put("755");
    ok(&stamp_checked(
        &cluster,
        &base,
        t,
        &["--all", "--out-dir", again.to_str().unwrap()],
    ));
}

/// Every example under examples/ validates and would bring its cluster up:
/// an upstream source by URL carries its SHA-256, and the base's
/// provisioning names the recipe of every tool its flavour runs (the demo
/// stands in without them, and NixOS bases get them from their
/// configuration; both say so in their comments).
#[test]
fn every_example_validates_and_names_its_recipes() {
    let mut seen = 0;
    for e in fs::read_dir(os_support::repo().join("examples")).unwrap() {
        let file = e.unwrap().path().join("cluster.toml");
        if !file.is_file() {
            continue;
        }
        seen += 1;
        let c = pipeline::cluster::Cluster::load(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let source = c.base.source.clone().unwrap_or_default();
        let text = fs::read_to_string(&file).unwrap();
        if source.starts_with("https://") {
            let sha = c.base.sha256.clone().unwrap_or_default();
            assert!(
                sha.len() == 64 && sha.chars().all(|x| x.is_ascii_hexdigit()),
                "{}: a URL source needs its sha256",
                file.display()
            );
            for t in c.flavour.tools() {
                assert!(
                    c.base
                        .provision
                        .iter()
                        .any(|p| p.to_str() == Some(t.recipe)),
                    "{}: {} needs the {} recipe in [base] provision",
                    file.display(),
                    t.what,
                    t.recipe
                );
            }
        } else if c.flavour != pipeline::flavour::Flavour::None {
            assert!(
                text.contains("--no-tool-check") || text.contains("NixOS"),
                "{}: a local base must say where its tools come from",
                file.display()
            );
        }
    }
    assert_eq!(seen, 4);
}

/// A private GitOps repository over SSH: the deploy key is generated into
/// the state, stamped on the kubeadm init node only (0600 root, with its
/// public half and the Git host's known_hosts), named as the FluxInstance's
/// pullSecret, and `cluster info` shows its public half, never the private.
#[test]
fn gitops_deploy_key_on_the_init_node_only() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let base = os_support::rpios();
    let host = "github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    fs::write(t.join("known_hosts"), format!("{host}\n")).unwrap();
    let text = fs::read_to_string(example("pi5-kubeadm")).unwrap().replace(
        "gitops_url = \"https://github.com/example/pi5-lab-fleet.git\"\n",
        "gitops_url = \"git@github.com:example/pi5-lab-fleet.git\"\ngitops_known_hosts = \"known_hosts\"\n",
    );
    let cluster = t.join("cluster.toml");
    fs::write(&cluster, text).unwrap();
    let state_path = t.join("cluster.state");
    let (json, stderr) = stamp_all(&cluster, &base, &state_path, &t.join("out"));
    let state = State::open(&state_path, "pi5-lab").unwrap();
    let key = state.gitops_deploy_key().expect("a deploy key").clone();
    let private_line = key.private.lines().nth(2).unwrap().to_string();
    assert!(!json.contains(&private_line) && !stderr.contains(&private_line));

    for node in ["controlplane", "controlplane1", "node0", "node1"] {
        let img = t.join(format!("{node}.img"));
        apply(&base, &t.join("out").join(format!("{node}.delta")), &img);
        let p = split(&img, t, node);
        let r = &p.root;
        if node == "controlplane" {
            assert_eq!(stat(r, "/etc/nodeimg/flux-deploy-key"), Some((0o600, 0, 0)));
            assert_eq!(cat(r, "/etc/nodeimg/flux-deploy-key"), key.private);
            assert_eq!(
                cat(r, "/etc/nodeimg/flux-deploy-key.pub"),
                format!("{}\n", key.public)
            );
            assert_eq!(cat(r, "/etc/nodeimg/flux-known-hosts"), format!("{host}\n"));
            let flux = yaml_docs(&cat(r, "/etc/nodeimg/flux-instance.yaml"));
            assert_eq!(flux[0]["spec"]["sync"]["pullSecret"], "flux-system");
            assert_eq!(
                flux[0]["spec"]["sync"]["url"],
                "git@github.com:example/pi5-lab-fleet.git"
            );
        } else {
            for f in ["flux-deploy-key", "flux-deploy-key.pub", "flux-known-hosts"] {
                assert_eq!(stat(r, &format!("/etc/nodeimg/{f}")), None, "{node}: {f}");
            }
            // Not hidden in another file either.
            let env = cat(r, "/etc/nodeimg/cluster.env");
            assert!(!env.contains(&private_line), "{node}");
        }
        fs::remove_file(&img).unwrap();
    }

    // cluster info: the public half, in text and --json; no private key.
    for extra in [&[][..], &["--json"][..]] {
        let mut args = vec![
            "cluster",
            "info",
            "-c",
            cluster.to_str().unwrap(),
            "--state",
            state_path.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = nodeimg(&args);
        let out = ok(&o);
        assert!(out.contains(&key.public), "{out}");
        assert!(!out.contains(&private_line) && !out.contains("PRIVATE KEY"));
        if !extra.is_empty() {
            let j: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(j["gitops_deploy_key"], key.public.as_str());
        }
    }
}

/// The base is read through one block cache for a whole run and each
/// node's changes live in its own overlay: a node stamped in a run of many
/// must come out byte for byte as when it is stamped alone, and no node's
/// writes may show in another's image.
#[test]
fn a_run_of_many_nodes_matches_one_run_per_node() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let base = os_support::rpios();
    let cluster = example("pi5-kubeadm");
    let state = t.join("cluster.state");
    let all = t.join("all");
    stamp_all(&cluster, &base, &state, &all);
    let nodes = ["controlplane", "controlplane1", "node0", "node1"];
    for node in nodes {
        let alone = t.join(format!("{node}.alone.delta"));
        ok(&nodeimg(&[
            "stamp",
            "--config",
            cluster.to_str().unwrap(),
            "--base",
            base.to_str().unwrap(),
            "--node",
            node,
            "-o",
            alone.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
        ]));
        let in_run = fs::read(all.join(format!("{node}.delta"))).unwrap();
        assert!(
            in_run == fs::read(&alone).unwrap(),
            "{node}: the delta from the run of {} nodes differs from the one stamped alone",
            nodes.len()
        );
    }
    // The first and the last node of the run, applied: each clean, each
    // with its own name only.
    for node in [nodes[0], nodes[3]] {
        let img = t.join(format!("{node}.img"));
        apply(&base, &all.join(format!("{node}.delta")), &img);
        let p = split(&img, t, node);
        fsck(&p);
        assert_eq!(cat(&p.root, "/etc/hostname"), format!("{node}\n"));
        let hosts = cat(&p.root, "/etc/hosts");
        for other in nodes.iter().filter(|&&o| o != node) {
            assert!(
                !hosts
                    .lines()
                    .any(|l| l.split_whitespace().any(|w| w == *other)),
                "{node}: /etc/hosts names {other}:\n{hosts}"
            );
        }
        let cmdline = mtype(&p.boot, "cmdline.txt").unwrap_or_default();
        for word in cmdline.split_whitespace() {
            if let Some(name) = word.strip_prefix("systemd.hostname=") {
                assert_eq!(name, node, "{node}: cmdline.txt {cmdline}");
            }
        }
        fs::remove_file(&img).unwrap();
    }
}
