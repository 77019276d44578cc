//! The node's own files (DESIGN §6): identity, keys, secrets, address, as
//! operations for the one executor. This is the single answer to "where is
//! the hostname written" for each OS profile.

use super::vars::{env_file, k3s_tokens, k3s_url, Shared, CLUSTER_ENV};
use crate::cluster::{AgeKeySource, Cluster, Interface, Node, Password};
use crate::customise::{LineEdit, Op};
use crate::flavour::{Flavour, Role};
use crate::os::{Network, OsFiles, OsProfile};
use crate::osimage::OsImage;
use crate::secrets::State;
use crate::templates::{firstboot_ops, nixos_firstboot_ops, Vars};
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
    check_mdns(c, image)?;
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
    if c.hosts {
        for other in &c.nodes {
            if let Some(a) = other.address {
                ops.push(Op::Edit {
                    path: "/etc/hosts".into(),
                    edit: LineEdit::Set {
                        prefix: format!("{}\t", a.addr()),
                        line: format!("{}\t{} {}.local", a.addr(), other.hostname, other.hostname),
                    },
                });
            }
        }
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
            cloud_cfg(n.ssh_host_keys),
            0o644,
        ));
    }
    ops.extend(first_boot_ops(cx, image)?);
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
            // The stamped key is the node's only one: keys the image
            // carries would be shared by every card made from it.
            ops.push(Op::RemoveGlob {
                dir: "/etc/ssh".into(),
                pattern: "ssh_host_*".into(),
            });
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
    ops.extend(k3s_ca_ops(cx));
    ops.extend(deploy_key_ops(cx)?);
    if let Some(addr) = n.address {
        ops.push(address_op(c, n, addr, network));
    } else {
        ops.extend(dhcp_op(n, image, network)?);
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
    // The node's network as stamped: `nodeimg boot` reads it to give the
    // DHCP nodes of a LAN their leases, and the check reports the address.
    match cx.node.address {
        Some(a) => s.push_str(&format!("address {a}\n")),
        None => s.push_str("address dhcp\n"),
    }
    if let Some(g) = cx.node.gateway {
        s.push_str(&format!("gateway {g}\n"));
    }
    for d in &cx.node.dns {
        s.push_str(&format!("dns {d}\n"));
    }
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

/// An `api_endpoint` in `.local` is resolved by mDNS: on Debian that takes
/// avahi-daemon (answering for the init node) and libnss-mdns (the
/// `mdns4_minimal` entry of the `hosts:` line of /etc/nsswitch.conf, which
/// its package adds). Without them joins wait on a name nobody resolves.
fn check_mdns(c: &Cluster, image: &OsImage) -> Result<()> {
    let Some(e) = &c.api_endpoint else {
        return Ok(());
    };
    if c.flavour == Flavour::None || !e.host.to_ascii_lowercase().ends_with(".local") {
        return Ok(());
    }
    let nss = image
        .read("/etc/nsswitch.conf")?
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let nss_mdns = nss
        .lines()
        .any(|l| l.trim_start().starts_with("hosts:") && l.contains("mdns"));
    let avahi = image.stat("/usr/sbin/avahi-daemon")?.is_some();
    if nss_mdns && avahi {
        return Ok(());
    }
    let missing: Vec<&str> = [(!avahi, "avahi-daemon"), (!nss_mdns, "libnss-mdns")]
        .into_iter()
        .filter_map(|(m, p)| m.then_some(p))
        .collect();
    Err(Error::refused(
        format!("api_endpoint {e}"),
        format!(
            "is an mDNS name, but the base cannot resolve .local names (no {}): install avahi-daemon and libnss-mdns in the base (a [base] provision script: apt-get install -y avahi-daemon libnss-mdns), or use an address",
            missing.join(", no ")
        ),
    ))
}

/// cloud-init's system configuration for a stamped node. cloud-init's `ssh`
/// module (canonical/cloud-init cloudinit/config/cc_ssh.py) deletes every
/// `/etc/ssh/ssh_host_*` unless `ssh_deletekeys` is false and makes the
/// `ssh_genkeytypes` it is given (default rsa, ecdsa, ed25519), once per
/// instance; `set_hostname`/`update_hostname` leave the hostname alone with
/// `preserve_hostname`, `update_etc_hosts` leaves /etc/hosts alone unless
/// `manage_etc_hosts`.
fn cloud_cfg(host_keys: bool) -> String {
    let mut s = String::from(
        "# Written by nodeimg stamp: the hostname and /etc/hosts are the node's own.\npreserve_hostname: true\nmanage_etc_hosts: false\n",
    );
    if host_keys {
        s.push_str(
            "# The stamped SSH host key is the node's own: neither deleted nor replaced.\nssh_deletekeys: false\nssh_genkeytypes: []\n",
        );
    }
    s
}

/// Where a unit the image ships lives, if it does.
fn shipped_unit(image: &OsImage, unit: &str) -> Result<bool> {
    for dir in [
        "/usr/lib/systemd/system",
        "/lib/systemd/system",
        "/etc/systemd/system",
    ] {
        if image.stat(&format!("{dir}/{unit}"))?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Drop-in ordering nodeimg's bootstrap after the OS's own first boot.
pub const BOOTSTRAP_ORDER_DROPIN: &str =
    "/etc/systemd/system/nodeimg-bootstrap.service.d/10-after-first-boot.conf";

/// What keeps the stamped identity through Raspberry Pi OS's first boot:
/// - `regenerate_ssh_host_keys.service` (RPi-Distro/raspberrypi-sys-mods,
///   enabled by pi-gen's stage2/01-sys-tweaks) deletes every host key and
///   runs `ssh-keygen -A`: masked when stamp writes a host key (a mask also
///   wins over the presets a systemd first boot applies);
/// - userconf-pi's `userconfig.service` asks for a user and password on
///   first boot unless `userconf.txt` names one: masked when the cluster
///   file's password went into `/etc/shadow` (with `userconf.txt` the
///   service runs and creates the user without asking);
/// - the NoCloud `user-data` on the boot partition (Raspberry Pi Imager 2
///   writes it) overrides `/etc/cloud/cloud.cfg.d`, so the same decisions go
///   there, as top-level keys;
/// - the role bootstrap starts after cloud-init's last stage and the first
///   boot resize (`rpi-resize.service`), whichever the image has.
fn first_boot_ops(cx: &NodeContext<'_>, image: &OsImage) -> Result<Vec<Op>> {
    let n = cx.node;
    let mut ops = Vec::new();
    let stamped_key = n.ssh_host_keys && cx.state.host_key(&n.hostname).is_some();
    if stamped_key && shipped_unit(image, "regenerate_ssh_host_keys.service")? {
        ops.push(Op::Mask {
            unit: "regenerate_ssh_host_keys.service".into(),
        });
    }
    if let Some(user) = &n.user {
        let in_shadow = n.password.is_some() && image.user(user)?.is_some();
        if in_shadow && shipped_unit(image, "userconfig.service")? {
            ops.push(Op::Mask {
                unit: "userconfig.service".into(),
            });
        }
    }
    for seed in ["/boot/firmware/user-data", "/boot/user-data"] {
        let Some(text) = image.read(seed)? else {
            continue;
        };
        let text = String::from_utf8_lossy(&text);
        let mut keys = vec![
            ("hostname", n.hostname.clone()),
            ("preserve_hostname", "true".to_string()),
            ("manage_etc_hosts", "false".to_string()),
        ];
        if stamped_key {
            keys.push(("ssh_deletekeys", "false".into()));
            keys.push(("ssh_genkeytypes", "[]".into()));
        }
        if let Some(user) = &n.user {
            if image.user(user)?.is_some() {
                // cloud-init's users module updates users that exist: it
                // sets `plain_text_passwd`/`hashed_passwd` and locks the
                // password unless `lock_passwd: false` (cloudinit/distros
                // Distro.create_user). This list replaces the image's
                // (pi-gen's 99_default.cfg), so the stamped password stays.
                keys.push(("users", format!("[{{name: {user}, lock_passwd: false}}]")));
            }
        }
        for (key, value) in keys {
            let prefix = format!("{key}:");
            // A key set by a block (the value on the lines below) cannot
            // be replaced line by line.
            let mut lines = text.lines();
            while let Some(l) = lines.next() {
                if l.starts_with(&prefix)
                    && l[prefix.len()..].trim().is_empty()
                    && lines.next().is_some_and(|nx| nx.starts_with([' ', '-']))
                {
                    return Err(Error::refused(
                        seed,
                        format!("sets {key} as a block; nodeimg stamp sets it on one line (write it as `{key}: …` in the base)"),
                    ));
                }
            }
            ops.push(Op::Edit {
                path: seed.into(),
                edit: LineEdit::Set {
                    prefix,
                    line: format!("{key}: {value}"),
                },
            });
        }
    }
    if cx.cluster.flavour != Flavour::None {
        let mut after = Vec::new();
        for u in ["cloud-final.service", "rpi-resize.service"] {
            if shipped_unit(image, u)? {
                after.push(u);
            }
        }
        if !after.is_empty() {
            ops.push(file(
                BOOTSTRAP_ORDER_DROPIN,
                format!(
                    "# Written by nodeimg stamp: the role bootstrap starts after the OS's own\n# first boot (cloud-init, the root partition resize).\n[Unit]\nAfter={}\n",
                    after.join(" ")
                ),
                0o644,
            ));
        }
    }
    Ok(ops)
}

/// The password hash: in `/etc/shadow` when the user exists (the whole
/// file, marked secret, owner kept, group and other bits cleared), else RPi OS's
/// `userconf.txt`, which creates the user at first boot.
/// The k3s CAs on the init server, where k3s uses CA files it finds
/// instead of making its own (docs.k3s.io, "Custom CA certificates"): the
/// server CA is the one the `K10…` tokens pin. Joining servers get the CAs
/// from the cluster's datastore. States made before nodeimg kept a k3s CA
/// have none: their nodes keep plain tokens.
fn k3s_ca_ops(cx: &NodeContext<'_>) -> Vec<Op> {
    let mut ops = Vec::new();
    if cx.cluster.flavour != Flavour::K3s || cx.node.role != Role::Init {
        return ops;
    }
    let Some(k) = cx.state.k3s() else {
        return ops;
    };
    let d = "/var/lib/rancher/k3s/server/tls";
    for (name, ca) in [("server-ca", &k.server_ca), ("client-ca", &k.client_ca)] {
        if let Some(ca) = ca {
            ops.push(file(&format!("{d}/{name}.crt"), ca.cert.clone(), 0o644));
            ops.push(secret(&format!("{d}/{name}.key"), ca.key.clone()));
        }
    }
    ops
}

/// Where the kubeadm init node finds the GitOps deploy key, its public
/// half and the Git host's known_hosts, from which its bootstrap makes
/// Flux's pull secret.
pub const DEPLOY_KEY_PATH: &str = "/etc/nodeimg/flux-deploy-key";
pub const DEPLOY_KEY_PUB_PATH: &str = "/etc/nodeimg/flux-deploy-key.pub";
pub const KNOWN_HOSTS_PATH: &str = "/etc/nodeimg/flux-known-hosts";

/// The GitOps deploy key on the kubeadm init node only: it alone installs
/// Flux, so no other card carries the key.
fn deploy_key_ops(cx: &NodeContext<'_>) -> Result<Vec<Op>> {
    let c = cx.cluster;
    let Some(g) = c.gitops.as_ref().filter(|g| g.deploy_key) else {
        return Ok(Vec::new());
    };
    if c.flavour != Flavour::Kubeadm || cx.node.role != Role::Init {
        return Ok(Vec::new());
    }
    let k = cx
        .state
        .gitops_deploy_key()
        .ok_or_else(|| Error::refused("cluster state", "has no GitOps deploy key"))?;
    let known_hosts = g.known_hosts.clone().ok_or_else(|| {
        Error::refused("cluster.gitops_known_hosts", "missing for the deploy key")
    })?;
    Ok(vec![
        secret(DEPLOY_KEY_PATH, k.private.clone()),
        file(DEPLOY_KEY_PUB_PATH, format!("{}\n", k.public), 0o644),
        file(KNOWN_HOSTS_PATH, known_hosts, 0o644),
    ])
}

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
                "# Written by nodeimg stamp: {}'s static address.\n[connection]\nid=nodeimg\nuuid={}\ntype=ethernet\nautoconnect=true\nautoconnect-priority=100\n{}\n[ethernet]\n{}\n",
                n.hostname,
                connection_uuid(&c.name, &n.hostname),
                match &n.interface {
                    Some(Interface::Name(i)) => format!("interface-name={i}\n"),
                    _ => String::new(),
                },
                match &n.interface {
                    Some(Interface::Mac(m)) => format!("mac-address={}\n", m.to_ascii_uppercase()),
                    _ => String::new(),
                },
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
        Network::Networkd => file(
            "/etc/systemd/network/10-nodeimg.network",
            networkd_file(n, addr),
            0o644,
        ),
        Network::Ifupdown => {
            let mut s = format!(
                "# Written by nodeimg stamp: {}'s static address.\nauto {iface}\niface {iface} {} static\n    address {addr}\n",
                n.hostname,
                if v6 { "inet6" } else { "inet" },
                iface = match &n.interface {
                    Some(Interface::Name(i)) => i.as_str(),
                    _ => "eth0",
                }
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

/// A node without `address` asks DHCP, in the way its OS's network stack
/// expects, unless the base already configures its wired interfaces:
/// - NetworkManager makes an automatic DHCP connection ("Wired connection
///   1") for every Ethernet device no profile names, unless `no-auto-default`
///   says otherwise (NetworkManager.conf(5)): nothing to write.
/// - systemd-networkd configures only links a `.network` file matches
///   (systemd.network(5)); Debian's systemd ships none for Ethernet, so a
///   base without one of its own gets `[Network] DHCP=yes` for its wired
///   links (the same `[Match]` as a static address).
/// - ifupdown brings up only the interfaces /etc/network/interfaces names
///   (interfaces(5)); a base whose file has only `lo` gets `allow-hotplug`
///   plus `inet dhcp` for the node's interface (eth0 unless `interface`).
fn dhcp_op(n: &Node, image: &OsImage, network: Network) -> Result<Option<Op>> {
    match network {
        Network::NetworkManager => Ok(None),
        Network::Networkd => {
            let own = image
                .entries("/etc/systemd/network")?
                .iter()
                .any(|e| e.name.ends_with(".network"));
            if own {
                return Ok(None);
            }
            let mut s = format!(
                "# Written by nodeimg stamp: {} has no static address; it asks DHCP.\n[Match]\n{}\n\n[Network]\nDHCP=yes\n",
                n.hostname,
                networkd_match(n)
            );
            for d in &n.dns {
                s.push_str(&format!("DNS={d}\n"));
            }
            Ok(Some(file(
                "/etc/systemd/network/10-nodeimg.network",
                s,
                0o644,
            )))
        }
        Network::Ifupdown => {
            let text = image
                .read("/etc/network/interfaces")?
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let configured = text.lines().any(|l| {
                let mut w = l.split_whitespace();
                w.next() == Some("iface") && w.next().is_some_and(|i| i != "lo")
            });
            if configured {
                return Ok(None);
            }
            let iface = match &n.interface {
                Some(Interface::Name(i)) => i.as_str(),
                _ => "eth0",
            };
            Ok(Some(file(
                "/etc/network/interfaces.d/nodeimg",
                format!(
                    "# Written by nodeimg stamp: {} has no static address; it asks DHCP.\nallow-hotplug {iface}\niface {iface} inet dhcp\n",
                    n.hostname
                ),
                0o644,
            )))
        }
    }
}

/// The `[Match]` line of the node's networkd unit: its interface by name
/// or MAC, else every wired one.
fn networkd_match(n: &Node) -> String {
    match &n.interface {
        Some(Interface::Name(i)) => format!("Name={i}"),
        Some(Interface::Mac(mac)) => format!("MACAddress={mac}"),
        None => "Type=ether".to_string(),
    }
}

/// A systemd-networkd unit giving the node's interface (by name or MAC,
/// else every wired one) its static address, gateway and DNS.
fn networkd_file(n: &Node, addr: IpNet) -> String {
    let m = networkd_match(n);
    let mut s = format!(
        "# Written by nodeimg stamp: {}'s static address.\n[Match]\n{m}\n\n[Network]\nAddress={addr}\n",
        n.hostname
    );
    if let Some(g) = n.gateway {
        s.push_str(&format!("Gateway={g}\n"));
    }
    for d in &n.dns {
        s.push_str(&format!("DNS={d}\n"));
    }
    s
}

/// `/etc/hosts` lines for every node with an address (`[cluster] hosts`).
pub fn cluster_hosts(c: &Cluster) -> String {
    let mut s = String::new();
    for n in &c.nodes {
        if let Some(a) = n.address {
            s.push_str(&format!(
                "{}\t{} {}.local\n",
                a.addr(),
                n.hostname,
                n.hostname
            ));
        }
    }
    s
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
    ops.extend(k3s_ca_ops(cx));
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
    ops.extend(nixos_identity_ops(c, n));
    let list = firstboot_list(cx, &ops);
    ops.extend(nixos_firstboot_ops(
        &list,
        cx.vars,
        c.templates_dir.as_deref(),
    )?);
    Ok(ops)
}

/// NixOS: what `nodeimg.nix` applies at boot from the stamped files — the
/// host name, the static address (systemd-networkd), /etc/hosts lines, the
/// time zone — and k3s's cluster settings, which k3s reads from its
/// config.yaml.d beside the module's flags (NixOS declares nothing under
/// /etc/rancher unless services.k3s is on, which the module forbids).
fn nixos_identity_ops(c: &Cluster, n: &Node) -> Vec<Op> {
    let s = NIXOS_STATE;
    let mut ops = vec![file(
        &format!("{s}/hostname"),
        format!("{}\n", n.hostname),
        0o644,
    )];
    if let Some(addr) = n.address {
        ops.push(file(
            &format!("{s}/network/10-nodeimg.network"),
            networkd_file(n, addr),
            0o644,
        ));
    }
    if c.hosts {
        ops.push(file(&format!("{s}/hosts"), cluster_hosts(c), 0o644));
    }
    if let Some(tz) = &n.timezone {
        // NixOS's zoneinfo is /etc/zoneinfo (environment.etc.zoneinfo);
        // /etc/localtime is left alone while time.timeZone is null.
        ops.push(Op::Symlink {
            path: "/etc/localtime".into(),
            target: format!("/etc/zoneinfo/{tz}"),
        });
    }
    if matches!(c.flavour, Flavour::K3s) && n.role != Role::Agent {
        let mut y = format!(
            "# Written by nodeimg stamp: {}'s k3s cluster settings.\n",
            n.hostname
        );
        if let Some(p) = c.pod_subnet {
            y.push_str(&format!("cluster-cidr: \"{p}\"\n"));
        }
        if let Some(p) = c.service_subnet {
            y.push_str(&format!("service-cidr: \"{p}\"\n"));
        }
        if let Some(e) = &c.api_endpoint {
            if !e.host.is_empty() {
                y.push_str(&format!("tls-san:\n  - \"{}\"\n", e.host));
            }
        }
        ops.push(file(
            "/etc/rancher/k3s/config.yaml.d/10-nodeimg.yaml",
            y,
            0o644,
        ));
    }
    ops
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
