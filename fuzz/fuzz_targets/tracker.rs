//! Fuzz target for the `MailboxTracker` (`src/tracker.rs`): arbitrary
//! sequences of the events the watcher feeds it — connections with any
//! EXISTS, UIDVALIDITY and UIDNEXT (exact or a lower bound), steps, FETCH
//! responses with any sequence number and any items (UID, body, NIL,
//! other sections, split, repeated), EXISTS and EXPUNGE anywhere, SEARCH
//! results, completions (OK, EXPUNGEISSUED, NO), lost connections and
//! look-back requests.
//!
//! The property test in `src/tracker/tests.rs` plays an honest server
//! with faults; this target plays a server that lies, so that the
//! tracker's own guards are what keeps mail exactly-once.
//!
//! # Input
//! `[config] [op ...]`: the config byte gives `poison_attempts` (low two
//! bits + 1) and the look-back limit (bits 2–4, 0 = none). Each op is one
//! byte (its value modulo 9 picks the event) followed by the bytes its
//! arguments take; a number is one byte (0..=127) or, when that byte's top
//! bit is set, a full `u32` from the next four bytes. Missing bytes read
//! as zero.
//!
//! # Asserted
//! - no panic (debug assertions on), on any input;
//! - (a) no UID is handed out twice as live mail within one UIDVALIDITY
//!   (a UIDNEXT regression, which the tracker follows down, makes the UIDs
//!   from the new UIDNEXT up new mail again);
//! - (b) live mail is at or above the first watermark (UIDNEXT at the first
//!   SELECT of this UIDVALIDITY, or lower after a regression), and old mail
//!   from a look-back is below it and never reported twice;
//! - the watermark never goes below the first watermark.
//!
//! Only `tracker.rs` and the protocol types it uses are compiled in, by
//! path, so the target builds without tokio, actix and rustls.
#![no_main]

