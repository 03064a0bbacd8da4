//! [`ReplayWindow`]: the recent mail a session keeps for late subscribers.
//!
//! The usual race is "trigger the mail, then subscribe": the mail may
//! arrive before the subscriber does. A session therefore keeps the mail it
//! saw recently and hands a new subscriber whose filter has `since` or
//! `max_age` the matching ones. That memory must stay small whatever
//! arrives: a burst of large mails must not pin `replay_capacity` ×
//! `max_message_size` bytes, and a quiet session must not keep a mail past
//! `replay_age` just because nothing new pushed it out. So the window is
//! bounded three ways — count, bytes and age — and it ages on every read
//! as well as on every write.
//!
//! The window holds no clock: every operation takes `now`, so the bounds
//! are unit-tested without sleeping.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{Config, Mail};

/// What one kept mail costs besides its raw bytes: the `Arc`, the parsed
/// headers and the window's own bookkeeping, rounded up. Counting it keeps
/// a flood of tiny mails from being free.
pub(crate) const ENTRY_OVERHEAD: usize = 1024;

/// One kept mail.
#[derive(Debug)]
struct Kept {
    /// When the mail was pushed.
    at: Instant,
    /// What it counts against the byte bound.
    cost: usize,
    mail: Arc<Mail>,
}

/// The last mails a session saw, bounded by count, bytes and age.
///
/// A mail is kept while it is among the `capacity` newest, their costs
/// (raw bytes plus [`ENTRY_OVERHEAD`] each) sum to at most `max_bytes`, and
/// it was pushed at most `max_age` ago. The oldest goes first.
#[derive(Debug)]
pub(crate) struct ReplayWindow {
    capacity: usize,
    max_bytes: usize,
    max_age: Duration,
    kept: VecDeque<Kept>,
    bytes: usize,
}

impl ReplayWindow {
    /// An empty window with explicit bounds. A zero `capacity` or
    /// `max_bytes` keeps nothing.
    pub(crate) fn new(capacity: usize, max_bytes: usize, max_age: Duration) -> Self {
        ReplayWindow {
            capacity,
            max_bytes,
            max_age,
            kept: VecDeque::new(),
            bytes: 0,
        }
    }

    /// An empty window bounded by `replay_capacity`, `replay_max_bytes`
    /// and `replay_age`.
    pub(crate) fn from_config(config: &Config) -> Self {
        Self::new(
            config.replay_capacity,
            config.replay_max_bytes,
            config.replay_age,
        )
    }

    /// What `mail` counts against the byte bound.
    pub(crate) fn cost(mail: &Mail) -> usize {
        mail.raw().len().saturating_add(ENTRY_OVERHEAD)
    }

    /// Keeps `mail`, seen at `now`, evicting the oldest mails as the
    /// bounds require. Returns whether it was kept: a mail that alone
    /// exceeds the byte bound is not (and evicts nothing). The window does
    /// not look for repeats: the session's tracker hands each mail out
    /// once, and after a UIDNEXT regression the same UID can name a new
    /// mail, which must be kept.
    pub(crate) fn push(&mut self, now: Instant, mail: Arc<Mail>) -> bool {
        self.prune(now);
        let cost = Self::cost(&mail);
        if self.capacity == 0 || cost > self.max_bytes {
            return false;
        }
        while self.kept.len() >= self.capacity || self.bytes + cost > self.max_bytes {
            if !self.pop_oldest() {
                break;
            }
        }
        self.bytes += cost;
        self.kept.push_back(Kept {
            at: now,
            cost,
            mail,
        });
        true
    }

    /// The mails still within the bounds at `now`, oldest first. Ages the
    /// window first, so a mail past `max_age` is never handed out even if
    /// nothing was pushed since.
    pub(crate) fn iter(&mut self, now: Instant) -> impl Iterator<Item = &Arc<Mail>> {
        self.prune(now);
        self.kept.iter().map(|k| &k.mail)
    }

