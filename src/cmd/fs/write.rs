//! The verbs that change the image: `put`, `mkdir`, `rm`, `symlink`, `link`,
//! `chmod`, `chown`, `setxattr`. Each checks an ext filesystem's maps
//! (`fs check`), opens the image writable, makes one change and flushes.

use super::image::{in_image, open_fs, ImageArgs};
use anyhow::{bail, Context};
use clap::Args;
use imagegen::fs::{Filesystem, NewAttrs};
use std::path::PathBuf;

fn parse_mode(text: &str) -> Result<u32, String> {
    match u32::from_str_radix(text, 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err(format!("{text:?} is not an octal mode (0 to 7777)")),
    }
}

#[derive(Debug, Args)]
pub struct PutArgs {
    #[command(flatten)]
    image: ImageArgs,
    /// Local file to copy in
    local: PathBuf,
    /// Destination path inside the image (its directory must exist)
    path: String,
    /// Permission bits, octal (default 0644; ignored by FAT)
    #[arg(long, value_parser = parse_mode)]
    mode: Option<u32>,
    /// Owner uid (default 0; ignored by FAT)
    #[arg(long)]
    uid: Option<u32>,
    /// Group gid (default 0; ignored by FAT)
    #[arg(long)]
    gid: Option<u32>,
}

#[derive(Debug, Args)]
pub struct MkdirArgs {
    #[command(flatten)]
    image: ImageArgs,
    /// Directory to create inside the image
    path: String,
    /// Also create missing parents; an existing directory is not an error
    #[arg(short, long)]
    parents: bool,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    #[command(flatten)]
    image: ImageArgs,
    /// File or directory to remove
    path: String,
    /// Remove a directory and everything below it
    #[arg(short, long)]
    recursive: bool,
}

#[derive(Debug, Args)]
pub struct SymlinkArgs {
    #[command(flatten)]
    image: ImageArgs,
    /// What the link points to (stored as given)
    target: String,
    /// Where the link is created inside the image
    path: String,
}

#[derive(Debug, Args)]
pub struct LinkArgs {
    #[command(flatten)]
    image: ImageArgs,
    /// Existing file inside the image
    existing: String,
    /// New name for it
    new: String,
}

#[derive(Debug, Args)]
pub struct ChmodArgs {
    #[command(flatten)]
    image: ImageArgs,
    /// Permission bits, octal (e.g. 0600, 4755)
    #[arg(value_parser = parse_mode)]
    mode: u32,
    /// Path inside the image
    path: String,
}

#[derive(Debug, Args)]
pub struct ChownArgs {
    #[command(flatten)]
    image: ImageArgs,
    /// UID, UID:GID or :GID (numeric)
    #[arg(value_parser = parse_owner_arg)]
    owner: (Option<u32>, Option<u32>),
    /// Path inside the image
    path: String,
}

#[derive(Debug, Args)]
pub struct SetxattrArgs {
    #[command(flatten)]
    image: ImageArgs,
    /// Path inside the image
    path: String,
    /// Full attribute name, e.g. security.capability or user.note
    name: String,
    /// The value, as text (or hex with --hex); omit with --file
    #[arg(required_unless_present = "file")]
    value: Option<String>,
    /// VALUE is hex digits (e.g. 0100000200200000)
    #[arg(long, conflicts_with = "file")]
    hex: bool,
    /// Read the value from this local file
    #[arg(long, conflicts_with = "value")]
    file: Option<PathBuf>,
}

/// Set by the first SIGINT/SIGTERM during a change; nothing polls it: the
/// change (short) completes and flushes, then the process exits 130/143.
static DEFER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Runs `change` on the image opened for writing, then flushes it. A signal
/// does not cut a change in half: it takes effect once the image is
/// consistent again (a second signal still exits at once).
fn change(
    image: &ImageArgs,
    change: impl FnOnce(&mut dyn Filesystem) -> imagegen::Result<()>,
) -> anyhow::Result<()> {
    super::check::refuse_if_inconsistent(image)?;
    crate::signals::cooperate(&DEFER, "the change in progress was completed first");
    let mut fs = open_fs(image, true)?;
    change(&mut *fs).map_err(|e| in_image(e, &image.image))?;
    fs.flush().map_err(|e| in_image(e, &image.image))?;
    Ok(())
}

