//! Partition tables against the independent oracle `sfdisk --json`: tables we
//! write are read by sfdisk, tables sfdisk writes are read by us, and broken
//! tables are refused with a message naming the entry.

use imagegen::block::{BlockDevice, FileDevice};
use imagegen::layout::{
    self, gpt_types, plan_table, read_table, write_table, PartKind, PartSize, PartitionSpec,
    PartitionTable, Scheme, TableSpec,
};
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

const MIB: u64 = 1 << 20;

fn sparse_image(dir: &Path, name: &str, size: u64) -> std::path::PathBuf {
    let path = dir.join(name);
    FileDevice::create(&path, size).unwrap();
    path
}

fn sfdisk_json(path: &Path) -> Value {
    let out = Command::new("sfdisk")
        .arg("--json")
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sfdisk --json failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["partitiontable"].clone()
}

fn sfdisk_write(path: &Path, script: &str) {
    let mut child = Command::new("sfdisk")
        .arg("-q")
        .arg("--no-reread")
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "sfdisk failed on {script}");
}

/// Asserts that sfdisk's view of `path` is exactly `table`.
fn assert_sfdisk_agrees(path: &Path, table: &PartitionTable) {
    let j = sfdisk_json(path);
    let label = match table.scheme {
        Scheme::Mbr => "dos",
        Scheme::Gpt => "gpt",
        Scheme::None => unreachable!(),
    };
    assert_eq!(j["label"], label);
    let id = j["id"].as_str().unwrap().to_lowercase();
    let id = id.trim_start_matches("0x");
    assert_eq!(Some(id), table.disk_id.as_deref());
    let parts = j["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), table.partitions.len(), "{j}");
    let prefix = path.display().to_string();
    for (s, p) in parts.iter().zip(&table.partitions) {
        let node = s["node"].as_str().unwrap();
        let number: u32 = node.strip_prefix(&prefix).unwrap().parse().unwrap();
        assert_eq!(number, p.number);
        assert_eq!(s["start"].as_u64().unwrap() * 512, p.start, "{s}");
        assert_eq!(s["size"].as_u64().unwrap() * 512, p.size, "{s}");
        let ty = s["type"].as_str().unwrap().to_lowercase();
        match &p.kind {
            PartKind::Mbr(t) => {
                assert_eq!(u8::from_str_radix(&ty, 16).unwrap(), *t);
                assert_eq!(s["bootable"].as_bool().unwrap_or(false), p.bootable);
            }
            PartKind::Gpt(g) => {
                assert_eq!(&ty, g);
                assert_eq!(s["uuid"].as_str().map(str::to_lowercase), p.guid.clone());
                assert_eq!(s["name"].as_str().map(String::from), p.name);
                let attrs = s["attrs"].as_str().unwrap_or("");
                assert_eq!(attrs.contains("LegacyBIOSBootable"), p.bootable);
            }
        }
    }
}

fn mbr(size: PartSize, t: u8, bootable: bool) -> PartitionSpec {
    PartitionSpec {
        bootable,
        ..PartitionSpec::new(size, PartKind::Mbr(t))
    }
}

#[test]
fn mbr_we_write_is_what_sfdisk_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = sparse_image(dir.path(), "mbr.img", 64 * MIB);
    let spec = TableSpec {
        disk_id: Some("a1b2c3d4".into()),
        partitions: vec![
            mbr(PartSize::Bytes(8 * MIB), 0x0c, true),
            // An explicit unaligned start, like the Odroid's firmware region.
            PartitionSpec {
                start: Some(40 * MIB + 512),
                ..mbr(PartSize::Bytes(4 * MIB), 0xf8, false)
            },
            mbr(PartSize::Rest, 0x83, false),
        ],
        ..TableSpec::new(Scheme::Mbr)
    };
    let table = plan_table(&spec, 64 * MIB).unwrap();
    assert_eq!(table.partitions[0].start, MIB);
    assert_eq!(table.partitions[2].start, 45 * MIB);
    assert_eq!(table.partitions[2].end(), 64 * MIB);
    let dev = FileDevice::open_rw(&path).unwrap();
    write_table(&dev, &table).unwrap();
    assert_sfdisk_agrees(&path, &table);
    assert_eq!(read_table(&dev).unwrap(), table);
}

#[test]
fn gpt_we_write_is_what_sfdisk_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = sparse_image(dir.path(), "gpt.img", 64 * MIB);
    let spec = TableSpec {
        disk_id: Some("01234567-89ab-cdef-0123-456789abcdef".into()),
        partitions: vec![
            PartitionSpec {
                name: Some("boot".into()),
                bootable: true,
                ..PartitionSpec::new(
                    PartSize::Bytes(16 * MIB),
                    PartKind::Gpt(gpt_types::EFI_SYSTEM.into()),
                )
            },
            PartitionSpec {
                name: Some("root".into()),
                guid: Some("11111111-2222-4333-8444-555555555555".into()),
                ..PartitionSpec::new(PartSize::Rest, PartKind::Gpt(gpt_types::LINUX_FS.into()))
            },
        ],
        ..TableSpec::new(Scheme::Gpt)
    };
    let table = plan_table(&spec, 64 * MIB).unwrap();
    let again = plan_table(&spec, 64 * MIB).unwrap();
    assert_eq!(table, again, "planning is deterministic");
    let dev = FileDevice::open_rw(&path).unwrap();
    write_table(&dev, &table).unwrap();
    assert_sfdisk_agrees(&path, &table);
    assert_eq!(read_table(&dev).unwrap(), table);
    let verify = Command::new("sfdisk")
        .arg("--verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(verify.status.success(), "{verify:?}");
    let text = String::from_utf8_lossy(&verify.stdout);
    assert!(
        !text.contains("corrupt") && !text.contains("mismatch"),
        "{text}"
    );
}

