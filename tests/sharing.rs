//! Who may join a live session (issue 10, item 1).
//!
//! One registry is shared by many callers, so a caller may join a live
//! session only if it would have been let in on its own: the same user
//! (case kept), the same secret, the same TLS mode, the same trust
//! settings, and for OAuth2 the same token provider. Anything else gets a
//! session — and a login — of its own, and a wrong secret gets the
//! server's `AuthenticationFailed`, never anyone's mail. Each test pins one
//! sequence of callers on the real Dovecot and counts what the server saw:
//! connections (`doveadm who`) and logins, in plaintext or over TLS (its
//! log).

mod support;

use std::sync::Arc;
use std::time::Duration;

use emap::{Auth, Credential, Error, Filter, Handle, Secret, Subscription, TlsMode};
use support::emap::{deliver, dovecot_config, dovecot_cred, dovecot_cred_with, next, start};
use support::fake::{FakeConn, FakeServer};
use support::{EVENTUALLY, blocking, dovecot};

/// The wrong password the tests present.
const WRONG: &str = "Pw-Wrong-sharing-51c3e9";

/// `user`'s credential with the wrong password, recorded for the
/// trace-level secret scan (see `support::trace`).
fn wrong_cred(user: &support::TestUser) -> Credential {
    support::trace::record_secret(&user.name, WRONG);
    dovecot_cred_with(user, WRONG)
}

async fn connections(user: &str, expected: usize) -> usize {
    dovecot()
        .wait_connections_async(user, expected, EVENTUALLY)
        .await
}

/// `(logins over TLS, logins in plaintext)` of `user`, once they equal
/// `expected` (or the last seen after [`EVENTUALLY`]).
async fn logins_by_tls(user: &str, expected: (usize, usize)) -> (usize, usize) {
    let user = user.to_owned();
    blocking(move || dovecot().wait_logins_by_tls(&user, expected.0, expected.1, EVENTUALLY)).await
}

/// Subscribes to every mail of `cred`; panics on an error.
async fn subscribe(h: &Handle, cred: Credential) -> Subscription {
    h.subscribe(cred, Filter::new())
        .await
        .unwrap_or_else(|e| panic!("subscribe failed: {e}"))
}

/// Subscribes with a credential that must be refused with
/// `AuthenticationFailed`; panics if it is let in (with its session's key).
async fn refused(h: &Handle, cred: Credential) -> Error {
    match h.subscribe(cred, Filter::new()).await {
        Ok(sub) => panic!("a wrong password joined session {}", sub.session()),
        Err(e) => {
            assert!(matches!(e, Error::AuthenticationFailed(_)), "{e:?}");
            e
        }
    }
}

/// The PEM of the test CA, for credentials that verify Dovecot's
/// certificate.
fn with_ca(cred: Credential) -> Credential {
    cred.add_root_pem(&dovecot().ca_pem).unwrap()
}

