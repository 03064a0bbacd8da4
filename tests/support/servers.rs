//! The server as a parameter of the end-to-end suite (tests/servers.rs):
//! [`TestServer`] is what a scenario needs from a real IMAP server, so one
//! scenario runs unchanged on Dovecot, Cyrus and (at merge) Courier.
//!
//! # What a server must provide
//! An implementation wraps a server started once per test binary on
//! 127.0.0.1 (in a temporary directory, tied to the test process's life)
//! and returns `&'static` from its starter (`dovecot()`, `cyrus()`), so
//! scenarios can hand it to blocking tasks. It must give:
//! - [`name`](TestServer::name), [`imap_port`](TestServer::imap_port):
//!   plaintext IMAP on 127.0.0.1 with `LOGIN` allowed;
//! - [`user`](TestUser): a fresh account, able to log in at once, with an
//!   empty INBOX;
//! - [`deliver`](TestServer::deliver): put a mail into a user's INBOX the
//!   way an MTA would (LMTP), so IDLE clients are notified as in
//!   production; and say with
//!   [`delivery_adds_delivered_to`](TestServer::delivery_adds_delivered_to)
//!   whether that delivery adds a `Delivered-To:` header;
//! - [`kick`](TestServer::kick) and [`connections`](TestServer::connections):
//!   end and count a user's *logged-in* IMAP connections, as the server
//!   itself sees them (not a client-side count);
//! - [`connection_cap`](TestServer::connection_cap): the per-user cap the
//!   server was started with, if it has one, and the words of its refusal
//!   ([`cap_refusal`](TestServer::cap_refusal)).
//!
//! Mailbox management ([`append`](TestServer::append),
//! [`create_mailbox`](TestServer::create_mailbox),
//! [`delete_mailbox`](TestServer::delete_mailbox)) has default
//! implementations over plain IMAP as the user, which any server that lets
//! a user create and delete its own folders satisfies.
//!
//! Plugging a server in: implement the trait for its harness type (a dozen
//! lines, mostly forwarding, as below for Dovecot and Cyrus), and add one
//! `scenarios!(name, starter())` line to tests/servers.rs.

use std::time::Duration;

use super::cyrus::Cyrus;
use super::dovecot::{Dovecot, MAX_USERIP_CONNECTIONS, TestUser};
use super::raw_imap::{RawImap, is_ok, quoted};

/// A real IMAP server the end-to-end scenarios run against (see the
/// module docs for what an implementation must provide).
pub trait TestServer: Send + Sync + 'static {
    /// Short lowercase name, for messages (`dovecot`, `cyrus`).
    fn name(&self) -> &'static str;

    /// Plaintext IMAP on 127.0.0.1.
    fn imap_port(&self) -> u16;

    /// A fresh account `<prefix>-...` with an empty INBOX, able to log in
    /// at once.
    fn user(&self, prefix: &str) -> TestUser;

    /// Delivers `raw` into the INBOX of user `rcpt` as an MTA would
    /// (LMTP); panics if refused.
    fn deliver(&self, rcpt: &str, raw: &[u8]);

    /// Whether [`TestServer::deliver`] adds `Delivered-To: <rcpt>`.
    fn delivery_adds_delivered_to(&self) -> bool;

    /// Ends every IMAP connection of `user`; whether there was one.
    fn kick(&self, user: &str) -> bool;

    /// Logged-in IMAP connections of `user`, counted by the server.
    fn connections(&self, user: &str) -> usize;

    /// The per-user connection cap, if the server was started with one.
    fn connection_cap(&self) -> Option<usize>;

    /// Words of the server's refusal when the cap is reached (found in the
    /// session's `last_error`).
    fn cap_refusal(&self) -> &'static str;

    /// Polls [`TestServer::connections`] until it is `expected` or
    /// `timeout` passes; returns the last count.
    fn wait_connections(&self, user: &str, expected: usize, timeout: Duration) -> usize {
        let mut last = 0;
        super::wait_for(timeout, || {
            last = self.connections(user);
            (last == expected).then_some(())
        });
        last
    }

    /// APPENDs `raw` to `mailbox` of `user` (created if missing).
    fn append(&self, user: &TestUser, mailbox: &str, raw: &[u8]) {
        let mut imap = logged_in(self.imap_port(), user);
        if !mailbox.eq_ignore_ascii_case("INBOX") {
            create_on(&mut imap, mailbox);
        }
        let lines = imap.append(mailbox, raw);
        assert!(is_ok(&lines), "APPEND to {mailbox} failed: {lines:?}");
        imap.logout();
    }

    /// Creates `mailbox` for `user` (no error if it exists).
    fn create_mailbox(&self, user: &TestUser, mailbox: &str) {
        let mut imap = logged_in(self.imap_port(), user);
        create_on(&mut imap, mailbox);
        imap.logout();
    }

    /// Creates `mailbox` for `user`; whether the server said OK.
    fn try_create_mailbox(&self, user: &TestUser, mailbox: &str) -> bool {
        let mut imap = logged_in(self.imap_port(), user);
        let name = quoted(mailbox).expect("mailbox name must be 7-bit");
        let lines = imap.command(&format!("CREATE {name}"));
        imap.logout();
        is_ok(&lines)
    }

    /// Deletes `mailbox` of `user`, as the user.
    fn delete_mailbox(&self, user: &TestUser, mailbox: &str) {
        let mut imap = logged_in(self.imap_port(), user);
        let name = quoted(mailbox).expect("mailbox name must be 7-bit");
        let lines = imap.command(&format!("DELETE {name}"));
        assert!(is_ok(&lines), "DELETE {mailbox} failed: {lines:?}");
        imap.logout();
    }
}

