//! `cluster.nix`: the cluster's nodes as a Nix attribute set (seed 003's
//! shape), for flakes that build per-node configuration from it.

use std::fmt::Write;

/// `{ clusterName = "…"; controlPlane = [ { name = "…"; ip = "…"; } ];
/// workers = [ … ]; }`, with `ip = null;` for a node without a static
/// address. Strings are escaped for Nix (`"`, `\`, `${`).
pub fn cluster_nix(
    name: &str,
    control_plane: &[(String, Option<String>)],
    workers: &[(String, Option<String>)],
) -> String {
    let mut s = String::from("# The cluster's nodes, written by nodeimg stamp.\n{\n");
    let _ = writeln!(s, "  clusterName = {};", string(name));
    list(&mut s, "controlPlane", control_plane);
    list(&mut s, "workers", workers);
    s.push_str("}\n");
    s
}

fn list(s: &mut String, key: &str, nodes: &[(String, Option<String>)]) {
    if nodes.is_empty() {
        let _ = writeln!(s, "  {key} = [ ];");
        return;
    }
    let _ = writeln!(s, "  {key} = [");
    for (name, ip) in nodes {
        let ip = ip.as_deref().map_or_else(|| "null".to_string(), string);
        let _ = writeln!(s, "    {{ name = {}; ip = {ip}; }}", string(name));
    }
    s.push_str("  ];\n");
}

/// A Nix double-quoted string literal.
fn string(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            '$' if chars.peek() == Some(&'{') => s.push_str("\\$"),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_and_escaping() {
        let text = cluster_nix(
            "odroid \"c4\" ${x}",
            &[("node000".into(), Some("192.168.1.50".into()))],
            &[("node001".into(), None)],
        );
        assert_eq!(
            text,
            "# The cluster's nodes, written by nodeimg stamp.\n{\n  \
             clusterName = \"odroid \\\"c4\\\" \\${x}\";\n  controlPlane = [\n    \
             { name = \"node000\"; ip = \"192.168.1.50\"; }\n  ];\n  workers = [\n    \
             { name = \"node001\"; ip = null; }\n  ];\n}\n"
        );
        assert!(cluster_nix("c", &[], &[]).contains("workers = [ ];"));
    }
}
