//! Clients run in child processes of the benchmark, one per measurement,
//! so that each one's CPU time and RSS are its own: not the deliverer's,
//! not the server's, not what an earlier, larger run left in the
//! allocator. The benchmark re-executes itself (`bench __child <mode>
//! ...`) and talks to the child over its stdin and stdout, one line per
//! message:
//!
//! ```text
//! child  → parent   ready key=value ...        (subscribed; measuring starts)
//! parent → child    expect <count> <timeout_ms> (the stream was sent)
//! child  → parent   got <seq> <received_ns> <times>   (one per message received)
//! child  → parent   rss <seconds> <kib>         (soak samples)
//! child  → parent   done key=value ...          (counters; the child exits)
//! ```
//!
//! Passwords travel in the environment (`BENCH_PASSWORDS`), never on a
//! command line. Every wait is bounded; a child that misses a deadline is
//! killed (by its own handle).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Parsed `key=value` pairs of a `ready` or `done` line.
pub type Fields = HashMap<String, String>;

pub fn parse_fields(s: &str) -> Fields {
    s.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

pub fn field<T: std::str::FromStr>(f: &Fields, key: &str) -> Option<T> {
    f.get(key).and_then(|v| v.parse().ok())
}

/// A running child client.
pub struct ChildProc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    mode: String,
}

/// What a child reported between `expect` and `done`.
#[derive(Debug, Default)]
pub struct Outcome {
    /// `(seq, first receipt ns, receipts)`.
    pub got: Vec<(u32, u64, u32)>,
    /// `(seconds since ready, RSS KiB)`.
    pub rss: Vec<(u64, u64)>,
    pub done: Fields,
}

impl ChildProc {
    pub fn spawn(mode: &str, args: &[String], passwords: &[&str]) -> Result<ChildProc, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        // `BENCH_CHILD_WRAP="valgrind --tool=callgrind ..."` runs every
        // child under that command: instruction counts per mail that the
        // load of a shared machine does not change (BENCHMARKS.md,
        // "Instructions per mail").
        let wrap: Vec<String> = std::env::var("BENCH_CHILD_WRAP")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let mut command = match wrap.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        let mut child = command
            .arg("__child")
            .arg(mode)
            .args(args)
            .env("BENCH_PASSWORDS", passwords.join(","))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawning the {mode} client: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(ChildProc {
            stdin: child.stdin.take(),
            child,
            lines: rx,
            mode: mode.to_owned(),
        })
    }

    /// Waits for the `ready` line; returns its fields.
    pub fn ready(&mut self, timeout: Duration) -> Result<Fields, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let line = self.next_line(deadline)?;
            if let Some(rest) = line.strip_prefix("ready") {
                return Ok(parse_fields(rest));
            }
            if let Some(rest) = line.strip_prefix("error ") {
                return Err(format!("{} client: {rest}", self.mode));
            }
        }
    }

    pub fn send(&mut self, line: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("stdin closed")?;
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("writing to the {} client: {e}", self.mode))
    }

    /// Sends `expect`, then collects everything up to `done`.
    pub fn expect(
        &mut self,
        count: usize,
        drain: Duration,
        timeout: Duration,
    ) -> Result<Outcome, String> {
        self.send(&format!("expect {count} {}", drain.as_millis()))?;
        self.collect(timeout)
    }

    /// Collects `got`/`rss` lines up to `done`.
    pub fn collect(&mut self, timeout: Duration) -> Result<Outcome, String> {
        let deadline = Instant::now() + timeout;
        let mut out = Outcome::default();
        loop {
            let line = self.next_line(deadline)?;
            let mut it = line.split_whitespace();
            match it.next() {
                Some("got") => {
                    let v: Vec<u64> = it.filter_map(|x| x.parse().ok()).collect();
                    if let [seq, ns, times] = v[..] {
                        out.got.push((seq as u32, ns, times as u32));
                    }
                }
                Some("rss") => {
                    let v: Vec<u64> = it.filter_map(|x| x.parse().ok()).collect();
                    if let [t, kb] = v[..] {
                        out.rss.push((t, kb));
                    }
                }
                Some("done") => {
                    out.done = parse_fields(line.strip_prefix("done").unwrap_or(""));
                    self.finish();
                    return Ok(out);
                }
                Some("error") => return Err(format!("{} client: {line}", self.mode)),
                _ => {}
            }
        }
    }

    fn next_line(&mut self, deadline: Instant) -> Result<String, String> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(l) => Ok(l),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.kill();
                Err(format!("the {} client did not answer in time", self.mode))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                Err(format!("the {} client exited ({status})", self.mode))
            }
        }
    }

    /// Waits (boundedly) for the child to exit after `done`.
    fn finish(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// The child's side: arguments as `--key value` pairs.
pub struct Args(HashMap<String, String>);

impl Args {
    pub fn parse(args: &[String]) -> Args {
        let mut map = HashMap::new();
        let mut it = args.iter();
        while let Some(k) = it.next() {
            if let (Some(k), Some(v)) = (k.strip_prefix("--"), it.next()) {
                map.insert(k.to_owned(), v.clone());
            }
        }
        Args(map)
    }

    pub fn str(&self, k: &str) -> String {
        self.0.get(k).cloned().unwrap_or_default()
    }

    pub fn opt<T: std::str::FromStr>(&self, k: &str) -> Option<T> {
        self.0.get(k).and_then(|v| v.parse().ok())
    }

    pub fn num<T: std::str::FromStr>(&self, k: &str, default: T) -> T {
        self.0
            .get(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }
}

/// Writes one protocol line to stdout (flushed).
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Parent commands, read from stdin by a thread.
pub fn commands() -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The inboxes of `--inboxes user:domain,...` with `BENCH_PASSWORDS`.
pub fn inboxes(args: &Args) -> Vec<crate::server::Inbox> {
    let passwords: Vec<String> = std::env::var("BENCH_PASSWORDS")
        .unwrap_or_default()
        .split(',')
        .map(str::to_owned)
        .collect();
    args.str("inboxes")
        .split(',')
        .filter(|s| !s.is_empty())
        .enumerate()
        .map(|(i, s)| {
            let (user, domain) = s.split_once(':').unwrap_or((s, "emap.bench"));
            crate::server::Inbox {
                user: user.to_owned(),
                password: passwords.get(i).cloned().unwrap_or_default(),
                domain: domain.to_owned(),
            }
        })
        .collect()
}

/// The `--inboxes` argument for these inboxes.
pub fn inboxes_arg(inboxes: &[&crate::server::Inbox]) -> String {
    inboxes
        .iter()
        .map(|i| format!("{}:{}", i.user, i.domain))
        .collect::<Vec<_>>()
        .join(",")
}
