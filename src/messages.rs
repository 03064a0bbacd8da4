//! The actor messages.
//!
//! The registry's own commands — [`Subscribe`], [`GetStats`], [`Shutdown`]
//! — are public, so that actix applications can talk to the
//! `Addr<Registry>` of [`Handle::addr`](crate::Handle::addr) directly;
//! everyone else uses [`Handle`](crate::Handle). The messages between the
//! actors (registry → session → subscriber, and back) are crate-private:
//! no public API hands out a session's or a subscriber's address, and
//! keeping them private leaves the actors free to change.
//!
//! Commands are imperative (`Subscribe`), events past tense
//! (`SessionEnded`).

use std::ops::RangeInclusive;
use std::sync::Arc;

use actix::{Message, Recipient};

use crate::queue::SubscriberQueue;
use crate::stats::SessionStats;
use crate::{Credential, Error, Filter, Mail, SessionKey};

/// Subscribe to new mail of `credential` that matches `filter`. Resolves
/// once the session has selected the mailbox and fixed its watermark, to a
/// [`Subscribed`]: turn it into a [`Subscription`](crate::Subscription)
/// with `Subscription::from`.
#[derive(Debug, Message)]
#[rtype(result = "Result<Subscribed, Error>")]
pub struct Subscribe {
    /// Where and as whom to log in.
    pub credential: Credential,
    /// Which mails.
    pub filter: Filter,
    /// Queue capacity; `None` takes `Config::queue_capacity`.
    pub capacity: Option<usize>,
    /// Cancelled when the caller stops waiting: the half-made subscription
    /// is removed at once (not when the session next connects). `None`:
    /// the subscribe runs to its end.
    pub cancel: Option<tokio_util::sync::CancellationToken>,
}

/// Subscribe every filter of `filters` to new mail of `credential`, in
/// one round trip to the registry and one to the session: the cheap way to
/// make thousands of subscriptions from outside actix. All or nothing:
/// resolves to one [`Subscribed`] per filter, in order, once the session
/// has selected the mailbox; or, if any filter is invalid or the session
/// fails first, to the error, with none of them left behind. Cancelled
/// (`cancel`), it removes every half-made subscription at once.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<Subscribed>, Error>")]
pub struct SubscribeMany {
    /// Where and as whom to log in (shared by every filter).
    pub credential: Credential,
    /// One subscription per filter.
    pub filters: Vec<Filter>,
    /// Queue capacity of each; `None` takes `Config::queue_capacity`.
    pub capacity: Option<usize>,
    /// Cancelled when the caller stops waiting: every half-made
    /// subscription is removed at once.
    pub cancel: Option<tokio_util::sync::CancellationToken>,
}

/// The registry's answer to [`Subscribe`]: a live subscription, not yet
/// read. `Subscription::from` turns it into the user's
/// [`Subscription`](crate::Subscription); dropping it unsubscribes, so a
/// caller that went away after the registry answered leaves nothing
/// behind.
///
/// It carries the parts rather than the `Subscription` itself so that the
/// messages, at the bottom of the actor layers, need nothing from the
/// user-facing types above them.
pub struct Subscribed {
    pub(crate) queue: Arc<SubscriberQueue>,
    pub(crate) id: u64,
    session: Arc<SessionLink>,
    closed: bool,
}

/// What every subscription of one session shares, by `Arc`: the session's
/// key and the registry's mailbox for the unsubscribe. One per session
/// rather than a key copy and an actix address (three allocations) per
/// subscription (issue 14: memory per subscriber).
pub(crate) struct SessionLink {
    key: SessionKey,
    registry: Recipient<Unsubscribe>,
}

impl SessionLink {
    pub(crate) fn new(key: SessionKey, registry: Recipient<Unsubscribe>) -> Arc<Self> {
        Arc::new(SessionLink { key, registry })
    }
}

impl Subscribed {
    pub(crate) fn new(queue: Arc<SubscriberQueue>, id: u64, session: Arc<SessionLink>) -> Self {
        Subscribed {
            queue,
            id,
            session,
            closed: false,
        }
    }

    /// The session the subscription belongs to.
    pub(crate) fn key(&self) -> &SessionKey {
        &self.session.key
    }

    /// Unsubscribes now (once); queued mails are discarded.
    pub(crate) fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            self.queue.abandon();
            self.session.registry.do_send(Unsubscribe {
                key: self.session.key.clone(),
                id: self.id,
            });
        }
    }
}

impl std::fmt::Debug for Subscribed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscribed")
            .field("id", &self.id)
            .field("session", &self.session.key)
            .finish_non_exhaustive()
    }
}

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.close();
    }
}

/// End a subscription (sent by `Subscription` on close or drop).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Unsubscribe {
    /// The session.
    pub key: SessionKey,
    /// The subscription's id.
    pub id: u64,
}

/// LOGOUT every session, end every subscription, stop.
#[derive(Debug, Default, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Per-session statistics.
#[derive(Debug, Default, Message)]
#[rtype(result = "Vec<SessionStats>")]
pub struct GetStats;

/// Statistics of the sessions a credential would join: the same identity
/// (server, user, mailbox, TLS mode and trust, token provider) and the same
/// secret. A caller learns nothing about sessions its credential does not
/// open.
#[derive(Message)]
#[rtype(result = "Vec<SessionStats>")]
pub struct GetStatsOf(pub Credential);

impl std::fmt::Debug for GetStatsOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("GetStatsOf").field(&self.0).finish()
    }
}

/// A new mail for a subscriber.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub(crate) struct NewMail(pub Arc<Mail>);

/// One subscriber to add (see [`AddSubscribers`]).
#[derive(Debug)]
pub(crate) struct NewSubscriber {
    /// The subscription's id.
    pub id: u64,
    /// Its filter.
    pub filter: Filter,
    /// Its queue (shared with the user's `Subscription`).
    pub(crate) queue: Arc<SubscriberQueue>,
}

/// Registry → session: add subscribers (one for `Subscribe`, many for
/// `SubscribeMany`); answers once the mailbox is selected.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub(crate) struct AddSubscribers(pub Vec<NewSubscriber>);

/// Session → subscriber: the session ended; close the stream (after the
/// mail sent before this), with the error if it failed.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct EndStream(pub(crate) Option<Error>);

/// Registry → session: remove subscribers (one for an unsubscribe, a
/// whole batch when a [`SubscribeMany`] fails or is cancelled).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct RemoveSubscriber {
    /// The subscriptions' ids: a batch's ids are consecutive.
    pub ids: RangeInclusive<u64>,
}

/// Registry → session: LOGOUT and end (linger elapsed, or shutdown).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct EndSession;

/// Session → registry: the session failed for good.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct SessionEnded {
    /// Which session.
    pub key: SessionKey,
    /// The registry's number for this session instance.
    pub instance: u64,
    /// Why.
    pub error: Error,
}
