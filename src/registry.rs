//! The `Registry` actor: the map from session key to session, and the
//! lifecycle of every session.
//!
//! A subscriber joins a live session only if its credential has the same
//! [`Identity`] (server, user with its case kept, mailbox, TLS mode, trust
//! settings, token provider) and the same secret, compared through the
//! registry's keyed fingerprint in constant time; otherwise it gets a
//! session of its own. So a wrong password never rides on the right one's
//! login: it makes its own, which the server refuses, and the caller gets
//! `AuthenticationFailed` through the ordinary failure path — never mail.
//!
//! It is the only holder of a strong `Addr<Session>`: each session runs
//! under an actix `Supervisor` on one of a few arbiters (about one per core,
//! so one busy session never stalls the others), and dropping the address
//! here is what finally stops a session. It tracks the subscription ids of
//! each session *instance* (a set, not a counter, so an unsubscribe from a
//! subscription of an earlier instance can never end a later one's), keeps
//! a session `linger` after its last one leaves, so that a task that
//! subscribes again soon reuses the connection (a followed session, which
//! nobody can join, ends at once), and remembers a permanent
//! failure for `Config::failure_memory`, so that callers retrying in a loop
//! cannot get the account locked.
//!
//! One connection per credential at a time: a session the registry ends
//! (its linger elapsed, its follower left) is forgotten at once — nobody
//! can join it — but keeps its connection until its LOGOUT completes. The
//! registry remembers it, per identity, as *closing* until it reports
//! that it has closed (its answer to [`EndSession`]), and a new session of
//! that identity dials only after every closing one has closed. A hung
//! server does not block the next session for ever: the old session's
//! LOGOUT times out after `Config::command_timeout` and it closes then
//! (`a_session_whose_logout_hangs_delays_the_next_only_until_it_closes`
//! in tests/callers.rs); and the registry stops waiting for a session
//! that has not answered within [`closing_bound`] — the start-up's own
//! timeouts (dial, greeting) plus four commands (STARTTLS, authentication,
//! CAPABILITY or the command in flight, LOGOUT) — whatever it is stuck in,
//! with a warning. `command_timeout` is a silence timeout, so a session
//! still receiving a large FETCH past that bound is no longer waited for:
//! the one case in which two connections may briefly overlap. Without a
//! closing session, a new one dials at once.

use std::collections::{BTreeSet, HashMap};
use std::hash::RandomState;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix::{Arbiter, Supervisor};
use tokio_util::sync::CancellationToken;

use crate::credential::{Identity, same_secret};
use crate::messages::{
    AddSubscribers, EndSession, GetStats, GetStatsOf, NewSubscriber, RemoveSubscriber,
    SessionEnded, SessionLink, Shutdown, Subscribe, SubscribeMany, Subscribed, Unsubscribe,
};
use crate::queue::SubscriberQueue;
use crate::session::Session;
use crate::stats::{ActorCensus, SessionStats};
use crate::{Config, Credential, Error, Filter, SessionKey};

struct Slot {
    addr: Addr<Session>,
    instance: u64,
    /// Who may join: this identity ...
    identity: Identity,
    /// ... presenting this secret (keyed fingerprint).
    fingerprint: u64,
    /// The ids of this instance's live subscriptions (a B-tree: churn
    /// leaves no deleted slots behind that would make it double).
    subscribers: BTreeSet<u64>,
    /// Bumped at each subscribe, so a stale linger timer does nothing.
    generation: u64,
    /// Shared by every subscription of this session: its key and where
    /// to unsubscribe. Weak: only the subscriptions keep it (and with it
    /// the registry's mailbox) alive, as each one's own address did.
    link: std::sync::Weak<SessionLink>,
}

