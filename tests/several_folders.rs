//! Several folders on one connection (issue 11 item 4):
//! `Credential::also_watch` adds folders — by name or by special use — to
//! the one connection of a credential. The session IDLEs on the main
//! folder and every `poll_interval` asks the others' `STATUS (UIDNEXT
//! UIDVALIDITY)` on the same connection, visiting (EXAMINE, fetch, EXAMINE
//! the main folder again) only a folder whose answer moved. Each folder has
//! its own UIDVALIDITY and watermark.
//!
//! Scripted servers (tests/support/fake.rs) play the sequences a real
//! server cannot be made to produce on demand: a reconnect in the middle of
//! a further folder's fetch, a new UIDVALIDITY in the further folder only,
//! STATUS answered NO, a folder deleted between STATUS and EXAMINE. The
//! real servers (Dovecot, Cyrus, Courier) prove the whole path, counting
//! the connections on the server: see the end of this file. Where the
//! server offers NOTIFY (RFC 5465: Dovecot), it reports the further
//! folders instead of the poll timer; elsewhere (Cyrus, Courier) the STATUS
//! check runs every `poll_interval`.

mod support;

use std::time::Duration;

use emap::{Auth, Config, Credential, Filter, Folder, SpecialUse, TlsMode};
use support::emap::{
    fake_cred, next, next_subject, scripted_config, start, stats_of, stats_of_user,
};
use support::fake::{FakeConn, FakeServer};
use support::servers::TestServer;
use support::{EVENTUALLY, RawImap, TestUser, blocking, is_ok, mail, message};

// ───────────────────────────── scripted servers ─────────────────────────────

/// INBOX and a further folder `Junk`, watched on one connection.
fn junk_too(port: u16) -> Credential {
    fake_cred(port).also_watch("Junk")
}

/// Answers `EXAMINE name` (checked) with `exists`, UIDNEXT and UIDVALIDITY.
async fn examine(c: &mut FakeConn, name: &str, exists: u32, uid_next: u32, validity: u32) {
    let (tag, rest) = c.expect("EXAMINE").await;
    assert_eq!(rest, name, "EXAMINE of the wrong mailbox");
    c.send(format!(
        "* {exists} EXISTS\r\n* OK [UIDVALIDITY {validity}] v\r\n* OK [UIDNEXT {uid_next}] n\r\n{tag} OK [READ-ONLY] done\r\n"
    ))
    .await;
}

/// Answers `STATUS name (UIDNEXT UIDVALIDITY)` (checked).
async fn status(c: &mut FakeConn, name: &str, uid_next: u32, validity: u32) {
    let (tag, rest) = c.expect("STATUS").await;
    assert_eq!(rest, format!("{name} (UIDNEXT UIDVALIDITY)"));
    c.send(format!(
        "* STATUS {name} (UIDNEXT {uid_next} UIDVALIDITY {validity})\r\n{tag} OK Status completed\r\n"
    ))
    .await;
}

/// Answers `STATUS name ...` with `NO`, as Dovecot does for a folder that
/// does not exist.
async fn status_no(c: &mut FakeConn, name: &str) {
    let (tag, rest) = c.expect("STATUS").await;
    assert!(rest.starts_with(name), "{rest}");
    c.send(format!(
        "{tag} NO [NONEXISTENT] Mailbox doesn't exist: {name}\r\n"
    ))
    .await;
}

/// The client's poll timer ends an IDLE (nothing announced).
async fn idle_round(c: &mut FakeConn) {
    let tag = c.idle().await;
    c.done(&tag).await;
}

