//! Secrets never reach logs, `Debug` output or errors.
//!
//! Runs every authentication path — AUTHENTICATE PLAIN and LOGIN, XOAUTH2
//! and OAUTHBEARER (with the server's error challenge), wrong passwords,
//! TLS and STARTTLS, a live session with IDLE and fetches — with tracing at
//! TRACE level captured into a buffer, then scans the buffer, every error
//! and every `Debug` rendering for each password and token, raw and in the
//! base64 forms SASL puts on the wire.
//!
//! A second test builds every public value that can hold a secret — the
//! credential types, the actor messages, the protocol layer's command
//! builder, encoded commands and client state machine mid-login, the errors
//! a bad secret produces, and what a subscription made with a secret hands
//! out — and scans their `{:?}` and `{}` renderings for the same forms, also
//! as the decimal byte lists a derived `Debug` of `Vec<u8>` prints.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use emap::__private::proto::client::{Client, Mechanism, Options};
use emap::__private::proto::encode::{CommandBuilder, LiteralMode};
use emap::{Auth, Config, Credential, Error, Filter, Registry, Secret, TlsMode};
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

/// The process-wide TRACE capture, installed on first use. Every test of
/// this binary calls it before anything else: the harness (`dovecot()`,
/// the fake servers) installs its own file subscriber when asked to, and
/// whichever came first would own the global default (the later `init`
/// panicked: a race between the two tests).
fn capture() -> Capture {
    static CAPTURE: std::sync::OnceLock<Capture> = std::sync::OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let capture = Capture::default();
            let writer = capture.clone();
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .init();
            capture
        })
        .clone()
}

/// Every form in which `secret` could leak: raw, in the SASL payloads
/// (PLAIN, XOAUTH2, OAUTHBEARER) raw and base64-encoded, and each of these
/// as the decimal byte list a derived `Debug` of `Vec<u8>` or `&[u8]`
/// prints (`[112, 119, ...]`).
fn forms(user: &str, secret: &str) -> Vec<String> {
    let payloads = [
        secret.to_owned(),
        format!("\0{user}\0{secret}"),
        format!("user={user}\x01auth=Bearer {secret}\x01\x01"),
        format!("auth=Bearer {secret}\x01\x01"),
    ];
    let mut forms = Vec::new();
    for p in &payloads {
        forms.push(p.clone());
        forms.push(B64.encode(p));
    }
    let bytes: Vec<String> = forms.iter().map(|f| byte_list(f.as_bytes())).collect();
    forms.extend(bytes);
    // The raw secret itself, not just the payloads it is embedded in.
    forms.retain(|f| !f.is_empty());
    forms
}

/// `[1, 2, 3]` without the brackets: what `{:?}` prints for these bytes.
fn byte_list(bytes: &[u8]) -> String {
    let s = format!("{bytes:?}");
    s[1..s.len() - 1].to_owned()
}

