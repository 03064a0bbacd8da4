//! One end-to-end suite, every real server: the same scenarios run on
//! Dovecot 2.3, Cyrus IMAP 3.6 and Courier IMAP 5.0 (issue 11 item 1),
//! each started once per binary on 127.0.0.1 by tests/support. The server
//! is a parameter: each scenario is a function of a `&'static dyn
//! TestServer`, and `scenarios!(name, starter())` makes one module of
//! tests per server (`cargo test --test servers cyrus::` runs Cyrus'
//! only). A server plugs in with one more `scenarios!` line and its
//! `TestServer` impl (see tests/support/servers.rs). Courier's module
//! skips, with a message, where its harness cannot run (not root; CI runs
//! as root).
//!
//! What each scenario proves, on every server:
//! - `mail_is_routed_by_recipient`: subscribe → deliver → receive, each
//!   task gets only the mail addressed to it, and `Delivered-To` is
//!   there exactly where the server's delivery adds it (routing on it is
//!   proven on Dovecot's catch-all domains in tests/actors.rs);
//! - `the_backlog_is_not_delivered`: on a filled mailbox the watermark is
//!   the server's UIDNEXT and only newer mail arrives;
//! - `a_kick_during_idle_delivers_each_mail_exactly_once`: the server
//!   ends the connection while IDLE; mail delivered meanwhile arrives once;
//! - `a_wrong_password_is_tried_once`: one connection, a permanent error;
//! - `a_new_uidvalidity_is_followed`: a watched folder deleted and created
//!   again is watched again;
//! - `linger_keeps_one_connection_then_logs_out` and
//!   `shutdown_ends_subscriptions_and_connections`;
//! - `a_saturated_connection_cap_is_waited_out`: refusals (Dovecot's BYE,
//!   Cyrus' NO, Courier's ungreeted close) are retried with backoff, and
//!   the session gets in once a slot frees.
//!
//! Connections are counted by the server itself (`doveadm who`, Cyrus'
//! `proc/` files, Courier's imapd processes); connection attempts through
//! a counting proxy, because Cyrus logs only to syslog.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use emap::{Auth, Config, Credential, Error, Filter, Handle, SessionState, TlsMode};
use support::emap::{next, stats_of_user, until_stats};
use support::proxy::Proxy;
use support::servers::TestServer;
use support::{EVENTUALLY, RawImap, TestUser, blocking, header_value, mail, until};

/// Reconnects within 50–500 ms; a session lingers 300 ms.
fn config() -> Config {
    Config {
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        linger: Duration::from_millis(300),
        ..Config::default()
    }
}

fn start(config: Config) -> Handle {
    support::emap::start(config)
}

/// `user`'s credential on `port` (the server's, or a proxy's).
fn cred(user: &TestUser, port: u16) -> Credential {
    Credential::new(
        "127.0.0.1",
        &user.name,
        Auth::password(user.password.as_str()),
    )
    .port(port)
    .tls(TlsMode::None)
}

/// Delivers a small mail with headers `To: to` and `subject` to user
/// `rcpt`, on the blocking pool.
async fn deliver(s: &'static dyn TestServer, rcpt: &str, to: &str, subject: &str) {
    let (rcpt, to, subject) = (rcpt.to_owned(), to.to_owned(), subject.to_owned());
    blocking(move || s.deliver(&rcpt, &mail("sender@emap.test", &to, &subject, "hi"))).await
}

async fn connections(s: &'static dyn TestServer, user: &str, expected: usize) -> usize {
    let user = user.to_owned();
    blocking(move || s.wait_connections(&user, expected, EVENTUALLY)).await
}

/// The subjects of the next `n` mails.
async fn subjects(sub: &mut emap::Subscription, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(next(sub).await.subject().unwrap_or_default().to_owned());
    }
    out
}

