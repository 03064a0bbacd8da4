//! The user's entry point: [`Handle`], cheap to clone and `Send + Sync`,
//! usable from actix and from plain tokio alike, and the two ways to get
//! one, [`Registry::start`] and [`Registry::start_in_thread`].
//!
//! The top of the actor layers: it imports the registry and the messages,
//! and nothing below imports it. That is why the registry's start
//! functions, which return a `Handle`, live here rather than in
//! `registry.rs`.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use tokio_util::sync::CancellationToken;

use crate::credential::Tap;
use crate::messages::{GetStats, GetStatsOf, Shutdown, Subscribe, SubscribeMany};
use crate::registry::Registry;
use crate::stats::{ActorCensus, ActorCounts, SessionStats};
use crate::subscription::Subscription;
use crate::{Config, Credential, Error, Filter, Followed, Mail};

impl Registry {
    /// Starts the registry in the running actix System (inside
    /// `#[actix::main]`, `#[actix_web::main]` or `actix_rt::System::new()`)
    /// and returns its handle.
    ///
    /// Panics outside a running System, like every actix actor start.
    pub fn start(config: Config) -> Result<Handle, Error> {
        config.validate()?;
        let live = Arc::new(ActorCensus::default());
        let follow_capacity = config.follow_capacity;
        let addr = Actor::start(Registry::new(config, live.clone()));
        Ok(Handle::new(addr, None, live, follow_capacity))
    }

    /// Starts the registry in its own actix System on a background thread,
    /// for `#[tokio::main]` programs and plain threads. The handle is
    /// `Send + Sync + Clone`; [`Handle::shutdown`] stops the thread.
    pub fn start_in_thread(config: Config) -> Result<Handle, Error> {
        config.validate()?;
        let (tx, rx) = std::sync::mpsc::channel();
        let live = Arc::new(ActorCensus::default());
        let live2 = live.clone();
        let follow_capacity = config.follow_capacity;
        std::thread::Builder::new()
            .name("emap-registry".into())
            .spawn(move || {
                let system = actix_rt::System::new();
                system.block_on(async move {
                    let addr = Actor::start(Registry::new(config, live2));
                    let _ = tx.send((addr, actix_rt::System::current()));
                });
                let _ = system.run();
            })
            .map_err(|e| Error::Io(Arc::new(e)))?;
        let (addr, system) = rx
            .recv()
            .map_err(|_| Error::InvalidConfig("the registry thread did not start".into()))?;
        Ok(Handle::new(addr, Some(system), live, follow_capacity))
    }
}

/// A handle to a running registry.
#[derive(Clone)]
pub struct Handle {
    registry: Addr<Registry>,
    system: Option<actix_rt::System>,
    live: Arc<ActorCensus>,
    follow_capacity: usize,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("own_thread", &self.system.is_some())
            .finish_non_exhaustive()
    }
}

impl Handle {
    fn new(
        registry: Addr<Registry>,
        system: Option<actix_rt::System>,
        live: Arc<ActorCensus>,
        follow_capacity: usize,
    ) -> Self {
        Handle {
            registry,
            system,
            live,
            follow_capacity,
        }
    }

    /// How many session and subscriber actors are alive: both return to
    /// zero after [`Handle::shutdown`] (and sessions after their linger).
    pub fn actors(&self) -> ActorCounts {
        self.live.counts()
    }

    /// The registry's address, for actix users who prefer messages.
    pub fn addr(&self) -> &Addr<Registry> {
        &self.registry
    }

    /// Subscribes to new mail of `credential` that matches `filter`, with
    /// the configured queue capacity. Resolves once the session has selected
    /// the mailbox and fixed its watermark: a mail delivered after this
    /// returns reaches the subscription if it matches.
    pub async fn subscribe(
        &self,
        credential: Credential,
        filter: Filter,
    ) -> Result<Subscription, Error> {
        self.subscribe_with_capacity(credential, filter, None).await
    }

