//! Quick start: wait for one mail to an address on a shared inbox.
//!
//! ```text
//! EMAP_USER=catchall EMAP_PASSWORD=... EMAP_TLS=none EMAP_PORT=143 \
//!     cargo run --example quickstart -- task42@catchall.example
//! ```
//!
//! Runs the registry inside an actix System, as an actix application would.

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use emap::{Config, Filter, Registry};

#[actix_rt::main]
async fn main() {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "task42@catchall.example".into());
    let cred = match common::credential_from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let handle = Registry::start(Config::default()).expect("default config is valid");
    println!("waiting up to 5 minutes for mail to {address} ...");
    match handle
        .wait_for(cred, Filter::new().to(&address), Duration::from_secs(300))
        .await
    {
        Ok(mail) => {
            println!("from:    {:?}", mail.from());
            println!("subject: {}", mail.subject().unwrap_or("(none)"));
            println!("{}", mail.text().unwrap_or(""));
        }
        Err(e) => eprintln!("error: {e}"),
    }
    handle.shutdown().await;
}
