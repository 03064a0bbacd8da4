//! The IMAP protocol, with no I/O and no clock.
//!
//! Everything here is a pure state machine: bytes and the current time go in;
//! typed events, bytes to send and the next deadline come out. Nothing here
//! imports tokio, actix or rustls, so the whole protocol is unit-testable and
//! fuzzable, and the async code around it (see `transport` and
//! `connection`) only moves bytes.
//!
//! # Layout
//! - [`types`]: typed responses, special uses (RFC 6154) and the decoding
//!   of mailbox names (modified UTF-7).
//! - [`parser`]: the incremental response parser with its size limits.
//! - [`encode`]: command encoding: tags, atoms, quoted strings, literals,
//!   and refusal of CR, LF and NUL in user-supplied strings.
//! - [`client`]: the client state machine: greeting, capabilities, STARTTLS,
//!   authentication, LIST, SELECT, IDLE, FETCH, SEARCH, LOGOUT and the
//!   timeouts.
//! - [`date`]: calendar arithmetic for INTERNALDATE and SEARCH dates.
//! - [`error`]: protocol errors.

pub mod client;
pub mod date;
pub mod encode;
pub mod error;
pub mod parser;
pub mod types;

pub use error::{Excerpt, ProtoError};
pub use parser::{Limits, Parser};
pub use types::*;
