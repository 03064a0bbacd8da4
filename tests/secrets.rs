//! Secrets never reach logs, `Debug` output or errors.
//!
//! Runs every authentication path — AUTHENTICATE PLAIN and LOGIN, XOAUTH2
//! and OAUTHBEARER (with the server's error challenge), wrong passwords,
//! TLS and STARTTLS, a live session with IDLE and fetches — with tracing at
//! TRACE level captured into a buffer, then scans the buffer, every error
//! and every `Debug` rendering for each password and token, raw and in the
//! base64 forms SASL puts on the wire.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use emap::{Auth, Config, Credential, Filter, Registry, Secret, TlsMode};
use support::fake::{FakeConn, FakeServer};
use support::{blocking, dovecot, mail};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn forms(user: &str, secret: &str) -> Vec<String> {
    vec![
        secret.to_owned(),
        B64.encode(format!("\0{user}\0{secret}")),
        B64.encode(format!("user={user}\x01auth=Bearer {secret}\x01\x01")),
        B64.encode(secret),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_trace_logs_errors_or_debug_output() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let d = dovecot();
    let mut secrets: Vec<(String, String)> = Vec::new();
    let mut rendered = String::new();

    // Password over plaintext (AUTHENTICATE PLAIN), implicit TLS, STARTTLS.
    let pw = "Pw-Plain-7f3a91";
    let u = d.user_with_password("secret", pw);
    secrets.push((u.name.clone(), pw.to_owned()));
    let plain = Credential::new("127.0.0.1", &u.name, Auth::password(pw))
        .port(d.imap_port)
        .tls(TlsMode::None);
    emap::test_login(&plain).await.unwrap();
    let tls = Credential::new("127.0.0.1", &u.name, Auth::password(pw))
        .port(d.imaps_port)
        .add_root_pem(&d.ca_pem)
        .unwrap();
    emap::test_login(&tls).await.unwrap();
    let starttls = plain
        .clone()
        .tls(TlsMode::StartTls)
        .add_root_pem(&d.ca_pem)
        .unwrap();
    emap::test_login(&starttls).await.unwrap();
    rendered += &format!("{plain:?} {tls:?} {starttls:?}");

    // A wrong password: the error and its Debug form.
    let wrong = "Pw-Wrong-c0ffee42";
    secrets.push((u.name.clone(), wrong.to_owned()));
    let bad = Credential::new("127.0.0.1", &u.name, Auth::password(wrong))
        .port(d.imap_port)
        .tls(TlsMode::None);
    let err = emap::test_login(&bad).await.unwrap_err();
    rendered += &format!("{err} {err:?}");

    // A live session: subscribe, IDLE, fetch, shutdown.
    let h = Registry::start_in_thread(Config::default()).unwrap();
    let mut sub = h.subscribe(plain.clone(), Filter::new()).await.unwrap();
    let name = u.name.clone();
    blocking(move || dovecot().deliver(&name, &mail("a@emap.test", &name, "hello", "body"))).await;
    let m = tokio::time::timeout(Duration::from_secs(30), sub.recv())
        .await
        .unwrap()
        .unwrap();
    rendered += &format!("{m:?} {sub:?} {:?}", h.stats().await.unwrap());
    h.shutdown().await;

    // LOGIN (no AUTH=PLAIN advertised) and both OAuth2 mechanisms, with
    // the OAUTHBEARER error challenge, against a scripted server.
    let token = "ya29.Tok-5e5e5e-secret";
    let login_pw = "Pw-Login-99aa77";
    secrets.push(("fake".into(), token.to_owned()));
    secrets.push(("fake".into(), login_pw.to_owned()));
    let server = FakeServer::start(|mut c: FakeConn, n| async move {
        match n {
            0 => {
                c.greet_and_login("IDLE").await;
                c.examine(0, Some(1), Some(1)).await;
                let (tag, _) = c.expect("LOGOUT").await;
                c.send(format!("* BYE bye\r\n{tag} OK done\r\n")).await;
            }
            1 => {
                c.send("* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2 SASL-IR] hi\r\n")
                    .await;
                let (tag, _) = c.expect("AUTHENTICATE XOAUTH2").await;
                c.send(format!("{tag} OK [CAPABILITY IMAP4rev1] ok\r\n"))
                    .await;
                c.examine(0, Some(1), Some(1)).await;
                let (tag, _) = c.expect("LOGOUT").await;
                c.send(format!("* BYE bye\r\n{tag} OK done\r\n")).await;
            }
            _ => {
                c.send("* OK [CAPABILITY IMAP4rev1 AUTH=OAUTHBEARER SASL-IR] hi\r\n")
                    .await;
                let (tag, _) = c.expect("AUTHENTICATE OAUTHBEARER").await;
                let json = B64.encode(r#"{"status":"invalid_token"}"#);
                c.send(format!("+ {json}\r\n")).await;
                c.line().await;
                c.send(format!("{tag} NO [AUTHENTICATIONFAILED] bad token\r\n"))
                    .await;
            }
        }
    })
    .await;
    let fake = |auth: Auth| {
        Credential::new("127.0.0.1", "fake", auth)
            .port(server.port)
            .tls(TlsMode::None)
    };
    emap::test_login(&fake(Auth::password(login_pw)))
        .await
        .unwrap();
    let provider = move || async move { Ok(Secret::new(token)) };
    emap::test_login(&fake(Auth::oauth2(provider)))
        .await
        .unwrap();
    let err = emap::test_login(&fake(Auth::oauthbearer(provider)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid_token"), "{err}");
    rendered += &format!("{err} {err:?} {:?}", fake(Auth::oauth2(provider)));
    // The secrets really went over the wire: the scan is meaningful.
    assert!(server.commands().iter().any(|c| c.contains(login_pw)));

    let log = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "nothing was logged"
    );
    assert!(
        log.contains("authenticated"),
        "the login path was not logged"
    );
    for (user, secret) in &secrets {
        for form in forms(user, secret) {
            assert!(
                !log.contains(&form),
                "secret form {form:?} in the trace log"
            );
            assert!(
                !rendered.contains(&form),
                "secret form {form:?} in Debug/Display output"
            );
        }
    }
}
