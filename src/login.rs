//! The one-shot credential check: connect, authenticate, LOGOUT.
//!
//! Used by sign-up flows to validate an inbox before relying on it, and by
//! `examples/login.rs` on the command line. It opens its own connection and
//! does not touch any running session.

use crate::connection::Connection;
use crate::transport::Tls;
use crate::{Config, Credential, Error, MailboxAccess, TlsMode};

/// Connects, authenticates and logs out with the default [`Config`].
///
/// Succeeds only when the server accepted the credential and the mailbox
/// can be opened read-only (EXAMINE), so a typo in the mailbox name is
/// caught too; a special-use credential ([`Credential::special_use`]) is
/// looked up as a session would, so a server without that folder answers
/// [`Error::SpecialUseNotFound`].
///
/// ```no_run
/// # async fn demo() -> Result<(), emap::Error> {
/// let cred = emap::Credential::new("imap.example.com", "bot@example.com", emap::Auth::password("secret"));
/// emap::test_login(&cred).await?;
/// # Ok(()) }
/// ```
pub async fn test_login(cred: &Credential) -> Result<(), Error> {
    test_login_with(cred, &Config::default()).await
}

/// [`test_login`] with explicit timeouts and limits.
pub async fn test_login_with(cred: &Credential, config: &Config) -> Result<(), Error> {
    config.validate()?;
    let tls = match cred.tls {
        TlsMode::None => None,
        _ => Some(Tls::new(&cred.tls_config)?),
    };
    let mut conn = Connection::open(cred, config, tls.as_ref()).await?;
    crate::watcher::open_mailbox(&mut conn, cred, MailboxAccess::ReadOnly).await?;
    conn.logout().await
}
