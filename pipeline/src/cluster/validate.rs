//! From the text of a cluster file to a [`Cluster`], collecting every
//! problem (with its line) before giving up, so one run shows them all.

use super::file::{RawCluster, RawSettings, RawTemplates, RawVersions, NODE_KEYS};
use super::keys::{read_age_key, resolve_path, resolve_ssh_keys, AgeKeySource};
use super::net::{overlaps, parse_host_address, parse_subnet, Endpoint};
use super::roles::{default_roles, match_role, needs_init, role_by_name, RolePattern};
use super::{Cluster, Gitops, Interface, Node, Password, Problem, Versions};
use crate::base::spec::{BaseSpec, FirmwareSpec};
use crate::flavour::{Flavour, Role};
use crate::{Error, Result};
use ipnet::IpNet;
use regex::Regex;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::Range;
use std::path::Path;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

/// Problems found so far, with positions turned into lines.
struct Report<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Report<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn at(&mut self, span: Option<Range<usize>>, key: impl Into<String>, why: impl Into<String>) {
        let p = Problem {
            line: span.map(|s| self.line_of(s.start)),
            key: key.into(),
            why: why.into(),
        };
        // A bad default is found once per node; say it once.
        if !self.problems.contains(&p) {
            self.problems.push(p);
        }
    }

    fn spanned<T>(&mut self, v: &Spanned<T>, key: impl Into<String>, why: impl Into<String>) {
        self.at(Some(v.span()), key, why);
    }

    fn serde(&mut self, key: &str, e: toml::de::Error) {
        self.at(e.span(), key, e.message().trim().to_string());
    }

    /// Deserialises one table of the file, reporting failures under `key`.
    /// A key that fails (unknown, wrong type) is reported and dropped, and
    /// the table read again, so every bad key of a table is listed.
    fn table<T: DeserializeOwned>(&mut self, key: &str, value: Spanned<DeValue<'_>>) -> Option<T> {
        self.table_with(key, value, None)
    }

    fn table_with<T: DeserializeOwned>(
        &mut self,
        key: &str,
        value: Spanned<DeValue<'_>>,
        extra_keys: Option<&str>,
    ) -> Option<T> {
        let span = value.span();
        let mut table = match value.into_inner() {
            DeValue::Table(t) => t,
            other => {
                return T::deserialize(ValueDeserializer::from(Spanned::new(span, other)))
                    .map_err(|e| self.serde(key, e))
                    .ok()
            }
        };
        loop {
            let whole = Spanned::new(span.clone(), DeValue::Table(table.clone()));
            match T::deserialize(ValueDeserializer::from(whole)) {
                Ok(v) => return Some(v),
                Err(e) => {
                    let mut why = e.message().trim().to_string();
                    if let Some(extra) = extra_keys {
                        why = why.replace("expected one of", &format!("expected one of {extra},"));
                    }
                    let at = e.span();
                    self.at(at.clone().or(Some(span.clone())), key, why);
                    let culprit = at.and_then(|at| {
                        table
                            .iter()
                            .find(|(k, v)| {
                                let (ks, vs) = (k.span(), v.span());
                                (ks.start <= at.start && at.start < ks.end.max(ks.start + 1))
                                    || (vs.start <= at.start && at.end <= vs.end)
                            })
                            .map(|(k, _)| k.clone())
                    });
                    match culprit {
                        Some(k) => {
                            table.remove(&k);
                        }
                        None => return None,
                    }
                }
            }
        }
    }
}

/// The sections of the file, each deserialised on its own so a mistake in
/// one does not hide the others'.
#[derive(Default)]
struct Sections<'i> {
    cluster: Option<RawCluster>,
    base: Option<BaseSpec>,
    firmware: Option<FirmwareSpec>,
    defaults: Option<RawSettings>,
    roles: Option<Spanned<DeValue<'i>>>,
    nodes: Vec<RawNode>,
    templates: Option<RawTemplates>,
    versions: Option<RawVersions>,
}

struct RawNode {
    /// Position of the node's table.
    span: Range<usize>,
    hostname: Option<Spanned<String>>,
    role: Option<Spanned<String>>,
    address: Option<Spanned<String>>,
    settings: RawSettings,
}

