//! The NATS bridge's proofs (issue 12), with real processes: a private
//! `nats-server -js`, the suite's Dovecot, `emap-bridge` processes
//! (`CARGO_BIN_EXE_emap-bridge`), waiters that are `emap watch --nats
//! --json` processes (crates/emap-cli's binary, built once by
//! tests/support/workspace.rs), and the writer in the test.
//!
//! Every mail carries a unique Message-ID; "exactly once" is checked by
//! Message-ID at the waiters, after a final sentinel mail per address
//! (a bridge publishes in UID order, so a duplicate or a late mail would
//! come before it). Waits are for lines the processes print (`acquired`,
//! `standby`, `published`, `stored`, `lost`) or mail, bounded by
//! `EVENTUALLY`; no assertion depends on timing. The take-over time is
//! printed, not asserted.

#[path = "../../../tests/support/mod.rs"]
mod support;

mod nats;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use emap::{Auth, Credential, Filter, Mail, Position, TlsMode};
use emap_nats::bridge::{Event, Reporter};
use emap_nats::lease::{Lease, Positions, Renewal, Store};
use emap_nats::subject;
use emap_nats::{Bridge, BridgeConfig, Inbox, StreamConfig, Waiter};
use nats::{Child, NatsServer, bridge, holder, id_of, mail_ids, pct, publish_malformed, waiter};
use support::{EVENTUALLY, blocking, dovecot, mail, until_some};

const FROM: &str = "sender@emap.test";

/// Delivers one mail to `rcpt` with `subject`; returns its Message-ID
/// (without brackets).
async fn deliver(rcpt: &str, subject: &str) -> String {
    let (rcpt, subject) = (rcpt.to_owned(), subject.to_owned());
    blocking(move || {
        let raw = mail(FROM, &rcpt, &subject, "hello");
        dovecot().deliver(&rcpt, &raw);
        id_of(&raw)
    })
    .await
}

async fn waiter_client(nats: &NatsServer) -> Waiter {
    Waiter::connect(&nats.url(), &StreamConfig::default())
        .await
        .expect("waiter connects")
}

async fn next(s: &mut emap_nats::MailStream) -> Arc<Mail> {
    tokio::time::timeout(EVENTUALLY, s.next())
        .await
        .expect("no mail in time")
        .expect("stream ended")
        .expect("stream failed")
}

async fn connections(user: &str) -> usize {
    let user = user.to_owned();
    blocking(move || dovecot().connections(&user)).await
}

/// Proof 1: two bridge processes for one inbox make exactly one IMAP
/// connection, counted on Dovecot, while the second keeps being refused
/// the lease; the holder's mail reaches a waiter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bridges_one_inbox_make_one_imap_connection() {
    let nats = NatsServer::start();
    let catch = dovecot().catchall("natsone");
    let (user, addr) = (&catch.user, catch.address("task"));
    let a = bridge("a", &nats, "one", user);
    let b = bridge("b", &nats, "one", user);
    let (h, standby) = holder(&a, &b).await;
    // The holder's session selected the mailbox (its first position).
    h.until("stored", 1).await;
    // The standby was refused three more times since.
    let seen = standby.count("standby");
    standby.until("standby", seen + 3).await;
    assert_eq!(connections(&user.name).await, 1);
    assert_eq!(standby.count("acquired"), 0);

    let w = waiter_client(&nats).await;
    let mut s = w
        .watch("one", Filter::new().to(addr.clone()))
        .await
        .unwrap();
    let id = deliver(&addr, "hello").await;
    let got = next(&mut s).await;
    assert_eq!(got.message_id(), Some(id.as_str()));
    assert_eq!(connections(&user.name).await, 1);
}

