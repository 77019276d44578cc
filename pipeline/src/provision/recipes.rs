//! The provisioning recipes nodeimg ships (`templates/provision/*.sh`,
//! embedded in the binary): `[base] provision = ["kubeadm", "helm"]` names
//! them beside the user's own scripts.
//!
//! A recipe is rendered by putting shell assignments after its `#!` line:
//! the versions of the cluster file's `[versions]` table and the download
//! locations, whose defaults are the upstream servers and which the
//! environment variables of the same names override (a mirror, or a server
//! on 127.0.0.1 in the tests). The scripts run with a clean environment, so
//! nothing else reaches them.

use crate::cluster::Versions;
use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::path::Path;

/// A shipped recipe.
#[derive(Debug)]
pub struct Recipe {
    /// What `[base] provision` and `--provision` call it.
    pub name: &'static str,
    /// What it installs, for messages and docs.
    pub installs: &'static str,
    text: &'static str,
    /// Whether the recipe calls the shared download functions
    /// (`templates/provision/lib/download.sh`), put in front of its text.
    downloads: bool,
}

/// `need_curl` and `download_checked`, shared by the recipes that install a
/// checked release file.
const DOWNLOAD_LIB: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../templates/provision/lib/download.sh"
));

macro_rules! recipe {
    ($name:literal, $installs:literal, $downloads:literal) => {
        Recipe {
            name: $name,
            installs: $installs,
            downloads: $downloads,
            text: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../templates/provision/",
                $name,
                ".sh"
            )),
        }
    };
}

/// Every shipped recipe.
pub const RECIPES: &[Recipe] = &[
    recipe!(
        "kubeadm",
        "kubeadm, kubelet, kubectl and CRI-O from pkgs.k8s.io, pinned and held; kernel modules, sysctls, swap off",
        false
    ),
    recipe!("helm", "helm from its release tarball, SHA-256 checked", true),
    recipe!("k3s", "the k3s binary for arm64, SHA-256 checked", true),
];

/// Download locations and pins a recipe reads, with their defaults; an
/// environment variable of the same name replaces the default.
const SETTINGS: &[(&str, &str)] = &[
    ("NODEIMG_K8S_PKGS", "https://pkgs.k8s.io"),
    ("NODEIMG_HELM_URL", "https://get.helm.sh"),
    ("NODEIMG_HELM_SHA256", ""),
    (
        "NODEIMG_K3S_URL",
        "https://github.com/k3s-io/k3s/releases/download",
    ),
    ("NODEIMG_K3S_SHA256", ""),
];

/// The recipe called `entry`, when a `provision` entry is exactly a shipped
/// recipe's name (a file of that name is written `./kubeadm`).
pub fn find(entry: &Path) -> Option<&'static Recipe> {
    let s = entry.to_str()?;
    RECIPES.iter().find(|r| r.name == s)
}

/// `kubeadm, helm, k3s`.
pub fn names() -> String {
    RECIPES
        .iter()
        .map(|r| r.name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Recipe {
    /// The script to run: the recipe with the versions and download
    /// locations assigned after its `#!` line.
    pub fn render(&self, versions: &Versions) -> Result<String> {
        let mut vars = vec![
            ("KUBERNETES_VERSION", versions.kubernetes.clone()),
            ("CRIO_VERSION", versions.crio.clone()),
            ("HELM_VERSION", versions.helm.clone()),
            ("K3S_VERSION", versions.k3s.clone()),
        ];
        for (name, default) in SETTINGS {
            let value = std::env::var(name).unwrap_or_else(|_| (*default).to_string());
            check_setting(name, &value)?;
            vars.push((name, value));
        }
        let (shebang, rest) = self.text.split_once('\n').unwrap_or((self.text, ""));
        let mut out = format!("{shebang}\n# Set by nodeimg (recipe {}):\n", self.name);
        for (name, value) in vars {
            out.push_str(&format!("{name}={}\n", shell_quote(&value)));
        }
        if self.downloads {
            out.push_str(DOWNLOAD_LIB);
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Identifies the rendered recipe for build keys: SHA-256 of its text.
    pub fn fingerprint(&self, versions: &Versions) -> Result<String> {
        let text = self.render(versions)?;
        Ok(Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect())
    }
}

/// A URL must be http(s) without spaces or quotes; a SHA-256 64 hex digits.
fn check_setting(name: &str, value: &str) -> Result<()> {
    let ok = if name.ends_with("_SHA256") {
        value.is_empty() || (value.len() == 64 && value.chars().all(|c| c.is_ascii_hexdigit()))
    } else {
        (value.starts_with("http://") || value.starts_with("https://"))
            && !value
                .chars()
                .any(|c| c.is_whitespace() || "'\"\\`$".contains(c))
    };
    if ok {
        Ok(())
    } else {
        Err(Error::refused(
            format!("environment variable {name}"),
            if name.ends_with("_SHA256") {
                "must be empty or 64 hex digits"
            } else {
                "must be an http:// or https:// URL without spaces or quotes"
            },
        ))
    }
}

/// `value` as one single-quoted shell word.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_assigns_versions_after_the_shebang() {
        let r = find(Path::new("kubeadm")).unwrap();
        let v = Versions {
            kubernetes: "1.33.4".into(),
            ..Versions::default()
        };
        let text = r.render(&v).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("#!/bin/sh"));
        assert!(text.contains("\nKUBERNETES_VERSION='1.33.4'\n"), "{text}");
        assert!(text.contains("\nCRIO_VERSION='1.34'\n"), "{text}");
        assert!(text.contains("core:/stable:/v$k8s_minor/deb/"));
    }

    #[test]
    fn only_exact_names_are_recipes() {
        assert!(find(Path::new("k3s")).is_some());
        assert!(find(Path::new("./k3s")).is_none());
        assert!(find(Path::new("provision/kubeadm.sh")).is_none());
        assert_eq!(names(), "kubeadm, helm, k3s");
    }

    #[test]
    fn download_recipes_get_the_shared_functions_before_their_text() {
        for name in ["helm", "k3s"] {
            let text = find(Path::new(name))
                .unwrap()
                .render(&Versions::default())
                .unwrap();
            let defined = text.find("download_checked() {").unwrap();
            let called = text.find("$(download_checked ").unwrap();
            assert!(defined < called, "{name}: {text}");
        }
        let kubeadm = find(Path::new("kubeadm"))
            .unwrap()
            .render(&Versions::default())
            .unwrap();
        assert!(!kubeadm.contains("download_checked"));
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }
}
