//! The upstream-like OS fixtures are what they claim to be, by independent
//! oracles only: `sfdisk --json`, `e2fsck -fn`, `fsck.vfat -n`, `debugfs`,
//! `mdir`.

mod os_support;

use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("oracle runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `(start, size)` in sectors of each partition, from `sfdisk --json`.
fn partitions(img: &std::path::Path) -> Vec<(u64, u64, String)> {
    let json = run(Command::new("sfdisk").arg("--json").arg(img));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["start"].as_u64().unwrap(),
                p["size"].as_u64().unwrap(),
                p["type"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn extract(img: &std::path::Path, start: u64, size: u64, out: &std::path::Path) {
    run(Command::new("dd")
        .arg(format!("if={}", img.display()))
        .arg(format!("of={}", out.display()))
        .args(["bs=512", "status=none", "conv=sparse"])
        .arg(format!("skip={start}"))
        .arg(format!("count={size}")));
}

#[test]
fn rpios_fixture_is_laid_out_like_raspberry_pi_os() {
    let img = os_support::rpios();
    let parts = partitions(&img);
    assert_eq!(parts.len(), 2);
    assert_eq!((parts[0].0, parts[0].2.as_str()), (16384, "c"));
    assert_eq!(parts[1].2, "83");
    let dir = tempfile::tempdir().unwrap();
    let (boot, root) = (dir.path().join("boot"), dir.path().join("root"));
    extract(&img, parts[0].0, parts[0].1, &boot);
    extract(&img, parts[1].0, parts[1].1, &root);
    run(Command::new("fsck.vfat").arg("-n").arg(&boot));
    run(Command::new("e2fsck").arg("-fn").arg(&root));
    let cmdline = run(Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(&boot)
        .arg("::/cmdline.txt"));
    assert!(cmdline.contains("root=PARTUUID=8a438930-02"), "{cmdline}");
    let fstab = run(Command::new("debugfs")
        .arg("-R")
        .arg("cat /etc/fstab")
        .arg(&root));
    assert!(
        fstab.contains("PARTUUID=8a438930-01  /boot/firmware"),
        "{fstab}"
    );
    let tree = os_support::rpios_tree();
    assert!(tree.join("boot/firmware/config.txt").is_file());
    assert!(tree.join("usr/lib/systemd/system/ssh.service").is_file());
}

#[test]
fn nixos_fixture_is_laid_out_like_a_nixos_sd_image() {
    let img = os_support::nixos();
    let parts = partitions(&img);
    assert_eq!(parts.len(), 2);
    assert_eq!(
        (parts[0].0, parts[0].1, parts[0].2.as_str()),
        (16384, 61440, "b")
    );
    assert_eq!((parts[1].0, parts[1].2.as_str()), (77824, "83"));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    extract(&img, parts[1].0, parts[1].1, &root);
    run(Command::new("e2fsck").arg("-fn").arg(&root));
    let conf = run(Command::new("debugfs")
        .arg("-R")
        .arg("cat /boot/extlinux/extlinux.conf")
        .arg(&root));
    assert!(conf.contains("FDTDIR ../nixos/"), "{conf}");
    let label = run(Command::new("dumpe2fs").arg("-h").arg(&root));
    assert!(label.contains("NIXOS_SD"), "{label}");
}

#[test]
fn towboot_archive_holds_the_firmware_at_sector_one() {
    let archive = os_support::towboot_archive();
    let dir = tempfile::tempdir().unwrap();
    run(Command::new("tar")
        .arg("-xJf")
        .arg(&archive)
        .arg("-C")
        .arg(dir.path()));
    let top = dir.path().join("odroid-C4-2023.07-007");
    let img = top.join("shared.disk-image.img");
    let parts = partitions(&img);
    // Tow-Boot's own layout (modules/hardware/amlogic/default.nix): 4 MiB
    // from byte 512, i.e. 8192 sectors from sector 1.
    assert_eq!(
        (parts[0].0, parts[0].1, parts[0].2.as_str()),
        (1, 8192, "f8"),
        "0xF8 entry of 8192 sectors from sector 1"
    );
    let raw = std::fs::read(top.join("binaries/Tow-Boot.noenv.bin")).unwrap();
    let disk = std::fs::read(&img).unwrap();
    assert_eq!(&disk[512..512 + raw.len()], &raw[..]);
}
