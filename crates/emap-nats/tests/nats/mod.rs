//! Test support for emap-nats: a private `nats-server -js` on 127.0.0.1 in
//! a temporary directory (as `tests/support/dovecot.rs` starts Dovecot),
//! and `emap-bridge` and `emap watch --nats` (the waiter from the shell,
//! crates/emap-cli) as child processes whose output lines the test reads.
//!
//! The server runs under the suite's watchdog (it is stopped when the test
//! process ends, however it ends); its JetStream store lives in a
//! directory of its own, so [`NatsServer::stop`] then
//! [`NatsServer::start_again`] keeps the stream, the buckets and the
//! de-duplication state, as a real restart does. A child process is
//! killed when its [`Child`] is dropped (a failed assertion included).
//!
//! `examples/nats_figures.rs` and crates/emap-cli's tests include this
//! module too, for the same servers and processes.
//!
//! Each includer uses a subset of it, hence the module-wide `dead_code`
//! allowance.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::support::dovecot::{find_binary, free_ports, stop_watchdog, watchdog_command};
use crate::support::{EVENTUALLY, TestUser, dovecot, header_value, wait_for};

const INSTALL_HINT: &str = "the emap-nats tests need Debian's nats-server: \
    `apt-get install -y nats-server` (as root), or run scripts/install-deps";

/// A running `nats-server -js`.
pub struct NatsServer {
    pub port: u16,
    store: tempfile::TempDir,
    run: Mutex<Option<(std::process::Child, tempfile::TempDir)>>,
    binary: PathBuf,
}

