//! The template language: GNU `envsubst` with a SHELL-FORMAT, exactly.
//!
//! `envsubst '$A $B'` replaces `$A`, `${A}`, `$B` and `${B}` and copies
//! every other byte unchanged: `$1`, `$$`, `$other`, `${A:-x}`, `${A`
//! (unclosed) and a lone `$` all survive. A name is the longest run of
//! `[A-Za-z0-9_]` after the `$`, starting with a letter or `_`, so `$AB`
//! is the variable `AB`, never `A` followed by `B`. There is no escape
//! character: a shell script keeps its own variables by not naming a
//! declared one (scripts use lower-case names).
//!
//! Where `envsubst` would print an empty string for a declared variable that
//! is not set, we refuse instead, naming the template and the variable.

use std::collections::BTreeSet;

/// One reference to a declared variable in a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reference<'t> {
    pub name: &'t str,
    /// Byte range of the whole reference (`$NAME` or `${NAME}`).
    pub start: usize,
    pub end: usize,
}

/// Every reference in `text` to a name for which `declared` is true, in
/// order, as `envsubst SHELL-FORMAT` finds them.
pub(crate) fn references<'t>(text: &'t str, declared: impl Fn(&str) -> bool) -> Vec<Reference<'t>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        let braced = bytes.get(i + 1) == Some(&b'{');
        let name_start = if braced { i + 2 } else { i + 1 };
        let name_end = name_end(bytes, name_start);
        let closed = !braced || bytes.get(name_end) == Some(&b'}');
        if name_end > name_start && closed {
            let name = &text[name_start..name_end];
            let end = if braced { name_end + 1 } else { name_end };
            if declared(name) {
                out.push(Reference {
                    name,
                    start: i,
                    end,
                });
                i = end;
                continue;
            }
        }
        // Not a reference to a declared variable: the `$` is copied and
        // scanning resumes right after it, as envsubst does (`$$A` is `$`
        // followed by the reference `$A`).
        i += 1;
    }
    out
}

/// End of the name starting at `start` (== `start` when there is none).
fn name_end(bytes: &[u8], start: usize) -> usize {
    match bytes.get(start) {
        Some(b) if b.is_ascii_alphabetic() || *b == b'_' => {}
        _ => return start,
    }
    let mut end = start + 1;
    while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
        end += 1;
    }
    end
}

/// Replaces every reference to a declared name by `value(name)`; the first
/// name `value` has no answer for is returned as the error.
pub(crate) fn substitute<'t, 'v>(
    text: &'t str,
    declared: impl Fn(&str) -> bool,
    value: impl Fn(&str) -> Option<&'v str>,
) -> Result<(String, BTreeSet<&'t str>), &'t str> {
    let refs = references(text, declared);
    let mut out = String::with_capacity(text.len());
    let mut used = BTreeSet::new();
    let mut at = 0;
    for r in refs {
        let v = value(r.name).ok_or(r.name)?;
        out.push_str(&text[at..r.start]);
        out.push_str(v);
        used.insert(r.name);
        at = r.end;
    }
    out.push_str(&text[at..]);
    Ok((out, used))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(text: &str) -> String {
        let value = |n: &str| match n {
            "A" => Some("x"),
            "AB" => Some("yy"),
            _ => None,
        };
        substitute(text, |n| n == "A" || n == "AB", value)
            .expect("both declared names are set")
            .0
    }

    #[test]
    fn matches_envsubst_with_a_shell_format() {
        // Each pair was checked against `A=x AB=yy envsubst '$A $AB'`.
        let cases = [
            ("$A", "x"),
            ("${A}", "x"),
            ("$AB", "yy"),
            ("${AB}c", "yyc"),
            ("$ABC", "$ABC"),
            ("$A-b", "x-b"),
            ("$$A", "$x"),
            ("$$", "$$"),
            ("$", "$"),
            ("a$", "a$"),
            ("${A", "${A"),
            ("${A:-d}", "${A:-d}"),
            ("${ A}", "${ A}"),
            ("$1 $@ $other ${other}", "$1 $@ $other ${other}"),
            ("\\$A", "\\x"),
            ("'$A'", "'x'"),
            ("${}", "${}"),
            ("$_A", "$_A"),
            ("é$Aé", "éxé"),
        ];
        for (input, want) in cases {
            assert_eq!(render(input), want, "input {input:?}");
        }
    }

    #[test]
    fn an_unset_declared_name_is_returned() {
        let r = substitute(
            "a ${A} b $B",
            |n| n == "A" || n == "B",
            |n| (n == "A").then_some("1"),
        );
        assert_eq!(r, Err("B"));
        let (text, used) = substitute("a ${A} b $C", |n| n == "A", |_| Some("1")).expect("renders");
        assert_eq!(text, "a 1 b $C");
        assert_eq!(used.into_iter().collect::<Vec<_>>(), vec!["A"]);
    }
}
