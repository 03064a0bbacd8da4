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
//! This release contains the foundation: the sans-I/O protocol, the TLS
//! transport, authentication and [`test_login`]. The actor registry is built
//! on top of it.
//!
//! # Layout
//! - [`proto`]: the IMAP protocol as a state machine without I/O or clock:
//!   incremental parser, command encoder, client flow and timeouts.
//! - `transport`: the only code that touches sockets and TLS (rustls with
//!   ring; webpki roots plus extra roots).
//! - `connection`: the async driver that feeds socket bytes to the state
//!   machine and runs the login flow.
//! - [`Credential`], [`Config`], [`Error`]: the public types.
//! - [`test_login`]: a one-shot credential check.
//!
//! ```text
//!  server bytes ─► transport::Stream ─► connection ─► proto::Client ─► events
//!                                          ▲               │
//!                                          └── bytes to send, deadline
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backoff;
mod config;
mod connection;
mod credential;
mod error;
mod filter;
mod handle;
mod login;
mod mail;
pub mod messages;
pub mod proto;
mod registry;
mod session;
mod stats;
mod subscriber;
mod subscription;
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
