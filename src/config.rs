//! Every knob of emap, with its default, in one place.
//!
//! There are no globals: a [`Config`] is given to the registry (or to
//! [`crate::test_login_with`]) and every session created from it uses it.

use std::time::Duration;

use crate::proto::Limits;
use crate::proto::client::Options;

/// How the watched mailbox is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MailboxAccess {
    /// EXAMINE (read-only), except on servers known to keep UIDs unstable
    /// under EXAMINE: Courier IMAP stores UIDs and UIDVALIDITY only for a
    /// read-write session, so under EXAMINE it renumbers new mail and
    /// invents a UIDVALIDITY per session (mail lost or repeated); it is
    /// opened with SELECT (its greeting names it).
    #[default]
    Auto,
    /// Always EXAMINE.
    ReadOnly,
    /// Always SELECT. Mail is still fetched with `BODY.PEEK` (no `\Seen`),
    /// but the server clears `\Recent` for other clients.
    ReadWrite,
}

/// emap's settings. Construct with [`Config::default`] and override fields:
///
/// ```
/// use std::time::Duration;
/// let config = emap::Config {
///     idle_round: Duration::from_secs(4 * 60), // AOL cuts IDLE at 300 s
///     ..emap::Config::default()
/// };
/// assert_eq!(config.queue_capacity, 8);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How long a session stays connected after its last subscriber left,
    /// so that a new subscriber reuses the connection. Default 60 s.
    pub linger: Duration,
    /// How long one IDLE command lasts before it is re-issued. RFC 2177 asks
    /// clients to re-issue within 29 minutes; some providers cut sooner
    /// (AOL: 300 s). Default 25 min.
    ///
    /// A round ended this way is followed by NOOP before the next IDLE, so
    /// that mail a server failed to push while it kept the link alive is
    /// found at the end of the round at the latest.
    pub idle_round: Duration,
    /// How long IDLE may go without a single byte from the server before
    /// emap ends it with DONE to check the link (Dovecot sends
    /// `* OK Still here` every 2 min). Default 5 min.
    ///
    /// The DONE is followed by NOOP before the next IDLE: against a server
    /// whose push silently stopped (Courier once its FAM watch breaks,
    /// INTEROP.md), this bounds how late its mail is found. Lower it for a
    /// tighter bound; each quiet round costs two round trips (DONE, NOOP).
    pub idle_inactivity: Duration,
    /// How often a server without IDLE is polled with NOOP. Default 30 s.
    pub poll_interval: Duration,
    /// The first reconnect delay; each failure doubles it, with full jitter.
    /// Default 1 s.
    pub backoff_initial: Duration,
    /// The largest reconnect delay. Default 60 s.
    pub backoff_max: Duration,
    /// How long a TCP connect may take. Default 10 s.
    pub dial_timeout: Duration,
    /// How long the TLS handshake and then the server's greeting may take.
    /// Default 10 s.
    pub greeting_timeout: Duration,
    /// How long a command may go without a byte of response before the
    /// link is presumed dead. Default 30 s.
    pub command_timeout: Duration,
    /// How many mails a subscriber's queue holds before the oldest is
    /// dropped (and counted). Default 8.
    pub queue_capacity: usize,
    /// The longest server line accepted, in bytes. Default 64 KiB.
    pub max_line: usize,
    /// The largest literal accepted, in bytes. Default 32 MiB.
    pub max_literal: usize,
    /// How many recent mails a session keeps for late subscribers whose
    /// filter has `since` or `max_age`. Default 64.
    pub replay_capacity: usize,
    /// How long a mail stays in that replay window. Default 5 min.
    pub replay_age: Duration,
    /// When a subscriber asks for mail older than the session (its `since`
    /// or `max_age` reaches back before the session connected), the session
    /// searches the mailbox (`UID SEARCH SINCE`) and fetches at most this
    /// many of the newest matches. 0 disables the look-back. Default 64.
    pub look_back_limit: usize,
    /// The most bytes of one message that are fetched; a larger message is
    /// fetched partially and flagged truncated. Default 25 MiB; must not
    /// exceed `max_literal`.
    pub max_message_size: usize,
    /// How much later than a mail's `INTERNALDATE` a [`crate::Filter::since`]
    /// time may be and still match it. INTERNALDATE has one-second
    /// resolution and the server's clock may run behind the client's, so
    /// "trigger the mail, then subscribe with `since(now)`" must tolerate
    /// a little. Times are compared at whole seconds, after subtracting
    /// this allowance. Default 2 s.
    pub clock_skew: Duration,
    /// The most bytes of mail the replay window keeps (besides
    /// `replay_capacity` mails): one large mail must not pin 25 MiB after a
    /// burst. Default 8 MiB.
    pub replay_max_bytes: usize,
    /// How many times the same message may fail to be fetched (the command
    /// answered NO, a BYE or a limit broken while it was being fetched, its
    /// body missing, the connection lost) before it is skipped, counted in
    /// `SessionStats::skipped` and reported with a warning. Later mail is
    /// never held back longer than this by one poisonous message (see also
    /// `poison_silent_span`). Default 3.
    pub poison_attempts: u32,
    /// A connection that just ends (reset, EOF, a timeout — no word from
    /// the server) while one message is being fetched may be the link's
    /// fault, not the message's: a flapping link cuts whatever is running,
    /// and right after each reconnect that is the fetch of the first
    /// pending message. Such silent losses count toward `poison_attempts`
    /// only once they have gone on for this long on the same message, so
    /// a cut link costs reconnects, never a message; a message the server
    /// crashes on every time is still skipped, after this span (with the
    /// backoff growing meanwhile). Failures the server puts in words are
    /// not affected. Default 60 s.
    pub poison_silent_span: Duration,
    /// How the watched mailbox is opened: EXAMINE, or SELECT where a
    /// server needs it (see [`MailboxAccess`]). Default
    /// [`MailboxAccess::Auto`].
    pub mailbox_access: MailboxAccess,
    /// How long a connection must stay healthy (mailbox selected, no error)
    /// before the backoff starts over from `backoff_initial`. A server that
    /// fails right after each SELECT therefore still sees growing delays.
    /// Default 60 s.
    pub healthy_after: Duration,
    /// How long a session that was healthy keeps retrying (with backoff)
    /// when its mailbox disappears (deleted and recreated by a cleanup
    /// script, a rotation) before it reports the failure to its
    /// subscribers. On a session that never selected the mailbox, a
    /// missing mailbox is reported at once. Default 5 min.
    pub missing_mailbox_grace: Duration,
    /// How long a permanent failure (login rejected, certificate not
    /// trusted, unknown host, ...) is remembered for its credential: a new
    /// subscribe with the same secret within this time gets the same error
    /// without contacting the server, so a caller retrying in a loop cannot
    /// get the account locked. A different secret is tried at once.
    /// Zero disables it. Default 5 min.
    pub failure_memory: Duration,
    /// The slowest transfer a command may make, in bytes per second: besides
    /// the inactivity timeout (`command_timeout`), every command has an
    /// overall deadline of `command_timeout` plus the bytes it may carry at
    /// this rate, so a server trickling one byte a second cannot hold a
    /// FETCH forever. Default 16 KiB/s.
    pub min_transfer_rate: usize,
    /// How many reports (mails and positions) a follower
    /// ([`Handle::follow`](crate::Handle::follow)) may fall behind before
    /// it is cut off, to start again from its stored position. Default 1024.
    pub follow_capacity: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            linger: Duration::from_secs(60),
            idle_round: Duration::from_secs(25 * 60),
            idle_inactivity: Duration::from_secs(5 * 60),
            poll_interval: Duration::from_secs(30),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            dial_timeout: Duration::from_secs(10),
            greeting_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(30),
            queue_capacity: 8,
            max_line: 64 * 1024,
            max_literal: 32 * 1024 * 1024,
            max_message_size: 25 * 1024 * 1024,
            replay_capacity: 64,
            replay_age: Duration::from_secs(5 * 60),
            look_back_limit: 64,
            clock_skew: Duration::from_secs(2),
            replay_max_bytes: 8 * 1024 * 1024,
            poison_attempts: 3,
            poison_silent_span: Duration::from_secs(60),
            mailbox_access: MailboxAccess::Auto,
            healthy_after: Duration::from_secs(60),
            missing_mailbox_grace: Duration::from_secs(5 * 60),
            failure_memory: Duration::from_secs(5 * 60),
            min_transfer_rate: 16 * 1024,
            follow_capacity: 1024,
        }
    }
}

