//! The NATS bridge's figures for BENCHMARKS.md (issue 12), measured by
//! hand, never in CI: real processes on 127.0.0.1, servers started by the
//! test suite's own support code.
//!
//! ```text
//! cargo build -p emap-nats --bins --examples
//! target/debug/examples/nats_figures fanout [--waiters 10000] [--procs 4] [--inboxes 5]
//! target/debug/examples/nats_figures latency [--n 200]
//! ```
//!
//! `fanout`: the suite's Dovecot with `--inboxes` catch-all inboxes, a
//! private `nats-server -js` (as crates/emap-nats/tests/nats/mod.rs starts
//! it), one `emap-bridge` process per inbox, and `--waiters` waits spread
//! over `--procs` waiter processes (this program again, `child` mode):
//! wait `i` is for `w<i>@` the domain of inbox `i % inboxes`, in process
//! `i % procs`. A writer delivers one mail to every wait's address over
//! LMTP; the report counts, by Message-ID, mails delivered, lost (never
//! reached their wait) and duplicated (reached it more than once), and
//! the RSS per wait: the waiter processes' `VmRSS` minus that of a waiter
//! process with no wait (same program, same connection), divided by the
//! waits.
//!
//! `latency`: the suite's Cyrus (which notifies an IDLE client at once,
//! where Dovecot holds IDLE notifications 500 ms and hides the bus), one
//! inbox, one `emap-bridge`, a [`Waiter`] and, in the same run, an
//! in-process emap subscription on the same inbox. A writer APPENDs `--n`
//! mails one at a time over IMAP; for each, the time from the tagged OK of
//! the APPEND to the moment each path has the mail. Prints p50 and p99.
//!
//! The bridge binary is looked up next to this example's directory
//! (`target/<profile>/emap-bridge`), hence `--bins` above.

#[path = "../../../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use emap::{Auth, Credential, Filter, TlsMode};
use emap_nats::{StreamConfig, Waiter};
use support::dovecot::{find_binary, free_ports, stop_watchdog, watchdog_command};
use support::raw_imap::RawImap;
use support::{TestUser, dovecot, header_value, mail};

type Result<T> = std::result::Result<T, String>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.first().map(String::as_str) {
        Some("fanout") => fanout(&args[1..]),
        Some("latency") => latency(&args[1..]),
        Some("child") => child(&args[1..]),
        _ => Err(
            "usage: nats_figures fanout [--waiters N] [--procs P] [--inboxes K] \
                  | latency [--n N]"
                .into(),
        ),
    };
    if let Err(e) = outcome {
        eprintln!("nats_figures: {e}");
        std::process::exit(1);
    }
}

/// `--name value` from `args`, else `default`.
fn flag(args: &[String], name: &str, default: usize) -> Result<usize> {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{name} needs a number")),
        None => Ok(default),
    }
}

/// A binary built beside this example (`target/<profile>/<name>`).
fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = exe
        .parent()
        .and_then(|examples| examples.parent())
        .map(|profile| profile.join(name))
        .ok_or("no target directory")?;
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: cargo build -p emap-nats --bins --examples",
            path.display()
        ))
    }
}

/// A private `nats-server -js` under the suite's watchdog.
struct Nats {
    port: u16,
    child: std::process::Child,
    _run: tempfile::TempDir,
}

impl Nats {
    fn start() -> Result<Nats> {
        let binary = find_binary("nats-server").ok_or("nats-server is not installed")?;
        let port = free_ports(1).map_err(|e| e.to_string())?[0];
        let run = tempfile::tempdir().map_err(|e| e.to_string())?;
        let log = run.path().join("nats.log");
        let store = run.path().join("store");
        let mut cmd = watchdog_command("nats-server", &log, run.path());
        cmd.arg(&binary)
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .arg("-sd")
            .arg(&store);
        let child = cmd.spawn().map_err(|e| format!("spawn nats-server: {e}"))?;
        let up = support::wait_for(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        up.ok_or("nats-server did not listen")?;
        Ok(Nats {
            port,
            child,
            _run: run,
        })
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// `VmRSS` of the server (the watchdog's child process), in KiB.
    fn rss_kib(&self) -> Option<u64> {
        let children =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.child.id()))
                .ok()?;
        children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .filter_map(rss_kib)
            .max()
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        stop_watchdog(&mut self.child);
    }
}

