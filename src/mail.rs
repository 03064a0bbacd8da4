//! [`Mail`]: one fetched message, parsed once and shared.
//!
//! A session fetches each new message once and hands the same
//! `Arc<Mail>` to every subscriber it reaches, so all parsing happens here,
//! in two steps of `mail-parser`. Up front, only the header block: headers
//! are decoded (RFC 2047), and the recipient addresses that the session
//! indexes subscribers by are collected from every header a catch-all
//! mailbox may carry them in (`To`, `Cc`, `Delivered-To`, `X-Original-To`,
//! `X-Forwarded-To`, `Envelope-To`), plus the `for` clause of the topmost
//! `Received` header: a task reached only by Bcc on a catch-all that adds
//! none of those headers is named nowhere else. That is all routing and
//! [`crate::Filter`] need. The bodies — MIME decoding, charset conversion,
//! HTML rendering, the costly part — are decoded on the first call that
//! needs them ([`Mail::text`], [`Mail::html`], the link and code finders),
//! once per mail however many subscribers share it, and never for a mail
//! no one reads.
//!
//! The message comes from the network, so parsing never fails and never
//! panics: whatever the bytes, the result is a `Mail` that keeps them, with
//! the fields that could not be found left empty.

use std::collections::HashSet;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use mail_parser::decoders::html::html_to_text;
use mail_parser::{HeaderName, HeaderValue, MessageParser, PartType};

/// IMAP `INTERNALDATE` parsing lives with the protocol parser; it is
/// re-exported here for the code that builds a [`Mail`] from a FETCH.
pub(crate) use crate::proto::parser::parse_internal_date;

/// One mailbox of an address header: `"Name" <email>` or a bare `email`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Address {
    /// The display name, RFC 2047 decoded, if the header gave one.
    pub name: Option<String>,
    /// The address as written in the header, trimmed, without the angle
    /// brackets, case preserved. Empty when the header held only a name
    /// (`From: Mailer Daemon`).
    pub email: String,
}

impl fmt::Display for Address {
    /// `Name <email>`, or `email` alone when there is no name. A name with
    /// characters that are special in a header (`,`, `"`, `<`, ...) is
    /// quoted. Meant for people and logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            None => f.write_str(&self.email),
            Some(name) => {
                let special = |c: char| "()<>[]:;@\\,.\"".contains(c);
                if name.contains(special) {
                    f.write_str("\"")?;
                    for c in name.chars() {
                        if c == '"' || c == '\\' {
                            f.write_str("\\")?;
                        }
                        write!(f, "{c}")?;
                    }
                    f.write_str("\"")?;
                } else {
                    f.write_str(name)?;
                }
                write!(f, " <{}>", self.email)
            }
        }
    }
}

/// One message fetched from a mailbox, parsed once.
///
/// Cheap to share: a session wraps it in an `Arc` and sends that to every
/// subscriber whose filter matches. `Debug` shows the identity, subject,
/// senders and sizes, never the body.
#[derive(Clone)]
pub struct Mail {
    uid: u32,
    uid_validity: u32,
    mailbox: String,
    /// The credential's folder the mail came from (a name or a special
    /// use), set by the session; `None` for a mail parsed by the caller.
    folder: Option<crate::folder::Folder>,
    internal_date: Option<SystemTime>,
    raw: Vec<u8>,
    truncated: bool,
    parsed: Parsed,
    /// The bodies, decoded on first asking (see the module doc).
    bodies: std::sync::OnceLock<Bodies>,
    /// Links and codes, found on first asking: a mail is shared (`Arc`) by
    /// every subscriber it matches, and each finder renders the HTML body,
    /// so they run once per mail, not once per call.
    #[cfg(feature = "extract")]
    found: Found,
}

#[cfg(feature = "extract")]
#[derive(Clone, Default)]
struct Found {
    links: std::sync::OnceLock<Vec<String>>,
    codes: std::sync::OnceLock<Vec<String>>,
}

/// Everything taken from the header block. `Default` is what garbage
/// yields.
#[derive(Clone, Default)]
struct Parsed {
    date: Option<SystemTime>,
    message_id: Option<String>,
    from: Vec<Address>,
    to: Vec<Address>,
    cc: Vec<Address>,
    recipients: Vec<String>,
    subject: Option<String>,
    /// `subject`, lower-cased (Unicode), for [`crate::Filter`].
    subject_folded: Option<String>,
    /// Every From display name and address, lower-cased (Unicode), for
    /// [`crate::Filter`].
    senders_folded: Vec<String>,
}

/// The decoded bodies. `Default` is what garbage yields.
#[derive(Clone, Default)]
struct Bodies {
    text: Option<String>,
    html: Option<String>,
    /// Whether `text` is mail-parser's rendering of an HTML part (there is
    /// no text/plain body). The link and code finders then get only `html`:
    /// that rendering glues table cells and blocks together. (Read only by
    /// the finders, feature `extract`.)
    #[cfg_attr(not(feature = "extract"), allow(dead_code))]
    text_from_html: bool,
}

/// The headers that name a recipient, in the order their addresses are
/// listed in [`Mail::recipients`].
const RECIPIENT_HEADERS: [&str; 6] = [
    "To",
    "Cc",
    "Delivered-To",
    "X-Original-To",
    "X-Forwarded-To",
    "Envelope-To",
];

/// The parser of the bodies: the MIME headers it needs to walk the parts,
/// and [`HEAD_PARSER`]'s.
static PARSER: LazyLock<MessageParser> = LazyLock::new(|| head_parser().with_mime_headers());

/// The parser of the header block: decodes only the headers [`Mail`] uses
/// and skips the rest (`Received`, DKIM signatures, `Content-Type`, ...)
/// without parsing them.
static HEAD_PARSER: LazyLock<MessageParser> = LazyLock::new(head_parser);

fn head_parser() -> MessageParser {
    MessageParser::new()
        .header_address(HeaderName::From)
        .header_address(HeaderName::To)
        .header_address(HeaderName::Cc)
        .header_address(HeaderName::DeliveredTo)
        .header_address(HeaderName::Other(RECIPIENT_HEADERS[3].into()))
        .header_address(HeaderName::Other(RECIPIENT_HEADERS[4].into()))
        .header_address(HeaderName::Other(RECIPIENT_HEADERS[5].into()))
        .header_date(HeaderName::Date)
        .header_text(HeaderName::Subject)
        .header_id(HeaderName::MessageId)
        .default_header_ignore()
}

/// Which of [`RECIPIENT_HEADERS`] a header is, if any.
fn recipient_slot(name: &HeaderName<'_>) -> Option<usize> {
    match name {
        HeaderName::To => Some(0),
        HeaderName::Cc => Some(1),
        HeaderName::DeliveredTo => Some(2),
        HeaderName::Other(n) => RECIPIENT_HEADERS
            .iter()
            .skip(3)
            .position(|h| h.eq_ignore_ascii_case(n))
            .map(|i| i + 3),
        _ => None,
    }
}