pub fn validate(path: &Path, text: &str) -> Result<Cluster> {
    validate_with(path, text, true)
}

/// [`validate`]; `need_nodes` false accepts a file without `[[node]]` (what
/// `nodeimg base --config` reads: board, `[base]`, `[firmware]`).
pub fn validate_with(path: &Path, text: &str, need_nodes: bool) -> Result<Cluster> {
    let mut r = Report {
        text,
        problems: Vec::new(),
    };
    let cluster = match DeTable::parse(text) {
        Ok(doc) => {
            let sections = read_sections(&mut r, doc.into_inner());
            build(&mut r, path, sections, need_nodes)
        }
        Err(e) => {
            r.serde("toml", e);
            None
        }
    };
    match cluster {
        Some(c) if r.problems.is_empty() => Ok(c),
        _ => {
            if r.problems.is_empty() {
                r.at(None, "cluster", "the [cluster] table is missing");
            }
            Err(Error::Invalid {
                file: path.to_path_buf(),
                problems: r.problems,
            })
        }
    }
}

fn read_sections<'i>(r: &mut Report<'_>, doc: DeTable<'i>) -> Sections<'i> {
    let mut s = Sections::default();
    for (key, value) in doc {
        let name: &str = key.get_ref();
        match name {
            "cluster" => s.cluster = r.table("cluster", value),
            "base" => s.base = r.table("base", value),
            "firmware" => s.firmware = r.table("firmware", value),
            "defaults" => s.defaults = r.table("defaults", value),
            "templates" => s.templates = r.table("templates", value),
            "versions" => s.versions = r.table("versions", value),
            "roles" => s.roles = Some(value),
            "node" => read_nodes(r, value, &mut s.nodes),
            other => r.at(
                Some(key.span()),
                other.to_string(),
                "unknown table or key (known: cluster, base, firmware, defaults, roles, node, templates, versions)",
            ),
        }
    }
    if s.cluster.is_none() && !r.problems.iter().any(|p| p.key == "cluster") {
        r.at(None, "cluster", "the [cluster] table is missing");
    }
    s
}

fn read_nodes(r: &mut Report<'_>, value: Spanned<DeValue<'_>>, out: &mut Vec<RawNode>) {
    let span = value.span();
    let DeValue::Array(items) = value.into_inner() else {
        r.at(Some(span), "node", "must be an array of tables: [[node]]");
        return;
    };
    for (i, item) in items.into_iter().enumerate() {
        let key = format!("node[{i}]");
        let span = item.span();
        let DeValue::Table(mut table) = item.into_inner() else {
            r.at(Some(span), key, "must be a table");
            continue;
        };
        let mut take = |name: &str, r: &mut Report<'_>| -> Option<Spanned<String>> {
            let k = table.keys().find(|k| k.get_ref() == name)?.clone();
            let v = table.remove(&k)?;
            let vspan = v.span();
            match v.get_ref().as_str() {
                Some(s) => Some(Spanned::new(vspan, s.to_string())),
                None => {
                    r.at(Some(vspan), format!("{key}.{name}"), "must be a string");
                    None
                }
            }
        };
        let hostname = take(NODE_KEYS[0], r);
        let role = take(NODE_KEYS[1], r);
        let address = take(NODE_KEYS[2], r);
        let rest = Spanned::new(span.clone(), DeValue::Table(table));
        let settings = r
            .table_with(&key, rest, Some("`hostname`, `role`, `address`"))
            .unwrap_or_default();
        if hostname.is_none() {
            r.at(Some(span.clone()), format!("node[{i}]"), "has no hostname");
        }
        out.push(RawNode {
            span,
            hostname,
            role,
            address,
            settings,
        });
    }
}

