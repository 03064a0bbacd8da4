//! The IMAP loop of one session: select, fix the watermark, then IDLE (or
//! poll) and fetch what arrives above the watermark.
//!
//! It is a plain async function with no actix in it; the session actor runs
//! it as one future per connection and receives what it finds through a
//! [`Sink`]. It never fetches the backlog:
//!
//! - the watermark is UIDNEXT at the first SELECT (STATUS UIDNEXT, or the
//!   highest UID + 1, when SELECT does not say), and survives reconnects
//!   while UIDVALIDITY stays the same;
//! - new mail is fetched by the *sequence* range that EXISTS announced
//!   (`FETCH a:b`), which never returns an old message and costs the same on
//!   a mailbox of a million messages as on an empty one;
//! - after a reconnect, the gap is fetched once with `UID FETCH W:*`;
//! - a UID below the watermark is discarded whatever the server sends, so
//!   `N:*` returning the last message never delivers it twice.
//!
//! Mail is fetched with `BODY.PEEK[]<0.max>` (never marked read) from a
//! mailbox opened with EXAMINE.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::Error;
use crate::config::Config;
use crate::connection::Connection;
use crate::credential::Credential;
use crate::mail::{Mail, parse_internal_date};
use crate::proto::client::{CommandData, CommandKind, Event};
use crate::proto::encode::search_date;
use crate::proto::{Condition, Data, Fetch, FetchItem, ProtoError, Status};
use crate::transport::Tls;

/// Where a session stands in its mailbox. Kept by the session across
/// reconnects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    /// The mailbox's UIDVALIDITY when the watermark was taken.
    pub uid_validity: u32,
    /// The lowest UID not yet delivered.
    pub watermark: u32,
}

