//! The customisation executor on the upstream-like fixtures, judged by
//! independent tools: debugfs and mtype read back content, mode, owner and
//! symlink targets; e2fsck and fsck.vfat find the filesystems clean; cmp
//! proves refused lists change nothing.

mod customise_support;
mod os_support;

use customise_support::*;
use pipeline::customise::{LineEdit, Op};
use pipeline::os::{Network, OsProfile};

fn file(path: &str, data: &str, mode: u32, uid: u32, gid: u32) -> Op {
    Op::File {
        path: path.into(),
        data: data.as_bytes().to_vec(),
        mode,
        uid,
        gid,
        secret: false,
    }
}

#[test]
fn rpios_is_opened_by_its_own_mount_points() {
    let img = open_ro(&os_support::rpios());
    assert_eq!(
        img.profile(),
        &OsProfile::Debian {
            id: "debian".into(),
            codename: Some("trixie".into()),
            pretty: "Debian GNU/Linux 13 (trixie)".into(),
            raspberry_pi: true,
            first_boot: true,
            cloud_init: true,
            network: Network::NetworkManager,
        }
    );
    assert_eq!(img.mount_of("/etc/hostname"), Some(2));
    assert_eq!(img.mount_of("/boot/firmware/cmdline.txt"), Some(1));
    assert_eq!(img.mount_of("/boot"), Some(2));
    let cmdline = img.read("/boot/firmware/cmdline.txt").unwrap().unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains("root=PARTUUID=8a438930-02"));
    // Through the /lib -> usr/lib link.
    assert!(img
        .read("/lib/systemd/system/ssh.service")
        .unwrap()
        .is_some());
    assert!(img.read("/etc/nonexistent").unwrap().is_none());
    let pi = img.user("pi").unwrap().unwrap();
    assert_eq!((pi.uid, pi.gid, pi.home.as_str()), (1000, 1000, "/home/pi"));
    assert!(img.user("nobody-here").unwrap().is_none());
    let json = serde_json::to_string(img.profile()).unwrap();
    assert!(json.contains("\"name\":\"debian\""), "{json}");
}

