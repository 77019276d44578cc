//! Owner maps: who owns what, for trees whose source cannot say (a
//! directory read by a user who is not root) or says it wrongly.
//!
//! # Format
//!
//! A UTF-8 text file, one rule per line:
//!
//! ```text
//! # comment; blank lines are ignored
//! /              0:0
//! /home/pi       1000:1000
//! /var/log/journal 0:101
//! ```
//!
//! Each rule is a path inside the tree (absolute, as seen in the image)
//! and a numeric `UID:GID`, separated by whitespace. A rule applies to
//! its path and everything below it; when several apply, the one with the
//! longest path wins. Paths not covered by any rule keep the owner the
//! source gave them. Paths may not contain whitespace, `.` or `..`
//! components; a path listed twice is an error. Owners are numbers only:
//! names would depend on the host's or the image's `/etc/passwd`.

use crate::fs::path_components;
use crate::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

/// Parsed owner map; see the module documentation for the format.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnerMap {
    /// Tree path (`""` = root, no leading slash) → (uid, gid).
    rules: HashMap<String, (u32, u32)>,
}

impl OwnerMap {
    /// Reads and parses an owner-map file.
    pub fn load(path: &Path) -> Result<OwnerMap> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses owner-map text; `origin` names it in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<OwnerMap> {
        let mut rules = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            let content = line.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let bad = |why: &str| {
                Error::Invalid(format!(
                    "owner map {origin}:{line_no}: {why} (expected 'PATH UID:GID', got {line:?})"
                ))
            };
            let fields: Vec<&str> = content.split_whitespace().collect();
            let [path, owner] = fields[..] else {
                return Err(bad("wrong number of fields"));
            };
            let parts = path_components(path).map_err(|e| bad(&e.to_string()))?;
            let (uid, gid) = owner
                .split_once(':')
                .ok_or_else(|| bad("owner is not UID:GID"))?;
            let uid: u32 = uid.parse().map_err(|_| bad("UID is not a number"))?;
            let gid: u32 = gid.parse().map_err(|_| bad("GID is not a number"))?;
            if rules.insert(parts.join("/"), (uid, gid)).is_some() {
                return Err(bad("path listed twice"));
            }
        }
        Ok(OwnerMap { rules })
    }

    /// Whether the map has no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The owner of tree path `path` (`""` = root, no leading slash) by the
    /// most specific rule, or `None` when no rule covers it.
    pub fn lookup(&self, path: &str) -> Option<(u32, u32)> {
        if self.rules.is_empty() {
            return None;
        }
        let mut candidate = path;
        loop {
            if let Some(owner) = self.rules.get(candidate) {
                return Some(*owner);
            }
            if candidate.is_empty() {
                return None;
            }
            candidate = candidate.rsplit_once('/').map_or("", |(parent, _)| parent);
        }
    }

    /// Rewrites the owner of `entry` by the map.
    pub fn apply(&self, entry: &mut super::Entry) {
        if let Some((uid, gid)) = self.lookup(&entry.path) {
            entry.uid = uid;
            entry.gid = gid;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_rule_wins() {
        let map = OwnerMap::parse(
            "# owners\n/ 0:0\n/home/pi 1000:1000   # the user\n\n/home/pi/.ssh 1000:2000\n",
            "t",
        )
        .unwrap();
        assert_eq!(map.lookup(""), Some((0, 0)));
        assert_eq!(map.lookup("etc/passwd"), Some((0, 0)));
        assert_eq!(map.lookup("home/pi"), Some((1000, 1000)));
        assert_eq!(map.lookup("home/pi/x/y"), Some((1000, 1000)));
        assert_eq!(
            map.lookup("home/pi/.ssh/authorized_keys"),
            Some((1000, 2000))
        );
        assert_eq!(map.lookup("home/pie"), Some((0, 0)));
        let partial = OwnerMap::parse("/srv 5:5\n", "t").unwrap();
        assert_eq!(partial.lookup("etc"), None);
        assert_eq!(partial.lookup("srv/a"), Some((5, 5)));
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        for (text, why) in [
            ("/a 1:2\n/b x:2\n", "t:2: UID is not a number"),
            ("/a 1\n", "t:1: owner is not UID:GID"),
            ("a 1:2\n", "t:1: a: paths inside an image must be absolute"),
            ("/a/../b 1:2\n", "t:1:"),
            ("/a 1:2 3\n", "t:1: wrong number of fields"),
            ("/a 1:2\n/a/ 3:4\n", "t:2: path listed twice"),
            ("/a 1:99999999999\n", "t:1: GID is not a number"),
        ] {
            let err = OwnerMap::parse(text, "t").unwrap_err().to_string();
            assert!(err.contains(why), "{err:?} lacks {why:?}");
        }
    }
}

#[cfg(test)]
mod proptests {
    use super::OwnerMap;
    use proptest::prelude::*;

    proptest! {
        /// Any text gives a map or an error, never a panic; accepted rules
        /// are found again.
        #[test]
        fn any_text_parses_or_errs(text in "(/[a-z./]{0,8} [0-9:x]{0,12}\n){0,6}") {
            if let Ok(map) = OwnerMap::parse(&text, "p") {
                for line in text.lines() {
                    if let Some((path, owner)) = line.split_once(' ') {
                        let (uid, gid) = owner.split_once(':').unwrap();
                        let key = path.trim_matches('/');
                        let key: Vec<&str> = key.split('/').filter(|c| !c.is_empty()).collect();
                        prop_assert_eq!(
                            map.lookup(&key.join("/")),
                            Some((uid.parse().unwrap(), gid.parse().unwrap()))
                        );
                    }
                }
            }
        }
    }
}