    /// [`Handle::subscribe`] with a queue capacity of its own (a consumer
    /// of every mail on a busy catch-all wants hundreds).
    pub async fn subscribe_with_capacity(
        &self,
        credential: Credential,
        filter: Filter,
        capacity: Option<usize>,
    ) -> Result<Subscription, Error> {
        // Dropping this future (a caller's timeout) cancels the subscribe:
        // the registry removes the half-made subscription at once.
        let cancel = CancellationToken::new();
        let _cancel_on_drop = cancel.clone().drop_guard();
        self.registry
            .send(Subscribe {
                credential,
                filter,
                capacity,
                cancel: Some(cancel),
            })
            .await
            .map_err(|_| Error::Shutdown)?
            .map(Subscription::from)
    }

    /// Subscribes every filter of `filters` on one credential at once: one
    /// round trip to the registry and one to the session for the whole
    /// batch, instead of two per subscription — the way to make thousands
    /// of subscriptions from a plain tokio task. All or nothing: one
    /// [`Subscription`] per filter, in the order given, once the session
    /// has selected the mailbox; or the error (an invalid filter, a failed
    /// login, ...) with none of them left behind. Dropping the future
    /// before it resolves removes every half-made subscription.
    pub async fn subscribe_many(
        &self,
        credential: Credential,
        filters: impl IntoIterator<Item = Filter>,
    ) -> Result<Vec<Subscription>, Error> {
        let cancel = CancellationToken::new();
        let _cancel_on_drop = cancel.clone().drop_guard();
        let subs = self
            .registry
            .send(SubscribeMany {
                credential,
                filters: filters.into_iter().collect(),
                capacity: None,
                cancel: Some(cancel),
            })
            .await
            .map_err(|_| Error::Shutdown)??;
        Ok(subs.into_iter().map(Subscription::from).collect())
    }

    /// Waits for one matching mail: the one-shot task case. Fails with
    /// [`Error::WaitTimedOut`] when none arrives within `timeout`, or with
    /// the session's error.
    pub async fn wait_for(
        &self,
        credential: Credential,
        filter: Filter,
        timeout: Duration,
    ) -> Result<Arc<Mail>, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut sub = tokio::time::timeout_at(deadline, self.subscribe(credential, filter))
            .await
            .map_err(|_| Error::WaitTimedOut)??;
        match tokio::time::timeout_at(deadline, sub.recv()).await {
            Ok(Some(mail)) => Ok(mail),
            Ok(None) => Err(sub.error().unwrap_or(Error::Shutdown)),
            Err(_) => Err(Error::WaitTimedOut),
        }
    }

    /// Follows every new mail of `credential` in order, with the position
    /// after it: a session of its own (never shared, never joined) that
    /// starts from `credential`'s stored position
    /// ([`Credential::resume_from`]) and reports each mail
    /// ([`Followed::Arrived`]) and each move of its position
    /// ([`Followed::Advanced`]). A process that stores a position only once
    /// it has dealt with the mail reported before it, and resumes from it,
    /// misses nothing and repeats at most what it had not stored.
    ///
    /// Resolves once the mailbox is selected. A follower that falls
    /// `Config::follow_capacity` reports behind is cut off
    /// ([`Follower::overflowed`]) rather than skipped over; it starts again
    /// from what it stored.
    pub async fn follow(&self, credential: Credential) -> Result<Follower, Error> {
        let (tx, rx) = tokio::sync::mpsc::channel(self.follow_capacity.max(1));
        let tap = Arc::new(Tap::new(tx));
        let mut credential = credential;
        credential.resume.tap = Some(tap.clone());
        // The subscription only keeps the session alive: mail reaches the
        // follower through the tap, in order with the positions. Its
        // filter names an address under `.invalid` (RFC 2606), which no
        // mail carries.
        let keep = self
            .subscribe_with_capacity(credential, Filter::new().to("follow@emap.invalid"), Some(1))
            .await?;
        Ok(Follower { rx, tap, keep })
    }

    /// A view of one mailbox, for repeated watches.
    pub fn mailbox(&self, credential: Credential) -> Mailbox {
        Mailbox {
            handle: self.clone(),
            credential,
        }
    }

    /// Statistics of every session.
    pub async fn stats(&self) -> Result<Vec<SessionStats>, Error> {
        self.registry
            .send(GetStats)
            .await
            .map_err(|_| Error::Shutdown)
    }

    /// Statistics of the session `credential` would join (the same server,
    /// user, mailbox, TLS settings and secret), if one is live: what a
    /// service shows a caller about its own inbox, and nothing about the
    /// others.
    pub async fn stats_of(&self, credential: &Credential) -> Result<Vec<SessionStats>, Error> {
        self.registry
            .send(GetStatsOf(credential.clone()))
            .await
            .map_err(|_| Error::Shutdown)
    }

    /// LOGOUT on every session; every subscription ends. With
    /// [`Registry::start_in_thread`], also stops the background thread.
    pub async fn shutdown(&self) {
        let _ = self.registry.send(Shutdown).await;
        if let Some(system) = &self.system {
            system.stop();
        }
    }
}

