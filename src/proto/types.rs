//! Typed IMAP responses: what the parser produces and the client state
//! machine consumes.
//!
//! Only what emap uses is typed; every other response is kept as
//! [`Data::Other`] (its keyword only) so that an unfamiliar server extension
//! is skipped safely instead of breaking the connection. Text that comes from
//! the server is decoded lossily: a server that sends non-UTF-8 bytes in a
//! status text gets replacement characters, never an error.

/// One complete server response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `tag OK|NO|BAD [code] text`: the end of a command.
    Tagged(Tagged),
    /// `* ...`: untagged data or status.
    Untagged(Data),
    /// `+ text`: the server waits for more of the command (a literal, a SASL
    /// response, or the IDLE go-ahead). `text` is kept as raw bytes, since it
    /// may be a base64 SASL challenge.
    Continuation(Vec<u8>),
}

/// A tagged completion: `a7 OK [READ-WRITE] SELECT completed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tagged {
    /// The tag the client gave the command.
    pub tag: String,
    /// OK, NO or BAD.
    pub status: Status,
    /// The bracketed response code, if any.
    pub code: Option<Code>,
    /// Human-readable text after the code.
    pub text: String,
}

/// The result word of a tagged response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `OK`.
    Ok,
    /// `NO`: the command failed.
    No,
    /// `BAD`: the command was not understood.
    Bad,
}

/// The condition word of an untagged status response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// `* OK`.
    Ok,
    /// `* NO`: a warning.
    No,
    /// `* BAD`: a protocol-level error report.
    Bad,
    /// `* BYE`: the server is closing the connection.
    Bye,
    /// `* PREAUTH`: a greeting for an already authenticated connection.
    Preauth,
}

/// A bracketed response code (RFC 3501 §7.1, RFC 5530).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Code {
    /// `[ALERT]`: the text must be shown to the user.
    Alert,
    /// `[AUTHENTICATIONFAILED]` (RFC 5530).
    AuthenticationFailed,
    /// `[AUTHORIZATIONFAILED]` (RFC 5530).
    AuthorizationFailed,
    /// `[UNAVAILABLE]` (RFC 5530): a temporary server-side failure.
    Unavailable,
    /// `[LIMIT]` (RFC 5530): e.g. too many connections.
    Limit,
    /// `[CAPABILITY ...]`.
    Capability(Vec<String>),
    /// `[UIDNEXT n]`.
    UidNext(u32),
    /// `[UIDVALIDITY n]`.
    UidValidity(u32),
    /// `[PERMANENTFLAGS (...)]`.
    PermanentFlags(Vec<String>),
    /// `[READ-ONLY]`.
    ReadOnly,
    /// `[READ-WRITE]`.
    ReadWrite,
    /// `[CLOSED]` (RFC 7162): the previous mailbox is closed.
    Closed,
    /// `[HIGHESTMODSEQ n]` (RFC 7162).
    HighestModSeq(u64),
    /// Any other code, kept as its upper-cased name and its raw argument
    /// text (if any).
    Other {
        /// The code's name, upper-cased (`"TRYCREATE"`).
        name: String,
        /// Everything between the name and `]`, if anything.
        arg: Option<String>,
    },
}

/// Untagged server data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// `* OK|NO|BAD|BYE|PREAUTH [code] text`.
    Status {
        /// Which condition.
        condition: Condition,
        /// The bracketed code, if any.
        code: Option<Code>,
        /// The text after the code.
        text: String,
    },
    /// `* CAPABILITY ...`: capability names, upper-cased.
    Capability(Vec<String>),
    /// `* n EXISTS`.
    Exists(u32),
    /// `* n EXPUNGE`.
    Expunge(u32),
    /// `* n RECENT`.
    Recent(u32),
    /// `* FLAGS (...)`.
    Flags(Vec<String>),
    /// `* n FETCH (...)`.
    Fetch(Fetch),
    /// `* STATUS mailbox (name value ...)`.
    MailboxStatus {
        /// The mailbox name as sent (astring, decoded lossily).
        mailbox: String,
        /// Items such as `("UIDNEXT", 42)`, names upper-cased.
        items: Vec<(String, u64)>,
    },
    /// `* SEARCH n n n` (a trailing `(MODSEQ n)` is ignored).
    Search(Vec<u32>),
    /// `* ESEARCH [(TAG "t")] [UID] MIN n MAX n COUNT n ALL set` (RFC 4731).
    ESearch(ESearch),
    /// `* LIST (attributes) delimiter mailbox [extended data]` (RFC 3501,
    /// RFC 5258, RFC 6154).
    List(ListEntry),
    /// Any other untagged response (LSUB, VANISHED, ENABLED, ...), kept as
    /// its upper-cased keyword only.
    Other(String),
}

