//! The operations the suite applies to images, printable so that a failing
//! random sequence can be replayed from its log.

use super::model::{Content, Model};
use super::oracle::run;
use imagegen::fs::{Filesystem, NewAttrs};
use std::fmt;
use std::path::Path;
use std::process::Command;

/// One change to a filesystem, in the vocabulary of the `Filesystem` trait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        path: String,
        data: Vec<u8>,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
    },
    Mkdir {
        path: String,
        parents: bool,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
    },
    Symlink {
        target: String,
        path: String,
        uid: Option<u32>,
        gid: Option<u32>,
    },
    Link {
        existing: String,
        new: String,
    },
    Rm {
        path: String,
        recursive: bool,
    },
    Chmod {
        path: String,
        mode: u32,
    },
    Chown {
        path: String,
        uid: Option<u32>,
        gid: Option<u32>,
    },
    SetXattr {
        path: String,
        name: String,
        value: Vec<u8>,
    },
    RmXattr {
        path: String,
        name: String,
    },
}

/// The security.capability value of `setcap cap_net_bind_service=ep`
/// (version 2, permitted bit 10, effective flag).
pub fn cap_net_bind_service() -> Vec<u8> {
    let mut v = vec![0u8; 20];
    v[0..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
    v[4..8].copy_from_slice(&(1u32 << 10).to_le_bytes());
    v
}

fn opt(v: Option<u32>, octal: bool) -> String {
    match (v, octal) {
        (Some(v), true) => format!("{v:o}"),
        (Some(v), false) => v.to_string(),
        (None, _) => "-".into(),
    }
}

/// A short fingerprint of file contents for logs (FNV-1a, not a security hash).
pub fn fingerprint(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Put {
                path,
                data,
                mode,
                uid,
                gid,
            } => write!(
                f,
                "put {path} ({} bytes, fnv {:016x}) mode={} uid={} gid={}",
                data.len(),
                fingerprint(data),
                opt(*mode, true),
                opt(*uid, false),
                opt(*gid, false)
            ),
            Op::Mkdir {
                path,
                parents,
                mode,
                uid,
                gid,
            } => write!(
                f,
                "mkdir{} {path} mode={} uid={} gid={}",
                if *parents { " -p" } else { "" },
                opt(*mode, true),
                opt(*uid, false),
                opt(*gid, false)
            ),
            Op::Symlink {
                target,
                path,
                uid,
                gid,
            } => write!(
                f,
                "symlink {target:?} {path} uid={} gid={}",
                opt(*uid, false),
                opt(*gid, false)
            ),
            Op::Link { existing, new } => write!(f, "link {existing} {new}"),
            Op::Rm { path, recursive } => {
                write!(f, "rm{} {path}", if *recursive { " -r" } else { "" })
            }
            Op::Chmod { path, mode } => write!(f, "chmod {mode:o} {path}"),
            Op::Chown { path, uid, gid } => {
                write!(f, "chown {}:{} {path}", opt(*uid, false), opt(*gid, false))
            }
            Op::SetXattr { path, name, value } => {
                write!(f, "setxattr {path} {name} ({} bytes)", value.len())
            }
            Op::RmXattr { path, name } => write!(f, "rmxattr {path} {name}"),
        }
    }
}

impl Op {
    /// The path this operation creates or changes (for targeted oracle checks).
    pub fn path(&self) -> &str {
        match self {
            Op::Put { path, .. }
            | Op::Mkdir { path, .. }
            | Op::Symlink { path, .. }
            | Op::Rm { path, .. }
            | Op::Chmod { path, .. }
            | Op::Chown { path, .. }
            | Op::SetXattr { path, .. }
            | Op::RmXattr { path, .. } => path,
            Op::Link { new, .. } => new,
        }
    }

    /// Applies the operation through the `Filesystem` trait.
    pub fn apply(&self, fs: &mut dyn Filesystem) -> imagegen::Result<()> {
        let attrs = |mode: &Option<u32>, uid: &Option<u32>, gid: &Option<u32>| NewAttrs {
            mode: *mode,
            uid: *uid,
            gid: *gid,
            mtime: None,
        };
        match self {
            Op::Put {
                path,
                data,
                mode,
                uid,
                gid,
            } => fs.write_file(
                path,
                &mut data.as_slice(),
                data.len() as u64,
                &attrs(mode, uid, gid),
            ),
            Op::Mkdir {
                path,
                parents,
                mode,
                uid,
                gid,
            } => fs.mkdir(path, *parents, &attrs(mode, uid, gid)),
            Op::Symlink {
                target,
                path,
                uid,
                gid,
            } => fs.symlink(target, path, &attrs(&None, uid, gid)),
            Op::Link { existing, new } => fs.hard_link(existing, new),
            Op::Rm { path, recursive } => fs.remove(path, *recursive),
            Op::Chmod { path, mode } => fs.set_mode(path, *mode),
            Op::Chown { path, uid, gid } => fs.set_owner(path, *uid, *gid),
            Op::SetXattr { path, name, value } => fs.set_xattr(path, name, value),
            Op::RmXattr { path, name } => fs.remove_xattr(path, name),
        }
    }
}

