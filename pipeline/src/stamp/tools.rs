//! Does the base hold what the flavour's bootstraps run? `stamp` and
//! `build` ask before they write anything, so a kubeadm cluster over a base
//! without kubeadm is refused with the recipe that fixes it instead of
//! stopping at first boot with "not installed in this image".
//!
//! The base's root is read through our own filesystem code (no mounts):
//! each tool is looked up, symlinks followed, as an executable file in the
//! directories of `PATH` — on Debian the usual ones, on NixOS the system
//! profile's `sw/bin` and the one the boot entry's `init=` names (an
//! sd-image has no profile link before its first boot).

use crate::cluster::{Cluster, Node};
use crate::flavour::{Flavour, Role, Tool};
use crate::os::OsProfile;
use crate::osimage::{resolve_existing, OsImage};
use crate::{Error, Result};
use imagegen::fs::FileKind;

/// Debian's `PATH` for root, as the bootstrap unit runs.
const DEBIAN_PATH: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// The tools `flavour` needs on nodes of `roles` that `image` lacks.
pub fn missing_tools(image: &OsImage, flavour: Flavour, roles: &[Role]) -> Result<Vec<Tool>> {
    let dirs = search_dirs(image)?;
    let mut missing = Vec::new();
    for t in flavour.tools() {
        if !roles.iter().any(|r| t.needed_by(*r)) {
            continue;
        }
        let mut found = false;
        'names: for name in t.any_of {
            for d in &dirs {
                if is_executable(image, &format!("{d}/{name}"))? {
                    found = true;
                    break 'names;
                }
            }
        }
        if !found {
            missing.push(*t);
        }
    }
    Ok(missing)
}

/// Refuses, in one line naming the recipes to add, a base that lacks a
/// tool that `nodes` of `cluster` run. `base` names the image in the
/// message.
pub fn check_tools(image: &OsImage, cluster: &Cluster, nodes: &[&Node], base: &str) -> Result<()> {
    let mut roles: Vec<Role> = nodes.iter().map(|n| n.role).collect();
    roles.sort();
    roles.dedup();
    let missing = missing_tools(image, cluster.flavour, &roles)?;
    if missing.is_empty() {
        return Ok(());
    }
    let what: Vec<&str> = missing.iter().map(|t| t.what).collect();
    let mut recipes: Vec<&str> = missing.iter().map(|t| t.recipe).collect();
    recipes.dedup();
    let list = recipes
        .iter()
        .map(|r| format!("\"{r}\""))
        .collect::<Vec<_>>()
        .join(", ");
    Err(Error::refused(
        format!("base {base}"),
        format!(
            "has no {} for the {} flavour: build the base with [base] provision = [{list}] (docs/base.md), or give --no-tool-check if the tools arrive another way",
            what.join(", "),
            cluster.flavour
        ),
    ))
}

/// Where the bootstrap finds its programs on this OS.
fn search_dirs(image: &OsImage) -> Result<Vec<String>> {
    let mut dirs: Vec<String> = DEBIAN_PATH.iter().map(|d| d.to_string()).collect();
    if let OsProfile::NixOs { .. } = image.profile() {
        dirs.insert(0, "/nix/var/nix/profiles/system/sw/bin".into());
        dirs.insert(0, "/run/current-system/sw/bin".into());
        if let Some(conf) = image.read("/boot/extlinux/extlinux.conf")? {
            let conf = String::from_utf8_lossy(&conf);
            for word in conf.split_whitespace() {
                if let Some(init) = word.strip_prefix("init=") {
                    if let Some(system) = init.strip_suffix("/init") {
                        dirs.insert(0, format!("{system}/sw/bin"));
                    }
                }
            }
        }
    }
    Ok(dirs)
}

/// An executable file at `path`, symlinks followed inside the image.
fn is_executable(image: &OsImage, path: &str) -> Result<bool> {
    let Some(canon) = resolve_existing(image, path, true)? else {
        return Ok(false);
    };
    Ok(image
        .stat(&canon)?
        .is_some_and(|s| s.kind == FileKind::File && s.mode.unwrap_or(0o755) & 0o111 != 0))
}
