//! An HTML body as a reader sees it, in one bounded pass: the visible text
//! with block elements on lines of their own and table cells apart (the
//! code finder relies on this layout: "Your code:" in one row, the digits
//! in the next), and the `href` targets with their position in that text
//! (the link finder merges them with the URLs of the visible text).

use std::collections::HashSet;

use crate::MAX_LINKS;
use crate::entities::decode_entities;
use crate::url::valid_url;

/// An HTML body as a reader sees it.
pub(crate) struct Rendered {
    /// The visible text, entities decoded: block elements on lines of their
    /// own, table cells separated by a tab, inline elements joined.
    pub(crate) text: String,
    /// `href` targets that are http(s) URLs, each with the byte offset in
    /// `text` where its element starts; without duplicates, at most
    /// [`MAX_LINKS`].
    pub(crate) hrefs: Vec<(usize, String)>,
}

/// Elements whose content is never shown.
pub(crate) const HIDDEN: [&[u8]; 5] = [b"head", b"style", b"script", b"template", b"title"];

/// Elements that start a new line.
pub(crate) const BLOCKS: [&[u8]; 37] = [
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
pub(crate) fn render_html(html: &str, want_hrefs: bool) -> Rendered {
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
pub(crate) fn scan_tag(b: &[u8], mut j: usize) -> (usize, Option<(usize, usize)>) {
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
pub(crate) fn push_text(out: &mut String, seg: &str) {
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

pub(crate) fn find_byte(b: &[u8], from: usize, needle: u8) -> Option<usize> {
    b.get(from..)?
        .iter()
        .position(|&c| c == needle)
        .map(|p| from + p)
}

/// Finds `needle` (lower-case ASCII) in `b` from `from`, ignoring ASCII
/// case.
pub(crate) fn find_sub_ci(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
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
