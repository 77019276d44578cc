//! Arbitrary bytes as a Debian kernel package and as a kernel module: the
//! ar/data.tar reader (`vm::kernel_pkg::deb`) and the `.modinfo` reader
//! (`vm::kernel_pkg::modules`) must return data or an error, never panic
//! nor allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Read;
use vm::kernel_pkg::{deb, modules};

fuzz_target!(|data: &[u8]| {
    let _ = deb::looks_like_deb(data);
    let _ = deb::for_each_data_file(data, &mut |f| {
        if let Some(name) = modules::name_of_path(&f.path) {
            let elf = modules::decompress(&f.path, f.reader)?;
            let _ = modules::modinfo(&elf, &name);
        } else {
            let mut sink = Vec::new();
            f.reader.take(1 << 20).read_to_end(&mut sink)?;
        }
        Ok(())
    });
    let _ = modules::modinfo(data, "fuzz");
    let _ = modules::parse_modinfo(data, "fuzz");
    let _ = modules::parse_builtin(&String::from_utf8_lossy(data));
});
