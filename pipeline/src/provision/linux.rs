//! Linux mechanism of provisioning: loop devices, a private mount namespace,
//! binds, the chroot, and teardown that runs whatever happens.
//!
//! Shape: the calling process attaches one loop device per mounted
//! partition (autoclear: they detach themselves if we die), then forks a
//! *supervisor* that unshares its mount namespace (so the host's mount table
//! never shows the image), mounts, prepares the root, runs each script in
//! its own process group, and undoes everything in reverse order. The caller
//! streams the output, forwards SIGINT/SIGTERM to the supervisor, waits for
//! it, detaches the loop devices and checks that the root filesystem was
//! left clean.

// This module is the one place (with flasher::platform) allowed to mount,
// unmount and unshare: clippy.toml keeps those calls out of the rootless,
// portable code.
#![allow(clippy::disallowed_methods)]

use super::{Provision, SCRATCH};
use crate::error::{Error, Result};
use crate::osimage::OsImage;
use imagegen::block::{BlockDevice, FileDevice, Window};
use imagegen::fs::OpenOptions;
use imagegen::inspect::FsInfo;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::signal::{self, kill, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The ELF header of an aarch64 executable, as binfmt_misc handlers match it.
const AARCH64_MAGIC: &str = "7f454c460201010000000000000000000200b700";

/// Refuses, with the commands that fix it, when aarch64 programs cannot run
/// here; on an aarch64 host they run natively.
pub(super) fn check_aarch64_exec() -> Result<()> {
    if std::env::consts::ARCH == "aarch64" {
        return Ok(());
    }
    match aarch64_handler() {
        Some((_, true)) => Ok(()),
        Some((name, false)) => Err(Error::refused(
            "provision",
            format!("the aarch64 binfmt_misc handler {name} lacks the F (fix-binary) flag, so it cannot run inside a chroot; install a static qemu with F: Debian/Ubuntu `apt-get install qemu-user-static binfmt-support && update-binfmts --enable qemu-aarch64`, Fedora `dnf install qemu-user-static && systemctl restart systemd-binfmt`"),
        )),
        None => Err(Error::refused(
            "provision",
            "no aarch64 binfmt_misc handler is registered, so the image's programs cannot run here; Debian/Ubuntu: `apt-get install qemu-user-static binfmt-support && update-binfmts --enable qemu-aarch64`; Fedora: `dnf install qemu-user-static && systemctl restart systemd-binfmt` (nothing was changed)",
        )),
    }
}

/// The enabled binfmt_misc entry whose magic is aarch64's, and whether it
/// has the F flag.
fn aarch64_handler() -> Option<(String, bool)> {
    let dir = fs::read_dir("/proc/sys/fs/binfmt_misc").ok()?;
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "register" || name == "status" {
            continue;
        }
        let Ok(text) = fs::read_to_string(e.path()) else {
            continue;
        };
        let enabled = text.lines().next() == Some("enabled");
        let magic = text.lines().find_map(|l| l.strip_prefix("magic "));
        if enabled && magic.is_some_and(|m| m.trim().starts_with(AARCH64_MAGIC)) {
            let f = text
                .lines()
                .find_map(|l| l.strip_prefix("flags: "))
                .is_some_and(|f| f.contains('F'));
            return Some((name, f));
        }
    }
    None
}

/// One partition attached at its offset (no udev here: no partition nodes).
struct Loop {
    dev: loopdev::LoopDevice,
    path: PathBuf,
}

