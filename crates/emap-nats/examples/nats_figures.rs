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
//! The servers and processes are the tests' own
//! (`crates/emap-nats/tests/nats/mod.rs`, included). The bridge binary is
//! looked up next to this example's directory
//! (`target/<profile>/emap-bridge`), hence `--bins` above.

#[path = "../../../tests/support/mod.rs"]
mod support;

// The figures use the server, the processes and the counting, not the
// tests' helpers (waiters as processes, the lease holder of two).
#[path = "../tests/nats/mod.rs"]
mod nats;

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use emap::{Auth, Credential, Filter, TlsMode};
use emap_nats::{StreamConfig, Waiter};
use nats::{Child, NatsServer, bridge_at, id_of, pct, received};
use support::raw_imap::RawImap;
use support::{dovecot, mail};

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

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// Blocks until `c` printed a line starting with `prefix` (panics after
/// `within`, or if its output ends first).
fn until(rt: &tokio::runtime::Runtime, c: &Child, prefix: &str, within: Duration) {
    rt.block_on(c.until_within(prefix, 1, within));
}

/// `VmRSS` of `pid`, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `VmRSS` of the `nats-server` listening on `port` (the largest process
/// whose command line names nats-server and the port: the server, not
/// its watchdog), in KiB.
fn server_rss_kib(port: u16) -> Option<u64> {
    let port = port.to_string();
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            args.iter().any(|a| a.ends_with(b"nats-server")) && args.contains(&port.as_bytes())
        })
        .filter_map(rss_kib)
        .max()
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
    let rt = runtime()?;
    let nats = NatsServer::start();
    let d = dovecot();
    let catch: Vec<_> = (0..inboxes)
        .map(|k| d.catchall(&format!("fan{k}")))
        .collect();
    let names: Vec<String> = (0..inboxes).map(|k| format!("fan{k}")).collect();
    let domains: Vec<String> = catch.iter().map(|c| c.domain.clone()).collect();
    let mut bridges = Vec::new();
    for (k, c) in catch.iter().enumerate() {
        bridges.push(bridge_at(&names[k], &nats, &names[k], d.imap_port, &c.user));
    }
    for b in &bridges {
        until(&rt, b, "stored", Duration::from_secs(60));
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
    let base = Child::spawn("baseline", child_cmd(0, 0));
    until(&rt, &base, "ready", Duration::from_secs(60));
    let mut children = Vec::new();
    for p in 0..procs {
        children.push(Child::spawn(&format!("waiter {p}"), child_cmd(p, waits)));
    }
    let opening = Instant::now();
    for c in &children {
        until(&rt, c, "ready", Duration::from_secs(3600));
    }
    let opened = opening.elapsed();
    let rss = |cs: &[Child]| {
        cs.iter()
            .map(|c| rss_kib(c.pid()).unwrap_or(0))
            .sum::<u64>()
    };
    let base_kib = rss_kib(base.pid()).unwrap_or(0);
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
                        expected.lock().unwrap().insert(to, id_of(&raw));
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
    // duplicates (a sentinel per wait, as the tests send, would double the
    // mail this run delivers).
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
    if let Some(kib) = server_rss_kib(nats.port) {
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
    runtime()?.block_on(async move {
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
    let rt = runtime()?;
    let nats = NatsServer::start();
    let cyrus = support::cyrus::cyrus();
    let user = cyrus.user("natslat");
    let b = bridge_at("lat", &nats, "lat", cyrus.imap_port, &user);
    until(&rt, &b, "stored", Duration::from_secs(60));
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
            let id = id_of(&raw);
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
