//! Role bootstraps and cluster files: what a node runs at first boot to
//! join its cluster, rendered from templates into [`Op`]s for `stamp`.
//!
//! Templates live in the repository's `templates/<flavour>/` (embedded in
//! the binary, see `source`) and can be overridden file by file from a
//! directory. They are rendered like `envsubst` with the list of declared
//! variables ([`VARIABLES`]): `$NAME`/`${NAME}` of a declared name is
//! replaced, every other `$` is left for the shell (see `envsubst`).
//!
//! On the Debian profile a node of a bootstrapping flavour gets
//! - `/usr/local/lib/nodeimg/bootstrap.sh` (0755), the role's script, and
//!   `/usr/local/lib/nodeimg/bootstrap-lib.sh` (0644), what the scripts share;
//! - `/etc/systemd/system/nodeimg-bootstrap.service` (0644), a one-shot unit
//!   that runs the script once after the network and the container runtime
//!   are up, guarded by `/var/lib/nodeimg/bootstrap.done`, enabled through
//!   [`Op::Enable`] and the preset `/etc/systemd/system-preset/10-nodeimg.preset`;
//! - the role's cluster files: kubeadm `/etc/nodeimg/kubeadm.yaml` (secret),
//!   `/etc/nodeimg/cilium-values.yaml` and `/etc/nodeimg/flux-instance.yaml`
//!   (init), or k3s `/etc/rancher/k3s/config.yaml` and the k3s unit.
//!
//! On the NixOS profile the base's `nodeimg.nix` module ([`nixos_module`])
//! does the bootstrap from the files `stamp` writes, so no op is rendered.

mod envsubst;
mod nix;
mod source;
mod vars;

pub use nix::cluster_nix;
pub use vars::{variable, Variable, VARIABLES};

use crate::customise::Op;
use crate::flavour::{Flavour, Role};
use crate::{Error, Result};
use std::path::Path;

/// Variable values for rendering, by name (see [`VARIABLES`]).
pub type Vars = std::collections::BTreeMap<String, String>;

/// The OS family of the base, which decides where (and whether) role files
/// go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileKind {
    /// Raspberry Pi OS, Debian, Ubuntu: systemd units and scripts in `/etc`
    /// and `/usr/local`.
    Debian,
    /// NixOS: the base's `nodeimg.nix` reads the stamped identity files.
    NixOs,
}

/// What to render for one node.
#[derive(Debug, Clone, Copy)]
pub struct RenderRequest<'a> {
    pub flavour: Flavour,
    pub role: Role,
    pub profile: ProfileKind,
    pub vars: &'a Vars,
    /// A directory laid out like `templates/` whose files replace the
    /// embedded ones (`[templates] dir`).
    pub overrides: Option<&'a Path>,
}

/// The role bootstrap script.
pub const BOOTSTRAP_PATH: &str = "/usr/local/lib/nodeimg/bootstrap.sh";
/// Shell functions the bootstrap scripts share.
pub const BOOTSTRAP_LIB_PATH: &str = "/usr/local/lib/nodeimg/bootstrap-lib.sh";
/// The kubeadm init node's kubelet serving-certificate approver (24 h).
pub const CSR_APPROVER_PATH: &str = "/usr/local/lib/nodeimg/csr-approver.sh";
pub const CSR_APPROVER_UNIT: &str = "nodeimg-csr-approver.service";
pub const CSR_APPROVER_UNIT_PATH: &str = "/etc/systemd/system/nodeimg-csr-approver.service";
/// The one-shot unit that runs the bootstrap at first boot.
pub const BOOTSTRAP_UNIT: &str = "nodeimg-bootstrap.service";
/// Where the unit file goes.
pub const BOOTSTRAP_UNIT_PATH: &str = "/etc/systemd/system/nodeimg-bootstrap.service";
/// The preset that keeps the unit enabled when a first boot applies presets.
pub const PRESET_PATH: &str = "/etc/systemd/system-preset/10-nodeimg.preset";
/// Exists once the bootstrap has succeeded; the unit does not run again.
pub const DONE_FLAG: &str = "/var/lib/nodeimg/bootstrap.done";
/// The bootstrap's log (also in the journal).
pub const LOG_PATH: &str = "/var/log/nodeimg-bootstrap.log";