impl Loop {
    fn attach(image: &Path, offset: u64, size: u64) -> Result<Loop> {
        let io = |e| Error::io("/dev/loop-control", e);
        let ctl = loopdev::LoopControl::open().map_err(io)?;
        // Another process can take the free device between asking and
        // attaching: ask again.
        let mut last = None;
        for _ in 0..8 {
            let dev = ctl.next_free().map_err(io)?;
            match dev
                .with()
                .offset(offset)
                .size_limit(size)
                .autoclear(true)
                .attach(image)
            {
                Ok(()) => {
                    let path = dev.path().ok_or_else(|| {
                        Error::refused("loop device", "attached but has no /dev path")
                    })?;
                    return Ok(Loop { dev, path });
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = Some(e),
                Err(e) => return Err(Error::io(image, e)),
            }
        }
        Err(Error::io(
            image,
            last.unwrap_or_else(|| std::io::Error::other("no free loop device")),
        ))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        // Autoclear already detaches on the last close; this is for a loop
        // device that was never mounted.
        let _ = self.dev.detach();
    }
}

/// A filesystem to mount inside the root.
#[derive(Debug, Clone)]
struct MountPlan {
    /// `/`, `/boot/firmware`, …
    point: String,
    /// `ext4`, `vfat`.
    fstype: String,
    dev: PathBuf,
}

/// The attached partitions, where each goes, and the root's byte range.
struct Attached {
    loops: Vec<Loop>,
    plans: Vec<MountPlan>,
    root: (u64, u64),
}

/// Finds where the OS mounts each partition and attaches them.
fn attach_all(image: &Path) -> Result<Attached> {
    let disk: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(image)?);
    let os = OsImage::open(disk.clone(), OpenOptions::read_only())?;
    let mut infos = os.mounts();
    infos.sort_by_key(|m| m.point.len());
    let mut loops = Vec::new();
    let mut plans = Vec::new();
    let mut root = None;
    for m in infos {
        let (start, size) = match m.partition {
            Some(n) => {
                let p = os
                    .table()
                    .partitions
                    .iter()
                    .find(|p| p.number == n)
                    .ok_or_else(|| {
                        Error::refused(image.display().to_string(), "mount of a missing partition")
                    })?;
                (p.start, p.size)
            }
            None => (0, disk.size()),
        };
        if m.point == "/" {
            root = Some((start, size));
        }
        let fstype = match m.fs.as_str() {
            f if f.starts_with("ext") => f.to_string(),
            f if f.starts_with("fat") || f == "vfat" => "vfat".to_string(),
            f => f.to_string(),
        };
        let l = Loop::attach(image, start, size)?;
        plans.push(MountPlan {
            point: m.point.clone(),
            fstype,
            dev: l.path.clone(),
        });
        loops.push(l);
    }
    let root = root
        .ok_or_else(|| Error::refused(image.display().to_string(), "no root filesystem found"))?;
    Ok(Attached { loops, plans, root })
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGINT/SIGTERM handlers that only raise [`STOP`]; the old ones come back
/// on drop.
struct StopSignals(Vec<(Signal, SigAction)>);

impl StopSignals {
    fn install() -> Result<StopSignals> {
        STOP.store(false, Ordering::SeqCst);
        let act = SigAction::new(
            SigHandler::Handler(on_stop),
            SaFlags::empty(),
            SigSet::empty(),
        );
        let mut old = Vec::new();
        for s in [Signal::SIGINT, Signal::SIGTERM] {
            // SAFETY: the handler only stores to an atomic.
            let prev = unsafe { signal::sigaction(s, &act) }
                .map_err(|e| Error::io("sigaction", e.into()))?;
            old.push((s, prev));
        }
        Ok(StopSignals(old))
    }
}

impl Drop for StopSignals {
    fn drop(&mut self) {
        for (s, a) in &self.0 {
            // SAFETY: restores what was there before.
            let _ = unsafe { signal::sigaction(*s, a) };
        }
    }
}

/// Kills and reaps the supervisor if the caller unwinds (a panic) before it
/// was waited for.
struct Child(Option<Pid>);

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = kill(pid, Signal::SIGTERM);
            let _ = waitpid(pid, None);
        }
    }
}

/// Ends the stop watcher however `provision` returns.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::io("pipe", e.into()))
}

