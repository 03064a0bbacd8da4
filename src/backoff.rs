//! Reconnect delays: exponential backoff with full jitter.
//!
//! After the n-th consecutive failure the delay is drawn uniformly from
//! `[0, min(max, initial · 2ⁿ⁻¹)]` ("full jitter"), so that many sessions
//! cut off by the same outage do not reconnect in lockstep. The first
//! attempt after a fresh start is immediate; the count is reset only after a
//! successful SELECT, so a server that accepts TCP and then fails the login
//! or the SELECT still sees growing delays.
//!
//! No clock and no global random source: the caller owns the state and a
//! seed, so the schedule is testable.

use std::time::Duration;

/// Backoff state of one session.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
    rng: u64,
}

impl Backoff {
    /// A fresh schedule; `seed` varies the jitter between sessions.
    pub(crate) fn new(initial: Duration, max: Duration, seed: u64) -> Self {
        Backoff {
            initial,
            max,
            failures: 0,
            // xorshift must not start at zero.
            rng: seed | 1,
        }
    }

    /// Records a failure and returns how long to wait before the next try.
    pub(crate) fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let ceiling = self.ceiling();
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.next_random() % (nanos + 1))
    }

    /// The upper bound of the current delay: `min(max, initial · 2ⁿ⁻¹)`.
    pub(crate) fn ceiling(&self) -> Duration {
        if self.failures == 0 {
            return Duration::ZERO;
        }
        let shift = (self.failures - 1).min(32);
        self.initial
            .saturating_mul(1u32 << shift.min(31))
            .min(self.max)
    }

    /// Consecutive failures so far.
    #[cfg(test)]
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// Forgets the failures (after a successful SELECT).
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: plenty for jitter.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn ceilings_double_and_cap() {
        let mut b = Backoff::new(S, 60 * S, 7);
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            b.next_delay();
            ceilings.push(b.ceiling().as_secs());
        }
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
    }

    #[test]
    fn delays_stay_under_the_ceiling_and_are_jittered() {
        let mut b = Backoff::new(S, 60 * S, 42);
        let mut distinct = std::collections::HashSet::new();
        for _ in 0..200 {
            let d = b.next_delay();
            assert!(d <= b.ceiling(), "{d:?} > {:?}", b.ceiling());
            distinct.insert(d);
        }
        assert!(
            distinct.len() > 150,
            "jitter too regular: {}",
            distinct.len()
        );
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(S, 60 * S, 1);
        for _ in 0..8 {
            b.next_delay();
        }
        b.reset();
        assert_eq!(b.failures(), 0);
        b.next_delay();
        assert_eq!(b.ceiling(), S);
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let mut b = Backoff::new(S, 60 * S, 3);
        for _ in 0..100_000 {
            assert!(b.next_delay() <= 60 * S);
        }
    }
}
