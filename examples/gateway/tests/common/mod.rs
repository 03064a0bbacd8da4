//! The gateway binary as the tests run it: a config written to a temporary
//! directory, the process started with its stderr (the log, audit lines
//! included) in a file the test can read, HTTP(S) clients with or without
//! an API key, and raw sockets for what a well-behaved client never sends.
//!
//! Each test binary uses a different subset, hence the `dead_code` allowance.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::support::{CatchAll, EVENTUALLY, TestUser, dovecot, mail, wait_for};

/// The gateway process, killed on drop.
pub struct Gateway {
    pub child: Child,
    /// `http://127.0.0.1:port` or `https://…`.
    pub base: String,
    /// The address, `127.0.0.1:port`.
    pub addr: String,
    /// Standard error of the process: the log.
    pub log: PathBuf,
    /// The trusted root for `https`.
    root_pem: Option<Vec<u8>>,
    pub dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a test configures beyond the one inbox `main` of its catch-all.
#[derive(Default)]
pub struct Setup<'a> {
    /// Top-level lines (before any table), e.g. `max_waiters = 4`.
    pub top: &'a str,
    /// Tables after the inbox (`[[key]]`, `[limits]`, `[http]`, `[tls]`).
    pub tables: &'a str,
    /// `listen`; default `127.0.0.1:0`.
    pub listen: Option<&'a str>,
    /// Environment of the process (besides the inbox password).
    pub env: Vec<(&'a str, String)>,
    /// `RUST_LOG`; default `info`.
    pub log_level: Option<&'a str>,
    /// The root certificate clients trust, for a `[tls]` setup.
    pub root_pem: Option<Vec<u8>>,
}

impl Gateway {
    /// Starts the gateway; `Err` with its stderr when it exits instead of
    /// listening.
    pub fn try_start(ca: &CatchAll, setup: Setup<'_>) -> Result<Gateway, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(
            &path,
            format!(
                "listen = \"{}\"\nmax_timeout = \"2m\"\n{}\n\n\
                 [[inbox]]\nname = \"main\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
                 user = \"{}\"\npassword_env = \"GW_TEST_PASSWORD\"\n\n{}\n",
                setup.listen.unwrap_or("127.0.0.1:0"),
                setup.top,
                dovecot().imap_port,
                ca.user.name,
                setup.tables,
            ),
        )
        .unwrap();
        let log = dir.path().join("stderr.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_emap-gateway"));
        cmd.arg("--config")
            .arg(&path)
            .env("GW_TEST_PASSWORD", &ca.user.password)
            .env("RUST_LOG", setup.log_level.unwrap_or("info"))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in &setup.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(base) = line.trim().strip_prefix("listening on ").map(str::to_owned) else {
            let status = child.wait().unwrap();
            return Err(format!(
                "{status}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ));
        };
        let addr = base.split("://").nth(1).unwrap().to_owned();
        Ok(Gateway {
            child,
            base,
            addr,
            log,
            root_pem: setup.root_pem,
            dir,
        })
    }

    /// Starts the gateway, which must start.
    pub fn start(ca: &CatchAll, setup: Setup<'_>) -> Gateway {
        Gateway::try_start(ca, setup).unwrap_or_else(|e| panic!("gateway did not start: {e}"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// An HTTP(S) client trusting the test root, never failing on a status.
    pub fn agent(&self) -> ureq::Agent {
        agent(self.root_pem.as_deref())
    }

    /// `GET path` without a key: status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        self.get_as(None, path)
    }

    /// `GET path` with `Authorization: Bearer key`: status and body.
    pub fn get_as(&self, key: Option<&str>, path: &str) -> (u16, String) {
        let (status, _, body) = self.request(key, path);
        (status, body)
    }

    /// `GET path`: status, headers (lower-case names) and body.
    pub fn request(&self, key: Option<&str>, path: &str) -> Answer {
        get(&self.agent(), &self.url(path), key)
    }

    /// `GET path` with HTTP Basic authentication, as a browser sends it.
    pub fn request_basic(&self, user: &str, password: &str, path: &str) -> Answer {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        get_with(
            &self.agent(),
            &self.url(path),
            Some(&format!("Basic {token}")),
        )
    }

    /// `/v1/stats` as `key`.
    pub fn stats(&self, key: Option<&str>) -> serde_json::Value {
        let (status, body) = self.get_as(key, "/v1/stats");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Subscribers of the sessions `key` may see.
    pub fn subscribers(&self, key: Option<&str>) -> u64 {
        self.stats(key)["sessions"].as_array().map_or(0, |s| {
            s.iter()
                .map(|s| s["subscribers"].as_u64().unwrap_or(0))
                .sum()
        })
    }

    /// Waits until the sessions `key` may see hold `n` subscribers and,
    /// when `n > 0`, every one of them is `Watching` (selected). Mail
    /// delivered while a new session is still selecting counts as already
    /// there (below its first watermark) and is not delivered to a wait
    /// without `max_age`: tests deliver only once the session watches.
    pub fn await_subscribers(&self, key: Option<&str>, n: u64) {
        let ready = || {
            let stats = self.stats(key);
            let sessions = stats["sessions"].as_array().cloned().unwrap_or_default();
            let subscribers: u64 = sessions
                .iter()
                .map(|s| s["subscribers"].as_u64().unwrap_or(0))
                .sum();
            let watching = sessions.iter().all(|s| s["state"] == "Watching");
            (subscribers == n && (n == 0 || watching)).then_some(())
        };
        let seen = wait_for(EVENTUALLY, ready);
        assert!(seen.is_some(), "{} (want {n} subscribers)", self.stats(key));
    }

    /// `/metrics` as `key`.
    pub fn metrics(&self, key: Option<&str>) -> String {
        let (status, body) = self.get_as(key, "/metrics");
        assert_eq!(status, 200, "{body}");
        body
    }

    /// A raw plaintext request on a socket the test controls.
    pub fn raw(&self, key: Option<&str>, path: &str) -> TcpStream {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        let auth = key.map_or_else(String::new, |k| format!("Authorization: Bearer {k}\r\n"));
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\n{auth}\r\n",
            self.addr
        )
        .unwrap();
        s
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The audit lines of the log so far.
    pub fn audit_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("emap_gateway::audit"))
            .map(str::to_owned)
            .collect()
    }

    /// The process's peak resident memory so far (`VmHWM`), in KiB.
    pub fn peak_memory_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

/// An `[[inbox]]` table for `user` on the test Dovecot (or a private one
/// on `port`), its password in the variable `password_env`, then `extra`
/// lines (e.g. `also_watch = ['\\Junk']`).
pub fn inbox_table(name: &str, port: u16, user: &str, password_env: &str, extra: &str) -> String {
    let name = name.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        "[[inbox]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
         user = \"{user}\"\npassword_env = \"{password_env}\"\n{extra}\n"
    )
}

/// A gateway whose inbox `junky` is the user `name`'s INBOX and its
/// folder marked `\Junk` (created), watched on the same connection
/// (`also_watch`); besides the usual `main` of a catch-all of its own.
/// Returns the gateway and the user.
pub fn junk_gateway(name: &str) -> (Gateway, TestUser) {
    let ca = dovecot().catchall(&format!("{name}-main"));
    let user = dovecot().user(name);
    dovecot().create_junk(&user);
    let tables = inbox_table(
        "junky",
        dovecot().imap_port,
        &user.name,
        "GW_JUNK_PASSWORD",
        "also_watch = ['\\Junk']",
    );
    let gw = Gateway::start(
        &ca,
        Setup {
            tables: &tables,
            env: vec![("GW_JUNK_PASSWORD", user.password.clone())],
            ..Setup::default()
        },
    );
    (gw, user)
}

/// An HTTP(S) client trusting `root_pem` (if any), never failing on a status.
pub fn agent(root_pem: Option<&[u8]>) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)));
    if let Some(pem) = root_pem {
        let cert = ureq::tls::Certificate::from_pem(pem).unwrap().to_owned();
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![cert])))
                .build(),
        );
    }
    config.build().into()
}

