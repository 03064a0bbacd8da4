//! The `Session` actor: one per credential (identity and secret; see
//! `registry`), owning one IMAP connection and fanning its new mail out to
//! subscribers.
//!
//! The connection itself runs in [`watcher::run`](crate::watcher), a future
//! spawned in the actor's context; the actor keeps what must survive a
//! reconnect — the [`MailboxTracker`] (handed to each connection and back),
//! the subscribers, the backoff — and is restarted by its actix
//! `Supervisor` after a transient error: the loop ends, the actor stops
//! itself, the supervisor restarts it (only the registry holds a strong
//! `Addr<Session>`), and `started` waits the jittered backoff before
//! connecting again. Whether an error is worth a retry is decided by
//! [`policy`](crate::policy) from the error and its context. A permanent
//! failure ends the session for good: every subscription ends with the
//! error (after the mail already on its way), and the registry forgets the
//! session.
//!
//! Fan-out: subscribers are indexed by lower-cased recipient address, so a
//! mail reaches only the subscribers whose `to` is among its recipients,
//! plus those without `to` — O(matches), not O(subscribers).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::WeakRecipient;
use actix::prelude::*;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::credential::Tap;
use crate::messages::{
    AddSubscribers, EndSession, EndStream, GetStats, NewMail, NewSubscriber, RemoveSubscriber,
    SessionEnded,
};
use crate::policy::{self, Action};
use crate::position::{Followed, Position};
use crate::queue::SubscriberQueue;
use crate::replay::ReplayWindow;
use crate::stats::{ActorCensus, Counted, SessionState, SessionStats};
use crate::subscriber::Subscriber;
use crate::tracker::{FolderPosition, MailboxTracker, Snapshot};
use crate::transport::Tls;
use crate::watcher::{self, ConnectionEnded, Folders, LoopCommand, LoopEvent};
use crate::{Config, Credential, Error, Filter, Mail, SessionKey, TlsMode};

/// One subscriber as its session knows it. The filter lives in the
/// subscriber actor; the session keeps only what routing and removal need,
/// so an idle subscriber's state is not held twice (issue 14).
struct SubscriberEntry {
    addr: Addr<Subscriber>,
    queue: Arc<SubscriberQueue>,
    /// The key it is filed under in `by_recipient` (the same allocation);
    /// `None`: it is in `everyone`.
    recipient: Option<Arc<str>>,
    /// Its filter, kept here only when it asks for old mail (`since` or
    /// `max_age`): the look-back and the replay of old mail need it, and
    /// few subscribers do.
    back: Option<Arc<Filter>>,
}

/// The subscriber ids filed under one address: nearly always one, which
/// then needs no allocation of its own.
enum Ids {
    One(u64),
    Many(Vec<u64>),
}

impl Ids {
    fn as_slice(&self) -> &[u64] {
        match self {
            Ids::One(id) => std::slice::from_ref(id),
            Ids::Many(ids) => ids,
        }
    }

    fn push(&mut self, id: u64) {
        match self {
            Ids::One(first) => *self = Ids::Many(vec![*first, id]),
            Ids::Many(ids) => ids.push(id),
        }
    }

    /// Removes `id`; returns whether none is left.
    fn remove(&mut self, id: u64) -> bool {
        match self {
            Ids::One(only) => *only == id,
            Ids::Many(ids) => {
                if let Some(i) = ids.iter().position(|x| *x == id) {
                    ids.swap_remove(i);
                }
                match ids[..] {
                    [] => true,
                    [only] => {
                        *self = Ids::One(only);
                        false
                    }
                    _ => false,
                }
            }
        }
    }
}

