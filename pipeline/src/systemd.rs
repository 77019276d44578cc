//! Enabling, disabling and masking systemd units in an image, with the
//! result `systemctl --root=DIR enable|disable|mask UNIT` gives on the same
//! tree. The reference is systemd 252 (Debian 12's, the host of our tests);
//! the tests compare our symlink set with the one `systemctl --root` makes.
//!
//! # Finding a unit
//! A name is looked up in systemd's system search path, in this order:
//! `/etc/systemd/system.control`, `/run/systemd/system.control`,
//! `/run/systemd/transient`, `/run/systemd/generator.early`,
//! `/etc/systemd/system`, `/etc/systemd/system.attached`,
//! `/run/systemd/system`, `/run/systemd/system.attached`,
//! `/run/systemd/generator`, `/usr/local/lib/systemd/system`,
//! `/lib/systemd/system`, `/usr/lib/systemd/system`,
//! `/run/systemd/generator.late`. `/lib/systemd/system` comes before
//! `/usr/lib/systemd/system` because Debian builds systemd 252 with
//! split-usr; on a merged-/usr root (`/lib` → `usr/lib`, every current
//! Debian and Raspberry Pi OS image) a unit in `/usr/lib/systemd/system` is
//! therefore found as `/lib/systemd/system/NAME`, and that is the target of
//! the symlinks we create, exactly as `systemctl --root` writes them. Both
//! spellings name the same file at boot.
//!
//! An instance `foo@bar.service` without a file of its own uses the
//! template `foo@.service`. A name that is a symlink in a unit directory is
//! followed: to `/dev/null` (or an empty file) it is **masked**; to a file
//! of the same name it is a linked unit; to another name it is an alias,
//! and the target name is looked up instead — except that `enable` refuses
//! an alias link in `/etc/systemd/system` (or `/run/systemd/system`, or a
//! `.control` directory), as systemctl does ("refusing to operate on linked
//! unit file"): `enable sshd.service` once `sshd.service` is `ssh.service`'s
//! alias.
//!
//! # enable
//! From the unit's `[Install]` section (the unit file only; drop-ins are
//! not read, as in systemd 252), with the specifiers `%n %N %p %i %j %%`
//! expanded:
//! - `Alias=A` → `/etc/systemd/system/A` → the unit file;
//! - `WantedBy=T` / `RequiredBy=T` / `UpheldBy=T` →
//!   `/etc/systemd/system/T.wants|.requires|.upholds/NAME` → the unit file,
//!   where NAME is the unit's name, for a template its `DefaultInstance=`
//!   instance (`getty@.service` → `getty@tty1.service`), and an instance
//!   keeps its own name while linking to the template file
//!   (`serial-getty@ttyAMA0.service` → `…/serial-getty@.service`);
//! - `Also=U` enables U the same way.
//!
//! A symlink already in place that resolves to the same file is kept as it
//! is (e.g. one to `/usr/lib/…` where we would write `/lib/…`); a
//! `.wants/` link to something else is replaced; an alias name taken by a
//! link to another unit, or any non-symlink in the way, is refused. A unit
//! without `[Install]` settings is left as it is, as systemctl does (it only
//! warns). Refused: a unit that does not exist (nor its `Also=` units), a
//! masked unit, a template with neither instance nor `DefaultInstance=`.
//! Unlike systemctl, which may have created some links before it fails,
//! nothing is changed when anything is refused.
//!
//! # disable
//! Marks the unit's name, the name an alias resolves to and the names of its
//! `Also=` units, then removes every symlink under `/etc/systemd/system`
//! (all subdirectories) whose name is marked, whose name without its
//! instance is marked, or whose fully resolved target (or that target's
//! file name) is marked; each removed link's path is marked in turn and the
//! walk repeats until nothing more goes, so links to removed links go too.
//! A masked unit is left alone (systemctl: "is masked, ignoring"). A unit
//! that does not exist is refused, like systemctl's "does not exist".
//!
//! # mask
//! `/etc/systemd/system/NAME` → `/dev/null`; already masked is fine; a
//! different symlink or a unit file there is refused (systemctl: "already
//! exists"). The unit need not exist. Links in `.wants/` stay, as with
//! systemctl.
//!
//! On a first-boot image (machine-id `uninitialized`) systemd applies
//! presets at the first boot, which can re-enable what was disabled
//! offline; the executor therefore follows a disable with a mask of the
//! unit (see [`crate::customise`]).

