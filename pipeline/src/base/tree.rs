//! Root-tree sources: nodeimg lays out the whole disk itself — an MBR, the
//! board's FAT boot partition (filled from the tree's `/boot/firmware`),
//! an ext4 root (made by `mkfs::ext4` from the rest of the tree) — sized by
//! `--size` or by the content plus headroom. It then makes the tree agree
//! with the disk: `/etc/fstab` entries for the partitions it made,
//! `root=PARTUUID=` in `cmdline.txt`, and for extlinux boards an
//! `extlinux.conf` when the tree has none.

use super::firmware::copy_tree_into_fat;
use super::Progress;
use crate::board::{Board, BootFs, CmdlinePlace};
use crate::error::{Error, Result};
use imagegen::block::{BlockDevice, Window};
use imagegen::fs::{self, Filesystem, NewAttrs, OpenOptions, Timestamp};
use imagegen::layout::{
    plan_table, write_table, PartKind, PartSize, PartitionSpec, Scheme, TableSpec,
};
use imagegen::mkfs::ext4::{self as mkext4, Ext4Options};
use imagegen::mkfs::fat::{self as mkfat, FatBits, FormatOptions};
use imagegen::tree::{Entry, EntryKind, TreeSource, Visitor};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// What the first walk of the tree tells.
#[derive(Debug, Default)]
struct Survey {
    entries: u64,
    data_blocks: u64,
    kernels: Vec<String>,
    initrds: Vec<String>,
    dtb_dirs: Vec<String>,
    has_extlinux: bool,
}

fn survey(tree: &mut dyn TreeSource, extlinux: &str) -> Result<Survey> {
    let mut s = Survey::default();
    tree.walk(false, &mut |e, _| {
        s.entries += 1;
        s.data_blocks += e.data_bytes().div_ceil(4096);
        let p = e.path.as_str();
        if p == extlinux.trim_start_matches('/') {
            s.has_extlinux = true;
        }
        if let EntryKind::File { .. } = e.kind {
            if let Some(name) = p.strip_prefix("boot/").filter(|n| !n.contains('/')) {
                if name.starts_with("vmlinuz-") || name == "vmlinuz" || name == "Image" {
                    s.kernels.push(name.to_string());
                } else if name.starts_with("initrd.img-") || name.starts_with("initramfs-") {
                    s.initrds.push(name.to_string());
                }
            }
        }
        if let EntryKind::Dir = e.kind {
            if (p.starts_with("usr/lib/linux-image-") && p.matches('/').count() == 2)
                || p == "boot/dtbs"
                || (p.starts_with("boot/dtbs/") && p.matches('/').count() == 2)
            {
                s.dtb_dirs.push(p.to_string());
            }
        }
        Ok(())
    })?;
    Ok(s)
}

/// A tree without what lies below `prefix` (the boot partition's files,
/// which go to FAT); the mount point directory itself stays.
struct Without<'a> {
    inner: &'a mut dyn TreeSource,
    prefix: String,
}

impl TreeSource for Without<'_> {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn walk(&mut self, with_data: bool, visit: &mut Visitor<'_>) -> imagegen::Result<()> {
        let below = format!("{}/", self.prefix);
        let filtering = !self.prefix.is_empty();
        self.inner.walk(with_data, &mut |e: &Entry, data| {
            if filtering && e.path.starts_with(&below) {
                return Ok(());
            }
            visit(e, data)
        })
    }
}

/// The disk made from a tree.
#[derive(Debug, Clone)]
pub struct TreeDisk {
    pub size: u64,
    pub disk_id: String,
    pub root_number: u32,
}