/// Runs the scripts; see the module documentation.
pub(super) fn provision(image: &Path, p: &Provision) -> Result<()> {
    let mut log = fs::File::create(&p.log).map_err(|e| Error::io(&p.log, e))?;
    let Attached {
        loops,
        plans,
        root: (root_start, root_size),
    } = attach_all(image)?;
    let mnt = tempfile::Builder::new()
        .prefix("nodeimg-provision.")
        .tempdir()
        .map_err(|e| Error::io(std::env::temp_dir(), e))?;
    // The image was just written (copied or decoded) and is made durable
    // when the output is committed: start its writeback now, so the disk
    // works while the scripts run under emulation instead of after them.
    start_writeback(image);
    let host_resolv = fs::read("/etc/resolv.conf").unwrap_or_default();
    let (out_r, out_w) = pipe()?;
    let (st_r, st_w) = pipe()?;
    let stop = StopSignals::install()?;
    let job = Job {
        root: mnt.path().to_path_buf(),
        plans,
        scripts: p.scripts.clone(),
        files: p.files.clone(),
        host_resolv,
    };
    // SAFETY: the child runs only `supervise` (allocation is fork-safe in
    // glibc; no lock of ours is held across the fork) and `_exit`s.
    let child = match unsafe { fork() }.map_err(|e| Error::io("fork", e.into()))? {
        ForkResult::Child => {
            drop(out_r);
            drop(st_r);
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                supervise(&job, out_w, st_w)
            }))
            .unwrap_or(70);
            // SAFETY: leaves the forked copy without running the parent's
            // destructors or atexit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => child,
    };
    let mut guard = Child(Some(child));
    drop(out_w);
    drop(st_w);

    // A stop request (SIGINT/SIGTERM) goes to the supervisor, which tears
    // down; a thread watches for it, since reads retry on EINTR.
    let done = Arc::new(AtomicBool::new(false));
    let _done_on_return = SetOnDrop(done.clone());
    let watcher = {
        let done = done.clone();
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                if STOP.load(Ordering::SeqCst) {
                    let _ = kill(child, Signal::SIGTERM);
                    return;
                }
                // Woken early (unpark) when the supervisor is done, so
                // joining it costs no part of a sleep.
                std::thread::park_timeout(Duration::from_millis(100));
            }
        })
    };
    let mut reader = BufReader::new(fs::File::from(out_r));
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches('\n');
                eprintln!("provision: {text}");
                let _ = writeln!(log, "{text}");
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(&p.log, e)),
        }
    }
    let mut status = String::new();
    let _ = fs::File::from(st_r).read_to_string(&mut status);
    let code = loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, c)) => break c,
            Ok(WaitStatus::Signaled(_, s, _)) => break 128 + s as i32,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::io("waitpid", e.into())),
        }
    };
    guard.0 = None;
    done.store(true, Ordering::SeqCst);
    watcher.thread().unpark();
    let _ = watcher.join();
    drop(stop);
    drop(loops);
    let status = status.trim();
    let _ = writeln!(
        log,
        "nodeimg: {}",
        if status.is_empty() {
            "no status"
        } else {
            status
        }
    );
    if STOP.load(Ordering::SeqCst) {
        return Err(Error::refused(
            "provision",
            format!(
                "interrupted ({status}); everything was unmounted and detached, no output written"
            ),
        ));
    }
    if code != 0 || status != "ok" {
        return Err(Error::refused(
            "provision",
            format!(
                "{}; see {}",
                if status.is_empty() {
                    "the supervisor died"
                } else {
                    status
                },
                p.log.display()
            ),
        ));
    }
    check_clean(image, root_start, root_size)?;
    // What the scripts changed (flushed into the file by the unmount)
    // goes to disk while the image is hashed.
    start_writeback(image);
    Ok(())
}

/// Starts writing `image`'s dirty pages back without waiting; see
/// [`imagegen::sink::start_writeback`].
fn start_writeback(image: &Path) {
    if let Ok(f) = fs::File::open(image) {
        imagegen::sink::start_writeback(&f, 0, 0);
    }
}

