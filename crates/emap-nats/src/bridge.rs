//! The bridge: for each inbox, a standby that takes the lease when it is
//! free, and a holder that follows the inbox with emap and publishes every
//! new mail to JetStream, storing the position only after the publishes
//! were acknowledged.
//!
//! The holder's loop handles the follower's reports in order. A mail is
//! published on each of its subjects and every acknowledgement awaited
//! (a failed or unacknowledged publish is sent again with the same
//! `Nats-Msg-Id`, for as long as the lease is valid); only then is the
//! next report read. A position is stored when reported, so it never
//! passes a mail whose publish was not acknowledged. A lost lease (the
//! renewal refused, the lease's own deadline passed, the position store
//! fenced) ends the holder at once: the follower is dropped and the
//! registry logged out, and nothing more is published.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use emap::{Credential, Followed, Handle, Mail, Registry};
use tokio::sync::watch;

use crate::config::{BridgeConfig, StreamConfig};
use crate::lease::{Lease, Positions, Renewal, Store};
use crate::{Error, subject};

/// One inbox a bridge serves: its name on the bus and its credential.
#[derive(Debug, Clone)]
pub struct Inbox {
    /// The inbox's name in subjects and keys: letters, digits, `_`, `-`.
    pub name: String,
    /// Where and as whom the holder logs in.
    pub credential: Credential,
}

/// What a bridge did, for its log and for tests (the binary prints each
/// as one line on standard output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// This process took the lease of `inbox` (with this revision).
    Acquired {
        /// The inbox.
        inbox: String,
        /// The lease revision: the fencing token.
        revision: u64,
    },
    /// Another process holds the lease of `inbox`.
    Standby {
        /// The inbox.
        inbox: String,
    },
    /// A mail was published on all its subjects and acknowledged.
    Published {
        /// The inbox.
        inbox: String,
        /// Its UID.
        uid: u32,
        /// How many of its publishes the stream dropped as duplicates.
        duplicates: usize,
    },
    /// A position was stored.
    Stored {
        /// The inbox.
        inbox: String,
        /// The position.
        position: emap::Position,
    },
    /// This process stopped holding `inbox`.
    Lost {
        /// The inbox.
        inbox: String,
        /// Why.
        why: String,
    },
}

/// Where a bridge reports its [`Event`]s.
pub type Reporter = Arc<dyn Fn(&Event) + Send + Sync>;

/// A bridge process's connection to NATS, with the stream and buckets.
#[derive(Clone)]
pub struct Bridge {
    client: async_nats::Client,
    js: jetstream::Context,
    leases: kv::Store,
    positions: kv::Store,
    config: Arc<BridgeConfig>,
    report: Reporter,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("holder", &self.config.holder)
            .finish_non_exhaustive()
    }
}

/// Creates the stream if it does not exist (or returns it).
pub async fn ensure_stream(
    js: &jetstream::Context,
    cfg: &StreamConfig,
) -> Result<stream::Stream, Error> {
    js.get_or_create_stream(stream::Config {
        name: cfg.stream.clone(),
        subjects: vec![subject::stream_subjects(&cfg.prefix)],
        max_age: cfg.max_age,
        max_bytes: cfg.max_bytes,
        duplicate_window: cfg.duplicate_window,
        storage: storage(cfg),
        ..Default::default()
    })
    .await
    .map_err(|e| Error::Nats(format!("stream {}: {e}", cfg.stream)))
}

fn storage(cfg: &StreamConfig) -> stream::StorageType {
    if cfg.file_storage {
        stream::StorageType::File
    } else {
        stream::StorageType::Memory
    }
}

async fn bucket(
    js: &jetstream::Context,
    name: &str,
    max_age: Duration,
    cfg: &StreamConfig,
) -> Result<kv::Store, Error> {
    // The bucket's stream is made here, as async-nats' `create_key_value`
    // would make it: that call first asks for the account's information,
    // which async-nats 0.51 cannot read from a 2.9 server.
    let duplicate_window = if max_age.is_zero() {
        Duration::from_secs(120)
    } else {
        max_age.min(Duration::from_secs(120))
    };
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: storage(cfg),
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: 1,
        duplicate_window,
        ..Default::default()
    })
    .await
    .map_err(|e| Error::Nats(format!("bucket {name}: {e}")))?;
    js.get_key_value(name)
        .await
        .map_err(|e| Error::Nats(format!("bucket {name}: {e}")))
}

