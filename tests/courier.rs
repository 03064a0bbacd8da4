//! emap on a real Courier IMAP 5.0 (tests/support/courier.rs starts it,
//! as root, in a private mount namespace).
//!
//! Courier is the odd one of the three servers users run themselves: its
//! SELECT never says UIDNEXT, IDLE pushes only through a file monitor
//! (FAM/gamin) and otherwise looks at the maildir on a timer, its
//! connection cap is per IP and answers with a closed socket instead of a
//! greeting, and a failed LOGIN takes 5 s. Each test proves one of these
//! is handled, on the real server. The first test checks the harness's
//! own claims about Courier (what the others build on).
//!
//! When not run as root the tests skip with a message (the mount namespace
//! needs root); CI runs as root.

mod support;

use std::time::Duration;

use emap::{Auth, Config, Credential, Error, Filter, SessionState, TlsMode};
use support::courier::{self, CAPPED_PER_IP, Courier, courier};
use support::emap::{dovecot_config, next, next_subject, start, until_stats};
use support::{RawImap, TestUser, blocking, is_ok, mail};

/// The test Courier, or `None` (with a message) when this machine cannot
/// run it for a reason that is not a failure (not root).
fn server() -> Option<&'static Courier> {
    if let Some(why) = courier::unavailable() {
        eprintln!("skipping: {why}");
        return None;
    }
    Some(courier())
}

/// The credential of `user` on Courier's listener `port`, plaintext.
fn cred(user: &TestUser, port: u16) -> Credential {
    cred_with(user, &user.password, port)
}

fn cred_with(user: &TestUser, password: &str, port: u16) -> Credential {
    Credential::new("127.0.0.1", &user.name, Auth::password(password))
        .port(port)
        .tls(TlsMode::None)
}

/// Reconnects within 50–500 ms, lingers 300 ms (as for Dovecot).
fn config() -> Config {
    dovecot_config()
}

/// Delivers a small mail with `subject` to `user` (To: `user`).
async fn deliver(user: &TestUser, subject: &str) {
    let (name, subject) = (user.name.clone(), subject.to_owned());
    blocking(move || {
        courier().deliver(&name, &mail("sender@emap.test", &name, &subject, "hello"));
    })
    .await
}

/// The harness's claims about Courier, checked on the server itself:
/// capabilities (IDLE, no LITERAL+), SELECT without UIDNEXT, delivery
/// into the maildir with `Delivered-To`, enhanced IDLE with FAM and an
/// `[ALERT]` at LOGIN without, imapd processes counted and killed per
/// user, and the per-IP cap closing the extra connection ungreeted.
#[test]
fn the_harness_runs_courier_as_described() {
    let Some(c) = server() else { return };
    let u = c.user("harness");

    let mut imap = RawImap::connect(c.imap_port);
    assert!(
        imap.greeting().contains("Courier-IMAP"),
        "{}",
        imap.greeting()
    );
    let caps = imap.command("CAPABILITY").join("\n");
    assert!(caps.contains(" IDLE"), "{caps}");
    assert!(!caps.contains("LITERAL+"), "{caps}");
    imap.login_ok(&u.name, &u.password);
    c.deliver(&u.name, &mail("sender@emap.test", &u.name, "first", "x"));
    let select = imap.select("INBOX");
    assert!(is_ok(&select), "{select:?}");
    assert_eq!(RawImap::exists(&select), Some(1), "{select:?}");
    assert!(
        select.iter().any(|l| l.contains("[UIDVALIDITY ")),
        "{select:?}"
    );
    assert!(
        !select.iter().any(|l| l.contains("UIDNEXT")),
        "Courier sent UIDNEXT after all: {select:?}"
    );
    let stored = c.messages(&u, "INBOX");
    assert_eq!(stored.len(), 1);
    assert_eq!(
        support::header_value(&stored[0], "Delivered-To").as_deref(),
        Some(u.name.as_str())
    );
    assert_eq!(c.wait_connections(&u.name, 1, support::EVENTUALLY), 1);

    // With FAM: enhanced IDLE, new mail announced while idling.
    let tag = imap.idle();
    c.deliver(&u.name, &mail("sender@emap.test", &u.name, "second", "x"));
    let seen = imap
        .read_until(support::EVENTUALLY, |l| l == "* 2 EXISTS")
        .expect("EXISTS while idling");
    assert!(seen.iter().any(|l| l == "* 2 EXISTS"), "{seen:?}");
    assert!(is_ok(&imap.done(&tag)));

    // The kick ends the connection at the server.
    assert!(c.kick(&u.name));
    let bye = imap.read_response().expect("a BYE before the close");
    assert_eq!(bye, "* BYE Courier-IMAP server shut down by signal.");
    assert_eq!(c.wait_connections(&u.name, 0, support::EVENTUALLY), 0);
    assert!(!c.kick(&u.name), "nothing left to kick");

    // Without FAM: an [ALERT] at LOGIN (after gamin's ~1.2 s of trying to
    // reach a gam_server), and the login succeeds.
    let mut plain = RawImap::connect(c.nofam_port);
    let login = plain.login(&u.name, &u.password);
    assert!(is_ok(&login), "{login:?}");
    assert!(
        login
            .iter()
            .any(|l| l.contains("[ALERT] Filesystem notification")),
        "{login:?}"
    );
    drop(plain);

    // The per-IP cap: the connection beyond it is closed ungreeted.
    let held: Vec<RawImap> = (0..CAPPED_PER_IP)
        .map(|_| RawImap::connect(c.capped_port))
        .collect();
    let refusals = c.cap_refusals();
    let refused = RawImap::try_connect(c.capped_port);
    assert!(refused.is_err(), "a connection beyond the cap was greeted");
    assert!(
        support::wait_for(support::EVENTUALLY, || (c.cap_refusals() > refusals)
            .then_some(()))
        .is_some(),
        "couriertcpd logged no refusal: {}",
        c.log_tail(10)
    );
    drop(held);
}