/// Panics if any form of `secret` (see [`forms`]) is in `text`.
fn assert_clean(what: &str, text: &str, user: &str, secret: &str) {
    for form in forms(user, secret) {
        assert!(
            !text.contains(&form),
            "a form of the secret ({form:?}) is in {what}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_trace_logs_errors_or_debug_output() {
    let capture = capture();

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

/// `{:?}` and `{}` of every public value built with a secret: none shows
/// it in any form. The protocol layer is driven by hand to the points where
/// it holds the secret (a command being built, a LOGIN or AUTHENTICATE
/// sent or waiting for its continuation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_debug_or_display_of_any_public_type() {
    let _capture = capture();
    let user = "dbg-user";
    let pw = "Pw-Debug-4b1d9e77";
    let token = "ya29.Tok-Debug-8c8c8c";
    let mut debug = Vec::<(&str, String)>::new();

    // The credential types.
    let secret = Secret::new(pw);
    debug.push(("Secret", format!("{secret:?}")));
    let password = Auth::password(pw);
    debug.push(("Auth::Password", format!("{password:?}")));
    let oauth = Auth::oauth2(move || async move { Ok(Secret::new(token)) });
    let bearer = Auth::oauthbearer(move || async move { Ok(Secret::new(token)) });
    debug.push(("Auth::OAuth2", format!("{oauth:?} {bearer:?}")));
    if let Auth::OAuth2 { provider, .. } = &oauth {
        let issued = provider().await;
        debug.push(("a token provider's result", format!("{issued:?}")));
        assert_eq!(issued.unwrap().expose(), token, "the provider works");
    }
    let ca = &dovecot().ca_pem;
    let creds = [
        Credential::new("h", user, password.clone()),
        Credential::new("h", user, password.clone()).tls(TlsMode::StartTls),
        Credential::new("h", user, password.clone())
            .tls(TlsMode::None)
            .mailbox("Other"),
        Credential::new("h", user, password.clone())
            .add_root_pem(ca)
            .unwrap(),
        Credential::new("h", user, oauth.clone()),
        Credential::new("h", user, bearer.clone()).rustls_config(Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        )),
    ];
    for c in &creds {
        debug.push(("Credential", format!("{c:?}")));
        debug.push(("TlsConfig", format!("{:?}", c.tls_config)));
        debug.push((
            "messages::Subscribe",
            format!(
                "{:?}",
                emap::messages::Subscribe {
                    credential: c.clone(),
                    filter: Filter::new(),
                    capacity: None,
                    cancel: None,
                }
            ),
        ));
    }

    // A secret that cannot be sent: the error names the field, not the value.
    let bad = format!("{pw}\r\nA2 LOGOUT");
    let e = Credential::new("h", user, Auth::password(bad.as_str()))
        .validate()
        .unwrap_err();
    debug.push(("Error::InvalidInput", format!("{e} {e:?}")));

    // The protocol layer: a command being built, the encoded command.
    let builder = CommandBuilder::new(LiteralMode::default(), "A1", "LOGIN")
        .string("user name", user.as_bytes())
        .unwrap()
        .string("password", pw.as_bytes())
        .unwrap();
    debug.push(("CommandBuilder", format!("{builder:?}")));
    let encoded = builder.finish();
    assert!(
        encoded
            .parts
            .concat()
            .windows(pw.len())
            .any(|w| w == pw.as_bytes()),
        "the encoded LOGIN carries the password: the scan is meaningful"
    );
    debug.push(("Encoded", format!("{encoded:?}")));
    let literal = CommandBuilder::new(LiteralMode::default(), "A1", "LOGIN")
        .string("password", format!("{pw}é").as_bytes())
        .unwrap();
    debug.push(("CommandBuilder (literal)", format!("{literal:?}")));
    let e = CommandBuilder::new(LiteralMode::default(), "A1", "LOGIN")
        .string("password", bad.as_bytes())
        .unwrap_err();
    debug.push(("InputError", format!("{e} {e:?}")));

    // The client state machine with LOGIN and each AUTHENTICATE in flight,
    // with and without SASL-IR (then the secret waits for the `+`).
    let now = std::time::Instant::now();
    for caps in ["IMAP4rev1", "IMAP4rev1 SASL-IR"] {
        let greeted = || {
            let mut c = Client::new(Options::default(), now);
            c.receive(format!("* OK [CAPABILITY {caps}] hi\r\n").as_bytes(), now)
                .unwrap();
            c
        };
        let mut c = greeted();
        c.login(user, pw, now).unwrap();
        debug.push(("Client (LOGIN)", format!("{c:?}")));
        let e = c.login(user, &bad, now).unwrap_err();
        debug.push(("ClientError", format!("{e} {e:?}")));
        for (mech, secret) in [
            (Mechanism::Plain, pw),
            (Mechanism::XOAuth2, token),
            (Mechanism::OAuthBearer, token),
        ] {
            let mut c = greeted();
            c.authenticate(mech, user, secret, Some(("h", 993)), now)
                .unwrap();
            debug.push(("Client (AUTHENTICATE)", format!("{c:?}")));
            let sent = c.poll_transmit().unwrap_or_default();
            c.receive(b"+ \r\n", now).unwrap();
            debug.push(("Client (after +)", format!("{c:?}")));
            let answered = c.poll_transmit().unwrap_or_default();
            let on_wire = B64.encode(match mech {
                Mechanism::Plain => format!("\0{user}\0{secret}"),
                _ => String::new(),
            });
            if mech == Mechanism::Plain {
                assert!(
                    String::from_utf8_lossy(&[sent, answered].concat()).contains(&on_wire),
                    "the PLAIN payload went out: the scan is meaningful"
                );
            }
            let e = c.login(user, secret, now).unwrap_err();
            debug.push(("ClientError (busy)", format!("{e} {e:?}")));
        }
    }

    // What a subscription made with the secret hands out, and the error of
    // a rejected one.
    let server = FakeServer::start(|mut c: FakeConn, n| async move {
        if n == 0 {
            c.greet_and_login("IDLE").await;
            c.examine(0, Some(1), Some(1)).await;
            c.serve().await;
        } else {
            c.send("* OK [CAPABILITY IMAP4rev1] hi\r\n").await;
            let (tag, _) = c.expect("LOGIN").await;
            c.send(format!("{tag} NO [AUTHENTICATIONFAILED] no\r\n"))
                .await;
        }
    })
    .await;
    let cred = Credential::new("127.0.0.1", user, Auth::password(pw))
        .port(server.port)
        .tls(TlsMode::None);
    let h = Registry::start_in_thread(Config::default()).unwrap();
    let sub = h.subscribe(cred.clone(), Filter::new()).await.unwrap();
    debug.push(("Subscription", format!("{sub:?}")));
    debug.push((
        "SessionKey",
        format!("{} {:?}", sub.session(), sub.session()),
    ));
    debug.push(("SessionStats", format!("{:?}", h.stats().await.unwrap())));
    debug.push(("Handle", format!("{h:?} {:?}", h.actors())));
    debug.push(("Mailbox", format!("{:?}", h.mailbox(cred.clone()))));
    let wrong = "Pw-Debug-Wrong-0e0e0e";
    let rejected = emap::test_login(
        &Credential::new("127.0.0.1", user, Auth::password(wrong))
            .port(server.port)
            .tls(TlsMode::None),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(rejected, Error::AuthenticationFailed(_)),
        "{rejected:?}"
    );
    debug.push((
        "Error::AuthenticationFailed",
        format!("{rejected} {rejected:?}"),
    ));
    drop(sub);
    h.shutdown().await;

    for (what, text) in &debug {
        for (u, s) in [(user, pw), (user, token), (user, wrong)] {
            assert_clean(what, text, u, s);
        }
    }
}