/// Proof 5: a waiter that arrives after the mail, with `max_age`, gets it
/// from the stream; one without `max_age` starts at new mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_waiter_with_max_age_gets_earlier_mail_from_the_stream() {
    let nats = NatsServer::start();
    let catch = dovecot().catchall("natslate");
    let addr = catch.address("task");
    let a = bridge("a", &nats, "late", &catch.user);
    a.until("stored", 1).await;
    let early = deliver(&addr, "early").await;
    a.until("published", 1).await;

    let w = waiter_client(&nats).await;
    let to = Filter::new().to(addr.clone());
    let got = w
        .wait_for(
            "late",
            to.clone().max_age(Duration::from_secs(600)),
            EVENTUALLY,
        )
        .await
        .expect("the earlier mail from the stream");
    assert_eq!(got.message_id(), Some(early.as_str()));
    assert_eq!(got.subject(), Some("early"));

    let mut live = w.watch("late", to).await.unwrap();
    let later = deliver(&addr, "later").await;
    assert_eq!(next(&mut live).await.message_id(), Some(later.as_str()));
}

/// Proof 6: messages on an emap subject that no bridge published (no
/// headers, unreadable headers, no body) are skipped and counted; the
/// waiter goes on to the next real mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_on_an_emap_subject_are_skipped_and_counted() {
    let nats = NatsServer::start();
    let w = waiter_client(&nats).await;
    let to = "someone@emap.test";
    let mut s = w.watch("bad", Filter::new().to(to)).await.unwrap();
    let subj = subject::to("emap", "bad", to);
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    publish_malformed(&js, &subj).await;
    let raw = mail(FROM, to, "valid", "hello");
    let good = Mail::parse(5, 9, "INBOX", None, raw.clone(), false);
    let mut h = subject::headers("bad", &good, &subj, false);
    h.insert("Nats-Msg-Id", "an empty one");
    js.publish_with_headers(subj.clone(), h, Vec::new().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let h = subject::headers("bad", &good, &subj, false);
    js.publish_with_headers(subj.clone(), h, raw.into())
        .await
        .unwrap()
        .await
        .unwrap();

    let got = next(&mut s).await;
    assert_eq!(got.subject(), Some("valid"));
    assert_eq!((got.uid(), got.uid_validity()), (5, 9));
    assert_eq!(w.malformed(), 3);
}

/// The lease and positions buckets, made by [`Bridge::connect`] as a bridge
/// makes them, opened as plain key-value stores.
async fn buckets(
    nats: &NatsServer,
) -> (
    async_nats::jetstream::kv::Store,
    async_nats::jetstream::kv::Store,
) {
    let config = BridgeConfig::default();
    let (leases, positions) = (
        config.stream.lease_bucket.clone(),
        config.stream.position_bucket.clone(),
    );
    Bridge::connect(&nats.url(), config, Arc::new(|_: &_| {}))
        .await
        .expect("bridge connects");
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    (
        js.get_key_value(leases).await.unwrap(),
        js.get_key_value(positions).await.unwrap(),
    )
}

fn position(next_uid: u32) -> Position {
    Position {
        folder: "INBOX".into(),
        uid_validity: 7,
        next_uid,
    }
}

/// The fencing itself, without a clock check in front of it (no IMAP, no
/// Dovecot): a holder whose position was claimed by a later lease cannot
/// store, nor claim again with its old token; a holder whose lease key
/// was taken by another cannot renew. Every holder write in the bridge is
/// preceded by a check of its own deadline, so only this test fails when
/// the expected-revision updates are dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_former_holder_is_fenced_by_the_store_not_by_its_clock() {
    let nats = NatsServer::start();
    let (leases, positions) = buckets(&nats).await;

    let mut old = Positions::claim(&positions, "k", 5).await.unwrap();
    old.store(position(10)).await.unwrap();
    let mut new = Positions::claim(&positions, "k", 9).await.unwrap();
    assert_eq!(new.positions(), [position(10)]);
    assert_eq!(old.store(position(11)).await, Err(Store::Fenced));
    assert_eq!(
        Positions::claim(&positions, "k", 5).await.err(),
        Some(Store::Fenced)
    );
    new.store(position(12)).await.unwrap();
    let next = Positions::claim(&positions, "k", 10).await.unwrap();
    assert_eq!(
        next.positions(),
        [position(12)],
        "the fenced store moved it"
    );

    let (ttl, margin) = (Duration::from_secs(10), Duration::from_secs(2));
    let mut a = Lease::acquire(&leases, "lease.k", "a", ttl, margin)
        .await
        .unwrap()
        .expect("a free lease");
    a.renew().await.unwrap();
    assert!(
        Lease::acquire(&leases, "lease.k", "b", ttl, margin)
            .await
            .unwrap()
            .is_none(),
        "a held lease taken"
    );
    leases.delete("lease.k").await.unwrap();
    let mut b = Lease::acquire(&leases, "lease.k", "b", ttl, margin)
        .await
        .unwrap()
        .expect("a deleted lease is free");
    assert!(a.is_valid(), "a's own clock still says valid");
    assert_eq!(a.renew().await, Err(Renewal::Lost));
    b.renew().await.unwrap();
}

