//! The node's own files (DESIGN §6): identity, keys, secrets, address, as
//! operations for the one executor. This is the single answer to "where is
//! the hostname written" for each OS profile.

use super::vars::{env_file, k3s_tokens, k3s_url, Shared, CLUSTER_ENV};
use crate::cluster::{AgeKeySource, Cluster, Node, Password};
use crate::customise::{LineEdit, Op};
use crate::flavour::{Flavour, Role};
use crate::os::{Network, OsProfile};
use crate::osimage::OsImage;
use crate::secrets::State;
use crate::templates::{firstboot_ops, Vars};
use crate::{Error, Result};
use ipnet::IpNet;
use sha2::{Digest, Sha256};

/// Where NixOS nodes find their stamped identity (`nodeimg.nix` reads it).
pub const NIXOS_STATE: &str = "/var/lib/nodeimg";

fn file(path: &str, data: impl Into<Vec<u8>>, mode: u32) -> Op {
    Op::File {
        path: path.to_string(),
        data: data.into(),
        mode,
        uid: 0,
        gid: 0,
        secret: false,
    }
}

fn secret(path: &str, data: impl Into<Vec<u8>>) -> Op {
    Op::File {
        path: path.to_string(),
        data: data.into(),
        mode: 0o600,
        uid: 0,
        gid: 0,
        secret: true,
    }
}

/// Everything one node needs to know, gathered once.
pub struct NodeContext<'a> {
    pub cluster: &'a Cluster,
    pub node: &'a Node,
    pub state: &'a State,
    pub shared: &'a Shared,
    pub vars: &'a Vars,
}

/// The node's identity operations for the OS in `image`.
pub fn node_ops(cx: &NodeContext<'_>, image: &OsImage) -> Result<Vec<Op>> {
    match image.profile() {
        OsProfile::NixOs { .. } => nixos_ops(cx),
        OsProfile::Debian { .. } => debian_ops(cx, image),
    }
}

fn age_key_bytes(cx: &NodeContext<'_>) -> Option<Vec<u8>> {
    match &cx.node.age_key {
        Some(AgeKeySource::Generate) => cx.state.age_identity().map(|s| s.as_bytes().to_vec()),
        Some(AgeKeySource::File(k)) => Some(k.contents.clone()),
        None => None,
    }
}

fn password_hash(cx: &NodeContext<'_>) -> Result<Option<String>> {
    let (Some(p), Some(user)) = (&cx.node.password, &cx.node.user) else {
        return Ok(None);
    };
    match p {
        Password::Hash(h) => Ok(Some(h.clone())),
        Password::Plain(plain) => cx.state.password_hash(user, plain),
    }
}

fn authorized_keys(node: &Node) -> String {
    let mut s = String::new();
    for k in &node.ssh_keys {
        s.push_str(k);
        s.push('\n');
    }
    s
}

