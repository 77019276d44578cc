//! `Read + Write + Seek` over a [`BlockDevice`], for crates built on std streams.

use super::BlockDevice;
use std::io::{self, Read, Seek, SeekFrom, Write};

/// A stream position over a device. Reads stop at the end of the device
/// (short read, then 0); writes past the end fail, since devices do not grow.
#[derive(Debug)]
pub struct DeviceCursor<D> {
    dev: D,
    pos: u64,
}

impl<D: BlockDevice> DeviceCursor<D> {
    /// A cursor at offset 0.
    pub fn new(dev: D) -> Self {
        DeviceCursor { dev, pos: 0 }
    }

    /// The device behind the cursor.
    pub fn get_ref(&self) -> &D {
        &self.dev
    }

    /// Gives back the device.
    pub fn into_inner(self) -> D {
        self.dev
    }
}

fn to_io(e: crate::Error) -> io::Error {
    match e {
        crate::Error::Io { source, .. } | crate::Error::IoContext { source, .. } => source,
        other => io::Error::other(other),
    }
}

impl<D: BlockDevice> Read for DeviceCursor<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.dev.size();
        if self.pos >= size {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(size - self.pos) as usize;
        self.dev.read_at(self.pos, &mut buf[..n]).map_err(to_io)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<D: BlockDevice> Write for DeviceCursor<D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let size = self.dev.size();
        if self.pos >= size {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "write at {} past the end of {} ({size} bytes)",
                    self.pos,
                    self.dev.describe()
                ),
            ));
        }
        let n = (buf.len() as u64).min(size - self.pos) as usize;
        self.dev.write_at(self.pos, &buf[..n]).map_err(to_io)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.dev.flush().map_err(to_io)
    }
}

impl<D: BlockDevice> Seek for DeviceCursor<D> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let base = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.dev.size().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match base {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek to a negative or overflowing position",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{MemDevice, Window};

    #[test]
    fn cursor_reads_window_and_stops_at_end() {
        let dev = MemDevice::from_vec((0u8..=255).collect());
        let win = Window::new(&dev, 10, 6).unwrap();
        let mut c = DeviceCursor::new(win);
        let mut out = Vec::new();
        c.read_to_end(&mut out).unwrap();
        assert_eq!(out, vec![10, 11, 12, 13, 14, 15]);
        c.seek(SeekFrom::Start(4)).unwrap();
        assert!(
            c.write_all(&[1, 2, 3]).is_err(),
            "writes must not grow a window"
        );
    }

    #[test]
    fn window_refuses_range_past_end() {
        let dev = MemDevice::zeroed(100);
        assert!(Window::new(&dev, 90, 11).is_err());
        assert!(Window::new(&dev, u64::MAX, 2).is_err());
        let w = Window::new(&dev, 90, 10).unwrap();
        assert!(w.read_at(5, &mut [0; 6]).is_err());
        w.write_at(0, &[7; 10]).unwrap();
        assert_eq!(dev.to_vec()[90..], [7; 10]);
    }
}
