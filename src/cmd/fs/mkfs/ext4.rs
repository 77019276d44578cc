//! `nodeimg fs mkfs ext4 OUT --size SIZE [--from SOURCE] …`: a fresh ext4
//! filesystem, empty or filled from a directory, a tarball or another
//! filesystem image (repack), into a new file or into partition N of an
//! existing disk image. See docs/mkfs.md.

use crate::cmd::size::parse_size;
use anyhow::{bail, Context};
use clap::Args;
use imagegen::block::{BlockDevice, FileDevice};
use imagegen::fs::ext4::Ext4Fs;
use imagegen::fs::Timestamp;
use imagegen::mkfs::ext4::{
    build_file, build_in_partition, parse_uuid, partition_size, random_uuid, Ext4Options,
    InodePolicy, Summary,
};
use imagegen::sink::{check_distinct, check_output};
use imagegen::source::{Compression, ImageSource};
use imagegen::tree::{DirSource, EmptyTree, FsSource, OwnerMap, TarSource, TreeSource};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Args)]
pub struct Ext4Args {
    /// Image file to create (must not exist unless --force); with --part, the existing disk image to write into
    out: PathBuf,
    /// Replace OUT if it exists (never when it is the --from image)
    #[arg(long, conflicts_with = "part")]
    force: bool,
    /// Size of the filesystem, e.g. 2GiB, 512M (a multiple of 4 KiB; with --part, default: the whole partition)
    #[arg(long, value_parser = parse_size, required_unless_present = "part")]
    size: Option<u64>,
    /// What to put in it: a directory, a tarball (.tar, .tar.gz, .tar.xz, .tar.zst) or an ext2/3/4 image to repack (default: empty)
    #[arg(long)]
    from: Option<PathBuf>,
    /// With --from IMAGE: repack partition N of that disk image
    #[arg(long, requires = "from")]
    from_part: Option<u32>,
    /// Volume label, up to 16 bytes
    #[arg(long)]
    label: Option<String>,
    /// Filesystem UUID (default: random; derived from the label, size and SOURCE_DATE_EPOCH when that is set)
    #[arg(long, value_parser = parse_uuid_arg)]
    uuid: Option<[u8; 16]>,
    /// Directory-hash seed as a UUID (default: derived from the filesystem UUID)
    #[arg(long, value_parser = parse_uuid_arg)]
    hash_seed: Option<[u8; 16]>,
    /// Number of inodes (default: one per 16 KiB)
    #[arg(long, conflicts_with = "inode_ratio", value_parser = clap::value_parser!(u32).range(1..))]
    inodes: Option<u32>,
    /// Bytes of filesystem per inode (default 16384)
    #[arg(long, value_parser = parse_size)]
    inode_ratio: Option<u64>,
    /// Owners by path, one 'PATH UID:GID' rule per line (format in docs/mkfs.md)
    #[arg(long)]
    owner_map: Option<PathBuf>,
    /// Write into partition N of OUT, an existing disk image, keeping its partition table
    #[arg(long)]
    part: Option<u32>,
}

fn parse_uuid_arg(text: &str) -> Result<[u8; 16], String> {
    parse_uuid(text).map_err(|e| e.to_string())
}

/// A UUID that depends only on what decides the bytes, for reproducible
/// builds without `--uuid`.
fn derived_uuid(label: Option<&str>, size: u64, epoch: i64) -> [u8; 16] {
    let digest = Sha256::new()
        .chain_update(b"nodeimg ext4 uuid\0")
        .chain_update(label.unwrap_or("").as_bytes())
        .chain_update(size.to_le_bytes())
        .chain_update(epoch.to_le_bytes())
        .finalize();
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&digest[..16]);
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    uuid
}

/// Opens `--from`: a directory, a filesystem image (repack) or a tarball.
fn open_source(from: &Path, part: Option<u32>) -> anyhow::Result<Box<dyn TreeSource>> {
    let meta = std::fs::metadata(from).with_context(|| from.display().to_string())?;
    if meta.is_dir() {
        if part.is_some() {
            return Err(crate::cmd::usage::usage(format!(
                "--from-part needs an image, but {} is a directory",
                from.display()
            )));
        }
        return Ok(Box::new(DirSource::new(from)?));
    }
    let compression = Compression::of_file(from)?;
    if compression.is_compressed() {
        // A compressed tarball, or an image that must be decompressed first.
        let mut head = Vec::new();
        ImageSource::open(from)?
            .take(64 << 10)
            .read_to_end(&mut head)
            .with_context(|| format!("reading {}", from.display()))?;
        if part.is_none() && is_tar_header(&head) {
            return Ok(Box::new(TarSource::open(from)?));
        }
        let advice = match describe_head(&head) {
            Head::Disk => {
                "a disk image; decompress it first, then pick the partition with --from-part N"
            }
            Head::Ext4 => "an ext2/3/4 image; decompress it first to repack it",
            Head::Unknown => "but not a tarball (contents not recognised)",
        };
        bail!("{}: {compression}-compressed, {advice}", from.display());
    }
    let file: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(from)?);
    let dev = imagegen::layout::select_as(file.clone(), part, "--from-part")?;
    if imagegen::fs::ext4::probe(&*dev)? {
        // Read only: the source is never changed.
        let fs = Ext4Fs::open_mode(dev.clone(), false, Timestamp::default())
            .with_context(|| format!("repacking {}", from.display()))?;
        let block_size = fs.details().block_size;
        let devices = Ext4Fs::open_mode(dev, false, Timestamp::default())?;
        let name = match part {
            Some(n) => format!("{} partition {n}", from.display()),
            None => from.display().to_string(),
        };
        let source = FsSource::new(Box::new(fs), name, Some(block_size)).with_device_numbers(
            Box::new(move |path| {
                devices
                    .device_numbers(path)?
                    .ok_or_else(|| imagegen::Error::Invalid(format!("{path}: not a device node")))
            }),
        );
        return Ok(Box::new(source));
    }
    if let Some(n) = part {
        bail!(
            "partition {n} of {} holds no ext2/3/4 filesystem to repack",
            from.display()
        );
    }
    let mut head = vec![0u8; 512.min(file.size()) as usize];
    file.read_at(0, &mut head)?;
    if !is_tar_header(&head) {
        bail!(
            "{}: not a directory, a tarball, an ext2/3/4 image or a disk image (contents not recognised)",
            from.display()
        );
    }
    Ok(Box::new(TarSource::open(from)?))
}

