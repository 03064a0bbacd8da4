//! Links and one-time codes found in a mail: what a sign-up or verification
//! flow actually wants from the mail it waited for.
//!
//! A task that waited for mail at `task42@catchall.example` usually needs
//! one thing out of it: the "Verify email" link or the six digits to type
//! in. Every such task would otherwise write the same fragile scanner, so it
//! lives here. The finders take the decoded parts of a mail as `&str` (emap
//! calls them from `Mail::links` and `Mail::codes`), so this crate needs no
//! MIME parser and no other dependency: it is the multilingual heuristics
//! and nothing else, kept apart from emap's delivery guarantees.
//!
//! The input is untrusted and can be large (up to emap's
//! `max_message_size`), so every scan is hand-written, single-pass and
//! bounded: no regular expressions (and no regex dependency), at most
//! [`MAX_LINKS`] links, and codes are looked for in the first
//! [`MAX_CODE_SCAN_CHARS`] characters of each part only.
//!
//! ```
//! let text = "Your verification code is 482913. Or open https://service.test/v?t=1&amp;u=2.";
//! assert_eq!(emap_extract::links(Some(text), None), ["https://service.test/v?t=1&u=2"]);
//! assert_eq!(emap_extract::codes(None, Some(text), None), ["482913"]);
//! ```
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
//!
//! # Layout
//! One concept per file; links and codes share only the character classes
//! and the HTML rendering.
//! - [`links()`] (`links.rs`): the links of a mail, text part then HTML part.
//! - `url.rs`: a URL in running text: its start, its end, trailing
//!   punctuation, its host.
//! - `html.rs`: an HTML body rendered to laid-out visible text, with its
//!   `href` targets.
//! - `entities.rs`: HTML character references.
//! - `cjk.rs`: which characters are CJK (URL ends, keywords inside runs).
//! - [`codes()`] (`codes.rs`): candidates per part, scored and ranked.
//! - `tokens.rs`: normalised text split into words, numbers and blobs.
//! - `keywords.rs`: the word tables of every language, and `classify`.
//! - `proximity.rs`: how near a candidate is to a keyword.
//! - `candidate.rs`: a candidate's digit groups and shape, and the context
//!   that rules it out.
//! - `tests.rs`: properties of both finders on random, hostile and huge
//!   input.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod candidate;
mod cjk;
mod codes;
mod entities;
mod html;
mod keywords;
mod links;
mod proximity;
mod tokens;
mod url;

#[cfg(test)]
mod tests;

pub use codes::codes;
pub use links::links;

/// Most links returned for one mail.
pub const MAX_LINKS: usize = 1000;

/// Characters of each part (subject, text, rendered HTML) searched for
/// codes. Codes sit near the top of a mail; the rest is footer.
pub const MAX_CODE_SCAN_CHARS: usize = 100_000;