impl Config {
    /// Checks that the settings make sense together.
    pub fn validate(&self) -> Result<(), crate::Error> {
        let bad = |s: &str| Err(crate::Error::InvalidConfig(s.to_owned()));
        if self.queue_capacity == 0 {
            return bad("queue_capacity must be at least 1");
        }
        if self.max_line < 1024 {
            return bad("max_line must be at least 1024 bytes");
        }
        if self.max_message_size == 0 || self.max_message_size > self.max_literal {
            return bad("max_message_size must be between 1 and max_literal");
        }
        if self.follow_capacity == 0 {
            return bad("follow_capacity must be at least 1");
        }
        if self.poison_attempts == 0 {
            return bad("poison_attempts must be at least 1");
        }
        if self.min_transfer_rate == 0 {
            return bad("min_transfer_rate must be positive");
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            return bad("backoff_initial must be positive and at most backoff_max");
        }
        for (name, d) in [
            ("idle_round", self.idle_round),
            ("idle_inactivity", self.idle_inactivity),
            ("poll_interval", self.poll_interval),
            ("dial_timeout", self.dial_timeout),
            ("greeting_timeout", self.greeting_timeout),
            ("command_timeout", self.command_timeout),
        ] {
            if d.is_zero() {
                return Err(crate::Error::InvalidConfig(format!(
                    "{name} must be positive"
                )));
            }
        }
        Ok(())
    }

    /// The protocol state machine's options derived from this config.
    pub(crate) fn client_options(&self) -> Options {
        Options {
            limits: Limits {
                max_line: self.max_line,
                max_literal: self.max_literal,
            },
            greeting_timeout: self.greeting_timeout,
            command_timeout: self.command_timeout,
            idle_inactivity: self.idle_inactivity,
            idle_round: self.idle_round,
            max_message_size: self.max_message_size,
            min_transfer_rate: self.min_transfer_rate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.linger, Duration::from_secs(60));
        assert_eq!(c.idle_round, Duration::from_secs(1500));
        assert_eq!(c.poll_interval, Duration::from_secs(30));
        assert_eq!(c.queue_capacity, 8);
    }

    #[test]
    fn nonsense_is_refused() {
        let c = Config {
            queue_capacity: 0,
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let c = Config {
            max_message_size: 64 * 1024 * 1024,
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let c = Config {
            command_timeout: Duration::ZERO,
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }
}