#[test]
fn mbr_written_by_sfdisk_with_logical_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let path = sparse_image(dir.path(), "dos.img", 64 * MIB);
    sfdisk_write(
        &path,
        "label: dos\nlabel-id: 0x12345678\n2048,8192,c,*\n,16384,83\n,,5\n,4096,83\n,,83\n",
    );
    let dev = FileDevice::open(&path).unwrap();
    let table = read_table(&dev).unwrap();
    assert_eq!(table.disk_id.as_deref(), Some("12345678"));
    assert_eq!(
        table
            .partitions
            .iter()
            .map(|p| p.number)
            .collect::<Vec<_>>(),
        [1, 2, 3, 5, 6]
    );
    assert_sfdisk_agrees(&path, &table);
}

#[test]
fn gpt_written_by_sfdisk() {
    let dir = tempfile::tempdir().unwrap();
    let path = sparse_image(dir.path(), "gpt.img", 64 * MIB);
    sfdisk_write(
        &path,
        "label: gpt\nlabel-id: 01234567-89AB-CDEF-0123-456789ABCDEF\n\
         size=8M, type=U, name=\"boot\", attrs=\"LegacyBIOSBootable\"\n\
         type=L, name=\"root\"\n",
    );
    let table = read_table(&FileDevice::open(&path).unwrap()).unwrap();
    assert_eq!(table.scheme, Scheme::Gpt);
    assert_eq!(table.partitions[0].name.as_deref(), Some("boot"));
    assert!(table.partitions[0].bootable);
    assert_sfdisk_agrees(&path, &table);
}

fn corrupt_message(path: &Path) -> String {
    let dev = FileDevice::open(path).unwrap();
    let err = read_table(&dev).unwrap_err();
    assert!(matches!(err, imagegen::Error::Corrupt { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
    msg
}

#[test]
fn entry_past_the_end_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = sparse_image(dir.path(), "big.img", 64 * MIB);
    sfdisk_write(&path, "label: dos\n2048,8192,c\n,,83\n");
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(32 * MIB)
        .unwrap();
    let msg = corrupt_message(&path);
    assert!(
        msg.contains("MBR partition 2") && msg.contains("past the end"),
        "{msg}"
    );
}

#[test]
fn overlapping_partitions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = sparse_image(dir.path(), "ovl.img", 64 * MIB);
    sfdisk_write(&path, "label: dos\n2048,8192,c\n,8192,83\n");
    // Move partition 2's start (LBA field of entry 2) into partition 1.
    let dev = FileDevice::open_rw(&path).unwrap();
    dev.write_at(446 + 16 + 8, &4096u32.to_le_bytes()).unwrap();
    let msg = corrupt_message(&path);
    assert!(
        msg.contains("partitions 1 and 2") && msg.contains("overlap"),
        "{msg}"
    );
}

#[test]
fn corrupt_gpt_header_and_entries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = sparse_image(dir.path(), "gpt.img", 64 * MIB);
    sfdisk_write(&path, "label: gpt\nsize=8M, type=U\ntype=L\n");
    let dev = FileDevice::open_rw(&path).unwrap();
    // A byte of the disk GUID in the primary header.
    let mut b = [0u8];
    dev.read_at(512 + 60, &mut b).unwrap();
    dev.write_at(512 + 60, &[b[0] ^ 0xff]).unwrap();
    let msg = corrupt_message(&path);
    assert!(msg.contains("GPT header") && msg.contains("CRC32"), "{msg}");
    dev.write_at(512 + 60, &b).unwrap();
    read_table(&dev).unwrap();
    // A byte of entry 1's name in the entry array.
    dev.write_at(1024 + 56, b"X").unwrap();
    let msg = corrupt_message(&path);
    assert!(
        msg.contains("entry array") && msg.contains("CRC32"),
        "{msg}"
    );
}

#[test]
fn truncated_gpt_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = sparse_image(dir.path(), "gpt.img", 64 * MIB);
    sfdisk_write(&path, "label: gpt\nsize=8M, type=U\n");
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(2048)
        .unwrap();
    let msg = corrupt_message(&path);
    assert!(msg.contains("truncated"), "{msg}");
}

fn select_err(dev: Arc<dyn BlockDevice>, part: Option<u32>) -> String {
    match layout::select(dev, part) {
        Ok(_) => panic!("select {part:?} should fail"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bare_fat_image_has_no_table_and_select_picks_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let fat = sparse_image(dir.path(), "fat.img", 33 * MIB);
    let ok = Command::new("mkfs.vfat")
        .args(["-F", "32", "-n", "BOOT"])
        .arg(&fat)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&fat).unwrap());
    assert_eq!(read_table(&*dev).unwrap().scheme, Scheme::None);
    let whole = layout::select(dev.clone(), None).unwrap();
    assert_eq!(whole.size(), 33 * MIB);
    let err = select_err(dev, Some(1));
    assert!(err.contains("no partition table"), "{err}");

    let disk = sparse_image(dir.path(), "disk.img", 16 * MIB);
    sfdisk_write(&disk, "label: dos\n2048,4096,c\n,,83\n");
    let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&disk).unwrap());
    let err = select_err(dev.clone(), None);
    assert!(
        err.contains("--part N") && err.contains("2 (type 0x83"),
        "{err}"
    );
    let p2 = layout::select(dev.clone(), Some(2)).unwrap();
    assert_eq!(p2.size(), 16 * MIB - 3 * MIB);
    let err = select_err(dev, Some(7));
    assert!(err.contains("no partition 7"), "{err}");
}
