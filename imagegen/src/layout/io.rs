//! A std stream over a borrowed device, in the shape `mbrman` and `gpt` want
//! (`Read + Write + Seek + Debug`).

use crate::block::{BlockDevice, DeviceCursor};
use std::io::{self, Read, Seek, SeekFrom, Write};

/// `DeviceCursor` over `&dyn BlockDevice`, with the `Debug` the `gpt` crate requires.
pub(super) struct Stream<'a>(DeviceCursor<&'a dyn BlockDevice>);

impl<'a> Stream<'a> {
    pub(super) fn new(dev: &'a dyn BlockDevice) -> Self {
        Stream(DeviceCursor::new(dev))
    }
}

impl std::fmt::Debug for Stream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Stream({})", self.0.get_ref().describe())
    }
}

impl Read for Stream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Stream<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Seek for Stream<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.0.seek(pos)
    }
}