/// The first-boot check every Debian-profile node gets (docs/firstboot.md).
pub const FIRSTBOOT_PATH: &str = "/usr/local/lib/nodeimg/firstboot.sh";
/// Its unit.
pub const FIRSTBOOT_UNIT: &str = "nodeimg-firstboot.service";
/// Where its unit file goes.
pub const FIRSTBOOT_UNIT_PATH: &str = "/etc/systemd/system/nodeimg-firstboot.service";
/// What it checks, one item a line (`hostname`, `file`, `peer`).
pub const FIRSTBOOT_LIST_PATH: &str = "/etc/nodeimg/firstboot.list";
/// Keeps it enabled when a first boot applies presets.
pub const FIRSTBOOT_PRESET_PATH: &str = "/etc/systemd/system-preset/10-nodeimg-firstboot.preset";

/// The first-boot check as ops: the script, the library it shares with
/// the bootstraps, its unit, enabling and preset, and `list` (what to check,
/// made by `stamp` from the node's own files) at [`FIRSTBOOT_LIST_PATH`].
/// Rendered like the role files, so `[templates] dir` can replace them.
pub fn firstboot_ops(list: &str, vars: &Vars, overrides: Option<&Path>) -> Result<Vec<Op>> {
    let files = [
        out("nodeimg-firstboot.sh", FIRSTBOOT_PATH, 0o755),
        out("bootstrap-lib.sh", BOOTSTRAP_LIB_PATH, 0o644),
        out(FIRSTBOOT_UNIT, FIRSTBOOT_UNIT_PATH, 0o644),
        out("nodeimg-firstboot.preset", FIRSTBOOT_PRESET_PATH, 0o644),
    ];
    let mut ops = firstboot_files(&files, list, vars, overrides)?;
    ops.push(Op::Enable {
        unit: FIRSTBOOT_UNIT.to_string(),
    });
    Ok(ops)
}

/// The first-boot check of a NixOS node: the same script, library and
/// `list` as [`firstboot_ops`], at the same paths (NixOS leaves
/// /usr/local and undeclared /etc paths alone); the unit that runs it is
/// `nodeimg.nix`'s `systemd.services.nodeimg-firstboot`, since NixOS
/// declares /etc/systemd/system itself.
pub fn nixos_firstboot_ops(list: &str, vars: &Vars, overrides: Option<&Path>) -> Result<Vec<Op>> {
    let files = [
        out("nodeimg-firstboot.sh", FIRSTBOOT_PATH, 0o755),
        out("bootstrap-lib.sh", BOOTSTRAP_LIB_PATH, 0o644),
    ];
    firstboot_files(&files, list, vars, overrides)
}

/// `files` rendered, then `list` at [`FIRSTBOOT_LIST_PATH`].
fn firstboot_files(
    files: &[Output],
    list: &str,
    vars: &Vars,
    overrides: Option<&Path>,
) -> Result<Vec<Op>> {
    let mut ops = Vec::with_capacity(files.len() + 2);
    for f in files {
        let template = source::find(Flavour::None, &f.template, overrides)?;
        let rendered = render(&template.name, &template.text, vars)?;
        ops.push(Op::File {
            path: f.path.to_string(),
            data: rendered.text.into_bytes(),
            mode: f.mode,
            uid: 0,
            gid: 0,
            secret: false,
        });
    }
    ops.push(Op::File {
        path: FIRSTBOOT_LIST_PATH.to_string(),
        data: list.as_bytes().to_vec(),
        mode: 0o644,
        uid: 0,
        gid: 0,
        secret: false,
    });
    Ok(ops)
}

/// One rendered file of a role: template, destination, mode.
struct Output {
    template: String,
    path: &'static str,
    mode: u32,
}

fn out(template: impl Into<String>, path: &'static str, mode: u32) -> Output {
    Output {
        template: template.into(),
        path,
        mode,
    }
}

