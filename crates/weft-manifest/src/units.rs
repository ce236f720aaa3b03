//! Human-friendly durations (`"10ms"`) and sizes (`"1MiB"`) in manifests.

use std::time::Duration;

/// Parses a duration such as `10ms`, `1.5s` or `250us`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration {text:?} ({e}); write e.g. \"10ms\" or \"1s\""))
}

/// Parses a size in bytes: a plain number or one with a unit
/// (`B`, `KiB`, `MiB`, `GiB`, or the decimal `KB`, `MB`, `GB`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad =
        || format!("invalid size {text:?}; write e.g. \"64KiB\", \"1MiB\" or a number of bytes");
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '_'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.replace('_', "").parse().map_err(|_| bad())?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    number.checked_mul(scale).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("64 KiB").unwrap(), 64 << 10);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("1_000kB").unwrap(), 1_000_000);
        assert!(parse_size("1 MegaByte").unwrap_err().contains("1 MegaByte"));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10ms").unwrap(), Duration::from_millis(10));
        assert_eq!(parse_duration("1s").unwrap(), Duration::from_secs(1));
        assert!(
            parse_duration("10 parsecs")
                .unwrap_err()
                .contains("10 parsecs")
        );
    }
}
