//! New files that take their final name only when complete.

use crate::block::FileDevice;
use crate::{Error, Result};
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

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
    tmp: tempfile::TempPath,
    path: PathBuf,
}

impl PendingFile {
    /// Starts a file that will become `path`.
    pub fn create(path: &Path) -> Result<Self> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = path
            .file_name()
            .ok_or_else(|| Error::Invalid(format!("{}: not a file name", path.display())))?
            .to_string_lossy();
        let (file, tmp) = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".partial")
            .tempfile_in(dir)
            .map_err(|e| Error::io(path, e))?
            .into_parts();
        Ok(PendingFile {
            file,
            tmp,
            path: path.to_path_buf(),
        })
    }

    /// The open temporary file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The temporary file's path (for a step that must open the file by
    /// name, such as attaching a loop device).
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
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

    /// Sets `mode`, makes the contents durable and renames the file into place.
    pub fn commit(self, mode: u32) -> Result<()> {
        let err = |e| Error::io(&self.path, e);
        self.file
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(err)?;
        self.file.sync_all().map_err(err)?;
        self.tmp
            .persist(&self.path)
            .map_err(|e| Error::io(&self.path, e.error))?;
        Ok(())
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
    }
}
