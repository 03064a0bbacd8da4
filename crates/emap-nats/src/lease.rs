//! The lease that makes one bridge the holder of an inbox, and the stored
//! position it fences.
//!
//! **Lease.** One key per inbox in a key-value bucket whose TTL (the
//! bucket's `max_age`) is the lease TTL. A standby takes it with
//! create-if-absent, which only succeeds when the key is absent (never
//! written, expired, or released); the holder renews it with an
//! expected-revision update every `renew_every`, well inside the TTL. A
//! holder counts its lease valid until `sent + TTL - safety_margin`, where
//! `sent` is when its last successful renewal was *sent* (so before the
//! server stored it), and publishes only while it is valid. A paused
//! process (SIGSTOP, a long GC pause, a VM freeze) wakes up with the
//! monotonic clock past that instant and stops.
//!
//! The lease's value is `<holder> <revision expected>`: only one write
//! can succeed on a given expected revision, so a renewal whose reply was
//! lost (the server applied it) is recognised when tried again: the
//! refusal is read back, and the entry is exactly this renewal. An
//! acquisition whose reply was lost is not recognised (its value is not
//! unique to one attempt): the lease then waits out its TTL.
//!
//! **Fencing.** The position lives in a second bucket (no TTL). A new
//! holder first *claims* it: it reads the entry and writes it back, with
//! its lease revision as the token, by an expected-revision update. Every
//! later store by the holder is an expected-revision update on the
//! revision of its own last write. A former holder's store therefore fails
//! once anyone else claimed the position: it cannot move the position
//! backwards or forwards, whatever its clock says. A store refused as
//! out of date whose entry reads back as exactly this store (its token is
//! this lease's, unique) was applied with its reply lost, and is kept.

use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};
use emap::Position;

use crate::Error;
use crate::subject::{decode_token, escape};

/// A held lease.
#[derive(Debug)]
pub struct Lease {
    store: kv::Store,
    key: String,
    holder: String,
    revision: u64,
    valid_until: Instant,
    ttl: Duration,
    margin: Duration,
    /// When the first renewal since the last confirmed one was sent, if
    /// one failed: one of them may have been applied.
    unconfirmed: Option<Instant>,
}

/// Why a renewal did not succeed.
#[derive(Debug, PartialEq, Eq)]
pub enum Renewal {
    /// Someone else holds the lease now (or it expired and was taken).
    Lost,
    /// The renewal could not be made (NATS unreachable); the lease is
    /// still valid until [`Lease::valid_until`].
    Failed(String),
}

impl Lease {
    /// Takes the lease of `key` for `holder` if nobody holds it. `None`:
    /// held elsewhere.
    pub async fn acquire(
        store: &kv::Store,
        key: &str,
        holder: &str,
        ttl: Duration,
        margin: Duration,
    ) -> Result<Option<Lease>, Error> {
        let sent = Instant::now();
        match store.create(key, lease_value(holder, 0).into()).await {
            Ok(revision) => Ok(Some(Lease {
                store: store.clone(),
                key: key.to_owned(),
                holder: holder.to_owned(),
                revision,
                valid_until: sent + ttl.saturating_sub(margin),
                ttl,
                margin,
                unconfirmed: None,
            })),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(Error::nats(e)),
        }
    }

    /// Renews the lease (an expected-revision update). Refused, it reads
    /// the entry back: when that is exactly this renewal (applied by an
    /// earlier try whose reply was lost), the lease is kept, valid from
    /// the earliest unconfirmed try.
    pub async fn renew(&mut self) -> Result<(), Renewal> {
        let sent = Instant::now();
        let value = lease_value(&self.holder, self.revision);
        match self
            .store
            .update(&self.key, value.clone().into(), self.revision)
            .await
        {
            Ok(revision) => {
                self.revision = revision;
                self.valid_until = sent + self.ttl.saturating_sub(self.margin);
                self.unconfirmed = None;
                Ok(())
            }
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                match own_write(&self.store, &self.key, &value).await {
                    Ok(Some(revision)) => {
                        self.revision = revision;
                        if let Some(first) = self.unconfirmed.take() {
                            self.valid_until = self
                                .valid_until
                                .max(first + self.ttl.saturating_sub(self.margin));
                        }
                        Ok(())
                    }
                    Ok(None) => Err(Renewal::Lost),
                    Err(e) => Err(Renewal::Failed(e)),
                }
            }
            Err(e) => {
                self.unconfirmed.get_or_insert(sent);
                Err(Renewal::Failed(e.to_string()))
            }
        }
    }

    /// Whether the holder may still act: before its own deadline.
    pub fn is_valid(&self) -> bool {
        Instant::now() < self.valid_until
    }

    /// Until when the holder may act.
    pub fn valid_until(&self) -> Instant {
        self.valid_until
    }

    /// The revision of the last acquisition or renewal.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Gives the lease up (a delete that expects our revision), so that a
    /// standby takes over at its next try instead of after the TTL.
    pub async fn release(self) {
        if let Err(e) = self
            .store
            .delete_expect_revision(&self.key, Some(self.revision))
            .await
        {
            tracing::debug!(error = %e, "lease release failed; it expires with its TTL");
        }
    }
}

