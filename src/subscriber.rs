//! The `Subscriber` actor and the bounded queue it shares with the user's
//! [`Subscription`](crate::Subscription).
//!
//! A session sends [`NewMail`] to the subscribers whose recipient matches;
//! the subscriber applies the rest of its [`Filter`] and pushes the mail
//! into its queue. The queue holds at most `capacity` mails: when full, the
//! oldest is dropped and counted, so a slow consumer costs bounded memory
//! and can see what it missed through `dropped()`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use actix::{Actor, Context, Handler};

use crate::messages::{EndStream, NewMail};
use crate::stats::Counted;
use crate::{Error, Filter, Mail};

/// Drops are logged at most this often per subscriber.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct State {
    queue: VecDeque<Arc<Mail>>,
    capacity: usize,
    dropped: u64,
    queued: u64,
    closed: bool,
    error: Option<Error>,
    error_taken: bool,
    waker: Option<Waker>,
}

/// The queue between a subscriber actor and the user's subscription.
#[derive(Debug)]
pub(crate) struct SubscriberQueue {
    state: Mutex<State>,
}

impl SubscriberQueue {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(SubscriberQueue {
            state: Mutex::new(State {
                // Allocated on the first mail: most subscribers wait idle.
                queue: VecDeque::new(),
                capacity: capacity.max(1),
                dropped: 0,
                queued: 0,
                closed: false,
                error: None,
                error_taken: false,
                waker: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue invalid:
        // every critical section is a few field updates.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a mail; returns whether an older one was dropped for it.
    pub(crate) fn push(&self, mail: Arc<Mail>) -> bool {
        let (waker, dropped) = {
            let mut s = self.lock();
            if s.closed {
                return false;
            }
            let mut dropped = false;
            if s.queue.len() >= s.capacity {
                s.queue.pop_front();
                s.dropped += 1;
                dropped = true;
            }
            s.queue.push_back(mail);
            s.queued += 1;
            (s.waker.take(), dropped)
        };
        if let Some(w) = waker {
            w.wake();
        }
        dropped
    }

    /// Ends the stream, after what is queued, optionally with an error.
    pub(crate) fn close(&self, error: Option<Error>) {
        let waker = {
            let mut s = self.lock();
            if s.closed {
                return;
            }
            s.closed = true;
            s.error = error;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The user closed the subscription: drop what is queued.
    pub(crate) fn abandon(&self) {
        let mut s = self.lock();
        s.closed = true;
        s.queue.clear();
        s.waker = None;
    }

    pub(crate) fn poll_recv(
        &self,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Arc<Mail>, Error>>> {
        let mut s = self.lock();
        if let Some(m) = s.queue.pop_front() {
            return Poll::Ready(Some(Ok(m)));
        }
        if s.closed {
            if !s.error_taken
                && let Some(e) = s.error.clone()
            {
                s.error_taken = true;
                return Poll::Ready(Some(Err(e)));
            }
            return Poll::Ready(None);
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    pub(crate) fn queued(&self) -> u64 {
        self.lock().queued
    }

    pub(crate) fn error(&self) -> Option<Error> {
        self.lock().error.clone()
    }
}

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