/// Owns every session.
pub struct Registry {
    config: Arc<Config>,
    sessions: HashMap<SessionKey, Slot>,
    /// The keys of the live sessions of each identity: the only ones a
    /// subscriber of that identity may join (if its secret matches).
    by_identity: HashMap<Identity, Vec<SessionKey>>,
    arbiters: Vec<Arbiter>,
    next_arbiter: usize,
    next_id: u64,
    next_instance: u64,
    shut_down: bool,
    live: Arc<ActorCensus>,
    /// Permanent failures, remembered for `Config::failure_memory`, one
    /// per secret: a right password's session never makes the registry
    /// forget a wrong one's failure, nor the other way round. Keyed by
    /// [`Identity::for_failures`], so that they apply to `follow` too.
    failures: HashMap<Identity, Vec<RememberedFailure>>,
    /// The key of the keyed hash that fingerprints secrets.
    secret_keys: RandomState,
    /// The sessions ended but not yet closed, per identity (without a
    /// follower's tap, like `failures`): (instance, cancelled once it has
    /// closed). A new session of the identity waits for them all.
    closing: HashMap<Identity, Vec<(u64, CancellationToken)>>,
}

/// A session's permanent failure, with the secret it was made with.
struct RememberedFailure {
    at: Instant,
    fingerprint: u64,
    error: Error,
}

/// How long the registry waits for an ended session to close before a new
/// session of its identity may dial: every step a session can be in when
/// told to end, each with its own timeout (see the module doc).
fn closing_bound(config: &Config) -> Duration {
    config
        .dial_timeout
        .saturating_add(config.greeting_timeout)
        .saturating_add(config.command_timeout.saturating_mul(4))
}

