//! The `Session` actor: one per credential key, owning one IMAP connection
//! and fanning its new mail out to subscribers.
//!
//! The connection itself runs in [`watcher::run`](crate::watcher), a future
//! spawned in the actor's context; the actor keeps what must survive a
//! reconnect — the watermark and UIDVALIDITY, the subscribers, the backoff
//! — and is restarted by its actix `Supervisor` after a transient error:
//! the loop ends, the actor stops itself, the supervisor restarts it (only
//! the registry holds a strong `Addr<Session>`), and `started` waits the
//! jittered backoff before connecting again. A permanent error (login
//! rejected, certificate not trusted) ends the session for good: every
//! subscription ends with the error and the registry forgets the session.
//!
//! Fan-out: subscribers are indexed by lower-cased recipient address, so a
//! mail reaches only the subscribers whose `to` is among its recipients,
//! plus those without `to` — O(matches), not O(subscribers).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::WeakAddr;
use actix::prelude::*;
use tokio::sync::{mpsc, oneshot};

use crate::backoff::Backoff;
use crate::messages::{
    AddSubscriber, EndSession, GetStats, NewMail, RemoveSubscriber, SessionEnded,
};
use crate::registry::Registry;
use crate::stats::{Live, SessionState, SessionStats, Token};
use crate::subscriber::{Shared, Subscriber};
use crate::transport::Tls;
use crate::watcher::{self, Order, Position, Report};
use crate::{Config, Credential, Error, Filter, Mail, SessionKey, TlsMode};

struct Entry {
    addr: Addr<Subscriber>,
    filter: Filter,
    shared: Arc<Shared>,
}

/// One shared IMAP session.
pub struct Session {
    key: SessionKey,
    instance: u64,
    cred: Credential,
    config: Arc<Config>,
    tls: Result<Option<Tls>, Error>,
    registry: WeakAddr<Registry>,
    position: Option<Position>,
    backoff: Backoff,
    delay: Duration,
    state: SessionState,
    idle: bool,
    subscribers: HashMap<u64, Entry>,
    /// Subscriber ids by lower-cased recipient; usually one per address,
    /// so a small vector beats a set in memory.
    by_recipient: HashMap<String, Vec<u64>>,
    everyone: HashSet<u64>,
    waiting: Vec<oneshot::Sender<Result<(), Error>>>,
    orders: Option<mpsc::UnboundedSender<Order>>,
    closing: Vec<oneshot::Sender<()>>,
    ending: bool,
    failed: Option<Error>,
    recent: VecDeque<(Instant, Arc<Mail>)>,
    fetched: u64,
    delivered_gone: u64,
    dropped_gone: u64,
    reconnects: u64,
    validity_changes: u64,
    last_error: Option<Error>,
    last_alert: Option<String>,
    startup_bytes: Option<u64>,
    /// When the mailbox was first selected: mail before it is only found
    /// by the look-back.
    connected_at: Option<std::time::SystemTime>,
    looked_back: bool,
    live: Arc<Live>,
    _live: Token,
}

