//! The incremental IMAP response parser (client side, RFC 3501 and RFC 9051).
//!
//! A server's bytes arrive in arbitrary chunks; this module turns them into
//! typed [`Response`]s while bounding memory whatever the server sends. It
//! exists so that the connection code only moves bytes and everything that
//! can go wrong with hostile or broken servers is decided here, in pure,
//! fuzzable code.
//!
//! # Two stages
//! 1. **Framing** finds where one complete response ends. It keeps a scan
//!    position and a state (inside a line, or inside a literal with `n`
//!    bytes still to skip), so each call to [`Parser::next`] looks only at
//!    bytes it has not seen before: asking again without new bytes is O(1)
//!    and a response fed one byte at a time gives exactly what it gives when
//!    fed whole. A line whose last token (before CRLF) is `{n}`, `{n+}`
//!    (LITERAL+) or `~{n}` (BINARY) announces a literal: the next `n` bytes
//!    belong to the response whatever they are. The size limits are checked
//!    here, before bytes pile up (see [`Limits`]).
//! 2. **Parsing** runs once on each complete frame and builds the typed
//!    value. Lists are walked with an explicit depth counter bounded by
//!    [`MAX_DEPTH`], never by unbounded recursion.
//!
//! # Leniency (documented choices)
//! - Lines may end with a bare LF; a CR just before the LF is stripped.
//! - A tagged or status response without text (`a1 OK\r\n`) has text `""`.
//! - A known response code with a malformed argument (`[UIDNEXT abc]`)
//!   becomes [`Code::Other`] with its raw argument instead of failing the
//!   whole response. A `[` that is never closed on the line is plain text.
//! - Any untagged response that is not typed becomes [`Data::Other`] with
//!   its upper-cased keyword; the rest of it is not examined, so it is never
//!   an error (its literals were already delimited by framing).
//! - In a continuation (`+ ...`) a trailing `{n}` does not announce a
//!   literal: the grammar has none there.
//! - Text is decoded lossily; NUL bytes in text are kept. NUL and other
//!   control bytes are refused in atoms and quoted strings.
//! - Inside quoted strings, `\` escapes any following byte.
//!
//! # Errors
//! [`ProtoError::Syntax`] consumes the offending frame; the stream stays in
//! sync and [`Parser::next`] may be called again. Every other error
//! ([`ProtoError::LineTooLong`], [`ProtoError::LiteralTooLarge`],
//! [`ProtoError::ResponseTooLarge`], [`ProtoError::TooDeep`]) poisons the
//! parser: its buffer is released, later input is ignored and every later
//! [`Parser::next`] returns the same error, matching
//! [`ProtoError::is_recoverable`].

// Hostile input must never panic: no indexing, no unwrap outside tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use std::time::{Duration, SystemTime};

use super::date::{days_from_civil, days_in_month};
use super::error::{Excerpt, ProtoError};
use super::types::{
    Code, Condition, Data, ESearch, Fetch, FetchItem, ListEntry, Response, Status, Tagged,
    decode_mailbox_name,
};

/// The deepest nesting of parenthesised lists accepted in one response.
pub const MAX_DEPTH: usize = 32;

/// Size limits that bound the parser's memory whatever the server sends.
///
/// After [`Parser::next`] returns `Ok(None)`, at most
/// `max_line + max_literal` bytes are buffered (plus whatever was fed since).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest line accepted, in bytes (the text of one response outside
    /// its literals, summed over its lines, line endings included). Default
    /// 64 KiB. A line that passes it fails as soon as that many bytes are
    /// buffered, even before it ends.
    pub max_line: usize,
    /// The largest literal accepted, in bytes; also the most literal bytes
    /// one response may carry in total. Default 32 MiB. A larger literal is
    /// refused when announced, before any of it is buffered.
    pub max_literal: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line: 64 * 1024,
            max_literal: 32 * 1024 * 1024,
        }
    }
}

/// Where framing is inside the current response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameState {
    /// Scanning a line for its LF.
    Line,
    /// Skipping literal bytes; this many remain.
    Literal(u64),
}

/// Consumed bytes at the front of the buffer are dropped once there are at
/// least this many and they make up at least half of it.
const COMPACT_MIN: usize = 8 * 1024;

/// Capacity kept after a large response has been consumed.
const KEEP_CAPACITY: usize = 64 * 1024;

