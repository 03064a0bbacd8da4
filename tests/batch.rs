//! `Handle::subscribe_many` (issue 14, goal 3): many subscriptions on one
//! credential in one round trip, all or nothing, cancelled by dropping it.

mod support;

use std::time::Duration;

use emap::{Error, Filter};
use support::emap::{
    deliver, dovecot_config, dovecot_cred, dovecot_cred_with, fake_cred, next, scripted_config,
    start,
};
use support::fake::{FakeConn, FakeServer};
use support::{EVENTUALLY, dovecot, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_shares_one_connection_and_each_gets_its_own_mail() {
    let h = start(dovecot_config());
    let ca = dovecot().catchall("batch");
    let c = dovecot_cred(&ca.user);
    let filters = (0..300).map(|i| Filter::new().to(ca.address(&format!("t{i}"))));
    let mut subs = h.subscribe_many(c.clone(), filters).await.unwrap();
    assert_eq!(subs.len(), 300);
    assert_eq!(h.actors().subscribers, 300);
    // In the order given: subscription i waits for t<i>.
    deliver(&ca.address("t7"), "for seven").await;
    deliver(&ca.address("t250"), "for 250").await;
    assert_eq!(next(&mut subs[7]).await.subject(), Some("for seven"));
    assert_eq!(next(&mut subs[250]).await.subject(), Some("for 250"));
    let stats = h.stats().await.unwrap();
    assert_eq!(stats.len(), 1, "one session for the whole batch");
    assert_eq!(stats[0].subscribers, 300);
    assert_eq!(
        stats[0].queued, 2,
        "each mail reached exactly one subscriber"
    );
    // Each subscription is independent: dropping one leaves the others.
    subs.truncate(10);
    until("the dropped 290 to be removed", async || {
        h.actors().subscribers == 10
    })
    .await;
    // An empty batch is no error and makes nothing.
    assert!(h.subscribe_many(c, []).await.unwrap().is_empty());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_invalid_filter_fails_the_whole_batch() {
    let h = start(dovecot_config());
    let u = dovecot().user("batchbad");
    let filters = vec![
        Filter::new().to("a@x.test"),
        Filter::new().to("b\r\n@x.test"),
        Filter::new().to("c@x.test"),
    ];
    let err = h
        .subscribe_many(dovecot_cred(&u), filters)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert_eq!(h.actors().subscribers, 0);
    assert!(
        h.stats().await.unwrap().is_empty(),
        "no session was started"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_login_fails_the_whole_batch_and_leaves_nothing() {
    let h = start(dovecot_config());
    let u = dovecot().user("batchpw");
    let filters = (0..50).map(|i| Filter::new().to(format!("t{i}@x.test")));
    let err = h
        .subscribe_many(dovecot_cred_with(&u, "wrong"), filters)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AuthenticationFailed(_)), "{err:?}");
    until("every half-made subscriber to be gone", async || {
        h.actors().subscribers == 0
    })
    .await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_pending_batch_removes_every_half_made_subscription() {
    // A server that accepts and never says a word: the batch waits for
    // the first SELECT for ever, until its caller gives up.
    let silent = FakeServer::start(|mut c: FakeConn, _| async move { c.blackhole().await }).await;
    let h = start(scripted_config());
    let filters = (0..100).map(|i| Filter::new().to(format!("t{i}@x.test")));
    let pending = h.subscribe_many(fake_cred(silent.port), filters);
    let gave_up = tokio::time::timeout(Duration::from_millis(300), pending).await;
    assert!(gave_up.is_err(), "the silent server cannot have selected");
    // Dropped: the registry removes all 100 at once, not when the session
    // next connects.
    until("the cancelled batch's subscribers to be gone", async || {
        h.actors().subscribers == 0
    })
    .await;
    let stats = h.stats().await.unwrap();
    assert!(
        stats.iter().all(|s| s.subscribers == 0),
        "{:?}",
        stats.iter().map(|s| s.subscribers).collect::<Vec<_>>()
    );
    tokio::time::timeout(EVENTUALLY, h.shutdown())
        .await
        .expect("shutdown");
}
