//! Each safety rule of `nodeimg flash`, shown on loop devices this test made:
//! system disk (injected mount table and swap list, and the real root disk
//! through `--dry-run`), fixed disk, too small, mounted partitions, no
//! terminal without `--yes`, and `--dry-run` writing nothing.

mod flash_support;

use flash_support::*;

fn fails_with(out: &std::process::Output, needle: &str) {
    let err = stderr(out);
    assert!(!out.status.success(), "should have failed: {err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(
        !err.contains("verification ok"),
        "no success message: {err}"
    );
}

#[test]
fn system_disk_is_refused_from_an_injected_mount_table() {
    let dir = tempfile::tempdir().unwrap();
    let img = fixture_image(dir.path());
    let img = img.to_str().unwrap();
    let card = Loop::over_new_file(dir.path(), "card", 48 << 20, 0x11, 1 << 20);
    let mountinfo = dir.path().join("mountinfo");
    std::fs::write(
        &mountinfo,
        format!("1 0 {} / / rw - ext4 {} rw\n", card.devnum(), card.dev),
    )
    .unwrap();
    let no_swaps = dir.path().join("swaps");
    std::fs::write(&no_swaps, "Filename Type Size Used Priority\n").unwrap();
    let env = [
        ("NODEIMG_MOUNTINFO", mountinfo.to_str().unwrap()),
        ("NODEIMG_SWAPS", no_swaps.to_str().unwrap()),
    ];
    for extra in [&["--dry-run"][..], &["--yes"][..]] {
        let mut args = vec!["flash", img, "--device", &card.dev, "--allow-fixed"];
        args.extend_from_slice(extra);
        fails_with(
            &nodeimg_env(&args, &env),
            "it is the system disk: it holds /",
        );
    }
    // Active swap makes a system disk too.
    let empty = dir.path().join("empty-mountinfo");
    std::fs::write(&empty, "").unwrap();
    let swaps = dir.path().join("swaps-on-card");
    std::fs::write(
        &swaps,
        format!(
            "Filename Type Size Used Priority\n{} partition 1024 0 -2\n",
            card.dev
        ),
    )
    .unwrap();
    let env = [
        ("NODEIMG_MOUNTINFO", empty.to_str().unwrap()),
        ("NODEIMG_SWAPS", swaps.to_str().unwrap()),
    ];
    let out = nodeimg_env(
        &[
            "flash",
            img,
            "--device",
            &card.dev,
            "--allow-fixed",
            "--yes",
        ],
        &env,
    );
    fails_with(&out, "active swap");
    assert!(
        card.read(0, 512).iter().all(|&b| b == 0x11),
        "nothing written"
    );
}

#[test]
fn the_real_system_disk_is_refused_in_a_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let img = fixture_image(dir.path());
    let out = nodeimg(&["devices", "--all", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let disks: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).unwrap();
    let system: Vec<&serde_json::Value> = disks
        .iter()
        .filter(|d| {
            d["refusals"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r.as_str().unwrap().contains("system disk: it holds / "))
        })
        .collect();
    // Only the disk holding `/`: loop devices that tests running beside this
    // one have mounted also count as system disks, but they may be gone by
    // the time the dry run opens them. A container whose root is an overlay
    // may show no disk holding /; the injected-table test covers the rule there.
    for d in system {
        let path = d["path"].as_str().unwrap();
        let out = nodeimg(&[
            "flash",
            img.to_str().unwrap(),
            "--device",
            path,
            "--allow-fixed",
            "--dry-run",
        ]);
        fails_with(&out, "system disk");
    }
}

#[test]
fn fixed_disk_needs_allow_fixed_and_small_disk_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = fixture_image(dir.path());
    let img = img.to_str().unwrap();
    let card = Loop::over_new_file(dir.path(), "card", 48 << 20, 0x22, 1 << 20);
    let out = nodeimg(&["flash", img, "--device", &card.dev, "--yes"]);
    fails_with(&out, "not removable (pass --allow-fixed");
    let small = Loop::over_new_file(dir.path(), "small", 16 << 20, 0x22, 1 << 20);
    let out = nodeimg(&[
        "flash",
        img,
        "--device",
        &small.dev,
        "--allow-fixed",
        "--yes",
    ]);
    fails_with(&out, "too small: the image needs 40.0 MiB (41943040 bytes) but the device holds 16.0 MiB (16777216 bytes)");
    for c in [&card, &small] {
        assert!(
            c.read(0, 4096).iter().all(|&b| b == 0x22),
            "nothing written"
        );
    }
}

