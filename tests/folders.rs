//! Watching a folder by special use (RFC 6154): `Credential::special_use`
//! finds the folder the server marks `\Junk` — `[Gmail]/Spam`, `Junk
//! Email`, `Junk`, a localized name — with LIST at each connect, and mail
//! delivered there reaches its subscriber, saying which folder it came
//! from.
//!
//! Against the real Dovecot (its configuration marks `Junk` with
//! `special_use = \Junk`, see `tests/support/dovecot.rs`), and against
//! scripted servers for the shapes Dovecot does not produce: Gmail's
//! bracketed names, a modified UTF-7 name sent as a literal, a server that
//! marks folders without advertising SPECIAL-USE, one that refuses the
//! `RETURN (SPECIAL-USE)` option, a folder renamed between connects, and
//! one gone for a while under a healthy session.

mod support;

use std::time::Duration;

use emap::{Error, Filter, SpecialUse};
use support::dovecot::{JUNK_MAILBOX, LOCALIZED_JUNK_MAILBOX};
use support::emap::{
    deliver, dovecot_config, dovecot_cred, fake_cred, next, scripted_config, start,
};
use support::fake::{FakeConn, FakeServer};
use support::{EVENTUALLY, dovecot, mail, message};

// ───────────────────────────── real Dovecot ─────────────────────────────

/// Mail appended to the folder Dovecot marks `\Junk` reaches a subscriber
/// of `special_use(Junk)`, which never sees INBOX's mail, and `Mail`
/// names the folder. Two subscribers of the Junk credential share one
/// connection; an INBOX credential of the same user is a session (and a
/// connection) of its own: two on the server, not three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_in_junk_reaches_a_special_use_subscriber_on_one_connection() {
    let user = dovecot().user("junk");
    let u = user.clone();
    support::blocking(move || dovecot().create_junk(&u)).await;
    let h = start(dovecot_config());
    let junk = dovecot_cred(&user).special_use(SpecialUse::Junk);
    let mut first = h.subscribe(junk.clone(), Filter::new()).await.unwrap();
    let mut second = h.subscribe(junk, Filter::new()).await.unwrap();
    let mut inbox = h
        .subscribe(dovecot_cred(&user), Filter::new())
        .await
        .unwrap();
    let name = user.name.clone();
    let connections =
        support::blocking(move || dovecot().wait_connections(&name, 2, EVENTUALLY)).await;
    assert_eq!(connections, 2, "one connection per credential");

    // INBOX's mail first: the Junk subscribers' next mail is Junk's, so
    // they got nothing of INBOX.
    deliver(&user.name, "in inbox").await;
    let m = next(&mut inbox).await;
    assert_eq!(m.subject(), Some("in inbox"));
    assert_eq!(m.mailbox(), "INBOX");
    let u = user.clone();
    support::blocking(move || {
        let raw = mail("sender@emap.test", &u.name, "in junk", "spam?");
        dovecot().append(&u, JUNK_MAILBOX, &raw);
    })
    .await;
    for sub in [&mut first, &mut second] {
        let m = next(sub).await;
        assert_eq!(m.subject(), Some("in junk"));
        assert_eq!(m.mailbox(), "Junk");
    }

    let stats = h.stats().await.unwrap();
    let mine: Vec<_> = stats.iter().filter(|s| s.key.user == user.name).collect();
    assert_eq!(mine.len(), 2, "{mine:?}");
    assert!(
        mine.iter()
            .any(|s| s.key.special_use == Some(SpecialUse::Junk) && s.key.mailbox == "\\Junk")
    );
    let name = user.name.clone();
    assert_eq!(
        support::blocking(move || dovecot().connections(&name)).await,
        2
    );
    h.shutdown().await;
}