/// What the loop reports to its session.
#[derive(Debug)]
pub(crate) enum Report {
    /// The mailbox is selected and the watermark fixed.
    Selected {
        position: Position,
        /// Whether UIDVALIDITY changed since the last connection.
        validity_changed: bool,
        /// Whether the server pushes with IDLE (else it is polled).
        idle: bool,
        /// Bytes read from the socket from connect to here: the start-up
        /// cost, which must not grow with the mailbox.
        bytes_read: u64,
    },
    /// A new message, parsed; the watermark is now just past its UID.
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
pub(crate) type Sink = Box<dyn FnMut(Report) -> bool + Send>;

/// Orders from the session to its loop.
#[derive(Debug)]
pub(crate) enum Order {
    /// LOGOUT and end.
    Logout,
    /// Find mail that arrived since this time, below the watermark.
    LookBack(SystemTime),
}

/// Runs one connection until LOGOUT is ordered (`Ok`) or it fails.
pub(crate) async fn run(
    cred: Credential,
    config: Arc<Config>,
    tls: Option<Tls>,
    position: Option<Position>,
    mut sink: Sink,
    mut orders: mpsc::UnboundedReceiver<Order>,
) -> Result<(), Error> {
    let mut conn = Connection::open(&cred, &config, tls.as_ref()).await?;
    tracing::info!("connected");
    let info = conn.select(&cred.mailbox, true).await?;
    let uid_validity = info.uid_validity.unwrap_or(0);
    let uid_next = match info.uid_next {
        Some(n) => n,
        None => uid_next_fallback(&mut conn, &cred.mailbox).await?,
    };
    let (watermark, validity_changed) = match position {
        Some(p) if p.uid_validity == uid_validity => (p.watermark, false),
        Some(p) => {
            tracing::warn!(
                old = p.uid_validity,
                new = uid_validity,
                "UIDVALIDITY changed: the old watermark is void, starting at UIDNEXT"
            );
            (uid_next, true)
        }
        None => (uid_next, false),
    };
    let idle = conn.has_capability("IDLE");
    tracing::info!(
        uid_validity,
        watermark,
        exists = info.exists,
        idle,
        "selected"
    );
    let mut w = Watcher {
        conn,
        config,
        mailbox: cred.mailbox.clone(),
        uid_validity,
        watermark,
        exists: info.exists,
        announced: info.exists,
        idle,
        look_back: None,
    };
    if !sink(Report::Selected {
        position: w.position(),
        validity_changed,
        idle,
        bytes_read: w.conn.bytes_read(),
    }) {
        return w.conn.logout().await;
    }
    if uid_next > watermark {
        // Mail arrived while we were away: fetch the gap once, by UID.
        w.fetch(Want::Gap { below: uid_next }, &mut sink).await?;
    }
    loop {
        if let Some(since) = w.look_back.take() {
            w.look_back(since, &mut sink).await?;
            continue;
        }
        if w.announced > w.exists {
            let seqs = w.exists + 1..=w.announced;
            w.exists = w.announced;
            w.fetch(Want::New(seqs), &mut sink).await?;
            continue;
        }
        let stop = if w.idle {
            w.idle_once(&mut orders, &mut sink).await?
        } else {
            w.poll_once(&mut orders, &mut sink).await?
        };
        if stop {
            return w.conn.logout().await;
        }
    }
}

/// UIDNEXT when SELECT did not say: `STATUS (UIDNEXT)`, else the highest
/// UID + 1 from `UID FETCH * (UID)`. Never `1:*`.
async fn uid_next_fallback(conn: &mut Connection, mailbox: &str) -> Result<u32, Error> {
    let done = conn
        .command(|c, now| c.status(mailbox, "UIDNEXT", now))
        .await;
    if let Ok(done) = done
        && let CommandData::Status(items) = &done.data
        && let Some((_, n)) = items.iter().find(|(k, _)| k == "UIDNEXT")
    {
        return u32::try_from(*n).map_err(|_| ProtoError::Violation("UIDNEXT out of range").into());
    }
    tracing::warn!("server sent no UIDNEXT; asking for the highest UID");
    conn.start(|c, now| c.fetch(true, "*", "(UID)", now))?;
    let mut highest = 0u32;
    loop {
        match conn.next_event().await? {
            Event::Data(Data::Fetch(f)) => highest = highest.max(f.uid().unwrap_or(0)),
            Event::Completed(c) if c.kind == CommandKind::Fetch => {
                // An empty mailbox answers NO or OK with nothing.
                return Ok(highest.saturating_add(1).max(1));
            }
            _ => {}
        }
    }
}

/// Messages up to this size are parsed on the session's own thread.
const INLINE_PARSE_MAX: usize = 64 * 1024;

/// What one FETCH asks for, and so which responses it accepts.
enum Want {
    /// New mail: the sequence range EXISTS announced.
    New(std::ops::RangeInclusive<u32>),
    /// The gap after a reconnect: UIDs from the watermark up to UIDNEXT as
    /// SELECT saw it (later mail comes through EXISTS).
    Gap { below: u32 },
    /// A look-back: exactly these UIDs, sorted, all below the watermark.
    Old(Vec<u32>),
}

struct Watcher {
    conn: Connection,
    config: Arc<Config>,
    mailbox: String,
    uid_validity: u32,
    watermark: u32,
    /// Messages in the mailbox as far as fetched.
    exists: u32,
    /// Messages the server announced (EXISTS); above `exists` means new.
    announced: u32,
    idle: bool,
    /// A look-back ordered and not yet run.
    look_back: Option<SystemTime>,
}

impl Watcher {
    fn position(&self) -> Position {
        Position {
            uid_validity: self.uid_validity,
            watermark: self.watermark,
        }
    }

    /// Tracks mailbox size from untagged data; reports alerts.
    fn observe(&mut self, data: &Data, sink: &mut Sink) {
        match data {
            Data::Exists(n) => {
                if *n < self.announced {
                    tracing::warn!(
                        was = self.announced,
                        now = n,
                        "EXISTS decreased without EXPUNGE"
                    );
                    self.exists = (*n).min(self.exists);
                }
                self.announced = *n;
            }
            Data::Expunge(_) => {
                self.announced = self.announced.saturating_sub(1);
                self.exists = self.exists.saturating_sub(1);
            }
            Data::Status {
                code: Some(crate::proto::Code::Alert),
                text,
                ..
            } => {
                tracing::warn!(alert = %text, "server alert");
                sink(Report::Alert(text.clone()));
            }
            Data::Status {
                condition: Condition::Bye,
                text,
                ..
            } => tracing::info!(reason = %text, "server said BYE"),
            _ => {}
        }
    }

