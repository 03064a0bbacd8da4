//! The six scenarios, as run by the parent process: it owns the server,
//! makes the inboxes, starts the client under test in a child process,
//! sends the message stream, and turns what the child saw into rows.
//!
//! Latency is always "the server accepted the message" (LMTP reply after
//! DATA, or APPEND's tagged OK) → "the subscriber's task had it in hand",
//! both stamped on the realtime clock. Lost = accepted by the server but
//! never received by the subscriber it was addressed to before the drain
//! timeout.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::child::{self, ChildProc, Fields, Outcome, field};
use crate::deliver::{self, Deliverer};
use crate::metrics::{self, Percentiles, Rng, median, ms};
use crate::report::Row;
use crate::server::{Inbox, Kind, Server};

/// Run-wide options.
#[derive(Debug, Clone)]
pub struct Opts {
    pub quick: bool,
    pub rate: Option<f64>,
    pub messages: Option<usize>,
    pub minutes: Option<f64>,
    pub seed: u64,
    pub fanout_n: Option<Vec<usize>>,
    pub fanout_k: Option<Vec<usize>>,
    /// Where the SVG pictures go (`--svg DIR`; empty: none).
    pub svg: String,
}

impl Opts {
    fn rate(&self, full: f64, quick: f64) -> f64 {
        self.rate.unwrap_or(if self.quick { quick } else { full })
    }
    fn messages(&self, full: usize, quick: usize) -> usize {
        self.messages
            .unwrap_or(if self.quick { quick } else { full })
    }
}

/// What the deliverer did: acceptance time per sequence number (0 = not
/// accepted), errors, and how long sending took.
struct Sent {
    accepted: Vec<u64>,
    errors: usize,
    first_error: Option<String>,
    took: Duration,
}

/// One sending lane's result: (seq, accepted ns) pairs, errors, the first
/// error.
type LaneResult = (Vec<(usize, u64)>, usize, Option<String>);