impl Registry {
    /// A registry with `config`; started by [`Registry::start`] and
    /// [`Registry::start_in_thread`] (in `handle.rs`, which builds the
    /// [`Handle`](crate::Handle)).
    pub(crate) fn new(config: Config, live: Arc<ActorCensus>) -> Self {
        let threads = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, 8);
        Registry {
            config: Arc::new(config),
            sessions: HashMap::new(),
            by_identity: HashMap::new(),
            arbiters: (0..threads).map(|_| Arbiter::new()).collect(),
            next_arbiter: 0,
            next_id: 0,
            next_instance: 0,
            shut_down: false,
            live,
            failures: HashMap::new(),
            secret_keys: RandomState::new(),
            closing: HashMap::new(),
        }
    }

    /// The remembered permanent failure of `identity` with this secret,
    /// if it is recent enough. Forgets the expired failures of `identity`.
    fn remembered(&mut self, identity: &Identity, fingerprint: u64) -> Option<Error> {
        let memory = self.config.failure_memory;
        let failures = self.failures.get_mut(identity)?;
        failures.retain(|f| f.at.elapsed() < memory);
        let mut found = None;
        for f in failures.iter() {
            if same_secret(f.fingerprint, fingerprint) {
                found = Some(f.error.clone());
            }
        }
        if failures.is_empty() {
            self.failures.remove(identity);
        }
        found
    }

    /// The live session this identity and secret may join, if any.
    fn joinable(&self, identity: &Identity, fingerprint: u64) -> Option<SessionKey> {
        let mut found = None;
        for key in self.by_identity.get(identity)? {
            if self
                .sessions
                .get(key)
                .is_some_and(|slot| same_secret(slot.fingerprint, fingerprint))
            {
                found = Some(key.clone());
            }
        }
        found
    }

    /// The session the subscribers `ids` of `credential` join: a live one of
    /// the same identity and secret, or a new one.
    fn session(
        &mut self,
        credential: &Credential,
        identity: Identity,
        fingerprint: u64,
        ids: RangeInclusive<u64>,
        ctx: &mut Context<Self>,
    ) -> (SessionKey, Addr<Session>, Arc<SessionLink>) {
        if let Some(key) = self.joinable(&identity, fingerprint)
            && let Some(slot) = self.sessions.get_mut(&key)
        {
            slot.subscribers.extend(ids);
            slot.generation += 1;
            let link = match slot.link.upgrade() {
                Some(link) => link,
                None => {
                    let link = SessionLink::new(key.clone(), ctx.address().recipient());
                    slot.link = Arc::downgrade(&link);
                    link
                }
            };
            return (key, slot.addr.clone(), link);
        }
        self.next_instance += 1;
        let instance = self.next_instance;
        let key = credential.session_key(instance);
        let arbiter = self.arbiters[self.next_arbiter % self.arbiters.len()].handle();
        self.next_arbiter += 1;
        let cred = credential.clone();
        let config = self.config.clone();
        let me = ctx.address().downgrade().recipient();
        let live = self.live.clone();
        let after: Vec<CancellationToken> = self
            .closing
            .get(&identity.for_failures())
            .map(|closing| closing.iter().map(|(_, t)| t.clone()).collect())
            .unwrap_or_default();
        let addr = Supervisor::start_in_arbiter(&arbiter, move |_| {
            Session::new(cred, config, instance, me, live, after)
        });
        tracing::info!(session = %key, "session started");
        self.by_identity
            .entry(identity.clone())
            .or_default()
            .push(key.clone());
        let link = SessionLink::new(key.clone(), ctx.address().recipient());
        self.sessions.insert(
            key.clone(),
            Slot {
                addr: addr.clone(),
                instance,
                identity,
                fingerprint,
                subscribers: ids.collect(),
                generation: 0,
                link: Arc::downgrade(&link),
            },
        );
        (key, addr, link)
    }

    /// Forgets session `key`: no subscriber can join it any more.
    fn remove_session(&mut self, key: &SessionKey) -> Option<Slot> {
        let slot = self.sessions.remove(key)?;
        if let Some(keys) = self.by_identity.get_mut(&slot.identity) {
            keys.retain(|k| k != key);
            if keys.is_empty() {
                self.by_identity.remove(&slot.identity);
            }
        }
        Some(slot)
    }

    /// Ends a session already forgotten (`remove_session`) and remembers
    /// it as closing until it answers that it has closed, or for at most
    /// [`closing_bound`]: see the module doc.
    fn end_session(&mut self, slot: Slot, ctx: &mut Context<Self>) {
        let identity = slot.identity.for_failures();
        let instance = slot.instance;
        let closed = CancellationToken::new();
        self.closing
            .entry(identity.clone())
            .or_default()
            .push((instance, closed.clone()));
        // Enqueued now; answered once the session has closed (or dropped
        // unanswered if it stops first, which ends the wait too).
        let ended = slot.addr.send(EndSession);
        let bound = closing_bound(&self.config);
        // Cancelled also if the registry stops before the session closes.
        let guard = closed.drop_guard();
        let wait = async move {
            if tokio::time::timeout(bound, ended).await.is_err() {
                tracing::warn!("a session did not close in time; not waiting for it any more");
            }
            guard.disarm()
        };
        ctx.spawn(wait.into_actor(self).map(move |closed, act, _| {
            closed.cancel();
            if let Some(all) = act.closing.get_mut(&identity) {
                all.retain(|(i, _)| *i != instance);
                if all.is_empty() {
                    act.closing.remove(&identity);
                }
            }
        }));
        // Dropping the only strong address lets the session stop once it
        // has closed.
        drop(slot);
    }

    /// Removes subscriptions `ids` (one, or a whole batch) from the session
    /// they belong to, if that session instance is still the one registered
    /// under `key`, with one message to it; when they were the last, starts
    /// the linger, or for a followed session, which nobody can join, ends it
    /// at once.
    fn release(&mut self, key: &SessionKey, ids: RangeInclusive<u64>, ctx: &mut Context<Self>) {
        let Some(slot) = self.sessions.get_mut(key) else {
            return;
        };
        let mut removed = false;
        for id in ids.clone() {
            removed |= slot.subscribers.remove(&id);
        }
        if !removed {
            // Subscriptions of an earlier instance: not ours to end.
            return;
        }
        slot.addr.do_send(RemoveSubscriber { ids });
        if !slot.subscribers.is_empty() {
            return;
        }
        if slot.identity.followed() {
            if let Some(slot) = self.remove_session(key) {
                tracing::info!(session = %key, "follower gone; logging out");
                self.end_session(slot, ctx);
            }
            return;
        }
        let generation = slot.generation;
        let key = key.clone();
        ctx.run_later(self.config.linger, move |act, ctx| {
            let idle = act
                .sessions
                .get(&key)
                .is_some_and(|s| s.subscribers.is_empty() && s.generation == generation);
            if idle && let Some(slot) = act.remove_session(&key) {
                tracing::info!(session = %key, "linger elapsed; logging out");
                act.end_session(slot, ctx);
            }
        });
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        for a in &self.arbiters {
            a.stop();
        }
    }
}