/// The Courier quirk behind [`mail_named_out_of_order_is_delivered_once`]:
/// under EXAMINE, Courier gives a new message a UID but does not store it;
/// when more mail arrives it numbers the unsaved messages again, in the
/// lexical order of their maildir file names. Two mails delivered in one
/// second as `M99999` then `M100000` (Courier's own names: microseconds
/// unpadded) swap UIDs within one session — no EXPUNGE, no UIDVALIDITY
/// change. Under SELECT the numbers are stored and stay.
#[test]
fn courier_renumbers_unsaved_uids_under_examine() {
    let Some(c) = server() else { return };
    for (command, stable) in [("EXAMINE", false), ("SELECT", true)] {
        let u = c.user("renumber");
        let mut imap = RawImap::connect(c.imap_port);
        imap.login_ok(&u.name, &u.password);
        assert!(is_ok(&imap.command(&format!("{command} INBOX"))));
        let secs = 1_700_000_000;
        let subject_of_uid_1 = |imap: &mut RawImap| {
            let lines = imap.command("UID FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
            assert!(is_ok(&lines), "{lines:?}");
            lines.join("\n")
        };
        for (i, usec) in [99_999, 100_000].into_iter().enumerate() {
            let tag = imap.idle();
            c.deliver_file(
                &u.name,
                &format!("{secs}.M{usec}P1.emap-test"),
                &mail("sender@emap.test", &u.name, &format!("mail {i}"), "x"),
            );
            let exists = format!("* {} EXISTS", i + 1);
            imap.read_until(support::EVENTUALLY, |l| l == exists)
                .expect("EXISTS while idling");
            assert!(is_ok(&imap.done(&tag)));
            let first = subject_of_uid_1(&mut imap);
            let expected = if i == 0 || stable { "mail 0" } else { "mail 1" };
            assert!(
                first.contains(&format!("Subject: {expected}")),
                "{command}, after mail {i}: UID 1 is {first}"
            );
        }
        imap.logout();
    }
}

/// Two mails whose maildir names sort against their arrival order
/// (`M99999`, then `M100000` in the same second, as Courier's own delivery
/// names them) while emap watches with EXAMINE: Courier swaps their UIDs
/// (see [`courier_renumbers_unsaved_uids_under_examine`]), and emap, which
/// goes by UID, would deliver the first one twice and lose the second.
/// emap therefore opens the mailbox with SELECT on Courier
/// (`MailboxAccess::Auto`), where UIDs are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_named_out_of_order_is_delivered_once() {
    let Some(c) = server() else { return };
    let h = start(config());
    let u = c.user("outoforder");
    let mut sub = h
        .subscribe(cred(&u, c.imap_port), Filter::new())
        .await
        .unwrap();
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for (usec, subject) in [(99_999, "first"), (100_000, "second")] {
        let name = u.name.clone();
        blocking(move || {
            courier().deliver_file(
                &name,
                &format!("{secs}.M{usec}P1.emap-test"),
                &mail("sender@emap.test", &name, subject, "x"),
            );
        })
        .await;
        assert_eq!(next_subject(&mut sub).await, subject);
    }
    deliver(&u, "third").await;
    assert_eq!(next_subject(&mut sub).await, "third");
    h.shutdown().await;
}