impl Mail {
    /// Parses a fetched message's header block; the bodies are decoded on
    /// first use ([`Mail::text`], [`Mail::html`]), once. Never fails and
    /// never panics: bytes that are not a message give a `Mail` with empty
    /// fields that still holds `raw`.
    ///
    /// `internal_date` is the server's `INTERNALDATE` (see
    /// `parse_internal_date`); `truncated` says that `raw` is only the
    /// start of a larger message (a partial FETCH), in which case the
    /// bodies are whatever that start decodes to.
    pub fn parse(
        uid: u32,
        uid_validity: u32,
        mailbox: &str,
        internal_date: Option<SystemTime>,
        raw: Vec<u8>,
        truncated: bool,
    ) -> Mail {
        // mail-parser promises not to panic, but it runs on untrusted bytes
        // and has debug assertions and unchecked arithmetic on offsets; a
        // panic here would take a whole session down with it.
        let parsed =
            catch_unwind(AssertUnwindSafe(|| Parsed::from_headers(&raw))).unwrap_or_else(|_| {
                tracing::warn!(
                    uid,
                    uid_validity,
                    "mail-parser panicked; keeping raw bytes only"
                );
                Parsed::default()
            });
        Mail {
            uid,
            uid_validity,
            mailbox: mailbox.to_owned(),
            folder: None,
            internal_date,
            raw,
            truncated,
            parsed,
            bodies: std::sync::OnceLock::new(),
            #[cfg(feature = "extract")]
            found: Found::default(),
        }
    }

    /// The bodies, decoded on the first call (by whichever thread asks
    /// first; the others wait for it and share the result).
    fn bodies(&self) -> &Bodies {
        self.bodies.get_or_init(|| {
            catch_unwind(AssertUnwindSafe(|| Bodies::from_bytes(&self.raw))).unwrap_or_else(|_| {
                tracing::warn!(
                    uid = self.uid,
                    uid_validity = self.uid_validity,
                    "mail-parser panicked on the bodies; keeping raw bytes only"
                );
                Bodies::default()
            })
        })
    }

    /// Whether the bodies have been decoded yet (for tests: routing and
    /// filtering must not decode them).
    #[cfg(test)]
    pub(crate) fn bodies_decoded(&self) -> bool {
        self.bodies.get().is_some()
    }

    /// The message's UID in its mailbox.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The mailbox's UIDVALIDITY when the message was fetched; with
    /// [`Mail::uid`] it identifies the message.
    pub fn uid_validity(&self) -> u32 {
        self.uid_validity
    }

    /// The mailbox the message was fetched from: the name the credential
    /// gave ([`Credential::mailbox`](crate::Credential::mailbox)), or for a
    /// credential watching a special use
    /// ([`Credential::special_use`](crate::Credential::special_use)) the
    /// name the server listed for it, decoded from modified UTF-7
    /// (`[Gmail]/Spam`, `Junk`, `Нежелательная почта`); for a mail from a
    /// further folder ([`Credential::also_watch`](crate::Credential::also_watch)),
    /// that folder's name, found the same way.
    pub fn mailbox(&self) -> &str {
        &self.mailbox
    }

    /// The folder of the credential the mail came from, as the credential
    /// named it: [`Folder::Named`](crate::Folder::Named) or
    /// [`Folder::SpecialUse`](crate::Folder::SpecialUse) (`\Junk`, whatever
    /// the server calls it). `None` for a mail parsed with [`Mail::parse`].
    pub fn folder(&self) -> Option<&crate::folder::Folder> {
        self.folder.as_ref()
    }

    /// Tags the mail with the credential's folder it came from.
    pub(crate) fn with_folder(mut self, folder: crate::folder::Folder) -> Mail {
        self.folder = Some(folder);
        self
    }

    /// When the server received the message (IMAP `INTERNALDATE`, the
    /// server's clock), if it said.
    pub fn internal_date(&self) -> Option<SystemTime> {
        self.internal_date
    }

    /// The `Date` header (the sender's clock), if present and valid. The
    /// first `Date` header counts.
    pub fn date(&self) -> Option<SystemTime> {
        self.parsed.date
    }

    /// The `Message-ID`, without the angle brackets.
    pub fn message_id(&self) -> Option<&str> {
        self.parsed.message_id.as_deref()
    }

    /// The senders: every mailbox of every `From` header, in order.
    pub fn from(&self) -> &[Address] {
        &self.parsed.from
    }

    /// Every mailbox of every `To` header, in order (groups flattened).
    pub fn to(&self) -> &[Address] {
        &self.parsed.to
    }

    /// Every mailbox of every `Cc` header, in order (groups flattened).
    pub fn cc(&self) -> &[Address] {
        &self.parsed.cc
    }

    /// Every recipient address, lower-cased (ASCII only, so a non-ASCII
    /// local part keeps its case) and without duplicates, from all
    /// occurrences of `To`, `Cc`, `Delivered-To`, `X-Original-To`,
    /// `X-Forwarded-To` and `Envelope-To`, in that order, then the address
    /// of the `for` clause of the topmost `Received` header
    /// (`Received: from … by … for <task@x.test>; date`). On a catch-all
    /// mailbox the address a message was sent to is often only in
    /// `Delivered-To` or `X-Original-To`, and for a Bcc on a server that
    /// adds neither, only in that `for` clause. Only the topmost `Received`
    /// header counts: it is the one the receiving server wrote; lower ones
    /// name earlier hops' recipients.
    pub fn recipients(&self) -> &[String] {
        &self.parsed.recipients
    }

    /// The subject, RFC 2047 decoded. The first `Subject` header counts.
    pub fn subject(&self) -> Option<&str> {
        self.parsed.subject.as_deref()
    }

    /// The plain-text body: the first `text/plain` body part, decoded and
    /// converted to UTF-8. When the message has no plain-text body but an
    /// HTML one, this is mail-parser's text rendering of that HTML.
    ///
    /// Decoded on the first call of this, [`Mail::html`], [`Mail::links`]
    /// or [`Mail::codes`] (once per mail, shared by every holder of it).
    pub fn text(&self) -> Option<&str> {
        self.bodies().text.as_deref()
    }

    /// The HTML body: the first `text/html` body part, decoded and
    /// converted to UTF-8. `None` when the message has no HTML part (no
    /// HTML is made up from the text).
    ///
    /// Decoded on first use, like [`Mail::text`].
    pub fn html(&self) -> Option<&str> {
        self.bodies().html.as_deref()
    }

