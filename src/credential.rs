//! Where and as whom to log in: [`Credential`], its authentication and TLS
//! settings, what decides which subscribers may share a connection, and the
//! [`SessionKey`] that names a shared session.
//!
//! Secrets live in [`Secret`], whose `Debug` prints `<redacted>` (it has no
//! `Display`), so no log line, error or `{:?}` can show them.
//!
//! A registry is shared by many callers, so a subscriber joins a live
//! session only if it would have been let in on its own: the same
//! [`Identity`] (server, user with its case kept, mailbox or special use,
//! the further folders watched on the same connection,
//! TLS mode, trust settings, kind of authentication and OAuth2 token
//! provider) and the same secret, compared through a keyed hash
//! ([`Credential::secret_fingerprint`]) in constant time. Anything else gets
//! a session, and a login, of its own.

use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::{Arc, Weak};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::Error;
pub use crate::folder::Folder;
use crate::folder::normal_mailbox;
use crate::position::{Followed, Position};
pub use crate::proto::SpecialUse;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// One IMAP login: server, user, authentication, and the mailbox watched:
/// by name ([`Credential::mailbox`]) or by special use
/// ([`Credential::special_use`]).
///
/// ```no_run
/// use emap::{Auth, Credential, SpecialUse};
/// let inbox = Credential::new("imap.example.com", "bot@example.com", Auth::password("app-password"))
///     .mailbox("INBOX");
/// // Whatever the provider calls it: `[Gmail]/Spam`, `Junk Email`, `Junk`, ...
/// let junk = inbox.clone().special_use(SpecialUse::Junk);
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
    /// The mailbox watched, by name. Default `INBOX`. Ignored while
    /// `special_use` is set.
    pub mailbox: String,
    /// When set, the mailbox watched is the one the server marks with this
    /// special-use attribute (RFC 6154), looked up with `LIST` at every
    /// connect (see [`Credential::special_use`]). Default `None`.
    pub special_use: Option<SpecialUse>,
    /// Where a new session starts instead of at UIDNEXT (see
    /// [`Credential::resume_from`]). Default: nowhere stored.
    pub resume: Resume,
    /// Further folders watched on the same connection
    /// ([`Credential::also_watch`]), in the order given. Default none.
    pub also: Vec<Folder>,
}

/// Where a new session for a credential starts: stored [`Position`]s
/// ([`Credential::resume_from`]), and for [`Handle::follow`](crate::Handle::follow)
/// where it reports. Not part of what decides sharing, except that a
/// followed session is never shared.
#[derive(Clone, Default)]
pub struct Resume {
    pub(crate) positions: Vec<Position>,
    pub(crate) tap: Option<Arc<Tap>>,
}

impl fmt::Debug for Resume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resume")
            .field("positions", &self.positions)
            .field("followed", &self.tap.is_some())
            .finish()
    }
}

/// Where a followed session reports ([`Followed`], in order): a bounded
/// channel the session closes when it ends or when the follower fell
/// `capacity` reports behind (then `overflowed` is set: reports stop rather
/// than skip a mail, and the follower starts again from what it stored).
#[derive(Debug)]
pub(crate) struct Tap {
    tx: std::sync::Mutex<Option<tokio::sync::mpsc::Sender<Followed>>>,
    overflowed: std::sync::atomic::AtomicBool,
}

