//! The LAN's leases, decided before any guest starts. Each node's network
//! is read from what `nodeimg stamp` wrote into its first-boot list
//! (`address`, `gateway`, `dns` lines, docs/firstboot.md): a node with a
//! static address keeps it; every other node gets a fixed address in the
//! static nodes' subnet (or [`DEFAULT_SUBNET`]) that nothing else uses,
//! keyed by the MAC nodeimg gives its LAN NIC.

use crate::frame::Mac;
use anyhow::{bail, Result};
use ipnet::{IpNet, Ipv4Net};
use pipeline::customise::{LineEdit, Op};
use pipeline::templates::FIRSTBOOT_LIST_PATH;
use std::net::{IpAddr, Ipv4Addr};

/// The subnet of DHCP nodes when no node has a static IPv4 address.
pub const DEFAULT_SUBNET: &str = "192.168.77.0/24";
/// Lease time, seconds: longer than any `nodeimg boot`, so a guest renews
/// (at half of it) only when it chooses to.
pub const LEASE_SECS: u32 = 3600;

/// A node's address as stamped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// The cluster file's `address`.
    Static(IpNet),
    /// No `address`: the node asks DHCP.
    Dhcp,
    /// The image says nothing (stamped before these lines, or not a
    /// Debian-family node): it gets a lease in case it asks.
    Unknown,
}

/// One guest's network as stamped, and its LAN MAC.
#[derive(Debug, Clone)]
pub struct NodeNet {
    pub name: String,
    pub mac: Mac,
    pub address: Address,
    pub gateway: Option<IpAddr>,
    pub dns: Vec<IpAddr>,
}

impl NodeNet {
    /// Reads the `address`, `gateway` and `dns` lines of a first-boot list
    /// (unknown or malformed lines are not this reader's business).
    pub fn from_list(name: &str, mac: Mac, list: Option<&str>) -> NodeNet {
        let mut n = NodeNet {
            name: name.into(),
            mac,
            address: Address::Unknown,
            gateway: None,
            dns: Vec::new(),
        };
        for line in list.unwrap_or_default().lines() {
            let mut w = line.split_whitespace();
            match (w.next(), w.next()) {
                (Some("address"), Some("dhcp")) => n.address = Address::Dhcp,
                (Some("address"), Some(a)) => {
                    if let Ok(a) = a.parse() {
                        n.address = Address::Static(a);
                    }
                }
                (Some("gateway"), Some(g)) => n.gateway = g.parse().ok(),
                (Some("dns"), Some(d)) => n.dns.extend(d.parse::<IpAddr>().ok()),
                _ => {}
            }
        }
        n
    }
}

/// One node's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub mac: Mac,
    pub name: String,
    pub addr: Ipv4Addr,
    /// The node's `gateway` (RFC 2132 §3.5), when IPv4.
    pub router: Option<Ipv4Addr>,
    /// The node's `dns` (RFC 2132 §3.8), its IPv4 ones.
    pub dns: Vec<Ipv4Addr>,
}

/// Everything the server hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub subnet: Ipv4Net,
    /// The server's own address (its identifier, RFC 2132 §9.7).
    pub server: Ipv4Addr,
    pub lease_secs: u32,
    pub leases: Vec<Lease>,
}

impl Plan {
    /// With `--uplink` the way out is QEMU's user-mode NIC: the cluster's
    /// gateway is not on the virtual LAN, and a DHCP router option there
    /// would compete with the uplink's default route.
    pub fn without_routers(mut self) -> Plan {
        for l in &mut self.leases {
            l.router = None;
        }
        self
    }

    /// Lines for a node's first-boot list in its throw-away disk: the other
    /// nodes' leases as peers to ping, as stamp lists static nodes (stamp
    /// cannot: the addresses are known only here).
    pub fn peer_ops(&self, node: &NodeNet) -> Vec<Op> {
        if node.address == Address::Unknown {
            return Vec::new();
        }
        self.leases
            .iter()
            .filter(|l| l.name != node.name)
            .map(|l| Op::Edit {
                path: FIRSTBOOT_LIST_PATH.into(),
                edit: LineEdit::Ensure {
                    line: format!("peer {}", l.addr),
                },
            })
            .collect()
    }
}

fn v4(a: IpAddr) -> Option<Ipv4Addr> {
    match a {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    }
}

