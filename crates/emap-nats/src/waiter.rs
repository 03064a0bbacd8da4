//! The waiters' side: a small client that reads the stream with emap's own
//! [`Filter`] and hands out emap's own [`Mail`], parsed here from the raw
//! message the bridge published.
//!
//! A waiter reads one subject: its filter's recipient's
//! (`<prefix>.mail.<inbox>.to.<address>`) or the inbox's catch-all, through
//! an ordered consumer that starts at new messages, or — when the filter
//! has `since`/`max_age` — at that time, so a waiter that subscribes after
//! the mail arrived still gets it from the stream (the stream keeps
//! `StreamConfig::max_age`). The rest of the filter is applied to the
//! parsed mail. A message on the subject that a bridge did not publish
//! (missing or unreadable metadata) is skipped with a warning and counted
//! ([`Waiter::malformed`]), never handed out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer, stream};
use emap::{Filter, Mail};
use futures_util::StreamExt;

use crate::config::StreamConfig;
use crate::{Error, subject};

/// How far before a filter's `since` the consumer starts: INTERNALDATE has
/// whole seconds, and the bridge's and the waiter's clocks differ.
const START_EARLY: Duration = Duration::from_secs(2);

/// A connection to the stream, for waiting on mail from any machine.
#[derive(Clone)]
pub struct Waiter {
    stream: stream::Stream,
    prefix: String,
    malformed: Arc<AtomicU64>,
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiter")
            .field("prefix", &self.prefix)
            .field("malformed", &self.malformed())
            .finish_non_exhaustive()
    }
}

impl Waiter {
    /// Connects to NATS at `url` and opens the stream (creating it with
    /// `config`'s bounds if no bridge did yet).
    pub async fn connect(url: &str, config: &StreamConfig) -> Result<Waiter, Error> {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(url)
            .await
            .map_err(Error::nats)?;
        Self::with_client(client, config).await
    }

    /// [`Waiter::connect`] on a client the caller made.
    pub async fn with_client(
        client: async_nats::Client,
        config: &StreamConfig,
    ) -> Result<Waiter, Error> {
        let js = jetstream::new(client);
        let stream = crate::bridge::ensure_stream(&js, config).await?;
        Ok(Waiter {
            stream,
            prefix: config.prefix.clone(),
            malformed: Arc::new(AtomicU64::new(0)),
        })
    }

    /// How many messages on emap subjects were not a bridge's (skipped).
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    /// The mail of `inbox` that matches `filter`, as it is published (and,
    /// with `since`/`max_age`, the matching mail the stream still holds
    /// from that time on).
    pub async fn watch(&self, inbox: &str, filter: Filter) -> Result<MailStream, Error> {
        subject::check_token("inbox name", inbox)?;
        filter.validate()?;
        let filter_subject = match filter.recipient() {
            Some(r) => subject::to(&self.prefix, inbox, r),
            None => subject::all(&self.prefix, inbox),
        };
        let deliver_policy = match filter.earliest(SystemTime::now()) {
            Some(t) => consumer::DeliverPolicy::ByStartTime {
                start_time: offset_date_time(t.checked_sub(START_EARLY).unwrap_or(UNIX_EPOCH))?,
            },
            None => consumer::DeliverPolicy::New,
        };
        let consumer = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject,
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(Error::nats)?;
        let messages = consumer.messages().await.map_err(Error::nats)?;
        Ok(MailStream {
            messages,
            filter,
            malformed: self.malformed.clone(),
        })
    }

    /// Waits for one matching mail of `inbox`: [`Error::WaitTimedOut`] when
    /// none comes within `timeout`.
    pub async fn wait_for(
        &self,
        inbox: &str,
        filter: Filter,
        timeout: Duration,
    ) -> Result<Arc<Mail>, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut stream = tokio::time::timeout_at(deadline, self.watch(inbox, filter))
            .await
            .map_err(|_| Error::WaitTimedOut)??;
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(r)) => r,
            Ok(None) => Err(Error::Nats("the stream ended".into())),
            Err(_) => Err(Error::WaitTimedOut),
        }
    }
}

fn offset_date_time(t: SystemTime) -> Result<time::OffsetDateTime, Error> {
    let nanos = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::try_from(nanos).unwrap_or(0))
        .map_err(|e| Error::InvalidConfig(e.to_string()))
}

/// The matching mail of one inbox, in publication order.
pub struct MailStream {
    messages: consumer::pull::Ordered,
    filter: Filter,
    malformed: Arc<AtomicU64>,
}

impl std::fmt::Debug for MailStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailStream")
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

/// What [`MailStream::next_received`] read next.
#[derive(Debug, Clone)]
pub enum Received {
    /// A mail of the inbox that matches the filter.
    Mail(Arc<Mail>),
    /// A message on the inbox's subject that no bridge published (missing
    /// or unreadable metadata, no body), skipped and counted in
    /// [`Waiter::malformed`]: it is never handed out as mail.
    Skipped {
        /// The subject it came on.
        subject: String,
        /// Why it is not a bridge's mail.
        reason: subject::Malformed,
    },
}

impl MailStream {
    /// The next matching mail; `None` if the consumer ended. Skipped
    /// messages are logged (a warning) and counted, not returned.
    pub async fn next(&mut self) -> Option<Result<Arc<Mail>, Error>> {
        loop {
            match self.next_received().await? {
                Ok(Received::Mail(mail)) => return Some(Ok(mail)),
                Ok(Received::Skipped { .. }) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// The next matching mail, or the next message [skipped](Received::Skipped)
    /// before it, for a caller that reports skipped messages itself (the
    /// `emap` command line's warning on standard error); `None` if the
    /// consumer ended. Mail that does not match the filter is passed over
    /// silently.
    pub async fn next_received(&mut self) -> Option<Result<Received, Error>> {
        loop {
            let message = match self.messages.next().await? {
                Ok(m) => m,
                Err(e) => return Some(Err(Error::nats(e))),
            };
            let mail = match subject::mail_of(message.headers.as_ref(), &message.payload) {
                Ok(m) => m,
                Err(reason) => {
                    self.malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(subject = %message.subject, error = %reason, "skipped a message that no bridge published");
                    return Some(Ok(Received::Skipped {
                        subject: message.subject.to_string(),
                        reason,
                    }));
                }
            };
            if self.filter.matches(&mail, SystemTime::now()) {
                return Some(Ok(Received::Mail(Arc::new(mail))));
            }
        }
    }
}
