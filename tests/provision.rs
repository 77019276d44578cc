//! `[base] provision`: scripts run as root inside a real Debian arm64 root
//! (mmdebstrap minbase, apt's lists kept) through the kernel's aarch64
//! binfmt_misc handler. The mechanism tests that cannot run here (not root,
//! no aarch64 handler, no route to Debian's archive) fail under `CI` and
//! elsewhere skip, saying why (`os_support::skip`); the tests of the shipped
//! recipes (templates/provision) always fail instead, naming what is
//! missing. Those run the recipes against a local mirror the test builds
//! and serves on 127.0.0.1: stand-in .debs (dpkg-deb) in flat apt
//! repositories laid out like pkgs.k8s.io, indexed by apt-ftparchive and
//! signed (InRelease, Release.gpg) with a throwaway gpg key whose public half
//! is the served Release.key, so the recipes' signed-by keyrings are really
//! checked; a k3s and a helm release with their checksum files beside them.
//!
//! The Debian tree and a plain base made from it are built once and cached
//! under the target directory; each test builds a provisioned base from the
//! cached plain one (a disk-image source), so only the provisioning varies.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod os_support;

/// Why this machine cannot run the provisioning tests, if it cannot.
fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (loop devices, mounts, chroot)".into());
    }
    if std::env::consts::ARCH == "aarch64" {
        return None;
    }
    let registered = fs::read_dir("/proc/sys/fs/binfmt_misc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path()).ok())
        .any(|t| {
            t.starts_with("enabled")
                && t.contains("magic 7f454c460201010000000000000000000200b700")
                && t.lines()
                    .any(|l| l.starts_with("flags:") && l.contains('F'))
        });
    (!registered).then(|| {
        "no aarch64 binfmt_misc handler with the F flag (apt-get install qemu-user-static binfmt-support; update-binfmts --enable qemu-aarch64)".into()
    })
}

/// The cached plain base (odroid-c4 layout of a Debian arm64 minbase tree).
fn plain_base() -> Result<PathBuf, String> {
    cached_base(
        &Path::new(env!("CARGO_TARGET_TMPDIR")).join("debian-provision-v1"),
        "ca-certificates",
    )
}

/// Where slow fixtures are kept for every worktree and run:
/// `$NODEIMG_FIXTURE_CACHE`, else `target/fixture-cache`.
fn fixture_cache() -> PathBuf {
    match std::env::var_os("NODEIMG_FIXTURE_CACHE") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("target/tmp has a parent")
            .join("fixture-cache"),
    }
}

/// The plain base the recipes run in: a Debian arm64 minbase with what
/// Raspberry Pi OS Lite has and the recipes use (curl, gpg, systemd for
/// `systemctl enable`), cached under [`fixture_cache`].
fn recipe_base() -> Result<PathBuf, String> {
    cached_base(
        &fixture_cache().join("debian-recipes-v1"),
        "ca-certificates,curl,gpg,systemd",
    )
}

/// A Debian arm64 minbase tree with `packages`, laid out for the
/// odroid-c4 by a plain `nodeimg base`, built once into `dir`.
fn cached_base(dir: &Path, packages: &str) -> Result<PathBuf, String> {
    fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let lock = fs::File::create(dir.join("lock")).map_err(|e| e.to_string())?;
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e.to_string())?;
    let tar = dir.join("rootfs.tar");
    if !tar.exists() {
        let o = Command::new("bash")
            .arg(os_support::repo().join("fixtures/make-debian-rootfs.sh"))
            .arg(&tar)
            .env("VARIANT", "minbase")
            .env("PACKAGES", packages)
            .env("BOOT_PLACEHOLDER", "1")
            .output()
            .map_err(|e| format!("mmdebstrap: {e}"))?;
        if !o.status.success() || !tar.exists() {
            return Err(format!(
                "make-debian-rootfs.sh failed (no network to Debian's archive?): {}",
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ));
        }
    }
    let img = dir.join("plain.img");
    if !img.exists() {
        let tmp = dir.join("plain.img.tmp");
        let o = nodeimg()
            .args([
                "base",
                "--board",
                "odroid-c4",
                "--size",
                "1GiB",
                "--force",
                "--from",
            ])
            .arg(&tar)
            .arg("-o")
            .arg(&tmp)
            .output()
            .map_err(|e| e.to_string())?;
        // Our own tool failing is a failure, never a reason to skip.
        assert!(
            o.status.success(),
            "nodeimg base (plain): {}",
            String::from_utf8_lossy(&o.stderr)
        );
        fs::rename(&tmp, &img).map_err(|e| e.to_string())?;
    }
    Ok(img)
}