/// Lays out `dev` (a new, zero-filled file that this resizes through
/// `set_size`) from `tree` for `board`.
pub fn build(
    tree: &mut dyn TreeSource,
    board: &Board,
    size: Option<u64>,
    now: Timestamp,
    open_out: &mut dyn FnMut(u64) -> Result<Arc<dyn BlockDevice>>,
    progress: &dyn Progress,
) -> Result<(TreeDisk, Arc<dyn BlockDevice>)> {
    let extlinux_path = match &board.cmdline {
        CmdlinePlace::Extlinux { path } => Some(path.clone()),
        CmdlinePlace::CmdlineTxt { .. } => None,
    };
    progress.step("surveying the tree");
    let s = survey(tree, extlinux_path.as_deref().unwrap_or("/-"))?;
    let align = board.align;
    let first = align.max(board.firmware.reserved_end().next_multiple_of(align));
    let boot_size = board.boot.as_ref().map(|b| b.size).unwrap_or(0);
    let root_start = (first + boot_size).next_multiple_of(align);
    let total = match size {
        Some(t) => t,
        None => {
            // Data, one block per entry for metadata and directories, 25 %
            // and 256 MiB of headroom for the journal, inode tables and the
            // first boot's growth.
            let est = (s.data_blocks + s.entries) * 4096;
            let root = (est + est / 4 + (256 << 20)).next_multiple_of(align);
            root_start + root
        }
    };
    if total <= root_start + mkext4::MIN_SIZE {
        return Err(Error::refused(
            format!("--size {total}"),
            format!("leaves no room for a root filesystem after byte {root_start}"),
        ));
    }
    let total = total / 4096 * 4096;
    let mut spec = TableSpec::new(Scheme::Mbr);
    spec.align = align;
    if let Some(b) = &board.boot {
        let mut p = PartitionSpec::new(PartSize::Bytes(boot_size), PartKind::Mbr(b.mbr_type));
        p.start = Some(first);
        spec.partitions.push(p);
    }
    let mut rp = PartitionSpec::new(PartSize::Rest, PartKind::Mbr(0x83));
    rp.start = Some(root_start);
    spec.partitions.push(rp);
    let table = plan_table(&spec, total)?;
    let disk_id = table
        .disk_id
        .clone()
        .ok_or_else(|| Error::refused("layout", "planned table has no disk id"))?;
    let root_number = spec.partitions.len() as u32;
    let root_part = table
        .get(root_number)
        .cloned()
        .ok_or_else(|| Error::refused("layout", "planned table lost its root partition"))?;
    let root_fs_size = root_part.size / 4096 * 4096;
    let partuuid = |n: u32| format!("{disk_id}-{n:02}");

    // Check that the root fits before anything is written.
    // From the disk id and the request's time, never the environment: the
    // same under one SOURCE_DATE_EPOCH, another for a build at another time.
    let uuid = {
        let h = Sha256::digest(format!("nodeimg root {disk_id} {}", now.secs).as_bytes());
        let mut u = [0u8; 16];
        u.copy_from_slice(&h[..16]);
        u[6] = (u[6] & 0x0f) | 0x40;
        u[8] = (u[8] & 0x3f) | 0x80;
        u
    };
    let mut opts = Ext4Options::new(root_fs_size, uuid, now.secs, Some(now.secs));
    opts.label = Some(board.root_label.clone());

    let dev = open_out(total)?;
    write_table(&*dev, &table)?;

    if let Some(b) = &board.boot {
        progress.step("making the boot partition");
        let p = table
            .get(1)
            .ok_or_else(|| Error::refused("layout", "planned table lost its boot partition"))?;
        let win: Arc<dyn BlockDevice> = Arc::new(Window::new(dev.clone(), p.start, p.size)?);
        mkfat::format(
            &*win,
            &FormatOptions {
                bits: match b.fs {
                    BootFs::Fat16 => FatBits::Fat16,
                    BootFs::Fat32 => FatBits::Fat32,
                },
                label: Some(b.label.clone()),
                volume_id: None,
                cluster_size: None,
                now,
            },
        )?;
        let mut fat = fs::open(win, OpenOptions::writable(now))?;
        copy_tree_into_fat(tree, b.mount.trim_start_matches('/'), &mut *fat)?;
        if let CmdlinePlace::CmdlineTxt { path } = &board.cmdline {
            if let Some(rel) = path.strip_prefix(&b.mount) {
                let root = format!("root=PARTUUID={}", partuuid(root_number));
                let mut old = Vec::new();
                let line = match fat.read_file(rel, &mut old) {
                    Ok(_) => set_root_word(&String::from_utf8_lossy(&old), &root),
                    Err(_) => {
                        let mut w = vec![root];
                        w.extend(board.cmdline_args.iter().cloned());
                        w.join(" ")
                    }
                };
                let data = format!("{line}\n");
                fat.write_file(
                    rel,
                    &mut data.as_bytes(),
                    data.len() as u64,
                    &NewAttrs::default(),
                )?;
            }
        }
        fat.flush()?;
    }

    progress.step("making the root filesystem");
    let root_win: Arc<dyn BlockDevice> =
        Arc::new(Window::new(dev.clone(), root_part.start, root_fs_size)?);
    let prefix = board
        .boot
        .as_ref()
        .map(|b| b.mount.trim_start_matches('/').to_string())
        .unwrap_or_default();
    let mut without = Without {
        inner: tree,
        prefix,
    };
    match mkext4::build(&mut without, &opts, &*root_win, true) {
        Ok(_) => {}
        Err(imagegen::Error::NoSpace(why)) => {
            return Err(Error::refused(
                format!("--size {total}"),
                format!("is smaller than the content: {why}"),
            ))
        }
        Err(e) => return Err(e.into()),
    }

    let mut root = fs::open(root_win, OpenOptions::writable(now))?;
    let mut mounts = vec![(
        partuuid(root_number),
        "/".to_string(),
        "ext4",
        "defaults,noatime",
        1,
    )];
    if let Some(b) = &board.boot {
        mounts.push((partuuid(1), b.mount.clone(), "vfat", "defaults", 2));
    }
    write_fstab(&mut *root, &mounts)?;
    if let Some(path) = &extlinux_path {
        if !s.has_extlinux {
            let conf = extlinux_conf(&s, &partuuid(root_number), &board.cmdline_args)?;
            write_root_file(&mut *root, path, conf.as_bytes())?;
        }
    }
    root.flush()?;
    dev.flush()?;
    Ok((
        TreeDisk {
            size: total,
            disk_id,
            root_number,
        },
        dev,
    ))
}

