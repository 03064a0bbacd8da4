//! Links and one-time codes found in a [`Mail`](crate::Mail): what a
//! sign-up or verification flow actually wants from the mail it waited for.
//!
//! A task that subscribed for `task42@catchall.example` usually needs one
//! thing out of the message: the "Verify email" link or the six digits to
//! type in. Every such task would otherwise write the same fragile scanner,
//! so it lives here, behind [`Mail::links`](crate::Mail::links) and
//! [`Mail::codes`](crate::Mail::codes).
//!
//! The input is untrusted and can be large (up to `max_message_size`), so
//! every scan is hand-written, single-pass and bounded: no regular
//! expressions (and no regex dependency), at most [`MAX_LINKS`] links, and
//! codes are looked for in the first [`MAX_CODE_SCAN_CHARS`] characters of
//! each part only.
//!
//! # Links
//! `http://` and `https://` URLs, from the text part and then the HTML part,
//! in order of appearance and without duplicates. In HTML, `href` targets
//! (quoted with `"` or `'`, or unquoted) count, as do URLs in the visible
//! text; nothing from `<head>`, `<style>`, `<script>`, `<title>`, comments,
//! `src` or other attributes (images, tracking pixels, stylesheets). HTML
//! entities (`&amp;`, `&#61;`, `&#x3D;`, ...) are decoded, also in text
//! parts (where generators leave them by mistake). A bare URL ends at
//! whitespace, `<`, `>`, `"`, a backtick, `{`, `}`, `|`, `\`, `^`, a
//! zero-width or typographic quote character, or CJK text; trailing `.`,
//! `,`, `;`, `:`, `!`, `?`, `*`, quotes and `>` are trimmed, and `)` / `]`
//! when unbalanced. A URL needs a host starting with a letter or digit.
//!
//! # Codes
//! Candidates are numbers of 4 to 8 digits (also written `123 456` or
//! `123-456`, returned joined) and, next to a keyword only, alphanumeric
//! tokens of 4 to 10 characters with at least one digit and one letter
//! (letters all of one case). Sources: the subject, the text part and a
//! rendering of the HTML part. Ranking, best first:
//!
//! 1. next to a code keyword (`code`, `verification`, `OTP`, `PIN`,
//!    `passcode`, `one-time`, `Bestätigungscode`, `vérification`, `código`,
//!    `codice`, `код`, `验证码`, `認証コード`, ...), with only filler words
//!    (`is`, `your`, `lautet`, `est`, ...) and punctuation between, in
//!    either direction, across at most a line break; weak keywords
//!    (`confirmation`, which also announces booking numbers, `password`)
//!    rank a little below;
//! 2. on the same line within 12 words of such a keyword (same sentence
//!    first);
//! 3. on a short line of its own (at most three words) right after (two
//!    lines at most) or right before a line with a keyword (the HTML layout
//!    "Your code:" / big digits in the next row);
//! 4. in the subject without a keyword (digits only);
//! 5. a bare 6-digit number anywhere.
//!
//! A candidate that also appears in the subject gets a small bonus.
//! Excluded: numbers in longer digit runs or digit groups (dates,
//! times, phone numbers, prices, versions, IP addresses: `12.05.2024`,
//! `10:30`, `+49 30 1234567`, `1,299.00`), numbers after `+`, `#` (order
//! numbers, HTML colours), `№`, a currency sign, `/`, `.`, `@` or `_`, or
//! before `%`, a currency, a unit or a CJK date suffix; anything inside a
//! URL or e-mail address; years 1900–2100 unless right next to a keyword;
//! numbers right after (or before) words such as order, invoice, account,
//! customer, ID, phone, call, total, price, tracking (in several
//! languages), and "codes" that are not one-time codes (promo code, zip
//! code, error code, postal code, código postal, ...).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// Most links returned for one mail.
pub(crate) const MAX_LINKS: usize = 1000;

/// Characters of each part (subject, text, rendered HTML) searched for
/// codes. Codes sit near the top of a mail; the rest is footer.
pub(crate) const MAX_CODE_SCAN_CHARS: usize = 100_000;

/// Candidate codes considered per part.
const MAX_CANDIDATES: usize = 1_000;

/// How many words away from a keyword a candidate on the same line still
/// counts as near it.
const NEAR_WORDS: usize = 12;

// ---------------------------------------------------------------- links --

/// The links of a mail with parts `text` and `html`; see the module
/// documentation for the rules.
pub(crate) fn links(text: Option<&str>, html: Option<&str>) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut push = |url: String, out: &mut Vec<String>| {
        if out.len() < MAX_LINKS && seen.insert(url.clone()) {
            out.push(url);
        }
        out.len() < MAX_LINKS
    };
    if let Some(text) = text {
        scan_urls(text, true, |_, url| push(url, &mut out));
    }
    if let Some(html) = html
        && out.len() < MAX_LINKS
    {
        let rendered = render_html(html, true);
        // URLs of the visible text; the text is already entity-decoded.
        let mut visible = Vec::new();
        let mut unique = HashSet::new();
        scan_urls(&rendered.text, false, |at, url| {
            if unique.insert(url.clone()) {
                visible.push((at, url));
            }
            visible.len() < MAX_LINKS
        });
        // Merge by position; an href comes before the anchor's own text.
        let mut hrefs = rendered.hrefs.into_iter().peekable();
        let mut visible = visible.into_iter().peekable();
        loop {
            let take_href = match (hrefs.peek(), visible.peek()) {
                (Some((h, _)), Some((v, _))) => h <= v,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let next = if take_href {
                hrefs.next()
            } else {
                visible.next()
            };
            if let Some((_, url)) = next
                && !push(url, &mut out)
            {
                break;
            }
        }
    }
    out
}

