//! [`MailboxTracker`]: the one owner of a session's position in its
//! mailbox, as a state machine with no I/O and no clock.
//!
//! Why it exists: every way mail was lost, repeated or stranded so far came
//! from position state kept in two places, or updated by one code path and
//! not another (an EXISTS seen during STATUS and dropped, a FETCH response
//! out of UID order moving the watermark past a lower UID, a look-back
//! searching up to the live watermark). Here every untagged response and
//! every FETCH response goes through one object, which decides what to ask
//! the server next ([`MailboxTracker::next_step`]) and hands out each
//! message it may deliver exactly once ([`MailboxTracker::on_fetch`]).
//!
//! # The model
//! - The **watermark** `W`: every UID below it is resolved (delivered,
//!   skipped, or known not to exist). UIDs at or above it that were
//!   delivered out of order are in `delivered_above`; the pair is the
//!   exact set of delivered live UIDs, so nothing is handed out twice
//!   whatever order or repetition the server uses.
//! - The **first watermark**: UIDNEXT at the first SELECT of this
//!   UIDVALIDITY. Live mail is at or above it; the look-back searches only
//!   below it, so the two never overlap.
//! - `exists`/`announced`: messages fetched by sequence number so far, and
//!   the count the server announced; an EXISTS anywhere (IDLE, inside a
//!   FETCH, during STATUS) raises `announced`, and the next step fetches
//!   the new sequence range.
//! - A fetch that leaves something unresolved (a body missing, a response
//!   that did not parse, a UID without body, the connection cut, the
//!   command answered NO) sets `refetch`: the next step fetches by UID from
//!   the watermark. After a failed attempt the tracker turns **careful**:
//!   it searches the UIDs at or above the watermark and fetches the lowest
//!   undelivered one alone, so a poisonous message is identified; after
//!   `poison_attempts` failed attempts it is skipped, counted and reported.
//!   A failure the server put in words (NO, BYE, a response that did not
//!   parse or broke a limit, a missing body) is the message's own. A
//!   connection that merely ended (reset, EOF, timeout) may be the link's
//!   doing, not the message's: a skip that rests on such silent losses
//!   waits until they have gone on for `silent_span`, so a flapping link,
//!   which also cuts right after each SELECT, never costs a message.
//!
//! The tracker is moved into the connection loop while a connection lives
//! and handed back when it ends, so there is never a second copy.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use crate::proto::{Data, Fetch, FetchItem};

/// The most UIDs remembered as delivered out of order above the watermark,
/// and the most old (look-back) UIDs remembered as reported: bounds memory
/// whatever the server sends.
const MAX_REMEMBERED: usize = 65_536;

/// What the connection loop should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Send this FETCH.
    Fetch(FetchRequest),
    /// Send `UID SEARCH <criteria>`.
    Search(SearchRequest),
    /// Nothing to ask: IDLE or poll until something is announced.
    Wait,
}

/// A FETCH the tracker wants, with what it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FetchRequest {
    /// Whether `set` holds UIDs (`UID FETCH`) or sequence numbers.
    pub uid: bool,
    /// The set, e.g. `"5:7"`, `"12:*"`, `"3,9"`.
    pub set: String,
    /// How many messages it may return at most (for the command deadline).
    pub messages: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum FetchKind {
    /// New mail: the sequence range EXISTS announced.
    New { first: u32, last: u32 },
    /// Everything from the watermark on, by UID: after a reconnect or an
    /// incomplete fetch.
    FromWatermark,
    /// One UID alone, in careful mode.
    One(u32),
    /// Old mail found by a look-back from `since`: exactly these UIDs.
    Old { since: SystemTime, uids: Vec<u32> },
}

/// A UID SEARCH the tracker wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SearchRequest {
    /// The criteria after `UID SEARCH`.
    pub criteria: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SearchKind {
    /// Careful mode: which UIDs exist at or above the watermark.
    Pending,
    /// A look-back below the first watermark, from `since`.
    LookBack {
        since: SystemTime,
        low: u32,
        top: u32,
    },
}

/// A message the tracker hands out for delivery, exactly once.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Arrived {
    /// Its UID.
    pub uid: u32,
    /// Its bytes (possibly a prefix, see `size`).
    pub raw: Vec<u8>,
    /// INTERNALDATE as the server sent it.
    pub internal_date: Option<String>,
    /// RFC822.SIZE, if sent.
    pub size: Option<u32>,
    /// Old mail from a look-back (only for subscribers that asked).
    pub old: bool,
}

/// How a command ended, as far as the tracker is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Tagged OK.
    Ok,
    /// `NO [EXPUNGEISSUED]`: some asked messages were expunged meanwhile; a
    /// normal race, not a failure.
    ExpungeIssued,
    /// NO or BAD.
    Failed,
    /// OK, but a response did not parse: what it carried is unknown.
    Incomplete,
}

/// How a connection ended while a command was in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Loss {
    /// The server said why, or sent something that could not be used: a
    /// BYE, a response that broke the protocol or a limit.
    Worded,
    /// The connection just ended (reset, EOF, timeout) at `at`: the
    /// link's doing as likely as the message's.
    Silent { at: Instant },
}

/// Failed careful attempts at one message.
#[derive(Debug, Default, Clone, Copy)]
struct Attempts {
    uid: u32,
    /// All failed attempts.
    count: u32,
    /// Those the server put in words.
    worded: u32,
    /// When the first silent loss of the streak happened.
    first_silent: Option<Instant>,
    /// Silent losses have gone on for at least `silent_span`.
    silent_span_met: bool,
}