/// The root filesystem after the kernel's unmount: no journal to replay, the
/// state clean, so the rootless stages (which refuse `needs_recovery`) can
/// change it.
fn check_clean(image: &Path, start: u64, size: u64) -> Result<()> {
    let disk: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(image)?);
    let w = Window::new(disk, start, size)?;
    match imagegen::inspect::probe(&w, "root")? {
        FsInfo::Ext(e) => {
            if !e.clean || e.features.iter().any(|f| f == "needs_recovery") {
                return Err(Error::refused(
                    "provision",
                    "the root filesystem was not left clean after unmounting (needs_recovery or state not clean)",
                ));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// What the supervisor needs (built before the fork).
struct Job {
    root: PathBuf,
    plans: Vec<MountPlan>,
    scripts: Vec<PathBuf>,
    files: Option<PathBuf>,
    host_resolv: Vec<u8>,
}

/// Undo steps, run in reverse order.
enum Undo {
    Unmount(PathBuf, bool),
    Restore {
        path: PathBuf,
        saved: Option<PathBuf>,
    },
}

/// The forked supervisor: returns its exit status (0 when every script
/// succeeded and every step was undone). Writes one status line to `st`.
fn supervise(job: &Job, out: OwnedFd, st: OwnedFd) -> i32 {
    let mut st = fs::File::from(st);
    // Our parent gone (SIGKILL): tear down rather than linger.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    let _ = StopSignals::install().map(std::mem::forget);
    let mut undo = Vec::new();
    let result = prepare(job, &out, &mut undo).and_then(|_| run_scripts(job, &out));
    let torn = teardown(&job.root, undo);
    let (code, msg) = match (result, torn) {
        (Ok(()), Ok(())) => (0, "ok".to_string()),
        (Err(e), Ok(())) => (1, e),
        (Ok(()), Err(t)) => (1, format!("cleanup failed: {t}")),
        (Err(e), Err(t)) => (1, format!("{e}; cleanup failed: {t}")),
    };
    let _ = writeln!(st, "{msg}");
    code
}

fn errs(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// The namespace, mounts, binds and the temporary files, each recorded in
/// `undo` as soon as it exists.
fn prepare(job: &Job, out: &OwnedFd, undo: &mut Vec<Undo>) -> std::result::Result<(), String> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(|e| errs("unshare", e))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| errs("making / private", e))?;
    let root = &job.root;
    for m in &job.plans {
        let at = root.join(m.point.trim_start_matches('/'));
        if m.point != "/" {
            fs::create_dir_all(&at).map_err(|e| errs(&at.display().to_string(), e))?;
        }
        match mount_image_fs(&m.dev, &at, &m.fstype) {
            Ok(()) => undo.push(Undo::Unmount(at, false)),
            Err(nix::errno::Errno::ENODEV) if m.point != "/" => {
                // The kernel lacks this filesystem (vfat on some build
                // hosts): an empty read-only tmpfs makes writes there fail
                // loudly instead of landing, hidden, in the root.
                let _ = writeln!(
                    fs::File::from(out.try_clone().map_err(|e| errs("dup", e))?),
                    "kernel cannot mount {} ({}): it is empty and read-only during provisioning",
                    m.point,
                    m.fstype
                );
                mount(
                    Some("tmpfs"),
                    &at,
                    Some("tmpfs"),
                    MsFlags::MS_RDONLY,
                    Some("size=1m"),
                )
                .map_err(|e| errs(&m.point, e))?;
                undo.push(Undo::Unmount(at, true));
            }
            Err(e) => return Err(errs(&format!("mounting {} ({})", m.point, m.fstype), e)),
        }
    }
    for (src, rec) in [
        ("/proc", false),
        ("/sys", true),
        ("/dev", false),
        ("/dev/pts", false),
    ] {
        let at = root.join(&src[1..]);
        if !at.is_dir() {
            fs::create_dir_all(&at).map_err(|e| errs(&at.display().to_string(), e))?;
        }
        let flags = MsFlags::MS_BIND
            | if rec {
                MsFlags::MS_REC
            } else {
                MsFlags::empty()
            };
        mount(Some(src), &at, None::<&str>, flags, None::<&str>)
            .map_err(|e| errs(&format!("binding {src}"), e))?;
        undo.push(Undo::Unmount(at, true));
    }
    // /run is a tmpfs on the booted system: nothing written there belongs
    // in the image, and the scratch directory vanishes with it.
    let run = root.join("run");
    fs::create_dir_all(&run).map_err(|e| errs("/run", e))?;
    mount(
        Some("tmpfs"),
        &run,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=755"),
    )
    .map_err(|e| errs("tmpfs on /run", e))?;
    undo.push(Undo::Unmount(run, true));

    replace(root, "etc/resolv.conf", &job.host_resolv, 0o644, undo)?;
    replace(
        root,
        "usr/sbin/policy-rc.d",
        b"#!/bin/sh\n# nodeimg: no service starts while provisioning\nexit 101\n",
        0o755,
        undo,
    )?;

    let scratch = root.join(SCRATCH.trim_start_matches('/'));
    fs::create_dir_all(scratch.join(".scripts")).map_err(|e| errs(SCRATCH, e))?;
    if let Some(f) = &job.files {
        let st = Command::new("cp")
            .arg("-a")
            .arg(f.join("."))
            .arg(&scratch)
            .status()
            .map_err(|e| errs("cp", e))?;
        if !st.success() {
            return Err(format!("copying {} into {SCRATCH} failed", f.display()));
        }
    }
    for (i, s) in job.scripts.iter().enumerate() {
        let dst = scratch.join(".scripts").join(script_name(i, s));
        fs::copy(s, &dst).map_err(|e| errs(&s.display().to_string(), e))?;
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o755))
            .map_err(|e| errs(&dst.display().to_string(), e))?;
    }
    Ok(())
}