    /// The message as fetched.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// Whether [`Mail::raw`] is only the start of a larger message (it was
    /// over the configured size limit).
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }

    /// Whether `addr` is among [`Mail::recipients`]: the whole address,
    /// compared case-insensitively (ASCII).
    pub fn has_recipient(&self, addr: &str) -> bool {
        self.parsed
            .recipients
            .iter()
            .any(|r| r.eq_ignore_ascii_case(addr))
    }

    /// When the message arrived: [`Mail::internal_date`], or the `Date`
    /// header when the server gave none.
    pub fn received_at(&self) -> Option<SystemTime> {
        self.internal_date.or(self.parsed.date)
    }

    /// The `http://` and `https://` links of the text and HTML bodies, in
    /// order of appearance and without duplicates: HTML `href` targets and
    /// URLs in the visible text, HTML entities decoded, trailing
    /// punctuation trimmed; at most 1000. The rules are those of
    /// [`extract::links`](crate::extract::links); needs the `extract`
    /// feature (on by default).
    ///
    /// ```
    /// let raw = b"Subject: Verify\r\n\r\nClick https://service.test/v?t=1&amp;u=2.\r\n";
    /// let mail = emap::Mail::parse(1, 1, "INBOX", None, raw.to_vec(), false);
    /// assert_eq!(mail.links(), ["https://service.test/v?t=1&u=2"]);
    /// ```
    #[cfg(feature = "extract")]
    pub fn links(&self) -> Vec<String> {
        self.found
            .links
            .get_or_init(|| emap_extract::links(self.text_part(), self.html()))
            .clone()
    }

    /// Likely one-time codes (4–8 digits, or 4–10 letters and digits next
    /// to a keyword), best first and without duplicates, from the subject
    /// and both bodies. A code next to a keyword such as "code",
    /// "verification", "OTP", "PIN", "Bestätigungscode", "код" or "验证码"
    /// ranks first, then one in the subject, then a bare 6-digit number;
    /// years, dates, times, prices, phone and order numbers, colours and
    /// parts of URLs are left out. Empty when the mail has no code. The
    /// rules are those of [`extract::codes`](crate::extract::codes); needs
    /// the `extract` feature (on by default).
    ///
    /// ```
    /// let raw = b"Subject: Welcome\r\n\r\nOrder 55512345. Your verification code is 482913.\r\n";
    /// let mail = emap::Mail::parse(1, 1, "INBOX", None, raw.to_vec(), false);
    /// assert_eq!(mail.codes(), ["482913"]);
    /// ```
    #[cfg(feature = "extract")]
    pub fn codes(&self) -> Vec<String> {
        self.found
            .codes
            .get_or_init(|| emap_extract::codes(self.subject(), self.text_part(), self.html()))
            .clone()
    }

    /// The text/plain body for the finders: `None` when [`Mail::text`] is
    /// only a rendering of the HTML body, which they render themselves,
    /// keeping table cells and blocks apart.
    #[cfg(feature = "extract")]
    fn text_part(&self) -> Option<&str> {
        let b = self.bodies();
        let rendered = b.text_from_html && b.html.is_some();
        if rendered { None } else { self.text() }
    }

    /// The subject, lower-cased (Unicode), for substring filters.
    pub(crate) fn subject_folded(&self) -> Option<&str> {
        self.parsed.subject_folded.as_deref()
    }

    /// Every From display name and address, each lower-cased (Unicode),
    /// for substring filters.
    pub(crate) fn senders_folded(&self) -> &[String] {
        &self.parsed.senders_folded
    }
}

impl fmt::Debug for Mail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mail")
            .field("uid", &self.uid)
            .field("uid_validity", &self.uid_validity)
            .field("mailbox", &self.mailbox)
            .field("folder", &self.folder)
            .field("subject", &self.parsed.subject)
            .field("from", &self.parsed.from)
            .field("recipients", &self.parsed.recipients.len())
            // Only when decoded: printing a mail must not decode it.
            .field(
                "text_len",
                &self.bodies.get().map(|b| b.text.as_ref().map(String::len)),
            )
            .field(
                "html_len",
                &self.bodies.get().map(|b| b.html.as_ref().map(String::len)),
            )
            .field("raw_len", &self.raw.len())
            .field("truncated", &self.truncated)
            .finish_non_exhaustive()
    }
}

impl Parsed {
    /// Reads the header block only (mail-parser's `parse_headers`: no
    /// MIME walk, no body decoding).
    fn from_headers(raw: &[u8]) -> Parsed {
        let Some(msg) = HEAD_PARSER.parse_headers(raw) else {
            return Parsed::default();
        };
        let mut p = Parsed::default();
        // Addresses of each recipient header, in RECIPIENT_HEADERS order.
        let mut by_slot: [Vec<String>; RECIPIENT_HEADERS.len()] = Default::default();
        // The `for` address of the topmost Received header; `Some(None)`
        // once that header was seen without one.
        let mut received_for: Option<Option<String>> = None;
        for header in msg.headers() {
            let name = &header.name;
            let value = &header.value;
            if *name == HeaderName::Received && received_for.is_none() {
                let value = raw.get(header.offset_start as usize..header.offset_end as usize);
                received_for = Some(value.and_then(received_for_address));
            }
            match name {
                HeaderName::Subject if p.subject.is_none() => {
                    p.subject = value.as_text().map(str::to_owned);
                }
                HeaderName::Date if p.date.is_none() => {
                    p.date = value.as_datetime().and_then(to_system_time);
                }
                HeaderName::MessageId if p.message_id.is_none() => {
                    p.message_id = match value {
                        HeaderValue::Text(id) => Some(id.to_string()),
                        HeaderValue::TextList(ids) => ids.first().map(|id| id.to_string()),
                        _ => None,
                    }
                    .filter(|id| !id.is_empty());
                }
                HeaderName::From => p.from.extend(addresses(value)),
                _ => {}
            }
            if let (Some(slot), Some(list)) = (recipient_slot(name), value.as_address()) {
                let listed: Vec<Address> = list.iter().filter_map(convert).collect();
                if let Some(emails) = by_slot.get_mut(slot) {
                    emails.extend(listed.iter().map(|a| a.email.to_ascii_lowercase()));
                }
                match name {
                    HeaderName::To => p.to.extend(listed),
                    HeaderName::Cc => p.cc.extend(listed),
                    _ => {}
                }
            }
        }

        let mut seen = HashSet::new();
        let received_for = received_for.flatten().into_iter();
        for email in by_slot.into_iter().flatten().chain(received_for) {
            // A name without an address, or an address mail-parser could
            // not make sense of, is nothing a subscriber can wait for.
            if email.is_empty() || email.contains(char::is_whitespace) {
                continue;
            }
            if seen.insert(email.clone()) {
                p.recipients.push(email);
            }
        }

        p.subject_folded = p.subject.as_deref().map(str::to_lowercase);
        p.senders_folded = p
            .from
            .iter()
            .flat_map(|a| a.name.iter().chain(Some(&a.email)))
            .filter(|s| !s.is_empty())
            .map(|s| s.to_lowercase())
            .collect();
        p
    }
}

impl Bodies {
    /// The full MIME walk: bodies decoded and converted to UTF-8.
    fn from_bytes(raw: &[u8]) -> Bodies {
        let Some(msg) = PARSER.parse(raw) else {
            return Bodies::default();
        };
        let plain = msg.text_bodies().find_map(|part| match &part.body {
            PartType::Text(t) => Some(t.to_string()),
            _ => None,
        });
        let text_from_html = plain.is_none();
        let text = plain.or_else(|| {
            msg.html_bodies()
                .chain(msg.text_bodies())
                .find_map(|part| match &part.body {
                    PartType::Html(h) => Some(html_to_text(h)),
                    _ => None,
                })
        });
        let html = msg.html_bodies().find_map(|part| match &part.body {
            PartType::Html(h) => Some(h.to_string()),
            _ => None,
        });
        Bodies {
            text,
            html,
            text_from_html,
        }
    }
}

/// How much of a `Received` header value is read looking for its `for`
/// clause; real ones are a few hundred bytes.
const MAX_RECEIVED: usize = 8 * 1024;

/// The longest address taken from a `Received` header's `for` clause
/// (RFC 5321 allows a 256-octet path).
const MAX_RECEIVED_ADDRESS: usize = 320;

