//! Filters against a real Dovecot: the time conditions at INTERNALDATE's
//! one-second resolution, "the next mail after this one" for a task that
//! waits twice, and a recipient named only in the `for` clause of the
//! topmost `Received` header.

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use emap::{Auth, Config, Credential, Filter, Handle, Mail, Registry, TlsMode};
use support::{TestUser, blocking, dovecot, mail};

/// Generous bound for awaiting an event that must happen (Dovecot holds
/// IDLE notifications back 500 ms); never a timing assertion.
const EVENTUALLY: Duration = Duration::from_secs(30);

fn start() -> Handle {
    Registry::start_in_thread(Config {
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        linger: Duration::from_millis(300),
        ..Config::default()
    })
    .unwrap()
}

fn cred(user: &TestUser) -> Credential {
    Credential::new("127.0.0.1", &user.name, Auth::password(&*user.password))
        .port(dovecot().imap_port)
        .tls(TlsMode::None)
}

async fn deliver(rcpt: String, subject: String) {
    blocking(move || {
        let raw = mail("sender@emap.test", &rcpt, &subject, "hello");
        dovecot().deliver(&rcpt, &raw);
    })
    .await
}

async fn next(sub: &mut emap::Subscription) -> Arc<Mail> {
    tokio::time::timeout(EVENTUALLY, sub.recv())
        .await
        .expect("no mail in time")
        .expect("subscription ended")
}

/// Item 3: "trigger the mail, then subscribe with `since(now)`" — the
/// README's advice — must get the mail although its INTERNALDATE (whole
/// seconds) is earlier than `now`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_a_time_later_in_the_same_second_gets_the_mail() {
    let h = start();
    let ca = dovecot().catchall("since");
    let c = cred(&ca.user);
    let addr = ca.address("task");
    // A session that sees the mail arrive keeps it in its replay window.
    let mut everything = h.subscribe(c.clone(), Filter::new()).await.unwrap();
    deliver(addr.clone(), "code 111111".into()).await;
    // The README's case: the mail was triggered, now the task subscribes.
    let after_delivery = SystemTime::now();
    let seen = next(&mut everything).await;
    let internal = seen.internal_date().expect("Dovecot sends INTERNALDATE");
    assert!(
        internal <= after_delivery,
        "{internal:?} {after_delivery:?}"
    );

    // Deterministic: 0.9 s after INTERNALDATE's whole second, which today's
    // exact comparison always refused.
    let t = internal + Duration::from_millis(900);
    let mut sub = h
        .subscribe(c.clone(), Filter::new().to(&addr).since(t))
        .await
        .unwrap();
    assert_eq!(next(&mut sub).await.uid(), seen.uid());

    let mut sub = h
        .subscribe(c.clone(), Filter::new().to(&addr).since(after_delivery))
        .await
        .unwrap();
    assert_eq!(next(&mut sub).await.uid(), seen.uid());

    // wait_for, the one-call form, likewise.
    let m = h
        .wait_for(c, Filter::new().to(&addr).since(t), EVENTUALLY)
        .await
        .unwrap();
    assert_eq!(m.uid(), seen.uid());
    h.shutdown().await;
}
