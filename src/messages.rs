//! The actor messages. Public so that actix applications can talk to an
//! `Addr<Registry>` directly; everyone else uses [`Handle`](crate::Handle).
//!
//! Commands are imperative (`Subscribe`), events past tense
//! (`SessionEnded`).

use std::sync::Arc;

use actix::Message;

use crate::stats::SessionStats;
use crate::subscriber::SubscriberQueue;
use crate::subscription::Subscription;
use crate::{Credential, Error, Filter, Mail, SessionKey};

/// Subscribe to new mail of `credential` that matches `filter`. Resolves
/// once the session has selected the mailbox and fixed its watermark.
#[derive(Debug, Message)]
#[rtype(result = "Result<Subscription, Error>")]
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

/// End a subscription (sent by `Subscription` on close or drop).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
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

/// A new mail for a subscriber.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct NewMail(pub Arc<Mail>);

/// Registry → session: add a subscriber.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub struct AddSubscriber {
    /// The subscription's id.
    pub id: u64,
    /// Its filter.
    pub filter: Filter,
    /// Its queue (shared with the user's `Subscription`).
    pub(crate) queue: Arc<SubscriberQueue>,
}

/// Session → subscriber: the session ended; close the stream (after the
/// mail sent before this), with the error if it failed.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct EndStream(pub(crate) Option<Error>);

/// Registry → session: remove a subscriber.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RemoveSubscriber {
    /// The subscription's id.
    pub id: u64,
}

/// Registry → session: LOGOUT and end (linger elapsed, or shutdown).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct EndSession;

/// Session → registry: the session failed for good.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SessionEnded {
    /// Which session.
    pub key: SessionKey,
    /// The registry's number for this session instance.
    pub instance: u64,
    /// Why.
    pub error: Error,
}
