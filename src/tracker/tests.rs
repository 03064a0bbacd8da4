//! Tests of the [`MailboxTracker`], driven by hand as the watcher drives it
//! (`selected` → `position_known` → `next_step` → `on_fetch`/`observe`/
//! `on_search` → `completed`, `connection_lost` when a connection dies).
//!
//! Why it exists: the tracker is the one owner of "exactly once, never
//! stuck" (issue 9). The table tests pin one behaviour each; the property
//! test runs the tracker against a simulated IMAP server under generated
//! faults (reordered, repeated, split, dropped or NIL FETCH responses,
//! commands answered NO, expunges and disconnects anywhere) and checks that
//! no mail is handed out twice, none below the first watermark, every live
//! message is handed out (or skipped for a reason), memory stays bounded and
//! the tracker never livelocks.
//!
//! The table tests name every command the tracker must send: [`fetch`],
//! [`uid_fetch`] and [`uid_search`] each expect one command and answer it;
//! [`settle`] answers whatever follows with the property test's server.

use std::time::{Duration, Instant, UNIX_EPOCH};

use super::*;

const VALIDITY: u32 = 7;

fn body(data: Option<&[u8]>) -> FetchItem {
    FetchItem::Body {
        section: String::new(),
        origin: Some(0),
        data: data.map(<[u8]>::to_vec),
    }
}

/// A whole FETCH response: UID and body.
fn mail(seq: u32, uid: u32) -> Fetch {
    Fetch {
        seq,
        items: vec![
            FetchItem::Uid(uid),
            FetchItem::Rfc822Size(6),
            body(Some(format!("mail{uid}").as_bytes())),
        ],
    }
}

/// A FETCH response whose body is NIL.
fn nil(seq: u32, uid: u32) -> Fetch {
    Fetch {
        seq,
        items: vec![FetchItem::Uid(uid), body(None)],
    }
}

fn tracker() -> MailboxTracker {
    MailboxTracker::new(3, 10)
}

/// A new connection: SELECT counted `exists`, the server said UIDNEXT.
fn connect(t: &mut MailboxTracker, exists: u32, uid_next: UidNext) -> bool {
    t.selected(exists);
    t.position_known(VALIDITY, uid_next)
}

/// A tracker (`poison_attempts` 3) after its first SELECT.
fn connected(exists: u32, uid_next: UidNext) -> MailboxTracker {
    let mut t = tracker();
    connect(&mut t, exists, uid_next);
    t
}

/// The connection died; the next one's SELECT counted `exists`, the server
/// said UIDNEXT.
fn reconnect(t: &mut MailboxTracker, exists: u32, uid_next: UidNext) -> bool {
    t.connection_lost(Loss::Worded);
    connect(t, exists, uid_next)
}

#[track_caller]
fn expect_fetch(step: Step, uid: bool, set: &str) -> FetchRequest {
    match step {
        Step::Fetch(req) if req.uid == uid && req.set == set => req,
        other => panic!("expected FETCH uid={uid} {set}, got {other:?}"),
    }
}

#[track_caller]
fn expect_search(step: Step, criteria_prefix: &str) -> SearchRequest {
    match step {
        Step::Search(req) if req.criteria.starts_with(criteria_prefix) => req,
        other => panic!("expected UID SEARCH {criteria_prefix}..., got {other:?}"),
    }
}

/// Hands `f` to the tracker and returns the UID it handed out, if any.
fn give(t: &mut MailboxTracker, f: Fetch) -> Option<u32> {
    t.on_fetch(f).map(|a| {
        assert_eq!(a.raw, format!("mail{}", a.uid).into_bytes(), "body kept");
        a.uid
    })
}

/// Hands each response to the tracker; returns what each one handed out.
fn answer(t: &mut MailboxTracker, responses: impl IntoIterator<Item = Fetch>) -> Vec<Option<u32>> {
    responses.into_iter().map(|f| give(t, f)).collect()
}

/// The tracker's next command is `FETCH <set>` (by sequence number); the
/// server answers `responses`, then OK. Returns what each response handed
/// out.
#[track_caller]
fn fetch(
    t: &mut MailboxTracker,
    set: &str,
    responses: impl IntoIterator<Item = Fetch>,
) -> Vec<Option<u32>> {
    fetch_answered_ok(t, false, set, responses)
}

/// The same for `UID FETCH <set>`.
#[track_caller]
fn uid_fetch(
    t: &mut MailboxTracker,
    set: &str,
    responses: impl IntoIterator<Item = Fetch>,
) -> Vec<Option<u32>> {
    fetch_answered_ok(t, true, set, responses)
}

#[track_caller]
fn fetch_answered_ok(
    t: &mut MailboxTracker,
    uid: bool,
    set: &str,
    responses: impl IntoIterator<Item = Fetch>,
) -> Vec<Option<u32>> {
    expect_fetch(t.next_step(), uid, set);
    let got = answer(t, responses);
    assert_eq!(t.completed(Ended::Ok), Verdict::Continue);
    got
}

/// The tracker's next command is `UID SEARCH <criteria>...`; the server
/// lists `found`, then OK.
#[track_caller]
fn uid_search(t: &mut MailboxTracker, criteria_prefix: &str, found: &[u32]) {
    expect_search(t.next_step(), criteria_prefix);
    t.on_search(found);
    assert_eq!(t.completed(Ended::Ok), Verdict::Continue);
}

fn notices(t: &mut MailboxTracker) -> Vec<Notice> {
    std::iter::from_fn(|| t.poll_notice()).collect()
}

fn watermark(t: &MailboxTracker) -> u32 {
    t.snapshot().watermark.expect("position known")
}

fn since() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// Answers the tracker's steps without faults, with the property test's
/// server, from a mailbox holding `msgs` (all announced on this connection,
/// UIDNEXT one above the last), until the tracker waits; returns the live
/// UIDs handed out meanwhile. Panics after 50 steps (a livelock), on a
/// second hand-out of anything delivered before, and where the property
/// test's invariants break.
fn settle(t: MailboxTracker, msgs: &[u32]) -> Vec<u32> {
    model::settle(t, msgs)
}

/// After the first SELECT (5 messages, UIDNEXT 10), UIDs 10 and 11
/// arrived, were fetched by `FETCH 6:7` and handed out: the watermark is 12.
fn ten_and_eleven_handed_out() -> MailboxTracker {
    let mut t = connected(5, UidNext::Exact(10));
    t.observe(&Data::Exists(7));
    assert_eq!(
        fetch(&mut t, "6:7", [mail(6, 10), mail(7, 11)]),
        [Some(10), Some(11)]
    );
    t
}

#[test]
fn first_select_starts_at_uidnext_and_fetches_no_backlog() {
    let mut t = tracker();
    assert!(!t.has_position());
    assert_eq!(t.next_step(), Step::Wait, "nothing before a position");
    assert!(!connect(&mut t, 5, UidNext::Exact(10)));
    assert!(t.has_position());
    assert_eq!(watermark(&t), 10);
    assert!(!t.has_work());
    assert_eq!(
        t.next_step(),
        Step::Wait,
        "the 5 old messages are not fetched"
    );
    assert!(notices(&mut t).is_empty());
}

#[test]
fn new_mail_is_fetched_by_the_sequence_range_exists_announced() {
    let mut t = connected(5, UidNext::Exact(10));
    t.observe(&Data::Exists(7));
    assert!(t.has_work());
    let req = expect_fetch(t.next_step(), false, "6:7");
    assert_eq!(req.messages, 2);
    assert_eq!(
        answer(&mut t, [mail(6, 10), mail(7, 11)]),
        [Some(10), Some(11)]
    );
    assert_eq!(t.completed(Ended::Ok), Verdict::Continue);
    assert_eq!(watermark(&t), 12);
    assert_eq!(t.next_step(), Step::Wait);
}

#[test]
fn exists_seen_during_any_command_is_fetched_next() {
    let mut t = connected(5, UidNext::Exact(10));
    // During STATUS or NOOP (no tracker command in flight).
    t.observe(&Data::Exists(6));
    expect_fetch(t.next_step(), false, "6:6");
    // Inside the FETCH's own responses.
    t.observe(&Data::Exists(7));
    assert_eq!(give(&mut t, mail(6, 10)), Some(10));
    t.completed(Ended::Ok);
    assert_eq!(fetch(&mut t, "7:7", [mail(7, 11)]), [Some(11)]);
    // During a UID SEARCH (a look-back).
    t.want_look_back(since());
    expect_search(t.next_step(), "UID 1:9 SINCE");
    t.observe(&Data::Exists(8));
    t.on_search(&[]);
    t.completed(Ended::Ok);
    assert_eq!(fetch(&mut t, "8:8", [mail(8, 12)]), [Some(12)]);
    assert_eq!(t.next_step(), Step::Wait);
    assert_eq!(watermark(&t), 13);
}