    /// Keeps only the mails `keep` accepts (a folder's UIDVALIDITY
    /// changed: its mails go, the other folders' stay).
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&Mail) -> bool) {
        let mut bytes = self.bytes;
        self.kept.retain(|k| {
            let kept = keep(&k.mail);
            if !kept {
                bytes -= k.cost;
            }
            kept
        });
        self.bytes = bytes;
    }

    /// How many mails are kept (possibly including some past `max_age`
    /// until the next [`ReplayWindow::iter`] or [`ReplayWindow::push`]).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn len(&self) -> usize {
        self.kept.len()
    }

    /// Whether no mail is kept.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// What the kept mails count against the byte bound.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Drops the mails pushed more than `max_age` before `now`.
    fn prune(&mut self, now: Instant) {
        while self
            .kept
            .front()
            .is_some_and(|k| now.saturating_duration_since(k.at) > self.max_age)
        {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) -> bool {
        match self.kept.pop_front() {
            Some(k) => {
                self.bytes -= k.cost;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(uid: u32, size: usize) -> Arc<Mail> {
        // Exactly `size` raw bytes; the window never looks inside.
        Arc::new(Mail::parse(uid, 1, "INBOX", None, vec![b'x'; size], false))
    }

    fn uids(w: &mut ReplayWindow, now: Instant) -> Vec<u32> {
        w.iter(now).map(|m| m.uid()).collect()
    }

    const MIN: Duration = Duration::from_secs(60);

    /// `retain` drops only the mails it is told to, and their bytes.
    #[test]
    fn retain_drops_only_what_it_is_told_and_its_bytes() {
        let now = Instant::now();
        let mut w = ReplayWindow::new(8, usize::MAX, MIN);
        for uid in 1..=4 {
            assert!(w.push(now, mail(uid, 100 * uid as usize)));
        }
        w.retain(|m| m.uid() % 2 == 0);
        assert_eq!(uids(&mut w, now), [2, 4]);
        assert_eq!(w.bytes(), 600 + 2 * ENTRY_OVERHEAD);
    }

    #[test]
    fn count_bound_evicts_the_oldest() {
        let now = Instant::now();
        let mut w = ReplayWindow::new(3, usize::MAX, MIN);
        for uid in 1..=5 {
            assert!(w.push(now, mail(uid, 100)));
        }
        assert_eq!(w.len(), 3);
        assert_eq!(uids(&mut w, now), [3, 4, 5]);
        assert_eq!(w.bytes(), 3 * (100 + ENTRY_OVERHEAD));
    }

    #[test]
    fn byte_bound_evicts_the_oldest_until_the_new_mail_fits() {
        let now = Instant::now();
        let unit = 1000 + ENTRY_OVERHEAD;
        let mut w = ReplayWindow::new(64, 3 * unit, MIN);
        for uid in 1..=3 {
            assert!(w.push(now, mail(uid, 1000)));
        }
        assert_eq!(w.bytes(), 3 * unit);
        // Exactly at the bound: nothing more fits without an eviction.
        assert!(w.push(now, mail(4, 1000)));
        assert_eq!(uids(&mut w, now), [2, 3, 4]);
        // A mail the size of two evicts two.
        assert!(w.push(now, mail(5, 2 * 1000 + ENTRY_OVERHEAD)));
        assert_eq!(uids(&mut w, now), [4, 5]);
        assert_eq!(w.bytes(), 3 * unit);
        assert!(w.bytes() <= 3 * unit);
    }

    #[test]
    fn a_burst_of_large_mails_stays_within_the_byte_bound() {
        let now = Instant::now();
        let config = Config::default();
        let mut w = ReplayWindow::from_config(&config);
        // 64 mails of 1 MiB each: the count bound alone would keep 64 MiB.
        for uid in 1..=64 {
            w.push(now, mail(uid, 1024 * 1024));
        }
        assert!(w.bytes() <= config.replay_max_bytes, "{}", w.bytes());
        assert_eq!(
            w.len(),
            config.replay_max_bytes / (1024 * 1024 + ENTRY_OVERHEAD)
        );
        // The newest are the ones kept.
        assert_eq!(w.iter(now).last().map(|m| m.uid()), Some(64));
    }

    #[test]
    fn a_mail_larger_than_the_byte_bound_is_not_kept_and_evicts_nothing() {
        let now = Instant::now();
        let mut w = ReplayWindow::new(64, 10_000, MIN);
        assert!(w.push(now, mail(1, 100)));
        assert!(!w.push(now, mail(2, 10_000)));
        assert_eq!(uids(&mut w, now), [1]);
        assert_eq!(w.bytes(), 100 + ENTRY_OVERHEAD);
        // Exactly the bound is kept.
        assert!(w.push(now, mail(3, 10_000 - ENTRY_OVERHEAD)));
        assert_eq!(uids(&mut w, now), [3]);
        assert_eq!(w.bytes(), 10_000);
    }

    #[test]
    fn tiny_mails_are_not_free() {
        let now = Instant::now();
        let mut w = ReplayWindow::new(usize::MAX, 10 * ENTRY_OVERHEAD, MIN);
        for uid in 1..=100 {
            w.push(
                now,
                Arc::new(Mail::parse(uid, 1, "INBOX", None, Vec::new(), false)),
            );
        }
        assert_eq!(w.len(), 10);
    }

    #[test]
    fn ages_on_read_without_any_push() {
        let t0 = Instant::now();
        let mut w = ReplayWindow::new(64, usize::MAX, MIN);
        w.push(t0, mail(1, 10));
        w.push(t0 + Duration::from_secs(30), mail(2, 10));
        // At exactly max_age the first is still kept.
        assert_eq!(uids(&mut w, t0 + MIN), [1, 2]);
        assert_eq!(uids(&mut w, t0 + MIN + Duration::from_millis(1)), [2]);
        assert_eq!(w.len(), 1);
        assert_eq!(w.bytes(), 10 + ENTRY_OVERHEAD);
        assert_eq!(uids(&mut w, t0 + 2 * MIN), []);
        assert!(w.is_empty());
        assert_eq!(w.bytes(), 0);
    }

    #[test]
    fn ages_on_write() {
        let t0 = Instant::now();
        let mut w = ReplayWindow::new(64, usize::MAX, MIN);
        w.push(t0, mail(1, 10));
        w.push(t0 + 2 * MIN, mail(2, 10));
        assert_eq!(w.len(), 1);
        assert_eq!(uids(&mut w, t0 + 2 * MIN), [2]);
    }

    #[test]
    fn zero_bounds_keep_nothing() {
        let now = Instant::now();
        let mut w = ReplayWindow::new(0, usize::MAX, MIN);
        assert!(!w.push(now, mail(1, 10)));
        assert!(w.is_empty());
        let mut w = ReplayWindow::new(64, 0, MIN);
        assert!(!w.push(now, mail(1, 0)));
        assert!(w.is_empty());
        let mut w = ReplayWindow::new(64, usize::MAX, Duration::ZERO);
        assert!(w.push(now, mail(1, 10)));
        assert_eq!(uids(&mut w, now), [1]);
        assert_eq!(uids(&mut w, now + Duration::from_nanos(1)), []);
    }

    #[test]
    fn a_reused_uid_is_another_mail() {
        // After UIDNEXT went down with the same UIDVALIDITY, the server
        // gives a new mail a UID already seen: both stay for late
        // subscribers (the tracker, not the window, rules out repeats).
        let now = Instant::now();
        let mut w = ReplayWindow::new(64, usize::MAX, MIN);
        assert!(w.push(now, mail(7, 10)));
        assert!(w.push(now, mail(7, 20)));
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn retaining_nothing_forgets_everything() {
        let now = Instant::now();
        let mut w = ReplayWindow::new(64, usize::MAX, MIN);
        w.push(now, mail(1, 10));
        w.push(now, mail(2, 10));
        w.retain(|_| false);
        assert!(w.is_empty());
        assert_eq!(w.bytes(), 0);
        assert_eq!(uids(&mut w, now), []);
        assert!(w.push(now, mail(1, 10)), "a cleared mail may be kept again");
    }

    #[test]
    fn bytes_always_match_the_kept_mails() {
        let t0 = Instant::now();
        let mut w = ReplayWindow::new(5, 20_000, Duration::from_secs(10));
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..2_000u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let now = t0 + Duration::from_millis(u64::from(i) * 37);
            let size = (state % 12_000) as usize;
            w.push(now, mail(i, size));
            let sum: usize = w.iter(now).map(|m| ReplayWindow::cost(m)).sum();
            assert_eq!(w.bytes(), sum);
            assert!(w.bytes() <= 20_000);
            assert!(w.len() <= 5);
        }
    }
}
