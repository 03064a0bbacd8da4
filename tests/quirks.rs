//! Provider quirks, replayed: what Gmail, Microsoft 365, Yahoo/AOL and
//! iCloud do that breaks IMAP clients, scripted on the model-mailbox server
//! (`tests/support/mailbox_server.rs`) from the transcripts and reports
//! cited on each test, with emap's outcome asserted: a reconnect with
//! backoff, a reported error, and never a message lost or repeated.
//!
//! A scripted server, because no real one produces these on demand; the
//! mailbox behind it is a full model (UIDs, EXISTS, UIDNEXT), so recovery
//! is exercised for real. Each test ends with a sentinel mail: when it
//! arrives, everything the scenario delivered has arrived too.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use emap::{Config, Error, Filter, Handle, Subscription};
use support::EVENTUALLY;
use support::emap::{fake_cred, scripted_config, start, until_stats};
use support::mailbox_server::{Fault, Greeting, MailboxServer, On, Times};
use support::message as mail;

fn config() -> Config {
    Config {
        linger: Duration::from_millis(300),
        ..scripted_config()
    }
}

/// Receives until mail `uid` arrives; every UID received, in order.
async fn until_uid(sub: &mut Subscription, uid: u32) -> Vec<u32> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    while !got.contains(&uid) {
        match tokio::time::timeout_at(deadline, sub.recv()).await {
            Ok(Some(m)) => got.push(m.uid()),
            Ok(None) => panic!("subscription ended ({:?}) after {got:?}", sub.error()),
            Err(_) => panic!("timed out after receiving {got:?}"),
        }
    }
    got
}

/// Appends the sentinel (UID `uid`) and returns what `sub` received up to
/// it; asserts each UID came once and the sentinel last.
async fn through_sentinel(server: &MailboxServer, sub: &mut Subscription, uid: u32) -> Vec<u32> {
    assert_eq!(server.append(mail(&format!("sentinel {uid}"))), uid);
    let got = until_uid(sub, uid).await;
    let mut seen = HashMap::new();
    for u in &got {
        *seen.entry(*u).or_insert(0) += 1;
    }
    assert!(
        seen.values().all(|n| *n == 1),
        "delivered more than once: {got:?}"
    );
    got
}

/// A server whose mailbox holds UIDs 1..=4 (old) and expects mail from 5.
async fn server() -> MailboxServer {
    let old = (1..=4)
        .map(|u| (u, mail(&format!("old {u}")), Duration::from_secs(3600)))
        .collect();
    MailboxServer::start(1, 5, old).await
}

async fn subscribe(h: &Handle, server: &MailboxServer) -> Subscription {
    h.subscribe(fake_cred(server.port), Filter::new())
        .await
        .expect("subscribe")
}

/// Command lines the server received that start with `prefix` (after the
/// tag), case-insensitive.
fn count_commands(server: &MailboxServer, prefix: &str) -> usize {
    let prefix = prefix.to_ascii_uppercase();
    server
        .commands()
        .iter()
        .filter(|l| {
            l.split_once(' ')
                .is_some_and(|(_, rest)| rest.to_ascii_uppercase().starts_with(&prefix))
        })
        .count()
}

/// Kicks the session out of its IDLE and makes its next `n` IDLE commands
/// end in `* BYE text`; returns once the last of them was received, so
/// mail appended next lands after the cut connection's last view and
/// before the reconnect has looked: the gap a reconnect must fetch.
async fn bye_next_idles(server: &MailboxServer, n: usize, text: &str) {
    let idles = count_commands(server, "IDLE");
    server.fault(Fault::ByeWith {
        on: On::Prefix("IDLE"),
        times: Times::First(n),
        text: text.into(),
    });
    server.kick();
    server
        .until("the BYE'd IDLEs", |s| {
            count_commands(s, "IDLE") >= idles + n
        })
        .await;
}

// ───────────────────────────────── Gmail ─────────────────────────────────

