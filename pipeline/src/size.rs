//! Byte sizes in flags and in the cluster file: `4096`, `512K`, `64MiB`, `8GiB`, `1.5G`,
//! `100MB`. `K`/`M`/`G`/`T` with or without `iB` are powers of 1024 (as in
//! sfdisk and truncate); `KB`/`MB`/`GB`/`TB` are powers of 1000.

/// Parses a size; the error says what was wrong (for clap's `value_parser`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "unknown unit {other:?} in size {text:?} (use B, K/KiB, M/MiB, G/GiB, T/TiB, or KB/MB/GB/TB)"
            ))
        }
    };
    let bad = || format!("{text:?} is not a size (examples: 4096, 512M, 64MiB, 1.5GiB)");
    let bytes = match number.split_once('.') {
        None => number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(multiplier)),
        Some((whole, frac)) => {
            // Fractions are exact in decimal: whole*mult + frac*mult/10^len.
            let whole: u64 = if whole.is_empty() {
                0
            } else {
                whole.parse().map_err(|_| bad())?
            };
            if frac.is_empty() || frac.len() > 9 || multiplier == 1 {
                return Err(bad());
            }
            let scale = 10u128.pow(frac.len() as u32);
            let frac: u128 = frac.parse().map_err(|_| bad())?;
            let part = frac * u128::from(multiplier);
            if !part.is_multiple_of(scale) {
                return Err(format!("{text:?} is not a whole number of bytes"));
            }
            whole
                .checked_mul(multiplier)
                .and_then(|w| w.checked_add(u64::try_from(part / scale).ok()?))
        }
    };
    bytes.ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn parses_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("8GiB"), Ok(8 << 30));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert!(parse_size("").is_err());
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("1.5").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert!(parse_size("0.3K").is_err());
    }
}
