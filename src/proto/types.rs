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
    /// Any other untagged response (LIST, LSUB, VANISHED, ENABLED, ...),
    /// kept as its upper-cased keyword only.
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