/// Gmail's capabilities before and after login, from a client's protocol
/// log (mscdex/node-imap#715): SASL-IR, AUTH=PLAIN among the OAuth
/// mechanisms, X-GM-EXT-1, and `LITERAL-` (not `LITERAL+`).
const GMAIL_CAPABILITIES: &str = "IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN \
     X-GM-EXT-1 UIDPLUS COMPRESS=DEFLATE ENABLE MOVE CONDSTORE ESEARCH UTF8=ACCEPT \
     LIST-EXTENDED LIST-STATUS LITERAL- SPECIAL-USE APPENDLIMIT=35651584 XYZZY SASL-IR \
     AUTH=XOAUTH2 AUTH=PLAIN AUTH=PLAIN-CLIENTTOKEN AUTH=OAUTHBEARER AUTH=XOAUTH";

fn gmail(server: &MailboxServer) {
    server.set_greeting(Greeting::Text(
        "Gimap ready for requests from 127.0.0.1 c10-v6mb121001161uaq".into(),
    ));
    server.set_capabilities(GMAIL_CAPABILITIES);
}

/// Gmail allows 15 simultaneous IMAP connections per account and refuses
/// the next login with `NO [ALERT] Too many simultaneous connections.
/// (Failure)` (the reply quoted in zone-eu/wildduck#35; the limit in
/// imapsync/imapsync#61, citing support.google.com/mail/answer/97150).
/// emap retries the login with backoff until a slot frees, then delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gmail_too_many_simultaneous_connections_is_retried_until_a_slot_frees() {
    let server = server().await;
    gmail(&server);
    server.fault(Fault::Reject {
        on: On::Prefix("AUTHENTICATE"),
        times: Times::First(3),
        bad: false,
        text: "[ALERT] Too many simultaneous connections. (Failure)".into(),
    });
    let h = start(config());
    let mut sub = subscribe(&h, &server).await;
    assert!(
        count_commands(&server, "AUTHENTICATE PLAIN") == 4 && !server.saw("LOGIN "),
        "three refusals, then in; AUTHENTICATE PLAIN (SASL-IR), never LOGIN: {:?}",
        server.commands()
    );
    assert_eq!(server.append(mail("after the refusals")), 5);
    assert_eq!(through_sentinel(&server, &mut sub, 6).await, [5, 6]);
    let s = until_stats(&h, server.port, "the mail counted", |s| s.queued >= 2).await;
    assert!(s.reconnects >= 3, "{s:?}");
    h.shutdown().await;
}

/// Gmail ends sessions with `* BYE System Error` now and then — during
/// IDLE too (FlowCrypt/flowcrypt-android#183; imapsync/imapsync#120). Mail
/// that arrives before emap is back is fetched once, after the reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gmail_bye_system_error_during_idle_loses_and_repeats_nothing() {
    let server = server().await;
    gmail(&server);
    let h = start(config());
    let mut sub = subscribe(&h, &server).await;
    assert_eq!(server.append(mail("before")), 5);
    assert_eq!(until_uid(&mut sub, 5).await, [5]);
    // The session is kicked out of IDLE; its next 1 IDLE(s) get the
    // provider's BYE, and mail arrives once the last was received.
    bye_next_idles(&server, 1, "System Error").await;
    assert_eq!(server.append(mail("during")), 6);
    assert_eq!(through_sentinel(&server, &mut sub, 7).await, [6, 7]);
    h.shutdown().await;
}

/// Gmail's spam folder is `[Gmail]/Spam` (its LIST, e.g. in
/// owncloud-archive/mail#1333, shows the `[Gmail]/…` hierarchy; the name is
/// localized, which is why special-use discovery matters). A credential
/// naming it watches it: the name goes out as a valid IMAP mailbox
/// argument and mail in it is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gmail_spam_folder_is_watched_by_its_name() {
    let server = server().await;
    gmail(&server);
    server.name_main("[Gmail]/Spam");
    let h = start(config());
    let mut sub = h
        .subscribe(
            fake_cred(server.port).mailbox("[Gmail]/Spam"),
            Filter::new(),
        )
        .await
        .expect("subscribe");
    let examine = server
        .commands()
        .into_iter()
        .find(|l| l.to_ascii_uppercase().contains("EXAMINE"))
        .expect("EXAMINE sent");
    assert!(
        examine.ends_with("EXAMINE \"[Gmail]/Spam\"") || examine.ends_with("EXAMINE [Gmail]/Spam"),
        "{examine}"
    );
    assert_eq!(server.append(mail("spam")), 5);
    assert_eq!(through_sentinel(&server, &mut sub, 6).await, [5, 6]);
    h.shutdown().await;
}

