//! The IMAP loop of one session: connect, select, fix the position, then
//! IDLE (or poll) and fetch what the [`MailboxTracker`] asks for.
//!
//! It is a plain async function with no actix in it; the session actor runs
//! it as one future per connection and receives what it finds through a
//! [`Sink`]. The position itself — watermark, what was asked, what arrived —
//! is owned by the tracker, which the session moves into [`run`] and gets
//! back when the connection ends, so there is one copy only. This loop only
//! moves events: every untagged response, whatever command is running, goes
//! through [`MailboxTracker::observe`] or [`MailboxTracker::on_fetch`].
//!
//! It never fetches the backlog: the watermark starts at UIDNEXT (or the
//! UID of the last message SELECT counted, plus one, when the server sends
//! no UIDNEXT), new mail is fetched by the sequence range EXISTS announced,
//! and mail is fetched with `BODY.PEEK[]<0.max>` (never marked read) from a
//! mailbox opened with EXAMINE.
//!
//! An IDLE round that the protocol machine ends itself (nothing heard for
//! `idle_inactivity`, or `idle_round` over) is followed by NOOP before the
//! next IDLE: a server whose push silently stopped still reports its mail
//! then (`tests/silent_idle.rs`).
//!
//! A credential may watch further folders ([`Credential::also_watch`]) on
//! the same connection. The loop IDLEs on the main folder and, at connect
//! and then every `poll_interval`, asks each further folder's `STATUS
//! (UIDNEXT UIDVALIDITY)`; a folder whose answer moved since its last visit
//! is visited (those found at connect once the main folder is watched, so
//! that a folder failing there cannot keep the main folder unwatched):
//! EXAMINE it, let its own tracker (in [`Folders`]) fetch what
//! it asks for, EXAMINE the main folder again (its tracker fetches any gap
//! by UID, as after a reconnect) and IDLE. Untagged data is routed to the
//! tracker of the folder selected at the time. A further folder that is
//! missing is counted and looked for again at the next check; it never
//! ends the connection. A further folder whose name on the server names
//! the same mailbox as an earlier one (`\Junk` marking `Junk`, also
//! watched by name) is watched once, as the earlier one.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::mpsc;

use crate::Error;
use crate::config::{Config, MailboxAccess};
use crate::connection::Connection;
use crate::credential::{Credential, Folder};
use crate::mail::{Mail, parse_internal_date};
use crate::proto::client::{CommandData, Completion, DEADLINE_EXPIRED, Event, SelectInfo};
use crate::proto::{Code, Condition, Data, ListEntry, ProtoError, SpecialUse, Status};
use crate::tracker::{
    Arrived, Ended, FolderPosition, Loss, MailboxTracker, Snapshot, Step, Verdict,
};

/// Every folder of a session with its tracker.
pub(crate) type Folders = crate::tracker::Folders<Folder>;
use crate::transport::Tls;

/// What the loop reports to its session.
#[derive(Debug)]
pub(crate) enum LoopEvent {
    /// The mailbox is selected and the position fixed.
    Selected {
        /// Whether the server pushes with IDLE (else it is polled).
        idle: bool,
        /// Bytes read from the socket from connect to here: the start-up
        /// cost, which must not grow with the mailbox.
        bytes_read: u64,
    },
    /// The position moved (for statistics).
    Progress(Snapshot),
    /// A folder's position, name or state changed: every folder's, the
    /// main one first (for statistics).
    Folders(Vec<FolderPosition<Folder>>),
    /// A new message, parsed.
    Mail(Arc<Mail>),
    /// A message from before the session (found by the look-back): only
    /// for subscribers that asked for old mail with `since` or `max_age`.
    Old(Arc<Mail>),
    /// IDLE was rejected: polling from now on.
    Polling,
    /// The server sent an `[ALERT]`.
    Alert(String),
}

/// Receives reports; returns `false` when nobody listens any more.
pub(crate) type Sink = Box<dyn FnMut(LoopEvent) -> bool + Send>;

/// Commands from the session to its loop.
#[derive(Debug)]
pub(crate) enum LoopCommand {
    /// LOGOUT and end.
    Logout,
    /// Find mail that arrived since this time, below the first watermark.
    LookBack(SystemTime),
}

/// How far a connection got before it ended: the session's error policy
/// depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Dial, implicit TLS, greeting.
    Connect,
    /// Greeted: STARTTLS, capabilities, authentication.
    Login,
    /// SELECT (EXAMINE) and fixing the position.
    Select,
    /// Selected: fetching and waiting.
    Watch,
}

/// How one connection ended.
pub(crate) struct ConnectionEnded {
    /// The folders and their trackers, handed back.
    pub folders: Folders,
    /// How far the connection got.
    pub phase: Phase,
    /// `Ok` after an ordered LOGOUT (or nobody listening any more).
    pub result: Result<(), Error>,
}