#[test]
fn expunge_keeps_the_sequence_count_so_only_new_mail_is_fetched() {
    let mut t = connected(5, UidNext::Exact(10));
    t.observe(&Data::Expunge(2));
    t.observe(&Data::Expunge(2));
    assert!(!t.has_work(), "an expunge is not new mail");
    assert_eq!(t.next_step(), Step::Wait);
    // 3 left; one new message is number 4.
    t.observe(&Data::Exists(4));
    assert_eq!(fetch(&mut t, "4:4", [mail(4, 10)]), [Some(10)]);
    // EXISTS without EXPUNGE going down is noticed, and the next EXISTS
    // counts from the lower number.
    t.observe(&Data::Exists(2));
    assert_eq!(
        notices(&mut t),
        vec![Notice::ExistsDecreased { was: 4, now: 2 }]
    );
    t.observe(&Data::Exists(3));
    expect_fetch(t.next_step(), false, "3:3");
}

#[test]
fn fetch_responses_out_of_uid_order_are_each_handed_out_once() {
    let mut t = connected(5, UidNext::Exact(10));
    t.observe(&Data::Exists(8));
    assert_eq!(
        fetch(&mut t, "6:8", [mail(8, 12), mail(6, 10), mail(7, 11)]),
        [Some(12), Some(10), Some(11)]
    );
    assert_eq!(watermark(&t), 13);
    assert_eq!(t.next_step(), Step::Wait);
}

#[test]
fn a_repeated_fetch_response_is_handed_out_once() {
    let mut t = connected(5, UidNext::Exact(10));
    t.observe(&Data::Exists(6));
    assert_eq!(
        fetch(&mut t, "6:6", [mail(6, 10), mail(6, 10)]),
        [Some(10), None]
    );
    // And again in a later command (by UID, after an AtLeast reconnect).
    // `11:*` past the end returns the last message (RFC 3501).
    connect(&mut t, 6, UidNext::AtLeast(11));
    assert_eq!(uid_fetch(&mut t, "11:*", [mail(6, 10)]), [None]);
    assert_eq!(t.next_step(), Step::Wait);
}

/// A server that sends one UID under two sequence numbers (without an
/// EXPUNGE in between) hands it out once: the tracker remembers what it
/// handed out above the watermark, not only per sequence number.
#[test]
fn the_same_uid_under_two_sequence_numbers_is_handed_out_once() {
    let mut t = connected(5, UidNext::Exact(10));
    reconnect(&mut t, 6, UidNext::Exact(11));
    assert_eq!(
        uid_fetch(&mut t, "10:*", [mail(6, 10), mail(7, 10)]),
        [Some(10), None]
    );
    assert_eq!(settle(t, &[1, 2, 3, 4, 5, 10]), []);
}

#[test]
fn a_message_split_over_two_fetch_responses_is_merged() {
    let mut t = connected(5, UidNext::Exact(10));
    t.observe(&Data::Exists(6));
    expect_fetch(t.next_step(), false, "6:6");
    let uid_only = Fetch {
        seq: 6,
        items: vec![FetchItem::Uid(10), FetchItem::Flags(vec![])],
    };
    let body_only = Fetch {
        seq: 6,
        items: vec![body(Some(b"mail10")), FetchItem::Rfc822Size(6)],
    };
    assert_eq!(give(&mut t, uid_only), None);
    let a = t
        .on_fetch(body_only)
        .expect("complete after the second part");
    assert_eq!(
        (a.uid, a.raw.as_slice(), a.size),
        (10, &b"mail10"[..], Some(6))
    );
    t.completed(Ended::Ok);
    assert_eq!(watermark(&t), 11);
    assert_eq!(t.next_step(), Step::Wait);
}

#[test]
fn fetch_responses_for_sequence_numbers_outside_the_range_are_ignored() {
    let mut t = connected(5, UidNext::Exact(10));
    t.observe(&Data::Exists(6));
    assert_eq!(
        fetch(
            &mut t,
            "6:6",
            [
                // An old message (a flag change with a body, or a confused
                // server).
                mail(3, 4),
                // A message beyond the range: not asked, fetched when
                // announced.
                mail(7, 11),
                mail(6, 10),
            ]
        ),
        [None, None, Some(10)]
    );
    assert_eq!(watermark(&t), 11);
    // Outside any command: unsolicited, nothing handed out.
    assert_eq!(give(&mut t, mail(7, 11)), None);
    t.observe(&Data::Exists(7));
    assert_eq!(fetch(&mut t, "7:7", [mail(7, 11)]), [Some(11)]);
}

/// Regression (found by the hostile scripts): one sequence number answered
/// with several UIDs, the first a stray one below the watermark. UID 10,
/// sent whole, is handed out exactly once (from this answer or the careful
/// re-fetch the contradiction calls for), never hidden behind the stray.
#[test]
fn a_stray_low_uid_for_a_sequence_number_does_not_hide_its_mail() {
    let mut t = connected(5, UidNext::Exact(10));
    t.observe(&Data::Exists(6));
    let now = fetch(
        &mut t,
        "6:6",
        [mail(6, 3), mail(6, 10), mail(6, 10), mail(6, 9)],
    );
    let later = settle(t, &[1, 2, 3, 4, 5, 10]);
    let handed: Vec<u32> = now.into_iter().flatten().chain(later).collect();
    assert_eq!(handed, [10]);
}

#[test]
fn a_nil_body_once_is_fetched_again_carefully_and_delivered() {
    let mut t = connected(5, UidNext::Exact(10));
    t.observe(&Data::Exists(6));
    assert_eq!(fetch(&mut t, "6:6", [nil(6, 10)]), [None]);
    assert!(t.has_work());
    uid_search(&mut t, "UID 10:*", &[10]);
    assert_eq!(uid_fetch(&mut t, "10", [mail(6, 10)]), [Some(10)]);
    uid_search(&mut t, "UID 11:*", &[]);
    assert_eq!(t.next_step(), Step::Wait);
    assert_eq!(watermark(&t), 11);
    assert_eq!(t.snapshot().skipped, 0);
    assert!(notices(&mut t).is_empty());
}

#[test]
fn a_nil_body_every_time_is_skipped_after_poison_attempts() {
    let mut t = connected(5, UidNext::Exact(10)); // poison_attempts = 3
    t.observe(&Data::Exists(7));
    // Careful from now on.
    assert_eq!(
        fetch(&mut t, "6:7", [nil(6, 10), mail(7, 11)]),
        [None, Some(11)]
    );
    for attempt in 1..=3 {
        uid_search(&mut t, "UID 10:*", &[10, 11]);
        assert_eq!(uid_fetch(&mut t, "10", [nil(6, 10)]), [None]);
        let n = notices(&mut t);
        if attempt < 3 {
            assert!(n.is_empty(), "{n:?}");
        } else {
            assert_eq!(
                n,
                vec![Notice::Skipped {
                    uid: 10,
                    attempts: 3
                }]
            );
        }
    }
    assert_eq!(t.snapshot().skipped, 1);
    // 11 was delivered: the search finds nothing pending.
    uid_search(&mut t, "UID 11:*", &[11]);
    assert_eq!(t.next_step(), Step::Wait);
    assert_eq!(watermark(&t), 12);
}

/// Cuts the connection during the careful fetch of UID 10 (searched
/// first), on a fresh connection each time.
fn cut_during_fetch_of_10(t: &mut MailboxTracker, loss: Loss) -> Vec<Notice> {
    uid_search(t, "UID 10:*", &[10]);
    expect_fetch(t.next_step(), true, "10");
    t.connection_lost(loss);
    connect(t, 5, UidNext::Exact(11));
    notices(t)
}

/// A tracker (`poison_attempts` 3, silent span 60 s) careful about UID 10.
fn careful_about_10() -> MailboxTracker {
    let mut t = tracker().with_silent_span(Duration::from_secs(60));
    connect(&mut t, 4, UidNext::Exact(10));
    t.observe(&Data::Exists(5));
    assert_eq!(fetch(&mut t, "5:5", [nil(5, 10)]), [None]);
    t
}