/// The incremental response parser.
///
/// Feed it bytes with [`Parser::feed`], then call [`Parser::next`] until it
/// returns `Ok(None)`.
#[derive(Debug)]
pub struct Parser {
    limits: Limits,
    /// Received bytes; `buf[..start]` is already consumed.
    buf: Vec<u8>,
    /// Start of the current (incomplete) frame.
    start: usize,
    /// First byte framing has not looked at yet.
    scan: usize,
    /// Start of the current line segment (the frame start, or just after a
    /// literal), for recognising a literal announcement at its end.
    line_start: usize,
    state: FrameState,
    /// Non-literal bytes of the current frame seen so far.
    line_bytes: usize,
    /// Literal bytes announced by the current frame so far.
    literal_bytes: u64,
    /// Set by a non-recoverable error, returned by every later `next`.
    poisoned: Option<ProtoError>,
    /// Bytes framing has stepped over, to test that it never re-scans.
    #[cfg(test)]
    scanned: usize,
}

impl Parser {
    /// A parser with the given limits.
    pub fn new(limits: Limits) -> Self {
        Parser {
            limits,
            buf: Vec::new(),
            start: 0,
            scan: 0,
            line_start: 0,
            state: FrameState::Line,
            line_bytes: 0,
            literal_bytes: 0,
            poisoned: None,
            #[cfg(test)]
            scanned: 0,
        }
    }

    /// The limits this parser enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Appends bytes received from the server. Ignored once the parser is
    /// poisoned by a non-recoverable error.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.poisoned.is_none() {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// How many received bytes are buffered and not yet returned as part of
    /// a response.
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.start)
    }

    /// The error that poisoned this parser, if any.
    pub fn poisoned(&self) -> Option<&ProtoError> {
        self.poisoned.as_ref()
    }

    /// The next complete response, `Ok(None)` when more bytes are needed.
    ///
    /// After [`ProtoError::Syntax`] the bad response has been consumed and
    /// the caller may go on calling `next`; every other error is returned
    /// again by every later call.
    #[allow(
        clippy::should_implement_trait,
        reason = "fallible, so not an Iterator"
    )]
    pub fn next(&mut self) -> Result<Option<Response>, ProtoError> {
        if let Some(e) = &self.poisoned {
            return Err(e.clone());
        }
        let end = match self.frame() {
            Ok(Some(end)) => end,
            Ok(None) => return Ok(None),
            Err(e) => return Err(self.poison(e)),
        };
        let result = {
            let frame = self.buf.get(self.start..end).unwrap_or_default();
            parse_frame(frame).map_err(|e| match e {
                PErr::Syntax(reason) => ProtoError::Syntax {
                    reason,
                    excerpt: Excerpt::new(frame),
                },
                PErr::TooDeep => ProtoError::TooDeep { limit: MAX_DEPTH },
            })
        };
        self.consume(end);
        match result {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.is_recoverable() => Err(e),
            Err(e) => Err(self.poison(e)),
        }
    }

    /// Records a non-recoverable error and releases the buffer.
    fn poison(&mut self, e: ProtoError) -> ProtoError {
        self.poisoned = Some(e.clone());
        self.buf = Vec::new();
        self.start = 0;
        self.scan = 0;
        self.line_start = 0;
        self.state = FrameState::Line;
        e
    }

    /// Drops the frame ending at `end` and resets the framing state.
    fn consume(&mut self, end: usize) {
        self.start = end;
        self.scan = end;
        self.line_start = end;
        self.state = FrameState::Line;
        self.line_bytes = 0;
        self.literal_bytes = 0;
        if self.start >= self.buf.len() {
            self.buf.clear();
            if self.buf.capacity() > KEEP_CAPACITY.max(self.limits.max_line) {
                self.buf.shrink_to(KEEP_CAPACITY);
            }
        } else if self.start >= COMPACT_MIN && self.start >= self.buf.len() / 2 {
            // Amortised O(1) per byte: at most as many bytes are moved as
            // were consumed since the last compaction.
            self.buf.drain(..self.start);
        } else {
            return;
        }
        self.start = 0;
        self.scan = 0;
        self.line_start = 0;
    }

    /// Advances framing over the bytes not yet scanned. Returns the end of
    /// the current frame once it is complete.
    fn frame(&mut self) -> Result<Option<usize>, ProtoError> {
        loop {
            match self.state {
                FrameState::Literal(remaining) => {
                    let available = self.buf.len().saturating_sub(self.scan);
                    let take = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(available);
                    self.scan += take;
                    #[cfg(test)]
                    {
                        self.scanned += take;
                    }
                    let remaining = remaining.saturating_sub(take as u64);
                    if remaining > 0 {
                        self.state = FrameState::Literal(remaining);
                        return Ok(None);
                    }
                    self.state = FrameState::Line;
                    self.line_start = self.scan;
                }
                FrameState::Line => {
                    let rest = self.buf.get(self.scan..).unwrap_or_default();
                    let lf = rest.iter().position(|&b| b == b'\n');
                    #[cfg(test)]
                    {
                        self.scanned += lf.map_or(rest.len(), |i| i + 1);
                    }
                    let Some(lf) = lf else {
                        self.line_bytes = self.line_bytes.saturating_add(rest.len());
                        self.scan = self.buf.len();
                        return if self.line_bytes > self.limits.max_line {
                            Err(ProtoError::LineTooLong {
                                limit: self.limits.max_line,
                            })
                        } else {
                            Ok(None)
                        };
                    };
                    self.line_bytes = self.line_bytes.saturating_add(lf + 1);
                    let lf = self.scan + lf;
                    self.scan = lf + 1;
                    if self.line_bytes > self.limits.max_line {
                        return Err(ProtoError::LineTooLong {
                            limit: self.limits.max_line,
                        });
                    }
                    let is_continuation = self.buf.get(self.start) == Some(&b'+');
                    let line = self.buf.get(self.line_start..lf).unwrap_or_default();
                    let announced = if is_continuation {
                        None
                    } else {
                        literal_announcement(line)
                    };
                    let Some(size) = announced else {
                        return Ok(Some(self.scan));
                    };
                    let limit = self.limits.max_literal;
                    if size > limit as u64 {
                        return Err(ProtoError::LiteralTooLarge { size, limit });
                    }
                    self.literal_bytes = self.literal_bytes.saturating_add(size);
                    if self.literal_bytes > limit as u64 {
                        return Err(ProtoError::ResponseTooLarge { limit });
                    }
                    // `size` is within the limit here: make room once instead
                    // of doubling (and copying) repeatedly as it arrives.
                    let size_usize = usize::try_from(size).unwrap_or(limit);
                    let available = self.buf.len().saturating_sub(self.scan);
                    self.buf.reserve_exact(size_usize.saturating_sub(available));
                    self.state = FrameState::Literal(size);
                    self.line_start = self.scan;
                }
            }
        }
    }
}

