//! Finding `http://` and `https://` URLs in running text: where one starts,
//! which character ends it, which trailing punctuation belongs to the
//! sentence rather than the URL, and whether what is left has a host. Both
//! the text part and the visible text of the HTML part go through it.

use std::borrow::Cow;

use crate::cjk::is_cjk;
use crate::entities::decode_entities;

/// Calls `found(byte offset, url)` for each URL in `s`, in order, until it
/// returns `false`. `decode`: decode HTML entities in each URL.
pub(crate) fn scan_urls(s: &str, decode: bool, mut found: impl FnMut(usize, String) -> bool) {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let Some(off) = b[i..].iter().position(|&c| (c | 0x20) == b'h') else {
            return;
        };
        let start = i + off;
        i = start + 1;
        let rest = &b[start..];
        if !(starts_with_ci(rest, b"https://") || starts_with_ci(rest, b"http://")) {
            continue;
        }
        if start > 0 && b[start - 1].is_ascii_alphanumeric() {
            continue;
        }
        let end = start + s[start..].find(is_url_stop).unwrap_or(s.len() - start);
        i = end.max(i);
        if let Some(url) = clean_url(&s[start..end], decode)
            && !found(start, url)
        {
            return;
        }
    }
}

/// Whether `c` cannot be part of a bare URL in running text.
pub(crate) fn is_url_stop(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(
            c,
            '<' | '>'
                | '"'
                | '`'
                | '{'
                | '}'
                | '|'
                | '\\'
                | '^'
                | '\u{AD}'
                | '\u{200B}'..='\u{200D}'
                | '\u{2060}'
                | '\u{FEFF}'
                | '«'
                | '»'
                | '\u{2018}'..='\u{201F}'
                | '\u{2026}'
        )
        || is_cjk(c)
}

/// A URL candidate made presentable: entities decoded (when `decode`), cut
/// at a character that cannot be in a URL, trailing punctuation trimmed,
/// host checked.
pub(crate) fn clean_url(raw: &str, decode: bool) -> Option<String> {
    let decoded = if decode {
        decode_entities(raw)
    } else {
        Cow::Borrowed(raw)
    };
    let cut = decoded.find(is_url_stop).unwrap_or(decoded.len());
    let url = trim_url_end(&decoded[..cut]);
    valid_url(url).then(|| url.to_owned())
}

/// Drops trailing punctuation that belongs to the sentence, not the URL.
pub(crate) fn trim_url_end(mut url: &str) -> &str {
    let (mut open_p, mut close_p, mut open_b, mut close_b) = (0usize, 0usize, 0usize, 0usize);
    for c in url.bytes() {
        match c {
            b'(' => open_p += 1,
            b')' => close_p += 1,
            b'[' => open_b += 1,
            b']' => close_b += 1,
            _ => {}
        }
    }
    while let Some(c) = url.chars().next_back() {
        let drop = match c {
            '.' | ',' | ';' | ':' | '!' | '?' | '\'' | '"' | '*' | '>' | '<' => true,
            ')' if close_p > open_p => {
                close_p -= 1;
                true
            }
            ']' if close_b > open_b => {
                close_b -= 1;
                true
            }
            _ => false,
        };
        if !drop {
            break;
        }
        url = &url[..url.len() - c.len_utf8()];
    }
    url
}

/// `http(s)://` followed by a host that starts with a letter, a digit or
/// `[` (IPv6).
pub(crate) fn valid_url(url: &str) -> bool {
    let Some(rest) = strip_prefix_ci(url, "https://").or_else(|| strip_prefix_ci(url, "http://"))
    else {
        return false;
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host = authority.rsplit('@').next().unwrap_or("");
    host.chars()
        .next()
        .is_some_and(|c| c.is_alphanumeric() || c == '[')
}

pub(crate) fn starts_with_ci(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

pub(crate) fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    s.get(..prefix.len())
        .filter(|p| p.eq_ignore_ascii_case(prefix))
        .map(|_| &s[prefix.len()..])
}