/// Checks the sections against each other and builds the cluster.
fn build(r: &mut Report<'_>, path: &Path, s: Sections<'_>, need_nodes: bool) -> Option<Cluster> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    let c = s.cluster?;
    let flavour = c.flavour.as_ref().map_or(Flavour::None, |f| *f.get_ref());

    if !is_hostname(c.name.get_ref()) {
        r.spanned(
            &c.name,
            "cluster.name",
            "must be lowercase letters, digits and '-' (RFC 1123), at most 63 characters",
        );
    }
    let subnet =
        |r: &mut Report<'_>, v: &Option<Spanned<String>>, key: &str, default: Option<&str>| match v
        {
            Some(v) => parse_subnet(v.get_ref())
                .map_err(|why| r.spanned(v, key, why))
                .ok(),
            None => default.and_then(|d| parse_subnet(d).ok()),
        };
    let (pod_default, svc_default) = match flavour {
        Flavour::Kubeadm => (Some("10.244.0.0/16"), Some("10.96.0.0/12")),
        Flavour::K3s => (Some("10.42.0.0/16"), Some("10.43.0.0/16")),
        Flavour::K3sAgent | Flavour::None => (None, None),
    };
    let pod_subnet = subnet(r, &c.pod_subnet, "cluster.pod_subnet", pod_default);
    let service_subnet = subnet(r, &c.service_subnet, "cluster.service_subnet", svc_default);
    if let (Some(p), Some(sv)) = (&pod_subnet, &service_subnet) {
        if overlaps(p, sv) {
            let at = c.service_subnet.as_ref().or(c.pod_subnet.as_ref());
            r.at(
                at.map(|v| v.span()),
                "cluster.service_subnet",
                format!("service range {sv} overlaps pod range {p}"),
            );
        }
    }
    let api_endpoint = c.api_endpoint.as_ref().and_then(|v| {
        Endpoint::parse(v.get_ref())
            .map_err(|why| r.spanned(v, "cluster.api_endpoint", why))
            .ok()
    });

    // k3s-agent joins a server that exists already.
    let mut server = None;
    let mut token_file = None;
    match flavour {
        Flavour::K3sAgent => {
            match &c.server {
                Some(v) if v.get_ref().starts_with("https://") => {
                    server = Some(v.get_ref().clone())
                }
                Some(v) => r.spanned(
                    v,
                    "cluster.server",
                    "must be an https:// URL, like https://192.168.1.5:6443",
                ),
                None => r.spanned(
                    &c.name,
                    "cluster.server",
                    "flavour k3s-agent needs the existing server's URL",
                ),
            }
            match &c.token_file {
                Some(v) => {
                    let p = resolve_path(&dir, v.get_ref());
                    match std::fs::read_to_string(&p) {
                        Ok(t) if !t.trim().is_empty() => token_file = Some(p),
                        Ok(_) => {
                            r.spanned(v, "cluster.token_file", format!("{} is empty", p.display()))
                        }
                        Err(e) => r.spanned(
                            v,
                            "cluster.token_file",
                            format!("reading {}: {e}", p.display()),
                        ),
                    }
                }
                None => r.spanned(
                    &c.name,
                    "cluster.token_file",
                    "flavour k3s-agent needs a file holding the server's token",
                ),
            }
        }
        _ => {
            for (v, key) in [
                (&c.server, "cluster.server"),
                (&c.token_file, "cluster.token_file"),
            ] {
                if let Some(v) = v {
                    r.spanned(
                        v,
                        key,
                        format!("only flavour k3s-agent uses it (this cluster is {flavour})"),
                    );
                }
            }
        }
    }

    let gitops = match &c.gitops_url {
        Some(url) => {
            if url.get_ref().trim().is_empty() || url.get_ref().contains(char::is_whitespace) {
                r.spanned(url, "cluster.gitops_url", "must be a repository URL");
            }
            let ssh = super::is_ssh_git_url(url.get_ref());
            // Only the kubeadm init node installs Flux, so only there is a
            // deploy key of use.
            let kubeadm = flavour == Flavour::Kubeadm;
            let deploy_key = match &c.gitops_deploy_key {
                Some(d) if *d.get_ref() && !kubeadm => {
                    r.spanned(
                        d,
                        "cluster.gitops_deploy_key",
                        format!("only flavour kubeadm installs Flux (this cluster is {flavour})"),
                    );
                    false
                }
                Some(d) => *d.get_ref(),
                None => ssh && kubeadm,
            };
            let known_hosts = match &c.gitops_known_hosts {
                Some(v) => read_known_hosts(r, &dir, v),
                None => {
                    if deploy_key {
                        r.spanned(
                            url,
                            "cluster.gitops_known_hosts",
                            "a deploy key needs the Git host's known_hosts lines (or a file of them): Flux checks the host key; `ssh-keyscan HOST` prints them",
                        );
                    }
                    None
                }
            };
            Some(Gitops {
                deploy_key,
                known_hosts,
                url: url.get_ref().clone(),
                branch: c
                    .gitops_branch
                    .as_ref()
                    .map_or("main".into(), |b| b.get_ref().clone()),
                path: c.gitops_path.as_ref().map_or_else(
                    || format!("clusters/{}", c.name.get_ref()),
                    |p| p.get_ref().clone(),
                ),
            })
        }
        None => {
            for (v, key) in [
                (&c.gitops_branch, "cluster.gitops_branch"),
                (&c.gitops_path, "cluster.gitops_path"),
                (&c.gitops_known_hosts, "cluster.gitops_known_hosts"),
            ] {
                if let Some(v) = v {
                    r.spanned(v, key, "needs cluster.gitops_url");
                }
            }
            if let Some(v) = &c.gitops_deploy_key {
                r.spanned(v, "cluster.gitops_deploy_key", "needs cluster.gitops_url");
            }
            None
        }
    };

    let kubeadm_token_ttl = match &c.kubeadm_token_ttl {
        Some(v) if is_go_duration(v.get_ref()) => v.get_ref().clone(),
        Some(v) => {
            r.spanned(
                v,
                "cluster.kubeadm_token_ttl",
                "must be a duration such as 8760h, 720h30m or 0s (never expires)",
            );
            String::new()
        }
        None => DEFAULT_KUBEADM_TOKEN_TTL.to_string(),
    };
    let sops_secret = match &c.sops_secret {
        Some(v) if is_dns_label(v.get_ref()) => v.get_ref().clone(),
        Some(v) => {
            r.spanned(
                v,
                "cluster.sops_secret",
                "must be a Kubernetes object name (lower-case letters, digits and -)",
            );
            String::new()
        }
        None => DEFAULT_SOPS_SECRET.to_string(),
    };

    let roles = read_roles(r, flavour, s.roles);
    let defaults = s.defaults.unwrap_or_default();
    let mut nodes = Vec::new();
    for (i, raw) in s.nodes.iter().enumerate() {
        if let Some(n) = build_node(r, &dir, flavour, &roles, &defaults, i, raw) {
            nodes.push(n);
        }
    }
    check_nodes(
        r,
        flavour,
        &s.nodes,
        &nodes,
        pod_subnet.as_ref(),
        service_subnet.as_ref(),
    );
    if need_nodes && s.nodes.is_empty() {
        r.spanned(&c.name, "node", "the cluster has no [[node]]");
    }

    let api_endpoint = api_endpoint.or_else(|| {
        // The init node's address is the natural API endpoint.
        let init = nodes.iter().find(|n| n.role == Role::Init)?;
        Some(Endpoint {
            host: init.address?.addr().to_string(),
            port: 6443,
        })
    });
    if flavour == Flavour::Kubeadm && api_endpoint.is_none() && c.api_endpoint.is_none() {
        r.spanned(
            &c.name,
            "cluster.api_endpoint",
            "kubeadm needs the API endpoint (host:port), or an address on the init node",
        );
    }
    // k3s servers and agents join the init node: without its address or an
    // endpoint they would wait on an empty host (Debian) or start a cluster
    // of their own (`k3s server --server ""` on NixOS).
    if flavour == Flavour::K3s && api_endpoint.is_none() && c.api_endpoint.is_none() {
        let init = nodes.iter().find(|n| n.role == Role::Init);
        if let (Some(init), true) = (init, nodes.iter().any(|n| n.role != Role::Init)) {
            r.spanned(
                &c.name,
                "cluster.api_endpoint",
                format!(
                    "the other nodes cannot reach the init node {0}: it has no address (DHCP) and there is no api_endpoint; give {0} an address, or set api_endpoint = \"{0}.local:6443\" (mDNS)",
                    init.hostname
                ),
            );
        }
    }

    let templates_dir = s
        .templates
        .and_then(|t| t.dir)
        .map(|d| resolve_path(&dir, d.get_ref()));

    let versions = read_versions(r, s.versions.unwrap_or_default());
    let hosts = c.hosts.as_ref().is_some_and(|h| *h.get_ref());

    Some(Cluster {
        file: path.to_path_buf(),
        name: c.name.into_inner(),
        board: c.board.into_inner(),
        flavour,
        api_endpoint,
        pod_subnet,
        service_subnet,
        server,
        token_file,
        gitops,
        kubeadm_token_ttl,
        sops_secret,
        base: s.base.unwrap_or_default(),
        firmware: s.firmware.unwrap_or_default(),
        roles,
        nodes,
        templates_dir,
        versions,
        hosts,
    })
}

