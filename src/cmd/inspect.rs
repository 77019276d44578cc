//! `nodeimg inspect`: what is in an image (partition table, filesystems,
//! firmware gap). The JSON shape is documented in docs/inspect.md.

use anyhow::{Context, Result};
use clap::Args;
use imagegen::inspect::{self, FsInfo, Report};
use std::path::PathBuf;
use std::process::ExitCode;

/// Show an image's partition table and the filesystem in each partition.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Disk or filesystem image to inspect (raw, .xz, .zst or .gz; compressed
    /// images are read once, without a temporary copy).
    pub image: PathBuf,
    /// Print JSON (shape documented in docs/inspect.md) instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InspectArgs) -> Result<ExitCode> {
    let report = inspect::inspect_path(&args.image)
        .with_context(|| format!("inspecting {}", args.image.display()))?;
    let found_nothing = report.scheme == imagegen::layout::Scheme::None
        && matches!(report.filesystem, None | Some(FsInfo::Unknown));
    if found_nothing {
        anyhow::bail!(
            "{}: not a disk or filesystem image: no partition table and no known filesystem in its {} bytes",
            args.image.display(),
            report.size
        );
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!("{}", text(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// Sizes for people, as everywhere in nodeimg.
fn human(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

fn text(r: &Report) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let stored = if r.compression.is_compressed() {
        format!("{}, {} compressed, ", r.compression, human(r.file_size))
    } else {
        String::new()
    };
    let _ = writeln!(
        o,
        "image:      {} ({stored}{} bytes, {})",
        r.image,
        r.size,
        human(r.size)
    );
    let _ = write!(o, "table:      {}", r.scheme);
    if let Some(id) = &r.disk_id {
        let _ = write!(o, ", disk id {id}");
    }
    o.push('\n');
    if r.scheme != imagegen::layout::Scheme::None {
        let _ = writeln!(
            o,
            "boot code:  {}",
            if r.boot_code {
                "present"
            } else {
                "none (zeros)"
            }
        );
    }
    if let Some(g) = &r.gap {
        let what = match g.first_nonzero {
            Some(at) => format!("holds data (first non-zero byte at {at}), likely firmware"),
            None => "all zeros".into(),
        };
        let _ = writeln!(
            o,
            "gap:        bytes {}..{} ({}): {what}",
            g.start,
            g.end,
            human(g.end - g.start)
        );
    }
    for p in &r.partitions {
        let _ = write!(
            o,
            "partition {}: bytes {}..{} ({}), type {}",
            p.number,
            p.start,
            p.start + p.size,
            human(p.size),
            p.kind
        );
        if let Some(n) = p.type_name {
            let _ = write!(o, " ({n})");
        }
        if p.bootable {
            o.push_str(", bootable");
        }
        if let Some(n) = &p.name {
            let _ = write!(o, ", name {n:?}");
        }
        if let Some(g) = &p.guid {
            let _ = write!(o, ", guid {g}");
        }
        o.push('\n');
        let _ = writeln!(o, "  {}", fs_line(&p.filesystem));
    }
    if let Some(fs) = &r.filesystem {
        let _ = writeln!(o, "filesystem: {}", fs_line(fs));
    }
    o
}

fn fs_line(fs: &FsInfo) -> String {
    match fs {
        FsInfo::Fat(f) => format!(
            "{} {}, id {}, {} in {}-byte clusters, {} free",
            f.fat_type,
            f.label
                .as_deref()
                .map_or("(no label)".into(), |l| format!("{l:?}")),
            f.volume_id,
            human(f.size),
            f.cluster_size,
            human(f.free)
        ),
        FsInfo::Ext(e) => format!(
            "{} {}, uuid {}, {} blocks of {} bytes ({}), {} free, {}; features: {}{}",
            e.version,
            e.label
                .as_deref()
                .map_or("(no label)".into(), |l| format!("{l:?}")),
            e.uuid,
            e.blocks,
            e.block_size,
            human(e.blocks * e.block_size),
            human(e.free_blocks * e.block_size),
            if e.clean { "clean" } else { "not clean" },
            e.features.join(" "),
            e.changes_refused
                .as_deref()
                .map_or(String::new(), |why| format!(
                    "; nodeimg will not change it: {why}"
                ))
        ),
        FsInfo::Extended => "extended partition (holds the logical partitions)".into(),
        FsInfo::Unknown => "unknown contents".into(),
    }
}