impl NatsServer {
    /// Starts a server on a free port; panics with an install hint when
    /// nats-server is missing.
    pub fn start() -> NatsServer {
        let binary = find_binary("nats-server").unwrap_or_else(|| panic!("{INSTALL_HINT}"));
        let port = free_ports(1).expect("a free port")[0];
        let s = NatsServer {
            port,
            store: tempfile::tempdir().expect("a temp dir"),
            run: Mutex::new(None),
            binary,
        };
        s.start_again();
        s
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and store; returns when
    /// it accepts connections.
    pub fn start_again(&self) {
        let run = tempfile::tempdir().expect("a temp dir");
        let log = run.path().join("nats.log");
        let mut cmd = watchdog_command("nats-server", &log, run.path());
        cmd.arg(&self.binary)
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(self.store.path());
        let child = cmd.spawn().expect("spawn nats-server");
        *self.run.lock().unwrap() = Some((child, run));
        let up = wait_for(EVENTUALLY, || {
            std::net::TcpStream::connect(("127.0.0.1", self.port))
                .ok()
                .map(|_| ())
        });
        assert!(
            up.is_some(),
            "nats-server did not listen; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops the server (SIGTERM: a clean shutdown) and waits until its
    /// port is closed.
    pub fn stop(&self) {
        if let Some((mut child, _run)) = self.run.lock().unwrap().take() {
            stop_watchdog(&mut child);
        }
        let down = wait_for(EVENTUALLY, || {
            std::net::TcpStream::connect(("127.0.0.1", self.port))
                .is_err()
                .then_some(())
        });
        assert!(down.is_some(), "nats-server did not stop");
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some((mut child, _run)) = self.run.lock().unwrap().take() {
            stop_watchdog(&mut child);
        }
    }
}

/// A child process whose standard output and standard error lines are
/// collected (stderr lines are also passed on to the test's stderr, named).
pub struct Child {
    pub name: String,
    child: std::process::Child,
    out: Arc<Mutex<Output>>,
    /// Bumped by the reader threads on each line and at the end.
    read: Arc<watch::Sender<u64>>,
}

/// What a child printed so far, and whether each output ended.
#[derive(Default)]
struct Output {
    lines: Vec<(Instant, String)>,
    errors: Vec<(Instant, String)>,
    ended: bool,
    errors_ended: bool,
}

/// Which of a child's outputs.
#[derive(Clone, Copy)]
enum Stream {
    Out,
    Err,
}

impl Output {
    /// The lines of `stream` so far, and whether it ended.
    fn of(&self, stream: Stream) -> (&Vec<(Instant, String)>, bool) {
        match stream {
            Stream::Out => (&self.lines, self.ended),
            Stream::Err => (&self.errors, self.errors_ended),
        }
    }
}

impl Child {
    /// Spawns `cmd` with its stdout and stderr collected.
    pub fn spawn(name: &str, mut cmd: Command) -> Child {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let out = Arc::new(Mutex::new(Output::default()));
        let read = Arc::new(watch::channel(0).0);
        let (sink, bump) = (out.clone(), read.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().lines.push((Instant::now(), line));
                bump.send_modify(|n| *n += 1);
            }
            sink.lock().unwrap().ended = true;
            bump.send_modify(|n| *n += 1);
        });
        let (sink, bump, who) = (out.clone(), read.clone(), name.to_owned());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{who}] {line}");
                sink.lock().unwrap().errors.push((Instant::now(), line));
                bump.send_modify(|n| *n += 1);
            }
            sink.lock().unwrap().errors_ended = true;
            bump.send_modify(|n| *n += 1);
        });
        Child {
            name: name.to_owned(),
            child,
            out,
            read,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        let out = self.out.lock().unwrap();
        out.lines.iter().map(|(_, l)| l.clone()).collect()
    }

    /// Lines starting with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        let out = self.out.lock().unwrap();
        out.lines
            .iter()
            .filter(|(_, l)| l.starts_with(prefix))
            .count()
    }

    /// Awaits the `n`-th line starting with `prefix`; returns when it was
    /// read. Panics after `2 x EVENTUALLY`, or when the output ends first.
    pub async fn until(&self, prefix: &str, n: usize) -> Instant {
        self.until_within(prefix, n, EVENTUALLY * 2).await
    }

    /// [`Child::until`] with a bound of `within`. Woken by each line the
    /// reader thread reads, not by a timer.
    pub async fn until_within(&self, prefix: &str, n: usize, within: Duration) -> Instant {
        self.until_in(Stream::Out, prefix, n, within).await
    }

    /// Every stderr line so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        let out = self.out.lock().unwrap();
        out.errors.iter().map(|(_, l)| l.clone()).collect()
    }

    /// [`Child::until`] for stderr lines.
    pub async fn until_stderr(&self, prefix: &str, n: usize) -> Instant {
        self.until_in(Stream::Err, prefix, n, EVENTUALLY * 2).await
    }

    async fn until_in(&self, stream: Stream, prefix: &str, n: usize, within: Duration) -> Instant {
        let mut read = self.read.subscribe();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            read.borrow_and_update();
            {
                let out = self.out.lock().unwrap();
                let (lines, ended) = out.of(stream);
                let mut matching = lines.iter().filter(|(_, l)| l.starts_with(prefix));
                if let Some((t, _)) = matching.nth(n - 1) {
                    return *t;
                }
                assert!(
                    !ended,
                    "{}: its output ended before a {n}th line starting with {prefix:?}; lines: {:?}",
                    self.name,
                    lines.iter().map(|(_, l)| l).collect::<Vec<_>>()
                );
            }
            let changed = tokio::time::timeout_at(deadline, read.changed()).await;
            assert!(
                changed.is_ok(),
                "{}: no {n}th line starting with {prefix:?} within {within:?}; stdout: {:?}; \
                 stderr: {:?}",
                self.name,
                self.lines(),
                self.stderr_lines()
            );
        }
    }

    /// Waits until the child closed both outputs (it exits; killed after
    /// `EVENTUALLY`), then returns its exit status code; every line it
    /// printed has been read by then.
    pub async fn exit_code(&mut self) -> Option<i32> {
        let deadline = tokio::time::Instant::now() + EVENTUALLY;
        let mut read = self.read.subscribe();
        loop {
            read.borrow_and_update();
            {
                let out = self.out.lock().unwrap();
                if out.ended && out.errors_ended {
                    break;
                }
            }
            if tokio::time::timeout_at(deadline, read.changed())
                .await
                .is_err()
            {
                let _ = self.child.kill();
                panic!(
                    "{} did not exit in time; stdout: {:?}; stderr: {:?}",
                    self.name,
                    self.lines(),
                    self.stderr_lines()
                );
            }
        }
        // Both outputs closed: it is exiting, if not gone already.
        let status = tokio::task::block_in_place(|| self.child.wait()).expect("wait");
        status.code()
    }

    /// Sends `signal` (e.g. "KILL", "STOP", "CONT").
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{signal} {} failed", self.pid());
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A program of this workspace: `compiled_in` (Cargo's
/// `CARGO_BIN_EXE_<name>`, set for the tests of its own package); for
/// other packages' tests, built once by `support::workspace`; for an
/// example, the one beside the running program's directory
/// (`target/<profile>/<name>` for `target/<profile>/examples`), as built.
fn binary(compiled_in: Option<&'static str>, name: &str) -> PathBuf {
    if let Some(path) = compiled_in {
        return PathBuf::from(path);
    }
    if cfg!(test) {
        return crate::support::workspace::binary(name);
    }
    let exe = std::env::current_exe().expect("the running program's path");
    let path = exe
        .parent()
        .and_then(|dir| dir.parent())
        .map(|profile| profile.join(name))
        .expect("a target directory");
    assert!(
        path.exists(),
        "{} is missing: cargo build -p emap-nats --bins --examples",
        path.display()
    );
    path
}

/// Bridge timings for tests: a 3 s lease renewed every 500 ms, standbys
/// trying every 200 ms, a 1 s safety margin.
pub const LEASE_TTL: &str = "3s";

/// An `emap-bridge` process for `user`'s INBOX (on the suite's Dovecot)
/// as inbox `inbox`.
pub fn bridge(name: &str, nats: &NatsServer, inbox: &str, user: &TestUser) -> Child {
    bridge_at(name, nats, inbox, dovecot().imap_port, user)
}

/// An `emap-bridge` process for `user`'s INBOX on the IMAP server at
/// 127.0.0.1:`port` (no TLS) as inbox `inbox`.
pub fn bridge_at(name: &str, nats: &NatsServer, inbox: &str, port: u16, user: &TestUser) -> Child {
    let mut cmd = Command::new(binary(
        option_env!("CARGO_BIN_EXE_emap-bridge"),
        "emap-bridge",
    ));
    cmd.args(["--nats", &nats.url(), "--inbox", inbox])
        .args(["--host", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .args(["--tls", "none", "--user", &user.name])
        .args(["--password-env", "EMAP_TEST_PASSWORD"])
        .env("EMAP_TEST_PASSWORD", &user.password)
        .args(["--lease-ttl", LEASE_TTL, "--renew-every", "500ms"])
        .args(["--acquire-every", "200ms", "--safety-margin", "1s"])
        .args(["--holder", name]);
    Child::spawn(name, cmd)
}

/// An `emap watch --nats --json` process for `inbox` (the mail to `to`,
/// or every mail of the inbox), printing every mail until killed (a count
/// it never reaches) or `extra` ends it. Its readiness line is the stderr
/// line `watching `.
pub fn waiter(
    name: &str,
    nats: &NatsServer,
    inbox: &str,
    to: Option<&str>,
    extra: &[&str],
) -> Child {
    let mut cmd = Command::new(binary(option_env!("CARGO_BIN_EXE_emap"), "emap"));
    cmd.args(["watch", "--nats", &nats.url(), "--inbox", inbox, "--json"])
        .env_remove("EMAP_NATS")
        .env_remove("RUST_LOG");
    if let Some(to) = to {
        cmd.args(["--to", to]);
    }
    if !extra.contains(&"--count") {
        cmd.args(["--count", "1000000000"]);
    }
    if !extra.contains(&"--timeout") {
        cmd.args(["--timeout", "10m"]);
    }
    cmd.args(extra);
    Child::spawn(name, cmd)
}

/// The Message-IDs a waiter of [`waiter`] printed (its JSON lines), with
/// how often each; a line that is not a mail's JSON panics.
pub fn mail_ids(w: &Child) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in w.lines() {
        let mail: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{}: not a mail's JSON ({e}): {line:?}", w.name));
        let id = mail["message_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: a mail without message_id: {line}", w.name));
        *out.entry(id.to_owned()).or_default() += 1;
    }
    out
}

/// Which of `a` and `b` printed `acquired` first (the holder), and the
/// other (the standby).
pub async fn holder<'a>(a: &'a Child, b: &'a Child) -> (&'a Child, &'a Child) {
    crate::support::until_some("a lease holder", async || {
        if a.count("acquired") > 0 {
            Some((a, b))
        } else if b.count("acquired") > 0 {
            Some((b, a))
        } else {
            None
        }
    })
    .await
}

