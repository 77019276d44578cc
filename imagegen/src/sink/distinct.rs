//! An output must never be one of the inputs: writing it would destroy what
//! is being read.

use crate::{Error, Result};
use std::path::Path;

/// Refuses `output` when it names the same file as `input` (same device and
/// inode, through any link or path spelling), or — when either does not
/// exist yet — the same absolute path.
pub fn ensure_not_input(output: &Path, input: &Path) -> Result<()> {
    if same_file(output, input) {
        return Err(Error::Invalid(format!(
            "{}: is also an input ({}): the output must be a new file",
            output.display(),
            input.display()
        )));
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => match (std::path::absolute(a), std::path::absolute(b)) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_file_through_links_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.img");
        std::fs::write(&a, b"x").unwrap();
        let link = dir.path().join("l.img");
        std::os::unix::fs::symlink(&a, &link).unwrap();
        assert!(ensure_not_input(&link, &a).is_err());
        assert!(ensure_not_input(&dir.path().join("./a.img"), &a).is_err());
        assert!(ensure_not_input(&dir.path().join("b.img"), &a).is_ok());
    }
}
