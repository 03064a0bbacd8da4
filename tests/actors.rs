//! The actor core against a real Dovecot: one connection per credential,
//! fan-out by recipient, no backlog, reconnect without loss, permanent
//! errors reported once, linger, shutdown.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use emap::{Config, Error, Filter, Registry, SessionState};
use support::emap::{deliver, dovecot_config, dovecot_cred, dovecot_cred_with, next, start};
use support::{CatchAll, EVENTUALLY, TestUser, blocking, dovecot, mail, until_some};

async fn connections(user: &str, expected: usize) -> usize {
    dovecot()
        .wait_connections_async(user, expected, EVENTUALLY)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_reaches_the_subscriber_of_its_address_only() {
    let h = start(dovecot_config());
    let ca: CatchAll = dovecot().catchall("fan");
    let c = dovecot_cred(&ca.user);
    let (a, b) = (ca.address("task1"), ca.address("task2"));
    let mut sa = h
        .subscribe(c.clone(), Filter::new().to(a.to_uppercase()))
        .await
        .unwrap();
    let mut sb = h.subscribe(c.clone(), Filter::new().to(&b)).await.unwrap();
    let mut all = h.subscribe(c.clone(), Filter::new()).await.unwrap();
    deliver(&a, "for a").await;
    deliver(&b, "for b").await;
    assert_eq!(next(&mut sa).await.subject(), Some("for a"));
    assert_eq!(next(&mut sb).await.subject(), Some("for b"));
    let got: HashSet<String> = [next(&mut all).await, next(&mut all).await]
        .iter()
        .map(|m| m.subject().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(got, HashSet::from(["for a".to_owned(), "for b".to_owned()]));
    // a's subscriber never saw b's mail: the next thing it gets is a's next.
    deliver(&a, "for a again").await;
    assert_eq!(next(&mut sa).await.subject(), Some("for a again"));
    assert_eq!(connections(&ca.user.name, 1).await, 1);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_is_never_delivered() {
    let h = start(dovecot_config());
    let u = dovecot().user("backlog");
    for i in 0..3 {
        deliver(&u.name, &format!("old {i}")).await;
    }
    let mut sub = h.subscribe(dovecot_cred(&u), Filter::new()).await.unwrap();
    let stats = h.stats().await.unwrap();
    assert_eq!(
        stats[0].watermark,
        Some(4),
        "watermark is UIDNEXT at SELECT"
    );
    deliver(&u.name, "new 1").await;
    assert_eq!(next(&mut sub).await.subject(), Some("new 1"));
    deliver(&u.name, "new 2").await;
    let second = next(&mut sub).await;
    assert_eq!(second.subject(), Some("new 2"));
    assert_eq!(second.uid(), 5);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_subscribers_share_one_connection() {
    let h = start(dovecot_config());
    let ca = dovecot().catchall("shared");
    let c = dovecot_cred(&ca.user);
    // Concurrent first subscribes share one connection attempt.
    let subs = (0..200).map(|i| {
        let h = h.clone();
        let c = c.clone();
        let addr = ca.address(&format!("t{i}"));
        async move { h.subscribe(c, Filter::new().to(addr)).await }
    });
    let mut subs: Vec<_> = tokio_join_all(subs)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(connections(&ca.user.name, 1).await, 1);
    let name = ca.user.name.clone();
    let logins =
        blocking(move || dovecot().settled_login_attempts(&name, Duration::from_millis(500))).await;
    assert_eq!(logins, 1);
    deliver(&ca.address("t137"), "one").await;
    assert_eq!(next(&mut subs[137]).await.subject(), Some("one"));
    let stats = h.stats().await.unwrap();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].subscribers, 200);
    assert_eq!(stats[0].queued, 1);
    h.shutdown().await;
}

async fn tokio_join_all<F: std::future::Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_fails_once_and_permanently() {
    let h = start(dovecot_config());
    let u = dovecot().user("badpw");
    let c = dovecot_cred_with(&u, "wrong");
    let err = h.subscribe(c.clone(), Filter::new()).await.unwrap_err();
    assert!(matches!(err, Error::AuthenticationFailed(_)), "{err:?}");
    // No retry loop: the count stays at one while several backoff
    // intervals (50 ms .. 500 ms) pass.
    let name = u.name.clone();
    let attempts =
        blocking(move || dovecot().settled_login_attempts(&name, Duration::from_secs(2))).await;
    assert_eq!(attempts, 1);
    assert!(
        h.stats().await.unwrap().is_empty(),
        "the failed session is gone"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kicked_session_reconnects_and_loses_nothing() {
    let h = start(dovecot_config());
    let u = dovecot().user("kicked");
    let mut sub = h.subscribe(dovecot_cred(&u), Filter::new()).await.unwrap();
    deliver(&u.name, "before").await;
    assert_eq!(next(&mut sub).await.subject(), Some("before"));
    let name = u.name.clone();
    assert!(blocking(move || dovecot().kick(&name)).await);
    // Delivered while the session is down or reconnecting.
    deliver(&u.name, "during").await;
    assert_eq!(next(&mut sub).await.subject(), Some("during"));
    deliver(&u.name, "after").await;
    assert_eq!(next(&mut sub).await.subject(), Some("after"));
    let stats = h.stats().await.unwrap();
    assert!(stats[0].reconnects >= 1, "{stats:?}");
    assert_eq!(stats[0].state, SessionState::Watching);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linger_keeps_the_connection_then_logs_out() {
    let h = start(Config {
        linger: Duration::from_secs(600),
        ..dovecot_config()
    });
    let u = dovecot().user("linger");
    for _ in 0..5000 {
        let mut s = h.subscribe(dovecot_cred(&u), Filter::new()).await.unwrap();
        s.close();
    }
    let name = u.name.clone();
    let logins =
        blocking(move || dovecot().settled_login_attempts(&name, Duration::from_millis(500))).await;
    assert_eq!(logins, 1);
    assert_eq!(connections(&u.name, 1).await, 1);
    h.shutdown().await;
    assert_eq!(connections(&u.name, 0).await, 0);

    // With a short linger the session logs out by itself.
    let h = start(dovecot_config());
    let u = dovecot().user("linger2");
    let s = h.subscribe(dovecot_cred(&u), Filter::new()).await.unwrap();
    assert_eq!(connections(&u.name, 1).await, 1);
    drop(s);
    assert_eq!(connections(&u.name, 0).await, 0);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_every_subscription() {
    let h = start(dovecot_config());
    let u = dovecot().user("shutdown");
    let mut subs = Vec::new();
    for _ in 0..20 {
        subs.push(h.subscribe(dovecot_cred(&u), Filter::new()).await.unwrap());
    }
    h.shutdown().await;
    for s in &mut subs {
        assert!(
            tokio::time::timeout(EVENTUALLY, s.recv())
                .await
                .unwrap()
                .is_none()
        );
    }
    assert_eq!(connections(&u.name, 0).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_returns_the_mail_or_a_distinct_timeout() {
    let h = start(dovecot_config());
    let ca = dovecot().catchall("wait");
    let c = dovecot_cred(&ca.user);
    let err = h
        .wait_for(
            c.clone(),
            Filter::new().to(ca.address("nobody")),
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::WaitTimedOut), "{err:?}");
    // The task triggers the mail, then waits: a filter with `max_age`
    // gets it from the session's replay window.
    let addr = ca.address("someone");
    let mut everything = h.subscribe(c.clone(), Filter::new()).await.unwrap();
    deliver(&addr, "code 123456").await;
    next(&mut everything).await;
    let waiter = {
        let h = h.clone();
        let filter = Filter::new().to(&addr).max_age(Duration::from_secs(600));
        tokio::spawn(async move { h.wait_for(c, filter, EVENTUALLY).await })
    };
    let m = waiter.await.unwrap().unwrap();
    assert_eq!(m.subject(), Some("code 123456"));
    h.shutdown().await;
}

#[actix_rt::test]
async fn works_inside_an_actix_system() {
    let h = Registry::start(dovecot_config()).unwrap();
    let u = dovecot().user("actix");
    let mut sub = h.subscribe(dovecot_cred(&u), Filter::new()).await.unwrap();
    deliver(&u.name, "hi actix").await;
    assert_eq!(next(&mut sub).await.subject(), Some("hi actix"));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_is_never_marked_read_and_large_mail_is_truncated() {
    let h = start(Config {
        max_message_size: 2048,
        ..dovecot_config()
    });
    let u = dovecot().user("peek");
    let mut sub = h.subscribe(dovecot_cred(&u), Filter::new()).await.unwrap();
    let name = u.name.clone();
    blocking(move || {
        let body = "0123456789abcdef\n".repeat(1000);
        dovecot().deliver(&name, &mail("sender@emap.test", &name, "big", &body));
    })
    .await;
    let m = next(&mut sub).await;
    assert!(m.is_truncated());
    assert_eq!(m.raw().len(), 2048);
    assert_eq!(m.subject(), Some("big"), "headers survive truncation");
    let (name, password) = (u.name.clone(), u.password.clone());
    let flags = blocking(move || {
        let mut raw = support::RawImap::connect(dovecot().imap_port);
        raw.login(&name, &password);
        raw.command("EXAMINE INBOX");
        raw.command("FETCH 1 (FLAGS)")
    })
    .await;
    let line = flags
        .iter()
        .find(|l| l.contains("FETCH"))
        .expect("a FETCH line");
    assert!(
        !line.contains("\\Seen"),
        "emap marked the mail read: {line}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_costs_the_same_on_a_full_mailbox() {
    let h = start(dovecot_config());
    let empty = dovecot().user("startempty");
    let full = dovecot().user("startfull");
    let name = full.name.clone();
    blocking(move || {
        for i in 0..300 {
            let raw = mail(
                "sender@emap.test",
                &name,
                &format!("old {i}"),
                &"x".repeat(2000),
            );
            dovecot().deliver(&name, &raw);
        }
    })
    .await;
    let _a = h
        .subscribe(dovecot_cred(&empty), Filter::new())
        .await
        .unwrap();
    let _b = h
        .subscribe(dovecot_cred(&full), Filter::new())
        .await
        .unwrap();
    let stats = h.stats().await.unwrap();
    let bytes = |u: &TestUser| {
        stats
            .iter()
            .find(|s| s.key.user == u.name)
            .and_then(|s| s.startup_bytes)
            .unwrap()
    };
    let (e, f) = (bytes(&empty), bytes(&full));
    // The same commands and responses; only numbers and names differ in
    // length (EXISTS 0 vs 300, UIDNEXT 1 vs 301, ...).
    assert!(
        f.abs_diff(e) < 64,
        "empty mailbox {e} bytes, 300 messages {f} bytes"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_subscribers_get_recent_mail_only_when_they_ask_for_it() {
    let h = start(dovecot_config());
    let ca = dovecot().catchall("late");
    let c = dovecot_cred(&ca.user);
    let addr = ca.address("task");
    // The task triggers the mail before anyone watches the mailbox.
    deliver(&addr, "sent before the session").await;
    // Without a time condition: only new mail.
    let mut plain = h
        .subscribe(c.clone(), Filter::new().to(&addr))
        .await
        .unwrap();
    // With max_age: the look-back finds the mail from before the session.
    let mut recent = h
        .subscribe(
            c.clone(),
            Filter::new().to(&addr).max_age(Duration::from_secs(600)),
        )
        .await
        .unwrap();
    assert_eq!(
        next(&mut recent).await.subject(),
        Some("sent before the session")
    );
    deliver(&addr, "sent while watching").await;
    assert_eq!(
        next(&mut plain).await.subject(),
        Some("sent while watching")
    );
    assert_eq!(
        next(&mut recent).await.subject(),
        Some("sent while watching")
    );
    // A later subscriber with `since` is served from the replay window.
    let mut later = h
        .subscribe(
            c.clone(),
            Filter::new().to(&addr).max_age(Duration::from_secs(600)),
        )
        .await
        .unwrap();
    assert_eq!(
        next(&mut later).await.subject(),
        Some("sent before the session")
    );
    assert_eq!(
        next(&mut later).await.subject(),
        Some("sent while watching")
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_subscribers_on_five_credentials_use_five_connections() {
    let h = start(dovecot_config());
    let inboxes: Vec<CatchAll> = (0..5)
        .map(|i| dovecot().catchall(&format!("five{i}")))
        .collect();
    let subs = (0..2000).map(|i| {
        let h = h.clone();
        let ca = inboxes[i % 5].clone();
        async move {
            h.subscribe(
                dovecot_cred(&ca.user),
                Filter::new().to(ca.address(&format!("t{i}"))),
            )
            .await
        }
    });
    let mut subs: Vec<_> = tokio_join_all(subs)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for ca in &inboxes {
        assert_eq!(connections(&ca.user.name, 1).await, 1, "{}", ca.user.name);
    }
    assert_eq!(h.actors().sessions, 5);
    assert_eq!(h.actors().subscribers, 2000);
    // Task 1234 gets its mail (inbox 1234 % 5 = 4).
    deliver(&inboxes[4].address("t1234"), "for 1234").await;
    assert_eq!(next(&mut subs[1234]).await.subject(), Some("for 1234"));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_no_actor_and_no_connection() {
    let h = start(dovecot_config());
    let users: Vec<TestUser> = (0..4)
        .map(|i| dovecot().user(&format!("zero{i}")))
        .collect();
    let mut subs = Vec::new();
    for i in 0..1000 {
        subs.push(
            h.subscribe(dovecot_cred(&users[i % 4]), Filter::new())
                .await
                .unwrap(),
        );
    }
    assert_eq!(h.actors().subscribers, 1000);
    h.shutdown().await;
    for u in &users {
        assert_eq!(connections(&u.name, 0).await, 0);
    }
    drop(subs);
    until_some("no actor left", async || {
        let c = h.actors();
        (c.sessions == 0 && c.subscribers == 0).then_some(c)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_are_bounded_drop_the_oldest_and_count() {
    let h = start(dovecot_config());
    let ca = dovecot().catchall("burst");
    let c = dovecot_cred(&ca.user);
    let addr = ca.address("busy");
    let mut big = h
        .subscribe_with_capacity(c.clone(), Filter::new().to(&addr), Some(512))
        .await
        .unwrap();
    let mut small = h
        .subscribe(c.clone(), Filter::new().to(&addr))
        .await
        .unwrap();
    let rcpt = addr.clone();
    blocking(move || {
        for i in 0..300 {
            let raw = mail("sender@emap.test", &rcpt, &format!("burst {i}"), "x");
            dovecot().deliver(&rcpt, &raw);
        }
    })
    .await;
    // The 512-slot subscriber lost none and duplicated none, whatever the
    // reader's pace. (Dovecot may number a burst's mails in another order
    // than LMTP delivered them, so compare sets, in UID order.)
    let mut all = Vec::new();
    for _ in 0..300 {
        all.push(next(&mut big).await);
    }
    assert!(
        all.windows(2).all(|w| w[0].uid() < w[1].uid()),
        "UIDs ascend"
    );
    let subjects: HashSet<String> = all
        .iter()
        .map(|m| m.subject().unwrap_or_default().to_owned())
        .collect();
    let expected: HashSet<String> = (0..300).map(|i| format!("burst {i}")).collect();
    assert_eq!(subjects, expected);
    assert_eq!(big.dropped(), 0);
    // The default 8-slot one that never read kept the newest 8 and
    // counted the rest.
    until_some("292 mails dropped by the 8-slot subscriber", async || {
        (small.dropped() == 292).then_some(())
    })
    .await;
    for newest in &all[292..] {
        assert_eq!(next(&mut small).await.uid(), newest.uid());
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uid_n_star_returns_the_last_message_on_dovecot_and_emap_never_redelivers_it() {
    let h = start(dovecot_config());
    let u = dovecot().user("nstar");
    let mut sub = h.subscribe(dovecot_cred(&u), Filter::new()).await.unwrap();
    deliver(&u.name, "only").await;
    assert_eq!(next(&mut sub).await.uid(), 1);
    // The server's side of the trap: UID FETCH 100:* still answers with
    // the last message (UID 1), because * is the highest UID.
    let (name, password) = (u.name.clone(), u.password.clone());
    let lines = blocking(move || {
        let mut raw = support::RawImap::connect(dovecot().imap_port);
        raw.login(&name, &password);
        raw.command("EXAMINE INBOX");
        raw.command("UID FETCH 100:* (UID)")
    })
    .await;
    assert!(
        lines.iter().any(|l| l.contains("FETCH (UID 1)")),
        "{lines:?}"
    );
    // emap after a reconnect with nothing new: no re-delivery of UID 1.
    let name = u.name.clone();
    assert!(blocking(move || dovecot().kick(&name)).await);
    deliver(&u.name, "next").await;
    let m = next(&mut sub).await;
    assert_eq!((m.uid(), m.subject()), (2, Some("next")));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_named_only_in_delivered_to_gets_its_mail() {
    let h = start(dovecot_config());
    let ca = dovecot().catchall("envelope");
    let task = ca.address("task7");
    let mut sub = h
        .subscribe(dovecot_cred(&ca.user), Filter::new().to(&task))
        .await
        .unwrap();
    let rcpt = task.clone();
    blocking(move || {
        // Headers name a list; only the envelope (Delivered-To) names the task.
        let raw = mail("noreply@service.test", "list@elsewhere.test", "bcc'd", "x");
        dovecot().deliver(&rcpt, &raw);
    })
    .await;
    let m = next(&mut sub).await;
    assert_eq!(m.subject(), Some("bcc'd"));
    assert!(m.recipients().contains(&task));
    h.shutdown().await;
}