/// Runs one connection until LOGOUT is ordered or an error ends it.
pub(crate) async fn run(
    cred: Credential,
    config: Arc<Config>,
    tls: Option<Tls>,
    folders: Folders,
    sink: Sink,
    orders: mpsc::UnboundedReceiver<LoopCommand>,
) -> ConnectionEnded {
    let fetch_items = format!(
        "(UID INTERNALDATE RFC822.SIZE BODY.PEEK[]<0.{}>)",
        config.max_message_size
    );
    let next_check = tokio::time::Instant::now() + config.poll_interval;
    let mut w = Watcher {
        fetch_items,
        conn: None,
        config,
        folders,
        current: 0,
        read_only: true,
        check_due: false,
        next_check,
        due: Vec::new(),
        notifying: None,
        sink,
        orders,
        orders_open: true,
        idle: false,
        early_idle_ends: 0,
        phase: Phase::Connect,
        reported: Snapshot::default(),
        reported_folders: Vec::new(),
    };
    let result = w.run(&cred, tls.as_ref()).await;
    if let Err(e) = &result {
        w.folders.connection_lost(loss_of(e));
    }
    w.report_progress();
    ConnectionEnded {
        folders: w.folders,
        phase: w.phase,
        result,
    }
}

/// Opens (EXAMINE) the mailbox `cred` watches; returns what EXAMINE
/// reported and the mailbox's name for [`Mail::mailbox`]. A mailbox named
/// in the credential is opened by that name; a special use
/// ([`Credential::special_use`]) is looked up first with [`find_special_use`]
/// and opened by the name bytes the server listed, sent back unchanged.
pub(crate) async fn open_mailbox(
    conn: &mut Connection,
    cred: &Credential,
    access: MailboxAccess,
) -> Result<(SelectInfo, String), Error> {
    let (info, name, _) = open_main(conn, cred, access).await?;
    Ok((info, name))
}

/// Whether mailboxes are opened read-only (EXAMINE) on this connection.
fn read_only(conn: &Connection, access: MailboxAccess) -> bool {
    match access {
        MailboxAccess::ReadOnly => true,
        MailboxAccess::ReadWrite => false,
        // Courier keeps UIDs only for read-write sessions (INTEROP.md).
        _ => !conn.greeting_text().contains("Courier-IMAP"),
    }
}

/// [`open_mailbox`], also returning the name bytes the server listed for
/// a special use (to open it again by them).
async fn open_main(
    conn: &mut Connection,
    cred: &Credential,
    access: MailboxAccess,
) -> Result<(SelectInfo, String, Option<Vec<u8>>), Error> {
    let read_only = read_only(conn, access);
    let Some(special_use) = cred.special_use else {
        let info = conn.select(&cred.mailbox, read_only).await?;
        return Ok((info, cred.mailbox.clone(), None));
    };
    let entry = find_special_use(conn, special_use).await?;
    tracing::info!(mailbox = %entry.name, %special_use, "found the special-use mailbox");
    let done = conn
        .command(|c, now| c.select_listed(&entry.raw_name, read_only, now))
        .await?;
    match done.data {
        CommandData::Selected(info) => Ok((info, entry.name, Some(entry.raw_name))),
        _ => Err(ProtoError::Violation("SELECT completed without its data").into()),
    }
}

/// The first selectable mailbox listed with `special_use`'s attribute.
///
/// `LIST "" "*" RETURN (SPECIAL-USE)` (RFC 6154 §5.1) when the server
/// advertises SPECIAL-USE — and a plain `LIST "" "*"` if it refuses that
/// — else a plain `LIST "" "*"`, whose attributes carry the special uses
/// on servers that mark them without advertising the extension. None
/// listed: [`Error::SpecialUseNotFound`].
pub(crate) async fn find_special_use(
    conn: &mut Connection,
    special_use: SpecialUse,
) -> Result<ListEntry, Error> {
    list_special_uses(conn)
        .await?
        .into_iter()
        .find(|e| e.is_selectable() && e.has_attribute(special_use.attribute()))
        .ok_or(Error::SpecialUseNotFound(special_use))
}

/// Every mailbox listed, with the special-use attributes: see
/// [`find_special_use`]. Also how [`crate::test_login`] finds further
/// special-use folders.
pub(crate) async fn list_special_uses(conn: &mut Connection) -> Result<Vec<ListEntry>, Error> {
    let mut done = None;
    if conn.has_capability("SPECIAL-USE") {
        let extended = conn.run(|c, now| c.list("", "*", true, now)).await?;
        if extended.status == Status::Ok {
            done = Some(extended);
        } else {
            tracing::warn!(text = %extended.text, "LIST RETURN (SPECIAL-USE) refused; plain LIST");
        }
    }
    let done = match done {
        Some(done) => done,
        None => conn.command(|c, now| c.list("", "*", false, now)).await?,
    };
    let CommandData::List { entries, dropped } = done.data else {
        return Err(ProtoError::Violation("LIST completed without its data").into());
    };
    if dropped > 0 {
        tracing::warn!(
            listed = entries.len(),
            dropped,
            "the server listed more mailboxes than kept; looking among the first"
        );
    }
    Ok(entries)
}

