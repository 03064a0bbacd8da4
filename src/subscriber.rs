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
    /// The conditions beyond the recipient; `None` when the recipient is
    /// the only one ([`Filter::only_recipient`]): the session sends only
    /// mail its recipient index selected, so there is nothing left to
    /// check, and an idle subscriber does not carry a filter's ~200 bytes.
    filter: Option<Box<Filter>>,
    queue: Arc<SubscriberQueue>,
    last_drop_log: Option<Instant>,
    _live: Counted,
}

impl Subscriber {
    pub(crate) fn new(filter: Filter, queue: Arc<SubscriberQueue>, live: Counted) -> Self {
        Subscriber {
            filter: (!filter.only_recipient()).then(|| Box::new(filter)),
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
        if let Some(filter) = &self.filter
            && !filter.matches(&msg.0, SystemTime::now())
        {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The subscriber actor lives inside its actix context in a tokio
    /// task for as long as the subscription: every byte of it is paid per
    /// idle subscriber (issue 14, goal 2). A recipient-only filter is not
    /// kept (the session's index already decided), so the actor is a few
    /// pointers, not a filter's ~200 bytes.
    #[test]
    fn an_idle_subscriber_is_a_few_pointers() {
        let size = std::mem::size_of::<Subscriber>();
        let context =
            std::mem::size_of::<actix::dev::ContextFut<Subscriber, Context<Subscriber>>>();
        println!("Subscriber {size} B, its ContextFut {context} B");
        assert!(size <= 48, "Subscriber grew to {size} bytes");
        let live = std::sync::Arc::new(crate::stats::ActorCensus::default());
        let keeps = |f: Filter| {
            Subscriber::new(f, SubscriberQueue::new(1), live.subscriber())
                .filter
                .is_some()
        };
        assert!(!keeps(Filter::new().to("a@x.test")));
        assert!(!keeps(Filter::new()));
        assert!(keeps(Filter::new().to("a@x.test").subject_contains("code")));
        assert!(keeps(Filter::new().from_contains("bank")));
        assert!(keeps(Filter::new().max_age(Duration::from_secs(60))));
    }
}
