//! The cluster's virtual LAN: a hub that nodeimg runs on unix datagram
//! sockets in its temporary directory. Each guest's NIC is a QEMU
//! `-netdev dgram` between its own socket and one of the hub's; the hub
//! repeats every frame to every other guest. Nothing listens on an IP
//! address: no multicast, no port on the host's network. The LAN's DHCP
//! server ([`crate::dhcp`]) lives in the hub: it sees every frame and its
//! answers go to every guest, as on a hub.

use crate::dhcp::Server;
use anyhow::{Context, Result};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One guest's two socket paths.
#[derive(Debug, Clone)]
pub struct Port {
    /// The guest's end (QEMU binds it).
    pub guest: PathBuf,
    /// The hub's end (bound here).
    pub hub: PathBuf,
}

/// A running hub; dropping it stops its thread.
pub struct Hub {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Option<Server>>>,
}

impl Hub {
    /// Binds `n` ports in `dir` and starts repeating frames, answering
    /// DHCP and ARP with `dhcp` when there is one.
    pub fn start(dir: &Path, n: usize, dhcp: Option<Server>) -> Result<(Hub, Vec<Port>)> {
        let mut socks = Vec::new();
        let mut ports = Vec::new();
        for i in 0..n {
            let port = Port {
                guest: dir.join(format!("g{i}")),
                hub: dir.join(format!("h{i}")),
            };
            let s = UnixDatagram::bind(&port.hub)
                .with_context(|| format!("binding {}", port.hub.display()))?;
            s.set_read_timeout(Some(Duration::from_millis(100)))?;
            socks.push(s);
            ports.push(port);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let guests: Vec<PathBuf> = ports.iter().map(|p| p.guest.clone()).collect();
        let thread = std::thread::Builder::new()
            .name("lan-hub".into())
            .spawn(move || repeat(&socks, &guests, &flag, dhcp))?;
        Ok((
            Hub {
                stop,
                thread: Some(thread),
            },
            ports,
        ))
    }
}

impl Hub {
    /// Stops the hub; returns its DHCP server, with what each guest did
    /// with its lease.
    pub fn finish(mut self) -> Option<Server> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().and_then(|t| t.join().ok()).flatten()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Polls every port; a frame from guest i goes to every other guest (a
/// guest not yet started simply misses it, as on a real hub); the DHCP
/// server's answers go to every guest.
fn repeat(
    socks: &[UnixDatagram],
    guests: &[PathBuf],
    stop: &AtomicBool,
    mut dhcp: Option<Server>,
) -> Option<Server> {
    let mut fds: Vec<libc::pollfd> = socks
        .iter()
        .map(|s| libc::pollfd {
            fd: std::os::unix::io::AsRawFd::as_raw_fd(s),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::SeqCst) {
        // SAFETY: fds is a valid array of pollfd for the sockets we own.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        if n <= 0 {
            continue;
        }
        for (i, fd) in fds.iter_mut().enumerate() {
            if fd.revents & libc::POLLIN == 0 {
                continue;
            }
            fd.revents = 0;
            let Ok(len) = socks[i].recv(&mut buf) else {
                continue;
            };
            for (j, g) in guests.iter().enumerate() {
                if j != i {
                    let _ = socks[j].send_to(&buf[..len], g);
                }
            }
            if let Some(server) = dhcp.as_mut() {
                for reply in server.handle(&buf[..len]) {
                    for (s, g) in socks.iter().zip(guests) {
                        let _ = s.send_to(&reply, g);
                    }
                }
            }
        }
    }
    dhcp
}

/// A locally administered MAC for guest `i`.
pub fn mac(i: usize, nic: u8) -> [u8; 6] {
    [0x52, 0x54, 0x00, 0x4e, nic, (i % 256) as u8]
}
