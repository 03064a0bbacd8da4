//! Where a session stands, as the user sees it: a [`Position`] per folder,
//! and what a followed session reports ([`Followed`]).
//!
//! The values behind `Handle::follow` and `Credential::resume_from`: a
//! process that stores positions (the NATS bridge, after each publish is
//! acknowledged) resumes from them after a restart. Apart from the
//! tracker (`src/tracker.rs`), which holds the position itself and is
//! compiled alone by the fuzz target, so it names no `Mail`.

use std::sync::Arc;

use crate::Mail;

/// Where a session stands in one folder: every message of `folder` below
/// `next_uid` under `uid_validity` was handed out (or skipped and counted).
///
/// A session reports it as it moves ([`Followed::Advanced`], through
/// [`Handle::follow`](crate::Handle::follow)) and starts from a stored one
/// ([`Credential::resume_from`](crate::Credential::resume_from)), so a
/// process that stores the position only after it has dealt with the mail
/// below it resumes after a restart with exactly the mail that arrived in
/// between. A list of them describes a session that watches several
/// folders.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    /// The folder as the session names it: the credential's mailbox
    /// (`INBOX` in capitals), or its special-use attribute (`\Junk`).
    pub folder: String,
    /// The folder's UIDVALIDITY: a position is void under another one.
    pub uid_validity: u32,
    /// The next UID to hand out.
    pub next_uid: u32,
}

/// What a followed session reports, in order (see
/// [`Handle::follow`](crate::Handle::follow)): each new mail, and each move
/// of its position. An `Advanced` position is reported only after every
/// mail below it was reported, and never passes a mail that was not
/// reported. Under one UIDVALIDITY it never goes back except when the
/// server's UIDNEXT went back or a special use moved to another folder,
/// both counted (`SessionStats::uidnext_regressions`,
/// `SessionStats::validity_changes`): the position then follows the
/// server down, so that mail reported after it lies above it.
#[derive(Debug, Clone)]
pub enum Followed {
    /// A new mail.
    Arrived(Arc<Mail>),
    /// The position moved: everything below it was reported.
    Advanced(Position),
}