impl Bridge {
    /// Connects to NATS at `url` and sets up the stream and both buckets
    /// (each created if absent, with `config`'s bounds).
    pub async fn connect(
        url: &str,
        config: BridgeConfig,
        report: Reporter,
    ) -> Result<Bridge, Error> {
        config.validate()?;
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(url)
            .await
            .map_err(Error::nats)?;
        let js = jetstream::new(client.clone());
        ensure_stream(&js, &config.stream).await?;
        let leases = bucket(
            &js,
            &config.stream.lease_bucket,
            config.lease_ttl,
            &config.stream,
        )
        .await?;
        let positions = bucket(
            &js,
            &config.stream.position_bucket,
            Duration::ZERO,
            &config.stream,
        )
        .await?;
        Ok(Bridge {
            client,
            js,
            leases,
            positions,
            config: Arc::new(config),
            report,
        })
    }

    /// Serves `inboxes` until `stop` turns true (or its sender is dropped):
    /// for each, standby until the lease is free, hold it while it is
    /// valid, standby again. On stop a held lease is released, so a
    /// standby takes over at once.
    pub async fn run(&self, inboxes: Vec<Inbox>, stop: watch::Receiver<bool>) -> Result<(), Error> {
        for inbox in &inboxes {
            subject::check_token("inbox name", &inbox.name)?;
        }
        let mut tasks = Vec::new();
        for inbox in inboxes {
            let (me, stop) = (self.clone(), stop.clone());
            tasks.push(tokio::spawn(async move { me.serve(inbox, stop).await }));
        }
        for t in tasks {
            let _ = t.await;
        }
        Ok(())
    }

    fn emit(&self, e: Event) {
        (self.report)(&e);
    }

    /// Standby and hold, in turn, for one inbox.
    async fn serve(&self, inbox: Inbox, mut stop: watch::Receiver<bool>) {
        let key = format!("lease.{}", inbox.name);
        let mut failures = 0u32;
        while !is_stopped(&stop) {
            let acquired = Lease::acquire(
                &self.leases,
                &key,
                &self.config.holder,
                self.config.lease_ttl,
                self.config.safety_margin,
            )
            .await;
            let pause = match acquired {
                Ok(Some(lease)) => {
                    self.emit(Event::Acquired {
                        inbox: inbox.name.clone(),
                        revision: lease.revision(),
                    });
                    let why = self.hold(&inbox, lease, &mut stop).await;
                    let failed = matches!(why, Ended::ImapFailed(_) | Ended::ClaimFailed(_));
                    self.emit(Event::Lost {
                        inbox: inbox.name.clone(),
                        why: why.to_string(),
                    });
                    // A credential (or a positions bucket) that fails for
                    // good is not retried in a tight loop by every bridge
                    // in turn.
                    failures = if failed { failures + 1 } else { 0 };
                    self.config.acquire_every * 2u32.pow(failures.min(6))
                }
                Ok(None) => {
                    self.emit(Event::Standby {
                        inbox: inbox.name.clone(),
                    });
                    jitter(self.config.acquire_every)
                }
                Err(e) => {
                    tracing::warn!(inbox = %inbox.name, error = %e, "lease attempt failed");
                    jitter(self.config.acquire_every)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                () = stopped(&mut stop) => {}
            }
        }
    }

    /// Holds `inbox` while the lease lasts; returns why it ended.
    async fn hold(&self, inbox: &Inbox, lease: Lease, stop: &mut watch::Receiver<bool>) -> Ended {
        let lease_revision = lease.revision();
        let (valid_tx, valid) = watch::channel(lease.valid_until());
        let renewer = Renewer::start(lease, self.config.renew_every, valid_tx);
        let key = inbox.name.clone();
        let mut positions = match Positions::claim(&self.positions, &key, lease_revision).await {
            Ok(p) => p,
            Err(Store::Fenced) => {
                // A later holder claimed it: the lease is not ours anymore.
                renewer.abort();
                return Ended::Fenced("position claimed by a later holder".into());
            }
            Err(Store::Failed(e)) => {
                // NATS failed, not the lease: give it back so that the
                // next try (ours or a standby's) serves the inbox at once
                // rather than after the TTL.
                renewer.release().await;
                return Ended::ClaimFailed(e);
            }
        };
        let handle = match Registry::start_in_thread(self.config.emap.clone()) {
            Ok(h) => h,
            Err(e) => {
                renewer.release().await;
                return Ended::ImapFailed(e.to_string());
            }
        };
        let holder = Holder {
            bridge: self,
            inbox,
            valid: valid.clone(),
        };
        let ended = holder.follow(&handle, &mut positions, stop).await;
        handle.shutdown().await;
        match ended {
            // Only a holder that still holds gives the lease back.
            Ended::Stopped | Ended::ImapFailed(_) => renewer.release().await,
            _ => renewer.abort(),
        }
        ended
    }
}

/// Why a holder stopped holding.
#[derive(Debug)]
enum Ended {
    /// The lease's deadline passed or its renewal was refused.
    LeaseLost,
    /// Another holder claimed the stored position.
    Fenced(String),
    /// The stored position could not be read or claimed (NATS failed).
    ClaimFailed(String),
    /// The IMAP session failed for good.
    ImapFailed(String),
    /// The process is stopping.
    Stopped,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::LeaseLost => f.write_str("lease lost"),
            Ended::Fenced(e) => write!(f, "fenced: {e}"),
            Ended::ClaimFailed(e) => write!(f, "claiming the position failed: {e}"),
            Ended::ImapFailed(e) => write!(f, "imap failed: {e}"),
            Ended::Stopped => f.write_str("stopping"),
        }
    }
}

