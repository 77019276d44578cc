//! Boards as data: partition scheme, alignment, boot partition, root label,
//! where the firmware goes and where the kernel command line lives.
//!
//! `boards/rpi5.toml` and `boards/odroid-c4.toml` are embedded in the binary;
//! a user's file of the same shape is taken by path (`--board PATH`,
//! `[cluster] board = "boards/my.toml"`). Keys:
//!
//! | key | meaning |
//! |---|---|
//! | `name`, `description` | the board's name (as in `--board NAME`) and a line for people |
//! | `scheme` | `"mbr"` (both boards: the Odroid's boot ROM reads sector 1, where a GPT header would be) |
//! | `align` | alignment of partitions nodeimg lays out itself (root trees), e.g. `"8MiB"` |
//! | `root_label` | ext4 label of a root partition nodeimg makes |
//! | `default_user` | the OS user that stage 2 gives SSH keys to by default |
//! | `[boot]` `type`, `size`, `label`, `fs`, `mount` | the FAT boot partition: MBR type byte, size, label, `fat16`/`fat32`, where the OS mounts it; absent: `/boot` lives on the root |
//! | `[firmware]` `kind = "boot-files"`, `kernel`, `required` | firmware as files in the boot partition: what must be there (`dir/` = a directory) and the default kernel (`kernel=` of `config.txt` wins) |
//! | `[firmware]` `kind = "towboot"`, `offset`, `length` (or `end`), `type` | firmware as raw bytes in the region from byte `offset`, `length` bytes long (or up to byte `end`), which no OS partition may enter, recorded as an MBR entry of `type`; a Tow-Boot disk image's own 0xF8 entry overrides the length |
//! | `[cmdline]` `kind = "cmdline-txt" \| "extlinux"`, `path`, `args` | the file holding the kernel command line; `args`: the words nodeimg writes besides `root=` when it makes that file itself (root trees) |
//!
//! An unknown key, a wrong type or an impossible layout is one
//! [`Error::Config`] naming the file and the line.

use crate::error::{Error, Result};
use crate::size::parse_size;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use toml::Spanned;

const SECTOR: u64 = 512;

/// The boards shipped in the binary: (name, TOML text).
const BUILTIN: &[(&str, &str)] = &[
    ("rpi5", include_str!("../../boards/rpi5.toml")),
    ("odroid-c4", include_str!("../../boards/odroid-c4.toml")),
];

/// Partition scheme of a board's cards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BoardScheme {
    Mbr,
}

/// FAT flavour of a boot partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BootFs {
    Fat16,
    Fat32,
}

/// The FAT partition the board's firmware reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootPart {
    /// MBR type byte (0x0c FAT32 LBA, 0x0b FAT32 CHS, 0x0e FAT16 LBA).
    pub mbr_type: u8,
    /// Size nodeimg gives it when it lays out the disk.
    pub size: u64,
    pub label: String,
    pub fs: BootFs,
    /// Where the OS mounts it, e.g. `/boot/firmware`.
    pub mount: String,
}

/// Where the board's firmware lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FirmwarePlacement {
    /// Files in the boot partition (Raspberry Pi).
    BootFiles {
        /// Kernel loaded when `config.txt` has no `kernel=`.
        kernel: String,
        /// Paths relative to the boot partition; `dir/` names a directory.
        required: Vec<String>,
    },
    /// Raw bytes in `offset..end`, covered by an MBR entry of `mbr_type`
    /// (Tow-Boot).
    Towboot { offset: u64, end: u64, mbr_type: u8 },
}

impl FirmwarePlacement {
    /// The first byte an OS partition may use (after the raw firmware).
    pub fn reserved_end(&self) -> u64 {
        match self {
            FirmwarePlacement::BootFiles { .. } => SECTOR,
            FirmwarePlacement::Towboot { end, .. } => *end,
        }
    }
}

