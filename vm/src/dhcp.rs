//! The DHCP server of the cluster's virtual LAN. It lives in the hub
//! ([`crate::lan`]): it reads every frame a guest sends and answers with
//! frames of its own; nothing listens on an address of the host.
//!
//! Leases are decided before any guest starts ([`crate::dhcp_plan`]): each
//! guest's MAC has one fixed address, so the server never allocates, it only
//! follows RFC 2131's exchanges for that address. Frames from MACs without
//! a lease get no answer. Message encoding is dhcproto's, frames are
//! etherparse's ([`crate::frame`]).

use crate::dhcp_plan::{Lease, Plan};
use crate::frame::{self, Incoming, Mac, BROADCAST_MAC};
use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use serde::Serialize;
use std::net::Ipv4Addr;

/// The server's MAC on the LAN (locally administered, distinct from every
/// guest's `lan::mac`).
pub const SERVER_MAC: Mac = [0x52, 0x54, 0x00, 0x4e, 0xff, 0x00];

/// What happened to one lease, for `nodeimg boot`'s table and JSON.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LeaseReport {
    pub node: String,
    /// The address with the subnet's prefix, `10.77.0.100/24`.
    pub address: String,
    /// The server acknowledged it at least once (the guest took it).
    pub acked: bool,
    /// The guest released it (RFC 2131 §4.4.6) and did not take it again.
    pub released: bool,
    /// The guest declined it (RFC 2131 §4.4.1: it found the address in
    /// use) and did not take it again.
    pub declined: bool,
}

struct State {
    lease: Lease,
    acked: bool,
    bound: bool,
    released: bool,
    declined: bool,
}

/// The running server: the plan and what each guest did with its lease.
pub struct Server {
    plan: Plan,
    states: Vec<State>,
}

impl Server {
    pub fn new(plan: Plan) -> Server {
        let states = plan
            .leases
            .iter()
            .map(|l| State {
                lease: l.clone(),
                acked: false,
                bound: false,
                released: false,
                declined: false,
            })
            .collect();
        Server { plan, states }
    }

    /// The server's own address.
    pub fn address(&self) -> Ipv4Addr {
        self.plan.server
    }

    /// Each lease and whether it was taken.
    pub fn report(&self) -> Vec<LeaseReport> {
        self.states
            .iter()
            .map(|s| LeaseReport {
                node: s.lease.name.clone(),
                address: format!("{}/{}", s.lease.addr, self.plan.subnet.prefix_len()),
                acked: s.acked,
                released: s.released && !s.bound,
                declined: s.declined,
            })
            .collect()
    }

    /// Answers one frame a guest sent: the frames to put on the LAN (none
    /// for anything that is not for this server). Never panics, whatever
    /// the bytes.
    pub fn handle(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        match frame::parse(bytes) {
            Some(Incoming::ArpRequest {
                sender_mac,
                sender_ip,
                target,
            }) if target == self.plan.server => {
                // RFC 826: a renewing client unicasts to the server
                // identifier (RFC 2131 §4.4.5), so it asks where that is.
                frame::arp_reply(SERVER_MAC, self.plan.server, sender_mac, sender_ip)
                    .into_iter()
                    .collect()
            }
            Some(Incoming::Dhcp {
                src_mac,
                dst_ip,
                payload,
            }) if dst_ip == Ipv4Addr::BROADCAST || dst_ip == self.plan.server => {
                self.dhcp(src_mac, payload).into_iter().collect()
            }
            _ => Vec::new(),
        }
    }

