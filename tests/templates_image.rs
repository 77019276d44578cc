//! The rendered role files executed by the customisation executor on a
//! Raspberry Pi OS-like image, read back by debugfs: every file with its
//! content, mode and owner, the bootstrap unit enabled by the same link
//! `systemctl --root enable` makes (templates_bootstrap checks that one
//! against systemctl itself), and e2fsck/fsck.vfat clean.

mod customise_support;
mod os_support;
mod templates_support;

use customise_support::*;
use pipeline::customise::Op;
use pipeline::flavour::{Flavour, Role};
use templates_support::*;

fn stamp_role(flavour: Flavour, role: Role, ops: &[Op]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = os_support::copy_to(&os_support::rpios(), dir.path(), "disk.img");
    let mut img = open_rw(&path);
    img.apply(ops)
        .unwrap_or_else(|e| panic!("{flavour} {role}: {e}"));
    img.flush().expect("flush");
    drop(img);
    for op in ops {
        if let Op::File {
            path: p,
            data,
            mode,
            ..
        } = op
        {
            assert_eq!(
                ext_stat(&path, 2, p),
                Some((*mode, 0, 0, "regular".to_string())),
                "{flavour} {role}: {p}"
            );
            assert_eq!(
                ext_cat(&path, 2, p).expect("content").as_bytes(),
                data.as_slice(),
                "{flavour} {role}: {p}"
            );
        }
    }
    assert_eq!(
        ext_link(
            &path,
            2,
            "/etc/systemd/system/multi-user.target.wants/nodeimg-bootstrap.service"
        )
        .as_deref(),
        Some("/etc/systemd/system/nodeimg-bootstrap.service"),
        "{flavour} {role}"
    );
    fsck_all(&path);
}

#[test]
fn role_files_land_in_the_image_as_rendered() {
    let hash = format!("sha256:{}", "5a".repeat(32));
    let api = "192.168.1.10:6443";
    stamp_role(
        Flavour::Kubeadm,
        Role::Init,
        &render(
            Flavour::Kubeadm,
            Role::Init,
            &kubeadm_vars("controlplane", Role::Init, "192.168.1.10", api, &hash),
        ),
    );
    stamp_role(
        Flavour::K3s,
        Role::Agent,
        &render(
            Flavour::K3s,
            Role::Agent,
            &k3s_vars("node003", Role::Agent, "", "192.168.1.50:6443"),
        ),
    );
}
