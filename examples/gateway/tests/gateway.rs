//! The gateway as remote workers use it: a real HTTP(S) client against the
//! gateway binary, which talks to a real Dovecot. The open loopback mode,
//! API keys and their scopes, the audit trail, and the TLS listener.

#[path = "../../../tests/support/mod.rs"]
mod support;

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

use common::{Gateway, Setup, deliver, inbox_table, new_key};
use support::{EVENTUALLY, dovecot};

#[test]
fn open_mode_long_poll_stream_validation_limits_metrics_and_graceful_shutdown() {
    let ca = dovecot().catchall("gw");
    let gw = Gateway::start(
        &ca,
        Setup {
            top: "max_waiters = 4",
            ..Setup::default()
        },
    );

    assert_eq!(gw.get("/healthz").0, 200);

    // Validation: clear 400s; an unknown inbox is the one 403.
    assert_eq!(gw.get("/v1/wait?to=a@b.test").0, 400);
    assert_eq!(
        gw.get("/v1/wait?inbox=nope&to=a@b.test"),
        (403, r#"{"error":"forbidden"}"#.to_owned())
    );
    assert_eq!(gw.get("/v1/wait?inbox=main&to=not-an-address").0, 400);
    assert_eq!(
        gw.get("/v1/wait?inbox=main&to=a@b.test&timeout=forever").0,
        400
    );
    assert_eq!(gw.get("/v1/wait?inbox=main&to=a@b.test&timeout=3h").0, 400);
    let (status, body) = gw.get("/v1/wait?inbox=main&to=a%0d%0a@b.test");
    assert_eq!(status, 400, "{body}");

    // Timeout: 408.
    let (status, body) = gw.get(&format!(
        "/v1/wait?inbox=main&to={}&timeout=1s",
        ca.address("nobody")
    ));
    assert_eq!(status, 408, "{body}");

    // Long-poll: the waiter gets its mail.
    let waiter = {
        let url = gw.url(&format!(
            "/v1/wait?inbox=main&to={}&timeout=60s",
            ca.address("task1")
        ));
        std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let mut r = agent.get(&url).call().unwrap();
            (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
        })
    };
    gw.await_subscribers(None, 1);
    deliver(&ca, "task1", "welcome task1");
    let (status, body) = waiter.join().unwrap();
    assert_eq!(status, 200, "{body}");
    let mail: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(mail["subject"], "welcome task1");
    assert!(
        mail["recipients"]
            .to_string()
            .contains(&ca.address("task1"))
    );

    // Server-Sent Events.
    let mut sse = gw.raw(
        None,
        &format!("/v1/stream?inbox=main&to={}", ca.address("task2")),
    );
    sse.set_read_timeout(Some(EVENTUALLY)).unwrap();
    gw.await_subscribers(None, 1);
    deliver(&ca, "task2", "stream task2");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("stream task2") {
        let n = sse.read(&mut buf).expect("SSE read");
        assert!(n > 0, "stream closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("text/event-stream"), "{text}");
    assert!(text.contains("event: mail"), "{text}");
    drop(sse);
    gw.await_subscribers(None, 0);

    // A client that disconnects mid-wait releases its subscription.
    let w = gw.raw(
        None,
        &format!("/v1/wait?inbox=main&to={}&timeout=100s", ca.address("gone")),
    );
    gw.await_subscribers(None, 1);
    drop(w);
    gw.await_subscribers(None, 0);

    // Bounded waiters: the fifth concurrent wait gets 503.
    let held: Vec<TcpStream> = (0..4)
        .map(|i| {
            gw.raw(
                None,
                &format!(
                    "/v1/wait?inbox=main&to={}&timeout=100s",
                    ca.address(&format!("h{i}"))
                ),
            )
        })
        .collect();
    gw.await_subscribers(None, 4);
    assert_eq!(
        gw.get(&format!(
            "/v1/wait?inbox=main&to={}&timeout=1s",
            ca.address("x")
        ))
        .0,
        503
    );
    drop(held);
    gw.await_subscribers(None, 0);

    // Metrics.
    let metrics = gw.metrics(None);
    assert!(metrics.contains("emap_sessions 1"), "{metrics}");
    assert!(
        metrics.contains("emap_gateway_waits_ok_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("emap_gateway_rejected_busy_total 1"),
        "{metrics}"
    );

    // Graceful shutdown on SIGTERM: exit 0, IMAP connection logged out.
    assert_eq!(dovecot().connections(&ca.user.name), 1);
    let pid = gw.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut gw = gw;
    let status = gw.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(dovecot().wait_connections(&ca.user.name, 0, EVENTUALLY), 0);
}

#[test]
fn refuses_a_network_address_without_keys() {
    let ca = dovecot().catchall("gwnet");
    // All interfaces, no key: it must not start (and says why).
    let err = Gateway::try_start(
        &ca,
        Setup {
            listen: Some("0.0.0.0:0"),
            ..Setup::default()
        },
    )
    .err()
    .expect("an open gateway on 0.0.0.0 started");
    assert!(err.contains("refusing to listen"), "{err}");
    assert!(err.contains("exit status: 1"), "{err}");

    // The same address with a key starts, and asks for the key.
    let key = new_key();
    let gw = Gateway::start(
        &ca,
        Setup {
            listen: Some("0.0.0.0:0"),
            tables: "[[key]]\nid = \"k\"\nkey_env = \"GW_K\"\ninboxes = [\"*\"]\n\
                     recipients = [\"*\"]\nendpoints = [\"stats\"]\n",
            env: vec![("GW_K", key.clone())],
            ..Setup::default()
        },
    );
    let port = gw.addr.rsplit(':').next().unwrap();
    let local = format!("http://127.0.0.1:{port}");
    let agent = common::agent(None);
    assert_eq!(
        common::get(&agent, &format!("{local}/healthz"), None).0,
        200
    );
    assert_eq!(
        common::get(&agent, &format!("{local}/v1/stats"), None).0,
        401
    );
    assert_eq!(
        common::get(&agent, &format!("{local}/v1/stats"), Some(&key)).0,
        200
    );
}

/// Three keys, each given a different way: a file (`signup`: waits and
/// streams on `main`, recipients `task-*@` the test domain), a variable
/// (`ops`: stats and metrics everywhere), and only a digest (`hashed`:
/// waits for any address of the test domain).
#[test]
fn api_keys_scopes_and_audit_trail() {
    let ca = dovecot().catchall("gwkeys");
    let signup = new_key();
    let ops = new_key();
    let hashed = new_key();
    let hashed_sha256 = {
        let d = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().unwrap().write_all(hashed.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        String::from_utf8(d.stdout).unwrap()[..64].to_owned()
    };
    let keydir = tempfile::tempdir().unwrap();
    let signup_file = keydir.path().join("signup.key");
    std::fs::write(&signup_file, format!("{signup}\n")).unwrap();
    let inbox = inbox_table(
        "secret",
        dovecot().imap_port,
        &ca.user.name,
        "GW_TEST_PASSWORD",
        "",
    );
    let tables = format!(
        "{inbox}\n\
         [[key]]\nid = \"signup\"\nkey_file = \"{file}\"\ninboxes = [\"main\"]\n\
         recipients = [\"task-*@{domain}\"]\nendpoints = [\"wait\", \"stream\"]\n\n\
         [[key]]\nid = \"ops\"\nkey_env = \"GW_OPS_KEY\"\ninboxes = [\"*\"]\n\
         recipients = [\"*\"]\nendpoints = [\"stats\", \"metrics\"]\n\n\
         [[key]]\nid = \"hashed\"\nkey_sha256 = \"{hashed_sha256}\"\ninboxes = [\"main\"]\n\
         recipients = [\"*@{domain}\"]\nendpoints = [\"wait\"]\n",
        file = signup_file.display(),
        domain = ca.domain.to_uppercase(),
    );
    let gw = Gateway::start(
        &ca,
        Setup {
            tables: &tables,
            env: vec![("GW_OPS_KEY", ops.clone())],
            // Everything the gateway and emap log, to scan it for keys.
            log_level: Some("trace"),
            ..Setup::default()
        },
    );
    let req = |key: Option<&str>, path: &str| gw.request(key, path);
    let wait = |local: &str| format!("/v1/wait?inbox=main&to={}&timeout=1s", ca.address(local));

    // No key, a wrong key, another scheme: 401 with a Bearer challenge.
    for key in [None, Some("0123456789abcdef0123456789abcdef")] {
        let (status, headers, _) = req(key, &wait("task-1"));
        assert_eq!(status, 401);
        let challenge = headers.iter().find(|(n, _)| n == "www-authenticate");
        assert!(
            challenge.is_some_and(|(_, v)| v.starts_with("Bearer")),
            "{headers:?}"
        );
    }
    let (status, _) = {
        let agent = gw.agent();
        let mut r = agent
            .get(gw.url(&wait("task-1")))
            .header("Authorization", &format!("Basic {signup}"))
            .call()
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    };
    assert_eq!(status, 401);
    assert_eq!(gw.get("/healthz").0, 200, "health needs no key");

    // signup: its recipients (any case: the domain was configured in upper
    // case), in its inbox: allowed (408: no mail within 1 s).
    assert_eq!(req(Some(&signup), &wait("task-1")).0, 408);
    assert_eq!(req(Some(&signup), &wait("TASK-2")).0, 408);
    // Outside its scope: the same 403 as for an inbox that does not exist.
    let nowhere = req(
        Some(&signup),
        &format!("/v1/wait?inbox=nope&to={}", ca.address("task-1")),
    );
    let forbidden = (nowhere.0, nowhere.2);
    assert_eq!(forbidden, (403, r#"{"error":"forbidden"}"#.to_owned()));
    for path in [
        format!("/v1/wait?inbox=secret&to={}", ca.address("task-1")),
        wait("other"),
        wait("xtask-1"),
        format!("/v1/wait?inbox=main&to=task-1@evil.test@{}", ca.domain),
        format!("/v1/wait?inbox=main&to=task-1@{}.evil.test", ca.domain),
        // A restricted key must name a recipient.
        "/v1/wait?inbox=main&timeout=1s".to_owned(),
        "/v1/stream?inbox=main".to_owned(),
        "/v1/stats".to_owned(),
        "/metrics".to_owned(),
    ] {
        let (status, _, body) = req(Some(&signup), &path);
        assert_eq!((status, body), forbidden, "{path}");
    }
    // ops sees stats and metrics, waits nowhere.
    assert_eq!(req(Some(&ops), &wait("task-1")).0, 403);
    // hashed: configured by digest only.
    assert_eq!(req(Some(&hashed), &wait("anyone")).0, 408);
    assert_eq!(
        req(Some(&hashed), &wait("task-1").replace("wait", "stream")).0,
        403
    );

    // A real long-poll with a key gets its mail.
    let waiter = {
        let url = gw.url(&format!(
            "/v1/wait?inbox=main&to={}&timeout=60s",
            ca.address("task-9")
        ));
        let agent = gw.agent();
        let key = signup.clone();
        std::thread::spawn(move || common::get(&agent, &url, Some(&key)))
    };
    gw.await_subscribers(Some(&ops), 1);
    deliver(&ca, "task-9", "welcome task-9");
    let (status, _, body) = waiter.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("welcome task-9"), "{body}");

    // Metrics: per key id, by status; the 401s under "-".
    let metrics = gw.metrics(Some(&ops));
    for line in [
        r#"emap_gateway_requests_total{key="signup",status="403"} 10"#,
        r#"emap_gateway_requests_total{key="signup",status="408"} 2"#,
        r#"emap_gateway_requests_total{key="signup",status="200"} 1"#,
        r#"emap_gateway_requests_total{key="hashed",status="408"} 1"#,
        r#"emap_gateway_requests_total{key="-",status="401"} 3"#,
        r#"emap_gateway_throttled_total{key="signup",reason="rate"} 0"#,
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }

    // The audit trail: one line per request (each is written before its
    // answer is sent: the ones counted in these metrics, and /metrics
    // itself), with key id, inbox, endpoint, status and duration.
    let answered: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("emap_gateway_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    let lines = gw.audit_lines();
    assert_eq!(lines.len() as u64, answered + 1, "{lines:#?}");
    let audit_of = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(audit_of("status=401"), 3, "{lines:#?}");
    assert_eq!(
        audit_of("key=signup inbox=main endpoint=wait status=408"),
        2
    );
    assert_eq!(
        audit_of("key=signup inbox=nope endpoint=wait status=403"),
        1
    );
    assert_eq!(
        audit_of("key=signup inbox=secret endpoint=wait status=403"),
        1
    );
    assert_eq!(
        audit_of("key=signup inbox=main endpoint=wait status=200"),
        1
    );
    assert_eq!(audit_of("key=- inbox=- endpoint=healthz status=200"), 1);
    assert!(
        lines.iter().all(|l| l.contains("duration_ms=")),
        "{lines:#?}"
    );
    let log = gw.log();
    let mut gw = gw;
    assert!(gw.alive());
    let metrics = gw.metrics(Some(&ops));
    for key in [&signup, &ops, &hashed] {
        assert!(!log.contains(key.as_str()), "a key in the log");
        assert!(!metrics.contains(key.as_str()), "a key in the metrics");
    }
    assert!(
        !log.contains(&ca.user.password),
        "the inbox password in the log"
    );
    assert!(
        log.lines().count() > lines.len(),
        "trace level logged more than the audit"
    );
}

/// HTTPS with a certificate made by the one-line openssl command of the
/// README, the client trusting that certificate; the key travels only
/// inside TLS. Plain HTTP on the TLS port gets no HTTP answer. A TLS
/// client that hangs up mid-wait releases its subscription.
#[test]
fn tls_listener() {
    let ca = dovecot().catchall("gwtls");
    let certs = tempfile::tempdir().unwrap();
    let cert = certs.path().join("cert.pem");
    let key_pem = certs.path().join("key.pem");
    // The README's command, verbatim but for the paths.
    let made = Command::new(dovecot().openssl())
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "365", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key_pem)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let key = new_key();
    let tables = format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\n\
         [[key]]\nid = \"farm\"\nkey_env = \"GW_FARM\"\ninboxes = [\"main\"]\n\
         recipients = [\"*@{}\"]\nendpoints = [\"wait\", \"stats\"]\n",
        cert.display(),
        key_pem.display(),
        ca.domain
    );
    let root = std::fs::read(&cert).unwrap();
    let gw = Gateway::start(
        &ca,
        Setup {
            tables: &tables,
            env: vec![("GW_FARM", key.clone())],
            root_pem: Some(root.clone()),
            ..Setup::default()
        },
    );
    assert!(gw.base.starts_with("https://"), "{}", gw.base);
    assert_eq!(gw.get("/healthz").0, 200);
    assert_eq!(gw.get("/v1/stats").0, 401);

    // A long-poll over TLS gets its mail.
    let waiter = {
        let url = gw.url(&format!(
            "/v1/wait?inbox=main&to={}&timeout=60s",
            ca.address("tls1")
        ));
        let agent = gw.agent();
        let key = key.clone();
        std::thread::spawn(move || common::get(&agent, &url, Some(&key)))
    };
    gw.await_subscribers(Some(&key), 1);
    deliver(&ca, "tls1", "over tls");
    let (status, _, body) = waiter.join().unwrap();
    assert_eq!(status, 200, "{body} {}", gw.log());
    assert!(body.contains("over tls"), "{body}");

    // Plain HTTP to the TLS port: no HTTP answer.
    let answer = common::raw_exchange(
        &gw.addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(!answer.contains("HTTP/1.1 200"), "{answer}");

    // A TLS client hangs up (close_notify, then FIN) mid-wait.
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates({
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls_pki_types::CertificateDer::from_pem_slice(&root).unwrap())
            .unwrap();
        roots
    })
    .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(std::sync::Arc::new(config), "localhost".try_into().unwrap())
            .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(&gw.addr).unwrap());
    write!(
        tls,
        "GET /v1/wait?inbox=main&to={}&timeout=100s HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {key}\r\n\r\n",
        ca.address("tls-gone")
    )
    .unwrap();
    tls.flush().unwrap();
    gw.await_subscribers(Some(&key), 1);
    tls.conn.send_close_notify();
    tls.flush().unwrap();
    drop(tls);
    gw.await_subscribers(Some(&key), 0);
}

/// A worker sends its wait and at once triggers the mail, on an inbox the
/// gateway has no session for yet: the mail may land before the session's
/// first SELECT, below its starting point, where live mail never looks.
/// A wait without `max_age` looks back from the request's arrival, so it
/// gets the mail. (Without that, this wait timed out: the session started
/// above the mail.)
#[test]
fn a_wait_on_a_cold_inbox_gets_mail_triggered_right_after_the_request() {
    let ca = dovecot().catchall("gwcold");
    let gw = Gateway::start(&ca, Setup::default());
    let url = gw.url(&format!(
        "/v1/wait?inbox=main&to={}&timeout=20s",
        ca.address("cold")
    ));
    let waiter = std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = agent.get(&url).call().unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    });
    // No waiting for the subscriber: the mail races the session's start.
    deliver(&ca, "cold", "cold start");
    let (status, body) = waiter.join().unwrap();
    assert_eq!(status, 200, "{body}");
    let mail: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(mail["subject"], "cold start");
}