// ──────────────────────────── Microsoft 365 ────────────────────────────

/// Exchange Online's capabilities and greeting, from a protocol log in
/// jstedfast/MailKit#849.
const OUTLOOK_CAPABILITIES: &str = "IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS \
     MOVE ID UNSELECT CLIENTACCESSRULES CLIENTNETWORKPRESENCELOCATION BACKENDAUTHENTICATE \
     CHILDREN IDLE NAMESPACE LITERAL+";

fn outlook(server: &MailboxServer) {
    server.set_greeting(Greeting::Text(
        "The Microsoft Exchange IMAP4 service is ready. [TABvAE4AMQBQADIAMgAzAEMAQQAwADAAMQA=]"
            .into(),
    ));
    server.set_capabilities(OUTLOOK_CAPABILITIES);
}

/// With basic authentication turned off, Microsoft 365 still advertises
/// AUTH=PLAIN but answers `NO AUTHENTICATE failed.` (the same log,
/// jstedfast/MailKit#849): only XOAUTH2 works. A password credential fails
/// once, as an authentication failure, and is not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlook_with_basic_auth_off_fails_a_password_once() {
    let server = server().await;
    outlook(&server);
    server.fault(Fault::Reject {
        on: On::Prefix("AUTHENTICATE PLAIN"),
        times: Times::Always,
        bad: false,
        text: "AUTHENTICATE failed.".into(),
    });
    let h = start(config());
    let err = h
        .subscribe(fake_cred(server.port), Filter::new())
        .await
        .expect_err("logged in with basic auth off");
    assert!(
        matches!(err, Error::AuthenticationFailed(_)),
        "expected AuthenticationFailed, got {err:?}"
    );
    let attempts = || count_commands(&server, "AUTHENTICATE");
    assert_eq!(attempts(), 1, "one attempt: {:?}", server.commands());
    let again = h.subscribe(fake_cred(server.port), Filter::new()).await;
    assert!(matches!(again, Err(Error::AuthenticationFailed(_))));
    assert_eq!(attempts(), 1, "remembered, not retried");
    h.shutdown().await;
}

/// Exchange Online drops connections with `* BYE Connection closed. 14`
/// (jstedfast/MailKit#849; `* BYE Connection is closed. 13` in
/// mscdex/node-imap#561): a reconnect, nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlook_bye_connection_closed_14_reconnects_and_loses_nothing() {
    let server = server().await;
    outlook(&server);
    let h = start(config());
    let mut sub = subscribe(&h, &server).await;
    // The session is kicked out of IDLE; its next 2 IDLE(s) get the
    // provider's BYE, and mail arrives once the last was received.
    bye_next_idles(&server, 2, "Connection closed. 14").await;
    assert_eq!(server.append(mail("after")), 5);
    assert_eq!(through_sentinel(&server, &mut sub, 6).await, [5, 6]);
    h.shutdown().await;
}

/// Microsoft throttles busy clients: `NO Server Unavailable. 15`
/// (lefcha/imapfilter#146) — with the RFC 5530 code `[UNAVAILABLE]` it is
/// marked temporary. A login refused that way is retried with backoff;
/// the session connects once the throttle lifts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlook_unavailable_throttling_is_retried_with_backoff() {
    let server = server().await;
    outlook(&server);
    server.fault(Fault::Reject {
        on: On::Prefix("AUTHENTICATE"),
        times: Times::First(2),
        bad: false,
        text: "[UNAVAILABLE] Server Unavailable. 15".into(),
    });
    let h = start(config());
    let mut sub = subscribe(&h, &server).await;
    assert_eq!(count_commands(&server, "AUTHENTICATE"), 3);
    assert_eq!(server.append(mail("after the throttle")), 5);
    assert_eq!(through_sentinel(&server, &mut sub, 6).await, [5, 6]);
    h.shutdown().await;
}