/// Serves a client with nothing more to fetch until it leaves: IDLE and
/// DONE, NOOP, STATUS answered with `junk` — `(name, UIDNEXT,
/// UIDVALIDITY)`, or NO when `None` — LIST with `list`, LOGOUT. Any other
/// command panics: the script ends, the client reconnects, and the
/// test's connection count fails.
async fn quiet(c: &mut FakeConn, junk: Option<(&str, u32, u32)>, list: &str) {
    let mut idle_tag = None;
    while let Some(line) = c.line().await {
        if line.eq_ignore_ascii_case("DONE") {
            if let Some(t) = idle_tag.take() {
                c.send(format!("{t} OK Idle completed\r\n")).await;
            }
            continue;
        }
        let (tag, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let upper = rest.to_ascii_uppercase();
        let reply = if upper == "IDLE" {
            idle_tag = Some(tag.to_owned());
            "+ idling\r\n".to_owned()
        } else if upper == "NOOP" {
            format!("{tag} OK noop\r\n")
        } else if upper == "LOGOUT" {
            c.send(format!("* BYE bye\r\n{tag} OK bye\r\n")).await;
            return;
        } else if upper.starts_with("STATUS") {
            match junk {
                Some((name, next, validity)) => format!(
                    "* STATUS {name} (UIDNEXT {next} UIDVALIDITY {validity})\r\n{tag} OK s\r\n"
                ),
                None => format!("{tag} NO [NONEXISTENT] Mailbox doesn't exist\r\n"),
            }
        } else if upper.starts_with("LIST") {
            format!("{list}{tag} OK l\r\n")
        } else {
            panic!("unexpected command {line:?}");
        };
        c.send(reply).await;
    }
}

/// Announces INBOX message `exists` (UID `uid`) during IDLE, serves it as
/// the mail `sentinel`, then [`quiet`]: a test that receives the sentinel
/// right after the mails it expects knows nothing else was delivered.
async fn sentinel(c: &mut FakeConn, exists: u32, uid: u32, junk: Option<(&str, u32, u32)>) {
    let (tag, _) = c.announce(exists).await;
    c.send(FakeConn::fetch_ok(
        &tag,
        &[(exists, uid, &message("sentinel"))],
    ))
    .await;
    quiet(c, junk, "").await;
}

/// Login and the start-up of a connection whose INBOX is empty (UIDNEXT
/// `inbox_next`, UIDVALIDITY 1) with Junk's STATUS answered `junk_next`,
/// UIDVALIDITY `junk_validity`.
async fn start_up(c: &mut FakeConn, inbox_next: u32, junk_next: u32, junk_validity: u32) {
    c.greet_and_login("IDLE").await;
    examine(c, "INBOX", inbox_next - 1, inbox_next, 1).await;
    status(c, "Junk", junk_next, junk_validity).await;
}

/// Mail delivered to Junk while the session idles on INBOX reaches its
/// subscriber: the poll timer ends IDLE, STATUS shows Junk's UIDNEXT
/// moved, Junk is examined and its new mail fetched by UID, INBOX is
/// examined again and IDLE resumes — all on the one connection. A
/// subscriber filtering on `INBOX` does not get it; `Mail` names the folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_in_junk_reaches_its_subscriber_while_idling_on_inbox() {
    let server = FakeServer::start(|mut c: FakeConn, _| async move {
        start_up(&mut c, 1, 1, 5).await;
        idle_round(&mut c).await;
        status(&mut c, "Junk", 2, 5).await;
        examine(&mut c, "Junk", 1, 2, 5).await;
        let (tag, rest) = c.expect("UID FETCH").await;
        assert!(rest.starts_with("1:* "), "{rest}");
        c.send(FakeConn::fetch_ok(&tag, &[(1, 1, &message("in junk"))]))
            .await;
        examine(&mut c, "INBOX", 0, 1, 1).await;
        // Then INBOX's own mail, by IDLE.
        let (tag, rest) = c.announce(1).await;
        assert!(rest.starts_with("1:1 "), "{rest}");
        c.send(FakeConn::fetch_ok(&tag, &[(1, 1, &message("in inbox"))]))
            .await;
        quiet(&mut c, Some(("Junk", 2, 5)), "").await;
    })
    .await;
    let h = start(scripted_config());
    let mut all = h
        .subscribe(junk_too(server.port), Filter::new())
        .await
        .unwrap();
    let mut inbox = h
        .subscribe(junk_too(server.port), Filter::new().folder("INBOX"))
        .await
        .unwrap();
    let mut junk = h
        .subscribe(junk_too(server.port), Filter::new().folder("Junk"))
        .await
        .unwrap();
    let m = next(&mut junk).await;
    assert_eq!(m.subject(), Some("in junk"));
    assert_eq!(m.mailbox(), "Junk");
    assert_eq!(m.folder(), Some(&Folder::Named("Junk".into())));
    assert_eq!(next_subject(&mut all).await, "in junk");
    assert_eq!(next_subject(&mut all).await, "in inbox");
    // INBOX's first mail is INBOX's: Junk's never reached it.
    let m = next(&mut inbox).await;
    assert_eq!(m.subject(), Some("in inbox"));
    assert_eq!(m.mailbox(), "INBOX");
    assert_eq!(server.accepted(), 1, "one connection for both folders");
    let st = stats_of(&h, server.port).await.unwrap();
    assert_eq!(st.folders.len(), 2);
    assert_eq!(st.folders[1].folder, Folder::Named("Junk".into()));
    assert_eq!(st.folders[1].watermark, Some(2));
    assert_eq!(st.folders[0].watermark, Some(2));
    h.shutdown().await;
}

/// Mail in both folders at once, and more INBOX mail while the session is
/// away in Junk: INBOX's announced mail is fetched first, then Junk's on
/// the check, then INBOX's gap by UID when it is examined again. Each
/// exactly once — the sentinel comes right after the three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_in_both_folders_at_once_arrives_once_each() {
    let server = FakeServer::start(|mut c: FakeConn, _| async move {
        start_up(&mut c, 1, 1, 5).await;
        // Both at once: EXISTS in INBOX during IDLE; Junk's UIDNEXT moved.
        let (tag, _) = c.announce(1).await;
        c.send(FakeConn::fetch_ok(&tag, &[(1, 1, &message("inbox one"))]))
            .await;
        idle_round(&mut c).await;
        status(&mut c, "Junk", 2, 5).await;
        examine(&mut c, "Junk", 1, 2, 5).await;
        c.answer_fetch("UID FETCH", &[(1, 1, &message("junk one"))])
            .await;
        // Meanwhile INBOX got UID 2: its gap, fetched by UID.
        examine(&mut c, "INBOX", 2, 3, 1).await;
        let args = c
            .answer_fetch(
                "UID FETCH",
                &[(1, 1, &message("inbox one")), (2, 2, &message("inbox two"))],
            )
            .await;
        assert!(args.starts_with("2:* "), "{args}");
        sentinel(&mut c, 3, 3, Some(("Junk", 2, 5))).await;
    })
    .await;
    let h = start(scripted_config());
    let mut sub = h
        .subscribe(junk_too(server.port), Filter::new())
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(next_subject(&mut sub).await);
    }
    assert_eq!(got, ["inbox one", "junk one", "inbox two", "sentinel"]);
    assert_eq!(server.accepted(), 1);
    h.shutdown().await;
}

/// The connection is cut in the middle of Junk's fetch (after the first
/// of two mails): on the next connection Junk's STATUS still differs from
/// its last completed visit, so it is visited again, and its tracker
/// fetches what is left — the second mail — and not the first again.
/// INBOX's position is untouched. Nothing lost, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_in_the_middle_of_a_junk_fetch_loses_nothing_and_repeats_nothing() {
    let server = FakeServer::start(|mut c: FakeConn, n| async move {
        if n == 0 {
            start_up(&mut c, 1, 1, 5).await;
            idle_round(&mut c).await;
            status(&mut c, "Junk", 3, 5).await;
            examine(&mut c, "Junk", 2, 3, 5).await;
            let (_tag, rest) = c.expect("UID FETCH").await;
            assert!(rest.starts_with("1:* "), "{rest}");
            // The first mail, then the link dies: no second, no OK.
            c.send(FakeConn::fetch_response(1, 1, &message("junk one")))
                .await;
            return;
        }
        start_up(&mut c, 1, 3, 5).await;
        // Visited again: the rest of the gap, carefully (the cut fetch
        // counts as a failed attempt): which UIDs are pending, then the
        // lowest undelivered alone.
        examine(&mut c, "Junk", 2, 3, 5).await;
        let criteria = c.search(&[1, 2]).await;
        assert_eq!(criteria, "UID 1:*");
        let args = c
            .answer_fetch("UID FETCH", &[(2, 2, &message("junk two"))])
            .await;
        assert!(args.starts_with("2 "), "{args}");
        let criteria = c.search(&[]).await;
        assert_eq!(criteria, "UID 3:*");
        examine(&mut c, "INBOX", 0, 1, 1).await;
        sentinel(&mut c, 1, 1, Some(("Junk", 3, 5))).await;
    })
    .await;
    let h = start(scripted_config());
    let mut sub = h
        .subscribe(junk_too(server.port), Filter::new())
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next_subject(&mut sub).await);
    }
    assert_eq!(got, ["junk one", "junk two", "sentinel"]);
    assert_eq!(server.accepted(), 2);
    h.shutdown().await;
}

