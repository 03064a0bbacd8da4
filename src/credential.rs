//! Where and as whom to log in: [`Credential`], its authentication and TLS
//! settings, and the session key that decides which subscribers share a
//! connection.
//!
//! Secrets live in [`Secret`], whose `Debug` and `Display` print
//! `<redacted>`, so no log line, error or `{:?}` can show them.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::Error;

/// A password or token. Its `Debug` output is `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself: for the wire only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret::new(s)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

/// The future an OAuth2 token provider returns.
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<Secret, String>> + Send>>;

/// Asked for a fresh OAuth2 access token at each connect.
pub type TokenProvider = Arc<dyn Fn() -> TokenFuture + Send + Sync>;

/// Which SASL mechanism carries an OAuth2 token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthMechanism {
    /// XOAUTH2 (Gmail, Microsoft 365).
    XOAuth2,
    /// OAUTHBEARER (RFC 7628).
    OAuthBearer,
}

/// How to authenticate.
#[derive(Clone)]
pub enum Auth {
    /// A password: AUTHENTICATE PLAIN when advertised, else LOGIN.
    Password(Secret),
    /// An OAuth2 bearer token, fetched fresh from the provider at each
    /// connect.
    OAuth2 {
        /// The SASL mechanism.
        mechanism: OAuthMechanism,
        /// Produces the token.
        provider: TokenProvider,
    },
}

impl Auth {
    /// Password authentication.
    pub fn password(p: impl Into<Secret>) -> Self {
        Auth::Password(p.into())
    }

    /// OAuth2 with XOAUTH2; `provider` is called at each connect.
    ///
    /// ```no_run
    /// let auth = emap::Auth::oauth2(|| async { Ok(emap::Secret::new("ya29.token")) });
    /// ```
    pub fn oauth2<F, Fut>(provider: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Secret, String>> + Send + 'static,
    {
        Auth::with_provider(OAuthMechanism::XOAuth2, provider)
    }

    /// OAuth2 with OAUTHBEARER (RFC 7628); `provider` is called at each
    /// connect.
    pub fn oauthbearer<F, Fut>(provider: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Secret, String>> + Send + 'static,
    {
        Auth::with_provider(OAuthMechanism::OAuthBearer, provider)
    }

    /// OAuth2 with the given mechanism; `provider` is called at each
    /// connect.
    pub fn with_provider<F, Fut>(mechanism: OAuthMechanism, provider: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Secret, String>> + Send + 'static,
    {
        Auth::OAuth2 {
            mechanism,
            provider: Arc::new(move || Box::pin(provider())),
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Password(_) => f.write_str("Password(<redacted>)"),
            Auth::OAuth2 { mechanism, .. } => write!(f, "OAuth2({mechanism:?})"),
        }
    }
}

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsMode {
    /// TLS from the first byte (port 993).
    Implicit,
    /// Plaintext, then STARTTLS before anything else (port 143). If the
    /// server does not offer STARTTLS or refuses it, the connection fails:
    /// emap never continues in plaintext.
    StartTls,
    /// No TLS at all. Only for servers on the local machine or a trusted
    /// network: the password crosses the wire in clear.
    None,
}

/// TLS trust settings.
#[derive(Clone, Default)]
pub struct TlsConfig {
    /// Extra root certificates trusted besides the webpki roots.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// A caller-built rustls configuration; when set, it is used as is and
    /// `extra_roots` is ignored.
    pub client_config: Option<Arc<rustls::ClientConfig>>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("extra_roots", &self.extra_roots.len())
            .field("client_config", &self.client_config.is_some())
            .finish()
    }
}

/// One IMAP login: server, user, authentication, mailbox.
///
/// ```no_run
/// use emap::{Auth, Credential};
/// let cred = Credential::new("imap.example.com", "bot@example.com", Auth::password("app-password"))
///     .mailbox("INBOX");
/// ```
#[derive(Clone, Debug)]
pub struct Credential {
    /// The server's host name (also the TLS server name).
    pub host: String,
    /// The server's port. Default 993.
    pub port: u16,
    /// How the connection is protected. Default [`TlsMode::Implicit`].
    pub tls: TlsMode,
    /// TLS trust settings.
    pub tls_config: TlsConfig,
    /// The user name.
    pub user: String,
    /// How to authenticate.
    pub auth: Auth,
    /// The mailbox watched. Default `INBOX`.
    pub mailbox: String,
}

impl Credential {
    /// A credential for `host:993` with implicit TLS, watching `INBOX`.
    pub fn new(host: impl Into<String>, user: impl Into<String>, auth: Auth) -> Self {
        Credential {
            host: host.into(),
            port: 993,
            tls: TlsMode::Implicit,
            tls_config: TlsConfig::default(),
            user: user.into(),
            auth,
            mailbox: "INBOX".to_owned(),
        }
    }

    /// Sets the port.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Sets the TLS mode.
    pub fn tls(mut self, mode: TlsMode) -> Self {
        self.tls = mode;
        self
    }

    /// Sets the mailbox to watch.
    pub fn mailbox(mut self, mailbox: impl Into<String>) -> Self {
        self.mailbox = mailbox.into();
        self
    }

    /// Trusts the root certificates in `pem` (one or more PEM blocks) in
    /// addition to the webpki roots.
    pub fn add_root_pem(mut self, pem: &[u8]) -> Result<Self, Error> {
        let mut n = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert =
                cert.map_err(|e| Error::InvalidConfig(format!("bad PEM certificate: {e}")))?;
            self.tls_config.extra_roots.push(cert);
            n += 1;
        }
        if n == 0 {
            return Err(Error::InvalidConfig("no certificate in PEM input".into()));
        }
        Ok(self)
    }

    /// Uses a caller-built rustls configuration.
    pub fn rustls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls_config.client_config = Some(config);
        self
    }

