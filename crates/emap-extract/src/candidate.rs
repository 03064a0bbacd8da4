//! What a code candidate is made of and what rules it out: the digit
//! groups of a number ("123 456" is one code, "12.05.2024" a date), the
//! shape of an alphanumeric token, and the characters around it (amounts,
//! measures, colours, paths, URLs, addresses).

use crate::keywords::{ALNUM_UNITS, UNITS, classify};
use crate::tokens::{Kind, Tok};

/// A number made of one or two groups of digits starting at token `k`.
pub(crate) struct Cluster {
    /// Token index of the last group.
    pub(crate) last: usize,
    /// The digits of each group.
    pub(crate) groups: Vec<(usize, usize)>,
    /// Whether the groups are joined by one space or hyphen.
    pub(crate) spaced: bool,
}

/// The digits of a number that may continue past token `k`
/// ("12.05.2024", "+49 30 1234567", "123 456").
pub(crate) fn cluster(chars: &[char], toks: &[Tok], k: usize) -> Cluster {
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
pub(crate) fn bad_context(
    chars: &[char],
    toks: &[Tok],
    start: usize,
    end: usize,
    last_tok: usize,
) -> bool {
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
pub(crate) fn keyword_right_before(chars: &[char], at: usize) -> bool {
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
pub(crate) fn in_url_or_address(chars: &[char], start: usize, end: usize) -> bool {
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

/// An alphanumeric token that could be a code: 4 to 10 characters, at
/// least one digit and one letter, letters of one case, not a measure
/// ("10min", "1080p").
pub(crate) fn plausible_alnum(v: &str) -> bool {
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
