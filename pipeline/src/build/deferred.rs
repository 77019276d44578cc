//! Deferred secrets: a node's secret files, sealed so that only the
//! cluster's state file opens them.
//!
//! With `--secrets defer`, `nodeimg build` leaves every secret file
//! (`Op::File { secret: true }`: private keys, tokens, the age key, the
//! password hash) out of the node's delta and writes them to
//! `nodes/<hostname>.secrets` instead, sealed with ChaCha20-Poly1305 under a
//! key derived from the cluster-wide secrets of the state file and the
//! node's own host key. `nodeimg flash DIST --secrets cluster.state` opens
//! them in memory and writes them onto the card through an overlay; no
//! artefact holds a secret in the clear.
//!
//! # Format (`nodes/<hostname>.secrets`)
//!
//! ```text
//! "NODEIMG-SECRETS1"      16 bytes magic and version
//! nonce                   12 bytes: SHA-256(key ‖ plaintext)[..12]
//! ciphertext              ChaCha20-Poly1305(key, nonce, plaintext), tag last
//! ```
//!
//! The plaintext is a list of files, each `u32` path length, path bytes,
//! `u32` mode, uid, gid, `u64` data length, data (little endian), after a
//! `u32` count. The nonce depends only on key and plaintext, so the same
//! state and inputs give the same bytes (reproducible builds) and two
//! different plaintexts never share a nonce under one key.

use crate::customise::Op;
use crate::secrets::State;
use crate::{Error, Result};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 16] = b"NODEIMG-SECRETS1";

/// The sealing key of `node`: SHA-256 over a label, the state's cluster-wide
/// secrets and the node's host key. `None` when the state holds nothing
/// secret for this node (nothing to derive a key from).
fn key(state: &State, node: &str) -> Option<[u8; 32]> {
    let d = state.data();
    let mut parts: Vec<(&str, &str)> = Vec::new();
    if let Some(k) = &d.kubeadm {
        parts.push(("kubeadm.token", &k.token));
    }
    if let Some(p) = &d.pki {
        parts.push(("ca", &p.ca.key));
        parts.push(("front_proxy_ca", &p.front_proxy_ca.key));
        parts.push(("etcd_ca", &p.etcd_ca.key));
        parts.push(("sa", &p.sa.key));
    }
    if let Some(k) = &d.k3s {
        parts.push(("k3s.token", &k.token));
        parts.push(("k3s.agent_token", &k.agent_token));
    }
    if let Some(a) = &d.age {
        parts.push(("age", &a.identity));
    }
    if let Some(h) = d.host_keys.get(node) {
        parts.push(("host_key", &h.private));
    }
    if parts.is_empty() {
        return None;
    }
    let mut h = Sha256::new();
    h.update(b"nodeimg deferred secrets v1");
    for (name, value) in [("cluster", d.cluster.as_str()), ("node", node)]
        .into_iter()
        .chain(parts)
    {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((value.len() as u64).to_le_bytes());
        h.update(value.as_bytes());
    }
    Some(h.finalize().into())
}

/// Splits `ops` into what goes into the artefact and the secret files.
pub fn split(ops: Vec<Op>) -> (Vec<Op>, Vec<Op>) {
    ops.into_iter()
        .partition(|op| !matches!(op, Op::File { secret: true, .. }))
}

/// Seals the secret files of `node` (see the module documentation).
pub fn seal(state: &State, node: &str, secret: &[Op]) -> Result<Vec<u8>> {
    let key = key(state, node).ok_or_else(|| {
        Error::refused(
            format!("node {node}"),
            "--secrets defer: the state file holds no secret to seal this node's secret files with",
        )
    })?;
    let mut plain = Vec::new();
    plain.extend((secret.len() as u32).to_le_bytes());
    for op in secret {
        if let Op::File {
            path,
            data,
            mode,
            uid,
            gid,
            ..
        } = op
        {
            plain.extend((path.len() as u32).to_le_bytes());
            plain.extend(path.as_bytes());
            for v in [*mode, *uid, *gid] {
                plain.extend(v.to_le_bytes());
            }
            plain.extend((data.len() as u64).to_le_bytes());
            plain.extend(data);
        }
    }
    let mut h = Sha256::new();
    h.update(key);
    h.update(&plain);
    let digest = h.finalize();
    let nonce = Nonce::from_slice(&digest[..12]);
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&key));
    let sealed = cipher
        .encrypt(nonce, plain.as_slice())
        .map_err(|_| Error::internal(format!("node {node}"), "sealing its secret files failed"))?;
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&digest[..12]);
    out.extend(sealed);
    Ok(out)
}

/// Opens what [`seal`] wrote: the secret files as `Op::File { secret: true }`.
/// A state of another cluster, or a damaged file, is refused.
pub fn open(state: &State, node: &str, sealed: &[u8], what: &str) -> Result<Vec<Op>> {
    let bad = |why: &str| Error::refused(what.to_string(), why.to_string());
    if sealed.len() < 28 || &sealed[..16] != MAGIC {
        return Err(bad("not a nodeimg deferred-secrets file"));
    }
    let key = key(state, node).ok_or_else(|| bad("the state file holds no key for this node"))?;
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&key));
    let plain = cipher
        .decrypt(Nonce::from_slice(&sealed[16..28]), &sealed[28..])
        .map_err(|_| {
            bad("cannot be opened with this state file (another cluster's state, or damaged)")
        })?;
    let mut r = Reader { b: &plain, at: 0 };
    let count = r.u32()?;
    let mut ops = Vec::new();
    for _ in 0..count {
        let n = r.u32()? as usize;
        let path =
            String::from_utf8(r.take(n)?.to_vec()).map_err(|_| bad("a path is not UTF-8"))?;
        let (mode, uid, gid) = (r.u32()?, r.u32()?, r.u32()?);
        let len = r.u64()?;
        let data = r.take(usize::try_from(len).map_err(|_| bad("a length is too large"))?)?;
        ops.push(Op::File {
            path,
            data: data.to_vec(),
            mode,
            uid,
            gid,
            secret: true,
        });
    }
    if r.at != plain.len() {
        return Err(bad("trailing bytes"));
    }
    Ok(ops)
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        match end {
            Some(e) => {
                let s = &self.b[self.at..e];
                self.at = e;
                Ok(s)
            }
            None => Err(Error::refused("deferred secrets", "truncated")),
        }
    }
    fn u32(&mut self) -> Result<u32> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
}