/// If `line` (without its LF) ends with `{n}` or `{n+}` (an optional CR
/// after it), the announced size `n`; saturates at `u64::MAX` so that an
/// absurd size is refused by the limit check instead of overflowing.
fn literal_announcement(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = line.strip_suffix(b"}")?;
    let line = line.strip_suffix(b"+").unwrap_or(line);
    let digits_from = line
        .iter()
        .rposition(|b| !b.is_ascii_digit())
        .map_or(0, |i| i + 1);
    let (head, digits) = line.split_at_checked(digits_from)?;
    if digits.is_empty() || head.last() != Some(&b'{') {
        return None;
    }
    Some(digits.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// An error of the parse stage, turned into a [`ProtoError`] by the caller
/// (which has the frame for the excerpt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PErr {
    Syntax(&'static str),
    TooDeep,
}

type PResult<T> = Result<T, PErr>;

/// Parses one complete frame.
fn parse_frame(frame: &[u8]) -> PResult<Response> {
    let mut c = Cursor::new(frame);
    match c.peek() {
        Some(b'+') => {
            c.pos += 1;
            c.eat(b' ');
            Ok(Response::Continuation(c.rest_of_line().to_vec()))
        }
        Some(b'*') => {
            c.pos += 1;
            c.expect(b' ', "expected SP after *")?;
            parse_untagged(&mut c).map(Response::Untagged)
        }
        Some(_) => parse_tagged(&mut c).map(Response::Tagged),
        None => Err(PErr::Syntax("empty response")),
    }
}

fn parse_tagged(c: &mut Cursor<'_>) -> PResult<Tagged> {
    let tag = c.take_while(is_tag_char);
    if tag.is_empty() {
        return Err(PErr::Syntax("expected a tag"));
    }
    let tag = lossy(tag);
    c.expect(b' ', "expected SP after tag")?;
    let word = c.atom()?.to_ascii_uppercase();
    let status = match word.as_slice() {
        b"OK" => Status::Ok,
        b"NO" => Status::No,
        b"BAD" => Status::Bad,
        _ => return Err(PErr::Syntax("expected OK, NO or BAD after tag")),
    };
    let (code, text) = parse_resp_text(c)?;
    Ok(Tagged {
        tag,
        status,
        code,
        text,
    })
}

fn parse_untagged(c: &mut Cursor<'_>) -> PResult<Data> {
    if c.peek().is_some_and(|b| b.is_ascii_digit()) {
        let digits = c.take_while(|b| b.is_ascii_digit());
        c.expect(b' ', "expected SP after number")?;
        let keyword = c.atom()?.to_ascii_uppercase();
        let number = || parse_u32(digits).ok_or(PErr::Syntax("message number out of range"));
        let data = match keyword.as_slice() {
            b"EXISTS" => Data::Exists(number()?),
            b"EXPUNGE" => Data::Expunge(number()?),
            b"RECENT" => Data::Recent(number()?),
            b"FETCH" => {
                let seq = number()?;
                c.expect(b' ', "expected SP after FETCH")?;
                Data::Fetch(Fetch {
                    seq,
                    items: parse_fetch_items(c)?,
                })
            }
            _ => return Ok(Data::Other(lossy(&keyword))),
        };
        c.finish()?;
        return Ok(data);
    }
    let keyword = c.atom()?.to_ascii_uppercase();
    let condition = match keyword.as_slice() {
        b"OK" => Some(Condition::Ok),
        b"NO" => Some(Condition::No),
        b"BAD" => Some(Condition::Bad),
        b"BYE" => Some(Condition::Bye),
        b"PREAUTH" => Some(Condition::Preauth),
        _ => None,
    };
    if let Some(condition) = condition {
        let (code, text) = parse_resp_text(c)?;
        return Ok(Data::Status {
            condition,
            code,
            text,
        });
    }
    let data = match keyword.as_slice() {
        b"CAPABILITY" => Data::Capability(split_upper(c.take_while(|b| b != b'\r' && b != b'\n'))),
        b"FLAGS" => {
            c.expect(b' ', "expected SP after FLAGS")?;
            Data::Flags(c.flag_list()?)
        }
        b"SEARCH" => parse_search(c)?,
        b"ESEARCH" => Data::ESearch(parse_esearch(c)?),
        b"STATUS" => parse_status(c)?,
        b"LIST" => Data::List(parse_list(c)?),
        _ => return Ok(Data::Other(lossy(&keyword))),
    };
    c.finish()?;
    Ok(data)
}

/// `[SP] ["[" code "]" [SP]] text` up to the end of the first line. The
/// rest of the frame, if any (a stray literal), is ignored.
fn parse_resp_text(c: &mut Cursor<'_>) -> PResult<(Option<Code>, String)> {
    match c.peek() {
        Some(b' ') => c.pos += 1,
        Some(b'\r' | b'\n') | None => {}
        Some(_) => return Err(PErr::Syntax("expected SP after status")),
    }
    let line = c.rest_of_line();
    let mut code = None;
    let mut text = line;
    if let Some(inner) = line.strip_prefix(b"[")
        && let Some((arg, after)) = find_code_end(inner).and_then(|i| inner.split_at_checked(i))
    {
        code = Some(parse_code(arg));
        let after = after.get(1..).unwrap_or_default();
        text = after.strip_prefix(b" ").unwrap_or(after);
    }
    Ok((code, lossy(text)))
}

/// The index of the `]` that closes a response code, skipping quoted
/// strings.
fn find_code_end(s: &[u8]) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, &b) in s.iter().enumerate() {
        if quoted {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                quoted = false;
            }
        } else if b == b'"' {
            quoted = true;
        } else if b == b']' {
            return Some(i);
        }
    }
    None
}