fn debian_ops(cx: &NodeContext<'_>, image: &OsImage) -> Result<Vec<Op>> {
    let (c, n) = (cx.cluster, cx.node);
    let OsProfile::Debian {
        raspberry_pi,
        cloud_init,
        network,
        ..
    } = image.profile().clone()
    else {
        return Ok(Vec::new());
    };
    let h = &n.hostname;
    let mut ops = vec![file("/etc/hostname", format!("{h}\n"), 0o644)];
    if image.read("/etc/hosts")?.is_some() {
        ops.push(Op::Edit {
            path: "/etc/hosts".into(),
            edit: LineEdit::Set {
                prefix: "127.0.1.1".into(),
                line: format!("127.0.1.1\t{h}"),
            },
        });
    } else {
        ops.push(file(
            "/etc/hosts",
            format!("127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{h}\n"),
            0o644,
        ));
    }
    if raspberry_pi {
        // The Pi firmware's command line: systemd takes the hostname from
        // it before anything (cloud-init included) runs.
        ops.push(Op::Cmdline {
            append: vec![format!("systemd.hostname={h}")],
            remove: vec!["systemd.hostname".into()],
        });
        ops.push(file("/boot/firmware/ssh", Vec::new(), 0o644));
    }
    if cloud_init || image.stat("/etc/cloud")?.is_some() {
        ops.push(file(
            "/etc/cloud/cloud.cfg.d/99-nodeimg.cfg",
            "# Written by nodeimg stamp: the hostname and /etc/hosts are the node's own.\npreserve_hostname: true\nmanage_etc_hosts: false\n",
            0o644,
        ));
    }
    for seed in ["/boot/firmware/meta-data", "/boot/meta-data"] {
        if image.read(seed)?.is_some() {
            ops.push(Op::Edit {
                path: seed.into(),
                edit: LineEdit::Set {
                    prefix: "local-hostname:".into(),
                    line: format!("local-hostname: {h}"),
                },
            });
        }
    }

    if let Some(user) = &n.user {
        let u = image.user(user)?;
        if !n.ssh_keys.is_empty() {
            let u = u.as_ref().ok_or_else(|| {
                Error::refused(
                    format!("user {user}"),
                    "not in the image's /etc/passwd: cannot give it SSH keys",
                )
            })?;
            let dir = format!("{}/.ssh", u.home.trim_end_matches('/'));
            ops.push(Op::Dir {
                path: dir.clone(),
                mode: 0o700,
                uid: u.uid,
                gid: u.gid,
            });
            ops.push(Op::File {
                path: format!("{dir}/authorized_keys"),
                data: authorized_keys(n).into_bytes(),
                mode: 0o600,
                uid: u.uid,
                gid: u.gid,
                secret: false,
            });
        }
        if let Some(hash) = password_hash(cx)? {
            ops.push(password_op(image, user, &hash, u.is_some(), raspberry_pi)?);
        }
    }
    if n.ssh_host_keys {
        if let Some(k) = cx.state.host_key(h) {
            ops.push(secret("/etc/ssh/ssh_host_ed25519_key", k.private.clone()));
            ops.push(file(
                "/etc/ssh/ssh_host_ed25519_key.pub",
                format!("{}\n", k.public),
                0o644,
            ));
        }
    }
    if let Some(key) = age_key_bytes(cx) {
        ops.push(secret("/root/keys.txt", key));
    }
    if c.flavour != Flavour::None {
        ops.push(secret(CLUSTER_ENV, env_file(cx.vars)));
    }
    let (token, agent_token) = k3s_tokens(c, n, cx.state, cx.shared);
    if let Some(t) = token {
        ops.push(secret("/etc/k3s/token", format!("{t}\n")));
    }
    if let Some(t) = agent_token {
        ops.push(secret("/etc/k3s/agent-token", format!("{t}\n")));
    }
    if c.flavour == Flavour::Kubeadm && matches!(n.role, Role::Init | Role::ControlPlane) {
        let pki = cx
            .state
            .pki()
            .ok_or_else(|| Error::refused("cluster state", "has no CA material"))?;
        let d = "/etc/kubernetes/pki";
        for (name, ck) in [
            ("ca", &pki.ca),
            ("front-proxy-ca", &pki.front_proxy_ca),
            ("etcd/ca", &pki.etcd_ca),
        ] {
            ops.push(file(&format!("{d}/{name}.crt"), ck.cert.clone(), 0o644));
            ops.push(secret(&format!("{d}/{name}.key"), ck.key.clone()));
        }
        ops.push(secret(&format!("{d}/sa.key"), pki.sa.key.clone()));
        ops.push(file(&format!("{d}/sa.pub"), pki.sa.public.clone(), 0o644));
    }
    if let Some(addr) = n.address {
        ops.push(address_op(c, n, addr, network));
    }
    if let Some(tz) = &n.timezone {
        let zone = format!("/usr/share/zoneinfo/{tz}");
        if image.stat(&zone)?.is_none() {
            return Err(Error::refused(
                format!("timezone {tz}"),
                format!("the image has no {zone}"),
            ));
        }
        ops.push(file("/etc/timezone", format!("{tz}\n"), 0o644));
        ops.push(Op::Symlink {
            path: "/etc/localtime".into(),
            target: zone,
        });
    }
    let list = firstboot_list(cx, &ops);
    ops.extend(firstboot_ops(&list, cx.vars, c.templates_dir.as_deref())?);
    Ok(ops)
}

/// What the first-boot check verifies on this node (the format is in
/// `templates/common/nodeimg-firstboot.sh`): the hostname, every stamped
/// file that only its owner may read (SSH keys, host key, age key, tokens),
/// and the static addresses of the other nodes, which it pings.
fn firstboot_list(cx: &NodeContext<'_>, ops: &[Op]) -> String {
    let mut s = format!("hostname {}\n", cx.node.hostname);
    for op in ops {
        if let Op::File {
            path,
            mode,
            uid,
            gid,
            secret,
            ..
        } = op
        {
            if (*secret || mode & 0o077 == 0) && !path.contains(char::is_whitespace) {
                s.push_str(&format!("file {mode:o} {uid} {gid} {path}\n"));
            }
        }
    }
    for peer in &cx.cluster.nodes {
        if let (Some(a), true) = (peer.address, peer.hostname != cx.node.hostname) {
            s.push_str(&format!("peer {}\n", a.addr()));
        }
    }
    s
}

