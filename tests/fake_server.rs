//! Behaviour that only a scripted server can provoke on demand: a server
//! that never greets, missing UIDNEXT, a changed UIDVALIDITY, EXISTS inside
//! a FETCH response, IDLE missing or rejected.

mod support;

use std::time::Duration;

use emap::{Auth, Config, Credential, Filter, Handle, Registry, TlsMode};
use support::fake::{FakeConn, FakeServer};

const EVENTUALLY: Duration = Duration::from_secs(30);

fn config() -> Config {
    Config {
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        poll_interval: Duration::from_millis(100),
        ..Config::default()
    }
}

fn cred(port: u16) -> Credential {
    Credential::new("127.0.0.1", "fake", Auth::password("pw"))
        .port(port)
        .tls(TlsMode::None)
}

fn start() -> Handle {
    Registry::start_in_thread(config()).unwrap()
}

fn message(subject: &str) -> Vec<u8> {
    format!("From: a@x.test\r\nTo: b@x.test\r\nSubject: {subject}\r\nMessage-ID: <{subject}@x.test>\r\n\r\nbody\r\n")
        .into_bytes()
}

async fn recv_subject(sub: &mut emap::Subscription) -> String {
    let m = tokio::time::timeout(EVENTUALLY, sub.recv())
        .await
        .expect("no mail in time")
        .expect("subscription ended");
    m.subject().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_does_not_delay_other_credentials() {
    let silent = FakeServer::start(|mut c: FakeConn, _| async move { c.drain().await }).await;
    let working = FakeServer::start(|mut c: FakeConn, _| async move {
        c.greet_and_login("IDLE").await;
        c.examine(0, Some(1), Some(1)).await;
        c.idle().await;
        c.drain().await;
    })
    .await;
    let h = start();
    let stuck = {
        let h = h.clone();
        let c = cred(silent.port);
        tokio::spawn(async move { h.subscribe(c, Filter::new()).await })
    };
    let ok = tokio::time::timeout(EVENTUALLY, h.subscribe(cred(working.port), Filter::new()))
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
async fn missing_uidnext_falls_back_to_status_then_to_the_highest_uid() {
    let status = FakeServer::start(|mut c: FakeConn, _| async move {
        c.greet_and_login("IDLE").await;
        c.examine(3, None, Some(9)).await;
        let (tag, rest) = c.expect("STATUS").await;
        assert_eq!(rest, "INBOX (UIDNEXT)");
        c.send(format!("* STATUS INBOX (UIDNEXT 42)\r\n{tag} OK done\r\n"))
            .await;
        c.idle().await;
        c.drain().await;
    })
    .await;
    let h = start();
    let _s = h.subscribe(cred(status.port), Filter::new()).await.unwrap();
    assert_eq!(h.stats().await.unwrap()[0].watermark, Some(42));

    let highest = FakeServer::start(|mut c: FakeConn, _| async move {
        c.greet_and_login("IDLE").await;
        c.examine(3, None, Some(9)).await;
        let (tag, _) = c.expect("STATUS").await;
        c.send(format!("* STATUS INBOX (MESSAGES 3)\r\n{tag} OK done\r\n"))
            .await;
        let (tag, rest) = c.expect("UID FETCH").await;
        assert_eq!(rest, "* (UID)");
        c.send(format!("* 3 FETCH (UID 17)\r\n{tag} OK done\r\n"))
            .await;
        c.idle().await;
        c.drain().await;
    })
    .await;
    let _t = h
        .subscribe(cred(highest.port), Filter::new())
        .await
        .unwrap();
    let stats = h.stats().await.unwrap();
    let st = stats.iter().find(|s| s.key.port == highest.port).unwrap();
    assert_eq!(st.watermark, Some(18));
    for cmd in status.commands().iter().chain(highest.commands().iter()) {
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
    let h = start();
    let mut sub = h.subscribe(cred(server.port), Filter::new()).await.unwrap();
    assert_eq!(recv_subject(&mut sub).await, "fresh");
    let st = &h.stats().await.unwrap()[0];
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
    let h = start();
    let mut sub = h.subscribe(cred(server.port), Filter::new()).await.unwrap();
    assert_eq!(recv_subject(&mut sub).await, "first");
    assert_eq!(recv_subject(&mut sub).await, "second");
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
        let h = start();
        let mut sub = h.subscribe(cred(server.port), Filter::new()).await.unwrap();
        assert_eq!(recv_subject(&mut sub).await, "polled");
        assert!(!h.stats().await.unwrap()[0].idle);
        h.shutdown().await;
    }
}
