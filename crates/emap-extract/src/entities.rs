//! HTML character references (`&amp;`, `&#61;`, `&#x3D;`, ...). Links in
//! `href` attributes and in text parts (where generators leave them by
//! mistake) carry them, and a URL with `&amp;` in it is not the URL the
//! sender meant.

use std::borrow::Cow;

/// Decodes HTML character references: numeric ones (`&#61;`, `&#x3D;`,
/// the `;` optional) and the named ones mail actually uses. Unknown names
/// are left as they are.
pub(crate) fn decode_entities(s: &str) -> Cow<'_, str> {
    if !s.contains('&') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(p) = rest.find('&') {
        out.push_str(&rest[..p]);
        rest = &rest[p..];
        match entity(rest) {
            Some((c, len)) => {
                out.extend(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// The character reference at the start of `s` (which starts with `&`):
/// what it stands for (`None` for a soft hyphen or zero-width character)
/// and its length in bytes.
pub(crate) fn entity(s: &str) -> Option<(Option<char>, usize)> {
    let b = s.as_bytes();
    if b.get(1) == Some(&b'#') {
        let (radix, from) = match b.get(2) {
            Some(b'x' | b'X') => (16, 3),
            _ => (10, 2),
        };
        let n = b[from.min(b.len())..]
            .iter()
            .take(8)
            .take_while(|c| (**c as char).is_digit(radix))
            .count();
        if n == 0 {
            return None;
        }
        let value = u32::from_str_radix(&s[from..from + n], radix).ok()?;
        let mut len = from + n;
        if b.get(len) == Some(&b';') {
            len += 1;
        }
        let c = char::from_u32(value)
            .filter(|&c| c != '\0')
            .unwrap_or('\u{FFFD}');
        return Some((Some(c), len));
    }
    let n = b[1..]
        .iter()
        .take(9)
        .take_while(|c| c.is_ascii_alphanumeric())
        .count();
    if n == 0 || b.get(1 + n) != Some(&b';') {
        return None;
    }
    let c = match &s[1..1 + n] {
        "amp" | "AMP" => '&',
        "lt" | "LT" => '<',
        "gt" | "GT" => '>',
        "quot" | "QUOT" => '"',
        "apos" => '\'',
        "nbsp" => '\u{A0}',
        "equals" => '=',
        "sol" => '/',
        "colon" => ':',
        "quest" => '?',
        "num" => '#',
        "percnt" => '%',
        "period" => '.',
        "lowbar" => '_',
        "lpar" => '(',
        "rpar" => ')',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "hellip" => '…',
        "mdash" => '—',
        "ndash" => '–',
        "laquo" => '«',
        "raquo" => '»',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "bull" => '•',
        "middot" => '·',
        "euro" => '€',
        "pound" => '£',
        "yen" => '¥',
        "cent" => '¢',
        "shy" | "zwnj" | "zwj" => return Some((None, n + 2)),
        _ => return None,
    };
    Some((Some(c), n + 2))
}
