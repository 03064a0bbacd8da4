//! The session's error policy: retry (with backoff) or give up, decided
//! from the error *and* its context.
//!
//! Why it exists: an error type alone cannot say whether retrying helps.
//! An unknown host or a garbage greeting on the very first connection will
//! never succeed — waiting hides the cause behind the caller's own timeout
//! — while the same error after hours of health is a passing outage. A
//! mailbox missing at the first SELECT is a typo; missing on a healthy
//! session it is being recreated by a cleanup script. So the decision takes
//! the phase reached, whether the session was ever healthy, and how long a
//! missing mailbox has been missing. The phase tells a BYE greeting (the
//! server refuses us) from a BYE during the first login (a restart, an
//! admin's kick: retried). No I/O and no clock: `now` is passed
//! in, so every row is table-tested.

use std::time::{Duration, Instant};

use crate::Error;
use crate::proto::ProtoError;
use crate::watcher::Phase;

/// What to do after a connection ended with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Reconnect after the backoff.
    Retry,
    /// Give up: end every subscription with the error.
    Fail,
}

/// The context of one failure.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context {
    /// The connection reached this phase.
    pub phase: Phase,
    /// The session selected its mailbox at least once before.
    pub healthy_before: bool,
    /// Since when the mailbox has been missing (SELECT refused), if it is.
    pub missing_since: Option<Instant>,
    /// How long a missing mailbox is retried on a session healthy before.
    pub missing_grace: Duration,
    /// The current time.
    pub now: Instant,
}

/// Decides whether `error`, in `cx`, is worth a retry.
pub(crate) fn decide(error: &Error, cx: &Context) -> Action {
    if mailbox_missing(error, cx.phase) {
        // SELECT refused: the mailbox does not exist (or not for us).
        if !cx.healthy_before {
            return Action::Fail;
        }
        let since = cx.missing_since.unwrap_or(cx.now);
        return if cx.now.saturating_duration_since(since) >= cx.missing_grace {
            Action::Fail
        } else {
            Action::Retry
        };
    }
    if error.is_permanent() {
        return Action::Fail;
    }
    if !cx.healthy_before && hopeless_on_first_contact(error, cx.phase) {
        return Action::Fail;
    }
    Action::Retry
}

/// Whether `error`, in `phase`, says the mailbox does not exist (SELECT
/// refused, or no mailbox listed with the special use asked for): the
/// session keeps since when, for the grace period.
pub(crate) fn mailbox_missing(error: &Error, phase: Phase) -> bool {
    phase == Phase::Select
        && matches!(
            error,
            Error::CommandFailed {
                temporary: false,
                ..
            } | Error::SpecialUseNotFound(_)
        )
}

