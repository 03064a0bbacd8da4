//! Small RFC 5322 messages for tests, so tests do not hand-write headers.
//!
//! [`mail`] builds a plain-text message with a unique `Message-ID` (so a
//! test can find exactly its own message in a shared mailbox),
//! [`header_value`] reads a header back out of raw bytes, and [`message`]
//! is the minimal mail the scripted fake servers serve.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static MESSAGE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh, unique `Message-ID` value (with the angle brackets), unique
/// across test threads and concurrently running test binaries.
pub fn message_id() -> String {
    let n = MESSAGE_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("<emap-test.{}.{n}.{nanos}@emap.test>", std::process::id())
}

/// Builds a simple `text/plain; charset=utf-8` message with `From`, `To`,
/// `Subject`, `Date`, a unique `Message-ID` and `MIME-Version` headers.
///
/// Line endings in `body` are normalised to CRLF; the result always ends
/// with CRLF. Header values are taken as given (keep them on one line).
pub fn mail(from: &str, to: &str, subject: &str, body: &str) -> Vec<u8> {
    let mut out = String::new();
    out.push_str(&format!("From: {from}\r\n"));
    out.push_str(&format!("To: {to}\r\n"));
    out.push_str(&format!("Subject: {subject}\r\n"));
    out.push_str(&format!("Date: {}\r\n", rfc5322_date(SystemTime::now())));
    out.push_str(&format!("Message-ID: {}\r\n", message_id()));
    out.push_str("MIME-Version: 1.0\r\n");
    out.push_str("Content-Type: text/plain; charset=utf-8\r\n");
    out.push_str("Content-Transfer-Encoding: 8bit\r\n");
    out.push_str("\r\n");
    for line in body.lines() {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.into_bytes()
}

/// The value of the first header called `name` (case-insensitive) in the
/// header section of `raw`, unfolded and trimmed; `None` if absent.
pub fn header_value(raw: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let mut value: Option<String> = None;
    for line in lines.by_ref() {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(v) = value.as_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if value.is_some() {
            break;
        }
        if let Some((key, rest)) = line.split_once(':')
            && key.eq_ignore_ascii_case(name)
        {
            value = Some(rest.trim().to_string());
        }
    }
    value
}

/// Formats a time as an RFC 5322 date in UTC, e.g.
/// `Thu, 26 Nov 2026 00:16:05 +0000`.
pub fn rfc5322_date(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // 1970-01-01 was a Thursday.
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let (year, month, day) = civil_from_days(days as i64);
    let month_name = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(month - 1) as usize];
    format!("{weekday}, {day:02} {month_name} {year} {h:02}:{m:02}:{s:02} +0000")
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31), proleptic
/// Gregorian (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The one-line mail the scripted servers serve: `From`, `To`, `Subject`
/// and a `Message-ID` made from `subject`, then `body`. Tests tell mails
/// apart by subject.
pub fn message(subject: &str) -> Vec<u8> {
    let id = subject.replace(' ', "-");
    format!(
        "From: a@x.test\r\nTo: b@x.test\r\nSubject: {subject}\r\nMessage-ID: <{id}@x.test>\r\n\r\nbody\r\n"
    )
    .into_bytes()
}