/// Parses the text between `[` and `]`. A known code with a malformed
/// argument becomes [`Code::Other`].
fn parse_code(s: &[u8]) -> Code {
    let (name, arg) = match s.iter().position(|&b| b == b' ') {
        Some(i) => (
            s.get(..i).unwrap_or_default(),
            s.get(i + 1..).filter(|a| !a.is_empty()),
        ),
        None => (s, None),
    };
    let name = name.to_ascii_uppercase();
    let typed = match name.as_slice() {
        b"ALERT" => Some(Code::Alert),
        b"AUTHENTICATIONFAILED" => Some(Code::AuthenticationFailed),
        b"AUTHORIZATIONFAILED" => Some(Code::AuthorizationFailed),
        b"UNAVAILABLE" => Some(Code::Unavailable),
        b"LIMIT" => Some(Code::Limit),
        b"READ-ONLY" => Some(Code::ReadOnly),
        b"READ-WRITE" => Some(Code::ReadWrite),
        b"CLOSED" => Some(Code::Closed),
        b"CAPABILITY" => Some(Code::Capability(split_upper(arg.unwrap_or_default()))),
        b"UIDNEXT" => arg.and_then(parse_u32).map(Code::UidNext),
        b"UIDVALIDITY" => arg.and_then(parse_u32).map(Code::UidValidity),
        b"HIGHESTMODSEQ" => arg.and_then(parse_u64).map(Code::HighestModSeq),
        b"PERMANENTFLAGS" => arg.and_then(|a| {
            let mut c = Cursor::new(a);
            let flags = c.flag_list().ok()?;
            c.at_end().then_some(Code::PermanentFlags(flags))
        }),
        _ => None,
    };
    typed.unwrap_or_else(|| Code::Other {
        name: lossy(&name),
        arg: arg.map(lossy),
    })
}

