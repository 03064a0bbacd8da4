//! Network deadlines (issue 9, items 13 and 17): nothing a peer does — an
//! OAuth2 token provider that never answers, a server that trickles a
//! response one byte at a time — may hold a session forever. Each test
//! drives a whole session against the scripted fake server and checks that
//! the session gives up on the stuck attempt, reconnects, and delivers the
//! mail exactly once.
//!
//! (Item 15, trying each resolved address in turn, is unit-tested in
//! `src/transport.rs`: the function under test is crate-private.)

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use emap::{Auth, Config, Credential, Filter, Secret, TlsMode};
use support::emap::{fake_cred, next_subject, scripted_config, start};
use support::fake::{FakeConn, FakeServer};
use support::{EVENTUALLY, message};

/// Scripted-server defaults with a 500 ms command timeout, so that a
/// stuck attempt is given up quickly.
fn config() -> Config {
    Config {
        command_timeout: Duration::from_millis(500),
        ..scripted_config()
    }
}

/// Answers FETCH `tag` with message `seq`/`uid` and completes it.
async fn serve_fetch(c: &mut FakeConn, tag: &str, seq: u32, uid: u32, subject: &str) {
    let mut out = FakeConn::fetch_response(seq, uid, &message(subject));
    out.extend_from_slice(format!("{tag} OK done\r\n").as_bytes());
    c.send(out).await;
}

/// Item 13: a token provider that never answers must not leave the session
/// "connecting" forever. The provider call is bounded by `command_timeout`;
/// its expiry is transient, so the session reconnects with backoff and asks
/// the provider again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_provider_that_never_answers_is_abandoned_and_asked_again() {
    let server = FakeServer::start(|mut c: FakeConn, n| async move {
        c.send("* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2 SASL-IR IDLE] fake ready\r\n")
            .await;
        if n == 0 {
            // The client waits for its token; it must give up and leave.
            c.until_closed().await;
            return;
        }
        let (tag, _) = c.expect("AUTHENTICATE XOAUTH2").await;
        c.send(format!(
            "{tag} OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n"
        ))
        .await;
        c.examine(0, Some(1), Some(1)).await;
        let (tag, rest) = c.announce(1).await;
        assert!(rest.starts_with("1:1 "), "{rest}");
        serve_fetch(&mut c, &tag, 1, 1, "after the token").await;
        c.serve().await;
    })
    .await;
    let calls = Arc::new(AtomicUsize::new(0));
    let auth = {
        let calls = calls.clone();
        Auth::oauth2(move || {
            let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                if first {
                    std::future::pending::<()>().await;
                }
                Ok(Secret::new("tok"))
            }
        })
    };
    let cred = Credential::new("127.0.0.1", "fake", auth)
        .port(server.port)
        .tls(TlsMode::None);
    let h = start(config());
    let mut sub = tokio::time::timeout(EVENTUALLY, h.subscribe(cred, Filter::new()))
        .await
        .expect("subscribe is stuck behind a token provider that never answers")
        .unwrap();
    assert_eq!(next_subject(&mut sub).await, "after the token");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the provider was asked again"
    );
    assert_eq!(server.accepted(), 2);
    h.shutdown().await;
}

/// Item 17: a server that trickles a FETCH response one byte every 100 ms
/// never trips the inactivity timer (`command_timeout`, 1 s), but the
/// FETCH's overall deadline — 1 s plus one message's worth
/// (`max_message_size + max_line`, 2 KiB) at `min_transfer_rate` — ends the
/// connection. The session reconnects, the gap is fetched by UID (served
/// normally this time) and the mail is delivered once: the next mail the
/// subscriber sees is the following one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_fetch_is_abandoned_and_the_mail_delivered_once() {
    let server = FakeServer::start(|mut c: FakeConn, n| async move {
        c.greet_and_login("IDLE").await;
        if n == 0 {
            c.examine(0, Some(1), Some(1)).await;
            let (tag, rest) = c.announce(1).await;
            assert!(rest.starts_with("1:1 "), "{rest}");
            let mut out = FakeConn::fetch_response(1, 1, &message("slow"));
            out.extend_from_slice(format!("{tag} OK done\r\n").as_bytes());
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            for b in out {
                tick.tick().await;
                if !c.try_send([b]).await {
                    return; // the client gave up: what the test wants
                }
            }
            // Only reached when the client waited for the whole trickle.
            c.serve().await;
            return;
        }
        c.examine(1, Some(2), Some(1)).await;
        // The cut fetch was a failed attempt: the client narrows down what
        // is pending (UID SEARCH), fetches it alone, and checks again.
        let (tag, rest) = c.expect("UID SEARCH").await;
        assert_eq!(rest, "UID 1:*");
        c.send(format!("* SEARCH 1\r\n{tag} OK done\r\n")).await;
        let (tag, rest) = c.expect("UID FETCH").await;
        assert!(rest.starts_with("1 "), "{rest}");
        serve_fetch(&mut c, &tag, 1, 1, "slow").await;
        let (tag, _) = c.expect("UID SEARCH").await;
        c.send(format!("* SEARCH 1\r\n{tag} OK done\r\n")).await;
        let (tag, rest) = c.announce(2).await;
        assert!(rest.starts_with("2:2 "), "{rest}");
        serve_fetch(&mut c, &tag, 2, 2, "next").await;
        c.serve().await;
    })
    .await;
    let h = start(Config {
        command_timeout: Duration::from_secs(1),
        max_line: 1024,
        max_message_size: 1024,
        ..config()
    });
    let mut sub = h
        .subscribe(fake_cred(server.port), Filter::new())
        .await
        .unwrap();
    assert_eq!(next_subject(&mut sub).await, "slow");
    assert_eq!(next_subject(&mut sub).await, "next", "delivered twice");
    assert_eq!(server.accepted(), 2);
    h.shutdown().await;
}