use std::collections::BTreeSet;
use std::time::{Duration, Instant, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;

// At the crate root, as siblings, so that `super::date` inside encode.rs
// resolves as it does inside `emap::proto`.
#[allow(dead_code)]
#[path = "../../src/proto/date.rs"]
mod date;
#[allow(dead_code)]
#[path = "../../src/proto/encode.rs"]
mod encode;
#[allow(dead_code)]
#[path = "../../src/proto/types.rs"]
mod types;

/// What `crate::proto` is for `tracker.rs`: the response types and the
/// SEARCH date encoder.
mod proto {
    pub(crate) use super::encode;
    pub(crate) use super::types::{Data, Fetch, FetchItem};
}

#[allow(dead_code)]
#[path = "../../src/tracker.rs"]
mod tracker;

use proto::{Data, Fetch, FetchItem};
use tracker::{Ended, Loss, MailboxTracker, Notice, Step, UidNext};

/// Reads the input; past its end every read is zero.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    /// A small number, or with the top bit set a whole `u32`.
    fn num(&mut self) -> u32 {
        let b = self.byte();
        if b & 0x80 == 0 {
            return u32::from(b);
        }
        u32::from_be_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

/// The harness's view of what the tracker handed out.
struct Checker {
    t: MailboxTracker,
    /// A FETCH or SEARCH the tracker asked for has not completed.
    in_flight: bool,
    /// The first watermark of this UIDVALIDITY, once a position is known.
    first: Option<u32>,
    live: BTreeSet<u32>,
    old: BTreeSet<u32>,
}

impl Checker {
    fn fetch(&mut self, f: Fetch) {
        let Some(a) = self.t.on_fetch(f) else {
            return;
        };
        let first = self.first.expect("mail only after a position is known");
        if a.old {
            assert!(a.uid < first, "old UID {} at or above {first}", a.uid);
            assert!(self.old.insert(a.uid), "old UID {} reported twice", a.uid);
        } else {
            assert!(a.uid >= first, "live UID {} below {first}", a.uid);
            assert!(
                self.live.insert(a.uid),
                "live UID {} handed out twice",
                a.uid
            );
        }
    }

    fn drain(&mut self) {
        while let Some(n) = self.t.poll_notice() {
            if let Notice::UidNextRegressed { uid_next, .. } = n {
                // Followed down: UIDs from `uid_next` on are new mail.
                drop(self.live.split_off(&uid_next));
                self.first = self.first.map(|f| f.min(uid_next));
            }
        }
        if let (Some(first), Some(w)) = (self.first, self.t.snapshot().watermark) {
            assert!(
                w >= first,
                "watermark {w} below the first watermark {first}"
            );
        }
    }
}

fn fetch_items(inp: &mut Input) -> Vec<FetchItem> {
    let n = inp.byte() % 5;
    (0..n)
        .map(|_| match inp.byte() % 8 {
            0 | 1 => FetchItem::Uid(inp.num()),
            2 => {
                let len = usize::from(inp.byte() % 8);
                FetchItem::Body {
                    section: String::new(),
                    origin: Some(0),
                    data: Some(vec![b'x'; len]),
                }
            }
            3 => FetchItem::Body {
                section: String::new(),
                origin: None,
                data: None,
            },
            4 => FetchItem::Body {
                section: "HEADER".into(),
                origin: None,
                data: Some(b"h".to_vec()),
            },
            5 => FetchItem::InternalDate("17-Jul-1996 02:44:25 -0700".into()),
            6 => FetchItem::Rfc822Size(inp.num()),
            _ => FetchItem::Flags(vec!["\\Seen".into()]),
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let config = inp.byte();
    let poison = u32::from(config & 3) + 1;
    let look_back_limit = usize::from((config >> 2) & 7);
    let silent_span = Duration::from_secs(u64::from(config >> 5));
    // The clock silent losses are stamped with: moved on by the input.
    let mut now = Instant::now();
    let mut c = Checker {
        t: MailboxTracker::new(poison, look_back_limit).with_silent_span(silent_span),
        in_flight: false,
        first: None,
        live: BTreeSet::new(),
        old: BTreeSet::new(),
    };
    while !inp.done() {
        match inp.byte() % 9 {
            0 => {
                // A new connection (the old one, if any, is gone).
                c.t.connection_lost(Loss::Worded);
                c.in_flight = false;
                let validity = inp.num();
                let exists = inp.num();
                let n = inp.num();
                let uid_next = if inp.byte() & 1 == 0 {
                    UidNext::Exact(n)
                } else {
                    UidNext::AtLeast(n)
                };
                let had = c.t.has_position();
                c.t.selected(exists);
                let changed = c.t.position_known(validity, uid_next);
                if !had || changed {
                    c.first = c.t.snapshot().watermark;
                    c.live.clear();
                    c.old.clear();
                }
            }
            1 => {
                if !c.in_flight {
                    c.in_flight = !matches!(c.t.next_step(), Step::Wait);
                }
            }
            2 => {
                let seq = inp.num();
                let items = fetch_items(&mut inp);
                c.fetch(Fetch { seq, items });
            }
            3 => c.t.observe(&Data::Exists(inp.num())),
            4 => c.t.observe(&Data::Expunge(inp.num())),
            5 => {
                let n = inp.byte() % 8;
                let uids: Vec<u32> = (0..n).map(|_| inp.num()).collect();
                c.t.on_search(&uids);
            }
            6 => {
                let ended = match inp.byte() % 3 {
                    0 => Ended::Ok,
                    1 => Ended::ExpungeIssued,
                    _ => Ended::Failed,
                };
                let _ = c.t.completed(ended);
                c.in_flight = false;
            }
            7 => {
                let how = inp.byte();
                now += Duration::from_secs(u64::from(how >> 1));
                let loss = if how & 1 == 0 {
                    Loss::Worded
                } else {
                    Loss::Silent { at: now }
                };
                c.t.connection_lost(loss);
                c.in_flight = false;
            }
            _ => {
                let secs = u64::from(inp.num());
                c.t.want_look_back(UNIX_EPOCH + Duration::from_secs(secs));
            }
        }
        let _ = c.t.has_work();
        c.drain();
    }
});