/// A user without the folder (Dovecot marks `Junk` only once it exists):
/// `subscribe` fails at once with the typed error, after one login, and
/// the error is not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_junk_folder_subscribe_fails_with_the_typed_error() {
    let user = dovecot().user("nojunk");
    let h = start(dovecot_config());
    let err = tokio::time::timeout(
        EVENTUALLY,
        h.subscribe(
            dovecot_cred(&user).special_use(SpecialUse::Junk),
            Filter::new(),
        ),
    )
    .await
    .expect("subscribe hung instead of failing")
    .expect_err("subscribed without a Junk folder");
    assert!(
        matches!(err, Error::SpecialUseNotFound(SpecialUse::Junk)),
        "{err:?}"
    );
    assert!(err.is_permanent());
    let name = user.name.clone();
    let attempts = support::blocking(move || {
        dovecot().settled_login_attempts(&name, Duration::from_millis(500))
    })
    .await;
    assert_eq!(attempts, 1, "retried a permanent error");
    h.shutdown().await;
}

/// `test_login` looks a special use up as a session does: it fails with
/// the typed error while the user has no Junk folder, and succeeds once
/// there is one. (It used to EXAMINE the credential's mailbox name,
/// INBOX, whatever the special use.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_login_looks_the_special_use_up() {
    let user = dovecot().user("loginjunk");
    let cred = dovecot_cred(&user).special_use(SpecialUse::Junk);
    let err = emap::test_login(&cred)
        .await
        .expect_err("no Junk folder yet");
    assert!(
        matches!(err, Error::SpecialUseNotFound(SpecialUse::Junk)),
        "{err:?}"
    );
    let u = user.clone();
    support::blocking(move || dovecot().create_junk(&u)).await;
    emap::test_login(&cred).await.expect("Junk exists now");
}

// ──────────────────────────── scripted servers ────────────────────────────

/// Subscribes to every mail of the `\Junk` folder of the scripted server
/// on `port`; panics if `subscribe` neither succeeds nor fails within
/// [`EVENTUALLY`] (a script that panicked makes the session reconnect
/// for ever).
async fn subscribe_junk(h: &emap::Handle, port: u16) -> Result<emap::Subscription, Error> {
    tokio::time::timeout(
        EVENTUALLY,
        h.subscribe(fake_cred(port).special_use(SpecialUse::Junk), Filter::new()),
    )
    .await
    .expect("subscribe neither succeeded nor failed in time")
}

/// Answers EXAMINE, checking the mailbox argument is exactly `name` (as it
/// goes on the wire), with an empty mailbox of UIDVALIDITY `validity`.
async fn examine(c: &mut FakeConn, name: &str, validity: u32) {
    let (tag, rest) = c.expect("EXAMINE").await;
    assert_eq!(rest, name, "EXAMINE of the wrong mailbox");
    c.send(format!(
        "* 0 EXISTS\r\n* OK [UIDVALIDITY {validity}] x\r\n* OK [UIDNEXT 1] x\r\n{tag} OK [READ-ONLY] done\r\n"
    ))
    .await;
}

/// IDLE; one new message (UID 1) announced, fetched and served; IDLE
/// again until the client leaves.
async fn one_mail(c: &mut FakeConn, subject: &str) {
    let tag = c.idle().await;
    c.send("* 1 EXISTS\r\n").await;
    c.done(&tag).await;
    let (tag, rest) = c.expect("FETCH").await;
    assert!(rest.starts_with("1:1 "), "{rest}");
    c.send(FakeConn::fetch_ok(&tag, &[(1, 1, &message(subject))]))
        .await;
    c.idle().await;
    c.drain().await;
}

/// Expects LIST and checks its arguments, then answers with `listing` and
/// OK.
async fn list(c: &mut FakeConn, arguments: &str, listing: &str) {
    let (tag, rest) = c.expect("LIST").await;
    assert_eq!(rest, arguments);
    c.send(format!("{listing}{tag} OK List completed\r\n"))
        .await;
}