/// Whether `head` starts with a tar header whose checksum holds (or is the
/// all-zero end of an empty archive).
fn is_tar_header(head: &[u8]) -> bool {
    let Some(h) = head.get(..512) else {
        return false;
    };
    if h.iter().all(|&b| b == 0) {
        return true;
    }
    let field = String::from_utf8_lossy(&h[148..156]);
    let Ok(stored) = u32::from_str_radix(field.trim_matches(|c| c == ' ' || c == '\0'), 8) else {
        return false;
    };
    let sum: u32 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    sum == stored
}

/// What the first bytes of a decompressed file look like.
enum Head {
    Disk,
    Ext4,
    Unknown,
}

fn describe_head(head: &[u8]) -> Head {
    let has = |at: usize, magic: &[u8]| head.get(at..at + magic.len()) == Some(magic);
    if has(1080, &[0x53, 0xef]) {
        Head::Ext4
    } else if has(510, &[0x55, 0xaa]) || has(512, b"EFI PART") {
        Head::Disk
    } else {
        Head::Unknown
    }
}

pub fn run(args: Ext4Args) -> anyhow::Result<()> {
    let out = &args.out;
    let inputs: Vec<&Path> = args.from.as_deref().into_iter().collect();
    match args.part {
        Some(_) => check_distinct(out, &inputs)?,
        None => check_output(out, args.force, &inputs)?,
    }
    let size = match (args.size, args.part) {
        (Some(size), _) => size,
        (None, Some(part)) => partition_size(out, part)?,
        (None, None) => {
            return Err(crate::cmd::usage::usage(
                "--size is required (unless --part picks a partition to fill)",
            ))
        }
    };
    // The command line's one time source: SOURCE_DATE_EPOCH (the epoch and
    // the clamp) or the clock.
    let clamp = imagegen::fs::timestamp::source_date_epoch()?;
    let epoch = match clamp {
        Some(t) => t,
        None => Timestamp::now()?.secs,
    };
    let mut opts = Ext4Options::new(size, [0; 16], epoch, clamp);
    opts.uuid = match args.uuid {
        Some(uuid) => uuid,
        None if opts.clamp.is_some() => derived_uuid(args.label.as_deref(), size, opts.epoch),
        None => random_uuid()?,
    };
    opts.label = args.label.clone();
    opts.hash_seed = args.hash_seed;
    opts.inodes = match (args.inodes, args.inode_ratio) {
        (Some(n), _) => InodePolicy::Count(n),
        (None, Some(ratio)) => InodePolicy::BytesPerInode(ratio),
        (None, None) => InodePolicy::Auto,
    };
    if let Some(map) = &args.owner_map {
        opts.owner_map = Some(OwnerMap::load(map)?);
    }
    let mut source: Box<dyn TreeSource> = match &args.from {
        Some(from) => open_source(from, args.from_part)?,
        None => Box::new(EmptyTree),
    };
    let _lock = match args.part {
        Some(_) => Some(crate::cmd::fs::image::lock_image(out, true)?),
        None => None,
    };
    let summary: Summary = match args.part {
        Some(part) => build_in_partition(&mut *source, &opts, out, part),
        None => build_file(&mut *source, &opts, out),
    }
    .with_context(|| match args.part {
        Some(part) => format!("{} partition {part}", out.display()),
        None => out.display().to_string(),
    })?;
    let uuid = uuid::Uuid::from_bytes(opts.uuid);
    sayln!(
        "{}{}: ext4, {} MiB, uuid {uuid}, {} inodes used, {} MiB of file data",
        out.display(),
        args.part
            .map(|p| format!(" partition {p}"))
            .unwrap_or_default(),
        summary.size >> 20,
        summary.inodes,
        summary.data_bytes >> 20
    );
    Ok(())
}