/// `(item SP value ...)` of a FETCH response.
fn parse_fetch_items(c: &mut Cursor<'_>) -> PResult<Vec<FetchItem>> {
    c.expect(b'(', "expected ( after FETCH")?;
    let mut items = Vec::new();
    loop {
        c.skip_spaces();
        if c.eat(b')') {
            return Ok(items);
        }
        if !items.is_empty() && !c.prev_is_space() {
            return Err(PErr::Syntax("expected SP between FETCH items"));
        }
        let name = c.take_while(is_item_name_char).to_ascii_uppercase();
        if name.is_empty() {
            return Err(PErr::Syntax("expected a FETCH item name"));
        }
        let section = if c.eat(b'[') {
            let inner = c.take_while(|b| b != b']' && b != b'\r' && b != b'\n');
            c.expect(b']', "unterminated section")?;
            Some(inner.to_ascii_uppercase())
        } else {
            None
        };
        let origin = if section.is_some() && c.eat(b'<') {
            let n = c.number_u32()?;
            c.expect(b'>', "expected > after origin")?;
            Some(n)
        } else {
            None
        };
        c.expect(b' ', "expected SP after FETCH item name")?;
        let body = |section: &[u8], data| FetchItem::Body {
            section: lossy(section),
            origin,
            data,
        };
        let item = match (name.as_slice(), &section) {
            (b"UID", None) => FetchItem::Uid(c.number_u32()?),
            (b"RFC822.SIZE", None) => FetchItem::Rfc822Size(c.number_u32()?),
            (b"INTERNALDATE", None) => FetchItem::InternalDate(lossy(&c.string()?)),
            (b"FLAGS", None) => FetchItem::Flags(c.flag_list()?),
            (b"MODSEQ", None) => {
                c.expect(b'(', "expected ( after MODSEQ")?;
                let n = c.number_u64()?;
                c.expect(b')', "expected ) after MODSEQ value")?;
                FetchItem::ModSeq(n)
            }
            (b"RFC822", None) => body(b"", c.nstring()?),
            (b"RFC822.HEADER", None) => body(b"HEADER", c.nstring()?),
            (b"RFC822.TEXT", None) => body(b"TEXT", c.nstring()?),
            (b"BODY" | b"BINARY", Some(section)) => body(section, c.nstring()?),
            _ => {
                c.skip_value()?;
                FetchItem::Other(lossy(&name))
            }
        };
        items.push(item);
    }
}

/// `* SEARCH n n n [(MODSEQ n)]`.
fn parse_search(c: &mut Cursor<'_>) -> PResult<Data> {
    let mut numbers = Vec::new();
    loop {
        c.skip_spaces();
        match c.peek() {
            Some(b'(') => c.skip_value()?,
            Some(b) if b.is_ascii_digit() => numbers.push(c.number_u32()?),
            _ => return Ok(Data::Search(numbers)),
        }
    }
}

/// `* ESEARCH [(TAG "t")] [UID] (name value)*`.
fn parse_esearch(c: &mut Cursor<'_>) -> PResult<ESearch> {
    let mut es = ESearch::default();
    c.skip_spaces();
    if c.eat(b'(') {
        loop {
            c.skip_spaces();
            if c.eat(b')') {
                break;
            }
            let key = c.atom()?.to_ascii_uppercase();
            c.expect(b' ', "expected SP in search correlator")?;
            if key == b"TAG" {
                es.tag = Some(lossy(&c.astring()?));
            } else {
                c.skip_value()?;
            }
        }
    }
    loop {
        c.skip_spaces();
        if c.at_line_end() {
            return Ok(es);
        }
        let name = c.atom()?.to_ascii_uppercase();
        if name == b"UID" {
            es.uid = true;
            continue;
        }
        c.expect(b' ', "expected SP after ESEARCH return item")?;
        match name.as_slice() {
            b"MIN" => es.min = Some(c.number_u32()?),
            b"MAX" => es.max = Some(c.number_u32()?),
            b"COUNT" => es.count = Some(c.number_u32()?),
            b"ALL" => es.all = parse_sequence_set(c.atom()?)?,
            _ => c.skip_value()?,
        }
    }
}

/// `1:3,5` as inclusive ranges, low end first. `*` is refused.
fn parse_sequence_set(s: &[u8]) -> PResult<Vec<(u32, u32)>> {
    let bad = PErr::Syntax("malformed sequence set");
    s.split(|&b| b == b',')
        .map(|part| {
            let mut ends = part.splitn(2, |&b| b == b':');
            let a = ends.next().and_then(parse_u32).ok_or(bad)?;
            let b = match ends.next() {
                Some(b) => parse_u32(b).ok_or(bad)?,
                None => a,
            };
            Ok((a.min(b), a.max(b)))
        })
        .collect()
}