/// The faults test's cutter closes the link right after each SELECT, which
/// is when the careful fetch of the first pending message runs: silent
/// losses in quick succession are the link's, and never cost the message.
#[test]
fn silent_losses_skip_a_message_only_once_they_have_gone_on_for_the_span() {
    let mut t = careful_about_10();
    let start = Instant::now();
    for k in 0..10 {
        let at = start + Duration::from_secs(5 * k);
        let n = cut_during_fetch_of_10(&mut t, Loss::Silent { at });
        assert!(n.is_empty(), "skipped after {} quick cuts: {n:?}", k + 1);
    }
    // Fifty seconds of cuts and counting: at sixty, it is given up on.
    let n = cut_during_fetch_of_10(
        &mut t,
        Loss::Silent {
            at: start + Duration::from_secs(60),
        },
    );
    assert_eq!(
        n,
        vec![Notice::Skipped {
            uid: 10,
            attempts: 11
        }]
    );
    assert_eq!(t.snapshot().skipped, 1);
    // A fresh message that is cut once is fetched after the next connect.
    t.observe(&Data::Exists(6));
    uid_search(&mut t, "UID 11:*", &[]);
    assert_eq!(fetch(&mut t, "6:6", [mail(6, 11)]), [Some(11)]);
}

/// Without a span (or after it), silent losses count like any failure;
/// the count restarts for the next message.
#[test]
fn with_no_silent_span_cuts_count_like_any_failure() {
    let mut t = tracker();
    connect(&mut t, 4, UidNext::Exact(10));
    t.observe(&Data::Exists(5));
    assert_eq!(fetch(&mut t, "5:5", [nil(5, 10)]), [None]);
    let at = Instant::now();
    assert!(cut_during_fetch_of_10(&mut t, Loss::Silent { at }).is_empty());
    assert!(cut_during_fetch_of_10(&mut t, Loss::Silent { at }).is_empty());
    assert_eq!(
        cut_during_fetch_of_10(&mut t, Loss::Silent { at }),
        vec![Notice::Skipped {
            uid: 10,
            attempts: 3
        }]
    );
}

/// What the server puts in words (a BYE on the message, a literal over the
/// limit) is the message's own doing: three of them skip it at once, even
/// between quick silent cuts.
#[test]
fn worded_failures_skip_a_message_whatever_silent_losses_came_between() {
    let mut t = careful_about_10();
    let at = Instant::now();
    assert!(cut_during_fetch_of_10(&mut t, Loss::Worded).is_empty());
    assert!(cut_during_fetch_of_10(&mut t, Loss::Silent { at }).is_empty());
    assert!(cut_during_fetch_of_10(&mut t, Loss::Worded).is_empty());
    assert!(
        cut_during_fetch_of_10(&mut t, Loss::Silent { at }).is_empty(),
        "three failures, one of them worded and two quick cuts: not yet"
    );
    assert_eq!(
        cut_during_fetch_of_10(&mut t, Loss::Worded),
        vec![Notice::Skipped {
            uid: 10,
            attempts: 5
        }]
    );
}

#[test]
fn a_fetch_answered_no_reconnects_and_turns_careful() {
    let mut t = connected(5, UidNext::Exact(10));
    t.observe(&Data::Exists(7));
    expect_fetch(t.next_step(), false, "6:7");
    assert_eq!(t.completed(Ended::Failed), Verdict::Reconnect);
    reconnect(&mut t, 7, UidNext::Exact(12)); // the watcher's error path
    uid_search(&mut t, "UID 10:*", &[10, 11]);
    assert_eq!(uid_fetch(&mut t, "10", [mail(6, 10)]), [Some(10)]);
    uid_search(&mut t, "UID 11:*", &[11]);
    assert_eq!(uid_fetch(&mut t, "11", [mail(7, 11)]), [Some(11)]);
    uid_search(&mut t, "UID 12:*", &[]);
    assert_eq!(t.next_step(), Step::Wait);
    assert_eq!(t.snapshot().skipped, 0);
}

#[test]
fn expungeissued_is_a_race_not_a_failure() {
    let mut t = connected(5, UidNext::Exact(10));
    t.observe(&Data::Exists(7));
    expect_fetch(t.next_step(), false, "6:7");
    // Message 6 (UID 10) was expunged meanwhile; 7 still came.
    assert_eq!(give(&mut t, mail(7, 11)), Some(11));
    assert_eq!(t.completed(Ended::ExpungeIssued), Verdict::Continue);
    uid_search(&mut t, "UID 10:*", &[11]);
    assert_eq!(t.next_step(), Step::Wait);
    assert_eq!(watermark(&t), 12);
    assert_eq!(t.snapshot().skipped, 0);
}

/// Regression (found by tests/sequences.rs): a gap fetch after a reconnect
/// answered `NO [EXPUNGEISSUED]` may have left out a message that still
/// exists (the server failed on it as well): the tracker searches for what
/// is pending instead of taking the range as complete.
#[test]
fn a_gap_fetch_answered_expungeissued_searches_for_what_it_left_out() {
    let mut t = connected(2, UidNext::Exact(3));
    reconnect(&mut t, 4, UidNext::Exact(5));
    expect_fetch(t.next_step(), true, "3:*");
    // UID 3 left out (its FETCH failed), UID 4 expunged meanwhile.
    assert_eq!(t.completed(Ended::ExpungeIssued), Verdict::Continue);
    uid_search(&mut t, "UID 3:*", &[3]);
    assert_eq!(uid_fetch(&mut t, "3", [mail(3, 3)]), [Some(3)]);
    uid_search(&mut t, "UID 4:*", &[]);
    assert_eq!(t.next_step(), Step::Wait);
    assert_eq!(watermark(&t), 4);
    assert_eq!(t.snapshot().skipped, 0);
}

/// Regression: a careful `UID FETCH <uid>` answered `NO [EXPUNGEISSUED]`
/// (the message was expunged between the search and the fetch) is not a
/// failed attempt on that UID, so it is never reported as `Skipped`, even
/// with `poison_attempts` 1.
#[test]
fn a_careful_fetch_answered_expungeissued_is_not_a_skip() {
    let mut t = MailboxTracker::new(1, 10);
    connect(&mut t, 5, UidNext::Exact(10));
    t.observe(&Data::Exists(6));
    expect_fetch(t.next_step(), false, "6:6");
    t.completed(Ended::ExpungeIssued); // nothing came: careful
    uid_search(&mut t, "UID 10:*", &[10]);
    expect_fetch(t.next_step(), true, "10");
    // Expunged between the search and the fetch.
    t.completed(Ended::ExpungeIssued);
    assert_eq!(
        notices(&mut t),
        vec![],
        "an expunged message is not skipped"
    );
    assert_eq!(t.snapshot().skipped, 0);
}

#[test]
fn a_connection_lost_mid_fetch_hands_out_nothing_twice() {
    let mut t = connected(5, UidNext::Exact(10));
    t.observe(&Data::Exists(8));
    expect_fetch(t.next_step(), false, "6:8");
    assert_eq!(
        answer(&mut t, [mail(8, 12), mail(6, 10)]),
        [Some(12), Some(10)]
    );
    reconnect(&mut t, 8, UidNext::Exact(13));
    // Careful after a failed attempt: find what is pending above the
    // resolved prefix (10).
    uid_search(&mut t, "UID 11:*", &[11, 12]);
    // The server repeats the others; only 11 is handed out.
    assert_eq!(
        uid_fetch(&mut t, "11", [mail(6, 10), mail(8, 12), mail(7, 11)]),
        [None, None, Some(11)]
    );
    uid_search(&mut t, "UID 12:*", &[12]);
    assert_eq!(t.next_step(), Step::Wait);
    assert_eq!(watermark(&t), 13);

    // Cut in the middle of a reconnect's `UID FETCH w:*`: what it handed
    // out is not handed out again by the next one.
    reconnect(&mut t, 10, UidNext::AtLeast(15));
    expect_fetch(t.next_step(), true, "13:*");
    assert_eq!(give(&mut t, mail(9, 13)), Some(13));
    reconnect(&mut t, 10, UidNext::Exact(15));
    uid_search(&mut t, "UID 13:*", &[13, 14]);
    assert_eq!(
        uid_fetch(&mut t, "14", [mail(9, 13), mail(10, 14)]),
        [None, Some(14)]
    );
    uid_search(&mut t, "UID 15:*", &[]);
    assert_eq!(t.next_step(), Step::Wait);
}

