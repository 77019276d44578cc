//! FAT timestamps: DOS date/time fields (local time by convention; we write
//! and read them as UTC so images do not depend on the builder's time zone).

use crate::fs::timestamp::{civil_from_days, days_from_civil};
use crate::fs::Timestamp;

/// A DOS date (`date`), time (`time`, 2 s resolution) and the 10 ms
/// refinement some entries carry (`hundredths`, 0..=199).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DosTime {
    pub date: u16,
    pub time: u16,
    pub hundredths: u8,
}

/// 1980-01-01, the earliest DOS date.
const DOS_EPOCH: i64 = 315_532_800;
/// 2107-12-31 23:59:58, the latest.
const DOS_END: i64 = 4_354_819_198;

impl DosTime {
    /// Converts a Unix time, clamped to the years DOS dates can hold.
    pub fn from_timestamp(t: Timestamp) -> DosTime {
        let secs = t.secs.clamp(DOS_EPOCH, DOS_END);
        let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
        let sod = secs.rem_euclid(86_400);
        let (h, min, s) = (sod / 3600, sod / 60 % 60, sod % 60);
        let date = (((y - 1980) << 9) | (m << 5) | d) as u16;
        let time = ((h << 11) | (min << 5) | (s / 2)) as u16;
        let hundredths = if t.secs == secs {
            (s % 2 * 100 + i64::from(t.nanos / 10_000_000)) as u8
        } else {
            0
        };
        DosTime {
            date,
            time,
            hundredths,
        }
    }

    /// The Unix time of these fields; `None` for an impossible date (zero
    /// fields are common in entries nobody stamped).
    pub fn to_timestamp(self) -> Option<Timestamp> {
        let (y, m, d) = (
            i64::from(self.date >> 9) + 1980,
            i64::from(self.date >> 5 & 0x0F),
            i64::from(self.date & 0x1F),
        );
        let (h, min, s) = (
            i64::from(self.time >> 11),
            i64::from(self.time >> 5 & 0x3F),
            i64::from(self.time & 0x1F) * 2,
        );
        if !(1..=12).contains(&m) || d == 0 || h > 23 || min > 59 || s > 59 {
            return None;
        }
        let extra = i64::from(self.hundredths.min(199));
        Some(Timestamp {
            secs: days_from_civil(y, m, d) * 86_400 + h * 3600 + min * 60 + s + extra / 100,
            nanos: (extra % 100) as u32 * 10_000_000,
        })
    }
}

fn fatfs_date(t: DosTime) -> fatfs::Date {
    fatfs::Date {
        year: (t.date >> 9) + 1980,
        month: t.date >> 5 & 0x0F,
        day: t.date & 0x1F,
    }
}

/// The same instant in `fatfs`'s types.
fn to_fatfs(t: Timestamp) -> fatfs::DateTime {
    let d = DosTime::from_timestamp(t);
    fatfs::DateTime {
        date: fatfs_date(d),
        time: fatfs::Time {
            hour: d.time >> 11,
            min: d.time >> 5 & 0x3F,
            sec: (d.time & 0x1F) * 2 + u16::from(d.hundredths / 100),
            millis: u16::from(d.hundredths % 100) * 10,
        },
    }
}

/// Hands the time a volume was opened with to `fatfs` for the entries it
/// stamps itself: a fixed instant, never a clock.
#[derive(Debug)]
pub struct Clock(Timestamp);

impl fatfs::TimeProvider for Clock {
    fn get_current_date(&self) -> fatfs::Date {
        fatfs_date(DosTime::from_timestamp(self.0))
    }

    fn get_current_date_time(&self) -> fatfs::DateTime {
        to_fatfs(self.0)
    }
}

/// The clock that always says `now`. `fatfs` keeps only `&'static` clocks,
/// so each distinct instant gets one for the life of the process (stamping
/// many volumes with one time makes one).
pub fn clock_for(now: Timestamp) -> &'static Clock {
    static CLOCKS: std::sync::Mutex<Vec<&'static Clock>> = std::sync::Mutex::new(Vec::new());
    let mut clocks = CLOCKS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = clocks.iter().find(|c| c.0 == now) {
        return c;
    }
    let c: &'static Clock = Box::leak(Box::new(Clock(now)));
    clocks.push(c);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_even_seconds() {
        for secs in [DOS_EPOCH, 1_700_000_000, 1_700_000_001, DOS_END] {
            let t = Timestamp { secs, nanos: 0 };
            assert_eq!(DosTime::from_timestamp(t).to_timestamp(), Some(t));
        }
        let t = Timestamp {
            secs: 1_234_567_891,
            nanos: 990_000_000,
        };
        assert_eq!(DosTime::from_timestamp(t).to_timestamp(), Some(t));
    }

    #[test]
    fn clamps_and_refuses_nonsense() {
        let early = DosTime::from_timestamp(Timestamp { secs: 0, nanos: 0 });
        assert_eq!(early.to_timestamp().unwrap().secs, DOS_EPOCH);
        let zero = DosTime {
            date: 0,
            time: 0,
            hundredths: 0,
        };
        assert_eq!(zero.to_timestamp(), None);
    }
}
