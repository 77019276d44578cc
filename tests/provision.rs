//! `[base] provision`: scripts run as root inside a real Debian arm64 root
//! (mmdebstrap minbase, apt's lists kept) through the kernel's aarch64
//! binfmt_misc handler. Each test that cannot run here (not root, no aarch64
//! handler, no route to Debian's archive) fails under `CI` and elsewhere skips,
//! saying why (`os_support::skip`).
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
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("debian-provision-v1");
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let lock = fs::File::create(dir.join("lock")).map_err(|e| e.to_string())?;
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e.to_string())?;
    let tar = dir.join("rootfs.tar");
    if !tar.exists() {
        let o = Command::new("bash")
            .arg(os_support::repo().join("fixtures/make-debian-rootfs.sh"))
            .arg(&tar)
            .env("VARIANT", "minbase")
            .env("PACKAGES", "ca-certificates")
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
        let o = nodeimg()
            .args(["base", "--board", "odroid-c4", "--size", "1GiB", "--from"])
            .arg(&tar)
            .arg("-o")
            .arg(&img)
            .output()
            .map_err(|e| e.to_string())?;
        // Our own tool failing is a failure, never a reason to skip.
        assert!(
            o.status.success(),
            "nodeimg base (plain): {}",
            String::from_utf8_lossy(&o.stderr)
        );
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
