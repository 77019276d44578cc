//! Which OS an image holds, and the facts about it the stages act on.
//!
//! [`OsProfile::detect`] reads an installed OS through [`OsFiles`] (an
//! [`OsImage`](crate::osimage::OsImage), without mounting anything):
//!
//! - **NixOS** when `/etc/os-release` says `ID=nixos`, or — before the first
//!   activation, when there is no `/etc` at all — when `/nix/store` exists
//!   beside `/nix-path-registration` or a `/nix/var/nix/profiles/system`
//!   link. The version comes from `VERSION_ID`, else from the name of the
//!   system profile's store path (`…-nixos-system-HOST-25.05.20250601.abc`).
//! - **Debian family** when `/etc/os-release` (or `/usr/lib/os-release`) has
//!   `ID=debian|raspbian|ubuntu` or `ID_LIKE` naming one of them. Then:
//!   - `raspberry_pi`: `/etc/rpi-issue`, `ID=raspbian`, or a `cmdline.txt`
//!     in `/boot/firmware` or `/boot`;
//!   - `first_boot`: `/etc/machine-id` is `uninitialized` (systemd's "first
//!     boot": presets are applied and `ConditionFirstBoot=yes` units run);
//!   - `cloud_init`: `/etc/cloud/cloud.cfg` or `/usr/bin/cloud-init` exists
//!     and `/etc/cloud/cloud-init.disabled` does not;
//!   - `network`: NetworkManager when its binary or unit is present;
//!     systemd-networkd when it is enabled or `/etc/systemd/network` holds a
//!     `.network` file; ifupdown when `/etc/network/interfaces` exists;
//!     networkd otherwise (every systemd system ships it).
//!
//! Any other OS is refused with its `ID`: nodeimg writes what a node needs
//! by the conventions of these two families only.

use crate::{Error, Result};
use imagegen::fs::DirEntry;
use serde::{Deserialize, Serialize};

/// Read access to an installed OS by its own absolute paths.
pub trait OsFiles {
    /// The contents of the file at `path` (symlinks followed), or `None`
    /// when nothing is there.
    fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>>;
    /// Whether anything exists at `path` (symlinks followed).
    fn exists(&self, path: &str) -> Result<bool>;
    /// The entries of the directory `path`; empty when it is absent.
    fn entries(&self, path: &str) -> Result<Vec<DirEntry>>;
}

/// How the OS configures its network (where a static address is written).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// Keyfiles in `/etc/NetworkManager/system-connections/` (root, 0600).
    NetworkManager,
    /// `.network` units in `/etc/systemd/network/`.
    Networkd,
    /// `/etc/network/interfaces`.
    Ifupdown,
}

/// The OS an image holds; serialised into the base manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum OsProfile {
    /// Debian, Raspberry Pi OS, Ubuntu.
    Debian {
        /// `ID` of os-release: `debian`, `raspbian`, `ubuntu`.
        id: String,
        /// `VERSION_CODENAME` (`trixie`), when known.
        codename: Option<String>,
        /// `PRETTY_NAME`.
        pretty: String,
        /// A Raspberry Pi OS image (or any image booted by the Pi firmware).
        raspberry_pi: bool,
        /// `/etc/machine-id` is `uninitialized`: the next boot is a systemd
        /// first boot.
        first_boot: bool,
        /// cloud-init is installed and not disabled.
        cloud_init: bool,
        network: Network,
    },
    /// NixOS (an aarch64 sd-image), possibly before its first activation.
    #[serde(rename = "nixos")]
    NixOs { version: Option<String> },
}

