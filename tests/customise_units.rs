//! Units enabled, disabled and masked by the executor give exactly the
//! symlinks `systemctl --root=DIR` makes on the same tree: the fixture's
//! root tree copied to a temporary directory is the reference, the image
//! (read back with debugfs) is ours; both sets of `path → target` must be
//! equal.

mod customise_support;
mod os_support;

use customise_support::*;
use pipeline::customise::Op;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const LOCAL_UNIT: &str = "[Unit]
Description=A unit that lives in /etc

[Service]
Type=oneshot
ExecStart=/usr/bin/env true

[Install]
WantedBy=multi-user.target
RequiredBy=network-online.target
Alias=local-alias.service
";

/// A fresh image copy and tree copy, with the /etc unit in both.
struct Pair {
    _dir: tempfile::TempDir,
    img: PathBuf,
    tree: PathBuf,
}

fn pair() -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let img = os_support::copy_to(&os_support::rpios(), dir.path(), "disk.img");
    let tree = dir.path().join("tree");
    run(Command::new("cp")
        .arg("-a")
        .arg(os_support::rpios_tree())
        .arg(&tree));
    std::fs::write(tree.join("etc/systemd/system/local.service"), LOCAL_UNIT).unwrap();
    Pair {
        _dir: dir,
        img,
        tree,
    }
}

fn local_unit_op() -> Op {
    Op::File {
        path: "/etc/systemd/system/local.service".into(),
        data: LOCAL_UNIT.as_bytes().to_vec(),
        mode: 0o644,
        uid: 0,
        gid: 0,
        secret: false,
    }
}

fn systemctl(tree: &Path, verb: &str, units: &[&str]) {
    run(Command::new("systemctl")
        .arg(format!("--root={}", tree.display()))
        .arg(verb)
        .args(units));
}

/// Every symlink under the tree's /etc/systemd/system: path → target.
fn tree_links(tree: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let ft = e.file_type().unwrap();
            let rel = format!("/{}", p.strip_prefix(root).unwrap().display());
            if ft.is_symlink() {
                out.insert(rel, std::fs::read_link(&p).unwrap().display().to_string());
            } else if ft.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(tree, &tree.join("etc/systemd/system"), &mut out);
    out
}

fn image_links(img: &Path) -> BTreeMap<String, String> {
    let mut v = Vec::new();
    ext_links(img, 2, "/etc/systemd/system", &mut v);
    v.into_iter().collect()
}

fn apply(img: &Path, ops: &[Op]) {
    let mut image = open_rw(img);
    image.apply(ops).unwrap();
    image.flush().unwrap();
}

fn units(names: &[&str], f: fn(String) -> Op) -> Vec<Op> {
    names.iter().map(|n| f(n.to_string())).collect()
}

const ENABLE: &[&str] = &[
    "ssh.service",
    "NetworkManager.service",
    "getty@.service",
    "serial-getty@ttyAMA0.service",
    "apt-daily.timer",
    "local.service",
];

#[test]
fn enable_matches_systemctl() {
    let p = pair();
    // The image and the tree start out alike.
    assert_eq!(image_links(&p.img), tree_links(&p.tree));
    let mut ops = vec![local_unit_op()];
    ops.extend(units(ENABLE, |unit| Op::Enable { unit }));
    apply(&p.img, &ops);
    systemctl(&p.tree, "enable", ENABLE);
    let (ours, theirs) = (image_links(&p.img), tree_links(&p.tree));
    assert_eq!(ours, theirs);
    // What the comparison covers, spelled out.
    assert_eq!(
        ours["/etc/systemd/system/sshd.service"],
        "/lib/systemd/system/ssh.service"
    );
    assert_eq!(
        ours["/etc/systemd/system/getty.target.wants/serial-getty@ttyAMA0.service"],
        "/lib/systemd/system/serial-getty@.service"
    );
    assert_eq!(
        ours["/etc/systemd/system/network-online.target.requires/local.service"],
        "/etc/systemd/system/local.service"
    );
    assert_eq!(
        ours["/etc/systemd/system/local-alias.service"],
        "/etc/systemd/system/local.service"
    );
    fsck_all(&p.img);
}

const DISABLE: &[&str] = &[
    "NetworkManager.service",
    "getty@.service",
    "apt-daily.timer",
    "systemd-timesyncd.service",
    "local.service",
];

#[test]
fn disable_on_a_first_boot_image_also_masks_like_systemctl_disable_then_mask() {
    let p = pair();
    let mut ops = vec![
        local_unit_op(),
        Op::Enable {
            unit: "local.service".into(),
        },
    ];
    apply(&p.img, &ops);
    systemctl(&p.tree, "enable", &["local.service"]);
    // The /etc unit cannot be masked (its file is where the mask goes), so
    // it is disabled on an image that is not a first boot, below.
    let first_boot: Vec<&str> = DISABLE
        .iter()
        .copied()
        .filter(|u| *u != "local.service")
        .collect();
    ops = units(&first_boot, |unit| Op::Disable { unit });
    apply(&p.img, &ops);
    systemctl(&p.tree, "disable", &first_boot);
    systemctl(&p.tree, "mask", &first_boot);
    assert_eq!(image_links(&p.img), tree_links(&p.tree));
    fsck_all(&p.img);
}

