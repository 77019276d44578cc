//! U-Boot's `qemu_arm64` build as the firmware of extlinux images (Odroid
//! C4 bases, NixOS images), and the environment nodeimg gives it.
//!
//! On the board, Tow-Boot is upstream U-Boot built for Amlogic's meson64
//! family, whose default environment (u-boot `include/configs/meson64.h`)
//! sets `kernel_comp_addr_r` and `kernel_comp_size`: the scratch area
//! where `booti` inflates a compressed kernel such as Debian's gzip
//! `vmlinuz` before moving it back to `kernel_addr_r` (u-boot
//! `cmd/booti.c`: without both variables it refuses the image). Debian's
//! build for QEMU (package u-boot-qemu) has neither in its defaults, so
//! nodeimg gives it an environment of its own, the way the board keeps one:
//! `qemu_arm64_defconfig` sets `CONFIG_ENV_IS_IN_FLASH`, `CONFIG_ENV_ADDR
//! 0x4000000` (the first byte of the `virt` machine's second 64 MiB flash
//! bank) and `CONFIG_ENV_SIZE 0x40000`, in U-Boot's one-copy format
//! (`include/env.h`, `doc/usage/environment.rst`): a little-endian CRC-32
//! of the data, then `name=value` strings each ended by a NUL, the list
//! ended by a second NUL. U-Boot reads it at start-up ("Loading
//! Environment from Flash... OK") and then knows only what it holds, so
//! nodeimg's environment holds one command: restore U-Boot's own defaults
//! (`env default -a`), add the two variables, keep distro boot to the
//! guest's disk, and boot as the board would. When nothing boots, it says
//! so on the console and resets; QEMU runs with `-no-reboot`, so the guest
//! ends and `nodeimg boot` reports "did not boot" at once with U-Boot's
//! last lines.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where Debian's u-boot-qemu installs the build.
pub const DEBIAN_PATH: &str = "/usr/lib/u-boot/qemu_arm64/u-boot.bin";

/// The size of each of the `virt` machine's two flash banks; QEMU wants a
/// flash image of exactly this size.
pub const FLASH_BANK_BYTES: u64 = 64 << 20;

/// `CONFIG_ENV_SIZE` of `qemu_arm64_defconfig`.
pub const ENV_SIZE: usize = 0x40000;

/// Where `booti` inflates a compressed kernel: 256 MiB into the guest's RAM
/// (which starts at 0x40000000 on `virt`), above the defaults' kernel
/// (0x40400000) and initrd (0x44000000) load addresses with room for an
/// initrd of 192 MiB; the guest needs at least 512 MiB.
pub const KERNEL_COMP_ADDR_R: &str = "0x50000000";

/// The least guest memory (MiB) that holds U-Boot at the top of RAM, the
/// initrd and [`KERNEL_COMP_ADDR_R`]'s inflated kernel; smaller guests
/// have their kernel loaded directly.
pub const MIN_MEMORY_MIB: u32 = 512;

/// The largest compressed kernel `booti` takes (it inflates up to ten times
/// this): meson64's value, 32 MiB.
pub const KERNEL_COMP_SIZE: &str = "0x2000000";

/// U-Boot's boot device for the guest's disk (a virtio block device): the
/// only target distro boot scans, so an image that does not boot is not
/// followed by minutes of network boot attempts.
pub const BOOT_TARGETS: &str = "virtio0";

/// What U-Boot prints when its boot command returned (nothing booted).
pub const NOTHING_BOOTED: &str =
    "nodeimg: U-Boot booted nothing: no extlinux.conf entry on the disk that it could boot";