/// The files a flavour's role gets (Debian profile).
fn plan(flavour: Flavour, role: Role, vars: &Vars) -> Result<Vec<Output>> {
    if !flavour.roles().contains(&role) {
        return Err(Error::refused(
            format!("role {role}"),
            format!("flavour {flavour} has no such role"),
        ));
    }
    let mut files = Vec::new();
    match flavour {
        Flavour::None => return Ok(files),
        Flavour::Kubeadm => {
            files.push(out(format!("{role}.sh"), BOOTSTRAP_PATH, 0o755));
            files.push(out(
                format!("{role}.yaml"),
                "/etc/nodeimg/kubeadm.yaml",
                0o600,
            ));
            if role == Role::Init {
                files.push(out(
                    "cilium-values.yaml",
                    "/etc/nodeimg/cilium-values.yaml",
                    0o600,
                ));
                files.push(out("csr-approver.sh", CSR_APPROVER_PATH, 0o755));
                files.push(out(CSR_APPROVER_UNIT, CSR_APPROVER_UNIT_PATH, 0o644));
                if vars.get("GITOPS_URL").is_some_and(|u| !u.is_empty()) {
                    files.push(out(
                        "flux-instance.yaml",
                        "/etc/nodeimg/flux-instance.yaml",
                        0o600,
                    ));
                }
            }
        }
        Flavour::K3s | Flavour::K3sAgent => {
            let (script, unit, unit_path) = match role {
                Role::Agent => (
                    "agent.sh",
                    "k3s-agent.service",
                    "/etc/systemd/system/k3s-agent.service",
                ),
                _ => (
                    "server.sh",
                    "k3s.service",
                    "/etc/systemd/system/k3s.service",
                ),
            };
            files.push(out(script, BOOTSTRAP_PATH, 0o755));
            files.push(out(
                format!("{role}.yaml"),
                "/etc/rancher/k3s/config.yaml",
                0o600,
            ));
            files.push(out(unit, unit_path, 0o644));
            // An empty name in tls-san would reach the certificate.
            if role != Role::Agent && vars.get("API_HOST").is_some_and(|h| !h.is_empty()) {
                files.push(out(
                    "tls-san.yaml",
                    "/etc/rancher/k3s/config.yaml.d/10-nodeimg-tls-san.yaml",
                    0o600,
                ));
            }
        }
    }
    files.push(out("bootstrap-lib.sh", BOOTSTRAP_LIB_PATH, 0o644));
    files.push(out(BOOTSTRAP_UNIT, BOOTSTRAP_UNIT_PATH, 0o644));
    files.push(out("nodeimg.preset", PRESET_PATH, 0o644));
    Ok(files)
}

/// The role's files as ops: bootstrap script, unit, its enabling
/// ([`Op::Enable`]) and preset, rendered cluster files. A rendered file that
/// contains a secret value is `secret: true` and 0600 (0700 for a script).
/// An undefined variable is an error naming template and variable.
///
/// Flavour `none` renders nothing; so does the NixOS profile for the k3s
/// flavours (the base's `nodeimg.nix` starts k3s from the stamped files).
/// kubeadm on NixOS is refused: the module runs k3s only.
pub fn render_node(req: &RenderRequest) -> Result<Vec<Op>> {
    if let Some(dir) = req.overrides {
        source::check_overrides(dir)?;
    }
    if req.profile == ProfileKind::NixOs {
        return match req.flavour {
            Flavour::Kubeadm => Err(Error::refused(
                "flavour kubeadm on NixOS",
                "not supported: nodeimg.nix bootstraps k3s; use flavour k3s or k3s-agent",
            )),
            _ => {
                plan(req.flavour, req.role, req.vars)?;
                Ok(Vec::new())
            }
        };
    }
    let files = plan(req.flavour, req.role, req.vars)?;
    let mut ops = Vec::with_capacity(files.len() + 1);
    for f in &files {
        let template = source::find(req.flavour, &f.template, req.overrides)?;
        let rendered = render(&template.name, &template.text, req.vars)?;
        let mode = if rendered.secret {
            f.mode & 0o700
        } else {
            f.mode
        };
        ops.push(Op::File {
            path: f.path.to_string(),
            data: rendered.text.into_bytes(),
            mode,
            uid: 0,
            gid: 0,
            secret: rendered.secret,
        });
    }
    if files.iter().any(|f| f.path == CSR_APPROVER_UNIT_PATH) {
        ops.push(Op::Enable {
            unit: CSR_APPROVER_UNIT.to_string(),
        });
    }
    if !files.is_empty() {
        ops.push(Op::Enable {
            unit: BOOTSTRAP_UNIT.to_string(),
        });
    }
    Ok(ops)
}