impl Handler<Subscribe> for Registry {
    type Result = ResponseActFuture<Self, Result<Subscribed, Error>>;

    fn handle(&mut self, msg: Subscribe, ctx: &mut Context<Self>) -> Self::Result {
        let all = self.subscribe_all(
            &msg.credential,
            vec![msg.filter],
            msg.capacity,
            msg.cancel,
            ctx,
        );
        Box::pin(all.map(|res, _, _| res.and_then(|mut subs| subs.pop().ok_or(Error::Closed))))
    }
}

impl Handler<SubscribeMany> for Registry {
    type Result = ResponseActFuture<Self, Result<Vec<Subscribed>, Error>>;

    fn handle(&mut self, msg: SubscribeMany, ctx: &mut Context<Self>) -> Self::Result {
        self.subscribe_all(&msg.credential, msg.filters, msg.capacity, msg.cancel, ctx)
    }
}

impl Registry {
    /// Subscribes every filter on one credential, all or nothing: the one
    /// path of [`Subscribe`] (a batch of one) and [`SubscribeMany`]. One
    /// message to the session for the whole batch.
    fn subscribe_all(
        &mut self,
        credential: &Credential,
        filters: Vec<Filter>,
        capacity: Option<usize>,
        cancel: Option<tokio_util::sync::CancellationToken>,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<Vec<Subscribed>, Error>> {
        let checks = credential
            .validate()
            .and_then(|()| filters.iter().try_for_each(Filter::validate))
            .and_then(|()| match capacity {
                Some(0) => Err(Error::InvalidConfig("capacity must be at least 1".into())),
                _ => Ok(()),
            });
        if self.shut_down {
            return Box::pin(fut::ready(Err(Error::Shutdown)));
        }
        if let Err(e) = checks {
            return Box::pin(fut::ready(Err(e)));
        }
        if filters.is_empty() {
            return Box::pin(fut::ready(Ok(Vec::new())));
        }
        let identity = credential.identity();
        let fingerprint = credential.secret_fingerprint(&self.secret_keys);
        if !self.config.failure_memory.is_zero()
            && let Some(e) = self.remembered(&identity.for_failures(), fingerprint)
        {
            tracing::debug!(identity = ?identity, "permanent failure remembered");
            return Box::pin(fut::ready(Err(e)));
        }
        // The batch's ids are consecutive: kept as a range, never a list.
        let ids = self.next_id + 1..=self.next_id + filters.len() as u64;
        self.next_id = *ids.end();
        let (key, addr, link) = self.session(credential, identity, fingerprint, ids.clone(), ctx);
        let capacity = capacity.unwrap_or(self.config.queue_capacity);
        let mut queues = Vec::with_capacity(filters.len());
        let add = AddSubscribers(
            ids.clone()
                .zip(filters)
                .map(|(id, filter)| {
                    let queue = SubscriberQueue::new(capacity);
                    queues.push(queue.clone());
                    NewSubscriber { id, filter, queue }
                })
                .collect(),
        );
        let fut = async move {
            let added = addr.send(add);
            match cancel {
                Some(cancel) => tokio::select! {
                    res = added => Some(res.unwrap_or(Err(Error::Closed))),
                    () = cancel.cancelled() => None,
                },
                None => Some(added.await.unwrap_or(Err(Error::Closed))),
            }
        };
        Box::pin(fut.into_actor(self).map(move |res, act, ctx| {
            match res {
                Some(Ok(())) => Ok(ids
                    .zip(queues)
                    .map(|(id, queue)| Subscribed::new(queue, id, link.clone()))
                    .collect()),
                Some(Err(e)) => {
                    act.release(&key, ids, ctx);
                    Err(e)
                }
                None => {
                    // The caller went away (a timed-out `wait_for`): remove the
                    // subscribers now, not when the session next connects.
                    act.release(&key, ids, ctx);
                    Err(Error::Closed)
                }
            }
        }))
    }
}

impl Handler<Unsubscribe> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, ctx: &mut Context<Self>) {
        self.release(&msg.key, msg.id..=msg.id, ctx);
    }
}