fn nodeimg() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nodeimg"))
}

macro_rules! setup {
    ($name:literal) => {
        match skip_reason().map(Err).unwrap_or_else(plain_base) {
            Ok(p) => p,
            Err(why) => {
                os_support::skip($name, &why);
                return;
            }
        }
    };
}

/// The root partition's byte offset (the Linux partition of the MBR).
fn root_offset(img: &Path) -> u64 {
    let o = Command::new("sfdisk")
        .arg("--json")
        .arg(img)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let parts = v["partitiontable"]["partitions"].as_array().unwrap();
    let p = parts.iter().find(|p| p["type"] == "83").unwrap();
    p["start"].as_u64().unwrap() * 512
}

fn debugfs(img: &Path, req: &str) -> String {
    let spec = format!("{}?offset={}", img.display(), root_offset(img));
    let o = Command::new("debugfs")
        .args(["-R", req, &spec])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

fn exists(img: &Path, path: &str) -> bool {
    !debugfs(img, &format!("stat {path}")).contains("File not found")
}

/// Nothing of ours is mounted (host table) or attached.
fn assert_nothing_left(dir: &Path) {
    let m = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!m.contains("nodeimg-provision."), "left mounted:\n{m}");
    let l = Command::new("losetup").arg("-a").output().unwrap();
    let l = String::from_utf8_lossy(&l.stdout);
    let d = dir.to_string_lossy();
    assert!(!l.contains(&*d), "left attached:\n{l}");
}

/// Watches the host's mount table during a run for the image's mounts.
struct Watch {
    seen: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    t: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    fn start() -> Watch {
        let seen = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let t = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                if let Ok(m) = fs::read_to_string("/proc/self/mountinfo") {
                    if m.contains("nodeimg-provision.") {
                        s.store(true, Ordering::SeqCst);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Watch {
            seen,
            stop,
            t: Some(t),
        }
    }
    fn saw_mounts(mut self) -> bool {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.t.take() {
            t.join().unwrap();
        }
        self.seen.load(Ordering::SeqCst)
    }
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, body).unwrap();
    p
}

fn base_with(plain: &Path, out: &Path, scripts: &[&Path], files: Option<&Path>) -> Command {
    let mut c = nodeimg();
    c.args(["base", "--board", "odroid-c4", "--from"])
        .arg(plain)
        .arg("-o")
        .arg(out);
    for s in scripts {
        c.arg("--provision").arg(s);
    }
    if let Some(f) = files {
        c.arg("--provision-files").arg(f);
    }
    c
}

/// Heavy: apt-get installs `hello` (arm64, from Debian's archive when the
/// cached lists are stale) under emulation; a minute or two.
#[test]
fn apt_install_in_the_aarch64_root() {
    let plain = setup!("apt_install_in_the_aarch64_root");
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    fs::create_dir(&files).unwrap();
    fs::write(files.join("marker.txt"), "from provision_files\n").unwrap();
    let s = script(
        dir.path(),
        "install.sh",
        "#!/bin/sh\nset -eu\n\
         test \"$(uname -m)\" = aarch64\n\
         test \"$HOME\" = /root && test \"$DEBIAN_FRONTEND\" = noninteractive\n\
         apt-get install -y --no-install-recommends hello || { apt-get update && apt-get install -y --no-install-recommends hello; }\n\
         hello\n\
         cat marker.txt > /etc/nodeimg-marker\n\
         echo 'nodeimg-test' > /run/should-not-persist\n",
    );
    let out = dir.path().join("base.img");
    let watch = Watch::start();
    let o = base_with(&plain, &out, &[&s], Some(&files))
        .output()
        .unwrap();
    let saw = watch.saw_mounts();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!saw, "the host's mount table showed the image's mounts");
    assert!(err.contains("provision: Hello, world!"), "{err}");
    let log = fs::read_to_string(dir.path().join("base.img.provision.log")).unwrap();
    assert!(log.contains("Setting up hello"), "{log}");
    assert!(exists(&out, "/usr/bin/hello"));
    assert!(exists(&out, "/usr/share/doc/hello/copyright"));
    let marker = debugfs(&out, "cat /etc/nodeimg-marker");
    assert!(marker.contains("from provision_files"), "{marker}");
    // Temporary things are gone; the image's own resolv.conf state is back.
    assert!(!exists(&out, "/usr/sbin/policy-rc.d"));
    assert!(!exists(&out, "/run/nodeimg-provision"));
    assert!(!exists(&out, "/run/should-not-persist"));
    assert_eq!(
        exists(&plain, "/etc/resolv.conf"),
        exists(&out, "/etc/resolv.conf")
    );
    let spec = format!("{}?offset={}", out.display(), root_offset(&out));
    let fsck = Command::new("e2fsck")
        .args(["-fn", &spec])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let dump = Command::new("dumpe2fs")
        .args(["-h", &spec])
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(!dump.contains("needs_recovery"), "{dump}");
    assert!(dump.contains("Filesystem state:         clean"), "{dump}");
    assert_nothing_left(dir.path());
}