#[test]
fn a_uidvalidity_change_starts_over_at_the_new_uidnext() {
    let mut t = connected(5, UidNext::Exact(10));
    t.observe(&Data::Exists(6));
    assert_eq!(fetch(&mut t, "6:6", [mail(6, 10)]), [Some(10)]);
    t.connection_lost(Loss::Worded);
    t.selected(3);
    assert!(t.position_known(VALIDITY + 1, UidNext::Exact(4)));
    assert_eq!(
        notices(&mut t),
        vec![Notice::ValidityChanged {
            old: VALIDITY,
            new: VALIDITY + 1
        }]
    );
    let s = t.snapshot();
    assert_eq!((s.uid_validity, s.watermark), (Some(VALIDITY + 1), Some(4)));
    assert_eq!(s.validity_changes, 1);
    assert_eq!(t.next_step(), Step::Wait, "no backlog in the new mailbox");
    // UID 10 in the new epoch is a different message.
    t.observe(&Data::Exists(4));
    assert_eq!(fetch(&mut t, "4:4", [mail(4, 10)]), [Some(10)]);
}

#[test]
fn a_uidnext_regression_is_followed_down() {
    let mut t = ten_and_eleven_handed_out();
    // Restored from a backup with the same UIDVALIDITY.
    assert!(!reconnect(&mut t, 2, UidNext::Exact(3)));
    assert_eq!(
        notices(&mut t),
        vec![Notice::UidNextRegressed {
            watermark: 12,
            uid_next: 3
        }]
    );
    assert_eq!(watermark(&t), 3);
    assert_eq!(t.snapshot().uidnext_regressions, 1);
    assert_eq!(t.next_step(), Step::Wait);
    t.observe(&Data::Exists(3));
    assert_eq!(fetch(&mut t, "3:3", [mail(3, 3)]), [Some(3)]);
    // A look-back now stays below the lowered first watermark.
    t.want_look_back(since());
    expect_search(t.next_step(), "UID 1:2 SINCE");
}

#[test]
fn uidnext_at_least_on_reconnect_fetches_from_the_watermark() {
    let mut t = connected(5, UidNext::Exact(10));
    // No UIDNEXT: the last message's UID + 1, a lower bound.
    reconnect(&mut t, 7, UidNext::AtLeast(12));
    assert!(t.has_work());
    let req = expect_fetch(t.next_step(), true, "10:*");
    assert_eq!(req.messages, 2);
    assert_eq!(
        answer(&mut t, [mail(6, 10), mail(7, 11)]),
        [Some(10), Some(11)]
    );
    t.completed(Ended::Ok);
    assert_eq!(watermark(&t), 12);
    assert_eq!(t.next_step(), Step::Wait);
    // A lower bound below the watermark (expunges hid the top UIDs): the
    // server answers `12:*` with its last message, already delivered.
    reconnect(&mut t, 6, UidNext::AtLeast(11));
    assert_eq!(uid_fetch(&mut t, "12:*", [mail(6, 10)]), [None]);
    assert_eq!(watermark(&t), 12);
    assert_eq!(t.next_step(), Step::Wait);
}

#[test]
fn the_look_back_stays_below_the_first_watermark() {
    let mut t = ten_and_eleven_handed_out();
    t.want_look_back(since());
    // Searches below the first watermark (10), not the live one (12).
    // A server that lists more than asked.
    uid_search(&mut t, "UID 1:9 SINCE ", &[3, 7, 10, 11, 40]);
    expect_fetch(t.next_step(), true, "3,7");
    let mut old = Vec::new();
    for f in [mail(1, 3), mail(5, 10), mail(2, 7), mail(7, 11), mail(1, 3)] {
        if let Some(a) = t.on_fetch(f) {
            assert!(a.old);
            old.push(a.uid);
        }
    }
    assert_eq!(old, vec![3, 7]);
    t.completed(Ended::Ok);
    assert_eq!(t.next_step(), Step::Wait, "covered: not searched again");
    t.want_look_back(since() + Duration::from_secs(60));
    assert_eq!(t.next_step(), Step::Wait, "a later `since` is covered too");
    assert_eq!(watermark(&t), 12, "old mail does not move the watermark");
}

#[test]
fn a_look_back_search_cut_by_a_disconnect_is_retried() {
    let mut t = connected(5, UidNext::Exact(10));
    t.want_look_back(since());
    expect_search(t.next_step(), "UID 1:9 SINCE");
    t.on_search(&[3]);
    reconnect(&mut t, 5, UidNext::Exact(10));
    uid_search(&mut t, "UID 1:9 SINCE", &[3, 7]);
    assert_eq!(
        uid_fetch(&mut t, "3,7", [mail(1, 3), mail(2, 7)]),
        [Some(3), Some(7)]
    );
    assert_eq!(t.next_step(), Step::Wait);
    assert_eq!(t.snapshot().look_back_failures, 0);
}

/// Regression (found by the property test): a disconnect during the
/// look-back's `UID FETCH` of the old UIDs is not a refusal: it is not
/// counted, the look-back searches again, and only the old UIDs not yet
/// handed out (7 here) are handed out.
#[test]
fn a_look_back_fetch_cut_by_a_disconnect_is_retried_without_repeats() {
    let mut t = connected(5, UidNext::Exact(10));
    t.want_look_back(since());
    uid_search(&mut t, "UID 1:9 SINCE", &[3, 7]);
    expect_fetch(t.next_step(), true, "3,7");
    assert_eq!(give(&mut t, mail(1, 3)), Some(3));
    reconnect(&mut t, 5, UidNext::Exact(10));
    assert_eq!(t.snapshot().look_back_failures, 0, "a cut is not a refusal");
    uid_search(&mut t, "UID 1:9 SINCE", &[3, 7]);
    assert_eq!(
        uid_fetch(&mut t, "7", [mail(1, 3), mail(2, 7)]),
        [None, Some(7)]
    );
    assert_eq!(t.next_step(), Step::Wait);
}

#[test]
fn a_refused_look_back_is_counted_and_not_retried() {
    // The search refused.
    let mut t = connected(5, UidNext::Exact(10));
    t.want_look_back(since());
    expect_search(t.next_step(), "UID 1:9 SINCE");
    t.completed(Ended::Failed);
    assert_eq!(notices(&mut t), vec![Notice::LookBackFailed]);
    assert_eq!(t.snapshot().look_back_failures, 1);
    assert_eq!(t.next_step(), Step::Wait);
    t.want_look_back(since());
    assert_eq!(t.next_step(), Step::Wait, "not retried for that range");
    // An earlier `since` is a new range.
    t.want_look_back(since() - Duration::from_secs(86_400));
    uid_search(&mut t, "UID 1:9 SINCE", &[4]);
    // The fetch refused: counted, never fatal, not retried.
    expect_fetch(t.next_step(), true, "4");
    assert_eq!(t.completed(Ended::Failed), Verdict::Continue);
    assert_eq!(notices(&mut t), vec![Notice::LookBackFailed]);
    assert_eq!(t.snapshot().look_back_failures, 2);
    assert_eq!(t.next_step(), Step::Wait);
    // Live mail is not affected.
    t.observe(&Data::Exists(6));
    expect_fetch(t.next_step(), false, "6:6");
    assert_eq!(give(&mut t, mail(6, 10)), Some(10));
}

/// Regression (found by the property test): a FETCH response that did not
/// parse is skipped by the client (`response_lost`). In a `UID FETCH w:*`
/// the tracker must not take "no unresolved part" for "everything at or
/// above the watermark was listed": the message whose response was lost
/// (UID 10) is fetched again.
#[test]
fn a_dropped_response_in_a_uid_fetch_from_the_watermark_is_fetched_again() {
    let mut t = connected(5, UidNext::Exact(10));
    // 10 and 11 arrived while away.
    reconnect(&mut t, 7, UidNext::Exact(12));
    let req = expect_fetch(t.next_step(), true, "10:*");
    assert_eq!(req.messages, 2, "UIDNEXT says two arrived");
    // `* 6 FETCH (UID 10 ...)` did not parse; 11 came.
    t.response_lost();
    assert_eq!(give(&mut t, mail(7, 11)), Some(11));
    t.completed(Ended::Ok);
    let later = settle(t, &[1, 2, 3, 4, 5, 10, 11]);
    assert_eq!(later, vec![10], "UID 10 is lost");
}

