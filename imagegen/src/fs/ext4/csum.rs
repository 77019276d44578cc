//! One verify/seal pair per checksummed block kind, so every reader and
//! writer of a kind agrees: directory leaves (the 12-byte `0xDE` tail),
//! htree index nodes (the `dx_tail` after `limit` entries), extent-tree
//! blocks (crc after `max` entries) and extended-attribute blocks (crc at
//! 0x10 over the block number and the block). Also the checksums
//! `mkext4::csum` does not provide: the crc16 of the older `gdt_csum`
//! feature and the group-descriptor checksum. (Inodes, bitmaps and the
//! superblock carry their checksum in their own structure: `Inode::seal` /
//! `checksum_ok`, `put_*_bitmap` / `*_bitmap`, `Superblock::seal` / `parse`.)

use super::bytes::{put_u16, put_u32, u16_at, u32_at};
use mkext4::csum::crc32c_raw;

/// CRC-16/ARC (polynomial 0x8005, reflected), for `gdt_csum`.
const CRC16: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_ARC);

/// CRC-16 in e2fsprogs' raw-register convention: the caller passes the
/// running value, no final inversion. The `crc` crate takes an initial value
/// in unreflected form, hence the bit reversal.
pub fn crc16(crc: u16, data: &[u8]) -> u16 {
    let mut digest = CRC16.digest_with_initial(crc.reverse_bits());
    digest.update(data);
    digest.finalize()
}

/// Checksum of group descriptor `group` (`desc` is the whole descriptor,
/// `desc_size` bytes). `metadata_csum`: low 16 bits of crc32c over the
/// group number and the descriptor with its checksum field zeroed.
/// `gdt_csum`: crc16 over uuid, group number and the same bytes.
pub fn group_desc(
    metadata_csum: bool,
    fs_seed: u32,
    uuid: &[u8; 16],
    group: u32,
    desc: &[u8],
) -> u16 {
    let le_group = group.to_le_bytes();
    if metadata_csum {
        let c = crc32c_raw(fs_seed, &le_group);
        let c = crc32c_raw(c, &desc[..0x1E]);
        let c = crc32c_raw(c, &[0, 0]);
        let c = crc32c_raw(c, &desc[0x20..]);
        c as u16
    } else {
        let c = crc16(!0, uuid);
        let c = crc16(c, &le_group);
        let c = crc16(c, &desc[..0x1E]);
        crc16(c, &desc[0x20..])
    }
}

/// Length of a directory leaf's checksum tail.
pub const DIR_TAIL: usize = 12;

/// Whether a directory leaf ends in a checksum tail.
pub fn dir_has_tail(buf: &[u8]) -> bool {
    let t = buf.len() - DIR_TAIL;
    u32_at(buf, t) == 0
        && u16_at(buf, t + 4) == DIR_TAIL as u16
        && buf[t + 6] == 0
        && buf[t + 7] == 0xDE
}

/// Whether a directory leaf carries a tail and its checksum is right.
pub fn dir_leaf_ok(buf: &[u8], seed: u32) -> bool {
    let t = buf.len() - DIR_TAIL;
    dir_has_tail(buf) && crc32c_raw(seed, &buf[..t]) == u32_at(buf, t + 8)
}

/// Writes a directory leaf's tail (when `seed` is given) with its checksum.
pub fn dir_leaf_seal(buf: &mut [u8], seed: Option<u32>) {
    if let Some(seed) = seed {
        let t = buf.len() - DIR_TAIL;
        put_u32(buf, t, 0);
        put_u16(buf, t + 4, DIR_TAIL as u16);
        buf[t + 6] = 0;
        buf[t + 7] = 0xDE;
        let c = crc32c_raw(seed, &buf[..t]);
        put_u32(buf, t + 8, c);
    }
}

/// Whether the htree index node whose `limit`/`count` header is at
/// `count_off` has a right `dx_tail` checksum.
pub fn dx_ok(buf: &[u8], seed: u32, count_off: usize) -> bool {
    let limit = usize::from(u16_at(buf, count_off));
    let count = u16_at(buf, count_off + 2);
    let tail = count_off + limit * 8;
    tail + 8 <= buf.len()
        && mkext4::csum::dx_block(seed, buf, count_off, count, limit as u16)
            == u32_at(buf, tail + 4)
}

/// Recomputes an htree index node's `dx_tail` checksum.
pub fn dx_seal(buf: &mut [u8], seed: Option<u32>, count_off: usize) {
    if let Some(seed) = seed {
        let limit = usize::from(u16_at(buf, count_off));
        let count = u16_at(buf, count_off + 2);
        let tail = count_off + limit * 8;
        if tail + 8 <= buf.len() {
            let c = mkext4::csum::dx_block(seed, buf, count_off, count, limit as u16);
            put_u32(buf, tail + 4, c);
        }
    }
}

/// Whether an extent-tree block's checksum (after `max` entries) is right.
pub fn extent_block_ok(buf: &[u8], seed: u32) -> bool {
    let max = usize::from(u16_at(buf, 4));
    let tail = 12 + max * 12;
    tail + 4 <= buf.len() && crc32c_raw(seed, &buf[..tail]) == u32_at(buf, tail)
}

/// Writes an extent-tree block's checksum.
pub fn extent_block_seal(buf: &mut [u8], seed: Option<u32>) {
    if let Some(seed) = seed {
        let max = usize::from(u16_at(buf, 4));
        let tail = 12 + max * 12;
        if tail + 4 <= buf.len() {
            let c = crc32c_raw(seed, &buf[..tail]);
            put_u32(buf, tail, c);
        }
    }
}

/// Whether extended-attribute block `b`'s checksum is right.
pub fn xattr_block_ok(buf: &[u8], fs_seed: u32, b: u64) -> bool {
    mkext4::csum::xattr_block(fs_seed, b, buf) == u32_at(buf, 0x10)
}

/// Writes extended-attribute block `b`'s checksum (when `fs_seed` is given).
pub fn xattr_block_seal(buf: &mut [u8], fs_seed: Option<u32>, b: u64) {
    if let Some(seed) = fs_seed {
        put_u32(buf, 0x10, 0);
        let c = mkext4::csum::xattr_block(seed, b, buf);
        put_u32(buf, 0x10, c);
    }
}

#[cfg(test)]
mod tests {
    use super::crc16;

    #[test]
    fn crc16_matches_the_arc_check_value() {
        // CRC-16/ARC of "123456789" (init 0, no inversion) is 0xBB3D.
        assert_eq!(crc16(0, b"123456789"), 0xBB3D);
    }

    /// e2fsprogs' bitwise loop, as the oracle for running values.
    fn bitwise(mut crc: u16, data: &[u8]) -> u16 {
        for &byte in data {
            crc ^= u16::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xA001
                } else {
                    crc >> 1
                };
            }
        }
        crc
    }

    #[test]
    fn crc16_chains_like_e2fsprogs() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for init in [0u16, !0, 0x1234, 0x8001] {
            assert_eq!(crc16(init, &data), bitwise(init, &data), "{init:#x}");
            let split = crc16(crc16(init, &data[..77]), &data[77..]);
            assert_eq!(split, bitwise(init, &data));
        }
    }
}