/// `gitops_known_hosts`: lines when the value holds a space (a host and
/// its key), else a file of them, relative to the cluster file.
fn read_known_hosts(r: &mut Report<'_>, dir: &Path, v: &Spanned<String>) -> Option<String> {
    let key = "cluster.gitops_known_hosts";
    let text = if v.get_ref().contains(' ') {
        v.get_ref().clone()
    } else {
        let p = resolve_path(dir, v.get_ref());
        match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) => {
                r.spanned(v, key, format!("reading {}: {e}", p.display()));
                return None;
            }
        }
    };
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if lines.is_empty() || lines.iter().any(|l| l.split_whitespace().count() < 3) {
        r.spanned(
            v,
            key,
            "must be known_hosts lines `HOST KEYTYPE KEY` (as ssh-keyscan prints them)",
        );
        return None;
    }
    Some(lines.join("\n") + "\n")
}

/// Only the `[versions]` table of a cluster file (defaults filled in), for
/// `nodeimg base --config`, which does not need the nodes.
pub fn versions_only(path: &Path, text: &str) -> Result<Versions> {
    let mut r = Report {
        text,
        problems: Vec::new(),
    };
    let mut versions = Versions::default();
    match DeTable::parse(text) {
        Ok(doc) => {
            for (key, value) in doc.into_inner() {
                if key.get_ref() == "versions" {
                    if let Some(raw) = r.table("versions", value) {
                        versions = read_versions(&mut r, raw);
                    }
                }
            }
        }
        Err(e) => r.serde("toml", e),
    }
    if r.problems.is_empty() {
        Ok(versions)
    } else {
        Err(Error::Invalid {
            file: path.to_path_buf(),
            problems: r.problems,
        })
    }
}