/// Regression (found by the property test): a server may send EXPUNGE
/// during a `UID FETCH` (RFC 3501 7.4.1), which renumbers the messages
/// above it. The parts gathered so far follow the renumbering, so the next
/// response (UID 11, now number 6) does not land on the part of UID 10,
/// already handed out, and is not lost.
#[test]
fn an_expunge_during_a_uid_fetch_does_not_merge_two_messages() {
    let mut t = connected(5, UidNext::Exact(10));
    reconnect(&mut t, 7, UidNext::Exact(12));
    expect_fetch(t.next_step(), true, "10:*");
    assert_eq!(give(&mut t, mail(6, 10)), Some(10));
    // An old message is expunged: UID 11 is now number 6, not 7.
    t.observe(&Data::Expunge(1));
    assert_eq!(give(&mut t, mail(6, 11)), Some(11), "UID 11 is lost");
    t.completed(Ended::Ok);
    assert_eq!(settle(t, &[2, 3, 4, 5, 10, 11]), Vec::<u32>::new());
}

/// Regression (found by the property test): failed attempts are charged
/// to a message only when it was fetched alone. A `UID FETCH w:*` answered
/// NO while nothing at or above the watermark existed (the server answered
/// `10:*` with its last, old message) does not count toward skipping the
/// next message to arrive there: with `poison_attempts` 2, UID 10 is not
/// skipped after a single NIL body of its own.
#[test]
fn a_failure_before_a_message_existed_does_not_count_toward_skipping_it() {
    let mut t = MailboxTracker::new(2, 10);
    connect(&mut t, 5, UidNext::Exact(10));
    // No UIDNEXT this time: the last message's UID + 1 is only a bound.
    reconnect(&mut t, 5, UidNext::AtLeast(6));
    expect_fetch(t.next_step(), true, "10:*");
    assert_eq!(give(&mut t, mail(5, 5)), None, "`10:*` returns message 5");
    assert_eq!(t.completed(Ended::Failed), Verdict::Reconnect);
    // UID 10 arrived meanwhile; its first fetch returns NIL once.
    reconnect(&mut t, 6, UidNext::Exact(11));
    uid_search(&mut t, "UID 10:*", &[10]);
    assert_eq!(uid_fetch(&mut t, "10", [nil(6, 10)]), [None]);
    assert_eq!(notices(&mut t), vec![], "UID 10 failed once, not twice");
    assert_eq!(settle(t, &[1, 2, 3, 4, 5, 10]), vec![10]);
}

/// The property test: the tracker against a simulated IMAP server.
mod model {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    /// The tracker's silent span in the model: each reconnect takes one
    /// second, so cuts alone skip a message from the third one on.
    const SILENT_SPAN: Duration = Duration::from_secs(2);

    /// What goes wrong with one command's answer. Indexes are taken modulo
    /// the number of responses.
    #[derive(Debug, Clone)]
    pub(super) struct Faults {
        /// Responses rotated by this much, then maybe reversed.
        pub(super) rotate: u8,
        pub(super) reverse: bool,
        /// This response is sent twice.
        pub(super) dup: Option<u8>,
        /// This response is split: UID in one response, body in another.
        pub(super) split: Option<u8>,
        /// This response did not parse (the client skips it).
        pub(super) drop: Option<u8>,
        /// This response has `BODY[] NIL`.
        pub(super) nil: Option<u8>,
        /// The command is answered NO.
        pub(super) no: bool,
        /// The connection dies after this many events of the answer.
        pub(super) cut: Option<u8>,
        /// A new message arrives while the command runs.
        pub(super) arrive: bool,
        /// Where pending EXISTS/EXPUNGE go among the responses.
        pub(super) notify_at: u8,
    }

    impl Faults {
        pub(super) fn none() -> Self {
            Faults {
                rotate: 0,
                reverse: false,
                dup: None,
                split: None,
                drop: None,
                nil: None,
                no: false,
                cut: None,
                arrive: false,
                notify_at: 0,
            }
        }

        fn any_loss(&self) -> bool {
            self.drop.is_some() || self.nil.is_some() || self.no || self.cut.is_some()
        }
    }

    #[derive(Debug, Clone)]
    pub(super) enum Op {
        /// New mail arrives (announced later, at some point).
        Append(u8),
        /// A message is expunged (announced later, at some point).
        Expunge(u8),
        /// The tracker takes its next step; the server answers it.
        Step(Faults),
        /// The connection dies while idle; the next one reports UIDNEXT
        /// exactly or (`true`) only as a lower bound.
        Disconnect(bool),
    }

