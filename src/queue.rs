//! The bounded queue between a [`Subscriber`](crate::subscriber::Subscriber)
//! actor and the user's [`Subscription`](crate::Subscription).
//!
//! It sits at the bottom of the actor layers, below the messages that carry
//! it (the registry creates it and hands it to the session in
//! `AddSubscriber`, and to the user in `Subscribed`): no actix type, only a
//! mutex and a waker, so both sides reach it without importing each other.
//! It holds at most `capacity` mails: when full, the oldest is dropped and
//! counted, so a slow consumer costs bounded memory and can see what it
//! missed through `dropped()`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::{Error, Mail};

/// Kept small: one per subscription, idle most of its life (issue 14:
/// memory per subscriber). The rare error is boxed, the capacity 32-bit.
#[derive(Debug)]
struct State {
    queue: VecDeque<Arc<Mail>>,
    capacity: u32,
    closed: bool,
    error_taken: bool,
    dropped: u64,
    queued: u64,
    error: Option<Box<Error>>,
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
                capacity: u32::try_from(capacity).unwrap_or(u32::MAX).max(1),
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
            if s.queue.len() >= s.capacity as usize {
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
            s.error = error.map(Box::new);
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

    pub(crate) fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Result<Arc<Mail>, Error>>> {
        let mut s = self.lock();
        if let Some(m) = s.queue.pop_front() {
            return Poll::Ready(Some(Ok(m)));
        }
        if s.closed {
            if !s.error_taken
                && let Some(e) = s.error.as_deref().cloned()
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
        self.lock().error.as_deref().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One queue per subscription, idle most of its life: its size is paid
    /// per idle subscriber (issue 14). Was 136 bytes.
    #[test]
    fn an_idle_queue_is_small() {
        let size = std::mem::size_of::<SubscriberQueue>();
        assert!(size <= 96, "SubscriberQueue grew to {size} bytes");
        assert!(std::mem::size_of::<crate::messages::Subscribed>() <= 32);
    }

    /// The boxed error still reaches the subscription once, then the end.
    #[test]
    fn the_error_is_yielded_once_after_the_mail() {
        let q = SubscriberQueue::new(2);
        let mail = Arc::new(Mail::parse(
            1,
            1,
            "INBOX",
            None,
            b"Subject: x\r\n\r\n".to_vec(),
            false,
        ));
        q.push(mail);
        q.close(Some(Error::Closed));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(q.poll_recv(&mut cx), Poll::Ready(Some(Ok(_)))));
        assert!(matches!(
            q.poll_recv(&mut cx),
            Poll::Ready(Some(Err(Error::Closed)))
        ));
        assert!(matches!(q.poll_recv(&mut cx), Poll::Ready(None)));
        assert!(matches!(q.error(), Some(Error::Closed)));
    }
}