/// What the tracker tells the loop after a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Carry on with [`MailboxTracker::next_step`].
    Continue,
    /// The fetch failed: reconnect (with backoff) and try again.
    Reconnect,
}

/// Something worth a log line and a counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    /// A message was given up on after `poison_attempts` failed attempts.
    Skipped { uid: u32, attempts: u32 },
    /// UIDVALIDITY changed: the old watermark is void.
    ValidityChanged { old: u32, new: u32 },
    /// UIDNEXT went below the watermark with the same UIDVALIDITY.
    UidNextRegressed { watermark: u32, uid_next: u32 },
    /// A look-back failed (its search or fetch was refused); not retried
    /// for this time range.
    LookBackFailed,
    /// EXISTS went down without EXPUNGE.
    ExistsDecreased { was: u32, now: u32 },
}

/// UIDNEXT as a connection learnt it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UidNext {
    /// The server's UIDNEXT.
    Exact(u32),
    /// A lower bound: the UID of the last message plus one, when the server
    /// sends no UIDNEXT (expunges may hide higher UIDs used before).
    AtLeast(u32),
}

/// A read-only view of the position, for statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Snapshot {
    pub uid_validity: Option<u32>,
    pub watermark: Option<u32>,
    pub skipped: u64,
    pub look_back_failures: u64,
    pub uidnext_regressions: u64,
    pub validity_changes: u64,
}

/// The parts of one FETCH response for one message, merged: a server may
/// split a message's items over several responses.
#[derive(Debug, Default)]
struct Partial {
    uid: Option<u32>,
    /// `None` until a body arrives (`BODY[] NIL` leaves it `None`: the
    /// message stays unresolved).
    body: Option<Vec<u8>>,
    internal_date: Option<String>,
    size: Option<u32>,
    /// Handed out (or found already delivered).
    done: bool,
    /// The server gave this sequence number two different UIDs: resolved
    /// only by a fetch by UID.
    conflict: bool,
}

/// The position of one session in its mailbox. See the module docs.
#[derive(Debug)]
pub(crate) struct MailboxTracker {
    poison_attempts: u32,
    /// How long silent losses must go on before a skip may rest on them.
    silent_span: Duration,
    look_back_limit: usize,
    // What survives reconnects.
    uid_validity: Option<u32>,
    first_watermark: u32,
    watermark: u32,
    delivered_above: BTreeSet<u32>,
    /// Something below the newest known mail may be unresolved: fetch by
    /// UID from the watermark.
    refetch: bool,
    /// A fetch failed since the last time nothing was pending: find the
    /// pending UIDs by search and fetch them one at a time.
    careful: bool,
    /// Failed careful attempts, and the UID they were made on: only a
    /// fetch of that message alone is charged to it.
    attempts: Attempts,
    /// The careful target answered `NO [EXPUNGEISSUED]` once: the next
    /// search tells whether it is gone (not a failure), a second time is.
    expunge_issued_once: Option<u32>,
    /// A response of the running command did not parse: the client
    /// skipped it, so what it carried is unknown.
    lost_response: bool,
    /// Upper bound on the messages a fetch from the watermark returns.
    gap_estimate: u32,
    /// Old UIDs a look-back found, to fetch next.
    pending_old: Option<(SystemTime, Vec<u32>)>,
    look_back_wanted: Option<SystemTime>,
    look_back_covered: Option<SystemTime>,
    old_reported: BTreeSet<u32>,
    skipped: u64,
    look_back_failures: u64,
    uidnext_regressions: u64,
    validity_changes: u64,
    /// The position came from storage ([`MailboxTracker::resume`]) and no
    /// SELECT has confirmed it yet.
    resumed: bool,
    /// The folder is another one than at the last connect: the next
    /// position starts a new epoch whatever its UIDVALIDITY.
    moved: bool,
    // Per connection.
    exists: u32,
    announced: u32,
    /// Careful mode: the UID chosen by the last search, to fetch alone.
    careful_target: Option<u32>,
    in_flight: Option<InFlight>,
    notices: VecDeque<Notice>,
}

#[derive(Debug)]
enum InFlight {
    Fetch {
        kind: FetchKind,
        /// By sequence number.
        parts: BTreeMap<u32, Partial>,
    },
    Search {
        kind: SearchKind,
        uids: Vec<u32>,
    },
}

impl MailboxTracker {
    /// How long silent losses (see [`Loss::Silent`]) during the fetch of
    /// one message must go on before it may be skipped for them; zero (the
    /// default) counts them like any failure.
    pub(crate) fn with_silent_span(mut self, span: Duration) -> Self {
        self.silent_span = span;
        self
    }

    /// A tracker that has never seen the mailbox.
    pub(crate) fn new(poison_attempts: u32, look_back_limit: usize) -> Self {
        MailboxTracker {
            poison_attempts: poison_attempts.max(1),
            silent_span: Duration::ZERO,
            look_back_limit,
            uid_validity: None,
            first_watermark: 0,
            watermark: 0,
            delivered_above: BTreeSet::new(),
            refetch: false,
            careful: false,
            attempts: Attempts::default(),
            expunge_issued_once: None,
            lost_response: false,
            gap_estimate: 1,
            pending_old: None,
            look_back_wanted: None,
            look_back_covered: None,
            old_reported: BTreeSet::new(),
            skipped: 0,
            look_back_failures: 0,
            uidnext_regressions: 0,
            validity_changes: 0,
            resumed: false,
            moved: false,
            exists: 0,
            announced: 0,
            careful_target: None,
            in_flight: None,
            notices: VecDeque::new(),
        }
    }

