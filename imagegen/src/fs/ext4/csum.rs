//! The checksums ext4 uses that `mkext4::csum` does not provide: the crc16 of
//! the older `gdt_csum` feature and the full-width group-descriptor and
//! bitmap checksums of 64-byte descriptors.

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