#[test]
fn every_op_reads_back_with_debugfs_and_mtype() {
    let dir = tempfile::tempdir().unwrap();
    let path = os_support::copy_to(&os_support::rpios(), dir.path(), "disk.img");
    let mut img = open_rw(&path);
    let ops = vec![
        file("/etc/hostname", "node1\n", 0o644, 0, 0),
        Op::Dir {
            path: "/home/pi/.ssh".into(),
            mode: 0o700,
            uid: 1000,
            gid: 1000,
        },
        file(
            "/home/pi/.ssh/authorized_keys",
            "ssh-ed25519 AAAA x\n",
            0o600,
            1000,
            1000,
        ),
        Op::File {
            path: "/root/keys.txt".into(),
            data: b"AGE-SECRET-KEY-1X\n".to_vec(),
            mode: 0o600,
            uid: 0,
            gid: 0,
            secret: true,
        },
        // Missing parents are created root 0755.
        file("/var/lib/nodeimg/deep/role", "worker\n", 0o644, 0, 0),
        Op::Symlink {
            path: "/etc/localtime".into(),
            target: "/usr/share/zoneinfo/Europe/Berlin".into(),
        },
        Op::Edit {
            path: "/etc/hosts".into(),
            edit: LineEdit::Set {
                prefix: "127.0.1.1".into(),
                line: "127.0.1.1\tnode1".into(),
            },
        },
        Op::Edit {
            path: "/etc/fstab".into(),
            edit: LineEdit::RemoveMatching {
                regex: "^proc".into(),
            },
        },
        Op::RemoveGlob {
            dir: "/etc/ssh".into(),
            pattern: "ssh_host_*".into(),
        },
        Op::Remove {
            path: "/etc/dphys-swapfile".into(),
        },
        Op::Cmdline {
            append: vec!["cgroup_enable=memory".into(), "cgroup_memory=1".into()],
            remove: vec!["resize".into()],
        },
        file("/boot/firmware/ssh", "", 0o644, 0, 0),
        file("/boot/firmware/overlays/extra.txt", "x\n", 0o644, 0, 0),
    ];
    let applied = img.apply(&ops).unwrap();
    img.flush().unwrap();
    drop(img);
    assert!(applied
        .iter()
        .any(|a| a.action == "remove" && a.path == "/etc/ssh/ssh_host_rsa_key.pub"));
    assert!(applied
        .iter()
        .any(|a| a.secret && a.path == "/root/keys.txt"));

    assert_eq!(ext_cat(&path, 2, "/etc/hostname").unwrap(), "node1\n");
    assert_eq!(ext_stat(&path, 2, "/etc/hostname").unwrap().0, 0o644);
    assert_eq!(
        ext_stat(&path, 2, "/home/pi/.ssh").unwrap(),
        (0o700, 1000, 1000, "directory".into())
    );
    assert_eq!(
        ext_stat(&path, 2, "/home/pi/.ssh/authorized_keys").unwrap(),
        (0o600, 1000, 1000, "regular".into())
    );
    assert_eq!(ext_stat(&path, 2, "/root/keys.txt").unwrap().0, 0o600);
    assert_eq!(
        ext_cat(&path, 2, "/var/lib/nodeimg/deep/role").unwrap(),
        "worker\n"
    );
    assert_eq!(
        ext_stat(&path, 2, "/var/lib/nodeimg/deep").unwrap(),
        (0o755, 0, 0, "directory".into())
    );
    assert_eq!(
        ext_link(&path, 2, "/etc/localtime").unwrap(),
        "/usr/share/zoneinfo/Europe/Berlin"
    );
    let hosts = ext_cat(&path, 2, "/etc/hosts").unwrap();
    assert!(
        hosts.contains("127.0.1.1\tnode1\n") && !hosts.contains("raspberrypi"),
        "{hosts}"
    );
    let fstab = ext_cat(&path, 2, "/etc/fstab").unwrap();
    assert!(
        !fstab.contains("proc") && fstab.contains("/boot/firmware"),
        "{fstab}"
    );
    // The shadow file keeps its mode and group after an edit elsewhere.
    assert_eq!(
        ext_stat(&path, 2, "/etc/shadow").unwrap(),
        (0o640, 0, 42, "regular".into())
    );
    for t in ["ed25519", "ecdsa", "rsa"] {
        assert!(ext_stat(&path, 2, &format!("/etc/ssh/ssh_host_{t}_key")).is_none());
        assert!(ext_stat(&path, 2, &format!("/etc/ssh/ssh_host_{t}_key.pub")).is_none());
    }
    assert!(ext_stat(&path, 2, "/etc/ssh/sshd_config").is_some());
    assert!(ext_stat(&path, 2, "/etc/dphys-swapfile").is_none());
    let cmdline = fat_cat(&path, 1, "/cmdline.txt").unwrap();
    assert_eq!(
        cmdline,
        "console=serial0,115200 console=tty1 root=PARTUUID=8a438930-02 rootfstype=ext4 fsck.repair=yes rootwait cfg80211.ieee80211_regdom=GB cgroup_enable=memory cgroup_memory=1\n"
    );
    assert_eq!(cmdline.lines().count(), 1);
    assert_eq!(fat_cat(&path, 1, "/ssh").unwrap(), "");
    assert_eq!(fat_cat(&path, 1, "/overlays/extra.txt").unwrap(), "x\n");
    fsck_all(&path);
}

#[test]
fn a_refused_list_changes_no_byte() {
    let dir = tempfile::tempdir().unwrap();
    let orig = os_support::rpios();
    let path = os_support::copy_to(&orig, dir.path(), "disk.img");
    let refusals: Vec<(Vec<Op>, &str)> = vec![
        (
            vec![
                file("/etc/hostname", "node1\n", 0o644, 0, 0),
                Op::Enable {
                    unit: "nope.service".into(),
                },
            ],
            "unit nope.service: does not exist",
        ),
        (
            vec![
                file("/etc/hostname", "x\n", 0o644, 0, 0),
                file("/etc/hostname/inner", "x\n", 0o644, 0, 0),
            ],
            "not a directory",
        ),
        (
            vec![Op::Symlink {
                path: "/boot/firmware/link".into(),
                target: "x".into(),
            }],
            "FAT",
        ),
        (
            vec![Op::File {
                path: "/root/keys.txt".into(),
                data: b"k".to_vec(),
                mode: 0o644,
                uid: 0,
                gid: 0,
                secret: true,
            }],
            "secret",
        ),
        (
            vec![Op::Edit {
                path: "/etc/absent".into(),
                edit: LineEdit::Ensure { line: "x".into() },
            }],
            "no such file",
        ),
        (
            vec![
                Op::Mask {
                    unit: "apt-daily.timer".into(),
                },
                Op::Enable {
                    unit: "apt-daily.timer".into(),
                },
            ],
            "masked",
        ),
        (
            vec![Op::Enable {
                unit: "serial-getty@.service".into(),
            }],
            "non-template",
        ),
    ];
    for (ops, why) in refusals {
        let mut img = open_rw(&path);
        let err = img.apply(&ops).unwrap_err().to_string();
        img.flush().unwrap();
        drop(img);
        assert!(err.contains(why), "{err} (expected {why})");
        assert!(!err.contains('\n'), "{err}");
        assert!(
            same_bytes(&orig, &path),
            "refused {ops:?} changed the image"
        );
    }
}

