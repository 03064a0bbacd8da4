//! `test_login` against a real Dovecot: every TLS mode, wrong passwords,
//! untrusted certificates, the connection cap, awkward passwords, and the
//! further folders a credential watches.

mod support;

use emap::{Auth, Credential, Error, SpecialUse, TlsMode};
use support::dovecot;

fn plain(user: &str, password: &str) -> Credential {
    Credential::new("127.0.0.1", user, Auth::password(password))
        .port(dovecot().imap_port)
        .tls(TlsMode::None)
}

#[tokio::test]
async fn plaintext_login_succeeds() {
    let u = dovecot().user("plain");
    emap::test_login(&plain(&u.name, &u.password))
        .await
        .unwrap();
}

#[tokio::test]
async fn implicit_tls_with_the_extra_root_succeeds() {
    let d = dovecot();
    let u = d.user("tls");
    let cred = Credential::new("127.0.0.1", &u.name, Auth::password(&*u.password))
        .port(d.imaps_port)
        .add_root_pem(&d.ca_pem)
        .unwrap();
    emap::test_login(&cred).await.unwrap();
    // The same through the DNS name in the certificate.
    let cred = Credential {
        host: "localhost".into(),
        ..cred
    };
    emap::test_login(&cred).await.unwrap();
}

#[tokio::test]
async fn starttls_with_the_extra_root_succeeds() {
    let d = dovecot();
    let u = d.user("starttls");
    let cred = plain(&u.name, &u.password)
        .tls(TlsMode::StartTls)
        .add_root_pem(&d.ca_pem)
        .unwrap();
    emap::test_login(&cred).await.unwrap();
}

#[tokio::test]
async fn untrusted_certificate_is_a_permanent_verification_error() {
    let d = dovecot();
    let u = d.user("untrusted");
    let cred =
        Credential::new("127.0.0.1", &u.name, Auth::password(&*u.password)).port(d.imaps_port);
    let err = emap::test_login(&cred).await.unwrap_err();
    assert!(matches!(err, Error::TlsVerification(_)), "{err:?}");
    assert!(err.is_permanent());
    let err = emap::test_login(&cred.port(d.imap_port).tls(TlsMode::StartTls))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TlsVerification(_)), "{err:?}");
}

#[tokio::test]
async fn wrong_password_is_a_permanent_authentication_error() {
    let u = dovecot().user("wrongpw");
    let err = emap::test_login(&plain(&u.name, "not-the-password"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AuthenticationFailed(_)), "{err:?}");
    assert!(err.is_permanent());
    assert!(!format!("{err} {err:?}").contains("not-the-password"));
}

#[tokio::test]
async fn awkward_password_logs_in() {
    let d = dovecot();
    let password = "sp ace \"quote\" back\\slash é ñ 日本 {3}";
    let u = d.user_with_password("awkward", password);
    emap::test_login(&plain(&u.name, password)).await.unwrap();
    // Also over LOGIN: the same bytes must arrive whatever the encoding.
    let cred = plain(&u.name, password)
        .tls(TlsMode::StartTls)
        .add_root_pem(&d.ca_pem)
        .unwrap();
    emap::test_login(&cred).await.unwrap();
}

#[tokio::test]
async fn missing_mailbox_is_a_permanent_command_failure() {
    let u = dovecot().user("nombox");
    let err = emap::test_login(&plain(&u.name, &u.password).mailbox("Does-Not-Exist"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::CommandFailed {
                command: "SELECT",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_permanent());
}

#[tokio::test]
async fn injection_is_refused_before_connecting() {
    // Port 9 (discard) is never dialled: validation comes first.
    let cred = Credential::new("127.0.0.1", "a\r\nA1 LOGOUT", Auth::password("p"))
        .port(9)
        .tls(TlsMode::None);
    let err = emap::test_login(&cred).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert!(err.is_permanent());
}

#[tokio::test]
async fn connection_cap_refusal_is_transient() {
    let d = dovecot();
    let u = d.user("capped");
    let mut held = Vec::new();
    // The harness sets mail_max_userip_connections = 15.
    for _ in 0..15 {
        let mut raw = support::RawImap::connect(d.imap_port);
        raw.login(&u.name, &u.password);
        held.push(raw);
    }
    let err = emap::test_login(&plain(&u.name, &u.password))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Refused(_)), "{err:?}");
    assert!(err.is_transient());
    drop(held);
}

/// A further folder given by name that exists passes, as does one given by
/// a special use the server's LIST marks (Dovecot marks `Junk` `\Junk`
/// once the user has it).
#[tokio::test]
async fn existing_further_folders_pass() {
    let d = dovecot();
    let u = d.user("alsook");
    let name = u.clone();
    support::blocking(move || {
        dovecot().create_mailbox(&name, "Notifications");
        dovecot().create_junk(&name);
    })
    .await;
    let cred = plain(&u.name, &u.password)
        .also_watch("Notifications")
        .also_watch(SpecialUse::Junk);
    emap::test_login(&cred).await.unwrap();
}

/// A further folder given by name that does not exist fails the login test
/// with a permanent error naming that folder (not the one that exists
/// before it, nor the main folder). It used to pass: only the main folder
/// was opened.
#[tokio::test]
async fn missing_further_folder_fails_naming_it() {
    let d = dovecot();
    let u = d.user("alsomissing");
    let name = u.clone();
    support::blocking(move || dovecot().create_mailbox(&name, "Notifications")).await;
    let cred = plain(&u.name, &u.password)
        .also_watch("Notifications")
        .also_watch("Notificatons");
    let err = emap::test_login(&cred)
        .await
        .expect_err("a watched folder does not exist");
    match &err {
        Error::FolderNotFound { folder, .. } => assert_eq!(folder, "Notificatons"),
        other => panic!("{other:?}"),
    }
    assert!(err.is_permanent());
    assert!(err.to_string().contains("\"Notificatons\""), "{err}");
}

/// A further folder given by special use is looked up with LIST as a
/// session would: without a folder marked `\Junk` the login test fails
/// with the typed error naming the attribute, and passes once the server
/// marks one.
#[tokio::test]
async fn further_special_use_is_looked_up_with_list() {
    let d = dovecot();
    let u = d.user("alsojunk");
    let cred = plain(&u.name, &u.password).also_watch(SpecialUse::Junk);
    let err = emap::test_login(&cred)
        .await
        .expect_err("no folder is marked \\Junk yet");
    assert!(
        matches!(err, Error::SpecialUseNotFound(SpecialUse::Junk)),
        "{err:?}"
    );
    assert!(err.is_permanent());
    let name = u.clone();
    support::blocking(move || dovecot().create_junk(&name)).await;
    emap::test_login(&cred).await.expect("Junk is marked now");
}