/// An inbox whose IMAP server nobody listens for (for tests that never
/// reach IMAP).
fn unreachable_inbox(name: &str) -> Inbox {
    Inbox {
        name: name.into(),
        credential: Credential::new(
            "127.0.0.1",
            "nobody",
            Auth::password(String::from("unused")),
        )
        .port(1)
        .tls(TlsMode::None),
    }
}

/// A write the server applied but whose reply was lost is tried again
/// with the same expected revision, and refused: that is not fencing. A
/// position store and a lease renewal read the entry back and carry on
/// when it is exactly their own write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_applied_whose_reply_was_lost_is_not_taken_for_fencing() {
    let nats = NatsServer::start();
    let (leases, positions) = buckets(&nats).await;

    // The exact value a holder with token 5 stores for position(10).
    let mut twin = Positions::claim(&positions, "twin", 5).await.unwrap();
    twin.store(position(10)).await.unwrap();
    let value = positions.get("twin").await.unwrap().unwrap();
    let mut p = Positions::claim(&positions, "k", 5).await.unwrap();
    let claimed = positions.entry("k").await.unwrap().unwrap().revision;
    // Its store of position(10) reached the server; the reply did not.
    positions.update("k", value, claimed).await.unwrap();
    assert_eq!(p.store(position(10)).await, Ok(()));
    assert_eq!(p.store(position(11)).await, Ok(()));
    let next = Positions::claim(&positions, "k", 6).await.unwrap();
    assert_eq!(next.positions(), [position(11)]);

    let (ttl, margin) = (Duration::from_secs(10), Duration::from_secs(2));
    let mut a = Lease::acquire(&leases, "lease.k", "a", ttl, margin)
        .await
        .unwrap()
        .expect("a free lease");
    let r = a.revision();
    // Its renewal (the value names the holder and the revision it
    // expected) reached the server; the reply did not.
    let applied = leases
        .update("lease.k", format!("a {r}").into(), r)
        .await
        .unwrap();
    assert_eq!(a.renew().await, Ok(()));
    assert_eq!(a.revision(), applied);
    assert_eq!(a.renew().await, Ok(()));
    assert!(a.revision() > applied);
}