#[test]
fn nixos_profile_and_extlinux_append() {
    let dir = tempfile::tempdir().unwrap();
    let path = os_support::copy_to(&os_support::nixos(), dir.path(), "disk.img");
    let mut img = open_rw(&path);
    assert_eq!(
        img.profile(),
        &OsProfile::NixOs {
            version: Some("25.05.20250601.abcdef0".into())
        }
    );
    assert_eq!(img.mount_of("/boot/firmware/config.txt"), Some(1));
    assert_eq!(img.mount_of("/boot/extlinux/extlinux.conf"), Some(2));
    let ops = vec![
        Op::Cmdline {
            append: vec!["systemd.hostname=node3".into()],
            remove: vec!["loglevel".into()],
        },
        file("/etc/hostname", "node3\n", 0o644, 0, 0),
        file("/var/lib/nodeimg/role", "agent\n", 0o644, 0, 0),
    ];
    let applied = img.apply(&ops).unwrap();
    assert_eq!(applied[0].path, "/boot/extlinux/extlinux.conf");
    img.flush().unwrap();
    drop(img);
    let conf = ext_cat(&path, 2, "/boot/extlinux/extlinux.conf").unwrap();
    let append: Vec<&str> = conf
        .lines()
        .filter(|l| l.trim_start().starts_with("APPEND"))
        .collect();
    assert_eq!(append.len(), 1);
    assert!(
        append[0].ends_with("console=tty0 systemd.hostname=node3"),
        "{conf}"
    );
    assert!(!append[0].contains("loglevel"), "{conf}");
    assert!(conf.contains("FDTDIR ../nixos/"), "{conf}");
    assert_eq!(ext_cat(&path, 2, "/etc/hostname").unwrap(), "node3\n");
    fsck_all(&path);
}

#[test]
fn through_an_overlay_the_base_never_changes() {
    use imagegen::block::{BlockDevice, FileDevice, Overlay};
    use imagegen::fs::OpenOptions;
    use pipeline::osimage::OsImage;
    use std::os::unix::fs::FileExt;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let orig = os_support::rpios();
    let base = os_support::copy_to(&orig, dir.path(), "base.img");
    let overlay = Arc::new(Overlay::new(FileDevice::open(&base).unwrap()).unwrap());
    let dev: Arc<dyn BlockDevice> = overlay.clone();
    let opts = OpenOptions {
        scrub: true,
        ..OpenOptions::writable(NOW)
    };
    let mut img = OsImage::open(dev, opts).unwrap();
    let ops = vec![
        file("/etc/hostname", "node7\n", 0o644, 0, 0),
        Op::Enable {
            unit: "ssh.service".into(),
        },
        Op::Cmdline {
            append: vec!["systemd.hostname=node7".into()],
            remove: vec!["systemd.hostname".into()],
        },
        file("/boot/firmware/ssh", "", 0o644, 0, 0),
    ];
    img.apply(&ops).unwrap();
    img.flush().unwrap();
    // The overlay reads back what was written.
    assert_eq!(img.read("/etc/hostname").unwrap().unwrap(), b"node7\n");
    drop(img);
    assert!(same_bytes(&orig, &base), "the base was written");

    // base + the overlay's changed ranges = the node image, judged by the
    // independent tools.
    let node = os_support::copy_to(&base, dir.path(), "node.img");
    let out = std::fs::OpenOptions::new().write(true).open(&node).unwrap();
    let ranges = overlay.changed_ranges().unwrap();
    assert!(!ranges.is_empty());
    let changed: u64 = ranges.iter().map(|r| r.1).sum();
    assert!(changed < 1 << 20, "{changed} bytes changed");
    for (off, len) in ranges {
        let mut buf = vec![0u8; len as usize];
        overlay.read_at(off, &mut buf).unwrap();
        out.write_all_at(&buf, off).unwrap();
    }
    drop(out);
    assert_eq!(ext_cat(&node, 2, "/etc/hostname").unwrap(), "node7\n");
    assert_eq!(
        ext_link(
            &node,
            2,
            "/etc/systemd/system/multi-user.target.wants/ssh.service"
        )
        .unwrap(),
        "/lib/systemd/system/ssh.service"
    );
    assert!(fat_cat(&node, 1, "/cmdline.txt")
        .unwrap()
        .ends_with("cfg80211.ieee80211_regdom=GB systemd.hostname=node7\n"));
    assert_eq!(fat_cat(&node, 1, "/ssh").unwrap(), "");
    fsck_all(&node);
}