/// One shared IMAP session.
pub struct Session {
    key: SessionKey,
    instance: u64,
    cred: Credential,
    config: Arc<Config>,
    tls: Result<Option<Tls>, Error>,
    /// Where a permanent failure is reported: the registry's mailbox, weak
    /// (it never keeps the registry alive) and typed by the one message a
    /// session sends up, so that this module does not import the registry.
    registry: WeakRecipient<SessionEnded>,
    /// The position in every folder (one tracker each); `None` while a
    /// connection holds it.
    tracker: Option<Folders>,
    /// The tracker's position as last reported, for statistics only.
    snapshot: Snapshot,
    /// Every folder's position as last reported, for statistics only.
    positions: Vec<FolderPosition<crate::Folder>>,
    backoff: Backoff,
    delay: Duration,
    state: SessionState,
    idle: bool,
    /// Bumped at each connection, so a stale health timer does nothing.
    connection: u64,
    /// B-trees rather than hash tables for the maps that subscribers
    /// churn through: a hash table's deleted slots pile up until it
    /// doubles (the 30-minute soak's +1.7 MiB step at ~1 000 s, after
    /// ~100 000 subscribe/close pairs at a constant 10 000 subscribers),
    /// while a B-tree's memory follows the live entries.
    subscribers: BTreeMap<u64, SubscriberEntry>,
    /// Subscriber ids by lower-cased recipient; usually one per address,
    /// held inline.
    by_recipient: BTreeMap<Arc<str>, Ids>,
    everyone: BTreeSet<u64>,
    /// Subscribes waiting for the first SELECT, by subscription id.
    waiting: HashMap<u64, oneshot::Sender<Result<(), Error>>>,
    orders: Option<mpsc::UnboundedSender<LoopCommand>>,
    closing: Vec<oneshot::Sender<()>>,
    ending: bool,
    failed: Option<Error>,
    /// Recent mail for late subscribers with `since`/`max_age`.
    recent: ReplayWindow,
    fetched: u64,
    queued_gone: u64,
    dropped_gone: u64,
    reconnects: u64,
    last_error: Option<Error>,
    last_alert: Option<String>,
    startup_bytes: Option<u64>,
    /// Since when SELECT has been refused (the mailbox missing).
    missing_since: Option<Instant>,
    /// When the mailbox was first selected: mail before it is only found
    /// by the look-back.
    connected_at: Option<SystemTime>,
    /// When the current connection selected the mailbox (statistics).
    selected_at: Option<SystemTime>,
    /// When the next attempt starts, while backing off (statistics).
    next_attempt: Option<SystemTime>,
    live: Arc<ActorCensus>,
    _live: Counted,
    /// A followed session's report channel (`Handle::follow`).
    tap: Option<Arc<Tap>>,
    /// The position last reported to `tap`, per folder (by index, the
    /// main one first): (UIDVALIDITY, next UID).
    reported: Vec<Option<(u32, u32)>>,
    /// The earlier sessions of this credential that were still closing
    /// when this one started: each token is cancelled once its session
    /// has closed its connection (or the registry stopped waiting for
    /// it). Taken by the first `started`, which connects only after them.
    after: Vec<CancellationToken>,
}