/// Blocks until the wall clock's second changes (Courier derives a new
/// UIDVALIDITY from it).
fn next_second() {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let start = now();
    support::wait_for(support::EVENTUALLY, || (now() > start).then_some(()))
        .expect("the clock stands still");
}

/// The UIDVALIDITY of INBOX as `command` (EXAMINE or SELECT) reports it,
/// in a session of its own.
fn uid_validity(c: &Courier, user: &TestUser, command: &str) -> String {
    let mut imap = RawImap::connect(c.imap_port);
    imap.login_ok(&user.name, &user.password);
    let lines = imap.command(&format!("{command} INBOX"));
    assert!(is_ok(&lines), "{lines:?}");
    imap.logout();
    lines
        .iter()
        .find_map(|l| l.split("[UIDVALIDITY ").nth(1))
        .and_then(|v| v.split(']').next())
        .unwrap_or_else(|| panic!("no UIDVALIDITY in {lines:?}"))
        .to_owned()
}

/// The Courier quirk behind [`a_kick_on_a_never_opened_mailbox_loses_nothing`]:
/// a mailbox no session has opened read-write has no UIDVALIDITY stored,
/// and an EXAMINE session stores none: each one invents it from the clock,
/// so two sessions a second apart see different UIDVALIDITYs. Once a
/// SELECT has stored one, it stays.
#[test]
fn courier_invents_a_uidvalidity_per_examine_of_a_never_opened_mailbox() {
    let Some(c) = server() else { return };
    let u = c.user_never_opened("uidvalidity");
    let first = uid_validity(c, &u, "EXAMINE");
    next_second();
    let second = uid_validity(c, &u, "EXAMINE");
    assert_ne!(first, second, "EXAMINE twice, a second apart");
    let stored = uid_validity(c, &u, "SELECT");
    next_second();
    assert_eq!(uid_validity(c, &u, "EXAMINE"), stored);
    assert_eq!(uid_validity(c, &u, "SELECT"), stored);
}

/// A kick on a mailbox no client has opened read-write: the reconnect's
/// EXAMINE gets a new UIDVALIDITY from Courier (see
/// [`courier_invents_a_uidvalidity_per_examine_of_a_never_opened_mailbox`]),
/// emap would rightly void its watermark, and the mail delivered while it
/// was down would be lost. emap opens the mailbox with SELECT on Courier
/// (`MailboxAccess::Auto`), which makes Courier store its UIDVALIDITY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_on_a_never_opened_mailbox_loses_nothing() {
    let Some(c) = server() else { return };
    let h = start(config());
    let u = c.user_never_opened("neveropened");
    let mut sub = h
        .subscribe(cred(&u, c.imap_port), Filter::new())
        .await
        .unwrap();
    deliver(&u, "before").await;
    assert_eq!(next_subject(&mut sub).await, "before");
    blocking(next_second).await;
    let name = u.name.clone();
    assert!(blocking(move || courier().kick(&name)).await);
    deliver(&u, "during").await;
    assert_eq!(next_subject(&mut sub).await, "during");
    h.shutdown().await;
}

