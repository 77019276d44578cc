//! Where a template's text comes from: the set embedded from the
//! repository's `templates/` directory, overridden file by file by a user's
//! directory of the same layout (`[templates] dir`).
//!
//! A template is looked up as `<flavour>/<file>`, then in the flavour's
//! parents (`k3s-agent` → `k3s`), then as `common/<file>`; at each place the
//! user's directory is tried before the embedded set, so a file at the same
//! relative path as an embedded one replaces exactly that one.

use crate::flavour::Flavour;
use crate::{Error, Result};
use std::borrow::Cow;
use std::io;
use std::path::Path;

macro_rules! embed {
    ($path:literal) => {
        (
            $path,
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../templates/", $path)),
        )
    };
}

/// The embedded templates: path under `templates/`, text.
pub(crate) const EMBEDDED: &[(&str, &str)] = &[
    embed!("common/bootstrap-lib.sh"),
    embed!("common/nodeimg-bootstrap.service"),
    embed!("common/nodeimg.preset"),
    embed!("common/nodeimg-firstboot.sh"),
    embed!("common/nodeimg-firstboot.service"),
    embed!("common/nodeimg-firstboot.preset"),
    embed!("kubeadm/init.sh"),
    embed!("kubeadm/control-plane.sh"),
    embed!("kubeadm/worker.sh"),
    embed!("kubeadm/init.yaml"),
    embed!("kubeadm/control-plane.yaml"),
    embed!("kubeadm/worker.yaml"),
    embed!("kubeadm/cilium-values.yaml"),
    embed!("kubeadm/flux-instance.yaml"),
    embed!("kubeadm/csr-approver.sh"),
    embed!("kubeadm/nodeimg-csr-approver.service"),
    embed!("k3s/server.sh"),
    embed!("k3s/agent.sh"),
    embed!("k3s/init.yaml"),
    embed!("k3s/server.yaml"),
    embed!("k3s/agent.yaml"),
    embed!("k3s/tls-san.yaml"),
    embed!("k3s/k3s.service"),
    embed!("k3s/k3s-agent.service"),
    embed!("k3s-agent/agent.yaml"),
];

/// The NixOS module, embedded (not rendered: it reads the stamped files at
/// boot).
pub(crate) const NIXOS_MODULE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../templates/nixos/nodeimg.nix"
));

/// A template's text and the name it was found under (`kubeadm/init.sh`,
/// or `DIR/kubeadm/init.sh` for an override), for error messages.
pub(crate) struct Template {
    pub name: String,
    pub text: Cow<'static, str>,
}

/// The directories a flavour's templates are looked up in, most specific
/// first.
fn search_path(flavour: Flavour) -> &'static [&'static str] {
    match flavour {
        Flavour::Kubeadm => &["kubeadm", "common"],
        Flavour::K3s => &["k3s", "common"],
        Flavour::K3sAgent => &["k3s-agent", "k3s", "common"],
        Flavour::None => &["none", "common"],
    }
}

/// Finds `file` for `flavour`, in `overrides` first at each place.
pub(crate) fn find(flavour: Flavour, file: &str, overrides: Option<&Path>) -> Result<Template> {
    for dir in search_path(flavour) {
        let rel = format!("{dir}/{file}");
        if let Some(root) = overrides {
            let path = root.join(&rel);
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let text = String::from_utf8(bytes).map_err(|_| {
                        Error::refused(format!("template {}", path.display()), "not UTF-8 text")
                    })?;
                    return Ok(Template {
                        name: path.display().to_string(),
                        text: Cow::Owned(text),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(path, e)),
            }
        }
        if let Some((_, text)) = EMBEDDED.iter().find(|(p, _)| *p == rel) {
            return Ok(Template {
                name: rel,
                text: Cow::Borrowed(text),
            });
        }
    }
    Err(Error::refused(
        format!("template {file}"),
        format!(
            "not found for flavour {flavour} (looked in {})",
            search_path(flavour).join(", ")
        ),
    ))
}

/// Refuses an override directory that is not a directory, so a typo in
/// `[templates] dir` is not silently "no overrides".
pub(crate) fn check_overrides(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::refused(
            format!("templates dir {}", dir.display()),
            "not a directory",
        )),
        Err(e) => Err(Error::io(dir, e)),
    }
}
