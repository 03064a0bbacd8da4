//! A watch bound to a cancellation token: it ends, and its subscription is
//! released, when the token is cancelled (here on Ctrl-C or after a minute).
//!
//! ```text
//! EMAP_USER=... EMAP_PASSWORD=... cargo run --example cancel
//! ```

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use emap::{Config, Filter, Registry};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() {
    let cred = common::credential_from_env().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    });
    let handle = Registry::start_in_thread(Config::default()).expect("default config is valid");
    let cancel = CancellationToken::new();
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            }
            cancel.cancel();
        });
    }
    let mailbox = handle.mailbox(cred);
    let result = mailbox
        .watch_until(Filter::new(), cancel, |mail| {
            println!(
                "{} — {}",
                mail.uid(),
                mail.subject().unwrap_or("(no subject)")
            );
        })
        .await;
    if let Err(e) = result {
        eprintln!("error: {e}");
    }
    handle.shutdown().await;
}