/// Subscribe → deliver → receive, with recipient routing: three
/// subscriptions on one mailbox, told apart by `To:` or, for the mail sent
/// to an alias, only by the `Delivered-To:` Courier's delivery adds. One
/// connection serves them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_reaches_the_subscriber_it_is_addressed_to() {
    let Some(c) = server() else { return };
    let h = start(config());
    let u = c.user("routing");
    let (a, b, alias) = (
        "task-a@courier.test",
        "task-b@courier.test",
        "task-c@courier.test",
    );
    let mut sub_a = h
        .subscribe(cred(&u, c.imap_port), Filter::new().to(a))
        .await
        .unwrap();
    let mut sub_b = h
        .subscribe(cred(&u, c.imap_port), Filter::new().to(b))
        .await
        .unwrap();
    let mut sub_c = h
        .subscribe(cred(&u, c.imap_port), Filter::new().to(alias))
        .await
        .unwrap();
    let name = u.name.clone();
    blocking(move || {
        let c = courier();
        c.deliver(&name, &mail("sender@emap.test", b, "for b", "x"));
        c.deliver(&name, &mail("sender@emap.test", a, "for a", "x"));
        // To: a list; the alias only in Delivered-To.
        c.deliver_as(
            &name,
            alias,
            &mail("sender@emap.test", "list@lists.test", "for c", "x"),
        );
        c.deliver(&name, &mail("sender@emap.test", a, "for a again", "x"));
    })
    .await;
    assert_eq!(next_subject(&mut sub_a).await, "for a");
    assert_eq!(next_subject(&mut sub_a).await, "for a again");
    assert_eq!(next_subject(&mut sub_b).await, "for b");
    assert_eq!(next_subject(&mut sub_c).await, "for c");
    assert_eq!(
        c.wait_connections_async(&u.name, 1, support::EVENTUALLY)
            .await,
        1
    );
    let name = u.name.clone();
    let logins =
        blocking(move || courier().settled_login_attempts(&name, Duration::from_millis(300))).await;
    // The harness's own SELECT when it made the user was the first.
    assert_eq!(logins, 2, "one login for three subscriptions");
    let stats = support::emap::stats_of_user(&h, &u.name).await.unwrap();
    assert_eq!(stats.queued, 4);
    h.shutdown().await;
}

/// No backlog: 50 mails already in the INBOX when emap starts are never
/// delivered; the first mail after the start is. Courier's SELECT has no
/// UIDNEXT, so the watermark comes from emap's fallback (the UID of the
/// last message, plus one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filled_mailbox_delivers_no_backlog() {
    let Some(c) = server() else { return };
    let h = start(config());
    let u = c.user("backlog");
    let name = u.name.clone();
    blocking(move || {
        for i in 0..50 {
            courier().deliver(
                &name,
                &mail("sender@emap.test", &name, &format!("old {i}"), "x"),
            );
        }
    })
    .await;
    let mut sub = h
        .subscribe(cred(&u, c.imap_port), Filter::new())
        .await
        .unwrap();
    let stats = support::emap::stats_of_user(&h, &u.name).await.unwrap();
    assert_eq!(stats.watermark, Some(51), "last UID + 1: {stats:?}");
    deliver(&u, "new").await;
    let first = next(&mut sub).await;
    assert_eq!(first.subject(), Some("new"));
    assert_eq!(first.uid(), 51);
    let stats = support::emap::stats_of_user(&h, &u.name).await.unwrap();
    assert_eq!(stats.fetched, 1, "only the new mail was fetched: {stats:?}");
    h.shutdown().await;
}