impl Tap {
    pub(crate) fn new(tx: tokio::sync::mpsc::Sender<Followed>) -> Self {
        Tap {
            tx: std::sync::Mutex::new(Some(tx)),
            overflowed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Reports `event`; a full channel closes the tap (overflowed).
    pub(crate) fn send(&self, event: Followed) {
        use tokio::sync::mpsc::error::TrySendError;
        let mut tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let full = match tx.as_ref().map(|t| t.try_send(event)) {
            Some(Err(TrySendError::Full(_))) => true,
            Some(Err(TrySendError::Closed(_))) => {
                *tx = None;
                false
            }
            _ => false,
        };
        if full {
            tracing::warn!("follower too slow: reports stop; it resumes from its stored position");
            self.overflowed
                .store(true, std::sync::atomic::Ordering::SeqCst);
            *tx = None;
        }
    }

    /// No more reports: the follower's stream ends after what it holds.
    pub(crate) fn close(&self) {
        *self.tx.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Whether the follower fell too far behind.
    pub(crate) fn overflowed(&self) -> bool {
        self.overflowed.load(std::sync::atomic::Ordering::SeqCst)
    }
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
            special_use: None,
            resume: Resume::default(),
            also: Vec::new(),
        }
    }

    /// A new session for this credential starts from the stored position
    /// of its folder (the one whose [`Position::folder`] is
    /// [`Credential::folder`]) instead of UIDNEXT: the mail that arrived
    /// since is delivered once; a position under another UIDVALIDITY is
    /// void (warned, counted in `validity_changes`) and the session starts
    /// at UIDNEXT. A credential that joins a live session takes that
    /// session's position.
    pub fn resume_from(mut self, positions: Vec<Position>) -> Self {
        self.resume.positions = positions;
        self
    }

    /// The folder as a session names it in its [`Position`]: the mailbox
    /// (`INBOX` in capitals) or the special-use attribute (`\Junk`).
    pub fn folder(&self) -> String {
        self.mailbox_key()
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

    /// Sets the mailbox to watch, by name (and forgets a special use set
    /// before: the last call wins).
    pub fn mailbox(mut self, mailbox: impl Into<String>) -> Self {
        self.mailbox = mailbox.into();
        self.special_use = None;
        self
    }

    /// Watches the mailbox the server marks with `special_use` (RFC 6154),
    /// whatever it is called: `SpecialUse::Junk` finds Gmail's
    /// `[Gmail]/Spam`, Outlook's `Junk Email`, Dovecot's `Junk`, or a
    /// localized name. The last call of this and [`Credential::mailbox`]
    /// wins.
    ///
    /// At every connect the session sends `LIST "" "*" RETURN
    /// (SPECIAL-USE)` when the server advertises `SPECIAL-USE`, else a
    /// plain `LIST "" "*"`, whose attributes RFC 6154 servers fill in as
    /// well, and watches the first selectable mailbox listed with the
    /// attribute, sending its name back exactly as the server listed it.
    /// [`Mail::mailbox`](crate::Mail::mailbox) gives that name, decoded
    /// to UTF-8.
    ///
    /// When no mailbox carries the attribute, the session fails with
    /// [`Error::SpecialUseNotFound`], like a missing mailbox: at once on
    /// the first connect (`subscribe` returns it), after
    /// `Config::missing_mailbox_grace` on a session that was watching
    /// before. There is deliberately no fallback to well-known names
    /// (`Junk`, `Spam`): a guess could watch the wrong folder without a
    /// word, while the error names what is missing, and
    /// [`Credential::mailbox`] names the folder on a server without RFC
    /// 6154.
    ///
    /// A credential for a special use and one for a mailbox name are two
    /// sessions, with one connection each, even when they end up on the
    /// same folder.
    pub fn special_use(mut self, special_use: SpecialUse) -> Self {
        self.special_use = Some(special_use);
        self
    }

    /// Also watches `folder` — a name (`"Spam"`) or a [`SpecialUse`]
    /// (`SpecialUse::Junk`) — on the **same connection** as the main folder
    /// ([`Credential::mailbox`] or [`Credential::special_use`]). Call it
    /// once per folder; a folder given twice, or equal to the main folder,
    /// is watched once. So is one that the server resolves to the same
    /// mailbox as a folder before it (a special use marking a folder also
    /// watched by name): the later one is skipped with a warning, and
    /// `SessionStats::folders` names the folder it repeats (`same_as`).
    ///
    /// The session IDLEs on the main folder and, at connect and every
    /// `Config::poll_interval`, asks the server for each other folder's
    /// `STATUS (UIDNEXT UIDVALIDITY)` on the same connection; only a
    /// folder whose UIDNEXT or UIDVALIDITY moved is opened (EXAMINE), its
    /// new mail fetched, and the main folder opened again. Where the
    /// server offers NOTIFY (RFC 5465, e.g. Dovecot), it is asked to report
    /// the other folders, and a report starts the check at once instead of
    /// the timer. Each folder has its own UIDVALIDITY and watermark, so its
    /// mail is delivered once, also across reconnects. Without NOTIFY, new
    /// mail in another folder arrives within about one `poll_interval`; [`Mail::mailbox`](crate::Mail::mailbox)
    /// says which folder it came from, and [`Filter::folder`](crate::Filter::folder)
    /// picks folders.
    ///
    /// A special use is looked up with `LIST` at every connect, as for
    /// [`Credential::special_use`]. A further folder that is missing
    /// (never created, deleted, or no folder marked with the special use)
    /// does not fail the session: the main folder keeps being watched,
    /// the folder is looked for again at each check, and
    /// `SessionStats::folders` reports it missing.
    ///
    /// The folder set is part of the session's identity: two credentials
    /// that differ only in their folders are two sessions, with a
    /// connection each.
    ///
    /// ```no_run
    /// use emap::{Auth, Credential, SpecialUse};
    /// let cred = Credential::new("imap.example.com", "bot@example.com", Auth::password("pw"))
    ///     .also_watch(SpecialUse::Junk)
    ///     .also_watch("Notifications");
    /// ```
    pub fn also_watch(mut self, folder: impl Into<Folder>) -> Self {
        self.also.push(folder.into());
        self
    }

    /// The main folder, as a [`Folder`].
    pub(crate) fn main_folder(&self) -> Folder {
        match self.special_use {
            Some(u) => Folder::SpecialUse(u),
            None => Folder::Named(normal_mailbox(&self.mailbox)),
        }
    }

    /// The further folders, normalised, without repeats or the main
    /// folder, in the order first given.
    pub(crate) fn further_folders(&self) -> Vec<Folder> {
        let main = self.main_folder();
        let mut out: Vec<Folder> = Vec::new();
        for f in &self.also {
            let f = f.normal();
            if f != main && !out.contains(&f) {
                out.push(f);
            }
        }
        out
    }

    /// The further folders as the identity and key hold them: sorted, so
    /// that the order they were given in does not split a session.
    fn folder_set(&self) -> Vec<Folder> {
        let mut set = self.further_folders();
        set.sort();
        set
    }

    /// The mailbox as the session key and identity name it: the name
    /// (`INBOX` normalised), or the special-use attribute (`\Junk`), which
    /// `special_use` tells apart from a mailbox of that name.
    fn mailbox_key(&self) -> String {
        self.main_folder().to_string()
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
    /// the same fingerprint under the same `keys` present the same secret;
    /// compare fingerprints with [`same_secret`]. The secret itself is
    /// never stored a second time.
    ///
    /// `keys` is the registry's own `RandomState` (SipHash-1-3 under 128
    /// random bits in today's std), so a fingerprint means nothing outside
    /// its registry and is never shown. A wrong secret could join a session
    /// only by a 64-bit collision under keys it cannot see: about 2^-64 per
    /// attempt, each attempt otherwise costing a login the server refuses.
    pub(crate) fn secret_fingerprint(&self, keys: &std::hash::RandomState) -> u64 {
        use std::hash::BuildHasher;
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
                mechanism.hash(&mut h);
                Arc::as_ptr(provider).cast::<()>().addr().hash(&mut h);
            }
        }
        h.finish()
    }

    /// Everything but the secret that must be equal for two credentials to
    /// share a session.
    pub(crate) fn identity(&self) -> Identity {
        let trust = match (self.tls, &self.tls_config.client_config) {
            (TlsMode::None, _) => Trust::NoTls,
            (_, Some(config)) => Trust::Custom(ByAddress::of(config)),
            (_, None) => Trust::Roots(self.tls_config.extra_roots.clone()),
        };
        let auth = match &self.auth {
            Auth::Password(_) => AuthKind::Password,
            Auth::OAuth2 {
                mechanism,
                provider,
            } => AuthKind::OAuth2 {
                mechanism: *mechanism,
                provider: ByAddress::of(provider),
            },
        };
        Identity {
            host: self.host.to_ascii_lowercase(),
            port: self.port,
            user: self.user.clone(),
            mailbox: self.mailbox_key(),
            special_use: self.special_use,
            also: self.folder_set(),
            tls: self.tls,
            trust,
            auth,
            followed: self.resume.tap.as_ref().map(ByAddress::of),
        }
    }

    /// The name of session `instance` (the registry's number for it) made
    /// with this credential.
    pub(crate) fn session_key(&self, instance: u64) -> SessionKey {
        SessionKey {
            host: self.host.to_ascii_lowercase(),
            port: self.port,
            user: self.user.clone(),
            mailbox: self.mailbox_key(),
            special_use: self.special_use,
            also: self.folder_set(),
            instance,
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
        for f in &self.also {
            if let Folder::Named(n) = f {
                check_value("mailbox", n.as_bytes())?;
                if n.is_empty() {
                    return Err(Error::InvalidConfig("a folder name is empty".into()));
                }
            }
        }
        if let Auth::Password(p) = &self.auth {
            check_value("password", p.expose().as_bytes())?;
        }
        Ok(())
    }
}

/// Whether two secret fingerprints ([`Credential::secret_fingerprint`])
/// are equal, in a time that does not depend on where they differ.
pub(crate) fn same_secret(a: u64, b: u64) -> bool {
    // One word: XOR and a test of zero, kept from being turned into an
    // early-exit comparison.
    std::hint::black_box(a ^ b) == 0
}

/// Everything but the secret that must be equal for two credentials to
/// share a session: the server (host case-insensitive, as in DNS), the
/// user (case kept: some servers tell `Bot` from `bot`), the mailbox
/// (`INBOX` case-insensitive) or special use (never equal to a mailbox
/// name, even `\Junk`), the further folders as a set, the TLS mode, the trust settings and the
/// kind of authentication with, for OAuth2, the token provider. It holds no
/// secret: the registry stores it beside the secret's keyed fingerprint.
///
/// Trust settings are compared so that no caller rides on a connection
/// verified more laxly — or more strictly — than it asked for: extra roots
/// by value (the same certificates in the same order), a caller-built
/// rustls config by identity (the same `Arc`), since a config holds
/// verifier objects that cannot be compared. Two equal configs in two
/// `Arc`s make two sessions; share one `Arc` (or clone the credential) to
/// share a connection. Token providers are compared by identity too: the
/// same `Auth` (cloned) shares, another closure never does.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Identity {
    host: String,
    port: u16,
    user: String,
    mailbox: String,
    special_use: Option<SpecialUse>,
    also: Vec<Folder>,
    tls: TlsMode,
    trust: Trust,
    auth: AuthKind,
    /// A followed session's report channel: never shared.
    followed: Option<ByAddress<Tap>>,
}

impl Identity {
    /// Whether this is a followed session's identity
    /// ([`Handle::follow`](crate::Handle::follow)): its tap is its own, so
    /// no other subscriber ever joins it.
    pub(crate) fn followed(&self) -> bool {
        self.followed.is_some()
    }