/// Whether the server said why the connection ended (or sent something
/// unusable), or it just ended: see [`Loss`].
fn loss_of(e: &Error) -> Loss {
    match e {
        // A response that never came (the link stalled) says nothing about
        // the message; one that trickled in below the transfer-rate floor
        // broke a limit while the message was being sent: worded.
        Error::Protocol(ProtoError::Timeout(what)) if *what != DEADLINE_EXPIRED => Loss::Silent {
            at: std::time::Instant::now(),
        },
        Error::Bye(_) | Error::Protocol(_) => Loss::Worded,
        _ => Loss::Silent {
            at: std::time::Instant::now(),
        },
    }
}

/// Server-ended IDLEs in a row, each shorter than `poll_interval`, after
/// which the connection polls instead (a server that ends every IDLE at
/// once would otherwise be sent IDLE in a tight loop).
const EARLY_IDLE_ENDS_BEFORE_POLLING: u32 = 3;

/// Messages up to this size are parsed on the session's own thread.
const INLINE_PARSE_MAX: usize = 64 * 1024;

struct Watcher {
    conn: Option<Connection>,
    config: Arc<Config>,
    /// Every folder watched, each with its tracker; the only copy while
    /// the connection lives.
    folders: Folders,
    /// The folder selected now: untagged data and fetched mail are its.
    current: usize,
    /// Whether mailboxes are opened with EXAMINE (else SELECT).
    read_only: bool,
    /// The further folders are to be checked at the next quiet moment.
    check_due: bool,
    /// When the further folders are checked next without NOTIFY: one
    /// `poll_interval` after the last check, however many IDLE rounds
    /// the main folder's mail ends meanwhile.
    next_check: tokio::time::Instant,
    /// Further folders whose STATUS at connect asked for a visit
    /// (`(folder, UIDVALIDITY, UIDNEXT)`): visited from the main loop,
    /// once the main folder is watched, so that a folder failing there
    /// cannot keep the main folder from being watched.
    due: Vec<(usize, Option<u32>, Option<u32>)>,
    /// The further folders the server reports by NOTIFY (RFC 5465), as
    /// they go on the wire; `None` when NOTIFY is not in use on this
    /// connection (not offered, refused, or nothing to ask for).
    notifying: Option<Vec<Vec<u8>>>,
    sink: Sink,
    orders: mpsc::UnboundedReceiver<LoopCommand>,
    orders_open: bool,
    idle: bool,
    /// IDLE commands in a row that the server ended on its own before
    /// `poll_interval` had passed: at [`EARLY_IDLE_ENDS_BEFORE_POLLING`] the
    /// session polls instead of spinning IDLE against such a server.
    early_idle_ends: u32,
    phase: Phase,
    /// The last snapshot reported, so that only changes are sent.
    reported: Snapshot,
    /// The folder positions last reported, likewise.
    reported_folders: Vec<FolderPosition<Folder>>,
    /// The items of every mail FETCH (`BODY.PEEK[]<0.max_message_size>`).
    fetch_items: String,
}

impl Watcher {
    fn conn(&mut self) -> &mut Connection {
        self.conn.as_mut().expect("connected")
    }

    /// The tracker of the folder selected now.
    fn tracker(&mut self) -> &mut MailboxTracker {
        &mut self.folders.get_mut(self.current).tracker
    }

    async fn run(&mut self, cred: &Credential, tls: Option<&Tls>) -> Result<(), Error> {
        // A session told to end while this connection was being made
        // (its linger ended) logs out as soon as it can — before it logs
        // in, or before it opens the mailbox — so that the next session
        // of its credential, which waits for this one to close, is not
        // kept waiting by a login and an EXAMINE nobody needs.
        let greeted = Connection::greet(cred, &self.config, tls).await?;
        // From here on a BYE is no refusal of the connection (see `policy`).
        self.phase = Phase::Login;
        self.take_orders();
        if !self.orders_open {
            tracing::debug!("told to end before logging in; logging out");
            return greeted.logout().await;
        }
        let conn = greeted.log_in(cred, &self.config, tls).await?;
        tracing::info!("connected");
        self.conn = Some(conn);
        self.take_orders();
        if !self.orders_open {
            tracing::debug!("told to end before opening the mailbox; logging out");
            return self.logout().await;
        }
        self.folders.connecting();
        self.phase = Phase::Select;
        let access = self.config.mailbox_access;
        self.read_only = read_only(self.conn(), access);
        let (info, mailbox, raw_name) = open_main(self.conn(), cred, access).await?;
        if self.folders.named(0, mailbox.clone(), raw_name) {
            tracing::warn!(%mailbox, "the special use marks another folder now; starting over there at UIDNEXT");
        }
        self.current = 0;
        let exists = info.exists;
        self.position_current(info).await?;
        self.idle = self.conn().has_capability("IDLE");
        let snapshot = self.folders.get(0).tracker.snapshot();
        tracing::info!(
            uid_validity = snapshot.uid_validity,
            watermark = snapshot.watermark,
            exists,
            idle = self.idle,
            "selected"
        );
        if self.folders.len() > 1 {
            // Before the session counts as started: each further folder's
            // position is fixed by its STATUS, so mail there from before
            // is old mail, as in the main folder. Visits wait for the main
            // loop: a folder that fails there (a timeout, a violation) must
            // not keep the main folder from being watched.
            self.check_folders(false).await?;
        }
        self.phase = Phase::Watch;
        self.drain_notices();
        self.report_progress();
        let bytes_read = self.conn().bytes_read();
        if !(self.sink)(LoopEvent::Selected {
            idle: self.idle,
            bytes_read,
        }) {
            return self.logout().await;
        }
        loop {
            self.take_orders();
            if !self.orders_open {
                return self.logout().await;
            }
            match self.tracker().next_step() {
                Step::Wait if !self.due.is_empty() => {
                    for (i, uid_validity, uid_next) in std::mem::take(&mut self.due) {
                        self.visit(i, uid_validity, uid_next).await?;
                    }
                    self.drain_notices();
                    self.report_progress();
                }
                Step::Wait if self.check_due => {
                    self.check_due = false;
                    self.check_folders(true).await?;
                }
                Step::Wait => {
                    let stop = if self.idle {
                        self.idle_once().await?
                    } else {
                        self.poll_once().await?
                    };
                    if stop {
                        return self.logout().await;
                    }
                }
                step => self.run_step(step).await?,
            }
        }
    }