/// Gmail's folder tree as its RFC 6154 LIST shows it (Google's IMAP
/// extensions page, developers.google.com/gmail/imap/imap-extensions,
/// documents SPECIAL-USE; the `[Gmail]/…` names as in
/// owncloud-archive/mail#1333): the `\Junk` folder is `[Gmail]/Spam`, after
/// a non-selectable `[Gmail]` parent and other special uses.
const GMAIL_LIST: &str = "* LIST (\\HasNoChildren) \"/\" \"INBOX\"\r\n\
    * LIST (\\HasChildren \\Noselect) \"/\" \"[Gmail]\"\r\n\
    * LIST (\\All \\HasNoChildren) \"/\" \"[Gmail]/All Mail\"\r\n\
    * LIST (\\Drafts \\HasNoChildren) \"/\" \"[Gmail]/Drafts\"\r\n\
    * LIST (\\HasNoChildren \\Important) \"/\" \"[Gmail]/Important\"\r\n\
    * LIST (\\HasNoChildren \\Sent) \"/\" \"[Gmail]/Sent Mail\"\r\n\
    * LIST (\\HasNoChildren \\Junk) \"/\" \"[Gmail]/Spam\"\r\n\
    * LIST (\\Flagged \\HasNoChildren) \"/\" \"[Gmail]/Starred\"\r\n\
    * LIST (\\HasNoChildren \\Trash) \"/\" \"[Gmail]/Trash\"\r\n";

/// A Gmail-like server advertising SPECIAL-USE: LIST with `RETURN
/// (SPECIAL-USE)` (no XLIST), `[Gmail]/Spam` examined by its listed name,
/// and its mail says it came from `[Gmail]/Spam`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gmail_spam_is_found_by_its_junk_attribute() {
    let server = FakeServer::start(|mut c: FakeConn, _| async move {
        c.greet_and_login("IDLE SPECIAL-USE X-GM-EXT-1").await;
        list(&mut c, "\"\" \"*\" RETURN (SPECIAL-USE)", GMAIL_LIST).await;
        examine(&mut c, "\"[Gmail]/Spam\"", 7).await;
        one_mail(&mut c, "verify your account").await;
    })
    .await;
    let h = start(scripted_config());
    let mut sub = subscribe_junk(&h, server.port).await.expect("subscribe");
    let m = next(&mut sub).await;
    assert_eq!(m.subject(), Some("verify your account"));
    assert_eq!(m.mailbox(), "[Gmail]/Spam");
    assert!(!server.commands().iter().any(|l| l.contains("XLIST")));
    h.shutdown().await;
}

/// A localized Junk folder ("Спам") listed in modified UTF-7, as a
/// literal: the name goes back byte for byte (`&BCEEPwQwBDw-`, not
/// re-encoded) and `Mail::mailbox` gives it decoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modified_utf7_name_is_sent_back_as_listed_and_decoded_for_mail() {
    let server = FakeServer::start(|mut c: FakeConn, _| async move {
        c.greet_and_login("IDLE SPECIAL-USE").await;
        list(
            &mut c,
            "\"\" \"*\" RETURN (SPECIAL-USE)",
            "* LIST (\\HasNoChildren) \".\" INBOX\r\n\
             * LIST (\\HasNoChildren \\Junk) \".\" {13}\r\n&BCEEPwQwBDw-\r\n",
        )
        .await;
        examine(&mut c, "&BCEEPwQwBDw-", 3).await;
        one_mail(&mut c, "код 123456").await;
    })
    .await;
    let h = start(scripted_config());
    let mut sub = subscribe_junk(&h, server.port).await.expect("subscribe");
    let m = next(&mut sub).await;
    assert_eq!(m.mailbox(), "Спам");
    h.shutdown().await;
}

/// A server that marks folders but does not advertise SPECIAL-USE: a plain
/// LIST (no RETURN option, which it might refuse), and the attribute read
/// from it — Outlook's "Junk Email", a quoted name with a space. The
/// first selectable match wins: a `\Noselect` one before it is passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_special_use_capability_the_attributes_of_plain_list_are_read() {
    let server = FakeServer::start(|mut c: FakeConn, _| async move {
        c.greet_and_login("IDLE CHILDREN").await;
        list(
            &mut c,
            "\"\" \"*\"",
            "* LIST (\\HasNoChildren) \"/\" INBOX\r\n\
             * LIST (\\Junk \\Noselect) \"/\" \"Old Junk\"\r\n\
             * LIST (\\HasNoChildren \\Junk) \"/\" \"Junk Email\"\r\n\
             * LIST (\\HasNoChildren \\Junk) \"/\" \"Spam\"\r\n",
        )
        .await;
        examine(&mut c, "\"Junk Email\"", 5).await;
        one_mail(&mut c, "in junk email").await;
    })
    .await;
    let h = start(scripted_config());
    let mut sub = subscribe_junk(&h, server.port).await.expect("subscribe");
    let m = next(&mut sub).await;
    assert_eq!(m.mailbox(), "Junk Email");
    assert!(!server.commands().iter().any(|l| l.contains("RETURN")));
    h.shutdown().await;
}