use crate::customise::staged::Staged;
use crate::osimage::Node;
use crate::{Error, Result};
use std::collections::{BTreeSet, VecDeque};

/// Where `systemctl --root` writes enablement symlinks.
pub const CONFIG_DIR: &str = "/etc/systemd/system";

/// systemd 252's system unit search path, as Debian builds it.
pub const SEARCH_PATH: &[&str] = &[
    "/etc/systemd/system.control",
    "/run/systemd/system.control",
    "/run/systemd/transient",
    "/run/systemd/generator.early",
    "/etc/systemd/system",
    "/etc/systemd/system.attached",
    "/run/systemd/system",
    "/run/systemd/system.attached",
    "/run/systemd/generator",
    "/usr/local/lib/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/run/systemd/generator.late",
];

const UNIT_SUFFIXES: &[&str] = &[
    "service",
    "socket",
    "target",
    "timer",
    "path",
    "mount",
    "automount",
    "swap",
    "device",
    "slice",
    "scope",
];

/// Symlinks followed while chasing an alias chain (systemd's limit).
const MAX_FOLLOW: usize = 64;

/// The shape of a unit name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// `foo.service`
    Plain,
    /// `foo@.service`
    Template,
    /// `foo@bar.service`
    Instance,
}

/// A valid unit name's prefix, instance (if any) and suffix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitName {
    pub prefix: String,
    pub instance: Option<String>,
    pub suffix: String,
}

impl UnitName {
    /// Parses and checks a unit name (`foo.service`, `foo@.service`,
    /// `foo@bar.service`).
    pub fn parse(name: &str) -> Result<UnitName> {
        let bad = |why: &str| Error::refused(format!("unit {name:?}"), why.to_string());
        if name.is_empty() || name.len() > 255 {
            return Err(bad("not a valid unit name"));
        }
        let Some((stem, suffix)) = name.rsplit_once('.') else {
            return Err(bad("has no unit type suffix (.service, .timer, …)"));
        };
        if !UNIT_SUFFIXES.contains(&suffix) {
            return Err(bad("has an unknown unit type suffix"));
        }
        let ok = |s: &str| {
            s.chars()
                .all(|c| c.is_ascii_alphanumeric() || ":-_.\\".contains(c))
        };
        let (prefix, instance) = match stem.split_once('@') {
            None => (stem, None),
            Some((p, i)) => {
                if !ok(i)
                    && !i
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c))
                {
                    return Err(bad("has invalid characters in its instance"));
                }
                (p, Some(i))
            }
        };
        if prefix.is_empty() || !ok(prefix) {
            return Err(bad("not a valid unit name"));
        }
        Ok(UnitName {
            prefix: prefix.to_string(),
            instance: instance.map(String::from),
            suffix: suffix.to_string(),
        })
    }

    pub fn kind(&self) -> NameKind {
        match self.instance.as_deref() {
            None => NameKind::Plain,
            Some("") => NameKind::Template,
            Some(_) => NameKind::Instance,
        }
    }

    /// `foo@.service` for `foo@bar.service`.
    pub fn template(&self) -> String {
        format!("{}@.{}", self.prefix, self.suffix)
    }

    /// `foo@INST.service`.
    pub fn with_instance(&self, inst: &str) -> String {
        format!("{}@{inst}.{}", self.prefix, self.suffix)
    }
}

/// The `[Install]` settings of a unit file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Install {
    pub wanted_by: Vec<String>,
    pub required_by: Vec<String>,
    pub upheld_by: Vec<String>,
    pub alias: Vec<String>,
    pub also: Vec<String>,
    pub default_instance: Option<String>,
}

impl Install {
    /// Whether there is anything for `enable` to do.
    pub fn is_empty(&self) -> bool {
        self.wanted_by.is_empty()
            && self.required_by.is_empty()
            && self.upheld_by.is_empty()
            && self.alias.is_empty()
            && self.also.is_empty()
    }

