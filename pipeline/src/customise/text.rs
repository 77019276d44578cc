//! Text edits: line edits of configuration files, the kernel command line,
//! and the `*`/`?`/`[…]` globs of `RemoveGlob`.

use super::LineEdit;
use crate::{Error, Result};

/// Applies a line edit to `text`. Untouched lines keep their bytes; a file
/// that had a final newline keeps it, and appended lines end with one.
pub fn edit_lines(path: &str, text: &str, edit: &LineEdit) -> Result<String> {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    match edit {
        LineEdit::Set { prefix, line } => {
            check_line(path, line)?;
            let mut found = false;
            for l in lines.iter_mut() {
                if l.starts_with(prefix.as_str()) {
                    *l = line.clone();
                    found = true;
                }
            }
            if !found {
                lines.push(line.clone());
            }
        }
        LineEdit::Ensure { line } => {
            check_line(path, line)?;
            if !lines.iter().any(|l| l == line) {
                lines.push(line.clone());
            }
        }
        LineEdit::RemoveMatching { regex } => {
            let re = regex::Regex::new(regex).map_err(|e| {
                Error::refused(
                    format!("edit of {path}"),
                    format!("bad regular expression {regex:?}: {e}"),
                )
            })?;
            lines.retain(|l| !re.is_match(l));
        }
    }
    let mut out = lines.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    Ok(out)
}

fn check_line(path: &str, line: &str) -> Result<()> {
    if line.contains('\n') || line.contains('\r') {
        return Err(Error::refused(
            format!("edit of {path}"),
            "a line to set must not contain a line break",
        ));
    }
    Ok(())
}

/// Edits a kernel command line (the words of one line): each word of
/// `remove` takes away the words equal to it and, when it has no `=`, the
/// words `remove=…`; then each word of `append` is added unless present.
/// To change a value, remove the key and append `key=value`.
pub fn edit_cmdline(line: &str, append: &[String], remove: &[String]) -> String {
    let mut words: Vec<&str> = line.split_whitespace().collect();
    words.retain(|w| {
        !remove.iter().any(|r| {
            w == r
                || (!r.contains('=')
                    && w.strip_prefix(r.as_str())
                        .is_some_and(|rest| rest.starts_with('=')))
        })
    });
    for a in append {
        if !words.contains(&a.as_str()) {
            words.push(a);
        }
    }
    words.join(" ")
}

/// Checks words given for the command line: no whitespace inside a word.
pub fn check_cmdline_words(words: &[String]) -> Result<()> {
    for w in words {
        if w.is_empty() || w.chars().any(char::is_whitespace) {
            return Err(Error::refused(
                format!("kernel command line word {w:?}"),
                "must be one non-empty word without spaces",
            ));
        }
    }
    Ok(())
}