    /// Whether a mailbox was ever selected (the position is known). A
    /// position from storage counts only once a SELECT confirmed it, so a
    /// resumed session that never connected fails like a new one.
    pub(crate) fn has_position(&self) -> bool {
        self.uid_validity.is_some() && !self.resumed
    }

    /// Starts from a stored position (see `Position`) instead of UIDNEXT:
    /// at the first SELECT, the same UIDVALIDITY fetches the gap from
    /// `next_uid` by UID (the mail that arrived while nobody watched,
    /// once); another UIDVALIDITY voids it (warned, counted in
    /// `validity_changes`) and the session starts at UIDNEXT.
    pub(crate) fn resume(&mut self, uid_validity: u32, next_uid: u32) {
        let next_uid = next_uid.max(1);
        self.uid_validity = Some(uid_validity);
        self.first_watermark = next_uid;
        self.watermark = next_uid;
        self.resumed = true;
    }

    /// A new connection's SELECT (EXAMINE) completed with `exists`
    /// messages. Per-connection state starts over; untagged data seen from
    /// here on goes through [`MailboxTracker::observe`].
    pub(crate) fn selected(&mut self, exists: u32) {
        self.exists = exists;
        self.announced = exists;
        self.careful_target = None;
        self.in_flight = None;
        self.pending_old = None;
    }

    /// The position is known: UIDVALIDITY and UIDNEXT as the server gave
    /// them after the SELECT (UIDNEXT from SELECT, or the UID of the last
    /// message it counted + 1). Returns whether UIDVALIDITY changed.
    pub(crate) fn position_known(&mut self, uid_validity: u32, uid_next: UidNext) -> bool {
        let (uid_next, exact) = match uid_next {
            UidNext::Exact(n) => (n.max(1), true),
            UidNext::AtLeast(n) => (n.max(1), false),
        };
        self.resumed = false;
        match self.uid_validity {
            None => {
                self.start_epoch(uid_validity, uid_next);
                false
            }
            Some(old) if old != uid_validity || std::mem::take(&mut self.moved) => {
                self.notices.push_back(Notice::ValidityChanged {
                    old,
                    new: uid_validity,
                });
                self.validity_changes += 1;
                self.start_epoch(uid_validity, uid_next);
                true
            }
            Some(_) => {
                if !exact {
                    // Only a lower bound: look for mail from the watermark.
                    self.refetch = true;
                    self.gap_estimate = uid_next.saturating_sub(self.watermark).max(1);
                } else if uid_next < self.watermark {
                    // A restored or recreated mailbox that kept its
                    // UIDVALIDITY: new mail gets UIDs below our watermark
                    // and would never be delivered. Follow UIDNEXT down.
                    self.notices.push_back(Notice::UidNextRegressed {
                        watermark: self.watermark,
                        uid_next,
                    });
                    self.uidnext_regressions += 1;
                    self.watermark = uid_next;
                    self.first_watermark = self.first_watermark.min(uid_next);
                    self.delivered_above.clear();
                    self.refetch = false;
                } else if uid_next > self.watermark {
                    // Mail arrived while we were away: fetch the gap by UID.
                    self.refetch = true;
                    self.gap_estimate = uid_next - self.watermark;
                }
                false
            }
        }
    }

    fn start_epoch(&mut self, uid_validity: u32, uid_next: u32) {
        self.uid_validity = Some(uid_validity);
        self.first_watermark = uid_next;
        self.watermark = uid_next;
        self.delivered_above.clear();
        self.old_reported.clear();
        self.look_back_covered = None;
        self.refetch = false;
        self.careful = false;
        self.attempts = Attempts::default();
        self.expunge_issued_once = None;
    }

    /// A subscriber wants mail received since `since`, from before the
    /// session's first SELECT. Runs at the next quiet moment; retried after
    /// a reconnect until it completes; a range already covered is not
    /// searched again.
    pub(crate) fn want_look_back(&mut self, since: SystemTime) {
        if self.look_back_limit == 0 || self.look_back_covered.is_some_and(|c| c <= since) {
            return;
        }
        self.look_back_wanted = Some(self.look_back_wanted.map_or(since, |w| w.min(since)));
    }

    /// The folder found at this connect (by its special use) is another
    /// one than before: its UIDs have nothing to do with the watermark,
    /// even under an equal UIDVALIDITY (UIDVALIDITY is per mailbox), so
    /// the next [`MailboxTracker::position_known`] starts a new epoch at
    /// UIDNEXT, as for a changed UIDVALIDITY.
    pub(crate) fn folder_moved(&mut self) {
        self.moved = self.uid_validity.is_some();
    }

    /// Whether a look-back is wanted and not yet done.
    pub(crate) fn wants_look_back(&self) -> bool {
        self.look_back_wanted.is_some()
    }

    /// Whether there is something to fetch now (so IDLE should end).
    pub(crate) fn has_work(&self) -> bool {
        self.refetch || self.announced > self.exists
    }