impl Session {
    pub(crate) fn new(
        cred: Credential,
        config: Arc<Config>,
        instance: u64,
        registry: WeakAddr<Registry>,
        live: Arc<Live>,
    ) -> Self {
        let key = cred.key();
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
        Session {
            backoff: Backoff::new(config.backoff_initial, config.backoff_max, seed),
            key,
            instance,
            cred,
            config,
            tls,
            registry,
            position: None,
            delay: Duration::ZERO,
            state: SessionState::Connecting,
            idle: false,
            subscribers: HashMap::new(),
            by_recipient: HashMap::new(),
            everyone: HashSet::new(),
            waiting: Vec::new(),
            orders: None,
            closing: Vec::new(),
            ending: false,
            failed: None,
            recent: VecDeque::new(),
            fetched: 0,
            delivered_gone: 0,
            dropped_gone: 0,
            reconnects: 0,
            validity_changes: 0,
            last_error: None,
            last_alert: None,
            startup_bytes: None,
            connected_at: None,
            looked_back: false,
            _live: live.session(),
            live,
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
                self.fail(e);
                return;
            }
        };
        self.state = SessionState::Connecting;
        let (tx, rx) = mpsc::unbounded_channel();
        self.orders = Some(tx);
        let me = ctx.address().downgrade();
        let sink: watcher::Sink = Box::new(move |report| match me.upgrade() {
            Some(addr) => {
                addr.do_send(Reported(report));
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
            self.position,
            sink,
            rx,
        );
        let fut = tracing::Instrument::instrument(fut, span);
        ctx.spawn(
            fut.into_actor(self)
                .map(|res, act, ctx| act.loop_ended(res, ctx)),
        );
    }

    fn loop_ended(&mut self, res: Result<(), Error>, ctx: &mut Context<Self>) {
        self.orders = None;
        match res {
            Ok(()) => {
                tracing::info!(session = %self.key, "logged out");
                self.end_all(None);
                ctx.stop();
            }
            Err(e) if self.ending => {
                tracing::debug!(session = %self.key, error = %e, "error while logging out");
                self.end_all(None);
                ctx.stop();
            }
            Err(e) if e.is_transient() => {
                self.reconnects += 1;
                self.delay = self.backoff.next_delay();
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
            Err(e) => self.fail(e),
        }
    }

    /// A permanent failure: end every subscription with it, tell the
    /// registry, and wait to be dropped (no restart loop).
    fn fail(&mut self, e: Error) {
        tracing::error!(session = %self.key, error = %e, "session failed permanently");
        self.state = SessionState::Failed;
        self.failed = Some(e.clone());
        self.last_error = Some(e.clone());
        for w in self.waiting.drain(..) {
            let _ = w.send(Err(e.clone()));
        }
        self.end_all(Some(e.clone()));
        if let Some(reg) = self.registry.upgrade() {
            reg.do_send(SessionEnded {
                key: self.key.clone(),
                instance: self.instance,
                error: e,
            });
        }
    }

    /// Closes every subscription (after what is queued).
    fn end_all(&mut self, error: Option<Error>) {
        for w in self.closing.drain(..) {
            let _ = w.send(());
        }
        for w in self.waiting.drain(..) {
            let _ = w.send(Err(error.clone().unwrap_or(Error::Closed)));
        }
        for (_, e) in self.subscribers.drain() {
            self.delivered_gone += e.shared.delivered();
            self.dropped_gone += e.shared.dropped();
            e.shared.close(error.clone());
        }
        self.by_recipient.clear();
        self.everyone.clear();
    }

    fn on_report(&mut self, report: Report, _ctx: &mut Context<Self>) {
        match report {
            Report::Selected {
                position,
                validity_changed,
                idle,
                bytes_read,
            } => {
                self.startup_bytes = Some(bytes_read);
                if validity_changed {
                    self.validity_changes += 1;
                    self.recent.clear();
                }
                self.position = Some(position);
                self.idle = idle;
                self.state = SessionState::Watching;
                self.backoff.reset();
                for w in self.waiting.drain(..) {
                    let _ = w.send(Ok(()));
                }
                if self.connected_at.is_none() {
                    self.connected_at = Some(std::time::SystemTime::now());
                }
                self.maybe_look_back();
            }
            Report::Mail(mail) => {
                // New mail arrives in UID order: the watermark follows it.
                if let Some(p) = self.position.as_mut() {
                    p.watermark = mail.uid().saturating_add(1);
                }
                self.fetched += 1;
                self.remember(mail.clone());
                self.fan_out(&mail, false);
            }
            Report::Old(mail) => {
                self.remember(mail.clone());
                self.fan_out(&mail, true);
            }
            Report::Polling => self.idle = false,
            Report::Alert(text) => self.last_alert = Some(text),
        }
    }

    fn remember(&mut self, mail: Arc<Mail>) {
        if self.config.replay_capacity == 0 {
            return;
        }
        let now = Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > self.config.replay_age)
            || self.recent.len() >= self.config.replay_capacity
        {
            self.recent.pop_front();
        }
        self.recent.push_back((now, mail));
    }

    /// Sends `mail` to the subscribers indexed under one of its recipients
    /// and to those without `to`. Old mail (from the look-back) goes only to
    /// subscribers that asked for old mail with `since` or `max_age`.
    fn fan_out(&self, mail: &Arc<Mail>, old: bool) {
        let now = std::time::SystemTime::now();
        let wants = |e: &Entry| !old || e.filter.earliest(now).is_some();
        let mut sent: HashSet<u64> = HashSet::new();
        for r in mail.recipients() {
            if let Some(ids) = self.by_recipient.get(r.as_str()) {
                for id in ids {
                    if sent.insert(*id)
                        && let Some(e) = self.subscribers.get(id)
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

    /// Orders the one look-back of this session's life when a subscriber
    /// wants mail from before the session first selected its mailbox.
    fn maybe_look_back(&mut self) {
        let now = std::time::SystemTime::now();
        let earliest = self
            .subscribers
            .values()
            .filter_map(|e| e.filter.earliest(now))
            .min();
        self.look_back_for(earliest);
    }

    /// Orders the look-back if `earliest` reaches before the first SELECT
    /// and none ran yet. Constant time, so that a subscribe does not scan
    /// every subscriber.
    fn look_back_for(&mut self, earliest: Option<std::time::SystemTime>) {
        if self.looked_back || self.config.look_back_limit == 0 {
            return;
        }
        let (Some(started), Some(orders)) = (self.connected_at, &self.orders) else {
            return;
        };
        if let Some(since) = earliest.filter(|t| *t < started)
            && orders.send(Order::LookBack(since)).is_ok()
        {
            self.looked_back = true;
        }
    }

    fn stats(&self) -> SessionStats {
        let (mut delivered, mut dropped) = (self.delivered_gone, self.dropped_gone);
        for e in self.subscribers.values() {
            delivered += e.shared.delivered();
            dropped += e.shared.dropped();
        }
        SessionStats {
            key: self.key.clone(),
            state: self.state,
            idle: self.idle,
            watermark: self.position.map(|p| p.watermark),
            uid_validity: self.position.map(|p| p.uid_validity),
            subscribers: self.subscribers.len(),
            fetched: self.fetched,
            queued: delivered,
            dropped,
            skipped: 0,
            look_back_failures: 0,
            uidnext_regressions: 0,
            reconnects: self.reconnects,
            validity_changes: self.validity_changes,
            last_error: self.last_error.as_ref().map(|e| e.to_string()),
            backoff: (self.state == SessionState::Backoff).then_some(self.delay),
            last_alert: self.last_alert.clone(),
            startup_bytes: self.startup_bytes,
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
        for e in self.subscribers.values() {
            e.shared.close(self.failed.clone());
        }
        for w in self.waiting.drain(..) {
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
struct Reported(Report);

impl Handler<Reported> for Session {
    type Result = ();

    fn handle(&mut self, msg: Reported, ctx: &mut Context<Self>) {
        self.on_report(msg.0, ctx);
    }
}

impl Handler<AddSubscriber> for Session {
    type Result = ResponseFuture<Result<(), Error>>;

    fn handle(&mut self, msg: AddSubscriber, _ctx: &mut Context<Self>) -> Self::Result {
        if let Some(e) = &self.failed {
            let e = e.clone();
            return Box::pin(async move { Err(e) });
        }
        if self.ending {
            return Box::pin(async { Err(Error::Closed) });
        }
        let addr = Subscriber::new(
            msg.filter.clone(),
            msg.shared.clone(),
            self.live.subscriber(),
        )
        .start();
        // Late subscriber: replay recent mail it asks for by `since` or
        // `max_age`.
        let earliest = msg.filter.earliest(std::time::SystemTime::now());
        if earliest.is_some() {
            for (_, mail) in &self.recent {
                addr.do_send(NewMail(mail.clone()));
            }
        }
        match msg.filter.recipient() {
            Some(r) => {
                self.by_recipient
                    .entry(r.to_owned())
                    .or_default()
                    .push(msg.id);
            }
            None => {
                self.everyone.insert(msg.id);
            }
        }
        self.subscribers.insert(
            msg.id,
            Entry {
                addr,
                filter: msg.filter,
                shared: msg.shared,
            },
        );
        if self.state == SessionState::Watching {
            self.look_back_for(earliest);
            return Box::pin(async { Ok(()) });
        }
        let (tx, rx) = oneshot::channel();
        self.waiting.push(tx);
        Box::pin(async move { rx.await.unwrap_or(Err(Error::Closed)) })
    }
}

impl Handler<RemoveSubscriber> for Session {
    type Result = ();

    fn handle(&mut self, msg: RemoveSubscriber, _: &mut Context<Self>) {
        if let Some(e) = self.subscribers.remove(&msg.id) {
            self.delivered_gone += e.shared.delivered();
            self.dropped_gone += e.shared.dropped();
            e.shared.close(None);
            match e.filter.recipient() {
                Some(r) => {
                    if let Some(ids) = self.by_recipient.get_mut(r) {
                        if let Some(i) = ids.iter().position(|id| *id == msg.id) {
                            ids.swap_remove(i);
                        }
                        if ids.is_empty() {
                            self.by_recipient.remove(r);
                        }
                    }
                }
                None => {
                    self.everyone.remove(&msg.id);
                }
            }
            // Dropping `e.addr` (the only address) stops the subscriber.
        }
    }
}

impl Handler<EndSession> for Session {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: EndSession, ctx: &mut Context<Self>) -> Self::Result {
        self.ending = true;
        self.state = SessionState::Closing;
        match &self.orders {
            Some(tx) if tx.send(Order::Logout).is_ok() => {
                let (done_tx, done_rx) = oneshot::channel();
                self.closing.push(done_tx);
                Box::pin(async move {
                    let _ = done_rx.await;
                })
            }
            _ => {
                // Not connected (backoff, or failed): nothing to log out.
                self.end_all(None);
                ctx.stop();
                Box::pin(async {})
            }
        }
    }
}

impl Handler<GetStats> for Session {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(vec![self.stats()])
    }
}
