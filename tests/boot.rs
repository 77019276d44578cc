//! `nodeimg boot` against real guests: a Debian arm64 root with Debian's
//! generic kernel and initramfs (mmdebstrap through the aarch64 binfmt
//! handler), made into an RPi-5 base and an Odroid-C4 base by `nodeimg
//! base`, stamped, and booted under qemu-system-aarch64. The oracle is the
//! guest itself: its first-boot check reads the stamped hostname and key
//! modes inside the running system, and the sources are hashed before and
//! after.
//!
//! The root tree and the bases are built once into the fixture cache
//! (`$NODEIMG_FIXTURE_CACHE`, else target/fixture-cache). Boots take a lock
//! so that only one test boots guests at a time (the machine is shared).
//! Needs: qemu-system-arm, mmdebstrap, qemu-user-static + binfmt-support
//! (registered aarch64 handler), and Debian's archive.

use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod os_support;

const EPOCH: &str = "1700000000";
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl admin@laptop";

fn cache() -> PathBuf {
    let root = match std::env::var_os("NODEIMG_FIXTURE_CACHE") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("target/tmp has a parent")
            .join("fixture-cache"),
    };
    let d = root.join("boot-debian-v3");
    fs::create_dir_all(&d).expect("fixture cache");
    d
}

fn need(tool: &str, package: &str) {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join(tool).exists());
    assert!(found, "{tool} is missing: apt-get install {package}");
}

/// U-Boot's build for QEMU, which boots the extlinux (Odroid C4) nodes.
fn need_uboot() {
    let p = "/usr/lib/u-boot/qemu_arm64/u-boot.bin";
    assert!(
        std::env::var_os("NODEIMG_UBOOT").is_some() || Path::new(p).is_file(),
        "{p} is missing: apt-get install u-boot-qemu"
    );
}

fn lock(name: &str) -> nix::fcntl::Flock<fs::File> {
    let f = fs::File::create(cache().join(name)).expect("lock file");
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).expect("lock")
}

fn nodeimg() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nodeimg"));
    c.env("SOURCE_DATE_EPOCH", EPOCH);
    c
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed ({}): {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The Debian arm64 root with Debian's arm64 kernel and a small initramfs
/// (fixtures/make-boot-rootfs.sh).
fn rootfs() -> PathBuf {
    let tar = cache().join("rootfs.tar");
    let _l = lock("rootfs.lock");
    if !tar.exists() {
        need("mmdebstrap", "mmdebstrap");
        need("depmod", "kmod");
        need("cpio", "cpio");
        let plain = cache().join("plain.tar");
        if !plain.exists() {
            let o = Command::new("bash")
                .arg(os_support::repo().join("fixtures/make-debian-rootfs.sh"))
                .arg(&plain)
                .env("VARIANT", "minbase")
                .env(
                    "PACKAGES",
                    "systemd,systemd-sysv,udev,iproute2,iputils-ping,kmod,klibc-utils",
                )
                .env("DOWNLOAD_ONLY", "linux-image-arm64")
                .output()
                .expect("running make-debian-rootfs.sh");
            ok(&o);
        }
        let o = Command::new("bash")
            .arg(os_support::repo().join("fixtures/make-boot-rootfs.sh"))
            .arg(&plain)
            .arg(&tar)
            .output()
            .expect("running make-boot-rootfs.sh");
        ok(&o);
    }
    tar
}

/// A base of `board` from the root tree (cached).
fn base(board: &str) -> PathBuf {
    base_from(board, &rootfs(), &format!("{board}.img"))
}

/// A base of `board` from `tar`, cached as `name`.
fn base_from(board: &str, tar: &Path, name: &str) -> PathBuf {
    let img = cache().join(name);
    let _l = lock(&format!("{board}.lock"));
    if !img.exists() {
        let mut c = nodeimg();
        c.args(["base", "--board", board, "--size", "2GiB", "--from"])
            .arg(tar)
            .args(["--enable", "systemd-networkd.service", "-o"])
            .arg(&img);
        if board == "rpi5" {
            // The EEPROM's boot files: QEMU never reads them, but a Pi 5
            // base must have them.
            let fw = cache().join("rpi5-firmware");
            fs::create_dir_all(fw.join("overlays")).unwrap();
            for f in [
                "config.txt",
                "kernel_2712.img",
                "bcm2712-rpi-5-b.dtb",
                "overlays/overlay_map.dtb",
            ] {
                fs::write(fw.join(f), b"").unwrap();
            }
            fs::write(fw.join("config.txt"), b"arm_64bit=1\n").unwrap();
            c.arg("--firmware").arg(&fw);
        }
        ok(&c.output().expect("nodeimg base"));
    }
    img
}

fn cluster(dir: &Path, board: &str, flavour: &str, nodes: &[(&str, Option<&str>)]) -> PathBuf {
    let mut s =
        format!("[cluster]\nname = \"boot-test\"\nboard = \"{board}\"\nflavour = \"{flavour}\"\n");
    if flavour == "kubeadm" {
        s.push_str("api_endpoint = \"10.77.0.1:6443\"\npod_subnet = \"10.244.64.0/18\"\nservice_subnet = \"10.244.0.0/20\"\n");
    }
    s.push_str(&format!(
        "\n[defaults]\nuser = \"root\"\nssh_keys = [\"{KEY}\"]\nage_key = \"generate\"\n"
    ));
    for (name, addr) in nodes {
        s.push_str(&format!("\n[[node]]\nhostname = \"{name}\"\n"));
        if let Some(a) = addr {
            s.push_str(&format!("address = \"{a}\"\n"));
        }
    }
    let p = dir.join("cluster.toml");
    fs::write(&p, s).unwrap();
    p
}

/// Stamps every node of `cluster` over `base` into DIR/out/NAME.delta.
fn stamp(dir: &Path, cluster: &Path, base: &Path) -> PathBuf {
    stamp_with(dir, cluster, base, &[])
}

fn stamp_with(dir: &Path, cluster: &Path, base: &Path, extra: &[&str]) -> PathBuf {
    let out = dir.join("out");
    ok(&nodeimg()
        .args(["stamp", "--all"])
        .args(extra)
        .arg("--config")
        .arg(cluster)
        .arg("--base")
        .arg(base)
        .arg("--out-dir")
        .arg(&out)
        .arg("--state")
        .arg(dir.join("cluster.state"))
        .arg("--init-state")
        .output()
        .expect("nodeimg stamp"));
    out
}

fn sha256(p: &Path) -> Vec<u8> {
    let mut f = fs::File::open(p).unwrap();
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    h.finalize().to_vec()
}

/// `nodeimg boot BASE --delta …` with --json: (exit code, results, stderr, seconds).
fn boot(
    dir: &Path,
    base: &Path,
    deltas: &[PathBuf],
    extra: &[&str],
) -> (i32, serde_json::Value, String, f64) {
    need("qemu-system-aarch64", "qemu-system-arm");
    let _l = lock("boot.lock");
    let mut c = nodeimg();
    c.arg("boot").arg(base);
    for d in deltas {
        c.arg("--delta").arg(d);
    }
    c.args(["--json", "--timeout", "420", "--log-dir"])
        .arg(dir.join("logs"))
        .args(extra);
    let t = Instant::now();
    let o = c.output().expect("nodeimg boot");
    let secs = t.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    eprintln!("{stderr}");
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "--json output ({e}): {}\n{stderr}",
            String::from_utf8_lossy(&o.stdout)
        )
    });
    (o.status.code().unwrap_or(-1), v, stderr, secs)
}