/// The address of the `for` clause of a `Received` header value
/// (`from a by b with ESMTP id x for <task@x.test>; date`, or Exim's
/// `for task@x.test;`), ASCII lower-cased; `None` when it has no such
/// clause or the clause is not a plausible address (no `@`, spaces,
/// control characters, invalid UTF-8, too long).
///
/// Only the clause before the `;` that starts the date counts; comments
/// (`(... for ...)`), quoted strings and `<...>` outside the clause are
/// skipped. Reads at most [`MAX_RECEIVED`] bytes and never panics.
///
/// mail-parser parses `Received` too (`Received::for_`), and was weighed:
/// it also takes a `for` after the `;` (inside the date part), inside a
/// quoted string, and addresses such as `@x.test` or `a@` — text a sender
/// can place there. A recipient routes mail to a waiting task, so this
/// stricter reading is kept (the shapes are in the tests below).
fn received_for_address(value: &[u8]) -> Option<String> {
    let value = value.get(..MAX_RECEIVED).unwrap_or(value);
    let mut i = 0;
    while let Some(&c) = value.get(i) {
        match c {
            b';' => return None,
            b'(' => i = skip_comment(value, i),
            b'"' => i = skip_quoted(value, i),
            b'<' => i = skip_angle(value, i),
            c if is_word_byte(c) => {
                let end = value[i..]
                    .iter()
                    .position(|&c| !is_word_byte(c))
                    .map_or(value.len(), |n| i + n);
                if value[i..end].eq_ignore_ascii_case(b"for") {
                    return address_after_for(value, end);
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    None
}

/// Whether `c` belongs to a word of a `Received` header (anything but
/// space, controls and the delimiters it uses).
fn is_word_byte(c: u8) -> bool {
    !c.is_ascii_whitespace() && !c.is_ascii_control() && !b"();<>\"".contains(&c)
}

/// The index after the comment that starts at `start` (nested, with `\`
/// escapes), or the end of `value` if it is not closed.
fn skip_comment(value: &[u8], start: usize) -> usize {
    let mut depth = 0usize;
    let mut i = start;
    while let Some(&c) = value.get(i) {
        match c {
            b'\\' => i += 1,
            b'(' => depth += 1,
            b')' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    value.len()
}

/// The index after the quoted string that starts at `start`.
fn skip_quoted(value: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while let Some(&c) = value.get(i) {
        match c {
            b'\\' => i += 1,
            b'"' => return i + 1,
            _ => {}
        }
        i += 1;
    }
    value.len()
}

/// The index after the `<...>` that starts at `start`.
fn skip_angle(value: &[u8], start: usize) -> usize {
    value[start..]
        .iter()
        .position(|&c| c == b'>')
        .map_or(value.len(), |n| start + n + 1)
}

/// The address that follows the word `for` ending at `i`: `<addr>` or a
/// bare `addr`, after any folding white space and comments.
fn address_after_for(value: &[u8], mut i: usize) -> Option<String> {
    loop {
        match value.get(i)? {
            c if c.is_ascii_whitespace() => i += 1,
            b'(' => i = skip_comment(value, i),
            _ => break,
        }
    }
    let bytes = if value.get(i) == Some(&b'<') {
        let len = value[i + 1..].iter().position(|&c| c == b'>')?;
        &value[i + 1..i + 1 + len]
    } else {
        let len = value[i..]
            .iter()
            .position(|&c| c.is_ascii_whitespace() || b";(,".contains(&c))
            .unwrap_or(value.len() - i);
        &value[i..i + len]
    };
    let addr = std::str::from_utf8(bytes).ok()?;
    let plausible = addr.len() <= MAX_RECEIVED_ADDRESS
        && addr
            .find('@')
            .is_some_and(|at| at > 0 && at + 1 < addr.len())
        && !addr.chars().any(|c| c.is_whitespace() || c.is_control())
        && !addr.contains(['<', '>', '(', ')', '"', ',', ';']);
    plausible.then(|| addr.to_ascii_lowercase())
}

/// The mailboxes of an address header value (groups flattened).
fn addresses<'a>(value: &'a HeaderValue<'_>) -> impl Iterator<Item = Address> + 'a {
    value
        .as_address()
        .into_iter()
        .flat_map(|list| list.iter())
        .filter_map(convert)
}

/// One mail-parser mailbox as an [`Address`]; `None` when it has neither a
/// name nor an address.
fn convert(a: &mail_parser::Addr<'_>) -> Option<Address> {
    let name = a.name.as_deref().map(str::trim).filter(|n| !n.is_empty());
    match a.address.as_deref() {
        Some(e) => convert_email(e, name).map(|(email, name)| Address { name, email }),
        None => name.map(|n| Address {
            name: Some(n.to_owned()),
            email: String::new(),
        }),
    }
}

/// Cleans an address as mail-parser found it: trims it and its angle
/// brackets, and repairs `Name addr@host` written without brackets (which
/// mail-parser returns as one address with spaces) into name and address.
fn convert_email(email: &str, name: Option<&str>) -> Option<(String, Option<String>)> {
    let email = email
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    if email.is_empty() {
        return name.map(|n| (String::new(), Some(n.to_owned())));
    }
    if email.contains(char::is_whitespace)
        && let Some((head, addr)) = email.rsplit_once(char::is_whitespace)
        && addr.contains('@')
    {
        let addr = addr.trim_start_matches('<').trim_end_matches('>');
        let head = head.trim().trim_matches('"').trim();
        let name = name
            .map(str::to_owned)
            .or_else(|| (!head.is_empty()).then(|| head.to_owned()));
        return Some((addr.to_owned(), name));
    }
    Some((email.to_owned(), name.map(str::to_owned)))
}

/// A valid `Date` header value as a point in time.
fn to_system_time(d: &mail_parser::DateTime) -> Option<SystemTime> {
    // `to_timestamp` does unchecked arithmetic on out-of-range fields.
    if !d.is_valid() {
        return None;
    }
    let secs = d.to_timestamp();
    let delta = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(delta)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(delta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    /// Writes a message with `\n` line ends in the source and CRLF on the
    /// wire, as IMAP delivers it.
    fn eml(s: &str) -> Vec<u8> {
        s.replace('\n', "\r\n").into_bytes()
    }

    fn parse(raw: Vec<u8>) -> Mail {
        Mail::parse(7, 42, "INBOX", None, raw, false)
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    const VERIFICATION: &str = "\
Return-Path: <noreply@service.test>
Delivered-To: catchall@x.test
Received: from mx.service.test (mx.service.test [192.0.2.1])
\tby mx.x.test with ESMTPS id 4XyZ; Mon, 01 Jan 2024 10:00:01 +0000
DKIM-Signature: v=1; a=rsa-sha256; d=service.test; s=s1;
\th=from:to:subject; bh=abc=; b=def=
Date: Mon, 01 Jan 2024 12:00:00 +0200
From: Service Team <NoReply@Service.test>
To: Task1@X.test
Subject: Verify your email address
Message-ID: <20240101100000.1234@service.test>
MIME-Version: 1.0
Content-Type: text/plain; charset=UTF-8
Content-Transfer-Encoding: 7bit

Hello,

Your verification code is 482913.
";

    #[test]
    fn plain_text_verification_mail() {
        let raw = eml(VERIFICATION);
        let m = Mail::parse(7, 42, "INBOX", Some(at(1_704_103_201)), raw.clone(), false);
        assert_eq!(m.uid(), 7);
        assert_eq!(m.uid_validity(), 42);
        assert_eq!(m.mailbox(), "INBOX");
        assert_eq!(m.subject(), Some("Verify your email address"));
        assert_eq!(m.message_id(), Some("20240101100000.1234@service.test"));
        assert_eq!(
            m.from(),
            [Address {
                name: Some("Service Team".into()),
                email: "NoReply@Service.test".into(),
            }]
        );
        assert_eq!(
            m.to(),
            [Address {
                name: None,
                email: "Task1@X.test".into(),
            }]
        );
        assert!(m.cc().is_empty());
        assert_eq!(m.recipients(), ["task1@x.test", "catchall@x.test"]);
        assert_eq!(
            m.text(),
            Some("Hello,\r\n\r\nYour verification code is 482913.\r\n")
        );
        assert_eq!(m.html(), None);
        // 2024-01-01 10:00:00 UTC
        assert_eq!(m.date(), Some(at(1_704_103_200)));
        assert_eq!(m.internal_date(), Some(at(1_704_103_201)));
        assert_eq!(m.received_at(), Some(at(1_704_103_201)));
        assert_eq!(m.raw(), &raw[..]);
        assert!(!m.is_truncated());
        assert!(m.has_recipient("TASK1@x.test"));
        assert!(m.has_recipient("catchall@X.TEST"));
        assert!(!m.has_recipient("task1@x.tes"));
        assert!(!m.has_recipient("task@x.test"));
        assert_eq!(m.subject_folded(), Some("verify your email address"));
        assert_eq!(m.senders_folded(), ["service team", "noreply@service.test"]);
    }

    #[test]
    fn received_at_falls_back_to_date_header() {
        let m = parse(eml(VERIFICATION));
        assert_eq!(m.internal_date(), None);
        assert_eq!(m.received_at(), Some(at(1_704_103_200)));
        let m = parse(eml("From: a@x.test\nSubject: no date\n\nbody\n"));
        assert_eq!(m.received_at(), None);
        let m = parse(eml("Date: yesterday-ish\nSubject: bad date\n\nbody\n"));
        assert_eq!(m.date(), None);
    }

    #[test]
    fn html_only() {
        let m = parse(eml("\
From: shop@service.test
To: task2@x.test
Subject: Confirm
Content-Type: text/html; charset=utf-8

<html><body><p>Your code is <b>551122</b></p><a href=\"https://s.test/c?t=1\">Confirm</a></body></html>
"));
        let html = m.html().unwrap_or_default();
        assert!(html.contains("<b>551122</b>"), "{html:?}");
        let text = m.text().unwrap_or_default();
        assert!(text.contains("Your code is 551122"), "{text:?}");
        assert!(!text.contains('<'), "{text:?}");
    }

    #[test]
    fn multipart_alternative_prefers_the_real_text_part() {
        let m = parse(eml("\
From: shop@service.test
To: task3@x.test
Subject: Alt
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary=\"b1\"

This is a multi-part message in MIME format.
--b1
Content-Type: text/plain; charset=utf-8

Plain version: 300400
--b1
Content-Type: text/html; charset=utf-8

<p>HTML version: <b>300400</b></p>
--b1--
"));
        assert_eq!(m.text(), Some("Plain version: 300400"));
        assert_eq!(m.html(), Some("<p>HTML version: <b>300400</b></p>"));
    }

    #[test]
    fn nested_multipart_with_attachment() {
        let m = parse(eml("\
From: shop@service.test
To: task3@x.test
Subject: Mixed
Content-Type: multipart/mixed; boundary=outer

--outer
Content-Type: multipart/alternative; boundary=inner

--inner
Content-Type: text/plain

the text
--inner
Content-Type: text/html

<i>the html</i>
--inner--
--outer
Content-Type: text/plain; name=notes.txt
Content-Disposition: attachment; filename=notes.txt

attached text, not the body
--outer--
"));
        assert_eq!(m.text(), Some("the text"));
        assert_eq!(m.html(), Some("<i>the html</i>"));
    }

    #[test]
    fn quoted_printable_body() {
        let m = parse(eml("\
From: a@service.test
To: task4@x.test
Subject: QP
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Caf=C3=A9 cr=C3=A8me, a very long line that was wrapped by the sender's =
mailer: code=3D900100
"));
        assert_eq!(
            m.text(),
            Some(
                "Café crème, a very long line that was wrapped by the sender's \
                 mailer: code=900100\r\n"
            )
        );
    }

    #[test]
    fn base64_body() {
        let m = parse(eml("\
From: a@service.test
To: task5@x.test
Subject: B64
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: base64

Qm9uam91ciBab8OrLA0Kdm90cmUg
Y29kZSBlc3QgNzcxMjA0Lg0K
"));
        assert_eq!(m.text(), Some("Bonjour Zoë,\r\nvotre code est 771204.\r\n"));
    }

    #[test]
    fn encoded_word_subjects_and_names() {
        let m = parse(eml("\
From: =?ISO-8859-1?Q?Andr=E9?= Pirard <pirard@service.test>
To: task6@x.test
Subject: =?UTF-8?B?0JLQsNGIINC60L7QtCDQv9C+0LTRgtCy0LXRgNC20LTQtdC90LjRjw==?=

body
"));
        assert_eq!(m.subject(), Some("Ваш код подтверждения"));
        assert_eq!(m.from()[0].name.as_deref(), Some("André Pirard"));
        assert_eq!(m.subject_folded(), Some("ваш код подтверждения"));

        let m = parse(eml("\
From: a@service.test
Subject: =?ISO-8859-1?Q?Votre_code_=3A_caf=E9?= =?UTF-8?B?R3LDtsOfZQ==?=

body
"));
        // Adjacent encoded words are joined without the space between them.
        assert_eq!(m.subject(), Some("Votre code : caféGröße"));
    }

    #[test]
    fn windows_1251_body_is_converted() {
        let mut raw = eml("\
From: a@service.test
To: task7@x.test
Subject: cp1251
Content-Type: text/plain; charset=windows-1251
Content-Transfer-Encoding: 8bit

");
        raw.extend_from_slice(b"\xcf\xf0\xe8\xe2\xe5\xf2, \xec\xe8\xf0\r\n");
        let m = parse(raw);
        assert_eq!(m.text(), Some("Привет, мир\r\n"));
    }

    #[test]
    fn iso_2022_jp_body_is_converted() {
        let mut raw = eml("\
From: a@service.test
To: task8@x.test
Subject: =?ISO-2022-JP?B?GyRCJDMkcyRLJEEkTxsoQg==?=
Content-Type: text/plain; charset=ISO-2022-JP
Content-Transfer-Encoding: 7bit

");
        raw.extend_from_slice(b"\x1b$B$3$s$K$A$O!\"@$3&\x1b(B\r\n");
        let m = parse(raw);
        assert_eq!(m.text(), Some("こんにちは、世界\r\n"));
        assert_eq!(m.subject(), Some("こんにちは"));
    }

    #[test]
    fn catch_all_delivered_to_only() {
        let m = parse(eml("\
Delivered-To: catchall@x.test
Received: by mx.x.test; Mon, 01 Jan 2024 10:00:01 +0000
Delivered-To: Task9@X.test
From: a@service.test
To: undisclosed-recipients:;
Subject: for task 9

body
"));
        assert!(m.to().is_empty(), "{:?}", m.to());
        assert_eq!(m.recipients(), ["catchall@x.test", "task9@x.test"]);
        assert!(m.has_recipient("task9@x.test"));
    }

    #[test]
    fn catch_all_x_original_to_only() {
        let m = parse(eml("\
X-Original-To: <task10@x.test>
Delivered-To: catchall@x.test
From: a@service.test
To: list@lists.test
Subject: for task 10

body
"));
        assert_eq!(
            m.recipients(),
            ["list@lists.test", "catchall@x.test", "task10@x.test"]
        );
        assert!(m.has_recipient("Task10@x.test"));
    }

    fn received_for(value: &str) -> Option<String> {
        received_for_address(value.as_bytes())
    }

    #[test]
    fn received_for_clause_shapes() {
        // Postfix, folded as it writes it.
        assert_eq!(
            received_for(
                " from mx.service.test (mx.service.test [192.0.2.1])\r\n\tby mx.x.test \
                 (Postfix) with ESMTPS id 4XyZ\r\n\tfor <Task1@X.test>; Mon, 01 Jan 2024 \
                 10:00:01 +0000\r\n"
            )
            .as_deref(),
            Some("task1@x.test")
        );
        // Exim: no angle brackets.
        assert_eq!(
            received_for(" from [192.0.2.1] by mx.x.test with esmtp (Exim 4.96)\r\n\t(envelope-from <a@s.test>) id 1r\r\n\tfor task2@x.test; Mon, 01 Jan 2024 10:00:01 +0000").as_deref(),
            Some("task2@x.test")
        );
        // Folded between the keyword and the address, a comment in between,
        // the keyword in capitals.
        assert_eq!(
            received_for(" by mx.x.test FOR\r\n (single-drop)\r\n <task3@x.test>; date").as_deref(),
            Some("task3@x.test")
        );
        // Dovecot LMTP.
        assert_eq!(
            received_for(" from h by h with LMTP id abc (envelope-from <s@s.test>) for <task4@x.test>; Mon, 01 Jan 2024 10:00:01 +0000").as_deref(),
            Some("task4@x.test")
        );
        // Nothing after the address: the header ends there.
        assert_eq!(
            received_for(" by h for task5@x.test").as_deref(),
            Some("task5@x.test")
        );
        // Only the first address; non-ASCII letters keep their case.
        assert_eq!(
            received_for(" by h for <ZOË@X.test>, <b@x.test>; date").as_deref(),
            Some("zoË@x.test")
        );
    }

    #[test]
    fn received_without_a_usable_for_clause() {
        for value in [
            " by mx.x.test; Mon, 01 Jan 2024 10:00:01 +0000",
            " from a (helo for <x@y.test>) by b; date",
            " from a by b (for <x@y.test>); date",
            " from a by b id <for@x.test>; for <late@x.test>",
            " from \"for <q@x.test>\" by b; date",
            " by b; Mon, 01 Jan 2024 for <date@x.test>",
            " by b for multiple recipients; date",
            " by b for <>; date",
            " by b for <unterminated@x.test",
            " by b for <a b@x.test>; date",
            " by b for <@x.test>; date",
            " by b for <a@>; date",
            " by b for ; date",
            " by b for",
            " by b for ",
            " by b forx <a@x.test>; date",
            " by b before <a@x.test>; date",
            " (unclosed comment for <a@x.test>",
            " \"unclosed quote for <a@x.test>",
            "",
            ";",
            "for",
        ] {
            assert_eq!(received_for(value), None, "{value:?}");
        }
        let long = format!(" by b for <{}@x.test>; date", "a".repeat(400));
        assert_eq!(received_for(&long), None);
        assert_eq!(received_for_address(b" by b for <\xff@x.test>; d"), None);
        assert_eq!(received_for_address(b" by b for <a\x01@x.test>; d"), None);
        // A clause beyond the bytes read is not looked for.
        let far = format!(" by b {} for <far@x.test>; date", "x".repeat(MAX_RECEIVED));
        assert_eq!(received_for(&far), None);
    }

    /// Random bytes with Received-like pieces never panic, and whatever
    /// comes out looks like an address.
    #[test]
    fn received_garbage_never_panics() {
        let mut state = 0x1234_5678_9abc_def1u64;
        let pieces: [&[u8]; 12] = [
            b"for",
            b" ",
            b"<",
            b">",
            b"(",
            b")",
            b"\\",
            b"\"",
            b";",
            b"a@x.test",
            b"\r\n\t",
            b"\xc3",
        ];
        for _ in 0..20_000 {
            let mut value = Vec::new();
            for _ in 0..(state % 24) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                value.extend_from_slice(pieces[(state % 12) as usize]);
            }
            if let Some(addr) = received_for_address(&value) {
                assert!(addr.contains('@'), "{addr:?}");
                assert!(!addr.contains(char::is_whitespace), "{addr:?}");
                assert_eq!(addr, addr.to_ascii_lowercase());
            }
        }
    }

    #[test]
    fn bcc_on_a_catch_all_names_the_task_only_in_received() {
        let m = parse(eml("\
Return-Path: <noreply@service.test>
Received: from mx.service.test (mx.service.test [192.0.2.1])
\tby mx.x.test (Postfix) with ESMTPS id 4XyZ
\tfor <Task13@X.test>; Mon, 01 Jan 2024 10:00:01 +0000
Received: from relay.service.test by mx.service.test
\tfor <someone-else@x.test>; Mon, 01 Jan 2024 10:00:00 +0000
From: a@service.test
To: undisclosed-recipients:;
Subject: bcc

body
"));
        assert_eq!(m.recipients(), ["task13@x.test"]);
        assert!(m.has_recipient("TASK13@x.test"));
        assert!(!m.has_recipient("someone-else@x.test"));
    }

    #[test]
    fn only_the_topmost_received_header_counts() {
        // The topmost has no for clause: a lower one's is not used.
        let m = parse(eml("\
Received: by mx.x.test; Mon, 01 Jan 2024 10:00:01 +0000
Received: from relay by mx for <lower@x.test>; Mon, 01 Jan 2024 10:00:00 +0000
To: a@x.test
Subject: s

body
"));
        assert_eq!(m.recipients(), ["a@x.test"]);
        // Received headers of an attached message do not count.
        let m = parse(eml("\
Received: by mx.x.test; Mon, 01 Jan 2024 10:00:01 +0000
Subject: fwd
Content-Type: message/rfc822

Received: from a by b for <inner@x.test>; Mon, 01 Jan 2024 10:00:00 +0000
Subject: inner

inner body
"));
        assert!(m.recipients().is_empty(), "{:?}", m.recipients());
    }

    #[test]
    fn received_for_comes_last_and_is_not_repeated() {
        let m = parse(eml("\
Delivered-To: Task14@x.test
Received: from a by b for <task14@X.TEST>; Mon, 01 Jan 2024 10:00:01 +0000
Received: from c by d for <never@x.test>; Mon, 01 Jan 2024 10:00:00 +0000
To: list@lists.test
Subject: s

body
"));
        assert_eq!(m.recipients(), ["list@lists.test", "task14@x.test"]);
        let m = parse(eml("\
Received: from a by b for <bcc@x.test>; Mon, 01 Jan 2024 10:00:01 +0000
To: list@lists.test
Subject: s

body
"));
        assert_eq!(m.recipients(), ["list@lists.test", "bcc@x.test"]);
    }

    #[test]
    fn recipients_order_and_dedup() {
        let m = parse(eml("\
Envelope-To: env@x.test
X-Forwarded-To: fwd@x.test, other@x.test
X-Original-To: orig@x.test
Delivered-To: A@x.test
Cc: \"Copy\" <cc@x.test>, a@X.TEST
To: a@x.test
To: Team: b@x.test, c@x.test;
From: sender@service.test

body
"));
        assert_eq!(
            m.recipients(),
            [
                "a@x.test",
                "b@x.test",
                "c@x.test",
                "cc@x.test",
                "orig@x.test",
                "fwd@x.test",
                "other@x.test",
                "env@x.test",
            ]
        );
        let emails: Vec<&str> = m.to().iter().map(|a| a.email.as_str()).collect();
        assert_eq!(emails, ["a@x.test", "b@x.test", "c@x.test"]);
        assert_eq!(m.cc().len(), 2);
        assert_eq!(m.cc()[0].name.as_deref(), Some("Copy"));
    }

    #[test]
    fn display_name_with_comma() {
        let m = parse(eml("\
From: a@service.test
To: \"Task, One\" <task1@x.test>, task2@x.test
Subject: two

body
"));
        assert_eq!(
            m.to(),
            [
                Address {
                    name: Some("Task, One".into()),
                    email: "task1@x.test".into(),
                },
                Address {
                    name: None,
                    email: "task2@x.test".into(),
                },
            ]
        );
        assert_eq!(m.recipients(), ["task1@x.test", "task2@x.test"]);
        assert_eq!(m.to()[0].to_string(), "\"Task, One\" <task1@x.test>");
        assert_eq!(m.to()[1].to_string(), "task2@x.test");
    }

    #[test]
    fn address_display() {
        let a = |name: Option<&str>, email: &str| Address {
            name: name.map(str::to_owned),
            email: email.to_owned(),
        };
        assert_eq!(
            a(Some("Ann Lee"), "ann@x.test").to_string(),
            "Ann Lee <ann@x.test>"
        );
        assert_eq!(a(None, "ann@x.test").to_string(), "ann@x.test");
        assert_eq!(
            a(Some("A \"B\" C."), "abc@x.test").to_string(),
            "\"A \\\"B\\\" C.\" <abc@x.test>"
        );
    }

    #[test]
    fn odd_address_forms() {
        let m = parse(eml("\
From: Mailer Daemon
To: Weird Name weird@x.test
Cc:   spaced@x.test  , <angle@x.test>
Subject: odd

body
"));
        assert_eq!(
            m.from(),
            [Address {
                name: Some("Mailer Daemon".into()),
                email: String::new(),
            }]
        );
        assert_eq!(m.senders_folded(), ["mailer daemon"]);
        assert_eq!(
            m.to(),
            [Address {
                name: Some("Weird Name".into()),
                email: "weird@x.test".into(),
            }]
        );
        assert_eq!(
            m.recipients(),
            ["weird@x.test", "spaced@x.test", "angle@x.test"]
        );
    }

    #[test]
    fn first_header_wins() {
        let m = parse(eml("\
Subject: first
Subject: second
Date: Mon, 01 Jan 2024 10:00:00 +0000
Date: Tue, 02 Jan 2024 10:00:00 +0000
Message-ID: <one@x.test>
Message-ID: <two@x.test>
From: a@x.test
From: b@x.test

body
"));
        assert_eq!(m.subject(), Some("first"));
        assert_eq!(m.date(), Some(at(1_704_103_200)));
        assert_eq!(m.message_id(), Some("one@x.test"));
        assert_eq!(m.from().len(), 2);
    }

    #[test]
    fn garbage_and_empty_input() {
        for raw in [
            Vec::new(),
            b"\r\n".to_vec(),
            b"\r\n\r\n".to_vec(),
            b"\x00\xff\xfe\x80garbage\x00".to_vec(),
            b":::\r\n: \r\n\r\n".to_vec(),
            b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n".to_vec(),
            b"Content-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\n".to_vec(),
            (0..=255u8).cycle().take(5000).collect(),
        ] {
            let m = parse(raw.clone());
            assert_eq!(m.raw(), &raw[..]);
            assert!(m.recipients().is_empty());
            assert_eq!(m.subject(), None);
            assert_eq!(m.received_at(), None);
            let _ = format!("{m:?}");
        }
    }

    #[test]
    fn ten_thousand_header_lines() {
        let mut raw = String::new();
        for i in 0..10_000 {
            raw.push_str(&format!("X-Spam-{i}: value {i}\r\n"));
        }
        raw.push_str("To: task11@x.test\r\nSubject: deep\r\n\r\nbody\r\n");
        let m = parse(raw.into_bytes());
        assert_eq!(m.recipients(), ["task11@x.test"]);
        assert_eq!(m.subject(), Some("deep"));
        assert_eq!(m.text(), Some("body\r\n"));

        let mut raw = String::from("Subject: many\r\n");
        for i in 0..10_000 {
            raw.push_str(&format!("Delivered-To: t{i}@x.test\r\n"));
        }
        raw.push_str("\r\nbody\r\n");
        let m = parse(raw.into_bytes());
        assert_eq!(m.recipients().len(), 10_000);
        assert_eq!(m.recipients()[9_999], "t9999@x.test");
    }

    #[test]
    fn truncated_message_keeps_what_it_has() {
        let mut raw = eml("\
From: a@service.test
To: task12@x.test
Subject: big
Content-Type: multipart/mixed; boundary=b

--b
Content-Type: text/plain

code 123123
--b
Content-Type: application/pdf
Content-Transfer-Encoding: base64

JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFIvRmlsdGVyIC9GbGF0ZURlY29k
");
        raw.truncate(raw.len() - 20);
        let m = Mail::parse(1, 1, "INBOX", None, raw, true);
        assert!(m.is_truncated());
        assert_eq!(m.text(), Some("code 123123"));
        assert_eq!(m.recipients(), ["task12@x.test"]);
    }

    /// Mutates realistic messages at random (deterministically) and checks
    /// that parsing never panics, whatever comes out.
    #[test]
    fn mutated_messages_never_panic() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seeds = [
            eml(VERIFICATION),
            eml(
                "Content-Type: multipart/alternative; boundary=b\n\n--b\nContent-Type: text/plain\nContent-Transfer-Encoding: base64\n\nQm9u\n--b\nContent-Type: message/rfc822\n\nSubject: =?utf-8?q?x=C3?=\n\n--b--\n",
            ),
        ];
        for _ in 0..2_000 {
            let mut raw = seeds[(rand() % 2) as usize].clone();
            for _ in 0..(rand() % 8 + 1) {
                let len = raw.len() as u64;
                let pos = (rand() % len.max(1)) as usize;
                match rand() % 4 {
                    0 => {
                        if let Some(b) = raw.get_mut(pos) {
                            *b = rand() as u8;
                        }
                    }
                    1 => {
                        raw.truncate(pos);
                    }
                    2 => {
                        let bytes = [b"\r\n".as_slice(), b"--b", b"=?", b"<", b"\"", b":", b";"];
                        let ins = bytes[(rand() % 7) as usize];
                        raw.splice(pos..pos, ins.iter().copied());
                    }
                    _ => {
                        raw.drain(pos..(pos + 10).min(raw.len()));
                    }
                }
            }
            let m = parse(raw.clone());
            assert_eq!(m.raw(), &raw[..]);
            // The bodies are decoded lazily: decode them too.
            let _ = (m.text(), m.html());
        }
    }

    /// Parsing reads the header block only; the bodies are decoded on the
    /// first call that needs them, once, and every later call (from any
    /// holder of the shared `Arc`, on any thread) gets that same result.
    #[test]
    fn bodies_are_decoded_once_on_first_use() {
        let raw = eml(VERIFICATION);
        let m = std::sync::Arc::new(parse(raw));
        assert_eq!(m.recipients(), ["task1@x.test", "catchall@x.test"]);
        assert_eq!(m.subject(), Some("Verify your email address"));
        let filter = crate::Filter::new()
            .to("task1@x.test")
            .subject_contains("verify")
            .from_contains("service");
        assert!(filter.matches(&m, SystemTime::now()));
        let _ = format!("{m:?}");
        assert!(
            !m.bodies_decoded(),
            "routing, filtering or Debug decoded the body"
        );

        let texts: Vec<usize> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let m = m.clone();
                    s.spawn(move || m.text().map_or(0, |t| t.as_ptr() as usize))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).collect()
        });
        assert!(m.bodies_decoded());
        assert_ne!(texts[0], 0);
        assert!(
            texts.iter().all(|&p| p == texts[0]),
            "decoded more than once"
        );
        assert_eq!(m.text().map(str::as_ptr), Some(texts[0] as *const u8));
        assert_eq!(
            m.text(),
            Some("Hello,\r\n\r\nYour verification code is 482913.\r\n")
        );
        // A clone made after decoding keeps the result.
        let c = (*m).clone();
        assert!(c.bodies_decoded());
        assert_eq!(c.text(), m.text());
    }

    /// The lazy decode (headers first, bodies on demand) gives, for every
    /// shape the tests above use, the headers and bodies the mail holds:
    /// literal values, not a second pass of the same parser.
    #[test]
    fn lazy_bodies_equal_a_full_parse() {
        struct Shape {
            raw: Vec<u8>,
            text: Option<&'static str>,
            html: Option<&'static str>,
            subject: Option<&'static str>,
            message_id: Option<&'static str>,
            from: Vec<Address>,
            to: Vec<Address>,
            recipients: &'static [&'static str],
        }
        let address = |name: Option<&str>, email: &str| Address {
            name: name.map(str::to_owned),
            email: email.to_owned(),
        };
        let shapes = [
            Shape {
                raw: eml(VERIFICATION),
                text: Some("Hello,\r\n\r\nYour verification code is 482913.\r\n"),
                html: None,
                subject: Some("Verify your email address"),
                message_id: Some("20240101100000.1234@service.test"),
                from: vec![address(Some("Service Team"), "NoReply@Service.test")],
                to: vec![address(None, "Task1@X.test")],
                recipients: &["task1@x.test", "catchall@x.test"],
            },
            Shape {
                raw: eml(
                    "From: shop@service.test\nTo: Task2@X.test\nDelivered-To: catchall@x.test\nSubject: Confirm\nMessage-ID: <c1@service.test>\nContent-Type: text/html\n\n<p>Hi <b>there</b> 123456</p>\n",
                ),
                text: Some("Hi there 123456\n"),
                html: Some("<p>Hi <b>there</b> 123456</p>\r\n"),
                subject: Some("Confirm"),
                message_id: Some("c1@service.test"),
                from: vec![address(None, "shop@service.test")],
                to: vec![address(None, "Task2@X.test")],
                recipients: &["task2@x.test", "catchall@x.test"],
            },
            Shape {
                raw: eml(
                    "From: Bot <bot@service.test>\nTo: a@x.test, B <b@x.test>\nCc: c@x.test\nSubject: Both\nMessage-ID: <m1@service.test>\nContent-Type: multipart/alternative; boundary=b\n\n--b\nContent-Type: text/plain\n\nplain 1\n--b\nContent-Type: text/html\n\n<p>html 1</p>\n--b--\n",
                ),
                text: Some("plain 1"),
                html: Some("<p>html 1</p>"),
                subject: Some("Both"),
                message_id: Some("m1@service.test"),
                from: vec![address(Some("Bot"), "bot@service.test")],
                to: vec![address(None, "a@x.test"), address(Some("B"), "b@x.test")],
                recipients: &["a@x.test", "b@x.test", "c@x.test"],
            },
            Shape {
                raw: b"\x00\xff garbage".to_vec(),
                text: None,
                html: None,
                subject: None,
                message_id: None,
                from: Vec::new(),
                to: Vec::new(),
                recipients: &[],
            },
            Shape {
                raw: Vec::new(),
                text: None,
                html: None,
                subject: None,
                message_id: None,
                from: Vec::new(),
                to: Vec::new(),
                recipients: &[],
            },
        ];
        for (i, want) in shapes.into_iter().enumerate() {
            let m = parse(want.raw);
            // The header block alone, before any body is decoded.
            assert!(!m.bodies_decoded(), "shape {i}");
            assert_eq!(m.subject(), want.subject, "shape {i}");
            assert_eq!(m.message_id(), want.message_id, "shape {i}");
            assert_eq!(m.from(), want.from, "shape {i}");
            assert_eq!(m.to(), want.to, "shape {i}");
            assert_eq!(m.recipients(), want.recipients, "shape {i}");
            // Then the bodies, on demand.
            assert_eq!(m.text(), want.text, "shape {i}");
            assert_eq!(m.html(), want.html, "shape {i}");
        }
    }

    #[test]
    fn debug_does_not_dump_the_body() {
        let m = parse(eml(VERIFICATION));
        let d = format!("{m:?}");
        assert!(d.contains("uid: 7"), "{d}");
        assert!(d.contains("Verify your email address"), "{d}");
        assert!(d.contains("NoReply@Service.test"), "{d}");
        assert!(d.contains("raw_len"), "{d}");
        assert!(!d.contains("482913"), "{d}");
    }

    #[test]
    fn mail_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Mail>();
        check::<Address>();
        let m = parse(eml(VERIFICATION));
        let c = m.clone();
        assert_eq!(c.subject(), m.subject());
        assert_eq!(c.raw(), m.raw());
    }

    #[test]
    fn internal_date_values() {
        // 1996-07-17 09:44:25 UTC
        assert_eq!(
            parse_internal_date("17-Jul-1996 02:44:25 -0700"),
            Some(at(837_596_665))
        );
        assert_eq!(
            parse_internal_date("17-Jul-1996 11:14:25 +0130"),
            Some(at(837_596_665))
        );
        assert_eq!(
            parse_internal_date("17-JUL-1996 09:44:25 +0000"),
            Some(at(837_596_665))
        );
        // Space-padded day.
        assert_eq!(
            parse_internal_date(" 7-Jul-1996 02:44:25 +0000"),
            Some(at(836_707_465))
        );
        assert_eq!(
            parse_internal_date("01-Jan-2024 00:00:00 +0000"),
            Some(at(1_704_067_200))
        );
    }

    #[test]
    fn internal_date_invalid_values() {
        for bad in [
            "",
            " ",
            "99-Foo-2020 00:00:00 +0000",
            "01-Foo-2020 00:00:00 +0000",
            "99-Jan-2020 00:00:00 +0000",
            "31-Apr-2020 00:00:00 +0000",
            "01-Jan-2020",
            "01-Jan-2020 00:00:00",
            "01-Jan-99999999999999999999 00:00:00 +0000",
            "99999999999999999999-Jan-2020 00:00:00 +0000",
            "01-Jan-2020 99999999999999999999:00:00 +0000",
            "01-Jan-2020 00:00:00 +99999999999999999999",
            "01-Jan-2020 00:00:00 +9999",
            "01-Jan-2020 -1:00:00 +0000",
            "Mon, 01 Jan 2024 10:00:00 +0000",
        ] {
            assert_eq!(parse_internal_date(bad), None, "{bad:?}");
        }
    }
}
