//! `nodeimg build` and `nodeimg flash DIST` end to end, judged by
//! independent tools: `sha256sum -c`, `bmaptool copy`, `cmp`, `debugfs`,
//! `e2fsck`, loop devices the tests create and remove.

mod flash_support;
mod os_support;

use flash_support::Loop;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

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
        .stdin(Stdio::null())
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

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// examples/demo copied into `dir` (its state file lands there, not in the repo).
fn demo(dir: &Path) -> PathBuf {
    let d = dir.join("demo");
    fs::create_dir_all(&d).unwrap();
    for f in ["cluster.toml", "rpios-demo.img.zst"] {
        fs::copy(os_support::repo().join("examples/demo").join(f), d.join(f)).unwrap();
    }
    d.join("cluster.toml")
}

/// Every file of a directory tree with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(rd) = fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(p.strip_prefix(root).unwrap().into(), fs::read(&p).unwrap());
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

fn sha256sum_c(dir: &Path) {
    let o = Command::new("sha256sum")
        .args(["-c", "--strict", "SHA256SUMS"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
}

fn unzstd(zst: &Path, out: &Path) {
    let st = Command::new("zstd")
        .args(["-q", "-d", "-f", s(zst), "-o", s(out)])
        .status()
        .unwrap();
    assert!(st.success());
}

fn cmp(a: &Path, b: &Path) -> bool {
    Command::new("cmp")
        .args([s(a), s(b)])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Byte offset of partition `i` (0-based) of an image or device.
fn part_offset(image: &str, i: usize) -> u64 {
    let o = Command::new("sfdisk").args(["-J", image]).output().unwrap();
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    j["partitiontable"]["partitions"][i]["start"]
        .as_u64()
        .unwrap()
        * 512
}

fn debugfs_cat(image: &str, offset: u64, path: &str) -> String {
    let o = Command::new("debugfs")
        .args([
            "-R",
            &format!("cat {path}"),
            &format!("{image}?offset={offset}"),
        ])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The README's first quick-start command on the demo, then everything a
/// build promises: checksums, reproducibility across directories, the
/// incremental rebuild, delta = `stamp --image`, and `bmaptool copy`.
#[test]
fn demo_build_is_checked_reproducible_incremental_and_equals_stamp() {
    let t = tempfile::tempdir().unwrap();
    let cluster = demo(t.path());
    let state = cluster.with_file_name("cluster.state");
    let a = t.path().join("a/dist");
    let out = ok(&nodeimg(&["build", s(&cluster), "--out", s(&a)]));
    assert!(out.contains("flash:") && out.contains("--device"), "{out}");
    sha256sum_c(&a);
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(a.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["nodes"].as_array().unwrap().len(), 4);
    assert_eq!(m["nodes"][0]["role"], "init");
    assert!(m["state_fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert!(a.join("known_hosts").is_file());

    // Another directory, same inputs and state: the same bytes.
    let b = t.path().join("elsewhere/b");
    ok(&nodeimg(&[
        "build",
        s(&cluster),
        "--out",
        s(&b),
        "--state",
        s(&state),
    ]));
    assert_eq!(snapshot(&a), snapshot(&b), "two builds differ");

    // Nothing changed: nothing rebuilt, same bytes.
    let again = ok(&nodeimg(&["build", s(&cluster), "--out", s(&a)]));
    assert!(
        again.contains("base unchanged, 0 stamped, 4 unchanged"),
        "{again}"
    );
    assert_eq!(snapshot(&a), snapshot(&b));

    // A node added: only that node is stamped.
    let mut text = fs::read_to_string(&cluster).unwrap();
    text.push_str("\n[[node]]\nhostname = \"node2\"\n");
    fs::write(&cluster, text).unwrap();
    let more = ok(&nodeimg(&["build", s(&cluster), "--out", s(&a)]));
    assert!(
        more.contains("base unchanged, 1 stamped, 4 unchanged"),
        "{more}"
    );
    sha256sum_c(&a);

    // base ⊕ delta = stamp --image of the node.
    let base = t.path().join("base.img");
    unzstd(&a.join("base.img.zst"), &base);
    for node in ["controlplane", "node0"] {
        let applied = t.path().join(format!("{node}.applied.img"));
        ok(&nodeimg(&[
            "delta",
            "apply",
            s(&base),
            s(&a.join(format!("nodes/{node}.delta"))),
            "-o",
            s(&applied),
        ]));
        let stamped = t.path().join(format!("{node}.stamped.img"));
        ok(&nodeimg(&[
            "stamp",
            "--config",
            s(&cluster),
            "--base",
            s(&base),
            "--node",
            node,
            "--image",
            s(&stamped),
            "--state",
            s(&state),
        ]));
        assert!(
            cmp(&applied, &stamped),
            "{node}: delta differs from stamp --image"
        );
        fs::remove_file(&applied).unwrap();
        fs::remove_file(&stamped).unwrap();
    }

    // bmaptool writes the base with our bmap; the card reads like the base.
    let size = fs::metadata(&base).unwrap().len();
    let card = Loop::over_new_file(t.path(), "card", size, 0, 0);
    let o = Command::new("bmaptool")
        .args(["copy", "--bmap", s(&a.join("base.img.bmap"))])
        .arg(a.join("base.img.zst"))
        .arg(&card.dev)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Every block the bmap maps reads like the base (the rest is free
    // space bmaptool rightly skips), and the root filesystem is clean.
    let bmap = imagegen::bmap::Bmap::load(&a.join("base.img.bmap")).unwrap();
    assert_eq!(bmap.image_size, size);
    for e in bmap.mapped.extents() {
        assert!(
            flash_support::cmp_range(s(&base), &card.dev, e.start, e.end - e.start),
            "the card differs from the base in {}..{}",
            e.start,
            e.end
        );
    }
    let root = part_offset(&card.dev, 1);
    let fsck = Command::new("e2fsck")
        .args(["-fn", &format!("{}?offset={root}", card.dev)])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
}

/// The secret values of a state file and the demo's password hash.
fn secrets_of(state: &Path, cluster: &Path) -> Vec<String> {
    let v: toml::Value = toml::from_str(&fs::read_to_string(state).unwrap()).unwrap();
    let mut out = Vec::new();
    fn walk(key: &str, v: &toml::Value, out: &mut Vec<String>) {
        match v {
            toml::Value::Table(t) => t.iter().for_each(|(k, v)| walk(k, v, out)),
            toml::Value::String(s)
                if matches!(
                    key,
                    "token" | "agent_token" | "key" | "identity" | "private"
                ) =>
            {
                // Every long line of a PEM/OpenSSH body, and the value whole.
                if !s.contains('\n') {
                    out.push(s.clone());
                }
                for line in s.lines() {
                    if line.len() >= 40 && !line.starts_with("-----") && !line.starts_with('#') {
                        out.push(line.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    walk("", &v, &mut out);
    let text = fs::read_to_string(cluster).unwrap();
    let hash = text
        .lines()
        .find_map(|l| l.strip_prefix("password_hash = \""))
        .unwrap()
        .trim_end_matches('"');
    out.push(hash.to_string());
    out.retain(|s| s.len() >= 16);
    assert!(out.len() > 10, "too few secrets found: {}", out.len());
    out
}

/// The first of `needles` that `file` holds (grep -F, fast on large images).
fn holds_any(file: &Path, needles: &[String], dir: &Path) -> Option<String> {
    let pats = dir.join("patterns");
    fs::write(&pats, needles.join("\n")).unwrap();
    let o = Command::new("grep")
        .args(["-a", "-o", "-m1", "-F", "-f", s(&pats), s(file)])
        .output()
        .unwrap();
    fs::remove_file(&pats).unwrap();
    (o.status.code() == Some(0)).then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// `--secrets defer`: no artefact (decompressed too) holds any secret; two
/// loop devices flashed as two nodes with `--secrets` hold each node's
/// identity and the shared secrets; without `--secrets` the flash is
/// refused before writing; a state of another cluster is refused.
#[test]
fn defer_keeps_secrets_out_and_flash_injects_them() {
    let t = tempfile::tempdir().unwrap();
    let cluster = demo(t.path());
    let state = cluster.with_file_name("cluster.state");
    let dist = t.path().join("dist");
    ok(&nodeimg(&[
        "build",
        s(&cluster),
        "--out",
        s(&dist),
        "--secrets",
        "defer",
    ]));
    sha256sum_c(&dist);
    let secrets = secrets_of(&state, &cluster);
    let base = t.path().join("base.img");
    unzstd(&dist.join("base.img.zst"), &base);
    let mut files: Vec<PathBuf> = snapshot(&dist).into_keys().map(|p| dist.join(p)).collect();
    files.push(base.clone());
    for f in &files {
        let found = holds_any(f, &secrets, t.path());
        assert!(found.is_none(), "{} holds a secret: {found:?}", f.display());
    }
    // The embed build does hold them (the search finds what it looks for).
    let emb = t.path().join("embed");
    ok(&nodeimg(&["build", s(&cluster), "--out", s(&emb)]));
    assert!(holds_any(&emb.join("nodes/controlplane.delta"), &secrets, t.path()).is_some());

    let size = fs::metadata(&base).unwrap().len();
    let c1 = Loop::over_new_file(t.path(), "c1", size, 0xa5, 1 << 20);
    let c2 = Loop::over_new_file(t.path(), "c2", size, 0xa5, 1 << 20);
    let before = c1.read(0, 1 << 20);

    // Without --secrets: refused, nothing written.
    let o = nodeimg(&[
        "flash",
        s(&dist),
        "--device",
        &format!("{}=node0", c1.dev),
        "--allow-fixed",
        "--yes",
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--secrets"));
    assert_eq!(c1.read(0, 1 << 20), before);
    // A node the manifest does not list.
    let o = nodeimg(&[
        "flash",
        s(&dist),
        "--device",
        &format!("{}=nodeX", c1.dev),
        "--allow-fixed",
        "--yes",
    ]);
    assert_eq!(o.status.code(), Some(3));
    // Another cluster's state: refused.
    let other = t.path().join("other");
    fs::create_dir_all(&other).unwrap();
    let ocl = demo(&other);
    ok(&nodeimg(&[
        "build",
        s(&ocl),
        "--out",
        s(&other.join("dist")),
    ]));
    let ostate = ocl.with_file_name("cluster.state");
    let o = nodeimg(&[
        "flash",
        s(&dist),
        "--device",
        &format!("{}=node0", c1.dev),
        "--secrets",
        s(&ostate),
        "--allow-fixed",
        "--yes",
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("fingerprint"));
    assert_eq!(c1.read(0, 1 << 20), before);

    let o = nodeimg(&[
        "flash",
        s(&dist),
        "--device",
        &format!("{}=node0", c1.dev),
        "--device",
        &format!("{}=controlplane", c2.dev),
        "--secrets",
        s(&state),
        "--allow-fixed",
        "--yes",
    ]);
    ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("node node0") && err.contains("node controlplane"),
        "{err}"
    );
    let st: toml::Value = toml::from_str(&fs::read_to_string(&state).unwrap()).unwrap();
    let token = st["kubeadm"]["token"].as_str().unwrap();
    let age = st["age"]["identity"].as_str().unwrap();
    for (card, node) in [(&c1, "node0"), (&c2, "controlplane")] {
        let root = part_offset(&card.dev, 1);
        assert_eq!(debugfs_cat(&card.dev, root, "/etc/hostname").trim(), node);
        assert_eq!(debugfs_cat(&card.dev, root, "/root/keys.txt"), age);
        assert!(debugfs_cat(&card.dev, root, "/etc/nodeimg/cluster.env").contains(token));
        let host = st["host_keys"][node]["private"].as_str().unwrap();
        assert_eq!(
            debugfs_cat(&card.dev, root, "/etc/ssh/ssh_host_ed25519_key"),
            host
        );
        let fsck = Command::new("e2fsck")
            .args(["-fn", &format!("{}?offset={root}", card.dev)])
            .output()
            .unwrap();
        assert!(
            fsck.status.success(),
            "{node}: {}",
            String::from_utf8_lossy(&fsck.stdout)
        );
    }

    // The cards swapped, with --json: progress lines for both cards, and a
    // summary naming the node written to each device.
    let o = nodeimg(&[
        "flash",
        s(&dist),
        "--device",
        &format!("{}=controlplane", c1.dev),
        "--device",
        &format!("{}=node0", c2.dev),
        "--secrets",
        s(&state),
        "--allow-fixed",
        "--yes",
        "--json",
    ]);
    let out = ok(&o);
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    for dev in [&c1.dev, &c2.dev] {
        assert!(
            events
                .iter()
                .any(|e| e["event"] == "progress" && e["device"] == dev.as_str()),
            "no progress for {dev}: {out}"
        );
    }
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary", "{out}");
    assert_eq!(summary["ok"], true, "{out}");
    for (i, (card, node)) in [(&c1, "controlplane"), (&c2, "node0")]
        .into_iter()
        .enumerate()
    {
        let d = &summary["devices"][i];
        assert_eq!(d["device"], card.dev.as_str());
        assert_eq!(d["node"], node);
        assert_eq!(d["verification"], "ok");
        let root = part_offset(&card.dev, 1);
        assert_eq!(debugfs_cat(&card.dev, root, "/etc/hostname").trim(), node);
    }
}

/// A build killed at a random point leaves the output directory as it was.
#[test]
fn killed_build_leaves_the_output_as_it_was() {
    let t = tempfile::tempdir().unwrap();
    let cluster = demo(t.path());
    let dist = t.path().join("dist");
    ok(&nodeimg(&["build", s(&cluster), "--out", s(&dist)]));
    let before = snapshot(&dist);
    // Deterministic "random" delays (xorshift over seeds).
    for seed in [7u64, 1234, 99991, 31337] {
        let mut x = seed;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let delay = std::time::Duration::from_millis(50 + x % 3000);
        let mut child = Command::new(env!("CARGO_BIN_EXE_nodeimg"))
            .args([
                "build",
                s(&cluster),
                "--out",
                s(&dist),
                "--force",
                "--secrets",
                "defer",
            ])
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().unwrap();
        let now = snapshot(&dist);
        if status.success() {
            // Finished before the kill: then it is the new build, whole.
            sha256sum_c(&dist);
            ok(&nodeimg(&[
                "build",
                s(&cluster),
                "--out",
                s(&dist),
                "--force",
            ]));
            assert_eq!(snapshot(&dist), before);
        } else {
            assert_eq!(now, before, "seed {seed}: the output changed");
        }
    }
    // A later build cleans up what the killed ones left beside it.
    ok(&nodeimg(&["build", s(&cluster), "--out", s(&dist)]));
    let left: Vec<_> = fs::read_dir(t.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".build-"))
        .collect();
    assert!(left.is_empty(), "stale staging directories remain");
}

/// An output directory holding something else is refused without --force;
/// a cluster file with problems lists them and writes nothing.
#[test]
fn bad_output_and_bad_cluster_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let cluster = demo(t.path());
    let dist = t.path().join("dist");
    fs::create_dir_all(&dist).unwrap();
    fs::write(dist.join("precious.txt"), "mine").unwrap();
    let o = nodeimg(&["build", s(&cluster), "--out", s(&dist)]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
    assert_eq!(fs::read(dist.join("precious.txt")).unwrap(), b"mine");
    let bad = t.path().join("demo/bad.toml");
    let text = fs::read_to_string(&cluster)
        .unwrap()
        .replace("hostname = \"node1\"", "hostname = \"Node_1\"");
    fs::write(&bad, text).unwrap();
    let o = nodeimg(&["build", s(&bad), "--out", s(&t.path().join("x"))]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad.toml:"));
    assert!(!t.path().join("x").exists());
}

/// The Odroid C4 NixOS k3s example (7 nodes) over the NixOS fixture and the
/// Tow-Boot-like archive: checked, reproducible, cluster.nix written.
#[test]
fn odroid_nixos_k3s_builds() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("odroid");
    fs::create_dir_all(&d).unwrap();
    fs::copy(os_support::nixos(), d.join("nixos-odroid-c4.img")).unwrap();
    fs::copy(
        os_support::towboot_archive(),
        d.join("odroid-C4-2023.07-007.tar.xz"),
    )
    .unwrap();
    let text =
        fs::read_to_string(os_support::repo().join("examples/odroid-k3s-nixos/cluster.toml"))
            .unwrap()
            .replace("nixos-odroid-c4.img.zst", "nixos-odroid-c4.img");
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("sha256 =") && !l.starts_with("size ="))
        .map(|l| format!("{l}\n"))
        .collect();
    let cluster = d.join("cluster.toml");
    fs::write(&cluster, text).unwrap();
    let a = t.path().join("a");
    let b = t.path().join("b");
    ok(&nodeimg(&["build", s(&cluster), "--out", s(&a)]));
    ok(&nodeimg(&["build", s(&cluster), "--out", s(&b)]));
    sha256sum_c(&a);
    assert_eq!(snapshot(&a), snapshot(&b));
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(a.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["nodes"].as_array().unwrap().len(), 7);
    assert_eq!(m["base"]["manifest"]["os"]["name"], "nixos");
    let nix = a.join("cluster.nix");
    let o = Command::new("nix-instantiate")
        .arg("--parse")
        .arg(&nix)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Runs `nodeimg build --json` and returns its outcome.
fn build_json(cluster: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["build", s(cluster), "--out", s(out), "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&ok(&nodeimg(&args))).unwrap()
}

/// Incremental builds read metadata, not the inputs: an unchanged input is
/// not read again, any edit is seen (one keeping size and mtime too: ctime),
/// `--rehash` reads everything, and a kept raw base that was touched is not
/// used. Every build's artefacts equal a fresh build's.
#[test]
fn incremental_build_trusts_only_unchanged_file_status() {
    let t = tempfile::tempdir().unwrap();
    let cluster = demo(t.path());
    let raw = cluster.with_file_name("rpios-demo.img");
    unzstd(&cluster.with_file_name("rpios-demo.img.zst"), &raw);
    let text = fs::read_to_string(&cluster)
        .unwrap()
        .replace("rpios-demo.img.zst", "rpios-demo.img");
    fs::write(&cluster, text).unwrap();
    let src_size = fs::metadata(&raw).unwrap().len();
    // Inputs hashed less than 3 s after their last change are hashed again
    // next time (racy entries): let the source settle first.
    std::thread::sleep(std::time::Duration::from_millis(3300));
    let a = t.path().join("a");
    let first = build_json(&cluster, &a, &[]);
    assert_eq!(first["base_rebuilt"], true);
    assert!(first["input_bytes_hashed"].as_u64().unwrap() >= src_size);
    let before = snapshot(&a);

    // Nothing changed: the source is not read, nothing rebuilt, same bytes.
    let again = build_json(&cluster, &a, &[]);
    assert_eq!(again["base_rebuilt"], false);
    assert!(again["input_bytes_hashed"].as_u64().unwrap() < src_size);
    assert_eq!(again["stamped"].as_array().unwrap().len(), 0);
    assert_eq!(snapshot(&a), before);
    sha256sum_c(&a);

    // --rehash reads every input again and finds the same.
    let re = build_json(&cluster, &a, &["--rehash"]);
    assert!(re["input_bytes_hashed"].as_u64().unwrap() >= src_size);
    assert_eq!(re["base_rebuilt"], false);
    assert_eq!(snapshot(&a), before);

    // The kept raw base damaged (its root superblock zeroed): its status
    // changed, so it is not used; a node added is stamped over the real base.
    let kept = t.path().join(".a.cache/base.img");
    assert!(kept.is_file(), "no raw base kept beside the output");
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(&kept).unwrap();
        let root = part_offset(s(&kept), 1);
        f.write_all_at(&[0u8; 4096], root).unwrap();
    }
    let mut text = fs::read_to_string(&cluster).unwrap();
    text.push_str("\n[[node]]\nhostname = \"node2\"\n");
    fs::write(&cluster, text).unwrap();
    let more = build_json(&cluster, &a, &[]);
    assert_eq!(more["base_rebuilt"], false);
    assert_eq!(more["stamped"], serde_json::json!(["node2"]));
    let fresh = t.path().join("fresh");
    build_json(&cluster, &fresh, &[]);
    assert_eq!(snapshot(&a), snapshot(&fresh), "differs from a fresh build");
    sha256sum_c(&a);

    // The source edited in place keeping its size, its mtime put back: only
    // the ctime tells, and the base is built again from the new bytes.
    let mtime = fs::metadata(&raw).unwrap().modified().unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(&raw).unwrap();
        f.write_all_at(b"nodeimg", src_size - 4096).unwrap();
        f.set_modified(mtime).unwrap();
    }
    assert_eq!(fs::metadata(&raw).unwrap().len(), src_size);
    assert_eq!(fs::metadata(&raw).unwrap().modified().unwrap(), mtime);
    let edited = build_json(&cluster, &a, &[]);
    assert_eq!(edited["base_rebuilt"], true, "a stale base was reused");
    assert_ne!(
        edited["manifest"]["base"]["key"],
        more["manifest"]["base"]["key"]
    );
    sha256sum_c(&a);
}

/// `build` reads the base it made and refuses the demo's kubeadm cluster
/// over an image without kubeadm, naming the recipes; nothing reaches the
/// output directory.
#[test]
fn build_refuses_a_base_without_the_flavours_tools() {
    let t = tempfile::tempdir().unwrap();
    let cluster = demo(t.path());
    let dist = t.path().join("dist");
    let o = Command::new(env!("CARGO_BIN_EXE_nodeimg"))
        .args(["build", s(&cluster), "--out", s(&dist)])
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("has no kubeadm"), "{err}");
    assert!(
        err.contains(r#"build the base with [base] provision = ["kubeadm", "helm"]"#),
        "{err}"
    );
    assert!(!dist.exists());
    let left: Vec<_> = fs::read_dir(t.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // The hash cache and raw base kept for the next build may stay.
        .filter(|n| n.contains("dist") && n != ".dist.cache")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