    /// The selected folder's EXAMINE completed with `info`: its tracker
    /// learns the position (asking for the UID of the last message when
    /// the server sent no UIDNEXT).
    async fn position_current(&mut self, info: SelectInfo) -> Result<(), Error> {
        self.tracker().selected(info.exists);
        let uid_validity = info.uid_validity.unwrap_or(0);
        let uid_next = match info.uid_next {
            // Mail arrived after UIDNEXT was reported (its EXISTS came
            // later in the response): counted in `exists`, yet new. As a
            // lower bound, UIDNEXT makes the tracker fetch from its
            // watermark by UID, which finds it.
            Some(n) if info.uid_next_stale => crate::tracker::UidNext::AtLeast(n),
            Some(n) => crate::tracker::UidNext::Exact(n),
            None => self.uid_next_fallback(info.exists).await?,
        };
        self.tracker().position_known(uid_validity, uid_next);
        // A new epoch is reported before any mail of it, so that the
        // session forgets the folder's kept mail first.
        self.report_progress();
        Ok(())
    }

    /// Sends the FETCH or UID SEARCH the selected folder's tracker asked
    /// for and waits for its end; a verdict to reconnect is an error.
    async fn run_step(&mut self, step: Step) -> Result<(), Error> {
        let (command, done) = match step {
            Step::Fetch(req) => {
                tracing::debug!(set = %req.set, uid = req.uid, "fetch");
                let tag = self.conn.as_mut().expect("connected").start_fetch(
                    req.uid,
                    &req.set,
                    &self.fetch_items,
                    req.messages,
                )?;
                ("FETCH", self.until_completed(&tag).await?)
            }
            Step::Search(req) => {
                tracing::debug!(criteria = %req.criteria, "search");
                let tag = self
                    .conn()
                    .start(|c, now| c.uid_search(&req.criteria, now))?;
                let done = self.until_completed(&tag).await?;
                if let CommandData::Search(uids) = &done.data {
                    self.tracker().on_search(uids);
                }
                ("UID SEARCH", done)
            }
            Step::Wait => return Ok(()),
        };
        let verdict = self.tracker().completed(ended(&done));
        self.drain_notices();
        self.report_progress();
        if verdict == Verdict::Reconnect {
            return Err(Error::CommandFailed {
                command,
                text: done.text,
                temporary: true,
            });
        }
        Ok(())
    }

    /// Checks every further folder with `STATUS (UIDNEXT UIDVALIDITY)` on
    /// this connection, the main folder selected, and visits those whose
    /// answer moved (with `visit`; else they are left in `due` for the
    /// main loop). A folder not found, or whose STATUS or EXAMINE is
    /// refused, is counted missing; the others and the main folder carry
    /// on. A folder naming the same mailbox as an earlier one is skipped.
    async fn check_folders(&mut self, visit: bool) -> Result<(), Error> {
        self.find_folders().await?;
        for (i, j) in self.folders.mark_repeats() {
            let (f, first) = (self.folders.get(i), self.folders.get(j));
            tracing::warn!(
                folder = %f.folder,
                same_as = %first.folder,
                mailbox = f.name.as_deref().unwrap_or_default(),
                "two watched folders name the same mailbox; watching it once"
            );
        }
        for i in 1..self.folders.len() {
            let f = self.folders.get(i);
            if f.same_as.is_some() {
                continue;
            }
            if f.name.is_none() {
                tracing::warn!(folder = %f.folder, "further folder not found; looking again at the next check");
                self.missing(i);
                continue;
            }
            let raw = f.raw_name.clone();
            let name = f.name.clone().unwrap_or_default();
            let tag = self.conn().start(|c, now| match &raw {
                Some(raw) => c.status_listed(raw, "UIDNEXT UIDVALIDITY", now),
                None => c.status(&name, "UIDNEXT UIDVALIDITY", now),
            })?;
            let done = self.until_completed(&tag).await?;
            let CommandData::Status(items) = done.data else {
                return Err(ProtoError::Violation("STATUS completed without its data").into());
            };
            if done.status != Status::Ok {
                tracing::warn!(mailbox = %name, text = %done.text, "STATUS refused; the folder is missing");
                self.missing(i);
                continue;
            }
            let item = |want: &str| {
                items
                    .iter()
                    .find(|(n, _)| n == want)
                    .and_then(|(_, v)| u32::try_from(*v).ok())
            };
            let (uid_validity, uid_next) = (item("UIDVALIDITY"), item("UIDNEXT"));
            tracing::trace!(mailbox = %name, uid_validity, uid_next, "status");
            if self.folders.on_status(i, uid_validity, uid_next) {
                if visit {
                    self.visit(i, uid_validity, uid_next).await?;
                } else {
                    self.due.push((i, uid_validity, uid_next));
                }
            }
        }
        self.next_check = tokio::time::Instant::now() + self.config.poll_interval;
        self.notify().await?;
        self.drain_notices();
        self.report_progress();
        Ok(())
    }