/// Junk's UIDVALIDITY changes (the folder was recreated) while INBOX's
/// stays: Junk starts a new epoch at its UIDNEXT — its three messages of
/// the new epoch are backlog, not delivered — and INBOX's watermark and
/// UIDVALIDITY are untouched. The next Junk mail arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_uidvalidity_in_junk_alone_starts_junk_over() {
    let server = FakeServer::start(|mut c: FakeConn, _| async move {
        start_up(&mut c, 7, 1, 5).await;
        idle_round(&mut c).await;
        status(&mut c, "Junk", 4, 9).await;
        examine(&mut c, "Junk", 3, 4, 9).await;
        // No fetch: a new epoch starts at UIDNEXT.
        examine(&mut c, "INBOX", 6, 7, 1).await;
        idle_round(&mut c).await;
        status(&mut c, "Junk", 5, 9).await;
        examine(&mut c, "Junk", 4, 5, 9).await;
        let args = c
            .answer_fetch("UID FETCH", &[(4, 4, &message("new epoch"))])
            .await;
        assert!(args.starts_with("4:* "), "{args}");
        examine(&mut c, "INBOX", 6, 7, 1).await;
        sentinel(&mut c, 7, 7, Some(("Junk", 5, 9))).await;
    })
    .await;
    let h = start(scripted_config());
    let mut sub = h
        .subscribe(junk_too(server.port), Filter::new())
        .await
        .unwrap();
    let m = next(&mut sub).await;
    assert_eq!(m.subject(), Some("new epoch"));
    assert_eq!((m.mailbox(), m.uid_validity(), m.uid()), ("Junk", 9, 4));
    assert_eq!(next_subject(&mut sub).await, "sentinel");
    let st = stats_of(&h, server.port).await.unwrap();
    assert_eq!(st.validity_changes, 1);
    assert_eq!(
        (st.folders[0].uid_validity, st.folders[0].watermark),
        (Some(1), Some(8))
    );
    assert_eq!(
        (st.folders[1].uid_validity, st.folders[1].watermark),
        (Some(9), Some(5))
    );
    assert_eq!(server.accepted(), 1);
    h.shutdown().await;
}

/// Junk does not exist: its STATUS is answered NO. The session neither
/// fails nor reconnects — INBOX keeps working — and reports Junk missing
/// with a count. Junk is then created: found at the next check, its
/// position fixed at its UIDNEXT, and its mail delivered. Then Junk is
/// deleted between STATUS and EXAMINE: EXAMINE refused, counted again,
/// INBOX examined again, and INBOX's mail still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_deleted_junk_folder_is_counted_and_inbox_keeps_working() {
    let (tx, rx) = tokio::sync::watch::channel(0u32);
    let rx = std::sync::Mutex::new(Some(rx));
    let server = FakeServer::start(move |mut c: FakeConn, _| {
        let mut step = rx.lock().unwrap().take().expect("one connection");
        async move {
            c.greet_and_login("IDLE").await;
            examine(&mut c, "INBOX", 0, 1, 1).await;
            status_no(&mut c, "Junk").await;
            let (tag, _) = c.announce(1).await;
            c.send(FakeConn::fetch_ok(&tag, &[(1, 1, &message("inbox one"))]))
                .await;
            // Missing, checked again at every poll, until the test has
            // seen it reported.
            loop {
                idle_round(&mut c).await;
                if *step.borrow_and_update() > 0 {
                    break;
                }
                status_no(&mut c, "Junk").await;
            }
            // Created (empty), then a mail.
            status(&mut c, "Junk", 1, 3).await;
            idle_round(&mut c).await;
            status(&mut c, "Junk", 2, 3).await;
            examine(&mut c, "Junk", 1, 2, 3).await;
            c.answer_fetch("UID FETCH", &[(1, 1, &message("junk one"))])
                .await;
            examine(&mut c, "INBOX", 1, 2, 1).await;
            // Deleted between STATUS and EXAMINE.
            idle_round(&mut c).await;
            status(&mut c, "Junk", 3, 3).await;
            let (tag, rest) = c.expect("EXAMINE").await;
            assert_eq!(rest, "Junk");
            c.send(format!(
                "{tag} NO [NONEXISTENT] Mailbox doesn't exist: Junk\r\n"
            ))
            .await;
            examine(&mut c, "INBOX", 1, 2, 1).await;
            sentinel(&mut c, 2, 2, None).await;
        }
    })
    .await;
    let h = start(scripted_config());
    let mut sub = h
        .subscribe(junk_too(server.port), Filter::new())
        .await
        .unwrap();
    assert_eq!(next_subject(&mut sub).await, "inbox one");
    let st = support::until_some("Junk reported missing", async || {
        stats_of(&h, server.port)
            .await
            .filter(|s| s.folders.get(1).is_some_and(|f| f.missing))
    })
    .await;
    assert!(st.folders[1].failures >= 1);
    assert!(!st.folders[0].missing);
    assert_eq!(st.last_error, None);
    tx.send(1).unwrap();
    assert_eq!(next_subject(&mut sub).await, "junk one");
    assert_eq!(next_subject(&mut sub).await, "sentinel");
    let st = stats_of(&h, server.port).await.unwrap();
    assert!(st.folders[1].missing, "the refused EXAMINE is reported");
    assert_eq!(st.reconnects, 0);
    assert_eq!(server.accepted(), 1, "the main folder kept its connection");
    h.shutdown().await;
}

