//! The verbs that only read: `ls`, `cat`, `stat`, `getxattr`.

use super::image::{in_image, open_fs, ImageArgs};
use anyhow::bail;
use clap::Args;
use imagegen::fs::{FileKind, Stat, Timestamp};
use serde::Serialize;
use std::io::{self, BufWriter, Write};

#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    image: ImageArgs,
    /// Directory inside the image
    #[arg(default_value = "/")]
    path: String,
    /// Print a JSON array of {name, kind, size} (plus mtime with -l)
    #[arg(long)]
    json: bool,
    /// Long format: kind, size, modification time, name
    #[arg(short = 'l')]
    long: bool,
}

#[derive(Debug, Args)]
pub struct CatArgs {
    #[command(flatten)]
    image: ImageArgs,
    /// File inside the image
    path: String,
}

#[derive(Debug, Args)]
pub struct StatArgs {
    #[command(flatten)]
    image: ImageArgs,
    /// Path inside the image
    path: String,
    /// Print the full record as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct GetxattrArgs {
    #[command(flatten)]
    image: ImageArgs,
    /// Path inside the image
    path: String,
    /// Full attribute name, e.g. security.capability
    name: String,
    /// Print the value as hex instead of raw bytes
    #[arg(long)]
    hex: bool,
}

/// One `ls` line.
#[derive(Debug, Serialize)]
struct LsEntry {
    name: String,
    kind: FileKind,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtime: Option<Timestamp>,
}

fn kind_char(kind: FileKind) -> char {
    match kind {
        FileKind::File => '-',
        FileKind::Dir => 'd',
        FileKind::Symlink => 'l',
        FileKind::CharDevice => 'c',
        FileKind::BlockDevice => 'b',
        FileKind::Fifo => 'p',
        FileKind::Socket => 's',
    }
}

fn kind_name(kind: FileKind) -> &'static str {
    match kind {
        FileKind::File => "file",
        FileKind::Dir => "dir",
        FileKind::Symlink => "symlink",
        FileKind::CharDevice => "chardevice",
        FileKind::BlockDevice => "blockdevice",
        FileKind::Fifo => "fifo",
        FileKind::Socket => "socket",
    }
}

fn child(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

pub fn ls(args: LsArgs) -> anyhow::Result<()> {
    let fs = open_fs(&args.image, false)?;
    let img = &args.image.image;
    let top = fs.stat(&args.path).map_err(|e| in_image(e, img))?;
    let mut entries: Vec<LsEntry> = if top.kind == FileKind::Dir {
        fs.list(&args.path)
            .map_err(|e| in_image(e, img))?
            .into_iter()
            .map(|e| LsEntry {
                name: e.name,
                kind: e.kind,
                size: e.size,
                mtime: None,
            })
            .collect()
    } else {
        let name = args.path.rsplit('/').next().unwrap_or_default().to_string();
        vec![LsEntry {
            name,
            kind: top.kind,
            size: top.size,
            mtime: top.mtime,
        }]
    };
    if args.long && top.kind == FileKind::Dir {
        for e in &mut entries {
            let path = child(&args.path, &e.name);
            e.mtime = fs.stat(&path).map_err(|e| in_image(e, img))?.mtime;
        }
    } else if !args.long {
        for e in &mut entries {
            e.mtime = None;
        }
    }
    let mut out = BufWriter::new(io::stdout().lock());
    if args.json {
        serde_json::to_writer_pretty(&mut out, &entries)?;
        writeln!(out)?;
    } else {
        for e in &entries {
            if args.long {
                let mtime = e.mtime.map_or_else(|| "-".into(), |t| t.to_string());
                writeln!(
                    out,
                    "{} {:>12} {:<20} {}",
                    kind_char(e.kind),
                    e.size,
                    mtime,
                    e.name
                )?;
            } else {
                writeln!(out, "{}", e.name)?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

pub fn cat(args: CatArgs) -> anyhow::Result<()> {
    let fs = open_fs(&args.image, false)?;
    let mut out = BufWriter::new(io::stdout().lock());
    fs.read_file(&args.path, &mut out)
        .map_err(|e| in_image(e, &args.image.image))?;
    out.flush()?;
    Ok(())
}

fn print_stat(out: &mut dyn Write, path: &str, st: &Stat) -> io::Result<()> {
    writeln!(out, "path: {path}")?;
    writeln!(out, "kind: {}", kind_name(st.kind))?;
    writeln!(out, "size: {}", st.size)?;
    if let Some(mode) = st.mode {
        writeln!(out, "mode: {mode:04o}")?;
    }
    for (name, v) in [("uid", st.uid), ("gid", st.gid), ("nlink", st.nlink)] {
        if let Some(v) = v {
            writeln!(out, "{name}: {v}")?;
        }
    }
    if let Some(ino) = st.ino {
        writeln!(out, "ino: {ino}")?;
    }
    for (name, t) in [
        ("atime", st.atime),
        ("mtime", st.mtime),
        ("ctime", st.ctime),
        ("crtime", st.crtime),
    ] {
        if let Some(t) = t {
            writeln!(out, "{name}: {t}")?;
        }
    }
    if let Some(target) = &st.link_target {
        writeln!(out, "target: {target}")?;
    }
    if !st.flags.is_empty() {
        writeln!(out, "flags: {}", st.flags.join(" "))?;
    }
    for (name, value) in &st.xattrs {
        writeln!(
            out,
            "xattr: {name}={}",
            String::from_utf8_lossy(value).escape_debug()
        )?;
    }
    if !st.extents.is_empty() {
        let runs: Vec<String> = st
            .extents
            .iter()
            .map(|e| {
                format!(
                    "{}+{}{}",
                    e.physical,
                    e.len,
                    if e.uninit { "u" } else { "" }
                )
            })
            .collect();
        writeln!(out, "extents: {}", runs.join(" "))?;
    }
    Ok(())
}

pub fn stat(args: StatArgs) -> anyhow::Result<()> {
    let fs = open_fs(&args.image, false)?;
    let st = fs
        .stat(&args.path)
        .map_err(|e| in_image(e, &args.image.image))?;
    let mut out = BufWriter::new(io::stdout().lock());
    if args.json {
        serde_json::to_writer_pretty(&mut out, &st)?;
        writeln!(out)?;
    } else {
        print_stat(&mut out, &args.path, &st)?;
    }
    out.flush()?;
    Ok(())
}

pub fn getxattr(args: GetxattrArgs) -> anyhow::Result<()> {
    let fs = open_fs(&args.image, false)?;
    let img = &args.image.image;
    let value = fs
        .get_xattr(&args.path, &args.name)
        .map_err(|e| in_image(e, img))?;
    let Some(value) = value else {
        bail!(
            "{}: {}: no attribute {}",
            img.display(),
            args.path,
            args.name
        );
    };
    let mut out = io::stdout().lock();
    if args.hex {
        let hex = imagegen::source::to_hex(&value);
        writeln!(out, "{hex}")?;
    } else {
        out.write_all(&value)?;
    }
    out.flush()?;
    Ok(())
}
