//! `[base]` customisations as ops, executed on the RPi-OS-like fixture and
//! read back with debugfs and mtype; refused on NixOS where NixOS's own
//! configuration is the place.

mod customise_support;
mod os_support;

use customise_support::*;
use pipeline::base::spec::BaseSpec;
use pipeline::customise::{base_ops, LineEdit, Op};
use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

fn write(root: &Path, rel: &str, data: &str, mode: u32) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, data).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn overlay(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let ov = dir.join("overlay");
    write(&ov, "etc/motd", "welcome\n", 0o644);
    write(&ov, "usr/local/bin/hello", "#!/bin/sh\necho hi\n", 0o755);
    write(&ov, "home/pi/.config/app.conf", "x=1\n", 0o600);
    write(&ov, "boot/firmware/extra.txt", "boot file\n", 0o644);
    std::fs::create_dir_all(ov.join("root/.ssh")).unwrap();
    std::fs::set_permissions(ov.join("root"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(ov.join("root/.ssh"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::create_dir_all(ov.join("etc/nodeimg")).unwrap();
    symlink("../motd", ov.join("etc/nodeimg/motd-link")).unwrap();
    let map = dir.join("owners");
    std::fs::write(&map, "# pi owns its home\n/home/pi 1000:1000\n").unwrap();
    (ov, map)
}

#[test]
fn base_customisations_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = os_support::copy_to(&os_support::rpios(), dir.path(), "disk.img");
    let (ov, map) = overlay(dir.path());
    let spec = BaseSpec {
        overlay: Some(ov),
        owner_map: Some(map),
        enable: vec!["NetworkManager.service".into()],
        disable: vec!["apt-daily-upgrade.timer".into()],
        mask: vec!["apt-daily.timer".into()],
        cmdline_append: vec!["cgroup_enable=memory".into(), "cgroup_memory=1".into()],
        cmdline_remove: vec!["cfg80211.ieee80211_regdom".into()],
        config_txt: vec!["dtparam=pciex1_gen=3".into(), "arm_boost=1".into()],
        sysctl: BTreeMap::from([
            ("net.ipv4.ip_forward".into(), "1".into()),
            ("net.bridge.bridge-nf-call-iptables".into(), "1".into()),
        ]),
        modules_load: vec!["overlay".into(), "br_netfilter".into()],
        disable_swap: true,
        ssh: true,
        timezone: Some("Europe/Berlin".into()),
        locale: Some("en_US.UTF-8".into()),
        ..BaseSpec::default()
    };
    let mut img = open_rw(&path);
    // A swap line for disable_swap to remove.
    img.apply(&[Op::Edit {
        path: "/etc/fstab".into(),
        edit: LineEdit::Ensure {
            line: "/var/swap none swap sw 0 0".into(),
        },
    }])
    .unwrap();
    let ops = base_ops(&spec, &img).unwrap();
    let applied = img.apply(&ops).unwrap();
    img.flush().unwrap();
    drop(img);
    assert!(applied
        .iter()
        .any(|a| a.action == "mask" && a.path == "dphys-swapfile.service"));

    // Overlay: content, modes, owners, links; existing /root keeps 0700.
    assert_eq!(ext_cat(&path, 2, "/etc/motd").unwrap(), "welcome\n");
    assert_eq!(
        ext_stat(&path, 2, "/usr/local/bin/hello").unwrap(),
        (0o755, 0, 0, "regular".into())
    );
    assert_eq!(
        ext_stat(&path, 2, "/home/pi/.config/app.conf").unwrap(),
        (0o600, 1000, 1000, "regular".into())
    );
    assert_eq!(ext_stat(&path, 2, "/home/pi/.config").unwrap().1, 1000);
    assert_eq!(ext_stat(&path, 2, "/root").unwrap().0, 0o700);
    assert_eq!(
        ext_stat(&path, 2, "/root/.ssh").unwrap(),
        (0o700, 0, 0, "directory".into())
    );
    assert_eq!(
        ext_link(&path, 2, "/etc/nodeimg/motd-link").unwrap(),
        "../motd"
    );
    assert_eq!(fat_cat(&path, 1, "/extra.txt").unwrap(), "boot file\n");
    // Units.
    let mut links = Vec::new();
    ext_links(&path, 2, "/etc/systemd/system", &mut links);
    let links: BTreeMap<String, String> = links.into_iter().collect();
    let l = |k: &str| links.get(&format!("/etc/systemd/system/{k}")).cloned();
    assert_eq!(l("apt-daily.timer").as_deref(), Some("/dev/null"));
    assert_eq!(
        l("apt-daily-upgrade.timer").as_deref(),
        Some("/dev/null"),
        "first boot: disable masks"
    );
    assert_eq!(l("timers.target.wants/apt-daily-upgrade.timer"), None);
    assert_eq!(l("dphys-swapfile.service").as_deref(), Some("/dev/null"));
    assert_eq!(
        l("multi-user.target.wants/ssh.service").as_deref(),
        Some("/lib/systemd/system/ssh.service")
    );
    assert_eq!(
        ext_cat(&path, 2, "/etc/systemd/system-preset/20-nodeimg-base.preset").unwrap(),
        "# Written by nodeimg base: the units [base] enables and disables.\nenable NetworkManager.service\ndisable apt-daily-upgrade.timer\nenable ssh.service\n"
    );
    // Boot partition.
    let cmdline = fat_cat(&path, 1, "/cmdline.txt").unwrap();
    assert!(
        cmdline.ends_with("rootwait resize cgroup_enable=memory cgroup_memory=1\n"),
        "{cmdline}"
    );
    assert!(!cmdline.contains("regdom"));
    let config = fat_cat(&path, 1, "/config.txt").unwrap();
    assert!(
        config.ends_with("[all]\ndtparam=pciex1_gen=3\n"),
        "{config}"
    );
    assert_eq!(config.matches("arm_boost=1").count(), 1);
    assert_eq!(fat_cat(&path, 1, "/ssh").unwrap(), "");
    // /etc files.
    assert_eq!(
        ext_cat(&path, 2, "/etc/sysctl.d/90-nodeimg.conf").unwrap(),
        "# Written by nodeimg base ([base] sysctl).\nnet.bridge.bridge-nf-call-iptables = 1\nnet.ipv4.ip_forward = 1\n"
    );
    assert_eq!(
        ext_cat(&path, 2, "/etc/modules-load.d/nodeimg.conf").unwrap(),
        "# Written by nodeimg base ([base] modules_load).\noverlay\nbr_netfilter\n"
    );
    let fstab = ext_cat(&path, 2, "/etc/fstab").unwrap();
    assert!(
        !fstab.contains("swap") && fstab.contains("/boot/firmware"),
        "{fstab}"
    );
    assert_eq!(
        ext_cat(&path, 2, "/etc/timezone").unwrap(),
        "Europe/Berlin\n"
    );
    assert_eq!(
        ext_link(&path, 2, "/etc/localtime").unwrap(),
        "/usr/share/zoneinfo/Europe/Berlin"
    );
    assert_eq!(
        ext_cat(&path, 2, "/etc/default/locale").unwrap(),
        "LANG=en_US.UTF-8\n"
    );
    assert!(ext_cat(&path, 2, "/etc/locale.gen")
        .unwrap()
        .contains("en_US.UTF-8 UTF-8\n"));
    for t in ["ed25519", "ecdsa", "rsa"] {
        assert!(ext_stat(&path, 2, &format!("/etc/ssh/ssh_host_{t}_key")).is_none());
    }
    fsck_all(&path);
}

#[test]
fn host_keys_always_go_and_bad_settings_are_refused() {
    let img = open_ro(&os_support::rpios());
    let ops = base_ops(&BaseSpec::default(), &img).unwrap();
    assert_eq!(
        ops,
        vec![Op::RemoveGlob {
            dir: "/etc/ssh".into(),
            pattern: "ssh_host_*".into()
        }]
    );
    let bad = |spec: BaseSpec, why: &str| {
        let e = base_ops(&spec, &img).unwrap_err().to_string();
        assert!(e.contains(why), "{e} (expected {why})");
    };
    bad(
        BaseSpec {
            timezone: Some("Mars/Olympus".into()),
            ..BaseSpec::default()
        },
        "no /usr/share/zoneinfo/Mars/Olympus",
    );
    bad(
        BaseSpec {
            timezone: Some("../etc".into()),
            ..BaseSpec::default()
        },
        "not a zone name",
    );
    bad(
        BaseSpec {
            modules_load: vec!["bad name".into()],
            ..BaseSpec::default()
        },
        "not a kernel module name",
    );
    let nixos = open_ro(&os_support::nixos());
    let e = base_ops(
        &BaseSpec {
            sysctl: BTreeMap::from([("a.b".into(), "1".into())]),
            ..BaseSpec::default()
        },
        &nixos,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("boot.kernel.sysctl"), "{e}");
    // What NixOS allows: the command line and config.txt on FIRMWARE.
    let ops = base_ops(
        &BaseSpec {
            cmdline_append: vec!["cgroup_memory=1".into()],
            config_txt: vec!["enable_uart=1".into()],
            ..BaseSpec::default()
        },
        &nixos,
    )
    .unwrap();
    assert_eq!(ops.len(), 3);
}