/// `[versions]` with defaults; a value must be a plain version word, since
/// it ends up in URLs, package pins and shell scripts.
fn read_versions(r: &mut Report<'_>, raw: RawVersions) -> Versions {
    let mut v = Versions::default();
    let fields = [
        (raw.kubernetes, "kubernetes", &mut v.kubernetes),
        (raw.crio, "crio", &mut v.crio),
        (raw.cilium, "cilium", &mut v.cilium),
        (raw.flux, "flux", &mut v.flux),
        (raw.gateway_api, "gateway_api", &mut v.gateway_api),
        (raw.helm, "helm", &mut v.helm),
        (raw.k3s, "k3s", &mut v.k3s),
    ];
    for (given, key, slot) in fields {
        let Some(given) = given else { continue };
        let ok = !given.get_ref().is_empty()
            && given
                .get_ref()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".+-_x~".contains(c));
        if ok {
            *slot = given.get_ref().clone();
        } else {
            r.spanned(
                &given,
                format!("versions.{key}"),
                "must be a version such as 1.34 or v1.34.1+k3s1 (letters, digits, . + - _ ~)",
            );
        }
    }
    v
}

fn read_roles(
    r: &mut Report<'_>,
    flavour: Flavour,
    value: Option<Spanned<DeValue<'_>>>,
) -> Vec<RolePattern> {
    let Some(value) = value else {
        return default_roles(flavour)
            .into_iter()
            .filter_map(|(role, re)| {
                Regex::new(re)
                    .ok()
                    .map(|pattern| RolePattern { role, pattern })
            })
            .collect();
    };
    let span = value.span();
    let DeValue::Table(table) = value.into_inner() else {
        r.at(Some(span), "roles", "must be a table: role = \"regex\"");
        return Vec::new();
    };
    // First match wins, so the file's order matters: sort by position.
    let mut entries: Vec<_> = table.into_iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    let mut out = Vec::new();
    for (k, v) in entries {
        let key = format!("roles.{}", k.get_ref());
        let role = match role_by_name(flavour, k.get_ref()) {
            Ok(role) => role,
            Err(why) => {
                r.at(Some(k.span()), key, why);
                continue;
            }
        };
        let Some(re) = v.get_ref().as_str() else {
            r.at(Some(v.span()), key, "must be a regular expression string");
            continue;
        };
        match Regex::new(re) {
            Ok(pattern) => out.push(RolePattern { role, pattern }),
            Err(e) => r.at(
                Some(v.span()),
                key,
                format!("not a regular expression: {e}"),
            ),
        }
    }
    out
}

