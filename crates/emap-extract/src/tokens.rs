//! Text as the code finder reads it: normalised (full-width digits as
//! ASCII, invisible characters dropped, one kind of line break) and split
//! into tokens (words sorted by the keyword tables, numbers, alphanumeric
//! runs, URLs and addresses as opaque blobs, sentence ends), each with its
//! line.

use crate::MAX_CODE_SCAN_CHARS;
use crate::keywords::{VOID_AFTER, VOID_BEFORE, classify};
use crate::url::is_url_stop;

/// What a token is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
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
pub(crate) struct Tok {
    /// Char index of the first character.
    pub(crate) start: usize,
    /// Char index after the last character.
    pub(crate) end: usize,
    /// Line number.
    pub(crate) line: usize,
    pub(crate) kind: Kind,
}

impl Tok {
    pub(crate) fn is_content(&self) -> bool {
        self.kind != Kind::Stop
    }

    pub(crate) fn is_keyword(&self) -> bool {
        matches!(self.kind, Kind::Code | Kind::WeakCode)
    }
}

/// Fullwidth digits and letters as ASCII, no-break spaces as spaces,
/// zero-width characters and soft hyphens dropped, CRLF and CR as LF.
pub(crate) fn normalize(s: &str) -> Vec<char> {
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
pub(crate) fn is_email_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+' | '%' | '@')
}

/// Where a URL starting at `i` ends, if one starts there.
pub(crate) fn url_at(chars: &[char], i: usize) -> Option<usize> {
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
pub(crate) fn tokenize(chars: &[char]) -> Vec<Tok> {
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
pub(crate) fn push_run(
    chars: &[char],
    i: usize,
    j: usize,
    line: usize,
    toks: &mut Vec<Tok>,
) -> usize {
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
pub(crate) fn push_piece(
    chars: &[char],
    i: usize,
    j: usize,
    line: usize,
    toks: &mut Vec<Tok>,
) -> usize {
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
pub(crate) fn refine_keywords(chars: &[char], toks: &mut [Tok]) {
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
