//! The demo behind `scripts/demo`: 2000 tasks on 5 shared inboxes of a real
//! local Dovecot, mail delivered to them, progress printed each second.
//!
//! It starts a private Dovecot on 127.0.0.1 in a temporary directory (the
//! same harness the test suite uses; `scripts/demo` installs Dovecot first
//! when it is missing and it may), makes 5 catch-all inboxes, and starts
//! 2000 tasks, each waiting for mail at its own address. A writer delivers
//! one mail per task over LMTP, as an MTA would. Each second the demo
//! prints how many tasks got their mail, the latency from "the server
//! accepted the mail" to "the task has it" (p50 / p99), and the IMAP
//! connections the server counts: 5, whatever the number of tasks.
//!
//! ```text
//! cargo run --release --example demo -- [--tasks 2000] [--inboxes 5] [--rate 400]
//! ```

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use emap::{Auth, Config, Credential, Filter, Registry, TlsMode};

struct Args {
    tasks: usize,
    inboxes: usize,
    rate: u32,
}

fn args() -> Args {
    let mut a = Args {
        tasks: 2000,
        inboxes: 5,
        rate: 400,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut num = || -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{flag} needs a number"))
        };
        match flag.as_str() {
            "--tasks" => a.tasks = num(),
            "--inboxes" => a.inboxes = num().max(1),
            "--rate" => a.rate = u32::try_from(num()).unwrap_or(u32::MAX).max(1),
            other => panic!("unknown argument {other}; see the header of examples/demo.rs"),
        }
    }
    a
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let a = args();
    println!("starting a private Dovecot on 127.0.0.1 ...");
    let dovecot = support::dovecot();
    let inboxes: Vec<support::CatchAll> = (0..a.inboxes)
        .map(|i| dovecot.catchall(&format!("demo{i}")))
        .collect();
    let creds: Vec<Credential> = inboxes
        .iter()
        .map(|ca| {
            Credential::new(
                "127.0.0.1",
                &ca.user.name,
                Auth::password(&*ca.user.password),
            )
            .port(dovecot.imap_port)
            .tls(TlsMode::None)
        })
        .collect();

    let handle = Registry::start_in_thread(Config::default()).expect("default config is valid");
    let started = Instant::now();
    let mut waiting = Vec::with_capacity(a.tasks);
    for i in 0..a.tasks {
        let k = i % a.inboxes;
        let address = inboxes[k].address(&format!("task{i}"));
        let (handle, cred) = (handle.clone(), creds[k].clone());
        waiting.push(tokio::spawn(async move {
            handle.subscribe(cred, Filter::new().to(address)).await
        }));
    }
    let mut subs = Vec::with_capacity(a.tasks);
    for w in waiting {
        subs.push(w.await.expect("subscribe task").expect("subscribe"));
    }
    println!(
        "{} tasks subscribed on {} inboxes in {:.2?}",
        a.tasks,
        a.inboxes,
        started.elapsed()
    );

    // When each task's mail was accepted by the server, and when it arrived
    // (joined at each report: a mail may arrive before the writer thread
    // has recorded its send time).
    let sent: Arc<Mutex<HashMap<usize, Instant>>> = Arc::default();
    let received: Arc<Mutex<HashMap<usize, Instant>>> = Arc::default();
    for (i, mut sub) in subs.into_iter().enumerate() {
        let received = received.clone();
        tokio::spawn(async move {
            if sub.recv().await.is_some() {
                received.lock().unwrap().insert(i, Instant::now());
            }
        });
    }

    // The writer: one mail per task, at `rate` per second, over LMTP.
    {
        let sent = sent.clone();
        let addresses: Vec<String> = (0..a.tasks)
            .map(|i| inboxes[i % a.inboxes].address(&format!("task{i}")))
            .collect();
        let rate = a.rate;
        std::thread::spawn(move || {
            let gap = Duration::from_secs(1) / rate;
            let mut next = Instant::now();
            for (i, rcpt) in addresses.iter().enumerate() {
                let raw = support::mail(
                    "noreply@demo.test",
                    rcpt,
                    &format!("Your code is {:06}", i),
                    "hello",
                );
                support::dovecot().deliver(rcpt, &raw);
                sent.lock().unwrap().insert(i, Instant::now());
                next += gap;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        });
    }

    let users: Vec<String> = inboxes.iter().map(|ca| ca.user.name.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let got = received.lock().unwrap().clone();
        let mut lat: Vec<Duration> = {
            let sent = sent.lock().unwrap();
            got.iter()
                .filter_map(|(i, at)| sent.get(i).map(|s| at.saturating_duration_since(*s)))
                .collect()
        };
        lat.sort_unstable();
        let users = users.clone();
        let connections: usize = support::blocking(move || {
            users
                .iter()
                .map(|u| support::dovecot().connections(u))
                .sum()
        })
        .await;
        println!(
            "delivered {:>5}/{}  p50 {:>8.1?}  p99 {:>8.1?}  IMAP connections in use: {}",
            got.len(),
            a.tasks,
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            connections
        );
        if got.len() >= a.tasks {
            println!("every task got its mail over {connections} shared connections.");
            break;
        }
        if Instant::now() > deadline {
            println!(
                "stopping after 120 s with {} of {} delivered",
                lat.len(),
                a.tasks
            );
            break;
        }
    }
    handle.shutdown().await;
}
