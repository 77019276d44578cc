//! How a guest boots, read from its disk: the kernel, initrd and command
//! line of the image's `extlinux.conf` (Odroid C4, NixOS: what U-Boot's
//! distro boot would load), or — for a Raspberry Pi image, whose own
//! kernel cannot run on QEMU's `virt` machine — a generic arm64 kernel
//! from the image's `/boot` (Debian's linux-image-arm64) or given by the
//! user, with the command line of `cmdline.txt`.
//!
//! The console is QEMU's PL011 (`ttyAMA0`) whatever the board's command
//! line says: `console=` words are replaced for the guest only.

use anyhow::{anyhow, bail, Context, Result};
use pipeline::osimage::OsImage;
use std::path::{Path, PathBuf};

const EXTLINUX: &[&str] = &["/boot/extlinux/extlinux.conf", "/extlinux/extlinux.conf"];
const CMDLINE_TXT: &[&str] = &["/boot/firmware/cmdline.txt", "/boot/cmdline.txt"];

/// The guest's console, whatever the board's.
pub const CONSOLE: &str = "console=ttyAMA0,115200";

/// Kernel, initrd and command line for QEMU's direct boot.
#[derive(Debug, Clone)]
pub struct BootPlan {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub append: String,
    /// Where the plan came from, for the user (`extlinux.conf`, …).
    pub from: String,
    /// The image's own `extlinux.conf` names the kernel: U-Boot's distro
    /// boot can load it as Tow-Boot would.
    pub extlinux: bool,
}

/// The guest-only change that makes an image's `extlinux.conf` use QEMU's
/// console when U-Boot boots it: `console=` words replaced on every
/// `APPEND` line (in the throw-away disk, never in SOURCE).
pub fn console_op() -> pipeline::customise::Op {
    pipeline::customise::Op::Cmdline {
        append: vec![CONSOLE.to_string()],
        remove: vec!["console".to_string()],
    }
}

/// An `extlinux.conf` entry: what U-Boot's distro boot would load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub append: String,
}

/// The entry `DEFAULT` names (the first entry when it names none).
/// Keywords are case-insensitive; `LINUX` and `KERNEL` are synonyms, as in
/// U-Boot's pxe_utils (`doc/README.pxe`).
pub fn parse_extlinux(text: &str) -> Option<Entry> {
    let mut default = None;
    let mut entries: Vec<(String, Entry)> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let (key, value) = line
            .split_once(char::is_whitespace)
            .map(|(k, v)| (k, v.trim()))
            .unwrap_or((line, ""));
        match key.to_ascii_lowercase().as_str() {
            "default" => default = Some(value.to_string()),
            "label" => entries.push((value.to_string(), Entry::default())),
            "linux" | "kernel" => {
                if let Some((_, e)) = entries.last_mut() {
                    e.kernel = Some(value.to_string());
                }
            }
            "initrd" => {
                if let Some((_, e)) = entries.last_mut() {
                    e.initrd = Some(value.to_string());
                }
            }
            "append" => {
                if let Some((_, e)) = entries.last_mut() {
                    e.append = value.to_string();
                }
            }
            _ => {}
        }
    }
    let pick = default
        .and_then(|d| entries.iter().position(|(l, _)| *l == d))
        .unwrap_or(0);
    entries.into_iter().nth(pick).map(|(_, e)| e)
}