#[test]
fn failing_script_reports_its_status_and_leaves_nothing() {
    let plain = setup!("failing_script_reports_its_status_and_leaves_nothing");
    let dir = tempfile::tempdir().unwrap();
    let s = script(dir.path(), "fail.sh", "echo about to fail\nexit 3\n");
    let out = dir.path().join("base.img");
    let o = base_with(&plain, &out, &[&s], None).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("exited with status 3"), "{err}");
    assert!(err.contains("provision: about to fail"), "{err}");
    assert!(!out.exists());
    let left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("base.img") && !n.ends_with(".provision.log"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_nothing_left(dir.path());
}

#[test]
fn sigterm_while_the_script_runs_undoes_everything() {
    let plain = setup!("sigterm_while_the_script_runs_undoes_everything");
    let dir = tempfile::tempdir().unwrap();
    let s = script(dir.path(), "sleep.sh", "echo sleeping\nsleep 300\n");
    let out = dir.path().join("base.img");
    let mut child = base_with(&plain, &out, &[&s], None)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while err.read_line(&mut line).unwrap() > 0 {
        seen.push_str(&line);
        if line.contains("provision: sleeping") {
            break;
        }
        line.clear();
    }
    assert!(seen.contains("provision: sleeping"), "{seen}");
    let started = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let st = child.wait().unwrap();
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(!st.success());
    assert!(rest.contains("interrupted"), "{rest}");
    assert!(!out.exists());
    assert_nothing_left(dir.path());
}

#[test]
fn services_do_not_start_while_provisioning() {
    let plain = setup!("services_do_not_start_while_provisioning");
    let dir = tempfile::tempdir().unwrap();
    let s = script(
        dir.path(),
        "service.sh",
        "#!/bin/sh\nset -u\n\
         test -x /usr/sbin/policy-rc.d || exit 9\n\
         printf '#!/bin/sh\\ntouch /root/service-started\\n' > /etc/init.d/nodeimg-test\n\
         chmod 755 /etc/init.d/nodeimg-test\n\
         invoke-rc.d nodeimg-test start; echo \"invoke-rc.d: $?\"\n\
         rm /etc/init.d/nodeimg-test\n",
    );
    let out = dir.path().join("base.img");
    let o = base_with(&plain, &out, &[&s], None).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    // invoke-rc.d asks policy-rc.d, is told 101, and skips the start.
    assert!(
        err.contains("policy-rc.d denied execution of start"),
        "{err}"
    );
    assert!(!exists(&out, "/root/service-started"));
    assert!(!exists(&out, "/usr/sbin/policy-rc.d"));
    assert_nothing_left(dir.path());
}

// ---------------------------------------------------------------------------
// The shipped recipes (templates/provision) against a local mirror.

/// A program the recipe tests need, or a failure naming its package.
fn need(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(found, "{tool} not found: apt-get install {package}");
}

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn recipes_pass_shellcheck() {
    need("shellcheck", "shellcheck");
    let dir = os_support::repo().join("templates/provision");
    let mut scripts: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sh"))
        .collect();
    scripts.sort();
    assert_eq!(scripts.len(), 3, "{scripts:?}");
    scripts.push(dir.join("lib/download.sh"));
    run(Command::new("shellcheck").args(["-s", "sh"]).args(&scripts));
}