/// Mounts one of the image's filesystems for provisioning:
///
/// - `noatime`: reading a file in the chroot must not change the image
///   (under the default `relatime`, the first read of each file whose
///   access time is over a day old writes the build's clock into its inode:
///   bytes that differ from build to build, and journal traffic).
/// - ext4's `barrier=0` (Documentation/filesystems/ext4.rst: the journal
///   then issues no cache flushes): every `fsync` in the chroot (dpkg syncs
///   each unpacked file) would otherwise become a flush of the loop device,
///   which the loop driver turns into an `fsync` of the whole image file on
///   the host. The image is a temporary file until it is committed, and the
///   commit makes it durable with one `fsync`; a crash before that discards
///   it, so the flushes protect nothing. A kernel that refuses the option
///   gets the mount without it.
fn mount_image_fs(dev: &Path, at: &Path, fstype: &str) -> nix::Result<()> {
    let flags = MsFlags::MS_NOATIME;
    if fstype.starts_with("ext") {
        match mount(Some(dev), at, Some(fstype), flags, Some("barrier=0")) {
            Err(nix::errno::Errno::EINVAL) => {}
            r => return r,
        }
    }
    mount(Some(dev), at, Some(fstype), flags, None::<&str>)
}

fn script_name(i: usize, s: &Path) -> String {
    let base = s
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "script".into());
    format!("{:02}-{base}", i + 1)
}

/// Puts `content` at `rel` for the duration; the image's own file (or
/// symlink, even a dangling one) is moved aside and comes back in teardown.
fn replace(
    root: &Path,
    rel: &str,
    content: &[u8],
    mode: u32,
    undo: &mut Vec<Undo>,
) -> std::result::Result<(), String> {
    let path = root.join(rel);
    let saved = if fs::symlink_metadata(&path).is_ok() {
        let name = format!(
            ".{}.nodeimg-saved",
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        );
        let s = path.with_file_name(name);
        fs::rename(&path, &s).map_err(|e| errs(rel, e))?;
        Some(s)
    } else {
        if let Some(d) = path.parent() {
            fs::create_dir_all(d).map_err(|e| errs(rel, e))?;
        }
        None
    };
    undo.push(Undo::Restore {
        path: path.clone(),
        saved,
    });
    fs::write(&path, content).map_err(|e| errs(rel, e))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(|e| errs(rel, e))
}

