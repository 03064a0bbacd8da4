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
//! - [`connection_cap`](TestServer::connection_cap): the cap the server
//!   was started with, if it has one, the port where it applies
//!   ([`cap_port`](TestServer::cap_port), the IMAP port unless the cap
//!   lives on a listener of its own) and the words of its refusal
//!   ([`cap_refusal`](TestServer::cap_refusal), `None` for a server that
//!   refuses by closing the connection without a word);
//! - [`folder`](TestServer::folder): the server's full name for a
//!   personal folder (`Name` on Dovecot and Cyrus, `INBOX.Name` on
//!   Courier, whose personal namespace is `INBOX.`).
//!
//! Mailbox management ([`append`](TestServer::append),
//! [`create_mailbox`](TestServer::create_mailbox),
//! [`delete_mailbox`](TestServer::delete_mailbox)) has default
//! implementations over plain IMAP as the user, which any server that lets
//! a user create and delete its own folders satisfies.
//!
//! Plugging a server in: implement the trait for its harness type (a dozen
//! lines, mostly forwarding, as below for Dovecot, Cyrus and Courier), and
//! add one `scenarios!(name, starter())` line to tests/servers.rs.

use std::time::Duration;

use super::courier::{CAPPED_PER_IP, Courier};
use super::cyrus::Cyrus;
use super::dovecot::{Dovecot, MAX_USERIP_CONNECTIONS, TestUser};
use super::raw_imap::{RawImap, is_ok, quoted};

/// A real IMAP server the end-to-end scenarios run against (see the
/// module docs for what an implementation must provide).
pub trait TestServer: Send + Sync + 'static {
    /// Short lowercase name, for messages (`dovecot`, `cyrus`, `courier`).
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

    /// The connection cap, if the server was started with one (per user
    /// on Dovecot and Cyrus, per IP on Courier).
    fn connection_cap(&self) -> Option<usize>;

    /// Plaintext IMAP on 127.0.0.1 where [`TestServer::connection_cap`]
    /// applies: the IMAP port unless the server has a capped listener of
    /// its own (Courier's cap is per IP, so it lives apart from the port
    /// parallel tests share).
    fn cap_port(&self) -> u16 {
        self.imap_port()
    }

    /// Words of the server's refusal when the cap is reached (found in the
    /// session's `last_error`); `None` if the server refuses by closing
    /// the connection without a greeting or a `BYE` (the session's
    /// `last_error` is then emap's `Error::Closed`).
    fn cap_refusal(&self) -> Option<&'static str>;

    /// The full name of the personal folder `name`, as the server has it
    /// (a scenario creates, selects and deletes this name).
    fn folder(&self, name: &str) -> String {
        name.into()
    }

    /// Polls [`TestServer::connections`] until it is `expected` or
    /// `timeout` passes; returns the last count.
    fn wait_connections(&self, user: &str, expected: usize, timeout: Duration) -> usize {
        super::wait_count(timeout, expected, || self.connections(user))
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
    if is_ok(&lines) {
        return;
    }
    // A NO for an existing folder: Dovecot says `NO [ALREADYEXISTS]
    // Mailbox already exists`, Cyrus the same without the code, Courier
    // only `NO Cannot create this folder.`, so LIST tells.
    let list = imap.command(&format!("LIST \"\" {name}"));
    assert!(
        is_ok(&list) && list.iter().any(|l| l.starts_with("* LIST ")),
        "CREATE {mailbox} failed: {lines:?}; LIST: {list:?}"
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
    fn cap_refusal(&self) -> Option<&'static str> {
        Some("Maximum number of connections")
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
    fn cap_refusal(&self) -> Option<&'static str> {
        Some("Too many open connections")
    }
}

impl TestServer for Courier {
    fn name(&self) -> &'static str {
        "courier"
    }
    fn imap_port(&self) -> u16 {
        self.imap_port
    }
    /// The user's INBOX is opened read-write once (one LOGIN) before it is
    /// returned, so Courier has its UIDVALIDITY stored.
    fn user(&self, prefix: &str) -> TestUser {
        Courier::user(self, prefix)
    }
    /// Written into the maildir (`tmp/`, then `new/`), as Courier's local
    /// delivery does; there is no LMTP.
    fn deliver(&self, rcpt: &str, raw: &[u8]) {
        Courier::deliver(self, rcpt, raw);
    }
    /// Courier's local delivery prepends `Delivered-To: <rcpt>`, and so
    /// does the harness.
    fn delivery_adds_delivered_to(&self) -> bool {
        true
    }
    /// SIGTERM to the user's imapd processes.
    fn kick(&self, user: &str) -> bool {
        Courier::kick(self, user)
    }
    fn connections(&self, user: &str) -> usize {
        Courier::connections(self, user)
    }
    /// Per IP, on [`Courier::capped_port`] only.
    fn connection_cap(&self) -> Option<usize> {
        Some(CAPPED_PER_IP)
    }
    fn cap_port(&self) -> u16 {
        self.capped_port
    }
    /// couriertcpd accepts the connection beyond the cap and closes it at
    /// once, without a greeting.
    fn cap_refusal(&self) -> Option<&'static str> {
        None
    }
    /// Personal namespace `INBOX.`, separator `.`.
    fn folder(&self, name: &str) -> String {
        format!("INBOX.{name}")
    }
}