/// SELECT without UIDNEXT after expunges at both ends (UIDs 1 and 4 of 4
/// gone: 2 messages, UIDs 2 and 3): the watermark is the last message's
/// UID + 1 = 4 — a UID, not the message count + 1 (3), and only a lower
/// bound of the real UIDNEXT (5) — yet the first mail after the start is
/// delivered, with UID 5, and nothing before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_without_uidnext_after_expunges_loses_and_repeats_nothing() {
    let Some(c) = server() else { return };
    let h = start(config());
    let u = c.user("nouidnext");
    let user = u.clone();
    blocking(move || {
        let c = courier();
        for i in 1..=4 {
            c.deliver(
                &user.name,
                &mail("sender@emap.test", &user.name, &format!("old {i}"), "x"),
            );
        }
        let mut imap = RawImap::connect(c.imap_port);
        imap.login_ok(&user.name, &user.password);
        let select = imap.select("INBOX");
        assert_eq!(RawImap::exists(&select), Some(4), "{select:?}");
        let stored = imap.command("UID STORE 1,4 +FLAGS.SILENT (\\Deleted)");
        assert!(is_ok(&stored), "{stored:?}");
        assert!(is_ok(&imap.command("EXPUNGE")));
        imap.logout();
    })
    .await;
    let mut sub = h
        .subscribe(cred(&u, c.imap_port), Filter::new())
        .await
        .unwrap();
    let stats = support::emap::stats_of_user(&h, &u.name).await.unwrap();
    assert_eq!(stats.watermark, Some(4), "UID 3 + 1: {stats:?}");
    deliver(&u, "after the start").await;
    let first = next(&mut sub).await;
    assert_eq!(first.subject(), Some("after the start"));
    assert_eq!(first.uid(), 5);
    deliver(&u, "later").await;
    assert_eq!(next_subject(&mut sub).await, "later");
    let stats = support::emap::stats_of_user(&h, &u.name).await.unwrap();
    assert_eq!(stats.fetched, 2, "nothing old was fetched: {stats:?}");
    h.shutdown().await;
}

/// Kick during IDLE (Courier's imapd killed, as an admin or a crash would):
/// emap reconnects, and mail delivered while it was down arrives exactly
/// once, followed by the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_during_idle_loses_and_repeats_nothing() {
    let Some(c) = server() else { return };
    let h = start(config());
    let u = c.user("kicked");
    let mut sub = h
        .subscribe(cred(&u, c.imap_port), Filter::new())
        .await
        .unwrap();
    deliver(&u, "before").await;
    assert_eq!(next_subject(&mut sub).await, "before");
    let s = until_stats(&h, c.imap_port, "idling", |s| {
        s.key.user == u.name && s.state == SessionState::Watching && s.idle
    })
    .await;
    assert_eq!(s.reconnects, 0);
    assert_eq!(
        c.wait_connections_async(&u.name, 1, support::EVENTUALLY)
            .await,
        1
    );
    let name = u.name.clone();
    assert!(blocking(move || courier().kick(&name)).await);
    // Delivered while the session is down or reconnecting.
    deliver(&u, "during").await;
    assert_eq!(next_subject(&mut sub).await, "during");
    deliver(&u, "after").await;
    assert_eq!(
        next_subject(&mut sub).await,
        "after",
        "no duplicate of 'during'"
    );
    let s = until_stats(&h, c.imap_port, "reconnected", |s| {
        s.key.user == u.name && s.state == SessionState::Watching
    })
    .await;
    assert!(s.reconnects >= 1, "{s:?}");
    assert_eq!(s.fetched, 3, "{s:?}");
    assert_eq!(
        c.wait_connections_async(&u.name, 1, support::EVENTUALLY)
            .await,
        1
    );
    h.shutdown().await;
}

/// A wrong password: Courier answers `NO Login failed.` after its fixed
/// 5 s delay (so a retry would show in the log only 5 s later: the proof
/// of "no retry" is that the session is gone when the error is reported);
/// emap reports `AuthenticationFailed` after that one attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_after_one_attempt() {
    let Some(c) = server() else { return };
    let h = start(config());
    let u = c.user("badpw");
    let err = h
        .subscribe(cred_with(&u, "wrong", c.imap_port), Filter::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AuthenticationFailed(_)), "{err:?}");
    // The session is gone, so nothing is left to try again; and the one
    // attempt it made is the only one the server saw.
    assert!(
        h.stats().await.unwrap().is_empty(),
        "the failed session is gone"
    );
    let name = u.name.clone();
    let failures = blocking(move || {
        support::wait_for(support::EVENTUALLY, || {
            let n = courier().login_failures(&name);
            (n > 0).then_some(n)
        })
    })
    .await;
    assert_eq!(failures, Some(1));
    assert_eq!(
        c.login_successes(&u.name),
        1,
        "only the harness's own, when it made the user"
    );
    h.shutdown().await;
}