/// One credential's mailbox, bound to a handle.
#[derive(Debug, Clone)]
pub struct Mailbox {
    handle: Handle,
    credential: Credential,
}

impl Mailbox {
    /// Statistics of this mailbox's session, if one is live (see
    /// [`Handle::stats_of`]).
    pub async fn stats(&self) -> Result<Vec<SessionStats>, Error> {
        self.handle.stats_of(&self.credential).await
    }

    /// Subscribes with `filter`.
    pub async fn watch(&self, filter: Filter) -> Result<Subscription, Error> {
        self.handle.subscribe(self.credential.clone(), filter).await
    }

    /// Subscribes with `filter` and calls `on_mail` for each mail until
    /// `cancel` fires (then the subscription is closed) or the subscription
    /// ends. Returns the session's error if it ended with one.
    pub async fn watch_until<F>(
        &self,
        filter: Filter,
        cancel: CancellationToken,
        mut on_mail: F,
    ) -> Result<(), Error>
    where
        F: FnMut(Arc<Mail>),
    {
        let mut sub = tokio::select! {
            s = self.watch(filter) => s?,
            _ = cancel.cancelled() => return Ok(()),
        };
        loop {
            tokio::select! {
                m = sub.recv() => match m {
                    Some(m) => on_mail(m),
                    None => return sub.error().map_or(Ok(()), Err),
                },
                _ = cancel.cancelled() => {
                    sub.close();
                    return Ok(());
                }
            }
        }
    }

    /// Waits for one matching mail.
    pub async fn wait_for(&self, filter: Filter, timeout: Duration) -> Result<Arc<Mail>, Error> {
        self.handle
            .wait_for(self.credential.clone(), filter, timeout)
            .await
    }
}

/// A followed session ([`Handle::follow`]): its mail and positions, in
/// order. Dropping it ends the session at once: nobody can join a followed
/// session, so it does not linger.
#[derive(Debug)]
pub struct Follower {
    rx: tokio::sync::mpsc::Receiver<Followed>,
    tap: Arc<Tap>,
    keep: crate::Subscription,
}

impl Follower {
    /// The next report; `None` once the session ended (see
    /// [`Follower::error`]) or the follower fell behind (see
    /// [`Follower::overflowed`]).
    pub async fn next(&mut self) -> Option<Followed> {
        let event = self.rx.recv().await;
        if event.is_none() && !self.tap.overflowed() {
            // The session closes the tap before it ends its subscriptions:
            // wait for the keep-alive's end, which carries the session's
            // error, so that `error` answers once this returns `None`.
            while self.keep.recv().await.is_some() {}
        }
        event
    }

    /// Whether reports stopped because this follower fell
    /// `Config::follow_capacity` reports behind: start again from the
    /// position stored last.
    pub fn overflowed(&self) -> bool {
        self.tap.overflowed()
    }

    /// Why the session ended, if it failed.
    pub fn error(&self) -> Option<Error> {
        self.keep.error()
    }
}
