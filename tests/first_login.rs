//! Where a session's very first connection draws the line between "the
//! settings are wrong, say so at once" and "the server is passing through
//! trouble, retry": the greeting.
//!
//! A BYE *greeting* refuses us and fails a first subscribe at once
//! (`tests/exactly_once.rs`, `bye_at_connect_fails_subscribe_at_once`).
//! A BYE after the greeting — a server restart or an admin's kick while
//! the first LOGIN is on its way — used to be taken for the same refusal:
//! the session failed for good and the registry remembered the failure,
//! so every subscribe with that credential failed for `failure_memory`.
//! These scripts pin both sides of the line as the fix draws it: the kick
//! is retried, while a STARTTLS handshake that fails (after the greeting
//! too) still fails at once, as it did.

mod support;

use emap::{Error, Filter, TlsMode};
use support::EVENTUALLY;
use support::emap::{fake_cred as cred, next_subject, scripted_config, start};
use support::fake::{FakeConn, FakeServer};
use support::message;

/// The first connection is greeted, then kicked while its LOGIN is on its
/// way (`* BYE`, then closed); the next one serves. The subscribe must
/// succeed on the reconnect, mail must arrive, and a second subscribe with
/// the same credential must not meet a remembered failure. (Before the
/// fix both failed with `Error::Bye("server restarting")`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bye_during_the_first_login_is_retried_and_not_remembered() {
    let server = FakeServer::start(|mut c: FakeConn, n| async move {
        if n == 0 {
            c.send("* OK [CAPABILITY IMAP4rev1 IDLE] fake ready\r\n")
                .await;
            c.expect("LOGIN").await;
            c.send("* BYE server restarting\r\n").await;
            return;
        }
        c.greet_and_login("IDLE").await;
        c.examine(0, Some(1), Some(1)).await;
        let (tag, _) = c.announce(1).await;
        c.send(FakeConn::fetch_ok(
            &tag,
            &[(1, 1, &message("after the kick"))],
        ))
        .await;
        c.serve().await;
    })
    .await;
    let h = start(scripted_config());
    let mut sub = tokio::time::timeout(EVENTUALLY, h.subscribe(cred(server.port), Filter::new()))
        .await
        .expect("subscribe hung")
        .expect("a kick during the first login failed the subscribe");
    assert_eq!(server.accepted(), 2, "{:?}", server.commands());
    assert_eq!(next_subject(&mut sub).await, "after the kick");
    let again = h.subscribe(cred(server.port), Filter::new()).await;
    assert!(again.is_ok(), "the second subscribe failed: {again:?}");
    h.shutdown().await;
}

/// STARTTLS accepted, then garbage instead of a TLS handshake: after the
/// greeting, yet about the settings (or the server), not a passing
/// trouble — the first subscribe fails at once with `Error::Tls`, after
/// one connection, as before the greeting became the line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_starttls_handshake_still_fails_the_first_subscribe_at_once() {
    let server = FakeServer::start(|mut c: FakeConn, _| async move {
        c.send("* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] fake ready\r\n")
            .await;
        let (tag, _) = c.expect("STARTTLS").await;
        c.send(format!("{tag} OK Begin TLS negotiation now\r\n"))
            .await;
        c.send(b"\x15\x03\x03\x00\x02garbage, not a ServerHello\r\n")
            .await;
        c.line().await;
    })
    .await;
    let h = start(scripted_config());
    let res = tokio::time::timeout(
        EVENTUALLY,
        h.subscribe(cred(server.port).tls(TlsMode::StartTls), Filter::new()),
    )
    .await
    .expect("subscribe kept retrying a STARTTLS handshake that fails");
    let err = res.expect_err("subscribed through a failed STARTTLS handshake");
    assert!(matches!(err, Error::Tls(_)), "{err:?}");
    assert_eq!(server.accepted(), 1, "{:?}", server.commands());
    h.shutdown().await;
}
