//! The Ethernet frames the LAN's DHCP server reads and writes: ARP
//! (RFC 826) and DHCP over UDP/IPv4 (RFC 2131 §4.1: clients send from port
//! 68 to port 67). Decoding and encoding are etherparse's; this module only
//! picks out what the server needs and never panics on a guest's bytes.

use etherparse::{
    ArpEthIpv4Packet, ArpOperation, ArpPacket, LinkSlice, NetSlice, PacketBuilder, SlicedPacket,
    TransportSlice,
};
use std::net::Ipv4Addr;

/// A MAC address.
pub type Mac = [u8; 6];

/// Ethernet broadcast.
pub const BROADCAST_MAC: Mac = [0xff; 6];

/// The UDP port a DHCP server listens on (RFC 2131 §4.1).
pub const SERVER_PORT: u16 = 67;
/// The UDP port a DHCP client listens on (RFC 2131 §4.1).
pub const CLIENT_PORT: u16 = 68;

/// What the server cares about in a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// An ARP request: who has `target`? tell `sender_ip` at `sender_mac`.
    ArpRequest {
        sender_mac: Mac,
        sender_ip: Ipv4Addr,
        target: Ipv4Addr,
    },
    /// A UDP datagram to the DHCP server port, from the DHCP client port.
    Dhcp {
        src_mac: Mac,
        dst_ip: Ipv4Addr,
        payload: &'a [u8],
    },
}

/// Picks an ARP request or a client-to-server DHCP datagram out of a frame;
/// `None` for anything else, malformed frames included.
pub fn parse(frame: &[u8]) -> Option<Incoming<'_>> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(LinkSlice::Ethernet2(eth)) = &p.link else {
        return None;
    };
    let src_mac = eth.source();
    match (&p.net, &p.transport) {
        (Some(NetSlice::Arp(arp)), _) => {
            let a = ArpEthIpv4Packet::try_from(arp.to_packet()).ok()?;
            if a.operation != ArpOperation::REQUEST || a.sender_mac != src_mac {
                return None;
            }
            Some(Incoming::ArpRequest {
                sender_mac: a.sender_mac,
                sender_ip: a.sender_ipv4_addr(),
                target: a.target_ipv4_addr(),
            })
        }
        (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Udp(udp))) => {
            if udp.source_port() != CLIENT_PORT || udp.destination_port() != SERVER_PORT {
                return None;
            }
            // A fragment cannot be a whole DHCP message (RFC 2131 §2: 576
            // octets fit any link); etherparse leaves fragments undecoded.
            if ip.is_payload_fragmented() {
                return None;
            }
            Some(Incoming::Dhcp {
                src_mac,
                dst_ip: Ipv4Addr::from(ip.header().destination()),
                payload: udp.payload(),
            })
        }
        _ => None,
    }
}

/// The shortest Ethernet frame without its FCS (IEEE 802.3: 64 octets
/// with it); a NIC pads shorter ones, and so does this server.
const MIN_FRAME: usize = 60;

/// An ARP reply: `ip` is at `mac`, told to the asker.
pub fn arp_reply(mac: Mac, ip: Ipv4Addr, to_mac: Mac, to_ip: Ipv4Addr) -> Option<Vec<u8>> {
    let arp: ArpPacket = ArpEthIpv4Packet {
        operation: ArpOperation::REPLY,
        sender_mac: mac,
        sender_ipv4: ip.octets(),
        target_mac: to_mac,
        target_ipv4: to_ip.octets(),
    }
    .into();
    let mut out = Vec::new();
    PacketBuilder::ethernet2(mac, to_mac)
        .arp(arp)
        .write(&mut out)
        .ok()?;
    if out.len() < MIN_FRAME {
        out.resize(MIN_FRAME, 0);
    }
    Some(out)
}

