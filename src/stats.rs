//! Statistics a session reports through `Handle::stats`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use crate::SessionKey;
use crate::folder::Folder;
use crate::tracker::FolderPosition;

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
    /// Mails pushed into subscriber queues (one mail to three subscribers
    /// counts three). Whether the user then took them is per subscription
    /// (`Subscription::dropped` counts what a full queue discarded).
    pub queued: u64,
    /// Mails dropped from full subscriber queues.
    pub dropped: u64,
    /// Messages given up on: fetched `Config::poison_attempts` times without
    /// success, or whose body the server would not send. Each skip is also
    /// logged with its UID at WARN level.
    pub skipped: u64,
    /// Look-backs (searches for mail older than the session) that failed;
    /// a failed look-back is retried at the next connection and never ends
    /// a subscription.
    pub look_back_failures: u64,
    /// Times the server's UIDNEXT went below the watermark while
    /// UIDVALIDITY stayed the same (a restored or recreated mailbox on a
    /// server that did not change UIDVALIDITY): the watermark follows
    /// UIDNEXT down, with a warning.
    pub uidnext_regressions: u64,
    /// Reconnects after a failure.
    pub reconnects: u64,
    /// UIDVALIDITY changes seen.
    pub validity_changes: u64,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// The current backoff delay, if waiting.
    pub backoff: Option<Duration>,
    /// While backing off ([`SessionState::Backoff`]): when the next
    /// connection attempt starts, by the wall clock (the backoff delay
    /// counted from when the last connection failed). `None` otherwise.
    pub next_attempt: Option<SystemTime>,
    /// When the current connection selected the mailbox, by the wall
    /// clock: its age is how long the session has been watching without a
    /// break. `None` while connecting, backing off or failed; a reconnect
    /// sets it anew.
    pub connected_since: Option<SystemTime>,
    /// The last `[ALERT]` text the server sent, if any.
    pub last_alert: Option<String>,
    /// Bytes read from connect until the mailbox was selected and the
    /// watermark fixed, on the latest connection: the start-up cost, which
    /// does not grow with the mailbox.
    pub startup_bytes: Option<u64>,
    /// Every folder the session watches, the main one first
    /// (`Credential::also_watch` adds the others), each with its own
    /// position.
    pub folders: Vec<FolderStats>,
}

impl SessionStats {
    /// The state in one word, as an operator's view shows it (the
    /// gateway's status page and `/v1/status`, `emap status`):
    /// `connecting`, `idling` or `polling` (watching, with or without
    /// IDLE), `backing_off`, `failed` or `closing`.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            SessionState::Connecting => "connecting",
            SessionState::Watching if self.idle => "idling",
            SessionState::Watching => "polling",
            SessionState::Backoff => "backing_off",
            SessionState::Failed => "failed",
            SessionState::Closing => "closing",
        }
    }

    /// How the session watches, `idle` or `poll`, while it is connected
    /// (watching, or selected with a connection time); `None` otherwise —
    /// a session backing off or connecting watches nothing.
    pub fn mode_name(&self) -> Option<&'static str> {
        (self.state == SessionState::Watching || self.connected_since.is_some())
            .then_some(if self.idle { "idle" } else { "poll" })
    }
}

/// One watched folder's position and state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FolderStats {
    /// The folder as the credential named it.
    pub folder: Folder,
    /// Its name on the server, once found on the current connection.
    pub mailbox: Option<String>,
    /// Its UIDVALIDITY, once known.
    pub uid_validity: Option<u32>,
    /// The lowest UID not yet delivered from it.
    pub watermark: Option<u32>,
    /// Missing at the last check (not listed, or STATUS or EXAMINE
    /// refused); looked for again at the next one.
    pub missing: bool,
    /// Times it was found missing.
    pub failures: u64,
    /// The folder watched before it that names the same mailbox on the
    /// server (`\Junk` marking the folder also watched as `Junk`): this
    /// one is then not watched, so that its mail is delivered once.
    pub same_as: Option<Folder>,
}

impl From<FolderPosition<Folder>> for FolderStats {
    fn from(p: FolderPosition<Folder>) -> Self {
        FolderStats {
            folder: p.folder,
            mailbox: p.name,
            uid_validity: p.uid_validity,
            watermark: p.watermark,
            missing: p.missing,
            failures: p.failures,
            same_as: p.same_as,
        }
    }
}

/// How many actors of each kind are alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ActorCounts {
    /// Session actors (one per credential key with subscribers or
    /// lingering).
    pub sessions: usize,
    /// Subscriber actors.
    pub subscribers: usize,
}

/// Live-actor counters shared by a registry's actors. Each actor holds a
/// [`Counted`] that counts it until it is dropped.
#[derive(Debug, Default)]
pub(crate) struct ActorCensus {
    sessions: AtomicUsize,
    subscribers: AtomicUsize,
}

impl ActorCensus {
    pub(crate) fn counts(&self) -> ActorCounts {
        ActorCounts {
            sessions: self.sessions.load(Ordering::SeqCst),
            subscribers: self.subscribers.load(Ordering::SeqCst),
        }
    }

    pub(crate) fn session(self: &Arc<Self>) -> Counted {
        self.sessions.fetch_add(1, Ordering::SeqCst);
        Counted {
            live: self.clone(),
            session: true,
        }
    }

    pub(crate) fn subscriber(self: &Arc<Self>) -> Counted {
        self.subscribers.fetch_add(1, Ordering::SeqCst);
        Counted {
            live: self.clone(),
            session: false,
        }
    }
}

/// Counts one actor while it lives.
#[derive(Debug)]
pub(crate) struct Counted {
    live: Arc<ActorCensus>,
    session: bool,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let counter = if self.session {
            &self.live.sessions
        } else {
            &self.live.subscribers
        };
        counter.fetch_sub(1, Ordering::SeqCst);
    }
}