    /// One IDLE command; returns whether LOGOUT was ordered.
    async fn idle_once(
        &mut self,
        orders: &mut mpsc::UnboundedReceiver<Order>,
        sink: &mut Sink,
    ) -> Result<bool, Error> {
        self.conn.start(|c, now| c.idle(now))?;
        let mut stop = false;
        let mut orders_open = true;
        let mut accepted = false;
        loop {
            let ev = tokio::select! {
                ev = self.conn.next_event() => ev?,
                order = orders.recv(), if orders_open => {
                    match order {
                        Some(Order::LookBack(since)) => self.order_look_back(since),
                        Some(Order::Logout) | None => {
                            orders_open = false;
                            stop = true;
                        }
                    }
                    self.conn.done();
                    continue;
                }
            };
            match ev {
                Event::Data(d) => {
                    self.observe(&d, sink);
                    if self.announced > self.exists {
                        self.conn.done();
                    }
                }
                Event::Completed(c) if c.kind == CommandKind::Idle => {
                    // Rejected, or "completed" without ever accepting (which
                    // would have us re-issue IDLE in a tight loop): poll.
                    if c.status != Status::Ok || !accepted {
                        tracing::warn!(text = %c.text, "server rejected IDLE; polling instead");
                        self.idle = false;
                        sink(Report::Polling);
                    }
                    return Ok(stop);
                }
                Event::IdleStarted => {
                    accepted = true;
                    tracing::trace!("idling");
                }
                Event::IdleDoneSent => tracing::debug!("IDLE round ended"),
                _ => {}
            }
        }
    }

    /// Waits one poll interval, then NOOP; returns whether LOGOUT was
    /// ordered.
    async fn poll_once(
        &mut self,
        orders: &mut mpsc::UnboundedReceiver<Order>,
        sink: &mut Sink,
    ) -> Result<bool, Error> {
        tokio::select! {
            _ = tokio::time::sleep(self.config.poll_interval) => {}
            order = orders.recv() => match order {
                Some(Order::LookBack(since)) => {
                    self.order_look_back(since);
                    return Ok(false);
                }
                Some(Order::Logout) | None => return Ok(true),
            },
        }
        self.conn.start(|c, now| c.noop(now))?;
        loop {
            match self.conn.next_event().await? {
                Event::Data(d) => self.observe(&d, sink),
                Event::Completed(c) if c.kind == CommandKind::Noop => {
                    if c.status != Status::Ok {
                        return Err(Error::CommandFailed {
                            command: "NOOP",
                            text: c.text,
                            temporary: true,
                        });
                    }
                    return Ok(false);
                }
                _ => {}
            }
        }
    }

    fn order_look_back(&mut self, since: SystemTime) {
        self.look_back = Some(self.look_back.map_or(since, |t| t.min(since)));
    }