    fn faults() -> impl Strategy<Value = Faults> {
        let idx = || proptest::option::weighted(0.12, any::<u8>());
        (
            (any::<u8>(), any::<bool>(), idx(), idx(), idx()),
            (
                idx(),
                proptest::bool::weighted(0.08),
                proptest::option::weighted(0.06, any::<u8>()),
                proptest::bool::weighted(0.15),
                any::<u8>(),
            ),
        )
            .prop_map(
                |((rotate, reverse, dup, split, drop), (nil, no, cut, arrive, notify_at))| Faults {
                    rotate,
                    reverse,
                    dup,
                    split,
                    drop,
                    nil,
                    no,
                    cut,
                    arrive,
                    notify_at,
                },
            )
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (1u8..=3).prop_map(Op::Append),
            1 => any::<u8>().prop_map(Op::Expunge),
            8 => faults().prop_map(Op::Step),
            1 => any::<bool>().prop_map(Op::Disconnect),
        ]
    }

    /// One message part the server sends.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Part {
        Whole,
        Nil,
        UidOnly,
        BodyOnly,
    }

    #[derive(Debug, Clone)]
    enum Ev {
        Mail(u32, Part),
        Notify,
        /// A response that did not parse: the client says so
        /// (`Event::Malformed`).
        Malformed,
    }

    /// The mailbox and the one connection's view of it.
    struct Server {
        /// Present messages, in UID (= sequence) order.
        msgs: Vec<u32>,
        uid_next: u32,
        /// The connection's sequence numbers: what EXISTS/EXPUNGE told it.
        view: Vec<u32>,
        /// The highest UID the view ever held.
        view_top: u32,
    }

    impl Server {
        fn present(&self, uid: u32) -> bool {
            self.msgs.binary_search(&uid).is_ok()
        }

        fn append(&mut self) {
            self.msgs.push(self.uid_next);
            self.uid_next += 1;
        }

        /// Pending EXPUNGE (only if `expunges`) and EXISTS responses.
        fn notifications(&mut self, expunges: bool) -> Vec<Data> {
            let mut out = Vec::new();
            if expunges {
                for seq in (1..=self.view.len()).rev() {
                    if !self.present(self.view[seq - 1]) {
                        self.view.remove(seq - 1);
                        out.push(Data::Expunge(u32::try_from(seq).unwrap()));
                    }
                }
            }
            let top = self.view_top;
            let new: Vec<u32> = self.msgs.iter().copied().filter(|u| *u > top).collect();
            if let Some(&last) = new.last() {
                self.view.extend(new);
                self.view_top = last;
                out.push(Data::Exists(u32::try_from(self.view.len()).unwrap()));
            }
            out
        }

        fn seq(&self, uid: u32) -> u32 {
            let i = self.view.iter().position(|u| *u == uid).expect("in view");
            u32::try_from(i + 1).unwrap()
        }

        /// The view's UIDs a UID set selects, RFC 3501 style: `a:*` with
        /// `a` above every UID selects the last message.
        fn uid_set(&self, set: &str) -> Vec<u32> {
            if let Some(low) = set.strip_suffix(":*") {
                let low: u32 = low.parse().unwrap();
                let mut out: Vec<u32> = self.view.iter().copied().filter(|u| *u >= low).collect();
                if out.is_empty() {
                    out.extend(self.view.last());
                }
                return out;
            }
            if let Some((a, b)) = set.split_once(':') {
                let (a, b): (u32, u32) = (a.parse().unwrap(), b.parse().unwrap());
                let (a, b) = (a.min(b), a.max(b));
                return self
                    .view
                    .iter()
                    .copied()
                    .filter(|u| (a..=b).contains(u))
                    .collect();
            }
            let list: BTreeSet<u32> = set.split(',').map(|u| u.parse().unwrap()).collect();
            self.view
                .iter()
                .copied()
                .filter(|u| list.contains(u))
                .collect()
        }
    }

    /// The run's bookkeeping and the properties checked on the way.
    struct Run {
        server: Server,
        t: MailboxTracker,
        first_watermark: u32,
        /// Live UIDs handed out, with how often.
        live: BTreeMap<u32, u32>,
        skipped: BTreeSet<u32>,
        /// Model time, for the silent span.
        now: Instant,
        /// Commands in which a generated fault kept this UID from arriving.
        faults: BTreeMap<u32, u32>,
        steps: u64,
    }

    impl Run {
        /// Takes a tracker already driven (by a table test) on a connection
        /// that has seen all of `msgs` announced; UIDNEXT is one above the
        /// last. What the tracker remembers as delivered above its watermark
        /// counts as handed out once, so a second hand-out fails.
        fn adopt(t: MailboxTracker, msgs: &[u32]) -> Run {
            let uid_next = msgs.last().map_or(1, |u| u + 1);
            Run {
                server: Server {
                    msgs: msgs.to_vec(),
                    uid_next,
                    view: msgs.to_vec(),
                    view_top: uid_next - 1,
                },
                first_watermark: t.first_watermark,
                live: t.delivered_above.iter().map(|u| (*u, 1)).collect(),
                t,
                skipped: BTreeSet::new(),
                faults: BTreeMap::new(),
                steps: 0,
                now: Instant::now(),
            }
        }

        /// Steps with no faults until the tracker waits with nothing
        /// announced; (e) panics after `bound` steps that were not quiet.
        fn settle(&mut self, bound: u64) {
            let mut steps = 0;
            while !self.step(&Faults::none()) {
                steps += 1;
                assert!(steps <= bound, "no quiescence after {steps} steps");
            }
            assert!(!self.t.has_work());
        }

        fn reconnect(&mut self, at_least: bool) {
            // A cut is silent; each reconnect takes a second of model time,
            // so a skip resting on cuts alone needs `SILENT_SPAN` of them.
            self.now += Duration::from_secs(1);
            self.t.connection_lost(Loss::Silent { at: self.now });
            let s = &mut self.server;
            s.view = s.msgs.clone();
            s.view_top = s.uid_next - 1;
            self.t.selected(u32::try_from(s.view.len()).unwrap());
            let uid_next = if at_least {
                UidNext::AtLeast(s.view.last().map_or(1, |u| u + 1))
            } else {
                UidNext::Exact(s.uid_next)
            };
            assert!(!self.t.position_known(VALIDITY, uid_next));
            self.drain();
        }

        fn drain(&mut self) {
            while let Some(n) = self.t.poll_notice() {
                match n {
                    Notice::Skipped { uid, .. } => {
                        assert!(self.skipped.insert(uid), "UID {uid} skipped twice");
                    }
                    other => panic!("unexpected notice {other:?}"),
                }
            }
        }

        /// Invariants that hold between any two events.
        fn check(&self) {
            let t = &self.t;
            // Nothing at or above UIDNEXT is ever resolved: mail arriving
            // later cannot fall below the watermark.
            assert!(
                t.watermark <= self.server.uid_next,
                "watermark {} above UIDNEXT {}",
                t.watermark,
                self.server.uid_next
            );
            // (d) memory: only mail handed out is remembered, and only at
            // or above the watermark. The server hands out only UIDs below
            // UIDNEXT, so this bounds the set by UIDNEXT minus the
            // watermark (a separate size assertion could not fail).
            assert!(t.delivered_above.iter().all(|u| *u >= t.watermark));
            assert!(t.delivered_above.iter().all(|u| self.live.contains_key(u)));
        }

        fn hand(&mut self, f: Fetch) -> Option<u32> {
            let a = self.t.on_fetch(f)?;
            assert!(!a.old, "no look-back in this model");
            assert_eq!(a.raw, format!("mail{}", a.uid).into_bytes());
            // (b) live mail only at or above the first watermark.
            assert!(
                a.uid >= self.first_watermark,
                "UID {} below the first watermark {}",
                a.uid,
                self.first_watermark
            );
            let n = self.live.entry(a.uid).or_default();
            *n += 1;
            // (a) never twice.
            assert_eq!(*n, 1, "UID {} handed out twice", a.uid);
            Some(a.uid)
        }

        /// One `next_step` and the server's answer. Returns whether the
        /// tracker had nothing to do and nothing was pending.
        fn step(&mut self, f: &Faults) -> bool {
            self.steps += 1;
            let step = self.t.next_step();
            match step {
                Step::Wait => {
                    // IDLE: whatever is pending is pushed now.
                    let pushed = self.server.notifications(true);
                    let quiet = pushed.is_empty();
                    for d in &pushed {
                        self.t.observe(d);
                    }
                    if f.cut.is_some() {
                        self.reconnect(false);
                    }
                    self.drain();
                    self.check();
                    quiet && f.cut.is_none()
                }
                Step::Fetch(req) => {
                    self.fetch(&req, f);
                    false
                }
                Step::Search(req) => {
                    self.search(&req, f);
                    false
                }
            }
        }

        fn fetch(&mut self, req: &FetchRequest, f: &Faults) {
            let (asked, expunge_issued) = if req.uid {
                let uids = self.server.uid_set(&req.set);
                let gone = uids.iter().any(|u| !self.server.present(*u));
                (uids, gone)
            } else {
                let (a, b) = req.set.split_once(':').expect("a:b");
                let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
                assert!(
                    1 <= a && a <= b && b <= self.server.view.len(),
                    "FETCH {a}:{b} outside the {} messages announced",
                    self.server.view.len()
                );
                let uids = self.server.view[a - 1..b].to_vec();
                let gone = uids.iter().any(|u| !self.server.present(*u));
                (uids, gone)
            };
            let answered: Vec<u32> = asked
                .iter()
                .copied()
                .filter(|u| self.server.present(*u))
                .collect();
            let mut evs: Vec<Ev> = answered.iter().map(|u| Ev::Mail(*u, Part::Whole)).collect();
            let n = evs.len();
            if n > 0 {
                if let Some(i) = f.nil {
                    let i = usize::from(i) % n;
                    if let Ev::Mail(u, _) = evs[i] {
                        evs[i] = Ev::Mail(u, Part::Nil);
                    }
                }
                if let Some(i) = f.split {
                    let i = usize::from(i) % n;
                    if let Ev::Mail(u, Part::Whole) = evs[i] {
                        evs[i] = Ev::Mail(u, Part::UidOnly);
                        evs.push(Ev::Mail(u, Part::BodyOnly));
                    }
                }
                let len = evs.len();
                evs.rotate_left(usize::from(f.rotate) % len);
                if f.reverse {
                    evs.reverse();
                }
                if let Some(i) = f.dup {
                    let e = evs[usize::from(i) % len].clone();
                    evs.push(e);
                }
                if let Some(i) = f.drop {
                    let len = evs.len();
                    evs[usize::from(i) % len] = Ev::Malformed;
                }
            }
            let at = usize::from(f.notify_at) % (evs.len() + 1);
            evs.insert(at, Ev::Notify);
            let got = self.play(&evs, f, req.uid);
            if f.any_loss() {
                // Charged to every UID asked, even one expunged meanwhile:
                // the tracker cannot tell a cut or NO from a poisonous
                // message, only an answer of `NO [EXPUNGEISSUED]`.
                for u in asked.iter().filter(|u| !got.contains(u)) {
                    *self.faults.entry(*u).or_default() += 1;
                }
            }
            if f.cut.is_some() {
                return;
            }
            let ended = if f.no {
                Ended::Failed
            } else if expunge_issued {
                Ended::ExpungeIssued
            } else {
                Ended::Ok
            };
            let verdict = self.t.completed(ended);
            assert_eq!(verdict == Verdict::Reconnect, ended == Ended::Failed);
            self.drain();
            self.check();
            if verdict == Verdict::Reconnect {
                self.reconnect(false);
            }
        }

        /// Sends `evs` (cut short by `f.cut`); returns the UIDs handed out.
        fn play(&mut self, evs: &[Ev], f: &Faults, uid_command: bool) -> BTreeSet<u32> {
            let cut = f.cut.map(|c| usize::from(c) % (evs.len() + 1));
            let mut got = BTreeSet::new();
            for (i, ev) in evs.iter().enumerate() {
                if cut == Some(i) {
                    break;
                }
                match *ev {
                    Ev::Malformed => self.t.response_lost(),
                    Ev::Notify => {
                        if f.arrive {
                            self.server.append();
                        }
                        // No EXPUNGE during a FETCH by sequence number
                        // (RFC 3501 7.4.1).
                        for d in self.server.notifications(uid_command) {
                            self.t.observe(&d);
                        }
                    }
                    Ev::Mail(uid, part) => {
                        let seq = self.server.seq(uid);
                        let whole = body(Some(format!("mail{uid}").as_bytes()));
                        let items = match part {
                            Part::Whole => vec![FetchItem::Uid(uid), whole],
                            Part::Nil => vec![FetchItem::Uid(uid), body(None)],
                            Part::UidOnly => vec![FetchItem::Uid(uid)],
                            Part::BodyOnly => vec![whole],
                        };
                        if let Some(u) = self.hand(Fetch { seq, items }) {
                            got.insert(u);
                        }
                    }
                }
                self.check();
            }
            if cut.is_some() {
                self.reconnect(false);
            }
            got
        }

        fn search(&mut self, req: &SearchRequest, f: &Faults) {
            let set = req
                .criteria
                .strip_prefix("UID ")
                .expect("UID SEARCH UID ...");
            assert!(!set.contains(' '), "no look-back in this model: {set}");
            let found: Vec<u32> = self
                .server
                .uid_set(set)
                .into_iter()
                .filter(|u| self.server.present(*u))
                .collect();
            let at = usize::from(f.notify_at) % 2;
            if at == 0 {
                for d in self.server.notifications(true) {
                    self.t.observe(&d);
                }
            }
            if f.cut.is_some() {
                self.reconnect(false);
                return;
            }
            if f.no {
                // A refused careful search is paced by a reconnect.
                assert_eq!(self.t.completed(Ended::Failed), Verdict::Reconnect);
                self.reconnect(false);
            } else {
                self.t.on_search(&found);
                if at == 1 {
                    for d in self.server.notifications(true) {
                        self.t.observe(&d);
                    }
                }
                assert_eq!(self.t.completed(Ended::Ok), Verdict::Continue);
            }
            self.drain();
            self.check();
        }
    }

    /// Runs `ops`, then lets the tracker settle with no faults and no new
    /// mail, and checks properties (a)–(e).
    pub(super) fn run(old: u8, gap: u8, poison: u32, ops: &[Op]) {
        let old = u32::from(old);
        let uid_next = old + 1 + u32::from(gap);
        let msgs: Vec<u32> = (1..=old).collect();
        let mut r = Run {
            server: Server {
                view: msgs.clone(),
                view_top: uid_next - 1,
                msgs,
                uid_next,
            },
            t: MailboxTracker::new(poison, 10).with_silent_span(SILENT_SPAN),
            first_watermark: uid_next,
            live: BTreeMap::new(),
            skipped: BTreeSet::new(),
            faults: BTreeMap::new(),
            steps: 0,
            now: Instant::now(),
        };
        r.t.selected(old);
        assert!(!r.t.position_known(VALIDITY, UidNext::Exact(uid_next)));
        for op in ops {
            match op {
                Op::Append(n) => (0..*n).for_each(|_| r.server.append()),
                Op::Expunge(i) => {
                    if !r.server.msgs.is_empty() {
                        let i = usize::from(*i) % r.server.msgs.len();
                        r.server.msgs.remove(i);
                    }
                }
                Op::Step(f) => {
                    r.step(f);
                }
                Op::Disconnect(at_least) => r.reconnect(*at_least),
            }
        }
        // Quiescence: (e) within a bound on the steps.
        let appended = r.server.uid_next - uid_next;
        r.settle(20 + 4 * u64::from(appended) * u64::from(poison + 1));
        // (c) every live message still present arrived exactly once, or
        // was skipped; every skipped message (present or expunged since)
        // was never handed out and had poison_attempts faulty attempts.
        for &uid in r.server.msgs.iter().filter(|u| **u >= uid_next) {
            if !r.skipped.contains(&uid) {
                let handed = r.live.get(&uid).copied().unwrap_or(0);
                assert_eq!(handed, 1, "UID {uid} never handed out");
            }
        }
        for &uid in &r.skipped {
            assert!(
                !r.live.contains_key(&uid),
                "UID {uid} handed out and skipped"
            );
            let faults = r.faults.get(&uid).copied().unwrap_or(0);
            assert!(
                faults >= poison,
                "UID {uid} skipped after {faults} faulty attempts (poison_attempts {poison})"
            );
        }
        // (d) nothing remembered once everything is resolved.
        assert!(
            r.t.delivered_above.is_empty(),
            "delivered_above {:?} at rest (watermark {})",
            r.t.delivered_above,
            r.t.watermark
        );
    }

    /// See the table tests' `settle`.
    pub(super) fn settle(t: MailboxTracker, msgs: &[u32]) -> Vec<u32> {
        let mut r = Run::adopt(t, msgs);
        let before: BTreeSet<u32> = r.live.keys().copied().collect();
        r.settle(50);
        r.live.into_keys().filter(|u| !before.contains(u)).collect()
    }

    /// [`settle`], keeping the tracker: for the folder-set property test.
    pub(super) fn settle_in_place(t: &mut MailboxTracker, msgs: &[u32]) -> Vec<u32> {
        let owned = std::mem::replace(t, MailboxTracker::new(1, 0));
        let mut r = Run::adopt(owned, msgs);
        let before: BTreeSet<u32> = r.live.keys().copied().collect();
        // Careful mode after a cut takes a search and a fetch per message.
        r.settle(20 + 4 * msgs.len() as u64);
        let out = r
            .live
            .keys()
            .filter(|u| !before.contains(u))
            .copied()
            .collect();
        *t = r.t;
        out
    }

    proptest! {
        // About 3 s in debug; the shrunk failures are recorded as plain
        // tests above, so nothing is written into the source tree.
        #![proptest_config(ProptestConfig {
            cases: 4096,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn exactly_once_under_faults(
            old in 0u8..4,
            gap in 0u8..3,
            poison in 1u32..=3,
            ops in proptest::collection::vec(op(), 0..60),
        ) {
            run(old, gap, poison, &ops);
        }
    }
}

