//! What the two binaries of this crate (`emap-bridge`, `emap-wait`) parse
//! alike from their command lines, written once.

use std::time::Duration;

/// `500ms`, `10s`, `5m`, `1h` (a bare number is seconds).
pub fn duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = n.parse().map_err(|_| format!("not a duration: {s}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        "h" => Ok(Duration::from_secs(n.saturating_mul(3600))),
        _ => Err(format!("unknown unit in {s} (ms, s, m, h)")),
    }
}
