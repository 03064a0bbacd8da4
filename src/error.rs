//! The crate's error type and its transient / permanent classification.
//!
//! A session reconnects after a transient error (with backoff) and gives up
//! for good after a permanent one, reporting it to its subscribers. Errors
//! carry no secrets: passwords and tokens never reach a message, and server
//! text is kept only where the server wrote it for humans.

use std::io;
use std::sync::Arc;

use crate::proto::{Code, ProtoError, encode::InputError};

/// Everything that can go wrong in emap.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A socket error: connection refused, reset, unreachable, ...
    #[error("I/O error: {0}")]
    Io(Arc<io::Error>),
    /// The server closed the connection without a `* BYE`.
    #[error("connection closed by the server")]
    Closed,
    /// A timeout: `"dial"`, `"TLS handshake"`, `"greeting"`, `"command
    /// response"`, ...
    #[error("timed out waiting for the {0}")]
    Timeout(&'static str),
    /// The server said `* BYE` (shutting down, idle too long, kicked, or
    /// refusing the connection).
    #[error("server closed the session: {0}")]
    Bye(String),
    /// The server refused the connection or login for now: too many
    /// connections (`NO [LIMIT]`, Gmail's `[ALERT] Too many simultaneous
    /// connections`), `[UNAVAILABLE]`, or a BYE greeting. Worth retrying
    /// after a backoff.
    #[error("server refused for now: {0}")]
    Refused(String),
    /// The TLS handshake failed for a reason other than certificate
    /// verification (garbage from the server, protocol mismatch).
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// The server's certificate did not verify against the trusted roots.
    #[error("TLS certificate verification failed: {0}")]
    TlsVerification(String),
    /// `TlsMode::StartTls` was asked for but the server does not offer
    /// STARTTLS or refused it. emap never continues in plaintext.
    #[error("STARTTLS is not available: {0}")]
    StartTlsUnavailable(String),
    /// The server rejected the credentials.
    #[error("authentication failed: {0}")]
    AuthenticationFailed(String),
    /// The server offers no authentication method emap can use with this
    /// credential (e.g. LOGINDISABLED and no AUTH=PLAIN).
    #[error("no usable authentication method: {0}")]
    NoAuthMethod(String),
    /// The OAuth2 token provider failed.
    #[error("OAuth2 token provider failed: {0}")]
    Token(String),
    /// A command failed with NO or BAD (e.g. SELECT of a mailbox that does
    /// not exist).
    #[error("{command} failed: {text}")]
    CommandFailed {
        /// Which command.
        command: &'static str,
        /// The server's text.
        text: String,
        /// Whether the server marked it temporary (`[UNAVAILABLE]`,
        /// `[LIMIT]`, `[INUSE]`, `[SERVERBUG]`).
        temporary: bool,
    },
    /// No mailbox on the server carries the special-use attribute the
    /// credential asked for ([`Credential::special_use`](crate::Credential::special_use)):
    /// the server does not mark one (no RFC 6154 support, or no such
    /// folder). Permanent like a missing mailbox: name the folder with
    /// [`Credential::mailbox`](crate::Credential::mailbox) instead.
    #[error("no mailbox is marked {0} on this server")]
    SpecialUseNotFound(crate::proto::SpecialUse),
    /// A further folder the credential watches
    /// ([`Credential::also_watch`](crate::Credential::also_watch)), given by
    /// name, was refused by the server (`STATUS` answered NO without
    /// marking it temporary: the folder does not exist, or the user may
    /// not read it). Reported by [`test_login`](crate::test_login), so that
    /// a typo in a folder name is found before mail fails to arrive; a
    /// running session instead counts the folder missing and looks again
    /// (see [`FolderStats`](crate::FolderStats)). Permanent.
    #[error("the watched folder {folder:?} was not found: {text}")]
    FolderNotFound {
        /// The folder's name, as given to `also_watch`.
        folder: String,
        /// The server's text.
        text: String,
    },
    /// The server broke the protocol, or a limit was reached.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtoError),
    /// A user-supplied value cannot be sent (CR, LF or NUL in it).
    #[error(transparent)]
    InvalidInput(#[from] InputError),
    /// `wait_for` saw no matching mail in time.
    #[error("no matching mail within the timeout")]
    WaitTimedOut,
    /// The registry was shut down.
    #[error("the registry is shut down")]
    Shutdown,
    /// The configuration or credential is not usable.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
}

impl Error {
    /// Whether retrying later may succeed: network trouble, timeouts,
    /// server-side refusals for now, protocol breakage. A session
    /// reconnects after these, with backoff.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Io(_)
            | Error::Closed
            | Error::Timeout(_)
            | Error::Bye(_)
            | Error::Refused(_)
            | Error::Tls(_)
            | Error::Token(_)
            | Error::Protocol(_)
            | Error::WaitTimedOut => true,
            Error::CommandFailed { temporary, .. } => *temporary,
            Error::TlsVerification(_)
            | Error::StartTlsUnavailable(_)
            | Error::AuthenticationFailed(_)
            | Error::NoAuthMethod(_)
            | Error::InvalidInput(_)
            | Error::InvalidConfig(_)
            | Error::SpecialUseNotFound(_)
            | Error::FolderNotFound { .. }
            | Error::Shutdown => false,
        }
    }

    /// The opposite of [`Error::is_transient`]: retrying will not help until
    /// the credential or configuration changes.
    pub fn is_permanent(&self) -> bool {
        !self.is_transient()
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        if let Some(tls) = e.get_ref().and_then(|r| r.downcast_ref::<rustls::Error>()) {
            return Error::from_tls(tls);
        }
        Error::Io(Arc::new(e))
    }
}