    /// Untagged data, whatever command is running: the one observer.
    pub(crate) fn observe(&mut self, data: &Data) {
        match data {
            Data::Exists(n) => {
                if *n < self.announced {
                    self.notices.push_back(Notice::ExistsDecreased {
                        was: self.announced,
                        now: *n,
                    });
                    self.exists = self.exists.min(*n);
                }
                self.announced = *n;
            }
            Data::Expunge(n) => {
                self.announced = self.announced.saturating_sub(1);
                self.exists = self.exists.saturating_sub(1);
                self.renumber_after_expunge(*n);
            }
            _ => {}
        }
    }

    /// A response of the running command did not parse (the client skipped
    /// it): whatever it carried must be fetched again.
    pub(crate) fn response_lost(&mut self) {
        if matches!(self.in_flight, Some(InFlight::Fetch { .. })) {
            self.lost_response = true;
        }
    }

    /// EXPUNGE of message `n` during a fetch (allowed during UID commands)
    /// renumbers the messages above it: the parts gathered so far follow,
    /// so two messages never merge.
    fn renumber_after_expunge(&mut self, n: u32) {
        let Some(InFlight::Fetch { kind, parts }) = self.in_flight.as_mut() else {
            return;
        };
        let old = std::mem::take(parts);
        for (seq, p) in old {
            match seq.cmp(&n) {
                std::cmp::Ordering::Less => {
                    parts.insert(seq, p);
                }
                std::cmp::Ordering::Equal => {}
                std::cmp::Ordering::Greater => {
                    parts.insert(seq - 1, p);
                }
            }
        }
        if let FetchKind::New { first, last } = kind {
            if n < *first {
                *first -= 1;
                *last -= 1;
            } else if n <= *last {
                *last = last.saturating_sub(1);
                if *last < *first {
                    // The whole range is gone.
                    *last = *first;
                }
            }
        }
    }

