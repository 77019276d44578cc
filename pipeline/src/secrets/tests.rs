use super::*;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

fn cluster(dir: &Path, flavour: &str, nodes: &[&str]) -> Cluster {
    let mut text = format!(
        "[cluster]\nname = \"lab\"\nboard = \"rpi5\"\nflavour = \"{flavour}\"\napi_endpoint = \"10.0.0.10:6443\"\n[defaults]\nuser = \"pi\"\npassword = \"s3cret\"\nage_key = \"generate\"\n"
    );
    for n in nodes {
        text.push_str(&format!("[[node]]\nhostname = \"{n}\"\n"));
    }
    let path = dir.join("cluster.toml");
    std::fs::write(&path, &text).unwrap();
    Cluster::load(&path).unwrap()
}

#[test]
fn generated_once_reused_and_extended_by_new_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("cluster.state");
    let c = cluster(dir.path(), "kubeadm", &["controlplane", "node0"]);
    let s1 = State::for_cluster(&state, &c).unwrap();
    let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text1 = std::fs::read_to_string(&state).unwrap();
    assert!(s1.kubeadm_token().is_some() && s1.pki().is_some() && s1.age_identity().is_some());
    assert!(s1.host_key("node0").is_some());

    // A second run changes nothing at all.
    let s2 = State::for_cluster(&state, &c).unwrap();
    assert_eq!(std::fs::read_to_string(&state).unwrap(), text1);
    assert_eq!(s1.fingerprint(), s2.fingerprint());

    // A new node adds only its host key.
    let c3 = cluster(dir.path(), "kubeadm", &["controlplane", "node0", "node1"]);
    let s3 = State::for_cluster(&state, &c3).unwrap();
    assert_eq!(s3.fingerprint(), s1.fingerprint());
    let mut without = s3.data().clone();
    assert!(without.host_keys.remove("node1").is_some());
    assert!(without == *s1.data());
    assert_eq!(s3.known_hosts(&c3).lines().count(), 3);

    // The plain password hashes the same way every time.
    let h1 = s3.password_hash("pi", "s3cret").unwrap().unwrap();
    assert!(h1.starts_with("$6$"));
    assert_eq!(s1.password_hash("pi", "s3cret").unwrap().unwrap(), h1);
}

#[test]
fn another_clusters_state_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("cluster.state");
    let c = cluster(dir.path(), "k3s", &["controlplane"]);
    State::for_cluster(&state, &c).unwrap();
    let e = State::open(&state, "other").unwrap_err().to_string();
    assert!(e.contains("cluster `lab`"), "{e}");
    std::fs::write(
        &state,
        "format = 1\ncluster = \"lab\"\nsecret = \"x-y-z\"\n",
    )
    .unwrap();
    let e = State::open(&state, "lab").unwrap_err().to_string();
    assert!(
        !e.contains("x-y-z") && e.contains("not a nodeimg state file"),
        "{e}"
    );
}

#[test]
fn ca_pin_matches_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("cluster.state");
    let c = cluster(dir.path(), "kubeadm", &["controlplane"]);
    let s = State::for_cluster(&state, &c).unwrap();
    let cert = dir.path().join("ca.crt");
    std::fs::write(&cert, &s.pki().unwrap().ca.cert).unwrap();
    let script = format!(
        "openssl x509 -in {} -pubkey -noout | openssl pkey -pubin -outform der | sha256sum",
        cert.display()
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success());
    let hex = String::from_utf8(out.stdout).unwrap();
    let hex = hex.split_whitespace().next().unwrap();
    assert_eq!(s.ca_cert_hash().unwrap().unwrap(), format!("sha256:{hex}"));
    // The CA looks like kubeadm's: CA:TRUE, cert signing, CN kubernetes, 10 years.
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("CA:TRUE"), "{text}");
    assert!(text.contains("Certificate Sign"), "{text}");
    assert!(
        text.contains("CN=kubernetes") || text.contains("CN = kubernetes"),
        "{text}"
    );
    assert!(text.contains("DNS:kubernetes"), "{text}");
    let ok = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(&cert)
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
}

#[test]
fn debug_output_holds_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path(), "k3s", &["controlplane"]);
    let s = State::for_cluster(&dir.path().join("s"), &c).unwrap();
    let token = s.k3s().unwrap().token.clone();
    assert!(!format!("{s:?}").contains(&token));
    assert!(!format!("{c:?}").contains("s3cret"));
}

#[test]
fn k3s_tokens_pin_the_server_ca_with_k3s_secure_format() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("cluster.state");
    let c = cluster(dir.path(), "k3s", &["controlplane", "node0"]);
    let s = State::for_cluster(&state, &c).unwrap();
    let k = s.k3s().unwrap();
    let ca = k.server_ca.as_ref().expect("a k3s server CA");
    assert!(k.client_ca.is_some());
    // The oracle: sha256sum over the certificate file as k3s serves it.
    let cert = dir.path().join("server-ca.crt");
    std::fs::write(&cert, &ca.cert).unwrap();
    let out = Command::new("sha256sum").arg(&cert).output().unwrap();
    let hash = String::from_utf8(out.stdout).unwrap();
    let hash = hash.split_whitespace().next().unwrap();
    assert_eq!(k.server_token(), format!("K10{hash}::server:{}", k.token));
    assert_eq!(
        k.agent_join_token(),
        format!("K10{hash}::node:{}", k.agent_token)
    );
    // A state from before nodeimg kept a k3s CA keeps plain tokens.
    let old = K3sSecrets {
        server_ca: None,
        client_ca: None,
        ..k.clone()
    };
    assert_eq!(old.server_token(), k.token);
    assert_eq!(old.agent_join_token(), k.agent_token);
}

#[test]
fn the_deploy_key_is_generated_once_and_counted_in_the_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("cluster.state");
    let plain = cluster(dir.path(), "kubeadm", &["controlplane", "node0"]);
    let s0 = State::for_cluster(&state, &plain).unwrap();
    assert!(s0.gitops_deploy_key().is_none());

    let path = dir.path().join("cluster.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "api_endpoint = \"10.0.0.10:6443\"\n",
        "api_endpoint = \"10.0.0.10:6443\"\ngitops_url = \"git@git.lan:infra/fleet.git\"\ngitops_known_hosts = \"git.lan ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\"\n",
    );
    std::fs::write(&path, text).unwrap();
    let c = Cluster::load(&path).unwrap();
    let s1 = State::for_cluster(&state, &c).unwrap();
    let k = s1.gitops_deploy_key().unwrap().clone();
    assert!(k.public.starts_with("ssh-ed25519 ") && k.public.ends_with(" flux@lab"));
    let parsed = ssh_key::PrivateKey::from_openssh(&k.private).unwrap();
    assert_eq!(parsed.public_key().to_openssh().unwrap(), k.public);
    assert_ne!(s1.fingerprint(), s0.fingerprint());
    let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // Never regenerated; never in debug output.
    let s2 = State::for_cluster(&state, &c).unwrap();
    assert!(s2.gitops_deploy_key() == Some(&k));
    assert_eq!(s2.fingerprint(), s1.fingerprint());
    assert!(!format!("{s2:?}").contains("PRIVATE"));
}
