//! What the user holds: a [`Subscription`] to new mail.
//!
//! No actix type appears here, so actix applications and plain tokio
//! programs use the same API. Dropping a subscription unsubscribes.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::messages::Subscribed;
use crate::{Error, Mail, SessionKey};

/// A stream of new mails that match a filter.
///
/// ```no_run
/// # async fn demo(handle: emap::Handle, cred: emap::Credential) -> Result<(), emap::Error> {
/// let mut sub = handle.subscribe(cred, emap::Filter::new().to("task42@catchall.example")).await?;
/// while let Some(mail) = sub.recv().await {
///     println!("{:?}", mail.subject());
/// }
/// if let Some(err) = sub.error() {
///     eprintln!("session failed: {err}");
/// }
/// # Ok(()) }
/// ```
pub struct Subscription {
    /// The registration: the queue, and the unsubscribe when closed or
    /// dropped.
    inner: Subscribed,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.inner.id)
            .field("session", self.inner.key())
            .finish_non_exhaustive()
    }
}

/// For actix users who sent [`Subscribe`](crate::messages::Subscribe) to
/// [`Handle::addr`](crate::Handle::addr) themselves.
impl From<Subscribed> for Subscription {
    fn from(inner: Subscribed) -> Self {
        Subscription { inner }
    }
}

impl Subscription {
    /// The next mail; `None` once the subscription ended (closed, shut
    /// down, or the session failed for good — see [`Subscription::error`]).
    pub async fn recv(&mut self) -> Option<Arc<Mail>> {
        loop {
            match poll_fn(|cx| self.inner.queue.poll_recv(cx)).await {
                Some(Ok(m)) => return Some(m),
                Some(Err(_)) => continue,
                None => return None,
            }
        }
    }

    /// Why the subscription ended, if it ended with an error.
    pub fn error(&self) -> Option<Error> {
        self.inner.queue.error()
    }

    /// Mails dropped because the queue was full (oldest first).
    pub fn dropped(&self) -> u64 {
        self.inner.queue.dropped()
    }

    /// The session this subscription belongs to.
    pub fn session(&self) -> &SessionKey {
        self.inner.key()
    }

    /// Unsubscribes now; queued mails are discarded. Dropping the
    /// subscription does the same.
    pub fn close(&mut self) {
        self.inner.close();
    }
}

/// Yields each mail, then the session's permanent error once if it failed,
/// then ends.
impl futures_core::Stream for Subscription {
    type Item = Result<Arc<Mail>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.queue.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use actix::{Actor, Context as ActorContext, Handler};
    use tokio::sync::mpsc;

    use super::*;
    use crate::messages::{SessionLink, Unsubscribe};
    use crate::queue::SubscriberQueue;
    use crate::{Auth, Credential};

    /// Stands in for the registry: records the id of every `Unsubscribe`.
    struct Recorder(mpsc::UnboundedSender<u64>);

    impl Actor for Recorder {
        type Context = ActorContext<Self>;
    }

    impl Handler<Unsubscribe> for Recorder {
        type Result = ();

        fn handle(&mut self, msg: Unsubscribe, _: &mut Self::Context) {
            let _ = self.0.send(msg.id);
        }
    }

    /// The Subscribe reply carries the parts of a subscription, not the
    /// `Subscription`: dropping it unsubscribes (a caller that went away
    /// after the registry answered leaves nothing behind), and a
    /// subscription closed and then dropped unsubscribes once.
    #[actix_rt::test]
    async fn the_reply_and_the_subscription_unsubscribe_once() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let registry = Recorder(tx).start();
        let key = Credential::new("imap.example.com", "u", Auth::password("p")).session_key(1);

        let unread = SubscriberQueue::new(4);
        let link = SessionLink::new(key.clone(), registry.clone().recipient());
        drop(Subscribed::new(unread.clone(), 1, link.clone()));
        let mut sub = Subscription::from(Subscribed::new(SubscriberQueue::new(4), 2, link));
        sub.close();
        drop(sub);
        // FIFO mailbox: once the sentinel is seen, everything before it was.
        registry.send(Unsubscribe { key, id: 99 }).await.unwrap();

        let mut ids = Vec::new();
        while let Some(id) = rx.recv().await {
            ids.push(id);
            if id == 99 {
                break;
            }
        }
        assert_eq!(ids, [1, 2, 99]);
        // The dropped reply's queue is abandoned: its stream has ended.
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(unread.poll_recv(&mut cx), Poll::Ready(None)));
    }
}