pub async fn mail_is_routed_by_recipient(s: &'static dyn TestServer) {
    let h = start(config());
    let u = s.user("route");
    let c = cred(&u, s.imap_port());
    let (a, b) = ("task1@route.test", "task2@route.test");
    let mut sa = h
        .subscribe(c.clone(), Filter::new().to(a.to_uppercase()))
        .await
        .unwrap();
    let mut sb = h.subscribe(c.clone(), Filter::new().to(b)).await.unwrap();
    let mut all = h.subscribe(c.clone(), Filter::new()).await.unwrap();
    deliver(s, &u.name, a, "for a").await;
    deliver(s, &u.name, b, "for b").await;
    assert_eq!(next(&mut sa).await.subject(), Some("for a"));
    assert_eq!(next(&mut sb).await.subject(), Some("for b"));
    let got: HashSet<String> = subjects(&mut all, 2).await.into_iter().collect();
    assert_eq!(got, HashSet::from(["for a".to_owned(), "for b".to_owned()]));

    // Headers name a list; only the envelope names the account.
    deliver(s, &u.name, "list@elsewhere.test", "bcc'd").await;
    let m = next(&mut all).await;
    assert_eq!(m.subject(), Some("bcc'd"));
    let delivered_to = header_value(m.raw(), "Delivered-To");
    if s.delivery_adds_delivered_to() {
        assert_eq!(
            delivered_to.as_deref().map(|v| v.trim_matches(['<', '>'])),
            Some(u.name.as_str()),
            "{}",
            s.name()
        );
    } else {
        assert_eq!(delivered_to, None, "{} adds no Delivered-To", s.name());
    }
    // a's subscriber never saw the others' mail: its next is a's next.
    deliver(s, &u.name, a, "for a again").await;
    assert_eq!(next(&mut sa).await.subject(), Some("for a again"));
    assert_eq!(connections(s, &u.name, 1).await, 1);
    h.shutdown().await;
}

pub async fn the_backlog_is_not_delivered(s: &'static dyn TestServer) {
    let h = start(config());
    let u = s.user("backlog");
    for i in 0..3 {
        deliver(s, &u.name, &u.name, &format!("old {i}")).await;
    }
    let mut sub = h
        .subscribe(cred(&u, s.imap_port()), Filter::new())
        .await
        .unwrap();
    let stats = stats_of_user(&h, &u.name).await.expect("a session");
    assert_eq!(stats.watermark, Some(4), "watermark is UIDNEXT at SELECT");
    deliver(s, &u.name, &u.name, "new 1").await;
    deliver(s, &u.name, &u.name, "new 2").await;
    assert_eq!(subjects(&mut sub, 2).await, ["new 1", "new 2"]);
    h.shutdown().await;
}

pub async fn a_kick_during_idle_delivers_each_mail_exactly_once(s: &'static dyn TestServer) {
    let h = start(config());
    let u = s.user("kicked");
    let port = s.imap_port();
    let mut sub = h.subscribe(cred(&u, port), Filter::new()).await.unwrap();
    deliver(s, &u.name, &u.name, "before").await;
    assert_eq!(next(&mut sub).await.subject(), Some("before"));
    until_stats(&h, port, "IDLE", |st| st.state == SessionState::Watching).await;
    let name = u.name.clone();
    assert!(blocking(move || s.kick(&name)).await, "nothing to kick");
    // Delivered while the session is down or reconnecting.
    deliver(s, &u.name, &u.name, "during").await;
    deliver(s, &u.name, &u.name, "after").await;
    // Each once, in order, and nothing else before the sentinel.
    deliver(s, &u.name, &u.name, "sentinel").await;
    assert_eq!(subjects(&mut sub, 3).await, ["during", "after", "sentinel"]);
    let st = until_stats(&h, port, "watching again", |st| {
        st.state == SessionState::Watching
    })
    .await;
    assert!(st.reconnects >= 1, "{st:?}");
    assert_eq!(connections(s, &u.name, 1).await, 1);
    h.shutdown().await;
}

pub async fn a_wrong_password_is_tried_once(s: &'static dyn TestServer) {
    let proxy = Proxy::start(s.imap_port());
    let h = start(config());
    let u = s.user("wrongpw");
    let c = Credential::new("127.0.0.1", &u.name, Auth::password("not the password"))
        .port(proxy.port())
        .tls(TlsMode::None);
    // Courier answers a failed LOGIN after 5 s; the subscribe waits that.
    let err = h.subscribe(c, Filter::new()).await.unwrap_err();
    assert!(matches!(err, Error::AuthenticationFailed(_)), "{err:?}");
    assert!(err.is_permanent());
    // The session is gone by the time its error is reported (it tells the
    // registry first), so no retry can come after this count.
    assert!(h.stats().await.unwrap().is_empty(), "the session is gone");
    assert_eq!(proxy.accepted(), 1, "connections counted by the proxy");
    h.shutdown().await;
}

