//! Durations and times as a user writes them on the command line (`10m`,
//! `1h30m`, RFC 3339, Unix seconds) and reads them in the output (RFC 3339
//! UTC).
//!
//! Hand-written on the calendar arithmetic of the protocol layer (which
//! parses INTERNALDATE) rather than with a date crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use emap::__private::proto::date::{civil_from_days, days_from_civil, days_in_month};

/// A duration as the user would write it: `1s`, `10m`, `1500ms`.
pub(crate) fn describe(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        _ if ms.is_multiple_of(3_600_000) && ms > 0 => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) && ms > 0 => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

/// A duration as a person reads it in a table: `45s`, `3m 12s`, `2h 05m`,
/// `3d 04h`.
pub(crate) fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, s / 60 % 60),
        _ => format!("{}d {:02}h", s / 86400, s / 3600 % 24),
    }
}

/// A time of day in UTC, `HH:MM:SS UTC`: when something happens in the
/// next minutes.
pub(crate) fn time_of_day(t: SystemTime) -> String {
    let s = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("{:02}:{:02}:{:02} UTC", s / 3600 % 24, s / 60 % 60, s % 60)
}

/// Parses `30s`, `10m`, `2h`, `1d`, `500ms`, `1h30m`, or plain seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("invalid duration {s:?}: use e.g. 30s, 10m, 2h, 1d, 500ms");
    let s = s.trim();
    if s.is_empty() {
        return Err(err());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map(Duration::from_secs).map_err(|_| err());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let unit_len = rest[digits..]
            .bytes()
            .take_while(u8::is_ascii_alphabetic)
            .count();
        if digits == 0 || unit_len == 0 {
            return Err(err());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| err())?;
        let unit_ms: u64 = match &rest[digits..digits + unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(err()),
        };
        let part = n.checked_mul(unit_ms).ok_or_else(err)?;
        total = total
            .checked_add(Duration::from_millis(part))
            .ok_or_else(err)?;
        rest = &rest[digits + unit_len..];
    }
    Ok(total)
}

/// Parses an RFC 3339 time (`2024-05-12T10:00:00Z`,
/// `2024-05-12T12:00:00.5+02:00`) or Unix seconds.
pub(crate) fn parse_since(s: &str) -> Result<SystemTime, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = s.parse().map_err(|_| format!("invalid time {s:?}"))?;
        return UNIX_EPOCH
            .checked_add(Duration::from_secs(secs))
            .ok_or_else(|| format!("invalid time {s:?}"));
    }
    parse_rfc3339(s).ok_or_else(|| {
        format!("invalid time {s:?}: use RFC 3339 (2024-05-12T10:00:00Z) or Unix seconds")
    })
}

fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let at = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));
    if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt ") && at(13, b":") && at(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if at(i, b".") {
        i += 1;
        let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        for (k, &d) in b[i..i + digits].iter().take(9).enumerate() {
            nanos += u32::from(d - b'0') * 10u32.pow(8 - k as u32);
        }
        i += digits;
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && at(i + 3, b":") => {
            let (h, m) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let o = h * 3600 + m * 60;
            if *sign == b'-' { -o } else { o }
        }
        _ => return None,
    };
    let secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second.min(59)
            - offset;
    let t = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs as u64))?
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))?
    };
    t.checked_add(Duration::from_nanos(u64::from(nanos)))
}

/// A time as RFC 3339 in UTC, to the second: `2024-05-12T10:00:00Z`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX / 2),
    };
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok =
            |s: &str, ms: u64| assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
        ok("30s", 30_000);
        ok("10m", 600_000);
        ok("2h", 7_200_000);
        ok("1d", 86_400_000);
        ok("500ms", 500);
        ok("1h30m", 5_400_000);
        ok("45", 45_000);
        for bad in [
            "",
            "m",
            "10x",
            "1.5s",
            "-1s",
            "s10",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(describe(Duration::from_secs(1)), "1s");
        assert_eq!(describe(Duration::from_secs(600)), "10m");
        assert_eq!(describe(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn times() {
        let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(parse_since("1704103200"), Ok(at(1_704_103_200)));
        assert_eq!(parse_since("2024-01-01T10:00:00Z"), Ok(at(1_704_103_200)));
        assert_eq!(
            parse_since("2024-01-01 12:00:00+02:00"),
            Ok(at(1_704_103_200))
        );
        assert_eq!(
            parse_since("2024-01-01t05:30:00-04:30"),
            Ok(at(1_704_103_200))
        );
        assert_eq!(
            parse_since("2024-01-01T10:00:00.25Z"),
            Ok(at(1_704_103_200) + Duration::from_millis(250))
        );
        for bad in [
            "",
            "2024-01-01",
            "2024-01-01T10:00:00",
            "2024-02-30T10:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T10:00:00+0200",
            "2024-01-01T10:00:00.Z",
            "yesterday",
        ] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
        assert_eq!(rfc3339(at(1_704_103_200)), "2024-01-01T10:00:00Z");
        assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(86_400)),
            "1969-12-31T00:00:00Z"
        );
    }
}
