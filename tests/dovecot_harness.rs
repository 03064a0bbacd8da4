//! Tests of the test harness itself (`tests/support`): the real Dovecot
//! starts, accepts logins, takes mail by LMTP (also on catch-all domains)
//! and by APPEND, counts and kicks connections, and its log tells login
//! attempts apart. If these fail, emap's own integration tests cannot be
//! trusted, so each check here is one that can actually fail.

mod support;

use std::process::Command;
use std::time::Duration;

use support::dovecot::{DEFAULT_FROM, count_who_connections, run};
use support::lmtp::dot_stuff;
use support::message::rfc5322_date;
use support::{
    CATCHALL_DOMAIN, RawImap, dovecot, header_value, is_bad, is_no, is_ok, mail, wait_for,
};

const WAIT: Duration = Duration::from_secs(10);

fn logged_in(user: &support::TestUser) -> RawImap {
    let mut imap = RawImap::connect(dovecot().imap_port);
    imap.login_ok(&user.name, &user.password);
    imap
}

#[test]
fn starts_once_and_greets_on_the_imap_port() {
    let d = dovecot();
    // Every thread gets the same instance.
    let other = std::thread::spawn(|| dovecot() as *const _ as usize)
        .join()
        .unwrap();
    assert_eq!(other, d as *const _ as usize);

    let ports = [d.imap_port, d.imaps_port, d.lmtp_port];
    assert!(ports.iter().all(|p| *p != 0));
    assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2]);

    let imap = RawImap::connect(d.imap_port);
    assert!(imap.greeting().starts_with("* OK"), "{}", imap.greeting());
    assert!(imap.greeting().contains("STARTTLS"), "{}", imap.greeting());
    assert!(
        imap.greeting().contains("AUTH=PLAIN"),
        "{}",
        imap.greeting()
    );
    assert!(d.ca_pem.starts_with(b"-----BEGIN CERTIFICATE-----"));
    assert_eq!(std::fs::read(&d.ca_path).unwrap(), d.ca_pem);
}