    fn dhcp(&mut self, src_mac: Mac, payload: &[u8]) -> Option<Vec<u8>> {
        let payload = only_read_options(payload)?;
        let msg = Message::decode(&mut Decoder::new(&payload)).ok()?;
        // dhcproto's chaddr() slices by hlen, which a guest sets: check it
        // first (Ethernet: htype 1, hlen 6; RFC 1700 via RFC 2131 §2).
        if msg.opcode() != Opcode::BootRequest || msg.htype() != HType::Eth || msg.hlen() != 6 {
            return None;
        }
        let mac: Mac = msg.chaddr().try_into().ok()?;
        // No relay agents on this LAN: the client's own frame carries its
        // hardware address.
        if mac != src_mac || msg.giaddr() != Ipv4Addr::UNSPECIFIED {
            return None;
        }
        let server = self.plan.server;
        let i = self.states.iter().position(|s| s.lease.mac == mac)?;
        let addr = self.states[i].lease.addr;
        let opts = msg.opts();
        let requested = match opts.get(OptionCode::RequestedIpAddress) {
            Some(DhcpOption::RequestedIpAddress(a)) => Some(*a),
            _ => None,
        };
        let server_id = match opts.get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(a)) => Some(*a),
            _ => None,
        };
        let reply = match opts.msg_type()? {
            // RFC 2131 §4.3.1: offer the client its address.
            MessageType::Discover => MessageType::Offer,
            MessageType::Request => {
                // RFC 2131 §4.3.2: SELECTING carries our server identifier
                // (another server's means the client chose that one);
                // INIT-REBOOT carries 'requested IP address' and no ciaddr;
                // RENEWING and REBINDING carry ciaddr and neither option.
                if server_id.is_some_and(|s| s != server) {
                    return None;
                }
                let asked = match (server_id, requested) {
                    (Some(_), r) => r,
                    (None, Some(r)) => Some(r),
                    (None, None) => Some(msg.ciaddr()),
                };
                if asked == Some(addr) {
                    let s = &mut self.states[i];
                    s.acked = true;
                    s.bound = true;
                    s.declined = false;
                    MessageType::Ack
                } else {
                    MessageType::Nak
                }
            }
            // RFC 2131 §4.3.4: the address is free again; no answer.
            MessageType::Release => {
                if msg.ciaddr() == addr && server_id.is_none_or(|s| s == server) {
                    let s = &mut self.states[i];
                    s.bound = false;
                    s.released = true;
                }
                return None;
            }
            // RFC 2131 §4.3.3: the client found the address in use. The
            // address is the node's only one; the report says so.
            MessageType::Decline => {
                if server_id.is_none_or(|s| s == server) {
                    let s = &mut self.states[i];
                    s.declined = true;
                    s.bound = false;
                }
                return None;
            }
            // RFC 2131 §4.3.5: configuration only, no lease.
            MessageType::Inform => MessageType::Ack,
            _ => return None,
        };
        let inform = opts.msg_type() == Some(MessageType::Inform);
        let out = self.message(&msg, reply, i, inform);
        let mut bytes = Vec::new();
        out.encode(&mut Encoder::new(&mut bytes)).ok()?;
        // RFC 2131 §4.1, "giaddr is zero" cases: a NAK is broadcast; with
        // ciaddr set (renewing, INFORM) unicast to ciaddr; with the
        // broadcast bit set broadcast; otherwise unicast to the client's
        // hardware address and yiaddr.
        let (dst_mac, dst_ip) = if reply == MessageType::Nak {
            (BROADCAST_MAC, Ipv4Addr::BROADCAST)
        } else if msg.ciaddr() != Ipv4Addr::UNSPECIFIED {
            (mac, msg.ciaddr())
        } else if msg.flags().broadcast() {
            (BROADCAST_MAC, Ipv4Addr::BROADCAST)
        } else {
            (mac, addr)
        };
        frame::udp_to_client(SERVER_MAC, server, dst_mac, dst_ip, &bytes)
    }

    /// The reply's fields (RFC 2131 §4.3.1 table 3) and options (RFC 2132).
    fn message(&self, req: &Message, kind: MessageType, i: usize, inform: bool) -> Message {
        let lease = &self.states[i].lease;
        let p = &self.plan;
        let mut m = Message::default();
        m.set_opcode(Opcode::BootReply)
            .set_htype(HType::Eth)
            .set_xid(req.xid())
            .set_flags(Flags::new(u16::from(req.flags())))
            .set_chaddr(req.chaddr())
            .set_giaddr(req.giaddr());
        if kind == MessageType::Nak {
            m.set_yiaddr(Ipv4Addr::UNSPECIFIED)
                .set_ciaddr(Ipv4Addr::UNSPECIFIED);
        } else if inform {
            m.set_ciaddr(req.ciaddr()).set_yiaddr(Ipv4Addr::UNSPECIFIED);
        } else {
            m.set_ciaddr(req.ciaddr()).set_yiaddr(lease.addr);
        }
        m.set_siaddr(Ipv4Addr::UNSPECIFIED);
        let o = m.opts_mut();
        // RFC 2132 §9.6 message type, §9.7 server identifier (in every
        // OFFER, ACK and NAK, RFC 2131 table 3).
        o.insert(DhcpOption::MessageType(kind));
        o.insert(DhcpOption::ServerIdentifier(p.server));
        // RFC 6842: echo the client identifier.
        if let Some(id) = req.opts().get(OptionCode::ClientIdentifier) {
            o.insert(id.clone());
        }
        if kind == MessageType::Nak {
            o.insert(DhcpOption::Message("not this address".into()));
            return m;
        }
        if !inform {
            // RFC 2132 §9.2 lease time; §9.11/§9.12 T1 and T2 at RFC 2131
            // §4.4.5's defaults, 0.5 and 0.875 of it.
            o.insert(DhcpOption::AddressLeaseTime(p.lease_secs));
            o.insert(DhcpOption::Renewal(p.lease_secs / 2));
            o.insert(DhcpOption::Rebinding(p.lease_secs / 8 * 7));
        }
        // RFC 2132 §3.3 subnet mask, §3.5 router, §3.8 DNS, §3.14 host name.
        o.insert(DhcpOption::SubnetMask(p.subnet.netmask()));
        if let Some(r) = lease.router {
            o.insert(DhcpOption::Router(vec![r]));
        }
        if !lease.dns.is_empty() {
            o.insert(DhcpOption::DomainNameServer(lease.dns.clone()));
        }
        o.insert(DhcpOption::Hostname(lease.name.clone()));
        m
    }
}