fn unit<'a>(node: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    node["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["unit"] == name)
        .unwrap_or_else(|| panic!("no {name} in {node}"))
}

/// One `none` node of `board`: first boot OK, SOURCE unchanged.
fn first_boot_ok(board: &str) {
    if board == "odroid-c4" {
        need_uboot();
    }
    let base = base(board);
    let t = tempfile::tempdir().unwrap();
    let c = cluster(t.path(), board, "none", &[("alpha", None)]);
    let out = stamp(t.path(), &c, &base);
    let delta = out.join("alpha.delta");
    let before = (sha256(&base), sha256(&delta));
    let (code, v, stderr, secs) = boot(t.path(), &base, std::slice::from_ref(&delta), &[]);
    assert_eq!(code, 0, "{v:#}\n{stderr}");
    let n = &v[0];
    assert_eq!(n["node"], "alpha");
    assert_eq!(n["outcome"], "ok");
    let fb = unit(n, "nodeimg-firstboot");
    assert_eq!(fb["result"], "ok");
    // The guest's own check: hostname and modes as stamped.
    let reports = fb["reports"].as_array().unwrap();
    assert!(reports.iter().all(|r| r["node"] == "alpha"), "{fb:#}");
    assert!(
        reports
            .iter()
            .any(|r| r["step"] == "identity" && r["status"] == "step"),
        "{fb:#}"
    );
    let list = fs::read_to_string(t.path().join("logs/alpha.log")).unwrap();
    assert!(list.contains("nodeimg-report: v1 node=alpha unit=nodeimg-firstboot status=ok"));
    if board == "odroid-c4" {
        // Booted as Tow-Boot boots the board: U-Boot read the environment
        // nodeimg gave it, found extlinux.conf by distro boot and inflated
        // Debian's gzip kernel itself (U-Boot's own console lines).
        assert_eq!(n["boot"], "u-boot, /boot/extlinux/extlinux.conf", "{n:#}");
        for line in [
            "Loading Environment from Flash... OK",
            "Retrieving file: /boot/extlinux/extlinux.conf",
            "Retrieving file: /boot/vmlinuz-",
            "Starting kernel ...",
        ] {
            assert!(list.contains(line), "{line:?} not in the console log");
        }
    }
    let boot_s = n["boot_seconds"].as_f64().unwrap();
    eprintln!("{board}: first boot reported after {boot_s:.0}s (nodeimg boot took {secs:.0}s)");
    assert!(secs < 180.0, "{board}: {secs:.0}s");
    assert_eq!((sha256(&base), sha256(&delta)), before, "SOURCE changed");
}