    /// What to do next. `Wait` means: nothing to ask until the server
    /// announces something (IDLE or poll).
    pub(crate) fn next_step(&mut self) -> Step {
        debug_assert!(self.in_flight.is_none(), "one command at a time");
        if self.uid_validity.is_none() {
            return Step::Wait;
        }
        if self.refetch {
            if !self.careful {
                return self.fetch(
                    true,
                    format!("{}:*", self.watermark),
                    FetchKind::FromWatermark,
                );
            }
            if let Some(uid) = self.careful_target.take() {
                return self.fetch(true, uid.to_string(), FetchKind::One(uid));
            }
            return self.search(format!("UID {}:*", self.watermark), SearchKind::Pending);
        }
        if self.announced > self.exists {
            let (first, last) = (self.exists + 1, self.announced);
            self.exists = self.announced;
            return self.fetch(
                false,
                format!("{first}:{last}"),
                FetchKind::New { first, last },
            );
        }
        if let Some((since, uids)) = self.pending_old.take() {
            let set = uids
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",");
            return self.fetch(true, set, FetchKind::Old { since, uids });
        }
        if let Some(since) = self.look_back_wanted {
            let top = self.first_watermark.saturating_sub(1);
            if top == 0 {
                self.finish_look_back(since);
                return self.next_step();
            }
            let window = u32::try_from(self.look_back_limit.saturating_mul(16)).unwrap_or(u32::MAX);
            let low = top.saturating_sub(window).max(1);
            let secs = since
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            // A day early: SINCE compares dates in the server's time zone;
            // the subscribers' filters check the exact time.
            let day =
                crate::proto::encode::search_date(i64::try_from(secs).unwrap_or(i64::MAX) - 86_400);
            return self.search(
                format!("UID {low}:{top} SINCE {day}"),
                SearchKind::LookBack { since, low, top },
            );
        }
        Step::Wait
    }

    fn fetch(&mut self, uid: bool, set: String, kind: FetchKind) -> Step {
        let messages = match &kind {
            FetchKind::New { first, last } => last - first + 1,
            // At most what UIDNEXT said had arrived while away.
            FetchKind::FromWatermark => self.gap_estimate.clamp(1, 10_000),
            FetchKind::One(_) => 1,
            FetchKind::Old { uids, .. } => u32::try_from(uids.len()).unwrap_or(u32::MAX),
        };
        self.in_flight = Some(InFlight::Fetch {
            kind,
            parts: BTreeMap::new(),
        });
        Step::Fetch(FetchRequest { uid, set, messages })
    }

    fn search(&mut self, criteria: String, kind: SearchKind) -> Step {
        self.in_flight = Some(InFlight::Search {
            kind,
            uids: Vec::new(),
        });
        Step::Search(SearchRequest { criteria })
    }

    /// Whether `uid` was delivered as live mail.
    fn is_delivered(&self, uid: u32) -> bool {
        uid < self.watermark || self.delivered_above.contains(&uid)
    }

    /// A FETCH response (during any command). Returns the message when it
    /// is complete, was asked for, and was never handed out before.
    pub(crate) fn on_fetch(&mut self, f: Fetch) -> Option<Arrived> {
        let Some(InFlight::Fetch { kind, parts }) = self.in_flight.as_mut() else {
            // Unsolicited (a flag change pushed during IDLE): nothing new.
            return None;
        };
        if let FetchKind::New { first, last } = kind
            && !(*first..=*last).contains(&f.seq)
        {
            return None;
        }
        let p = parts.entry(f.seq).or_default();
        for item in f.items {
            match item {
                FetchItem::Uid(u) => {
                    if p.uid.is_some_and(|x| x != u) {
                        // Contradicts an earlier response for this number:
                        // what came before belonged to another UID.
                        p.conflict = true;
                        p.done = false;
                        p.body = None;
                    }
                    p.uid = Some(u);
                }
                FetchItem::Body {
                    section,
                    data: Some(d),
                    ..
                } if section.is_empty() => p.body = Some(d),
                FetchItem::InternalDate(d) => p.internal_date = Some(d),
                FetchItem::Rfc822Size(s) => p.size = Some(s),
                _ => {}
            }
        }
        if p.done {
            return None;
        }
        let (Some(uid), Some(_)) = (p.uid, p.body.as_ref()) else {
            return None;
        };
        let old = matches!(kind, FetchKind::Old { .. });
        let asked = match kind {
            FetchKind::New { .. } | FetchKind::FromWatermark => true,
            FetchKind::One(u) => *u == uid,
            FetchKind::Old { uids, .. } => uids.binary_search(&uid).is_ok(),
        };
        if !asked {
            return None;
        }
        p.done = true;
        let raw = p.body.take().unwrap_or_default();
        let arrived = Arrived {
            uid,
            raw,
            internal_date: p.internal_date.take(),
            size: p.size,
            old,
        };
        if old {
            if uid >= self.first_watermark || !self.old_reported.insert(uid) {
                return None;
            }
            if self.old_reported.len() > MAX_REMEMBERED {
                self.old_reported.pop_first();
            }
            return Some(arrived);
        }
        if self.is_delivered(uid) {
            return None;
        }
        self.delivered_above.insert(uid);
        if self.delivered_above.len() > MAX_REMEMBERED {
            // A hostile server listing ever more UIDs: keep memory bounded
            // by moving the watermark up to the lowest ones remembered.
            if let Some(lowest) = self.delivered_above.pop_first() {
                self.watermark = self.watermark.max(lowest.saturating_add(1));
            }
        }
        Some(arrived)
    }

    /// `* SEARCH` results (during a UID SEARCH).
    pub(crate) fn on_search(&mut self, found: &[u32]) {
        if let Some(InFlight::Search { uids, .. }) = self.in_flight.as_mut() {
            let room = MAX_REMEMBERED.saturating_sub(uids.len());
            uids.extend(found.iter().take(room));
        }
    }

    /// The running FETCH or SEARCH ended with `ended`.
    pub(crate) fn completed(&mut self, ended: Ended) -> Verdict {
        let ended = if std::mem::take(&mut self.lost_response) && ended != Ended::Failed {
            // Something came back that did not parse: incomplete.
            Ended::Incomplete
        } else {
            ended
        };
        match self.in_flight.take() {
            Some(InFlight::Fetch { kind, parts }) => self.fetch_ended(kind, parts, ended, None),
            Some(InFlight::Search { kind, uids }) => self.search_ended(kind, uids, ended),
            None => Verdict::Continue,
        }
    }

    /// The connection ended; a fetch of live mail in flight counts as a
    /// failed attempt (a silent loss only once such losses have gone on
    /// for the silent span). A cut search, or a cut look-back fetch, is
    /// simply asked again on the next connection (the look-back is still
    /// wanted; what it handed out is remembered).
    pub(crate) fn connection_lost(&mut self, loss: Loss) {
        self.lost_response = false;
        if let Some(InFlight::Fetch { kind, parts }) = self.in_flight.take()
            && !matches!(kind, FetchKind::Old { .. })
        {
            let silent = match loss {
                Loss::Worded => None,
                Loss::Silent { at } => Some(at),
            };
            let _ = self.fetch_ended(kind, parts, Ended::Failed, silent);
        }
    }

    fn fetch_ended(
        &mut self,
        kind: FetchKind,
        parts: BTreeMap<u32, Partial>,
        ended: Ended,
        silent: Option<Instant>,
    ) -> Verdict {
        let failed = ended == Ended::Failed;
        let incomplete = ended == Ended::Incomplete;
        match kind {
            FetchKind::Old { since, .. } => {
                if incomplete {
                    // Search again; what was handed out is remembered.
                    return Verdict::Continue;
                }
                if failed {
                    // Refused (or cut): counted, never fatal, not repeated
                    // for this range.
                    self.look_back_failed();
                    return Verdict::Continue;
                }
                self.finish_look_back(since);
                return Verdict::Continue;
            }
            FetchKind::One(target) => {
                let got = parts.values().any(|p| p.done && p.uid == Some(target))
                    || self.is_delivered(target);
                if got {
                    self.resolve_below(target);
                } else if ended == Ended::ExpungeIssued && self.expunge_issued_once != Some(target)
                {
                    // Probably expunged since the search: the next search
                    // tells. Only a repeat counts as a failure.
                    self.expunge_issued_once = Some(target);
                } else {
                    // Still there (the search listed it) but not delivered:
                    // a failed attempt on this message.
                    if self.attempts.uid != target {
                        self.attempts = Attempts {
                            uid: target,
                            ..Attempts::default()
                        };
                    }
                    let span = self.silent_span;
                    let a = &mut self.attempts;
                    a.count += 1;
                    match silent {
                        None => a.worded += 1,
                        Some(at) => {
                            let first = *a.first_silent.get_or_insert(at);
                            a.silent_span_met |= at.saturating_duration_since(first) >= span;
                        }
                    }
                    let count = a.count;
                    let poison = a.worded >= self.poison_attempts
                        || (count >= self.poison_attempts
                            && (a.first_silent.is_none() || a.silent_span_met));
                    if poison {
                        self.notices.push_back(Notice::Skipped {
                            uid: target,
                            attempts: count,
                        });
                        self.skipped += 1;
                        self.resolve_below(target);
                    }
                }
                // Stay careful until a search finds nothing pending.
                self.refetch = true;
            }
            FetchKind::New { first, last } => {
                // Sequence order is UID order: the watermark may pass the
                // resolved prefix of the range; anything after a hole stays
                // in `delivered_above` and is found again by UID.
                let mut complete = true;
                let mut top = None;
                for seq in first..=last {
                    match parts.get(&seq) {
                        Some(p)
                            if !p.conflict
                                && (p.done || p.uid.is_some_and(|u| self.is_delivered(u))) =>
                        {
                            top = p.uid.or(top);
                        }
                        _ => {
                            complete = false;
                            break;
                        }
                    }
                }
                if let Some(t) = top {
                    self.advance_to(t.saturating_add(1));
                }
                if !complete || incomplete {
                    self.attempt_failed();
                }
            }
            FetchKind::FromWatermark => {
                // `NO [EXPUNGEISSUED]` says that some asked message is
                // gone, not that every other one came: a server may leave
                // out one it failed on as well. Like a failure, it leaves
                // unknown what is missing; the careful search tells.
                if failed || incomplete || ended == Ended::ExpungeIssued {
                    // Unknown what is missing: keep the watermark.
                    self.attempt_failed();
                } else {
                    // Every UID at or above the watermark was listed: the
                    // lowest unresolved one bounds the new watermark.
                    let unresolved_known = parts
                        .values()
                        .filter(|p| !p.done)
                        .filter_map(|p| p.uid)
                        .filter(|u| !self.is_delivered(*u))
                        .min();
                    let uid_less = parts.values().any(|p| !p.done && p.uid.is_none());
                    let highest = parts
                        .values()
                        .filter_map(|p| p.uid)
                        .chain(self.delivered_above.iter().copied())
                        .max();
                    match (unresolved_known, uid_less) {
                        (None, false) => {
                            if let Some(h) = highest {
                                self.advance_to(h.saturating_add(1));
                            }
                            self.refetch = false;
                        }
                        (Some(u), _) => {
                            self.advance_to(u);
                            self.attempt_failed();
                        }
                        (None, true) => self.attempt_failed(),
                    }
                }
            }
        }
        if failed {
            Verdict::Reconnect
        } else {
            Verdict::Continue
        }
    }

    fn search_ended(&mut self, kind: SearchKind, mut uids: Vec<u32>, ended: Ended) -> Verdict {
        match kind {
            SearchKind::Pending => {
                if ended != Ended::Ok {
                    // Cannot narrow down: skip nothing. Searching again at
                    // once would loop as fast as the server refuses; the
                    // reconnect's backoff paces the next try.
                    return Verdict::Reconnect;
                }
                uids.retain(|u| *u >= self.watermark && !self.delivered_above.contains(u));
                match uids.iter().min() {
                    Some(&lowest) => {
                        self.advance_to(lowest);
                        self.careful_target = Some(lowest);
                    }
                    None => {
                        // Nothing pending: everything found was delivered.
                        let highest = self.delivered_above.last().copied();
                        if let Some(h) = highest {
                            self.advance_to(h.saturating_add(1));
                        }
                        self.refetch = false;
                        self.careful = false;
                    }
                }
            }
            SearchKind::LookBack { since, low, top } => {
                if ended != Ended::Ok {
                    self.look_back_failed();
                    return Verdict::Continue;
                }
                uids.retain(|&u| u >= low && u <= top && !self.old_reported.contains(&u));
                uids.sort_unstable();
                uids.dedup();
                let newest = uids[uids.len().saturating_sub(self.look_back_limit)..].to_vec();
                if newest.is_empty() {
                    self.finish_look_back(since);
                } else {
                    // Fetched at the next step; a cut connection searches
                    // again (what was reported is not reported twice).
                    self.pending_old = Some((since, newest));
                }
            }
        }
        Verdict::Continue
    }

    fn finish_look_back(&mut self, since: SystemTime) {
        self.look_back_covered = Some(self.look_back_covered.map_or(since, |c| c.min(since)));
        if self.look_back_wanted.is_some_and(|w| w >= since) {
            self.look_back_wanted = None;
        }
    }

    fn look_back_failed(&mut self) {
        self.look_back_failures += 1;
        self.notices.push_back(Notice::LookBackFailed);
        if let Some(w) = self.look_back_wanted.take() {
            self.finish_look_back(w);
        }
    }

    /// `uid` and everything below it is resolved.
    fn resolve_below(&mut self, uid: u32) {
        self.advance_to(uid.saturating_add(1));
    }

    fn advance_to(&mut self, w: u32) {
        if w > self.watermark {
            self.watermark = w;
            self.delivered_above = self.delivered_above.split_off(&w);
        }
    }

    /// An attempt left something unresolved at the watermark: fetch by UID
    /// again, carefully.
    fn attempt_failed(&mut self) {
        self.refetch = true;
        self.careful = true;
    }

    /// The next notice to log and count.
    pub(crate) fn poll_notice(&mut self) -> Option<Notice> {
        self.notices.pop_front()
    }

    /// The mailbox's UIDVALIDITY, once selected.
    pub(crate) fn uid_validity(&self) -> Option<u32> {
        self.uid_validity
    }

    /// The position for statistics.
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            uid_validity: self.uid_validity,
            watermark: self.uid_validity.map(|_| self.watermark),
            skipped: self.skipped,
            look_back_failures: self.look_back_failures,
            uidnext_regressions: self.uidnext_regressions,
            validity_changes: self.validity_changes,
        }
    }
}

