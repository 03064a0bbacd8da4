//! Many tasks on a few inboxes: each task waits for mail at its own
//! address; emap keeps one IMAP connection per inbox, whatever the number
//! of tasks.
//!
//! ```text
//! EMAP_TLS=none EMAP_PORT=143 EMAP_PASSWORD=... \
//! EMAP_USERS=inbox1,inbox2,inbox3,inbox4,inbox5 \
//!     cargo run --release --example tasks -- \
//!     --domains d1.example,d2.example,d3.example,d4.example,d5.example --tasks 2000
//! ```
//!
//! Inbox `k` (user `k` of `EMAP_USERS`, all with `EMAP_PASSWORD`) is the
//! catch-all of domain `k`; task `i` waits on inbox `i % K` for mail to
//! `task<i>@<domain>`. Each second it prints how many tasks got their mail,
//! the sessions (one per inbox) and the subscribers still waiting. A plain
//! `#[tokio::main]` program: the registry runs on its own actix thread.

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use emap::{Config, Filter, Registry};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (mut domains, mut tasks) = (vec!["catchall.example".to_owned()], 2000usize);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--domains" => {
                domains = args
                    .next()
                    .expect("--domains needs a value")
                    .split(',')
                    .map(str::to_owned)
                    .collect()
            }
            "--tasks" => {
                tasks = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--tasks needs a number")
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let base = common::credential_from_env().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    });
    let users: Vec<String> = std::env::var("EMAP_USERS")
        .map(|v| v.split(',').map(str::to_owned).collect())
        .unwrap_or_else(|_| vec![base.user.clone()]);
    if users.len() != domains.len() {
        eprintln!("error: EMAP_USERS and --domains must have as many entries");
        std::process::exit(1);
    }
    let inboxes: Vec<_> = users
        .iter()
        .map(|u| emap::Credential {
            user: u.clone(),
            ..base.clone()
        })
        .collect();
    let handle = Registry::start_in_thread(Config::default()).expect("default config is valid");
    let done = Arc::new(AtomicUsize::new(0));
    for i in 0..tasks {
        let k = i % inboxes.len();
        let (handle, cred, done) = (handle.clone(), inboxes[k].clone(), done.clone());
        let address = format!("task{i}@{}", domains[k]);
        tokio::spawn(async move {
            let filter = Filter::new().to(&address);
            if handle
                .wait_for(cred, filter, Duration::from_secs(3600))
                .await
                .is_ok()
            {
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let stats = handle.stats().await.unwrap_or_default();
        let waiting: usize = stats.iter().map(|s| s.subscribers).sum();
        let n = done.load(Ordering::Relaxed);
        println!(
            "{n}/{tasks} tasks got their mail; {} session(s), {waiting} waiting",
            stats.len()
        );
        if n == tasks {
            break;
        }
    }
    handle.shutdown().await;
}