/// Dovecot's implicit-TLS port.
fn implicit(cred: Credential) -> Credential {
    cred.port(dovecot().imaps_port).tls(TlsMode::Implicit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_beside_a_live_session_is_refused_and_the_right_ones_share() {
    let h = start(dovecot_config());
    let u = dovecot().user("share-wrong");
    let mut right = subscribe(&h, dovecot_cred(&u)).await;

    // The wrong password is tried on a connection of its own and refused.
    refused(&h, wrong_cred(&u)).await;
    let name = u.name.clone();
    let failures = blocking(move || {
        support::wait_for(EVENTUALLY, || {
            (dovecot().login_failures(&name) >= 1).then_some(())
        });
        dovecot().login_failures(&name)
    })
    .await;
    assert_eq!(failures, 1, "the wrong password reached the server once");

    // A second right-password subscriber still shares the one connection,
    // and both receive the next mail.
    let mut again = subscribe(&h, dovecot_cred(&u)).await;
    assert_eq!(right.session(), again.session());
    deliver(&u.name, "after").await;
    assert_eq!(next(&mut right).await.subject(), Some("after"));
    assert_eq!(next(&mut again).await.subject(), Some("after"));
    assert_eq!(connections(&u.name, 1).await, 1);
    let stats = h.stats().await.unwrap();
    assert_eq!(stats.len(), 1, "{stats:?}");
    assert_eq!(stats[0].subscribers, 2);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_and_wrong_passwords_at_once_each_get_their_own_answer() {
    let h = start(dovecot_config());
    let u = dovecot().user("share-race");
    // Whichever reaches the registry first, neither joins the other.
    let (wrong, right) = tokio::join!(
        h.subscribe(wrong_cred(&u), Filter::new()),
        h.subscribe(dovecot_cred(&u), Filter::new()),
    );
    match wrong {
        Ok(sub) => panic!("a wrong password joined session {}", sub.session()),
        Err(e) => assert!(matches!(e, Error::AuthenticationFailed(_)), "{e:?}"),
    }
    let mut right = right.unwrap_or_else(|e| panic!("the right password was refused: {e}"));
    deliver(&u.name, "one").await;
    assert_eq!(next(&mut right).await.subject(), Some("one"));

    // The failure is remembered for its own secret only: the wrong password
    // again is refused from memory (no second login attempt), while the
    // right one's session stays live and joinable.
    refused(&h, wrong_cred(&u)).await;
    let mut again = subscribe(&h, dovecot_cred(&u)).await;
    assert_eq!(right.session(), again.session());
    let name = u.name.clone();
    let attempts =
        blocking(move || dovecot().settled_login_attempts(&name, Duration::from_millis(500))).await;
    assert_eq!(attempts, 2, "one right and one wrong login, no more");
    deliver(&u.name, "two").await;
    assert_eq!(next(&mut right).await.subject(), Some("two"));
    assert_eq!(next(&mut again).await.subject(), Some("two"));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_first_does_not_block_the_right_one() {
    let h = start(dovecot_config());
    let u = dovecot().user("share-wrong-first");
    refused(&h, wrong_cred(&u)).await;
    let mut right = subscribe(&h, dovecot_cred(&u)).await;
    deliver(&u.name, "hello").await;
    assert_eq!(next(&mut right).await.subject(), Some("hello"));
    // And the remembered failure still answers the wrong one.
    refused(&h, wrong_cred(&u)).await;
    let name = u.name.clone();
    let failures = blocking(move || {
        dovecot().settled_login_attempts(&name, Duration::from_millis(500));
        dovecot().login_failures(&name)
    })
    .await;
    assert_eq!(failures, 1);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_beside_a_plaintext_session_gets_its_own_tls_connection() {
    let h = start(dovecot_config());
    let u = dovecot().user("share-starttls");
    let mut plain = subscribe(&h, dovecot_cred(&u)).await;
    assert_eq!(logins_by_tls(&u.name, (0, 1)).await, (0, 1));

    let mut tls = subscribe(&h, with_ca(dovecot_cred(&u).tls(TlsMode::StartTls))).await;
    assert_ne!(plain.session(), tls.session());
    assert_eq!(connections(&u.name, 2).await, 2);
    assert_eq!(
        logins_by_tls(&u.name, (1, 1)).await,
        (1, 1),
        "(TLS, plaintext) logins"
    );
    // A second STARTTLS subscriber shares the TLS session.
    let tls2 = subscribe(&h, with_ca(dovecot_cred(&u).tls(TlsMode::StartTls))).await;
    assert_eq!(tls.session(), tls2.session());
    deliver(&u.name, "both").await;
    assert_eq!(next(&mut plain).await.subject(), Some("both"));
    assert_eq!(next(&mut tls).await.subject(), Some("both"));
    assert_eq!(h.stats().await.unwrap().len(), 2);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_trust_settings_get_their_own_sessions() {
    let h = start(dovecot_config());
    let u = dovecot().user("share-trust");
    // Extra roots are compared by value: the same PEM added twice shares.
    let roots = subscribe(&h, with_ca(implicit(dovecot_cred(&u)))).await;
    let roots2 = subscribe(&h, with_ca(implicit(dovecot_cred(&u)))).await;
    assert_eq!(roots.session(), roots2.session());
    assert_eq!(connections(&u.name, 1).await, 1);

    // A caller-built rustls config is compared by identity (its Arc).
    let config = client_config();
    let custom = subscribe(&h, implicit(dovecot_cred(&u)).rustls_config(config.clone())).await;
    assert_ne!(roots.session(), custom.session());
    assert_eq!(connections(&u.name, 2).await, 2);
    let custom2 = subscribe(&h, implicit(dovecot_cred(&u)).rustls_config(config)).await;
    assert_eq!(custom.session(), custom2.session());
    // An equal config in another Arc is another trust setting.
    let other = subscribe(
        &h,
        implicit(dovecot_cred(&u)).rustls_config(client_config()),
    )
    .await;
    assert_ne!(custom.session(), other.session());
    assert_eq!(connections(&u.name, 3).await, 3);
    assert_eq!(logins_by_tls(&u.name, (3, 0)).await, (3, 0));
    h.shutdown().await;
}

/// A rustls client config trusting only the test CA.
fn client_config() -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&dovecot().ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_differing_only_in_case_gets_its_own_session() {
    let h = start(dovecot_config());
    let u = dovecot().user("share-case");
    let mut lower = subscribe(&h, dovecot_cred(&u)).await;
    // The test Dovecot lower-cases user names before its lookup
    // (auth_username_format = %Lu), so the upper-cased name logs in to the
    // same account; a server where case matters would not. emap must not
    // decide for the server: a session of its own.
    let mut upper_cred = dovecot_cred(&u);
    upper_cred.user = u.name.to_uppercase();
    let mut upper = subscribe(&h, upper_cred).await;
    assert_ne!(lower.session(), upper.session());
    assert_eq!(upper.session().user, u.name.to_uppercase(), "case kept");
    assert_eq!(connections(&u.name, 2).await, 2);
    deliver(&u.name, "case").await;
    assert_eq!(next(&mut lower).await.subject(), Some("case"));
    assert_eq!(next(&mut upper).await.subject(), Some("case"));
    h.shutdown().await;
}

/// OAuth2 credentials share a session only with the same token provider:
/// the same `Auth` (cloned) shares, another provider — even one returning
/// the same token — does not. Dovecot here has no OAuth2, so a scripted
/// server accepts XOAUTH2 and counts the connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_credentials_share_only_with_the_same_token_provider() {
    let server = FakeServer::start(|mut c: FakeConn, _| async move {
        c.send("* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2 SASL-IR IDLE] hi\r\n")
            .await;
        let (tag, _) = c.expect("AUTHENTICATE XOAUTH2").await;
        c.send(format!("{tag} OK [CAPABILITY IMAP4rev1 IDLE] ok\r\n"))
            .await;
        c.examine(0, Some(1), Some(1)).await;
        c.serve().await;
    })
    .await;
    let h = start(dovecot_config());
    let cred = |auth: Auth| {
        Credential::new("127.0.0.1", "fake", auth)
            .port(server.port)
            .tls(TlsMode::None)
    };
    let provider = || async { Ok(Secret::new("ya29.same-token")) };
    let auth = Auth::oauth2(provider);
    let a = subscribe(&h, cred(auth.clone())).await;
    let b = subscribe(&h, cred(auth)).await;
    assert_eq!(a.session(), b.session());
    assert_eq!(server.accepted(), 1);
    let c = subscribe(&h, cred(Auth::oauth2(provider))).await;
    assert_ne!(a.session(), c.session());
    assert_eq!(server.accepted(), 2);
    assert_eq!(h.stats().await.unwrap().len(), 2);
    h.shutdown().await;
}

/// `Handle::stats_of` shows a caller the session its own credential would
/// join, and nothing about a session it could not join: not to a wrong
/// password, a user name in another case, or another TLS mode — even
/// while that session is live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_of_shows_only_the_session_the_credential_would_join() {
    let u = dovecot().user("statsof");
    let h = start(dovecot_config());
    let _sub = subscribe(&h, dovecot_cred(&u)).await;
    let mine = h.stats_of(&dovecot_cred(&u)).await.unwrap();
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0].key.user, u.name);
    let upper = Credential::new(
        "127.0.0.1",
        u.name.to_uppercase(),
        Auth::password(&*u.password),
    )
    .port(dovecot().imap_port)
    .tls(TlsMode::None);
    let starttls = dovecot_cred(&u).tls(TlsMode::StartTls);
    for other in [wrong_cred(&u), upper, starttls] {
        let seen = h.stats_of(&other).await.unwrap();
        assert!(seen.is_empty(), "{other:?} saw {seen:?}");
    }
    h.shutdown().await;
}