/// Throttling may also refuse the EXAMINE itself (imapsync/imapsync#272:
/// `Request is throttled. Suggested Backoff Time: 299961 milliseconds`),
/// marked `[UNAVAILABLE]`: retried with backoff, not taken for a missing
/// mailbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlook_throttled_examine_is_retried_not_taken_for_a_missing_mailbox() {
    let server = server().await;
    outlook(&server);
    server.fault(Fault::Reject {
        on: On::Prefix("EXAMINE"),
        times: Times::First(2),
        bad: false,
        text: "[UNAVAILABLE] Request is throttled. Suggested Backoff Time: 299961 milliseconds"
            .into(),
    });
    let h = start(config());
    let mut sub = subscribe(&h, &server).await;
    assert_eq!(count_commands(&server, "EXAMINE"), 3);
    assert_eq!(server.append(mail("after the throttle")), 5);
    assert_eq!(through_sentinel(&server, &mut sub, 6).await, [5, 6]);
    h.shutdown().await;
}

// ───────────────────────────── Yahoo and AOL ─────────────────────────────

/// AOL ends an IDLE on its own after 300 s while the connection stays
/// open (lefcha/imapfilter#311: "after 300 seconds, the enter_idle state
/// fails … the account is still open"). Replayed at once rather than after
/// 300 s: emap idles again and mail still flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aol_idle_ended_by_the_server_is_entered_again() {
    let server = server().await;
    server.fault(Fault::EndIdle {
        times: Times::First(1),
        text: "IDLE terminated".into(),
    });
    let h = start(config());
    let mut sub = subscribe(&h, &server).await;
    server
        .until("IDLE entered again", |s| count_commands(s, "IDLE") >= 2)
        .await;
    assert_eq!(server.append(mail("after the cut")), 5);
    assert_eq!(through_sentinel(&server, &mut sub, 6).await, [5, 6]);
    assert!(!server.saw("NOOP"), "one early end does not mean polling");
    h.shutdown().await;
}

/// A server that ends every IDLE as soon as it starts would have a client
/// that re-enters IDLE spin against it. emap counts IDLEs the server ends
/// before `poll_interval` has passed; after three in a row it polls
/// (NOOP every `poll_interval`) instead, and mail still flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_ending_every_idle_at_once_is_polled_instead_of_spun_on() {
    let server = server().await;
    server.fault(Fault::EndIdle {
        times: Times::Always,
        text: "IDLE terminated".into(),
    });
    let h = start(config());
    let mut sub = subscribe(&h, &server).await;
    server
        .until("polling", |s| count_commands(s, "NOOP") >= 2)
        .await;
    assert_eq!(server.append(mail("polled")), 5);
    assert_eq!(through_sentinel(&server, &mut sub, 6).await, [5, 6]);
    let idles = count_commands(&server, "IDLE");
    assert!(
        idles <= 3,
        "{idles} IDLE commands against a server ending each at once"
    );
    h.shutdown().await;
}

/// Yahoo and AOL drop sessions after about 30 minutes to an hour, with a
/// BYE (lefcha/imapfilter#316: "another time set at 1 hour … unexpected
/// IMAP BYE"). Mail that arrives while emap reconnects is fetched once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yahoo_session_expiry_fetches_the_gap_once() {
    let server = server().await;
    let h = start(config());
    let mut sub = subscribe(&h, &server).await;
    assert_eq!(server.append(mail("before")), 5);
    assert_eq!(until_uid(&mut sub, 5).await, [5]);
    // The session is kicked out of IDLE; its next 1 IDLE(s) get the
    // provider's BYE, and mail arrives once the last was received.
    bye_next_idles(&server, 1, "IMAP session expired").await;
    assert_eq!(
        server.append_many(vec![mail("gap a"), mail("gap b")]),
        [6, 7]
    );
    assert_eq!(through_sentinel(&server, &mut sub, 8).await, [6, 7, 8]);
    h.shutdown().await;
}

