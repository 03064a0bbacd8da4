//! `emap-wait`: waits on any machine for mail a bridge group published.
//!
//! One line per mail on standard output: `<address> <message-id>` (the
//! address the wait was for, `*` for a catch-all wait), after `ready` once
//! every wait is open. Exits 0 when `--count` mails arrived for every
//! address, 2 on timeout, 1 on error.

#[path = "shared/mod.rs"]
mod shared;
use shared::duration;

use std::time::Duration;

use clap::Parser;
use emap::Filter;
use emap_nats::{StreamConfig, Waiter};

/// Waits for mail published by emap-bridge.
#[derive(Parser, Debug)]
#[command(name = "emap-wait", version)]
struct Args {
    /// The NATS server.
    #[arg(long, env = "EMAP_NATS", default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// The inbox's name on the bus.
    #[arg(long)]
    inbox: String,
    /// Recipient addresses (repeatable); none: every mail of the inbox.
    #[arg(long)]
    to: Vec<String>,
    /// Also mail that arrived this long before the wait (e.g. 5m).
    #[arg(long, value_parser = duration)]
    max_age: Option<Duration>,
    /// Mails to wait for per address (0: until stopped).
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// Give up after this long (e.g. 5m).
    #[arg(long, default_value = "5m", value_parser = duration)]
    timeout: Duration,
    /// The stream's name.
    #[arg(long, default_value = "EMAP")]
    stream: String,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .init();
    let config = StreamConfig {
        stream: args.stream.clone(),
        ..StreamConfig::default()
    };
    let waiter = match Waiter::connect(&args.nats, &config).await {
        Ok(w) => w,
        Err(e) => {
            eprintln!("emap-wait: {e}");
            std::process::exit(1);
        }
    };
    let targets: Vec<Option<String>> = if args.to.is_empty() {
        vec![None]
    } else {
        args.to.iter().cloned().map(Some).collect()
    };
    let mut streams = Vec::new();
    for t in &targets {
        let mut filter = Filter::new();
        if let Some(a) = t {
            filter = filter.to(a.clone());
        }
        if let Some(age) = args.max_age {
            filter = filter.max_age(age);
        }
        match waiter.watch(&args.inbox, filter).await {
            Ok(s) => streams.push((t.clone().unwrap_or_else(|| "*".into()), s)),
            Err(e) => {
                eprintln!("emap-wait: {e}");
                std::process::exit(1);
            }
        }
    }
    println!("ready");
    let count = args.count;
    let mut tasks = Vec::new();
    for (address, mut stream) in streams {
        tasks.push(tokio::spawn(async move {
            let mut got = 0;
            while count == 0 || got < count {
                match stream.next().await {
                    Some(Ok(mail)) => {
                        got += 1;
                        println!("{address} {}", mail.message_id().unwrap_or("-"));
                    }
                    Some(Err(e)) => return Err(e),
                    None => break,
                }
            }
            Ok(())
        }));
    }
    let all = async {
        for t in tasks {
            match t.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e.to_string()),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    };
    match tokio::time::timeout(args.timeout, all).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("emap-wait: {e}");
            std::process::exit(1);
        }
        Err(_) => std::process::exit(2),
    }
}