/// `openssl s_client` against a port, trusting only the test CA and
/// checking the certificate is valid for IP 127.0.0.1.
fn s_client(port: u16, extra: &[&str]) -> (bool, String) {
    let d = dovecot();
    let mut cmd = Command::new(d.openssl());
    cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .arg("-CAfile")
        .arg(&d.ca_path)
        .args(["-verify_return_error", "-verify_ip", "127.0.0.1"])
        .args(extra);
    let out = run(cmd, Duration::from_secs(20)).expect("openssl s_client");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn tls_ports_present_a_certificate_signed_by_the_test_ca() {
    let d = dovecot();
    let (ok, text) = s_client(d.imaps_port, &[]);
    assert!(ok, "implicit TLS handshake failed:\n{text}");
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");

    let (ok, text) = s_client(d.imap_port, &["-starttls", "imap"]);
    assert!(ok, "STARTTLS handshake failed:\n{text}");
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");

    // The leaf is a server certificate, not a CA (rustls insists).
    let mut cmd = Command::new(d.openssl());
    cmd.args(["x509", "-noout", "-text", "-in"])
        .arg(d.dir().join("tls/server.pem"));
    let out = run(cmd, Duration::from_secs(20)).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(text.contains("TLS Web Server Authentication"), "{text}");
    assert!(text.contains("IP Address:127.0.0.1"), "{text}");
}

#[test]
fn fresh_user_logs_in_and_wrong_password_gets_no() {
    let d = dovecot();
    let user = d.user("login");
    let other = d.user("login");
    assert_ne!(user.name, other.name);
    assert_ne!(user.password, other.password);

    let mut imap = RawImap::connect(d.imap_port);
    let lines = imap.login(&user.name, &user.password);
    assert!(is_ok(&lines), "{lines:?}");
    let lines = imap.command("NOOP");
    assert!(is_ok(&lines), "{lines:?}");
    imap.logout();

    let mut imap = RawImap::connect(d.imap_port);
    let lines = imap.login(&user.name, "not-the-password");
    assert!(is_no(&lines), "{lines:?}");
    assert!(lines.last().unwrap().contains("[AUTHENTICATIONFAILED]"));
    // Another user's password does not work either.
    let lines = imap.login(&user.name, &other.password);
    assert!(is_no(&lines), "{lines:?}");
    // Still usable after failures, and not logged in.
    let lines = imap.command("SELECT INBOX");
    assert!(is_bad(&lines) || is_no(&lines), "{lines:?}");

    let mut imap = RawImap::connect(d.imap_port);
    let lines = imap.login("no-such-user-anywhere", "x");
    assert!(is_no(&lines), "{lines:?}");
}

#[test]
fn user_names_are_unique_and_lowercased() {
    let d = dovecot();
    let a = d.user("Mixed_Case.Name");
    let b = d.user("Mixed_Case.Name");
    assert_ne!(a.name, b.name);
    assert_eq!(a.name, a.name.to_ascii_lowercase());
    assert!(
        a.name
            .starts_with(&format!("mixed_case.name-{}-", std::process::id()))
    );
    let mut imap = RawImap::connect(d.imap_port);
    // Dovecot lowercases login names, so the original case works too.
    imap.login_ok(&a.name.to_ascii_uppercase(), &a.password);
}

#[test]
fn lmtp_delivery_lands_in_inbox_with_envelope_headers() {
    let d = dovecot();
    let user = d.user("lmtp");
    let raw = mail(
        "Alice <alice@example.test>",
        &user.name,
        "lmtp test",
        "first line\n.starts with a dot\n.\nlast line",
    );
    let message_id = header_value(&raw, "Message-ID").unwrap();
    d.deliver(&user.name, &raw);

    let mut imap = logged_in(&user);
    let lines = imap.select("INBOX");
    assert!(is_ok(&lines), "{lines:?}");
    assert_eq!(RawImap::exists(&lines), Some(1), "{lines:?}");
    assert!(lines.iter().any(|l| l == "* 1 EXISTS"), "{lines:?}");
    let messages = imap.fetch_all();
    assert_eq!(messages.len(), 1);
    let stored = &messages[0];
    assert_eq!(
        header_value(stored, "Delivered-To").as_deref(),
        Some(user.name.as_str())
    );
    assert_eq!(
        header_value(stored, "Return-Path"),
        Some(format!("<{DEFAULT_FROM}>"))
    );
    assert_eq!(header_value(stored, "Message-ID"), Some(message_id));
    // Dot-stuffing was undone by the server: the body is intact.
    let text = String::from_utf8_lossy(stored);
    assert!(
        text.ends_with("first line\r\n.starts with a dot\r\n.\r\nlast line\r\n"),
        "{text}"
    );

    // An unknown recipient is refused, not silently dropped.
    let refused = d.try_deliver(DEFAULT_FROM, &["nobody-here-at-all"], &raw);
    assert!(refused.is_err(), "{refused:?}");
}

#[test]
fn catchall_domain_delivers_to_its_owner_with_the_original_recipient() {
    let d = dovecot();
    let raw = mail("a@example.test", "task42@catchall.test", "catch-all", "hi");
    let message_id = header_value(&raw, "Message-ID").unwrap();
    d.deliver(&format!("task42@{CATCHALL_DOMAIN}"), &raw);
    let found = d
        .messages(d.catchall_user(), "INBOX")
        .into_iter()
        .find(|m| header_value(m, "Message-ID").as_ref() == Some(&message_id))
        .expect("message in the catch-all user's INBOX");
    assert_eq!(
        header_value(&found, "Delivered-To").as_deref(),
        Some("task42@catchall.test")
    );

    // A private catch-all domain: two recipients, one mailbox.
    let catchall = d.catchall("private");
    d.deliver(
        &catchall.address("task-a"),
        &mail("a@x.test", "t", "a", "a"),
    );
    d.deliver(
        &catchall.address("task-b"),
        &mail("a@x.test", "t", "b", "b"),
    );
    let delivered_to: Vec<_> = d
        .messages(&catchall.user, "INBOX")
        .iter()
        .map(|m| header_value(m, "Delivered-To").unwrap())
        .collect();
    assert_eq!(
        delivered_to,
        [catchall.address("task-a"), catchall.address("task-b")]
    );
    // Nothing of it leaked into the shared catch-all mailbox.
    assert!(d.messages(d.catchall_user(), "INBOX").iter().all(|m| {
        !header_value(m, "Delivered-To")
            .unwrap()
            .ends_with(&catchall.domain)
    }));
}

#[test]
fn append_stores_messages_in_any_mailbox() {
    let d = dovecot();
    let user = d.user("append");
    let first = mail("a@x.test", &user.name, "one", "1");
    let second = mail("a@x.test", &user.name, "two", "2");
    let tagged = d.append(&user, "INBOX", &first);
    assert!(tagged.contains("[APPENDUID "), "{tagged}");
    d.append(&user, "Archive/2024", &second);

    let inbox = d.messages(&user, "INBOX");
    assert_eq!(inbox, vec![first]);
    let archive = d.messages(&user, "Archive/2024");
    assert_eq!(archive, vec![second]);
    // Appended mail bypasses LMTP: no envelope headers.
    assert_eq!(header_value(&inbox[0], "Delivered-To"), None);
}

#[test]
fn connections_are_counted_by_the_server() {
    let d = dovecot();
    let user = d.user("conn");
    assert_eq!(d.connections(&user.name), 0);

    let mut clients: Vec<RawImap> = (0..3).map(|_| logged_in(&user)).collect();
    assert_eq!(d.wait_connections(&user.name, 3, WAIT), 3);
    // A connection that has not logged in is not the user's.
    let _anonymous = RawImap::connect(d.imap_port);
    assert_eq!(d.connections(&user.name), 3);

    clients.pop();
    assert_eq!(d.wait_connections(&user.name, 2, WAIT), 2);
    clients.clear();
    assert_eq!(d.wait_connections(&user.name, 0, WAIT), 0);
}

#[test]
fn who_output_is_parsed_per_user_and_protocol() {
    let out = "username                  proto pid  ip\n\
               bob-1-2                   imap  10   127.0.0.1\n\
               bob-1-2                   imap  11   127.0.0.1\n\
               bob-1-23                  imap  12   127.0.0.1\n\
               bob-1-2                   lmtp  13   127.0.0.1\n";
    assert_eq!(count_who_connections(out, "bob-1-2"), 2);
    assert_eq!(count_who_connections(out, "bob-1-23"), 1);
    assert_eq!(count_who_connections(out, "bob"), 0);
    assert_eq!(count_who_connections("username proto pid ip\n", "bob"), 0);
}

#[test]
fn kick_disconnects_every_connection_of_the_user() {
    let d = dovecot();
    let user = d.user("kick");
    let bystander = d.user("kick-bystander");
    let mut clients: Vec<RawImap> = (0..2).map(|_| logged_in(&user)).collect();
    let mut other = logged_in(&bystander);
    assert_eq!(d.wait_connections(&user.name, 2, WAIT), 2);

    assert!(d.kick(&user.name));
    for client in &mut clients {
        let bye = client.read_response().expect("BYE before close");
        assert!(bye.starts_with("* BYE"), "{bye}");
        let eof = client.read_response().unwrap_err();
        assert_eq!(eof.kind(), std::io::ErrorKind::UnexpectedEof);
    }
    assert_eq!(d.wait_connections(&user.name, 0, WAIT), 0);
    assert!(!d.kick(&user.name), "nothing left to kick");
    // Other users are untouched.
    assert!(is_ok(&other.command("NOOP")));
    assert_eq!(d.connections(&bystander.name), 1);
}

#[test]
fn special_password_logs_in_with_a_literal() {
    let d = dovecot();
    let password = r#" spa ce "quoted" back\slash é {7} #"#;
    let user = d.user_with_password("special", password);
    let mut imap = RawImap::connect(d.imap_port);
    let lines = imap.login_literal(&user.name, password);
    assert!(is_ok(&lines), "{lines:?}");

    // Any deviation fails: the password is compared byte for byte.
    let mut imap = RawImap::connect(d.imap_port);
    let lines = imap.login_literal(&user.name, password.trim());
    assert!(is_no(&lines), "{lines:?}");
    let lines = imap.login_literal(&user.name, &password.replace('é', "e"));
    assert!(is_no(&lines), "{lines:?}");
    // ASCII-only specials also work as an escaped quoted string.
    let ascii = r#"a "b" \c d"#;
    let user = d.user_with_password("special-quoted", ascii);
    let lines = imap.login(&user.name, ascii);
    assert!(is_ok(&lines), "{lines:?}");
}

#[test]
#[should_panic(expected = "cannot contain")]
fn passwords_with_a_colon_are_refused() {
    dovecot().user_with_password("colon", "a:b");
}

#[test]
fn login_attempts_are_counted_from_the_log() {
    let d = dovecot();
    let user = d.user("attempts");
    let ghost = format!("ghost-{}", std::process::id());

    logged_in(&user).logout();
    let mut imap = RawImap::connect(d.imap_port);
    assert!(is_no(&imap.login(&user.name, "wrong-1")));
    assert!(is_no(&imap.login(&user.name, "wrong-2")));
    assert!(is_no(&imap.login(&ghost, "whatever")));

    assert_eq!(
        d.wait_login_attempts(&user.name, 3, WAIT),
        3,
        "{}",
        d.log_tail(30)
    );
    assert_eq!(
        d.settled_login_attempts(&user.name, Duration::from_millis(300)),
        3
    );
    assert_eq!(d.login_successes(&user.name), 1);
    assert_eq!(d.login_failures(&user.name), 2);
    assert_eq!(
        d.wait_login_attempts(&ghost, 1, WAIT),
        1,
        "{}",
        d.log_tail(30)
    );
    assert_eq!(d.login_successes(&ghost), 0);
    // Names that merely share a prefix are not counted.
    assert_eq!(d.login_attempts(&user.name[..user.name.len() - 1]), 0);
    // LMTP lookups of an unknown recipient are not login attempts.
    let _ = d.try_deliver(DEFAULT_FROM, &[&ghost], b"Subject: x\r\n\r\nx\r\n");
    assert_eq!(d.login_attempts(&ghost), 1);
    assert!(d.log_tail(200).contains("imap-login: Info: Login: user=<"));
}

#[test]
fn the_user_connection_limit_is_15_per_ip() {
    let d = dovecot();
    let user = d.user("limit");
    let _clients: Vec<RawImap> = (0..15).map(|_| logged_in(&user)).collect();
    assert_eq!(d.wait_connections(&user.name, 15, WAIT), 15);
    let mut extra = RawImap::connect(d.imap_port);
    let lines = extra.login(&user.name, &user.password);
    // Dovecot refuses the 16th: either at LOGIN or right after it.
    let refused = !is_ok(&lines)
        || extra
            .read_response_timeout(Duration::from_secs(5))
            .map(|r| r.is_some_and(|l| l.starts_with("* BYE")))
            .unwrap_or(true);
    assert!(refused, "{lines:?}");
    // The refusal is logged (asynchronously) with the configured limit.
    let logged = wait_for(WAIT, || {
        d.log_tail(50)
            .contains("(mail_max_userip_connections=15)")
            .then_some(())
    });
    assert!(logged.is_some(), "{}", d.log_tail(50));
}

#[test]
fn idle_sees_lmtp_delivery() {
    let d = dovecot();
    let user = d.user("idle");
    let mut imap = logged_in(&user);
    assert_eq!(RawImap::exists(&imap.select("INBOX")), Some(0));
    let tag = imap.idle();
    d.deliver(&user.name, &mail("a@x.test", &user.name, "idle", "x"));
    let seen = imap
        .read_until(WAIT, |l| l == "* 1 EXISTS")
        .expect("EXISTS during IDLE");
    assert_eq!(seen.last().unwrap(), "* 1 EXISTS");
    assert!(is_ok(&imap.done(&tag)));
}

#[tokio::test]
async fn async_helpers_do_not_block_the_runtime() {
    let d = dovecot();
    let user = d.user("async");
    let raw = mail("a@x.test", &user.name, "async", "x");
    d.deliver_async(&user.name, &raw).await;
    let (name, password) = (user.name.clone(), user.password.clone());
    let client = support::blocking(move || {
        let mut imap = RawImap::connect(dovecot().imap_port);
        imap.login_ok(&name, &password);
        imap
    })
    .await;
    assert_eq!(d.wait_connections_async(&user.name, 1, WAIT).await, 1);
    drop(client);
    assert_eq!(d.wait_connections_async(&user.name, 0, WAIT).await, 0);
    assert_eq!(d.messages(&user, "INBOX").len(), 1);
}

#[test]
fn message_helpers() {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(1_795_652_165);
    assert_eq!(rfc5322_date(t), "Thu, 26 Nov 2026 00:16:05 +0000");
    assert_eq!(
        rfc5322_date(std::time::UNIX_EPOCH),
        "Thu, 01 Jan 1970 00:00:00 +0000"
    );
    let t = std::time::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
    assert!(rfc5322_date(t).starts_with("Tue, 29 Feb 2000"));

    let a = mail("a@x.test", "b@y.test", "hello", "line1\nline2");
    let b = mail("a@x.test", "b@y.test", "hello", "line1\nline2");
    assert_ne!(
        header_value(&a, "message-id"),
        header_value(&b, "message-id")
    );
    assert_eq!(header_value(&a, "SUBJECT").as_deref(), Some("hello"));
    assert!(a.ends_with(b"\r\n\r\nline1\r\nline2\r\n"));
    let folded = b"X-Long: one\r\n two\r\nSubject: s\r\n\r\nX-Long: body\r\n";
    assert_eq!(header_value(folded, "x-long").as_deref(), Some("one two"));
    assert_eq!(header_value(folded, "missing"), None);

    assert_eq!(dot_stuff(b"a\n.b\r\n."), b"a\r\n..b\r\n..\r\n.\r\n");
    assert_eq!(dot_stuff(b""), b".\r\n");
    assert_eq!(dot_stuff(b"x\r\n"), b"x\r\n.\r\n");

    let polled = wait_for(Duration::from_millis(200), || None::<()>);
    assert!(polled.is_none());
}
