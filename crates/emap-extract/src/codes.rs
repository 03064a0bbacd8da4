//! The one-time codes of a mail: the candidates of each part (subject,
//! text, rendered HTML), scored by how near they are to a keyword and
//! ranked across the parts, without duplicates.

use std::collections::{HashMap, HashSet};

#[cfg(doc)]
use crate::MAX_CODE_SCAN_CHARS;
use crate::candidate::{bad_context, cluster, in_url_or_address, plausible_alnum};
use crate::html::render_html;
use crate::proximity::{near_line_score, nearest_keyword, neighbour};
use crate::tokens::{Kind, Tok, normalize, tokenize};

/// Candidate codes considered per part.
pub(crate) const MAX_CANDIDATES: usize = 1_000;

/// The likely one-time codes in a mail's decoded `subject`, text part and
/// HTML part, best first and without duplicates; empty when it has none.
/// Each part is searched in its first
/// [`MAX_CODE_SCAN_CHARS`](crate::MAX_CODE_SCAN_CHARS) characters.
/// The rules and the ranking are in the crate documentation.
pub fn codes(subject: Option<&str>, text: Option<&str>, html: Option<&str>) -> Vec<String> {
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

/// The candidates of one part with their scores.
pub(crate) fn candidates(doc: &str, is_subject: bool) -> Vec<(String, i32)> {
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn codes_are_deduplicated() {
        let c = codes(
            Some("Your code 482913"),
            Some("Your code is 482913\n482913"),
            Some("<p>Code: <b>482913</b></p>"),
        );
        assert_eq!(c, ["482913"]);
    }

    /// Generated mail is often minified: no whitespace between tags. The
    /// rendering keeps table cells and blocks apart, so the code is not
    /// glued to its keyword. mail-parser's `html_to_text` breaks lines only
    /// at `<br>` and `</p>` and joins the rest: with it, these give
    /// `["code482913"]` and nothing (tried when this crate was split off).
    #[test]
    fn minified_html_keeps_cells_and_blocks_apart() {
        let html = |h: &str| codes(None, None, Some(h));
        assert_eq!(
            html("<table><tr><td>Verification code</td><td><b>482913</b></td></tr></table>"),
            ["482913"]
        );
        assert_eq!(html("<div>Your code</div><div>482913</div>"), ["482913"]);
    }
}