/// A setting from the node, else from `[defaults]`, with the key it came from.
fn pick<'a, T>(
    node: &'a Option<Spanned<T>>,
    defaults: &'a Option<Spanned<T>>,
    i: usize,
    name: &str,
) -> Option<(&'a Spanned<T>, String)> {
    match (node, defaults) {
        (Some(v), _) => Some((v, format!("node[{i}].{name}"))),
        (None, Some(v)) => Some((v, format!("defaults.{name}"))),
        (None, None) => None,
    }
}

fn build_node(
    r: &mut Report<'_>,
    dir: &Path,
    flavour: Flavour,
    roles: &[RolePattern],
    d: &RawSettings,
    i: usize,
    raw: &RawNode,
) -> Option<Node> {
    let n = &raw.settings;
    let hostname = raw.hostname.as_ref()?;
    let hkey = format!("node[{i}].hostname");
    if !is_hostname(hostname.get_ref()) {
        r.spanned(
            hostname,
            &hkey,
            format!(
                "`{}` is not an RFC 1123 hostname (lowercase letters, digits, '-' and '.', labels of 1-63 characters, at most 63 in all)",
                hostname.get_ref()
            ),
        );
    }
    let role = match &raw.role {
        Some(v) => role_by_name(flavour, v.get_ref())
            .map_err(|why| r.spanned(v, format!("node[{i}].role"), why))
            .ok(),
        None => {
            let m = match_role(roles, hostname.get_ref());
            if m.is_none() {
                let pats: Vec<String> = roles
                    .iter()
                    .map(|p| format!("{} = \"{}\"", p.role, p.pattern))
                    .collect();
                r.spanned(
                    hostname,
                    &hkey,
                    format!(
                        "no role pattern matches `{}` (patterns: {}); add a [roles] pattern or set role",
                        hostname.get_ref(),
                        pats.join(", ")
                    ),
                );
            }
            m
        }
    };
    let address = raw.address.as_ref().and_then(|v| {
        parse_host_address(v.get_ref())
            .map_err(|why| r.spanned(v, format!("node[{i}].address"), why))
            .ok()
    });

    let user = pick(&n.user, &d.user, i, "user").and_then(|(v, key)| {
        if is_user_name(v.get_ref()) {
            Some(v.get_ref().clone())
        } else {
            r.spanned(v, key, format!("`{}` is not a user name", v.get_ref()));
            None
        }
    });
    let mut ssh_keys = Vec::new();
    if let Some((v, key)) = pick(&n.ssh_keys, &d.ssh_keys, i, "ssh_keys") {
        for (j, entry) in v.get_ref().iter().enumerate() {
            match resolve_ssh_keys(dir, entry) {
                Ok(k) => ssh_keys.extend(k),
                Err(why) => r.spanned(v, format!("{key}[{j}]"), why),
            }
        }
    }
    let password = match (
        pick(&n.password, &d.password, i, "password"),
        pick(&n.password_hash, &d.password_hash, i, "password_hash"),
    ) {
        (Some((p, key)), Some(_)) => {
            r.spanned(p, key, "give password or password_hash, not both");
            None
        }
        (Some((p, key)), None) => {
            if p.get_ref().is_empty() || p.get_ref().contains(['\n', '\0']) {
                r.spanned(p, key, "must be a non-empty single line");
            }
            Some(Password::Plain(p.get_ref().clone()))
        }
        (None, Some((h, key))) => {
            let ok = h.get_ref().starts_with('$') && !h.get_ref().contains([':', '\n', ' ']);
            if !ok {
                // Never echo a hash.
                r.spanned(
                    h,
                    key,
                    "must be a crypt(3) hash such as `mkpasswd -m sha-512` prints ($6$…)",
                );
            }
            Some(Password::Hash(h.get_ref().clone()))
        }
        (None, None) => None,
    };
    if user.is_none() {
        for (v, key) in [
            pick(&n.ssh_keys, &d.ssh_keys, i, "ssh_keys").map(|(v, k)| (v.span(), k)),
            pick(&n.password, &d.password, i, "password").map(|(v, k)| (v.span(), k)),
            pick(&n.password_hash, &d.password_hash, i, "password_hash")
                .map(|(v, k)| (v.span(), k)),
        ]
        .into_iter()
        .flatten()
        {
            r.at(Some(v), key, "needs `user` (in [defaults] or the node)");
        }
    }
    let age_key = pick(&n.age_key, &d.age_key, i, "age_key").and_then(|(v, key)| {
        if v.get_ref() == "generate" {
            Some(AgeKeySource::Generate)
        } else {
            read_age_key(dir, v.get_ref())
                .map(AgeKeySource::File)
                .map_err(|why| r.spanned(v, key, why))
                .ok()
        }
    });
    let gateway = pick(&n.gateway, &d.gateway, i, "gateway").and_then(|(v, key)| {
        let ip = v
            .get_ref()
            .parse::<IpAddr>()
            .map_err(|_| r.spanned(v, &key, format!("`{}` is not an IP address", v.get_ref())))
            .ok()?;
        if let Some(a) = address {
            if !a.contains(&ip) {
                r.spanned(
                    v,
                    key,
                    format!(
                        "gateway {ip} is outside {}'s network {}",
                        hostname.get_ref(),
                        a.trunc()
                    ),
                );
            }
        }
        Some(ip)
    });
    let mut dns = Vec::new();
    if let Some((v, key)) = pick(&n.dns, &d.dns, i, "dns") {
        for (j, s) in v.get_ref().iter().enumerate() {
            match s.parse::<IpAddr>() {
                Ok(ip) => dns.push(ip),
                Err(_) => r.spanned(
                    v,
                    format!("{key}[{j}]"),
                    format!("`{s}` is not an IP address"),
                ),
            }
        }
    }
    let timezone = pick(&n.timezone, &d.timezone, i, "timezone").and_then(|(v, key)| {
        let tz = v.get_ref();
        let ok = !tz.is_empty()
            && !tz.starts_with('/')
            && !tz.split('/').any(|c| c.is_empty() || c == "." || c == "..")
            && tz
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c));
        if ok {
            Some(tz.clone())
        } else {
            r.spanned(
                v,
                key,
                format!("`{tz}` is not a time zone name like Europe/Berlin"),
            );
            None
        }
    });
    let ssh_host_keys = pick(&n.ssh_host_keys, &d.ssh_host_keys, i, "ssh_host_keys")
        .is_none_or(|(v, _)| *v.get_ref());
    let interface = pick(&n.interface, &d.interface, i, "interface").and_then(|(v, key)| {
        parse_interface(v.get_ref())
            .map_err(|why| r.spanned(v, key, why))
            .ok()
    });
    Some(Node {
        hostname: hostname.get_ref().clone(),
        role: role?,
        address,
        user,
        ssh_keys,
        password,
        age_key,
        gateway,
        dns,
        timezone,
        ssh_host_keys,
        interface,
    })
}

