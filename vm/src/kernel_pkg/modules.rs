//! Kernel modules of a Debian kernel package, without `modules.dep`:
//! Debian builds it at install time (the package's postinst runs depmod,
//! linux `debian/templates/image.postinst.in`), so each module's own
//! `.modinfo` ELF section is read instead — the NUL-separated `key=value`
//! strings that `modinfo(8)` prints, where `depends=` names the modules it
//! needs loaded first and `softdep=pre: …` the ones it wants before it.
//! Modules may be compressed (`.ko.xz`, `.ko.zst`, `.ko.gz`: kbuild's
//! CONFIG_MODULE_COMPRESS_*; Debian trixie's packages ship `.ko.xz`);
//! klibc's `insmod` loads only plain ELF, so they are decompressed here.

use anyhow::{anyhow, bail, Context, Result};
use object::{Object, ObjectSection};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

/// The largest module accepted, decompressed (the biggest in Debian's
/// arm64 kernels are a few MiB): a bound for hostile input.
pub const MAX_MODULE: u64 = 64 << 20;

/// What a module's `.modinfo` says about loading it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModInfo {
    /// `name=`, else from the file name.
    pub name: String,
    /// `depends=`: modules whose symbols it uses.
    pub depends: Vec<String>,
    /// `softdep=pre: …` names (module names or aliases).
    pub pre: Vec<String>,
    /// `alias=` strings without wildcards (`crypto-crc32c`, `crc32c`).
    pub aliases: Vec<String>,
}

/// A module's canonical name: the kernel treats `-` and `_` alike.
pub fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a path (`…/virtio-rng.ko.xz` → `virtio_rng`), or
/// `None` when the path is not a module.
pub fn name_of_path(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|s| file.strip_suffix(s))?;
    (!stem.is_empty()).then(|| canonical(stem))
}

/// A module's bytes, decompressed as its file name says.
pub fn decompress(path: &str, r: &mut dyn Read) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let limited = |r: Box<dyn Read + '_>, out: &mut Vec<u8>| -> Result<()> {
        r.take(MAX_MODULE + 1)
            .read_to_end(out)
            .with_context(|| format!("{path}: decompressing"))?;
        if out.len() as u64 > MAX_MODULE {
            bail!("{path}: larger than {MAX_MODULE} bytes decompressed");
        }
        Ok(())
    };
    if path.ends_with(".xz") {
        limited(Box::new(liblzma::read::XzDecoder::new(r)), &mut out)?;
    } else if path.ends_with(".zst") {
        let d = zstd::stream::read::Decoder::new(r).with_context(|| format!("{path}: zstd"))?;
        limited(Box::new(d), &mut out)?;
    } else if path.ends_with(".gz") {
        limited(Box::new(flate2::read::GzDecoder::new(r)), &mut out)?;
    } else {
        limited(Box::new(r), &mut out)?;
    }
    Ok(out)
}

/// Reads the `.modinfo` section of the module `elf` (named `fallback`
/// when the section has no `name=`).
pub fn modinfo(elf: &[u8], fallback: &str) -> Result<ModInfo> {
    let file = object::File::parse(elf).map_err(|e| anyhow!("not an ELF module: {e}"))?;
    let section = file
        .section_by_name(".modinfo")
        .ok_or_else(|| anyhow!("no .modinfo section: not a kernel module"))?;
    let data = section
        .data()
        .map_err(|e| anyhow!(".modinfo section: {e}"))?;
    Ok(parse_modinfo(data, fallback))
}

/// The `key=value` strings of a `.modinfo` section.
pub fn parse_modinfo(data: &[u8], fallback: &str) -> ModInfo {
    let mut info = ModInfo {
        name: canonical(fallback),
        ..ModInfo::default()
    };
    for field in data.split(|b| *b == 0) {
        let field = String::from_utf8_lossy(field);
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        match key {
            "name" if !value.is_empty() => info.name = canonical(value),
            "depends" => info
                .depends
                .extend(value.split(',').filter(|d| !d.is_empty()).map(canonical)),
            // `softdep=pre: a b post: c` (modprobe.d(5)'s syntax).
            "softdep" => {
                let mut pre = false;
                for w in value.split_whitespace() {
                    match w {
                        "pre:" => pre = true,
                        "post:" => pre = false,
                        w if pre => info.pre.push(w.to_string()),
                        _ => {}
                    }
                }
            }
            "alias" if !value.contains(['*', '?', '[']) => info.aliases.push(value.to_string()),
            _ => {}
        }
    }
    info
}

/// The names `modules.builtin` lists (`kernel/fs/ext4/ext4.ko` → `ext4`).
pub fn parse_builtin(text: &str) -> BTreeSet<String> {
    text.lines().filter_map(name_of_path).collect()
}

/// Every module of a package, by name.
#[derive(Debug, Default)]
pub struct Graph {
    pub modules: BTreeMap<String, ModInfo>,
    pub builtin: BTreeSet<String>,
}

impl Graph {
    fn resolve(&self, name_or_alias: &str) -> Option<&str> {
        let c = canonical(name_or_alias);
        if let Some((k, _)) = self.modules.get_key_value(&c) {
            return Some(k);
        }
        self.modules
            .iter()
            .find(|(_, m)| m.aliases.iter().any(|a| a == name_or_alias))
            .map(|(k, _)| k.as_str())
    }