/// The BOOTP fixed fields (RFC 2131 §2: op to file, 236 octets), the
/// magic cookie (RFC 2131 §3), and only the options the server reads, with
/// the lengths RFC 2132 gives them: message type (§9.6, 1), requested
/// address (§9.1, 4), server identifier (§9.7, 4), client identifier
/// (§9.14, at least 2). dhcproto 0.15 panics on some options whose length
/// a guest sets (a debug assertion on code 151's, an `unwrap` on a
/// classless route's prefix, code 121), so nothing else reaches it.
fn only_read_options(payload: &[u8]) -> Option<Vec<u8>> {
    const FIXED: usize = 236;
    const COOKIE: [u8; 4] = [99, 130, 83, 99];
    if payload.get(FIXED..FIXED + 4)? != COOKIE {
        return None;
    }
    let mut out = payload[..FIXED + 4].to_vec();
    let opts = &payload[FIXED + 4..];
    let mut i = 0;
    while let Some(&code) = opts.get(i) {
        // RFC 2132 §3.1 pad and §3.2 end have no length octet.
        match code {
            0 => {
                i += 1;
                continue;
            }
            255 => break,
            _ => {}
        }
        let len = usize::from(*opts.get(i + 1)?);
        opts.get(i + 2..i + 2 + len)?;
        let keep = match code {
            53 => len == 1,
            50 | 54 => len == 4,
            61 => len >= 2,
            _ => false,
        };
        if keep {
            out.push(code);
            out.extend_from_slice(&opts[i + 1..i + 2 + len]);
        }
        i += 2 + len;
    }
    out.push(255);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{udp_from_client, CLIENT_PORT, SERVER_PORT};
    use etherparse::{LinkSlice, NetSlice, SlicedPacket, TransportSlice};

    const GUEST: Mac = [0x52, 0x54, 0x00, 0x4e, 0, 1];
    const STRANGER: Mac = [0x52, 0x54, 0x00, 0x99, 0, 1];
    const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 254);
    const LEASED: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);

    fn server() -> Server {
        Server::new(Plan {
            subnet: "10.77.0.0/24".parse().unwrap(),
            server: SERVER_IP,
            lease_secs: 3600,
            leases: vec![Lease {
                mac: GUEST,
                name: "beta".into(),
                addr: LEASED,
                router: Some(Ipv4Addr::new(10, 77, 0, 1)),
                dns: vec![Ipv4Addr::new(10, 77, 0, 1)],
            }],
        })
    }

    struct Req {
        kind: MessageType,
        mac: Mac,
        ciaddr: Ipv4Addr,
        requested: Option<Ipv4Addr>,
        server_id: Option<Ipv4Addr>,
        broadcast: bool,
    }

    fn req(kind: MessageType) -> Req {
        Req {
            kind,
            mac: GUEST,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            requested: None,
            server_id: None,
            broadcast: false,
        }
    }

    fn payload(r: &Req) -> Vec<u8> {
        let mut m = Message::default();
        m.set_opcode(Opcode::BootRequest)
            .set_xid(0x1234_5678)
            .set_chaddr(&r.mac)
            .set_ciaddr(r.ciaddr);
        if r.broadcast {
            m.set_flags(Flags::default().set_broadcast());
        }
        m.opts_mut().insert(DhcpOption::MessageType(r.kind));
        if let Some(a) = r.requested {
            m.opts_mut().insert(DhcpOption::RequestedIpAddress(a));
        }
        if let Some(a) = r.server_id {
            m.opts_mut().insert(DhcpOption::ServerIdentifier(a));
        }
        let mut b = Vec::new();
        m.encode(&mut Encoder::new(&mut b)).unwrap();
        b
    }

    fn frame_of(r: &Req) -> Vec<u8> {
        let (src, dst, dmac) = if r.ciaddr.is_unspecified() {
            (Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, BROADCAST_MAC)
        } else {
            (r.ciaddr, SERVER_IP, SERVER_MAC)
        };
        udp_from_client(
            r.mac,
            src,
            dmac,
            dst,
            (CLIENT_PORT, SERVER_PORT),
            &payload(r),
        )
        .unwrap()
    }

    /// (destination MAC, destination IP, message) of a reply frame.
    fn read(f: &[u8]) -> (Mac, Ipv4Addr, Message) {
        let p = SlicedPacket::from_ethernet(f).unwrap();
        let Some(LinkSlice::Ethernet2(eth)) = &p.link else {
            panic!("not Ethernet II")
        };
        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            panic!("not IPv4")
        };
        assert_eq!(eth.source(), SERVER_MAC);
        assert_eq!(Ipv4Addr::from(ip.header().source()), SERVER_IP);
        let Some(TransportSlice::Udp(udp)) = &p.transport else {
            panic!("not UDP")
        };
        assert_eq!((udp.source_port(), udp.destination_port()), (67, 68));
        let m = Message::decode(&mut Decoder::new(udp.payload())).unwrap();
        (
            eth.destination(),
            Ipv4Addr::from(ip.header().destination()),
            m,
        )
    }

    fn one(s: &mut Server, r: &Req) -> (Mac, Ipv4Addr, Message) {
        let out = s.handle(&frame_of(r));
        assert_eq!(out.len(), 1, "one reply");
        read(&out[0])
    }

    #[test]
    fn discover_gets_an_offer_with_every_option() {
        let mut s = server();
        let (dmac, dip, m) = one(&mut s, &req(MessageType::Discover));
        // No broadcast bit, no ciaddr: unicast to chaddr and yiaddr.
        assert_eq!((dmac, dip), (GUEST, LEASED));
        assert_eq!(m.opcode(), Opcode::BootReply);
        assert_eq!(m.xid(), 0x1234_5678);
        assert_eq!(m.yiaddr(), LEASED);
        let o = m.opts();
        assert_eq!(o.msg_type(), Some(MessageType::Offer));
        assert_eq!(
            o.get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(SERVER_IP))
        );
        assert_eq!(
            o.get(OptionCode::SubnetMask),
            Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
        );
        assert_eq!(
            o.get(OptionCode::Router),
            Some(&DhcpOption::Router(vec![Ipv4Addr::new(10, 77, 0, 1)]))
        );
        assert_eq!(
            o.get(OptionCode::DomainNameServer),
            Some(&DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
                10, 77, 0, 1
            )]))
        );
        assert_eq!(
            o.get(OptionCode::Hostname),
            Some(&DhcpOption::Hostname("beta".into()))
        );
        assert_eq!(
            o.get(OptionCode::AddressLeaseTime),
            Some(&DhcpOption::AddressLeaseTime(3600))
        );
        assert_eq!(o.get(OptionCode::Renewal), Some(&DhcpOption::Renewal(1800)));
        assert!(!s.report()[0].acked, "an offer is not a lease taken");
    }

    #[test]
    fn the_broadcast_flag_gets_a_broadcast_reply() {
        let mut s = server();
        let mut r = req(MessageType::Discover);
        r.broadcast = true;
        let (dmac, dip, m) = one(&mut s, &r);
        assert_eq!((dmac, dip), (BROADCAST_MAC, Ipv4Addr::BROADCAST));
        assert!(m.flags().broadcast());
    }

    #[test]
    fn request_for_the_offered_address_is_acked_and_a_wrong_one_naked() {
        let mut s = server();
        let mut r = req(MessageType::Request);
        r.server_id = Some(SERVER_IP);
        r.requested = Some(LEASED);
        let (_, _, m) = one(&mut s, &r);
        assert_eq!(m.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(m.yiaddr(), LEASED);
        assert_eq!(
            s.report(),
            vec![LeaseReport {
                node: "beta".into(),
                address: "10.77.0.100/24".into(),
                acked: true,
                released: false,
                declined: false,
            }]
        );
        // INIT-REBOOT with an address from another network: NAK, broadcast.
        let mut r = req(MessageType::Request);
        r.requested = Some(Ipv4Addr::new(192, 168, 1, 7));
        let (dmac, dip, m) = one(&mut s, &r);
        assert_eq!(m.opts().msg_type(), Some(MessageType::Nak));
        assert_eq!((dmac, dip), (BROADCAST_MAC, Ipv4Addr::BROADCAST));
        assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    }

    #[test]
    fn a_request_that_chose_another_server_is_left_alone() {
        let mut s = server();
        let mut r = req(MessageType::Request);
        r.server_id = Some(Ipv4Addr::new(10, 77, 0, 9));
        r.requested = Some(LEASED);
        assert!(s.handle(&frame_of(&r)).is_empty());
        assert!(!s.report()[0].acked);
    }

    #[test]
    fn renewal_is_unicast_and_its_arp_answered() {
        let mut s = server();
        // The renewing client first asks where the server is.
        let arp = frame::arp_request(GUEST, LEASED, SERVER_IP).unwrap();
        let out = s.handle(&arp);
        assert_eq!(out.len(), 1);
        assert_eq!(
            frame::parse(&out[0]),
            None,
            "the answer is a reply, not a request"
        );
        assert_eq!(&out[0][..6], &GUEST, "to the asker");
        // ARP for another address is not ours to answer.
        let other = frame::arp_request(GUEST, LEASED, Ipv4Addr::new(10, 77, 0, 1)).unwrap();
        assert!(s.handle(&other).is_empty());
        // RENEWING: ciaddr set, unicast to the server, no options.
        let mut r = req(MessageType::Request);
        r.ciaddr = LEASED;
        let (dmac, dip, m) = one(&mut s, &r);
        assert_eq!(m.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!((dmac, dip), (GUEST, LEASED));
        assert_eq!(m.ciaddr(), LEASED);
        // Renewing an address that is not the lease: NAK.
        r.ciaddr = Ipv4Addr::new(10, 77, 0, 101);
        let (_, _, m) = one(&mut s, &r);
        assert_eq!(m.opts().msg_type(), Some(MessageType::Nak));
    }

    #[test]
    fn release_frees_the_lease_without_an_answer() {
        let mut s = server();
        let mut r = req(MessageType::Request);
        r.requested = Some(LEASED);
        one(&mut s, &r);
        let mut rel = req(MessageType::Release);
        rel.ciaddr = LEASED;
        rel.server_id = Some(SERVER_IP);
        assert!(s.handle(&frame_of(&rel)).is_empty());
        let rep = &s.report()[0];
        assert!(rep.acked && rep.released);
    }

    #[test]
    fn decline_is_reported_until_the_address_is_taken_again() {
        let mut s = server();
        let mut r = req(MessageType::Request);
        r.requested = Some(LEASED);
        one(&mut s, &r);
        let mut d = req(MessageType::Decline);
        d.requested = Some(LEASED);
        d.server_id = Some(SERVER_IP);
        assert!(s.handle(&frame_of(&d)).is_empty());
        assert!(s.report()[0].declined);
        one(&mut s, &r);
        assert!(!s.report()[0].declined);
    }

    #[test]
    fn inform_gets_options_but_no_lease() {
        let mut s = server();
        let mut r = req(MessageType::Inform);
        r.ciaddr = LEASED;
        let (_, dip, m) = one(&mut s, &r);
        assert_eq!(dip, LEASED);
        assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(m.opts().get(OptionCode::AddressLeaseTime).is_none());
        assert!(m.opts().get(OptionCode::SubnetMask).is_some());
    }

    #[test]
    fn unknown_macs_wrong_ports_and_damaged_frames_get_nothing() {
        let mut s = server();
        let mut r = req(MessageType::Discover);
        r.mac = STRANGER;
        assert!(s.handle(&frame_of(&r)).is_empty(), "unknown MAC");
        // chaddr of a known guest in a frame from another MAC.
        let p = payload(&req(MessageType::Discover));
        let f = udp_from_client(
            STRANGER,
            Ipv4Addr::UNSPECIFIED,
            BROADCAST_MAC,
            Ipv4Addr::BROADCAST,
            (68, 67),
            &p,
        )
        .unwrap();
        assert!(s.handle(&f).is_empty(), "spoofed chaddr");
        for ports in [(67, 67), (68, 68), (1000, 67), (68, 1000)] {
            let f = udp_from_client(
                GUEST,
                Ipv4Addr::UNSPECIFIED,
                BROADCAST_MAC,
                Ipv4Addr::BROADCAST,
                ports,
                &p,
            )
            .unwrap();
            assert!(s.handle(&f).is_empty(), "ports {ports:?}");
        }
        // To another host's unicast address.
        let f = udp_from_client(
            GUEST,
            LEASED,
            BROADCAST_MAC,
            Ipv4Addr::new(10, 77, 0, 9),
            (68, 67),
            &p,
        )
        .unwrap();
        assert!(s.handle(&f).is_empty(), "not to the server");
        // Every truncation of a good frame, and byte flips of it.
        let good = frame_of(&req(MessageType::Discover));
        assert_eq!(s.handle(&good).len(), 1);
        for n in 0..good.len() {
            let _ = s.handle(&good[..n]);
        }
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0xff;
            let _ = s.handle(&bad);
        }
    }

    #[test]
    fn options_that_panic_dhcproto_never_reach_it() {
        // Code 151 (bulk leasequery status) with length 0, code 121 (a
        // classless route) with prefix 200, code 152 with length 1.
        for bad in [&[151u8, 0][..], &[121, 5, 200, 10, 0, 0, 1], &[152, 1, 0]] {
            let mut p = payload(&req(MessageType::Discover));
            assert_eq!(p.pop(), Some(255), "ends with End");
            p.extend_from_slice(bad);
            p.push(255);
            let f = udp_from_client(
                GUEST,
                Ipv4Addr::UNSPECIFIED,
                BROADCAST_MAC,
                Ipv4Addr::BROADCAST,
                (68, 67),
                &p,
            )
            .unwrap();
            // Still a good DISCOVER once the option is dropped.
            assert_eq!(server().handle(&f).len(), 1, "{bad:?}");
        }
    }

    #[test]
    fn a_bootp_header_with_a_long_hlen_does_not_panic() {
        // hlen 255 would make dhcproto's chaddr() slice past its 16 bytes.
        let mut p = payload(&req(MessageType::Discover));
        p[2] = 255;
        let f = udp_from_client(
            GUEST,
            Ipv4Addr::UNSPECIFIED,
            BROADCAST_MAC,
            Ipv4Addr::BROADCAST,
            (68, 67),
            &p,
        )
        .unwrap();
        assert!(server().handle(&f).is_empty());
        // A reply from another server (op 2) is not a request.
        let mut p = payload(&req(MessageType::Discover));
        p[0] = 2;
        let f = udp_from_client(
            GUEST,
            Ipv4Addr::UNSPECIFIED,
            BROADCAST_MAC,
            Ipv4Addr::BROADCAST,
            (68, 67),
            &p,
        )
        .unwrap();
        assert!(server().handle(&f).is_empty());
    }

    proptest::proptest! {
        /// The fuzz target's property (fuzz/fuzz_targets/lan_frame.rs):
        /// any frame, and any DHCP payload in a good frame from a guest with
        /// a lease, gets answers from the server's MAC or nothing.
        #[test]
        fn random_frames_and_payloads_never_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..700),
            kind in 0u8..20,
        ) {
            let mut s = server();
            for reply in s.handle(&bytes) {
                proptest::prop_assert_eq!(&reply[6..12], &SERVER_MAC);
            }
            // A real message with its tail replaced by random option bytes.
            let mut p = payload(&req(MessageType::from(kind)));
            p.truncate(240);
            p.extend_from_slice(&bytes);
            for body in [&bytes[..], &p[..]] {
                let f = udp_from_client(
                    GUEST,
                    Ipv4Addr::UNSPECIFIED,
                    BROADCAST_MAC,
                    Ipv4Addr::BROADCAST,
                    (CLIENT_PORT, SERVER_PORT),
                    body,
                )
                .unwrap();
                for reply in s.handle(&f) {
                    proptest::prop_assert_eq!(&reply[6..12], &SERVER_MAC);
                }
            }
        }
    }
}
