//! How a mail travels on NATS: its subjects, its headers, its
//! `Nats-Msg-Id`, and the way back from a JetStream message to an
//! [`emap::Mail`].
//!
//! The server does the routing: a mail is published once per recipient on
//! `<prefix>.mail.<inbox>.to.<address>` and once on
//! `<prefix>.mail.<inbox>.all` (catch-all consumers), so a waiter for one
//! address reads only its own mail. An address is not a valid subject
//! token as is (`.` separates tokens; `*`, `>` and white space are
//! special), so it is lower-cased and every byte outside `[a-z0-9_@+-]`
//! becomes `=XX` (hex): reversible, and one address is one token.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;
use emap::Mail;

/// The inbox's name.
pub const INBOX: &str = "Emap-Inbox";
/// The folder, [`escape`]d.
pub const FOLDER: &str = "Emap-Folder";
/// The folder's UIDVALIDITY, in decimal.
pub const UID_VALIDITY: &str = "Emap-Uid-Validity";
/// The mail's UID, in decimal.
pub const UID: &str = "Emap-Uid";
/// INTERNALDATE as seconds since the Unix epoch, when the server gave one.
pub const INTERNAL_DATE: &str = "Emap-Internal-Date";
/// The recipients emap found (lower-cased, token-encoded, comma-separated).
pub const RECIPIENTS: &str = "Emap-Recipients";
/// `1` when the payload is only the start of the mail.
pub const TRUNCATED: &str = "Emap-Truncated";
/// JetStream's de-duplication header.
pub const MSG_ID: &str = "Nats-Msg-Id";

/// An address as one subject token: lower-cased (emap compares
/// addresses ignoring case), then [`escape`]d.
pub fn encode_token(s: &str) -> String {
    escape(&s.to_lowercase())
}

/// `s` as one subject token or header value, case kept: every byte
/// outside `[A-Za-z0-9_@+-]` as `=XX`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'@' | b'+' | b'-' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("={b:02X}")),
        }
    }
    out
}

/// The inverse of [`escape`] (and so of [`encode_token`], lower-cased), or
/// `None` for text it never produces (a byte it would have escaped, lower-
/// case or signed hex, an escape of a byte it keeps as is).
pub fn decode_token(t: &str) -> Option<String> {
    let hex = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    let mut bytes = Vec::with_capacity(t.len());
    let mut it = t.bytes();
    while let Some(b) = it.next() {
        if b == b'=' {
            bytes.push((hex(it.next()?)? << 4) | hex(it.next()?)?);
        } else {
            bytes.push(b);
        }
    }
    let s = String::from_utf8(bytes).ok()?;
    // Only what `escape` produces: one spelling per string.
    (escape(&s) == t).then_some(s)
}

/// Checks that `value` (an inbox name, a prefix) is a plain subject token.
pub fn check_token(what: &str, value: &str) -> Result<(), crate::Error> {
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(crate::Error::InvalidConfig(format!(
            "{what} must be letters, digits, '_' or '-'"
        )))
    }
}

/// The stream's subjects: everything under `<prefix>.mail.`.
pub fn stream_subjects(prefix: &str) -> String {
    format!("{prefix}.mail.>")
}

/// The catch-all subject of `inbox`.
pub fn all(prefix: &str, inbox: &str) -> String {
    format!("{prefix}.mail.{inbox}.all")
}

/// The subject of `address`'s mail in `inbox`.
pub fn to(prefix: &str, inbox: &str, address: &str) -> String {
    format!("{prefix}.mail.{inbox}.to.{}", encode_token(address))
}

/// The subjects one mail is published on: one per recipient, then the
/// inbox's catch-all.
pub fn subjects_of(prefix: &str, inbox: &str, mail: &Mail) -> Vec<String> {
    let mut out: Vec<String> = mail
        .recipients()
        .iter()
        .map(|r| to(prefix, inbox, r))
        .collect();
    out.sort();
    out.dedup();
    out.push(all(prefix, inbox));
    out
}

/// The `Nats-Msg-Id` of `mail` on `subject`: the same mail on the same
/// subject always gets the same one, whichever bridge publishes it.
pub fn msg_id(inbox: &str, mail: &Mail, subject: &str) -> String {
    format!(
        "{inbox}/{}/{}/{}/{subject}",
        escape(mail.mailbox()),
        mail.uid_validity(),
        mail.uid()
    )
}

/// The headers of `mail` published on `subject`; `truncated` when the
/// payload is cut to the server's maximum.
pub fn headers(inbox: &str, mail: &Mail, subject: &str, truncated: bool) -> HeaderMap {
    let mut h = mail_headers(inbox, mail, truncated);
    h.insert(MSG_ID, msg_id(inbox, mail, subject).as_str());
    h
}

