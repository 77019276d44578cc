//! New files that take their final name only when complete, and the one rule
//! for when a command may write a file at all.
//!
//! # Output rule
//!
//! Every command that writes a file calls [`check_output`] (or creates the
//! file with [`PendingFile::create_checked`]) before it starts its work:
//!
//! - an output that is one of the command's inputs — the same device and
//!   inode, however it is spelt (`./a.img`, a hard link, a symlink) — is
//!   always refused, `--force` or not;
//! - an existing output is refused unless the user gave `--force`;
//! - an existing output that is not a regular file (a directory, a device
//!   node, a FIFO) is always refused: renaming over it would replace the
//!   node itself.
//!
//! Commands that change an existing image in place call [`check_distinct`]
//! for the same-file rule alone.
//!
//! # Interrupted runs
//!
//! Every live temporary file ([`PendingFile`], [`write_atomic`]) and every
//! staging directory ([`PendingDir`]) is listed in a process-wide registry,
//! so a signal handler (in the binary: imagegen installs none) can remove
//! them all with [`discard_all_pending`] before it exits. This is the one
//! way nodeimg writes an output atomically.

use crate::block::FileDevice;
use crate::{Error, Result};
use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Temporary paths of the [`PendingFile`]s and [`PendingDir`]s alive in
/// this process.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn live() -> MutexGuard<'static, Vec<PathBuf>> {
    // A panic elsewhere while the list was held leaves it usable.
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes every live temporary file and blocks further ones from being
/// created, committed or dropped (those calls wait forever). Meant for a
/// signal handler's thread that exits the process right after; returns how
/// many files it removed.
pub fn discard_all_pending() -> usize {
    let mut list = live();
    let removed = list
        .drain(..)
        .filter(|p| match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).is_ok(),
            Ok(_) => std::fs::remove_file(p).is_ok(),
            Err(_) => false,
        })
        .count();
    // Keep the lock until the process exits: nothing can rename a
    // temporary file into place after its removal was promised.
    std::mem::forget(list);
    removed
}

/// The temporary paths alive now (for tests and diagnostics).
pub fn pending_paths() -> Vec<PathBuf> {
    live().clone()
}

/// Whether `a` and `b` name the same file (device and inode). A path that
/// cannot be read names no file.
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => (x.dev(), x.ino()) == (y.dev(), y.ino()),
        _ => false,
    }
}

/// Refuses a `target` that is one of `inputs` (same device and inode).
/// Inputs that do not exist are skipped: their own open reports them.
pub fn check_distinct(target: &Path, inputs: &[&Path]) -> Result<()> {
    for input in inputs {
        if same_file(target, input) {
            let why = if *input == target {
                "it is also an input of this command".to_string()
            } else {
                format!("it is the same file as the input {}", input.display())
            };
            return Err(Error::Invalid(format!(
                "{}: refusing to write: {why}; choose another output",
                target.display()
            )));
        }
    }
    Ok(())
}

/// The output rule (see the module documentation): `Ok` when a command may
/// create or, with `force`, replace `path`.
pub fn check_output(path: &Path, force: bool, inputs: &[&Path]) -> Result<()> {
    let entry = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path, e)),
    };
    check_distinct(path, inputs)?;
    // A symlink is judged by what it points to; a dangling one is replaced.
    let target = std::fs::metadata(path).unwrap_or(entry);
    if !target.is_file() && !target.is_symlink() {
        let kind = if target.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(Error::Invalid(format!(
            "{}: exists and is {kind}; choose another output",
            path.display()
        )));
    }
    if !force {
        return Err(Error::Invalid(format!(
            "{}: already exists; use --force to replace it",
            path.display()
        )));
    }
    Ok(())
}

/// A new file written under a temporary name in the directory of its final
/// path. [`commit`](Self::commit) makes it durable and renames it into place;
/// dropped uncommitted, it is removed. A failed or interrupted write thus
/// never leaves a half-written file under the final name.
///
/// The temporary file is created 0600, so secrets are never readable by
/// others, even while being written.
#[derive(Debug)]
pub struct PendingFile {
    file: File,
    /// `None` only after commit.
    tmp: Option<tempfile::TempPath>,
    path: PathBuf,
    /// Whether commit may replace a file that appeared at `path`.
    replace: bool,
}

impl PendingFile {
    /// Starts a file that will become `path`, replacing whatever is there
    /// at commit. Commands use [`create_checked`](Self::create_checked).
    pub fn create(path: &Path) -> Result<Self> {
        Self::start(path, true)
    }

    /// [`check_output`], then starts a file that will become `path`.
    /// Without `force`, commit also refuses a file that appeared at `path`
    /// while this one was being written.
    pub fn create_checked(path: &Path, force: bool, inputs: &[&Path]) -> Result<Self> {
        check_output(path, force, inputs)?;
        Self::start(path, force)
    }

