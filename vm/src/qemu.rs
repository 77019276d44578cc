//! The QEMU side: finding `qemu-system-aarch64`, choosing the accelerator,
//! and the command line of one guest (`-M virt`, PL011 console on the
//! process's stdout, a virtio disk, virtio NICs).

use crate::uboot::Firmware;
use anyhow::{bail, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The emulator binary's name.
pub const QEMU: &str = "qemu-system-aarch64";

/// Finds [`QEMU`] on `PATH`, or says which package brings it.
pub fn find() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(QEMU);
        if is_executable(&p) {
            return Ok(p);
        }
    }
    bail!("{QEMU} not found on PATH: install it (Debian and Ubuntu: apt-get install qemu-system-arm; macOS: brew install qemu)")
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// How the guest's CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Linux on an arm64 host with /dev/kvm.
    Kvm,
    /// macOS on Apple Silicon (Hypervisor.framework).
    Hvf,
    /// Emulation: any other host.
    Tcg,
}

impl Accel {
    /// The fastest this host offers.
    pub fn detect() -> Accel {
        let arm64 = std::env::consts::ARCH == "aarch64";
        match std::env::consts::OS {
            "linux" if arm64 && Path::new("/dev/kvm").exists() => Accel::Kvm,
            "macos" if arm64 => Accel::Hvf,
            _ => Accel::Tcg,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Hvf => "hvf",
            Accel::Tcg => "tcg",
        }
    }

    fn cpu(self) -> &'static str {
        match self {
            Accel::Kvm | Accel::Hvf => "host",
            // QEMU's docs: impdef pointer authentication is much cheaper to
            // emulate than the architected QARMA algorithm.
            Accel::Tcg => "max,pauth-impdef=on",
        }
    }
}

/// One virtual NIC of a guest.
#[derive(Debug, Clone)]
pub enum Nic {
    /// The cluster's LAN: a unix datagram socket pair to nodeimg's hub
    /// (`local` is the guest's end, `remote` the hub's).
    Lan { local: PathBuf, remote: PathBuf },
    /// QEMU's user-mode network (DHCP, NAT to the host's network).
    Uplink,
}

/// What one guest boots.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    pub disk: PathBuf,
    /// Kernel, initrd and command line for direct boot; `None` with
    /// `firmware` set.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub append: String,
    /// U-Boot's qemu_arm64 build as `-bios`, its environment in the
    /// second flash bank.
    pub firmware: Option<Firmware>,
    pub memory_mib: u32,
    pub cpus: u32,
    pub nics: Vec<(Nic, [u8; 6])>,
    /// QMP control socket (power-off).
    pub qmp: PathBuf,
    /// The console on stdio multiplexed with QEMU's monitor (`--shell`),
    /// instead of the console alone.
    pub interactive: bool,
}

/// The arguments after the binary.
pub fn args(spec: &GuestSpec, accel: Accel) -> Vec<OsString> {
    let (mem, cpus) = (spec.memory_mib.to_string(), spec.cpus.to_string());
    let serial = if spec.interactive {
        "mon:stdio"
    } else {
        "stdio"
    };
    let mut a: Vec<OsString> = [
        "-M",
        "virt",
        "-accel",
        accel.name(),
        "-cpu",
        accel.cpu(),
        "-m",
        &mem,
        "-smp",
        &cpus,
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        serial,
    ]
    .iter()
    .map(OsString::from)
    .collect();
    if let Some(fw) = &spec.firmware {
        a.push("-bios".into());
        a.push((&fw.bios).into());
        // -bios fills the first flash bank; the second holds U-Boot's
        // environment (crate::uboot).
        let mut flash = OsString::from("if=pflash,unit=1,format=raw,file=");
        flash.push(escape_commas(&fw.env_flash));
        a.extend(["-drive".into(), flash]);
    } else if let Some(k) = &spec.kernel {
        a.push("-kernel".into());
        a.push(k.into());
        if let Some(i) = &spec.initrd {
            a.push("-initrd".into());
            a.push(i.into());
        }
        a.push("-append".into());
        a.push(spec.append.clone().into());
    }
    let mut drive = OsString::from("if=none,id=disk0,format=raw,cache=unsafe,file=");
    drive.push(escape_commas(&spec.disk));
    a.extend(["-drive".into(), drive]);
    a.extend(["-device".into(), "virtio-blk-pci,drive=disk0".into()]);
    for (i, (nic, mac)) in spec.nics.iter().enumerate() {
        let netdev = match nic {
            Nic::Lan { local, remote } => {
                let mut s = OsString::from(format!("dgram,id=net{i},local.type=unix,local.path="));
                s.push(escape_commas(local));
                s.push(",remote.type=unix,remote.path=");
                s.push(escape_commas(remote));
                s
            }
            Nic::Uplink => format!("user,id=net{i}").into(),
        };
        let mac = mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        a.extend(["-netdev".into(), netdev]);
        a.extend([
            "-device".into(),
            format!("virtio-net-pci,netdev=net{i},mac={mac}").into(),
        ]);
    }
    a.push("-object".into());
    a.push("rng-random,id=rng0,filename=/dev/urandom".into());
    a.push("-device".into());
    a.push("virtio-rng-pci,rng=rng0".into());
    let mut qmp = OsString::from("unix:");
    qmp.push(escape_commas(&spec.qmp));
    qmp.push(",server=on,wait=off");
    a.push("-qmp".into());
    a.push(qmp);
    a
}

