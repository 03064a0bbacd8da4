//! The one place in the harness that knows emap's API: how a test starts a
//! registry, names a credential, delivers mail to Dovecot and awaits it,
//! and reads a session's stats.
//!
//! Every other support module stays free of emap so that the harness
//! itself never breaks when emap changes; the test files used to carry a
//! copy of these helpers each. Keeping them here means an API change is
//! made once, and every file waits the same honest way: for an event, with
//! [`EVENTUALLY`] as the liveness bound.

use std::sync::Arc;
use std::time::Duration;

use ::emap::{
    Auth, Config, Credential, Error, Filter, Handle, Mail, Registry, SessionStats, Subscription,
    TlsMode,
};

use super::{EVENTUALLY, TestUser, blocking, dovecot, mail, until_some};

/// For tests against the real Dovecot: reconnects within 50–500 ms and a
/// session that lingers 300 ms after its last subscriber.
pub fn dovecot_config() -> Config {
    Config {
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        linger: Duration::from_millis(300),
        ..Config::default()
    }
}

/// For tests against a scripted server ([`FakeServer`](super::fake::FakeServer),
/// [`MailboxServer`](super::mailbox_server::MailboxServer)): reconnects
/// within 20–200 ms, and a session without IDLE polls every 100 ms.
pub fn scripted_config() -> Config {
    Config {
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        poll_interval: Duration::from_millis(100),
        ..Config::default()
    }
}

/// A registry on its own thread, with `config`.
pub fn start(config: Config) -> Handle {
    Registry::start_in_thread(config).expect("the registry did not start")
}

/// A registry with `config` and a subscription to every mail of the
/// scripted server on `port` (as [`fake_cred`]).
pub async fn subscribed(config: Config, port: u16) -> (Handle, Subscription) {
    let h = start(config);
    let sub = h
        .subscribe(fake_cred(port), Filter::new())
        .await
        .expect("subscribe failed");
    (h, sub)
}

/// The credential of Dovecot user `user` (plaintext, on Dovecot's port).
pub fn dovecot_cred(user: &TestUser) -> Credential {
    dovecot_cred_with(user, &user.password)
}

/// The credential of Dovecot user `user` with another `password`.
pub fn dovecot_cred_with(user: &TestUser, password: &str) -> Credential {
    Credential::new("127.0.0.1", &user.name, Auth::password(password))
        .port(dovecot().imap_port)
        .tls(TlsMode::None)
}

/// The credential a scripted server on `port` accepts: user `fake`,
/// password `pw`, plaintext.
pub fn fake_cred(port: u16) -> Credential {
    fake_cred_with(port, "pw")
}

/// User `fake` with this `password` on a scripted server on `port`.
pub fn fake_cred_with(port: u16, password: &str) -> Credential {
    Credential::new("127.0.0.1", "fake", Auth::password(password))
        .port(port)
        .tls(TlsMode::None)
}

/// Delivers a small mail with `subject` to `rcpt` through Dovecot's LMTP.
pub async fn deliver(rcpt: &str, subject: &str) {
    let (rcpt, subject) = (rcpt.to_owned(), subject.to_owned());
    blocking(move || {
        let raw = mail("sender@emap.test", &rcpt, &subject, "hello");
        dovecot().deliver(&rcpt, &raw);
    })
    .await
}

/// The subscription's next mail; panics if none comes within
/// [`EVENTUALLY`] or the subscription ends.
pub async fn next(sub: &mut Subscription) -> Arc<Mail> {
    tokio::time::timeout(EVENTUALLY, sub.recv())
        .await
        .expect("no mail in time")
        .unwrap_or_else(|| panic!("subscription ended: {:?}", sub.error()))
}

/// The subject of the subscription's next mail (see [`next`]).
pub async fn next_subject(sub: &mut Subscription) -> String {
    next(sub).await.subject().unwrap_or_default().to_owned()
}

/// The subjects of the subscription's next `n` mails, in order (see
/// [`next`]).
pub async fn next_subjects(sub: &mut Subscription, n: usize) -> Vec<String> {
    let mut subjects = Vec::with_capacity(n);
    for _ in 0..n {
        subjects.push(next_subject(sub).await);
    }
    subjects
}

/// Awaits the end of the subscription, which no mail may precede, and
/// returns the error it ended with.
pub async fn ended(sub: &mut Subscription) -> Option<Error> {
    let end = tokio::time::timeout(EVENTUALLY, sub.recv())
        .await
        .expect("the subscription did not end");
    assert!(end.is_none(), "a mail came instead of the end: {end:?}");
    sub.error()
}

/// The stats of the session on `port`, if there is one.
pub async fn stats_of(h: &Handle, port: u16) -> Option<SessionStats> {
    session_where(h, |s| s.key.port == port).await
}

/// The stats of the session of `user`, if there is one.
pub async fn stats_of_user(h: &Handle, user: &str) -> Option<SessionStats> {
    session_where(h, |s| s.key.user == user).await
}

async fn session_where(h: &Handle, which: impl Fn(&SessionStats) -> bool) -> Option<SessionStats> {
    h.stats().await.ok()?.into_iter().find(which)
}

/// Polls the stats of the session on `port` until `pred` holds (see
/// [`until_some`](super::until_some)); returns them.
pub async fn until_stats(
    h: &Handle,
    port: u16,
    what: &str,
    pred: impl Fn(&SessionStats) -> bool,
) -> SessionStats {
    until_some(what, async || stats_of(h, port).await.filter(|s| pred(s))).await
}