pub async fn a_new_uidvalidity_is_followed(s: &'static dyn TestServer) {
    let u = s.user("rotate");
    // `Rotating`, or `INBOX.Rotating` on Courier.
    let folder: &'static str = s.folder("Rotating").leak();
    let user = u.clone();
    blocking(move || s.create_mailbox(&user, folder)).await;
    let h = start(config());
    let mut sub = h
        .subscribe(cred(&u, s.imap_port()).mailbox(folder), Filter::new())
        .await
        .unwrap();
    let old = stats_of_user(&h, &u.name)
        .await
        .and_then(|st| st.uid_validity);
    assert!(old.is_some());
    let user = u.clone();
    blocking(move || s.delete_mailbox(&user, folder)).await;
    // Servers differ here: Dovecot drops the session that had the folder
    // selected; Cyrus keeps it (its IDLE reports nothing) and refuses to
    // create the name again while that session still holds the old
    // folder. A kick ends that session (a no-op on Dovecot); its
    // reconnects fail to SELECT until the folder exists again.
    let name = u.name.clone();
    blocking(move || s.kick(&name)).await;
    let user = u.clone();
    let created = blocking(move || {
        support::wait_for(EVENTUALLY, || {
            s.try_create_mailbox(&user, folder).then_some(())
        })
    })
    .await;
    assert!(
        created.is_some(),
        "{} never let the folder be created again",
        s.name()
    );
    until("the recreated folder to be selected", async || {
        let st = stats_of_user(&h, &u.name).await;
        let st = st.unwrap_or_else(|| panic!("the session ended: {:?}", sub.error()));
        st.state == SessionState::Watching && st.uid_validity.is_some() && st.uid_validity != old
    })
    .await;
    let user = u.clone();
    blocking(move || {
        let raw = mail("a@emap.test", &user.name, "after the rotation", "hi");
        s.append(&user, folder, &raw);
    })
    .await;
    assert_eq!(next(&mut sub).await.subject(), Some("after the rotation"));
    assert!(sub.error().is_none());
    h.shutdown().await;
}

pub async fn linger_keeps_one_connection_then_logs_out(s: &'static dyn TestServer) {
    let proxy = Proxy::start(s.imap_port());
    let h = start(Config {
        linger: Duration::from_secs(600),
        ..config()
    });
    let u = s.user("linger");
    for _ in 0..200 {
        let mut sub = h
            .subscribe(cred(&u, proxy.port()), Filter::new())
            .await
            .unwrap();
        sub.close();
    }
    assert_eq!(connections(s, &u.name, 1).await, 1);
    assert_eq!(proxy.accepted(), 1, "one connection for 200 subscriptions");
    h.shutdown().await;
    assert_eq!(connections(s, &u.name, 0).await, 0);

    // With a short linger the session logs out by itself.
    let h = start(config());
    let u = s.user("linger2");
    let sub = h
        .subscribe(cred(&u, s.imap_port()), Filter::new())
        .await
        .unwrap();
    assert_eq!(connections(s, &u.name, 1).await, 1);
    drop(sub);
    assert_eq!(connections(s, &u.name, 0).await, 0);
    h.shutdown().await;
}

pub async fn shutdown_ends_subscriptions_and_connections(s: &'static dyn TestServer) {
    let h = start(config());
    let u = s.user("shutdown");
    let mut subs = Vec::new();
    for _ in 0..20 {
        subs.push(
            h.subscribe(cred(&u, s.imap_port()), Filter::new())
                .await
                .unwrap(),
        );
    }
    assert_eq!(connections(s, &u.name, 1).await, 1);
    h.shutdown().await;
    for sub in &mut subs {
        let end = tokio::time::timeout(EVENTUALLY, sub.recv()).await;
        assert!(end.expect("the subscription did not end").is_none());
    }
    assert_eq!(connections(s, &u.name, 0).await, 0);
}