/// One `* n FETCH (...)` response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// The message sequence number.
    pub seq: u32,
    /// The items, in the order the server sent them.
    pub items: Vec<FetchItem>,
}

impl Fetch {
    /// The `UID` item, if present.
    pub fn uid(&self) -> Option<u32> {
        self.items.iter().find_map(|i| match i {
            FetchItem::Uid(u) => Some(*u),
            _ => None,
        })
    }
}

/// One item of a FETCH response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchItem {
    /// `UID n`.
    Uid(u32),
    /// `INTERNALDATE "17-Jul-1996 02:44:25 -0700"`, as sent.
    InternalDate(String),
    /// `RFC822.SIZE n`.
    Rfc822Size(u32),
    /// `FLAGS (...)`.
    Flags(Vec<String>),
    /// `MODSEQ (n)` (RFC 7162).
    ModSeq(u64),
    /// `BODY[section]<origin> literal|string|NIL`, also `BINARY[...]` and
    /// `RFC822`/`RFC822.HEADER`/`RFC822.TEXT` (as sections `""`, `"HEADER"`,
    /// `"TEXT"`).
    Body {
        /// The section text between the brackets, upper-cased (`""`,
        /// `"HEADER"`, `"1.TEXT"`, `"HEADER.FIELDS (TO FROM)"`).
        section: String,
        /// `<n>` after the section: the offset of a partial fetch.
        origin: Option<u32>,
        /// The bytes, or `None` for NIL.
        data: Option<Vec<u8>>,
    },
    /// Any other item, kept as its upper-cased name; its value is skipped.
    Other(String),
}

/// An ESEARCH response (RFC 4731).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ESearch {
    /// `(TAG "a5")`: the command it answers.
    pub tag: Option<String>,
    /// Whether the numbers are UIDs.
    pub uid: bool,
    /// `MIN n`.
    pub min: Option<u32>,
    /// `MAX n`.
    pub max: Option<u32>,
    /// `COUNT n`.
    pub count: Option<u32>,
    /// `ALL set`, as inclusive ranges (`*` is not valid here and is refused).
    pub all: Vec<(u32, u32)>,
}

/// One `* LIST` response: a mailbox, its attributes and its hierarchy
/// delimiter (RFC 3501 §7.2.2; RFC 5258's extended data after the name is
/// skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// The attributes as sent (`\HasNoChildren`, `\Junk`, `\Noselect`).
    pub attributes: Vec<String>,
    /// The hierarchy delimiter, `None` for NIL (a flat namespace).
    pub delimiter: Option<char>,
    /// The name in the server's own encoding (modified UTF-7, or UTF-8 on a
    /// server that sends it), unquoted: what must be sent back to SELECT or
    /// EXAMINE it.
    pub raw_name: Vec<u8>,
    /// The name decoded for display and matching: modified UTF-7 decoded,
    /// else the bytes as UTF-8 (lossily); `INBOX` in any case is `INBOX`.
    pub name: String,
}

impl ListEntry {
    /// Whether the server listed attribute `attribute` (case-insensitive,
    /// with its backslash: `"\Junk"`).
    pub fn has_attribute(&self, attribute: &str) -> bool {
        self.attributes
            .iter()
            .any(|a| a.eq_ignore_ascii_case(attribute))
    }

    /// The special uses among the attributes, in the order sent.
    pub fn special_uses(&self) -> impl Iterator<Item = SpecialUse> + '_ {
        self.attributes
            .iter()
            .filter_map(|a| SpecialUse::from_attribute(a))
    }

    /// Whether the mailbox can be selected: neither `\Noselect` (RFC 3501)
    /// nor `\NonExistent` (RFC 5258).
    pub fn is_selectable(&self) -> bool {
        !self.has_attribute("\\Noselect") && !self.has_attribute("\\NonExistent")
    }
}