    fn start(path: &Path, replace: bool) -> Result<Self> {
        let name = path
            .file_name()
            .ok_or_else(|| Error::Invalid(format!("{}: not a file name", path.display())))?
            .to_string_lossy();
        let mut list = live();
        let (file, tmp) = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".partial")
            .tempfile_in(parent(path))
            .map_err(|e| Error::io(parent(path), without_temp_name(e)))?
            .into_parts();
        list.push(tmp.to_path_buf());
        Ok(PendingFile {
            file,
            tmp: Some(tmp),
            path: path.to_path_buf(),
            replace,
        })
    }

    /// The open temporary file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The temporary file's path (for a step that must open the file by
    /// name, such as attaching a loop device).
    pub fn tmp_path(&self) -> &Path {
        // `tmp` is taken only by commit and drop, which consume `self`.
        self.tmp.as_deref().unwrap_or(&self.path)
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A writable device of `size` bytes over the temporary file (holes until
    /// written). Drop it before [`commit`](Self::commit).
    pub fn device(&self, size: u64) -> Result<FileDevice> {
        let err = |e| Error::io(&self.path, e);
        self.file.set_len(size).map_err(err)?;
        let file = self.file.try_clone().map_err(err)?;
        FileDevice::from_file(file, &self.path, true)
    }

    /// Sets `mode`, makes the contents durable, renames the file into place
    /// and makes the rename durable (fsync of the directory).
    pub fn commit(self, mode: u32) -> Result<()> {
        self.make_durable(mode)?;
        let dir = parent(&self.path).to_path_buf();
        self.rename()?;
        sync_dir(&dir)
    }

    /// [`commit`](Self::commit) for many files at once, as `stamp --all`
    /// writes them: every file's contents made durable, the fsyncs issued
    /// together (the filesystem's journal commits them as a group instead of
    /// one commit per file), then each renamed, then each directory synced
    /// once. A file is renamed only once its contents are durable; on an
    /// error the files not yet renamed are removed.
    pub fn commit_all(files: Vec<PendingFile>, mode: u32) -> Result<()> {
        std::thread::scope(|scope| -> Result<()> {
            let syncs: Vec<_> = files
                .iter()
                .map(|f| scope.spawn(move || f.make_durable(mode)))
                .collect();
            for h in syncs {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Invalid("fsync thread panicked".into())))?;
            }
            Ok(())
        })?;
        let mut dirs = std::collections::BTreeSet::new();
        for f in files {
            dirs.insert(parent(&f.path).to_path_buf());
            f.rename()?;
        }
        dirs.iter().try_for_each(|d| sync_dir(d))
    }

    /// Sets `mode` and makes the contents durable.
    fn make_durable(&self, mode: u32) -> Result<()> {
        let err = |e| Error::io(&self.path, e);
        self.file
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(err)?;
        self.file.sync_all().map_err(err)
    }

    /// Renames the temporary file to the final name.
    fn rename(mut self) -> Result<()> {
        let Some(tmp) = self.tmp.take() else {
            return Err(Error::Invalid(format!(
                "{}: committed twice",
                self.path.display()
            )));
        };
        // Held across the rename: a handler discarding temporary files
        // either removes this one first or finds it already renamed.
        let mut list = live();
        let tmp_path = tmp.to_path_buf();
        list.retain(|p| *p != tmp_path);
        let persisted = if self.replace {
            tmp.persist(&self.path)
        } else {
            tmp.persist_noclobber(&self.path)
        };
        if let Err(e) = persisted {
            // Removed here, under the lock, as the registry says.
            drop(e.path);
            return Err(if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                Error::Invalid(format!(
                    "{}: appeared while it was being written; use --force to replace it",
                    self.path.display()
                ))
            } else {
                Error::io(&self.path, without_temp_name(e.error))
            });
        }
        Ok(())
    }
}

/// Asks the kernel to start writing `len` bytes of `file` from `offset` to
/// disk (`len` 0: to the end), without waiting for them
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, Linux). A writer that calls
/// this behind itself spreads the disk work over the time it writes, so the
/// commit's `fsync` (or a loop device's attach, which syncs its backing file)
/// finds little left. Advisory: elsewhere, or on failure, nothing happens.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(off), Ok(n)) = (
            libc::off64_t::try_from(offset),
            libc::off64_t::try_from(len),
        ) else {
            return;
        };
        // SAFETY: a valid open descriptor; the call only reads its arguments.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Makes the renames in `dir` durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let mut list = live();
            let tmp_path = tmp.to_path_buf();
            list.retain(|p| *p != tmp_path);
            // Removes the file while the registry still agrees.
            drop(tmp);
        }
    }
}

/// Writes `bytes` to `path` through a [`PendingFile`]: a complete file with
/// `mode` under the final name, or nothing (also when interrupted).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    let pending = PendingFile::create(path)?;
    (&pending.file)
        .write_all(bytes)
        .map_err(|e| Error::io(path, e))?;
    pending.commit(mode)
}

