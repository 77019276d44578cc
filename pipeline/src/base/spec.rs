//! The `[base]` and `[firmware]` tables of the cluster file, also built from
//! `nodeimg base` flags. Keys are documented in `docs/cluster.md`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What stage 1 starts from and what it changes (`[base]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BaseSpec {
    /// A disk image (path or URL) or a root tree (directory or tarball).
    pub source: Option<String>,
    /// SHA-256 of the source: 64 hex digits, or a `SHA256SUMS`-style file.
    pub sha256: Option<String>,
    /// Size of the result, e.g. `8GiB`.
    pub size: Option<String>,
    /// A tree copied into the root filesystem.
    pub overlay: Option<PathBuf>,
    /// Owners and modes for `overlay` (the `--owner-map` format).
    pub owner_map: Option<PathBuf>,
    /// systemd units to enable, disable and mask.
    #[serde(default)]
    pub enable: Vec<String>,
    #[serde(default)]
    pub disable: Vec<String>,
    #[serde(default)]
    pub mask: Vec<String>,
    /// Kernel command line words to add and to remove.
    #[serde(default)]
    pub cmdline_append: Vec<String>,
    #[serde(default)]
    pub cmdline_remove: Vec<String>,
    /// Lines added to the Raspberry Pi `config.txt`.
    #[serde(default)]
    pub config_txt: Vec<String>,
    /// `key = value` written to a drop-in in `/etc/sysctl.d/`.
    #[serde(default)]
    pub sysctl: BTreeMap<String, String>,
    /// Kernel modules loaded at boot (`/etc/modules-load.d/`).
    #[serde(default)]
    pub modules_load: Vec<String>,
    /// Remove swap from fstab and mask the swap services.
    #[serde(default)]
    pub disable_swap: bool,
    /// Enable the SSH server.
    #[serde(default)]
    pub ssh: bool,
    /// e.g. `Europe/Berlin`.
    pub timezone: Option<String>,
    /// e.g. `en_GB.UTF-8`.
    pub locale: Option<String>,
    /// Run as root inside the image's root (Linux, root only), in order:
    /// shipped recipes by name (`kubeadm`, `helm`, `k3s`) and script files.
    /// One string or a list.
    #[serde(default, deserialize_with = "one_or_many")]
    pub provision: Vec<PathBuf>,
    /// A directory copied to a scratch place inside the root for the scripts.
    pub provision_files: Option<PathBuf>,
}

/// Board firmware (`[firmware]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FirmwareSpec {
    /// Raspberry Pi boot files: a directory or tarball laid over the boot
    /// partition.
    pub boot_files: Option<PathBuf>,
    /// Tow-Boot: a release archive, its `shared.disk-image.img`, or a raw
    /// `.bin` (path or URL).
    pub towboot: Option<String>,
    /// SHA-256 of `towboot`.
    pub sha256: Option<String>,
    /// Move OS partitions that start inside the firmware region.
    #[serde(default)]
    pub relocate: bool,
}

/// `provision = "x.sh"` (the first form) or `provision = ["kubeadm", "x.sh"]`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(PathBuf),
        Many(Vec<PathBuf>),
    }
    match OneOrMany::deserialize(d) {
        Ok(OneOrMany::One(p)) => Ok(vec![p]),
        Ok(OneOrMany::Many(v)) => Ok(v),
        Err(_) => Err(serde::de::Error::custom(
            "provision must be a string or a list of strings (recipe names or script paths)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provision_is_one_string_or_a_list() {
        let one: BaseSpec = toml::from_str(r#"provision = "a.sh""#).unwrap();
        assert_eq!(one.provision, vec![PathBuf::from("a.sh")]);
        let many: BaseSpec = toml::from_str(r#"provision = ["kubeadm", "b.sh"]"#).unwrap();
        assert_eq!(
            many.provision,
            vec![PathBuf::from("kubeadm"), PathBuf::from("b.sh")]
        );
        assert!(toml::from_str::<BaseSpec>("provision = 3").is_err());
    }
}