impl OsProfile {
    /// `debian` or `nixos`.
    pub fn name(&self) -> &'static str {
        match self {
            OsProfile::Debian { .. } => "debian",
            OsProfile::NixOs { .. } => "nixos",
        }
    }

    /// Whether the next boot is a systemd first boot (units to keep off
    /// must be masked, not only disabled).
    pub fn first_boot(&self) -> bool {
        matches!(
            self,
            OsProfile::Debian {
                first_boot: true,
                ..
            }
        )
    }

    /// Whether the image boots through the Raspberry Pi firmware.
    pub fn raspberry_pi(&self) -> bool {
        matches!(
            self,
            OsProfile::Debian {
                raspberry_pi: true,
                ..
            }
        )
    }

    /// Recognises the OS behind `files`; see the module documentation.
    pub fn detect(files: &dyn OsFiles) -> Result<OsProfile> {
        let release = match files.read_file("/etc/os-release")? {
            Some(b) => Some(b),
            None => files.read_file("/usr/lib/os-release")?,
        };
        let release = release.map(|b| parse_os_release(&String::from_utf8_lossy(&b)));
        let get = |k: &str| {
            release
                .as_ref()
                .and_then(|r| r.iter().find(|(key, _)| key == k))
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        };
        let id = get("ID").unwrap_or_default();
        if id == "nixos" {
            return Ok(OsProfile::NixOs {
                version: get("VERSION_ID"),
            });
        }
        if release.is_none()
            && files.exists("/nix/store")?
            && (files.exists("/nix-path-registration")?
                || files.exists("/nix/var/nix/profiles/system")?)
        {
            return Ok(OsProfile::NixOs {
                version: nix_profile_version(files)?,
            });
        }
        let Some(_) = release else {
            return Err(Error::refused(
                "OS detection",
                "no /etc/os-release, /usr/lib/os-release or Nix store found on the root filesystem",
            ));
        };
        let like = get("ID_LIKE").unwrap_or_default();
        let debian_like = ["debian", "raspbian", "ubuntu"];
        if !debian_like.contains(&id.as_str())
            && !like.split_whitespace().any(|l| debian_like.contains(&l))
        {
            return Err(Error::refused(
                format!("OS ID={id}"),
                "unsupported: nodeimg knows Debian-family systems (Debian, Raspberry Pi OS, Ubuntu) and NixOS",
            ));
        }
        let raspberry_pi = id == "raspbian"
            || files.exists("/etc/rpi-issue")?
            || files.exists("/boot/firmware/cmdline.txt")?
            || files.exists("/boot/cmdline.txt")?;
        let first_boot = files
            .read_file("/etc/machine-id")?
            .is_some_and(|m| String::from_utf8_lossy(&m).trim() == "uninitialized");
        let cloud_init = (files.exists("/etc/cloud/cloud.cfg")?
            || files.exists("/usr/bin/cloud-init")?)
            && !files.exists("/etc/cloud/cloud-init.disabled")?;
        Ok(OsProfile::Debian {
            codename: get("VERSION_CODENAME").or_else(|| {
                get("VERSION").and_then(|v| {
                    let (_, rest) = v.split_once('(')?;
                    Some(rest.trim_end_matches(')').trim().to_string())
                })
            }),
            pretty: get("PRETTY_NAME")
                .or_else(|| get("NAME"))
                .unwrap_or_else(|| id.clone()),
            id,
            raspberry_pi,
            first_boot,
            cloud_init,
            network: detect_network(files)?,
        })
    }
}

fn detect_network(files: &dyn OsFiles) -> Result<Network> {
    let unit_dirs = [
        "/etc/systemd/system",
        "/usr/local/lib/systemd/system",
        "/lib/systemd/system",
        "/usr/lib/systemd/system",
    ];
    for dir in unit_dirs {
        if files.exists(&format!("{dir}/NetworkManager.service"))? {
            return Ok(Network::NetworkManager);
        }
    }
    if files.exists("/usr/sbin/NetworkManager")? {
        return Ok(Network::NetworkManager);
    }
    let wants = [
        "/etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
        "/etc/systemd/system/network-online.target.wants/systemd-networkd-wait-online.service",
    ];
    for w in wants {
        if files.exists(w)? {
            return Ok(Network::Networkd);
        }
    }
    if files
        .entries("/etc/systemd/network")?
        .iter()
        .any(|e| e.name.ends_with(".network"))
    {
        return Ok(Network::Networkd);
    }
    if files.exists("/etc/network/interfaces")? {
        return Ok(Network::Ifupdown);
    }
    Ok(Network::Networkd)
}

