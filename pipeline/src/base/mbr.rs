//! Edits of single MBR entries that keep every other byte of sector 0 as it
//! was: the boot code area (bytes 0–439, which Tow-Boot's layout leaves
//! alone), the disk id and the other entries. Rewriting the whole table
//! through a table writer would not promise that.

use crate::error::{Error, Result};
use imagegen::block::BlockDevice;

const TABLE: usize = 446;
const SECTOR: u64 = 512;

/// One primary entry: slot 1–4, type, start and length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub slot: u32,
    pub kind: u8,
    pub start: u64,
    pub size: u64,
}

fn read_mbr(dev: &dyn BlockDevice) -> Result<[u8; 512]> {
    let mut s = [0u8; 512];
    dev.read_at(0, &mut s)?;
    if s[510..512] != [0x55, 0xaa] {
        return Err(Error::refused(
            dev.describe(),
            "has no MBR (no 55 aa signature)",
        ));
    }
    Ok(s)
}

/// The four primary slots (type 0 = free).
pub fn entries(dev: &dyn BlockDevice) -> Result<Vec<Entry>> {
    let s = read_mbr(dev)?;
    Ok((0..4)
        .map(|i| {
            let e = &s[TABLE + 16 * i..TABLE + 16 * (i + 1)];
            let le = |b: &[u8]| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            Entry {
                slot: i as u32 + 1,
                kind: e[4],
                start: le(&e[8..12]) * SECTOR,
                size: le(&e[12..16]) * SECTOR,
            }
        })
        .collect())
}

/// Writes `e` into its slot (not bootable; CHS fields set to the
/// "use LBA" marker, as sfdisk does beyond 8 GiB).
pub fn set_entry(dev: &dyn BlockDevice, e: Entry, bootable: Option<bool>) -> Result<()> {
    let mut s = read_mbr(dev)?;
    if !(1..=4).contains(&e.slot)
        || !e.start.is_multiple_of(SECTOR)
        || !e.size.is_multiple_of(SECTOR)
    {
        return Err(Error::refused(
            format!("MBR entry {}", e.slot),
            "not a primary slot on sector boundaries",
        ));
    }
    let (lba, count) = (e.start / SECTOR, e.size / SECTOR);
    let (lba, count) = match (u32::try_from(lba), u32::try_from(count)) {
        (Ok(l), Ok(c)) => (l, c),
        _ => {
            return Err(Error::refused(
                format!("MBR entry {}", e.slot),
                "beyond the 2 TiB an MBR can address",
            ))
        }
    };
    let at = TABLE + 16 * (e.slot as usize - 1);
    let ent = &mut s[at..at + 16];
    if let Some(b) = bootable {
        ent[0] = if b { 0x80 } else { 0 };
    }
    ent[1..4].copy_from_slice(&chs(lba));
    ent[4] = e.kind;
    ent[5..8].copy_from_slice(&chs(lba.saturating_add(count.saturating_sub(1))));
    ent[8..12].copy_from_slice(&lba.to_le_bytes());
    ent[12..16].copy_from_slice(&count.to_le_bytes());
    dev.write_at(0, &s)?;
    Ok(())
}

/// CHS address of an LBA with 255 heads and 63 sectors per track, or the
/// all-ones marker beyond cylinder 1023.
fn chs(lba: u32) -> [u8; 3] {
    let (h, s) = (255u32, 63u32);
    let c = lba / (h * s);
    if c > 1023 {
        return [0xfe, 0xff, 0xff];
    }
    let head = (lba / s) % h;
    let sector = lba % s + 1;
    [
        head as u8,
        (sector as u8) | (((c >> 8) as u8) << 6),
        c as u8,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use imagegen::block::MemDevice;

    #[test]
    fn entry_edits_keep_other_bytes() {
        let dev = MemDevice::zeroed(1 << 20);
        let mut s = [0x11u8; 512];
        s[446..510].fill(0);
        s[510] = 0x55;
        s[511] = 0xaa;
        dev.write_at(0, &s).unwrap();
        let e = Entry {
            slot: 2,
            kind: 0xf8,
            start: 512,
            size: 8191 * 512,
        };
        set_entry(&dev, e, Some(false)).unwrap();
        assert_eq!(entries(&dev).unwrap()[1], e);
        let mut back = [0u8; 512];
        dev.read_at(0, &mut back).unwrap();
        assert_eq!(&back[..446], &s[..446]);
        assert_eq!(&back[446..462], &[0u8; 16]);
        assert_eq!(chs(1), [0, 2, 0]);
    }
}
