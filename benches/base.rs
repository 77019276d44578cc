//! Benchmark of `nodeimg base` against the seed's shell method on the same
//! inputs, in the same run:
//!
//! 1. from a root tree (~700 MiB: the RPi OS fixture's tree plus generated
//!    files): `nodeimg base --board rpi5 --from TREE` against
//!    `sfdisk` + `mkfs.vfat` + `mcopy` + `mke2fs -d` + `dd` into the image;
//! 2. from a ~3 GiB RPi-OS-like `.img.xz`: `nodeimg base` with the same
//!    edits (enable a unit, mask a timer, two kernel command-line words, the
//!    host keys removed) against `xz -d` + loop mount of the root + the same
//!    edits by hand (`ln -s`, `rm`, `mcopy` for cmdline.txt: this kernel has
//!    no vfat) + umount. Needs root for the loop mount.
//!
//! `cargo bench --bench base`. Knobs: `BENCH_TREE_MIB` (700),
//! `BENCH_IMAGE_GIB` (3), `BENCH_DIR` (target/base-bench). Inputs are built
//! once and kept in `BENCH_DIR`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run(cmd: &str) {
    let st = Command::new("bash")
        .args(["-euo", "pipefail", "-c", cmd])
        .env("MTOOLS_SKIP_CHECK", "1")
        .status()
        .expect("bash");
    assert!(st.success(), "failed: {cmd}");
}

fn timed(label: &str, cmd: &str) -> f64 {
    run("sync");
    let t = Instant::now();
    run(cmd);
    let s = t.elapsed().as_secs_f64();
    println!("  {label:<40} {s:>8.2} s");
    s
}

fn nodeimg() -> &'static str {
    env!("CARGO_BIN_EXE_nodeimg")
}

fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target/base-bench"));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display().to_string();
    let tree_mib = env_num("BENCH_TREE_MIB", 700);
    let image_gib = env_num("BENCH_IMAGE_GIB", 3);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "nodeimg base benchmark (load average at start: {})",
        load.trim()
    );

    // Inputs, once.
    let tree = dir.join(format!("tree-{tree_mib}"));
    let marker = dir.join(format!("tree-{tree_mib}.done"));
    if !marker.exists() {
        run(&format!(
            "rm -rf {d}/fixture {t}; mkdir -p {d}/fixture; \
             bash {r}/fixtures/make-os-image.sh rpios {d}/fixture/disk.img {d}/fixture/tree; \
             cp -a {d}/fixture/tree {t}",
            r = repo.display(),
            t = tree.display()
        ));
        generate(&tree.join("usr/share/bench"), tree_mib << 20);
        std::fs::write(&marker, b"").unwrap();
    }
    let xz = dir.join(format!("rpios-{image_gib}g.img.xz"));
    if !xz.exists() {
        run(&format!(
            "SOURCE_DATE_EPOCH=1767225600 {n} base --board rpi5 --from {t} --size {image_gib}GiB --force -o {d}/big.img \
             && xz -T2 -1 -c {d}/big.img > {x}.tmp && mv {x}.tmp {x} && rm -f {d}/big.img {d}/big.img.json",
            n = nodeimg(),
            t = tree.display(),
            x = xz.display()
        ));
    }

    let boot_mib = 512u64;
    let ours_tree = timed(
        "nodeimg base (tree)",
        &format!(
            "{n} base --board rpi5 --from {t} --force -o {d}/ours-tree.img > /dev/null",
            n = nodeimg(),
            t = tree.display()
        ),
    );
    // The seed's tree method on the same sizes as ours.
    let size = std::fs::metadata(dir.join("ours-tree.img")).unwrap().len();
    let root_start = 8u64 << 20;
    let root_off = root_start + (boot_mib << 20);
    let root_bytes = size - root_off;
    let seed_tree = timed(
        "seed: sfdisk+mkfs.vfat+mcopy+mke2fs -d",
        &format!(
            "cd {d}; rm -rf seed-tree.img boot.fat root.ext4 rootsrc; \
             truncate -s {size} seed-tree.img; \
             printf 'label: dos\\nstart=16384, size={bs}, type=c\\nstart={rs}, type=83\\n' | sfdisk -q seed-tree.img; \
             truncate -s {boot_mib}M boot.fat; mkfs.vfat -F 32 -n bootfs boot.fat > /dev/null; \
             mcopy -s -i boot.fat {t}/boot/firmware/* ::/; \
             mke2fs -q -t ext4 -L rootfs -d {t} root.ext4 $(({rb}/1024))k; \
             dd if=boot.fat of=seed-tree.img bs=4M seek={bo} oflag=seek_bytes conv=notrunc,sparse status=none; \
             dd if=root.ext4 of=seed-tree.img bs=4M seek={ro} oflag=seek_bytes conv=notrunc,sparse status=none; \
             rm -f boot.fat root.ext4",
            t = tree.display(),
            bs = (boot_mib << 20) / 512,
            rs = root_off / 512,
            rb = root_bytes,
            bo = root_start,
            ro = root_off,
        ),
    );

    let edits = "--enable NetworkManager.service --mask apt-daily.timer \
                 --cmdline-append cgroup_enable=memory --cmdline-append cgroup_memory=1";
    let ours_img = timed(
        "nodeimg base (.img.xz)",
        &format!(
            "{n} base --board rpi5 --from {x} {edits} --force -o {d}/ours-img.img > /dev/null",
            n = nodeimg(),
            x = xz.display()
        ),
    );
    // Partition offsets of the same layout, read before the clock starts.
    let j = Command::new("sfdisk")
        .args(["-J", &format!("{d}/ours-img.img")])
        .output()
        .expect("sfdisk");
    let t: serde_json::Value = serde_json::from_slice(&j.stdout).expect("sfdisk json");
    let part = |i: usize, k: &str| t["partitiontable"]["partitions"][i][k].as_u64().unwrap() * 512;
    let (p1, p2, p2len) = (part(0, "start"), part(1, "start"), part(1, "size"));
    let seed_img = timed(
        "seed: xz -d + loop mount + edits + umount",
        &format!(
            "cd {d}; rm -rf seed-img.img mnt; mkdir mnt; xz -T2 -dc {x} > seed-img.img; \
             loop=$(losetup --find --show --offset {p2} --sizelimit {p2len} seed-img.img); \
             trap \"umount {d}/mnt 2>/dev/null || true; losetup -d $loop\" EXIT; \
             mount $loop mnt; \
             mkdir -p mnt/etc/systemd/system/multi-user.target.wants; \
             ln -sf /lib/systemd/system/NetworkManager.service mnt/etc/systemd/system/multi-user.target.wants/NetworkManager.service; \
             ln -sf /dev/null mnt/etc/systemd/system/apt-daily.timer; \
             rm -f mnt/etc/ssh/ssh_host_*; \
             mtype -i seed-img.img@@{p1} ::/cmdline.txt | tr -d '\\n' > cmdline.txt; \
             echo ' cgroup_enable=memory cgroup_memory=1' >> cmdline.txt; \
             mcopy -o -i seed-img.img@@{p1} cmdline.txt ::/cmdline.txt; \
             umount mnt; sync",
            x = xz.display()
        ),
    );
    run(&format!("rm -rf {d}/mnt {d}/cmdline.txt"));
    println!();
    println!(
        "tree ({tree_mib} MiB):  nodeimg {ours_tree:.2} s, seed {seed_tree:.2} s, seed/nodeimg = {:.2}",
        seed_tree / ours_tree
    );
    println!(
        "image ({image_gib} GiB .img.xz): nodeimg {ours_img:.2} s, seed {seed_img:.2} s, seed/nodeimg = {:.2}",
        seed_img / ours_img
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at end: {}", load.trim());
}

/// `bytes` of generated files in 256 KiB files, 100 per directory; text-like
/// content (compressible as binaries and text are), different per file.
fn generate(root: &Path, bytes: u64) {
    const FILE: usize = 256 << 10;
    let n = (bytes / FILE as u64) as usize;
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let words = [
        "alpha ", "kernel ", "node ", "image ", "cluster ", "block ", "extent ", "inode ",
    ];
    for i in 0..n {
        let d = root.join(format!("d{:03}", i / 100));
        std::fs::create_dir_all(&d).unwrap();
        let mut buf = Vec::with_capacity(FILE);
        while buf.len() < FILE {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            buf.extend_from_slice(words[(state % 8) as usize].as_bytes());
            if state.is_multiple_of(5) {
                buf.extend_from_slice(&state.to_le_bytes());
            }
        }
        buf.truncate(FILE);
        std::fs::write(d.join(format!("f{i:05}")), &buf).unwrap();
    }
}