/// A server that advertises SPECIAL-USE but answers BAD to the RETURN
/// option: the session asks again with a plain LIST on the same
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_return_option_falls_back_to_plain_list() {
    let server = FakeServer::start(|mut c: FakeConn, _| async move {
        c.greet_and_login("IDLE SPECIAL-USE").await;
        let (tag, rest) = c.expect("LIST").await;
        assert_eq!(rest, "\"\" \"*\" RETURN (SPECIAL-USE)");
        c.send(format!("{tag} BAD Unknown LIST return option\r\n"))
            .await;
        list(
            &mut c,
            "\"\" \"*\"",
            "* LIST (\\HasNoChildren \\Junk) \"/\" Junk\r\n",
        )
        .await;
        examine(&mut c, "Junk", 1).await;
        one_mail(&mut c, "after the fallback").await;
    })
    .await;
    let h = start(scripted_config());
    let mut sub = subscribe_junk(&h, server.port).await.expect("subscribe");
    assert_eq!(next(&mut sub).await.mailbox(), "Junk");
    assert_eq!(server.accepted(), 1, "the fallback needs no new connection");
    h.shutdown().await;
}

/// The folder is looked up at every connect: renamed while the session was
/// away, it is found under its new name after the reconnect, and its mail
/// says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_folder_is_looked_up_again_at_each_connect() {
    let server = FakeServer::start(|mut c: FakeConn, n| async move {
        c.greet_and_login("IDLE SPECIAL-USE").await;
        if n == 0 {
            list(
                &mut c,
                "\"\" \"*\" RETURN (SPECIAL-USE)",
                "* LIST (\\Junk) \"/\" Junk\r\n",
            )
            .await;
            examine(&mut c, "Junk", 1).await;
            c.idle().await;
            c.send("* BYE going down\r\n").await;
            return;
        }
        list(
            &mut c,
            "\"\" \"*\" RETURN (SPECIAL-USE)",
            "* LIST (\\Junk) \"/\" Spam\r\n",
        )
        .await;
        examine(&mut c, "Spam", 2).await;
        one_mail(&mut c, "after the rename").await;
    })
    .await;
    let h = start(scripted_config());
    let mut sub = subscribe_junk(&h, server.port).await.expect("subscribe");
    let m = next(&mut sub).await;
    assert_eq!(m.subject(), Some("after the rename"));
    assert_eq!(m.mailbox(), "Spam");
    assert_eq!(server.accepted(), 2);
    h.shutdown().await;
}

/// No folder marked `\Junk` on the first connect: `subscribe` returns
/// `SpecialUseNotFound` at once, on the first connection, and the stream
/// ends with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_junk_folder_on_a_scripted_server_is_the_typed_error() {
    let server = FakeServer::start(|mut c: FakeConn, _| async move {
        c.greet_and_login("IDLE SPECIAL-USE").await;
        list(
            &mut c,
            "\"\" \"*\" RETURN (SPECIAL-USE)",
            "* LIST (\\HasNoChildren) \"/\" INBOX\r\n\
             * LIST (\\HasNoChildren \\Sent) \"/\" Sent\r\n",
        )
        .await;
        c.drain().await;
    })
    .await;
    let h = start(scripted_config());
    let err = subscribe_junk(&h, server.port)
        .await
        .expect_err("subscribed without a Junk folder");
    assert!(
        matches!(err, Error::SpecialUseNotFound(SpecialUse::Junk)),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "no mailbox is marked \\Junk on this server"
    );
    assert_eq!(server.accepted(), 1);
    assert!(!server.commands().iter().any(|l| l.contains("EXAMINE")));
    h.shutdown().await;
}

