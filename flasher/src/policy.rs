//! The safety rules, each decided from a [`Disk`] alone so that tests can
//! feed any disk and mount table:
//!
//! - the system disk (holding `/`, `/boot`, `/boot/efi`, active swap or any
//!   mounted filesystem of the running system) is never a target;
//! - a fixed (non-removable, internal) disk only with `--allow-fixed`;
//! - a read-only disk or one smaller than the image never;
//! - a disk the platform says cannot be a card (an APFS-synthesized disk, a
//!   disk image attached from a file) never;
//! - mounted partitions are unmounted after confirmation, or refused with `--no-unmount`;
//! - the user confirms by typing the device name; without a terminal `--yes` is required.

use crate::devices::{Disk, Mount};
use crate::{Error, Result};
use std::io::{BufRead, Write};

/// The flags that relax or tighten the rules.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// `--allow-fixed`: accept non-removable disks.
    pub allow_fixed: bool,
    /// `--no-unmount`: refuse a disk with mounted partitions instead of unmounting them.
    pub no_unmount: bool,
}

/// Every reason `disk` may not receive an image of `image_size` bytes
/// (`None`: size not yet known). Empty when it may.
pub fn refusals(disk: &Disk, image_size: Option<u64>, opts: Options) -> Vec<String> {
    let mut why: Vec<String> = disk
        .system_reasons()
        .into_iter()
        .map(|r| format!("it is the system disk: {r}"))
        .collect();
    let system = !why.is_empty();
    why.extend(disk.unsuitable.iter().cloned());
    // A system disk is refused whatever the flags: no hint at --allow-fixed.
    if !disk.removable && !opts.allow_fixed && !system {
        why.push(format!(
            "it is a fixed {} disk, not removable (pass --allow-fixed if you mean it)",
            disk.transport
        ));
    }
    if disk.read_only {
        why.push("it is read-only".into());
    }
    if let Some(size) = image_size {
        if disk.size < size {
            why.push(format!(
                "it is too small: the image needs {} but the device holds {}",
                human(size),
                human(disk.size)
            ));
        }
    }
    // Mounted elsewhere than the media directories (a work directory under
    // /tmp or /home): someone is using it; flash does not unmount it.
    for m in disk
        .mounts
        .iter()
        .filter(|m| !m.system && !crate::devices::in_media_dir(&m.mountpoint))
    {
        why.push(format!(
            "{} is mounted at {}, outside {}; unmount it first",
            m.device,
            m.mountpoint,
            crate::devices::MEDIA_DIRS.join(", ")
        ));
    }
    let mounted = media_mounts(disk);
    if opts.no_unmount && !mounted.is_empty() {
        let list: Vec<&str> = mounted.iter().map(|m| m.mountpoint.as_str()).collect();
        why.push(format!(
            "it has mounted partitions ({}) and --no-unmount was given",
            list.join(", ")
        ));
    }
    why
}

/// Mounts on `disk` that would be unmounted before writing.
pub fn media_mounts(disk: &Disk) -> Vec<&Mount> {
    disk.mounts
        .iter()
        .filter(|m| !m.system && crate::devices::in_media_dir(&m.mountpoint))
        .collect()
}