/// Found by the property test: a response that did not parse inside a
/// `UID FETCH w:*` answered `NO [EXPUNGEISSUED]` (another message was
/// expunged meanwhile) must still make the fetch incomplete.
#[test]
fn a_dropped_response_in_a_fetch_answered_expungeissued_is_fetched_again() {
    use model::*;
    let drop_first = Faults {
        drop: Some(0),
        ..Faults::none()
    };
    run(
        0,
        0,
        1,
        &[
            Op::Append(2),
            Op::Disconnect(false),
            Op::Expunge(0),
            Op::Append(1),
            Op::Step(drop_first),
            Op::Step(Faults::none()),
        ],
    );
}

/// A careful `UID SEARCH` the server refuses every time must not be asked
/// again at once (no backoff would pace it): the tracker asks for a
/// reconnect, and searches again on the next connection.
#[test]
fn a_refused_careful_search_reconnects_instead_of_looping() {
    let mut t = tracker();
    connect(&mut t, 5, UidNext::Exact(10));
    t.observe(&Data::Exists(6));
    expect_fetch(t.next_step(), false, "6:6");
    assert_eq!(t.completed(Ended::Failed), Verdict::Reconnect);
    t.connection_lost(Loss::Worded);
    for _ in 0..3 {
        connect(&mut t, 6, UidNext::Exact(11));
        expect_search(t.next_step(), "UID 10:*");
        assert_eq!(t.completed(Ended::Failed), Verdict::Reconnect);
        t.connection_lost(Loss::Worded);
    }
    assert_eq!(
        t.snapshot().skipped,
        0,
        "nothing is skipped for a refused search"
    );
}

// ─────────────────────────── several folders ───────────────────────────

fn folders() -> Folders<&'static str> {
    Folders::new("INBOX", vec!["Junk"], tracker)
}

/// A further folder's first STATUS fixes its position at UIDNEXT without
/// a visit (no backlog); only a STATUS that moved asks for one; a visit
/// cut short (its tracker left a gap to fetch) is asked for again even if
/// STATUS did not move, and the rest is fetched once.
#[test]
fn a_further_folder_is_visited_only_when_its_status_moved() {
    let mut f = folders();
    assert!(
        !f.on_status(1, Some(VALIDITY), Some(10)),
        "first STATUS: no visit"
    );
    assert_eq!(f.positions()[1].watermark, Some(10));
    assert_eq!(f.positions()[0].watermark, None, "INBOX has its own");
    assert!(!f.on_status(1, Some(VALIDITY), Some(10)));
    // Mail arrived: visit; the tracker fetches the gap by UID.
    assert!(f.on_status(1, Some(VALIDITY), Some(12)));
    let t = &mut f.get_mut(1).tracker;
    assert!(!connect(t, 2, UidNext::Exact(12)));
    expect_fetch(t.next_step(), true, "10:*");
    assert_eq!(give(t, mail(1, 10)), Some(10));
    // Cut before UID 11 arrived.
    t.connection_lost(Loss::Worded);
    assert!(f.on_status(1, Some(VALIDITY), Some(12)));
    let t = &mut f.get_mut(1).tracker;
    assert!(!connect(t, 2, UidNext::Exact(12)));
    assert_eq!(settle(std::mem::replace(t, tracker()), &[10, 11]), vec![11]);
}