/// A static file server on 127.0.0.1 for the test's mirror; stopped on drop.
struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    t: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(root: &Path) -> Server {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let (st, root) = (stop.clone(), root.to_path_buf());
        let t = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let root = root.clone();
                std::thread::spawn(move || serve(conn, &root));
            }
        });
        Server {
            port,
            stop,
            t: Some(t),
        }
    }
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.t.take() {
            let _ = t.join();
        }
    }
}

/// One request: GET or HEAD of a file under `root` (percent-decoded path),
/// answered and closed.
fn serve(mut conn: std::net::TcpStream, root: &Path) {
    use std::io::Write;
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() {
        return;
    }
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    let mut words = first.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or("/"));
    let path = target.split('?').next().unwrap_or("/");
    let mut bytes = Vec::new();
    let raw = path.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' && i + 2 < raw.len() {
            if let Ok(b) = u8::from_str_radix(&path[i + 1..i + 3], 16) {
                bytes.push(b);
                i += 3;
                continue;
            }
        }
        bytes.push(raw[i]);
        i += 1;
    }
    let rel = String::from_utf8_lossy(&bytes)
        .trim_start_matches('/')
        .to_string();
    let file = root.join(&rel);
    let body = if rel.split('/').any(|c| c == "..") {
        None
    } else {
        fs::read(&file).ok().filter(|_| file.is_file())
    };
    let _ = match body {
        Some(b) => {
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                b.len()
            );
            if method == "HEAD" {
                Ok(())
            } else {
                conn.write_all(&b)
            }
        }
        None => write!(
            conn,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    };
}

/// A throwaway OpenPGP key that signs the mirror's Release files.
struct Signer {
    home: PathBuf,
}

impl Signer {
    fn new(dir: &Path) -> Signer {
        need("gpg", "gpg");
        let home = dir.join("gnupg");
        fs::create_dir_all(&home).unwrap();
        fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        run(Command::new("gpg").arg("--homedir").arg(&home).args([
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--quick-gen-key",
            "nodeimg test mirror <mirror@127.0.0.1>",
            "ed25519",
            "sign",
            "never",
        ]));
        Signer { home }
    }
    fn gpg(&self) -> Command {
        let mut c = Command::new("gpg");
        c.arg("--homedir")
            .arg(&self.home)
            .arg("--batch")
            .arg("--yes");
        c
    }
}

impl Drop for Signer {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(&self.home)
            .args(["--kill", "gpg-agent"])
            .status();
    }
}

/// A stand-in .deb (arm64) whose program prints its version; `unit`
/// adds a systemd unit wanted by multi-user.target.
fn stand_in_deb(out: &Path, name: &str, program: &str, version: &str, unit: Option<&str>) {
    let root = out.join(format!("build-{name}-{version}"));
    fs::create_dir_all(root.join("DEBIAN")).unwrap();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::write(
        root.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: arm64\nMaintainer: nodeimg tests <t@127.0.0.1>\nDescription: stand-in for {name}\n"
        ),
    )
    .unwrap();
    let bin = root.join("usr/bin").join(program);
    fs::write(
        &bin,
        format!("#!/bin/sh\necho \"{program} stand-in {version}\"\n"),
    )
    .unwrap();
    fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    if let Some(u) = unit {
        let d = root.join("usr/lib/systemd/system");
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join(u),
            format!("[Unit]\nDescription={name} stand-in\n[Service]\nExecStart=/usr/bin/{program}\n[Install]\nWantedBy=multi-user.target\n"),
        )
        .unwrap();
    }
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&root)
        .arg(out.join(format!("{name}_{version}_arm64.deb"))));
    fs::remove_dir_all(&root).unwrap();
}

/// A flat, signed apt repository (suite `/`) in `dir`, as pkgs.k8s.io
/// serves them: Packages, Release, InRelease, Release.gpg, Release.key.
fn flat_repo(dir: &Path, signer: &Signer) {
    need("apt-ftparchive", "apt-utils");
    let packages = run(Command::new("apt-ftparchive")
        .args(["packages", "."])
        .current_dir(dir));
    fs::write(dir.join("Packages"), packages).unwrap();
    let release = run(Command::new("apt-ftparchive")
        .args(["release", "."])
        .current_dir(dir));
    fs::write(dir.join("Release"), release).unwrap();
    run(signer
        .gpg()
        .args(["--clearsign", "-o"])
        .arg(dir.join("InRelease"))
        .arg(dir.join("Release")));
    run(signer
        .gpg()
        .args(["--armor", "--detach-sign", "-o"])
        .arg(dir.join("Release.gpg"))
        .arg(dir.join("Release")));
    let key = run(signer.gpg().args(["--armor", "--export"]));
    fs::write(dir.join("Release.key"), key).unwrap();
}