// ──────────────────────────────── iCloud ────────────────────────────────

/// iCloud greets with a CAPABILITY code that lacks IDLE, accepts
/// AUTHENTICATE PLAIN with an initial response, and answers it with a bare
/// `OK user … authenticated` — no new CAPABILITY — while its post-login
/// CAPABILITY lists IDLE among ~40 extensions (jstedfast/MailKit#970,
/// nextcloud/mail#3401). emap asks for the capabilities again after login
/// and idles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn icloud_capabilities_are_asked_again_after_login_and_idle_is_used() {
    let server = server().await;
    server.set_greeting(Greeting::Text(
        "[CAPABILITY XAPPLEPUSHSERVICE IMAP4 IMAP4rev1 SASL-IR AUTH=ATOKEN AUTH=PLAIN] \
         (2109B29-d3afe4d5aba6) pv33p00im-iscream021.me.com"
            .into(),
    ));
    server.set_capabilities(
        "XAPPLEPUSHSERVICE IMAP4 IMAP4rev1 CONDSTORE ENABLE QRESYNC QUOTA NAMESPACE UIDPLUS \
         CHILDREN BINARY UNSELECT SORT CATENATE URLAUTH LANGUAGE ESEARCH ESORT \
         THREAD=ORDEREDSUBJECT THREAD=REFERENCES CONTEXT=SEARCH CONTEXT=SORT WITHIN SASL-IR \
         SEARCHRES METADATA ID XMSEARCH X-SUN-SORT ANNOTATE-EXPERIMENT-1 X-UNAUTHENTICATE \
         X-SUN-IMAP XUM1 MULTISEARCH IDLE LIST-STATUS AUTH=PLAIN",
    );
    let h = start(config());
    let mut sub = subscribe(&h, &server).await;
    server
        .until("IDLE", |s| count_commands(s, "IDLE") >= 1)
        .await;
    let commands = server.commands();
    let auth = commands
        .iter()
        .position(|l| l.to_ascii_uppercase().contains("AUTHENTICATE PLAIN"))
        .expect("AUTHENTICATE PLAIN");
    assert!(
        commands[auth..]
            .iter()
            .any(|l| l.to_ascii_uppercase().ends_with(" CAPABILITY")),
        "capabilities not asked again after login: {commands:?}"
    );
    assert_eq!(server.append(mail("icloud")), 5);
    assert_eq!(through_sentinel(&server, &mut sub, 6).await, [5, 6]);
    h.shutdown().await;
}

// ─────────────────────────────── any server ───────────────────────────────

/// A server that echoes the password (or token) in its refusal must not
/// put it into emap's error: the text is kept for humans, the secret is
/// replaced by `<redacted>`. (Here rather than in tests/secrets.rs, whose
/// scan installs its own global trace subscriber.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_echoing_the_secret_in_its_refusal_does_not_leak_it() {
    const ECHOED: &str = "echo-me-s3cr3t-7f2a";
    let server = MailboxServer::start(1, 1, Vec::new()).await;
    server.fault(Fault::Reject {
        on: On::Prefix("LOGIN"),
        times: Times::Always,
        bad: false,
        text: format!("[AUTHENTICATIONFAILED] Invalid password {ECHOED} for user fake"),
    });
    let h = start(config());
    let cred = support::emap::fake_cred_with(server.port, ECHOED);
    let err = h
        .subscribe(cred, Filter::new())
        .await
        .expect_err("logged in with a refused password");
    assert!(matches!(err, Error::AuthenticationFailed(_)), "{err:?}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(ECHOED), "the echoed secret in {shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
    h.shutdown().await;
}