/// What a folder's STATUS said (UIDVALIDITY, UIDNEXT), as remembered at its
/// last completed visit: a STATUS that says otherwise means new mail (or a
/// new epoch) there.
type Seen = (u32, u32);

/// One watched folder: what the credential named, the name the server
/// gave it on the current connection, and its own [`MailboxTracker`].
#[derive(Debug)]
pub(crate) struct FolderState<F> {
    /// What the credential named: a name or a special use.
    pub folder: F,
    /// The folder's name on the current connection, decoded (for
    /// `Mail::mailbox`); `None` until found.
    pub name: Option<String>,
    /// The name as it goes on the wire: the bytes the server listed for a
    /// special use, else `None` (the name is encoded as usual).
    pub raw_name: Option<Vec<u8>>,
    /// The position in this folder: the only copy.
    pub tracker: MailboxTracker,
    /// STATUS as of the last completed visit (further folders only).
    seen: Option<Seen>,
    /// The name of the folder its position was taken in.
    known_as: Option<String>,
    /// The folder was missing at the last check (not listed, STATUS or
    /// EXAMINE refused).
    pub missing: bool,
    /// Times the folder was found missing or refused.
    pub failures: u64,
    /// On this connection its name names the same mailbox as this
    /// earlier folder: it is not watched, or its mail would be delivered
    /// twice (see [`Folders::mark_repeats`]).
    pub same_as: Option<usize>,
}

