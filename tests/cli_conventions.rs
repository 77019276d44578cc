//! How `nodeimg` behaves at a terminal and in CI (README "Exit codes",
//! src/out.rs, src/signals.rs): a closed stdout ends it quietly, `-q` prints
//! errors only, an interrupt removes everything the run created and names
//! what it interrupted, and a `--state` path must exist unless asked for.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

mod cli_support;
mod flash_support;
use cli_support::*;

/// A copy of the quick-start demo in `dir`, its base made `size` large
/// (a large base keeps `build` busy long enough to interrupt).
fn demo(dir: &Path, size: Option<&str>) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo");
    let to = dir.join("demo");
    std::fs::create_dir(&to).unwrap();
    std::fs::copy(
        src.join("rpios-demo.img.zst"),
        to.join("rpios-demo.img.zst"),
    )
    .unwrap();
    let mut text = std::fs::read_to_string(src.join("cluster.toml")).unwrap();
    if let Some(size) = size {
        text = text.replacen("[base]\n", &format!("[base]\nsize = \"{size}\"\n"), 1);
    }
    std::fs::write(to.join("cluster.toml"), text).unwrap();
    to.join("cluster.toml")
}

/// Names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Waits until an entry of `dir` satisfies `pred` (the child is then busy
/// inside the step that made it), then sends `signal`; returns the exit
/// status and stderr.
fn interrupt_when(
    mut child: Child,
    dir: &Path,
    pred: impl Fn(&str) -> bool,
    signal: i32,
) -> (i32, String) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !names(dir).iter().any(|n| pred(n)) {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("nodeimg ended ({st}) before it could be interrupted");
        }
        assert!(Instant::now() < deadline, "nothing appeared in {dir:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let out = child.wait_with_output().expect("nodeimg exits");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn spawn(args: &[&str]) -> Child {
    bin()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nodeimg starts")
}