/// The mirror: pkgs.k8s.io's two repositories (three patch releases of
/// Kubernetes 1.34, two of CRI-O), a k3s release and a helm release.
/// Returns the k3s binary and the helm program's text.
fn mirror(www: &Path, signer: &Signer, k3s_sum_ok: bool) -> (Vec<u8>, String) {
    need("dpkg-deb", "dpkg");
    let core = www.join("core:/stable:/v1.34/deb");
    let crio = www.join("addons:/cri-o:/stable:/v1.34/deb");
    fs::create_dir_all(&core).unwrap();
    fs::create_dir_all(&crio).unwrap();
    for v in ["1.34.1-1.1", "1.34.2-1.1", "1.34.3-1.1"] {
        stand_in_deb(&core, "kubeadm", "kubeadm", v, None);
        stand_in_deb(&core, "kubelet", "kubelet", v, Some("kubelet.service"));
        stand_in_deb(&core, "kubectl", "kubectl", v, None);
    }
    for v in ["1.34.0-1.1", "1.34.1-1.1"] {
        stand_in_deb(&crio, "cri-o", "crio", v, Some("crio.service"));
    }
    flat_repo(&core, signer);
    flat_repo(&crio, signer);

    let k3s = www.join("k3s/v1.34.1+k3s1");
    fs::create_dir_all(&k3s).unwrap();
    let binary = b"#!/bin/sh\necho k3s stand-in v1.34.1+k3s1\n".to_vec();
    fs::write(k3s.join("k3s-arm64"), &binary).unwrap();
    let sum = run(Command::new("sha256sum").arg(k3s.join("k3s-arm64")));
    let mut hex = sum.split_whitespace().next().unwrap().to_string();
    if !k3s_sum_ok {
        hex = hex.replace(&hex[..4], "0000");
    }
    fs::write(
        k3s.join("sha256sum-arm64.txt"),
        format!(
            "{hex}  k3s-arm64\n{}  k3s-airgap-images-arm64.tar.zst\n",
            "ab".repeat(32)
        ),
    )
    .unwrap();

    let helm = www.join("helm");
    fs::create_dir_all(helm.join("linux-arm64")).unwrap();
    let prog = "#!/bin/sh\necho helm stand-in v3.19.0\n".to_string();
    fs::write(helm.join("linux-arm64/helm"), &prog).unwrap();
    let tarball = helm.join("helm-v3.19.0-linux-arm64.tar.gz");
    run(Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .args(["-C"])
        .arg(&helm)
        .arg("linux-arm64"));
    let sum = run(Command::new("sha256sum").arg(&tarball));
    fs::write(
        helm.join("helm-v3.19.0-linux-arm64.tar.gz.sha256"),
        format!("{}\n", sum.split_whitespace().next().unwrap()),
    )
    .unwrap();
    (binary, prog)
}

/// `nodeimg base` from the recipe base with the mirror's URLs.
fn base_with_recipes(plain: &Path, out: &Path, config: &Path, server: &Server) -> Command {
    let mut c = nodeimg();
    c.args(["base", "--board", "odroid-c4", "--config"])
        .arg(config)
        .arg("--from")
        .arg(plain)
        .arg("-o")
        .arg(out)
        .env("NODEIMG_K8S_PKGS", server.url())
        .env("NODEIMG_K3S_URL", format!("{}/k3s", server.url()))
        .env("NODEIMG_HELM_URL", format!("{}/helm", server.url()));
    c
}