fn logged_in(port: u16, user: &TestUser) -> RawImap {
    let mut imap = RawImap::connect(port);
    imap.login_ok(&user.name, &user.password);
    imap
}

fn create_on(imap: &mut RawImap, mailbox: &str) {
    let name = quoted(mailbox).expect("mailbox name must be 7-bit");
    let lines = imap.command(&format!("CREATE {name}"));
    // Dovecot says `NO [ALREADYEXISTS] Mailbox already exists`; Cyrus
    // `NO Mailbox already exists`, without the code.
    assert!(
        is_ok(&lines)
            || lines.last().is_some_and(|l| {
                l.contains("[ALREADYEXISTS]") || l.contains("Mailbox already exists")
            }),
        "CREATE {mailbox} failed: {lines:?}"
    );
}

impl TestServer for Dovecot {
    fn name(&self) -> &'static str {
        "dovecot"
    }
    fn imap_port(&self) -> u16 {
        self.imap_port
    }
    fn user(&self, prefix: &str) -> TestUser {
        Dovecot::user(self, prefix)
    }
    fn deliver(&self, rcpt: &str, raw: &[u8]) {
        Dovecot::deliver(self, rcpt, raw);
    }
    /// `lmtp_hdr_delivery_address = final` (Dovecot's default).
    fn delivery_adds_delivered_to(&self) -> bool {
        true
    }
    fn kick(&self, user: &str) -> bool {
        Dovecot::kick(self, user)
    }
    fn connections(&self, user: &str) -> usize {
        Dovecot::connections(self, user)
    }
    fn connection_cap(&self) -> Option<usize> {
        Some(MAX_USERIP_CONNECTIONS)
    }
    /// `* BYE [UNAVAILABLE] Maximum number of connections from user+IP
    /// exceeded (mail_max_userip_connections=15)` after LOGIN.
    fn cap_refusal(&self) -> &'static str {
        "Maximum number of connections"
    }
    fn delete_mailbox(&self, user: &TestUser, mailbox: &str) {
        Dovecot::delete_mailbox(self, user, mailbox);
    }
}

impl TestServer for Cyrus {
    fn name(&self) -> &'static str {
        "cyrus"
    }
    fn imap_port(&self) -> u16 {
        self.imap_port
    }
    fn user(&self, prefix: &str) -> TestUser {
        Cyrus::user(self, prefix)
    }
    fn deliver(&self, rcpt: &str, raw: &[u8]) {
        Cyrus::deliver(self, rcpt, raw);
    }
    /// Cyrus' lmtpd adds `Return-Path`, `Received` and
    /// `X-Cyrus-Session-Id`, never `Delivered-To`.
    fn delivery_adds_delivered_to(&self) -> bool {
        false
    }
    fn kick(&self, user: &str) -> bool {
        Cyrus::kick(self, user)
    }
    fn connections(&self, user: &str) -> usize {
        Cyrus::connections(self, user)
    }
    fn connection_cap(&self) -> Option<usize> {
        Some(self.cap)
    }
    /// `NO Too many open connections (15 of 15 for <user>)` to LOGIN; the
    /// connection stays open.
    fn cap_refusal(&self) -> &'static str {
        "Too many open connections"
    }
}
