//! `nodeimg fs` verbs on ext4, bare and inside a partitioned disk image
//! (`--part N`), judged by e2fsck, debugfs and the model like the library
//! tests; bad input exits non-zero with one line and changes nothing.

mod common;

use common::check;
use common::fixture::{Fixture, Variant};
use common::model::Model;
use common::ops::{cap_net_bind_service, Op};
use common::oracle::{self, run, Snapshot};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn nodeimg(args: &[&str]) -> Output {
    run(Command::new(env!("CARGO_BIN_EXE_nodeimg")).args(args))
}

fn ok(args: &[&str]) -> String {
    let out = nodeimg(args);
    assert!(
        out.status.success(),
        "nodeimg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Applies `op` to the model and checks the image after the CLI did it.
fn judged(image: &Path, model: &mut Model, op: Op, args: &[&str]) {
    assert!(model.apply(&op), "test bug: {op}");
    ok(args);
    if let Err(e) = check::after_op(image, model, &op) {
        panic!("after `nodeimg {}`: {e}", args.join(" "));
    }
}

fn local(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

#[test]
fn every_verb_on_a_bare_image() {
    let fx = Fixture::new(Variant::Defaults);
    let img = fx.image.to_str().unwrap().to_string();
    let i = img.as_str();
    let mut model = fx.model.clone();
    let data: Vec<u8> = (0..300_000u32).map(|n| (n * 7 % 251) as u8).collect();
    let f = local(fx.scratch(), "data", &data);
    let f = f.to_str().unwrap();

    judged(
        &fx.image,
        &mut model,
        Op::Put {
            path: "/etc/blob".into(),
            data: data.clone(),
            mode: Some(0o600),
            uid: Some(1000),
            gid: Some(100),
        },
        &[
            "fs",
            "put",
            i,
            f,
            "/etc/blob",
            "--mode",
            "600",
            "--uid",
            "1000",
            "--gid",
            "100",
        ],
    );
    let h = local(fx.scratch(), "hostname", b"node3\n");
    judged(
        &fx.image,
        &mut model,
        Op::Put {
            path: "/etc/hostname".into(),
            data: b"node3\n".to_vec(),
            mode: None,
            uid: None,
            gid: None,
        },
        &["fs", "put", i, h.to_str().unwrap(), "/etc/hostname"],
    );
    assert_eq!(
        oracle::count_entries(&fx.image, "/etc", "hostname").unwrap(),
        1
    );
    judged(
        &fx.image,
        &mut model,
        Op::Mkdir {
            path: "/opt/x/y".into(),
            parents: true,
            mode: None,
            uid: None,
            gid: None,
        },
        &["fs", "mkdir", i, "/opt/x/y", "--parents"],
    );
    judged(
        &fx.image,
        &mut model,
        Op::Symlink {
            target: "/etc/blob".into(),
            path: "/opt/link".into(),
            uid: None,
            gid: None,
        },
        &["fs", "symlink", i, "/etc/blob", "/opt/link"],
    );
    judged(
        &fx.image,
        &mut model,
        Op::Link {
            existing: "/etc/blob".into(),
            new: "/opt/x/blob".into(),
        },
        &["fs", "link", i, "/etc/blob", "/opt/x/blob"],
    );
    judged(
        &fx.image,
        &mut model,
        Op::Chmod {
            path: "/opt/x/blob".into(),
            mode: 0o4711,
        },
        &["fs", "chmod", i, "4711", "/opt/x/blob"],
    );
    judged(
        &fx.image,
        &mut model,
        Op::Chown {
            path: "/opt/x".into(),
            uid: Some(33),
            gid: Some(44),
        },
        &["fs", "chown", i, "33:44", "/opt/x"],
    );
    let cap = cap_net_bind_service();
    let hex: String = cap.iter().map(|b| format!("{b:02x}")).collect();
    judged(
        &fx.image,
        &mut model,
        Op::SetXattr {
            path: "/etc/blob".into(),
            name: "security.capability".into(),
            value: cap.clone(),
        },
        &[
            "fs",
            "setxattr",
            i,
            "/etc/blob",
            "security.capability",
            &hex,
            "--hex",
        ],
    );

    // The read verbs agree with what debugfs and the model say.
    let cat = nodeimg(&["fs", "cat", i, "/opt/x/blob"]);
    assert!(cat.status.success() && cat.stdout == data, "fs cat");
    let ls = ok(&["fs", "ls", i, "/opt"]);
    assert!(ls.contains("link") && ls.contains('x'), "fs ls /opt: {ls}");
    let stat = ok(&["fs", "stat", i, "/etc/blob"]);
    assert!(
        stat.contains("4711") && stat.contains("300000"),
        "fs stat: {stat}"
    );
    let got = ok(&["fs", "getxattr", i, "/etc/blob", "security.capability"]);
    assert!(
        got.to_lowercase().contains(&hex) || got.as_bytes() == cap.as_slice(),
        "getxattr: {got:?}"
    );

    judged(
        &fx.image,
        &mut model,
        Op::Rm {
            path: "/opt".into(),
            recursive: true,
        },
        &["fs", "rm", i, "/opt", "--recursive"],
    );
    let problems = check::full(&fx.image, &model, Variant::Defaults);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn bad_input_is_one_line_and_changes_nothing() {
    let fx = Fixture::new(Variant::Defaults);
    let i = fx.image.to_str().unwrap();
    let f = local(fx.scratch(), "x", b"x");
    let f = f.to_str().unwrap();
    let long = format!("/etc/{}", "n".repeat(300));
    let cases: Vec<Vec<&str>> = vec![
        vec!["fs", "put", i, f, "/missing/x"],
        vec!["fs", "put", i, f, "/etc"],
        vec!["fs", "put", i, f, &long],
        vec!["fs", "mkdir", i, "/etc"],
        vec!["fs", "rm", i, "/etc"],
        vec!["fs", "rm", i, "/nope"],
        vec!["fs", "link", i, "/etc", "/etc2"],
        vec!["fs", "symlink", i, "x", "/etc/hostname"],
        vec!["fs", "chmod", i, "600", "/nope"],
        vec!["fs", "chown", i, "1:1", "/nope"],
        vec!["fs", "cat", i, "/etc"],
    ];
    for args in cases {
        let before = Snapshot::take(&fx.image);
        let out = nodeimg(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "nodeimg {args:?} succeeded");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "nodeimg {args:?}: not one line: {err}"
        );
        if let Some(d) = before.differences(&fx.image) {
            panic!("nodeimg {args:?} failed ({err}) but changed the image: {d}");
        }
    }
    oracle::assert_fsck_clean(&fx.image, "after the refusals");
}

/// `--part N`: the same verbs on the ext4 partition of an MBR disk image,
/// judged through a read-only loop device over exactly that partition.
#[test]
fn part_selects_the_ext4_partition_of_a_disk_image() {
    let fx = Fixture::new(Variant::Block1k);
    let disk = fx.scratch().join("disk.img");
    let fs_bytes = std::fs::metadata(&fx.image).unwrap().len();
    let start = 2048u64; // sectors
    let f = std::fs::File::create(&disk).unwrap();
    f.set_len(start * 512 + fs_bytes + (1 << 20)).unwrap();
    drop(f);
    let mut sfdisk = Command::new("sfdisk");
    sfdisk
        .arg("--quiet")
        .arg(&disk)
        .stdin(std::process::Stdio::piped());
    let mut child = sfdisk.spawn().expect("sfdisk");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            format!(
                "label: dos\nstart=1, size=2047, type=c\nstart={start}, size={}, type=83\n",
                fs_bytes / 512
            )
            .as_bytes(),
        )
        .unwrap();
    assert!(child.wait().unwrap().success(), "sfdisk");
    let out = run(Command::new("dd")
        .arg(format!("if={}", fx.image.display()))
        .arg(format!("of={}", disk.display()))
        .args(["bs=1M", "conv=notrunc,sparse", "oflag=seek_bytes"])
        .arg(format!("seek={}", start * 512)));
    assert!(out.status.success(), "dd");

    let d = disk.to_str().unwrap();
    let src = local(fx.scratch(), "keys", b"ssh-ed25519 AAAA node\n");
    ok(&[
        "fs",
        "put",
        d,
        "--part",
        "2",
        src.to_str().unwrap(),
        "/home/pi/.ssh/authorized_keys",
        "--mode",
        "600",
        "--uid",
        "1000",
        "--gid",
        "1000",
    ]);
    ok(&["fs", "mkdir", d, "--part", "2", "/etc/k8s", "--parents"]);
    // Cut the partition back out and judge it like a bare image.
    let part = fx.scratch().join("part.img");
    let out = run(Command::new("dd")
        .arg(format!("if={d}"))
        .arg(format!("of={}", part.display()))
        .args(["bs=1M", "iflag=skip_bytes,count_bytes", "conv=sparse"])
        .arg(format!("skip={}", start * 512))
        .arg(format!("count={fs_bytes}")));
    assert!(out.status.success(), "dd out");
    let mut model = fx.model.clone();
    let op = Op::Put {
        path: "/home/pi/.ssh/authorized_keys".into(),
        data: b"ssh-ed25519 AAAA node\n".to_vec(),
        mode: Some(0o600),
        uid: Some(1000),
        gid: Some(1000),
    };
    assert!(model.apply(&op));
    assert!(model.apply(&Op::Mkdir {
        path: "/etc/k8s".into(),
        parents: true,
        mode: None,
        uid: None,
        gid: None
    }));
    check::after_op(&part, &model, &op).unwrap();
    let problems = check::full(&part, &model, Variant::Block1k);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The first partition was not touched.
    let out = run(Command::new("cmp")
        .args(["-n", &(2047 * 512).to_string(), "-i", "512"])
        .arg(d)
        .arg("/dev/zero"));
    assert!(out.status.success(), "partition 1 changed");
}