impl Error {
    pub(crate) fn from_tls(e: &rustls::Error) -> Self {
        match e {
            rustls::Error::InvalidCertificate(_) | rustls::Error::InvalidCertRevocationList(_) => {
                Error::TlsVerification(e.to_string())
            }
            _ => Error::Tls(e.to_string()),
        }
    }
}

/// Whether a NO / BYE text and code mean "too many connections" or
/// "temporarily unavailable" rather than "wrong credentials".
pub(crate) fn is_refusal(code: Option<&Code>, text: &str) -> bool {
    match code {
        Some(Code::Limit | Code::Unavailable) => return true,
        Some(Code::Other { name, .. })
            if matches!(name.as_str(), "INUSE" | "SERVERBUG" | "OVERQUOTA") =>
        {
            return name != "OVERQUOTA";
        }
        _ => {}
    }
    let t = text.to_ascii_lowercase();
    t.contains("too many simultaneous connections")
        || t.contains("too many connections")
        // Cyrus: `NO Too many open connections (15 of 15 for u)`.
        || t.contains("too many open connections")
        || t.contains("maximum number of connections")
        || t.contains("try again later")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert!(Error::Timeout("greeting").is_transient());
        assert!(Error::Refused("x".into()).is_transient());
        assert!(Error::AuthenticationFailed("x".into()).is_permanent());
        assert!(Error::TlsVerification("x".into()).is_permanent());
        assert!(Error::StartTlsUnavailable("x".into()).is_permanent());
        assert!(Error::from(io::Error::from(io::ErrorKind::ConnectionReset)).is_transient());
        let tls = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert!(matches!(Error::from(tls), Error::TlsVerification(_)));
    }

    #[test]
    fn refusals() {
        assert!(is_refusal(
            Some(&Code::Limit),
            "Maximum number of connections from user+IP exceeded"
        ));
        assert!(is_refusal(
            Some(&Code::Alert),
            "Too many simultaneous connections. (Failure)"
        ));
        assert!(is_refusal(Some(&Code::Unavailable), "Temporary failure"));
        // Cyrus 3.6's reply over its per-user cap (no response code).
        assert!(is_refusal(
            None,
            "Too many open connections (15 of 15 for u)"
        ));
        assert!(!is_refusal(
            Some(&Code::AuthenticationFailed),
            "Authentication failed."
        ));
        assert!(!is_refusal(None, "Invalid credentials"));
    }
}