/// `* STATUS mailbox (name n ...)`. Items whose value is not a number are
/// skipped.
fn parse_status(c: &mut Cursor<'_>) -> PResult<Data> {
    c.expect(b' ', "expected SP after STATUS")?;
    let mailbox = lossy(&c.astring()?);
    c.expect(b' ', "expected SP after mailbox")?;
    c.skip_spaces();
    c.expect(b'(', "expected ( in STATUS")?;
    let mut items = Vec::new();
    loop {
        c.skip_spaces();
        if c.eat(b')') {
            return Ok(Data::MailboxStatus { mailbox, items });
        }
        let name = lossy(&c.atom()?.to_ascii_uppercase());
        c.expect(b' ', "expected SP after STATUS item")?;
        if c.peek().is_some_and(|b| b.is_ascii_digit()) {
            items.push((name, c.number_u64()?));
        } else {
            c.skip_value()?;
        }
    }
}

/// `* LIST (attributes) delimiter mailbox [SP extended-data]` (RFC 3501
/// §7.2.2, RFC 5258 §3). The delimiter is a quoted character or NIL; the
/// name an atom (leniently with `%`, `*` and `]`), a quoted string or a
/// literal. RFC 5258's extended data after the name (`("CHILDINFO"
/// ("SUBSCRIBED"))`, `("OLDNAME" ("x"))`) is skipped, each item bounded by
/// [`MAX_DEPTH`].
fn parse_list(c: &mut Cursor<'_>) -> PResult<ListEntry> {
    c.expect(b' ', "expected SP after LIST")?;
    let attributes = c.flag_list()?;
    c.expect(b' ', "expected SP after LIST attributes")?;
    let delimiter = match c.nstring()? {
        None => None,
        Some(d) => match d.as_slice() {
            [b] if b.is_ascii() && *b != 0 => Some(char::from(*b)),
            _ => return Err(PErr::Syntax("LIST delimiter is not one character")),
        },
    };
    c.expect(b' ', "expected SP after LIST delimiter")?;
    let raw_name = c.mailbox()?;
    loop {
        c.skip_spaces();
        if c.at_line_end() {
            break;
        }
        c.skip_value()?;
    }
    let name = decode_mailbox_name(&raw_name);
    Ok(ListEntry {
        attributes,
        delimiter,
        raw_name,
        name,
    })
}

