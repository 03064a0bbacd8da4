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
//! # Layout
//! - [`proto`]: the IMAP protocol as a state machine without I/O or clock:
//!   incremental parser, command encoder, client flow and timeouts.
//! - `transport`: the only code that touches sockets and TLS (rustls with
//!   ring; webpki roots plus extra roots).
//! - `connection`: the async driver that feeds socket bytes to the state
//!   machine and runs the login flow.
//! - `watcher`: one session's IMAP loop (select, watermark, IDLE or poll,
//!   fetch, look-back), a plain async function.
//! - [`Registry`], [`Session`], [`Subscriber`]: the actors; [`messages`]:
//!   their messages, public for actix users.
//! - [`Handle`], [`Mailbox`], [`Subscription`]: the user-facing API, free of
//!   actix types.
//! - [`Mail`], [`Filter`]: a parsed message and what a subscriber wants.
//! - `crates/emap-extract`, re-exported as `extract` (default feature
//!   `extract`): the links and one-time codes of a [`Mail`].
//! - [`Credential`], [`Config`], [`Error`]: settings and errors.
//! - [`test_login`]: a one-shot credential check.
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
mod handle;
mod login;
mod mail;
pub mod messages;
mod policy;
pub mod proto;
mod registry;
mod replay;
mod session;
mod stats;
mod subscriber;
mod subscription;
mod tracker;
mod transport;
mod watcher;

pub use config::Config;
pub use credential::{
    Auth, Credential, OAuthMechanism, Secret, SessionKey, TlsConfig, TlsMode, TokenFuture,
    TokenProvider,
};
pub use error::Error;
pub use filter::Filter;
pub use handle::{Handle, Mailbox};
pub use login::{test_login, test_login_with};
pub use mail::{Address, Mail};
pub use registry::Registry;
pub use session::Session;
pub use stats::{ActorCounts, SessionState, SessionStats};
pub use subscriber::Subscriber;
pub use subscription::Subscription;