    /// The modules to load for `roots`, each after what it needs. A root
    /// the kernel has built in needs nothing; a root in `required` that is
    /// neither a module nor built in is an error; a missing `depends=` is
    /// an error (the package is inconsistent); an unresolved soft
    /// dependency is skipped, as modprobe skips it.
    pub fn load_order(&self, roots: &[&str], required: &[&str]) -> Result<Vec<String>> {
        let mut order = Vec::new();
        let mut state: BTreeMap<String, bool> = BTreeMap::new(); // false: visiting
        for root in roots {
            let r = canonical(root);
            if self.builtin.contains(&r) {
                continue;
            }
            if !self.modules.contains_key(&r) {
                if required.contains(root) {
                    bail!("the kernel has no {root} module and does not list it as built in (modules.builtin): it cannot reach a virtio disk's ext4 root");
                }
                continue;
            }
            self.visit(&r, &mut state, &mut order, 0)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        state: &mut BTreeMap<String, bool>,
        order: &mut Vec<String>,
        depth: usize,
    ) -> Result<()> {
        match state.get(name) {
            Some(true) => return Ok(()),
            Some(false) => bail!("module {name} depends on itself (a dependency cycle)"),
            None => {}
        }
        if depth > 64 {
            bail!("module dependencies nest deeper than 64 at {name}");
        }
        state.insert(name.to_string(), false);
        let m = &self.modules[name];
        for d in &m.depends {
            if self.builtin.contains(d) {
                continue;
            }
            if !self.modules.contains_key(d) {
                bail!("module {name} depends on {d}, which the package does not have");
            }
            self.visit(d, state, order, depth + 1)?;
        }
        for p in &m.pre {
            if self.builtin.contains(&canonical(p)) {
                continue;
            }
            if let Some(k) = self.resolve(p) {
                let k = k.to_string();
                if state.get(&k) != Some(&false) {
                    self.visit(&k, state, order, depth + 1)?;
                }
            }
        }
        state.insert(name.to_string(), true);
        order.push(name.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, deps: &[&str], pre: &[&str], aliases: &[&str]) -> (String, ModInfo) {
        (
            name.to_string(),
            ModInfo {
                name: name.to_string(),
                depends: deps.iter().map(|s| s.to_string()).collect(),
                pre: pre.iter().map(|s| s.to_string()).collect(),
                aliases: aliases.iter().map(|s| s.to_string()).collect(),
            },
        )
    }

    #[test]
    fn modinfo_fields() {
        let data = b"license=GPL\0depends=jbd2,mbcache,crc16\0softdep=pre: crc32c post: x\0alias=fs-ext4\0alias=virtio:d00000002v*\0name=ext4\0vermagic=6.1.0 SMP\0\0";
        let i = parse_modinfo(data, "fallback");
        assert_eq!(i.name, "ext4");
        assert_eq!(i.depends, ["jbd2", "mbcache", "crc16"]);
        assert_eq!(i.pre, ["crc32c"]);
        assert_eq!(i.aliases, ["fs-ext4"]);
        let i = parse_modinfo(b"depends=\0", "virtio-rng");
        assert_eq!((i.name.as_str(), i.depends.len()), ("virtio_rng", 0));
    }

    #[test]
    fn paths_and_builtins() {
        assert_eq!(
            name_of_path("usr/lib/modules/6.12/kernel/drivers/char/hw_random/virtio-rng.ko.xz"),
            Some("virtio_rng".into())
        );
        assert_eq!(
            name_of_path("lib/modules/6.1/kernel/fs/ext4/ext4.ko"),
            Some("ext4".into())
        );
        assert_eq!(name_of_path("lib/modules/6.1/modules.order"), None);
        let b = parse_builtin("kernel/drivers/virtio/virtio.ko\nkernel/fs/ext4/ext4.ko\n");
        assert!(b.contains("virtio") && b.contains("ext4"));
    }

    #[test]
    fn load_order_puts_dependencies_first_and_skips_builtins() {
        let g = Graph {
            modules: [
                m("ext4", &["jbd2", "mbcache", "crc16"], &["crc32c"], &[]),
                m("jbd2", &[], &[], &[]),
                m("mbcache", &[], &[], &[]),
                m("crc16", &[], &[], &[]),
                m("crc32c_generic", &[], &[], &["crc32c", "crypto-crc32c"]),
                m("virtio_blk", &["virtio", "virtio_ring"], &[], &[]),
                m("virtio_ring", &[], &[], &[]),
            ]
            .into_iter()
            .collect(),
            builtin: ["virtio".to_string()].into_iter().collect(),
        };
        let o = g
            .load_order(&["virtio_blk", "ext4", "virtio_rng"], &["ext4"])
            .unwrap();
        assert_eq!(
            o,
            [
                "virtio_ring",
                "virtio_blk",
                "jbd2",
                "mbcache",
                "crc16",
                "crc32c_generic",
                "ext4"
            ]
        );
        assert!(g.load_order(&["virtio_pci"], &["virtio_pci"]).is_err());
        let cyc = Graph {
            modules: [m("a", &["b"], &[], &[]), m("b", &["a"], &[], &[])]
                .into_iter()
                .collect(),
            builtin: BTreeSet::new(),
        };
        assert!(cyc.load_order(&["a"], &[]).is_err());
        let missing = Graph {
            modules: [m("a", &["gone"], &[], &[])].into_iter().collect(),
            builtin: BTreeSet::new(),
        };
        assert!(missing.load_order(&["a"], &[]).is_err());
    }

    #[test]
    fn garbage_is_not_a_module() {
        assert!(modinfo(b"\x7fELF\x02\x01\x01", "x").is_err());
        assert!(modinfo(b"", "x").is_err());
        let mut r: &[u8] = b"not xz";
        assert!(decompress("a.ko.xz", &mut r).is_err());
    }
}