impl Handler<SessionEnded> for Registry {
    type Result = ();

    fn handle(&mut self, msg: SessionEnded, _: &mut Context<Self>) {
        if self
            .sessions
            .get(&msg.key)
            .is_some_and(|s| s.instance == msg.instance)
        {
            tracing::warn!(session = %msg.key, error = %msg.error, "session ended");
            // Dropping the only strong address lets the session stop.
            let Some(slot) = self.remove_session(&msg.key) else {
                return;
            };
            if !self.config.failure_memory.is_zero() {
                // Forget what expired, so the memory holds only the
                // failures of the last `failure_memory`, however many
                // credentials fail over a registry's life.
                let memory = self.config.failure_memory;
                self.failures.retain(|_, failures| {
                    failures.retain(|f| f.at.elapsed() < memory);
                    !failures.is_empty()
                });
                // Under the identity without a follower's tap: each
                // `follow` makes a new one, and must meet this failure.
                let failures = self
                    .failures
                    .entry(slot.identity.for_failures())
                    .or_default();
                failures.retain(|f| !same_secret(f.fingerprint, slot.fingerprint));
                failures.push(RememberedFailure {
                    at: Instant::now(),
                    fingerprint: slot.fingerprint,
                    error: msg.error,
                });
            }
        }
    }
}

impl Handler<GetStats> for Registry {
    type Result = ResponseFuture<Vec<SessionStats>>;

    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        let addrs: Vec<Addr<Session>> = self.sessions.values().map(|s| s.addr.clone()).collect();
        Box::pin(async move {
            let mut all = Vec::new();
            for a in addrs {
                if let Ok(mut s) = a.send(GetStats).await {
                    all.append(&mut s);
                }
            }
            all.sort_by(|a, b| a.key.cmp(&b.key));
            all
        })
    }
}

impl Handler<GetStatsOf> for Registry {
    type Result = ResponseFuture<Vec<SessionStats>>;

    fn handle(&mut self, msg: GetStatsOf, _: &mut Context<Self>) -> Self::Result {
        let identity = msg.0.identity();
        let fingerprint = msg.0.secret_fingerprint(&self.secret_keys);
        let addr = self
            .joinable(&identity, fingerprint)
            .and_then(|key| self.sessions.get(&key))
            .map(|slot| slot.addr.clone());
        Box::pin(async move {
            match addr {
                Some(a) => a.send(GetStats).await.unwrap_or_default(),
                None => Vec::new(),
            }
        })
    }
}

impl Handler<Shutdown> for Registry {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        self.shut_down = true;
        self.by_identity.clear();
        let slots: Vec<Slot> = self.sessions.drain().map(|(_, s)| s).collect();
        // One deadline for all: `send` enqueues at once, so the sessions
        // log out in parallel, and N stuck sessions cost one timeout, not N.
        let deadline = tokio::time::Instant::now() + self.config.command_timeout;
        let ends: Vec<_> = slots.iter().map(|s| s.addr.send(EndSession)).collect();
        let fut = async move {
            for end in ends {
                let _ = tokio::time::timeout_at(deadline, end).await;
            }
            drop(slots);
        };
        Box::pin(fut.into_actor(self).map(|(), _, ctx| ctx.stop()))
    }
}
