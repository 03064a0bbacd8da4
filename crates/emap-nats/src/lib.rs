//! emap beyond one machine, on NATS JetStream.
//!
//! A bot farm spans machines, but a provider caps IMAP connections per
//! account, so the connection must stay in one place while waiters are
//! everywhere. This crate splits emap in two over an existing engine:
//!
//! - **Bridges** ([`Bridge`], the `emap-bridge` binary): several processes
//!   run the same configuration. For each inbox exactly one holds the IMAP
//!   session, by a **lease** in a JetStream key-value bucket
//!   ([`lease`]: create-if-absent, a bucket TTL, renewed well inside it).
//!   The holder follows the inbox with [`emap::Handle::follow`] and
//!   **publishes** every new mail to JetStream (the raw message plus
//!   metadata headers) on one subject per recipient and one per inbox
//!   ([`subject`]), with a `Nats-Msg-Id` derived from (inbox, folder,
//!   UIDVALIDITY, UID, subject), so a re-publish is dropped by the stream's
//!   de-duplication. After the publishes are acknowledged it stores the
//!   position in the key-value bucket with an expected-revision update
//!   (the fencing token): a holder that lost its lease can no longer move
//!   it, and the next holder resumes from it.
//! - **Waiters** ([`Waiter`]) anywhere: `wait_for(inbox, filter, timeout)`
//!   and a stream, with emap's own [`emap::Filter`] and [`emap::Mail`]
//!   (parsed on the waiter's side). A filter with `since`/`max_age` is
//!   served from the stream by a consumer that starts by time.
//!
//! See `ARCHITECTURE.md` ("Many machines") for why each mail is delivered
//! once, and `README.md` for a three-process example.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bridge;
pub mod config;
pub mod lease;
pub mod subject;
pub mod waiter;

pub use bridge::{Bridge, Inbox};
pub use config::{BridgeConfig, StreamConfig};
pub use waiter::{MailStream, Received, Waiter};

/// What can go wrong between emap and NATS.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// NATS or JetStream refused or failed a request (connect, stream or
    /// bucket set-up, publish, consumer).
    #[error("nats: {0}")]
    Nats(String),
    /// The IMAP side failed (from emap).
    #[error(transparent)]
    Imap(#[from] emap::Error),
    /// No matching mail within the wait's timeout.
    #[error("no matching mail in time")]
    WaitTimedOut,
    /// A setting that cannot work (an inbox name that is not a subject
    /// token, a TTL of zero, ...).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
}

impl Error {
    pub(crate) fn nats(e: impl std::fmt::Display) -> Self {
        Error::Nats(e.to_string())
    }
}