/// A further folder by special use is found with LIST (the attribute, not
/// the name) and examined by its listed name; STATUS names it the same
/// way. A special use no folder carries is reported missing without
/// failing the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_further_folder_by_special_use_is_found_by_list() {
    let server = FakeServer::start(|mut c: FakeConn, _| async move {
        c.greet_and_login("IDLE SPECIAL-USE").await;
        examine(&mut c, "INBOX", 0, 1, 1).await;
        let (tag, rest) = c.expect("LIST").await;
        assert_eq!(rest, "\"\" \"*\" RETURN (SPECIAL-USE)");
        c.send(format!(
            "* LIST (\\HasNoChildren) \"/\" INBOX\r\n\
             * LIST (\\HasNoChildren \\Junk) \"/\" \"[Gmail]/Spam\"\r\n{tag} OK done\r\n"
        ))
        .await;
        // Trash is not listed: missing, no STATUS for it.
        status(&mut c, "\"[Gmail]/Spam\"", 1, 4).await;
        idle_round(&mut c).await;
        // Trash is looked for again.
        let (tag, _) = c.expect("LIST").await;
        c.send(format!(
            "* LIST (\\HasNoChildren \\Junk) \"/\" \"[Gmail]/Spam\"\r\n{tag} OK done\r\n"
        ))
        .await;
        status(&mut c, "\"[Gmail]/Spam\"", 2, 4).await;
        examine(&mut c, "\"[Gmail]/Spam\"", 1, 2, 4).await;
        c.answer_fetch("UID FETCH", &[(1, 1, &message("spam one"))])
            .await;
        examine(&mut c, "INBOX", 0, 1, 1).await;
        quiet(
            &mut c,
            Some(("\"[Gmail]/Spam\"", 2, 4)),
            "* LIST (\\Junk) \"/\" \"[Gmail]/Spam\"\r\n",
        )
        .await;
    })
    .await;
    let h = start(scripted_config());
    let cred = fake_cred(server.port)
        .also_watch(SpecialUse::Junk)
        .also_watch(SpecialUse::Trash);
    let mut sub = h
        .subscribe(cred, Filter::new().folder(SpecialUse::Junk))
        .await
        .unwrap();
    let m = next(&mut sub).await;
    assert_eq!(m.subject(), Some("spam one"));
    assert_eq!(m.mailbox(), "[Gmail]/Spam");
    assert_eq!(m.folder(), Some(&Folder::SpecialUse(SpecialUse::Junk)));
    let st = stats_of(&h, server.port).await.unwrap();
    let trash = st
        .folders
        .iter()
        .find(|f| f.folder == Folder::SpecialUse(SpecialUse::Trash))
        .unwrap();
    assert!(trash.missing && trash.failures >= 1);
    assert_eq!(server.accepted(), 1);
    h.shutdown().await;
}

/// A server without IDLE is polled: every `poll_interval` a NOOP, then
/// the further folders' STATUS — the same check as beside IDLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_idle_the_further_folders_are_checked_after_each_noop() {
    let server = FakeServer::start(|mut c: FakeConn, _| async move {
        c.greet_and_login("").await;
        examine(&mut c, "INBOX", 0, 1, 1).await;
        status(&mut c, "Junk", 1, 5).await;
        let (tag, _) = c.expect("NOOP").await;
        c.send(format!("{tag} OK noop\r\n")).await;
        status(&mut c, "Junk", 2, 5).await;
        examine(&mut c, "Junk", 1, 2, 5).await;
        c.answer_fetch("UID FETCH", &[(1, 1, &message("polled junk"))])
            .await;
        examine(&mut c, "INBOX", 0, 1, 1).await;
        quiet(&mut c, Some(("Junk", 2, 5)), "").await;
    })
    .await;
    let h = start(Config {
        poll_interval: Duration::from_millis(50),
        ..scripted_config()
    });
    let mut sub = h
        .subscribe(junk_too(server.port), Filter::new())
        .await
        .unwrap();
    assert_eq!(next_subject(&mut sub).await, "polled junk");
    h.shutdown().await;
}

/// The NOTIFY command emap sends for a further folder `Junk`.
const NOTIFY_JUNK: &str =
    "SET (selected (MessageNew MessageExpunge)) (mailboxes Junk (MessageNew MessageExpunge))";

/// A server offering NOTIFY (RFC 5465): after the start-up STATUS, emap
/// asks it to report Junk; IDLE then runs with no poll timer (the poll
/// interval is an hour here), and the unsolicited `* STATUS Junk` the
/// server sends during IDLE ends it at once: STATUS, EXAMINE Junk, fetch,
/// EXAMINE INBOX, IDLE — NOTIFY is not sent again for the same folders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_reports_junk_during_idle_without_polling() {
    let server = FakeServer::start(|mut c: FakeConn, _| async move {
        c.greet_and_login("IDLE NOTIFY").await;
        examine(&mut c, "INBOX", 0, 1, 1).await;
        status(&mut c, "Junk", 1, 5).await;
        let (tag, rest) = c.expect("NOTIFY").await;
        assert_eq!(rest, NOTIFY_JUNK);
        c.send(format!("{tag} OK NOTIFY completed\r\n")).await;
        let tag = c.idle().await;
        c.send("* STATUS Junk (MESSAGES 1 UIDNEXT 2 UIDVALIDITY 5)\r\n")
            .await;
        c.done(&tag).await;
        status(&mut c, "Junk", 2, 5).await;
        examine(&mut c, "Junk", 1, 2, 5).await;
        c.answer_fetch("UID FETCH", &[(1, 1, &message("notified junk"))])
            .await;
        examine(&mut c, "INBOX", 0, 1, 1).await;
        quiet(&mut c, Some(("Junk", 2, 5)), "").await;
    })
    .await;
    let h = start(Config {
        poll_interval: Duration::from_secs(3600),
        ..scripted_config()
    });
    let mut sub = h
        .subscribe(junk_too(server.port), Filter::new())
        .await
        .unwrap();
    assert_eq!(next_subject(&mut sub).await, "notified junk");
    assert_eq!(
        server
            .commands()
            .iter()
            .filter(|l| l.contains("NOTIFY"))
            .count(),
        1
    );
    assert_eq!(server.accepted(), 1);
    h.shutdown().await;
}

