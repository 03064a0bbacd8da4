//! Filters against a real Dovecot: the time conditions at INTERNALDATE's
//! one-second resolution, "the next mail after this one" for a task that
//! waits twice, and a recipient named only in the `for` clause of the
//! topmost `Received` header.

mod support;

use std::time::{Duration, SystemTime};

use emap::Filter;
use support::emap::{deliver, dovecot_config, dovecot_cred, next, start};
use support::{EVENTUALLY, blocking, dovecot, mail};

/// Item 3: "trigger the mail, then subscribe with `since(now)`" — the
/// README's advice — must get the mail although its INTERNALDATE (whole
/// seconds) is earlier than `now`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_a_time_later_in_the_same_second_gets_the_mail() {
    let h = start(dovecot_config());
    let ca = dovecot().catchall("since");
    let c = dovecot_cred(&ca.user);
    let addr = ca.address("task");
    // A session that sees the mail arrive keeps it in its replay window.
    let mut everything = h.subscribe(c.clone(), Filter::new()).await.unwrap();
    deliver(&addr, "code 111111").await;
    // The README's case: the mail was triggered, now the task subscribes.
    let after_delivery = SystemTime::now();
    let seen = next(&mut everything).await;
    let internal = seen.internal_date().expect("Dovecot sends INTERNALDATE");
    assert!(
        internal <= after_delivery,
        "{internal:?} {after_delivery:?}"
    );

    // Deterministic: 0.9 s after INTERNALDATE's whole second, which today's
    // exact comparison always refused.
    let t = internal + Duration::from_millis(900);
    let mut sub = h
        .subscribe(c.clone(), Filter::new().to(&addr).since(t))
        .await
        .unwrap();
    assert_eq!(next(&mut sub).await.uid(), seen.uid());

    let mut sub = h
        .subscribe(c.clone(), Filter::new().to(&addr).since(after_delivery))
        .await
        .unwrap();
    assert_eq!(next(&mut sub).await.uid(), seen.uid());

    // wait_for, the one-call form, likewise.
    let m = h
        .wait_for(c, Filter::new().to(&addr).since(t), EVENTUALLY)
        .await
        .unwrap();
    assert_eq!(m.uid(), seen.uid());
    h.shutdown().await;
}

/// Item 11: a task that logs in twice and waits twice with `max_age`
/// gets the first code again from the replay window; with
/// `.after(&first)` it gets the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_twice_with_after_returns_the_next_mail() {
    let h = start(dovecot_config());
    let ca = dovecot().catchall("twice");
    let c = dovecot_cred(&ca.user);
    let addr = ca.address("task");
    let mut everything = h.subscribe(c.clone(), Filter::new()).await.unwrap();
    let recent = Filter::new().to(&addr).max_age(Duration::from_secs(600));

    deliver(&addr, "first code 111111").await;
    let first = h
        .wait_for(c.clone(), recent.clone(), EVENTUALLY)
        .await
        .unwrap();
    assert_eq!(first.subject(), Some("first code 111111"));

    deliver(&addr, "second code 222222").await;
    // Both mails are in the session's replay window once it saw the second.
    assert_eq!(next(&mut everything).await.uid(), first.uid());
    let second_seen = next(&mut everything).await;
    assert_eq!(second_seen.subject(), Some("second code 222222"));

    // The trap: the same filter again is handed the first mail.
    let again = h
        .wait_for(c.clone(), recent.clone(), EVENTUALLY)
        .await
        .unwrap();
    assert_eq!(again.uid(), first.uid());
    // The fix: the next one after the first.
    let second = h
        .wait_for(c.clone(), recent.clone().after(&first), EVENTUALLY)
        .await
        .unwrap();
    assert_eq!(second.subject(), Some("second code 222222"));
    assert_eq!(second.uid(), second_seen.uid());

    // Waiting for the one after the second, before it exists: the wait
    // is served by the live mail, not by anything replayed.
    let waiter = {
        let (h, c) = (h.clone(), c.clone());
        let filter = recent.clone().after(&second);
        tokio::spawn(async move { h.wait_for(c, filter, EVENTUALLY).await })
    };
    let mut after_second = h
        .subscribe(c.clone(), recent.clone().after(&second))
        .await
        .unwrap();
    deliver(&addr, "third code 333333").await;
    let third = waiter.await.unwrap().unwrap();
    assert_eq!(third.subject(), Some("third code 333333"));
    assert_eq!(next(&mut after_second).await.uid(), third.uid());
    h.shutdown().await;
}

/// Item 12: a task reached only by Bcc on a catch-all that adds no
/// `Delivered-To` or `X-Original-To`: its address is only in the `for`
/// clause of the topmost `Received` header, and that is enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_named_only_by_the_topmost_received_header_gets_the_mail() {
    let h = start(dovecot_config());
    let u = dovecot().user("bcc");
    let task = "Bcc-Task@bcc.catchall.test";
    let mut sub = h
        .subscribe(dovecot_cred(&u), Filter::new().to(task.to_lowercase()))
        .await
        .unwrap();
    let mut everything = h.subscribe(dovecot_cred(&u), Filter::new()).await.unwrap();
    let raw = format!(
        "Received: from mx.sender.test (mx.sender.test [192.0.2.7])\r\n\
         \tby mx.bcc.catchall.test with ESMTPS id 4Xq\r\n\
         \tfor <{task}>; Mon, 01 Jan 2024 10:00:01 +0000\r\n\
         Received: from relay.sender.test by mx.sender.test\r\n\
         \tfor <other@bcc.catchall.test>; Mon, 01 Jan 2024 10:00:00 +0000\r\n\
         From: service@sender.test\r\n\
         To: undisclosed-recipients:;\r\n\
         Subject: bcc only\r\n\
         Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n\
         \r\n\
         your code is 424242\r\n"
    );
    let user = u.clone();
    blocking(move || dovecot().append(&user, "INBOX", raw.as_bytes())).await;
    let m = next(&mut sub).await;
    assert_eq!(m.subject(), Some("bcc only"));
    assert!(m.has_recipient(task), "{:?}", m.recipients());
    // Only the topmost Received header counts.
    assert!(!m.has_recipient("other@bcc.catchall.test"));

    // A mail for someone else does not reach the task; the next mail the
    // task sees is its own.
    let other = mail(
        "service@sender.test",
        "other@bcc.catchall.test",
        "not for the task",
        "x",
    );
    let user = u.clone();
    blocking(move || dovecot().append(&user, "INBOX", &other)).await;
    assert_eq!(next(&mut everything).await.subject(), Some("bcc only"));
    assert_eq!(
        next(&mut everything).await.subject(),
        Some("not for the task")
    );
    let own = mail("service@sender.test", task, "to the task", "x");
    let user = u.clone();
    blocking(move || dovecot().append(&user, "INBOX", &own)).await;
    assert_eq!(next(&mut sub).await.subject(), Some("to the task"));
    h.shutdown().await;
}
