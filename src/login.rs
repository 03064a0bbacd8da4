//! The one-shot credential check: connect, authenticate, find every
//! watched folder, LOGOUT.
//!
//! Used by sign-up flows to validate an inbox before relying on it, and by
//! `examples/login.rs` on the command line. It opens its own connection and
//! does not touch any running session. It finds the folders the way a
//! session does, so that what it accepts a session can watch: a running
//! session only counts a missing further folder and looks again, which
//! leaves a user whose folder name is wrong waiting for mail that never
//! comes.

use crate::connection::Connection;
use crate::credential::Folder;
use crate::proto::Status;
use crate::transport::Tls;
use crate::{Config, Credential, Error, MailboxAccess, TlsMode};

/// Connects, authenticates and logs out with the default [`Config`].
///
/// Succeeds only when the server accepted the credential and every folder
/// the credential watches is there, found as a session finds it:
/// - the main folder is opened read-only (EXAMINE), so a typo in the
///   mailbox name is caught ([`Error::CommandFailed`]); a special-use
///   credential ([`Credential::special_use`]) is looked up with `LIST`, so
///   a server without that folder answers [`Error::SpecialUseNotFound`];
/// - each further folder ([`Credential::also_watch`]) given by name is
///   asked for its `STATUS`: refused, [`Error::FolderNotFound`] names it
///   (a NO the server marks temporary, such as `[UNAVAILABLE]`, is a
///   transient [`Error::CommandFailed`] instead); one given by special use
///   must be listed with that attribute by `LIST`, else
///   [`Error::SpecialUseNotFound`] names the attribute.
///
/// The first folder missing, in the order given, is the one reported.
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
    find_further_folders(&mut conn, cred).await?;
    conn.logout().await
}

/// Finds each further folder of `cred` as a session would: a name by its
/// `STATUS (UIDNEXT UIDVALIDITY)`, a special use among the mailboxes one
/// `LIST` returns (the main folder is selected meanwhile, as in a session).
async fn find_further_folders(conn: &mut Connection, cred: &Credential) -> Result<(), Error> {
    let folders = cred.further_folders();
    let mut listed = None;
    for folder in &folders {
        match folder {
            Folder::Named(name) => {
                let done = conn
                    .run(|c, now| c.status(name, "UIDNEXT UIDVALIDITY", now))
                    .await?;
                if done.status == Status::Ok {
                    continue;
                }
                if crate::error::is_refusal(done.code.as_ref(), &done.text) {
                    return Err(Error::CommandFailed {
                        command: "STATUS",
                        text: done.text,
                        temporary: true,
                    });
                }
                return Err(Error::FolderNotFound {
                    folder: name.clone(),
                    text: done.text,
                });
            }
            Folder::SpecialUse(special_use) => {
                if listed.is_none() {
                    listed = Some(crate::watcher::list_special_uses(conn).await?);
                }
                let entries = listed.as_deref().unwrap_or_default();
                if !entries
                    .iter()
                    .any(|e| e.is_selectable() && e.has_attribute(special_use.attribute()))
                {
                    return Err(Error::SpecialUseNotFound(*special_use));
                }
            }
        }
    }
    Ok(())
}