/// NOTIFY offered but refused: the session checks Junk every
/// `poll_interval` with STATUS, as on a server without NOTIFY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_notify_falls_back_to_status_polling() {
    let server = FakeServer::start(|mut c: FakeConn, _| async move {
        c.greet_and_login("IDLE NOTIFY").await;
        examine(&mut c, "INBOX", 0, 1, 1).await;
        status(&mut c, "Junk", 1, 5).await;
        let (tag, _) = c.expect("NOTIFY").await;
        c.send(format!("{tag} BAD Error in IMAP command NOTIFY\r\n"))
            .await;
        idle_round(&mut c).await;
        status(&mut c, "Junk", 2, 5).await;
        examine(&mut c, "Junk", 1, 2, 5).await;
        c.answer_fetch("UID FETCH", &[(1, 1, &message("polled junk"))])
            .await;
        examine(&mut c, "INBOX", 0, 1, 1).await;
        // NOTIFY is asked again only if the folders change; here they do
        // not, so the client keeps polling.
        let tag = c.idle().await;
        c.done(&tag).await;
        let (tag, rest) = c.expect("STATUS").await;
        assert!(rest.starts_with("Junk "), "{rest}");
        c.send(format!(
            "* STATUS Junk (UIDNEXT 2 UIDVALIDITY 5)\r\n{tag} OK s\r\n"
        ))
        .await;
        quiet(&mut c, Some(("Junk", 2, 5)), "").await;
    })
    .await;
    let h = start(scripted_config());
    let mut sub = h
        .subscribe(junk_too(server.port), Filter::new())
        .await
        .unwrap();
    assert_eq!(next_subject(&mut sub).await, "polled junk");
    support::until("a second STATUS round", async || {
        server
            .commands()
            .iter()
            .filter(|l| l.contains("STATUS Junk"))
            .count()
            >= 3
    })
    .await;
    h.shutdown().await;
}

/// INBOX mail ends every IDLE round, again and again, sooner than
/// `poll_interval`: Junk is checked all the same, one `poll_interval` after
/// the last check — the deadline is not started over by each round — and
/// its mail arrives. The server announces INBOX mail in every IDLE until
/// the client sends STATUS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_mail_more_often_than_the_poll_interval_does_not_starve_junk() {
    let server = FakeServer::start(|mut c: FakeConn, _| async move {
        start_up(&mut c, 1, 1, 5).await;
        let mut n = 0;
        loop {
            let line = c.line().await.expect("the client left");
            let (tag, rest) = line.split_once(' ').unwrap();
            if rest.starts_with("STATUS") {
                c.send(format!(
                    "* STATUS Junk (UIDNEXT 2 UIDVALIDITY 5)\r\n{tag} OK s\r\n"
                ))
                .await;
                break;
            }
            assert_eq!(rest, "IDLE", "{line:?}");
            n += 1;
            c.send(format!("+ idling\r\n* {n} EXISTS\r\n")).await;
            c.done(tag).await;
            let (tag, _) = c.expect("FETCH").await;
            c.send(FakeConn::fetch_ok(&tag, &[(n, n, &message("inbox"))]))
                .await;
        }
        examine(&mut c, "Junk", 1, 2, 5).await;
        c.answer_fetch("UID FETCH", &[(1, 1, &message("junk one"))])
            .await;
        examine(&mut c, "INBOX", n, n + 1, 1).await;
        quiet(&mut c, Some(("Junk", 2, 5)), "").await;
    })
    .await;
    let h = start(scripted_config());
    let mut junk = h
        .subscribe(junk_too(server.port), Filter::new().folder("Junk"))
        .await
        .unwrap();
    assert_eq!(next_subject(&mut junk).await, "junk one");
    assert_eq!(server.accepted(), 1);
    h.shutdown().await;
}

/// A Junk folder whose visit fails on every connection (the server drops
/// the link at its EXAMINE; its STATUS lacks UIDNEXT, so every connect
/// asks for a visit) does not keep INBOX from being watched: the
/// subscribe resolves, and INBOX's mail arrives on the next connection,
/// whose INBOX gap is fetched before Junk is visited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_further_folder_failing_at_every_connect_does_not_stop_inbox() {
    let server = FakeServer::start(|mut c: FakeConn, n| async move {
        c.greet_and_login("IDLE").await;
        let (inbox_next, exists) = if n == 0 { (1, 0) } else { (2, 1) };
        examine(&mut c, "INBOX", exists, inbox_next, 1).await;
        let (tag, rest) = c.expect("STATUS").await;
        assert!(rest.starts_with("Junk "), "{rest}");
        c.send(format!("* STATUS Junk (UIDVALIDITY 5)\r\n{tag} OK s\r\n"))
            .await;
        if n == 1 {
            // The mail that arrived meanwhile: INBOX's gap, by UID.
            c.answer_fetch("UID FETCH", &[(1, 1, &message("inbox one"))])
                .await;
        }
        // EXAMINE Junk: the link dies, every time.
        c.expect("EXAMINE").await;
    })
    .await;
    let h = start(scripted_config());
    let mut sub = tokio::time::timeout(
        support::EVENTUALLY,
        h.subscribe(junk_too(server.port), Filter::new()),
    )
    .await
    .expect("subscribe never resolved")
    .unwrap();
    assert_eq!(next_subject(&mut sub).await, "inbox one");
    assert!(server.accepted() >= 2);
    h.shutdown().await;
}

