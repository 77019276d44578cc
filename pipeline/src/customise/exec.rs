//! The executor: [`OsImage::apply`] plans every operation against the
//! [`Staged`] view (where every refusal happens), then writes.

use super::staged::{Action, Staged};
use super::text::{check_cmdline_words, edit_cmdline_txt, edit_extlinux, edit_lines, glob_match};
use super::{Applied, LineEdit, Op};
use crate::osimage::{Node, OsImage};
use crate::{systemd, Error, Result};
use imagegen::fs::NewAttrs;

/// Where the Raspberry Pi firmware reads the kernel command line.
const CMDLINE_TXT: &[&str] = &["/boot/firmware/cmdline.txt", "/boot/cmdline.txt"];
/// Where U-Boot's distro boot reads it (NixOS sd-images, Tow-Boot boards).
const EXTLINUX: &[&str] = &["/boot/extlinux/extlinux.conf", "/extlinux/extlinux.conf"];

impl OsImage {
    /// Executes `ops` in order. Everything that can refuse is checked first,
    /// against the image as the earlier ops will leave it, so a refused
    /// list changes nothing. Returns what was written (never contents).
    ///
    /// Only a failure of the device or filesystem itself while writing (no
    /// space left, an I/O error) can stop a list halfway; stamping works on
    /// an overlay, where such a failure leaves the base untouched.
    pub fn apply(&mut self, ops: &[Op]) -> Result<Vec<Applied>> {
        let mut applied = Vec::new();
        let actions = {
            let mut st = Staged::new(self);
            for op in ops {
                plan(&mut st, op, &mut applied)?;
            }
            st.actions
        };
        self.execute(actions)?;
        Ok(applied)
    }

    fn execute(&mut self, actions: Vec<Action>) -> Result<()> {
        for action in actions {
            let path = match &action {
                Action::Write { path, .. }
                | Action::Mkdir { path, .. }
                | Action::SetAttrs { path, .. }
                | Action::Symlink { path, .. }
                | Action::Remove { path } => path.clone(),
            };
            let (m, inner) = self.route(&path);
            let fs = &mut self.mounts[m].fs;
            let done = match action {
                Action::Write { data, attrs, .. } => {
                    fs.write_file(&inner, &mut data.as_slice(), data.len() as u64, &attrs)
                }
                Action::Mkdir { attrs, .. } => fs.mkdir(&inner, false, &attrs),
                Action::SetAttrs { mode, uid, gid, .. } => fs
                    .set_mode(&inner, mode & 0o7777)
                    .and_then(|()| fs.set_owner(&inner, Some(uid), Some(gid))),
                Action::Symlink { target, .. } => fs.symlink(&target, &inner, &NewAttrs::default()),
                Action::Remove { .. } => fs.remove(&inner, true),
            };
            done.map_err(|e| Error::at(path, e))?;
        }
        Ok(())
    }
}

fn record(action: &'static str, path: &str) -> Applied {
    Applied {
        action,
        path: path.to_string(),
        mode: None,
        uid: None,
        gid: None,
        secret: false,
    }
}