    /// Further folder `i` was refused: counted; a special use is looked up
    /// again at the next check (it may mark another folder by then).
    fn missing(&mut self, i: usize) {
        self.folders.missing(i);
        let f = self.folders.get_mut(i);
        if matches!(f.folder, Folder::SpecialUse(_)) {
            f.name = None;
            f.raw_name = None;
        }
    }

    /// The further folders found (each mailbox once), as they go on the
    /// wire.
    fn wire_names(&self) -> Vec<Vec<u8>> {
        (1..self.folders.len())
            .filter_map(|i| {
                let f = self.folders.get(i);
                if f.same_as.is_some() {
                    return None;
                }
                match (&f.raw_name, &f.name) {
                    (Some(raw), _) => Some(raw.clone()),
                    (None, Some(name)) => crate::proto::encode::wire_mailbox(name).ok(),
                    (None, None) => None,
                }
            })
            .collect()
    }

    /// Where the server offers NOTIFY, asks it to report new mail in the
    /// further folders found (again whenever that set changes): a `*
    /// STATUS` for one of them, even during IDLE, makes the next check at
    /// once, and the poll timer is not needed while none is missing.
    /// Refused: STATUS polling as without NOTIFY.
    async fn notify(&mut self) -> Result<(), Error> {
        if !self.conn().has_capability("NOTIFY") {
            return Ok(());
        }
        let names = self.wire_names();
        if names.is_empty() || self.notifying.as_ref() == Some(&names) {
            return Ok(());
        }
        let refs: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
        let tag = self.conn().start(|c, now| c.notify_set(&refs, now))?;
        let done = self.until_completed(&tag).await?;
        if done.status == Status::Ok {
            tracing::debug!(folders = names.len(), "NOTIFY set");
            self.notifying = Some(names);
        } else {
            tracing::warn!(text = %done.text, "NOTIFY refused; checking the folders every poll_interval");
            self.notifying = None;
        }
        Ok(())
    }

    /// Whether the further folders need the poll timer: there are some,
    /// and NOTIFY does not report every one of them.
    fn needs_polling(&self) -> bool {
        self.folders.len() > 1
            && (self.notifying.is_none()
                || (1..self.folders.len()).any(|i| self.folders.get(i).missing))
    }

    /// A `* STATUS` the server sent unasked (NOTIFY): for a further folder
    /// not selected now, a check is due.
    fn notified(&mut self, mailbox: &str) {
        let Some(names) = &self.notifying else {
            return;
        };
        // The name as the server sent it, compared with the one sent, as
        // the client compares a STATUS it asked for.
        if names
            .iter()
            .any(|n| crate::proto::encode::same_mailbox(&String::from_utf8_lossy(n), mailbox))
        {
            tracing::debug!(%mailbox, "NOTIFY: a further folder changed");
            self.check_due = true;
        }
    }