/// Checks across nodes: unique names and addresses, the init node, ranges.
fn check_nodes(
    r: &mut Report<'_>,
    flavour: Flavour,
    raws: &[RawNode],
    nodes: &[Node],
    pod: Option<&IpNet>,
    svc: Option<&IpNet>,
) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut addrs: HashMap<IpAddr, usize> = HashMap::new();
    for (i, raw) in raws.iter().enumerate() {
        if let Some(h) = &raw.hostname {
            if let Some(&first) = names.get(h.get_ref().as_str()) {
                r.spanned(
                    h,
                    format!("node[{i}].hostname"),
                    format!(
                        "`{}` is also node[{first}]'s hostname; hostnames must be unique",
                        h.get_ref()
                    ),
                );
            } else {
                names.insert(h.get_ref(), i);
            }
        }
        let Some(a) = &raw.address else { continue };
        let Ok(net) = parse_host_address(a.get_ref()) else {
            continue;
        };
        let key = format!("node[{i}].address");
        if let Some(&first) = addrs.get(&net.addr()) {
            r.spanned(
                a,
                &key,
                format!(
                    "{} is also node[{first}]'s address; addresses must be unique",
                    net.addr()
                ),
            );
        } else {
            addrs.insert(net.addr(), i);
        }
        for (range, what) in [(pod, "pod"), (svc, "service")] {
            if let Some(range) = range {
                if overlaps(range, &net.trunc()) {
                    r.spanned(a, &key, format!("{} lies in the {what} range {range}", net));
                }
            }
        }
    }
    if needs_init(flavour) {
        let inits: Vec<usize> = raws
            .iter()
            .enumerate()
            .filter(|(_, raw)| {
                raw.hostname
                    .as_ref()
                    .and_then(|h| nodes.iter().find(|n| &n.hostname == h.get_ref()))
                    .is_some_and(|n| n.role == Role::Init)
            })
            .map(|(i, _)| i)
            .collect();
        match inits.len() {
            1 => {}
            0 => {
                let span = raws.first().map(|n| n.span.clone());
                if !raws.is_empty() {
                    r.at(
                        span,
                        "roles.init",
                        format!(
                            "flavour {flavour} needs exactly one init node; no node has role init"
                        ),
                    );
                }
            }
            _ => {
                let names: Vec<String> = inits
                    .iter()
                    .filter_map(|&i| raws[i].hostname.as_ref().map(|h| h.get_ref().clone()))
                    .collect();
                let span = raws[inits[1]].hostname.as_ref().map(|h| h.span());
                r.at(
                    span,
                    format!("node[{}].role", inits[1]),
                    format!(
                        "flavour {flavour} needs exactly one init node; these are all init: {}",
                        names.join(", ")
                    ),
                );
            }
        }
    }
}

