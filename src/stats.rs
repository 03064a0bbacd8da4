//! Statistics a session reports through `Handle::stats`.

use std::time::Duration;

use crate::SessionKey;

/// Where a session's connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SessionState {
    /// Dialling, TLS, greeting, authenticating, selecting.
    #[default]
    Connecting,
    /// Selected, waiting for mail (IDLE or polling).
    Watching,
    /// Waiting out a backoff before reconnecting.
    Backoff,
    /// Failed for good (see `last_error`).
    Failed,
    /// Logging out.
    Closing,
}

/// One session's statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionStats {
    /// Which session.
    pub key: SessionKey,
    /// Its state.
    pub state: SessionState,
    /// Whether the server pushes with IDLE (`false`: polled with NOOP).
    pub idle: bool,
    /// The lowest UID not yet delivered.
    pub watermark: Option<u32>,
    /// The mailbox's UIDVALIDITY.
    pub uid_validity: Option<u32>,
    /// Live subscribers.
    pub subscribers: usize,
    /// Mails fetched.
    pub fetched: u64,
    /// Mails handed to subscriber queues (one mail to three subscribers
    /// counts three).
    pub delivered: u64,
    /// Mails dropped from full subscriber queues.
    pub dropped: u64,
    /// Reconnects after a failure.
    pub reconnects: u64,
    /// UIDVALIDITY changes seen.
    pub validity_changes: u64,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// The current backoff delay, if waiting.
    pub backoff: Option<Duration>,
    /// The last `[ALERT]` text the server sent, if any.
    pub last_alert: Option<String>,
    /// Bytes read from connect until the mailbox was selected and the
    /// watermark fixed, on the latest connection: the start-up cost, which
    /// does not grow with the mailbox.
    pub startup_bytes: Option<u64>,
}
