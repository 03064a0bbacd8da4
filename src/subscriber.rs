//! The `Subscriber` actor: one subscription's filter, in front of the
//! bounded queue ([`SubscriberQueue`]) it shares with the user's
//! [`Subscription`](crate::Subscription).
//!
//! A session sends [`NewMail`] to the subscribers whose recipient matches;
//! the subscriber applies the rest of its [`Filter`] and pushes the mail
//! into its queue, logging (at most every 10 s) when the queue was full
//! and the oldest mail was dropped.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::{Actor, Context, Handler};

use crate::Filter;
use crate::messages::{EndStream, NewMail};
use crate::queue::SubscriberQueue;
use crate::stats::Counted;

/// Drops are logged at most this often per subscriber.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One subscriber: a filter and a bounded queue.
pub struct Subscriber {
    filter: Filter,
    queue: Arc<SubscriberQueue>,
    last_drop_log: Option<Instant>,
    _live: Counted,
}

impl Subscriber {
    pub(crate) fn new(filter: Filter, queue: Arc<SubscriberQueue>, live: Counted) -> Self {
        Subscriber {
            filter,
            queue,
            last_drop_log: None,
            _live: live,
        }
    }
}

impl Actor for Subscriber {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        self.queue.close(None);
    }
}

impl Drop for Subscriber {
    /// An actor dropped with its arbiter (at shutdown) does not always run
    /// `stopped`; the user's stream must end all the same.
    fn drop(&mut self) {
        self.queue.close(None);
    }
}

impl Handler<NewMail> for Subscriber {
    type Result = ();

    fn handle(&mut self, msg: NewMail, _: &mut Self::Context) {
        if !self.filter.matches(&msg.0, SystemTime::now()) {
            return;
        }
        if self.queue.push(msg.0) {
            let now = Instant::now();
            if self
                .last_drop_log
                .is_none_or(|t| now.duration_since(t) >= DROP_LOG_INTERVAL)
            {
                self.last_drop_log = Some(now);
                tracing::warn!(
                    dropped = self.queue.dropped(),
                    "subscriber queue full: dropping the oldest mail (consumer too slow)"
                );
            }
        }
    }
}

impl Handler<EndStream> for Subscriber {
    type Result = ();

    /// The session ended: close the queue after the mail queued before
    /// this message (the mailbox is first in, first out), with the error.
    fn handle(&mut self, msg: EndStream, _: &mut Self::Context) {
        self.queue.close(msg.0);
    }
}
