//! Many tasks on a few inboxes: each task waits for mail at its own
//! address; emap keeps one IMAP connection per inbox.
//!
//! ```text
//! EMAP_USER=catchall EMAP_PASSWORD=... EMAP_TLS=none EMAP_PORT=143 \
//!     cargo run --release --example tasks -- --domain catchall.example --tasks 2000
//! ```
//!
//! Task `i` waits for mail to `task<i>@<domain>`; send mail to those
//! addresses and watch the count grow. Each second it prints how many
//! tasks got their mail and the server connections in use (one per inbox,
//! whatever the number of tasks). A plain `#[tokio::main]` program: the
//! registry runs on its own actix thread.

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use emap::{Config, Filter, Registry};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (mut domain, mut tasks) = ("catchall.example".to_owned(), 2000usize);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--domain" => domain = args.next().expect("--domain needs a value"),
            "--tasks" => {
                tasks = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--tasks needs a number")
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let cred = common::credential_from_env().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    });
    let handle = Registry::start_in_thread(Config::default()).expect("default config is valid");
    let done = Arc::new(AtomicUsize::new(0));
    for i in 0..tasks {
        let (handle, cred, done) = (handle.clone(), cred.clone(), done.clone());
        let address = format!("task{i}@{domain}");
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
        let subscribers: usize = stats.iter().map(|s| s.subscribers).sum();
        let n = done.load(Ordering::Relaxed);
        println!(
            "{n}/{tasks} tasks got their mail; {} session(s), {subscribers} waiting",
            stats.len()
        );
        if n == tasks {
            break;
        }
    }
    handle.shutdown().await;
}