/// Errors that, on a session that never connected, say the settings are
/// wrong rather than the server busy: retrying only hides the cause. The
/// phase matters: a BYE is a refusal of us only as the greeting; once
/// greeted, a BYE or a drop during the login is a restart or an admin's
/// kick, as passing as on a healthy session.
fn hopeless_on_first_contact(error: &Error, phase: Phase) -> bool {
    match (phase, error) {
        // Name resolution failed: unknown host.
        (Phase::Connect, Error::Io(_)) => crate::transport::is_unknown_host(error),
        // Not an IMAP server on that port (an SMTP banner, binary noise).
        (Phase::Connect, Error::Protocol(ProtoError::BadGreeting(_))) => true,
        // TLS against a plaintext port (the handshake fails on garbage),
        // or a STARTTLS handshake that fails the same way.
        (Phase::Connect | Phase::Login, Error::Tls(_)) => true,
        // Plaintext against a TLS port: the server waits for a ClientHello,
        // we wait for a greeting (the client state machine's timeout).
        (Phase::Connect, Error::Protocol(ProtoError::Timeout(what))) => *what == "greeting",
        // A BYE greeting that is not a "too many connections" refusal
        // (that one is `Error::Refused`).
        (Phase::Connect, Error::Bye(_)) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the client state machine raises when no greeting comes (the
    /// value the session really sees, not a look-alike).
    fn greeting_timeout() -> Error {
        Error::from(ProtoError::Timeout("greeting"))
    }

    fn cx(phase: Phase, healthy_before: bool) -> Context {
        Context {
            phase,
            healthy_before,
            missing_since: None,
            missing_grace: Duration::from_secs(300),
            now: Instant::now(),
        }
    }

    fn select_no() -> Error {
        Error::CommandFailed {
            command: "SELECT",
            text: "Mailbox doesn't exist".into(),
            temporary: false,
        }
    }

    #[test]
    fn the_table() {
        use Action::*;
        use Phase::*;
        let unknown_host = crate::transport::unknown_host(
            "no-such-host.invalid",
            std::io::Error::other("Name or service not known"),
        );
        let rows: Vec<(Error, Phase, bool, Action)> = vec![
            (Error::AuthenticationFailed("no".into()), Login, true, Fail),
            (Error::AuthenticationFailed("no".into()), Login, false, Fail),
            (Error::StartTlsUnavailable("no".into()), Login, false, Fail),
            (
                Error::TlsVerification("untrusted".into()),
                Login,
                false,
                Fail,
            ),
            (Error::Closed, Connect, false, Retry),
            (Error::Closed, Login, false, Retry),
            (Error::Closed, Watch, true, Retry),
            (Error::Refused("limit".into()), Connect, false, Retry),
            (Error::Timeout("dial"), Connect, false, Retry),
            (greeting_timeout(), Connect, false, Fail),
            (greeting_timeout(), Connect, true, Retry),
            (unknown_host.clone(), Connect, false, Fail),
            (unknown_host, Connect, true, Retry),
            (
                Error::Protocol(ProtoError::BadGreeting(crate::proto::Excerpt::new(
                    b"220 smtp",
                ))),
                Connect,
                false,
                Fail,
            ),
            (
                Error::Protocol(ProtoError::BadGreeting(crate::proto::Excerpt::new(
                    b"220 smtp",
                ))),
                Connect,
                true,
                Retry,
            ),
            (Error::Tls("garbage".into()), Connect, false, Fail),
            (Error::Tls("garbage".into()), Connect, true, Retry),
            // A STARTTLS handshake that fails: the settings, as above.
            (Error::Tls("garbage".into()), Login, false, Fail),
            (Error::Tls("garbage".into()), Login, true, Retry),
            // A BYE greeting refuses us; a BYE after it (a restart, a kick
            // during the first login) is passing, and so is a refusal.
            (Error::Bye("go away".into()), Connect, false, Fail),
            (Error::Bye("go away".into()), Connect, true, Retry),
            (Error::Bye("restarting".into()), Login, false, Retry),
            (Error::Bye("restarting".into()), Login, true, Retry),
            (Error::Refused("limit".into()), Login, false, Retry),
            (Error::Bye("go away".into()), Watch, true, Retry),
            (Error::Bye("kicked".into()), Watch, false, Retry),
            (select_no(), Select, false, Fail),
            (select_no(), Select, true, Retry),
            (no_junk(), Select, false, Fail),
            (no_junk(), Select, true, Retry),
            (
                Error::CommandFailed {
                    command: "FETCH",
                    text: "[SERVERBUG]".into(),
                    temporary: true,
                },
                Watch,
                true,
                Retry,
            ),
        ];
        for (e, phase, healthy, want) in rows {
            assert_eq!(
                decide(&e, &cx(phase, healthy)),
                want,
                "{e:?} {phase:?} {healthy}"
            );
        }
    }

    fn no_junk() -> Error {
        Error::SpecialUseNotFound(crate::proto::SpecialUse::Junk)
    }

    #[test]
    fn a_missing_mailbox_is_retried_for_the_grace_period_only() {
        for missing in [select_no(), no_junk()] {
            assert!(mailbox_missing(&missing, Phase::Select));
            let mut c = cx(Phase::Select, true);
            let t0 = c.now;
            c.missing_since = Some(t0);
            c.now = t0 + Duration::from_secs(299);
            assert_eq!(decide(&missing, &c), Action::Retry, "{missing:?}");
            c.now = t0 + Duration::from_secs(300);
            assert_eq!(decide(&missing, &c), Action::Fail, "{missing:?}");
        }
    }
}