/// A position in one complete frame.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(b: &'a [u8]) -> Self {
        Cursor { b, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<u8> {
        self.b.get(self.pos.saturating_add(ahead)).copied()
    }

    fn rest(&self) -> &'a [u8] {
        self.b.get(self.pos..).unwrap_or_default()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.b.len()
    }

    fn prev_is_space(&self) -> bool {
        self.pos.checked_sub(1).and_then(|i| self.b.get(i)) == Some(&b' ')
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, byte: u8, reason: &'static str) -> PResult<()> {
        if self.eat(byte) {
            Ok(())
        } else {
            Err(PErr::Syntax(reason))
        }
    }

    fn skip_spaces(&mut self) {
        while self.eat(b' ') {}
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let rest = self.rest();
        let n = rest.iter().position(|&b| !f(b)).unwrap_or(rest.len());
        self.pos += n;
        rest.get(..n).unwrap_or_default()
    }

    /// Whether the cursor is at CRLF, LF or the end of the frame.
    fn at_line_end(&self) -> bool {
        match self.peek() {
            None | Some(b'\n') => true,
            Some(b'\r') => self.peek_at(1) == Some(b'\n'),
            _ => false,
        }
    }

    /// Consumes a line ending (CRLF or bare LF).
    fn line_end(&mut self) -> PResult<()> {
        self.eat(b'\r');
        self.expect(b'\n', "expected end of line")
    }

    /// The bytes up to the end of the line (CR before the LF stripped); the
    /// cursor moves past the line ending.
    fn rest_of_line(&mut self) -> &'a [u8] {
        let rest = self.rest();
        let lf = rest.iter().position(|&b| b == b'\n');
        let line = lf.and_then(|i| rest.get(..i)).unwrap_or(rest);
        self.pos += lf.map_or(rest.len(), |i| i + 1);
        line.strip_suffix(b"\r").unwrap_or(line)
    }

    /// Trailing spaces, the line ending, and nothing after it.
    fn finish(&mut self) -> PResult<()> {
        self.skip_spaces();
        self.line_end()?;
        if self.at_end() {
            Ok(())
        } else {
            Err(PErr::Syntax("trailing data after response"))
        }
    }

    fn atom(&mut self) -> PResult<&'a [u8]> {
        let a = self.take_while(is_atom_char);
        if a.is_empty() {
            Err(PErr::Syntax("expected an atom"))
        } else {
            Ok(a)
        }
    }

    fn number_u32(&mut self) -> PResult<u32> {
        let d = self.take_while(|b| b.is_ascii_digit());
        parse_u32(d).ok_or(PErr::Syntax("expected a 32-bit number"))
    }

    fn number_u64(&mut self) -> PResult<u64> {
        let d = self.take_while(|b| b.is_ascii_digit());
        parse_u64(d).ok_or(PErr::Syntax("expected a 64-bit number"))
    }

    /// A quoted string or a literal (`{n}`, `{n+}`, `~{n}`).
    fn string(&mut self) -> PResult<Vec<u8>> {
        match self.peek() {
            Some(b'"') => self.quoted(),
            Some(b'{') => self.literal().map(<[u8]>::to_vec),
            Some(b'~') if self.peek_at(1) == Some(b'{') => {
                self.pos += 1;
                self.literal().map(<[u8]>::to_vec)
            }
            _ => Err(PErr::Syntax("expected a string")),
        }
    }

    /// A string or NIL.
    fn nstring(&mut self) -> PResult<Option<Vec<u8>>> {
        if self
            .rest()
            .get(..3)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"NIL"))
            && !self.peek_at(3).is_some_and(is_atom_char)
        {
            self.pos += 3;
            return Ok(None);
        }
        self.string().map(Some)
    }

    /// An atom (including `]`) or a string.
    fn astring(&mut self) -> PResult<Vec<u8>> {
        let is_string = match self.peek() {
            Some(b'"' | b'{') => true,
            Some(b'~') => self.peek_at(1) == Some(b'{'),
            _ => false,
        };
        if is_string {
            return self.string();
        }
        let a = self.take_while(|b| is_atom_char(b) || b == b']');
        if a.is_empty() {
            Err(PErr::Syntax("expected an astring"))
        } else {
            Ok(a.to_vec())
        }
    }

    /// A mailbox name in a response: an astring whose atom form may also
    /// hold the list wildcards `%` and `*` (RFC 3501's `list-mailbox`,
    /// which some servers send back unquoted).
    fn mailbox(&mut self) -> PResult<Vec<u8>> {
        if matches!(self.peek(), Some(b'"' | b'{'))
            || (self.peek() == Some(b'~') && self.peek_at(1) == Some(b'{'))
        {
            return self.string();
        }
        let a = self.take_while(|b| is_atom_char(b) || matches!(b, b']' | b'%' | b'*'));
        if a.is_empty() {
            Err(PErr::Syntax("expected a mailbox name"))
        } else {
            Ok(a.to_vec())
        }
    }

    fn quoted(&mut self) -> PResult<Vec<u8>> {
        self.expect(b'"', "expected a quoted string")?;
        let mut out = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                return Err(PErr::Syntax("unterminated quoted string"));
            };
            self.pos += 1;
            match b {
                b'"' => return Ok(out),
                b'\\' => match self.peek() {
                    Some(e) if !matches!(e, b'\r' | b'\n' | 0) => {
                        self.pos += 1;
                        out.push(e);
                    }
                    _ => return Err(PErr::Syntax("bad escape in quoted string")),
                },
                b'\r' | b'\n' | 0 => return Err(PErr::Syntax("unterminated quoted string")),
                _ => out.push(b),
            }
        }
    }

    /// `{n}` or `{n+}`, a line ending, then exactly `n` bytes.
    fn literal(&mut self) -> PResult<&'a [u8]> {
        self.expect(b'{', "expected a literal")?;
        let n = self.take_while(|b| b.is_ascii_digit());
        let n = parse_u64(n).ok_or(PErr::Syntax("bad literal size"))?;
        self.eat(b'+');
        self.expect(b'}', "expected } in literal")?;
        self.line_end()?;
        let n = usize::try_from(n).map_err(|_| PErr::Syntax("literal too large"))?;
        let end = self
            .pos
            .checked_add(n)
            .ok_or(PErr::Syntax("literal too large"))?;
        let data = self
            .b
            .get(self.pos..end)
            .ok_or(PErr::Syntax("truncated literal"))?;
        self.pos = end;
        Ok(data)
    }

    /// `(flag SP flag ...)`; flags are kept as sent.
    fn flag_list(&mut self) -> PResult<Vec<String>> {
        self.expect(b'(', "expected ( of a flag list")?;
        let mut flags = Vec::new();
        loop {
            self.skip_spaces();
            if self.eat(b')') {
                return Ok(flags);
            }
            if !flags.is_empty() && !self.prev_is_space() {
                return Err(PErr::Syntax("expected SP between flags"));
            }
            let f = self.take_while(is_flag_char);
            if f.is_empty() {
                return Err(PErr::Syntax("expected a flag"));
            }
            flags.push(lossy(f));
        }
    }

    /// Skips one value of any shape: atom, number, NIL, quoted string,
    /// literal, or a list of these nested at most [`MAX_DEPTH`] deep.
    fn skip_value(&mut self) -> PResult<()> {
        let mut depth = 0usize;
        loop {
            if depth > 0 {
                self.skip_spaces();
            }
            match self.peek() {
                Some(b'(') => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(PErr::TooDeep);
                    }
                    self.pos += 1;
                    continue;
                }
                Some(b')') if depth > 0 => {
                    depth -= 1;
                    self.pos += 1;
                }
                Some(b'"') => {
                    self.quoted()?;
                }
                Some(b'{') => {
                    self.literal()?;
                }
                Some(b'~') if self.peek_at(1) == Some(b'{') => {
                    self.pos += 1;
                    self.literal()?;
                }
                _ => {
                    if self.take_while(is_value_char).is_empty() {
                        return Err(PErr::Syntax("expected a value"));
                    }
                }
            }
            if depth == 0 {
                return Ok(());
            }
        }
    }
}

