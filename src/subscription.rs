//! What the user holds: a [`Subscription`] to new mail.
//!
//! No actix type appears here, so actix applications and plain tokio
//! programs use the same API. Dropping a subscription unsubscribes.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix::Addr;

use crate::messages::Unsubscribe;
use crate::registry::Registry;
use crate::subscriber::SubscriberQueue;
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
    queue: Arc<SubscriberQueue>,
    id: u64,
    key: SessionKey,
    registry: Addr<Registry>,
    closed: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("session", &self.key)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    pub(crate) fn new(
        queue: Arc<SubscriberQueue>,
        id: u64,
        key: SessionKey,
        registry: Addr<Registry>,
    ) -> Self {
        Subscription {
            queue,
            id,
            key,
            registry,
            closed: false,
        }
    }

    /// The next mail; `None` once the subscription ended (closed, shut
    /// down, or the session failed for good — see [`Subscription::error`]).
    pub async fn recv(&mut self) -> Option<Arc<Mail>> {
        loop {
            match poll_fn(|cx| self.queue.poll_recv(cx)).await {
                Some(Ok(m)) => return Some(m),
                Some(Err(_)) => continue,
                None => return None,
            }
        }
    }

    /// Why the subscription ended, if it ended with an error.
    pub fn error(&self) -> Option<Error> {
        self.queue.error()
    }

    /// Mails dropped because the queue was full (oldest first).
    pub fn dropped(&self) -> u64 {
        self.queue.dropped()
    }

    /// The session this subscription belongs to.
    pub fn session(&self) -> &SessionKey {
        &self.key
    }

    /// Unsubscribes now; queued mails are discarded.
    pub fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            self.queue.abandon();
            self.registry.do_send(Unsubscribe {
                key: self.key.clone(),
                id: self.id,
            });
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.close();
    }
}

/// Yields each mail, then the session's permanent error once if it failed,
/// then ends.
impl futures_core::Stream for Subscription {
    type Item = Result<Arc<Mail>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.queue.poll_recv(cx)
    }
}