/// Sends message `seq` to `targets[seq]` = (inbox index, local part), from
/// `parallel` connections, paced at `rate` messages/s overall (`None`: as
/// fast as the server accepts). Bounded by `limit` overall.
fn send_stream(
    server: &Server,
    inboxes: &[Inbox],
    targets: &[(usize, String)],
    rate: Option<f64>,
    parallel: usize,
    limit: Duration,
) -> Sent {
    let start = Instant::now();
    let deadline = start + limit;
    let parallel = parallel.max(1);
    let results: Vec<LaneResult> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..parallel)
            .map(|lane| {
                s.spawn(move || {
                    let mut conns: HashMap<usize, Deliverer> = HashMap::new();
                    let mut out = Vec::new();
                    let (mut errors, mut first_error) = (0, None);
                    let mut seq = lane;
                    while seq < targets.len() && Instant::now() < deadline {
                        if let Some(r) = rate {
                            let due = start + Duration::from_secs_f64(seq as f64 / r);
                            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                                std::thread::sleep(wait);
                            }
                        }
                        let (k, local) = &targets[seq];
                        let inbox = &inboxes[*k];
                        let raw = deliver::message(seq as u32, &inbox.address(local));
                        let rcpt = server.rcpt(inbox, local);
                        let result = match conns.entry(*k) {
                            std::collections::hash_map::Entry::Occupied(mut e) => {
                                e.get_mut().deliver(&rcpt, &raw)
                            }
                            std::collections::hash_map::Entry::Vacant(e) => {
                                Deliverer::connect(&server.route(inbox))
                                    .and_then(|d| e.insert(d).deliver(&rcpt, &raw))
                            }
                        };
                        match result {
                            Ok(at) => out.push((seq, at)),
                            Err(err) => {
                                errors += 1;
                                first_error.get_or_insert(err);
                                // Start the next one on a fresh session.
                                conns.remove(k);
                            }
                        }
                        seq += parallel;
                    }
                    for (_, d) in conns {
                        d.quit();
                    }
                    (out, errors, first_error)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut accepted = vec![0u64; targets.len()];
    let (mut errors, mut first_error) = (0, None);
    for (out, e, fe) in results {
        for (seq, at) in out {
            accepted[seq] = at;
        }
        errors += e;
        if first_error.is_none() {
            first_error = fe;
        }
    }
    Sent {
        accepted,
        errors,
        first_error,
        took: start.elapsed(),
    }
}

/// Delivery outcome of one stream as seen by one client.
struct Measured {
    sent: usize,
    received: usize,
    lost: usize,
    duplicates: usize,
    latency: Percentiles,
    /// Every latency (ns), sorted: the pictures' distributions.
    sorted: Vec<u64>,
    first_accept: u64,
    last_accept: u64,
    last_receipt: u64,
}

fn measure(accepted: &[u64], got: &[(u32, u64, u32)]) -> Measured {
    let mut seen = vec![false; accepted.len()];
    let mut latencies = Vec::new();
    let mut duplicates = 0;
    let mut last_receipt = 0;
    for &(seq, at, times) in got {
        let i = seq as usize;
        if i >= accepted.len() || accepted[i] == 0 {
            continue;
        }
        seen[i] = true;
        duplicates += times.saturating_sub(1) as usize;
        latencies.push(at.saturating_sub(accepted[i]));
        last_receipt = last_receipt.max(at);
    }
    let sent = accepted.iter().filter(|a| **a > 0).count();
    let received = seen.iter().filter(|s| **s).count();
    latencies.sort_unstable();
    Measured {
        sent,
        received,
        lost: sent - received,
        duplicates,
        latency: Percentiles::of_sorted(&latencies),
        sorted: latencies,
        first_accept: accepted
            .iter()
            .copied()
            .filter(|a| *a > 0)
            .min()
            .unwrap_or(0),
        last_accept: accepted.iter().copied().max().unwrap_or(0),
        last_receipt,
    }
}

fn latency_fields(row: &mut Row, p: &Percentiles) {
    row.set("p50_ms", ms(p.p50));
    row.set("p95_ms", ms(p.p95));
    row.set("p99_ms", ms(p.p99));
    row.set("max_ms", ms(p.max));
}

/// `n` random targets among the subscriber indices `pick` returns.
fn random_targets(
    n: usize,
    k: usize,
    m: usize,
    rng: &mut Rng,
    pick: impl Fn(usize) -> usize,
) -> Vec<(usize, String)> {
    (0..m)
        .map(|_| {
            let i = pick(rng.below(n));
            (i % k, format!("task{i}"))
        })
        .collect()
}

/// A child process in `mode` (`emap`, `pertask`, `subscribe-emap`) on
/// `inboxes` of `server` with `n` tasks or subscriptions, `m` messages to
/// expect if it receives any, and the `extra` arguments.
fn bench_child(
    server: &Server,
    mode: &str,
    inboxes: &[&Inbox],
    n: usize,
    m: Option<usize>,
    extra: &[(&str, String)],
) -> Result<ChildProc, String> {
    let mut args = vec![
        "--host".to_owned(),
        server.host(),
        "--port".into(),
        server.imap_port().to_string(),
        "--inboxes".into(),
        child::inboxes_arg(inboxes),
        "--n".into(),
        n.to_string(),
    ];
    if let Some(m) = m {
        args.extend(["--m".to_owned(), m.to_string()]);
    }
    for (k, v) in extra {
        args.push(format!("--{k}"));
        args.push(v.clone());
    }
    let passwords: Vec<&str> = inboxes.iter().map(|i| i.password.as_str()).collect();
    ChildProc::spawn(mode, &args, &passwords)
}

fn ready_timeout(n: usize) -> Duration {
    Duration::from_secs(60 + (n / 500) as u64)
}

/// Microseconds per item, one decimal: `total_us` over `n` items (at
/// least one, so that no item reads as the total rather than a NaN).
fn us_per(total_us: i64, n: usize) -> f64 {
    (total_us as f64 / n.max(1) as f64 * 10.0).round() / 10.0
}

fn kib_per(total_kib: i64, n: usize) -> f64 {
    if n == 0 {
        0.0
    } else {
        (total_kib as f64 * 1024.0 / n as f64 * 10.0).round() / 10.0
    }
}

fn fk(f: &Fields, k: &str) -> i64 {
    field(f, k).unwrap_or(0)
}

/// 1. fanout: N subscribers over K catch-all inboxes; M messages to random
///    subscribers at a steady rate.
pub fn fanout(server: &mut Server, o: &Opts) -> Result<Vec<Row>, String> {
    let ns = o.fanout_n.clone().unwrap_or_else(|| {
        if o.quick {
            vec![100, 1000]
        } else {
            vec![100, 2000, 10_000, 100_000]
        }
    });
    let ks = o.fanout_k.clone().unwrap_or_else(|| vec![1, 5]);
    let m = o.messages(2000, 100);
    let rate = o.rate(100.0, 200.0);
    let mut rows = Vec::new();
    let mut rss: Vec<crate::plot::Series> = Vec::new();
    for &k in &ks {
        let mut points = Vec::new();
        for &n in &ns {
            server.release_inboxes();
            if k > 1 && server.kind == Kind::External {
                rows.push(
                    Row::new("fanout")
                        .with("server", server.kind.name())
                        .with("K", k)
                        .with(
                            "note",
                            "an existing server (--host) offers one inbox: K=1 only",
                        ),
                );
                break;
            }
            let inboxes: Vec<Inbox> = (0..k)
                .map(|_| server.inbox("fan"))
                .collect::<Result<_, _>>()?;
            eprintln!("bench: fanout N={n} K={k}: subscribing");
            let refs: Vec<&Inbox> = inboxes.iter().collect();
            let mut c = bench_child(server, "emap", &refs, n, Some(m), &[])?;
            let ready = c.ready(ready_timeout(n))?;
            let conns = server.connections(&refs);
            let mut rng = Rng::new(o.seed ^ (n as u64) ^ ((k as u64) << 40));
            let targets = random_targets(n, k, m, &mut rng, |i| i);
            eprintln!("bench: fanout N={n} K={k}: sending {m} at {rate}/s");
            let sent = send_stream(
                server,
                &inboxes,
                &targets,
                Some(rate),
                1,
                Duration::from_secs(600),
            );
            let out = c.expect(m, Duration::from_secs(30), Duration::from_secs(120))?;
            rows.push(fanout_row(server, n, k, conns, &ready, &sent, &out));
            let mib = |key: &str| (fk(&ready, key) - fk(&ready, "rss0")) as f64 / 1024.0;
            points.push((n as f64, mib("rss1"), mib("rss2")));
        }
        rss.push(crate::plot::Series {
            name: format!("emap, K={k}"),
            points: points.iter().map(|&(n, a, _)| (n, a)).collect(),
        });
        rss.push(crate::plot::Series {
            name: format!("+ a task each, K={k}"),
            points: points.iter().map(|&(n, _, b)| (n, b)).collect(),
        });
    }
    if !o.svg.is_empty() {
        crate::plot::Chart {
            title: &format!("RSS against idle subscribers ({})", server.kind.name()),
            x_label: "subscribers (N)",
            y_label: "RSS above the connected client (MiB)",
            series: rss,
        }
        .write(&o.svg, &format!("rss-{}.svg", server.kind.name()));
    }
    Ok(rows)
}

fn fanout_row(
    server: &Server,
    n: usize,
    k: usize,
    conns: Option<usize>,
    ready: &Fields,
    sent: &Sent,
    out: &Outcome,
) -> Row {
    let meas = measure(&sent.accepted, &out.got);
    let d = &out.done;
    let mut row = Row::new("fanout")
        .with("server", server.kind.name())
        .with("N", n)
        .with("K", k)
        .with("conns", conns)
        .with("sent", meas.sent)
        .with("delivered", meas.received)
        .with("lost", meas.lost)
        .with("dup", meas.duplicates);
    latency_fields(&mut row, &meas.latency);
    row.set(
        "cpu_us_per_msg",
        us_per(fk(d, "cpu_us"), fk(d, "received").max(0) as usize),
    );
    row.set("peak_rss_mib", fk(d, "hwm") as f64 / 1024.0);
    row.set(
        "rss_b_per_sub",
        kib_per(fk(ready, "rss1") - fk(ready, "rss0"), n),
    );
    row.set(
        "rss_b_per_sub_task",
        kib_per(fk(ready, "rss2") - fk(ready, "rss0"), n),
    );
    row.set(
        "subscribe_per_s",
        (n as f64 / (fk(ready, "subscribe_ms").max(1) as f64 / 1000.0)).round(),
    );
    row.set("dropped", fk(d, "dropped"));
    row.set("send_errors", sent.errors);
    if fk(ready, "failed") > 0 {
        row.set("subscribe_failed", fk(ready, "failed"));
    }
    if let Some(e) = &sent.first_error {
        row.set("error", e.clone());
    }
    row
}

/// 2. limit: the raw one-socket client and emap on the same inbox and the
///    same stream; emap's percentiles as ratios to the raw client's.
pub fn limit(server: &mut Server, o: &Opts) -> Result<Vec<Row>, String> {
    let n = if o.quick { 100 } else { 1000 };
    let m = o.messages(600, 50);
    let rate = o.rate(20.0, 50.0);
    server.release_inboxes();
    let inbox = server.inbox("limit")?;
    eprintln!(
        "bench: limit on {}: emap N={n} + raw client",
        server.kind.name()
    );
    let mut c = bench_child(server, "emap", &[&inbox], n, Some(m), &[])?;
    let ready_fields = c.ready(ready_timeout(n))?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let raw = {
        let (host, port) = (server.host(), server.imap_port());
        let (user, password) = (inbox.user.clone(), inbox.password.clone());
        let stop = stop.clone();
        std::thread::spawn(move || {
            let cpu0 = metrics::thread_cpu_time();
            let got = crate::raw_client::raw_idle_client(
                &host,
                port,
                &user,
                &password,
                ready_tx,
                stop,
                Instant::now() + Duration::from_secs(900),
            );
            got.map(|g| (g, metrics::thread_cpu_time().saturating_sub(cpu0)))
        })
    };
    if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let e = raw.join().map_or_else(
            |_| "panicked".to_owned(),
            |r| r.err().map_or("?".into(), |e| e.to_string()),
        );
        return Err(format!("raw client did not start: {e}"));
    }
    // Let the raw client's first IDLE be accepted.
    std::thread::sleep(Duration::from_millis(300));
    let conns = server.connections(&[&inbox]);
    let mut rng = Rng::new(o.seed ^ 0x11_417);
    let targets = random_targets(n, 1, m, &mut rng, |i| i);
    eprintln!("bench: limit: sending {m} at {rate}/s");
    let sent = send_stream(
        server,
        std::slice::from_ref(&inbox),
        &targets,
        Some(rate),
        1,
        Duration::from_secs(600),
    );
    let out = c.expect(m, Duration::from_secs(30), Duration::from_secs(120))?;
    // The raw client had the same drain time; stop it.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (raw_got, raw_cpu) = raw
        .join()
        .map_err(|_| "raw client panicked".to_owned())?
        .map_err(|e| format!("raw client: {e}"))?;
    let raw_got: Vec<(u32, u64, u32)> = raw_got.iter().map(|&(s, t)| (s, t, 1)).collect();
    let raw_m = measure(&sent.accepted, &raw_got);
    let emap_m = measure(&sent.accepted, &out.got);
    if !o.svg.is_empty() {
        crate::plot::Chart {
            title: &format!(
                "Server accepted → task has it, {} ({} mails)",
                server.kind.name(),
                sent.accepted.len()
            ),
            x_label: "latency (ms)",
            y_label: "fraction of mails",
            series: vec![
                crate::plot::Series {
                    name: "floor: push + fetch".into(),
                    points: crate::plot::cdf(&raw_m.sorted),
                },
                crate::plot::Series {
                    name: format!("emap, {n} subscribers"),
                    points: crate::plot::cdf(&emap_m.sorted),
                },
            ],
        }
        .write(&o.svg, &format!("latency-{}.svg", server.kind.name()));
    }
    let mut rows = Vec::new();
    for (client, meas) in [("raw", &raw_m), ("emap", &emap_m)] {
        let mut row = Row::new("limit")
            .with("server", server.kind.name())
            .with("client", client)
            .with("N", if client == "raw" { 1 } else { n })
            .with("conns", conns)
            .with("sent", meas.sent)
            .with("delivered", meas.received)
            .with("lost", meas.lost);
        latency_fields(&mut row, &meas.latency);
        let ratio = |a: u64, b: u64| {
            if b == 0 {
                f64::NAN
            } else {
                (a as f64 / b as f64 * 100.0).round() / 100.0
            }
        };
        let (e, r) = (&emap_m.latency, &raw_m.latency);
        if client == "raw" {
            // The raw client's thread, its login included: the floor's
            // CPU cost per mail.
            row.set(
                "cpu_us_per_msg",
                us_per(raw_cpu.as_micros() as i64, meas.received),
            );
        }
        if client == "emap" {
            row.set("p50_ratio", ratio(e.p50, r.p50));
            row.set("p95_ratio", ratio(e.p95, r.p95));
            row.set("p99_ratio", ratio(e.p99, r.p99));
            row.set("max_ratio", ratio(e.max, r.max));
            row.set(
                "cpu_us_per_msg",
                us_per(fk(&out.done, "cpu_us"), meas.received),
            );
            row.set("dropped", fk(&out.done, "dropped"));
            row.set(
                "rss_b_per_sub",
                kib_per(fk(&ready_fields, "rss1") - fk(&ready_fields, "rss0"), n),
            );
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Fills `user`'s Maildir INBOX with `count` small messages, written
/// directly as files in `cur/` (unique names, `S=` size so Dovecot need
/// not stat them), then lets Dovecot index the folder once.
fn fill_backlog(server: &Server, user: &str, count: usize) -> Result<(Duration, Duration), String> {
    let d = server
        .dovecot()
        .ok_or("backlog needs the bench's Dovecot")?;
    let maildir = d.maildir(user);
    let t = Instant::now();
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).map_err(|e| format!("mkdir: {e}"))?;
    }
    let cur = maildir.join("cur");
    // Two writers: file creation is kernel-bound and a 1M backlog takes a
    // while.
    std::thread::scope(|s| {
        let lanes: Vec<_> = (0..2)
            .map(|lane| {
                let cur = &cur;
                s.spawn(move || write_backlog(cur, lane, 2, count))
            })
            .collect();
        lanes
            .into_iter()
            .try_for_each(|h| h.join().unwrap_or_else(|_| Err("writer panicked".into())))
    })?;
    let (uid, gid) = d.mail_owner();
    crate::support::cyrus::chown_tree(&maildir, uid, gid)?;
    let filled = t.elapsed();
    let t = Instant::now();
    // doveadm as in Dovecot::doveadm, with the time a million-message
    // index takes.
    let mut cmd = std::process::Command::new(
        crate::support::dovecot::find_binary("doveadm").ok_or("doveadm not found")?,
    );
    cmd.arg("-c").arg(d.conf_path()).args([
        "mailbox",
        "status",
        "-u",
        user,
        "messages uidnext",
        "INBOX",
    ]);
    let out = crate::support::dovecot::run(cmd, Duration::from_secs(1200))?;
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let indexed = t.elapsed();
    let messages: usize = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix("messages=").and_then(|v| v.parse().ok()))
        .unwrap_or(0);
    if messages != count {
        return Err(format!(
            "Dovecot indexed {messages} messages, expected {count}: {out}"
        ));
    }
    Ok((filled, indexed))
}

/// Writes messages `lane, lane + lanes, ...` below `count` into `cur`.
fn write_backlog(
    cur: &std::path::Path,
    lane: usize,
    lanes: usize,
    count: usize,
) -> Result<(), String> {
    let base = 1_795_000_000u64;
    let pid = std::process::id();
    let mut buf = Vec::with_capacity(512);
    for i in (lane..count).step_by(lanes) {
        buf.clear();
        buf.extend_from_slice(
            format!(
                "From: Old <old@emap.bench>\r\nTo: <old{i}@emap.bench>\r\nSubject: old {i}\r\n\
                 Date: Wed, 25 Nov 2026 00:00:00 +0000\r\nMessage-ID: <old-{i}@emap.bench>\r\n\
                 \r\nAn old message of the backlog.\r\n"
            )
            .as_bytes(),
        );
        let flags = if i % 2 == 0 { "S" } else { "" };
        let name = format!(
            "{}.M{}P{pid}Q{i}.emap-bench,S={}:2,{flags}",
            base + (i as u64) / 1000,
            i % 1000,
            buf.len()
        );
        std::fs::write(cur.join(name), &buf).map_err(|e| format!("writing the backlog: {e}"))?;
    }
    Ok(())
}

/// 3. backlog: time from subscribe to ready on mailboxes of 0, 100 000 and
///    1 000 000 messages, beside a client that syncs the mailbox first.
pub fn backlog(server: &mut Server, o: &Opts) -> Result<Vec<Row>, String> {
    if server.kind != Kind::Dovecot {
        return Ok(vec![Row::new("backlog").with(
            "note",
            "needs the bench's own Dovecot (fills Maildir files directly)",
        )]);
    }
    let sizes: Vec<usize> = if o.quick {
        vec![0, 1000, 10_000]
    } else {
        vec![0, 100_000, 1_000_000]
    };
    let reps = if o.quick { 1 } else { 3 };
    let mut rows = Vec::new();
    let mut base: HashMap<&str, f64> = HashMap::new();
    for &size in &sizes {
        let inbox = server.inbox("backlog")?;
        eprintln!("bench: backlog: filling {size} messages");
        let (filled, indexed) = fill_backlog(server, &inbox.user, size)?;
        eprintln!(
            "bench: backlog: filled in {:.1} s, indexed in {:.1} s",
            filled.as_secs_f64(),
            indexed.as_secs_f64()
        );
        // What the server itself needs to log in and open the mailbox.
        let server_ms = median(
            (0..reps)
                .map(|_| examine_ms(server, &inbox))
                .collect::<Result<Vec<f64>, String>>()?,
        );
        let empty = *base.entry("server").or_insert(server_ms);
        let vs_raw = |ms: f64| (ms / server_ms.max(0.001) * 100.0).round() / 100.0;
        rows.push(
            Row::new("backlog")
                .with("server", server.kind.name())
                .with("messages", size)
                .with("client", "raw LOGIN+EXAMINE")
                .with("ready_ms", (server_ms * 100.0).round() / 100.0)
                .with(
                    "vs_empty",
                    (server_ms / empty.max(0.001) * 100.0).round() / 100.0,
                )
                .with("vs_raw", 1.0)
                .with("runs", reps),
        );
        for client in ["emap", "typical"] {
            let mut samples: Vec<Fields> = Vec::new();
            for _ in 0..reps {
                let args = vec![
                    "--host".to_owned(),
                    server.host(),
                    "--port".into(),
                    server.imap_port().to_string(),
                    "--inboxes".into(),
                    child::inboxes_arg(&[&inbox]),
                ];
                let mut c = ChildProc::spawn(
                    &format!("backlog-{client}"),
                    &args,
                    &[inbox.password.as_str()],
                )?;
                samples.push(c.collect(Duration::from_secs(600))?.done);
            }
            let med = |k: &str| median(samples.iter().map(|f| fk(f, k) as f64).collect());
            let ready_ms = med("ready_us") / 1000.0;
            let empty = *base.entry(client).or_insert(ready_ms);
            let rss_delta = median(
                samples
                    .iter()
                    .map(|f| (fk(f, "hwm") - fk(f, "rss0")) as f64)
                    .collect(),
            );
            rows.push(
                Row::new("backlog")
                    .with("server", server.kind.name())
                    .with("messages", size)
                    .with("client", client)
                    .with("ready_ms", (ready_ms * 100.0).round() / 100.0)
                    .with(
                        "vs_empty",
                        (ready_ms / empty.max(0.001) * 100.0).round() / 100.0,
                    )
                    .with("vs_raw", vs_raw(ready_ms))
                    .with("runs", reps)
                    .with("bytes_read", med("bytes") as u64)
                    .with("rss_growth_kib", rss_delta as u64)
                    .with("cpu_ms", (med("cpu_us") / 10.0).round() / 100.0)
                    .with("fill_s", (filled.as_secs_f64() * 10.0).round() / 10.0)
                    .with("index_s", (indexed.as_secs_f64() * 10.0).round() / 10.0),
            );
        }
    }
    Ok(rows)
}

/// Connect + LOGIN + EXAMINE INBOX with the raw client, in ms.
fn examine_ms(server: &Server, inbox: &Inbox) -> Result<f64, String> {
    let t = Instant::now();
    let mut c = crate::raw_client::connect(&server.host(), server.imap_port())
        .map_err(|e| format!("connect: {e}"))?;
    crate::raw_client::login(&mut c, &inbox.user, &inbox.password)
        .map_err(|e| format!("login: {e}"))?;
    let r = c
        .try_command("EXAMINE INBOX")
        .map_err(|e| format!("EXAMINE: {e}"))?;
    let took = t.elapsed().as_secs_f64() * 1000.0;
    if !r.last().is_some_and(|l| l.contains(" OK")) {
        return Err(format!("EXAMINE: {r:?}"));
    }
    c.logout();
    Ok(took)
}

/// 4. pertask: one IMAP connection with IDLE per task (async-imap), under
///    the server's per-user cap; then the same tasks through emap.
pub fn pertask(server: &mut Server, o: &Opts) -> Result<Vec<Row>, String> {
    if server.kind == Kind::Courier {
        return Ok(vec![Row::new("pertask").with(
            "note",
            "needs a per-user connection cap (Dovecot, Cyrus); Courier caps per IP only",
        )]);
    }
    let n = if o.quick { 20 } else { 100 };
    let m = o.messages(200, 20);
    let rate = o.rate(20.0, 50.0);
    server.release_inboxes();
    let inbox = server.inbox("pertask")?;
    eprintln!("bench: pertask: {n} async-imap tasks, one connection each");
    let mut c = bench_child(server, "pertask", &[&inbox], n, Some(m), &[])?;
    let ready = c.ready(Duration::from_secs(120))?;
    let conns = server.connections(&[&inbox]);
    let ids: Vec<usize> = ready
        .get("ids")
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default();
    let mut rows = Vec::new();
    let mut rng = Rng::new(o.seed ^ 0x9e27);
    let (pertask_m, out) = if ids.is_empty() {
        (
            measure(&[], &[]),
            c.expect(0, Duration::ZERO, Duration::from_secs(60))?,
        )
    } else {
        let targets = random_targets(ids.len(), 1, m, &mut rng, |i| ids[i]);
        let sent = send_stream(
            server,
            std::slice::from_ref(&inbox),
            &targets,
            Some(rate),
            1,
            Duration::from_secs(600),
        );
        let out = c.expect(m, Duration::from_secs(30), Duration::from_secs(120))?;
        (measure(&sent.accepted, &out.got), out)
    };
    let mut row = Row::new("pertask")
        .with("server", server.kind.name())
        .with("client", "per-task (async-imap)")
        .with("tasks", n)
        .with("connected", fk(&ready, "connected"))
        .with("refused", fk(&ready, "refused"))
        .with("conns", conns)
        .with("sent", pertask_m.sent)
        .with("delivered", pertask_m.received)
        .with("lost", pertask_m.lost);
    latency_fields(&mut row, &pertask_m.latency);
    row.set(
        "rss_mib",
        (fk(&ready, "rss1") - fk(&ready, "rss0")) as f64 / 1024.0,
    );
    row.set("cpu_ms", fk(&out.done, "cpu_us") as f64 / 1000.0);
    row.set(
        "refusal",
        refusal(ready.get("reason").map_or("", String::as_str)),
    );
    rows.push(row);

    // The same tasks through emap (every task gets its mail).
    server.release_inboxes();
    let inbox = server.inbox("pertask-emap")?;
    eprintln!("bench: pertask: the same {n} tasks through emap");
    let mut c = bench_child(server, "emap", &[&inbox], n, Some(m), &[])?;
    let ready = c.ready(ready_timeout(n))?;
    let conns = server.connections(&[&inbox]);
    let targets = random_targets(n, 1, m, &mut rng, |i| i);
    let sent = send_stream(
        server,
        std::slice::from_ref(&inbox),
        &targets,
        Some(rate),
        1,
        Duration::from_secs(600),
    );
    let out = c.expect(m, Duration::from_secs(30), Duration::from_secs(120))?;
    let meas = measure(&sent.accepted, &out.got);
    let mut row = Row::new("pertask")
        .with("server", server.kind.name())
        .with("client", "emap")
        .with("tasks", n)
        .with("connected", n)
        .with("refused", 0)
        .with("conns", conns)
        .with("sent", meas.sent)
        .with("delivered", meas.received)
        .with("lost", meas.lost);
    latency_fields(&mut row, &meas.latency);
    row.set(
        "rss_mib",
        (fk(&ready, "rss2") - fk(&ready, "rss0")) as f64 / 1024.0,
    );
    row.set("cpu_ms", fk(&out.done, "cpu_us") as f64 / 1000.0);
    row.set(
        "cpu_us_per_msg",
        us_per(fk(&out.done, "cpu_us"), meas.received),
    );
    rows.push(row);
    if !o.svg.is_empty() {
        crate::plot::Chart {
            title: &format!(
                "{n} tasks, one connection each vs emap ({})",
                server.kind.name()
            ),
            x_label: "latency (ms)",
            y_label: "fraction of mails",
            series: vec![
                crate::plot::Series {
                    name: "per-task client".into(),
                    points: crate::plot::cdf(&pertask_m.sorted),
                },
                crate::plot::Series {
                    name: "emap".into(),
                    points: crate::plot::cdf(&meas.sorted),
                },
            ],
        }
        .write(
            &o.svg,
            &format!("latency-pertask-{}.svg", server.kind.name()),
        );
    }
    Ok(rows)
}

/// The server's reason for refusing a task, shortened to its response
/// code and text (`[LIMIT] Maximum number of connections ...`).
fn refusal(reason: &str) -> String {
    let reason = reason.replace('~', " ");
    match (reason.find('['), reason.find(')')) {
        (Some(a), Some(b)) if b > a => reason[a..=b].to_owned(),
        _ => reason,
    }
}

/// 5. soak: 10 000 subscribers, a steady stream and continuous
///    subscribe/close churn; RSS sampled every 10 s.
pub fn soak(server: &mut Server, o: &Opts) -> Result<Vec<Row>, String> {
    let (n, pool, churn, sample) = if o.quick {
        (1000, 100, 20, 5)
    } else {
        (10_000, 1000, 100, 10)
    };
    let minutes = o.minutes.unwrap_or(if o.quick { 0.5 } else { 3.0 });
    let rate = o.rate(20.0, 20.0);
    let m = (rate * minutes * 60.0) as usize;
    server.release_inboxes();
    let inbox = server.inbox("soak")?;
    eprintln!("bench: soak: N={n} ({pool} churning at {churn}/s), {rate}/s for {minutes} min");
    let mut c = bench_child(
        server,
        "emap",
        &[&inbox],
        n,
        Some(m),
        &[
            ("churn-pool", pool.to_string()),
            ("churn-per-sec", churn.to_string()),
            ("sample-secs", sample.to_string()),
        ],
    )?;
    let ready = c.ready(ready_timeout(n))?;
    let stable = n - pool;
    let mut rng = Rng::new(o.seed ^ 0x50a6);
    let targets = random_targets(stable, 1, m, &mut rng, |i| i);
    let sent = send_stream(
        server,
        std::slice::from_ref(&inbox),
        &targets,
        Some(rate),
        1,
        Duration::from_secs_f64(minutes * 60.0 + 120.0),
    );
    let out = c.expect(m, Duration::from_secs(30), Duration::from_secs(120))?;
    let meas = measure(&sent.accepted, &out.got);
    // Allocator warm-up: the baseline is the first sample after a third of
    // the run (at most 60 s).
    let warm = ((minutes * 60.0 / 3.0).min(60.0)) as u64;
    let base = out.rss.iter().find(|(t, _)| *t >= warm).or(out.rss.first());
    let first = out.rss.first();
    let last = out.rss.last();
    let max = out.rss.iter().map(|(_, kb)| *kb).max().unwrap_or(0);
    let growth = |from: Option<&(u64, u64)>| match (from, last) {
        (Some((_, a)), Some((_, b))) if *a > 0 => {
            ((*b as f64 - *a as f64) / *a as f64 * 10_000.0).round() / 100.0
        }
        _ => f64::NAN,
    };
    let mut row = Row::new("soak")
        .with("server", server.kind.name())
        .with("N", n)
        .with("minutes", minutes)
        .with("churned", fk(&out.done, "churned"))
        .with("sent", meas.sent)
        .with("delivered", meas.received)
        .with("lost", meas.lost);
    latency_fields(&mut row, &meas.latency);
    row.set(
        "cpu_us_per_msg",
        us_per(fk(&out.done, "cpu_us"), meas.received),
    );
    row.set("rss_start_mib", fk(&ready, "rss2") as f64 / 1024.0);
    row.set("rss_base_mib", base.map(|(_, kb)| *kb as f64 / 1024.0));
    row.set("rss_end_mib", last.map(|(_, kb)| *kb as f64 / 1024.0));
    row.set("rss_max_mib", max as f64 / 1024.0);
    row.set("growth_pct", growth(base));
    row.set("growth_from_first_pct", growth(first));
    // Alive at the end: the stable subscribers and the probe (the churn
    // pool was closed when churn stopped); more would be a leak.
    row.set(
        "subscriber_actors_end",
        format!("{}/{}", fk(&out.done, "actor_subscribers"), stable + 1),
    );
    row.set(
        "samples",
        out.rss
            .iter()
            .map(|(t, kb)| format!("{t}s:{kb}"))
            .collect::<Vec<_>>()
            .join(" "),
    );
    Ok(vec![row])
}

/// 6. burst: 10 000 mails as fast as the server accepts them.
pub fn burst(server: &mut Server, o: &Opts) -> Result<Vec<Row>, String> {
    let (n, m) = if o.quick {
        (1000, o.messages(1000, 1000))
    } else {
        (10_000, o.messages(10_000, 1000))
    };
    let parallel = 4;
    server.release_inboxes();
    let inbox = server.inbox("burst")?;
    eprintln!("bench: burst: {m} mails to N={n} over {parallel} connections");
    let mut c = bench_child(server, "emap", &[&inbox], n, Some(m), &[])?;
    let _ready = c.ready(ready_timeout(n))?;
    let mut rng = Rng::new(o.seed ^ 0xb065);
    let targets = random_targets(n, 1, m, &mut rng, |i| i);
    let sent = send_stream(
        server,
        std::slice::from_ref(&inbox),
        &targets,
        None,
        parallel,
        Duration::from_secs(900),
    );
    let out = c.expect(m, Duration::from_secs(120), Duration::from_secs(300))?;
    let meas = measure(&sent.accepted, &out.got);
    let secs = |a: u64, b: u64| (b.saturating_sub(a) as f64 / 1e7).round() / 100.0;
    let mut row = Row::new("burst")
        .with("server", server.kind.name())
        .with("N", n)
        .with("sent", meas.sent)
        .with("delivered", meas.received)
        .with("lost", meas.lost)
        .with("dup", meas.duplicates)
        .with("dropped", fk(&out.done, "dropped"))
        .with("send_s", (sent.took.as_secs_f64() * 100.0).round() / 100.0)
        .with(
            "accepted_per_s",
            (meas.sent as f64 / sent.took.as_secs_f64().max(0.001)).round(),
        )
        .with("drain_s", secs(meas.first_accept, meas.last_receipt))
        .with("after_last_s", secs(meas.last_accept, meas.last_receipt));
    latency_fields(&mut row, &meas.latency);
    row.set("cpu_ms", fk(&out.done, "cpu_us") as f64 / 1000.0);
    row.set(
        "cpu_us_per_msg",
        us_per(fk(&out.done, "cpu_us"), meas.received),
    );
    row.set("send_errors", sent.errors);
    if let Some(e) = &sent.first_error {
        row.set("error", e.clone());
    }
    Ok(vec![row])
}

/// 7. subscribe: N subscribes on one inbox from a plain tokio task, one
///    after another, 64 at a time, and in batches (`subscribe_many`), each
///    in a fresh child process (issue 14, goal 3).
pub fn subscribe(server: &mut Server, o: &Opts) -> Result<Vec<Row>, String> {
    let ns = o
        .fanout_n
        .clone()
        .unwrap_or_else(|| vec![if o.quick { 2000 } else { 100_000 }]);
    let mut rows = Vec::new();
    for &n in &ns {
        for (how, batch) in [("one", 0), ("concurrent", 0), ("batch", 1000), ("batch", n)] {
            server.release_inboxes();
            let inbox = server.inbox("sub")?;
            eprintln!("bench: subscribe N={n} {how} {batch}");
            let mut extra = vec![("how", how.to_owned())];
            if batch > 0 {
                extra.push(("batch", batch.to_string()));
            }
            let mut c = bench_child(server, "subscribe-emap", &[&inbox], n, None, &extra)?;
            let d = c.collect(Duration::from_secs(600))?.done;
            let ms = fk(&d, "ms").max(1) as f64;
            let mut row = Row::new("subscribe")
                .with("server", server.kind.name())
                .with("N", n)
                .with("how", how)
                .with("batch", if batch > 0 { Some(batch) } else { None })
                .with("seconds", ms / 1000.0)
                .with("subscribe_per_s", (n as f64 / (ms / 1000.0)).round())
                .with(
                    "cpu_us_per_sub",
                    (fk(&d, "cpu_us") as f64 / n.max(1) as f64 * 100.0).round() / 100.0,
                )
                .with("held", fk(&d, "held"))
                .with("failed", fk(&d, "failed"))
                .with("rss_b_per_sub", kib_per(fk(&d, "rss1") - fk(&d, "rss0"), n));
            if fk(&d, "held") != n as i64 {
                row.set("error", "not every subscribe succeeded");
            }
            rows.push(row);
        }
    }
    Ok(rows)
}

/// Peak RSS of this (parent) process, for the record.
pub fn parent_rss() -> u64 {
    metrics::hwm_kb()
}