#[test]
fn no_terminal_requires_yes_and_dry_run_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let img = fixture_image(dir.path());
    let img = img.to_str().unwrap();
    let card = Loop::over_new_file(dir.path(), "card", 48 << 20, 0x33, 48 << 20);
    let out = nodeimg(&["flash", img, "--device", &card.dev, "--allow-fixed"]);
    fails_with(&out, "no terminal to confirm on; pass --yes");
    let out = nodeimg(&[
        "flash",
        img,
        "--device",
        &card.dev,
        "--allow-fixed",
        "--dry-run",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("partition 2 (type 0x83)") && text.contains("nothing was opened"),
        "{text}"
    );
    // Both filesystems are mapped by their own allocation maps.
    assert!(text.contains("(fat16 allocation map)"), "{text}");
    assert!(text.contains("(ext4 allocation map)"), "{text}");
    assert!(
        card.read(0, 1 << 20).iter().all(|&b| b == 0x33),
        "dry run wrote"
    );
    // A device given twice is refused.
    let out = nodeimg(&[
        "flash",
        img,
        "--device",
        &card.dev,
        "--device",
        &card.dev,
        "--allow-fixed",
        "--yes",
    ]);
    fails_with(&out, "given twice");
    // Two names for one disk are one disk: compared by device number.
    let alias = dir.path().join("card-alias");
    std::os::unix::fs::symlink(&card.dev, &alias).unwrap();
    let out = nodeimg(&[
        "flash",
        img,
        "--device",
        &card.dev,
        "--device",
        alias.to_str().unwrap(),
        "--allow-fixed",
        "--yes",
    ]);
    fails_with(&out, "are the same disk");
    assert!(
        card.read(0, 1 << 20).iter().all(|&b| b == 0x33),
        "a refused flash wrote"
    );
}

#[test]
fn mounted_card_is_unmounted_or_refused_with_no_unmount() {
    let dir = tempfile::tempdir().unwrap();
    let img = fixture_image(dir.path());
    let img = img.to_str().unwrap();
    let card = Loop::over_new_file(dir.path(), "card", 48 << 20, 0, 0);
    sh("mkfs.ext4", &["-q", "-F", &card.dev]);
    // Under /mnt: removable media mounted for a look, not a system mount.
    let mnt = std::path::PathBuf::from(format!(
        "/mnt/nodeimg-flash-test-{}",
        dir.path().file_name().unwrap().to_string_lossy()
    ));
    let m = Mounted::device(&card.dev, &mnt, "ro");
    let out = nodeimg(&[
        "flash",
        img,
        "--device",
        &card.dev,
        "--allow-fixed",
        "--yes",
        "--no-unmount",
    ]);
    fails_with(&out, "mounted partitions");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(mounts.contains(mnt.to_str().unwrap()), "still mounted");
    let out = nodeimg(&[
        "flash",
        img,
        "--device",
        &card.dev,
        "--allow-fixed",
        "--yes",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // `--yes` unmounts without asking, so it says what it unmounted.
    let said = stderr(&out);
    assert!(
        said.contains(&format!("{}: unmounted {}", card.dev, mnt.display())),
        "{said}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(mnt.to_str().unwrap()), "was unmounted");
    drop(m);
    check_filesystems(&card.dev);
}

#[test]
fn only_block_devices_are_targets() {
    let dir = tempfile::tempdir().unwrap();
    let img = fixture_image(dir.path());
    let img = img.to_str().unwrap();
    let out = nodeimg(&["flash", img, "--device", img, "--allow-fixed", "--dry-run"]);
    fails_with(&out, "it is not a block device");
    let out = nodeimg(&[
        "flash",
        img,
        "--device",
        "/dev/null",
        "--allow-fixed",
        "--dry-run",
    ]);
    fails_with(&out, "it is not a block device");
}