/// Renews `lease` every `every` and publishes its deadline on `valid`;
/// on loss, publishes a deadline in the past and ends. Returns the lease
/// for a release.
async fn renew(
    mut lease: Lease,
    every: Duration,
    valid: watch::Sender<Instant>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Option<Lease> {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = &mut stop => return Some(lease),
        }
        match lease.renew().await {
            Ok(()) => {
                let _ = valid.send(lease.valid_until());
            }
            Err(Renewal::Lost) => {
                let _ = valid.send(Instant::now());
                return None;
            }
            Err(Renewal::Failed(e)) => {
                tracing::warn!(error = %e, "lease renewal failed");
                if !lease.is_valid() {
                    let _ = valid.send(Instant::now());
                    return None;
                }
            }
        }
    }
}

/// The renewal task of a held lease.
struct Renewer {
    task: tokio::task::JoinHandle<Option<Lease>>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl Renewer {
    fn start(lease: Lease, every: Duration, valid: watch::Sender<Instant>) -> Self {
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        Renewer {
            task: tokio::spawn(renew(lease, every, valid, stop_rx)),
            stop,
        }
    }

    /// Stops renewing and releases the lease, if it is still held.
    async fn release(self) {
        let _ = self.stop.send(());
        if let Ok(Some(lease)) = self.task.await {
            lease.release().await;
        }
    }

    /// Stops renewing; the lease expires with its TTL.
    fn abort(self) {
        self.task.abort();
    }
}

/// Whether `stop` says stop: true, or its sender dropped (nobody can say
/// it any more).
fn is_stopped(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// Resolves when `stop` turns true or its sender is dropped.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A random pause in `[d/2, d]`, so standbys do not try in lockstep.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    d / 2 + d.mul_f64(f64::from(nanos % 1000) / 2000.0)
}

struct Holder<'a> {
    bridge: &'a Bridge,
    inbox: &'a Inbox,
    valid: watch::Receiver<Instant>,
}