/// A file of the image's root, from debugfs's stdout alone.
fn cat_file(img: &Path, path: &str) -> String {
    let spec = format!("{}?offset={}", img.display(), root_offset(img));
    let o = Command::new("debugfs")
        .args(["-R", &format!("cat {path}"), &spec])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Package → (version, status) from the image's /var/lib/dpkg/status.
fn dpkg_status(img: &Path) -> std::collections::BTreeMap<String, (String, String)> {
    let text = cat_file(img, "/var/lib/dpkg/status");
    let mut out = std::collections::BTreeMap::new();
    for para in text.split("\n\n") {
        let field = |f: &str| {
            para.lines()
                .find_map(|l| l.strip_prefix(&format!("{f}: ")))
                .map(str::to_string)
        };
        if let (Some(p), Some(v), Some(s)) = (field("Package"), field("Version"), field("Status")) {
            out.insert(p, (v, s));
        }
    }
    out
}

/// Heavy: the kubeadm, helm and k3s recipes under emulation against the
/// local mirror (apt-get update includes Debian's lists); a few minutes.
#[test]
fn shipped_recipes_install_pinned_held_versions_from_a_local_mirror() {
    let plain = match skip_reason().map(Err).unwrap_or_else(recipe_base) {
        Ok(p) => p,
        Err(why) => panic!("cannot run the recipe test: {why}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::new(dir.path());
    let www = dir.path().join("www");
    let (k3s_binary, helm_prog) = mirror(&www, &signer, true);
    let server = Server::start(&www);
    let config = dir.path().join("cluster.toml");
    fs::write(
        &config,
        "[cluster]\nname = \"recipes\"\nboard = \"odroid-c4\"\n\n\
         [base]\nprovision = [\"kubeadm\", \"helm\", \"k3s\"]\n\n\
         [versions]\nkubernetes = \"1.34.2\"\ncrio = \"1.34.1\"\nhelm = \"3.19.0\"\nk3s = \"v1.34.1+k3s1\"\n",
    )
    .unwrap();
    let out = dir.path().join("base.img");
    let o = base_with_recipes(&plain, &out, &config, &server)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");

    // The pinned patch releases (not the newest of the minor), held.
    let status = dpkg_status(&out);
    for (p, v) in [
        ("kubeadm", "1.34.2-1.1"),
        ("kubelet", "1.34.2-1.1"),
        ("kubectl", "1.34.2-1.1"),
        ("cri-o", "1.34.1-1.1"),
    ] {
        let (version, st) = status
            .get(p)
            .unwrap_or_else(|| panic!("{p} not installed: {err}"));
        assert_eq!(version, v, "{p}");
        assert_eq!(st, "hold ok installed", "{p}");
    }
    // Repositories and keyrings as the upstream pages lay them out.
    let list = debugfs(&out, "cat /etc/apt/sources.list.d/kubernetes.list");
    assert!(
        list.contains(&format!(
            "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] {}/core:/stable:/v1.34/deb/ /",
            server.url()
        )),
        "{list}"
    );
    let list = debugfs(&out, "cat /etc/apt/sources.list.d/cri-o.list");
    assert!(
        list.contains("[signed-by=/etc/apt/keyrings/cri-o-apt-keyring.gpg]"),
        "{list}"
    );
    assert!(
        list.contains("/addons:/cri-o:/stable:/v1.34/deb/ /"),
        "{list}"
    );
    for k in ["kubernetes-apt-keyring.gpg", "cri-o-apt-keyring.gpg"] {
        assert!(exists(&out, &format!("/etc/apt/keyrings/{k}")), "{k}");
    }
    // Kernel modules, sysctls, units enabled with their preset.
    assert_eq!(
        cat_file(&out, "/etc/modules-load.d/k8s.conf"),
        "overlay\nbr_netfilter\n"
    );
    let sysctl = debugfs(&out, "cat /etc/sysctl.d/k8s.conf");
    for k in [
        "net.bridge.bridge-nf-call-iptables = 1",
        "net.bridge.bridge-nf-call-ip6tables = 1",
        "net.ipv4.ip_forward = 1",
    ] {
        assert!(sysctl.contains(k), "{sysctl}");
    }
    for u in ["crio.service", "kubelet.service"] {
        assert!(
            exists(
                &out,
                &format!("/etc/systemd/system/multi-user.target.wants/{u}")
            ),
            "{u} not enabled"
        );
    }
    let preset = debugfs(
        &out,
        "cat /etc/systemd/system-preset/20-nodeimg-kubeadm.preset",
    );
    assert!(preset.contains("enable kubelet.service"), "{preset}");
    // helm and k3s: the served files, executable.
    assert_eq!(cat_file(&out, "/usr/local/bin/helm"), helm_prog);
    assert_eq!(
        cat_file(&out, "/usr/local/bin/k3s").as_bytes(),
        &k3s_binary[..]
    );
    for b in ["helm", "k3s"] {
        let st = debugfs(&out, &format!("stat /usr/local/bin/{b}"));
        assert!(st.contains("Mode:  0755"), "{b}: {st}");
    }
    let link = debugfs(&out, "stat /usr/local/bin/crictl");
    assert!(link.contains("Fast link dest: \"k3s\""), "{link}");
    // kubectl came from the package: k3s's link is not made over it.
    assert!(!exists(&out, "/usr/local/bin/kubectl"));
    assert_nothing_left(dir.path());

    // The base now passes stamp's tool check for a kubeadm cluster.
    let cluster = dir.path().join("kubeadm.toml");
    fs::write(
        &cluster,
        "[cluster]\nname = \"k\"\nboard = \"odroid-c4\"\nflavour = \"kubeadm\"\napi_endpoint = \"10.0.0.1:6443\"\n\n\
         [[node]]\nhostname = \"controlplane\"\naddress = \"10.0.0.1/24\"\n",
    )
    .unwrap();
    let o = nodeimg()
        .args(["stamp", "--config"])
        .arg(&cluster)
        .arg("--base")
        .arg(&out)
        .args(["--node", "controlplane", "-o"])
        .arg(dir.path().join("cp.delta"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The k3s recipe refuses a binary whose SHA-256 is not the release's, and
/// nothing of the run reaches an output.
#[test]
fn k3s_recipe_refuses_a_wrong_checksum() {
    let plain = match skip_reason().map(Err).unwrap_or_else(recipe_base) {
        Ok(p) => p,
        Err(why) => panic!("cannot run the recipe test: {why}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::new(dir.path());
    let www = dir.path().join("www");
    mirror(&www, &signer, false);
    let server = Server::start(&www);
    let config = dir.path().join("cluster.toml");
    fs::write(
        &config,
        "[cluster]\nname = \"recipes\"\nboard = \"odroid-c4\"\n\n[base]\nprovision = \"k3s\"\n",
    )
    .unwrap();
    let out = dir.path().join("base.img");
    let o = base_with_recipes(&plain, &out, &config, &server)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("recipe k3s: k3s-arm64 has SHA-256"), "{err}");
    assert!(err.contains(": refused"), "{err}");
    assert!(!out.exists());
    assert_nothing_left(dir.path());
}

/// A name that is neither a recipe nor a file is refused before any work,
/// naming the recipes.
#[test]
fn an_unknown_recipe_name_is_refused_naming_the_recipes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("base.img");
    let o = nodeimg()
        .args(["base", "--board", "odroid-c4", "--from"])
        .arg(dir.path())
        .args(["--provision", "kubeadmm", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("kubeadmm: neither a shipped recipe (kubeadm, helm, k3s) nor a script file"),
        "{err}"
    );
    assert!(!out.exists());
}

/// The kubeadm recipe trusts only the repository's own key: a mirror whose
/// Release files are signed by another key is refused by apt, and no base
/// is written.
#[test]
fn kubeadm_recipe_refuses_a_repository_signed_by_another_key() {
    let plain = match skip_reason().map(Err).unwrap_or_else(recipe_base) {
        Ok(p) => p,
        Err(why) => panic!("cannot run the recipe test: {why}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::new(dir.path());
    let www = dir.path().join("www");
    mirror(&www, &signer, true);
    // Release.key of another signer: the keyring the recipe imports does
    // not verify InRelease.
    let other = Signer::new(&dir.path().join("other"));
    let key = run(other.gpg().args(["--armor", "--export"]));
    fs::write(www.join("core:/stable:/v1.34/deb/Release.key"), key).unwrap();
    let server = Server::start(&www);
    let config = dir.path().join("cluster.toml");
    fs::write(
        &config,
        "[cluster]\nname = \"recipes\"\nboard = \"odroid-c4\"\n\n[base]\nprovision = [\"kubeadm\"]\n",
    )
    .unwrap();
    let out = dir.path().join("base.img");
    let o = base_with_recipes(&plain, &out, &config, &server)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("NO_PUBKEY") || err.contains("not signed") || err.contains("signature"),
        "{err}"
    );
    assert!(err.contains("exited with status"), "{err}");
    assert!(!out.exists());
    assert_nothing_left(dir.path());
}