/// Two further folders that the server resolves to one mailbox — `\Junk`
/// by special use, and `Spam` by name, which the server marks `\Junk` —
/// are watched once: Spam's mail is delivered once (the sentinel follows
/// it), and the repeat is visible in the folder statistics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mailbox_watched_by_special_use_and_by_name_delivers_once() {
    let server = FakeServer::start(|mut c: FakeConn, _| async move {
        c.greet_and_login("IDLE SPECIAL-USE").await;
        examine(&mut c, "INBOX", 0, 1, 1).await;
        // Spam's UIDNEXT is 1 until the first IDLE, then 2 (one mail).
        let (mut idled, mut visited, mut sentinel_sent) = (false, false, false);
        let mut idle_tag = None;
        while let Some(line) = c.line().await {
            if line.eq_ignore_ascii_case("DONE") {
                if let Some(t) = idle_tag.take() {
                    c.send(format!("{t} OK Idle completed\r\n")).await;
                }
                continue;
            }
            let (tag, rest) = line.split_once(' ').unwrap();
            let reply = if rest == "IDLE" {
                idled = true;
                idle_tag = Some(tag.to_owned());
                if visited && !sentinel_sent {
                    sentinel_sent = true;
                    "+ idling\r\n* 1 EXISTS\r\n".to_owned()
                } else {
                    "+ idling\r\n".to_owned()
                }
            } else if rest.starts_with("LIST") {
                format!(
                    "* LIST (\\HasNoChildren) \"/\" INBOX\r\n\
                     * LIST (\\HasNoChildren \\Junk) \"/\" Spam\r\n{tag} OK l\r\n"
                )
            } else if rest.starts_with("STATUS") {
                assert!(rest.starts_with("STATUS Spam "), "{rest}");
                let next = if idled { 2 } else { 1 };
                format!("* STATUS Spam (UIDNEXT {next} UIDVALIDITY 4)\r\n{tag} OK s\r\n")
            } else if rest == "EXAMINE Spam" {
                format!(
                    "* 1 EXISTS\r\n* OK [UIDVALIDITY 4] v\r\n* OK [UIDNEXT 2] n\r\n{tag} OK [READ-ONLY] e\r\n"
                )
            } else if rest == "EXAMINE INBOX" {
                visited = true;
                let (exists, next) = if sentinel_sent { (1, 2) } else { (0, 1) };
                format!(
                    "* {exists} EXISTS\r\n* OK [UIDVALIDITY 1] v\r\n* OK [UIDNEXT {next}] n\r\n{tag} OK [READ-ONLY] e\r\n"
                )
            } else if rest.starts_with("UID FETCH") {
                String::from_utf8(FakeConn::fetch_ok(tag, &[(1, 1, &message("spam one"))]))
                    .unwrap()
            } else if rest.starts_with("FETCH") {
                String::from_utf8(FakeConn::fetch_ok(tag, &[(1, 1, &message("sentinel"))]))
                    .unwrap()
            } else if rest == "LOGOUT" {
                c.send(format!("* BYE bye\r\n{tag} OK bye\r\n")).await;
                return;
            } else {
                format!("{tag} OK done\r\n")
            };
            c.send(reply).await;
        }
    })
    .await;
    let h = start(scripted_config());
    let cred = fake_cred(server.port)
        .also_watch(SpecialUse::Junk)
        .also_watch("Spam");
    let mut sub = h.subscribe(cred, Filter::new()).await.unwrap();
    let m = next(&mut sub).await;
    assert_eq!(m.subject(), Some("spam one"));
    assert_eq!(m.folder(), Some(&Folder::SpecialUse(SpecialUse::Junk)));
    assert_eq!(next_subject(&mut sub).await, "sentinel");
    let st = stats_of(&h, server.port).await.unwrap();
    let spam = &st.folders[2];
    assert_eq!(spam.folder, Folder::Named("Spam".into()));
    assert_eq!(spam.same_as, Some(Folder::SpecialUse(SpecialUse::Junk)));
    assert_eq!(st.folders[1].same_as, None);
    assert_eq!(server.accepted(), 1);
    h.shutdown().await;
}

/// A new UIDVALIDITY in Junk voids Junk's kept mail only: INBOX mail that
/// arrived before it is still replayed to a late subscriber reaching back
/// (`since`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_uidvalidity_in_junk_keeps_inbox_mail_for_late_subscribers() {
    let server = FakeServer::start(|mut c: FakeConn, _| async move {
        start_up(&mut c, 1, 1, 5).await;
        let (tag, _) = c.announce(1).await;
        c.send(FakeConn::fetch_ok(&tag, &[(1, 1, &message("inbox one"))]))
            .await;
        idle_round(&mut c).await;
        status(&mut c, "Junk", 4, 9).await;
        examine(&mut c, "Junk", 3, 4, 9).await;
        examine(&mut c, "INBOX", 1, 2, 1).await;
        sentinel(&mut c, 2, 2, Some(("Junk", 4, 9))).await;
    })
    .await;
    // No look-back: only the replay window answers the late subscriber.
    let h = start(Config {
        look_back_limit: 0,
        ..scripted_config()
    });
    let mut sub = h
        .subscribe(junk_too(server.port), Filter::new())
        .await
        .unwrap();
    assert_eq!(next_subject(&mut sub).await, "inbox one");
    assert_eq!(next_subject(&mut sub).await, "sentinel");
    let st = stats_of(&h, server.port).await.unwrap();
    assert_eq!(st.validity_changes, 1);
    let mut late = h
        .subscribe(
            junk_too(server.port),
            Filter::new().since(std::time::UNIX_EPOCH),
        )
        .await
        .unwrap();
    assert_eq!(next_subject(&mut late).await, "inbox one");
    assert_eq!(next_subject(&mut late).await, "sentinel");
    h.shutdown().await;
}

/// NOTIFY reports a further folder by the name the server uses, and
/// `INBOX` is case-insensitive: a `* STATUS inbox` during IDLE is the
/// further folder `INBOX` (the main folder being `Work`), and starts the
/// check at once — the poll interval is an hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_names_inbox_in_any_case() {
    let server = FakeServer::start(|mut c: FakeConn, _| async move {
        c.greet_and_login("IDLE NOTIFY").await;
        examine(&mut c, "Work", 0, 1, 1).await;
        status(&mut c, "INBOX", 1, 5).await;
        let (tag, rest) = c.expect("NOTIFY").await;
        assert_eq!(
            rest,
            "SET (selected (MessageNew MessageExpunge)) (mailboxes INBOX (MessageNew MessageExpunge))"
        );
        c.send(format!("{tag} OK NOTIFY completed\r\n")).await;
        let tag = c.idle().await;
        c.send("* STATUS inbox (MESSAGES 1 UIDNEXT 2 UIDVALIDITY 5)\r\n")
            .await;
        c.done(&tag).await;
        status(&mut c, "INBOX", 2, 5).await;
        examine(&mut c, "INBOX", 1, 2, 5).await;
        c.answer_fetch("UID FETCH", &[(1, 1, &message("notified inbox"))])
            .await;
        examine(&mut c, "Work", 0, 1, 1).await;
        quiet(&mut c, Some(("INBOX", 2, 5)), "").await;
    })
    .await;
    let h = start(Config {
        poll_interval: Duration::from_secs(3600),
        ..scripted_config()
    });
    let cred = fake_cred(server.port).mailbox("Work").also_watch("inbox");
    let mut sub = h.subscribe(cred, Filter::new()).await.unwrap();
    assert_eq!(next_subject(&mut sub).await, "notified inbox");
    assert_eq!(server.accepted(), 1);
    h.shutdown().await;
}

