//! Unit tests of the client state machine: scripted server bytes in, bytes
//! out and events checked, time passed in explicitly.

use std::time::{Duration, Instant};

use super::*;
use crate::proto::{Code, Condition, Data, FetchItem};

const GREETING: &[u8] = b"* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ IDLE AUTH=PLAIN] ready\r\n";

fn greeted(greeting: &[u8]) -> (Client, Instant) {
    let t0 = Instant::now();
    let mut c = Client::new(Options::default(), t0);
    c.receive(greeting, t0).unwrap();
    assert!(matches!(c.poll_event(), Some(Event::Greeted(_))));
    (c, t0)
}

fn sent(c: &mut Client) -> String {
    String::from_utf8(c.poll_transmit().unwrap_or_default()).unwrap()
}

fn completed(c: &mut Client) -> Completion {
    loop {
        match c.poll_event() {
            Some(Event::Completed(done)) => return done,
            Some(_) => continue,
            None => panic!("no completion"),
        }
    }
}

/// Logged in and INBOX selected, without LITERAL+ unless the greeting says.
fn selected() -> (Client, Instant) {
    selected_with(Options::default())
}

/// [`selected`] with the given options.
fn selected_with(opts: Options) -> (Client, Instant) {
    let t0 = Instant::now();
    let mut c = Client::new(opts, t0);
    c.receive(GREETING, t0).unwrap();
    assert!(matches!(c.poll_event(), Some(Event::Greeted(_))));
    c.login("u", "p", t0).unwrap();
    c.receive(b"A1 OK [CAPABILITY IMAP4rev1 IDLE] done\r\n", t0)
        .unwrap();
    completed(&mut c);
    c.select("INBOX", true, t0).unwrap();
    c.receive(
        b"* 3 EXISTS\r\n* OK [UIDNEXT 9] x\r\n* OK [UIDVALIDITY 77] x\r\nA2 OK [READ-ONLY] ok\r\n",
        t0,
    )
    .unwrap();
    completed(&mut c);
    sent(&mut c);
    (c, t0)
}

#[test]
fn greeting_records_capabilities() {
    let (c, _) = greeted(GREETING);
    assert_eq!(c.state(), State::NotAuthenticated);
    assert!(c.has_capability("idle"));
    assert!(c.has_capability("SASL-IR"));
    assert!(!c.has_capability("STARTTLS"));
}

