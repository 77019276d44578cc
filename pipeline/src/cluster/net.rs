//! Addresses, prefixes and endpoints as the cluster file writes them.

use ipnet::IpNet;
use std::fmt;
use std::net::IpAddr;

/// `host:port` of the Kubernetes API (`192.168.1.10:6443`,
/// `k8s.lan:6443`, `[fd00::10]:6443`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// Parses `host:port`; a missing port is 6443.
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("`{s}`: `[` without `]`"))?;
            h.parse::<std::net::Ipv6Addr>()
                .map_err(|_| format!("`{h}` is not an IPv6 address"))?;
            match after.strip_prefix(':') {
                Some(p) => (h.to_string(), Some(p)),
                None if after.is_empty() => (h.to_string(), None),
                None => return Err(format!("`{s}`: expected `[address]:port`")),
            }
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (s.to_string(), None),
            }
        };
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("`{p}` is not a port number (1-65535)"))?,
            None => 6443,
        };
        if host.parse::<IpAddr>().is_err() && !super::validate::is_dns_name(&host) {
            return Err(format!("`{host}` is neither an IP address nor a DNS name"));
        }
        Ok(Endpoint { host, port })
    }

    /// The host as an address, when it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A node's address with its prefix (`192.168.1.10/24`): host bits set,
/// not the network or broadcast address of its prefix.
pub fn parse_host_address(s: &str) -> Result<IpNet, String> {
    let net: IpNet = s
        .parse()
        .map_err(|_| format!("`{s}` is not an address with a prefix, like 192.168.1.10/24"))?;
    let single = matches!(
        (net, net.prefix_len()),
        (IpNet::V4(_), 31..=32) | (IpNet::V6(_), 127..=128)
    );
    if !single && net.addr() == net.network() {
        return Err(format!(
            "`{s}` is the network address of {}, not a host in it",
            net.trunc()
        ));
    }
    if !single && matches!(net, IpNet::V4(_)) && net.addr() == net.broadcast() {
        return Err(format!("`{s}` is the broadcast address of {}", net.trunc()));
    }
    Ok(net)
}

/// A range (`10.244.64.0/18`): no host bits set.
pub fn parse_subnet(s: &str) -> Result<IpNet, String> {
    let net: IpNet = s
        .parse()
        .map_err(|_| format!("`{s}` is not a CIDR range, like 10.244.0.0/16"))?;
    if net != net.trunc() {
        return Err(format!(
            "`{s}` has host bits set; the range is {}",
            net.trunc()
        ));
    }
    Ok(net)
}

/// Whether two ranges share an address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::parse("192.168.1.10:6443").unwrap(),
            Endpoint {
                host: "192.168.1.10".into(),
                port: 6443
            }
        );
        assert_eq!(Endpoint::parse("k8s.lan").unwrap().port, 6443);
        assert_eq!(
            Endpoint::parse("[fd00::1]:443").unwrap().to_string(),
            "[fd00::1]:443"
        );
        assert!(Endpoint::parse("host:0").is_err());
        assert!(Endpoint::parse("host:99999").is_err());
        assert!(Endpoint::parse("bad_host:1").is_err());
    }

    #[test]
    fn addresses_and_ranges() {
        assert!(parse_host_address("192.168.1.10/24").is_ok());
        assert!(parse_host_address("192.168.1.0/24").is_err());
        assert!(parse_host_address("192.168.1.255/24").is_err());
        assert!(parse_host_address("192.168.1.10").is_err());
        assert!(parse_subnet("10.244.64.0/18").is_ok());
        assert!(parse_subnet("10.244.64.1/18").is_err());
        let a = parse_subnet("10.244.0.0/16").unwrap();
        let b = parse_subnet("10.244.64.0/18").unwrap();
        let c = parse_subnet("10.96.0.0/12").unwrap();
        assert!(overlaps(&a, &b) && overlaps(&b, &a) && !overlaps(&a, &c));
    }
}