    /// Finds the newest messages below the watermark that arrived since
    /// `since` and reports them as old mail. Bounded: it searches only the
    /// last `look_back_limit · 16` UIDs below the watermark and fetches at
    /// most `look_back_limit` of them; INTERNALDATE is checked by the
    /// subscribers' filters.
    async fn look_back(&mut self, since: SystemTime, sink: &mut Sink) -> Result<(), Error> {
        let limit = self.config.look_back_limit;
        if limit == 0 || self.watermark <= 1 {
            return Ok(());
        }
        let top = self.watermark - 1;
        let window = u32::try_from(limit.saturating_mul(16)).unwrap_or(u32::MAX);
        let low = top.saturating_sub(window).max(1);
        let secs = since.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        // A day early: SINCE compares dates in the server's time zone.
        let day = search_date(i64::try_from(secs).unwrap_or(i64::MAX) - 86_400);
        let criteria = format!("UID {low}:{top} SINCE {day}");
        tracing::debug!(%criteria, "look-back");
        let done = self
            .conn
            .command(|c, now| c.uid_search(&criteria, now))
            .await?;
        let CommandData::Search(mut uids) = done.data else {
            return Ok(());
        };
        uids.retain(|&u| u >= low && u <= top);
        uids.sort_unstable();
        uids.dedup();
        let newest = &uids[uids.len().saturating_sub(limit)..];
        if newest.is_empty() {
            return Ok(());
        }
        self.fetch(Want::Old(newest.to_vec()), sink).await
    }

    /// Fetches what `want` names, reporting every message it asked for:
    /// new mail at or above the watermark, or, for a look-back, the listed
    /// old UIDs. Any other FETCH response (a sequence number outside the
    /// range, a UID not asked for) is ignored: a stray high UID must not
    /// move the watermark past mail not yet seen.
    async fn fetch(&mut self, want: Want, sink: &mut Sink) -> Result<(), Error> {
        let items = format!(
            "(UID INTERNALDATE RFC822.SIZE BODY.PEEK[]<0.{}>)",
            self.config.max_message_size
        );
        let (uid, set) = match &want {
            Want::New(seqs) => (false, format!("{}:{}", seqs.start(), seqs.end())),
            Want::Gap { .. } => (true, format!("{}:*", self.watermark)),
            Want::Old(uids) => (
                true,
                uids.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        };
        tracing::debug!(set, uid, "fetch");
        self.conn.start(|c, now| c.fetch(uid, &set, &items, now))?;
        loop {
            match self.conn.next_event().await? {
                Event::Data(Data::Fetch(f)) => self.fetched(f, &want, sink).await?,
                Event::Data(d) => self.observe(&d, sink),
                Event::Completed(c) if c.kind == CommandKind::Fetch => {
                    if c.status != Status::Ok {
                        return Err(Error::CommandFailed {
                            command: "FETCH",
                            text: c.text,
                            temporary: true,
                        });
                    }
                    return Ok(());
                }
                _ => {}
            }
        }
    }

    async fn fetched(&mut self, f: Fetch, want: &Want, sink: &mut Sink) -> Result<(), Error> {
        let Some(uid) = f.uid() else {
            // A flag update or similar without UID: nothing new.
            return Ok(());
        };
        let asked = match want {
            Want::New(seqs) => seqs.contains(&f.seq) && uid >= self.watermark,
            Want::Gap { below } => uid >= self.watermark && uid < *below,
            Want::Old(uids) => uids.binary_search(&uid).is_ok() && uid < self.watermark,
        };
        let old = matches!(want, Want::Old(_));
        let mut body = None;
        let mut internal_date = None;
        let mut size = None;
        for item in f.items {
            match item {
                FetchItem::Body { section, data, .. } if section.is_empty() => body = data,
                FetchItem::InternalDate(d) => internal_date = parse_internal_date(&d),
                FetchItem::Rfc822Size(s) => size = Some(s),
                _ => {}
            }
        }
        let Some(raw) = body else {
            return Ok(());
        };
        if !asked {
            tracing::debug!(
                seq = f.seq,
                uid,
                watermark = self.watermark,
                "ignoring a FETCH response that was not asked for"
            );
            return Ok(());
        }
        let truncated = size.is_some_and(|s| s as usize > raw.len())
            || raw.len() >= self.config.max_message_size;
        let mailbox = self.mailbox.clone();
        let uid_validity = self.uid_validity;
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
        tracing::debug!(uid, old, "fetched");
        if old {
            sink(Report::Old(Arc::new(mail)));
            return Ok(());
        }
        self.watermark = uid.saturating_add(1);
        sink(Report::Mail(Arc::new(mail)));
        Ok(())
    }
}