#[test]
fn rpi5_node_first_boot_ok() {
    first_boot_ok("rpi5");
}

#[test]
fn odroid_c4_node_first_boot_ok() {
    first_boot_ok("odroid-c4");
}

/// The stamped files the first-boot check covers: authorized_keys, host
/// key and age key, 0600.
#[test]
fn firstboot_list_covers_the_key_files() {
    let base = base("odroid-c4");
    let t = tempfile::tempdir().unwrap();
    let c = cluster(t.path(), "odroid-c4", "none", &[("alpha", None)]);
    let out = stamp(t.path(), &c, &base);
    let img = t.path().join("alpha.img");
    ok(&nodeimg()
        .args(["delta", "apply"])
        .arg(&base)
        .arg(out.join("alpha.delta"))
        .arg("-o")
        .arg(&img)
        .output()
        .unwrap());
    let o = nodeimg()
        .args(["fs", "cat", "--part", "1"])
        .arg(&img)
        .arg("/etc/nodeimg/firstboot.list")
        .output()
        .unwrap();
    let list = ok(&o);
    for line in [
        "hostname alpha",
        "file 600 0 0 /root/.ssh/authorized_keys",
        "file 600 0 0 /etc/ssh/ssh_host_ed25519_key",
        "file 600 0 0 /root/keys.txt",
    ] {
        assert!(list.lines().any(|l| l == line), "{line:?} not in {list}");
    }
}

/// A kubeadm worker over a base without kubeadm: booted, bootstrap failed
/// with its line, exit 6.
#[test]
fn failing_bootstrap_is_reported_with_its_line() {
    let base = base("odroid-c4");
    let t = tempfile::tempdir().unwrap();
    let c = cluster(
        t.path(),
        "odroid-c4",
        "kubeadm",
        &[
            ("controlplane", Some("10.77.0.1/24")),
            ("node0", Some("10.77.0.2/24")),
        ],
    );
    // Stamp checks the base for kubeadm; this test wants the node that a
    // base without it makes (what a base built elsewhere would give).
    let out = stamp_with(t.path(), &c, &base, &["--no-tool-check"]);
    // --direct: the extlinux image's kernel loaded by QEMU, no U-Boot (the
    // odroid test covers U-Boot).
    let (code, v, stderr, _) = boot(t.path(), &base, &[out.join("node0.delta")], &["--direct"]);
    assert_eq!(code, 6, "{v:#}\n{stderr}");
    let n = &v[0];
    assert_eq!(n["boot"], "direct, /boot/extlinux/extlinux.conf", "{n:#}");
    assert_eq!(n["outcome"], "failed");
    assert_eq!(unit(n, "nodeimg-firstboot")["result"], "ok");
    let b = unit(n, "nodeimg-bootstrap");
    assert_eq!(b["result"], "fail");
    assert!(
        b["msg"]
            .as_str()
            .unwrap()
            .contains("not installed in this image: kubeadm"),
        "{b:#}"
    );
}

/// U-Boot that finds no extlinux.conf entry it can boot (the default
/// entry's LINUX is not a kernel): "did not boot", exit 7, with U-Boot's
/// last lines, as soon as U-Boot gives up (not at the timeout).
#[test]
fn uboot_without_a_bootable_entry_did_not_boot() {
    need_uboot();
    // The base itself, copied: U-Boot never reaches a kernel, so nothing
    // needs stamping.
    let base = base("odroid-c4");
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("alpha.img");
    let o = Command::new("cp")
        .args(["--sparse=always", "--reflink=auto"])
        .arg(&base)
        .arg(&img)
        .output()
        .unwrap();
    ok(&o);
    let conf = t.path().join("extlinux.conf");
    fs::write(
        &conf,
        "DEFAULT broken\nLABEL broken\n  LINUX /etc/hostname\n  APPEND root=/dev/vda1 console=ttyAML0,115200n8\n",
    )
    .unwrap();
    ok(&nodeimg()
        .args(["fs", "put", "--part", "1"])
        .arg(&img)
        .arg(&conf)
        .arg("/boot/extlinux/extlinux.conf")
        .output()
        .unwrap());
    let (code, v, stderr, secs) = boot(t.path(), &img, &[], &["--node", "alpha"]);
    assert_eq!(code, 7, "{v:#}\n{stderr}");
    let n = &v[0];
    assert_eq!(n["outcome"], "no-boot", "{n:#}");
    assert_eq!(n["boot"], "u-boot, /boot/extlinux/extlinux.conf", "{n:#}");
    let last: Vec<&str> = n["last_lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    assert!(
        last.iter()
            .any(|l| l.contains("Retrieving file: /boot/extlinux/extlinux.conf")),
        "{last:#?}"
    );
    assert!(
        last.iter()
            .any(|l| l.starts_with("nodeimg: U-Boot booted nothing")),
        "{last:#?}"
    );
    // U-Boot gave up and reset; nodeimg did not wait for the timeout.
    assert!(secs < 120.0, "{secs:.0}s");
}

