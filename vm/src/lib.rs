//! `nodeimg boot`: nodes booted under QEMU before any card is written.
//!
//! | module | job |
//! |---|---|
//! | [`report`] | the first-boot report line, parsed from console bytes |
//! | [`disk`] | the throw-away disk: base ⊕ delta ⊕ deferred secrets, SOURCE untouched |
//! | [`bootspec`] | kernel, initrd and command line, read from the image |
//! | [`kernel_pkg`] | `--kernel` as a Debian kernel package: unpacked, given an initramfs |
//! | [`uboot`] | U-Boot as the firmware of extlinux images, and its environment flash |
//! | [`qemu`] | finding QEMU, the accelerator, a guest's command line, power-off |
//! | [`lan`] | the cluster's virtual LAN (unix datagram sockets, a hub) |
//! | [`dhcp_plan`] | the LAN's leases, fixed per guest MAC before boot |
//! | [`dhcp`] | the LAN's DHCP server (and ARP for its address), inside the hub |
//! | [`frame`] | the Ethernet, ARP and UDP frames that server reads and writes |
//! | [`run`] | booting nodes together, reading consoles, results and the table |

pub mod bootspec;
pub mod dhcp;
pub mod dhcp_plan;
pub mod disk;
pub mod frame;
pub mod kernel_pkg;
pub mod lan;
pub mod qemu;
pub mod report;
pub mod run;
pub mod uboot;