/// A server that sends UTF-8 names (RFC 6855 `UTF8=ACCEPT`; Dovecot and
/// Gmail do once it is enabled): the name is not modified UTF-7, so it is
/// shown as UTF-8 and sent back as the same bytes (a literal), never
/// re-encoded into `Ind&AOk-sirable`, which names another mailbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_utf8_name_is_sent_back_as_the_same_bytes() {
    let server = FakeServer::start(|mut c: FakeConn, _| async move {
        c.greet_and_login("IDLE SPECIAL-USE LITERAL+ UTF8=ACCEPT")
            .await;
        list(
            &mut c,
            "\"\" \"*\" RETURN (SPECIAL-USE)",
            "* LIST (\\Junk) \"/\" {12}\r\nInd\u{e9}sirable\r\n",
        )
        .await;
        let (tag, rest) = c.expect("EXAMINE").await;
        assert_eq!(rest, "{12+}");
        assert_eq!(c.line().await.as_deref(), Some("Ind\u{e9}sirable"));
        c.send(format!(
            "* 0 EXISTS\r\n* OK [UIDVALIDITY 4] x\r\n* OK [UIDNEXT 1] x\r\n{tag} OK [READ-ONLY] done\r\n"
        ))
        .await;
        one_mail(&mut c, "utf-8").await;
    })
    .await;
    let h = start(scripted_config());
    let mut sub = subscribe_junk(&h, server.port).await.expect("subscribe");
    assert_eq!(next(&mut sub).await.mailbox(), "Ind\u{e9}sirable");
    h.shutdown().await;
}

/// A localized Junk folder on the real Dovecot ("Courrier indésirable",
/// `Courrier ind&AOk-sirable` on the wire): found by its attribute, opened
/// by its listed name, and named in UTF-8 by the mail that arrives in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_localized_junk_folder_on_dovecot_is_found_and_named_in_utf8() {
    let user = dovecot().user("localjunk");
    let u = user.clone();
    support::blocking(move || dovecot().create_mailbox(&u, LOCALIZED_JUNK_MAILBOX)).await;
    let h = start(dovecot_config());
    let mut sub = h
        .subscribe(
            dovecot_cred(&user).special_use(SpecialUse::Junk),
            Filter::new(),
        )
        .await
        .unwrap();
    let u = user.clone();
    support::blocking(move || {
        let raw = mail("sender@emap.test", &u.name, "ind\u{e9}sirable", "spam?");
        dovecot().append(&u, LOCALIZED_JUNK_MAILBOX, &raw);
    })
    .await;
    let m = next(&mut sub).await;
    assert_eq!(m.subject(), Some("ind\u{e9}sirable"));
    assert_eq!(m.mailbox(), "Courrier ind\u{e9}sirable");
    h.shutdown().await;
}

/// The folder vanishes under a session that was watching it (a cleanup
/// script deleted Junk): like a missing mailbox, it is looked for again
/// with backoff within `missing_mailbox_grace`, not given up, and the
/// subscription gets the mail once the folder is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_junk_folder_gone_under_a_healthy_session_is_retried() {
    let server = FakeServer::start(|mut c: FakeConn, n| async move {
        c.greet_and_login("IDLE SPECIAL-USE").await;
        let arguments = "\"\" \"*\" RETURN (SPECIAL-USE)";
        match n {
            0 => {
                list(&mut c, arguments, "* LIST (\\Junk) \"/\" Junk\r\n").await;
                examine(&mut c, "Junk", 1).await;
                c.idle().await;
                c.send("* BYE restarting\r\n").await;
            }
            1 => {
                list(&mut c, arguments, "* LIST () \"/\" INBOX\r\n").await;
                c.drain().await;
            }
            _ => {
                list(&mut c, arguments, "* LIST (\\Junk) \"/\" Junk\r\n").await;
                examine(&mut c, "Junk", 1).await;
                one_mail(&mut c, "back again").await;
            }
        }
    })
    .await;
    let h = start(scripted_config());
    let mut sub = subscribe_junk(&h, server.port).await.expect("subscribe");
    let m = next(&mut sub).await;
    assert_eq!(m.subject(), Some("back again"));
    assert!(server.accepted() >= 3);
    h.shutdown().await;
}