/// A claim of the position that fails for want of NATS (here: the bucket
/// refuses every write) is reported as what it is, not as fencing, and
/// the lease is given back at once rather than left unserved until its
/// TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_claim_gives_the_lease_back_and_says_why() {
    let nats = NatsServer::start();
    let config = BridgeConfig {
        holder: "a".into(),
        ..BridgeConfig::default()
    };
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let bucket = &config.stream.position_bucket;
    js.create_stream(stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_message_size: 1,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let lease_bucket = config.stream.lease_bucket.clone();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = events.clone();
    // Stops the bridge at its first loss, so it does not try again.
    let report: Reporter = Arc::new(move |e: &Event| {
        sink.lock().unwrap().push(e.clone());
        if matches!(e, Event::Lost { .. }) {
            let _ = stop_tx.send(true);
        }
    });
    let bridge = Bridge::connect(&nats.url(), config, report).await.unwrap();
    tokio::time::timeout(
        EVENTUALLY,
        bridge.run(vec![unreachable_inbox("claim")], stop),
    )
    .await
    .expect("the bridge stops at its first loss")
    .unwrap();
    let events = events.lock().unwrap().clone();
    match &events[..] {
        [Event::Acquired { .. }, Event::Lost { why, .. }] => {
            assert!(!why.contains("fenced"), "{why}");
            assert!(why.contains("claim"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    let lease = js
        .get_key_value(lease_bucket)
        .await
        .unwrap()
        .entry("lease.claim")
        .await
        .unwrap();
    assert!(
        lease
            .as_ref()
            .is_none_or(|e| e.operation != kv::Operation::Put),
        "the lease was kept: {lease:?}"
    );
}

/// A bridge whose stop sender is dropped (nobody can stop it any more)
/// stops, instead of acquiring and giving back its lease in a tight loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_whose_stop_sender_is_dropped_stops() {
    let nats = NatsServer::start();
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = events.clone();
    let report: Reporter = Arc::new(move |e: &Event| sink.lock().unwrap().push(e.clone()));
    let bridge = Bridge::connect(&nats.url(), BridgeConfig::default(), report)
        .await
        .unwrap();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    drop(stop_tx);
    tokio::time::timeout(
        EVENTUALLY,
        bridge.run(vec![unreachable_inbox("dropped")], stop),
    )
    .await
    .expect("the bridge stops")
    .unwrap();
    assert_eq!(*events.lock().unwrap(), []);
}

/// Awaits until waiter `w` printed every Message-ID of `expected`, then
/// checks that it printed each exactly once and nothing else.
async fn exactly_once(w: &Child, expected: &[String]) {
    until_some(
        &format!("{} to receive {} mails", w.name, expected.len()),
        async || {
            let got = mail_ids(w);
            expected.iter().all(|id| got.contains_key(id)).then_some(())
        },
    )
    .await;
    let got = mail_ids(w);
    for id in expected {
        assert_eq!(got.get(id), Some(&1), "{}: {id} not exactly once", w.name);
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "{}: mail it was not sent",
        w.name
    );
}

/// Proof 2: the holder is killed with SIGKILL while a writer delivers
/// continuously to 50 addresses watched by waiters in two other
/// processes — one for every mail of the inbox (its catch-all subject),
/// one for the first address (its own subject) — the standby takes over
/// and every mail reaches each of its waiters exactly once. Prints the
/// take-over time (from the kill to the standby's `acquired` line).
///
/// `EMAP_NATS_KILLS=20` repeats the kill 20 times (a fresh standby is
/// started after each) and prints the spread: the figure in
/// BENCHMARKS.md. Once by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_holder_loses_and_repeats_nothing() {
    let kills: usize = std::env::var("EMAP_NATS_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(1);
    let nats = NatsServer::start();
    let catch = dovecot().catchall("natskill");
    let addresses: Vec<String> = (0..50).map(|i| catch.address(&format!("w{i}"))).collect();
    let w1 = waiter("w1", &nats, "kill", None, &[]);
    let w2 = waiter("w2", &nats, "kill", Some(&addresses[0]), &[]);
    w1.until_stderr("watching ", 1).await;
    w2.until_stderr("watching ", 1).await;
    let a = bridge("b0", &nats, "kill", &catch.user);
    let b = bridge("b1", &nats, "kill", &catch.user);
    let first = holder(&a, &b).await.0.pid();
    let (mut h, mut s) = if first == a.pid() { (a, b) } else { (b, a) };
    h.until("stored", 1).await;

    const PER_ROUND: usize = 100;
    let mut sent = Vec::new();
    let mut took = Vec::new();
    for round in 0..kills {
        let to = addresses.clone();
        // The second half of the round is delivered after the kill, so
        // the new holder publishes mail of its own, not only the old
        // holder's backlog.
        let (second_half, gate) = std::sync::mpsc::channel::<()>();
        let writer = tokio::task::spawn_blocking(move || {
            (0..PER_ROUND)
                .map(|i| {
                    if i == PER_ROUND / 2 {
                        gate.recv().expect("the second half's go");
                    }
                    let rcpt = &to[i % to.len()];
                    let raw = mail(FROM, rcpt, &format!("r{round}-m{i}"), "hello");
                    dovecot().deliver(rcpt, &raw);
                    (rcpt.clone(), id_of(&raw))
                })
                .collect::<Vec<_>>()
        });
        // Kill in the middle of the writer's round.
        let published = h.count("published");
        h.until("published", published + 20).await;
        let acquired = s.count("acquired");
        h.signal("KILL");
        let killed = std::time::Instant::now();
        second_half.send(()).unwrap();
        let took_over = s.until("acquired", acquired + 1).await;
        took.push(took_over.saturating_duration_since(killed));
        println!("round {round}: take-over after kill -9: {:?}", took[round]);
        sent.extend(writer.await.unwrap());
        // The survivor holds; a fresh process stands by for the next kill.
        let fresh = bridge(&format!("b{}", round + 2), &nats, "kill", &catch.user);
        fresh.until("standby", 1).await;
        h = std::mem::replace(&mut s, fresh);
    }
    for rcpt in &addresses {
        let id = deliver(rcpt, "sentinel").await;
        sent.push((rcpt.clone(), id));
    }
    let first: Vec<String> = sent
        .iter()
        .filter(|(a, _)| *a == addresses[0])
        .map(|(_, id)| id.clone())
        .collect();
    let all: Vec<String> = sent.into_iter().map(|(_, id)| id).collect();
    exactly_once(&w1, &all).await;
    exactly_once(&w2, &first).await;
    took.sort();
    println!(
        "take-over over {kills} kill(s), lease TTL {}: min {:?}, median {:?}, max {:?}",
        nats::LEASE_TTL,
        took[0],
        took[took.len() / 2],
        took[took.len() - 1]
    );
}

/// Proof 3: the holder is stopped (SIGSTOP) past its lease TTL, the
/// standby takes over, then the old holder continues (SIGCONT): it
/// notices the lost lease and publishes nothing; every mail is still
/// received exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_holder_publishes_nothing_after_it_wakes_up() {
    let nats = NatsServer::start();
    let catch = dovecot().catchall("natsstop");
    let addr = catch.address("task");
    let w = waiter("w", &nats, "stop", Some(&addr), &[]);
    w.until_stderr("watching ", 1).await;
    let a = bridge("a", &nats, "stop", &catch.user);
    let b = bridge("b", &nats, "stop", &catch.user);
    let (h, standby) = holder(&a, &b).await;
    h.until("stored", 1).await;
    let mut sent = vec![deliver(&addr, "m1").await];
    h.until("published", 1).await;

    h.signal("STOP");
    let published_before = h.count("published");
    let stored_before = h.count("stored");
    standby.until("acquired", 1).await;
    for s in ["m2", "m3"] {
        sent.push(deliver(&addr, s).await);
    }
    standby.until("published", 2).await;
    // The old holder's IMAP session has the new mail announced too: on
    // waking up it must drop it, not publish it.
    h.signal("CONT");
    h.until("lost", 1).await;
    let lost = h
        .lines()
        .into_iter()
        .find(|l| l.starts_with("lost"))
        .unwrap();
    // Its own deadline passed (or, had a store been in flight, the store
    // was fenced): never an IMAP failure or a stop.
    assert!(
        lost.contains("why=\"lease lost\"") || lost.contains("why=\"fenced"),
        "{lost}"
    );
    sent.push(deliver(&addr, "m4").await);
    exactly_once(&w, &sent).await;
    assert_eq!(h.count("published"), published_before, "{:?}", h.lines());
    assert_eq!(h.count("stored"), stored_before, "{:?}", h.lines());
}

/// Proof 4: nats-server is stopped and started again in the middle of a
/// writer: mail arrives before, while the server is down (the holder
/// cannot publish it: it retries, loses its lease, takes it again after
/// the restart and resumes from the stored position) and after. Nothing
/// is lost (file storage), and the stream holds each mail once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_mid_writer_loses_nothing_and_stores_nothing_twice() {
    let nats = Arc::new(NatsServer::start());
    let catch = dovecot().catchall("natsrestart");
    let addr = catch.address("task");
    let a = bridge("a", &nats, "restart", &catch.user);
    a.until("stored", 1).await;

    const PHASE: usize = 20;
    let (go_tx, go) = std::sync::mpsc::channel::<()>();
    let (done, phase_done) = tokio::sync::mpsc::unbounded_channel::<()>();
    let rcpt = addr.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let mut ids = Vec::new();
        for phase in 0..3 {
            go.recv().expect("next phase");
            for i in 0..PHASE {
                let raw = mail(FROM, &rcpt, &format!("p{phase}-{i}"), "hello");
                dovecot().deliver(&rcpt, &raw);
                ids.push(id_of(&raw));
            }
            done.send(()).expect("phase done");
        }
        ids
    });
    let mut phase_done = phase_done;
    // Before: published while the server is up.
    go_tx.send(()).unwrap();
    phase_done.recv().await.unwrap();
    a.until("published", PHASE).await;
    // While the server is down, past the lease: the holder loses it,
    // then takes it again after the restart.
    let (lost, acquired) = (a.count("lost"), a.count("acquired"));
    let s = nats.clone();
    blocking(move || s.stop()).await;
    go_tx.send(()).unwrap();
    phase_done.recv().await.unwrap();
    a.until("lost", lost + 1).await;
    let s = nats.clone();
    blocking(move || s.start_again()).await;
    a.until("acquired", acquired + 1).await;
    // After.
    go_tx.send(()).unwrap();
    phase_done.recv().await.unwrap();
    let mut sent = writer.await.unwrap();
    sent.push(deliver(&addr, "sentinel").await);

    // A late waiter replays the stream from its start: each mail once.
    let w = waiter_client(&nats).await;
    let mut all = w
        .watch(
            "restart",
            Filter::new()
                .to(addr.clone())
                .max_age(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.last() != sent.last() {
        got.push(next(&mut all).await.message_id().unwrap().to_owned());
    }
    let mut sorted = got.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), got.len(), "a mail twice in the stream");
    let mut want = sent.clone();
    want.sort();
    assert_eq!(sorted, want);
    println!(
        "bridge events: {} lost, {} acquired; publishes dropped as duplicates: {}",
        a.count("lost"),
        a.count("acquired"),
        a.lines()
            .iter()
            .filter_map(|l| l.split("duplicates=").nth(1))
            .filter_map(|n| n.parse::<usize>().ok())
            .sum::<usize>()
    );
}

