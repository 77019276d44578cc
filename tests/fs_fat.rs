//! `nodeimg fs` on FAT, judged by independent tools: `fsck.vfat -n` after
//! every change, mtools (`mdir`, `mtype`, `minfo`) reading back what we
//! wrote, and `sfdisk` for disk images. Needs dosfstools, mtools, fdisk and
//! xz-utils (installed by `.ci/run`).

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MIB: u64 = 1 << 20;

fn nodeimg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodeimg"))
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .expect("run nodeimg")
}

/// Runs nodeimg, which must succeed; returns stdout.
fn ok(args: &[&str]) -> Vec<u8> {
    let out = nodeimg(args);
    assert!(
        out.status.success(),
        "nodeimg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs nodeimg, which must fail with one line on stderr and no panic;
/// returns that line.
fn fails(args: &[&str]) -> String {
    let out = nodeimg(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "nodeimg {args:?} succeeded");
    assert!(
        matches!(out.status.code(), Some(1 | 3 | 4 | 5)),
        "nodeimg {args:?}: a failure exit (1, 3, 4, 5; src/exit.rs), got {:?}: {err}",
        out.status.code()
    );
    assert!(
        !err.contains("panicked"),
        "nodeimg {args:?} panicked: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    err
}

fn tool(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap_or_else(|e| panic!("{cmd} (install dosfstools, mtools, fdisk): {e}"))
}

fn tool_ok(cmd: &str, args: &[&str]) -> String {
    let out = tool(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// fsck.vfat must find nothing at all to say: exit 0 and only its version
/// and summary lines (it exits 0 on some warnings too).
fn fsck_clean(img: &Path) {
    let out = tool_ok("fsck.vfat", &["-n", img.to_str().unwrap()]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.len() == 2 && lines[1].contains(" files, "),
        "fsck.vfat -n {} is not clean:\n{out}",
        img.display()
    );
}

/// Copies bytes `start..start+len` of `disk` into a sparse file, so
/// fsck.vfat (which takes no offset) can check one partition without root.
fn extract(disk: &Path, start: u64, len: u64, out: &Path) {
    let mut src = fs::File::open(disk).unwrap();
    let mut dst = fs::File::create(out).unwrap();
    dst.set_len(len).unwrap();
    src.seek(SeekFrom::Start(start)).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(MIB) as usize;
        src.read_exact(&mut buf[..n]).unwrap();
        if buf[..n].iter().any(|&b| b != 0) {
            dst.seek(SeekFrom::Start(done)).unwrap();
            dst.write_all(&buf[..n]).unwrap();
        }
        done += n as u64;
    }
}

/// Deterministic pseudo-random bytes, different per seed.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn mtype(spec: &str, path: &str) -> Vec<u8> {
    let out = tool("mtype", &["-i", spec, &format!("::{path}")]);
    assert!(
        out.status.success(),
        "mtype {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Bytes free as mdir reports them for the root.
fn mdir_free(spec: &str) -> u64 {
    let out = tool_ok("mdir", &["-i", spec, "::/"]);
    let line = out
        .lines()
        .find(|l| l.contains("bytes free"))
        .expect("mdir prints free bytes");
    line.split_whitespace()
        .take_while(|w| *w != "bytes")
        .collect::<String>()
        .parse()
        .unwrap()
}

struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn file(&self, name: &str, data: &[u8]) -> String {
        let p = self.path(name);
        fs::write(&p, data).unwrap();
        p.to_str().unwrap().to_string()
    }
}

/// The file and directory work on one FAT volume, checked by the oracles.
/// `img` is the image file, `part` the `--part` arguments, `spec` mtools'
/// `-i` argument and `check` a closure that runs fsck on the volume.
fn exercise(s: &Scratch, img: &str, part: &[&str], spec: &str, check: &dyn Fn()) {
    let with = |verb: &str, rest: &[&str]| -> Vec<String> {
        let mut v = vec!["fs".to_string(), verb.to_string(), img.to_string()];
        v.extend(part.iter().map(|s| s.to_string()));
        v.extend(rest.iter().map(|s| s.to_string()));
        v
    };
    let run = |verb: &str, rest: &[&str]| {
        let args = with(verb, rest);
        ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let refuse = |verb: &str, rest: &[&str]| {
        let args = with(verb, rest);
        fails(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };

    let free_before = mdir_free(spec);
    let big = noise(3 * MIB as usize + 12_345, 7);
    let big_local = s.file("big.bin", &big);
    let small_local = s.file(
        "cmdline.txt",
        b"console=serial0,115200 root=PARTUUID=1234-02\n",
    );

    run(
        "mkdir",
        &["--parents", "/overlays/Some Long Directory/deeper"],
    );
    check();
    run(
        "put",
        &[
            &big_local,
            "/overlays/Some Long Directory/deeper/A rather long file name.bin",
        ],
    );
    run("put", &[&small_local, "/cmdline.txt"]);
    check();

    // mtools reads back exactly what we wrote, long names and all.
    assert_eq!(
        mtype(
            spec,
            "/overlays/Some Long Directory/deeper/A rather long file name.bin"
        ),
        big
    );
    assert_eq!(mtype(spec, "/cmdline.txt"), fs::read(&small_local).unwrap());
    let listing = tool_ok("mdir", &["-i", spec, "::/overlays/Some Long Directory"]);
    assert!(listing.contains("deeper"), "{listing}");

    // Our own listing and stat agree.
    let ls: serde_json::Value = serde_json::from_slice(&run("ls", &["--json", "/"])).unwrap();
    let names: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cmdline.txt", "overlays"]);
    let st: serde_json::Value =
        serde_json::from_slice(&run("stat", &["--json", "/cmdline.txt"])).unwrap();
    assert_eq!(st["kind"], "file");
    assert_eq!(st["size"], fs::read(&small_local).unwrap().len());
    assert_eq!(st["mtime"]["secs"], 1_700_000_000);
    assert!(st["ino"].as_u64().unwrap() >= 2);
    assert_eq!(
        run(
            "cat",
            &["/overlays/some long directory/DEEPER/a rather long file name.bin"]
        ),
        big,
        "FAT names match case-insensitively"
    );

    // Replacing keeps one entry and the new content.
    let replacement = s.file("new.txt", b"replaced\n");
    run("put", &[&replacement, "/CMDLINE.TXT"]);
    check();
    assert_eq!(mtype(spec, "/cmdline.txt"), b"replaced\n");
    let root = tool_ok("mdir", &["-i", spec, "-b", "::/"]);
    assert_eq!(
        root.lines()
            .filter(|l| l.to_lowercase().contains("cmdline"))
            .count(),
        1,
        "{root}"
    );

    // rm: refuses a non-empty directory, then frees everything recursively.
    refuse("rm", &["/overlays"]);
    run("rm", &["--recursive", "/overlays"]);
    run("rm", &["/cmdline.txt"]);
    check();
    assert_eq!(
        mdir_free(spec),
        free_before,
        "rm --recursive gives the space back"
    );
    assert_eq!(run("ls", &["/"]), b"");
}

#[test]
fn fat32_bare_image_against_fsck_and_mtools() {
    let s = Scratch::new();
    let img = s.path("boot.img");
    let img_s = img.to_str().unwrap();
    ok(&[
        "fs",
        "mkfs",
        "fat",
        img_s,
        "--size",
        "64MiB",
        "--label",
        "bootfs",
        "--volume-id",
        "1A2B3C4D",
    ]);
    fsck_clean(&img);
    let info = tool_ok("minfo", &["-i", img_s, "::"]);
    assert!(info.contains("BOOTFS"), "{info}");
    assert!(info.contains("serial number: 1A2B3C4D"), "{info}");
    assert!(info.contains("FAT32"), "{info}");
    exercise(&s, img_s, &[], img_s, &|| fsck_clean(&img));
}

#[test]
fn fat16_bare_image_against_fsck_and_mtools() {
    let s = Scratch::new();
    let img = s.path("small.img");
    let img_s = img.to_str().unwrap();
    ok(&["fs", "mkfs", "fat", img_s, "--size", "32M", "--fat", "16"]);
    fsck_clean(&img);
    let info = tool_ok("minfo", &["-i", img_s, "::"]);
    assert!(info.contains("FAT16"), "{info}");
    exercise(&s, img_s, &[], img_s, &|| fsck_clean(&img));
}

/// The other direction: what mtools writes (its own long-name and
/// attribute encoding), our reader lists, reads and stats.
#[test]
fn reads_what_mtools_wrote() {
    let s = Scratch::new();
    let img = s.path("m.img");
    let img_s = img.to_str().unwrap();
    ok(&["fs", "mkfs", "fat", img_s, "--size", "40MiB"]);
    let data = noise(2 * MIB as usize + 3, 11);
    let local = s.file("payload", &data);
    tool_ok(
        "mmd",
        &["-i", img_s, "::/Mixed Case Dir", "::/Mixed Case Dir/sub"],
    );
    tool_ok(
        "mcopy",
        &[
            "-i",
            img_s,
            &local,
            "::/Mixed Case Dir/sub/Ünïcode name with spaces.dat",
        ],
    );
    tool_ok("mcopy", &["-i", img_s, &local, "::/SHORT.TXT"]);
    tool_ok("mattrib", &["-i", img_s, "+r", "+h", "::/SHORT.TXT"]);
    fsck_clean(&img);

    assert_eq!(
        ok(&["fs", "ls", img_s, "/Mixed Case Dir/sub"]),
        "Ünïcode name with spaces.dat\n".as_bytes()
    );
    assert_eq!(
        ok(&[
            "fs",
            "cat",
            img_s,
            "/Mixed Case Dir/sub/Ünïcode name with spaces.dat"
        ]),
        data
    );
    let st: serde_json::Value =
        serde_json::from_slice(&ok(&["fs", "stat", "--json", img_s, "/short.txt"])).unwrap();
    assert_eq!(
        st["flags"],
        serde_json::json!(["readonly", "hidden", "archive"])
    );
    assert_eq!(st["size"], data.len());
    // And we can remove what mtools made.
    ok(&["fs", "rm", "-r", img_s, "/Mixed Case Dir"]);
    fsck_clean(&img);
    assert_eq!(ok(&["fs", "ls", img_s]), b"SHORT.TXT\n");
}

#[test]
fn fat_inside_mbr_partitions() {
    let s = Scratch::new();
    let disk = s.path("disk.img");
    let disk_s = disk.to_str().unwrap();
    fs::File::create(&disk).unwrap().set_len(112 * MIB).unwrap();
    let mut sfdisk = Command::new("sfdisk")
        .args(["-q", disk_s])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("sfdisk (install fdisk)");
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"label: dos\nstart=2048, size=64MiB, type=c\nstart=133120, size=40MiB, type=6\n",
        )
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    let table_before = tool_ok("sfdisk", &["--dump", disk_s]);

    // Without --part the command says which partitions there are.
    let err = fails(&["fs", "ls", disk_s]);
    assert!(err.contains("--part"), "{err}");

    for (n, start, len, bits) in [(1, MIB, 64 * MIB, "32"), (2, 133_120 * 512, 40 * MIB, "16")] {
        let n_s = n.to_string();
        ok(&["fs", "mkfs", "fat", disk_s, "--part", &n_s, "--fat", bits]);
        let spec = format!("{disk_s}@@{start}");
        let part_copy = s.path(&format!("part{n}.img"));
        let check = || {
            extract(&disk, start, len, &part_copy);
            fsck_clean(&part_copy);
        };
        check();
        exercise(&s, disk_s, &["--part", &n_s], &spec, &check);
    }
    assert_eq!(
        tool_ok("sfdisk", &["--dump", disk_s]),
        table_before,
        "table untouched"
    );
}

/// Same inputs and SOURCE_DATE_EPOCH give the same bytes.
#[test]
fn same_inputs_same_image() {
    let s = Scratch::new();
    let local = s.file("data", &noise(100_000, 3));
    let build = |name: &str| {
        let img = s.path(name);
        let img_s = img.to_str().unwrap();
        ok(&[
            "fs", "mkfs", "fat", img_s, "--size", "40MiB", "--label", "same",
        ]);
        ok(&["fs", "mkdir", "-p", img_s, "/a/b"]);
        ok(&["fs", "put", img_s, &local, "/a/b/data.bin"]);
        ok(&["fs", "put", img_s, &local, "/a/b/data.bin"]);
        fs::read(img).unwrap()
    };
    assert!(build("one.img") == build("two.img"), "images differ");
}

#[test]
fn bad_input_is_one_line_and_changes_nothing() {
    let s = Scratch::new();
    let img = s.path("v.img");
    let img_s = img.to_str().unwrap();
    ok(&["fs", "mkfs", "fat", img_s, "--size", "16MiB", "--fat", "16"]);
    let local = s.file("x.txt", b"x");
    let pristine = fs::read(&img).unwrap();

    assert!(fails(&["fs", "cat", img_s, "/missing"]).contains("/missing: no such file"));
    assert!(fails(&["fs", "put", img_s, &local, "/no/such/dir/x"]).contains("/no"));
    fails(&["fs", "put", img_s, &local, "/bad:name"]);
    fails(&["fs", "mkdir", img_s, "/a/b"]);
    fails(&["fs", "rm", img_s, "/"]);
    for verb in [
        vec!["symlink", "/t", "/l"],
        vec!["link", "/a", "/b"],
        vec!["chmod", "600", "/"],
        vec!["chown", "1000:1000", "/"],
        vec!["setxattr", "/", "user.x", "1"],
        vec!["getxattr", "/", "user.x"],
    ] {
        let mut args = vec!["fs", verb[0], img_s];
        args.extend(&verb[1..]);
        assert!(fails(&args).contains("unsupported"), "{args:?}");
    }
    assert_eq!(fs::read(&img).unwrap(), pristine, "refusals write nothing");
    fsck_clean(&img);

    // Boot sectors that lie about their geometry.
    let lies: [(&str, usize, &[u8]); 6] = [
        ("FAT too small for the clusters", 22, &[1, 0]),
        ("0 sectors per cluster", 13, &[0]),
        ("0 FATs", 16, &[0]),
        ("volume larger than the image", 19, &[0xFF, 0xFF]),
        ("no root directory entries", 17, &[0, 0]),
        ("FATs larger than the volume", 22, &[0xFF, 0xFF]),
    ];
    for (what, at, bytes) in lies {
        let mut data = pristine.clone();
        data[at..at + bytes.len()].copy_from_slice(bytes);
        let liar = s.file("liar.img", &data);
        for args in [
            vec!["fs", "ls", &liar],
            vec!["fs", "put", &liar, &local, "/x"],
            vec!["fs", "stat", &liar, "/"],
        ] {
            let err = fails(&args);
            assert!(err.contains("corrupt FAT boot sector"), "{what}: {err}");
        }
        assert_eq!(fs::read(&liar).unwrap(), data, "{what}: nothing written");
    }

    // A compressed image is refused before anything is opened for writing.
    let xz = Command::new("xz")
        .args(["-k", "-T1", img_s])
        .status()
        .expect("xz (install xz-utils)");
    assert!(xz.success());
    let xz_img = format!("{img_s}.xz");
    let before = fs::read(&xz_img).unwrap();
    let err = fails(&["fs", "put", &xz_img, &local, "/x"]);
    assert!(err.contains("xz-compressed"), "{err}");
    assert_eq!(fs::read(&xz_img).unwrap(), before);

    // mkfs refuses an existing file and impossible sizes.
    assert!(fails(&["fs", "mkfs", "fat", img_s, "--size", "64MiB"]).contains("exists"));
    let tiny = s.path("tiny.img");
    fails(&[
        "fs",
        "mkfs",
        "fat",
        tiny.to_str().unwrap(),
        "--size",
        "8MiB",
    ]);
    assert!(!tiny.exists(), "no half-made image under the final name");
}
