//! Directory-name hashes of htree directories: legacy, half-MD4 and TEA, in
//! signed- and unsigned-char flavours.
//!
//! Written here rather than taken from `mkext4::dirhash` because that one
//! only knows half-MD4 and pads names longer than 32 bytes differently from
//! the kernel; these are checked against `debugfs dx_hash`.

pub const LEGACY: u8 = 0;
pub const HALF_MD4: u8 = 1;
pub const TEA: u8 = 2;
pub const TEA_UNSIGNED: u8 = 5;

/// `(hash, minor_hash)` of `name` under hash `version` (0–5) and `seed`;
/// `None` for an unknown version.
pub fn dirhash(version: u8, seed: &[u32; 4], name: &[u8]) -> Option<(u32, u32)> {
    let signed = version < 3;
    let mut buf: [u32; 4] = if seed.iter().any(|&w| w != 0) {
        *seed
    } else {
        [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476]
    };
    let (hash, minor) = match version % 3 {
        LEGACY => (legacy(name, signed), 0),
        HALF_MD4 => {
            let mut rest = name;
            while !rest.is_empty() {
                let words: [u32; 8] = str2hashbuf(rest, signed);
                half_md4_transform(&mut buf, &words);
                rest = &rest[rest.len().min(32)..];
            }
            (buf[1], buf[2])
        }
        _ if version <= TEA_UNSIGNED => {
            let mut rest = name;
            while !rest.is_empty() {
                let words: [u32; 4] = str2hashbuf(rest, signed);
                tea_transform(&mut buf, &words);
                rest = &rest[rest.len().min(16)..];
            }
            (buf[0], buf[1])
        }
        _ => return None,
    };
    if version > TEA_UNSIGNED {
        return None;
    }
    let mut hash = hash & !1;
    // 0xFFFFFFFE is the end-of-directory cookie; the kernel steps around it.
    if hash == 0x7FFF_FFFF << 1 {
        hash = (0x7FFF_FFFF - 1) << 1;
    }
    Some((hash, minor))
}

fn byte(b: u8, signed: bool) -> u32 {
    if signed {
        b as i8 as i32 as u32
    } else {
        u32::from(b)
    }
}

fn legacy(name: &[u8], signed: bool) -> u32 {
    let (mut h0, mut h1) = (0x12A3_FE2Du32, 0x37AB_E8F9u32);
    for &b in name {
        let mut h = h1.wrapping_add(h0 ^ byte(b, signed).wrapping_mul(7_152_373));
        if h & 0x8000_0000 != 0 {
            h = h.wrapping_sub(0x7FFF_FFFF);
        }
        h1 = h0;
        h0 = h;
    }
    h0 << 1
}

/// Packs the next `4 * N` name bytes into words; the padding pattern comes
/// from the length of the *whole remaining* name, as in the kernel.
fn str2hashbuf<const N: usize>(msg: &[u8], signed: bool) -> [u32; N] {
    let len = msg.len() as u32;
    let mut pad = len | (len << 8);
    pad |= pad << 16;
    let mut out = [pad; N];
    let mut val = pad;
    let mut w = 0;
    for (i, &b) in msg.iter().take(N * 4).enumerate() {
        val = byte(b, signed).wrapping_add(val << 8);
        if i % 4 == 3 {
            out[w] = val;
            w += 1;
            val = pad;
        }
    }
    if w < N {
        out[w] = val;
    }
    out
}

fn half_md4_transform(buf: &mut [u32; 4], x: &[u32; 8]) {
    fn f(x: u32, y: u32, z: u32) -> u32 {
        z ^ (x & (y ^ z))
    }
    fn g(x: u32, y: u32, z: u32) -> u32 {
        (x & y).wrapping_add((x ^ y) & z)
    }
    fn h(x: u32, y: u32, z: u32) -> u32 {
        x ^ y ^ z
    }
    const K2: u32 = 0x5A82_7999;
    const K3: u32 = 0x6ED9_EBA1;
    let [mut a, mut b, mut c, mut d] = *buf;
    type Round = (fn(u32, u32, u32) -> u32, u32, [(usize, u32); 8]);
    let rounds: [Round; 3] = [
        (
            f,
            0,
            [
                (0, 3),
                (1, 7),
                (2, 11),
                (3, 19),
                (4, 3),
                (5, 7),
                (6, 11),
                (7, 19),
            ],
        ),
        (
            g,
            K2,
            [
                (1, 3),
                (3, 5),
                (5, 9),
                (7, 13),
                (0, 3),
                (2, 5),
                (4, 9),
                (6, 13),
            ],
        ),
        (
            h,
            K3,
            [
                (3, 3),
                (7, 9),
                (2, 11),
                (6, 15),
                (1, 3),
                (5, 9),
                (0, 11),
                (4, 15),
            ],
        ),
    ];
    for (func, k, steps) in rounds {
        for (i, (idx, s)) in steps.into_iter().enumerate() {
            // The target rotates a, d, c, b.
            let (t, p, q, r) = match i % 4 {
                0 => (&mut a, b, c, d),
                1 => (&mut d, a, b, c),
                2 => (&mut c, d, a, b),
                _ => (&mut b, c, d, a),
            };
            *t = t
                .wrapping_add(func(p, q, r))
                .wrapping_add(x[idx].wrapping_add(k))
                .rotate_left(s);
        }
    }
    buf[0] = buf[0].wrapping_add(a);
    buf[1] = buf[1].wrapping_add(b);
    buf[2] = buf[2].wrapping_add(c);
    buf[3] = buf[3].wrapping_add(d);
}