/// What a mailbox is for, as a server marks it with a special-use
/// attribute (RFC 6154 §2): found by `LIST` whatever the mailbox is called
/// (`[Gmail]/Spam`, `Junk Email`, `Junk`, or a localized name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum SpecialUse {
    /// `\All`: every message (Gmail's `[Gmail]/All Mail`).
    All,
    /// `\Archive`: archived messages.
    Archive,
    /// `\Drafts`: drafts.
    Drafts,
    /// `\Flagged`: a virtual mailbox of flagged messages.
    Flagged,
    /// `\Junk`: spam; where verification mail often lands.
    Junk,
    /// `\Sent`: sent messages.
    Sent,
    /// `\Trash`: deleted messages.
    Trash,
}

impl SpecialUse {
    /// Every special use, in RFC 6154's order.
    pub const ALL: [SpecialUse; 7] = [
        SpecialUse::All,
        SpecialUse::Archive,
        SpecialUse::Drafts,
        SpecialUse::Flagged,
        SpecialUse::Junk,
        SpecialUse::Sent,
        SpecialUse::Trash,
    ];

    /// The attribute as a LIST response carries it: `"\Junk"`.
    pub fn attribute(self) -> &'static str {
        match self {
            SpecialUse::All => "\\All",
            SpecialUse::Archive => "\\Archive",
            SpecialUse::Drafts => "\\Drafts",
            SpecialUse::Flagged => "\\Flagged",
            SpecialUse::Junk => "\\Junk",
            SpecialUse::Sent => "\\Sent",
            SpecialUse::Trash => "\\Trash",
        }
    }

    /// The special use an attribute names (case-insensitive), if any.
    pub fn from_attribute(attribute: &str) -> Option<SpecialUse> {
        SpecialUse::ALL
            .into_iter()
            .find(|u| u.attribute().eq_ignore_ascii_case(attribute))
    }
}

impl std::fmt::Display for SpecialUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.attribute())
    }
}

/// A mailbox name as a server sent it, decoded for display and matching:
/// modified UTF-7 (RFC 3501 §5.1.3) when the bytes are valid modified
/// UTF-7, else UTF-8 (a server with `UTF8=ACCEPT`, RFC 6855), lossily.
/// `INBOX` in any case becomes `INBOX` (RFC 3501 §5.1).
pub fn decode_mailbox_name(raw: &[u8]) -> String {
    if raw.eq_ignore_ascii_case(b"INBOX") {
        return "INBOX".to_owned();
    }
    utf7_decode(raw).unwrap_or_else(|| String::from_utf8_lossy(raw).into_owned())
}

/// Decodes modified UTF-7 (RFC 3501 §5.1.3); `None` when `raw` is not
/// valid modified UTF-7: a byte outside printable US-ASCII, a `&` without
/// its `-`, a character outside the base64 alphabet `A-Za-z0-9+,`, an odd
/// number of bytes, non-zero padding bits, or a broken UTF-16 surrogate.
/// Hand-written (no base64 crate) so that the parser, which uses it,
/// compiles alone in the fuzz target.
pub fn utf7_decode(raw: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        i += 1;
        if b != b'&' {
            if !(0x20..=0x7e).contains(&b) {
                return None;
            }
            out.push(char::from(b));
            continue;
        }
        let run = raw.get(i..)?;
        let end = run.iter().position(|&c| c == b'-')?;
        let run = run.get(..end)?;
        i += end + 1;
        if run.is_empty() {
            out.push('&');
            continue;
        }
        let mut bits: u32 = 0;
        let mut nbits = 0u32;
        let mut units: Vec<u16> = Vec::with_capacity(run.len() / 2);
        let mut high: Option<u8> = None;
        for &c in run {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b',' => 63,
                _ => return None,
            };
            bits = ((bits << 6) | u32::from(v)) & 0xffff;
            nbits += 6;
            if nbits >= 8 {
                nbits -= 8;
                let byte = ((bits >> nbits) & 0xff) as u8;
                match high.take() {
                    None => high = Some(byte),
                    Some(h) => units.push(u16::from_be_bytes([h, byte])),
                }
            }
        }
        // Whole UTF-16 units only, and the leftover bits are zero padding.
        if high.is_some() || nbits >= 6 || bits & ((1 << nbits) - 1) != 0 {
            return None;
        }
        // A run must not encode what could be sent as itself.
        if units.iter().all(|&u| (0x20..=0x7e).contains(&u)) {
            return None;
        }
        for c in char::decode_utf16(units) {
            out.push(c.ok()?);
        }
    }
    Some(out)
}