/// The per-IP cap (`couriertcpd -maxperip`): with every slot held by other
/// clients, Courier closes emap's connections before any greeting; emap
/// backs off and retries, and connects once a slot frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_means_backoff_then_connect() {
    let Some(c) = server() else { return };
    let h = start(config());
    let u = c.user("capped");
    let port = c.capped_port;
    let mut held: Vec<RawImap> =
        blocking(move || (0..CAPPED_PER_IP).map(|_| RawImap::connect(port)).collect()).await;
    let refusals_before = c.cap_refusals();
    let subscribing = tokio::spawn({
        let h = h.clone();
        let cred = cred(&u, port);
        async move { h.subscribe(cred, Filter::new()).await }
    });
    let s = until_stats(&h, port, "refused twice and backing off", |s| {
        s.reconnects >= 2 && s.last_error.is_some()
    })
    .await;
    assert_ne!(s.state, SessionState::Failed, "{s:?}");
    assert!(
        c.cap_refusals() >= refusals_before + 2,
        "{}",
        c.log_tail(10)
    );
    assert_eq!(c.connections(&u.name), 0);
    // A slot frees: emap gets it.
    let freed = held.pop().unwrap();
    blocking(move || freed.logout()).await;
    let mut sub = tokio::time::timeout(support::EVENTUALLY, subscribing)
        .await
        .expect("emap never connected after a slot freed")
        .unwrap()
        .expect("subscribe failed");
    assert_eq!(c.connections(&u.name), 1);
    deliver(&u, "through the cap").await;
    assert_eq!(next_subject(&mut sub).await, "through the cap");
    h.shutdown().await;
    drop(held);
}

/// Courier without FAM still offers IDLE (`+ entering idle mode`) and
/// announces new mail at its `IMAP_IDLE_TIMEOUT` tick; the `[ALERT]` it
/// sends at LOGIN does not disturb emap. emap's stats say it idles rather
/// than polls — with FAM too. (Without FAM every command that touches the
/// maildir's watch waits ~1.2 s for gamin to give up on its server, so the
/// registry is left to end with the process instead of a LOGOUT.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fam_courier_is_still_watched_with_idle() {
    let Some(c) = server() else { return };
    let h = start(config());
    let (u, v) = (c.user("nofam"), c.user("fam"));
    let (without, with) = tokio::join!(
        h.subscribe(cred(&u, c.nofam_port), Filter::new()),
        h.subscribe(cred(&v, c.imap_port), Filter::new()),
    );
    let (mut without, mut with) = (without.unwrap(), with.unwrap());
    for (port, user) in [(c.nofam_port, &u), (c.imap_port, &v)] {
        let s = until_stats(&h, port, "watching", |s| s.state == SessionState::Watching).await;
        assert!(s.idle, "emap polls {}: {s:?}", user.name);
    }
    tokio::join!(deliver(&u, "no fam"), deliver(&v, "with fam"));
    assert_eq!(next_subject(&mut without).await, "no fam");
    assert_eq!(next_subject(&mut with).await, "with fam");
}

/// The test Courier is torn down with the test process: nothing of it
/// (authdaemond, couriertcpd, imapd, gam_server) outlives a test binary.
/// Checked from outside: a child test process starts Courier and exits;
/// its ports then refuse connections.
#[test]
fn courier_stops_when_the_test_process_exits() {
    if courier::unavailable().is_some() {
        return;
    }
    if std::env::var_os("EMAP_COURIER_CHILD").is_some() {
        // In the child: start Courier, report the ports and the directory.
        let c = courier();
        println!(
            "PORTS {} {} {} {}",
            c.imap_port,
            c.capped_port,
            c.nofam_port,
            c.dir().display()
        );
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "courier_stops_when_the_test_process_exits",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("EMAP_COURIER_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("PORTS ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("the child reported no ports: {stdout}"));
    let fields: Vec<&str> = line.split(' ').collect();
    let ports: Vec<u16> = fields[..3].iter().map(|p| p.parse().unwrap()).collect();
    let dir = std::path::PathBuf::from(fields[3]);
    let gone = support::wait_for(support::EVENTUALLY, || {
        (ports.iter().all(|&p| !courier::listening(p))
            && !dir.exists()
            && courier::processes_of(&dir).is_empty())
        .then_some(())
    });
    assert!(
        gone.is_some(),
        "Courier outlived its test process: {line}; processes: {:?}",
        courier::processes_of(&dir)
    );
}