    /// Names the further folders not yet found on this connection: a name
    /// as given; a special use by one `LIST` for all of them (a LIST
    /// refused leaves them missing, the connection carries on).
    async fn find_folders(&mut self) -> Result<(), Error> {
        let mut wanted = false;
        for i in 1..self.folders.len() {
            let f = self.folders.get_mut(i);
            if f.name.is_some() {
                continue;
            }
            match &f.folder {
                Folder::Named(n) => {
                    let n = n.clone();
                    self.folders.named(i, n, None);
                }
                Folder::SpecialUse(_) => wanted = true,
            }
        }
        if !wanted {
            return Ok(());
        }
        let entries = match list_special_uses(self.conn()).await {
            Ok(entries) => entries,
            Err(Error::CommandFailed { text, .. }) => {
                tracing::warn!(%text, "LIST refused; special-use folders not found");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        for i in 1..self.folders.len() {
            let f = self.folders.get(i);
            if let (None, Folder::SpecialUse(u)) = (&f.name, &f.folder)
                && let Some(e) = entries
                    .iter()
                    .find(|e| e.is_selectable() && e.has_attribute(u.attribute()))
            {
                tracing::info!(mailbox = %e.name, special_use = %u, "found a further special-use folder");
                if self
                    .folders
                    .named(i, e.name.clone(), Some(e.raw_name.clone()))
                {
                    tracing::warn!(mailbox = %e.name, "the special use marks another folder now; starting over there at UIDNEXT");
                }
            }
        }
        Ok(())
    }

    /// Starts EXAMINE (SELECT) of folder `i` and waits for its end.
    async fn examine(&mut self, i: usize) -> Result<Completion, Error> {
        let f = self.folders.get(i);
        let (raw, name) = (f.raw_name.clone(), f.name.clone().unwrap_or_default());
        let read_only = self.read_only;
        let tag = self.conn().start(|c, now| match &raw {
            Some(raw) => c.select_listed(raw, read_only, now),
            None => c.select(&name, read_only, now),
        })?;
        self.until_completed(&tag).await
    }

    /// Visits further folder `i`: EXAMINE it, fetch what its tracker asks
    /// for, then EXAMINE the main folder again. `uid_validity` and
    /// `uid_next` are what its STATUS said.
    async fn visit(
        &mut self,
        i: usize,
        uid_validity: Option<u32>,
        uid_next: Option<u32>,
    ) -> Result<(), Error> {
        let done = self.examine(i).await?;
        if done.status != Status::Ok {
            // No mailbox is selected after a failed EXAMINE (RFC 3501
            // 6.3.1): back to the main folder.
            tracing::warn!(folder = %self.folders.get(i).folder, text = %done.text, "EXAMINE refused; the folder is missing");
            self.missing(i);
            return self.reopen_main().await;
        }
        let CommandData::Selected(info) = done.data else {
            return Err(ProtoError::Violation("SELECT completed without its data").into());
        };
        self.current = i;
        self.position_current(info).await?;
        loop {
            match self.tracker().next_step() {
                Step::Wait => break,
                step => self.run_step(step).await?,
            }
        }
        self.folders.visited(i, uid_validity, uid_next);
        self.reopen_main().await
    }

    /// EXAMINE the main folder again after a visit; its tracker fetches
    /// any gap by UID, as after a reconnect. The main folder refused is
    /// a missing mailbox, as at connect.
    async fn reopen_main(&mut self) -> Result<(), Error> {
        self.phase = Phase::Select;
        let done = self.examine(0).await?;
        if done.status != Status::Ok {
            return Err(Error::CommandFailed {
                command: if self.read_only { "EXAMINE" } else { "SELECT" },
                temporary: crate::error::is_refusal(done.code.as_ref(), &done.text),
                text: done.text,
            });
        }
        let CommandData::Selected(info) = done.data else {
            return Err(ProtoError::Violation("SELECT completed without its data").into());
        };
        self.current = 0;
        self.position_current(info).await?;
        self.phase = Phase::Watch;
        Ok(())
    }

    async fn logout(&mut self) -> Result<(), Error> {
        match self.conn.take() {
            Some(conn) => conn.logout().await,
            None => Ok(()),
        }
    }

    /// UIDNEXT when SELECT did not say: the UID of the last message SELECT
    /// counted, plus one (`FETCH n (UID)`, race-free: mail arriving
    /// meanwhile has a higher sequence number and is fetched as new). An
    /// empty mailbox has every later message as new mail. Never `1:*`.
    async fn uid_next_fallback(&mut self, exists: u32) -> Result<crate::tracker::UidNext, Error> {
        tracing::warn!("server sent no UIDNEXT; asking for the UID of the last message");
        if exists == 0 {
            return Ok(crate::tracker::UidNext::AtLeast(1));
        }
        let set = exists.to_string();
        let tag = self
            .conn()
            .start(|c, now| c.fetch(false, &set, "(UID)", now))?;
        let mut last = None;
        loop {
            match self.conn().next_event().await? {
                Event::Data(Data::Fetch(f)) if f.seq == exists && f.uid().is_some() => {
                    last = f.uid();
                }
                Event::Completed(c) if c.tag == tag => break,
                ev => self.handle(ev).await?,
            }
        }
        match last {
            Some(uid) => Ok(crate::tracker::UidNext::AtLeast(uid.saturating_add(1))),
            None => Err(ProtoError::Violation("no UID for the last message").into()),
        }
    }

    /// Handles events until the command `tag` completes.
    async fn until_completed(&mut self, tag: &str) -> Result<Completion, Error> {
        loop {
            match self.conn().next_event().await? {
                Event::Completed(c) if c.tag == tag => return Ok(c),
                ev => self.handle(ev).await?,
            }
        }
    }

    /// Any event outside the running command's own completion: untagged
    /// data goes through the tracker, mail it hands out is delivered.
    async fn handle(&mut self, ev: Event) -> Result<(), Error> {
        match ev {
            Event::Data(Data::Fetch(f)) => {
                if let Some(arrived) = self.tracker().on_fetch(f) {
                    self.deliver(arrived).await?;
                }
            }
            Event::Data(d) => {
                self.tracker().observe(&d);
                match d {
                    Data::Status {
                        code: Some(Code::Alert),
                        text,
                        ..
                    } => {
                        tracing::warn!(alert = %text, "server alert");
                        (self.sink)(LoopEvent::Alert(text));
                    }
                    Data::Status {
                        condition: Condition::Bye,
                        text,
                        ..
                    } => tracing::info!(reason = %text, "server said BYE"),
                    Data::MailboxStatus { mailbox, .. } => self.notified(&mailbox),
                    _ => {}
                }
                self.drain_notices();
            }
            Event::IdleStarted => tracing::trace!("idling"),
            Event::IdleDoneSent => tracing::debug!("IDLE round ended"),
            Event::Malformed => self.tracker().response_lost(),
            Event::Greeted(_) | Event::Completed(_) => {}
        }
        Ok(())
    }

    /// Parses and reports a message the tracker handed out.
    async fn deliver(&mut self, a: Arrived) -> Result<(), Error> {
        let truncated = a.size.is_some_and(|s| s as usize > a.raw.len())
            || a.raw.len() >= self.config.max_message_size;
        let internal_date = a.internal_date.as_deref().and_then(parse_internal_date);
        let uid_validity = self.tracker().uid_validity().unwrap_or(0);
        let f = self.folders.get(self.current);
        let folder = f.folder.clone();
        let mailbox = f.name.clone().unwrap_or_default();
        let (uid, old, raw) = (a.uid, a.old, a.raw);
        // mail-parser is CPU work: a large message goes to the blocking
        // pool so it cannot stall the session's arbiter; a small one (tens
        // of microseconds) is parsed here, sparing two thread hops.
        let mail = if raw.len() <= INLINE_PARSE_MAX {
            Mail::parse(uid, uid_validity, &mailbox, internal_date, raw, truncated)
        } else {
            tokio::task::spawn_blocking(move || {
                Mail::parse(uid, uid_validity, &mailbox, internal_date, raw, truncated)
            })
            .await
            .map_err(|_| Error::Protocol(ProtoError::Violation("mail parser task failed")))?
        };
        tracing::debug!(uid, old, mailbox = %mail.mailbox(), "fetched");
        let mail = Arc::new(mail.with_folder(folder));
        (self.sink)(if old {
            LoopEvent::Old(mail)
        } else {
            LoopEvent::Mail(mail)
        });
        Ok(())
    }

    /// Takes the session's orders without waiting.
    fn take_orders(&mut self) {
        while self.orders_open {
            match self.orders.try_recv() {
                Ok(order) => self.order(Some(order)),
                Err(mpsc::error::TryRecvError::Empty) => return,
                Err(mpsc::error::TryRecvError::Disconnected) => self.orders_open = false,
            }
        }
    }

    /// Acts on an order; `None` (the session dropped its sender) is a
    /// LOGOUT.
    fn order(&mut self, order: Option<LoopCommand>) {
        match order {
            Some(LoopCommand::LookBack(since)) => {
                self.folders.want_look_back(since);
                // Further folders look back at their next visit: now.
                self.check_due |= self.folders.len() > 1;
            }
            Some(LoopCommand::Logout) | None => self.orders_open = false,
        }
    }

    /// One IDLE command; returns whether LOGOUT was ordered.
    async fn idle_once(&mut self) -> Result<bool, Error> {
        // With further folders, the IDLE ends at the next check, one
        // `poll_interval` after the last (unless NOTIFY reports them all).
        let checking = self.needs_polling();
        if checking && tokio::time::Instant::now() >= self.next_check {
            // The check is due already (INBOX's mail kept ending the
            // rounds): no IDLE before it.
            self.check_due = true;
            return Ok(false);
        }
        let tag = self.conn().start(|c, now| c.idle(now))?;
        let started = std::time::Instant::now();
        let mut accepted = false;
        let mut done_sent = false;
        // The protocol machine ended the round itself (`idle_inactivity`
        // or `idle_round`): the server may have stopped pushing, so NOOP
        // asks before the next IDLE.
        let mut timer_ended = false;
        // One deadline for all rounds until the check, not a new
        // `poll_interval` per round.
        let check = tokio::time::sleep_until(self.next_check);
        tokio::pin!(check);
        loop {
            let conn = self.conn.as_mut().expect("connected");
            let ev = tokio::select! {
                ev = conn.next_event() => ev?,
                () = &mut check, if checking && !done_sent => {
                    done_sent = true;
                    self.check_due = true;
                    self.conn().done();
                    continue;
                }
                order = self.orders.recv(), if self.orders_open => {
                    self.order(order);
                    if !done_sent {
                        done_sent = true;
                        self.conn().done();
                    }
                    continue;
                }
            };
            match ev {
                Event::Completed(c) if c.tag == tag => {
                    // Rejected, or "completed" without ever accepting (which
                    // would have us re-issue IDLE in a tight loop): poll.
                    if c.status != Status::Ok || !accepted {
                        tracing::warn!(text = %c.text, "server rejected IDLE; polling instead");
                        self.idle = false;
                        (self.sink)(LoopEvent::Polling);
                    } else if !done_sent && started.elapsed() < self.config.poll_interval {
                        // Ended by the server, early (AOL ends IDLE after
                        // 300 s; some servers at once).
                        self.early_idle_ends += 1;
                        if self.early_idle_ends >= EARLY_IDLE_ENDS_BEFORE_POLLING {
                            tracing::warn!(
                                text = %c.text,
                                "server ends every IDLE at once; polling instead"
                            );
                            self.idle = false;
                            (self.sink)(LoopEvent::Polling);
                        }
                    } else {
                        self.early_idle_ends = 0;
                    }
                    if timer_ended && self.orders_open && !self.tracker().has_work() {
                        // A server whose push silently stopped (Courier
                        // once its FAM watch breaks) still answers NOOP:
                        // its mail is found one round late, not never.
                        self.noop().await?;
                    }
                    return Ok(!self.orders_open);
                }
                Event::IdleStarted => {
                    accepted = true;
                    tracing::trace!("idling");
                }
                Event::IdleDoneSent => {
                    done_sent = true;
                    timer_ended = true;
                    tracing::debug!("IDLE round ended");
                }
                ev => {
                    self.handle(ev).await?;
                    if !done_sent && (self.tracker().has_work() || self.check_due) {
                        done_sent = true;
                        self.conn().done();
                    }
                }
            }
        }
    }

    /// Waits one poll interval, then NOOP; returns whether LOGOUT was
    /// ordered.
    async fn poll_once(&mut self) -> Result<bool, Error> {
        tokio::select! {
            _ = tokio::time::sleep(self.config.poll_interval) => {}
            order = self.orders.recv(), if self.orders_open => {
                self.order(order);
                return Ok(!self.orders_open);
            }
        }
        self.noop().await?;
        self.check_due |= self.needs_polling();
        Ok(false)
    }

    /// NOOP: what changed in the selected folder comes with its answer.
    async fn noop(&mut self) -> Result<(), Error> {
        let tag = self.conn().start(|c, now| c.noop(now))?;
        let done = self.until_completed(&tag).await?;
        if done.status != Status::Ok {
            return Err(Error::CommandFailed {
                command: "NOOP",
                text: done.text,
                temporary: true,
            });
        }
        Ok(())
    }

    fn drain_notices(&mut self) {
        while let Some((folder, n)) = self.folders.poll_notice() {
            log_notice(&folder, &n);
        }
    }

    fn report_progress(&mut self) {
        let now = self.folders.snapshot();
        if now != self.reported {
            self.reported = now;
            (self.sink)(LoopEvent::Progress(now));
        }
        if !self.folders.positions_are(&self.reported_folders) {
            let positions = self.folders.positions();
            self.reported_folders.clone_from(&positions);
            (self.sink)(LoopEvent::Folders(positions));
        }
    }
}

/// Logs what the tracker noticed (its counters are in its snapshot).
pub(crate) fn log_notice(folder: &Folder, n: &crate::tracker::Notice) {
    use crate::tracker::Notice;
    let _folder = tracing::info_span!("folder", %folder).entered();
    match n {
        Notice::Skipped { uid, attempts } => tracing::warn!(
            uid,
            attempts,
            "skipping a message the server failed to deliver every time"
        ),
        Notice::ValidityChanged { old, new } => tracing::warn!(
            old,
            new,
            "UIDVALIDITY changed: the old watermark is void, starting at UIDNEXT"
        ),
        Notice::UidNextRegressed {
            watermark,
            uid_next,
        } => tracing::warn!(
            watermark,
            uid_next,
            "UIDNEXT went below the watermark with the same UIDVALIDITY; following it down"
        ),
        Notice::LookBackFailed => {
            tracing::warn!("look-back failed; live mail is not affected")
        }
        Notice::ExistsDecreased { was, now } => {
            tracing::warn!(was, now, "EXISTS decreased without EXPUNGE")
        }
    }
}

/// How a FETCH or SEARCH ended, for the tracker.
fn ended(done: &Completion) -> Ended {
    match (&done.status, &done.code) {
        (Status::Ok, _) => Ended::Ok,
        (_, Some(Code::Other { name, .. })) if name == "EXPUNGEISSUED" => Ended::ExpungeIssued,
        _ => Ended::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which lost connections count fully against the message being
    /// fetched: the server's words and broken limits do; a link that went
    /// quiet (reset, EOF, a response that never came) does not.
    #[test]
    fn losses_are_worded_only_when_the_server_or_a_limit_spoke() {
        let silent = |e: Error| matches!(loss_of(&e), Loss::Silent { .. });
        assert!(!silent(Error::Bye("Internal error".into())));
        assert!(!silent(ProtoError::Timeout(DEADLINE_EXPIRED).into()));
        assert!(silent(ProtoError::Timeout("command response").into()));
        assert!(silent(Error::Closed));
        assert!(silent(Error::Timeout("dial")));
    }
}