/// The version in the name of the system profile's store path, e.g.
/// `25.05.20250601.abcdef0` from `…-nixos-system-nixos-25.05.20250601.abcdef0`.
fn nix_profile_version(files: &dyn OsFiles) -> Result<Option<String>> {
    let mut candidates = Vec::new();
    if let Some(reg) = files.read_file("/nix-path-registration")? {
        candidates.extend(
            String::from_utf8_lossy(&reg)
                .lines()
                .map(|l| l.trim().to_string()),
        );
    }
    for e in files.entries("/nix/store")? {
        candidates.push(format!("/nix/store/{}", e.name));
    }
    for c in candidates {
        let Some(base) = c.rsplit('/').next() else {
            continue;
        };
        if !base.contains("-nixos-system-") {
            continue;
        }
        if let Some(v) = base
            .rsplit('-')
            .next()
            .filter(|v| v.starts_with(|ch: char| ch.is_ascii_digit()))
        {
            return Ok(Some(v.to_string()));
        }
    }
    Ok(None)
}

/// Parses os-release(5) text: `KEY=value` lines, values optionally quoted
/// with `"` (backslash escapes) or `'`; comments and bad lines skipped.
pub fn parse_os_release(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let value = if let Some(inner) = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            let mut s = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        s.push(n);
                    }
                } else {
                    s.push(c);
                }
            }
            s
        } else if let Some(inner) = v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
            inner.to_string()
        } else {
            v.to_string()
        };
        out.push((k.trim().to_string(), value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Fake(BTreeMap<&'static str, &'static str>);

    impl OsFiles for Fake {
        fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>> {
            Ok(self.0.get(path).map(|s| s.as_bytes().to_vec()))
        }
        fn exists(&self, path: &str) -> Result<bool> {
            Ok(self
                .0
                .keys()
                .any(|k| *k == path || k.starts_with(&format!("{path}/"))))
        }
        fn entries(&self, path: &str) -> Result<Vec<DirEntry>> {
            Ok(self
                .0
                .keys()
                .filter_map(|k| k.strip_prefix(&format!("{path}/")))
                .map(|name| DirEntry {
                    name: name.to_string(),
                    kind: imagegen::fs::FileKind::File,
                    size: 0,
                })
                .collect())
        }
    }

    #[test]
    fn os_release_quoting() {
        let r =
            parse_os_release("# c\nID=debian\nPRETTY_NAME=\"Debian \\\"x\\\"\"\nA='b c'\nbad\n");
        assert_eq!(
            r,
            vec![
                ("ID".into(), "debian".into()),
                ("PRETTY_NAME".into(), "Debian \"x\"".into()),
                ("A".into(), "b c".into())
            ]
        );
    }

    #[test]
    fn ubuntu_with_networkd_and_unknown_os() {
        let f = Fake(BTreeMap::from([
            (
                "/usr/lib/os-release",
                "ID=ubuntu\nID_LIKE=debian\nVERSION=\"24.04 LTS (Noble Numbat)\"\n",
            ),
            ("/etc/systemd/network/10-eth.network", "[Match]\n"),
            ("/etc/machine-id", "\n"),
        ]));
        let p = OsProfile::detect(&f).unwrap();
        assert_eq!(
            p,
            OsProfile::Debian {
                id: "ubuntu".into(),
                codename: Some("Noble Numbat".into()),
                pretty: "ubuntu".into(),
                raspberry_pi: false,
                first_boot: false,
                cloud_init: false,
                network: Network::Networkd,
            }
        );
        let f = Fake(BTreeMap::from([("/etc/os-release", "ID=fedora\n")]));
        let e = OsProfile::detect(&f).unwrap_err().to_string();
        assert!(e.contains("ID=fedora"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn os_release_never_panics(text in "\\PC{0,400}") {
            let _ = parse_os_release(&text);
        }
    }
}