/// A position for statistics (and for whoever stores positions): the
/// folder, its name, UIDVALIDITY and watermark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FolderPosition<F> {
    pub folder: F,
    pub name: Option<String>,
    pub uid_validity: Option<u32>,
    pub watermark: Option<u32>,
    pub missing: bool,
    pub failures: u64,
    /// The earlier folder naming the same mailbox, when this one is not
    /// watched for that reason.
    pub same_as: Option<F>,
    /// Times this folder's tracker started a new epoch (UIDVALIDITY
    /// changed, or its special use moved): the mail kept from it before
    /// is void.
    pub validity_changes: u64,
}

impl<F: PartialEq> FolderPosition<F> {
    /// Whether `f` would be reported as this position: compared in
    /// place, without making a position of it.
    fn is(&self, f: &FolderState<F>, folder: Option<&F>) -> bool {
        let s = f.tracker.snapshot();
        self.folder == f.folder
            && self.name == f.name
            && self.uid_validity == s.uid_validity
            && self.watermark == s.watermark
            && self.missing == f.missing
            && self.failures == f.failures
            && self.same_as.as_ref() == folder
            && self.validity_changes == s.validity_changes
    }
}

/// Every folder a session watches, the main one first, each with its own
/// [`MailboxTracker`]: the one owner of the session's positions. Like a
/// tracker, it is moved into each connection's loop and handed back, and
/// it has no I/O and no clock. Its size is fixed by the credential: the
/// folders are named once, so nothing here grows with what the server
/// sends beyond what each tracker bounds.
///
/// `F` names a folder (the credential's `Folder`); it is a parameter so
/// that this file needs nothing beyond the protocol types (the fuzz target
/// compiles it alone).
#[derive(Debug)]
pub(crate) struct Folders<F> {
    list: Vec<FolderState<F>>,
}

impl<F: Clone> Folders<F> {
    /// The folders `main` and `further`, none seen yet, each tracker made
    /// by `make`.
    pub(crate) fn new(main: F, further: Vec<F>, mut make: impl FnMut() -> MailboxTracker) -> Self {
        let list = std::iter::once(main)
            .chain(further)
            .map(|folder| FolderState {
                folder,
                name: None,
                raw_name: None,
                tracker: make(),
                seen: None,
                known_as: None,
                missing: false,
                failures: 0,
                same_as: None,
            })
            .collect();
        Folders { list }
    }

    /// How many folders, the main one included.
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// Folder `i` (0: the main one).
    pub(crate) fn get(&self, i: usize) -> &FolderState<F> {
        &self.list[i]
    }

    /// Folder `i`, to change (0: the main one).
    pub(crate) fn get_mut(&mut self, i: usize) -> &mut FolderState<F> {
        &mut self.list[i]
    }

    /// Whether the main folder was ever selected.
    pub(crate) fn has_position(&self) -> bool {
        self.list[0].tracker.has_position()
    }

    /// Folder `i` is called `name` on this connection (`raw_name`: the
    /// bytes the server listed, for a special use). Returns whether it is
    /// another folder than the one its position was taken in — a special
    /// use that now marks another folder — in which case its tracker
    /// starts over there at UIDNEXT.
    pub(crate) fn named(&mut self, i: usize, name: String, raw_name: Option<Vec<u8>>) -> bool {
        let f = &mut self.list[i];
        let moved = f.known_as.as_ref().is_some_and(|old| *old != name);
        if moved {
            f.tracker.folder_moved();
        }
        f.known_as = Some(name.clone());
        f.name = Some(name);
        f.raw_name = raw_name;
        moved
    }

    /// A new connection: every name is looked up again.
    pub(crate) fn connecting(&mut self) {
        for f in &mut self.list {
            f.name = None;
            f.raw_name = None;
            f.same_as = None;
        }
    }