/// U-Boot's build for QEMU's `virt` machine: `$NODEIMG_UBOOT`, else
/// Debian's u-boot-qemu; `None` when neither is a file.
pub fn find() -> Option<PathBuf> {
    let p = std::env::var_os("NODEIMG_UBOOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEBIAN_PATH));
    p.is_file().then_some(p)
}

/// The firmware of one guest: U-Boot and its environment's flash bank.
#[derive(Debug, Clone)]
pub struct Firmware {
    /// Given to QEMU as `-bios`.
    pub bios: PathBuf,
    /// The second flash bank (`-drive if=pflash,unit=1`).
    pub env_flash: PathBuf,
}

/// The environment's variables: one boot command.
pub fn variables() -> Vec<(&'static str, String)> {
    let bootcmd = format!(
        "env default -a; setenv kernel_comp_addr_r {KERNEL_COMP_ADDR_R}; \
         setenv kernel_comp_size {KERNEL_COMP_SIZE}; setenv boot_targets {BOOT_TARGETS}; \
         run bootcmd; echo {NOTHING_BOOTED}; reset"
    );
    vec![("bootcmd", bootcmd)]
}

/// The environment block: CRC-32, then `name=value\0…\0`, padded with
/// 0xff (erased flash, as U-Boot's mkenvimage pads) to [`ENV_SIZE`].
pub fn env_block(vars: &[(&str, String)]) -> Result<Vec<u8>> {
    let mut data = Vec::with_capacity(ENV_SIZE);
    for (name, value) in vars {
        if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
            bail!("U-Boot variable {name:?} cannot be stored in an environment");
        }
        data.extend_from_slice(name.as_bytes());
        data.push(b'=');
        data.extend_from_slice(value.as_bytes());
        data.push(0);
    }
    data.push(0);
    if data.len() > ENV_SIZE - 4 {
        bail!(
            "the U-Boot environment needs {} bytes, more than its {ENV_SIZE}",
            data.len() + 4
        );
    }
    data.resize(ENV_SIZE - 4, 0xff);
    let mut block = crc32(&data).to_le_bytes().to_vec();
    block.extend_from_slice(&data);
    Ok(block)
}

/// The CRC-32 U-Boot checks its environment with (zlib's, ISO-HDLC).
fn crc32(data: &[u8]) -> u32 {
    crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(data)
}

/// Writes the second flash bank, holding [`variables`], at `path`: a
/// sparse file of [`FLASH_BANK_BYTES`] with the environment at its start.
pub fn write_env_flash(path: &Path) -> Result<()> {
    let block = env_block(&variables())?;
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(&block)
        .and_then(|_| f.set_len(FLASH_BANK_BYTES))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// U-Boot and a fresh environment flash in `dir`, when U-Boot is installed
/// and the guest has [`MIN_MEMORY_MIB`].
pub fn firmware(dir: &Path, memory_mib: u32) -> Result<Option<Firmware>> {
    let Some(bios) = find() else {
        return Ok(None);
    };
    if memory_mib < MIN_MEMORY_MIB {
        return Ok(None);
    }
    let env_flash = dir.join("u-boot-env.img");
    write_env_flash(&env_flash)?;
    Ok(Some(Firmware { bios, env_flash }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_is_crc_then_nul_separated_pairs() {
        let b = env_block(&[("a", "1".into()), ("bc", "x y".into())]).unwrap();
        assert_eq!(b.len(), ENV_SIZE);
        assert_eq!(&b[4..16], b"a=1\0bc=x y\0\0");
        assert!(b[16..].iter().all(|&x| x == 0xff));
        let crc = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        assert_eq!(crc, crc32(&b[4..]));
        assert!(env_block(&[("a=b", "1".into())]).is_err());
        assert!(env_block(&[("a", "x".repeat(ENV_SIZE))]).is_err());
    }

    #[test]
    fn the_boot_command_restores_the_defaults_first() {
        let v = variables();
        let cmd = &v[0].1;
        assert!(cmd.starts_with("env default -a; "), "{cmd}");
        assert!(cmd.contains("setenv kernel_comp_addr_r 0x50000000;"));
        assert!(cmd.ends_with("; reset"), "{cmd}");
    }
}