/// `templates/nixos/nodeimg.nix`, embedded: the NixOS module a flake imports
/// once so that one base image serves every node.
pub fn nixos_module() -> &'static str {
    source::NIXOS_MODULE
}

/// The embedded templates as (path under `templates/`, text): what a user
/// copies to start an override directory.
pub fn embedded_templates() -> &'static [(&'static str, &'static str)] {
    source::EMBEDDED
}

/// Renders one template text the way [`render_node`] does (`name` only
/// names it in errors).
pub fn render_text(name: &str, text: &str, vars: &Vars) -> Result<String> {
    render(name, text, vars).map(|r| r.text)
}

/// A rendered template.
pub(crate) struct Rendered {
    pub text: String,
    /// A secret variable with a non-empty value was substituted.
    pub secret: bool,
}

/// Renders `text` (the template called `name`) with `vars`: every declared
/// variable ([`VARIABLES`], and any further name `vars` sets) is replaced;
/// a declared variable without value or default is an error naming both.
/// Values substituted into a shell script (`*.sh`) may not contain a single
/// quote or a line break: the scripts quote values with `'…'`.
pub(crate) fn render(name: &str, text: &str, vars: &Vars) -> Result<Rendered> {
    let declared = |n: &str| vars.contains_key(n) || variable(n).is_some();
    let value = |n: &str| {
        vars.get(n)
            .map(String::as_str)
            .or_else(|| variable(n).and_then(|v| v.default))
    };
    let (text, used) = envsubst::substitute(text, declared, value).map_err(|missing| {
        Error::refused(
            format!("template {name}"),
            format!("variable {missing} is not defined"),
        )
    })?;
    if name.ends_with(".sh") {
        for n in &used {
            if value(n).is_some_and(|v| v.contains(['\'', '\n', '\r'])) {
                return Err(Error::refused(
                    format!("template {name}"),
                    format!("the value of {n} contains a quote or a line break"),
                ));
            }
        }
    }
    let secret = used
        .iter()
        .any(|n| variable(n).is_some_and(|v| v.secret) && value(n).is_some_and(|v| !v.is_empty()));
    Ok(Rendered { text, secret })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn undefined_variable_names_template_and_variable() {
        let err = render(
            "kubeadm/init.yaml",
            "name: ${NODE_HOSTNAME}\n",
            &Vars::new(),
        )
        .err()
        .expect("refused");
        assert_eq!(
            err.to_string(),
            "template kubeadm/init.yaml: variable NODE_HOSTNAME is not defined"
        );
    }

    #[test]
    fn defaults_secrets_and_shell_variables() {
        let v = vars(&[("KUBEADM_TOKEN", "abcdef.0123456789abcdef")]);
        let r = render(
            "x.yaml",
            "ttl: ${KUBEADM_TOKEN_TTL} $KUBEADM_TOKEN $HOME",
            &v,
        )
        .expect("renders");
        assert_eq!(r.text, "ttl: 8760h abcdef.0123456789abcdef $HOME");
        assert!(r.secret);
        let r = render(
            "x.sh",
            "a=${NODE_HOSTNAME}; b=$b",
            &vars(&[("NODE_HOSTNAME", "n0")]),
        )
        .expect("renders");
        assert_eq!(r.text, "a=n0; b=$b");
        assert!(!r.secret);
        let bad = vars(&[("NODE_HOSTNAME", "x'; rm -rf /; '")]);
        assert!(render("x.sh", "a='${NODE_HOSTNAME}'", &bad).is_err());
        assert!(render("x.yaml", "a: \"${NODE_HOSTNAME}\"", &bad).is_ok());
    }

    #[test]
    fn roles_outside_the_flavour_are_refused() {
        let v = Vars::new();
        let req = RenderRequest {
            flavour: Flavour::K3sAgent,
            role: Role::Init,
            profile: ProfileKind::Debian,
            vars: &v,
            overrides: None,
        };
        let err = render_node(&req).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "role init: flavour k3s-agent has no such role"
        );
        let none = RenderRequest {
            flavour: Flavour::None,
            role: Role::None,
            ..req
        };
        assert!(render_node(&none).expect("renders").is_empty());
    }
}