/// A completed visit records the STATUS it answered; the same STATUS then
/// asks for nothing. A new UIDVALIDITY asks for a visit; so does a
/// look-back wanted there, and an answer without the numbers.
#[test]
fn a_visit_is_remembered_and_validity_or_look_back_ask_again() {
    let mut f = folders();
    assert!(!f.on_status(1, Some(5), Some(10)));
    assert!(f.on_status(1, Some(5), Some(11)));
    f.visited(1, Some(5), Some(11));
    assert!(!f.on_status(1, Some(5), Some(11)));
    assert!(f.on_status(1, Some(6), Some(11)), "new UIDVALIDITY");
    f.visited(1, Some(6), Some(11));
    assert!(!f.on_status(1, Some(6), Some(11)));
    assert!(
        f.on_status(1, None, Some(11)),
        "no UIDVALIDITY: EXAMINE tells"
    );
    f.want_look_back(since());
    assert!(f.on_status(1, Some(6), Some(11)), "look-back wanted there");
}

/// Missing is counted and reported per folder, and cleared by the next
/// STATUS answered; notices say which folder they are about; the
/// snapshot shows the main folder's position with every folder's counters.
#[test]
fn missing_folders_notices_and_counters_are_per_folder() {
    let mut f = folders();
    f.missing(1);
    f.missing(1);
    let p = f.positions();
    assert!(p[1].missing && p[1].failures == 2 && !p[0].missing);
    assert!(!f.on_status(1, Some(5), Some(10)));
    assert!(!f.positions()[1].missing);
    assert_eq!(f.positions()[1].failures, 2);
    connect(&mut f.get_mut(0).tracker, 0, UidNext::Exact(3));
    // Junk's UIDVALIDITY changes at its visit; INBOX's does not.
    assert!(f.on_status(1, Some(6), Some(10)));
    let t = &mut f.get_mut(1).tracker;
    t.selected(0);
    assert!(t.position_known(6, UidNext::Exact(10)));
    assert_eq!(
        f.poll_notice(),
        Some(("Junk", Notice::ValidityChanged { old: 5, new: 6 }))
    );
    assert_eq!(f.poll_notice(), None);
    let s = f.snapshot();
    assert_eq!((s.uid_validity, s.watermark), (Some(VALIDITY), Some(3)));
    assert_eq!(s.validity_changes, 1);
}

/// Further folders whose names on this connection name one mailbox (INBOX
/// in any case, or the same name) are marked as repeats of the first:
/// found ones only, each against the main folder and the earlier ones,
/// worked out again when a name is lost; a new connection clears the
/// marks, and positions show them.
#[test]
fn further_folders_naming_one_mailbox_are_marked_as_repeats() {
    let mut f = Folders::new("Work", vec!["\\Junk", "Spam", "inbox", "Other"], tracker);
    f.named(0, "Work".into(), None);
    f.named(2, "Spam".into(), None);
    f.named(3, "INBOX".into(), None);
    assert_eq!(f.mark_repeats(), [], "\\Junk not found yet");
    f.named(1, "Spam".into(), Some(b"Spam".to_vec()));
    f.named(4, "Work".into(), None);
    assert_eq!(f.mark_repeats(), [(2, 1), (4, 0)]);
    assert_eq!(f.mark_repeats(), [], "marked once");
    let p = f.positions();
    assert_eq!(p[2].same_as, Some("\\Junk"));
    assert_eq!(p[4].same_as, Some("Work"));
    assert_eq!((p[1].same_as, p[3].same_as), (None, None));
    assert!(f.positions_are(&p));
    // \\Junk not found any more: Spam is watched as itself again.
    f.get_mut(1).name = None;
    assert_eq!(f.mark_repeats(), []);
    assert_eq!(f.positions()[2].same_as, None);
    f.connecting();
    assert!(!f.positions_are(&p));
    assert!(f.positions().iter().all(|p| p.same_as.is_none()));
    // INBOX is case-insensitive.
    let mut f = Folders::new("INBOX", vec!["inbox-alias"], tracker);
    f.named(0, "INBOX".into(), None);
    f.named(1, "inbox".into(), None);
    assert_eq!(f.mark_repeats(), [(1, 0)]);
}

/// Property: a further folder, checked by STATUS between appends, its
/// visits cut anywhere (after any number of its FETCH responses, the
/// connection lost), hands out every mail exactly once. Each check is a
/// new connection's STATUS; a visit is EXAMINE (`selected` +
/// `position_known`), then the tracker's steps, then `visited` — unless
/// cut. Mail may also arrive between the STATUS and the visit's EXAMINE
/// (EXAMINE then sees more than STATUS said). Silent losses within the
/// silent span never skip a message.
mod further_folder_property {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// Gives the tracker's FETCH the first `n` of the messages it asks for
    /// (by UID set `w:*`, `a,b,...` or `a`), then cuts the connection.
    fn cut_visit(t: &mut MailboxTracker, msgs: &[u32], n: usize, handed: &mut BTreeMap<u32, u32>) {
        match t.next_step() {
            Step::Fetch(req) => {
                let asked: Vec<u32> = match req.set.strip_suffix(":*") {
                    Some(w) => {
                        let w: u32 = w.parse().unwrap();
                        msgs.iter().copied().filter(|u| *u >= w).collect()
                    }
                    None => req.set.split(',').map(|u| u.parse().unwrap()).collect(),
                };
                for uid in asked.into_iter().take(n) {
                    let seq =
                        u32::try_from(msgs.iter().position(|u| *u == uid).unwrap() + 1).unwrap();
                    if let Some(a) = t.on_fetch(mail(seq, uid)) {
                        *handed.entry(a.uid).or_default() += 1;
                    }
                }
            }
            Step::Search(_) | Step::Wait => {}
        }
        t.connection_lost(Loss::Silent { at: Instant::now() });
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 512,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn every_mail_of_a_further_folder_arrives_once(
            ops in proptest::collection::vec((0u8..4, 0u8..4), 0..40),
        ) {
            let mut f = Folders::new("INBOX", vec!["Junk"], || {
                MailboxTracker::new(3, 10).with_silent_span(Duration::from_secs(3600))
            });
            let mut msgs: Vec<u32> = Vec::new();
            let mut handed: BTreeMap<u32, u32> = BTreeMap::new();
            let append = |msgs: &mut Vec<u32>, n: u8| {
                for _ in 0..=n {
                    let next = msgs.last().map_or(1, |u| u + 1);
                    msgs.push(next);
                }
            };
            // `late`: mail appended after the STATUS, before the EXAMINE.
            let check = |f: &mut Folders<&str>, msgs: &mut Vec<u32>, cut: Option<usize>,
                             late: Option<u8>, handed: &mut BTreeMap<u32, u32>| {
                let uid_next = msgs.last().map_or(1, |u| u + 1);
                let visit = f.on_status(1, Some(VALIDITY), Some(uid_next));
                if let Some(n) = late {
                    append(msgs, n);
                }
                if !visit {
                    return;
                }
                let t = &mut f.get_mut(1).tracker;
                let exists = u32::try_from(msgs.len()).unwrap();
                let examined_next = msgs.last().map_or(1, |u| u + 1);
                t.selected(exists);
                t.position_known(VALIDITY, UidNext::Exact(examined_next));
                match cut {
                    Some(n) => cut_visit(t, msgs, n, handed),
                    None => {
                        for u in model::settle_in_place(t, msgs) {
                            *handed.entry(u).or_default() += 1;
                        }
                        f.visited(1, Some(VALIDITY), Some(uid_next));
                    }
                }
            };
            // The session starts: Junk's first STATUS fixes its position.
            check(&mut f, &mut msgs, None, None, &mut handed);
            for (kind, n) in ops {
                match kind {
                    0 => append(&mut msgs, n),
                    1 => check(&mut f, &mut msgs, None, None, &mut handed),
                    2 => check(&mut f, &mut msgs, Some(usize::from(n)), None, &mut handed),
                    _ => check(&mut f, &mut msgs, None, Some(n), &mut handed),
                }
                prop_assert!(handed.values().all(|c| *c == 1), "{handed:?}");
            }
            check(&mut f, &mut msgs, None, None, &mut handed);
            check(&mut f, &mut msgs, None, None, &mut handed);
            prop_assert_eq!(f.get(1).tracker.snapshot().skipped, 0);
            for u in &msgs {
                prop_assert_eq!(handed.get(u).copied(), Some(1), "UID {} of {:?}", u, msgs);
            }
        }
    }
}