/// ATOM-CHAR, leniently also bytes >= 0x80.
fn is_atom_char(b: u8) -> bool {
    b > b' ' && b != 0x7f && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
}

/// A tag: ASTRING-CHAR except `+` (leniently, anything but SP, controls
/// and list/string delimiters).
fn is_tag_char(b: u8) -> bool {
    b > b' ' && b != 0x7f && !matches!(b, b'(' | b')' | b'{' | b'"' | b'+')
}

/// A flag: `\Seen`, `\*`, `$Junk`, `keyword`.
fn is_flag_char(b: u8) -> bool {
    b > b' ' && b != 0x7f && !matches!(b, b'(' | b')' | b'{' | b'"' | b']')
}

/// A FETCH item name (`BODY.PEEK`, `X-GM-LABELS`), up to `[`, SP or `(`.
fn is_item_name_char(b: u8) -> bool {
    is_atom_char(b) && b != b'[' && b != b'<'
}

/// A byte of an atom-like value skipped generically (`1:3`, `\Seen`,
/// `BODY[1]`, `NIL`).
fn is_value_char(b: u8) -> bool {
    b > b' ' && b != 0x7f && !matches!(b, b'(' | b')' | b'{' | b'"')
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Space-separated names, upper-cased.
fn split_upper(s: &[u8]) -> Vec<String> {
    s.split(|&b| b == b' ')
        .filter(|w| !w.is_empty())
        .map(|w| lossy(&w.to_ascii_uppercase()))
        .collect()
}

/// Decimal digits only; `None` if empty, not digits, or too large.
fn parse_u64(d: &[u8]) -> Option<u64> {
    if d.is_empty() {
        return None;
    }
    d.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Decimal digits only, fitting in 32 bits.
fn parse_u32(d: &[u8]) -> Option<u32> {
    parse_u64(d).and_then(|n| u32::try_from(n).ok())
}

/// Parses an IMAP date-time (`INTERNALDATE`) such as
/// `17-Jul-1996 02:44:25 -0700` (the day may also be ` 7` or `7`).
/// Returns `None` for anything malformed or out of range.
pub fn parse_internal_date(s: &str) -> Option<SystemTime> {
    let mut parts = s.trim_start_matches(' ').split(' ');
    let (date, time, zone) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let mut d = date.split('-');
    let (day, month, year) = (d.next()?, d.next()?, d.next()?);
    if d.next().is_some() || !(1..=2).contains(&day.len()) || year.len() != 4 {
        return None;
    }
    let day = i64::from(parse_u32(day.as_bytes())?);
    let year = i64::from(parse_u32(year.as_bytes())?);
    const MONTHS: [&str; 12] = [
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ];
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(month))? as i64 + 1;
    if day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let mut t = time.split(':');
    let mut two = |max: u32| {
        let p = t.next()?;
        let n = parse_u32(p.as_bytes())?;
        (p.len() == 2 && n <= max).then_some(i64::from(n))
    };
    let (h, m, sec) = (two(23)?, two(59)?, two(60)?);
    if t.next().is_some() {
        return None;
    }
    let (sign, z) = match zone.as_bytes().split_first()? {
        (b'+', z) => (1, z),
        (b'-', z) => (-1, z),
        _ => return None,
    };
    if z.len() != 4 {
        return None;
    }
    let zh = i64::from(parse_u32(z.get(..2)?)?);
    let zm = i64::from(parse_u32(z.get(2..)?)?);
    if zm > 59 {
        return None;
    }
    let offset = sign * (zh * 3600 + zm * 60);
    let secs = days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec - offset;
    if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    }
}

#[cfg(test)]
mod tests;