fn tea_transform(buf: &mut [u32; 4], x: &[u32; 4]) {
    const DELTA: u32 = 0x9E37_79B9;
    let (mut sum, mut b0, mut b1) = (0u32, buf[0], buf[1]);
    let [a, b, c, d] = *x;
    for _ in 0..16 {
        sum = sum.wrapping_add(DELTA);
        b0 = b0.wrapping_add(
            (b1 << 4).wrapping_add(a) ^ b1.wrapping_add(sum) ^ (b1 >> 5).wrapping_add(b),
        );
        b1 = b1.wrapping_add(
            (b0 << 4).wrapping_add(c) ^ b0.wrapping_add(sum) ^ (b0 >> 5).wrapping_add(d),
        );
    }
    buf[0] = buf[0].wrapping_add(b0);
    buf[1] = buf[1].wrapping_add(b1);
}

#[cfg(test)]
mod tests {
    use super::*;

    // Seed: UUID deadbeef-dead-4ead-8ead-deadbeef0000 as little-endian words;
    // expected values from `debugfs -R "dx_hash -h <alg> -s <uuid> <name>"`.
    const SEED: [u32; 4] = [0xefbe_adde, 0xad4e_adde, 0xadde_ad8e, 0x0000_efbe];

    #[test]
    fn half_md4_matches_debugfs() {
        assert_eq!(
            dirhash(HALF_MD4, &SEED, b"hello.txt"),
            Some((0x093b_83d6, 0x33e0_ca61))
        );
        assert_eq!(
            dirhash(HALF_MD4, &SEED, b"a"),
            Some((0x5538_916c, 0x34a2_9fa3))
        );
    }

    #[test]
    fn long_half_md4_matches_debugfs() {
        // Longer than one 32-byte chunk: the padding follows the whole name.
        let long = "long-name-".repeat(20);
        assert_eq!(
            dirhash(HALF_MD4, &SEED, long.as_bytes()),
            Some((0xf36e_63c8, 0x325b_1d6a))
        );
        assert_eq!(
            dirhash(HALF_MD4, &SEED, &[b'x'; 40]),
            Some((0x69ac_38ae, 0x5da7_36e4))
        );
    }

    #[test]
    fn legacy_and_tea_match_debugfs() {
        let long = "long-name-".repeat(20);
        assert_eq!(dirhash(LEGACY, &SEED, b"a"), Some((0xe74b_53e2, 0)));
        assert_eq!(
            dirhash(LEGACY, &SEED, long.as_bytes()),
            Some((0x466b_3178, 0))
        );
        assert_eq!(
            dirhash(TEA, &SEED, b"hello.txt"),
            Some((0x3f3e_df48, 0x6123_34fd))
        );
        assert_eq!(
            dirhash(TEA, &SEED, long.as_bytes()),
            Some((0x3fa3_968c, 0xf3a0_46aa))
        );
        assert_eq!(
            dirhash(TEA, &SEED, &[b'x'; 40]),
            Some((0xa0d7_1d2e, 0x6c20_b0ba))
        );
    }

    #[test]
    fn signedness_variants_match_debugfs() {
        let name = b"a\xe9b";
        let want = [
            (0x4b49_77c4, 0),
            (0x4a1a_91c6, 0xf53d_dce4),
            (0xdd4b_5bce, 0x3fee_5fc9),
            (0xfbef_81c8, 0),
            (0xbedb_2514, 0x7ae0_5ebd),
            (0x9a0b_1d84, 0xaab1_e174),
        ];
        for (v, w) in want.iter().enumerate() {
            assert_eq!(dirhash(v as u8, &SEED, name), Some(*w), "version {v}");
        }
        assert_eq!(dirhash(6, &SEED, name), None);
    }
}
