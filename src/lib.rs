//! emap lets thousands of tasks wait for mail on a few shared IMAP inboxes.
//!
//! Bots, sign-up and verification flows and scrapers each wait for mail at
//! their own address on a shared catch-all mailbox. Instead of one IMAP
//! connection per task (Gmail refuses the 16th, Dovecot the 11th by
//! default), emap keeps **one persistent connection per credential** and
//! fans new mail out to every subscriber whose filter matches. It never
//! downloads the backlog, pushes with IDLE, reconnects with jittered
//! backoff, and bounds every queue.
//!
//! ```no_run
//! use std::time::Duration;
//! use emap::{Auth, Config, Credential, Filter, Registry};
//!
//! # async fn demo() -> Result<(), emap::Error> {
//! let handle = Registry::start_in_thread(Config::default())?;
//! let inbox = Credential::new("imap.example.com", "catchall@example.com", Auth::password("secret"));
//! let mail = handle
//!     .wait_for(inbox, Filter::new().to("task42@example.com"), Duration::from_secs(300))
//!     .await?;
//! println!("{:?}", mail.subject());
//! # Ok(()) }
//! ```
//!
//! # What is public, and why
//! Everything public is a semver promise, so only what a user needs is:
//! - [`Handle`], [`Mailbox`], [`Subscription`], [`Registry::start`] and
//!   [`Registry::start_in_thread`]: the API, free of actix types;
//! - [`Handle::follow`] with [`Follower`], [`Followed`] and [`Position`],
//!   and [`Credential::resume_from`] with [`Resume`]: a session that
//!   reports its position and starts from a stored one, for a process that
//!   must resume after a restart without loss (the NATS bridge,
//!   `crates/emap-nats`);
//! - [`Credential`] and its parts, [`Config`], [`Filter`], [`Mail`],
//!   [`Address`], the statistics and [`test_login`]: what goes in and comes
//!   out;
//! - [`Error`], and the two types it carries from the protocol layer:
//!   [`ProtoError`] (with its [`Excerpt`]) in [`Error::Protocol`], and
//!   [`InputError`] in [`Error::InvalidInput`], so that a caller can match
//!   on them;
//! - [`messages`]: the registry's commands, for actix applications that
//!   send them to [`Handle::addr`] rather than call the handle.
//!
//! The rest is crate-private: the protocol layer (parser, encoder, client
//! state machine), the transport, the connection loop, and the session and
//! subscriber actors with the messages between them. They change whenever
//! the implementation needs, without a major release.
//!
//! ```compile_fail
//! // The protocol layer is not public API.
//! use emap::proto::Parser;
//! ```
//!
//! ```compile_fail
//! // Nor are the messages between the actors.
//! let _ = emap::messages::EndSession;
//! ```
//!
//! The `emap` command line (the workspace crate `crates/emap-cli`), the
//! crate's tests and its benchmark drive the protocol layer directly (the
//! command line parses RFC 3339 with its calendar code; the hostile-server
//! tests push limits through the client state machine).
//! They reach it through `__private`, which is hidden from the docs and
//! **outside semver**: it is released in lockstep with the code that uses
//! it and may change in any release. Nothing else may use it. (The fuzz
//! targets compile the protocol files by path and need no export.)
//!
//! # Layout
//! Five layers, from the bottom up. A module imports only from its own
//! layer or the ones below, and no module imports one that imports it back
//! (`tests/layers.rs` checks both), so a reader can start at the bottom and
//! never has to look up:
//! 1. No I/O, no clock: `proto` (the IMAP protocol as a state machine:
//!    incremental parser, command encoder, client flow and timeouts),
//!    `tracker` (the mailbox position and its one owner), and the values:
//!    [`Credential`], [`Config`], [`Error`], [`Mail`] (its links and codes
//!    come from `crates/emap-extract`, re-exported as `extract` behind the
//!    default feature `extract`), [`Folder`] (a name or a special use),
//!    [`Position`] and [`Followed`] (where a session stands, as a follower
//!    sees it), [`Filter`], the replay window, backoff, statistics.
//! 2. I/O: `transport` (the only code that touches sockets and TLS:
//!    rustls with ring, webpki roots plus extra roots), `connection` (the
//!    async driver that feeds socket bytes to the state machine and runs
//!    the login flow), [`test_login`], `watcher` (one session's IMAP loop:
//!    select, IDLE or poll, fetch, look-back; a plain async function) and
//!    `policy` (retry or give up, from the error and how far the loop got).
//! 3. What the actors share: `queue` (the bounded queue between a
//!    subscriber and the user's subscription; no actix type) and
//!    [`messages`].
//! 4. The actors, each above the ones it sends to: `subscriber` (a filter
//!    in front of a queue), `session` (one per credential: runs the
//!    watcher, fans mail out, and reports a permanent failure upwards
//!    through a weak recipient of that one message, without naming the
//!    registry), [`Registry`] (the sessions and their lifecycle).
//! 5. The user-facing API, free of actix types: [`Subscription`] (made
//!    from the registry's [`Subscribed`](messages::Subscribed) reply) and
//!    [`Handle`], [`Mailbox`], with [`Registry::start`] and
//!    [`Registry::start_in_thread`], which live in `handle.rs` because
//!    they return the handle.
//!
//! ```text
//!  Handle ─► Registry ─► Session (one per credential) ─► Subscriber ─► Subscription
//!                           │ watcher::run
//!                           ▼
//!  server bytes ─► transport::Stream ─► connection ─► proto::Client ─► events
//!                                          ▲               │
//!                                          └── bytes to send, deadline
//! ```
//!
//! See `ARCHITECTURE.md` for the watermark, the replay window, backoff and
//! supervision, and the failure table.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backoff;
mod config;
mod connection;
mod credential;
mod error;
/// The link and one-time code finders behind [`Mail::links`] and
/// [`Mail::codes`], for text that did not come as a [`Mail`] (feature
/// `extract`, on by default).
#[cfg(feature = "extract")]
pub use emap_extract as extract;
mod filter;
mod folder;
mod handle;
mod login;
mod mail;
pub mod messages;
mod policy;
mod position;
mod proto;
mod queue;
mod registry;
mod replay;
mod session;
mod stats;
mod subscriber;
mod subscription;
mod tracker;
mod transport;
mod watcher;

pub use config::{Config, MailboxAccess};
pub use credential::{
    Auth, Credential, Folder, OAuthMechanism, Resume, Secret, SessionKey, SpecialUse, TlsConfig,
    TlsMode, TokenFuture, TokenProvider,
};
pub use error::Error;
pub use filter::Filter;
pub use handle::{Follower, Handle, Mailbox};
pub use login::{test_login, test_login_with};
pub use mail::{Address, Mail};
pub use position::{Followed, Position};
pub use proto::encode::InputError;
pub use proto::{Excerpt, ProtoError};
pub use registry::Registry;
pub use stats::{ActorCounts, FolderStats, SessionState, SessionStats};
pub use subscription::Subscription;

/// Not public API: the protocol layer, for the workspace's `emap` command
/// line (crates/emap-cli, which pins this exact version), this package's
/// tests and benchmark. Outside semver; may change in any release.
#[doc(hidden)]
pub mod __private {
    /// The IMAP protocol layer (`src/proto`), unchanged.
    pub mod proto {
        pub use crate::proto::*;
    }
}
