//! Arbitrary text as a cluster file: a cluster or a list of problems (each
//! with a line inside the text), never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipeline::cluster::Cluster;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match Cluster::parse(Path::new("/nonexistent/cluster.toml"), text) {
            Ok(c) => assert!(!c.nodes.is_empty()),
            Err(pipeline::Error::Invalid { problems, .. }) => {
                let lines = text.lines().count().max(1) + 1;
                assert!(!problems.is_empty());
                assert!(problems.iter().all(|p| p.line.is_none_or(|l| l >= 1 && l <= lines)));
            }
            Err(_) => {}
        }
    }
});