    /// This identity without the follower's tap: the key a permanent
    /// failure is remembered under, so that it applies to every `follow`
    /// (each makes a new tap) and to `subscribe` alike.
    pub(crate) fn for_failures(&self) -> Identity {
        Identity {
            followed: None,
            ..self.clone()
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let trust = match &self.trust {
            Trust::NoTls => "none".to_owned(),
            Trust::Roots(r) => format!("webpki + {} extra roots", r.len()),
            Trust::Custom(_) => "custom rustls config".to_owned(),
        };
        let auth = match &self.auth {
            AuthKind::Password => "password".to_owned(),
            AuthKind::OAuth2 { mechanism, .. } => format!("{mechanism:?}"),
        };
        f.debug_struct("Identity")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("mailbox", &self.mailbox)
            .field("special_use", &self.special_use)
            .field("also", &self.also)
            .field("tls", &self.tls)
            .field("trust", &trust)
            .field("auth", &auth)
            .finish()
    }
}

/// Whom a TLS connection trusts.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Trust {
    /// `TlsMode::None`: no TLS, so no trust settings apply.
    NoTls,
    /// The webpki roots plus these (by value, in order).
    Roots(Vec<CertificateDer<'static>>),
    /// A caller-built rustls config, by identity.
    Custom(ByAddress<rustls::ClientConfig>),
}

/// How a credential authenticates, without the secret.
#[derive(Clone, PartialEq, Eq, Hash)]
enum AuthKind {
    /// A password (its fingerprint decides).
    Password,
    /// OAuth2 with this mechanism and this token provider.
    OAuth2 {
        mechanism: OAuthMechanism,
        provider: ByAddress<dyn Fn() -> TokenFuture + Send + Sync>,
    },
}

/// A shared value compared and hashed by its address. It holds a `Weak`, so
/// that while the identity exists (in a live session or the registry's
/// failure memory) the allocation — and so the address — cannot be reused
/// by another value, without keeping the value itself alive.
struct ByAddress<T: ?Sized>(Weak<T>);

impl<T: ?Sized> ByAddress<T> {
    fn of(arc: &Arc<T>) -> Self {
        ByAddress(Arc::downgrade(arc))
    }