#[test]
fn disable_matches_systemctl_when_not_first_boot() {
    let p = pair();
    let machine_id = Op::File {
        path: "/etc/machine-id".into(),
        data: Vec::new(),
        mode: 0o444,
        uid: 0,
        gid: 0,
        secret: false,
    };
    apply(
        &p.img,
        &[
            machine_id,
            local_unit_op(),
            Op::Enable {
                unit: "local.service".into(),
            },
        ],
    );
    std::fs::write(p.tree.join("etc/machine-id"), "").unwrap();
    systemctl(&p.tree, "enable", &["local.service"]);
    assert!(!open_ro(&p.img).profile().first_boot());
    apply(&p.img, &units(DISABLE, |unit| Op::Disable { unit }));
    systemctl(&p.tree, "disable", DISABLE);
    let ours = image_links(&p.img);
    assert_eq!(ours, tree_links(&p.tree));
    assert!(!ours
        .keys()
        .any(|k| k.contains("NetworkManager") || k.ends_with("/local.service")));
    fsck_all(&p.img);
}

#[test]
fn mask_matches_systemctl() {
    let p = pair();
    let names = [
        "dphys-swapfile.service",
        "apt-daily.timer",
        "not-installed.service",
    ];
    apply(&p.img, &units(&names, |unit| Op::Mask { unit }));
    systemctl(&p.tree, "mask", &names);
    let ours = image_links(&p.img);
    assert_eq!(ours, tree_links(&p.tree));
    assert_eq!(
        ours["/etc/systemd/system/dphys-swapfile.service"],
        "/dev/null"
    );
    fsck_all(&p.img);
}

#[test]
fn a_unit_that_does_not_exist_is_one_line_and_no_byte_changes() {
    let p = pair();
    let orig = os_support::rpios();
    let mut image = open_rw(&p.img);
    let err = image
        .apply(&[
            Op::Enable {
                unit: "ssh.service".into(),
            },
            Op::Enable {
                unit: "kubelet.service".into(),
            },
        ])
        .unwrap_err()
        .to_string();
    image.flush().unwrap();
    drop(image);
    assert!(
        err.starts_with("unit kubelet.service: does not exist"),
        "{err}"
    );
    assert!(!err.contains('\n'));
    assert!(same_bytes(&orig, &p.img));
    // systemctl agrees that it is an error.
    let status = Command::new("systemctl")
        .arg(format!("--root={}", p.tree.display()))
        .args(["enable", "kubelet.service"])
        .output()
        .unwrap()
        .status;
    assert!(!status.success());
}

#[test]
fn enabling_again_and_alias_names_match_systemctl() {
    let p = pair();
    apply(&p.img, &units(&["ssh.service"], |unit| Op::Enable { unit }));
    systemctl(&p.tree, "enable", &["ssh.service"]);
    // Again: links already in place (NetworkManager's, to /usr/lib/…)
    // are kept as they are.
    let again = ["ssh.service", "NetworkManager.service"];
    apply(&p.img, &units(&again, |unit| Op::Enable { unit }));
    systemctl(&p.tree, "enable", &again);
    assert_eq!(image_links(&p.img), tree_links(&p.tree));
    // An alias link in /etc is refused by both, with nothing changed.
    let before = std::fs::read(&p.img).unwrap();
    let mut image = open_rw(&p.img);
    let err = image
        .apply(&[Op::Enable {
            unit: "sshd.service".into(),
        }])
        .unwrap_err()
        .to_string();
    image.flush().unwrap();
    drop(image);
    assert!(
        err.contains("refusing to operate on linked unit file"),
        "{err}"
    );
    assert!(std::fs::read(&p.img).unwrap() == before);
    let status = Command::new("systemctl")
        .arg(format!("--root={}", p.tree.display()))
        .args(["enable", "sshd.service"])
        .output()
        .unwrap()
        .status;
    assert!(!status.success());
    // Disabling by the alias name on this first-boot image: both names end
    // up masked.
    apply(
        &p.img,
        &units(&["sshd.service"], |unit| Op::Disable { unit }),
    );
    systemctl(&p.tree, "disable", &["sshd.service"]);
    systemctl(&p.tree, "mask", &["sshd.service", "ssh.service"]);
    let ours = image_links(&p.img);
    assert_eq!(ours, tree_links(&p.tree));
    assert_eq!(ours["/etc/systemd/system/ssh.service"], "/dev/null");
    fsck_all(&p.img);
}
