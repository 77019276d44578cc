//! `nodeimg delta` end to end: create → info → apply reproduces the modified
//! image (checked with `cmp`), and bad input gives one line and a failure.

use std::path::Path;
use std::process::{Command, Output};

fn nodeimg(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodeimg"))
        .args(args)
        .output()
        .unwrap()
}

fn run_ok(args: &[&std::ffi::OsStr]) -> String {
    let out = nodeimg(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail with exactly one stderr line; returns it.
fn run_fail(args: &[&std::ffi::OsStr]) -> String {
    let out = nodeimg(args);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(
        matches!(out.status.code(), Some(1 | 3 | 4 | 5)),
        "{args:?}: a failure exit (1, 3, 4, 5; src/exit.rs), got {:?}: {err}",
        out.status.code()
    );
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn os<P: AsRef<std::ffi::OsStr> + ?Sized>(p: &P) -> &std::ffi::OsStr {
    p.as_ref()
}

fn images(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let base = dir.join("base.img");
    let mut bytes: Vec<u8> = (0..3u32 << 20).map(|i| (i % 13) as u8).collect();
    bytes[1 << 20..2 << 20].fill(0);
    std::fs::write(&base, &bytes).unwrap();
    bytes[100] = 0xff;
    bytes[(1 << 20) + 5000..(1 << 20) + 9000].fill(0x42);
    let n = bytes.len();
    bytes[n - 1] = 0xee;
    let modified = dir.join("node.img");
    std::fs::write(&modified, &bytes).unwrap();
    (base, modified)
}

#[test]
fn create_info_apply_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (base, modified) = images(dir.path());
    let delta = dir.path().join("node.delta");
    run_ok(&[
        os("delta"),
        os("create"),
        os(&base),
        os(&modified),
        os("-o"),
        os(&delta),
    ]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&delta).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let info: serde_json::Value = serde_json::from_str(&run_ok(&[
        os("delta"),
        os("info"),
        os("--json"),
        os(&delta),
    ]))
    .unwrap();
    assert_eq!(info["version"], 1);
    assert_eq!(info["block_size"], 4096);
    assert_eq!(info["base"]["size"], 3u64 << 20);
    let ranges = info["ranges"].as_array().unwrap();
    let spans: Vec<(u64, u64)> = ranges
        .iter()
        .map(|r| (r["offset"].as_u64().unwrap(), r["length"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        spans,
        vec![
            (0, 4096),
            ((1 << 20) + 4096, 8192),
            ((3 << 20) - 4096, 4096)
        ]
    );
    let sha = Command::new("sha256sum").arg(&base).output().unwrap();
    let sha = String::from_utf8(sha.stdout).unwrap();
    assert_eq!(
        info["base"]["sha256"].as_str().unwrap(),
        sha.split(' ').next().unwrap()
    );
    assert!(run_ok(&[os("delta"), os("info"), os(&delta)]).contains("3 ranges"));

    for name in ["out.img", "out.img.zst"] {
        let out = dir.path().join(name);
        run_ok(&[
            os("delta"),
            os("apply"),
            os(&base),
            os(&delta),
            os("-o"),
            os(&out),
        ]);
        let raw = if name.ends_with(".zst") {
            let raw = dir.path().join("unpacked.img");
            let ok = Command::new("zstd")
                .args(["-q", "-d", "-f"])
                .arg(&out)
                .arg("-o")
                .arg(&raw)
                .status()
                .unwrap();
            assert!(ok.success());
            raw
        } else {
            out
        };
        let cmp = Command::new("cmp")
            .arg(&raw)
            .arg(&modified)
            .status()
            .unwrap();
        assert!(cmp.success(), "{name} differs from the modified image");
    }
}

#[test]
fn delta_for_another_base_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (base, modified) = images(dir.path());
    let delta = dir.path().join("node.delta");
    run_ok(&[
        os("delta"),
        os("create"),
        os(&base),
        os(&modified),
        os("-o"),
        os(&delta),
    ]);
    let out = dir.path().join("out.img");
    // The modified image has the base's size but not its bytes.
    let err = run_fail(&[
        os("delta"),
        os("apply"),
        os(&modified),
        os(&delta),
        os("-o"),
        os(&out),
    ]);
    assert!(
        err.contains("node.img") && err.contains("is not the base"),
        "{err}"
    );
    assert!(!out.exists());
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains("partial")), "{names:?}");
}

#[test]
fn missing_and_damaged_files_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (base, modified) = images(dir.path());
    let missing = dir.path().join("nope.delta");
    let err = run_fail(&[os("delta"), os("info"), os(&missing)]);
    assert!(
        err.contains("nope.delta") && err.contains("No such file"),
        "{err}"
    );

    let delta = dir.path().join("node.delta");
    run_ok(&[
        os("delta"),
        os("create"),
        os(&base),
        os(&modified),
        os("-o"),
        os(&delta),
    ]);
    let mut bytes = std::fs::read(&delta).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    std::fs::write(&delta, &bytes).unwrap();
    let err = run_fail(&[os("delta"), os("info"), os(&delta)]);
    assert!(
        err.contains("node.delta") && err.contains("checksum mismatch"),
        "{err}"
    );
    std::fs::write(&delta, &bytes[..n - 40]).unwrap();
    let err = run_fail(&[
        os("delta"),
        os("apply"),
        os(&base),
        os(&delta),
        os("-o"),
        os(&dir.path().join("o")),
    ]);
    assert!(
        err.contains("node.delta") && err.contains("truncated"),
        "{err}"
    );

    let short = dir.path().join("short.img");
    std::fs::write(&short, b"tiny").unwrap();
    let err = run_fail(&[
        os("delta"),
        os("create"),
        os(&base),
        os(&short),
        os("-o"),
        os(&dir.path().join("x")),
    ]);
    assert!(err.contains("short.img") && err.contains("size"), "{err}");
}