impl Session {
    pub(crate) fn new(
        cred: Credential,
        config: Arc<Config>,
        instance: u64,
        registry: WeakRecipient<SessionEnded>,
        live: Arc<ActorCensus>,
        after: Vec<CancellationToken>,
    ) -> Self {
        let key = cred.session_key(instance);
        let tls = match cred.tls {
            TlsMode::None => Ok(None),
            _ => Tls::new(&cred.tls_config).map(Some),
        };
        let seed = {
            use std::hash::{BuildHasher, Hash, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            key.hash(&mut h);
            instance.hash(&mut h);
            h.finish()
        };
        let mut folders = Folders::new(cred.main_folder(), cred.further_folders(), || {
            MailboxTracker::new(config.poison_attempts, config.look_back_limit)
                .with_silent_span(config.poison_silent_span)
        });
        // A stored position applies to the folder it names, as the
        // credential names it (`INBOX` in any case, a name, or `\Junk`).
        // One that names no folder is said: its folder starts at UIDNEXT.
        let names: Vec<String> = (0..folders.len())
            .map(|i| folders.get(i).folder.to_string())
            .collect();
        for p in &cred.resume.positions {
            let stored = crate::Folder::Named(p.folder.clone()).normal().to_string();
            match names.iter().position(|n| *n == stored) {
                Some(i) => {
                    tracing::info!(session = %key, folder = %names[i], uid_validity = p.uid_validity, next_uid = p.next_uid, "resuming from a stored position");
                    folders
                        .get_mut(i)
                        .tracker
                        .resume(p.uid_validity, p.next_uid);
                }
                None => tracing::warn!(
                    session = %key,
                    folder = %p.folder,
                    watched = ?names,
                    "a stored position names no folder watched; ignored"
                ),
            }
        }
        Session {
            backoff: Backoff::new(config.backoff_initial, config.backoff_max, seed),
            tracker: Some(folders),
            tap: cred.resume.tap.clone(),
            reported: Vec::new(),
            snapshot: Snapshot::default(),
            positions: Vec::new(),
            recent: ReplayWindow::from_config(&config),
            key,
            instance,
            cred,
            config,
            tls,
            registry,
            delay: Duration::ZERO,
            state: SessionState::Connecting,
            idle: false,
            connection: 0,
            subscribers: BTreeMap::new(),
            by_recipient: BTreeMap::new(),
            everyone: BTreeSet::new(),
            waiting: HashMap::new(),
            orders: None,
            closing: Vec::new(),
            ending: false,
            failed: None,
            fetched: 0,
            queued_gone: 0,
            dropped_gone: 0,
            reconnects: 0,
            last_error: None,
            last_alert: None,
            startup_bytes: None,
            missing_since: None,
            connected_at: None,
            selected_at: None,
            next_attempt: None,
            _live: live.session(),
            live,
            after,
        }
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        if self.ending || self.failed.is_some() {
            return;
        }
        let tls = match &self.tls {
            Ok(t) => t.clone(),
            Err(e) => {
                let e = e.clone();
                self.fail(e, ctx);
                return;
            }
        };
        let Some(tracker) = self.tracker.take() else {
            // A connection is already running.
            return;
        };
        self.state = SessionState::Connecting;
        self.next_attempt = None;
        self.connection += 1;
        let (tx, rx) = mpsc::unbounded_channel();
        self.orders = Some(tx);
        let me = ctx.address().downgrade();
        let sink: watcher::Sink = Box::new(move |report| match me.upgrade() {
            Some(addr) => {
                addr.do_send(LoopEventArrived(report));
                true
            }
            None => false,
        });
        let span = tracing::info_span!(
            "session",
            host = %self.cred.host,
            user = %self.cred.user,
            mailbox = %self.cred.mailbox
        );
        let fut = watcher::run(
            self.cred.clone(),
            self.config.clone(),
            tls,
            tracker,
            sink,
            rx,
        );
        let fut = tracing::Instrument::instrument(fut, span);
        // The end goes through the mailbox too, so that every report the
        // loop sent before it ended is handled first.
        let me = ctx.address();
        ctx.spawn(
            fut.into_actor(self)
                .map(move |ended, _, _| me.do_send(LoopEnded(ended))),
        );
    }

    fn loop_ended(&mut self, ended: ConnectionEnded, ctx: &mut Context<Self>) {
        self.orders = None;
        self.selected_at = None;
        let ConnectionEnded {
            folders: mut tracker,
            phase,
            result,
        } = ended;
        while let Some((folder, n)) = tracker.poll_notice() {
            watcher::log_notice(&folder, &n);
        }
        self.snapshot = tracker.snapshot();
        self.positions = tracker.positions();
        let healthy_before = tracker.has_position();
        self.tracker = Some(tracker);
        let e = match result {
            Ok(()) => {
                tracing::info!(session = %self.key, "logged out");
                self.end_all(None, ctx);
                return;
            }
            Err(e) if self.ending => {
                tracing::debug!(session = %self.key, error = %e, "error while logging out");
                self.end_all(None, ctx);
                return;
            }
            Err(e) => e,
        };
        // Only a successful SELECT (on_report) clears it: an unrelated
        // error between two missing-mailbox answers must not restart the
        // grace period, or a flaky link would retry a deleted mailbox for
        // ever.
        if policy::mailbox_missing(&e, phase) {
            self.missing_since.get_or_insert_with(Instant::now);
        }
        let cx = policy::Context {
            phase,
            healthy_before,
            missing_since: self.missing_since,
            missing_grace: self.config.missing_mailbox_grace,
            now: Instant::now(),
        };
        match policy::decide(&e, &cx) {
            Action::Retry => {
                self.reconnects += 1;
                self.delay = self.backoff.next_delay();
                self.next_attempt = Some(SystemTime::now() + self.delay);
                tracing::warn!(
                    session = %self.key,
                    error = %e,
                    retry_in = ?self.delay,
                    "connection failed; reconnecting"
                );
                self.last_error = Some(e);
                self.state = SessionState::Backoff;
                // The supervisor restarts us; `started` waits the backoff.
                ctx.stop();
            }
            Action::Fail => self.fail(e, ctx),
        }
    }

    /// A permanent failure: end every subscription with it (after the mail
    /// already on its way), tell the registry, and wait to be dropped (no
    /// restart loop).
    fn fail(&mut self, e: Error, ctx: &mut Context<Self>) {
        tracing::error!(session = %self.key, error = %e, "session failed permanently");
        self.state = SessionState::Failed;
        self.failed = Some(e.clone());
        self.last_error = Some(e.clone());
        // Tell the registry first: a caller who sees its stream end and
        // subscribes again at once (with a new password) must reach a new
        // session, not this failed one — the registry handles this message
        // before that caller's Subscribe.
        if let Some(reg) = self.registry.upgrade() {
            reg.do_send(SessionEnded {
                key: self.key.clone(),
                instance: self.instance,
                error: e.clone(),
            });
        }
        self.end_all(Some(e), ctx);
    }

    /// Ends every subscription, after the mail already sent to it: the end
    /// travels through each subscriber's mailbox behind its mail. Whoever
    /// waits for the session to close is told once every subscriber has
    /// handled it; then the session stops.
    fn end_all(&mut self, error: Option<Error>, ctx: &mut Context<Self>) {
        if let Some(tap) = &self.tap {
            tap.close();
        }
        // Without an error the session ends because it was told to, and
        // only a shutdown can leave a subscribe waiting then (a linger or
        // a follower's end comes after its last subscriber left): the
        // caller gets `Shutdown`, not a server's hang-up it could retry.
        let ended = match &error {
            Some(e) => e.clone(),
            None if self.ending => Error::Shutdown,
            None => Error::Closed,
        };
        for (_, w) in self.waiting.drain() {
            let _ = w.send(Err(ended.clone()));
        }
        let mut acks = Vec::with_capacity(self.subscribers.len());
        for (_, e) in std::mem::take(&mut self.subscribers) {
            self.queued_gone += e.queue.queued();
            self.dropped_gone += e.queue.dropped();
            acks.push(e.addr.send(EndStream(error.clone())));
        }
        self.by_recipient.clear();
        self.everyone.clear();
        let closing = std::mem::take(&mut self.closing);
        let failed = self.failed.is_some();
        let fut = async move {
            for ack in acks {
                let _ = ack.await;
            }
            for w in closing {
                let _ = w.send(());
            }
        };
        ctx.spawn(fut.into_actor(self).map(move |(), _, ctx| {
            // A failed session waits for the registry to drop it (a stop
            // now would restart it).
            if !failed {
                ctx.stop();
            }
        }));
    }

    fn on_report(&mut self, report: LoopEvent, ctx: &mut Context<Self>) {
        match report {
            LoopEvent::Selected { idle, bytes_read } => {
                self.startup_bytes = Some(bytes_read);
                self.idle = idle;
                self.state = SessionState::Watching;
                self.missing_since = None;
                for (_, w) in self.waiting.drain() {
                    let _ = w.send(Ok(()));
                }
                let now = SystemTime::now();
                self.selected_at = Some(now);
                let first_select = self.connected_at.is_none();
                if first_select {
                    self.connected_at = Some(now);
                }
                // The backoff starts over only after a healthy period: a
                // server that fails right after each SELECT still sees
                // growing delays.
                let connection = self.connection;
                ctx.run_later(self.config.healthy_after, move |act, _| {
                    if act.connection == connection && act.state == SessionState::Watching {
                        act.backoff.reset();
                    }
                });
                if first_select {
                    // Subscribers that arrived before the first SELECT could
                    // not be compared with it yet; later ones order their
                    // look-back when they subscribe, and the tracker keeps
                    // an order across reconnects.
                    self.maybe_look_back();
                }
            }
            LoopEvent::Progress(snapshot) => self.snapshot = snapshot,
            LoopEvent::Folders(positions) => {
                // A folder's new epoch voids its kept mail, and only its:
                // the other folders' mail stays for late subscribers.
                for (p, was) in positions.iter().zip(&self.positions) {
                    if p.validity_changes > was.validity_changes {
                        self.recent.retain(|m| m.folder() != Some(&p.folder));
                    }
                }
                self.positions = positions;
                self.report_positions();
            }
            LoopEvent::Mail(mail) => {
                if let Some(tap) = &self.tap {
                    tap.send(Followed::Arrived(mail.clone()));
                }
                self.fetched += 1;
                self.remember(mail.clone());
                self.fan_out(&mail, false);
            }
            LoopEvent::Old(mail) => {
                self.remember(mail.clone());
                self.fan_out(&mail, true);
            }
            LoopEvent::Polling => self.idle = false,
            LoopEvent::Alert(text) => self.last_alert = Some(text),
        }
    }

    /// Tells a follower that a folder's position moved: after the mail
    /// below it (the watcher reports positions after the mail they cover,
    /// through this same mailbox). Every move is told, also one down under
    /// the same UIDVALIDITY (the tracker follows a UIDNEXT that went back,
    /// or starts over where a special use moved, both counted): a stored
    /// position above mail reported after it would lose that mail at the
    /// next restart.
    fn report_positions(&mut self) {
        let Some(tap) = &self.tap else {
            return;
        };
        self.reported.resize(self.positions.len(), None);
        for (p, reported) in self.positions.iter().zip(&mut self.reported) {
            let (Some(v), Some(w)) = (p.uid_validity, p.watermark) else {
                continue;
            };
            if *reported == Some((v, w)) {
                continue;
            }
            *reported = Some((v, w));
            tap.send(Followed::Advanced(Position {
                folder: p.folder.to_string(),
                uid_validity: v,
                next_uid: w,
            }));
        }
    }

    fn remember(&mut self, mail: Arc<Mail>) {
        self.recent.push(Instant::now(), mail);
    }

    /// Sends `mail` to the subscribers indexed under one of its recipients
    /// and to those without `to`. Old mail (from the look-back) goes only to
    /// subscribers that asked for old mail with `since` or `max_age`.
    fn fan_out(&self, mail: &Arc<Mail>, old: bool) {
        let now = SystemTime::now();
        let wants = |e: &SubscriberEntry| {
            !old || e.back.as_ref().is_some_and(|f| f.earliest(now).is_some())
        };
        // A mail names few recipients and a subscriber is filed under one
        // address, so only a mail naming the same address twice could
        // reach one twice; `recipients()` has no duplicates.
        for r in mail.recipients() {
            if let Some(ids) = self.by_recipient.get(r.as_str()) {
                for id in ids.as_slice() {
                    if let Some(e) = self.subscribers.get(id)
                        && wants(e)
                    {
                        e.addr.do_send(NewMail(mail.clone()));
                    }
                }
            }
        }
        for id in &self.everyone {
            if let Some(e) = self.subscribers.get(id)
                && wants(e)
            {
                e.addr.do_send(NewMail(mail.clone()));
            }
        }
    }

    /// Orders a look-back for the oldest time any subscriber accepts, if
    /// it reaches before the first SELECT.
    fn maybe_look_back(&mut self) {
        let now = SystemTime::now();
        let oldest = self
            .subscribers
            .values()
            .filter_map(|e| e.back.as_ref()?.reaches_back_to(now))
            .min();
        self.look_back_for(oldest);
    }

    /// Orders a look-back if `since` (what a filter reaches back to,
    /// clock skew included) is before the first SELECT. The tracker skips a
    /// range it already covered and retries one a reconnect cut short.
    /// Constant time, so that a subscribe does not scan every subscriber.
    fn look_back_for(&mut self, since: Option<SystemTime>) {
        if self.config.look_back_limit == 0 {
            return;
        }
        let (Some(started), Some(since)) = (self.connected_at, since) else {
            return;
        };
        if since >= started {
            return;
        }
        match (&self.orders, self.tracker.as_mut()) {
            (_, Some(tracker)) => tracker.want_look_back(since),
            (Some(orders), None) => {
                let _ = orders.send(LoopCommand::LookBack(since));
            }
            (None, None) => {}
        }
    }

    fn remove_subscriber(&mut self, id: u64) {
        self.waiting.remove(&id);
        let Some(e) = self.subscribers.remove(&id) else {
            return;
        };
        self.queued_gone += e.queue.queued();
        self.dropped_gone += e.queue.dropped();
        e.queue.close(None);
        match e.recipient {
            Some(r) => {
                if let Some(ids) = self.by_recipient.get_mut(&r)
                    && ids.remove(id)
                {
                    self.by_recipient.remove(&r);
                }
            }
            None => {
                self.everyone.remove(&id);
            }
        }
        // Dropping `e.addr` (the only address) stops the subscriber.
    }

    fn stats(&self) -> SessionStats {
        let (mut queued, mut dropped) = (self.queued_gone, self.dropped_gone);
        for e in self.subscribers.values() {
            queued += e.queue.queued();
            dropped += e.queue.dropped();
        }
        let s = self
            .tracker
            .as_ref()
            .map_or(self.snapshot, |t| t.snapshot());
        let positions = self
            .tracker
            .as_ref()
            .map_or_else(|| self.positions.clone(), |t| t.positions());
        SessionStats {
            key: self.key.clone(),
            state: self.state,
            idle: self.idle,
            watermark: s.watermark,
            uid_validity: s.uid_validity,
            subscribers: self.subscribers.len(),
            fetched: self.fetched,
            queued,
            dropped,
            skipped: s.skipped,
            look_back_failures: s.look_back_failures,
            uidnext_regressions: s.uidnext_regressions,
            reconnects: self.reconnects,
            validity_changes: s.validity_changes,
            last_error: self.last_error.as_ref().map(|e| e.to_string()),
            backoff: (self.state == SessionState::Backoff).then_some(self.delay),
            next_attempt: self
                .next_attempt
                .filter(|_| self.state == SessionState::Backoff),
            connected_since: self.selected_at,
            last_alert: self.last_alert.clone(),
            startup_bytes: self.startup_bytes,
            folders: positions.into_iter().map(Into::into).collect(),
        }
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.ending || self.failed.is_some() {
            // Never stop here: a stop in `started` restarts at once.
            return;
        }
        let after = std::mem::take(&mut self.after);
        if !after.is_empty() {
            // One connection per credential at a time: an earlier session
            // of it is still logging out (the registry forgot it when its
            // linger ended), so this one dials once that one has closed.
            // The registry bounds the wait. Spawned, not awaited in the
            // context: subscribes and an end are handled meanwhile (an
            // end makes `connect` do nothing).
            tracing::debug!(session = %self.key, "waiting for the previous session to close");
            let closed = async move {
                for token in after {
                    token.cancelled().await;
                }
            };
            ctx.spawn(closed.into_actor(self).map(|(), act, ctx| act.connect(ctx)));
            return;
        }
        if self.delay.is_zero() {
            self.connect(ctx);
        } else {
            ctx.run_later(self.delay, |act, ctx| act.connect(ctx));
        }
    }
}

impl Drop for Session {
    /// A session dropped with its arbiter (a shutdown that outlived its
    /// wait) still ends every subscription.
    fn drop(&mut self) {
        if let Some(tap) = &self.tap {
            tap.close();
        }
        for e in self.subscribers.values() {
            e.queue.close(self.failed.clone());
        }
        for (_, w) in self.waiting.drain() {
            let _ = w.send(Err(Error::Shutdown));
        }
    }
}

impl Supervised for Session {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::debug!(session = %self.key, delay = ?self.delay, "session restarting");
    }
}