/// Runs `args` with stdout's reader gone before anything is written;
/// returns the exit status and stderr.
fn with_closed_stdout(args: &[&str]) -> (i32, String) {
    let mut child = bin()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nodeimg starts");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("nodeimg exits");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = demo(tmp.path(), None);
    // A delta whose `info` is longer than a pipe holds (64 KiB): the write
    // must meet the closed pipe, so the status is exactly SIGPIPE's.
    let (a, b) = (tmp.path().join("a.img"), tmp.path().join("b.img"));
    std::fs::File::create(&a)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let f = std::fs::File::create(&b).unwrap();
    f.set_len(64 << 20).unwrap();
    for block in (0..(64u64 << 20) / 4096).step_by(2) {
        f.write_all_at(b"x", block * 4096).unwrap();
    }
    let delta = tmp.path().join("n.delta");
    ok(&["delta", "create", s(&a), s(&b), "-o", s(&delta)]);
    let (code, err) = with_closed_stdout(&["delta", "info", s(&delta)]);
    assert_eq!((code, err.as_str()), (141, ""), "delta info | head");
    // Short outputs may fit the pipe before it closes: 0 or 141, silently.
    for args in [
        &["cluster", "info", "--config", s(&cluster), "--json"][..],
        &["devices", "--json", "--all"][..],
        &["man"][..],
        &["completions", "bash"][..],
    ] {
        let (code, err) = with_closed_stdout(args);
        assert!(code == 141 || code == 0, "{args:?}: exit {code}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }
}

#[test]
fn quiet_build_prints_nothing_and_a_failed_build_writes_no_state() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = demo(tmp.path(), None);
    let state = tmp.path().join("demo/cluster.state");
    // A base that is not there: the build fails before any output, and
    // the secrets it generated are not kept.
    std::fs::rename(
        tmp.path().join("demo/rpios-demo.img.zst"),
        tmp.path().join("elsewhere.img.zst"),
    )
    .unwrap();
    let dist = tmp.path().join("dist");
    let err = fails_with(
        5,
        &[
            "build",
            "--no-tool-check",
            "--config",
            s(&cluster),
            "--out",
            s(&dist),
        ],
        &["rpios-demo.img.zst"],
    );
    assert!(!state.exists(), "a failed build wrote {state:?}: {err}");
    std::fs::rename(
        tmp.path().join("elsewhere.img.zst"),
        tmp.path().join("demo/rpios-demo.img.zst"),
    )
    .unwrap();
    let out = nodeimg(&[
        "-q",
        "build",
        "--no-tool-check",
        "--config",
        s(&cluster),
        "--out",
        s(&dist),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        (out.stdout.as_slice(), out.stderr.as_slice()),
        (&b""[..], &b""[..]),
        "-q prints errors only"
    );
    assert!(state.exists());
    // Without -q: a summary, and `--out dist/` never shows as `dist//`.
    let slash = format!("{}/", s(&dist));
    let text = ok(&[
        "build",
        "--no-tool-check",
        "--config",
        s(&cluster),
        "--out",
        &slash,
    ]);
    assert!(
        text.contains("base unchanged") && !text.contains("//"),
        "{text}"
    );
    // -v: each step with its time, and the stage's total.
    let out = nodeimg(&[
        "-v",
        "build",
        "--no-tool-check",
        "--config",
        s(&cluster),
        "--out",
        s(&dist),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    for want in [
        "step done step=hashing the base's inputs secs=",
        "step done step=hashing the artefacts secs=",
        "build: nodeimg::cmd::build: close time.busy=",
    ] {
        assert!(err.contains(want), "-v lacks {want:?}: {err}");
    }
}

#[test]
fn a_state_path_must_exist_unless_init_state() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = demo(tmp.path(), None);
    let typo = tmp.path().join("clsuter.state");
    let dist = tmp.path().join("dist");
    let args = [
        "build",
        "--no-tool-check",
        "--config",
        s(&cluster),
        "--out",
        s(&dist),
        "--state",
        s(&typo),
    ];
    refused(&args, &["no such state file", "--init-state"]);
    assert!(!typo.exists() && !dist.exists());
    let mut init = args.to_vec();
    init.extend(["--init-state", "--secrets", "defer"]);
    ok(&init);
    assert!(typo.exists());
    // Another cluster's state at flash time names the flag flash takes.
    let foreign = tmp.path().join("foreign.state");
    std::fs::write(&foreign, "format = 1\ncluster = \"other\"\n").unwrap();
    let err = refused(
        &[
            "flash",
            s(&dist),
            "--device",
            "/dev/null=node0",
            "--secrets",
            s(&foreign),
        ],
        &["--secrets", "cluster `other`, not of `demo`"],
    );
    assert!(!err.contains("--state"), "{err}");
    // The same for stamp.
    let other = tmp.path().join("other.state");
    refused(
        &[
            "stamp",
            "--no-tool-check",
            "--config",
            s(&cluster),
            "--base",
            s(&dist.join("base.img.zst")),
            "--all",
            "--out-dir",
            s(&tmp.path().join("nodes")),
            "--state",
            s(&other),
        ],
        &["no such state file"],
    );
    // stamp reads the build's compressed base itself.
    let delta = tmp.path().join("node0.delta");
    let out = nodeimg(&[
        "stamp",
        "--no-tool-check",
        "--config",
        s(&cluster),
        "--base",
        s(&dist.join("base.img.zst")),
        "--node",
        "node0",
        "-o",
        s(&delta),
        "--state",
        s(&typo),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("zstd-compressed; decompressing"), "{err}");
    assert!(delta.exists());
}

#[test]
fn an_interrupted_build_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = demo(tmp.path(), Some("2GiB"));
    let dist = tmp.path().join("dist");
    let child = spawn(&[
        "build",
        "--no-tool-check",
        "--config",
        s(&cluster),
        "--out",
        s(&dist),
    ]);
    let (code, err) = interrupt_when(
        child,
        tmp.path(),
        |n| n.starts_with(".dist.build-"),
        libc::SIGINT,
    );
    assert_eq!(code, 130, "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    assert!(
        err.contains("interrupted by SIGINT while building") && err.contains("removed"),
        "{err}"
    );
    // No staging directory, no output, no state: as before the run (the
    // build's hash cache, `.dist.cache`, is kept on purpose).
    let left: Vec<String> = names(tmp.path())
        .into_iter()
        .filter(|n| n != ".dist.cache")
        .collect();
    assert_eq!(left, ["demo"]);
    assert_eq!(
        names(&tmp.path().join("demo")),
        ["cluster.toml", "rpios-demo.img.zst"]
    );
}

#[test]
fn an_interrupted_base_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo/rpios-demo.img.zst");
    let out = tmp.path().join("base.img");
    let child = spawn(&[
        "base",
        "--board",
        "rpi5",
        "--from",
        s(&src),
        "--size",
        "4GiB",
        "--zstd",
        "-o",
        s(&out),
    ]);
    let (code, err) = interrupt_when(
        child,
        tmp.path(),
        |n| n.ends_with(".partial"),
        libc::SIGTERM,
    );
    assert_eq!(code, 143, "{err}");
    assert!(
        err.contains("interrupted by SIGTERM while building the base image")
            && err.contains("removed"),
        "{err}"
    );
    assert!(names(tmp.path()).is_empty(), "{:?}", names(tmp.path()));
}

#[test]
fn an_interrupted_flash_of_a_build_removes_its_spool_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = demo(tmp.path(), Some("1GiB"));
    let dist = tmp.path().join("dist");
    ok(&[
        "-q",
        "build",
        "--no-tool-check",
        "--config",
        s(&cluster),
        "--out",
        s(&dist),
    ]);
    let card = flash_support::Loop::over_new_file(tmp.path(), "card", 1100 << 20, 0x5a, 1 << 20);
    let spool = tmp.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let child = bin()
        .args([
            "flash",
            s(&dist),
            "--device",
            &format!("{}=node0", card.dev),
            "--allow-fixed",
            "--yes",
        ])
        .env("TMPDIR", &spool)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nodeimg starts");
    let (code, err) = interrupt_when(
        child,
        &spool,
        |n| n.starts_with(".nodeimg-flash-"),
        libc::SIGINT,
    );
    assert_eq!(code, 130, "{err}");
    assert!(
        err.contains("interrupted by SIGINT while flashing") && err.contains("unpacking"),
        "{err}"
    );
    assert!(!err.contains("building"), "{err}");
    assert!(names(&spool).is_empty(), "{:?}", names(&spool));
    // The card was never opened for writing.
    assert!(card.read(0, 1 << 20).iter().all(|&b| b == 0x5a));
}

#[test]
fn man_writes_a_page_per_subcommand() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("man");
    ok(&["man", "--dir", s(&dir)]);
    let pages = names(&dir);
    for page in [
        "nodeimg.1",
        "nodeimg-flash.1",
        "nodeimg-build.1",
        "nodeimg-fs-cat.1",
    ] {
        assert!(pages.iter().any(|p| p == page), "{page} not in {pages:?}");
    }
    // Every page the top page refers to exists.
    let top = std::fs::read_to_string(dir.join("nodeimg.1")).unwrap();
    for sub in ["flash", "build", "stamp", "verify"] {
        let r = format!("nodeimg\\-{sub}(1)");
        assert!(top.contains(&r), "nodeimg.1 lacks {r}");
        assert!(pages.contains(&format!("nodeimg-{sub}.1")));
    }
}