/// A path of `extlinux.conf`, relative to its directory unless absolute.
fn resolve(conf: &str, p: &str) -> String {
    if p.starts_with('/') {
        return p.to_string();
    }
    let mut parts: Vec<&str> = conf
        .rsplit_once('/')
        .map(|(d, _)| d)
        .unwrap_or("")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The board's command line for the guest: `console=` words replaced by
/// [`CONSOLE`]; everything else (root=PARTUUID=…, systemd.hostname=…) kept.
pub fn guest_append(cmdline: &str) -> String {
    let mut words: Vec<&str> = cmdline
        .split_whitespace()
        .filter(|w| !w.starts_with("console="))
        .collect();
    words.push(CONSOLE);
    words.join(" ")
}

/// User-given kernel and initrd (`--kernel`, `--initrd`).
#[derive(Debug, Clone, Default)]
pub struct Override {
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    /// A Debian kernel package (`--kernel` naming a `.deb`): unpacked by
    /// [`crate::run::run`] into its temporary directory, then booted as
    /// `kernel` with an initramfs made for it ([`crate::kernel_pkg`]).
    pub package: Option<PathBuf>,
}

/// The boot plan of `image`; files read from it are written into `tmp`.
pub fn plan(image: &OsImage, user: &Override, tmp: &Path) -> Result<BootPlan> {
    for conf in EXTLINUX {
        let Some(bytes) = image.read(conf)? else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        let e = parse_extlinux(&text).ok_or_else(|| anyhow!("{conf} has no LABEL entry"))?;
        let (kernel, initrd) = match &user.kernel {
            Some(k) => (k.clone(), user.initrd.clone()),
            None => {
                let k = e
                    .kernel
                    .as_deref()
                    .ok_or_else(|| anyhow!("{conf}: the default entry has no LINUX line"))?;
                let kernel = extract(image, &resolve(conf, k), tmp, "kernel")?;
                let initrd = match (&user.initrd, &e.initrd) {
                    (Some(i), _) => Some(i.clone()),
                    (None, Some(i)) => Some(extract(image, &resolve(conf, i), tmp, "initrd")?),
                    (None, None) => None,
                };
                (kernel, initrd)
            }
        };
        return Ok(BootPlan {
            kernel,
            initrd,
            append: guest_append(&e.append),
            from: (*conf).to_string(),
            extlinux: user.kernel.is_none(),
        });
    }
    let mut cmdline = None;
    for c in CMDLINE_TXT {
        if let Some(b) = image.read(c)? {
            let text = String::from_utf8_lossy(&b);
            cmdline = Some((c, text.lines().next().unwrap_or("").to_string()));
            break;
        }
    }
    let Some((cpath, line)) = cmdline else {
        bail!("the image has neither extlinux.conf nor cmdline.txt: nothing says how it boots");
    };
    let (kernel, initrd, from) = match &user.kernel {
        Some(k) => (
            k.clone(),
            user.initrd.clone(),
            format!("{cpath} and --kernel"),
        ),
        None => {
            let (k, i) = generic_kernel(image)?.ok_or_else(|| {
                anyhow!("the image has no generic arm64 kernel in /boot (vmlinuz-*): a Raspberry Pi kernel cannot run under QEMU; install linux-image-arm64 in the base, or give --kernel (and --initrd)")
            })?;
            let kernel = extract(image, &k, tmp, "kernel")?;
            let initrd = match (&user.initrd, i) {
                (Some(u), _) => Some(u.clone()),
                (None, Some(i)) => Some(extract(image, &i, tmp, "initrd")?),
                (None, None) => None,
            };
            (kernel, initrd, format!("{cpath} and {k}"))
        }
    };
    Ok(BootPlan {
        kernel,
        initrd,
        append: guest_append(&line),
        from,
        extlinux: false,
    })
}

/// The newest `/boot/vmlinuz-VERSION` and its `/boot/initrd.img-VERSION`.
fn generic_kernel(image: &OsImage) -> Result<Option<(String, Option<String>)>> {
    if !image.is_dir("/boot")? {
        return Ok(None);
    }
    let names: Vec<String> = image.list("/boot")?.into_iter().map(|e| e.name).collect();
    let mut versions: Vec<&str> = names
        .iter()
        .filter_map(|n| n.strip_prefix("vmlinuz-"))
        .filter(|v| !v.contains("placeholder"))
        .collect();
    versions.sort_by_key(|v| version_key(v));
    let Some(v) = versions.last() else {
        return Ok(None);
    };
    let initrd = format!("initrd.img-{v}");
    let initrd = names.contains(&initrd).then(|| format!("/boot/{initrd}"));
    Ok(Some((format!("/boot/vmlinuz-{v}"), initrd)))
}

/// Orders `6.1.0-10-arm64` after `6.1.0-9-arm64`.
fn version_key(v: &str) -> Vec<(u64, String)> {
    v.split(['.', '-', '+', '~'])
        .map(|p| (p.parse().unwrap_or(0), p.to_string()))
        .collect()
}

/// Copies `path` out of the image into `tmp`.
fn extract(image: &OsImage, path: &str, tmp: &Path, name: &str) -> Result<PathBuf> {
    let data = image
        .read(path)?
        .ok_or_else(|| anyhow!("{path} (named as the {name}) is not in the image"))?;
    let out = tmp.join(name);
    std::fs::write(&out, data).with_context(|| format!("writing {}", out.display()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extlinux_default_entry() {
        let text = "# c\nDEFAULT b\nTIMEOUT 3\nLABEL a\n  LINUX /a\nLABEL b\n  MENU LABEL x\n  kernel ../nixos/Image\n  INITRD ../nixos/initrd\n  FDTDIR ../nixos/dtbs\n  APPEND init=/x console=ttyAML0,115200n8 root=PARTUUID=1-02\n";
        let e = parse_extlinux(text).expect("entry");
        assert_eq!(e.kernel.as_deref(), Some("../nixos/Image"));
        assert_eq!(
            resolve("/boot/extlinux/extlinux.conf", "../nixos/Image"),
            "/boot/nixos/Image"
        );
        assert_eq!(
            resolve("/boot/extlinux/extlinux.conf", "/boot/v"),
            "/boot/v"
        );
        assert_eq!(
            guest_append(&e.append),
            "init=/x root=PARTUUID=1-02 console=ttyAMA0,115200"
        );
        assert_eq!(parse_extlinux("DEFAULT x\n"), None);
    }

    #[test]
    fn versions_sort_numerically() {
        let mut v = vec!["6.1.0-10-arm64", "6.1.0-9-arm64", "5.10.0-30-arm64"];
        v.sort_by_key(|v| version_key(v));
        assert_eq!(v, ["5.10.0-30-arm64", "6.1.0-9-arm64", "6.1.0-10-arm64"]);
    }
}