/// A UDP datagram from the server port to the client port.
pub fn udp_to_client(
    src_mac: Mac,
    src_ip: Ipv4Addr,
    dst_mac: Mac,
    dst_ip: Ipv4Addr,
    payload: &[u8],
) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src_ip.octets(), dst_ip.octets(), 64)
        .udp(SERVER_PORT, CLIENT_PORT)
        .write(&mut out, payload)
        .ok()?;
    Some(out)
}

/// A UDP datagram from a client (for tests and the fuzz target's seeds).
pub fn udp_from_client(
    src_mac: Mac,
    src_ip: Ipv4Addr,
    dst_mac: Mac,
    dst_ip: Ipv4Addr,
    ports: (u16, u16),
    payload: &[u8],
) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src_ip.octets(), dst_ip.octets(), 64)
        .udp(ports.0, ports.1)
        .write(&mut out, payload)
        .ok()?;
    Some(out)
}

/// An ARP request (for tests).
pub fn arp_request(mac: Mac, ip: Ipv4Addr, target: Ipv4Addr) -> Option<Vec<u8>> {
    let arp: ArpPacket = ArpEthIpv4Packet {
        operation: ArpOperation::REQUEST,
        sender_mac: mac,
        sender_ipv4: ip.octets(),
        target_mac: [0; 6],
        target_ipv4: target.octets(),
    }
    .into();
    let mut out = Vec::new();
    PacketBuilder::ethernet2(mac, BROADCAST_MAC)
        .arp(arp)
        .write(&mut out)
        .ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = [0x52, 0x54, 0, 0x4e, 0, 1];

    #[test]
    fn dhcp_datagrams_are_picked_out() {
        let f = udp_from_client(
            A,
            Ipv4Addr::UNSPECIFIED,
            BROADCAST_MAC,
            Ipv4Addr::BROADCAST,
            (68, 67),
            b"hello",
        )
        .unwrap();
        assert_eq!(
            parse(&f),
            Some(Incoming::Dhcp {
                src_mac: A,
                dst_ip: Ipv4Addr::BROADCAST,
                payload: b"hello"
            })
        );
    }

    #[test]
    fn other_ports_and_truncations_are_ignored() {
        for ports in [(67, 67), (68, 68), (5353, 67), (68, 53)] {
            let f = udp_from_client(
                A,
                Ipv4Addr::UNSPECIFIED,
                BROADCAST_MAC,
                Ipv4Addr::BROADCAST,
                ports,
                b"x",
            )
            .unwrap();
            assert_eq!(parse(&f), None, "{ports:?}");
        }
        let f = udp_from_client(
            A,
            Ipv4Addr::UNSPECIFIED,
            BROADCAST_MAC,
            Ipv4Addr::BROADCAST,
            (68, 67),
            &[0; 300],
        )
        .unwrap();
        for n in 0..f.len() - 300 {
            assert_eq!(parse(&f[..n]), None, "cut at {n}");
        }
    }

    #[test]
    fn arp_requests_are_picked_out_and_answered() {
        let me = Ipv4Addr::new(10, 0, 0, 254);
        let asker = Ipv4Addr::new(10, 0, 0, 5);
        let f = arp_request(A, asker, me).unwrap();
        assert_eq!(
            parse(&f),
            Some(Incoming::ArpRequest {
                sender_mac: A,
                sender_ip: asker,
                target: me
            })
        );
        let server = [2, 0, 0, 0, 0, 1];
        let r = arp_reply(server, me, A, asker).unwrap();
        assert_eq!(r.len(), MIN_FRAME, "padded");
        // A reply is not a request: the server never answers itself.
        assert_eq!(parse(&r), None);
        let p = SlicedPacket::from_ethernet(&r).unwrap();
        let Some(NetSlice::Arp(a)) = p.net else {
            panic!("not ARP")
        };
        let a = ArpEthIpv4Packet::try_from(a.to_packet()).unwrap();
        assert_eq!(a.operation, ArpOperation::REPLY);
        assert_eq!((a.sender_mac, a.sender_ipv4_addr()), (server, me));
        assert_eq!((a.target_mac, a.target_ipv4_addr()), (A, asker));
    }
}
