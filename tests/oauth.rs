//! OAuth2 against a real server: XOAUTH2 and OAUTHBEARER logins on the test
//! Dovecot, whose `oauth2` passdb asks the suite's own authorization server
//! (`tests/support/oauth.rs`) whether each token is live.
//!
//! What is proven here and nowhere else: a valid token logs in with each
//! mechanism and mail flows; an expired token fails once, as an
//! authentication failure (for OAUTHBEARER after emap answered the
//! server's error challenge — an unanswered challenge would hang until the
//! command timeout instead); the token provider is asked again at each
//! reconnect, so a token refreshed (and the old one revoked) logs in after
//! the server kicked the session.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use emap::{Auth, Config, Credential, Error, Filter, OAuthMechanism, Secret, TlsMode};
use support::emap::{deliver, dovecot_config, next_subject, start, until_stats};
use support::{TestUser, dovecot};

/// A credential for `user` whose provider hands out `token()` at each call
/// and counts the calls.
fn oauth_cred(
    user: &TestUser,
    mechanism: OAuthMechanism,
    token: impl Fn() -> String + Send + Sync + 'static,
) -> (Credential, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let token = Arc::new(token);
    let auth = Auth::with_provider(mechanism, move || {
        counted.fetch_add(1, Ordering::SeqCst);
        let t = token();
        async move { Ok(Secret::new(t)) }
    });
    let cred = Credential::new("127.0.0.1", &user.name, auth)
        .port(dovecot().imap_port)
        .tls(TlsMode::None);
    (cred, calls)
}

/// Log lines of successful logins of `user` with `method`.
fn logins_with(user: &str, method: &str) -> usize {
    let needle = format!("Login: user=<{user}>, method={method},");
    dovecot()
        .log()
        .lines()
        .filter(|l| l.contains(&needle))
        .count()
}

async fn a_valid_token_logs_in(mechanism: OAuthMechanism, method: &str) {
    let u = dovecot().user("oauth-ok");
    let token = dovecot().oauth().issue(&u.name);
    let t = token.clone();
    let (cred, calls) = oauth_cred(&u, mechanism, move || t.clone());
    let h = start(dovecot_config());
    let mut sub = h.subscribe(cred, Filter::new()).await.expect("subscribe");
    deliver(&u.name, "by token").await;
    assert_eq!(next_subject(&mut sub).await, "by token");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(dovecot().oauth().introspections(&token) >= 1);
    assert_eq!(logins_with(&u.name, method), 1, "one {method} login");
    assert_eq!(dovecot().login_failures(&u.name), 0);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_logs_in_with_xoauth2() {
    a_valid_token_logs_in(OAuthMechanism::XOAuth2, "XOAUTH2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_logs_in_with_oauthbearer() {
    a_valid_token_logs_in(OAuthMechanism::OAuthBearer, "OAUTHBEARER").await;
}

async fn an_expired_token_fails_once(mechanism: OAuthMechanism) {
    let u = dovecot().user("oauth-expired");
    let token = dovecot().oauth().issue(&u.name);
    dovecot().oauth().expire(&token);
    let t = token.clone();
    let (cred, calls) = oauth_cred(&u, mechanism, move || t.clone());
    // A command timeout far beyond the test's patience: were the error
    // challenge left unanswered, the subscribe would end in a timeout.
    let config = Config {
        command_timeout: Duration::from_secs(120),
        ..dovecot_config()
    };
    let h = start(config);
    let err = tokio::time::timeout(
        support::EVENTUALLY,
        h.subscribe(cred.clone(), Filter::new()),
    )
    .await
    .expect("the failed login did not end in time")
    .expect_err("an expired token logged in");
    assert!(
        matches!(err, Error::AuthenticationFailed(_)),
        "expected AuthenticationFailed, got {err:?}"
    );
    assert!(err.is_permanent());
    assert!(!err.to_string().contains(&token), "the token in {err}");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "asked for a token once");
    assert_eq!(dovecot().oauth().introspections(&token), 1);
    assert_eq!(logins_with(&u.name, "XOAUTH2"), 0);
    assert_eq!(logins_with(&u.name, "OAUTHBEARER"), 0);
    // Subscribing again with the same provider is refused from memory, not
    // by another login.
    let again = h.subscribe(cred, Filter::new()).await;
    assert!(matches!(again, Err(Error::AuthenticationFailed(_))));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_fails_once_with_xoauth2() {
    an_expired_token_fails_once(OAuthMechanism::XOAuth2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_fails_once_with_oauthbearer_after_the_error_challenge() {
    an_expired_token_fails_once(OAuthMechanism::OAuthBearer).await;
}

/// The provider refreshes the token at each call and the authorization
/// server revokes the one it replaced: after a kick, only a fresh token
/// logs in, so mail after the kick proves the provider was asked again.
async fn the_provider_is_asked_again_at_each_reconnect(mechanism: OAuthMechanism) {
    let u = dovecot().user("oauth-refresh");
    let issued: Arc<Mutex<Vec<String>>> = Arc::default();
    let name = u.name.clone();
    let log = issued.clone();
    let (cred, calls) = oauth_cred(&u, mechanism, move || {
        let oauth = dovecot().oauth();
        let fresh = oauth.issue(&name);
        let mut all = log.lock().unwrap();
        if let Some(old) = all.last() {
            oauth.revoke(old);
        }
        all.push(fresh.clone());
        fresh
    });
    let h = start(dovecot_config());
    let mut sub = h.subscribe(cred, Filter::new()).await.expect("subscribe");
    deliver(&u.name, "before the kick").await;
    assert_eq!(next_subject(&mut sub).await, "before the kick");
    let before = until_stats(&h, dovecot().imap_port, "connected", |s| {
        s.state == emap::SessionState::Watching
    })
    .await
    .reconnects;
    assert!(dovecot().kick(&u.name), "no connection to kick");
    until_stats(&h, dovecot().imap_port, "reconnected", |s| {
        s.reconnects > before && s.state == emap::SessionState::Watching
    })
    .await;
    deliver(&u.name, "after the kick").await;
    assert_eq!(next_subject(&mut sub).await, "after the kick");
    let tokens = issued.lock().unwrap().clone();
    assert!(
        calls.load(Ordering::SeqCst) >= 2,
        "provider not asked again"
    );
    assert_eq!(tokens.len(), calls.load(Ordering::SeqCst));
    assert!(dovecot().oauth().introspections(tokens.last().unwrap()) >= 1);
    assert_eq!(dovecot().login_failures(&u.name), 0);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_is_asked_again_at_each_reconnect_with_xoauth2() {
    the_provider_is_asked_again_at_each_reconnect(OAuthMechanism::XOAuth2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_is_asked_again_at_each_reconnect_with_oauthbearer() {
    the_provider_is_asked_again_at_each_reconnect(OAuthMechanism::OAuthBearer).await;
}
