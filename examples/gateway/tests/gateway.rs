//! The gateway as remote workers use it: a real HTTP client against the
//! gateway binary, which talks to a real Dovecot.

#[path = "../../../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{CatchAll, dovecot, mail, wait_for};

const EVENTUALLY: Duration = Duration::from_secs(30);

/// The gateway process, killed on drop.
struct Gateway {
    child: Child,
    base: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn start(ca: &CatchAll, max_waiters: usize) -> (Gateway, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(
            &path,
            format!(
                "listen = \"127.0.0.1:0\"\nmax_waiters = {max_waiters}\nmax_timeout = \"2m\"\n\n\
                 [[inbox]]\nname = \"main\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
                 user = \"{}\"\npassword_env = \"GW_TEST_PASSWORD\"\n",
                dovecot().imap_port,
                ca.user.name
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_emap-gateway"))
            .arg("--config")
            .arg(&path)
            .env("GW_TEST_PASSWORD", &ca.user.password)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        (Gateway { child, base }, dir)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn get(&self, path: &str) -> (u16, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let mut resp = agent.get(&self.url(path)).call().unwrap();
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap())
    }

    fn stats(&self) -> serde_json::Value {
        serde_json::from_str(&self.get("/v1/stats").1).unwrap()
    }

    fn subscribers(&self) -> u64 {
        self.stats()["sessions"].as_array().map_or(0, |s| {
            s.iter()
                .map(|s| s["subscribers"].as_u64().unwrap_or(0))
                .sum()
        })
    }

    /// Waits until the gateway's sessions hold `n` subscribers.
    fn await_subscribers(&self, n: u64) {
        let seen = wait_for(EVENTUALLY, || (self.subscribers() == n).then_some(()));
        assert!(
            seen.is_some(),
            "subscribers: {} (want {n})",
            self.subscribers()
        );
    }

    /// A raw request on a socket the test controls (to disconnect mid-wait).
    fn raw(&self, path: &str) -> TcpStream {
        let addr = self.base.strip_prefix("http://").unwrap();
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        s
    }
}

fn deliver(ca: &CatchAll, local: &str, subject: &str) {
    let rcpt = ca.address(local);
    dovecot().deliver(
        &rcpt,
        &mail(
            "noreply@service.test",
            &rcpt,
            subject,
            "Your code is 482913",
        ),
    );
}

#[test]
fn long_poll_stream_validation_limits_metrics_and_graceful_shutdown() {
    let ca = dovecot().catchall("gw");
    let (gw, _dir) = Gateway::start(&ca, 4);

    assert_eq!(gw.get("/healthz").0, 200);

    // Validation: clear 400s and 404s.
    assert_eq!(gw.get("/v1/wait?to=a@b.test").0, 400);
    assert_eq!(gw.get("/v1/wait?inbox=nope&to=a@b.test").0, 404);
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
    gw.await_subscribers(1);
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
    let mut sse = gw.raw(&format!("/v1/stream?inbox=main&to={}", ca.address("task2")));
    sse.set_read_timeout(Some(EVENTUALLY)).unwrap();
    gw.await_subscribers(1);
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
    gw.await_subscribers(0);

    // A client that disconnects mid-wait releases its subscription.
    let w = gw.raw(&format!(
        "/v1/wait?inbox=main&to={}&timeout=100s",
        ca.address("gone")
    ));
    gw.await_subscribers(1);
    drop(w);
    gw.await_subscribers(0);

    // Bounded waiters: the fifth concurrent wait gets 503.
    let held: Vec<TcpStream> = (0..4)
        .map(|i| {
            gw.raw(&format!(
                "/v1/wait?inbox=main&to={}&timeout=100s",
                ca.address(&format!("h{i}"))
            ))
        })
        .collect();
    gw.await_subscribers(4);
    assert_eq!(
        gw.get(&format!(
            "/v1/wait?inbox=main&to={}&timeout=1s",
            ca.address("x")
        ))
        .0,
        503
    );
    drop(held);
    gw.await_subscribers(0);

    // Metrics.
    let (status, metrics) = gw.get("/metrics");
    assert_eq!(status, 200);
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