/// The Message-ID of `raw`, without brackets.
pub fn id_of(raw: &[u8]) -> String {
    header_value(raw, "Message-ID")
        .expect("a Message-ID")
        .trim_matches(['<', '>'])
        .to_owned()
}

/// Reads the waiters' `<address> <id>` lines into counts per
/// (address, id) (`ready` has no space: not counted).
pub fn received<'a>(
    waiters: impl IntoIterator<Item = &'a Child>,
) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    for w in waiters {
        for l in w.lines() {
            if let Some((a, id)) = l.split_once(' ') {
                *out.entry((a.to_owned(), id.to_owned())).or_default() += 1;
            }
        }
    }
    out
}

/// The `p`-th percentile of `v` (sorted in place).
pub fn pct(v: &mut [Duration], p: usize) -> Duration {
    v.sort();
    v[(v.len() * p / 100).min(v.len() - 1)]
}

/// Publishes on `subj` the two kinds of message no bridge sends: one
/// without headers, and one whose UID header is no number. Both are
/// acknowledged by the stream before this returns.
pub async fn publish_malformed(js: &async_nats::jetstream::Context, subj: &str) {
    js.publish(subj.to_owned(), "no headers at all".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut h = async_nats::HeaderMap::new();
    h.insert(emap_nats::subject::UID, "not-a-number");
    js.publish_with_headers(subj.to_owned(), h, "x".into())
        .await
        .unwrap()
        .await
        .unwrap();
}