#[test]
fn a_card_flashed_from_a_deferred_build_verifies_with_its_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = demo(tmp.path(), None);
    let dist = tmp.path().join("dist");
    let state = tmp.path().join("demo/cluster.state");
    ok(&[
        "-q",
        "build",
        "--no-tool-check",
        "--config",
        s(&cluster),
        "--out",
        s(&dist),
        "--secrets",
        "defer",
    ]);
    let card = flash_support::Loop::over_new_file(tmp.path(), "card", 300 << 20, 0, 0);
    let target = format!("{}=node0", card.dev);
    // The plan, as JSON with --json.
    let plan = ok(&[
        "flash",
        s(&dist),
        "--device",
        &target,
        "--secrets",
        s(&state),
        "--allow-fixed",
        "--dry-run",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(plan.trim()).expect("one JSON line");
    assert_eq!(v["event"], "dry_run", "{plan}");
    assert_eq!(v["cards"][0]["node"], "node0", "{plan}");
    assert_eq!(v["cards"][0]["secrets"], "nodes/node0.secrets", "{plan}");
    ok(&[
        "flash",
        s(&dist),
        "--device",
        &target,
        "--secrets",
        s(&state),
        "--allow-fixed",
        "--yes",
    ]);
    // The card, secrets and all, is what the build says node0 is.
    let out = nodeimg(&[
        "verify",
        s(&dist),
        "--device",
        &target,
        "--secrets",
        s(&state),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the state the secrets cannot be compared: refused, not failed.
    refused(&["verify", s(&dist), "--device", &target], &["--secrets"]);
    // A directory needs to know the node.
    refused(&["verify", s(&dist), "--device", &card.dev], &["DEV=NODE"]);
    // As another node, or after a byte changed: verification failed (4).
    fails_with(
        4,
        &[
            "verify",
            s(&dist),
            "--device",
            &format!("{}=node1", card.dev),
            "--secrets",
            s(&state),
        ],
        &["verification failed"],
    );
}