/// Fails with the first refusal, naming the device.
pub fn check(disk: &Disk, image_size: Option<u64>, opts: Options) -> Result<()> {
    match refusals(disk, image_size, opts).into_iter().next() {
        Some(reason) => Err(Error::Refused {
            device: disk.path.clone(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Asks the user to type each device's name (as shown, e.g. `/dev/sdb` or
/// `sdb`) before anything is written. `yes` skips the question; without a
/// terminal `yes` is required.
pub fn confirm(
    disks: &[&Disk],
    yes: bool,
    interactive: bool,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<()> {
    if yes {
        return Ok(());
    }
    let first = disks.first().map(|d| d.path.clone()).unwrap_or_default();
    if !interactive {
        return Err(Error::Refused {
            device: first,
            reason: "there is no terminal to confirm on; pass --yes to write without asking".into(),
        });
    }
    for d in disks {
        let name = d.path.rsplit('/').next().unwrap_or(&d.path);
        let desc = [d.vendor.as_deref(), d.model.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        let mounted: Vec<&str> = media_mounts(d)
            .iter()
            .map(|m| m.mountpoint.as_str())
            .collect();
        let _ = writeln!(
            out,
            "All data on {} ({}, {}{}) will be destroyed{}.",
            d.path,
            human(d.size),
            d.transport,
            if desc.is_empty() {
                String::new()
            } else {
                format!(", {desc}")
            },
            if mounted.is_empty() {
                String::new()
            } else {
                format!("; {} will be unmounted", mounted.join(", "))
            }
        );
        let _ = write!(out, "Type the device name ({name}) to continue: ");
        let _ = out.flush();
        let mut line = String::new();
        input
            .read_line(&mut line)
            .map_err(|e| Error::system("reading the confirmation", e))?;
        let typed = line.trim();
        if typed != name && typed != d.path {
            return Err(Error::Refused {
                device: d.path.clone(),
                reason: format!("the confirmation {typed:?} does not match {name:?}"),
            });
        }
    }
    Ok(())
}

/// Sizes in binary units with the exact count, e.g. `29.72 GiB (31914983424
/// bytes)`: indicatif's [`HumanBytes`](indicatif::HumanBytes), the one
/// formatting of sizes in nodeimg (progress bars use it too).
pub fn human(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} bytes")
    } else {
        format!("{} ({bytes} bytes)", indicatif::HumanBytes(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::Transport;

    fn disk(removable: bool, mounts: Vec<(&str, bool)>) -> Disk {
        Disk {
            path: "/dev/sdx".into(),
            write_path: "/dev/sdx".into(),
            size: 1 << 30,
            vendor: Some("Acme".into()),
            model: None,
            transport: Transport::Usb,
            removable,
            read_only: false,
            mounts: mounts
                .into_iter()
                .map(|(mp, system)| Mount {
                    device: "/dev/sdx1".into(),
                    mountpoint: mp.into(),
                    system,
                })
                .collect(),
            device_number: None,
            unsuitable: Vec::new(),
        }
    }

    #[test]
    fn system_disk_is_refused_even_with_every_flag() {
        let d = disk(true, vec![("/", true)]);
        let opts = Options {
            allow_fixed: true,
            no_unmount: false,
        };
        let r = refusals(&d, Some(1), opts);
        assert!(
            r[0].contains("system disk") && r[0].contains("holds /"),
            "{r:?}"
        );
    }

    #[test]
    fn fixed_disk_needs_allow_fixed() {
        let d = disk(false, vec![]);
        assert!(refusals(&d, None, Options::default())[0].contains("--allow-fixed"));
        assert!(refusals(
            &d,
            None,
            Options {
                allow_fixed: true,
                no_unmount: false
            }
        )
        .is_empty());
    }

    #[test]
    fn too_small_names_both_sizes() {
        let r = refusals(&disk(true, vec![]), Some(2 << 30), Options::default());
        assert!(
            r[0].contains("2147483648") && r[0].contains("1073741824"),
            "{r:?}"
        );
    }

    #[test]
    fn mounted_media_refused_only_with_no_unmount() {
        let d = disk(true, vec![("/media/me/boot", false)]);
        assert!(refusals(&d, None, Options::default()).is_empty());
        let r = refusals(
            &d,
            None,
            Options {
                allow_fixed: false,
                no_unmount: true,
            },
        );
        assert!(r[0].contains("/media/me/boot"), "{r:?}");
    }

    #[test]
    fn confirmation_needs_the_typed_name_or_yes() {
        let d = disk(true, vec![]);
        let mut out = Vec::new();
        confirm(&[&d], false, true, &mut &b"sdx\n"[..], &mut out).unwrap();
        assert!(String::from_utf8_lossy(&out).contains("Type the device name (sdx)"));
        let e = confirm(&[&d], false, true, &mut &b"sdy\n"[..], &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        let e = confirm(&[&d], false, false, &mut &b""[..], &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("--yes"), "{e}");
        confirm(&[&d], true, false, &mut &b""[..], &mut Vec::new()).unwrap();
    }
}