/// Where the kernel command line lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum CmdlinePlace {
    /// A one-line `cmdline.txt` (Raspberry Pi), at this path in the OS.
    CmdlineTxt { path: String },
    /// The `APPEND` lines of U-Boot's distro-boot `extlinux.conf`.
    Extlinux { path: String },
}

impl CmdlinePlace {
    /// The path inside the OS.
    pub fn path(&self) -> &str {
        match self {
            CmdlinePlace::CmdlineTxt { path } | CmdlinePlace::Extlinux { path } => path,
        }
    }
}

/// A board definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Board {
    pub name: String,
    pub description: String,
    pub scheme: BoardScheme,
    /// Alignment of partitions nodeimg lays out, in bytes.
    pub align: u64,
    /// `None`: no firmware partition, `/boot` is on the root.
    pub boot: Option<BootPart>,
    pub root_label: String,
    pub firmware: FirmwarePlacement,
    pub cmdline: CmdlinePlace,
    /// Kernel command line words besides `root=` for a command line nodeimg
    /// writes itself (a root tree without one).
    pub cmdline_args: Vec<String>,
    pub default_user: String,
    /// The file it was read from; `None` for an embedded board.
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

impl Board {
    /// Names of the boards embedded in the binary.
    pub fn builtin_names() -> impl Iterator<Item = &'static str> {
        BUILTIN.iter().map(|(n, _)| *n)
    }

    /// An embedded board by name.
    pub fn builtin(name: &str) -> Option<Board> {
        let (n, text) = BUILTIN.iter().find(|(n, _)| *n == name)?;
        // The embedded files are tested to parse; a broken one is a build bug
        // that the `builtin_boards_parse` test catches, so None is honest here.
        Board::parse(text, Path::new(&format!("boards/{n}.toml")))
            .ok()
            .map(|mut b| {
                b.file = None;
                b
            })
    }

    /// A board file of the embedded boards' shape.
    pub fn load(path: &Path) -> Result<Board> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Board::parse(&text, path)
    }

    /// `--board`: an embedded board's name, or a path to a board file (any
    /// value containing `/` or ending in `.toml`).
    pub fn resolve(name_or_path: &str) -> Result<Board> {
        if name_or_path.contains('/') || name_or_path.ends_with(".toml") {
            return Board::load(Path::new(name_or_path));
        }
        Board::builtin(name_or_path).ok_or_else(|| {
            Error::refused(
                format!("board {name_or_path:?}"),
                format!(
                    "does not exist (known: {}; or give a path to a board file)",
                    Board::builtin_names().collect::<Vec<_>>().join(", ")
                ),
            )
        })
    }

    /// Parses board TOML; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Board> {
        let raw: RawBoard = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            Error::Config {
                file: file.to_path_buf(),
                line,
                key: "board".into(),
                why: e.message().to_string(),
            }
        })?;
        raw.check(text, file)
    }

    /// The mount point of the boot partition, when the board has one.
    pub fn boot_mount(&self) -> Option<&str> {
        self.boot.as_ref().map(|b| b.mount.as_str())
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBoard {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    scheme: Spanned<String>,
    align: Spanned<String>,
    root_label: Spanned<String>,
    default_user: Spanned<String>,
    boot: Option<RawBoot>,
    firmware: RawFirmware,
    cmdline: RawCmdline,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBoot {
    #[serde(rename = "type")]
    mbr_type: Spanned<i64>,
    size: Spanned<String>,
    label: Spanned<String>,
    fs: Spanned<String>,
    mount: Spanned<String>,
}

/// Flat rather than a tagged enum: serde buffers tagged enums and loses the
/// spans that errors need.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFirmware {
    kind: Spanned<String>,
    kernel: Option<Spanned<String>>,
    required: Option<Vec<String>>,
    offset: Option<Spanned<i64>>,
    end: Option<Spanned<String>>,
    length: Option<Spanned<String>>,
    #[serde(rename = "type")]
    mbr_type: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCmdline {
    kind: Spanned<String>,
    path: Spanned<String>,
    #[serde(default)]
    args: Vec<String>,
}

impl RawBoard {
    fn check(self, text: &str, file: &Path) -> Result<Board> {
        let err = |span: std::ops::Range<usize>, key: &str, why: String| Error::Config {
            file: file.to_path_buf(),
            line: line_of(text, span.start),
            key: key.into(),
            why,
        };
        let size = |v: &Spanned<String>, key: &str| {
            let n = parse_size(v.get_ref()).map_err(|why| err(v.span(), key, why))?;
            if n == 0 || n % SECTOR != 0 {
                return Err(err(
                    v.span(),
                    key,
                    format!("{n} bytes is not a positive multiple of {SECTOR}"),
                ));
            }
            Ok(n)
        };
        let byte = |v: &Spanned<i64>, key: &str| {
            u8::try_from(*v.get_ref())
                .ok()
                .filter(|&t| t != 0)
                .ok_or_else(|| {
                    err(
                        v.span(),
                        key,
                        format!("{} is not an MBR type byte (1-255)", v.get_ref()),
                    )
                })
        };
        let label = |v: &Spanned<String>, key: &str, max: usize| {
            let l = v.get_ref();
            if l.is_empty() || l.len() > max || !l.is_ascii() {
                return Err(err(
                    v.span(),
                    key,
                    format!("label {l:?} must be 1-{max} ASCII characters"),
                ));
            }
            Ok(l.clone())
        };

        if self.scheme.get_ref() != "mbr" {
            return Err(err(
                self.scheme.span(),
                "scheme",
                format!(
                    "{:?} is not supported (boards use \"mbr\": the Odroid's boot ROM reads sector 1, where a GPT header would be)",
                    self.scheme.get_ref()
                ),
            ));
        }
        let align = size(&self.align, "align")?;
        let root_label = label(&self.root_label, "root_label", 16)?;
        if self.name.get_ref().is_empty() {
            return Err(err(self.name.span(), "name", "must not be empty".into()));
        }
        if self.default_user.get_ref().is_empty() {
            return Err(err(
                self.default_user.span(),
                "default_user",
                "must not be empty".into(),
            ));
        }
        let boot = match &self.boot {
            None => None,
            Some(b) => {
                let fs = match b.fs.get_ref().as_str() {
                    "fat16" => BootFs::Fat16,
                    "fat32" => BootFs::Fat32,
                    other => {
                        return Err(err(
                            b.fs.span(),
                            "boot.fs",
                            format!("{other:?} is not a boot filesystem (fat16 or fat32)"),
                        ))
                    }
                };
                let bsize = size(&b.size, "boot.size")?;
                // FAT32 needs 65525 clusters; at 512-byte clusters that is 32 MiB.
                let min = match fs {
                    BootFs::Fat32 => 33 << 20,
                    BootFs::Fat16 => 1 << 20,
                };
                if bsize < min {
                    return Err(err(
                        b.size.span(),
                        "boot.size",
                        format!("{bsize} bytes is too small for {:?} (at least {min})", fs),
                    ));
                }
                if !b.mount.get_ref().starts_with('/') {
                    return Err(err(
                        b.mount.span(),
                        "boot.mount",
                        "must be an absolute path".into(),
                    ));
                }
                Some(BootPart {
                    mbr_type: byte(&b.mbr_type, "boot.type")?,
                    size: bsize,
                    label: label(&b.label, "boot.label", 11)?,
                    fs,
                    mount: b.mount.get_ref().clone(),
                })
            }
        };
        let fw = &self.firmware;
        let kind_span = fw.kind.span();
        let need = |what: &str| {
            err(
                kind_span.clone(),
                &format!("firmware.{what}"),
                format!("missing for kind {:?}", fw.kind.get_ref()),
            )
        };
        let stray = |present: bool, what: &str| {
            if present {
                Err(err(
                    kind_span.clone(),
                    &format!("firmware.{what}"),
                    format!("not a key of kind {:?}", fw.kind.get_ref()),
                ))
            } else {
                Ok(())
            }
        };
        let firmware = match fw.kind.get_ref().as_str() {
            "boot-files" => {
                stray(fw.offset.is_some(), "offset")?;
                stray(fw.end.is_some(), "end")?;
                stray(fw.length.is_some(), "length")?;
                stray(fw.mbr_type.is_some(), "type")?;
                if boot.is_none() {
                    return Err(err(
                        kind_span,
                        "firmware.kind",
                        "boot-files firmware needs a [boot] partition".into(),
                    ));
                }
                FirmwarePlacement::BootFiles {
                    kernel: fw
                        .kernel
                        .as_ref()
                        .ok_or_else(|| need("kernel"))?
                        .get_ref()
                        .clone(),
                    required: fw.required.clone().ok_or_else(|| need("required"))?,
                }
            }
            "towboot" => {
                stray(fw.kernel.is_some(), "kernel")?;
                stray(fw.required.is_some(), "required")?;
                let offset = fw.offset.as_ref().ok_or_else(|| need("offset"))?;
                let mbr_type = fw.mbr_type.as_ref().ok_or_else(|| need("type"))?;
                let off = u64::try_from(*offset.get_ref())
                    .ok()
                    .filter(|&o| o >= SECTOR && o % SECTOR == 0)
                    .ok_or_else(|| {
                        err(
                            offset.span(),
                            "firmware.offset",
                            format!(
                                "{} must be a multiple of {SECTOR} after the MBR (at least {SECTOR})",
                                offset.get_ref()
                            ),
                        )
                    })?;
                // `length` is Tow-Boot's own term (firmwarePartition.length);
                // `end` names the first byte after the region.
                let (end_at, end_span, end_key) = match (&fw.end, &fw.length) {
                    (Some(e), None) => (size(e, "firmware.end")?, e.span(), "firmware.end"),
                    (None, Some(l)) => (
                        off.saturating_add(size(l, "firmware.length")?),
                        l.span(),
                        "firmware.length",
                    ),
                    (Some(_), Some(l)) => {
                        return Err(err(
                            l.span(),
                            "firmware.length",
                            "give either end or length, not both".into(),
                        ))
                    }
                    (None, None) => return Err(need("length")),
                };
                if end_at <= off {
                    return Err(err(
                        end_span,
                        end_key,
                        format!("{end_at} is not after the offset {off}"),
                    ));
                }
                let t = byte(mbr_type, "firmware.type")?;
                // The first partition nodeimg lays out starts at `align`; it
                // must not land inside the firmware.
                if align < end_at {
                    return Err(err(
                        self.align.span(),
                        "align",
                        format!(
                            "the first partition would start at {align}, inside the firmware region {off}..{end_at}"
                        ),
                    ));
                }
                FirmwarePlacement::Towboot {
                    offset: off,
                    end: end_at,
                    mbr_type: t,
                }
            }
            other => {
                return Err(err(
                    kind_span,
                    "firmware.kind",
                    format!("{other:?} is not a firmware kind (boot-files or towboot)"),
                ))
            }
        };
        let cpath = self.cmdline.path.get_ref().clone();
        if !cpath.starts_with('/') {
            return Err(err(
                self.cmdline.path.span(),
                "cmdline.path",
                format!("{cpath:?} must be an absolute path"),
            ));
        }
        let cmdline = match self.cmdline.kind.get_ref().as_str() {
            "cmdline-txt" => CmdlinePlace::CmdlineTxt { path: cpath },
            "extlinux" => CmdlinePlace::Extlinux { path: cpath },
            other => {
                return Err(err(
                    self.cmdline.kind.span(),
                    "cmdline.kind",
                    format!("{other:?} is not a command line place (cmdline-txt or extlinux)"),
                ))
            }
        };
        Ok(Board {
            name: self.name.into_inner(),
            description: self.description,
            scheme: BoardScheme::Mbr,
            align,
            boot,
            root_label,
            firmware,
            cmdline,
            cmdline_args: self.cmdline.args,
            default_user: self.default_user.into_inner(),
            file: Some(file.to_path_buf()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_boards_parse() {
        for (name, text) in BUILTIN {
            let b = Board::parse(text, Path::new(name)).unwrap();
            assert_eq!(&b.name, name);
        }
        let pi = Board::builtin("rpi5").unwrap();
        assert_eq!(pi.boot.as_ref().unwrap().label, "bootfs");
        assert_eq!(pi.boot_mount(), Some("/boot/firmware"));
        assert_eq!(pi.align, 8 << 20);
        let c4 = Board::builtin("odroid-c4").unwrap();
        assert!(c4.boot.is_none());
        assert_eq!(
            c4.firmware,
            FirmwarePlacement::Towboot {
                offset: 512,
                end: (4 << 20) + 512,
                mbr_type: 0xf8
            }
        );
        assert_eq!(c4.firmware.reserved_end(), (4 << 20) + 512);
    }

    fn msg(text: &str) -> String {
        Board::parse(text, Path::new("my.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn unknown_key_names_file_and_line() {
        let text = BUILTIN[0]
            .1
            .replace("root_label", "colour = \"red\"\nroot_label");
        let line = text.lines().position(|l| l.starts_with("colour")).unwrap() + 1;
        let m = msg(&text);
        assert!(m.starts_with(&format!("my.toml:{line}:")), "{m}");
        assert!(m.contains("colour"), "{m}");
    }

    #[test]
    fn impossible_layouts_name_the_line() {
        let c4 = BUILTIN[1].1.replace("align = \"8MiB\"", "align = \"2MiB\"");
        let line = c4.lines().position(|l| l.starts_with("align")).unwrap() + 1;
        let m = msg(&c4);
        assert!(m.starts_with(&format!("my.toml:{line}: align:")), "{m}");
        assert!(m.contains("inside the firmware region"), "{m}");

        let pi = BUILTIN[0].1.replace("\"512MiB\"", "\"1000\"");
        assert!(msg(&pi).contains("boot.size"), "{}", msg(&pi));
        let pi = BUILTIN[0].1.replace("\"512MiB\"", "\"2MiB\"");
        assert!(msg(&pi).contains("too small"));
        let pi = BUILTIN[0].1.replace("type = 0x0c", "type = 300");
        assert!(msg(&pi).contains("boot.type"));
        let pi = BUILTIN[0].1.replace("scheme = \"mbr\"", "scheme = \"gpt\"");
        assert!(msg(&pi).contains("scheme"));
    }

    #[test]
    fn resolve_names_and_paths() {
        assert_eq!(Board::resolve("rpi5").unwrap().name, "rpi5");
        let e = Board::resolve("rpi9").unwrap_err().to_string();
        assert!(e.contains("rpi9") && e.contains("odroid-c4"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mine.toml");
        std::fs::write(&p, BUILTIN[0].1.replace("\"rpi5\"", "\"mine\"")).unwrap();
        let b = Board::resolve(p.to_str().unwrap()).unwrap();
        assert_eq!(b.name, "mine");
        assert_eq!(b.file.as_deref(), Some(p.as_path()));
    }

    #[test]
    fn damaged_board_files_are_errors_not_panics() {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        for (_, text) in BUILTIN {
            for cut in 0..text.len() {
                if text.is_char_boundary(cut) {
                    let _ = Board::parse(&text[..cut], Path::new("cut.toml"));
                }
            }
            for _ in 0..3000 {
                let mut bytes = text.as_bytes().to_vec();
                for _ in 0..3 {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let at = (state % bytes.len() as u64) as usize;
                    bytes[at] = (state >> 32) as u8;
                }
                if let Ok(t) = std::str::from_utf8(&bytes) {
                    let _ = Board::parse(t, Path::new("flip.toml"));
                }
            }
        }
    }
}