/// The latency the bus adds: for each mail, from the moment Dovecot
/// accepted it (LMTP answered) to the moment a `Waiter` has it, beside an
/// in-process emap subscription on the same inbox in the same run. Every
/// mail reaches both once. `EMAP_NATS_LATENCY_N` mails (default 3; the
/// BENCHMARKS.md figure uses 100), one at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_added_by_the_bus() {
    let n: usize = std::env::var("EMAP_NATS_LATENCY_N")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(3);
    let nats = NatsServer::start();
    let catch = dovecot().catchall("natslat");
    let addr = catch.address("task");
    let a = bridge("a", &nats, "lat", &catch.user);
    a.until("stored", 1).await;
    let w = waiter_client(&nats).await;
    let mut bus = w
        .watch("lat", Filter::new().to(addr.clone()))
        .await
        .unwrap();
    let local = support::emap::start(support::emap::dovecot_config());
    let mut sub = local
        .subscribe(
            support::emap::dovecot_cred(&catch.user),
            Filter::new().to(addr.clone()),
        )
        .await
        .unwrap();
    let (mut via_bus, mut in_process) = (Vec::new(), Vec::new());
    for i in 0..n {
        let id = deliver(&addr, &format!("l{i}")).await;
        let accepted = std::time::Instant::now();
        let (b, l) = tokio::join!(
            async {
                let m = next(&mut bus).await;
                (m.message_id().map(str::to_owned), accepted.elapsed())
            },
            async {
                let m = support::emap::next(&mut sub).await;
                (m.message_id().map(str::to_owned), accepted.elapsed())
            }
        );
        assert_eq!(b.0.as_deref(), Some(id.as_str()));
        assert_eq!(l.0.as_deref(), Some(id.as_str()));
        via_bus.push(b.1);
        in_process.push(l.1);
    }
    println!(
        "{n} mails, LMTP accepted -> mail: in-process p50 {:?} p99 {:?}; via NATS p50 {:?} p99 {:?}",
        pct(&mut in_process, 50),
        pct(&mut in_process, 99),
        pct(&mut via_bus, 50),
        pct(&mut via_bus, 99)
    );
    local.shutdown().await;
}