/// RFC 1123 host name, lowercase (what Kubernetes accepts as a node name),
/// short enough for the kernel's hostname (64 bytes with its NUL).
pub fn is_hostname(s: &str) -> bool {
    s.len() <= 63 && is_dns_name(s) && !s.bytes().any(|b| b.is_ascii_uppercase())
}

/// Dot-separated labels of 1-63 letters, digits and '-', no label starting
/// or ending with '-'.
pub fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A POSIX-portable login name.
fn is_user_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b))
}

/// Default of `[cluster] kubeadm_token_ttl`: a year, long enough to add a
/// node late, short enough that a lost card's token stops working.
pub const DEFAULT_KUBEADM_TOKEN_TTL: &str = "8760h";
/// Default of `[cluster] sops_secret`, the name seed 002's repository uses.
pub const DEFAULT_SOPS_SECRET: &str = "flux-sops";

/// A Go duration as kubeadm's `ttl` takes it: number-unit pairs (h, m, s),
/// e.g. `8760h`, `1h30m`, `0s`.
fn is_go_duration(v: &str) -> bool {
    let mut rest = v;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 || digits > 9 {
            return false;
        }
        rest = &rest[digits..];
        let Some(unit) = ["h", "m", "s"].iter().find(|u| rest.starts_with(**u)) else {
            return false;
        };
        rest = &rest[unit.len()..];
    }
    true
}

/// A Kubernetes object name (RFC 1123 label).
fn is_dns_label(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !v.starts_with('-')
        && !v.ends_with('-')
}

/// An interface name (as the kernel allows: 1–15 bytes, no `/`, `:` or
/// space) or a MAC address.
fn parse_interface(s: &str) -> std::result::Result<Interface, String> {
    let hex = |p: &str| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit());
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() == 6 && parts.iter().all(|p| hex(p)) {
        return Ok(Interface::Mac(s.to_ascii_lowercase()));
    }
    let ok = !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_graphic() && !"/:*?".contains(c));
    if ok {
        Ok(Interface::Name(s.to_string()))
    } else {
        Err(format!(
            "`{s}` is neither an interface name (such as end0, at most 15 characters) nor a MAC address (aa:bb:cc:dd:ee:ff)"
        ))
    }
}