    /// Marks each further folder whose name on this connection names the
    /// same mailbox ([`same_mailbox`](crate::proto::encode::same_mailbox))
    /// as the main folder or an earlier further folder watched: a special
    /// use and a name for one mailbox (`\Junk` and `"Junk"`), or two
    /// special uses on one. It is not watched — two trackers would hand
    /// each of its mails out twice. Returns the folders newly marked, each
    /// with the folder it repeats. A folder not found (yet, or any more)
    /// is not marked, and marks no other: they are worked out again at
    /// each call.
    pub(crate) fn mark_repeats(&mut self) -> Vec<(usize, usize)> {
        let mut marked = Vec::new();
        for i in 1..self.list.len() {
            let first = self.list[i].name.as_deref().and_then(|name| {
                self.list[..i].iter().position(|f| {
                    f.same_as.is_none()
                        && f.name
                            .as_deref()
                            .is_some_and(|n| crate::proto::encode::same_mailbox(n, name))
                })
            });
            if first.is_some() && first != self.list[i].same_as {
                marked.extend(first.map(|j| (i, j)));
            }
            self.list[i].same_as = first;
        }
        marked
    }

    /// A subscriber wants mail since `since`: in every folder.
    pub(crate) fn want_look_back(&mut self, since: SystemTime) {
        for f in &mut self.list {
            f.tracker.want_look_back(since);
        }
    }

    /// The connection ended: each tracker with a command in flight learns
    /// it (at most one has one).
    pub(crate) fn connection_lost(&mut self, loss: Loss) {
        for f in &mut self.list {
            f.tracker.connection_lost(loss);
        }
    }

    /// The next notice of any folder, with the folder it is about.
    pub(crate) fn poll_notice(&mut self) -> Option<(F, Notice)> {
        self.list
            .iter_mut()
            .find_map(|f| f.tracker.poll_notice().map(|n| (f.folder.clone(), n)))
    }

    /// Further folder `i` was not found, or STATUS or EXAMINE was refused:
    /// counted; its position is kept for when it is back.
    pub(crate) fn missing(&mut self, i: usize) {
        let f = &mut self.list[i];
        f.missing = true;
        f.failures += 1;
    }

    /// Further folder `i` answered STATUS with `uid_validity` and
    /// `uid_next` (either may be absent). Returns whether to visit it:
    /// EXAMINE it and fetch what its tracker asks for. The first STATUS
    /// of a folder never seen fixes its position at UIDNEXT (no backlog)
    /// without a visit, unless a look-back is wanted there.
    pub(crate) fn on_status(
        &mut self,
        i: usize,
        uid_validity: Option<u32>,
        uid_next: Option<u32>,
    ) -> bool {
        let f = &mut self.list[i];
        f.missing = false;
        let (Some(v), Some(n)) = (uid_validity, uid_next) else {
            // Not enough to compare: EXAMINE tells.
            return true;
        };
        if !f.tracker.has_position() || f.tracker.moved {
            // Never seen, or another folder now: start at UIDNEXT.
            f.tracker.position_known(v, UidNext::Exact(n));
            f.seen = Some((v, n));
        }
        f.seen != Some((v, n)) || f.tracker.has_work() || f.tracker.wants_look_back()
    }

    /// Further folder `i` was visited after a STATUS that said
    /// `uid_validity` and `uid_next`, and its tracker has nothing more to
    /// ask. Mail that arrived after that STATUS has a UID at or above its
    /// UIDNEXT, so the next STATUS shows it, even if the visit fetched it
    /// already (the tracker then hands nothing out twice).
    pub(crate) fn visited(&mut self, i: usize, uid_validity: Option<u32>, uid_next: Option<u32>) {
        self.list[i].seen = uid_validity.zip(uid_next);
    }

    /// The main folder's position, with the counters of every folder
    /// summed: what a session's statistics show.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut s = self.list[0].tracker.snapshot();
        for f in &self.list[1..] {
            let o = f.tracker.snapshot();
            s.skipped += o.skipped;
            s.look_back_failures += o.look_back_failures;
            s.uidnext_regressions += o.uidnext_regressions;
            s.validity_changes += o.validity_changes;
        }
        s
    }

    /// Every folder's position, the main one first.
    pub(crate) fn positions(&self) -> Vec<FolderPosition<F>> {
        self.list
            .iter()
            .map(|f| {
                let s = f.tracker.snapshot();
                FolderPosition {
                    folder: f.folder.clone(),
                    name: f.name.clone(),
                    uid_validity: s.uid_validity,
                    watermark: s.watermark,
                    missing: f.missing,
                    failures: f.failures,
                    same_as: f.same_as.map(|j| self.list[j].folder.clone()),
                    validity_changes: s.validity_changes,
                }
            })
            .collect()
    }

    /// Whether `reported` is what [`Folders::positions`] would return now,
    /// compared in place (the watcher asks after every command; most
    /// often nothing moved, and nothing is cloned to tell).
    pub(crate) fn positions_are(&self, reported: &[FolderPosition<F>]) -> bool
    where
        F: PartialEq,
    {
        reported.len() == self.list.len()
            && reported
                .iter()
                .zip(&self.list)
                .all(|(p, f)| p.is(f, f.same_as.map(|j| &self.list[j].folder)))
    }
}

#[cfg(test)]
mod tests;