    /// Parses a unit file's `[Install]` section: sections, `#`/`;`
    /// comments, backslash continuations; list settings accumulate and an
    /// empty assignment resets them, as systemd does.
    pub fn parse(text: &str) -> Install {
        let mut out = Install::default();
        let mut section = String::new();
        let mut logical = String::new();
        let mut lines = Vec::new();
        for raw in text.lines() {
            let line = raw.trim_end_matches('\r');
            if let Some(head) = line.strip_suffix('\\') {
                logical.push_str(head);
                logical.push(' ');
                continue;
            }
            logical.push_str(line);
            lines.push(std::mem::take(&mut logical));
        }
        if !logical.is_empty() {
            lines.push(logical);
        }
        for line in lines {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if line.starts_with('[') && line.ends_with(']') {
                section = line[1..line.len() - 1].to_string();
                continue;
            }
            if section != "Install" {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim();
            let list = match key.trim() {
                "WantedBy" => &mut out.wanted_by,
                "RequiredBy" => &mut out.required_by,
                "UpheldBy" => &mut out.upheld_by,
                "Alias" => &mut out.alias,
                "Also" => &mut out.also,
                "DefaultInstance" => {
                    out.default_instance = Some(value.to_string()).filter(|v| !v.is_empty());
                    continue;
                }
                _ => continue,
            };
            if value.is_empty() {
                list.clear();
            } else {
                list.extend(value.split_whitespace().map(String::from));
            }
        }
        out
    }
}

/// What a unit name leads to in the search path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    /// A unit file: `name` (after following aliases), the file's path as
    /// the search path spells it, its `[Install]`.
    Unit {
        name: String,
        path: String,
        install: Install,
    },
    Masked {
        path: String,
    },
    Missing,
}

/// Directories whose alias links `enable` refuses to follow (systemd's
/// "config" directories).
const CONFIG_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/run/systemd/system",
    "/etc/systemd/system.control",
    "/run/systemd/system.control",
];

/// Finds `name` the way systemctl's install logic does, following alias
/// links to their target name — for `enable` not those in a config
/// directory (systemctl: "refusing to operate on linked unit file").
fn find(view: &Staged, name: &str, follow_config_aliases: bool) -> Result<Found> {
    let mut name = name.to_string();
    for _ in 0..MAX_FOLLOW {
        let parsed = UnitName::parse(&name)?;
        let mut hit = search(view, &name)?;
        if hit.is_none() && parsed.kind() == NameKind::Instance {
            hit = search(view, &parsed.template())?;
        }
        let Some((path, node)) = hit else {
            return Ok(Found::Missing);
        };
        match node {
            Node::Symlink(_) => {
                let dest = view.resolve(&path, true)?;
                if dest == "/dev/null" {
                    return Ok(Found::Masked { path });
                }
                let Some(base) = dest.rsplit('/').next().map(String::from) else {
                    return Ok(Found::Missing);
                };
                match view.node(&dest)? {
                    Some(Node::File { size: 0 }) => return Ok(Found::Masked { path }),
                    Some(Node::File { .. }) => {}
                    _ => return Ok(Found::Missing),
                }
                let looked_up = path.rsplit('/').next().unwrap_or("").to_string();
                if base == looked_up {
                    // A linked unit file: same name, elsewhere.
                    return load(view, &name, &dest);
                }
                let dir = crate::customise::staged::parent(&path);
                if !follow_config_aliases && CONFIG_DIRS.contains(&dir) {
                    return Err(Error::refused(
                        format!("unit {name}"),
                        format!("refusing to operate on linked unit file {path}: it is an alias of {base}, enable that instead"),
                    ));
                }
                // An alias: continue with the target's name (an instance
                // keeps its instance across a template alias).
                let target = UnitName::parse(&base)?;
                name = match (parsed.kind(), target.kind()) {
                    (NameKind::Instance, NameKind::Template) => {
                        target.with_instance(parsed.instance.as_deref().unwrap_or(""))
                    }
                    _ => base,
                };
            }
            Node::File { size: 0 } => return Ok(Found::Masked { path }),
            Node::File { .. } => return load(view, &name, &path),
            _ => return Ok(Found::Missing),
        }
    }
    Err(Error::refused(
        format!("unit {name}"),
        "too many levels of aliases",
    ))
}