/// The type bits debugfs's `sif … mode` needs with the permission bits.
fn type_bits(content: &Content) -> u32 {
    match content {
        Content::File(_) => 0o100000,
        Content::Dir => 0o040000,
        Content::Symlink(_) => 0o120000,
    }
}

/// Applies an operation the model accepts with `debugfs -w` (a reference
/// writer for the harness self-check; debugfs itself checks nothing).
/// `model` is the state before the operation.
pub fn apply_with_debugfs(image: &Path, op: &Op, model: &Model) -> Result<(), String> {
    let mut after = model.clone();
    assert!(
        after.apply(op),
        "apply_with_debugfs: the model refuses {op}"
    );
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let blob = tmp.path().join("blob");
    let mut script = String::new();
    let mut line = |s: String| {
        script.push_str(&s);
        script.push('\n');
    };
    // Attributes of `path` as the model has them after the operation.
    let set_attrs = |line: &mut dyn FnMut(String), path: &str| {
        let n = after.node(path).expect("model has the path");
        line(format!(
            "sif \"{path}\" mode 0{:o}",
            type_bits(&n.content) | n.mode
        ));
        line(format!("sif \"{path}\" uid {}", n.uid));
        line(format!("sif \"{path}\" gid {}", n.gid));
    };
    match op {
        Op::Put { path, data, .. } => {
            std::fs::write(&blob, data).map_err(|e| e.to_string())?;
            // debugfs cannot rewrite an inode in place: drop every name of
            // it, write a new one and give it the old names and xattrs back.
            let names: Vec<String> = match model.entries.get(path) {
                Some(&id) => model
                    .entries
                    .iter()
                    .filter(|(_, &v)| v == id)
                    .map(|(p, _)| p.clone())
                    .collect(),
                None => Vec::new(),
            };
            for name in &names {
                line(format!("rm \"{name}\""));
            }
            line(format!("write {} \"{path}\"", blob.display()));
            for name in names.iter().filter(|n| *n != path) {
                line(format!("ln \"{path}\" \"{name}\""));
            }
            if names.len() > 1 {
                line(format!("sif \"{path}\" links_count {}", names.len()));
            }
            set_attrs(&mut line, path);
            let node = after.node(path).expect("model has the path");
            for (i, (name, value)) in node.xattrs.iter().enumerate() {
                let f = tmp.path().join(format!("xattr{i}"));
                std::fs::write(&f, value).map_err(|e| e.to_string())?;
                line(format!("ea_set -f {} \"{path}\" {name}", f.display()));
            }
        }
        Op::Mkdir { path, .. } => {
            let mut cur = String::new();
            for c in path.split('/').filter(|c| !c.is_empty()) {
                cur = format!("{cur}/{c}");
                if !model.exists(&cur) {
                    line(format!("mkdir \"{cur}\""));
                    set_attrs(&mut line, &cur);
                }
            }
        }
        Op::Symlink { target, path, .. } => {
            line(format!("symlink \"{path}\" \"{target}\""));
            set_attrs(&mut line, path);
        }
        Op::Link { existing, new } => {
            let id = model.entries[existing];
            line(format!("ln \"{existing}\" \"{new}\""));
            line(format!(
                "sif \"{existing}\" links_count {}",
                model.names_of(id) + 1
            ));
        }
        Op::Rm { path, .. } => {
            let mut doomed = model.below(path);
            doomed.push(path.clone());
            // Deepest first, so directories are empty when they go.
            doomed.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
            for p in doomed {
                if model.is_dir(&p) {
                    line(format!("rmdir \"{p}\""));
                } else {
                    line(format!("rm \"{p}\""));
                }
            }
        }
        Op::Chmod { path, .. } | Op::Chown { path, .. } => set_attrs(&mut line, path),
        Op::SetXattr { path, name, value } => {
            std::fs::write(&blob, value).map_err(|e| e.to_string())?;
            line(format!("ea_set -f {} \"{path}\" {name}", blob.display()));
        }
        Op::RmXattr { path, name } => line(format!("ea_rm \"{path}\" {name}")),
    }
    let script_path = tmp.path().join("script");
    std::fs::write(&script_path, &script).map_err(|e| e.to_string())?;
    let out = run(Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&script_path)
        .arg(image));
    let err: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with("debugfs "))
        .map(str::to_string)
        .collect();
    if !out.status.success() || !err.is_empty() {
        return Err(format!(
            "debugfs script:\n{script}failed: {}",
            err.join("\n")
        ));
    }
    Ok(())
}
