//! What the benchmark measures about its own process and how it summarises
//! samples: wall-clock stamps shared between processes, RSS from
//! `/proc/self/status`, CPU time from `getrusage`, and percentiles.
//!
//! Timestamps cross process boundaries (the deliverer stamps "accepted by
//! the server", a client process stamps "received"), so they are taken
//! from the realtime clock (`SystemTime`) in nanoseconds: both processes
//! run on the same machine and read the same clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch (realtime clock).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A field of `/proc/self/status` in KiB (e.g. `VmRSS`, `VmHWM`).
fn status_kb(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(field)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// Resident set size now, KiB.
pub fn rss_kb() -> u64 {
    status_kb("VmRSS")
}

/// Peak resident set size so far, KiB.
pub fn hwm_kb() -> u64 {
    status_kb("VmHWM")
}

/// Resets `VmHWM` to the current RSS (Linux `clear_refs` value 5), so a
/// later [`hwm_kb`] is the peak of what follows. Best effort.
pub fn reset_hwm() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// `struct timeval` and `struct rusage` of Linux on 64-bit targets.
#[repr(C)]
#[derive(Default)]
struct Timeval {
    sec: i64,
    usec: i64,
}

#[repr(C)]
#[derive(Default)]
struct Rusage {
    utime: Timeval,
    stime: Timeval,
    rest: [i64; 14],
}

unsafe extern "C" {
    fn getrusage(who: i32, usage: *mut Rusage) -> i32;
}

/// `getrusage`'s `who` for the whole process (Linux `RUSAGE_SELF`).
const RUSAGE_SELF: i32 = 0;
/// `getrusage`'s `who` for the calling thread (Linux `RUSAGE_THREAD`).
const RUSAGE_THREAD: i32 = 1;

/// User + system CPU time of the whole process (all threads, also those
/// that already exited): `getrusage(RUSAGE_SELF)`, whose sum is exact to
/// the microsecond (`/proc/self/stat` counts 10 ms ticks, too coarse for
/// a few thousand messages of a few microseconds each).
pub fn cpu_time() -> Duration {
    rusage(RUSAGE_SELF)
}

/// User + system CPU time of the calling thread (`RUSAGE_THREAD`): the
/// raw client's, which runs on a thread of the parent.
pub fn thread_cpu_time() -> Duration {
    rusage(RUSAGE_THREAD)
}

fn rusage(who: i32) -> Duration {
    let mut u = Rusage::default();
    // SAFETY: `u` is a valid, writable `struct rusage` (the layout above is
    // Linux's on 64-bit targets, where `long` and `time_t` are 64-bit);
    // getrusage only writes into it.
    let rc = unsafe { getrusage(who, &mut u) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let us = |t: &Timeval| (t.sec.max(0) as u64) * 1_000_000 + t.usec.max(0) as u64;
    Duration::from_micros(us(&u.utime) + us(&u.stime))
}

/// Percentiles of a set of durations (nanoseconds).
#[derive(Debug, Clone, Copy, Default)]
pub struct Percentiles {
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub max: u64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `samples`, sorted ascending (the
    /// caller keeps them sorted for the CDF too, so they are sorted once).
    pub fn of_sorted(samples: &[u64]) -> Percentiles {
        debug_assert!(samples.is_sorted(), "samples not sorted");
        if samples.is_empty() {
            return Percentiles::default();
        }
        let rank = |p: f64| {
            let idx = ((p / 100.0) * samples.len() as f64).ceil() as usize;
            samples[idx.clamp(1, samples.len()) - 1]
        };
        Percentiles {
            p50: rank(50.0),
            p95: rank(95.0),
            p99: rank(99.0),
            max: *samples.last().unwrap_or(&0),
        }
    }
}

/// Milliseconds with two decimals, from nanoseconds.
pub fn ms(ns: u64) -> f64 {
    (ns as f64 / 1e4).round() / 100.0
}

/// The median of a few numbers (the lower middle for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[(v.len() - 1) / 2]
}

/// A small deterministic PRNG (xorshift64*), so that a run's message
/// stream can be repeated from its seed without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let samples: Vec<u64> = (1..=100).collect();
        let p = Percentiles::of_sorted(&samples);
        assert_eq!((p.p50, p.p95, p.p99, p.max), (50, 95, 99, 100));
        assert_eq!(Percentiles::of_sorted(&[7]).p99, 7);
    }
}