/// A child process whose stdout lines are collected.
struct Proc {
    name: String,
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command) -> Result<Proc> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn {name}: {e}"))?;
        let out = child.stdout.take().ok_or("no stdout")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
                sink.lock().unwrap().push(line);
            }
        });
        Ok(Proc {
            name: name.to_owned(),
            child,
            lines,
        })
    }

    fn count(&self, prefix: &str) -> usize {
        let lines = self.lines.lock().unwrap();
        lines.iter().filter(|l| l.starts_with(prefix)).count()
    }

    /// Waits for a line starting with `prefix`; an error after `timeout`.
    fn until(&mut self, prefix: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.count(prefix) == 0 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("{} exited ({status})", self.name));
            }
            if Instant::now() > deadline {
                return Err(format!("{}: no {prefix:?} line in {timeout:?}", self.name));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.child.id())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmRSS` of `pid`, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// An `emap-bridge` process for `user` as inbox `inbox`.
fn bridge(nats: &Nats, inbox: &str, port: u16, user: &TestUser) -> Result<Proc> {
    let mut cmd = Command::new(sibling("emap-bridge")?);
    cmd.args(["--nats", &nats.url(), "--inbox", inbox])
        .args(["--host", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .args(["--tls", "none", "--user", &user.name])
        .args(["--password-env", "EMAP_FIGURES_PASSWORD"])
        .env("EMAP_FIGURES_PASSWORD", &user.password)
        .args(["--holder", inbox]);
    Proc::spawn(&format!("bridge {inbox}"), cmd)
}

fn id_of(raw: &[u8]) -> Result<String> {
    Ok(header_value(raw, "Message-ID")
        .ok_or("no Message-ID")?
        .trim_matches(['<', '>'])
        .to_owned())
}

/// The address of wait `i` among `domains`.
fn address(i: usize, domains: &[String]) -> String {
    format!("w{i}@{}", domains[i % domains.len()])
}

fn fanout(args: &[String]) -> Result<()> {
    let waits = flag(args, "--waiters", 10_000)?;
    let procs = flag(args, "--procs", 4)?.max(1);
    let inboxes = flag(args, "--inboxes", 5)?.max(1);
    let started = Instant::now();
    let nats = Nats::start()?;
    let d = dovecot();
    let catch: Vec<_> = (0..inboxes)
        .map(|k| d.catchall(&format!("fan{k}")))
        .collect();
    let names: Vec<String> = (0..inboxes).map(|k| format!("fan{k}")).collect();
    let domains: Vec<String> = catch.iter().map(|c| c.domain.clone()).collect();
    let mut bridges = Vec::new();
    for (k, c) in catch.iter().enumerate() {
        bridges.push(bridge(&nats, &names[k], d.imap_port, &c.user)?);
    }
    for b in &mut bridges {
        b.until("stored", Duration::from_secs(60))?;
    }
    let spec = names
        .iter()
        .zip(&domains)
        .map(|(n, d)| format!("{n}={d}"))
        .collect::<Vec<_>>()
        .join(",");
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let child_cmd = |p: usize, waits: usize| {
        let mut cmd = Command::new(&me);
        cmd.args(["child", &nats.url(), &spec]).args([
            p.to_string(),
            procs.to_string(),
            waits.to_string(),
        ]);
        cmd
    };
    // The baseline: a waiter process with its connection and no wait.
    let mut base = Proc::spawn("baseline", child_cmd(0, 0))?;
    base.until("ready", Duration::from_secs(60))?;
    let mut children = Vec::new();
    for p in 0..procs {
        children.push(Proc::spawn(&format!("waiter {p}"), child_cmd(p, waits))?);
    }
    let opening = Instant::now();
    for c in &mut children {
        c.until("ready", Duration::from_secs(3600))?;
    }
    let opened = opening.elapsed();
    let rss = |cs: &[Proc]| cs.iter().map(|c| c.rss_kib().unwrap_or(0)).sum::<u64>();
    let base_kib = base.rss_kib().unwrap_or(0);
    let ready_kib = rss(&children);
    eprintln!(
        "{waits} waits open in {procs} processes after {opened:.1?}; delivering {waits} mails"
    );

    // The writer: one mail per wait, over LMTP, from two threads.
    let expected: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let writing = Instant::now();
    let writers = 2;
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..writers)
            .map(|t| {
                let (expected, domains) = (expected.clone(), &domains);
                s.spawn(move || -> Result<()> {
                    for i in (t..waits).step_by(writers) {
                        let to = address(i, domains);
                        let raw = mail(support::cyrus::DEFAULT_FROM, &to, &format!("m{i}"), "hi");
                        support::lmtp::deliver(d.lmtp_port, "sender@emap.test", &[&to], &raw)?;
                        expected.lock().unwrap().insert(to, id_of(&raw)?);
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "a writer panicked")??;
        }
        Ok(())
    })?;
    let written = writing.elapsed();
    let expected = std::mem::take(&mut *expected.lock().unwrap());
    eprintln!("delivered {} mails in {written:.1?}", expected.len());

    // Await every mail, or no progress for 60 s; then 5 s more for late
    // duplicates.
    let received = |cs: &[Proc]| {
        let mut got: BTreeMap<(String, String), usize> = BTreeMap::new();
        for c in cs {
            for l in c.lines.lock().unwrap().iter() {
                if let Some((a, id)) = l.split_once(' ')
                    && a != "ready"
                {
                    *got.entry((a.to_owned(), id.to_owned())).or_default() += 1;
                }
            }
        }
        got
    };
    let (mut last, mut progress) = (0, Instant::now());
    loop {
        let n = received(&children).len();
        if n >= expected.len() || progress.elapsed() > Duration::from_secs(60) {
            break;
        }
        if n != last {
            (last, progress) = (n, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let all_in = writing.elapsed();
    std::thread::sleep(Duration::from_secs(5));
    let got = received(&children);
    let lost = expected
        .iter()
        .filter(|(a, id)| !got.contains_key(&((*a).clone(), (*id).clone())))
        .count();
    let duplicated = got.values().filter(|&&n| n > 1).count();
    let foreign = got
        .keys()
        .filter(|(a, id)| expected.get(a) != Some(id))
        .count();
    let after_kib = rss(&children);
    let published: usize = bridges.iter().map(|b| b.count("published")).sum();
    let per = |kib: u64| {
        let extra = kib.saturating_sub(base_kib * procs as u64);
        (extra as f64 * 1024.0) / waits.max(1) as f64
    };
    println!(
        "fanout: {waits} waits, {procs} waiter processes, {inboxes} inboxes, 1 bridge per inbox"
    );
    println!(
        "  waits opened in {opened:.1?}; {} mails delivered over LMTP in {written:.1?}; \
         all received {all_in:.1?} after the first delivery",
        expected.len()
    );
    println!(
        "  delivered {}, received {}, lost {lost}, duplicated {duplicated}, unexpected {foreign}; \
         bridges published {published}",
        expected.len(),
        got.len()
    );
    println!(
        "  RSS: baseline (0 waits) {base_kib} KiB per process; waiter processes {ready_kib} KiB \
         when open, {after_kib} KiB after the mail; per wait {:.0} B open, {:.0} B after",
        per(ready_kib),
        per(after_kib)
    );
    if let Some(kib) = nats.rss_kib() {
        println!("  nats-server RSS {kib} KiB");
    }
    println!("  total {:.1?}", started.elapsed());
    if lost > 0 || duplicated > 0 || foreign > 0 {
        return Err("mail lost, duplicated or unexpected".into());
    }
    Ok(())
}

/// `child URL name=domain,... p procs waits`: opens this process's share
/// of the waits, prints `ready`, then `<address> <message-id>` per mail.
fn child(args: &[String]) -> Result<()> {
    let [url, spec, p, procs, waits] = args else {
        return Err("child URL SPEC P PROCS WAITS".into());
    };
    let parse = |s: &String| s.parse::<usize>().map_err(|e| e.to_string());
    let (p, procs, waits) = (parse(p)?, parse(procs)?, parse(waits)?);
    let (names, domains): (Vec<String>, Vec<String>) = spec
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(n, d)| (n.to_owned(), d.to_owned()))
        .unzip();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let waiter = Waiter::connect(url, &StreamConfig::default())
            .await
            .map_err(|e| e.to_string())?;
        let mut tasks = Vec::new();
        for i in (p..waits).step_by(procs) {
            let to = address(i, &domains);
            let mut stream = waiter
                .watch(&names[i % names.len()], Filter::new().to(to.clone()))
                .await
                .map_err(|e| format!("watch {to}: {e}"))?;
            tasks.push(tokio::spawn(async move {
                while let Some(r) = stream.next().await {
                    match r {
                        Ok(m) => println!("{to} {}", m.message_id().unwrap_or("-")),
                        Err(e) => eprintln!("waiter {to}: {e}"),
                    }
                }
            }));
        }
        println!("ready");
        for t in tasks {
            let _ = t.await;
        }
        std::future::pending::<()>().await;
        Ok(())
    })
}

fn latency(args: &[String]) -> Result<()> {
    let n = flag(args, "--n", 200)?.max(1);
    let nats = Nats::start()?;
    let cyrus = support::cyrus::cyrus();
    let user = cyrus.user("natslat");
    let mut b = bridge(&nats, "lat", cyrus.imap_port, &user)?;
    b.until("stored", Duration::from_secs(60))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (mut via_bus, mut in_process) = rt.block_on(async {
        let waiter = Waiter::connect(&nats.url(), &StreamConfig::default())
            .await
            .map_err(|e| e.to_string())?;
        let mut bus = waiter
            .watch("lat", Filter::new())
            .await
            .map_err(|e| e.to_string())?;
        let local = support::emap::start(support::emap::dovecot_config());
        let credential = Credential::new(
            "127.0.0.1",
            &user.name,
            Auth::password(user.password.clone()),
        )
        .port(cyrus.imap_port)
        .tls(TlsMode::None);
        let mut sub = local
            .subscribe(credential, Filter::new())
            .await
            .map_err(|e| e.to_string())?;
        // The in-process session is idling once it has a position; the
        // first mail (not counted) proves both paths are live.
        let (port, name, password) = (cyrus.imap_port, user.name.clone(), user.password.clone());
        let mut imap = tokio::task::spawn_blocking(move || {
            let mut imap = RawImap::connect(port);
            imap.login_ok(&name, &password);
            imap
        })
        .await
        .map_err(|e| e.to_string())?;
        let (mut via_bus, mut in_process) = (Vec::new(), Vec::new());
        for i in 0..=n {
            let raw = mail("sender@emap.test", &user.name, &format!("l{i}"), "hi");
            let id = id_of(&raw)?;
            let (back, acked) = tokio::task::spawn_blocking(move || {
                let lines = imap.append("INBOX", &raw);
                let acked = Instant::now();
                (imap, (acked, lines))
            })
            .await
            .map_err(|e| e.to_string())?;
            imap = back;
            let (acked, lines) = acked;
            if !support::raw_imap::is_ok(&lines) {
                return Err(format!("APPEND refused: {lines:?}"));
            }
            let (b, l) = tokio::join!(
                async {
                    let m = tokio::time::timeout(Duration::from_secs(30), bus.next()).await;
                    let m = m.map_err(|_| "no mail via NATS in 30 s")?;
                    let m = m.ok_or("the stream ended")?.map_err(|e| e.to_string())?;
                    Ok::<_, String>((m.message_id().map(str::to_owned), acked.elapsed()))
                },
                async {
                    let m = tokio::time::timeout(Duration::from_secs(30), sub.recv()).await;
                    let m = m.map_err(|_| "no mail in process in 30 s")?;
                    let m = m.ok_or("the subscription ended")?;
                    Ok::<_, String>((m.message_id().map(str::to_owned), acked.elapsed()))
                }
            );
            let (b, l) = (b?, l?);
            if b.0.as_deref() != Some(id.as_str()) || l.0.as_deref() != Some(id.as_str()) {
                return Err(format!("mail {i}: expected {id}, got {b:?} and {l:?}"));
            }
            if i > 0 {
                via_bus.push(b.1);
                in_process.push(l.1);
            }
        }
        local.shutdown().await;
        Ok::<_, String>((via_bus, in_process))
    })?;
    let pct = |v: &mut Vec<Duration>, p: usize| {
        v.sort();
        v[(v.len() * p / 100).min(v.len() - 1)]
    };
    println!(
        "latency on Cyrus, {n} APPENDs one at a time, APPEND acknowledged -> mail: \
         in-process p50 {:.1?} p99 {:.1?}; via NATS p50 {:.1?} p99 {:.1?}",
        pct(&mut in_process, 50),
        pct(&mut in_process, 99),
        pct(&mut via_bus, 50),
        pct(&mut via_bus, 99)
    );
    Ok(())
}