/// Calls `found(byte offset, url)` for each URL in `s`, in order, until it
/// returns `false`. `decode`: decode HTML entities in each URL.
fn scan_urls(s: &str, decode: bool, mut found: impl FnMut(usize, String) -> bool) {
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
fn is_url_stop(c: char) -> bool {
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

/// CJK ideographs, kana, Hangul, CJK punctuation and full-width forms:
/// text in these scripts runs into a URL without a space.
fn is_cjk(c: char) -> bool {
    matches!(
        c as u32,
        0x3000..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF | 0xF900..=0xFAFF
            | 0xFF00..=0xFFEF
    )
}

/// A URL candidate made presentable: entities decoded (when `decode`), cut
/// at a character that cannot be in a URL, trailing punctuation trimmed,
/// host checked.
fn clean_url(raw: &str, decode: bool) -> Option<String> {
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
fn trim_url_end(mut url: &str) -> &str {
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
fn valid_url(url: &str) -> bool {
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

fn starts_with_ci(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    s.get(..prefix.len())
        .filter(|p| p.eq_ignore_ascii_case(prefix))
        .map(|_| &s[prefix.len()..])
}

// ------------------------------------------------------------- entities --

/// Decodes HTML character references: numeric ones (`&#61;`, `&#x3D;`,
/// the `;` optional) and the named ones mail actually uses. Unknown names
/// are left as they are.
fn decode_entities(s: &str) -> Cow<'_, str> {
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
fn entity(s: &str) -> Option<(Option<char>, usize)> {
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

// ----------------------------------------------------------------- HTML --

/// An HTML body as a reader sees it.
struct Rendered {
    /// The visible text, entities decoded: block elements on lines of their
    /// own, table cells separated by a tab, inline elements joined.
    text: String,
    /// `href` targets that are http(s) URLs, each with the byte offset in
    /// `text` where its element starts; without duplicates, at most
    /// [`MAX_LINKS`].
    hrefs: Vec<(usize, String)>,
}

/// Elements whose content is never shown.
const HIDDEN: [&[u8]; 5] = [b"head", b"style", b"script", b"template", b"title"];

/// Elements that start a new line.
const BLOCKS: [&[u8]; 37] = [
    b"address",
    b"article",
    b"aside",
    b"blockquote",
    b"body",
    b"br",
    b"caption",
    b"center",
    b"dd",
    b"div",
    b"dl",
    b"dt",
    b"figcaption",
    b"figure",
    b"footer",
    b"form",
    b"h1",
    b"h2",
    b"h3",
    b"h4",
    b"h5",
    b"h6",
    b"header",
    b"hr",
    b"html",
    b"li",
    b"main",
    b"nav",
    b"ol",
    b"p",
    b"pre",
    b"section",
    b"table",
    b"tbody",
    b"tfoot",
    b"thead",
    b"tr",
];

/// Renders `html` to text in one pass, collecting `href` targets when
/// `want_hrefs`. Tolerates any input: a `<` that starts no tag is text, an
/// unclosed tag or comment ends the document.
fn render_html(html: &str, want_hrefs: bool) -> Rendered {
    let b = html.as_bytes();
    let mut text = String::with_capacity(html.len().min(1 << 20));
    let mut hrefs = Vec::new();
    let mut seen_hrefs = HashSet::new();
    // A hidden element whose end tag was looked for and not found is
    // rendered like any other (and never looked for again), which keeps
    // the pass linear on hostile input.
    let mut unclosed = [false; HIDDEN.len()];
    let mut i = 0;
    while i < b.len() {
        let Some(lt) = find_byte(b, i, b'<') else {
            push_text(&mut text, &html[i..]);
            break;
        };
        push_text(&mut text, &html[i..lt]);
        i = lt;
        if b[i..].starts_with(b"<!--") {
            i = find_sub_ci(b, i + 4, b"-->").map_or(b.len(), |p| p + 3);
            continue;
        }
        let mut j = i + 1;
        let closing = b.get(j) == Some(&b'/');
        if closing {
            j += 1;
        }
        let name_start = j;
        while j < b.len() && b[j].is_ascii_alphanumeric() {
            j += 1;
        }
        let name = &b[name_start..j];
        if name.is_empty() || !b[name_start].is_ascii_alphabetic() {
            if matches!(b.get(i + 1), Some(b'!' | b'?')) || (closing && !name.is_empty()) {
                // <!DOCTYPE ...>, <?xml ...?>, </3>
                i = find_byte(b, i, b'>').map_or(b.len(), |p| p + 1);
            } else {
                text.push('<');
                i += 1;
            }
            continue;
        }
        let start_at = text.len();
        let (end, href) = scan_tag(b, j);
        if want_hrefs
            && !closing
            && let Some((from, to)) = href
            && hrefs.len() < MAX_LINKS
        {
            let value = decode_entities(&html[from..to]);
            let value: String = value
                .trim()
                .chars()
                .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
                .collect();
            if valid_url(&value) && seen_hrefs.insert(value.clone()) {
                hrefs.push((start_at, value));
            }
        }
        i = end;
        if BLOCKS.iter().any(|t| name.eq_ignore_ascii_case(t)) {
            text.push('\n');
        } else if name.eq_ignore_ascii_case(b"td") || name.eq_ignore_ascii_case(b"th") {
            text.push('\t');
        } else if !closing
            && let Some(h) = HIDDEN.iter().position(|t| name.eq_ignore_ascii_case(t))
            && !unclosed[h]
        {
            let mut close = b"</".to_vec();
            close.extend_from_slice(HIDDEN[h]);
            match find_sub_ci(b, i, &close) {
                Some(p) => i = p,
                None => unclosed[h] = true,
            }
        }
    }
    Rendered { text, hrefs }
}

/// Scans the attributes of a tag from `j` (just after its name) to the
/// closing `>`; returns the index after it and the byte range of the
/// `href` value, if any.
fn scan_tag(b: &[u8], mut j: usize) -> (usize, Option<(usize, usize)>) {
    let mut href = None;
    loop {
        while j < b.len() && (b[j].is_ascii_whitespace() || b[j] == b'/') {
            j += 1;
        }
        if j >= b.len() {
            return (b.len(), href);
        }
        if b[j] == b'>' {
            return (j + 1, href);
        }
        let name_start = j;
        while j < b.len() && !b[j].is_ascii_whitespace() && !matches!(b[j], b'=' | b'>' | b'/') {
            j += 1;
        }
        if j == name_start {
            // A stray '=': skip it.
            j += 1;
            continue;
        }
        let name = &b[name_start..j];
        let mut k = j;
        while k < b.len() && b[k].is_ascii_whitespace() {
            k += 1;
        }
        if b.get(k) != Some(&b'=') {
            continue;
        }
        k += 1;
        while k < b.len() && b[k].is_ascii_whitespace() {
            k += 1;
        }
        let (from, to, next) = match b.get(k) {
            Some(&q @ (b'"' | b'\'')) => {
                let to = find_byte(b, k + 1, q).unwrap_or(b.len());
                (k + 1, to, (to + 1).min(b.len()))
            }
            _ => {
                let mut to = k;
                while to < b.len() && !b[to].is_ascii_whitespace() && b[to] != b'>' {
                    to += 1;
                }
                (k, to, to)
            }
        };
        if href.is_none() && name.eq_ignore_ascii_case(b"href") {
            href = Some((from, to));
        }
        j = next;
    }
}

/// Appends a text segment of HTML: entities decoded, line breaks and tabs
/// of the source as spaces (HTML lays out by elements, not source lines).
fn push_text(out: &mut String, seg: &str) {
    if seg.is_empty() {
        return;
    }
    for c in decode_entities(seg).chars() {
        out.push(if matches!(c, '\r' | '\n' | '\t' | '\x0c') {
            ' '
        } else {
            c
        });
    }
}

fn find_byte(b: &[u8], from: usize, needle: u8) -> Option<usize> {
    b.get(from..)?
        .iter()
        .position(|&c| c == needle)
        .map(|p| from + p)
}

/// Finds `needle` (lower-case ASCII) in `b` from `from`, ignoring ASCII
/// case.
fn find_sub_ci(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let mut i = from;
    while i + needle.len() <= b.len() {
        let p = b[i..=b.len() - needle.len()]
            .iter()
            .position(|c| c.to_ascii_lowercase() == first)?;
        i += p;
        if b[i..i + needle.len()].eq_ignore_ascii_case(needle) {
            return Some(i);
        }
        i += 1;
    }
    None
}

// ---------------------------------------------------------------- codes --

/// The likely one-time codes of a mail, best first; see the module
/// documentation for the rules.
pub(crate) fn codes(subject: Option<&str>, text: Option<&str>, html: Option<&str>) -> Vec<String> {
    let rendered = html.map(|h| render_html(h, false).text);
    let docs = [subject, text, rendered.as_deref()];
    // value -> (score, order of first appearance)
    let mut best: HashMap<String, (i32, usize)> = HashMap::new();
    let mut in_subject = HashSet::new();
    let mut order = 0;
    for (d, doc) in docs.into_iter().enumerate() {
        let Some(doc) = doc else { continue };
        for (value, score) in candidates(doc, d == 0) {
            if d == 0 {
                in_subject.insert(value.clone());
            }
            order += 1;
            let entry = best.entry(value).or_insert((score, order));
            entry.0 = entry.0.max(score);
        }
    }
    let mut ranked: Vec<(String, i32, usize)> = best
        .into_iter()
        .map(|(value, (score, order))| {
            let bonus = if in_subject.contains(&value) { 50 } else { 0 };
            (value, score + bonus, order)
        })
        .collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
    ranked.into_iter().map(|(value, ..)| value).collect()
}

/// What a token is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// A word that announces a code: "code", "verification", "验证码".
    Code,
    /// A word that often, not always, announces a code: "confirmation"
    /// (also of a booking), "password".
    WeakCode,
    /// A word that announces some other number: "order", "phone",
    /// "total"; also a voided "code" ("promo code", "zip code").
    Anti,
    /// A word that may stand between a keyword and its code: "is", "your".
    Filler,
    /// Any other word.
    Other,
    /// A run of ASCII digits.
    Digits,
    /// A run of ASCII letters and digits with at least one of each.
    Alnum,
    /// A URL or an e-mail address.
    Blob,
    /// The end of a sentence.
    Stop,
}

#[derive(Clone, Copy, Debug)]
struct Tok {
    /// Char index of the first character.
    start: usize,
    /// Char index after the last character.
    end: usize,
    /// Line number.
    line: usize,
    kind: Kind,
}

impl Tok {
    fn is_content(&self) -> bool {
        self.kind != Kind::Stop
    }

    fn is_keyword(&self) -> bool {
        matches!(self.kind, Kind::Code | Kind::WeakCode)
    }
}

/// Exact words announcing a code.
const CODE_WORDS: &[&str] = &[
    "code",
    "codes",
    "pin",
    "otp",
    "tan",
    "mfa",
    "kod",
    "kodu",
    "kody",
    "код",
    "кода",
    "коды",
    "кодом",
    "clave",
    "pincode",
];
/// Prefixes of words announcing a code.
const CODE_PREFIXES: &[&str] = &[
    "verif",
    "vérif",
    "codig",
    "códig",
    "codic",
    "authentica",
    "authentifi",
    "passcode",
    "einmal",
    "подтвержд",
    "провер",
    "одноразов",
    "weryfik",
    "doğrula",
    "dogrula",
];
/// Prefixes of words that often, not always, announce a code; a word
/// ending in "code" ("Bestätigungscode") is a plain keyword.
const WEAK_CODE_PREFIXES: &[&str] = &[
    "confirm",
    "bestätig",
    "bestaetig",
    "bevestig",
    "password",
    "passwort",
    "пароль",
    "contraseña",
    "senha",
];
/// CJK and Hangul keywords, found anywhere in a run of such characters.
const CODE_CJK: &[&str] = &[
    "验证",
    "驗證",
    "认证",
    "認證",
    "校验",
    "校驗",
    "确认码",
    "確認碼",
    "动态码",
    "動態碼",
    "动态密码",
    "動態密碼",
    "認証",
    "確認コード",
    "確認番号",
    "コード",
    "ワンタイム",
    "暗証番号",
    "인증",
    "코드",
    "확인번호",
];
/// Words ending in "code" that are not about one-time codes.
const NOT_CODE: &[&str] = &[
    "barcode",
    "zipcode",
    "postcode",
    "qrcode",
    "unicode",
    "encode",
    "decode",
    "opcode",
    "sourcecode",
    "shortcode",
    "promocode",
    "areacode",
    "countrycode",
    "gutscheincode",
    "rabattcode",
    "aktionscode",
    "postleitzahl",
];
/// Words that turn a following "code" into something else ("promo code").
const VOID_BEFORE: &[&str] = &[
    "promo",
    "promotional",
    "coupon",
    "discount",
    "voucher",
    "gift",
    "referral",
    "zip",
    "postal",
    "post",
    "area",
    "country",
    "dial",
    "dialing",
    "tracking",
    "order",
    "source",
    "qr",
    "bar",
    "error",
    "status",
    "response",
    "exit",
    "return",
    "reason",
    "sort",
    "swift",
    "bic",
    "bank",
    "routing",
    "tax",
    "product",
    "item",
    "article",
    "colour",
    "color",
    "fehler",
    "erreur",
    "rabatt",
    "gutschein",
    "aktions",
];
/// Words that turn a preceding "code" into something else ("código
/// postal").
const VOID_AFTER: &[&str] = &[
    "postal",
    "postale",
    "promo",
    "promocional",
    "promotionnel",
    "descuento",
    "sconto",
    "réduction",
    "reduction",
    "fiscale",
    "iban",
    "bic",
    "swift",
    "d'erreur",
    "erreur",
    "error",
];
/// Exact words announcing some other number.
const ANTI_WORDS: &[&str] = &["id", "tel", "ref", "fax", "zip", "plz", "iban", "bic", "ип"];
/// Prefixes of words announcing some other number.
const ANTI_PREFIXES: &[&str] = &[
    "order",
    "bestell",
    "commande",
    "pedido",
    "ordine",
    "заказ",
    "invoice",
    "rechnung",
    "factur",
    "fattur",
    "счет",
    "счёт",
    "tracking",
    "sendung",
    "shipment",
    "parcel",
    "ticket",
    "referen",
    "référen",
    "riferiment",
    "account",
    "konto",
    "compte",
    "cuenta",
    "conto",
    "customer",
    "kunde",
    "client",
    "member",
    "mitglied",
    "phone",
    "telephon",
    "telefon",
    "téléphon",
    "teléfon",
    "телефон",
    "call",
    "mobile",
    "hotline",
    "postal",
    "postcode",
    "zipcode",
    "total",
    "amount",
    "betrag",
    "montant",
    "importe",
    "сумм",
    "price",
    "preis",
    "prix",
    "precio",
    "prezzo",
    "цена",
    "transaction",
    "transaktion",
    "booking",
    "buchung",
    "reservation",
    "réservation",
    "reserva",
    "prenotazion",
    "auftrag",
    "promo",
    "coupon",
    "discount",
    "voucher",
    "gutschein",
    "rabatt",
    "flight",
    "flug",
    "room",
    "zimmer",
    "suite",
    "serial",
    "seriennummer",
    "model",
    "modell",
    "version",
    "case",
    "fall",
    "vorgang",
];
/// CJK and Hangul words announcing some other number.
const ANTI_CJK: &[&str] = &[
    "订单", "訂單", "注文", "电话", "電話", "手机", "手機", "金额", "金額", "价格", "価格", "合计",
    "合計", "邮编", "郵便", "주문", "전화",
];
/// Words that may stand between a keyword and its code.
const FILLERS: &[&str] = &[
    "number",
    "numbers",
    "no",
    "nr",
    "num",
    "nummer",
    "numéro",
    "numero",
    "n",
    "nº",
    "número",
    "номер",
    "is",
    "are",
    "ist",
    "lautet",
    "est",
    "es",
    "é",
    "è",
    "the",
    "your",
    "this",
    "here",
    "votre",
    "vos",
    "ihre",
    "ihr",
    "ihren",
    "dein",
    "deine",
    "su",
    "sus",
    "tu",
    "seu",
    "sua",
    "il",
    "la",
    "le",
    "el",
    "tuo",
    "ваш",
    "ваша",
    "вашего",
    "вашей",
    "ваши",
    "de",
    "du",
    "des",
    "del",
    "di",
    "da",
    "do",
    "of",
    "for",
    "für",
    "pour",
    "para",
    "per",
    "для",
    "a",
    "an",
    "use",
    "enter",
    "below",
];
/// Words after a number that make it an amount or a measure.
const UNITS: &[&str] = &[
    "usd",
    "eur",
    "gbp",
    "chf",
    "rub",
    "руб",
    "р",
    "грн",
    "uah",
    "pln",
    "zł",
    "kr",
    "sek",
    "nok",
    "dkk",
    "jpy",
    "cny",
    "rmb",
    "yuan",
    "yen",
    "dollar",
    "dollars",
    "euro",
    "euros",
    "рублей",
    "рубля",
    "рубль",
    "km",
    "kg",
    "mb",
    "gb",
    "kb",
    "tb",
    "px",
    "mah",
    "kwh",
    "mm",
    "cm",
];
/// Unit suffixes that make an alphanumeric token a measure ("10min").
const ALNUM_UNITS: &[&str] = &[
    "s", "h", "m", "d", "k", "p", "x", "g", "ms", "min", "mins", "sec", "secs", "hr", "hrs",
    "hours", "days", "px", "pt", "em", "kb", "mb", "gb", "tb", "km", "kg", "cm", "mm", "am", "pm",
    "th", "st", "nd", "rd", "fps", "mp",
];

fn classify(word: &str) -> Kind {
    let cjk = word.chars().any(is_cjk);
    if cjk {
        // The last keyword in a run wins: it is the one next to what
        // follows ("订单验证码" announces a code).
        let code = CODE_CJK.iter().filter_map(|k| word.rfind(k)).max();
        let anti = ANTI_CJK.iter().filter_map(|k| word.rfind(k)).max();
        return match (code, anti) {
            (Some(c), Some(a)) if a > c => Kind::Anti,
            (Some(_), _) => Kind::Code,
            (None, Some(_)) => Kind::Anti,
            (None, None) => Kind::Other,
        };
    }
    if word.ends_with("code") && !NOT_CODE.contains(&word) {
        return Kind::Code;
    }
    if WEAK_CODE_PREFIXES.iter().any(|p| word.starts_with(p)) {
        return Kind::WeakCode;
    }
    if CODE_WORDS.contains(&word) || CODE_PREFIXES.iter().any(|p| word.starts_with(p)) {
        return Kind::Code;
    }
    if ANTI_WORDS.contains(&word)
        || ANTI_PREFIXES.iter().any(|p| word.starts_with(p))
        || NOT_CODE.contains(&word)
    {
        return Kind::Anti;
    }
    if FILLERS.contains(&word) {
        return Kind::Filler;
    }
    Kind::Other
}

/// Fullwidth digits and letters as ASCII, no-break spaces as spaces,
/// zero-width characters and soft hyphens dropped, CRLF and CR as LF.
fn normalize(s: &str) -> Vec<char> {
    let mut out = Vec::with_capacity(s.len().min(MAX_CODE_SCAN_CHARS));
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if out.len() == MAX_CODE_SCAN_CHARS {
            break;
        }
        let c = match c {
            '\u{FF10}'..='\u{FF19}' | '\u{FF21}'..='\u{FF3A}' | '\u{FF41}'..='\u{FF5A}' => {
                char::from_u32(c as u32 - 0xFEE0).unwrap_or(c)
            }
            '\u{AD}' | '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' => continue,
            '\u{A0}' | '\u{2007}' | '\u{202F}' => ' ',
            // CRLF is one line break.
            '\r' if chars.peek() == Some(&'\n') => continue,
            '\r' => '\n',
            c => c,
        };
        out.push(c);
    }
    out
}

/// Whether `c` is part of an e-mail address.
fn is_email_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+' | '%' | '@')
}

/// Where a URL starting at `i` ends, if one starts there.
fn url_at(chars: &[char], i: usize) -> Option<usize> {
    let lower = |k: usize| chars.get(i + k).map(|c| c.to_ascii_lowercase());
    let matches = |p: &str| p.chars().enumerate().all(|(k, c)| lower(k) == Some(c));
    let starts = match chars[i] {
        'h' | 'H' => matches("http://") || matches("https://"),
        'w' | 'W' => matches("www.") && chars.get(i + 4).is_some_and(|c| c.is_alphanumeric()),
        _ => false,
    };
    if !starts || (i > 0 && chars[i - 1].is_alphanumeric()) {
        return None;
    }
    let len = chars[i..]
        .iter()
        .position(|&c| is_url_stop(c))
        .unwrap_or(chars.len() - i);
    Some(i + len)
}

/// Splits normalised text into tokens.
fn tokenize(chars: &[char]) -> Vec<Tok> {
    let mut toks: Vec<Tok> = Vec::new();
    let mut line = 0;
    let mut i = 0;
    let n = chars.len();
    while i < n {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
            continue;
        }
        if let Some(end) = url_at(chars, i) {
            toks.push(Tok {
                start: i,
                end,
                line,
                kind: Kind::Blob,
            });
            i = end;
            continue;
        }
        if c.is_alphabetic() || c.is_ascii_digit() {
            let mut j = i;
            while j < n && (chars[j].is_alphabetic() || chars[j].is_ascii_digit()) {
                j += 1;
            }
            i = push_run(chars, i, j, line, &mut toks);
            continue;
        }
        let sentence_end = match c {
            '。' | '！' | '？' => true,
            '.' | '!' | '?' => {
                chars.get(i + 1).is_none_or(|c| c.is_whitespace())
                    // "No. 123", "Tel. 123": an abbreviation, not an end.
                    && !toks.last().is_some_and(|t| {
                        t.line == line
                            && t.end == i
                            && matches!(t.kind, Kind::Filler | Kind::Anti | Kind::Other)
                            && t.end - t.start <= 3
                    })
            }
            _ => false,
        };
        if sentence_end {
            toks.push(Tok {
                start: i,
                end: i + 1,
                line,
                kind: Kind::Stop,
            });
        }
        i += 1;
    }
    refine_keywords(chars, &mut toks);
    toks
}

/// Turns a run of letters and digits `chars[i..j]` into tokens: one word,
/// one number, one alphanumeric token, or — where digits meet non-ASCII
/// letters ("验证码482913") — several. Returns where tokenizing goes on:
/// `j`, or the end of an e-mail address that started in the run.
fn push_run(chars: &[char], i: usize, j: usize, line: usize, toks: &mut Vec<Tok>) -> usize {
    // Pieces alternate between digits and letters; neighbouring pieces
    // that are both ASCII stay together ("A1B2C3").
    let mut start = i;
    let mut k = i;
    while k < j {
        let digit = chars[k].is_ascii_digit();
        let mut e = k;
        while e < j && chars[e].is_ascii_digit() == digit {
            e += 1;
        }
        let ascii = chars[k..e].iter().all(char::is_ascii);
        let next_ascii = e < j && {
            let nd = chars[e].is_ascii_digit();
            let mut f = e;
            while f < j && chars[f].is_ascii_digit() == nd {
                f += 1;
            }
            chars[e..f].iter().all(char::is_ascii)
        };
        if e == j || !(ascii && next_ascii) {
            let next = push_piece(chars, start, e, line, toks);
            if next > e {
                return next;
            }
            start = e;
        }
        k = e;
    }
    j
}

/// Pushes the token of `chars[i..j]`; returns where tokenizing goes on
/// (past `j` after an e-mail address).
fn push_piece(chars: &[char], i: usize, j: usize, line: usize, toks: &mut Vec<Tok>) -> usize {
    let piece = &chars[i..j];
    let digits = piece.iter().filter(|c| c.is_ascii_digit()).count();
    // An address: "task482913@x.test".
    if chars.get(j) == Some(&'@') || (i > 0 && chars[i - 1] == '@') {
        let mut end = j;
        while end < chars.len() && is_email_char(chars[end]) {
            end += 1;
        }
        toks.push(Tok {
            start: i,
            end,
            line,
            kind: Kind::Blob,
        });
        return end;
    }
    let kind = if digits == piece.len() {
        Kind::Digits
    } else if digits > 0 {
        Kind::Alnum
    } else if piece.len() > 40 {
        Kind::Other
    } else {
        let word: String = piece.iter().flat_map(|c| c.to_lowercase()).collect();
        classify(&word)
    };
    toks.push(Tok {
        start: i,
        end: j,
        line,
        kind,
    });
    j
}

/// Keywords of two words: "one-time" and "usage unique" announce a code;
/// in "promo code", "zip code", "código postal" the "code" is another kind
/// of code, and the number after it is not a one-time code.
fn refine_keywords(chars: &[char], toks: &mut [Tok]) {
    let word = |t: &Tok| -> String {
        chars[t.start..t.end]
            .iter()
            .flat_map(|c| c.to_lowercase())
            .collect()
    };
    for k in 1..toks.len() {
        let (prev, cur) = (toks[k - 1], toks[k]);
        if prev.line == cur.line
            && cur.start.saturating_sub(prev.end) <= 1
            && matches!(
                (word(&prev).as_str(), word(&cur).as_str()),
                ("one", "time") | ("usage", "unique") | ("single", "use")
            )
        {
            toks[k].kind = Kind::Code;
        }
    }
    for k in 0..toks.len() {
        if toks[k].kind != Kind::Code {
            continue;
        }
        let w = word(&toks[k]);
        if !(w.starts_with("code") || w.starts_with("cod") || w == "kod" || w.starts_with("код"))
        {
            continue;
        }
        let line = toks[k].line;
        let before = k
            .checked_sub(1)
            .map(|p| toks[p])
            .filter(|t| t.line == line && !matches!(t.kind, Kind::Stop));
        let after = toks
            .get(k + 1)
            .copied()
            .filter(|t| t.line == line && !matches!(t.kind, Kind::Stop));
        // "código de descuento": skip one "de".
        let after2 = toks
            .get(k + 2)
            .copied()
            .filter(|t| t.line == line && !matches!(t.kind, Kind::Stop));
        let voided = before.is_some_and(|t| VOID_BEFORE.contains(&word(&t).as_str()))
            || after.is_some_and(|t| {
                let a = word(&t);
                VOID_AFTER.contains(&a.as_str())
                    || (matches!(a.as_str(), "de" | "di" | "d")
                        && after2.is_some_and(|t2| VOID_AFTER.contains(&word(&t2).as_str())))
            });
        if voided {
            toks[k].kind = Kind::Anti;
        }
    }
}

/// Walks from token `k` in direction `dir` over filler words (and, going
/// back, over at most one line break) and returns the first other token.
fn neighbour(toks: &[Tok], k: usize, back: bool) -> Option<Tok> {
    let line = toks[k].line;
    let mut idx = k;
    for _ in 0..6 {
        idx = if back { idx.checked_sub(1)? } else { idx + 1 };
        let t = *toks.get(idx)?;
        let allowed_line = if back {
            line - t.line <= 1
        } else {
            t.line == line
        };
        if !allowed_line || t.kind == Kind::Stop {
            return None;
        }
        if t.kind != Kind::Filler {
            return Some(t);
        }
    }
    None
}

/// The nearest code keyword on the same line as token `k`, within
/// [`NEAR_WORDS`] words.
#[derive(Clone, Copy)]
struct Near {
    /// Words between the two, plus one.
    dist: usize,
    /// Whether a sentence ends between the two.
    crossed: bool,
    /// Whether the keyword comes first.
    before: bool,
    /// Whether the keyword is a weak one.
    weak: bool,
}

fn nearest_keyword(toks: &[Tok], k: usize) -> Option<Near> {
    let line = toks[k].line;
    let mut best: Option<Near> = None;
    for back in [true, false] {
        let mut idx = k;
        let mut dist = 0;
        let mut crossed = false;
        loop {
            idx = if back {
                match idx.checked_sub(1) {
                    Some(p) => p,
                    None => break,
                }
            } else {
                idx + 1
            };
            let Some(t) = toks.get(idx) else { break };
            if t.line != line {
                break;
            }
            if t.kind == Kind::Stop {
                crossed = true;
                continue;
            }
            dist += 1;
            if dist > NEAR_WORDS {
                break;
            }
            if t.is_keyword() {
                let cand = Near {
                    dist,
                    crossed,
                    before: back,
                    weak: t.kind == Kind::WeakCode,
                };
                if best.is_none_or(|b| (cand.crossed, cand.dist) < (b.crossed, b.dist)) {
                    best = Some(cand);
                }
                break;
            }
        }
    }
    best
}

/// A number made of one or two groups of digits starting at token `k`.
struct Cluster {
    /// Token index of the last group.
    last: usize,
    /// The digits of each group.
    groups: Vec<(usize, usize)>,
    /// Whether the groups are joined by one space or hyphen.
    spaced: bool,
}

/// The digits of a number that may continue past token `k`
/// ("12.05.2024", "+49 30 1234567", "123 456").
fn cluster(chars: &[char], toks: &[Tok], k: usize) -> Cluster {
    let mut groups = vec![(toks[k].start, toks[k].end)];
    let mut spaced = true;
    let mut last = k;
    while let Some(next) = toks.get(last + 1) {
        if next.kind != Kind::Digits || next.line != toks[last].line {
            break;
        }
        let gap: String = chars[toks[last].end..next.start].iter().collect();
        let joins = matches!(
            gap.as_str(),
            " " | "-" | "." | "," | "/" | ":" | "(" | ")" | ") " | " (" | "–" | " - " | " – " | "'"
        );
        if !joins {
            break;
        }
        if !matches!(gap.as_str(), " " | "-") {
            spaced = false;
        }
        groups.push((next.start, next.end));
        last += 1;
        if groups.len() > 8 {
            // Keep scanning cheap: a long digit chain is never a code.
            while toks
                .get(last + 1)
                .is_some_and(|t| t.kind == Kind::Digits && t.line == toks[last].line)
            {
                last += 1;
            }
            break;
        }
    }
    Cluster {
        last,
        groups,
        spaced,
    }
}

/// Whether the characters around `chars[start..end]` make it something
/// other than a code: an amount, a measure, a colour, a part of a path or
/// address, a decimal.
fn bad_context(chars: &[char], toks: &[Tok], start: usize, end: usize, last_tok: usize) -> bool {
    const CURRENCY: &[char] = &['$', '€', '£', '¥', '₽', '₹', '₩', '₺', '₴', '¢'];
    let before = start.checked_sub(1).map(|p| chars[p]);
    let before2 = start.checked_sub(2).map(|p| chars[p]);
    if let Some(b) = before {
        let bad = matches!(
            b,
            '+' | '#' | '№' | '@' | '/' | '\\' | '%' | '_' | '.' | '^' | '~' | '&' | '=' | '?'
        );
        let code_equals = b == '=' && keyword_right_before(chars, start - 1);
        if CURRENCY.contains(&b) || (bad && !code_equals) {
            return true;
        }
    }
    if before == Some(' ') && before2.is_some_and(|c| CURRENCY.contains(&c) || c == '+') {
        return true;
    }
    let after = chars.get(end).copied();
    let after2 = chars.get(end + 1).copied();
    if let Some(a) = after {
        if matches!(a, '%' | '@' | '/' | '\\' | '_' | '°' | '&' | '=')
            || CURRENCY.contains(&a)
            || "年月日时時分秒号號元円원년월일시".contains(a)
        {
            return true;
        }
        if matches!(a, '.' | ',') && after2.is_some_and(|c| c.is_ascii_alphanumeric()) {
            return true;
        }
    }
    if after == Some(' ') {
        if after2.is_some_and(|c| CURRENCY.contains(&c)) {
            return true;
        }
        if let Some(next) = toks.get(last_tok + 1)
            && next.start == end + 1
            && next.end - next.start <= 8
        {
            let w: String = chars[next.start..next.end]
                .iter()
                .flat_map(|c| c.to_lowercase())
                .collect();
            if UNITS.contains(&w.as_str()) {
                return true;
            }
        }
    }
    false
}

/// Whether a keyword ends right before `chars[at]` (`code=482913`).
fn keyword_right_before(chars: &[char], at: usize) -> bool {
    let end = at;
    let mut start = end;
    while start > 0 && end - start < 40 && chars[start - 1].is_alphabetic() {
        start -= 1;
    }
    let word: String = chars[start..end]
        .iter()
        .flat_map(|c| c.to_lowercase())
        .collect();
    !word.is_empty() && matches!(classify(&word), Kind::Code | Kind::WeakCode)
}

/// Whether the whitespace-delimited word around `chars[start..end]` is a
/// URL or an address.
fn in_url_or_address(chars: &[char], start: usize, end: usize) -> bool {
    let mut from = start;
    let limit = start.saturating_sub(200);
    while from > limit && !chars[from - 1].is_whitespace() {
        from -= 1;
    }
    let mut to = end;
    let limit = (end + 200).min(chars.len());
    while to < limit && !chars[to].is_whitespace() {
        to += 1;
    }
    let word: String = chars[from..to].iter().collect::<String>().to_lowercase();
    word.contains("://") || word.contains("www.")
}

/// The candidates of one part with their scores.
fn candidates(doc: &str, is_subject: bool) -> Vec<(String, i32)> {
    let chars = normalize(doc);
    let toks = tokenize(&chars);
    let lines = toks.last().map_or(0, |t| t.line + 1);
    // Per line: whether it has a code keyword, and how many words.
    let mut has_code = vec![false; lines];
    let mut count = vec![0usize; lines];
    for t in &toks {
        if t.is_keyword() {
            has_code[t.line] = true;
        }
        if t.is_content() {
            count[t.line] += 1;
        }
    }
    let non_empty: Vec<usize> = (0..lines).filter(|&l| count[l] > 0).collect();
    let mut rank_of_line = vec![usize::MAX; lines];
    for (r, &l) in non_empty.iter().enumerate() {
        rank_of_line[l] = r;
    }

    let mut out = Vec::new();
    let mut k = 0;
    while k < toks.len() && out.len() < MAX_CANDIDATES {
        let t = toks[k];
        let first = k;
        let (value, start, end, last, digits_only, grouped) = match t.kind {
            Kind::Digits => {
                let c = cluster(&chars, &toks, k);
                let value = match c.groups.as_slice() {
                    [(s, e)] => Some(chars[*s..*e].iter().collect::<String>()),
                    [(s1, e1), (s2, e2)]
                        if c.spaced && e1 - s1 == e2 - s2 && matches!(e1 - s1, 3 | 4) =>
                    {
                        Some(chars[*s1..*e1].iter().chain(&chars[*s2..*e2]).collect())
                    }
                    _ => None,
                };
                let end = toks[c.last].end;
                let grouped = c.groups.len() == 2;
                let next = c.last + 1;
                match value {
                    Some(v) => (v, t.start, end, c.last, true, grouped),
                    None => {
                        k = next;
                        continue;
                    }
                }
            }
            Kind::Alnum => (
                chars[t.start..t.end].iter().collect(),
                t.start,
                t.end,
                k,
                false,
                false,
            ),
            _ => {
                k += 1;
                continue;
            }
        };
        k = last + 1;
        let len = value.chars().count();
        if digits_only && !(4..=8).contains(&len) {
            continue;
        }
        if !digits_only && !plausible_alnum(&value) {
            continue;
        }
        if bad_context(&chars, &toks, start, end, last) || in_url_or_address(&chars, start, end) {
            continue;
        }
        // Anti words right next to it: "Order #", "Tel.", "123456 is your
        // order number".
        let back = neighbour(&toks, first, true);
        let fwd = neighbour(&toks, last, false);
        if back.is_some_and(|t| t.kind == Kind::Anti) || fwd.is_some_and(|t| t.kind == Kind::Anti) {
            continue;
        }
        let adjacent_before = back.is_some_and(|t| t.is_keyword());
        let adjacent_after = fwd.is_some_and(|t| t.is_keyword());
        let adjacent = adjacent_before || adjacent_after;
        // A weak keyword ("confirmation", "password") ranks below a
        // strong one at the same distance.
        let weak = |t: Option<Tok>| t.is_some_and(|t| t.kind == Kind::WeakCode);
        let year = digits_only
            && !grouped
            && len == 4
            && value
                .parse::<u32>()
                .is_ok_and(|y| (1900..=2100).contains(&y));

        let mut score = if adjacent {
            let (before, penalty) = if adjacent_before {
                (5, if weak(back) { 30 } else { 0 })
            } else {
                (0, if weak(fwd) { 30 } else { 0 })
            };
            Some(1000 + before - penalty)
        } else if let Some(near) = nearest_keyword(&toks, first) {
            let base = if near.crossed { 750 } else { 900 };
            let before = if near.before { 5 } else { 0 };
            let penalty = if near.weak { 30 } else { 0 };
            Some(base - 10 * near.dist as i32 + before - penalty)
        } else {
            near_line_score(t.line, &rank_of_line, &non_empty, &has_code, count[t.line])
        };
        if year && !adjacent {
            score = None;
        }
        if score.is_none() && !grouped && digits_only && !year {
            if is_subject {
                score = Some(400);
            } else if len == 6 {
                score = Some(100);
            }
        }
        if let Some(score) = score {
            out.push((value, score));
        }
    }
    out
}

/// Rank 3: a code on a short line of its own (at most two words with it)
/// below one of the two non-empty lines before with a keyword, or above
/// one; a code alone on its line scores higher.
fn near_line_score(
    line: usize,
    rank_of_line: &[usize],
    non_empty: &[usize],
    has_code: &[bool],
    words_on_line: usize,
) -> Option<i32> {
    if words_on_line > 3 {
        return None;
    }
    let r = rank_of_line[line];
    let bonus = if words_on_line == 1 { 20 } else { 0 };
    let at = |rank: Option<usize>| {
        rank.and_then(|r| non_empty.get(r))
            .is_some_and(|&l| has_code[l])
    };
    if at(r.checked_sub(1)) {
        Some(700 + bonus)
    } else if at(r.checked_sub(2)) {
        Some(680 + bonus)
    } else if at(r.checked_add(1)) {
        Some(660 + bonus)
    } else {
        None
    }
}

/// An alphanumeric token that could be a code: 4 to 10 characters, at
/// least one digit and one letter, letters of one case, not a measure
/// ("10min", "1080p").
fn plausible_alnum(v: &str) -> bool {
    let len = v.len();
    if !(4..=10).contains(&len) {
        return false;
    }
    let upper = v.bytes().any(|c| c.is_ascii_uppercase());
    let lower = v.bytes().any(|c| c.is_ascii_lowercase());
    if upper && lower {
        return false;
    }
    let digits_end = v.bytes().take_while(u8::is_ascii_digit).count();
    if digits_end > 0 {
        let rest = v[digits_end..].to_ascii_lowercase();
        if rest.bytes().all(|c| c.is_ascii_alphabetic()) && ALNUM_UNITS.contains(&rest.as_str()) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Mail;

    /// A message with `\n` line ends in the source and CRLF on the wire.
    fn eml(s: &str) -> Vec<u8> {
        s.replace('\n', "\r\n").into_bytes()
    }

    fn parse(raw: Vec<u8>) -> Mail {
        Mail::parse(1, 1, "INBOX", None, raw, false)
    }

    struct Case {
        name: &'static str,
        raw: Vec<u8>,
        links: &'static [&'static str],
        first_code: Option<&'static str>,
    }

    fn cases() -> Vec<Case> {
        let mut cp1251 = eml("\
From: =?windows-1251?B?0eXw4ujx?= <noreply@service.ru>
To: task@x.test
Subject: =?windows-1251?B?yu7kIO/u5PLi5fDm5OXt6P8=?=
Content-Type: text/plain; charset=windows-1251
Content-Transfer-Encoding: 8bit

");
        // "Ваш код подтверждения: 482913\r\nНикому не сообщайте его.\r\n"
        cp1251.extend_from_slice(
            b"\xc2\xe0\xf8 \xea\xee\xe4 \xef\xee\xe4\xf2\xe2\xe5\xf0\xe6\xe4\xe5\xed\xe8\xff: 482913\r\n\
              \xcd\xe8\xea\xee\xec\xf3 \xed\xe5 \xf1\xee\xee\xe1\xf9\xe0\xe9\xf2\xe5 \xe5\xe3\xee.\r\n",
        );
        let mut latin1 = eml("\
From: Service <noreply@service.fr>
To: task@x.test
Subject: =?ISO-8859-1?Q?V=E9rifiez_votre_adresse?=
Content-Type: text/plain; charset=ISO-8859-1
Content-Transfer-Encoding: 8bit

");
        // "Votre code de vérification est : 730215\r\nValable 10 minutes.\r\n"
        latin1.extend_from_slice(
            b"Votre code de v\xe9rification est : 730215\r\nValable 10 minutes.\r\n",
        );
        vec![
            Case {
                name: "plain text",
                raw: eml("\
From: Service <noreply@service.test>
To: task@x.test
Subject: Verify your email address
Date: Mon, 01 Jan 2024 12:00:00 +0200
Content-Type: text/plain; charset=utf-8

Hello,

Your verification code is 482913. It expires in 10 minutes.
Or open https://service.test/verify?token=abc123&user=42.

(c) 2024 Service Inc., 1600 Example Street, +1 555 123 4567
"),
                links: &["https://service.test/verify?token=abc123&user=42"],
                first_code: Some("482913"),
            },
            Case {
                name: "HTML only, styled code in a td, button with &amp;",
                raw: eml(r##"From: Service <noreply@service.test>
To: task@x.test
Subject: Confirm your account
Content-Type: text/html; charset=utf-8

<html><head><title>Code 111111</title><style>.c{color:#123456;width:600px}</style>
<link rel="stylesheet" href="https://cdn.service.test/mail.css"></head>
<body style="background:#f4f4f4"><table width="600" cellpadding="0"><tr><td>
<img src="https://cdn.service.test/logo.png" width="120" height="40" alt="Service">
</td></tr><tr><td style="font-family:Arial;font-size:16px">Your verification code</td></tr>
<tr><td style="font-size:32px;letter-spacing:6px;color:#1a73e8"><b>551122</b></td></tr>
<tr><td><a href="https://service.test/verify?t=9f8e&amp;uid=77&amp;lang=en" style="color:#ffffff">Verify email</a></td></tr>
<tr><td>&copy; 2024 Service &middot; <a href='https://service.test/help'>Help</a></td></tr>
</table></body></html>
"##),
                links: &[
                    "https://service.test/verify?t=9f8e&uid=77&lang=en",
                    "https://service.test/help",
                ],
                first_code: Some("551122"),
            },
            Case {
                name: "quoted-printable: soft breaks inside a URL, =3D",
                raw: eml("\
From: Service <noreply@service.test>
To: task@x.test
Subject: Sign in to Service
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Your one-time passcode: 906 114

Sign in: https://login.service.test/magic?session=3Dab12cd34ef56&redirect=
=3Dhttps%3A%2F%2Fservice.test%2Fhome&sig=3D0f9e8d7c6b5a
"),
                links: &[
                    "https://login.service.test/magic?session=ab12cd34ef56&redirect=https%3A%2F%2Fservice.test%2Fhome&sig=0f9e8d7c6b5a",
                ],
                first_code: Some("906114"),
            },
            Case {
                name: "base64 body",
                raw: eml("\
From: Service <noreply@service.test>
To: task@x.test
Subject: Security code
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: base64

WW91ciBzZWN1cml0eSBjb2RlOiA0MjQyNDIKVmlzaXQgaHR0cHM6Ly9zZXJ2aWNlLnRlc3QvYWNj
b3VudCB0byBtYW5hZ2UgeW91ciBzZXR0aW5ncy4K
"),
                links: &["https://service.test/account"],
                first_code: Some("424242"),
            },
            Case {
                name: "ISO-8859-1 French",
                raw: latin1,
                links: &[],
                first_code: Some("730215"),
            },
            Case {
                name: "windows-1251 Russian",
                raw: cp1251,
                links: &[],
                first_code: Some("482913"),
            },
            Case {
                name: "multipart/alternative",
                raw: eml(r#"From: Service <noreply@service.test>
To: task@x.test
Subject: Your login code
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="alt"

--alt
Content-Type: text/plain; charset=utf-8

Use code 7H3K9Q to sign in (https://service.test/login).
Order 55512345 shipped.
--alt
Content-Type: text/html; charset=utf-8

<p>Use code <strong>7H3K9Q</strong> to sign in.</p>
<p><a href="https://service.test/login">Sign in</a> &middot; <a href="https://service.test/unsubscribe?u=1&amp;l=2">Unsubscribe</a></p>
--alt--
"#),
                links: &[
                    "https://service.test/login",
                    "https://service.test/unsubscribe?u=1&l=2",
                ],
                first_code: Some("7H3K9Q"),
            },
            Case {
                name: "German",
                raw: eml("\
From: Dienst <noreply@dienst.test>
To: task@x.test
Subject: =?UTF-8?Q?Best=C3=A4tigen_Sie_Ihre_E-Mail-Adresse?=
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Hallo,

Sie haben sich am 12.05.2024 um 10:30 Uhr registriert.
Ihr Bestätigungscode lautet: 318204
Bestellnummer: 12345678, Betrag: 49,99 €

Oder klicken Sie hier: <https://dienst.test/bestaetigen?c=318204>.
"),
                links: &["https://dienst.test/bestaetigen?c=318204"],
                first_code: Some("318204"),
            },
            Case {
                name: "Chinese",
                raw: eml("\
From: =?UTF-8?B?5pyN5Yqh?= <noreply@service.cn>
To: task@x.test
Subject: =?UTF-8?B?6aqM6K+B56CB?=
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

您的验证码是：６０２９１７，10分钟内有效。请勿泄露。
订单号：20240512001，客服电话：400-123-4567
详情请访问https://service.cn/help。
"),
                links: &["https://service.cn/help"],
                first_code: Some("602917"),
            },
            Case {
                name: "Japanese",
                raw: eml("\
From: noreply@service.jp
To: task@x.test
Subject: =?UTF-8?B?44CQ44K144O844OT44K544CR6KqN6Ki844Kz44O844OJ?=
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

認証コード：538201
2024年5月12日 10:30
"),
                links: &[],
                first_code: Some("538201"),
            },
            Case {
                name: "order number and phone number, no code",
                raw: eml("\
From: Shop <orders@shop.test>
To: task@x.test
Subject: Your order #1234567 has shipped
Content-Type: text/plain; charset=utf-8

Thank you for your order!

Order number: 123456
Order date: 2024-05-12 14:30
Total: $1,299.00 (USD 1299)
Questions? Call us at (555) 123-4567 or +1 800 555 0199.
Customer ID 987654.
Track it at https://shop.test/track/1Z999AA10123456784.
"),
                links: &["https://shop.test/track/1Z999AA10123456784"],
                first_code: None,
            },
            Case {
                name: "magic link only",
                raw: eml(r#"From: App <login@app.test>
To: task@x.test
Subject: Sign in to App
Content-Type: text/html; charset=utf-8

<p>Click the button below to sign in. This link expires in 15 minutes.</p>
<p><a href="https://app.test/auth/magic?token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2ln&amp;next=%2Fdashboard">Sign in</a></p>
<p>If the button does not work, paste this link: https://app.test/auth/magic?token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2ln&amp;next=%2Fdashboard</p>
"#),
                links: &[
                    "https://app.test/auth/magic?token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2ln&next=%2Fdashboard",
                ],
                first_code: None,
            },
            Case {
                name: "code in the subject only, keyword after",
                raw: eml("\
From: Service <noreply@service.test>
To: task@x.test
Subject: 271828 is your Service code
Content-Type: text/plain; charset=utf-8

Welcome back! Questions: see https://service.test/faq (FAQ).
"),
                links: &["https://service.test/faq"],
                first_code: Some("271828"),
            },
            Case {
                name: "Spanish, Portuguese and Italian wording, code on the next line",
                raw: eml("\
From: Servicio <noreply@servicio.test>
To: task@x.test
Subject: =?UTF-8?Q?C=C3=B3digo_de_verificaci=C3=B3n?=
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Tu código de verificación es:

  640 118

Código postal 28013. Seu código: 640118. Il tuo codice: 640118.
"),
                links: &[],
                first_code: Some("640118"),
            },
        ]
    }

    #[test]
    fn realistic_verification_mails() {
        let cases = cases();
        assert!(cases.len() >= 14);
        for case in cases {
            let m = parse(case.raw);
            assert_eq!(m.links(), case.links, "{}: links", case.name);
            assert_eq!(
                m.codes().first().map(String::as_str),
                case.first_code,
                "{}: codes {:?}",
                case.name,
                m.codes()
            );
        }
    }

    #[test]
    fn no_code_mail_has_no_codes_at_all() {
        let case = cases()
            .into_iter()
            .find(|c| c.name.starts_with("order number"))
            .unwrap();
        let m = parse(case.raw);
        assert_eq!(m.codes(), Vec::<String>::new());
    }

    #[test]
    fn codes_rank_keyword_then_subject_then_bare() {
        let c = codes(
            Some("Welcome 777111"),
            Some("Reference 334455\nRandom 909090 here\nMore text\nYour code: 123789\n"),
            None,
        );
        assert_eq!(c, ["123789", "777111", "909090"]);
    }

    #[test]
    fn code_rules() {
        let first = |text: &str| codes(None, Some(text), None).into_iter().next();
        let none = |text: &str| {
            let c = codes(None, Some(text), None);
            assert!(c.is_empty(), "{text:?}: {c:?}");
        };
        assert_eq!(first("Your code: 123-456").as_deref(), Some("123456"));
        assert_eq!(first("PIN 2024").as_deref(), Some("2024"));
        assert_eq!(first("code=900100").as_deref(), Some("900100"));
        assert_eq!(first("Ваш код: 5512").as_deref(), Some("5512"));
        assert_eq!(first("验证码482913").as_deref(), Some("482913"));
        assert_eq!(first("인증번호는 482913입니다").as_deref(), Some("482913"));
        assert_eq!(
            first("Codice di verifica: A1B2C3").as_deref(),
            Some("A1B2C3")
        );
        assert_eq!(
            first("Your code for account 12345678 is 482913").as_deref(),
            Some("482913")
        );
        assert_eq!(
            first("Your verification code is\n\n  482913\n\nThanks").as_deref(),
            Some("482913")
        );
        none("Copyright 2024 Example");
        none("Meeting on 12/05/2024 at 10:30");
        none("Use promo code SAVE2024 for 20% off");
        none("Zip code 94043");
        none("Error code 5003");
        none("Price: €1299 or 1299 USD, 4999$");
        none("color: #a1b2c3; background: #123456");
        none("Call +49 30 1234567 or 030 1234567");
        none("The number 1234567890123 is long");
        none("https://x.test/verify?code=482913");
        none("Write to task482913@x.test");
        none("Order #482913");
        none("482913 is your order number");
        none("Version 1.2.3456");
        none("10min 1080p 24h");
        none("Code expires in 10 minutes");
        none("Bare 4821 and 12345678 numbers, nothing else");
        none("Your login code is 12 34 56");
        none("Your PIN has been changed. If this wasn't you, call 0800 123 456.");
        none("Joined on May 12, 2024. Questions? Reply to this mail. Ref 20240512");
        // A bare six-digit number is, if nothing better is there.
        assert_eq!(first("Hi, 482913").as_deref(), Some("482913"));

        let all = |text: &str| codes(None, Some(text), None);
        // The keyword on the line before, CRLF line ends.
        assert_eq!(all("Your code:\r\n482913\r\n"), ["482913"]);
        assert_eq!(
            all("Please use the following code:\r\n\r\n123456\r\n\r\n\
                 We take your account security seriously."),
            ["123456"]
        );
        assert_eq!(all("Steam Guard code\r\nF4K2J"), ["F4K2J"]);
        assert_eq!(
            all("G-482913 is your Google verification code."),
            ["482913"]
        );
        assert_eq!(all("Use 839201 as your Instagram code"), ["839201"]);
        assert_eq!(
            all("Your one-time password is 58213 and expires at 10:45. Call 1-800-555-0100."),
            ["58213"]
        );
        assert_eq!(
            all("Your OTP for a transaction of INR 5000.00 at Shop is 839201. Valid 5 mins."),
            ["839201"]
        );
        // A strong keyword beats a weak one at the same distance.
        assert_eq!(
            all("Confirmation number: ABC12345. Your verification code is 220044."),
            ["220044", "ABC12345"]
        );
        assert_eq!(all("Votre code : 4829. Commande n° 123456."), ["4829"]);
        assert_eq!(all("Your code is 482913 (expires 2024-05-12)"), ["482913"]);
        assert_eq!(
            all("Código de verificación: 445566\nCódigo postal: 28013"),
            ["445566"]
        );
    }

    /// Random text made of the characters the scanners care about: never a
    /// panic, whatever comes out.
    #[test]
    fn random_input_never_panics() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let pieces = [
            "https://",
            "http://",
            "www.",
            "<a href=\"",
            "<a href='",
            "\">",
            "</a>",
            "<style>",
            "</style",
            "<!--",
            "-->",
            "<",
            ">",
            "&amp;",
            "&#",
            "&#x",
            ";",
            "=",
            "\"",
            "'",
            "@",
            "code",
            "验证码",
            "код",
            "order",
            "#",
            "+",
            "$",
            "€",
            ".",
            ",",
            "-",
            " ",
            "\r\n",
            "\n",
            "(",
            ")",
            "[",
            "]",
            "123",
            "4567",
            "2024",
            "A1",
            "x",
            "é",
            "\u{200B}",
            "。",
            "：",
            "one",
            "time",
            "promo",
        ];
        for _ in 0..3_000 {
            let mut s = String::new();
            for _ in 0..(rand() % 40) {
                s.push_str(pieces[(rand() % pieces.len() as u64) as usize]);
            }
            let l = links(Some(&s), Some(&s));
            assert!(l.iter().all(|u| valid_url(u)), "{s:?}: {l:?}");
            let c = codes(Some(&s), Some(&s), Some(&s));
            let unique: HashSet<&String> = c.iter().collect();
            assert_eq!(unique.len(), c.len(), "{s:?}: {c:?}");
        }
    }

    #[test]
    fn codes_are_deduplicated() {
        let c = codes(
            Some("Your code 482913"),
            Some("Your code is 482913\n482913"),
            Some("<p>Code: <b>482913</b></p>"),
        );
        assert_eq!(c, ["482913"]);
    }

    #[test]
    fn link_rules() {
        let l = |text: &str| links(Some(text), None);
        assert_eq!(
            l("See https://a.test/x_(y)). And (https://b.test/z)."),
            ["https://a.test/x_(y)", "https://b.test/z"]
        );
        assert_eq!(
            l("<https://a.test/>, \"https://b.test/q?a=1&amp;b=2\"; 'https://c.test'!"),
            [
                "https://a.test/",
                "https://b.test/q?a=1&b=2",
                "https://c.test"
            ]
        );
        assert_eq!(
            l("ftp://a.test mailto:x@y.test http:// https:///x HTTPS://UP.test/A"),
            ["HTTPS://UP.test/A"]
        );
        assert_eq!(
            l("dup https://a.test/1 https://a.test/1 https://a.test/2"),
            ["https://a.test/1", "https://a.test/2"]
        );
        assert_eq!(
            l("请访问https://a.test/帮助。 [https://b.test/]"),
            ["https://a.test/", "https://b.test/"]
        );
        assert_eq!(
            l("https://a.test/?x=&#61;&#x3D;&lt;"),
            ["https://a.test/?x==="]
        );
    }

    #[test]
    fn html_link_rules() {
        let html = r#"<!-- https://comment.test/ --><a href = "https://a.test/1?x=1&amp;y=2" >one</a>
<A HREF='https://b.test/2'>two</A> <a href=https://c.test/3>three</a>
<img src="https://img.test/p.gif"><script>var u="https://script.test/";</script>
<a href="mailto:x@y.test">mail</a> <a href="/relative">rel</a>
<p>Text link https://d.test/4&amp;z=1, and <a href="https://e.test/5">https://e.test/5</a></p>
<a href="&#104;ttps://f.test/6">obfuscated</a> <a href=" https://g.test/7 ">spaces</a>"#;
        assert_eq!(
            links(None, Some(html)),
            [
                "https://a.test/1?x=1&y=2",
                "https://b.test/2",
                "https://c.test/3",
                "https://d.test/4&z=1",
                "https://e.test/5",
                "https://f.test/6",
                "https://g.test/7",
            ]
        );
    }

    #[test]
    fn hostile_html_does_not_break_the_scanner() {
        for html in [
            "<",
            "<a href=",
            "<a href=\"https://a.test/",
            "<!--",
            "<style>",
            "<head><p>https://a.test/</p>",
            "</",
            "<<<>>>",
            "&#xFFFFFFFF; &#0; &#99999999999; &",
            "<a href='https://a.test/'",
        ] {
            let _ = links(Some(html), Some(html));
            let _ = codes(Some(html), Some(html), Some(html));
        }
        assert_eq!(
            links(None, Some("<head><p>https://a.test/</p>")),
            ["https://a.test/"]
        );
    }

    #[test]
    fn huge_bodies_are_bounded() {
        // 200 000 distinct links: only MAX_LINKS come back.
        let mut text = String::new();
        for i in 0..200_000 {
            text.push_str(&format!("https://x.test/{i} "));
        }
        let l = links(Some(&text), Some(&text));
        assert_eq!(l.len(), MAX_LINKS);
        assert_eq!(l[0], "https://x.test/0");
        // One giant line of digits and keywords: linear, and bounded.
        let body = "code 123456 ".repeat(200_000);
        let c = codes(None, Some(&body), Some(&body));
        assert_eq!(c, ["123456"]);
        // A huge run of ')' after a URL and of unclosed tags.
        let parens = format!("https://x.test/{}", ")".repeat(100_000));
        assert_eq!(links(Some(&parens), None), ["https://x.test/"]);
        let tags = "<a <a <a <style <head ".repeat(50_000);
        let _ = links(None, Some(&tags));
    }
}