/// Edits `cmdline.txt`: the first non-empty line is the command line (the
/// Raspberry Pi firmware reads only that); the result is that one line and
/// a newline, followed by any further lines as they were.
pub fn edit_cmdline_txt(text: &str, append: &[String], remove: &[String]) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    let idx = lines.iter().position(|l| !l.trim().is_empty());
    let edited;
    match idx {
        Some(i) => {
            edited = edit_cmdline(lines[i], append, remove);
            lines[i] = &edited;
        }
        None => {
            edited = edit_cmdline("", append, remove);
            lines = vec![&edited];
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// Edits every `APPEND` line of an extlinux.conf; other lines unchanged.
/// Returns `None` when the file has no `APPEND` line.
pub fn edit_extlinux(text: &str, append: &[String], remove: &[String]) -> Option<String> {
    let mut found = false;
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let (kw, rest) = trimmed
            .split_once(char::is_whitespace)
            .unwrap_or((trimmed, ""));
        if kw.eq_ignore_ascii_case("APPEND") {
            found = true;
            out.push_str(indent);
            out.push_str(kw);
            out.push(' ');
            out.push_str(&edit_cmdline(rest, append, remove));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    found.then_some(out)
}

/// Shell-style glob match of one file name: `*`, `?`, `[abc]`, `[a-z]`,
/// `[!x]`.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn m(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| m(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && m(&p[1..], &n[1..]),
            Some('[') => {
                let Some(close) = p.iter().skip(2).position(|&c| c == ']').map(|i| i + 2) else {
                    return n.first() == Some(&'[') && m(&p[1..], &n[1..]);
                };
                let Some(&c) = n.first() else { return false };
                let mut set = &p[1..close];
                let negate = matches!(set.first(), Some('!') | Some('^'));
                if negate {
                    set = &set[1..];
                }
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == '-' {
                        hit |= set[i] <= c && c <= set[i + 2];
                        i += 3;
                    } else {
                        hit |= set[i] == c;
                        i += 1;
                    }
                }
                hit != negate && m(&p[close + 1..], &n[1..])
            }
            Some(&c) => n.first() == Some(&c) && m(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    m(&p, &n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn line_edits() {
        let hosts = "127.0.0.1\tlocalhost\n127.0.1.1\t\traspberrypi\n";
        let set = LineEdit::Set {
            prefix: "127.0.1.1".into(),
            line: "127.0.1.1\tnode1".into(),
        };
        assert_eq!(
            edit_lines("/etc/hosts", hosts, &set).unwrap(),
            "127.0.0.1\tlocalhost\n127.0.1.1\tnode1\n"
        );
        assert_eq!(
            edit_lines("/x", "a", &set).unwrap(),
            "a\n127.0.1.1\tnode1\n"
        );
        let ensure = LineEdit::Ensure { line: "b".into() };
        assert_eq!(edit_lines("/x", "a\nb\n", &ensure).unwrap(), "a\nb\n");
        let rm = LineEdit::RemoveMatching {
            regex: r"^\S+\s+\S+\s+swap\s".into(),
        };
        assert_eq!(
            edit_lines(
                "/etc/fstab",
                "/a / ext4 d 0 1\n/swapfile none swap sw 0 0\n",
                &rm
            )
            .unwrap(),
            "/a / ext4 d 0 1\n"
        );
        let bad = LineEdit::RemoveMatching { regex: "(".into() };
        assert!(edit_lines("/x", "", &bad).is_err());
    }

    #[test]
    fn cmdline_words() {
        let line = "console=serial0,115200 console=tty1 root=PARTUUID=8a438930-02 quiet";
        assert_eq!(
            edit_cmdline(
                line,
                &s(&["cgroup_memory=1", "quiet"]),
                &s(&["console", "root=PARTUUID=8a438930-02"])
            ),
            "quiet cgroup_memory=1"
        );
        assert_eq!(edit_cmdline_txt("a b\n", &s(&["c"]), &[]), "a b c\n");
        let ext = "LABEL x\n  APPEND init=/x loglevel=4\n  FDTDIR y\n";
        assert_eq!(
            edit_extlinux(ext, &s(&["a=1"]), &s(&["loglevel"])).unwrap(),
            "LABEL x\n  APPEND init=/x a=1\n  FDTDIR y\n"
        );
        assert!(edit_extlinux("LABEL x\n", &[], &[]).is_none());
    }

    #[test]
    fn globs() {
        assert!(glob_match("ssh_host_*", "ssh_host_rsa_key.pub"));
        assert!(!glob_match("ssh_host_*", "sshd_config"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("[a-c]x", "bx"));
        assert!(!glob_match("[!a-c]x", "bx"));
        assert!(glob_match("*", ""));
    }

    proptest::proptest! {
        #[test]
        fn cmdline_txt_stays_one_line(
            text in "[ -~\n]{0,200}",
            append in proptest::collection::vec("[!-~]{1,12}", 0..4),
            remove in proptest::collection::vec("[!-~]{1,12}", 0..4),
        ) {
            let first_is_line = text.lines().any(|l| !l.trim().is_empty());
            let out = edit_cmdline_txt(&text, &append, &remove);
            let edited = out.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            for a in &append {
                proptest::prop_assert!(edited.split(' ').any(|w| w == a));
            }
            proptest::prop_assert!(out.ends_with('\n'));
            if !first_is_line {
                proptest::prop_assert_eq!(out.lines().count(), 1);
            }
        }

        #[test]
        fn edits_never_panic(text in "\\PC{0,300}", prefix in "\\PC{0,5}", pat in "\\PC{0,8}") {
            let _ = edit_lines("/x", &text, &LineEdit::Set { prefix: prefix.clone(), line: "l".into() });
            let _ = edit_lines("/x", &text, &LineEdit::RemoveMatching { regex: pat.clone() });
            let _ = edit_extlinux(&text, &["a".into()], &["b".into()]);
            let _ = glob_match(&pat, &prefix);
        }
    }
}
