//! The environment flash nodeimg gives U-Boot, judged by U-Boot's own tool:
//! `mkenvimage` (package u-boot-tools) makes the same block from the same
//! `name=value` lines.

use std::process::Command;
use vm::uboot;

#[test]
fn env_block_matches_mkenvimage() {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join("mkenvimage").exists());
    assert!(found, "mkenvimage is missing: apt-get install u-boot-tools");
    let t = tempfile::tempdir().unwrap();
    let vars = uboot::variables();
    let text: String = vars.iter().map(|(n, v)| format!("{n}={v}\n")).collect();
    std::fs::write(t.path().join("env.txt"), text).unwrap();
    let out = t.path().join("env.bin");
    let o = Command::new("mkenvimage")
        .args(["-s", &format!("{:#x}", uboot::ENV_SIZE), "-o"])
        .arg(&out)
        .arg(t.path().join("env.txt"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let theirs = std::fs::read(&out).unwrap();
    assert_eq!(uboot::env_block(&vars).unwrap(), theirs);

    // The flash bank QEMU is given: exactly one bank, the block at its start.
    let flash = t.path().join("flash.img");
    uboot::write_env_flash(&flash).unwrap();
    let bytes = std::fs::read(&flash).unwrap();
    assert_eq!(bytes.len() as u64, uboot::FLASH_BANK_BYTES);
    assert_eq!(&bytes[..uboot::ENV_SIZE], &theirs[..]);
}

/// U-Boot is the firmware only for guests with room for it; smaller ones
/// get their kernel directly.
#[test]
fn small_guests_get_no_firmware() {
    assert!(
        uboot::find().is_some(),
        "{} is missing: apt-get install u-boot-qemu",
        uboot::DEBIAN_PATH
    );
    let t = tempfile::tempdir().unwrap();
    let fw = uboot::firmware(t.path(), uboot::MIN_MEMORY_MIB)
        .unwrap()
        .expect("U-Boot for a 512 MiB guest");
    assert_eq!(
        std::fs::metadata(&fw.env_flash).unwrap().len(),
        uboot::FLASH_BANK_BYTES
    );
    assert!(uboot::firmware(t.path(), uboot::MIN_MEMORY_MIB - 1)
        .unwrap()
        .is_none());
}