/// Plans one operation; see [`crate::customise`] for what each does.
fn plan(st: &mut Staged, op: &Op, applied: &mut Vec<Applied>) -> Result<()> {
    match op {
        Op::File {
            path,
            data,
            mode,
            uid,
            gid,
            secret,
        } => {
            if *secret && mode & 0o077 != 0 {
                return Err(Error::refused(
                    path,
                    format!(
                        "a secret file must not be readable by group or others (mode {mode:04o})"
                    ),
                ));
            }
            let canon = st.resolve(path, false)?;
            st.ensure_parents(&canon)?;
            st.write(&canon, data.clone(), *mode, *uid, *gid)?;
            applied.push(Applied {
                mode: Some(*mode),
                uid: Some(*uid),
                gid: Some(*gid),
                secret: *secret,
                ..record("file", path)
            });
        }
        Op::Dir {
            path,
            mode,
            uid,
            gid,
        } => {
            let canon = st.resolve(path, true)?;
            match st.node(&canon)? {
                None => {
                    st.ensure_parents(&canon)?;
                    st.mkdir(&canon, *mode, *uid, *gid)?;
                }
                Some(Node::Dir) => st.set_dir_attrs(&canon, *mode, *uid, *gid),
                Some(_) => return Err(Error::refused(path, "exists and is not a directory")),
            }
            applied.push(Applied {
                mode: Some(*mode),
                uid: Some(*uid),
                gid: Some(*gid),
                ..record("dir", path)
            });
        }
        Op::Symlink { path, target } => {
            if target.is_empty() || target.contains('\0') {
                return Err(Error::refused(path, "a symlink needs a target"));
            }
            let canon = st.resolve(path, false)?;
            st.ensure_parents(&canon)?;
            st.symlink(&canon, target)?;
            applied.push(record("symlink", path));
        }
        Op::Remove { path } => {
            let canon = st.resolve(path, false)?;
            if st.node(&canon)?.is_some() {
                st.remove(&canon)?;
                applied.push(record("remove", path));
            }
        }
        Op::RemoveGlob { dir, pattern } => {
            if pattern.contains('/') || pattern.is_empty() {
                return Err(Error::refused(
                    format!("{dir}/{pattern}"),
                    "a glob matches names inside one directory",
                ));
            }
            let canon = st.resolve(dir, true)?;
            for e in st.list(&canon)? {
                if glob_match(pattern, &e.name) {
                    let p = format!("{}/{}", canon.trim_end_matches('/'), e.name);
                    st.remove(&p)?;
                    applied.push(record("remove", &p));
                }
            }
        }
        Op::Enable { unit } => {
            systemd::enable(st, unit)?;
            applied.push(record("enable", unit));
        }
        Op::Disable { unit } => {
            let names = systemd::disable(st, unit)?;
            applied.push(record("disable", unit));
            if st.image.profile().first_boot() {
                for n in names {
                    systemd::mask(st, &n)?;
                    applied.push(record("mask", &n));
                }
            }
        }
        Op::Mask { unit } => {
            systemd::mask(st, unit)?;
            applied.push(record("mask", unit));
        }
        Op::Cmdline { append, remove } => {
            check_cmdline_words(append)?;
            check_cmdline_words(remove)?;
            let path = cmdline(st, append, remove)?;
            applied.push(record("cmdline", &path));
        }
        Op::Edit { path, edit } => {
            let canon = st.resolve(path, true)?;
            let Some(old) = st.read(&canon)? else {
                if matches!(edit, LineEdit::RemoveMatching { .. }) {
                    return Ok(());
                }
                return Err(Error::refused(path, "cannot edit: no such file"));
            };
            let text = String::from_utf8(old)
                .map_err(|_| Error::refused(path, "cannot edit: not UTF-8 text"))?;
            let new = edit_lines(path, &text, edit)?;
            if new != text {
                let (mode, uid, gid) = st.file_attrs(&canon)?;
                st.write(&canon, new.into_bytes(), mode, uid, gid)?;
            }
            applied.push(record("edit", path));
        }
    }
    Ok(())
}

/// Edits the kernel command line where this OS keeps it; returns the path.
fn cmdline(st: &mut Staged, append: &[String], remove: &[String]) -> Result<String> {
    let find = |st: &Staged, list: &[&str]| -> Result<Option<(String, String)>> {
        for p in list {
            let canon = st.resolve(p, true)?;
            if let Some(Node::File { .. }) = st.node(&canon)? {
                return Ok(Some((p.to_string(), canon)));
            }
        }
        Ok(None)
    };
    let txt = find(st, CMDLINE_TXT)?;
    let ext = find(st, EXTLINUX)?;
    let nixos = matches!(st.image.profile(), crate::os::OsProfile::NixOs { .. });
    let (path, canon, extlinux) = match (txt, ext) {
        (_, Some((p, c))) if nixos => (p, c, true),
        (Some((p, c)), _) => (p, c, false),
        (None, Some((p, c))) => (p, c, true),
        (None, None) => {
            return Err(Error::refused(
                "kernel command line",
                format!(
                    "none found: no {} and no {}",
                    CMDLINE_TXT.join(" or "),
                    EXTLINUX.join(" or ")
                ),
            ))
        }
    };
    let old = st.read(&canon)?.unwrap_or_default();
    let text = String::from_utf8(old).map_err(|_| Error::refused(&path, "not UTF-8 text"))?;
    let new = if extlinux {
        edit_extlinux(&text, append, remove)
            .ok_or_else(|| Error::refused(&path, "has no APPEND line to edit"))?
    } else {
        edit_cmdline_txt(&text, append, remove)
    };
    if new != text {
        let (mode, uid, gid) = st.file_attrs(&canon)?;
        st.write(&canon, new.into_bytes(), mode, uid, gid)?;
    }
    Ok(path)
}