/// Leases for every node without a static address; `None` when there is
/// none. The subnet is the first static IPv4 node's; leases are the free
/// addresses from the 100th host on (the low ones are where people put
/// static nodes and gateways), the server the highest free one.
pub fn plan(nodes: &[NodeNet]) -> Result<Option<Plan>> {
    if nodes
        .iter()
        .all(|n| matches!(n.address, Address::Static(_)))
    {
        return Ok(None);
    }
    let statics: Vec<Ipv4Net> = nodes
        .iter()
        .filter_map(|n| match n.address {
            Address::Static(IpNet::V4(a)) => Some(a),
            _ => None,
        })
        .collect();
    let subnet = match statics.first() {
        Some(a) => a.trunc(),
        None => DEFAULT_SUBNET.parse()?,
    };
    let mut used: Vec<Ipv4Addr> = statics.iter().map(|a| a.addr()).collect();
    used.extend(nodes.iter().filter_map(|n| n.gateway.and_then(v4)));
    used.extend(
        nodes
            .iter()
            .flat_map(|n| n.dns.iter().filter_map(|d| v4(*d))),
    );
    let hosts: Vec<Ipv4Addr> = subnet.hosts().collect();
    let wanted = nodes
        .iter()
        .filter(|n| !matches!(n.address, Address::Static(_)))
        .count();
    let start = if hosts.len() >= 200 { 99 } else { 0 };
    let mut free = hosts[start..]
        .iter()
        .chain(&hosts[..start])
        .filter(|a| !used.contains(a));
    let mut leases = Vec::new();
    for n in nodes {
        if matches!(n.address, Address::Static(_)) {
            continue;
        }
        let Some(addr) = free.next() else {
            bail!(
                "the LAN's subnet {subnet} has no free address for node {} ({wanted} DHCP nodes and the DHCP server need one each)",
                n.name
            );
        };
        leases.push(Lease {
            mac: n.mac,
            name: n.name.clone(),
            addr: *addr,
            router: n.gateway.and_then(v4).filter(|g| subnet.contains(g)),
            dns: n.dns.iter().filter_map(|d| v4(*d)).collect(),
        });
    }
    let taken: Vec<Ipv4Addr> = leases.iter().map(|l| l.addr).collect();
    let Some(server) = hosts
        .iter()
        .rev()
        .find(|a| !used.contains(a) && !taken.contains(a))
    else {
        bail!("the LAN's subnet {subnet} has no free address for the DHCP server");
    };
    Ok(Some(Plan {
        subnet,
        server: *server,
        lease_secs: LEASE_SECS,
        leases,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: u8, list: &str) -> NodeNet {
        NodeNet::from_list(&format!("n{i}"), [0x52, 0x54, 0, 0x4e, 0, i], Some(list))
    }

    #[test]
    fn dhcp_nodes_get_free_addresses_in_the_static_subnet() {
        let nodes = [
            node(0, "hostname n0\naddress 10.77.0.100/24\ngateway 10.77.0.254\n"),
            node(1, "hostname n1\naddress dhcp\ngateway 10.77.0.254\ndns 10.77.0.254\ndns 2001:db8::1\n"),
            node(2, "address dhcp\n"),
        ];
        let p = plan(&nodes).unwrap().unwrap();
        assert_eq!(p.subnet, "10.77.0.0/24".parse::<Ipv4Net>().unwrap());
        // .100 is the static node's, .254 the gateway: neither is handed out.
        let addrs: Vec<String> = p.leases.iter().map(|l| l.addr.to_string()).collect();
        assert_eq!(addrs, ["10.77.0.101", "10.77.0.102"]);
        assert_eq!(p.server, Ipv4Addr::new(10, 77, 0, 253));
        assert_eq!(p.leases[0].name, "n1");
        assert_eq!(p.leases[0].mac, nodes[1].mac);
        assert_eq!(p.leases[0].router, Some(Ipv4Addr::new(10, 77, 0, 254)));
        assert_eq!(p.leases[0].dns, [Ipv4Addr::new(10, 77, 0, 254)]);
        assert_eq!(p.leases[1].router, None);
        let p = p.without_routers();
        assert!(p.leases.iter().all(|l| l.router.is_none()));
        assert_eq!(
            p.leases[0].dns,
            [Ipv4Addr::new(10, 77, 0, 254)],
            "DNS stays"
        );
    }

    #[test]
    fn no_dhcp_node_no_server_and_no_static_node_the_default_subnet() {
        assert_eq!(plan(&[node(0, "address 10.0.0.1/24")]).unwrap(), None);
        let p = plan(&[node(0, "address dhcp"), node(1, "")])
            .unwrap()
            .unwrap();
        assert_eq!(p.subnet.to_string(), DEFAULT_SUBNET);
        assert_eq!(p.leases.len(), 2, "a node that says nothing gets one too");
        assert_eq!(p.leases[0].addr, Ipv4Addr::new(192, 168, 77, 100));
        assert_eq!(p.server, Ipv4Addr::new(192, 168, 77, 254));
    }

    #[test]
    fn a_small_subnet_fills_from_the_bottom_and_then_refuses() {
        let p = plan(&[node(0, "address 10.1.1.1/29"), node(1, "address dhcp")])
            .unwrap()
            .unwrap();
        // /29: hosts .1 (static) to .6.
        assert_eq!(p.leases[0].addr, Ipv4Addr::new(10, 1, 1, 2));
        assert_eq!(p.server, Ipv4Addr::new(10, 1, 1, 6));
        let e = plan(&[
            node(0, "address 10.1.1.1/30"),
            node(1, "address dhcp"),
            node(2, "address dhcp"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("no free address for node n2"), "{e}");
        // Room for the lease but not for the server.
        let e = plan(&[node(0, "address 10.1.1.1/30"), node(1, "address dhcp")]).unwrap_err();
        assert!(e.to_string().contains("for the DHCP server"), "{e}");
    }

    #[test]
    fn peers_are_the_other_nodes_leases() {
        let nodes = [
            node(0, "address 10.77.0.1/24"),
            node(1, "address dhcp"),
            node(2, "address dhcp"),
            node(3, ""),
        ];
        let p = plan(&nodes).unwrap().unwrap();
        let lines = |n: &NodeNet| -> Vec<String> {
            p.peer_ops(n)
                .into_iter()
                .map(|o| match o {
                    Op::Edit {
                        edit: LineEdit::Ensure { line },
                        ..
                    } => line,
                    o => panic!("{o:?}"),
                })
                .collect()
        };
        assert_eq!(
            lines(&nodes[0]),
            ["peer 10.77.0.100", "peer 10.77.0.101", "peer 10.77.0.102"]
        );
        assert_eq!(lines(&nodes[1]), ["peer 10.77.0.101", "peer 10.77.0.102"]);
        assert!(lines(&nodes[3]).is_empty(), "no list to add to");
    }

    #[test]
    fn malformed_lines_are_ignored() {
        let n = node(0, "address\naddress 300.1.1.1/24\ngateway x\ndns\n\0\u{7f}");
        assert_eq!(n.address, Address::Unknown);
        assert_eq!((n.gateway, n.dns.len()), (None, 0));
    }
}
