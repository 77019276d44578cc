//! Arbitrary bytes as a frame a guest puts on `nodeimg boot`'s LAN, through
//! the hub's DHCP server (`vm::dhcp::Server::handle`): answers or nothing,
//! never a panic. The first byte chooses whether the rest is a whole frame
//! or a DHCP payload wrapped in a good Ethernet/IPv4/UDP frame from a guest
//! with a lease (so the fuzzer reaches the DHCP decoder at once).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::Ipv4Addr;
use vm::dhcp::{Server, SERVER_MAC};
use vm::dhcp_plan::{Lease, Plan};
use vm::frame;

const GUEST: [u8; 6] = [0x52, 0x54, 0x00, 0x4e, 0, 1];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut s = Server::new(Plan {
        subnet: "10.77.0.0/24".parse().unwrap(),
        server: Ipv4Addr::new(10, 77, 0, 254),
        lease_secs: 3600,
        leases: vec![Lease {
            mac: GUEST,
            name: "beta".into(),
            addr: Ipv4Addr::new(10, 77, 0, 100),
            router: None,
            dns: vec![],
        }],
    });
    let wrapped;
    let f = if mode & 1 == 1 {
        let Some(w) = frame::udp_from_client(
            GUEST,
            Ipv4Addr::UNSPECIFIED,
            frame::BROADCAST_MAC,
            Ipv4Addr::BROADCAST,
            (frame::CLIENT_PORT, frame::SERVER_PORT),
            rest,
        ) else {
            return;
        };
        wrapped = w;
        &wrapped[..]
    } else {
        rest
    };
    for reply in s.handle(f) {
        assert_eq!(&reply[6..12], &SERVER_MAC);
    }
});