/// The command line with its `root=` word replaced (or added first).
pub fn set_root_word(line: &str, root: &str) -> String {
    let line = line.lines().next().unwrap_or("");
    let mut words: Vec<String> = Vec::new();
    let mut done = false;
    for w in line.split_whitespace() {
        if w.starts_with("root=") {
            if !done {
                words.push(root.to_string());
                done = true;
            }
        } else {
            words.push(w.to_string());
        }
    }
    if !done {
        words.insert(0, root.to_string());
    }
    words.join(" ")
}

fn write_root_file(fs: &mut dyn Filesystem, path: &str, data: &[u8]) -> Result<()> {
    if let Some((parent, _)) = path.rsplit_once('/') {
        if !parent.is_empty() {
            fs.mkdir(parent, true, &NewAttrs::default())?;
        }
    }
    let attrs = NewAttrs {
        mode: Some(0o644),
        uid: Some(0),
        gid: Some(0),
        mtime: None,
    };
    fs.write_file(path, &mut &data[..], data.len() as u64, &attrs)?;
    Ok(())
}

/// Keeps the tree's fstab lines except those for the mount points we made,
/// and adds ours.
fn write_fstab(
    fs: &mut dyn Filesystem,
    mounts: &[(String, String, &str, &str, u32)],
) -> Result<()> {
    let mut old = Vec::new();
    let _ = fs.read_file("/etc/fstab", &mut old);
    let old = String::from_utf8_lossy(&old);
    let mut out = String::new();
    for line in old.lines() {
        let t = line.trim();
        let mp = t.split_whitespace().nth(1);
        if !t.starts_with('#') && mounts.iter().any(|m| Some(m.1.as_str()) == mp) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    for (pu, mp, fstype, o, pass) in mounts {
        out.push_str(&format!("PARTUUID={pu}  {mp}  {fstype}  {o}  0  {pass}\n"));
    }
    write_root_file(fs, "/etc/fstab", out.as_bytes())
}

/// U-Boot distro-boot configuration for the newest kernel of the tree.
fn extlinux_conf(s: &Survey, partuuid: &str, args: &[String]) -> Result<String> {
    let version = |n: &str| {
        n.trim_start_matches("vmlinuz-")
            .trim_start_matches("initrd.img-")
            .trim_start_matches("initramfs-")
            .trim_end_matches(".img")
            .to_string()
    };
    let mut kernels = s.kernels.clone();
    kernels.sort();
    let kernel = kernels.last().ok_or_else(|| {
        Error::refused(
            "root tree",
            "has no kernel in /boot (vmlinuz-*, vmlinuz or Image), so there is nothing for extlinux.conf to boot",
        )
    })?;
    let v = version(kernel);
    let initrd = s.initrds.iter().find(|i| version(i) == v);
    let fdtdir = s
        .dtb_dirs
        .iter()
        .find(|d| d.ends_with(&v))
        .or_else(|| s.dtb_dirs.first());
    let mut text = String::from(
        "# Written by nodeimg base: U-Boot distro boot (Tow-Boot) reads this file.\n\
         DEFAULT nodeimg\nTIMEOUT 3\n\nLABEL nodeimg\n",
    );
    text.push_str(&format!("  MENU LABEL Linux {v}\n  LINUX /boot/{kernel}\n"));
    if let Some(i) = initrd {
        text.push_str(&format!("  INITRD /boot/{i}\n"));
    }
    if let Some(d) = fdtdir {
        // FDTDIR: each board's U-Boot picks its own device tree from here.
        text.push_str(&format!("  FDTDIR /{d}\n"));
    }
    let mut words = vec![format!("root=PARTUUID={partuuid}")];
    words.extend(args.iter().cloned());
    text.push_str(&format!("  APPEND {}\n", words.join(" ")));
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_word_is_replaced_or_added() {
        assert_eq!(
            set_root_word(
                "console=tty1 root=PARTUUID=1-02 rootwait\n",
                "root=PARTUUID=ab-02"
            ),
            "console=tty1 root=PARTUUID=ab-02 rootwait"
        );
        assert_eq!(set_root_word("quiet", "root=X"), "root=X quiet");
    }

    #[test]
    fn extlinux_names_kernel_initrd_and_fdtdir() {
        let s = Survey {
            kernels: vec!["vmlinuz-6.1.0-1-arm64".into()],
            initrds: vec!["initrd.img-6.1.0-1-arm64".into()],
            dtb_dirs: vec!["usr/lib/linux-image-6.1.0-1-arm64".into()],
            ..Survey::default()
        };
        let c = extlinux_conf(&s, "abcd-01", &["rootwait".into()]).unwrap();
        assert!(c.contains("LINUX /boot/vmlinuz-6.1.0-1-arm64\n"), "{c}");
        assert!(c.contains("INITRD /boot/initrd.img-6.1.0-1-arm64\n"), "{c}");
        assert!(
            c.contains("FDTDIR /usr/lib/linux-image-6.1.0-1-arm64\n"),
            "{c}"
        );
        assert!(c.contains("APPEND root=PARTUUID=abcd-01 rootwait\n"), "{c}");
        assert!(extlinux_conf(&Survey::default(), "x", &[]).is_err());
    }
}