/// The headers of `mail` that are the same on every subject (all but the
/// `Nats-Msg-Id`): built once per mail.
pub(crate) fn mail_headers(inbox: &str, mail: &Mail, truncated: bool) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(INBOX, inbox);
    h.insert(FOLDER, escape(mail.mailbox()).as_str());
    h.insert(UID_VALIDITY, mail.uid_validity().to_string().as_str());
    h.insert(UID, mail.uid().to_string().as_str());
    if let Some(d) = mail
        .internal_date()
        .and_then(|d| d.duration_since(UNIX_EPOCH).ok())
    {
        h.insert(INTERNAL_DATE, d.as_secs().to_string().as_str());
    }
    let recipients: Vec<String> = mail.recipients().iter().map(|r| encode_token(r)).collect();
    h.insert(RECIPIENTS, recipients.join(",").as_str());
    if truncated || mail.is_truncated() {
        h.insert(TRUNCATED, "1");
    }
    h
}

/// Why a message on an emap subject is not a mail a bridge published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed emap message: {0}")]
pub struct Malformed(pub &'static str);

/// The mail a bridge published, parsed on the waiter's side; a message
/// without emap's headers (not from a bridge) is [`Malformed`].
pub fn mail_of(headers: Option<&HeaderMap>, payload: &[u8]) -> Result<Mail, Malformed> {
    let h = headers.ok_or(Malformed("no headers"))?;
    let get = |name: &str| h.get(name).map(|v| v.as_str());
    let number = |name: &'static str| -> Result<u32, Malformed> {
        get(name)
            .ok_or(Malformed(name))?
            .parse()
            .map_err(|_| Malformed(name))
    };
    let uid = number(UID)?;
    let uid_validity = number(UID_VALIDITY)?;
    let folder = get(FOLDER)
        .and_then(decode_token)
        .ok_or(Malformed(FOLDER))?;
    get(INBOX).ok_or(Malformed(INBOX))?;
    let internal_date = match get(INTERNAL_DATE) {
        None => None,
        Some(s) => Some(
            s.parse::<u64>()
                .ok()
                .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s)))
                .ok_or(Malformed(INTERNAL_DATE))?,
        ),
    };
    if payload.is_empty() {
        return Err(Malformed("empty payload"));
    }
    let truncated = get(TRUNCATED) == Some("1");
    Ok(Mail::parse(
        uid,
        uid_validity,
        &folder,
        internal_date,
        payload.to_vec(),
        truncated,
    ))
}

/// Seconds since the epoch of `t`, for logs.
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_are_one_token() {
        for s in [
            "task42@example.com",
            "a.b*c>d e@x",
            "Ünïcode@bücher.de",
            "=41",
        ] {
            let t = encode_token(s);
            assert!(!t.contains(['.', '*', '>', ' ']), "{t}");
            assert_eq!(decode_token(&t).as_deref(), Some(s.to_lowercase().as_str()));
        }
        assert_eq!(decode_token("=4"), None);
        assert_eq!(decode_token("=ZZ"), None);
        // Never produced by escape: signed or lower-case hex, an escaped
        // byte escape keeps, a byte escape escapes.
        for t in ["=+1", "=2e", "=41", "a.b", "a b"] {
            assert_eq!(decode_token(t), None, "{t}");
        }
        assert_eq!(decode_token("a=2Eb").as_deref(), Some("a.b"));
    }

    #[test]
    fn a_mail_survives_its_headers() {
        let raw = b"From: a@x\r\nTo: Task@Example.com\r\nSubject: hi\r\nMessage-ID: <1@x>\r\n\r\nbody\r\n";
        let date = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mail = Mail::parse(7, 99, "INBOX", Some(date), raw.to_vec(), false);
        let subjects = subjects_of("emap", "box", &mail);
        assert_eq!(
            subjects,
            ["emap.mail.box.to.task@example=2Ecom", "emap.mail.box.all"]
        );
        let h = headers("box", &mail, &subjects[0], false);
        let back = mail_of(Some(&h), raw).unwrap();
        assert_eq!((back.uid(), back.uid_validity()), (7, 99));
        assert_eq!(back.mailbox(), "INBOX");
        assert_eq!(back.internal_date(), Some(date));
        assert_eq!(back.message_id(), Some("1@x"));
        assert_ne!(
            msg_id("box", &mail, &subjects[0]),
            msg_id("box", &mail, &subjects[1])
        );
    }

    #[test]
    fn messages_not_from_a_bridge_are_malformed() {
        assert!(mail_of(None, b"x").is_err());
        let mut h = HeaderMap::new();
        h.insert(UID, "nope");
        assert_eq!(mail_of(Some(&h), b"x").unwrap_err(), Malformed(UID));
        h.insert(UID, "1");
        h.insert(UID_VALIDITY, "1");
        h.insert(FOLDER, "INBOX");
        h.insert(INBOX, "box");
        assert_eq!(
            mail_of(Some(&h), b"").unwrap_err(),
            Malformed("empty payload")
        );
        assert!(mail_of(Some(&h), b"Subject: x\r\n\r\n").is_ok());
    }
}