pub async fn a_saturated_connection_cap_is_waited_out(s: &'static dyn TestServer) {
    /// How long refused attempts are counted while the cap is saturated.
    const WINDOW: Duration = Duration::from_secs(3);
    let cap = s
        .connection_cap()
        .expect("a server in this suite runs with a cap");
    let u = s.user("cap");
    let (name, password, port) = (u.name.clone(), u.password.clone(), s.cap_port());
    let mut held = blocking(move || {
        (0..cap)
            .map(|_| {
                let mut imap = RawImap::connect(port);
                imap.login_ok(&name, &password);
                imap
            })
            .collect::<Vec<_>>()
    })
    .await;
    let proxy = Proxy::start(port);
    let h = start(Config {
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
        ..config()
    });
    let subscribing = {
        let (h, c) = (h.clone(), cred(&u, proxy.port()));
        tokio::spawn(async move { h.subscribe(c, Filter::new()).await })
    };
    let st = until_stats(&h, proxy.port(), "a refused login", |st| st.reconnects >= 1).await;
    let refusal = s
        .cap_refusal()
        .map_or_else(|| Error::Closed.to_string(), str::to_owned);
    assert!(
        st.last_error
            .as_deref()
            .is_some_and(|e| e.contains(&refusal)),
        "{st:?}"
    );
    let first = proxy.accepted();
    // Not a synchronisation: the window in which attempts are counted.
    // Backoff 50–400 ms with jitter allows about 15 in 3 s; a retry loop
    // without backoff makes hundreds.
    tokio::time::sleep(WINDOW).await;
    let in_window = proxy.accepted() - first;
    assert!(
        (2..=40).contains(&in_window),
        "{in_window} attempts in {WINDOW:?}"
    );
    assert!(!subscribing.is_finished(), "subscribe waits for a slot");

    // A slot frees: emap gets in and receives.
    let one = held.pop().expect("a held connection");
    blocking(move || one.logout()).await;
    let mut sub = tokio::time::timeout(EVENTUALLY, subscribing)
        .await
        .expect("subscribed once a slot was free")
        .unwrap()
        .unwrap();
    deliver(s, &u.name, &u.name, "in at last").await;
    assert_eq!(next(&mut sub).await.subject(), Some("in at last"));
    assert_eq!(connections(s, &u.name, cap).await, cap);
    h.shutdown().await;
    drop(held);
}

/// One module of tests per server: `scenarios!(module, starter())`, with
/// an optional `skip_if: <Option<String>>` (why this machine cannot run
/// the server, for a reason that is not a failure: each test then prints
/// it and returns) and an optional `#[ignore = ...]` for the cap scenario.
macro_rules! scenarios {
    ($module:ident, $server:expr $(, skip_if: $skip:expr)? $(, cap: #[$cap:meta])?) => {
        mod $module {
            use super::*;

            /// The server, or `None` (after saying why) to skip.
            fn server() -> Option<&'static dyn TestServer> {
                $(if let Some(why) = $skip {
                    eprintln!("skipping: {why}");
                    return None;
                })?
                Some($server)
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mail_is_routed_by_recipient() {
                let Some(s) = server() else { return };
                super::mail_is_routed_by_recipient(s).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn the_backlog_is_not_delivered() {
                let Some(s) = server() else { return };
                super::the_backlog_is_not_delivered(s).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_kick_during_idle_delivers_each_mail_exactly_once() {
                let Some(s) = server() else { return };
                super::a_kick_during_idle_delivers_each_mail_exactly_once(s).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_wrong_password_is_tried_once() {
                let Some(s) = server() else { return };
                super::a_wrong_password_is_tried_once(s).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_new_uidvalidity_is_followed() {
                let Some(s) = server() else { return };
                super::a_new_uidvalidity_is_followed(s).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn linger_keeps_one_connection_then_logs_out() {
                let Some(s) = server() else { return };
                super::linger_keeps_one_connection_then_logs_out(s).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn shutdown_ends_subscriptions_and_connections() {
                let Some(s) = server() else { return };
                super::shutdown_ends_subscriptions_and_connections(s).await;
            }

            $(#[$cap])?
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_saturated_connection_cap_is_waited_out() {
                let Some(s) = server() else { return };
                super::a_saturated_connection_cap_is_waited_out(s).await;
            }
        }
    };
}

scenarios!(dovecot, support::dovecot());
scenarios!(cyrus, support::cyrus::cyrus());
scenarios!(
    courier,
    support::courier::courier(),
    skip_if: support::courier::unavailable()
);