    fn addr(&self) -> usize {
        self.0.as_ptr().cast::<()>().addr()
    }
}

impl<T: ?Sized> Clone for ByAddress<T> {
    fn clone(&self) -> Self {
        ByAddress(self.0.clone())
    }
}

impl<T: ?Sized> PartialEq for ByAddress<T> {
    fn eq(&self, other: &Self) -> bool {
        self.addr() == other.addr()
    }
}

impl<T: ?Sized> Eq for ByAddress<T> {}

impl<T: ?Sized> Hash for ByAddress<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.addr().hash(state);
    }
}

/// Names one shared session: `user@host:port/mailbox #instance`, or with
/// further folders `user@host:port/mailbox+folder+folder #instance`.
///
/// Several sessions can serve the same user, server and mailbox at once —
/// credentials that differ in secret, TLS mode, trust settings or token
/// provider never share one — so the registry's number for the session
/// (`instance`) tells them apart. A key carries nothing of the secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub struct SessionKey {
    /// Lower-cased host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// The user name, as given (case kept).
    pub user: String,
    /// Mailbox (`INBOX` normalised), or for a credential watching a special
    /// use, its attribute (`\Junk`).
    pub mailbox: String,
    /// The special use watched, if the credential names one
    /// ([`Credential::special_use`]): it tells `\Junk` the special use from
    /// a mailbox named `\Junk`.
    pub special_use: Option<SpecialUse>,
    /// The further folders watched on the same connection
    /// ([`Credential::also_watch`]): normalised, sorted, without repeats.
    pub also: Vec<Folder>,
    /// The registry's number for this session, unique within the registry.
    pub instance: u64,
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}:{}/{}",
            self.user, self.host, self.port, self.mailbox
        )?;
        for folder in &self.also {
            write!(f, "+{folder}")?;
        }
        write!(f, " #{}", self.instance)
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

    /// Whether `a` may join `b`'s session under the registry's `keys`.
    fn joins(a: &Credential, b: &Credential, keys: &std::hash::RandomState) -> bool {
        a.identity() == b.identity()
            && same_secret(a.secret_fingerprint(keys), b.secret_fingerprint(keys))
    }

    #[test]
    fn only_the_same_server_user_mailbox_and_secret_join() {
        let keys = std::hash::RandomState::new();
        let a = Credential::new("IMAP.Example.com", "bot@example.com", Auth::password("s-a"))
            .mailbox("inbox");
        let b = Credential::new("imap.example.com", "bot@example.com", Auth::password("s-a"));
        // Host and INBOX are case-insensitive.
        assert!(joins(&a, &b, &keys));
        assert!(joins(&a, &a.clone(), &keys));
        // The secret decides.
        let wrong = Credential::new("imap.example.com", "bot@example.com", Auth::password("s-b"));
        assert_eq!(a.identity(), wrong.identity());
        assert!(!joins(&a, &wrong, &keys));
        // The user's case is kept.
        let upper = Credential::new("imap.example.com", "Bot@example.com", Auth::password("s-a"));
        assert!(!joins(&a, &upper, &keys));
        assert!(!joins(&a, &b.clone().mailbox("Other"), &keys));
        assert!(!joins(&a, &b.clone().port(143), &keys));
        // Another registry's keys give other fingerprints.
        let other = std::hash::RandomState::new();
        assert_ne!(a.secret_fingerprint(&keys), a.secret_fingerprint(&other));
    }

    #[test]
    fn tls_mode_and_trust_settings_decide_too() {
        let keys = std::hash::RandomState::new();
        let base = Credential::new("h", "u", Auth::password("p"));
        for mode in [TlsMode::StartTls, TlsMode::None] {
            assert!(!joins(&base, &base.clone().tls(mode), &keys), "{mode:?}");
        }
        // Extra roots by value.
        let cert = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
        let mut roots = base.clone();
        roots.tls_config.extra_roots.push(cert.clone());
        let mut same_roots = base.clone();
        same_roots.tls_config.extra_roots.push(cert);
        assert!(!joins(&base, &roots, &keys));
        assert!(joins(&roots, &same_roots, &keys));
        // A custom config by identity: the same Arc joins, an equal one
        // in another Arc does not.
        let config = || {
            Arc::new(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
            )
        };
        let shared = config();
        let custom = base.clone().rustls_config(shared.clone());
        assert!(!joins(&base, &custom, &keys));
        assert!(joins(&custom, &base.clone().rustls_config(shared), &keys));
        assert!(!joins(
            &custom,
            &base.clone().rustls_config(config()),
            &keys
        ));
        // Without TLS, trust settings are not used and do not matter.
        let plain = base.clone().tls(TlsMode::None);
        assert!(joins(&plain, &custom.clone().tls(TlsMode::None), &keys));
    }

    #[test]
    fn oauth2_joins_only_with_the_same_provider() {
        let keys = std::hash::RandomState::new();
        let provider = || async { Ok(Secret::new("tok")) };
        let auth = Auth::oauth2(provider);
        let a = Credential::new("h", "u", auth.clone());
        assert!(joins(&a, &Credential::new("h", "u", auth), &keys));
        let other = Credential::new("h", "u", Auth::oauth2(provider));
        assert!(!joins(&a, &other, &keys));
        let bearer = Credential::new("h", "u", Auth::oauthbearer(provider));
        assert!(!joins(&a, &bearer, &keys));
        assert!(!joins(
            &a,
            &Credential::new("h", "u", Auth::password("tok")),
            &keys
        ));
    }

    #[test]
    fn an_identity_keeps_its_address_while_it_lives() {
        // The Weak inside pins the allocation: a provider dropped while its
        // identity lives cannot be replaced by another at the same address.
        let a = Credential::new("h", "u", Auth::oauth2(|| async { Ok(Secret::new("t")) }));
        let id = a.identity();
        drop(a);
        for _ in 0..64 {
            let b = Credential::new("h", "u", Auth::oauth2(|| async { Ok(Secret::new("t")) }));
            assert_ne!(id, b.identity());
        }
    }

    #[test]
    fn keys_and_identities_show_no_secret() {
        let c = Credential::new("h", "u", Auth::password("hunter2"));
        let key = c.session_key(7);
        let shown = format!("{key} {key:?} {:?}", c.identity());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(key.to_string(), "u@h:993/INBOX #7");
        assert!(same_secret(5, 5) && !same_secret(5, 4));
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

    #[test]
    fn a_special_use_is_its_own_session_and_never_a_mailbox_of_that_name() {
        let keys = std::hash::RandomState::new();
        let inbox = Credential::new("h", "u", Auth::password("p"));
        let junk = inbox.clone().special_use(SpecialUse::Junk);
        // Named `\Junk`: a different mailbox from the special use.
        let named = inbox.clone().mailbox("\\Junk");
        assert!(!joins(&junk, &inbox, &keys));
        assert!(!joins(&junk, &named, &keys));
        assert!(!joins(
            &junk,
            &inbox.clone().special_use(SpecialUse::Trash),
            &keys
        ));
        // The mailbox field is ignored while a special use is set.
        assert!(joins(
            &junk,
            &inbox.clone().mailbox("Other").special_use(SpecialUse::Junk),
            &keys
        ));
        let (kj, kn) = (junk.session_key(1), named.session_key(1));
        assert_eq!(kj.mailbox, kn.mailbox);
        assert_ne!(kj, kn);
        assert_eq!(kj.special_use, Some(SpecialUse::Junk));
        assert_eq!(kj.to_string(), "u@h:993/\\Junk #1");
        // The last of `mailbox` and `special_use` wins.
        let back = junk.clone().mailbox("INBOX");
        assert_eq!(back.special_use, None);
        assert!(joins(&back, &inbox, &keys));
    }

    #[test]
    fn the_folder_set_is_part_of_the_identity_and_the_key() {
        let keys = std::hash::RandomState::new();
        let inbox = Credential::new("h", "u", Auth::password("p"));
        let with_junk = inbox.clone().also_watch(SpecialUse::Junk);
        // Differing only in folders: two sessions.
        assert!(!joins(&inbox, &with_junk, &keys));
        assert!(!joins(&with_junk, &inbox.clone().also_watch("Junk"), &keys));
        assert!(!joins(
            &with_junk,
            &with_junk.clone().also_watch("Spam"),
            &keys
        ));
        // A set: order, repeats, INBOX's case and the main folder itself
        // do not matter.
        let a = inbox
            .clone()
            .also_watch("Spam")
            .also_watch(SpecialUse::Junk);
        let b = inbox
            .clone()
            .also_watch(SpecialUse::Junk)
            .also_watch("Spam")
            .also_watch("Spam")
            .also_watch("inbox");
        assert!(joins(&a, &b, &keys));
        assert_eq!(a.session_key(1), b.session_key(1));
        assert_eq!(
            b.further_folders(),
            vec![
                Folder::SpecialUse(SpecialUse::Junk),
                Folder::Named("Spam".into())
            ]
        );
        // A special-use main folder named again as a further one.
        let junk = inbox.clone().special_use(SpecialUse::Junk);
        assert!(joins(
            &junk,
            &junk.clone().also_watch(SpecialUse::Junk),
            &keys
        ));
        let key = a.session_key(3);
        assert_eq!(key.to_string(), "u@h:993/INBOX+Spam+\\Junk #3");
        assert_ne!(key, inbox.session_key(3));
    }

    #[test]
    fn further_folder_names_are_validated() {
        let c = Credential::new("h", "u", Auth::password("p")).also_watch("Junk\r\nA1 LOGOUT");
        assert!(matches!(c.validate(), Err(Error::InvalidInput(_))));
        let c = Credential::new("h", "u", Auth::password("p")).also_watch("");
        assert!(matches!(c.validate(), Err(Error::InvalidConfig(_))));
    }
}