/// Watcher → session: a report from the connection loop.
#[derive(Message)]
#[rtype(result = "()")]
struct LoopEventArrived(LoopEvent);

impl Handler<LoopEventArrived> for Session {
    type Result = ();

    fn handle(&mut self, msg: LoopEventArrived, ctx: &mut Context<Self>) {
        self.on_report(msg.0, ctx);
    }
}

/// Watcher → session: the connection ended (sent through the mailbox, after
/// every report).
#[derive(Message)]
#[rtype(result = "()")]
struct LoopEnded(ConnectionEnded);

impl Handler<LoopEnded> for Session {
    type Result = ();

    fn handle(&mut self, msg: LoopEnded, ctx: &mut Context<Self>) {
        self.loop_ended(msg.0, ctx);
    }
}

impl Session {
    /// Files one new subscriber: starts its actor, indexes it, replays the
    /// recent mail it asks for.
    fn add_subscriber(&mut self, msg: NewSubscriber) {
        let filter = msg.filter.with_clock_skew(self.config.clock_skew);
        let reaches_back_to = filter.reaches_back_to(SystemTime::now());
        let back = reaches_back_to.is_some().then(|| Arc::new(filter.clone()));
        let recipient = match filter.recipient() {
            Some(r) => {
                // One allocation for the key, shared with the entry.
                let key = match self.by_recipient.get_key_value(r) {
                    Some((k, _)) => k.clone(),
                    None => Arc::<str>::from(r),
                };
                self.by_recipient
                    .entry(key.clone())
                    .and_modify(|ids| ids.push(msg.id))
                    .or_insert(Ids::One(msg.id));
                Some(key)
            }
            None => {
                self.everyone.insert(msg.id);
                None
            }
        };
        let addr = Subscriber::new(filter, msg.queue.clone(), self.live.subscriber()).start();
        // Late subscriber: replay recent mail it asks for by `since` or
        // `max_age`.
        if reaches_back_to.is_some() {
            for mail in self.recent.iter(Instant::now()) {
                addr.do_send(NewMail(mail.clone()));
            }
        }
        self.subscribers.insert(
            msg.id,
            SubscriberEntry {
                addr,
                queue: msg.queue,
                recipient,
                back,
            },
        );
        if self.state == SessionState::Watching {
            self.look_back_for(reaches_back_to);
        }
    }
}