// ─────────────────────────────── real servers ───────────────────────────────

/// Plaintext credential of `user` on `s`.
fn server_cred(s: &'static dyn TestServer, user: &TestUser) -> Credential {
    Credential::new(
        "127.0.0.1",
        &user.name,
        Auth::password(user.password.as_str()),
    )
    .port(s.imap_port())
    .tls(TlsMode::None)
}

/// Checks further folders every 200 ms; reconnects within 50–500 ms.
fn server_config() -> Config {
    Config {
        poll_interval: Duration::from_millis(200),
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        linger: Duration::from_millis(300),
        ..Config::default()
    }
}

/// On a real server: INBOX and the folder `junk` (named `junk_name` on the
/// server) watched by one credential. Mail delivered to INBOX by LMTP and
/// mail put into Junk (APPEND, as a filter would) each reach the
/// subscriber of its folder, and a subscriber of both gets both; the
/// server counts exactly one connection for the credential, before and
/// after, and the session never reconnected. Junk's watermark moved past
/// its mail, by its own tracker.
async fn junk_mail_reaches_its_subscriber_on_one_connection(
    s: &'static dyn TestServer,
    user: TestUser,
    junk: Folder,
    junk_name: &'static str,
) {
    let h = start(server_config());
    let cred = server_cred(s, &user).also_watch(junk.clone());
    let mut inbox = h
        .subscribe(cred.clone(), Filter::new().folder("INBOX"))
        .await
        .unwrap();
    let mut in_junk = h
        .subscribe(cred.clone(), Filter::new().folder(junk.clone()))
        .await
        .unwrap();
    let mut all = h.subscribe(cred, Filter::new()).await.unwrap();
    let name = user.name.clone();
    let connections = blocking(move || s.wait_connections(&name, 1, EVENTUALLY)).await;
    assert_eq!(connections, 1, "one connection per credential");

    let (u, to) = (user.clone(), user.name.clone());
    blocking(move || {
        s.deliver(&to, &mail("sender@emap.test", &to, "to inbox", "hello"));
        s.append(
            &u,
            junk_name,
            &mail("sender@emap.test", &to, "to junk", "spam?"),
        );
    })
    .await;
    let m = next(&mut in_junk).await;
    assert_eq!(m.subject(), Some("to junk"));
    assert_eq!(m.mailbox(), junk_name);
    assert_eq!(m.folder(), Some(&junk));
    let m = next(&mut inbox).await;
    assert_eq!(m.subject(), Some("to inbox"));
    assert_eq!(m.mailbox(), "INBOX");
    let mut both = [next_subject(&mut all).await, next_subject(&mut all).await];
    both.sort();
    assert_eq!(both, ["to inbox", "to junk"]);

    // APPEND used a connection of its own: wait for it to be gone.
    let name = user.name.clone();
    let connections = blocking(move || s.wait_connections(&name, 1, EVENTUALLY)).await;
    assert_eq!(connections, 1, "still one connection per credential");
    let st = stats_of_user(&h, &user.name).await.unwrap();
    assert_eq!(st.reconnects, 0, "{st:?}");
    assert_eq!(st.folders.len(), 2);
    assert_eq!(st.folders[1].mailbox.as_deref(), Some(junk_name));
    assert_eq!(st.folders[1].watermark, Some(2), "{st:?}");
    assert_eq!(st.folders[0].watermark, Some(2), "{st:?}");
    h.shutdown().await;
}

/// Dovecot 2.3 (which offers NOTIFY: it reports Junk, and the STATUS
/// check runs at connect and on its reports): Junk by special use — the
/// configuration marks `Junk` with `\Junk`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_junk_mail_reaches_its_subscriber_on_one_connection() {
    let s = support::dovecot();
    let user = s.user("folders");
    let u = user.clone();
    blocking(move || s.create_junk(&u)).await;
    junk_mail_reaches_its_subscriber_on_one_connection(
        s,
        user,
        Folder::SpecialUse(SpecialUse::Junk),
        "Junk",
    )
    .await;
}

/// Cyrus IMAP 3.6 (no NOTIFY): Junk created with `CREATE Junk (USE
/// (\Junk))` (RFC 6154 CREATE-SPECIAL-USE) and watched by special use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cyrus_junk_mail_reaches_its_subscriber_on_one_connection() {
    let s = support::cyrus::cyrus();
    let user = s.user("folders");
    let u = user.clone();
    blocking(move || {
        let mut imap = RawImap::connect(s.imap_port);
        imap.login_ok(&u.name, &u.password);
        let lines = imap.command("CREATE Junk (USE (\\Junk))");
        assert!(is_ok(&lines), "{lines:?}");
        imap.logout();
    })
    .await;
    junk_mail_reaches_its_subscriber_on_one_connection(
        s,
        user,
        Folder::SpecialUse(SpecialUse::Junk),
        "Junk",
    )
    .await;
}

/// Courier IMAP 5.0 (no NOTIFY, no SPECIAL-USE): Junk by name,
/// `INBOX.Junk` in Courier's namespace. Skipped where the Courier harness
/// cannot run (not root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn courier_junk_mail_reaches_its_subscriber_on_one_connection() {
    if let Some(why) = support::courier::unavailable() {
        eprintln!("skipping: {why}");
        return;
    }
    let s = support::courier::courier();
    let user = s.user("folders");
    let u = user.clone();
    blocking(move || s.create_mailbox(&u, "INBOX.Junk")).await;
    junk_mail_reaches_its_subscriber_on_one_connection(
        s,
        user,
        Folder::Named("INBOX.Junk".into()),
        "INBOX.Junk",
    )
    .await;
}