/// QEMU option values double a comma to mean a literal one.
fn escape_commas(p: &Path) -> OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut out = Vec::new();
    for &b in p.as_os_str().as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

/// Asks the guest to power off through its QMP socket (ACPI power button);
/// false when the socket cannot be reached.
pub fn powerdown(qmp: &Path) -> bool {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    let Ok(mut s) = UnixStream::connect(qmp) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
    let Ok(r) = s.try_clone() else { return false };
    let mut r = BufReader::new(r);
    let mut greeting = String::new();
    if r.read_line(&mut greeting).is_err() {
        return false;
    }
    let sent = s
        .write_all(b"{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"system_powerdown\"}\n")
        .is_ok();
    let mut reply = String::new();
    let _ = r.read_line(&mut reply);
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_boot_command_line() {
        let spec = GuestSpec {
            disk: "/tmp/a,b/disk.img".into(),
            kernel: Some("/k".into()),
            initrd: Some("/i".into()),
            append: "root=PARTUUID=1-02 console=ttyAMA0,115200".into(),
            firmware: None,
            memory_mib: 1024,
            cpus: 2,
            nics: vec![(
                Nic::Lan {
                    local: "/t/n0.sock".into(),
                    remote: "/t/hub0.sock".into(),
                },
                [0x52, 0x54, 0, 0x12, 0x34, 0x10],
            )],
            qmp: "/t/qmp0".into(),
            interactive: false,
        };
        let a: Vec<String> = args(&spec, Accel::Tcg)
            .into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        let joined = a.join(" ");
        assert!(joined.contains("-M virt -accel tcg -cpu max,pauth-impdef=on"));
        assert!(joined.contains("file=/tmp/a,,b/disk.img"));
        assert!(joined
            .contains("-kernel /k -initrd /i -append root=PARTUUID=1-02 console=ttyAMA0,115200"));
        assert!(joined.contains("dgram,id=net0,local.type=unix,local.path=/t/n0.sock,remote.type=unix,remote.path=/t/hub0.sock"));
        assert!(joined.contains("mac=52:54:00:12:34:10"));
        assert!(!joined.contains("mcast"), "never multicast: {joined}");
        assert!(!joined.contains("-bios"), "{joined}");
    }

    #[test]
    fn u_boot_gets_its_environment_flash() {
        let spec = GuestSpec {
            disk: "/t/disk.img".into(),
            kernel: None,
            initrd: None,
            append: String::new(),
            firmware: Some(Firmware {
                bios: "/u/u-boot.bin".into(),
                env_flash: "/t/n,0/env.img".into(),
            }),
            memory_mib: 1024,
            cpus: 2,
            nics: vec![],
            qmp: "/t/qmp0".into(),
            interactive: false,
        };
        let a: Vec<String> = args(&spec, Accel::Tcg)
            .into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        let joined = a.join(" ");
        assert!(
            joined.contains(
                "-bios /u/u-boot.bin -drive if=pflash,unit=1,format=raw,file=/t/n,,0/env.img "
            ),
            "{joined}"
        );
        assert!(!joined.contains("-kernel"), "{joined}");
    }
}
