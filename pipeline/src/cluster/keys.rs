//! SSH public keys and age keys named by the cluster file, read and checked
//! while validating (the `ssh-key` and `age` crates are the judges).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where a node's age key comes from (`age_key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgeKeySource {
    /// `"generate"`: one identity for the cluster, kept in the state file.
    Generate,
    /// The user's identity file, copied to the node as it is.
    File(AgeKey),
}

/// An age identity file the user gave: checked, and its public key known.
#[derive(Clone, PartialEq, Eq)]
pub struct AgeKey {
    pub path: PathBuf,
    /// The recipient (`age1…`) of the file's first identity.
    pub public: String,
    /// The file's bytes (secret).
    pub contents: Vec<u8>,
}

impl fmt::Debug for AgeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgeKey")
            .field("path", &self.path)
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// `~` or `~/…` expanded with `$HOME`; relative paths resolved against `dir`.
pub fn resolve_path(dir: &Path, s: &str) -> PathBuf {
    let expanded = if s == "~" {
        std::env::var_os("HOME").map(PathBuf::from)
    } else if let Some(rest) = s.strip_prefix("~/") {
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(rest))
    } else {
        None
    };
    let p = expanded.unwrap_or_else(|| PathBuf::from(s));
    if p.is_absolute() {
        p
    } else {
        dir.join(p)
    }
}

/// Whether an `ssh_keys` entry is a key itself rather than a path.
fn is_literal_key(s: &str) -> bool {
    let s = s.trim_start();
    ["ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-"]
        .iter()
        .any(|p| s.starts_with(p))
        && s.contains(' ')
}

/// One checked OpenSSH public key line.
pub fn check_public_key(line: &str) -> Result<String, String> {
    let line = line.trim();
    ssh_key::PublicKey::from_openssh(line)
        .map_err(|e| format!("not an OpenSSH public key ({e})"))?;
    Ok(line.to_string())
}

/// The public key lines an `ssh_keys` entry stands for: the entry itself,
/// or every key line of the file it names.
pub fn resolve_ssh_keys(dir: &Path, entry: &str) -> Result<Vec<String>, String> {
    if is_literal_key(entry) {
        return Ok(vec![check_public_key(entry)?]);
    }
    let path = resolve_path(dir, entry);
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        keys.push(
            check_public_key(t).map_err(|why| format!("{}:{}: {why}", path.display(), i + 1))?,
        );
    }
    if keys.is_empty() {
        return Err(format!("{} holds no public key", path.display()));
    }
    Ok(keys)
}

/// Reads and checks an age identity file (what `age-keygen` writes:
/// comments and `AGE-SECRET-KEY-1…` lines).
pub fn read_age_key(dir: &Path, entry: &str) -> Result<AgeKey, String> {
    let path = resolve_path(dir, entry);
    let contents = std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let public = age_public_key(&contents)
        .map_err(|why| format!("{} is not an age identity file: {why}", path.display()))?;
    Ok(AgeKey {
        path,
        public,
        contents,
    })
}

/// The recipient of the first identity in an age identity file.
pub fn age_public_key(contents: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(contents).map_err(|_| "not UTF-8 text".to_string())?;
    let mut first = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        // Never echo the line: it is a secret key.
        let id = age::x25519::Identity::from_str(t)
            .map_err(|_| format!("line {} is not an AGE-SECRET-KEY-1 identity", i + 1))?;
        first.get_or_insert_with(|| id.to_public().to_string());
    }
    first.ok_or_else(|| "no AGE-SECRET-KEY-1 line".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@host";

    #[test]
    fn literal_and_file_keys() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(resolve_ssh_keys(dir.path(), KEY).unwrap(), vec![KEY]);
        std::fs::write(
            dir.path().join("k.pub"),
            format!("# mine\n{KEY}\n\n{KEY}\n"),
        )
        .unwrap();
        assert_eq!(resolve_ssh_keys(dir.path(), "k.pub").unwrap().len(), 2);
        std::fs::write(dir.path().join("bad.pub"), "ssh-ed25519 AAAAnope x\n").unwrap();
        let e = resolve_ssh_keys(dir.path(), "bad.pub").unwrap_err();
        assert!(e.contains("bad.pub:1"), "{e}");
        assert!(resolve_ssh_keys(dir.path(), "ssh-ed25519 AAAAbroken me").is_err());
        assert!(resolve_ssh_keys(dir.path(), "missing.pub").is_err());
    }

    #[test]
    fn age_identity_files() {
        let id = age::x25519::Identity::generate();
        use age::secrecy::ExposeSecret;
        let text = format!(
            "# created: 2026-01-01T00:00:00Z\n# public key: {}\n{}\n",
            id.to_public(),
            id.to_string().expose_secret()
        );
        assert_eq!(
            age_public_key(text.as_bytes()).unwrap(),
            id.to_public().to_string()
        );
        assert!(age_public_key(b"# nothing\n").is_err());
        let e = age_public_key(b"AGE-SECRET-KEY-1NOTAKEY\n").unwrap_err();
        assert!(!e.contains("NOTAKEY"), "{e}");
    }
}
