//! Behaviour that only a scripted server can provoke on demand: a server
//! that never greets, missing UIDNEXT, a changed UIDVALIDITY, EXISTS inside
//! a FETCH response, IDLE missing or rejected.

mod support;

use std::time::Duration;

use emap::{Config, Filter};
use support::emap::{ended, fake_cred, next_subject, scripted_config, start, stats_of};
use support::fake::{FakeConn, FakeServer};
use support::{EVENTUALLY, message};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_does_not_delay_other_credentials() {
    let silent = FakeServer::start(|mut c: FakeConn, _| async move { c.blackhole().await }).await;
    let working = FakeServer::start(|mut c: FakeConn, _| async move {
        c.greet_and_login("IDLE").await;
        c.examine(0, Some(1), Some(1)).await;
        c.idle().await;
        c.drain().await;
    })
    .await;
    let h = start(scripted_config());
    let stuck = {
        let h = h.clone();
        let c = fake_cred(silent.port);
        tokio::spawn(async move { h.subscribe(c, Filter::new()).await })
    };
    let ok = tokio::time::timeout(
        EVENTUALLY,
        h.subscribe(fake_cred(working.port), Filter::new()),
    )
    .await
    .expect("subscribe to the working server was delayed");
    assert!(ok.is_ok());
    assert!(
        !stuck.is_finished(),
        "the silent server cannot have answered"
    );
    stuck.abort();
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_uidnext_falls_back_to_the_uid_of_the_last_message_selected() {
    // Without UIDNEXT the watermark is the UID of the last message SELECT
    // counted, plus one: `FETCH <exists> (UID)`. Unlike STATUS (asked
    // after SELECT), it cannot place mail that arrives in between below
    // the watermark: here a new message is announced inside the answer,
    // and it must be delivered.
    let server = FakeServer::start(|mut c: FakeConn, _| async move {
        c.greet_and_login("IDLE").await;
        c.examine(3, None, Some(9)).await;
        let (tag, rest) = c.expect("FETCH").await;
        assert_eq!(rest, "3 (UID)");
        c.send(format!(
            "* 4 EXISTS\r\n* 3 FETCH (UID 17)\r\n{tag} OK done\r\n"
        ))
        .await;
        let (tag, rest) = c.expect("FETCH").await;
        assert!(rest.starts_with("4:4 "), "{rest}");
        let mut out = FakeConn::fetch_response(4, 18, &message("arrived meanwhile"));
        out.extend_from_slice(format!("{tag} OK done\r\n").as_bytes());
        c.send(out).await;
        c.idle().await;
        c.drain().await;
    })
    .await;
    let h = start(scripted_config());
    let mut s = h
        .subscribe(fake_cred(server.port), Filter::new())
        .await
        .unwrap();
    assert_eq!(next_subject(&mut s).await, "arrived meanwhile");
    assert_eq!(stats_of(&h, server.port).await.unwrap().watermark, Some(19));

    // An empty mailbox: every later message is new; nothing is asked.
    let empty = FakeServer::start(|mut c: FakeConn, _| async move {
        c.greet_and_login("IDLE").await;
        c.examine(0, None, Some(9)).await;
        c.idle().await;
        c.drain().await;
    })
    .await;
    let _t = h
        .subscribe(fake_cred(empty.port), Filter::new())
        .await
        .unwrap();
    let st = stats_of(&h, empty.port).await.unwrap();
    assert_eq!(st.watermark, Some(1));
    for cmd in server.commands().iter().chain(empty.commands().iter()) {
        assert!(!cmd.contains("1:*"), "fetched the backlog: {cmd}");
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_uidvalidity_voids_the_watermark() {
    let server = FakeServer::start(|mut c: FakeConn, n| async move {
        c.greet_and_login("IDLE").await;
        if n == 0 {
            c.examine(5, Some(10), Some(1)).await;
            c.idle().await;
            // Cut the connection: the session reconnects.
            return;
        }
        // The mailbox was recreated: new UIDVALIDITY, lower UIDs.
        c.examine(4, Some(5), Some(2)).await;
        // The old watermark (10) must not be used: straight to IDLE, no
        // UID FETCH 10:*.
        let tag = c.idle().await;
        c.send("* 5 EXISTS\r\n").await;
        c.done(&tag).await;
        let (tag, rest) = c.expect("FETCH").await;
        assert!(rest.starts_with("5:5 "), "{rest}");
        let mut out = FakeConn::fetch_response(5, 5, &message("fresh"));
        out.extend_from_slice(format!("{tag} OK done\r\n").as_bytes());
        c.send(out).await;
        c.idle().await;
        c.drain().await;
    })
    .await;
    let h = start(scripted_config());
    let mut sub = h
        .subscribe(fake_cred(server.port), Filter::new())
        .await
        .unwrap();
    assert_eq!(next_subject(&mut sub).await, "fresh");
    let st = stats_of(&h, server.port).await.unwrap();
    assert_eq!(st.validity_changes, 1);
    assert_eq!(st.uid_validity, Some(2));
    assert_eq!(st.watermark, Some(6));
    assert!(!server.commands().iter().any(|c| c.contains("10:*")));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exists_inside_a_fetch_response_is_not_lost() {
    let server = FakeServer::start(|mut c: FakeConn, _| async move {
        c.greet_and_login("IDLE").await;
        c.examine(0, Some(1), Some(1)).await;
        let tag = c.idle().await;
        c.send("* 1 EXISTS\r\n").await;
        c.done(&tag).await;
        let (tag, rest) = c.expect("FETCH").await;
        assert!(rest.starts_with("1:1 "), "{rest}");
        let mut out = FakeConn::fetch_response(1, 1, &message("first"));
        out.extend_from_slice(b"* 2 EXISTS\r\n");
        out.extend_from_slice(format!("{tag} OK done\r\n").as_bytes());
        c.send(out).await;
        let (tag, rest) = c.expect("FETCH").await;
        assert!(rest.starts_with("2:2 "), "{rest}");
        let mut out = FakeConn::fetch_response(2, 2, &message("second"));
        out.extend_from_slice(format!("{tag} OK done\r\n").as_bytes());
        c.send(out).await;
        c.idle().await;
        c.drain().await;
    })
    .await;
    let h = start(scripted_config());
    let mut sub = h
        .subscribe(fake_cred(server.port), Filter::new())
        .await
        .unwrap();
    assert_eq!(next_subject(&mut sub).await, "first");
    assert_eq!(next_subject(&mut sub).await, "second");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_idle_or_when_idle_is_rejected_the_session_polls() {
    for caps in ["", "IDLE"] {
        let server = FakeServer::start(move |mut c: FakeConn, _| async move {
            c.greet_and_login(caps).await;
            c.examine(0, Some(1), Some(1)).await;
            if caps == "IDLE" {
                let (tag, _) = c.expect("IDLE").await;
                c.send(format!("{tag} BAD IDLE not today\r\n")).await;
            }
            let (tag, _) = c.expect("NOOP").await;
            c.send(format!("* 1 EXISTS\r\n{tag} OK done\r\n")).await;
            let (tag, rest) = c.expect("FETCH").await;
            assert!(rest.starts_with("1:1 "), "{rest}");
            let mut out = FakeConn::fetch_response(1, 1, &message("polled"));
            out.extend_from_slice(format!("{tag} OK done\r\n").as_bytes());
            c.send(out).await;
            loop {
                let Some(line) = c.line().await else { return };
                let tag = line.split(' ').next().unwrap_or("").to_owned();
                c.send(format!("{tag} OK done\r\n")).await;
            }
        })
        .await;
        let h = start(scripted_config());
        let mut sub = h
            .subscribe(fake_cred(server.port), Filter::new())
            .await
            .unwrap();
        assert_eq!(next_subject(&mut sub).await, "polled");
        assert!(!stats_of(&h, server.port).await.unwrap().idle);
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_is_reissued_every_round() {
    let server = FakeServer::start(|mut c: FakeConn, _| async move {
        c.greet_and_login("IDLE").await;
        c.examine(0, Some(1), Some(1)).await;
        for _ in 0..3 {
            let tag = c.idle().await;
            // The server stays quiet; the client ends the round itself
            // and asks with NOOP whether a push was missed.
            c.done(&tag).await;
            let (tag, _) = c.expect("NOOP").await;
            c.send(format!("{tag} OK NOOP completed\r\n")).await;
        }
        c.idle().await;
        c.drain().await;
    })
    .await;
    let h = start(Config {
        idle_round: Duration::from_millis(100),
        ..scripted_config()
    });
    let _s = h
        .subscribe(fake_cred(server.port), Filter::new())
        .await
        .unwrap();
    server
        .until("four IDLE rounds", |s| {
            s.commands().iter().filter(|c| c.ends_with(" IDLE")).count() >= 4
        })
        .await;
    assert_eq!(
        server.accepted(),
        1,
        "re-issuing IDLE needs no new connection"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_link_is_detected_and_replaced() {
    let server = FakeServer::start(|mut c: FakeConn, n| async move {
        c.greet_and_login("IDLE").await;
        c.examine(0, Some(1), Some(1)).await;
        c.idle().await;
        if n == 0 {
            // Blackhole: read what comes (DONE), answer nothing, keep the
            // socket open.
            c.blackhole().await;
            return;
        }
        c.send("* 1 EXISTS\r\n").await;
        let line = c.line().await;
        assert_eq!(line.as_deref(), Some("DONE"));
        c.send("A3 OK done\r\n").await;
        let (tag, _) = c.expect("FETCH").await;
        let mut out = FakeConn::fetch_response(1, 1, &message("after the blackhole"));
        out.extend_from_slice(format!("{tag} OK done\r\n").as_bytes());
        c.send(out).await;
        c.idle().await;
        c.drain().await;
    })
    .await;
    let h = start(Config {
        idle_inactivity: Duration::from_millis(200),
        command_timeout: Duration::from_millis(300),
        ..scripted_config()
    });
    let mut sub = h
        .subscribe(fake_cred(server.port), Filter::new())
        .await
        .unwrap();
    assert_eq!(next_subject(&mut sub).await, "after the blackhole");
    assert_eq!(server.accepted(), 2);
    let st = stats_of(&h, server.port).await.unwrap();
    assert!(st.reconnects >= 1);
    assert!(
        st.last_error
            .as_deref()
            .is_some_and(|e| e.contains("timed out")),
        "{st:?}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_connections_is_retried_until_a_slot_frees() {
    let server = FakeServer::start(|mut c: FakeConn, n| async move {
        c.send("* OK [CAPABILITY IMAP4rev1 IDLE] fake ready\r\n").await;
        let (tag, _) = c.expect("LOGIN").await;
        if n < 3 {
            c.send(format!(
                "{tag} NO [LIMIT] Maximum number of connections from user+IP exceeded (mail_max_userip_connections=10)\r\n"
            ))
            .await;
            return;
        }
        c.send(format!("{tag} OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n")).await;
        c.examine(0, Some(1), Some(1)).await;
        c.idle().await;
        c.drain().await;
    })
    .await;
    let h = start(scripted_config());
    let sub = tokio::time::timeout(
        EVENTUALLY,
        h.subscribe(fake_cred(server.port), Filter::new()),
    )
    .await
    .expect("subscribe never resolved");
    assert!(sub.is_ok(), "{sub:?}");
    assert_eq!(server.accepted(), 4);
    assert_eq!(stats_of(&h, server.port).await.unwrap().reconnects, 3);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_rejected_at_reconnect_ends_every_stream_with_the_error() {
    let both_subscribed = std::sync::Arc::new(tokio::sync::Notify::new());
    let signal = both_subscribed.clone();
    let server = FakeServer::start(move |mut c: FakeConn, n| {
        let signal = signal.clone();
        async move {
            if n == 0 {
                c.greet_and_login("IDLE").await;
                c.examine(0, Some(1), Some(1)).await;
                c.idle().await;
                // The password is changed meanwhile: drop the connection.
                signal.notified().await;
                return;
            }
            c.send("* OK [CAPABILITY IMAP4rev1 IDLE] fake ready\r\n")
                .await;
            let (tag, _) = c.expect("LOGIN").await;
            c.send(format!(
                "{tag} NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
            ))
            .await;
            c.drain().await;
        }
    })
    .await;
    let h = start(scripted_config());
    let mut a = h
        .subscribe(fake_cred(server.port), Filter::new())
        .await
        .unwrap();
    let mut b = h
        .subscribe(fake_cred(server.port), Filter::new().to("x@y.test"))
        .await
        .unwrap();
    both_subscribed.notify_one();
    let err = ended(&mut a).await;
    assert!(
        matches!(err, Some(emap::Error::AuthenticationFailed(_))),
        "{err:?}"
    );
    // The Stream form yields the error once, then ends.
    let first = tokio::time::timeout(EVENTUALLY, next_item(&mut b))
        .await
        .unwrap();
    assert!(
        matches!(first, Some(Err(emap::Error::AuthenticationFailed(_)))),
        "{first:?}"
    );
    assert!(next_item(&mut b).await.is_none());
    // A new subscribe reports the permanent error too.
    let err = h
        .subscribe(fake_cred(server.port), Filter::new())
        .await
        .unwrap_err();
    assert!(err.is_permanent());
    // One connection per attempt at most (the last subscribe may be
    // answered by the failed session before the registry forgets it), and
    // no retry loop.
    assert!(server.accepted() <= 3, "{} connections", server.accepted());
    h.shutdown().await;
}

/// The next item of the subscription's `Stream` implementation.
async fn next_item(
    sub: &mut emap::Subscription,
) -> Option<Result<std::sync::Arc<emap::Mail>, emap::Error>> {
    std::future::poll_fn(|cx| futures_core::Stream::poll_next(std::pin::Pin::new(&mut *sub), cx))
        .await
}