/// Two nodes on the virtual LAN reach each other by the cluster file's
/// addresses (the first-boot check pings its peers).
#[test]
fn two_nodes_ping_each_other_on_the_lan() {
    let base = base("odroid-c4");
    let t = tempfile::tempdir().unwrap();
    let c = cluster(
        t.path(),
        "odroid-c4",
        "none",
        &[
            ("alpha", Some("10.77.0.1/24")),
            ("beta", Some("10.77.0.2/24")),
        ],
    );
    let out = stamp(t.path(), &c, &base);
    let deltas = [out.join("alpha.delta"), out.join("beta.delta")];
    let (code, v, stderr, _) = boot(t.path(), &base, &deltas, &[]);
    assert_eq!(code, 0, "{v:#}\n{stderr}");
    for (i, peer) in [(0, "10.77.0.2"), (1, "10.77.0.1")] {
        let fb = unit(&v[i], "nodeimg-firstboot");
        let peers = fb["reports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["step"] == "peers")
            .unwrap_or_else(|| panic!("no peers step: {fb:#}"));
        assert!(
            peers["msg"]
                .as_str()
                .unwrap()
                .starts_with(&format!("reached: {peer};")),
            "{peers:#}"
        );
    }
}

/// SIGTERM mid-boot: exit 143, no QEMU left, no temporary file left.
#[test]
fn sigterm_mid_boot_leaves_nothing() {
    need("qemu-system-aarch64", "qemu-system-arm");
    let base = base("odroid-c4");
    let t = tempfile::tempdir().unwrap();
    let c = cluster(t.path(), "odroid-c4", "none", &[("alpha", None)]);
    let out = stamp(t.path(), &c, &base);
    let tmp = t.path().join("tmp");
    fs::create_dir(&tmp).unwrap();
    let _l = lock("boot.lock");
    let child = nodeimg()
        .arg("boot")
        .arg(&base)
        .arg("--delta")
        .arg(out.join("alpha.delta"))
        .arg("--log-dir")
        .arg(t.path().join("logs"))
        .env("TMPDIR", &tmp)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the guest runs (its console log has kernel lines).
    let log = t.path().join("logs/alpha.log");
    let until = Instant::now() + Duration::from_secs(120);
    while fs::metadata(&log).map(|m| m.len()).unwrap_or(0) < 2000 {
        assert!(Instant::now() < until, "the guest never printed");
        std::thread::sleep(Duration::from_millis(200));
    }
    let qemus = || -> Vec<String> {
        fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains("qemu-system-aarch64") && c.contains(tmp.to_str().unwrap()))
            .collect()
    };
    assert_eq!(qemus().len(), 1, "one QEMU runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(143),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(qemus().is_empty(), "QEMU left: {:?}", qemus());
    let left: Vec<_> = fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

// ---- --kernel as a Debian kernel package ----

/// The root before the kernel was unpacked (make-debian-rootfs.sh's
/// output, plain.tar): no kernel in /boot, Debian's linux-image .deb in
/// its apt cache, klibc-utils installed. Made into an RPi-5 base (cached).
fn plain_rpi5_base() -> PathBuf {
    rootfs(); // builds plain.tar with it
    base_from("rpi5", &cache().join("plain.tar"), "rpi5-plain.img")
}

/// Debian's linux-image-VERSION-arm64 .deb, taken from plain.tar's apt
/// cache (cached beside it).
fn kernel_deb() -> PathBuf {
    rootfs();
    let _l = lock("kernel-deb.lock");
    let plain = cache().join("plain.tar");
    let list = Command::new("tar").arg("-tf").arg(&plain).output().unwrap();
    let member = String::from_utf8_lossy(&ok(&list).into_bytes())
        .lines()
        .filter(|l| {
            // linux-image-6.1.0-50-arm64_…, not the metapackage
            // linux-image-arm64_….
            l.rsplit('/')
                .next()
                .and_then(|n| n.strip_prefix("linux-image-"))
                .is_some_and(|v| {
                    v.starts_with(|c: char| c.is_ascii_digit()) && v.ends_with("_arm64.deb")
                })
        })
        .max()
        .expect("a linux-image-*-arm64 .deb in plain.tar's apt cache")
        .to_string();
    let name = member.rsplit('/').next().unwrap().to_string();
    let out = cache().join(&name);
    if !out.exists() {
        let tmp = cache().join("kernel-deb.tmp");
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).unwrap();
        ok(&Command::new("tar")
            .arg("-C")
            .arg(&tmp)
            .arg("-xf")
            .arg(&plain)
            .arg(&member)
            .output()
            .unwrap());
        fs::rename(tmp.join(&member), &out).unwrap();
        fs::remove_dir_all(&tmp).unwrap();
    }
    out
}

/// An HTTP server on 127.0.0.1 serving one file at `/NAME`, stopped on drop.
struct Served {
    url: String,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    port: u16,
}

fn serve_file(path: &Path) -> Served {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::Ordering;
    let body = fs::read(path).unwrap();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (h, st, want) = (hits.clone(), stop.clone(), format!("/{name}"));
    std::thread::spawn(move || {
        for conn in l.incoming() {
            if st.load(Ordering::SeqCst) {
                return;
            }
            let Ok(mut s) = conn else { return };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            loop {
                let mut hl = String::new();
                if r.read_line(&mut hl).unwrap_or(0) == 0 || hl == "\r\n" {
                    break;
                }
            }
            if path != want {
                let _ = s.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            h.fetch_add(1, Ordering::SeqCst);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    Served {
        url: format!("http://127.0.0.1:{port}/{name}"),
        hits,
        stop,
        port,
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes the accept loop so that it sees `stop`.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Every file under `dir` (none when it does not exist).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// An RPi-5 node whose /boot has no generic kernel boots Debian's kernel
/// package downloaded by URL (from a server on 127.0.0.1), unpacked with
/// an initramfs made from the image's klibc-utils: first boot `ok`. The
/// package is cached under its SHA-256 in XDG_CACHE_HOME/nodeimg.
#[test]
fn rpi5_node_boots_a_kernel_package_from_a_url() {
    let base = plain_rpi5_base();
    let deb = kernel_deb();
    let t = tempfile::tempdir().unwrap();
    let c = cluster(t.path(), "rpi5", "none", &[("alpha", None)]);
    let out = stamp(t.path(), &c, &base);
    let delta = out.join("alpha.delta");
    let before = (sha256(&base), sha256(&delta));
    let sha = hex(&sha256(&deb));
    let server = serve_file(&deb);
    let url = server.url.clone();
    let xdg = t.path().join("xdg");
    std::env::set_var("XDG_CACHE_HOME", &xdg);
    let (code, v, stderr, secs) = boot(
        t.path(),
        &base,
        std::slice::from_ref(&delta),
        &["--kernel", &server.url, "--kernel-sha256", &sha],
    );
    drop(server);
    assert_eq!(code, 0, "{v:#}\n{stderr}");
    let n = &v[0];
    assert_eq!(n["outcome"], "ok", "{n:#}");
    assert_eq!(unit(n, "nodeimg-firstboot")["result"], "ok");
    let log = fs::read_to_string(t.path().join("logs/alpha.log")).unwrap();
    assert!(log.contains("nodeimg-report: v1 node=alpha unit=nodeimg-firstboot status=ok"));
    // The kernel that ran is the package's.
    let version = deb
        .file_name()
        .unwrap()
        .to_string_lossy()
        .split('_')
        .next()
        .unwrap()
        .trim_start_matches("linux-image-")
        .to_string();
    assert!(
        log.contains(&version),
        "kernel {version} not in the console log"
    );
    let cached = xdg
        .join("nodeimg")
        .join(&sha)
        .join(deb.file_name().unwrap());
    assert_eq!(sha256(&cached), sha256(&deb), "not cached by its hash");
    // A re-run (the server is gone) takes the package from the cache: it
    // is unpacked, and only the stand-in SOURCE is refused.
    let stub = t.path().join("stub.img");
    fs::write(&stub, b"not an image").unwrap();
    let (_, err) = boot_refused(
        &[
            stub.as_os_str(),
            "--kernel".as_ref(),
            url.as_ref(),
            "--kernel-sha256".as_ref(),
            sha.as_ref(),
            "--log-dir".as_ref(),
            t.path().join("logs2").as_os_str(),
        ],
        &[("XDG_CACHE_HOME", &xdg)],
    );
    assert!(err.contains("modules in the initramfs)"), "{err}");
    assert!(err.contains("stub"), "{err}");
    eprintln!(
        "kernel package boot: first boot after {:.0}s (nodeimg boot took {secs:.0}s)",
        n["boot_seconds"].as_f64().unwrap_or(-1.0)
    );
    assert_eq!((sha256(&base), sha256(&delta)), before, "SOURCE changed");
}

/// `nodeimg boot` run for a refusal: (exit code, stderr).
fn boot_refused(args: &[&std::ffi::OsStr], env: &[(&str, &Path)]) -> (i32, String) {
    let mut c = nodeimg();
    c.arg("boot").args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    (o.status.code().unwrap_or(-1), err)
}

/// The one `nodeimg: error:` line of `stderr` (progress lines aside).
fn error_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("nodeimg: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "one error line: {stderr}");
    lines[0]
}

/// A package whose SHA-256 is not the one given is refused (exit 3) and
/// nothing is left in the cache; a URL without --kernel-sha256 is a usage
/// error (exit 2) that downloads nothing.
#[test]
fn kernel_package_with_a_wrong_hash_is_refused_and_not_cached() {
    let deb = kernel_deb();
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("node.img");
    fs::write(&img, b"never booted").unwrap();
    let server = serve_file(&deb);
    let xdg = t.path().join("xdg");
    let wrong = "0".repeat(64);
    let (code, err) = boot_refused(
        &[
            img.as_os_str(),
            "--kernel".as_ref(),
            server.url.as_ref(),
            "--kernel-sha256".as_ref(),
            wrong.as_ref(),
            "--json".as_ref(),
        ],
        &[("XDG_CACHE_HOME", &xdg)],
    );
    assert_eq!(code, 3, "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains("SHA-256") && err.contains(&wrong), "{err}");
    assert!(
        files_under(&xdg).is_empty(),
        "kept: {:?}",
        files_under(&xdg)
    );
    assert!(
        fs::read_dir(xdg.join("nodeimg"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        "a directory was left in the cache"
    );
    let hits = server.hits.load(std::sync::atomic::Ordering::SeqCst);
    let (code, err) = boot_refused(
        &[img.as_os_str(), "--kernel".as_ref(), server.url.as_ref()],
        &[("XDG_CACHE_HOME", &xdg)],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--kernel-sha256"), "{err}");
    // A path is checked against --kernel-sha256 too.
    let (code, err) = boot_refused(
        &[
            img.as_os_str(),
            "--kernel".as_ref(),
            deb.as_os_str(),
            "--kernel-sha256".as_ref(),
            wrong.as_ref(),
        ],
        &[("XDG_CACHE_HOME", &xdg)],
    );
    assert_eq!(code, 3, "{err}");
    assert!(error_line(&err).contains(&wrong), "{err}");
    assert_eq!(
        server.hits.load(std::sync::atomic::Ordering::SeqCst),
        hits,
        "downloaded without a hash"
    );
}

/// A truncated package (a download cut short, given by path) gets one
/// clear line and exit 3 before any guest starts, and leaves no
/// temporary file.
#[test]
fn truncated_kernel_package_gets_one_clear_line() {
    need("qemu-system-aarch64", "qemu-system-arm");
    let deb = kernel_deb();
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("node.img");
    fs::write(&img, b"never booted").unwrap();
    let bytes = fs::read(&deb).unwrap();
    let cut = t.path().join("linux-image-cut_arm64.deb");
    fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let tmp = t.path().join("tmp");
    fs::create_dir(&tmp).unwrap();
    let (code, err) = boot_refused(
        &[
            img.as_os_str(),
            "--kernel".as_ref(),
            cut.as_os_str(),
            "--log-dir".as_ref(),
            t.path().join("logs").as_os_str(),
        ],
        &[("TMPDIR", &tmp)],
    );
    assert_eq!(code, 3, "{err}");
    let line = error_line(&err);
    assert!(line.contains("linux-image-cut_arm64.deb"), "{err}");
    assert!(line.contains("truncated"), "{err}");
    assert!(files_under(&tmp).is_empty(), "temporary files left");
}

/// --firstboot-only (the CI job's mode): a kubeadm worker whose bootstrap
/// would fail is judged by its first-boot check alone, exit 0, and no
/// bootstrap result is waited for.
#[test]
fn firstboot_only_does_not_wait_for_the_kernel_package_nodes_bootstrap() {
    let base = plain_rpi5_base();
    let deb = kernel_deb();
    let t = tempfile::tempdir().unwrap();
    let c = cluster(
        t.path(),
        "rpi5",
        "kubeadm",
        &[
            ("controlplane", Some("10.77.0.1/24")),
            ("node0", Some("10.77.0.2/24")),
        ],
    );
    let out = stamp_with(t.path(), &c, &base, &["--no-tool-check"]);
    let (code, v, stderr, _) = boot(
        t.path(),
        &base,
        &[out.join("node0.delta")],
        &["--kernel", deb.to_str().unwrap(), "--firstboot-only"],
    );
    assert_eq!(code, 0, "{v:#}\n{stderr}");
    let units = v[0]["units"].as_array().unwrap();
    assert_eq!(units.len(), 1, "{units:#?}");
    assert_eq!(units[0]["unit"], "nodeimg-firstboot");
    assert_eq!(units[0]["result"], "ok");
}

/// An image without klibc-utils (the demo stand-in) cannot get an
/// initramfs for a kernel package: refused with one line naming the
/// package to install, exit 3, before any guest starts.
#[test]
fn kernel_package_over_an_image_without_klibc_is_refused() {
    need("qemu-system-aarch64", "qemu-system-arm");
    need("zstd", "zstd");
    let deb = kernel_deb();
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("demo.img");
    ok(&Command::new("zstd")
        .args(["-dq"])
        .arg(os_support::repo().join("fixtures/demo-rpi5.img.zst"))
        .arg("-o")
        .arg(&img)
        .output()
        .unwrap());
    let tmp = t.path().join("tmp");
    fs::create_dir(&tmp).unwrap();
    let (code, err) = boot_refused(
        &[
            img.as_os_str(),
            "--kernel".as_ref(),
            deb.as_os_str(),
            "--log-dir".as_ref(),
            t.path().join("logs").as_os_str(),
        ],
        &[("TMPDIR", &tmp)],
    );
    assert_eq!(code, 3, "{err}");
    let line = error_line(&err);
    assert!(
        line.contains("klibc-utils") && line.contains("--initrd"),
        "{err}"
    );
    assert!(files_under(&tmp).is_empty(), "temporary files left");
    // --initrd replaces the initramfs nodeimg would make: no klibc-utils
    // needed, the guest starts (and, a stand-in, never reports: exit 7).
    let initrd = t.path().join("initrd.img");
    fs::write(&initrd, b"").unwrap();
    let _l = lock("boot.lock");
    let (code, err) = boot_refused(
        &[
            img.as_os_str(),
            "--kernel".as_ref(),
            deb.as_os_str(),
            "--initrd".as_ref(),
            initrd.as_os_str(),
            "--timeout".as_ref(),
            "3".as_ref(),
            "--log-dir".as_ref(),
            t.path().join("logs").as_os_str(),
        ],
        &[("TMPDIR", &tmp)],
    );
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("booting"), "{err}");
    assert!(files_under(&tmp).is_empty(), "temporary files left");
}

fn report_msg(node: &serde_json::Value, step: &str) -> String {
    let fb = unit(node, "nodeimg-firstboot");
    fb["reports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["step"] == step)
        .unwrap_or_else(|| panic!("no {step} step: {fb:#}"))["msg"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A static node and a DHCP node (no `address`) of one build on one LAN:
/// the DHCP node configures itself from what stamp wrote, takes the lease
/// nodeimg's server on the LAN holds for its MAC, and the two ping each
/// other by address (the static node learns the lease from `nodeimg boot`).
#[test]
fn dhcp_node_takes_its_lease_and_reaches_the_static_node() {
    let base = base("odroid-c4");
    let t = tempfile::tempdir().unwrap();
    let c = cluster(
        t.path(),
        "odroid-c4",
        "none",
        &[("alpha", Some("10.77.0.1/24")), ("beta", None)],
    );
    let out = stamp(t.path(), &c, &base);
    let deltas = [out.join("alpha.delta"), out.join("beta.delta")];
    let before = sha256(&deltas[1]);
    let (code, v, stderr, _) = boot(t.path(), &base, &deltas, &[]);
    assert_eq!(code, 0, "{v:#}\n{stderr}");
    // The table's (here JSON's) address: the static one, and the lease
    // the guest took.
    assert_eq!(v[0]["address"], "10.77.0.1/24", "{v:#}");
    assert_eq!(v[0]["address_from"], "static");
    assert_eq!(v[1]["address"], "10.77.0.100/24", "{v:#}");
    assert_eq!(v[1]["address_from"], "dhcp");
    // The guests' own view.
    assert_eq!(report_msg(&v[1], "address"), "10.77.0.100/24 (dhcp)");
    assert_eq!(report_msg(&v[0], "address"), "10.77.0.1/24 (static)");
    let peers = report_msg(&v[1], "peers");
    assert!(peers.starts_with("reached: 10.77.0.1;"), "{peers}");
    let peers = report_msg(&v[0], "peers");
    assert!(peers.starts_with("reached: 10.77.0.100;"), "{peers}");
    // The peer line went into the throw-away disk only.
    assert_eq!(sha256(&deltas[1]), before);
}

fn fs_cat(img: &Path, path: &str) -> Option<String> {
    let o = nodeimg()
        .args(["fs", "cat", "--part", "1"])
        .arg(img)
        .arg(path)
        .output()
        .unwrap();
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// A sparse copy of `base` (with its manifest) to change.
fn base_copy(dir: &Path, base: &Path) -> PathBuf {
    let own = dir.join("own.img");
    ok(&Command::new("cp")
        .args(["--sparse=always"])
        .arg(base)
        .arg(&own)
        .output()
        .unwrap());
    let mut manifest = base.as_os_str().to_owned();
    manifest.push(".json");
    fs::copy(&manifest, dir.join("own.img.json")).unwrap();
    own
}

fn fs_put(dir: &Path, img: &Path, path: &str, text: &str) {
    let local = dir.join("put.tmp");
    fs::write(&local, text).unwrap();
    ok(&nodeimg()
        .args(["fs", "put", "--part", "1"])
        .arg(img)
        .arg(&local)
        .arg(path)
        .output()
        .unwrap());
}

fn fs_do(img: &Path, args: &[&str]) {
    let (cmd, rest) = args.split_first().unwrap();
    ok(&nodeimg()
        .args(["fs", cmd, "--part", "1"])
        .arg(img)
        .args(rest)
        .output()
        .unwrap());
}

fn node_image(dir: &Path, base: &Path, out: &Path, name: &str) -> PathBuf {
    let img = dir.join(format!("{name}.img"));
    ok(&nodeimg()
        .args(["delta", "apply"])
        .arg(base)
        .arg(out.join(format!("{name}.delta")))
        .arg("-o")
        .arg(&img)
        .output()
        .unwrap());
    img
}

/// What stamp writes for a DHCP node over the boot root (systemd-networkd
/// enabled, no `.network` file): a networkd unit asking DHCP, and its
/// network in the first-boot list; over a base with a `.network` file of
/// its own, no unit (the base's configuration wins).
#[test]
fn dhcp_node_gets_a_networkd_dhcp_unit_unless_the_base_has_one() {
    let base = base("odroid-c4");
    let t = tempfile::tempdir().unwrap();
    let c = cluster(
        t.path(),
        "odroid-c4",
        "none",
        &[("alpha", Some("10.77.0.1/24")), ("beta", None)],
    );
    let out = stamp(t.path(), &c, &base);
    let beta = node_image(t.path(), &base, &out, "beta");
    let unit = "/etc/systemd/network/10-nodeimg.network";
    let net = fs_cat(&beta, unit).expect("a networkd unit");
    assert!(
        net.contains("[Match]\nType=ether\n\n[Network]\nDHCP=yes\n") && !net.contains("Address="),
        "{net}"
    );
    let list = fs_cat(&beta, "/etc/nodeimg/firstboot.list").unwrap();
    assert!(list.lines().any(|l| l == "address dhcp"), "{list}");
    assert!(list.lines().any(|l| l == "peer 10.77.0.1"), "{list}");
    let alpha = node_image(t.path(), &base, &out, "alpha");
    let list = fs_cat(&alpha, "/etc/nodeimg/firstboot.list").unwrap();
    assert!(list.lines().any(|l| l == "address 10.77.0.1/24"), "{list}");
    assert!(fs_cat(&alpha, unit)
        .unwrap()
        .contains("Address=10.77.0.1/24\n"));

    // The same base with a .network file of its own.
    let own = base_copy(t.path(), &base);
    fs_put(
        t.path(),
        &own,
        "/etc/systemd/network/50-lan.network",
        "[Match]\nName=end0\n\n[Network]\nDHCP=ipv4\n",
    );
    let t2 = tempfile::tempdir().unwrap();
    let c2 = cluster(t2.path(), "odroid-c4", "none", &[("beta", None)]);
    let out2 = stamp(t2.path(), &c2, &own);
    let beta = node_image(t2.path(), &own, &out2, "beta");
    assert_eq!(fs_cat(&beta, unit), None, "the base's own .network wins");
    assert!(fs_cat(&beta, "/etc/systemd/network/50-lan.network").is_some());
}

/// An ifupdown base (networkd not enabled, /etc/network/interfaces with
/// only `lo`): a DHCP node gets an `inet dhcp` stanza for eth0; a base
/// whose interfaces file configures an interface gets none.
#[test]
fn dhcp_node_on_ifupdown_gets_an_inet_dhcp_stanza() {
    let base = base("odroid-c4");
    let t = tempfile::tempdir().unwrap();
    let own = base_copy(t.path(), &base);
    for wants in [
        "multi-user.target.wants/systemd-networkd.service",
        "network-online.target.wants/systemd-networkd-wait-online.service",
    ] {
        fs_do(&own, &["rm", &format!("/etc/systemd/system/{wants}")]);
    }
    let _ = nodeimg()
        .args(["fs", "mkdir", "--part", "1"])
        .arg(&own)
        .arg("/etc/network")
        .output();
    let lo = "auto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n";
    fs_put(t.path(), &own, "/etc/network/interfaces", lo);
    let _ = nodeimg()
        .args(["fs", "mkdir", "--part", "1"])
        .arg(&own)
        .arg("/etc/network/interfaces.d")
        .output();
    let c = cluster(t.path(), "odroid-c4", "none", &[("beta", None)]);
    let out = stamp(t.path(), &c, &own);
    let beta = node_image(t.path(), &own, &out, "beta");
    let stanza = fs_cat(&beta, "/etc/network/interfaces.d/nodeimg").expect("a stanza");
    assert!(
        stanza.ends_with("allow-hotplug eth0\niface eth0 inet dhcp\n"),
        "{stanza}"
    );
    assert_eq!(
        fs_cat(&beta, "/etc/systemd/network/10-nodeimg.network"),
        None
    );

    // The base configures eth0 itself: nothing is added.
    fs_put(
        t.path(),
        &own,
        "/etc/network/interfaces",
        &format!("{lo}\nallow-hotplug eth0\niface eth0 inet dhcp\n"),
    );
    let t2 = tempfile::tempdir().unwrap();
    let c2 = cluster(t2.path(), "odroid-c4", "none", &[("beta", None)]);
    let out2 = stamp(t2.path(), &c2, &own);
    let beta = node_image(t2.path(), &own, &out2, "beta");
    assert_eq!(fs_cat(&beta, "/etc/network/interfaces.d/nodeimg"), None);
}
