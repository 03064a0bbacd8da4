//! Shared test support for emap's integration tests: a real Dovecot IMAP
//! server started once per test binary, scripted fake servers, a tiny
//! blocking IMAP client, and the few helpers every test file uses to drive
//! emap.
//!
//! emap talks to real IMAP servers, so its integration tests run against a
//! real one. Every test binary that needs a server does `mod support;` and
//! calls [`dovecot()`]; the first call starts Dovecot on 127.0.0.1 in a
//! fresh temporary directory, later calls (from any test thread) share it.
//! Tests isolate themselves by creating their own users
//! ([`Dovecot::user`]) and, for catch-all delivery, their own domains
//! ([`Dovecot::catchall`]).
//!
//! The harness modules depend only on std, tokio and tempfile — never on
//! emap's API — so changes to emap never break the harness itself. The one
//! exception, on purpose, is [`emap`](mod@emap): the single place that
//! knows how tests start a registry, name a credential, deliver mail and
//! await it, so that an API change is made there once instead of in every
//! test file.
//!
//! Each test binary uses a different subset of these helpers, hence the
//! module-wide `dead_code` (and, for the re-exports, `unused_imports`)
//! allowance below.
//!
//! Layout:
//! - [`dovecot`](mod@dovecot): starting/stopping the server, users, LMTP
//!   delivery, APPEND, `doveadm who`/`kick`, log inspection;
//! - [`cyrus`](mod@cyrus): the same for Cyrus IMAP 3.6 (unpacked by
//!   `scripts/setup-cyrus`), for the end-to-end suite and the benchmark;
//! - [`servers`]: [`TestServer`](servers::TestServer), what the suite of
//!   tests/servers.rs needs from a server, for each real server;
//! - [`courier`](mod@courier): a real Courier IMAP 5.0 (unpacked, run in
//!   a private mount namespace as root), with users, maildir delivery,
//!   kick and connection counts, for tests/courier.rs;
//! - [`raw_imap`]: [`RawImap`], a line-oriented IMAP client over a plain
//!   blocking `TcpStream`;
//! - [`lmtp`]: the blocking LMTP client behind [`Dovecot::deliver`];
//! - [`message`](mod@message): [`mail()`], building small RFC 5322
//!   messages, and [`message()`], the one-line mail the fake servers serve;
//! - [`oauth`]: the OAuth2 authorization server (token introspection)
//!   behind the test Dovecot's `oauth2` passdb;
//! - [`fake`]: a scripted fake IMAP server, for behaviour a real server
//!   will not produce on demand;
//! - [`mailbox_server`]: a stateful fake serving a model mailbox with
//!   injected faults, for scenarios where the client's exact commands may
//!   change;
//! - [`emap`](mod@emap): configs, credentials, delivery and receiving
//!   through emap's API;
//! - [`workspace`]: the workspace's programs (`emap`, `emap-bridge`),
//!   built once, for tests of the packages that do not build them;
//! - [`until`] / [`until_some`] here: the one polling wait, for states
//!   that announce no event.

#![allow(dead_code, unused_imports)]

pub mod courier;
pub mod cyrus;
pub mod dovecot;
pub mod emap;
pub mod fake;
pub mod lmtp;
pub mod mailbox_server;
pub mod message;
pub mod oauth;
pub mod proxy;
pub mod raw_imap;
pub mod servers;
pub mod trace;
pub mod workspace;

pub use dovecot::{CATCHALL_DOMAIN, CatchAll, Dovecot, TestUser, dovecot};
pub use message::{header_value, mail, message, message_id};
pub use raw_imap::{RawImap, is_bad, is_no, is_ok};

use std::io::{BufRead, BufReader, Read};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Generous bound for awaiting something that must happen (Dovecot holds
/// IDLE notifications back 500 ms; a reconnect waits out a backoff): every
/// wait ends long before it unless the code under test is stuck. Never a
/// timing assertion.
pub const EVENTUALLY: Duration = Duration::from_secs(30);

/// Polls `count` until it is `expected` or `timeout` passes; returns the
/// last value seen (for counts the server updates asynchronously, such as
/// its connections after a disconnect).
pub fn wait_count(timeout: Duration, expected: usize, mut count: impl FnMut() -> usize) -> usize {
    let mut last = 0;
    wait_for(timeout, || {
        last = count();
        (last == expected).then_some(())
    });
    last
}

/// Polls `probe` until it returns `Some`, or until `timeout` has elapsed.
///
/// Returns the first `Some` value, or `None` on timeout. Use it to await a
/// state ("the server counts 0 connections") instead of sleeping a fixed
/// time and hoping. It blocks the calling thread: for blocking harness
/// code only (async tests use [`until`]).
pub fn wait_for<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs blocking harness code (Dovecot helpers, [`RawImap`]) on tokio's
/// blocking pool and awaits it, re-raising its panic. Async tests should
/// use this rather than calling blocking helpers directly: on a
/// current-thread runtime a blocking call also stalls the library's tasks.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("blocking task failed: {e}"),
        },
    }
}

/// How often [`until_some`] looks again.
const POLL: Duration = Duration::from_millis(20);

/// Awaits `probe` until it returns `Some` and returns that value; panics
/// naming `what` after [`EVENTUALLY`].
///
/// This is the one polling loop for async tests, for a state that nothing
/// announces (the registry's stats and actor counts, a subscription's drop
/// counter). Where an event exists, await it instead (a subscription's
/// next mail, [`FakeServer::until`](fake::FakeServer::until),
/// [`MailboxServer::until`](mailbox_server::MailboxServer::until)).
pub async fn until_some<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// [`until_some`] for a condition.
pub async fn until(what: &str, mut probe: impl AsyncFnMut() -> bool) {
    until_some(what, async || probe().await.then_some(())).await;
}

/// Awaits `observed` (a counter a fake server bumps on each thing it
/// observes) until `probe` holds; panics naming `what` and `context()`
/// after [`EVENTUALLY`]. Woken by each change, not by a timer: the wait
/// behind [`FakeServer::until`](fake::FakeServer::until) and
/// [`MailboxServer::until`](mailbox_server::MailboxServer::until).
pub async fn until_observed(
    what: &str,
    observed: &tokio::sync::watch::Sender<u64>,
    mut probe: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let mut changes = observed.subscribe();
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    loop {
        changes.borrow_and_update();
        if probe() {
            return;
        }
        let changed = tokio::time::timeout_at(deadline, changes.changed()).await;
        assert!(
            changed.is_ok(),
            "timed out waiting for {what}; {}",
            context()
        );
    }
}

/// The lines of `pipe` (a child's stdout or stderr), read on a thread of
/// their own, as they come; the channel closes at the end of the pipe.
pub fn lines_of(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Sends SIGINT to `pid`, as Ctrl-C would.
pub fn interrupt(pid: u32) {
    let status = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}