impl Handler<AddSubscribers> for Session {
    type Result = ResponseFuture<Result<(), Error>>;

    fn handle(&mut self, msg: AddSubscribers, _ctx: &mut Context<Self>) -> Self::Result {
        if let Some(e) = &self.failed {
            let e = e.clone();
            return Box::pin(async move { Err(e) });
        }
        if self.ending {
            // Only a shutdown ends a session that callers may still join:
            // the registry forgets a lingering session before it ends it,
            // but queues its shutdown's ends ahead of the subscribes it
            // has already accepted.
            return Box::pin(async { Err(Error::Shutdown) });
        }
        let watching = self.state == SessionState::Watching;
        let mut selected = Vec::new();
        for new in msg.0 {
            if !watching {
                let (tx, rx) = oneshot::channel();
                self.waiting.insert(new.id, tx);
                selected.push(rx);
            }
            self.add_subscriber(new);
        }
        Box::pin(async move {
            // All or nothing: the first failure answers for the batch (the
            // registry then removes every one of them).
            for rx in selected {
                rx.await.unwrap_or(Err(Error::Closed))?;
            }
            Ok(())
        })
    }
}

impl Handler<RemoveSubscriber> for Session {
    type Result = ();

    fn handle(&mut self, msg: RemoveSubscriber, _: &mut Context<Self>) {
        msg.ids.for_each(|id| self.remove_subscriber(id));
    }
}

impl Handler<EndSession> for Session {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: EndSession, ctx: &mut Context<Self>) -> Self::Result {
        self.ending = true;
        self.state = SessionState::Closing;
        let (done_tx, done_rx) = oneshot::channel();
        self.closing.push(done_tx);
        let logging_out = self
            .orders
            .as_ref()
            .is_some_and(|tx| tx.send(LoopCommand::Logout).is_ok());
        if !logging_out {
            // Not connected (backoff, or failed): nothing to log out.
            self.end_all(None, ctx);
        }
        Box::pin(async move {
            let _ = done_rx.await;
        })
    }
}

impl Handler<GetStats> for Session {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(vec![self.stats()])
    }
}