/// Runs each script chrooted, in its own process group, with a clean
/// environment; stops at the first failure or a stop request.
fn run_scripts(job: &Job, out: &OwnedFd) -> std::result::Result<(), String> {
    for (i, s) in job.scripts.iter().enumerate() {
        let inside = format!("{SCRATCH}/.scripts/{}", script_name(i, s));
        let shebang = fs::read(s).map(|b| b.starts_with(b"#!")).unwrap_or(false);
        let mut cmd = if shebang {
            Command::new(&inside)
        } else {
            let mut c = Command::new("/bin/sh");
            c.arg(&inside);
            c
        };
        let o = out.try_clone().map_err(|e| errs("dup", e))?;
        let e = out.try_clone().map_err(|e| errs("dup", e))?;
        let root = job.root.clone();
        // No LANG or LC_*: the POSIX locale, as a Dockerfile's RUN and the
        // seed's `env -i chroot` give. Any other locale makes every program
        // that calls setlocale() load the locale's files (13 of them for
        // Debian's C.utf8), which under emulation costs 8-25 ms a process:
        // measured at ~10% of an `apt-get install` of 15 packages, which
        // spawns hundreds. A script that needs UTF-8 exports LANG itself.
        cmd.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", "/root")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("NODEIMG_PROVISION_FILES", SCRATCH)
            .stdin(Stdio::null())
            .stdout(Stdio::from(o))
            .stderr(Stdio::from(e))
            .process_group(0);
        // SAFETY: chroot and chdir are async-signal-safe system calls.
        unsafe {
            cmd.pre_exec(move || {
                nix::unistd::chroot(&root)?;
                nix::unistd::chdir(SCRATCH)?;
                Ok(())
            });
        }
        let name = s.display().to_string();
        let child = cmd.spawn().map_err(|e| errs(&name, e))?;
        let pid = Pid::from_raw(child.id() as i32);
        let mut stopped_at: Option<Instant> = None;
        let status = loop {
            if STOP.load(Ordering::SeqCst) && stopped_at.is_none() {
                let _ = kill(Pid::from_raw(-pid.as_raw()), Signal::SIGTERM);
                stopped_at = Some(Instant::now());
            }
            if stopped_at.is_some_and(|t| t.elapsed() > Duration::from_secs(10)) {
                let _ = kill(Pid::from_raw(-pid.as_raw()), Signal::SIGKILL);
            }
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                // Polled (a stop request must be seen while the script
                // runs), often enough not to keep a finished script waiting.
                Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(10)),
                Ok(WaitStatus::Exited(_, c)) => break format!("exited with status {c}"),
                Ok(WaitStatus::Signaled(_, sig, _)) => break format!("was killed by {sig}"),
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(errs("waitpid", e)),
            }
        };
        // Whatever the script left running in its group goes too.
        let _ = kill(Pid::from_raw(-pid.as_raw()), Signal::SIGKILL);
        if STOP.load(Ordering::SeqCst) {
            return Err(format!("stopped by a signal: {name} {status}"));
        }
        if status != "exited with status 0" {
            return Err(format!("script {name} {status}"));
        }
    }
    Ok(())
}

/// Kills whatever still runs with its root inside ours (daemons a script
/// started despite policy-rc.d), so the unmounts are not busy.
fn kill_stragglers(root: &Path) {
    let Ok(dir) = fs::read_dir("/proc") else {
        return;
    };
    let mut killed = false;
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(r) = fs::read_link(e.path().join("root")) {
            if r.starts_with(root) {
                killed |= kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok();
            }
        }
    }
    // Time for the killed to exit and let go of the mounts; a script that
    // left nothing behind (the usual case) waits for nothing.
    if killed {
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Undoes every step in reverse order; the image's filesystems are
/// unmounted without MNT_DETACH so the kernel writes them back clean.
fn teardown(root: &Path, undo: Vec<Undo>) -> std::result::Result<(), String> {
    kill_stragglers(root);
    let mut failed = Vec::new();
    for u in undo.into_iter().rev() {
        match u {
            Undo::Restore { path, saved } => {
                let _ = fs::remove_file(&path);
                if let Some(s) = saved {
                    if let Err(e) = fs::rename(&s, &path) {
                        failed.push(errs(&path.display().to_string(), e));
                    }
                }
            }
            Undo::Unmount(at, lazy) => {
                let flags = if lazy {
                    MntFlags::MNT_DETACH
                } else {
                    MntFlags::empty()
                };
                let mut r = umount2(&at, flags);
                for _ in 0..20 {
                    if r != Err(nix::errno::Errno::EBUSY) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                    kill_stragglers(root);
                    r = umount2(&at, flags);
                }
                if let Err(e) = r {
                    failed.push(errs(&format!("unmounting {}", at.display()), e));
                    let _ = umount2(&at, MntFlags::MNT_DETACH);
                }
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}