/// The password hash: in `/etc/shadow` when the user exists (the whole
/// file, marked secret, owner kept, group and other bits cleared), else RPi OS's
/// `userconf.txt`, which creates the user at first boot.
fn password_op(image: &OsImage, user: &str, hash: &str, exists: bool, rpi: bool) -> Result<Op> {
    if !exists {
        if rpi {
            return Ok(secret(
                "/boot/firmware/userconf.txt",
                format!("{user}:{hash}\n"),
            ));
        }
        return Err(Error::refused(
            format!("user {user}"),
            "not in the image's /etc/passwd: cannot set its password",
        ));
    }
    let shadow = image
        .read("/etc/shadow")?
        .ok_or_else(|| Error::refused("/etc/shadow", "missing: cannot set a password"))?;
    let text =
        String::from_utf8(shadow).map_err(|_| Error::refused("/etc/shadow", "not UTF-8 text"))?;
    let prefix = format!("{user}:");
    let mut found = false;
    let mut out = String::with_capacity(text.len() + hash.len());
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(&prefix) {
            // Field 2 is the hash; the ageing fields stay as they are.
            let after = rest.split_once(':').map_or("", |(_, a)| a);
            out.push_str(&format!("{user}:{hash}:{after}"));
            found = true;
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    if !found {
        out.push_str(&format!("{user}:{hash}:::::::\n"));
    }
    let st = image
        .stat("/etc/shadow")?
        .ok_or_else(|| Error::refused("/etc/shadow", "missing"))?;
    Ok(Op::File {
        path: "/etc/shadow".into(),
        data: out.into_bytes(),
        // Secret files are never group-readable: 0640 root:shadow becomes
        // 0600 (root-run sshd, login, su and sudo still read it).
        mode: st.mode.unwrap_or(0o600) & 0o700,
        uid: st.uid.unwrap_or(0),
        gid: st.gid.unwrap_or(0),
        secret: true,
    })
}

/// A name-based UUID for the node's connection, so reruns give the same
/// bytes.
fn connection_uuid(cluster: &str, host: &str) -> String {
    let d = Sha256::digest(format!("nodeimg connection {cluster} {host}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x50; // version 5-like (name-based)
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The static address, in the OS's network configuration.
fn address_op(c: &Cluster, n: &Node, addr: IpNet, network: Network) -> Op {
    let v6 = matches!(addr, IpNet::V6(_));
    let dns: Vec<String> = n.dns.iter().map(|d| d.to_string()).collect();
    match network {
        Network::NetworkManager => {
            let mut s = format!(
                "# Written by nodeimg stamp: {}'s static address.\n[connection]\nid=nodeimg\nuuid={}\ntype=ethernet\nautoconnect=true\nautoconnect-priority=100\n\n[ethernet]\n\n",
                n.hostname,
                connection_uuid(&c.name, &n.hostname)
            );
            let (fam, other) = if v6 {
                ("ipv6", "ipv4")
            } else {
                ("ipv4", "ipv6")
            };
            s.push_str(&format!("[{fam}]\nmethod=manual\naddress1={addr}"));
            if let Some(g) = n.gateway {
                s.push_str(&format!(",{g}"));
            }
            s.push('\n');
            if !dns.is_empty() {
                s.push_str(&format!("dns={};\n", dns.join(";")));
            }
            s.push_str(&format!(
                "\n[{other}]\nmethod={}\n",
                if v6 { "disabled" } else { "auto" }
            ));
            // NetworkManager ignores a keyfile unless it is root's and 0600;
            // it holds nothing secret.
            Op::File {
                path: "/etc/NetworkManager/system-connections/nodeimg.nmconnection".into(),
                data: s.into_bytes(),
                mode: 0o600,
                uid: 0,
                gid: 0,
                secret: false,
            }
        }
        Network::Networkd => {
            let mut s = format!(
                "# Written by nodeimg stamp: {}'s static address.\n[Match]\nType=ether\n\n[Network]\nAddress={addr}\n",
                n.hostname
            );
            if let Some(g) = n.gateway {
                s.push_str(&format!("Gateway={g}\n"));
            }
            for d in &dns {
                s.push_str(&format!("DNS={d}\n"));
            }
            file("/etc/systemd/network/10-nodeimg.network", s, 0o644)
        }
        Network::Ifupdown => {
            let mut s = format!(
                "# Written by nodeimg stamp: {}'s static address.\nauto eth0\niface eth0 {} static\n    address {addr}\n",
                n.hostname,
                if v6 { "inet6" } else { "inet" }
            );
            if let Some(g) = n.gateway {
                s.push_str(&format!("    gateway {g}\n"));
            }
            if !dns.is_empty() {
                s.push_str(&format!("    dns-nameservers {}\n", dns.join(" ")));
            }
            file("/etc/network/interfaces.d/nodeimg", s, 0o644)
        }
    }
}

/// NixOS: only paths NixOS leaves alone; the base's `nodeimg.nix` reads
/// them at boot.
fn nixos_ops(cx: &NodeContext<'_>) -> Result<Vec<Op>> {
    let (c, n) = (cx.cluster, cx.node);
    if n.password.is_some() {
        return Err(Error::refused(
            format!("node {}: password", n.hostname),
            "NixOS sets passwords in its configuration (users.users.<name>.hashedPassword); remove password from the cluster file",
        ));
    }
    if c.flavour == Flavour::Kubeadm {
        return Err(Error::refused(
            "flavour kubeadm on NixOS",
            "not supported: nodeimg.nix bootstraps k3s; use flavour k3s or k3s-agent",
        ));
    }
    let s = NIXOS_STATE;
    let mut ops = vec![
        file("/etc/hostname", format!("{}\n", n.hostname), 0o644),
        file(&format!("{s}/role"), format!("{}\n", n.role.name()), 0o644),
        file(
            &format!("{s}/address"),
            n.address
                .map(|a| format!("{}\n", a.addr()))
                .unwrap_or_default(),
            0o644,
        ),
        file(&format!("{s}/cluster.nix"), cluster_nix(c), 0o644),
    ];
    if n.role != Role::Init && matches!(c.flavour, Flavour::K3s | Flavour::K3sAgent) {
        ops.push(file(
            &format!("{s}/server-url"),
            format!("{}\n", k3s_url(c)),
            0o644,
        ));
    }
    let (token, agent_token) = k3s_tokens(c, n, cx.state, cx.shared);
    // The module starts k3s when k3s-token exists; an agent's is the agent
    // token, so no agent ever holds the server token.
    match (&token, &agent_token) {
        (Some(t), _) => ops.push(secret(&format!("{s}/k3s-token"), format!("{t}\n"))),
        (None, Some(a)) => ops.push(secret(&format!("{s}/k3s-token"), format!("{a}\n"))),
        (None, None) => {}
    }
    if let Some(a) = &agent_token {
        ops.push(secret(&format!("{s}/k3s-agent-token"), format!("{a}\n")));
    }
    if let Some(user) = &n.user {
        if !n.ssh_keys.is_empty() {
            ops.push(file(
                &format!("{s}/authorized_keys/{user}"),
                authorized_keys(n),
                0o644,
            ));
        }
    }
    if n.ssh_host_keys {
        if let Some(k) = cx.state.host_key(&n.hostname) {
            // services.openssh.hostKeys' default path, outside /etc/static.
            ops.push(secret("/etc/ssh/ssh_host_ed25519_key", k.private.clone()));
            ops.push(file(
                "/etc/ssh/ssh_host_ed25519_key.pub",
                format!("{}\n", k.public),
                0o644,
            ));
        }
    }
    if let Some(key) = age_key_bytes(cx) {
        ops.push(secret("/var/lib/sops-nix/key.txt", key));
    }
    Ok(ops)
}

/// `cluster.nix` for the cluster: control planes (init, control-plane,
/// server) and workers (worker, agent), in file order.
pub fn cluster_nix(c: &Cluster) -> String {
    let entry = |n: &Node| (n.hostname.clone(), n.address.map(|a| a.addr().to_string()));
    let cp: Vec<_> = c
        .nodes
        .iter()
        .filter(|n| matches!(n.role, Role::Init | Role::ControlPlane | Role::Server))
        .map(entry)
        .collect();
    let workers: Vec<_> = c
        .nodes
        .iter()
        .filter(|n| !matches!(n.role, Role::Init | Role::ControlPlane | Role::Server))
        .map(entry)
        .collect();
    crate::templates::cluster_nix(&c.name, &cp, &workers)
}