/// Closes the gap ARCHITECTURE.md named: the special use moves to another
/// folder between two connects — with the same UIDVALIDITY, as two
/// folders of one server may have — and the old folder's watermark (5)
/// is not applied to the new one, whose 40 messages (UIDNEXT 50) are
/// backlog: no `UID FETCH 5:*`, the new folder starts at its UIDNEXT, and
/// its next mail (UID 50) arrives. Before, the session fetched the new
/// folder's backlog from UID 5 on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_special_use_moved_to_another_folder_with_the_same_uidvalidity_starts_over() {
    let server = FakeServer::start(|mut c: FakeConn, n| async move {
        c.greet_and_login("IDLE SPECIAL-USE").await;
        let (tag, _) = c.expect("LIST").await;
        let name = if n == 0 { "Junk" } else { "Spam" };
        c.send(format!("* LIST (\\Junk) \"/\" {name}\r\n{tag} OK l\r\n"))
            .await;
        if n == 0 {
            examine(&mut c, "Junk", 4, 5, 7).await;
            c.idle().await;
            c.send("* BYE going down\r\n").await;
            return;
        }
        examine(&mut c, "Spam", 40, 50, 7).await;
        let (tag, rest) = c.announce(41).await;
        assert!(rest.starts_with("41:41 "), "{rest}");
        c.send(FakeConn::fetch_ok(&tag, &[(41, 50, &message("in spam"))]))
            .await;
        c.serve().await;
    })
    .await;
    let h = start(scripted_config());
    let mut sub = h
        .subscribe(
            fake_cred(server.port).special_use(SpecialUse::Junk),
            Filter::new(),
        )
        .await
        .unwrap();
    let m = next(&mut sub).await;
    assert_eq!(
        (m.subject(), m.mailbox(), m.uid()),
        (Some("in spam"), "Spam", 50)
    );
    assert_eq!(server.accepted(), 2);
    h.shutdown().await;
}

/// Dovecot's NOTIFY alone brings Junk's mail: the poll interval is an
/// hour, so without NOTIFY the mail would not arrive within the test; one
/// connection, counted by Dovecot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_notify_reports_junk_without_polling() {
    let s = support::dovecot();
    let user = s.user("notify");
    let u = user.clone();
    blocking(move || s.create_junk(&u)).await;
    let h = start(Config {
        poll_interval: Duration::from_secs(3600),
        ..server_config()
    });
    let cred = server_cred(s, &user).also_watch(SpecialUse::Junk);
    let mut sub = h.subscribe(cred, Filter::new()).await.unwrap();
    let (u, to) = (user.clone(), user.name.clone());
    blocking(move || {
        s.append(
            &u,
            "Junk",
            &mail("sender@emap.test", &to, "notified", "spam?"),
        );
    })
    .await;
    let m = next(&mut sub).await;
    assert_eq!((m.subject(), m.mailbox()), (Some("notified"), "Junk"));
    let name = user.name.clone();
    let connections = blocking(move || s.wait_connections(&name, 1, EVENTUALLY)).await;
    assert_eq!(connections, 1);
    h.shutdown().await;
}

/// The look-back and the replay work per folder. Mail put into Junk (and
/// INBOX) before the session exists is old mail: a subscriber whose
/// `max_age` reaches back gets both, Junk's from Junk's own look-back
/// (below Junk's first watermark, fixed by its first STATUS), each once; a
/// subscriber without `max_age` gets neither. A late subscriber with
/// `max_age` gets both again from the replay window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_junk_mail_is_found_by_its_own_look_back_and_replayed() {
    let s = support::dovecot();
    let user = s.user("lookback");
    let (u, to) = (user.clone(), user.name.clone());
    blocking(move || {
        s.create_junk(&u);
        s.append(&u, "Junk", &mail("sender@emap.test", &to, "old junk", "x"));
        s.append(
            &u,
            "INBOX",
            &mail("sender@emap.test", &to, "old inbox", "x"),
        );
    })
    .await;
    let h = start(server_config());
    let cred = server_cred(s, &user).also_watch(SpecialUse::Junk);
    let mut live = h.subscribe(cred.clone(), Filter::new()).await.unwrap();
    let hour = Duration::from_secs(3600);
    let mut old = h
        .subscribe(cred.clone(), Filter::new().max_age(hour))
        .await
        .unwrap();
    let mut got = [next(&mut old).await, next(&mut old).await];
    got.sort_by_key(|m| m.mailbox().to_owned());
    assert_eq!(
        got.iter()
            .map(|m| (m.subject().unwrap(), m.mailbox()))
            .collect::<Vec<_>>(),
        [("old inbox", "INBOX"), ("old junk", "Junk")]
    );
    // Live mail after: the next mail of either subscriber is the sentinel
    // (nothing old twice, nothing old to the live subscriber).
    let to = user.name.clone();
    blocking(move || s.deliver(&to, &mail("sender@emap.test", &to, "sentinel", "x"))).await;
    assert_eq!(next_subject(&mut old).await, "sentinel");
    assert_eq!(next_subject(&mut live).await, "sentinel");
    // A late subscriber: the replay window holds all three.
    let mut late = h
        .subscribe(cred, Filter::new().max_age(hour))
        .await
        .unwrap();
    let mut subjects = Vec::new();
    for _ in 0..3 {
        subjects.push(next_subject(&mut late).await);
    }
    subjects.sort();
    assert_eq!(subjects, ["old inbox", "old junk", "sentinel"]);
    h.shutdown().await;
}

/// The folder set is part of the identity: a credential that differs from
/// another only in its further folders gets a session — and a connection
/// — of its own (counted by Dovecot), while the same set given in another
/// order shares the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_differing_only_in_folders_are_two_sessions() {
    let s = support::dovecot();
    let user = s.user("folderset");
    let u = user.clone();
    blocking(move || {
        s.create_junk(&u);
        s.create_mailbox(&u, "Alerts");
    })
    .await;
    let h = start(server_config());
    let plain = server_cred(s, &user);
    let a = plain
        .clone()
        .also_watch(SpecialUse::Junk)
        .also_watch("Alerts");
    let b = plain
        .clone()
        .also_watch("Alerts")
        .also_watch(SpecialUse::Junk);
    let _p = h.subscribe(plain, Filter::new()).await.unwrap();
    let _a = h.subscribe(a, Filter::new()).await.unwrap();
    let _b = h.subscribe(b, Filter::new()).await.unwrap();
    let name = user.name.clone();
    let connections = blocking(move || s.wait_connections(&name, 2, EVENTUALLY)).await;
    assert_eq!(connections, 2);
    let stats = h.stats().await.unwrap();
    let mut keys: Vec<_> = stats
        .iter()
        .filter(|st| st.key.user == user.name)
        .map(|st| st.key.also.len())
        .collect();
    keys.sort();
    assert_eq!(keys, [0, 2]);
    h.shutdown().await;
}