/// The stored positions of one inbox, claimed by a lease holder.
#[derive(Debug)]
pub struct Positions {
    store: kv::Store,
    key: String,
    /// The revision of our last write: the expected revision of the next.
    revision: u64,
    token: u64,
    positions: Vec<Position>,
}

/// Why a position could not be stored.
#[derive(Debug, PartialEq, Eq)]
pub enum Store {
    /// Another holder claimed the positions: this one must stop.
    Fenced,
    /// NATS did not answer; try again while the lease is valid.
    Failed(String),
}

impl Positions {
    /// Claims the positions of `key` for the holder of the lease with
    /// revision `token`: reads them and writes them back with the token,
    /// expecting the revision read. Fails with [`Store::Fenced`] when a
    /// holder with a later lease claimed them already, or when someone
    /// wrote in between.
    pub async fn claim(store: &kv::Store, key: &str, token: u64) -> Result<Positions, Store> {
        let entry = store
            .entry(key)
            .await
            .map_err(|e| Store::Failed(e.to_string()))?;
        let (revision, old_token, positions) = match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                let (t, p) = decode(&e.value);
                (e.revision, t, p)
            }
            Some(e) => (e.revision, 0, Vec::new()),
            None => (0, 0, Vec::new()),
        };
        if old_token > token {
            return Err(Store::Fenced);
        }
        let mut claimed = Positions {
            store: store.clone(),
            key: key.to_owned(),
            revision,
            token,
            positions,
        };
        claimed.write().await?;
        Ok(claimed)
    }

    /// The positions claimed, to resume from.
    pub fn positions(&self) -> &[Position] {
        &self.positions
    }

    /// Stores `p` (replacing its folder's), fenced by our last revision.
    pub async fn store(&mut self, p: Position) -> Result<(), Store> {
        let previous = self.positions.clone();
        self.positions.retain(|q| q.folder != p.folder);
        self.positions.push(p);
        let written = self.write().await;
        if written.is_err() {
            self.positions = previous;
        }
        written
    }

    async fn write(&mut self) -> Result<(), Store> {
        let value = encode(self.token, &self.positions);
        // `Ok(None)`: refused as out of date.
        let written = if self.revision == 0 {
            match self.store.create(&self.key, value.clone().into()).await {
                Ok(r) => Ok(Some(r)),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(None),
                Err(e) => Err(Store::Failed(e.to_string())),
            }
        } else {
            match self
                .store
                .update(&self.key, value.clone().into(), self.revision)
                .await
            {
                Ok(r) => Ok(Some(r)),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(None),
                Err(e) => Err(Store::Failed(e.to_string())),
            }
        };
        self.revision = match written? {
            Some(r) => r,
            // Exactly this write (this lease's token: no other holder
            // writes it) was applied by an earlier try whose reply was
            // lost; anything else is another holder's.
            None => own_write(&self.store, &self.key, &value)
                .await
                .map_err(Store::Failed)?
                .ok_or(Store::Fenced)?,
        };
        Ok(())
    }
}

/// The lease's value: the holder, and the revision its write expects
/// (0 for an acquisition), which makes a renewal's value unique to it.
fn lease_value(holder: &str, expected: u64) -> String {
    format!("{holder} {expected}")
}

/// The revision of `key` when its entry is exactly `value` (a write of
/// ours that was applied), `None` when it is anything else.
async fn own_write(store: &kv::Store, key: &str, value: &str) -> Result<Option<u64>, String> {
    let entry = store.entry(key).await.map_err(|e| e.to_string())?;
    Ok(entry
        .filter(|e| e.operation == kv::Operation::Put && e.value == value.as_bytes())
        .map(|e| e.revision))
}

/// `token <n>` then one `<folder> <uidvalidity> <next uid>` line per folder
/// (the folder [`escape`]d).
fn encode(token: u64, positions: &[Position]) -> String {
    let mut s = format!("token {token}\n");
    for p in positions {
        s.push_str(&format!(
            "{} {} {}\n",
            escape(&p.folder),
            p.uid_validity,
            p.next_uid
        ));
    }
    s
}

/// The inverse of [`encode`]; lines that do not parse are skipped (a
/// folder without a position starts at UIDNEXT).
fn decode(value: &[u8]) -> (u64, Vec<Position>) {
    let text = String::from_utf8_lossy(value);
    let mut token = 0;
    let mut positions = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts[..] {
            ["token", t] => token = t.parse().unwrap_or(0),
            [folder, v, n] => {
                if let (Some(folder), Ok(uid_validity), Ok(next_uid)) =
                    (decode_token(folder), v.parse(), n.parse())
                {
                    positions.push(Position {
                        folder,
                        uid_validity,
                        next_uid,
                    });
                } else {
                    tracing::warn!(line, "unreadable stored position skipped");
                }
            }
            _ => {}
        }
    }
    (token, positions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip() {
        let p = vec![
            Position {
                folder: "INBOX".into(),
                uid_validity: 7,
                next_uid: 42,
            },
            Position {
                folder: "Junk Mail/ü".into(),
                uid_validity: 1,
                next_uid: 2,
            },
        ];
        assert_eq!(decode(encode(9, &p).as_bytes()), (9, p));
        assert_eq!(decode(b"garbage\nx y z\n"), (0, vec![]));
    }
}