pub fn put(args: PutArgs) -> anyhow::Result<()> {
    let local = &args.local;
    let mut file = std::fs::File::open(local).with_context(|| local.display().to_string())?;
    let meta = file
        .metadata()
        .with_context(|| local.display().to_string())?;
    if !meta.is_file() {
        bail!("{}: not a regular file", local.display());
    }
    let attrs = NewAttrs {
        mode: args.mode,
        uid: args.uid,
        gid: args.gid,
        mtime: None,
    };
    let mut kept = true;
    change(&args.image, |fs| {
        // Asked before the write: after it, a failure would come too late.
        let root = fs.stat("/")?;
        kept = (args.mode.is_none() || root.mode.is_some())
            && (args.uid.is_none() || root.uid.is_some())
            && (args.gid.is_none() || root.gid.is_some());
        fs.write_file(&args.path, &mut file, meta.len(), &attrs)
    })?;
    if !kept {
        notice!("nodeimg: note: this filesystem keeps no owners or permission bits; --mode/--uid/--gid were not stored");
    }
    Ok(())
}

pub fn mkdir(args: MkdirArgs) -> anyhow::Result<()> {
    change(&args.image, |fs| {
        fs.mkdir(&args.path, args.parents, &NewAttrs::default())
    })
}

pub fn rm(args: RmArgs) -> anyhow::Result<()> {
    change(&args.image, |fs| fs.remove(&args.path, args.recursive))
}

pub fn symlink(args: SymlinkArgs) -> anyhow::Result<()> {
    change(&args.image, |fs| {
        fs.symlink(&args.target, &args.path, &NewAttrs::default())
    })
}

pub fn link(args: LinkArgs) -> anyhow::Result<()> {
    change(&args.image, |fs| fs.hard_link(&args.existing, &args.new))
}

pub fn chmod(args: ChmodArgs) -> anyhow::Result<()> {
    change(&args.image, |fs| fs.set_mode(&args.path, args.mode))
}

fn parse_owner_arg(text: &str) -> Result<(Option<u32>, Option<u32>), String> {
    parse_owner(text).map_err(|e| e.to_string())
}

/// Parses `UID`, `UID:GID` or `:GID`.
fn parse_owner(text: &str) -> anyhow::Result<(Option<u32>, Option<u32>)> {
    let (uid, gid) = match text.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (text, None),
    };
    let num = |s: &str| {
        s.parse::<u32>()
            .with_context(|| format!("{text:?}: owner must be UID, UID:GID or :GID (numbers)"))
    };
    let uid = if uid.is_empty() {
        None
    } else {
        Some(num(uid)?)
    };
    let gid = gid.map(num).transpose()?;
    if uid.is_none() && gid.is_none() {
        bail!("{text:?}: owner must be UID, UID:GID or :GID (numbers)");
    }
    Ok((uid, gid))
}

pub fn chown(args: ChownArgs) -> anyhow::Result<()> {
    let (uid, gid) = args.owner;
    change(&args.image, |fs| fs.set_owner(&args.path, uid, gid))
}

fn parse_hex(text: &str) -> anyhow::Result<Vec<u8>> {
    let digits: Vec<char> = text.trim().trim_start_matches("0x").chars().collect();
    if !digits.len().is_multiple_of(2) {
        bail!("{text:?}: hex value needs an even number of digits");
    }
    digits
        .chunks(2)
        .map(|pair| {
            let s: String = pair.iter().collect();
            u8::from_str_radix(&s, 16).with_context(|| format!("{text:?}: not hex"))
        })
        .collect()
}

pub fn setxattr(args: SetxattrArgs) -> anyhow::Result<()> {
    let value = match (&args.file, &args.value) {
        (Some(file), _) => std::fs::read(file).with_context(|| file.display().to_string())?,
        (None, Some(v)) if args.hex => {
            parse_hex(v).map_err(|e| crate::cmd::usage::usage(e.to_string()))?
        }
        (None, Some(v)) => v.as_bytes().to_vec(),
        (None, None) => return Err(crate::cmd::usage::usage("setxattr needs VALUE or --file")),
    };
    change(&args.image, |fs| {
        fs.set_xattr(&args.path, &args.name, &value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_owner_mode_and_hex() {
        assert_eq!(parse_owner("1000").unwrap(), (Some(1000), None));
        assert_eq!(parse_owner("1000:100").unwrap(), (Some(1000), Some(100)));
        assert_eq!(parse_owner(":100").unwrap(), (None, Some(100)));
        assert!(parse_owner(":").is_err());
        assert!(parse_owner("pi").is_err());
        assert_eq!(parse_mode("4755"), Ok(0o4755));
        assert!(parse_mode("9").is_err());
        assert_eq!(parse_hex("0x01ff").unwrap(), vec![1, 255]);
        assert!(parse_hex("abc").is_err());
    }
}
