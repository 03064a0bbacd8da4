//! The whole-suite secret scan: with `EMAP_TRACE_LOG` set, every test
//! binary logs emap at TRACE level into that file, and every password the
//! harness creates is written (with its SASL PLAIN base64 form, and both as
//! decimal byte lists) to `EMAP_SECRETS_FILE`. `scripts/test` then runs the
//! suite once that way and checks that no secret appears in the log.
//!
//! Without the variables, nothing is installed and nothing is recorded.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::{Mutex, Once};

use base64::Engine as _;

static INSTALL: Once = Once::new();

/// Installs the file subscriber once per process when `EMAP_TRACE_LOG` is
/// set (a test that installed its own subscriber first keeps it).
pub fn install() {
    INSTALL.call_once(|| {
        let Ok(path) = std::env::var("EMAP_TRACE_LOG") else {
            return;
        };
        let Ok(file) = OpenOptions::new().create(true).append(true).open(&path) else {
            return;
        };
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(Mutex::new(file))
            .try_init();
    });
}

/// Records a secret for the scan (no-op without `EMAP_SECRETS_FILE`): the
/// secret, its SASL PLAIN payload base64-encoded, and both as the decimal
/// byte list a derived `Debug` of `Vec<u8>` would log.
pub fn record_secret(user: &str, secret: &str) {
    let Ok(path) = std::env::var("EMAP_SECRETS_FILE") else {
        return;
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let plain = b64.encode(format!("\0{user}\0{secret}"));
    let bytes = |s: &str| {
        let list = format!("{:?}", s.as_bytes());
        list[1..list.len() - 1].to_owned()
    };
    if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(f, "{secret}\n{plain}\n{}\n{}", bytes(secret), bytes(&plain));
    }
}

/// Records an OAuth2 token for the scan: the token itself, and what any
/// base64 blob carrying it (a SASL XOAUTH2 or OAUTHBEARER response, whatever
/// comes before the token) must contain — the token's base64 at each of the
/// three byte alignments, without the characters shared with its
/// neighbours.
pub fn record_token(user: &str, token: &str) {
    let Ok(path) = std::env::var("EMAP_SECRETS_FILE") else {
        return;
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut lines = vec![
        token.to_owned(),
        b64.encode(format!("user={user}\x01auth=Bearer {token}\x01\x01")),
    ];
    let n = token.len();
    for k in 0..3 {
        let encoded = b64.encode(format!("{}{token}", "x".repeat(k)));
        let (from, to) = ((8 * k).div_ceil(6), 8 * (k + n) / 6);
        if let Some(core) = encoded.get(from..to) {
            lines.push(core.to_owned());
        }
    }
    if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
        for l in lines {
            let _ = writeln!(f, "{l}");
        }
    }
}
