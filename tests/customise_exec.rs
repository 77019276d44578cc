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
        (
            vec![Op::Remove {
                path: "/boot".into(),
            }],
            "holds the mount point /boot/firmware",
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

/// A GPT disk made by sfdisk, mkfs.vfat and mke2fs -d whose fstab names
/// its partitions by PARTUUID (GPT GUID), UUID (FAT volume id) and LABEL.
fn gpt_disk(dir: &std::path::Path) -> std::path::PathBuf {
    let script = r#"
set -euo pipefail
cd "$1"
mkdir -p root/etc/network data
printf 'ID=debian\nVERSION_CODENAME=trixie\nPRETTY_NAME="Debian GNU/Linux 13 (trixie)"\n' > root/etc/os-release
printf 'auto eth0\n' > root/etc/network/interfaces
printf '%s\n' \
  'PARTUUID=6d2b58b8-35c6-4b40-8a8a-0123456789ab / ext4 defaults 0 1' \
  'UUID=1234-abcd /boot/efi vfat umask=0077 0 1' \
  'LABEL=data /srv/data ext4 defaults,noauto 0 2' > root/etc/fstab
echo hello > data/hello.txt
truncate -s 40M disk.img
printf '%s\n' 'label: gpt' \
  'start=2048, size=16384, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B' \
  'start=18432, size=32768, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=6D2B58B8-35C6-4B40-8A8A-0123456789AB' \
  'start=51200, size=16384, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4' | sfdisk -q disk.img
truncate -s 8M efi.fat
mkfs.vfat -n EFI -i 1234ABCD efi.fat >/dev/null
echo efi > efi.txt
MTOOLS_SKIP_CHECK=1 mcopy -i efi.fat efi.txt ::/efi.txt
truncate -s 16M root.ext4
truncate -s 8M data.ext4
mke2fs -q -F -t ext4 -L rootfs -d root root.ext4
mke2fs -q -F -t ext4 -L data -d data data.ext4
dd if=efi.fat of=disk.img bs=512 seek=2048 conv=notrunc status=none
dd if=root.ext4 of=disk.img bs=512 seek=18432 conv=notrunc status=none
dd if=data.ext4 of=disk.img bs=512 seek=51200 conv=notrunc status=none
truncate -s 8M blank.img
echo 'label: gpt' | sfdisk -q blank.img
"#;
    run(std::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg("gpt")
        .arg(dir));
    dir.join("disk.img")
}

#[test]
fn gpt_fstab_by_partuuid_uuid_and_label() {
    use imagegen::block::{BlockDevice, FileDevice};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let disk = gpt_disk(dir.path());
    let mut img = open_rw(&disk);
    assert_eq!(img.mount_of("/etc/fstab"), Some(2));
    assert_eq!(img.mount_of("/boot/efi/efi.txt"), Some(1));
    assert_eq!(img.mount_of("/srv/data/hello.txt"), Some(3));
    assert_eq!(
        img.read("/srv/data/hello.txt").unwrap().unwrap(),
        b"hello\n"
    );
    assert_eq!(img.read("/boot/efi/efi.txt").unwrap().unwrap(), b"efi\n");
    assert!(matches!(
        img.profile(),
        OsProfile::Debian {
            raspberry_pi: false,
            first_boot: false,
            cloud_init: false,
            network: Network::Ifupdown,
            ..
        }
    ));
    let points: Vec<String> = img.mounts().into_iter().map(|m| m.point).collect();
    assert_eq!(points, vec!["/boot/efi", "/srv/data", "/"]);
    img.apply(&[
        file("/srv/data/new.txt", "new\n", 0o640, 0, 0),
        file("/boot/efi/new.txt", "new\n", 0o644, 0, 0),
    ])
    .unwrap();
    img.flush().unwrap();
    drop(img);
    assert_eq!(ext_cat(&disk, 3, "/new.txt").unwrap(), "new\n");
    assert_eq!(fat_cat(&disk, 1, "/new.txt").unwrap(), "new\n");
    fsck_all(&disk);

    let blank: Arc<dyn BlockDevice> =
        Arc::new(FileDevice::open(dir.path().join("blank.img")).unwrap());
    let e = pipeline::osimage::OsImage::open(blank, imagegen::fs::OpenOptions::read_only())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no root filesystem found"), "{e}");
}

#[test]
fn damaged_images_are_one_line_errors() {
    use imagegen::block::{BlockDevice, FileDevice};
    use std::os::unix::fs::FileExt;
    use std::sync::Arc;

    let open = |p: &std::path::Path| {
        let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open_rw(p).unwrap());
        pipeline::osimage::OsImage::open(dev, imagegen::fs::OpenOptions::writable(NOW))
    };
    let dir = tempfile::tempdir().unwrap();
    // Truncated in the middle of the root partition.
    let cut = os_support::copy_to(&os_support::rpios(), dir.path(), "cut.img");
    let f = std::fs::OpenOptions::new().write(true).open(&cut).unwrap();
    f.set_len(100 << 20).unwrap();
    drop(f);
    let e = open(&cut).unwrap_err().to_string();
    assert!(e.contains("partition 2") && !e.contains('\n'), "{e}");
    // The boot partition's FAT boot sector wiped: fstab mounts it, so the
    // image is refused, naming the partition.
    let wiped = os_support::copy_to(&os_support::rpios(), dir.path(), "wiped.img");
    let (start, _) = partition(&wiped, 1);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&wiped)
        .unwrap();
    f.write_all_at(&[0u8; 512], start).unwrap();
    drop(f);
    let e = open(&wiped).unwrap_err().to_string();
    assert!(
        e.contains("mounted at /boot/firmware") && !e.contains('\n'),
        "{e}"
    );
    // /etc/systemd/system replaced by a file: enabling is refused, nothing
    // written.
    let odd = os_support::copy_to(&os_support::rpios(), dir.path(), "odd.img");
    let mut img = open_rw(&odd);
    img.apply(&[
        Op::Remove {
            path: "/etc/systemd/system".into(),
        },
        file("/etc/systemd/system", "not a directory\n", 0o644, 0, 0),
    ])
    .unwrap();
    img.flush().unwrap();
    drop(img);
    let before = std::fs::read(&odd).unwrap();
    let mut img = open_rw(&odd);
    let e = img
        .apply(&[Op::Enable {
            unit: "ssh.service".into(),
        }])
        .unwrap_err()
        .to_string();
    img.flush().unwrap();
    drop(img);
    assert!(e.contains("not a directory"), "{e}");
    assert!(std::fs::read(&odd).unwrap() == before);
    fsck_all(&odd);
}

#[test]
fn the_same_ops_at_the_same_time_give_the_same_bytes() {
    // imagegen's FAT takes creation times from SOURCE_DATE_EPOCH or the
    // clock, not from the open options (without it this test fails).
    std::env::set_var("SOURCE_DATE_EPOCH", NOW.secs.to_string());
    let dir = tempfile::tempdir().unwrap();
    let ops = vec![
        file("/etc/hostname", "node2\n", 0o644, 0, 0),
        file("/var/lib/nodeimg/role", "worker\n", 0o644, 0, 0),
        Op::Enable {
            unit: "ssh.service".into(),
        },
        Op::Disable {
            unit: "apt-daily.timer".into(),
        },
        Op::Cmdline {
            append: vec!["systemd.hostname=node2".into()],
            remove: vec![],
        },
        file("/boot/firmware/ssh", "", 0o644, 0, 0),
    ];
    let mut copies = Vec::new();
    for name in ["a.img", "b.img"] {
        let p = os_support::copy_to(&os_support::rpios(), dir.path(), name);
        let mut img = open_rw(&p);
        img.apply(&ops).unwrap();
        img.flush().unwrap();
        copies.push(p);
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert!(same_bytes(&copies[0], &copies[1]));
}