impl Holder<'_> {
    fn valid(&self) -> bool {
        Instant::now() < *self.valid.borrow()
    }

    /// Waits until the lease's deadline passes (or the renewer says lost).
    async fn expired(&self) {
        let mut valid = self.valid.clone();
        loop {
            let until = *valid.borrow_and_update();
            tokio::select! {
                _ = tokio::time::sleep_until(until.into()) => {
                    if Instant::now() >= *valid.borrow() {
                        return;
                    }
                }
                changed = valid.changed() => if changed.is_err() { return },
            }
        }
    }

    async fn follow(
        &self,
        handle: &Handle,
        positions: &mut Positions,
        stop: &mut watch::Receiver<bool>,
    ) -> Ended {
        // One turn per follower: a follower that falls too far behind
        // ends, and the next starts again from what is stored (still
        // holding the lease).
        loop {
            let cred = self
                .inbox
                .credential
                .clone()
                .resume_from(positions.positions().to_vec());
            let mut follower = tokio::select! {
                f = handle.follow(cred) => match f {
                    Ok(f) => f,
                    Err(e) => return Ended::ImapFailed(e.to_string()),
                },
                () = self.expired() => return Ended::LeaseLost,
                () = stopped(stop) => return Ended::Stopped,
            };
            loop {
                let event = tokio::select! {
                    biased;
                    () = self.expired() => return Ended::LeaseLost,
                    () = stopped(stop) => return Ended::Stopped,
                    e = follower.next() => e,
                };
                match event {
                    Some(Followed::Arrived(mail)) => {
                        if let Err(e) = self.publish(&mail).await {
                            return e;
                        }
                    }
                    Some(Followed::Advanced(p)) => {
                        if let Err(e) = self.store(positions, p).await {
                            return e;
                        }
                    }
                    None if follower.overflowed() => break,
                    None => {
                        return Ended::ImapFailed(
                            follower
                                .error()
                                .map_or_else(|| "session ended".into(), |e| e.to_string()),
                        );
                    }
                }
            }
            tracing::warn!(inbox = %self.inbox.name, "follower overflowed; resuming from the stored position");
            // Its session logs out before the next one starts.
            drop(follower);
        }
    }

    /// Publishes `mail` on all its subjects and awaits every
    /// acknowledgement, again and again with the same `Nats-Msg-Id`s while
    /// the lease is valid.
    async fn publish(&self, mail: &Mail) -> Result<(), Ended> {
        let b = self.bridge;
        let prefix = &b.config.stream.prefix;
        let inbox = &self.inbox.name;
        let subjects = subject::subjects_of(prefix, inbox, mail);
        // A mail over the server's max_payload is cut and flagged
        // truncated, as emap flags a partial FETCH.
        let room = b.client.server_info().max_payload.saturating_sub(8 * 1024);
        let raw = mail.raw();
        let truncated = raw.len() > room;
        // One copy of the mail and one set of headers, shared by every
        // subject and every try.
        let payload = Bytes::from(raw[..raw.len().min(room)].to_vec());
        let headers = subject::mail_headers(inbox, mail, truncated);
        let mut delay = Duration::from_millis(50);
        loop {
            if !self.valid() {
                return Err(Ended::LeaseLost);
            }
            match self.publish_once(mail, &subjects, &payload, &headers).await {
                Ok(duplicates) => {
                    b.emit(Event::Published {
                        inbox: inbox.clone(),
                        uid: mail.uid(),
                        duplicates,
                    });
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(inbox = %inbox, uid = mail.uid(), error = %e, "publish failed; retrying");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                () = self.expired() => return Err(Ended::LeaseLost),
            }
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    async fn publish_once(
        &self,
        mail: &Mail,
        subjects: &[String],
        payload: &Bytes,
        headers: &async_nats::HeaderMap,
    ) -> Result<usize, Error> {
        let b = self.bridge;
        let mut acks = Vec::with_capacity(subjects.len());
        for s in subjects {
            if !self.valid() {
                return Err(Error::Nats("lease expired".into()));
            }
            let mut headers = headers.clone();
            headers.insert(
                subject::MSG_ID,
                subject::msg_id(&self.inbox.name, mail, s).as_str(),
            );
            let ack =
                b.js.publish_with_headers(s.clone(), headers, payload.clone())
                    .await
                    .map_err(Error::nats)?;
            acks.push(ack);
        }
        let mut duplicates = 0;
        for ack in acks {
            let ack = tokio::time::timeout(b.config.ack_timeout, ack)
                .await
                .map_err(|_| Error::Nats("no acknowledgement in time".into()))?
                .map_err(Error::nats)?;
            duplicates += usize::from(ack.duplicate);
        }
        Ok(duplicates)
    }

    /// Stores `p`, fenced; retried while the lease is valid.
    async fn store(&self, positions: &mut Positions, p: emap::Position) -> Result<(), Ended> {
        loop {
            if !self.valid() {
                return Err(Ended::LeaseLost);
            }
            match positions.store(p.clone()).await {
                Ok(()) => {
                    self.bridge.emit(Event::Stored {
                        inbox: self.inbox.name.clone(),
                        position: p,
                    });
                    return Ok(());
                }
                Err(Store::Fenced) => {
                    return Err(Ended::Fenced("position claimed by another holder".into()));
                }
                Err(Store::Failed(e)) => {
                    tracing::warn!(inbox = %self.inbox.name, error = %e, "storing the position failed; retrying");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                () = self.expired() => return Err(Ended::LeaseLost),
            }
        }
    }
}