/// A directory that this process is filling (a build's staging directory,
/// an unpacked spool), listed in the registry so an interrupted run removes
/// it. Dropped without [`commit`](Self::commit), it is removed.
#[derive(Debug)]
pub struct PendingDir {
    path: PathBuf,
    /// Cleared by commit.
    live: bool,
}

impl PendingDir {
    /// Creates `path` (which must not exist) and registers it.
    pub fn create(path: &Path) -> Result<Self> {
        let mut list = live();
        std::fs::create_dir(path).map_err(|e| Error::io(path, e))?;
        list.push(path.to_path_buf());
        Ok(PendingDir {
            path: path.to_path_buf(),
            live: true,
        })
    }

    /// A new, registered directory under the system's temporary directory,
    /// named `.PREFIXXXXXXX`.
    pub fn temp(prefix: &str) -> Result<Self> {
        let mut list = live();
        let dir = tempfile::Builder::new()
            .prefix(&format!(".{prefix}"))
            .tempdir()
            .map_err(|e| Error::io(std::env::temp_dir(), e))?
            .keep();
        list.push(dir.clone());
        Ok(PendingDir {
            path: dir,
            live: true,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `publish` (which moves the directory into place) with the
    /// registry held, so an interrupting handler either removes the directory
    /// first or finds it published; afterwards it is no longer removed.
    pub fn commit<T, E>(
        mut self,
        publish: impl FnOnce(&Path) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let mut list = live();
        let out = publish(&self.path)?;
        list.retain(|p| *p != self.path);
        self.live = false;
        Ok(out)
    }
}

impl Drop for PendingDir {
    fn drop(&mut self) {
        if self.live {
            let mut list = live();
            list.retain(|p| *p != self.path);
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// tempfile's errors end in `at path ".NAME.XXXX.partial"`: a name that
/// means nothing to the user, who knows the output by its final name.
fn without_temp_name(e: std::io::Error) -> std::io::Error {
    let text = e.to_string();
    match text.find(" at path ") {
        Some(i) => std::io::Error::new(e.kind(), text[..i].to_string()),
        None => e,
    }
}

/// The directory a file at `path` lives in.
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::BlockDevice;

    #[test]
    fn commit_renames_and_drop_removes() {
        let dir = tempfile::tempdir().unwrap();
        let done = dir.path().join("done.img");
        let p = PendingFile::create(&done).unwrap();
        p.device(8192).unwrap().write_at(4096, b"x").unwrap();
        assert!(!done.exists(), "no final name before commit");
        assert!(pending_paths().iter().any(|t| t.starts_with(dir.path())));
        p.commit(0o640).unwrap();
        let meta = std::fs::metadata(&done).unwrap();
        assert_eq!(
            (meta.len(), meta.permissions().mode() & 0o777),
            (8192, 0o640)
        );

        let dropped = dir.path().join("dropped.img");
        drop(PendingFile::create(&dropped).unwrap());
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "only the committed file remains");
        assert!(
            !pending_paths().iter().any(|t| t.starts_with(dir.path())),
            "committed and dropped files leave the registry"
        );
    }

    #[test]
    fn output_rule() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("base.img");
        std::fs::write(&input, b"base").unwrap();
        let new = dir.path().join("new.img");
        check_output(&new, false, &[&input]).unwrap();

        // The same file under another spelling, a hard link and a symlink.
        let dotted = dir.path().join(".").join("base.img");
        let hard = dir.path().join("hard.img");
        std::fs::hard_link(&input, &hard).unwrap();
        let soft = dir.path().join("soft.img");
        std::os::unix::fs::symlink(&input, &soft).unwrap();
        for out in [&input, &dotted, &hard, &soft] {
            let err = check_output(out, true, &[&input]).unwrap_err().to_string();
            assert!(err.contains("refusing to write"), "{err}");
        }

        let other = dir.path().join("other.img");
        std::fs::write(&other, b"x").unwrap();
        let err = check_output(&other, false, &[&input]).unwrap_err();
        assert!(err.to_string().contains("use --force"), "{err}");
        check_output(&other, true, &[&input]).unwrap();
        let err = check_output(dir.path(), true, &[]).unwrap_err();
        assert!(err.to_string().contains("a directory"), "{err}");
        let err = check_output(Path::new("/dev/null"), true, &[]).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn checked_commit_does_not_replace_a_newcomer() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.img");
        let p = PendingFile::create_checked(&out, false, &[]).unwrap();
        std::fs::write(&out, b"someone else's").unwrap();
        let err = p.commit(0o644).unwrap_err();
        assert!(err.to_string().contains("appeared"), "{err}");
        assert_eq!(std::fs::read(&out).unwrap(), b"someone else's");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