fn load(view: &Staged, name: &str, path: &str) -> Result<Found> {
    let canon = view.resolve(path, true)?;
    let text = view.read(&canon)?.unwrap_or_default();
    Ok(Found::Unit {
        name: name.to_string(),
        path: path.to_string(),
        install: Install::parse(&String::from_utf8_lossy(&text)),
    })
}

/// The first search-path entry named `file`: its path as spelt in the
/// search path, and what it is (symlinks not followed).
fn search(view: &Staged, file: &str) -> Result<Option<(String, Node)>> {
    for dir in SEARCH_PATH {
        let path = format!("{dir}/{file}");
        // A search directory that is not a directory is skipped, as
        // systemd skips what it cannot open.
        let Some(canon) = crate::osimage::resolve_existing(view, &path, false)? else {
            continue;
        };
        match view.node(&canon)? {
            None | Some(Node::Dir) => continue,
            Some(node) => return Ok(Some((path, node))),
        }
    }
    Ok(None)
}

/// systemd's install specifiers for `name`.
fn expand(value: &str, unit: &str) -> Result<String> {
    let parsed = UnitName::parse(unit)?;
    let stem = unit.rsplit_once('.').map_or(unit, |(s, _)| s);
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push_str(unit),
            Some('N') => out.push_str(stem),
            Some('p') => out.push_str(&parsed.prefix),
            Some('i') => out.push_str(parsed.instance.as_deref().unwrap_or("")),
            Some('j') => out.push_str(
                parsed
                    .prefix
                    .rsplit_once('-')
                    .map_or(parsed.prefix.as_str(), |(_, j)| j),
            ),
            Some('%') => out.push('%'),
            other => {
                return Err(Error::refused(
                    format!("unit {unit}"),
                    format!(
                        "[Install] uses the specifier %{} which nodeimg does not expand",
                        other.map(String::from).unwrap_or_default()
                    ),
                ))
            }
        }
    }
    Ok(out)
}

/// Whether the symlink at `link` (whose target is `dest`) and a link to
/// `wanted` lead to the same file.
fn same_file(view: &Staged, link: &str, dest: &str, wanted: &str) -> Result<bool> {
    if dest == wanted {
        return Ok(true);
    }
    let base = crate::customise::staged::parent(link);
    let abs = |t: &str| {
        if t.starts_with('/') {
            t.to_string()
        } else {
            format!("{base}/{t}")
        }
    };
    Ok(view.resolve(&abs(dest), true)? == view.resolve(&abs(wanted), true)?)
}

/// Places a symlink `link` → `target` like systemctl's `create_symlink`:
/// an equivalent link is kept; another link is replaced with `force`, else
/// refused; anything else in the way is refused.
fn place(view: &mut Staged, unit: &str, link: &str, target: &str, force: bool) -> Result<()> {
    let canon = view.resolve(link, false)?;
    match view.node(&canon)? {
        None => {
            view.ensure_parents(&canon)?;
            view.symlink(&canon, target)
        }
        Some(Node::Symlink(dest)) => {
            if same_file(view, &canon, &dest, target)? {
                return Ok(());
            }
            let dangling = view.node(&view.resolve(&canon, true)?)?.is_none();
            if force || dangling {
                view.symlink(&canon, target)
            } else {
                Err(Error::refused(
                    format!("unit {unit}"),
                    format!("{link} already exists and is a symlink to {dest}"),
                ))
            }
        }
        Some(_) => Err(Error::refused(
            format!("unit {unit}"),
            format!("{link} already exists"),
        )),
    }
}