    /// A keyed hash of what authenticates this credential: the password,
    /// or the identity of the OAuth2 token provider. Two credentials with
    /// the same fingerprint under the same `keys` present the same secret.
    /// The secret itself is never stored a second time.
    pub(crate) fn secret_fingerprint(&self, keys: &std::hash::RandomState) -> u64 {
        use std::hash::{BuildHasher, Hash, Hasher};
        let mut h = keys.build_hasher();
        match &self.auth {
            Auth::Password(p) => {
                0u8.hash(&mut h);
                p.expose().hash(&mut h);
            }
            Auth::OAuth2 {
                mechanism,
                provider,
            } => {
                1u8.hash(&mut h);
                (*mechanism as u8).hash(&mut h);
                (Arc::as_ptr(provider) as *const () as usize).hash(&mut h);
            }
        }
        h.finish()
    }

    /// The key that decides which subscribers share one connection: host,
    /// port, lower-cased user and mailbox — never the secret.
    pub fn key(&self) -> SessionKey {
        SessionKey {
            host: self.host.to_ascii_lowercase(),
            port: self.port,
            user: self.user.to_lowercase(),
            mailbox: if self.mailbox.eq_ignore_ascii_case("INBOX") {
                "INBOX".to_owned()
            } else {
                self.mailbox.clone()
            },
        }
    }

    /// Checks the values that will be sent to the server.
    pub fn validate(&self) -> Result<(), Error> {
        use crate::proto::encode::check_value;
        if self.host.is_empty() {
            return Err(Error::InvalidConfig("host is empty".into()));
        }
        check_value("user name", self.user.as_bytes())?;
        check_value("mailbox", self.mailbox.as_bytes())?;
        if let Auth::Password(p) = &self.auth {
            check_value("password", p.expose().as_bytes())?;
        }
        Ok(())
    }
}

/// Identifies one shared session: `user@host:port/mailbox`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    /// Lower-cased host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Lower-cased user name.
    pub user: String,
    /// Mailbox (`INBOX` normalised).
    pub mailbox: String,
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}:{}/{}",
            self.user, self.host, self.port, self.mailbox
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        let c = Credential::new("h", "u", Auth::password("hunter2"));
        let d = format!("{c:?}");
        assert!(!d.contains("hunter2"), "{d}");
        assert!(d.contains("redacted"));
        let c = Credential::new(
            "h",
            "u",
            Auth::oauth2(|| async { Ok(Secret::new("tok-123")) }),
        );
        assert!(!format!("{c:?}").contains("tok-123"));
    }

    #[test]
    fn key_ignores_case_of_user_and_host_and_the_secret() {
        let a = Credential::new(
            "IMAP.Example.com",
            "Bot@Example.com",
            Auth::password("secret-a"),
        )
        .mailbox("inbox");
        let b = Credential::new(
            "imap.example.com",
            "bot@example.com",
            Auth::password("secret-b"),
        );
        assert_eq!(a.key(), b.key());
        assert_ne!(a.key(), b.clone().mailbox("Other").key());
        assert_ne!(a.key(), b.port(143).key());
        assert!(!format!("{} {:?}", a.key(), a.key()).contains("secret"));
    }

    #[test]
    fn validate_refuses_injection() {
        let c = Credential::new("h", "u\r\nA1 LOGOUT", Auth::password("p"));
        assert!(matches!(c.validate(), Err(Error::InvalidInput(_))));
        let c = Credential::new("h", "u", Auth::password("p\0"));
        let e = c.validate().unwrap_err();
        assert!(e.is_permanent());
        assert!(!e.to_string().contains("p\0"));
    }

    #[test]
    fn bad_pem_is_refused() {
        let c = Credential::new("h", "u", Auth::password("p"));
        assert!(c.clone().add_root_pem(b"not a pem").is_err());
    }
}
