//! Making secrets from the operating system's CSPRNG.

use crate::{Error, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PublicKeyData, SanType, SerialNumber,
};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// `n` bytes from the OS CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b)
        .map_err(|e| Error::internal("the OS random generator", e.to_string()))?;
    Ok(b)
}

/// `n` characters drawn uniformly from `alphabet` (rejection sampling, so
/// no character is likelier than another).
pub fn random_string(alphabet: &[u8], n: usize) -> Result<String> {
    let limit = 256 - 256 % alphabet.len();
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in random_bytes::<64>()? {
            if (b as usize) < limit && out.len() < n {
                out.push(alphabet[b as usize % alphabet.len()] as char);
            }
        }
    }
    Ok(out)
}

const LOWER_ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A kubeadm bootstrap token, `[a-z0-9]{6}.[a-z0-9]{16}`.
pub fn kubeadm_token() -> Result<String> {
    Ok(format!(
        "{}.{}",
        random_string(LOWER_ALNUM, 6)?,
        random_string(LOWER_ALNUM, 16)?
    ))
}

/// A k3s token: 64 hex digits (256 bits).
pub fn k3s_token() -> Result<String> {
    Ok(random_bytes::<32>()?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// A crypt(3) salt: 16 characters of `[./0-9A-Za-z]`.
pub fn crypt_salt() -> Result<String> {
    random_string(
        b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
        16,
    )
}

/// A CA certificate and its private key, both PEM.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertAndKey {
    pub cert: String,
    pub key: String,
}

/// A key pair in PEM (the service-account signing key).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyAndPublic {
    pub key: String,
    pub public: String,
}

/// How long kubeadm's CAs live, and how far their start is backdated so
/// that a node whose clock lags a little accepts them.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// A self-signed CA as `kubeadm init` makes one: subject CN = `name`,
/// the name also as DNS SAN, 10 years, CA:TRUE, key usages digital
/// signature, key encipherment and certificate signing, subject key id,
/// random serial. The key is ECDSA P-256 (kubeadm's `ECDSA-P256`
/// encryption algorithm; kubeadm loads an existing CA of any type).
pub fn ca(name: &str) -> Result<CertAndKey> {
    let key = KeyPair::generate().map_err(rcgen_err)?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    p.subject_alt_names = vec![SanType::DnsName(name.try_into().map_err(rcgen_err)?)];
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyCertSign,
    ];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - BACKDATE;
    p.not_after = now + CA_VALIDITY;
    let mut serial = random_bytes::<16>()?;
    serial[0] &= 0x7f; // positive
    serial[0] |= 0x01; // no leading zero byte
    p.serial_number = Some(SerialNumber::from_slice(&serial));
    let cert = p.self_signed(&key).map_err(rcgen_err)?;
    Ok(CertAndKey {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// The service-account signing key pair (`sa.key`, `sa.pub`).
pub fn service_account() -> Result<KeyAndPublic> {
    let key = KeyPair::generate().map_err(rcgen_err)?;
    Ok(KeyAndPublic {
        key: key.serialize_pem(),
        public: key.public_key_pem(),
    })
}

/// `sha256:<hex>` of the SubjectPublicKeyInfo of a PEM private key: what
/// kubeadm's `caCertHashes` pins.
pub fn spki_pin(key_pem: &str) -> Result<String> {
    let key = KeyPair::from_pem(key_pem).map_err(rcgen_err)?;
    let digest = Sha256::digest(key.subject_public_key_info());
    Ok(format!(
        "sha256:{}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ))
}

/// A node's OpenSSH ed25519 host key pair: (private key file, public key
/// line).
pub fn ssh_host_key(hostname: &str) -> Result<(String, String)> {
    ssh_ed25519(&format!("root@{hostname}"))
}

/// An unencrypted OpenSSH ed25519 key pair with `comment`: (private key
/// file, public key line).
pub fn ssh_ed25519(comment: &str) -> Result<(String, String)> {
    use ssh_key::private::{Ed25519Keypair, KeypairData, PrivateKey};
    let seed = random_bytes::<32>()?;
    let pair = Ed25519Keypair::from_seed(&seed);
    let key = PrivateKey::new(KeypairData::Ed25519(pair), comment)
        .map_err(|e| Error::internal("making an SSH key", e.to_string()))?;
    let private = key
        .to_openssh(ssh_key::LineEnding::LF)
        .map_err(|e| Error::internal("encoding an SSH key", e.to_string()))?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| Error::internal("encoding an SSH key", e.to_string()))?;
    Ok((private.to_string(), public))
}

/// An age identity file as `age-keygen` writes it.
pub fn age_identity(created: &str) -> String {
    use age::secrecy::ExposeSecret;
    let id = age::x25519::Identity::generate();
    format!(
        "# created: {created}\n# public key: {}\n{}\n",
        id.to_public(),
        id.to_string().expose_secret()
    )
}

/// SHA-512 crypt of `password` with `salt` (`$6$salt$hash`).
pub fn sha512_crypt(password: &str, salt: &str) -> Result<String> {
    let params = sha_crypt::Sha512Params::new(sha_crypt::ROUNDS_DEFAULT)
        .map_err(|e| Error::internal("password hashing parameters", format!("{e:?}")))?;
    let hash = sha_crypt::sha512_crypt_b64(password.as_bytes(), salt.as_bytes(), &params)
        .map_err(|e| Error::internal("hashing the password", format!("{e:?}")))?;
    Ok(format!("$6${salt}${hash}"))
}

fn rcgen_err(e: rcgen::Error) -> Error {
    Error::internal("making cluster certificates", e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_their_shapes() {
        let re = regex::Regex::new("^[a-z0-9]{6}\\.[a-z0-9]{16}$").unwrap();
        for _ in 0..50 {
            assert!(re.is_match(&kubeadm_token().unwrap()));
        }
        assert_ne!(kubeadm_token().unwrap(), kubeadm_token().unwrap());
        assert_eq!(k3s_token().unwrap().len(), 64);
        assert_eq!(crypt_salt().unwrap().len(), 16);
    }

    #[test]
    fn sha512_crypt_matches_the_reference_vector() {
        // From Drepper's SHA-crypt specification.
        assert_eq!(
            sha512_crypt("Hello world!", "saltstring").unwrap(),
            "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
        );
    }

    #[test]
    fn ssh_host_keys_are_openssh() {
        let (private, public) = ssh_host_key("node0").unwrap();
        assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        assert!(public.starts_with("ssh-ed25519 ") && public.ends_with(" root@node0"));
        let parsed = ssh_key::PrivateKey::from_openssh(&private).unwrap();
        assert_eq!(parsed.public_key().to_openssh().unwrap(), public);
    }

    #[test]
    fn age_identities_parse_back() {
        let text = age_identity("2026-01-01T00:00:00Z");
        let public = crate::cluster::age_public_key(text.as_bytes()).unwrap();
        assert!(text.contains(&format!("# public key: {public}\n")));
    }
}
