//! Protocol errors: what can go wrong between the bytes a server sends and
//! the typed responses and command results the client works with.
//!
//! These carry no secrets and no more than a short, escaped excerpt of the
//! offending server bytes, so they are safe to log.

use std::fmt;

/// An error of the IMAP protocol layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// A line (the text of a response outside its literals) grew past the
    /// configured maximum without ending. The connection cannot be resynced.
    #[error("server line longer than {limit} bytes")]
    LineTooLong {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// A literal announced more bytes than the configured maximum. Refused
    /// when announced, before any of it is buffered.
    #[error("server literal of {size} bytes exceeds the limit of {limit} bytes")]
    LiteralTooLarge {
        /// The announced size.
        size: u64,
        /// The configured limit in bytes.
        limit: usize,
    },
    /// The literals of one response add up to more than the literal limit.
    #[error("server response carries more than {limit} bytes of literals")]
    ResponseTooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// Lists nested deeper than the parser allows.
    #[error("server response nests lists deeper than {limit} levels")]
    TooDeep {
        /// The maximum depth.
        limit: usize,
    },
    /// A complete response that does not follow the grammar. The response
    /// was consumed; the byte stream itself is still in sync.
    #[error("malformed server response ({reason}): {excerpt}")]
    Syntax {
        /// What was expected.
        reason: &'static str,
        /// The start of the offending response, escaped.
        excerpt: Excerpt,
    },
    /// The server's greeting was not `* OK`, `* PREAUTH` or `* BYE`.
    #[error("unexpected greeting: {0}")]
    BadGreeting(Excerpt),
    /// A `+` continuation arrived when no command was waiting for one.
    #[error("unexpected continuation request from the server")]
    UnexpectedContinuation,
    /// A tagged response named a tag that is not in flight.
    #[error("tagged response for unknown tag {0}")]
    UnknownTag(Excerpt),
    /// The server did something the client's state does not allow, such as
    /// UIDs going backwards or a FETCH of a message that was not asked for.
    #[error("protocol violation: {0}")]
    Violation(&'static str),
    /// The server said nothing for longer than allowed: no greeting within
    /// the greeting timeout, no progress on a command within the command
    /// timeout (the link is presumed dead).
    #[error("timed out waiting for the server's {0}")]
    Timeout(&'static str),
}

impl ProtoError {
    /// Whether the byte stream is still in sync after this error, so that the
    /// response can be skipped. Only [`ProtoError::Syntax`] is recoverable;
    /// every other error calls for a new connection.
    pub fn is_recoverable(&self) -> bool {
        matches!(self, ProtoError::Syntax { .. })
    }
}

/// A short, printable excerpt of server bytes: at most 80 bytes, with
/// control and non-ASCII bytes escaped, so it is safe to log.
#[derive(Clone, PartialEq, Eq)]
pub struct Excerpt(String);

impl Excerpt {
    /// The most bytes an excerpt keeps.
    pub const MAX: usize = 80;

    /// Escapes the start of `bytes`.
    pub fn new(bytes: &[u8]) -> Self {
        let mut s = String::new();
        for &b in bytes.iter().take(Self::MAX) {
            match b {
                b'\r' => s.push_str("\\r"),
                b'\n' => s.push_str("\\n"),
                b'\\' => s.push_str("\\\\"),
                0x20..=0x7e => s.push(b as char),
                _ => s.push_str(&format!("\\x{b:02x}")),
            }
        }
        if bytes.len() > Self::MAX {
            s.push_str("...");
        }
        Excerpt(s)
    }

    /// The escaped text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Excerpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Excerpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}