/// `systemctl --root enable UNIT` on the planned image.
pub(crate) fn enable(view: &mut Staged, unit: &str) -> Result<()> {
    let mut queue: VecDeque<(String, bool)> = VecDeque::from([(unit.to_string(), false)]);
    let mut done = BTreeSet::new();
    while let Some((name, also)) = queue.pop_front() {
        if !done.insert(name.clone()) {
            continue;
        }
        let what = if also {
            format!("unit {name} (Also= of {unit})")
        } else {
            format!("unit {name}")
        };
        let (name, path, install) = match find(view, &name, false)? {
            Found::Missing => {
                return Err(Error::refused(
                    what,
                    "does not exist (not in /etc/systemd/system, /usr/local/lib/systemd/system, /lib/systemd/system or /usr/lib/systemd/system)",
                ))
            }
            Found::Masked { path } => {
                return Err(Error::refused(what, format!("is masked ({path})")))
            }
            Found::Unit {
                name,
                path,
                install,
            } => (name, path, install),
        };
        done.insert(name.clone());
        for a in &install.also {
            queue.push_back((expand(a, &name)?, true));
        }
        let parsed = UnitName::parse(&name)?;
        // Aliases first, as systemctl does.
        for a in &install.alias {
            let dst = expand(a, &name)?;
            if dst.contains('/') {
                return Err(Error::refused(
                    format!("unit {name}"),
                    format!("Alias={dst} is a path, not a unit name"),
                ));
            }
            let mut target = UnitName::parse(&dst)?;
            if target.suffix != parsed.suffix {
                return Err(Error::refused(
                    format!("unit {name}"),
                    format!("Alias={dst} has a different unit type"),
                ));
            }
            if parsed.kind() == NameKind::Instance && target.kind() == NameKind::Template {
                target.instance = parsed.instance.clone();
            }
            let alias = match &target.instance {
                None => format!("{}.{}", target.prefix, target.suffix),
                Some(i) => target.with_instance(i),
            };
            place(view, &name, &format!("{CONFIG_DIR}/{alias}"), &path, false)?;
        }
        let (link_name, need_instance) = match parsed.kind() {
            NameKind::Plain | NameKind::Instance => (name.clone(), false),
            NameKind::Template => match &install.default_instance {
                Some(inst) => {
                    let inst_name = parsed.with_instance(inst);
                    if let Found::Masked { .. } = find(view, &inst_name, false)? {
                        return Err(Error::refused(format!("unit {inst_name}"), "is masked"));
                    }
                    (inst_name, false)
                }
                None => (name.clone(), true),
            },
        };
        for (list, dir) in [
            (&install.wanted_by, "wants"),
            (&install.required_by, "requires"),
            (&install.upheld_by, "upholds"),
        ] {
            for t in list {
                let dst = expand(t, &name)?;
                let tname = UnitName::parse(&dst)?;
                if need_instance && tname.kind() != NameKind::Instance {
                    return Err(Error::refused(
                        format!("unit {name}"),
                        format!("is a template without DefaultInstance= and the destination unit {dst} is a non-template unit; enable an instance (e.g. {})", parsed.with_instance("NAME")),
                    ));
                }
                place(
                    view,
                    &name,
                    &format!("{CONFIG_DIR}/{dst}.{dir}/{link_name}"),
                    &path,
                    true,
                )?;
            }
        }
    }
    Ok(())
}

/// `systemctl --root disable UNIT` on the planned image; returns the names
/// that were disabled (the unit and the name its alias leads to), for a
/// following mask.
pub(crate) fn disable(view: &mut Staged, unit: &str) -> Result<Vec<String>> {
    let mut marked: BTreeSet<String> = BTreeSet::new();
    let mut primary = Vec::new();
    let mut queue: VecDeque<(String, bool)> = VecDeque::from([(unit.to_string(), false)]);
    let mut done = BTreeSet::new();
    while let Some((name, also)) = queue.pop_front() {
        if !done.insert(name.clone()) {
            continue;
        }
        match find(view, &name, true)? {
            Found::Missing if also => {}
            Found::Missing => {
                return Err(Error::refused(format!("unit {name}"), "does not exist"));
            }
            Found::Masked { .. } => {}
            Found::Unit {
                name: real,
                install,
                ..
            } => {
                marked.insert(name.clone());
                marked.insert(real.clone());
                if !also {
                    primary.push(name.clone());
                    if real != name {
                        primary.push(real.clone());
                    }
                }
                for a in &install.also {
                    queue.push_back((expand(a, &real)?, true));
                }
            }
        }
    }
    if marked.is_empty() {
        return Ok(primary);
    }
    loop {
        let mut again = false;
        let mut links = Vec::new();
        collect_links(view, CONFIG_DIR, &mut links)?;
        for link in links {
            let name = link.rsplit('/').next().unwrap_or("").to_string();
            let mut hit = marked.contains(&name);
            if !hit {
                if let Ok(n) = UnitName::parse(&name) {
                    hit = n.kind() == NameKind::Instance && marked.contains(&n.template());
                }
            }
            if !hit {
                // Unresolvable links (loops) are skipped, as systemctl does.
                let Ok(dest) = view.resolve(&link, true) else {
                    continue;
                };
                let parent_ok = matches!(
                    view.node(crate::customise::staged::parent(&dest))?,
                    Some(Node::Dir)
                );
                if !parent_ok {
                    continue;
                }
                let base = dest.rsplit('/').next().unwrap_or("");
                hit = marked.contains(&dest) || marked.contains(base);
            }
            if hit {
                view.remove(&link)?;
                if marked.insert(link.clone()) {
                    again = true;
                }
            }
        }
        if !again {
            break;
        }
    }
    Ok(primary)
}