/// An answer: status, headers (lower-case names) and body.
pub type Answer = (u16, Vec<(String, String)>, String);

/// `GET url` with an optional bearer key.
pub fn get(agent: &ureq::Agent, url: &str, key: Option<&str>) -> Answer {
    get_with(agent, url, key.map(|k| format!("Bearer {k}")).as_deref())
}

/// `GET url` with an optional `Authorization` header value.
pub fn get_with(agent: &ureq::Agent, url: &str, authorization: Option<&str>) -> Answer {
    let mut req = agent.get(url);
    if let Some(a) = authorization {
        req = req.header("Authorization", a);
    }
    let mut resp = req.call().unwrap();
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    (status, headers, resp.body_mut().read_to_string().unwrap())
}

/// Delivers a one-line mail with `subject` to `local@` the catch-all.
pub fn deliver(ca: &CatchAll, local: &str, subject: &str) {
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

/// Sends `raw` bytes on a fresh connection and reads the answer until the
/// server closes or `EVENTUALLY` passes: what came back.
pub fn raw_exchange(addr: &str, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(EVENTUALLY)).unwrap();
    // The server may answer and close before all is written.
    let _ = s.write_all(raw);
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Reads what the server sends on `stream` (a [`Gateway::raw`] request)
/// until it contains `needle`, the server closes, or `EVENTUALLY` passes
/// without a byte: what came back.
pub fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    stream.set_read_timeout(Some(EVENTUALLY)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(needle) {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// The status code of the first response in `text`, if any.
pub fn status_of(text: &str) -> Option<u16> {
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// A fresh API key (hex, 32 bytes of the OS's randomness via /dev/urandom).
pub fn new_key() -> String {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