#[test]
fn preauth_and_bye_greetings() {
    let (c, _) = greeted(b"* PREAUTH hi\r\n");
    assert_eq!(c.state(), State::Authenticated);
    let t0 = Instant::now();
    let mut c = Client::new(Options::default(), t0);
    c.receive(b"* BYE [UNAVAILABLE] too busy\r\n", t0).unwrap();
    match c.poll_event() {
        Some(Event::Greeted(Greeting::Bye { code, text })) => {
            assert_eq!(code, Some(Code::Unavailable));
            assert_eq!(text, "too busy");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn garbage_greeting_is_an_error() {
    let t0 = Instant::now();
    let mut c = Client::new(Options::default(), t0);
    assert!(matches!(
        c.receive(b"A1 OK hello\r\n", t0),
        Err(ProtoError::BadGreeting(_))
    ));
    // The error sticks.
    assert!(c.receive(b"* OK\r\n", t0).is_err());
    assert!(c.noop(t0).is_err());
}

#[test]
fn greeting_timeout() {
    let t0 = Instant::now();
    let mut c = Client::new(Options::default(), t0);
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    c.handle_timeout(t0 + Duration::from_secs(9)).unwrap();
    assert_eq!(
        c.handle_timeout(t0 + Duration::from_secs(10)),
        Err(ProtoError::Timeout("greeting"))
    );
}

#[test]
fn login_and_capabilities_after_it() {
    let (mut c, t0) = greeted(GREETING);
    c.login("alice", "pass word", t0).unwrap();
    assert_eq!(sent(&mut c), "A1 LOGIN alice \"pass word\"\r\n");
    assert!(c.is_busy());
    c.receive(b"A1 OK Logged in\r\n", t0).unwrap();
    let done = completed(&mut c);
    assert_eq!(done.status, Status::Ok);
    assert_eq!(done.kind, CommandKind::Login);
    assert_eq!(c.state(), State::Authenticated);
    // No CAPABILITY code on the OK: forget, so the driver asks again.
    assert!(c.capabilities().is_none());
}

#[test]
fn login_disabled_is_respected() {
    let (mut c, t0) = greeted(b"* OK [CAPABILITY IMAP4rev1 LOGINDISABLED STARTTLS] hi\r\n");
    assert!(matches!(c.login("a", "b", t0), Err(ClientError::Misuse(_))));
    assert!(c.poll_transmit().is_none());
}

#[test]
fn injection_refused_before_sending() {
    let (mut c, t0) = greeted(GREETING);
    let err = c.login("alice", "x\r\nA2 DELETE INBOX", t0).unwrap_err();
    assert!(matches!(
        err,
        ClientError::Input(InputError {
            field: "password",
            ..
        })
    ));
    assert!(c.poll_transmit().is_none());
    assert!(!c.is_busy());
    assert!(
        c.authenticate(Mechanism::Plain, "a\0b", "p", None, t0)
            .is_err()
    );
    assert!(c.poll_transmit().is_none());
}

#[test]
fn synchronizing_literal_waits_for_continuation() {
    let (mut c, t0) = greeted(b"* OK [CAPABILITY IMAP4rev1] hi\r\n");
    c.login("alice", "pässword", t0).unwrap();
    assert_eq!(sent(&mut c), "A1 LOGIN alice {9}\r\n");
    assert!(c.poll_transmit().is_none());
    c.receive(b"+ go ahead\r\n", t0).unwrap();
    assert_eq!(sent(&mut c), "pässword\r\n");
    c.receive(b"A1 OK\r\n", t0).unwrap();
    assert_eq!(completed(&mut c).status, Status::Ok);
}

#[test]
fn authenticate_plain_with_and_without_sasl_ir() {
    let (mut c, t0) = greeted(GREETING);
    c.authenticate(Mechanism::Plain, "u", "p", None, t0)
        .unwrap();
    // base64("\0u\0p") = "AHUAcA=="
    assert_eq!(sent(&mut c), "A1 AUTHENTICATE PLAIN AHUAcA==\r\n");

    let (mut c, t0) = greeted(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n");
    c.authenticate(Mechanism::Plain, "u", "p", None, t0)
        .unwrap();
    assert_eq!(sent(&mut c), "A1 AUTHENTICATE PLAIN\r\n");
    c.receive(b"+ \r\n", t0).unwrap();
    assert_eq!(sent(&mut c), "AHUAcA==\r\n");
    c.receive(
        b"A1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
        t0,
    )
    .unwrap();
    let done = completed(&mut c);
    assert_eq!(done.status, Status::No);
    assert_eq!(done.code, Some(Code::AuthenticationFailed));
    assert_eq!(c.state(), State::NotAuthenticated);
}

#[test]
fn oauthbearer_error_challenge_is_answered_and_reported() {
    let (mut c, t0) = greeted(GREETING);
    c.authenticate(
        Mechanism::OAuthBearer,
        "u@x",
        "tok",
        Some(("imap.x", 993)),
        t0,
    )
    .unwrap();
    let line = sent(&mut c);
    let b64 = line.trim_end().rsplit(' ').next().unwrap();
    let decoded = String::from_utf8(B64.decode(b64).unwrap()).unwrap();
    assert_eq!(
        decoded,
        "n,a=u@x,\x01host=imap.x\x01port=993\x01auth=Bearer tok\x01\x01"
    );
    // RFC 7628 §3.2.2: error JSON as a challenge, answered with %x01.
    let json = r#"{"status":"invalid_token","scope":"mail"}"#;
    c.receive(format!("+ {}\r\n", B64.encode(json)).as_bytes(), t0)
        .unwrap();
    assert_eq!(sent(&mut c), "AQ==\r\n");
    c.receive(b"A1 NO [AUTHENTICATIONFAILED] bad\r\n", t0)
        .unwrap();
    let done = completed(&mut c);
    assert_eq!(done.status, Status::No);
    assert_eq!(done.sasl_error.as_deref(), Some(json));
}

#[test]
fn xoauth2_payload_and_error_answer() {
    let (mut c, t0) = greeted(GREETING);
    c.authenticate(Mechanism::XOAuth2, "u@x", "tok", None, t0)
        .unwrap();
    let line = sent(&mut c);
    let b64 = line.trim_end().rsplit(' ').next().unwrap();
    assert_eq!(
        B64.decode(b64).unwrap(),
        b"user=u@x\x01auth=Bearer tok\x01\x01"
    );
    c.receive(b"+ eyJzdGF0dXMiOiI0MDAifQ==\r\n", t0).unwrap();
    assert_eq!(sent(&mut c), "\r\n");
    c.receive(b"A1 NO nope\r\n", t0).unwrap();
    assert_eq!(
        completed(&mut c).sasl_error.as_deref(),
        Some(r#"{"status":"400"}"#)
    );
}

#[test]
fn debug_output_hides_secrets() {
    let (mut c, t0) = greeted(b"* OK [CAPABILITY IMAP4rev1] hi\r\n");
    c.login("alice", "hünter2", t0).unwrap();
    assert!(!format!("{c:?}").contains("nter2"));
}

/// An EXISTS after `[UIDNEXT]` that raises the count an earlier EXISTS gave
/// is mail that arrived while SELECT was answered: UIDNEXT is stale. One
/// that only repeats the count, or the only EXISTS coming after UIDNEXT (a
/// server's own order), says nothing.
#[test]
fn exists_growing_after_uidnext_marks_uidnext_stale() {
    for (response, stale) in [
        (
            &b"* 2 EXISTS\r\n* OK [UIDNEXT 3] n\r\n* 3 EXISTS\r\n"[..],
            true,
        ),
        (b"* 2 EXISTS\r\n* OK [UIDNEXT 3] n\r\n* 2 EXISTS\r\n", false),
        (b"* 2 EXISTS\r\n* 3 EXISTS\r\n* OK [UIDNEXT 4] n\r\n", false),
        (b"* OK [UIDNEXT 3] n\r\n* 2 EXISTS\r\n", false),
    ] {
        let (mut c, t0) = selected();
        c.select("INBOX", true, t0).unwrap();
        c.receive(response, t0).unwrap();
        c.receive(b"A3 OK [READ-ONLY] done\r\n", t0).unwrap();
        let CommandData::Selected(info) = completed(&mut c).data else {
            panic!("no SELECT data");
        };
        assert_eq!(
            info.uid_next_stale,
            stale,
            "{}",
            String::from_utf8_lossy(response)
        );
    }
}

#[test]
fn select_gathers_its_data_and_surfaces_alerts() {
    let (mut c, t0) = greeted(GREETING);
    c.login("u", "p", t0).unwrap();
    c.receive(b"A1 OK [CAPABILITY IMAP4rev1 IDLE] done\r\n", t0)
        .unwrap();
    completed(&mut c);
    c.select("INBOX", false, t0).unwrap();
    assert_eq!(sent(&mut c), "A1 LOGIN u p\r\nA2 SELECT INBOX\r\n");
    c.receive(
        b"* FLAGS (\\Seen)\r\n* 4 EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY 123] v\r\n\
          * OK [UIDNEXT 45] n\r\n* OK [ALERT] maintenance tonight\r\nA2 OK [READ-WRITE] done\r\n",
        t0,
    )
    .unwrap();
    match c.poll_event() {
        Some(Event::Data(Data::Status {
            condition: Condition::Ok,
            code: Some(Code::Alert),
            text,
        })) => assert_eq!(text, "maintenance tonight"),
        other => panic!("{other:?}"),
    }
    let done = completed(&mut c);
    assert_eq!(
        done.data,
        CommandData::Selected(SelectInfo {
            exists: 4,
            uid_next: Some(45),
            uid_validity: Some(123),
            read_only: false,
            highest_modseq: None,
            uid_next_stale: false,
        })
    );
    assert_eq!(c.state(), State::Selected);
    assert!(c.poll_event().is_none());
}

#[test]
fn idle_push_and_done() {
    let (mut c, t0) = selected();
    c.idle(t0).unwrap();
    assert_eq!(sent(&mut c), "A3 IDLE\r\n");
    assert!(!c.is_idling());
    c.receive(b"+ idling\r\n", t0).unwrap();
    assert_eq!(c.poll_event(), Some(Event::IdleStarted));
    assert!(c.is_idling());
    c.receive(b"* 4 EXISTS\r\n* 1 EXPUNGE\r\n", t0).unwrap();
    assert_eq!(c.poll_event(), Some(Event::Data(Data::Exists(4))));
    assert_eq!(c.poll_event(), Some(Event::Data(Data::Expunge(1))));
    c.done(t0);
    c.done(t0); // only once
    assert_eq!(sent(&mut c), "DONE\r\n");
    c.receive(b"A3 OK Idle completed\r\n", t0).unwrap();
    assert_eq!(completed(&mut c).kind, CommandKind::Idle);
    assert!(!c.is_busy());
}

#[test]
fn done_before_the_continuation_is_sent_after_it() {
    let (mut c, t0) = selected();
    c.idle(t0).unwrap();
    sent(&mut c);
    c.done(t0);
    assert!(c.poll_transmit().is_none());
    c.receive(b"+ idling\r\n", t0).unwrap();
    assert_eq!(sent(&mut c), "DONE\r\n");
}

#[test]
fn idle_inactivity_sends_done_then_a_silent_server_times_out() {
    let (mut c, t0) = selected();
    c.idle(t0).unwrap();
    c.receive(b"+ idling\r\n", t0).unwrap();
    sent(&mut c);
    let quiet = t0 + Duration::from_secs(300);
    assert_eq!(c.poll_timeout(), Some(quiet));
    c.handle_timeout(quiet - Duration::from_secs(1)).unwrap();
    assert!(c.poll_transmit().is_none());
    c.handle_timeout(quiet).unwrap();
    assert_eq!(sent(&mut c), "DONE\r\n");
    while let Some(ev) = c.poll_event() {
        if ev == Event::IdleDoneSent {
            break;
        }
    }
    // The answer to DONE must come within the command timeout.
    assert_eq!(c.poll_timeout(), Some(quiet + Duration::from_secs(30)));
    assert_eq!(
        c.handle_timeout(quiet + Duration::from_secs(30)),
        Err(ProtoError::Timeout("command response"))
    );
}

#[test]
fn idle_round_reissues_even_when_the_server_chats() {
    let (mut c, t0) = selected();
    c.idle(t0).unwrap();
    c.receive(b"+ idling\r\n", t0).unwrap();
    sent(&mut c);
    // "* OK Still here" every two minutes keeps the inactivity timer away.
    let mut t = t0;
    for _ in 0..12 {
        t += Duration::from_secs(120);
        c.handle_timeout(t).unwrap();
        assert!(
            c.poll_transmit().is_none(),
            "DONE too early at {:?}",
            t - t0
        );
        c.receive(b"* OK Still here\r\n", t).unwrap();
    }
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(1500)));
    c.handle_timeout(t0 + Duration::from_secs(1500)).unwrap();
    assert_eq!(sent(&mut c), "DONE\r\n");
}

#[test]
fn command_timeout_is_extended_by_progress() {
    let (mut c, t0) = selected();
    c.fetch(true, "9:*", "(UID BODY.PEEK[])", t0).unwrap();
    assert_eq!(sent(&mut c), "A3 UID FETCH 9:* (UID BODY.PEEK[])\r\n");
    let t1 = t0 + Duration::from_secs(20);
    c.receive(b"* 4 FETCH (UID 9 BODY[] {10}\r\n01234", t1)
        .unwrap();
    c.handle_timeout(t0 + Duration::from_secs(30)).unwrap();
    assert_eq!(
        c.handle_timeout(t1 + Duration::from_secs(30)),
        Err(ProtoError::Timeout("command response"))
    );
}

#[test]
fn exists_inside_a_fetch_response_is_surfaced_in_order() {
    let (mut c, t0) = selected();
    c.fetch(true, "9:*", "(UID)", t0).unwrap();
    c.receive(
        b"* 4 FETCH (UID 9)\r\n* 5 EXISTS\r\n* 5 FETCH (UID 10)\r\nA3 OK done\r\n",
        t0,
    )
    .unwrap();
    let mut seen = Vec::new();
    while let Some(ev) = c.poll_event() {
        seen.push(ev);
    }
    assert!(matches!(&seen[0], Event::Data(Data::Fetch(f)) if f.uid() == Some(9)));
    assert_eq!(seen[1], Event::Data(Data::Exists(5)));
    assert!(
        matches!(&seen[2], Event::Data(Data::Fetch(f)) if f.items.contains(&FetchItem::Uid(10)))
    );
    assert!(matches!(&seen[3], Event::Completed(_)));
}

#[test]
fn search_and_esearch_results_are_gathered() {
    let (mut c, t0) = selected();
    c.uid_search("SINCE 1-Jan-2026", t0).unwrap();
    c.receive(b"* SEARCH 3 5 8\r\n* 9 EXISTS\r\nA3 OK done\r\n", t0)
        .unwrap();
    assert_eq!(c.poll_event(), Some(Event::Data(Data::Exists(9))));
    assert_eq!(completed(&mut c).data, CommandData::Search(vec![3, 5, 8]));

    c.uid_search("RETURN (ALL) SINCE 1-Jan-2026", t0).unwrap();
    c.receive(
        b"* ESEARCH (TAG \"A4\") UID ALL 3:5,9\r\nA4 OK done\r\n",
        t0,
    )
    .unwrap();
    assert_eq!(
        completed(&mut c).data,
        CommandData::Search(vec![3, 4, 5, 9])
    );
}

#[test]
fn status_is_gathered() {
    let (mut c, t0) = selected();
    c.status("INBOX", "UIDNEXT UIDVALIDITY", t0).unwrap();
    assert_eq!(sent(&mut c), "A3 STATUS INBOX (UIDNEXT UIDVALIDITY)\r\n");
    c.receive(
        b"* STATUS INBOX (UIDNEXT 12 UIDVALIDITY 7)\r\nA3 OK done\r\n",
        t0,
    )
    .unwrap();
    assert_eq!(
        completed(&mut c).data,
        CommandData::Status(vec![("UIDNEXT".into(), 12), ("UIDVALIDITY".into(), 7)])
    );
}

/// STATUS of a listed name sends the listed bytes back; a NO is a
/// completion with no data (the caller decides), and EXISTS of the
/// selected mailbox arriving during STATUS is surfaced, not folded in.
#[test]
fn status_of_a_listed_name_and_a_refused_status() {
    let (mut c, t0) = selected();
    c.status_listed(b"[Gmail]/Spam", "UIDNEXT UIDVALIDITY", t0)
        .unwrap();
    assert_eq!(
        sent(&mut c),
        "A3 STATUS \"[Gmail]/Spam\" (UIDNEXT UIDVALIDITY)\r\n"
    );
    c.receive(
        b"* 4 EXISTS\r\n* STATUS \"[Gmail]/Spam\" (UIDNEXT 9 UIDVALIDITY 3)\r\nA3 OK done\r\n",
        t0,
    )
    .unwrap();
    assert_eq!(c.poll_event(), Some(Event::Data(Data::Exists(4))));
    assert_eq!(
        completed(&mut c).data,
        CommandData::Status(vec![("UIDNEXT".into(), 9), ("UIDVALIDITY".into(), 3)])
    );
    c.status_listed(b"Junk", "UIDNEXT UIDVALIDITY", t0).unwrap();
    assert_eq!(sent(&mut c), "A4 STATUS Junk (UIDNEXT UIDVALIDITY)\r\n");
    c.receive(b"A4 NO [NONEXISTENT] Mailbox doesn't exist: Junk\r\n", t0)
        .unwrap();
    let done = completed(&mut c);
    assert_eq!(done.status, Status::No);
    assert_eq!(done.data, CommandData::Status(vec![]));
    for bad in [&b""[..], b"a\r\nA9 DELETE INBOX", b"a\0"] {
        assert!(matches!(
            c.status_listed(bad, "UIDNEXT", t0),
            Err(ClientError::Input(_))
        ));
        assert!(c.poll_transmit().is_none());
    }
}

/// NOTIFY SET names the selected mailbox and one event group per
/// further mailbox, each name as it goes on the wire; the unsolicited
/// `* STATUS` it brings is surfaced (also during IDLE), and one that
/// arrives while a STATUS of another mailbox runs is not folded into it.
#[test]
fn notify_set_and_unsolicited_status() {
    let (mut c, t0) = selected();
    c.notify_set(&[b"Junk", b"[Gmail]/Spam"], t0).unwrap();
    assert_eq!(
        sent(&mut c),
        "A3 NOTIFY SET (selected (MessageNew MessageExpunge)) \
         (mailboxes Junk (MessageNew MessageExpunge)) \
         (mailboxes \"[Gmail]/Spam\" (MessageNew MessageExpunge))\r\n"
    );
    c.receive(b"A3 OK NOTIFY completed\r\n", t0).unwrap();
    assert_eq!(completed(&mut c).status, Status::Ok);
    c.idle(t0).unwrap();
    sent(&mut c);
    c.receive(
        b"+ idling\r\n* STATUS Junk (MESSAGES 1 UIDNEXT 2 UIDVALIDITY 5)\r\n",
        t0,
    )
    .unwrap();
    assert_eq!(c.poll_event(), Some(Event::IdleStarted));
    assert_eq!(
        c.poll_event(),
        Some(Event::Data(Data::MailboxStatus {
            mailbox: "Junk".into(),
            items: vec![
                ("MESSAGES".into(), 1),
                ("UIDNEXT".into(), 2),
                ("UIDVALIDITY".into(), 5)
            ],
        }))
    );
    c.done(t0);
    sent(&mut c);
    c.receive(b"A4 OK Idle completed\r\n", t0).unwrap();
    completed(&mut c);
    c.status("Spam & Eggs", "UIDNEXT", t0).unwrap();
    assert_eq!(sent(&mut c), "A5 STATUS \"Spam &- Eggs\" (UIDNEXT)\r\n");
    c.receive(
        b"* STATUS Junk (UIDNEXT 3)\r\n* STATUS \"Spam &- Eggs\" (UIDNEXT 8)\r\nA5 OK s\r\n",
        t0,
    )
    .unwrap();
    assert!(matches!(
        c.poll_event(),
        Some(Event::Data(Data::MailboxStatus { mailbox, .. })) if mailbox == "Junk"
    ));
    assert_eq!(
        completed(&mut c).data,
        CommandData::Status(vec![("UIDNEXT".into(), 8)])
    );
    assert!(matches!(
        c.notify_set(&[b"a\r\nA9 DELETE INBOX"], t0),
        Err(ClientError::Input(_))
    ));
    assert!(matches!(
        c.notify_set(&[b""], t0),
        Err(ClientError::Input(_))
    ));
}

#[test]
fn bye_is_surfaced_and_remembered() {
    let (mut c, t0) = selected();
    c.noop(t0).unwrap();
    c.receive(b"* BYE Server shutting down.\r\n", t0).unwrap();
    assert!(matches!(
        c.poll_event(),
        Some(Event::Data(Data::Status {
            condition: Condition::Bye,
            ..
        }))
    ));
    assert_eq!(c.bye(), Some("Server shutting down."));
}

#[test]
fn hostile_sequences_are_errors() {
    let (mut c, t0) = selected();
    assert_eq!(
        c.receive(b"+ surprise\r\n", t0),
        Err(ProtoError::UnexpectedContinuation)
    );

    let (mut c, t0) = selected();
    c.noop(t0).unwrap();
    assert!(matches!(
        c.receive(b"Z9 OK who?\r\n", t0),
        Err(ProtoError::UnknownTag(_))
    ));
    assert!(c.handle_timeout(t0).is_err(), "the error sticks");

    let (mut c, t0) = selected();
    c.idle(t0).unwrap();
    c.receive(b"+ idling\r\n", t0).unwrap();
    assert_eq!(
        c.receive(b"+ again\r\n", t0),
        Err(ProtoError::UnexpectedContinuation)
    );
}

#[test]
fn one_command_at_a_time() {
    let (mut c, t0) = selected();
    c.noop(t0).unwrap();
    assert!(matches!(c.noop(t0), Err(ClientError::Misuse(_))));
}

#[test]
fn byte_at_a_time_gives_the_same_events() {
    let script: &[u8] = b"* OK [CAPABILITY IMAP4rev1 IDLE] hi\r\n";
    let rest: &[u8] = b"A1 OK done\r\n* 2 EXISTS\r\n* 1 FETCH (UID 5 BODY[] {3}\r\nabc)\r\n";
    let run = |chunked: bool| {
        let t0 = Instant::now();
        let mut c = Client::new(Options::default(), t0);
        let mut events = Vec::new();
        let feed = |c: &mut Client, bytes: &[u8]| {
            if chunked {
                for b in bytes {
                    c.receive(std::slice::from_ref(b), t0).unwrap();
                }
            } else {
                c.receive(bytes, t0).unwrap();
            }
        };
        feed(&mut c, script);
        c.noop(t0).unwrap();
        feed(&mut c, rest);
        while let Some(ev) = c.poll_event() {
            events.push(ev);
        }
        events
    };
    let whole = run(false);
    assert_eq!(whole.len(), 4);
    assert_eq!(whole, run(true));
}

/// Feeds `bytes` one per second, starting a second after `from`, and calls
/// [`Client::handle_timeout`] before each: a trickle that never lets the
/// inactivity timer expire. Returns when and how the machine gave up, or
/// `None` when every byte went in.
fn trickle(c: &mut Client, from: Instant, bytes: &[u8]) -> Option<(Instant, ProtoError)> {
    for (i, b) in bytes.iter().enumerate() {
        let t = from + Duration::from_secs(i as u64 + 1);
        if let Err(e) = c.handle_timeout(t) {
            return Some((t, e));
        }
        c.receive(&[*b], t).unwrap();
    }
    None
}

/// A FETCH response for message 1 whose literal is `size` bytes.
fn fetch_response(size: usize) -> Vec<u8> {
    let mut out = format!("* 1 FETCH (UID 9 BODY[] {{{size}}}\r\n").into_bytes();
    out.resize(out.len() + size, b'x');
    out.extend_from_slice(b")\r\n");
    out
}

/// Item 17: one byte a second never trips the inactivity timer, but the
/// overall deadline of a FETCH of one message is `command_timeout` (30 s)
/// plus one message's worth (`max_message_size + max_line`, 25 MiB +
/// 64 KiB) at `min_transfer_rate` (16 KiB/s): 30 s + 1604 s.
#[test]
fn a_trickled_fetch_trips_the_overall_deadline() {
    let (mut c, t0) = selected();
    c.fetch(false, "1:1", "(UID BODY.PEEK[])", t0).unwrap();
    let gave_up = trickle(&mut c, t0, &fetch_response(4000));
    assert_eq!(
        gave_up,
        Some((
            t0 + Duration::from_secs(1634),
            ProtoError::Timeout(DEADLINE_EXPIRED)
        ))
    );
}

/// While IDLE runs, only its own timers apply (a chatty server may keep it
/// for a whole round); the DONE exchange then gets an overall deadline of
/// `command_timeout` plus `max_line` at `min_transfer_rate` (30 s + 4 s).
#[test]
fn idle_has_no_overall_deadline_but_its_done_exchange_has() {
    let opts = Options {
        idle_round: Duration::from_secs(100),
        idle_inactivity: Duration::from_secs(50),
        ..Options::default()
    };
    let (mut c, t0) = selected_with(opts);
    c.idle(t0).unwrap();
    c.receive(b"+ idling\r\n", t0).unwrap();
    sent(&mut c);
    let chat = b"* OK Still here\r\n".repeat(20);
    // 99 s of chatter: far past command_timeout plus any budget.
    assert_eq!(trickle(&mut c, t0, &chat[..99]), None);
    let round = t0 + Duration::from_secs(100);
    c.handle_timeout(round).unwrap();
    assert_eq!(sent(&mut c), "DONE\r\n");
    assert!(std::iter::from_fn(|| c.poll_event()).any(|e| e == Event::IdleDoneSent));
    assert_eq!(
        trickle(&mut c, round, &chat[99..]),
        Some((
            round + Duration::from_secs(34),
            ProtoError::Timeout(DEADLINE_EXPIRED)
        ))
    );
}

/// Options with round numbers: 10 s of inactivity, and one line or one
/// message (1 KiB each) takes 1 s at the slowest acceptable rate.
fn small() -> Options {
    Options {
        limits: crate::proto::Limits {
            max_line: 1024,
            max_literal: 1024 * 1024,
        },
        command_timeout: Duration::from_secs(10),
        max_message_size: 1024,
        min_transfer_rate: 1024,
        ..Options::default()
    }
}

fn secs(t0: Instant, n: u64) -> Option<(Instant, ProtoError)> {
    Some((
        t0 + Duration::from_secs(n),
        ProtoError::Timeout(DEADLINE_EXPIRED),
    ))
}

#[test]
fn a_fetch_deadline_scales_with_the_messages_it_may_carry() {
    // 10 s + n × (1 KiB + 1 KiB) at 1 KiB/s.
    for (messages, expiry) in [(1, 12), (3, 16)] {
        let (mut c, t0) = selected_with(small());
        c.fetch_sized(true, "4,9,11", "(UID BODY.PEEK[])", messages, t0)
            .unwrap();
        assert_eq!(sent(&mut c), "A3 UID FETCH 4,9,11 (UID BODY.PEEK[])\r\n");
        assert_eq!(
            trickle(&mut c, t0, &fetch_response(100)),
            secs(t0, expiry),
            "{messages} messages"
        );
    }
}

#[test]
fn fetch_bounds_the_messages_by_its_set() {
    for (set, expiry) in [("1:3,7", Some(18)), ("5:2", Some(18)), ("*", Some(12))] {
        let (mut c, t0) = selected_with(small());
        c.fetch(false, set, "(UID)", t0).unwrap();
        let gave_up = trickle(&mut c, t0, &fetch_response(100));
        assert_eq!(gave_up, expiry.and_then(|n| secs(t0, n)), "{set}");
    }
    // An open range has no bound: inactivity alone applies, as before.
    let (mut c, t0) = selected_with(small());
    c.fetch(true, "9:*", "(UID)", t0).unwrap();
    assert_eq!(trickle(&mut c, t0, &fetch_response(100)), None);
    assert_eq!(
        c.handle_timeout(t0 + Duration::from_secs(200)),
        Err(ProtoError::Timeout("command response"))
    );
}

#[test]
fn other_commands_may_carry_one_line() {
    let (mut c, t0) = selected_with(small());
    c.noop(t0).unwrap();
    let chat = b"* OK Still here\r\n".repeat(2);
    // 10 s + 1 KiB at 1 KiB/s.
    assert_eq!(trickle(&mut c, t0, &chat), secs(t0, 11));
    assert!(c.poll_transmit().is_some_and(|b| b.starts_with(b"A3 NOOP")));
}

#[test]
fn the_idle_command_and_a_queued_done_have_deadlines() {
    let chat = b"* OK Still here\r\n".repeat(2);
    // IDLE not yet accepted is a command like any other.
    let (mut c, t0) = selected_with(small());
    c.idle(t0).unwrap();
    assert_eq!(trickle(&mut c, t0, &chat), secs(t0, 11));
    // DONE queued before the `+` is sent with it: timed from then.
    let (mut c, t0) = selected_with(small());
    c.idle(t0).unwrap();
    c.done(t0);
    let plus = t0 + Duration::from_secs(5);
    c.receive(b"+ idling\r\n", plus).unwrap();
    assert!(sent(&mut c).ends_with("DONE\r\n"));
    assert_eq!(trickle(&mut c, plus, &chat), secs(plus, 11));
}

#[test]
fn a_zero_rate_disables_the_overall_deadline() {
    let (mut c, t0) = selected_with(Options {
        min_transfer_rate: 0,
        ..small()
    });
    c.fetch_sized(false, "1:1", "(UID)", 1, t0).unwrap();
    assert_eq!(trickle(&mut c, t0, &fetch_response(100)), None);
}

#[test]
fn a_huge_budget_does_not_overflow() {
    let (mut c, t0) = selected_with(Options {
        max_message_size: usize::MAX,
        min_transfer_rate: 1,
        ..small()
    });
    c.fetch_sized(false, "1:1", "(UID)", u32::MAX, t0).unwrap();
    assert!(c.poll_timeout().is_some());
    assert_eq!(trickle(&mut c, t0, &fetch_response(30)), None);
}

#[test]
fn set_sizes() {
    assert_eq!(set_size("5"), Some(1));
    assert_eq!(set_size("*"), Some(1));
    assert_eq!(set_size("*:*"), Some(1));
    assert_eq!(set_size("3:5"), Some(3));
    assert_eq!(set_size("5:3,9,10:11"), Some(6));
    assert_eq!(
        set_size("1:4294967295,1:4294967295"),
        Some(2 * 4_294_967_295)
    );
    assert_eq!(set_size("9:*"), None);
    assert_eq!(set_size("*:9"), None);
    assert_eq!(set_size("x"), None);
    assert_eq!(set_size(""), None);
}

/// Logged in, nothing selected, with these capabilities.
fn authenticated(caps: &str) -> (Client, Instant) {
    let (mut c, t0) = greeted(GREETING);
    c.login("u", "p", t0).unwrap();
    c.receive(
        format!("A1 OK [CAPABILITY IMAP4rev1 {caps}] done\r\n").as_bytes(),
        t0,
    )
    .unwrap();
    completed(&mut c);
    sent(&mut c);
    (c, t0)
}

#[test]
fn list_with_return_special_use_is_gathered() {
    let (mut c, t0) = authenticated("SPECIAL-USE");
    c.list("", "*", true, t0).unwrap();
    assert_eq!(sent(&mut c), "A2 LIST \"\" \"*\" RETURN (SPECIAL-USE)\r\n");
    c.receive(
        b"* LIST (\\HasNoChildren) \"/\" INBOX\r\n\
          * LIST (\\HasNoChildren \\Junk) \"/\" \"[Gmail]/Spam\"\r\n\
          * 1 EXISTS\r\n\
          A2 OK LIST completed\r\n",
        t0,
    )
    .unwrap();
    // Data that is not the command's own still comes out, in order.
    assert_eq!(c.poll_event(), Some(Event::Data(Data::Exists(1))));
    let done = completed(&mut c);
    assert_eq!(done.kind, CommandKind::List);
    let CommandData::List { entries, dropped } = done.data else {
        panic!("{:?}", done.data);
    };
    assert_eq!(dropped, 0);
    let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["INBOX", "[Gmail]/Spam"]);
    assert!(entries[1].has_attribute("\\junk"));
    // Without the return option: plain LIST.
    c.list("", "*", false, t0).unwrap();
    assert_eq!(sent(&mut c), "A3 LIST \"\" \"*\"\r\n");
}

#[test]
fn list_is_bounded_by_bytes_and_counts_what_it_drops() {
    let opts = Options {
        limits: crate::proto::Limits {
            max_line: 100,
            max_literal: 28,
        },
        ..Options::default()
    };
    let (mut c, t0) = selected_with(opts);
    c.list("", "*", false, t0).unwrap();
    sent(&mut c);
    let mut input = Vec::new();
    for i in 0..20 {
        input.extend_from_slice(format!("* LIST () \"/\" folder-{i:02}\r\n").as_bytes());
    }
    input.extend_from_slice(b"A3 OK done\r\n");
    c.receive(&input, t0).unwrap();
    let CommandData::List { entries, dropped } = completed(&mut c).data else {
        panic!("not a LIST completion");
    };
    // Each entry costs 18 bytes (name twice); 128 bytes hold 7.
    assert_eq!(entries.len(), 7);
    assert_eq!(dropped, 13);
}

#[test]
fn select_listed_sends_the_servers_bytes_back() {
    let (mut c, t0) = authenticated("");
    // Modified UTF-7 as listed: not re-encoded (`&` would become `&-`).
    c.select_listed(b"&BCEEPwQwBDw-", true, t0).unwrap();
    assert_eq!(sent(&mut c), "A2 EXAMINE &BCEEPwQwBDw-\r\n");
    c.receive(b"A2 OK [READ-ONLY] ok\r\n", t0).unwrap();
    assert!(matches!(
        completed(&mut c).data,
        CommandData::Selected(SelectInfo {
            read_only: true,
            ..
        })
    ));
    c.select_listed(b"[Gmail]/Spam", true, t0).unwrap();
    assert_eq!(sent(&mut c), "A3 EXAMINE \"[Gmail]/Spam\"\r\n");
    c.receive(b"A3 OK ok\r\n", t0).unwrap();
    completed(&mut c);
    c.select_listed(b"Junk Email", true, t0).unwrap();
    assert_eq!(sent(&mut c), "A4 EXAMINE \"Junk Email\"\r\n");
    c.receive(b"A4 OK ok\r\n", t0).unwrap();
    completed(&mut c);
    // UTF-8 from a UTF8=ACCEPT server: a literal, byte for byte.
    c.select_listed("Indésirable".as_bytes(), true, t0).unwrap();
    assert_eq!(sent(&mut c), "A5 EXAMINE {12}\r\n");
    c.receive(b"+ go\r\n", t0).unwrap();
    assert_eq!(sent(&mut c), "Indésirable\r\n");
    c.receive(b"A5 OK ok\r\n", t0).unwrap();
    completed(&mut c);
    for bad in [&b""[..], b"a\r\nA9 DELETE INBOX", b"a\0"] {
        assert!(matches!(
            c.select_listed(bad, true, t0),
            Err(ClientError::Input(_))
        ));
        assert!(c.poll_transmit().is_none());
        assert!(!c.is_busy());
    }
}