/// Every symlink below `dir` (canonical), depth first, sorted.
fn collect_links(view: &Staged, dir: &str, out: &mut Vec<String>) -> Result<()> {
    let canon = view.resolve(dir, true)?;
    for e in view.list(&canon)? {
        let p = format!("{canon}/{}", e.name);
        match view.node(&p)? {
            Some(Node::Symlink(_)) => out.push(p),
            Some(Node::Dir) => collect_links(view, &p, out)?,
            _ => {}
        }
    }
    Ok(())
}

/// `systemctl --root mask UNIT` on the planned image.
pub(crate) fn mask(view: &mut Staged, unit: &str) -> Result<()> {
    UnitName::parse(unit)?;
    let link = format!("{CONFIG_DIR}/{unit}");
    let canon = view.resolve(&link, false)?;
    match view.node(&canon)? {
        None => {
            view.ensure_parents(&canon)?;
            view.symlink(&canon, "/dev/null")
        }
        Some(Node::Symlink(t)) if t == "/dev/null" => Ok(()),
        Some(Node::Symlink(t)) => Err(Error::refused(
            format!("unit {unit}"),
            format!("cannot mask: {link} already exists and is a symlink to {t}"),
        )),
        Some(_) => Err(Error::refused(
            format!("unit {unit}"),
            format!("cannot mask: {link} already exists (a unit file in /etc; remove it instead)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            UnitName::parse("ssh.service").unwrap().kind(),
            NameKind::Plain
        );
        let t = UnitName::parse("getty@.service").unwrap();
        assert_eq!(t.kind(), NameKind::Template);
        assert_eq!(t.with_instance("tty1"), "getty@tty1.service");
        let i = UnitName::parse("serial-getty@ttyAMA0.service").unwrap();
        assert_eq!(i.kind(), NameKind::Instance);
        assert_eq!(i.template(), "serial-getty@.service");
        for bad in [
            "ssh",
            "ssh.bogus",
            "/etc/x.service",
            "a b.service",
            ".service",
        ] {
            assert!(UnitName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn install_section() {
        let i = Install::parse(
            "[Unit]\nWantedBy=not-this.target\n[Install]\n# c\nWantedBy=a.target \\\n  b.target\nAlias=x.service\nAlso=y.service\nAlso=\nAlso=z.service\nDefaultInstance=tty1\n",
        );
        assert_eq!(i.wanted_by, vec!["a.target", "b.target"]);
        assert_eq!(i.alias, vec!["x.service"]);
        assert_eq!(i.also, vec!["z.service"]);
        assert_eq!(i.default_instance.as_deref(), Some("tty1"));
    }

    #[test]
    fn specifiers() {
        assert_eq!(
            expand("%p-x@%i.%%", "foo-bar@tty1.service").unwrap(),
            "foo-bar-x@tty1.%"
        );
        assert_eq!(
            expand("%j/%N/%n", "foo-bar.service").unwrap(),
            "bar/foo-bar/foo-bar.service"
        );
        assert!(expand("%H", "a.service").is_err());
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(text in "\\PC{0,400}", name in "\\PC{0,40}") {
            let _ = Install::parse(&text);
            let _ = UnitName::parse(&name);
            let _ = expand(&text, "a@b.service");
        }
    }
}
