//! `emap`: wait for mail from the shell — on an IMAP mailbox, or through
//! the bus of an emap-bridge group — or check a credential.
//!
//! Shell scripts, CI jobs and manual tests of sign-up flows want the same
//! thing as the library's tasks — "the next mail to task42@catchall, and
//! its code" — without writing Rust. This tool wraps
//! [`emap::Registry::start_in_thread`], [`emap::test_login`] and
//! [`emap_nats::Waiter`]:
//!
//! ```text
//! EMAP_PASSWORD=... emap watch --host imap.example.com --user bot@example.com \
//!     --password-env EMAP_PASSWORD --to task42@catchall.example --timeout 5m --json
//! emap watch --nats nats://10.0.0.5:4222 --inbox signups \
//!     --to task42@catchall.example --timeout 5m --json
//! EMAP_PASSWORD=... emap login --host imap.example.com --user bot@example.com \
//!     --password-env EMAP_PASSWORD
//! emap status --gateway https://gw.example.com:8443 --key-file ops.key --watch
//! ```
//!
//! `watch` prints `watching ...` on stderr once the mailbox is selected, or
//! with `--nats` once its consumer on the bus is open (mail delivered after
//! that line is seen; with `--since`/`--max-age` also earlier mail, from
//! the stream), then each matching mail: a short block (uid, from, to,
//! subject, date, first code, links; the mailbox when it is not INBOX), or
//! with `--json` one JSON object per line with the keys `uid`, `mailbox`
//! (the folder's name on the server), `message_id` (without brackets; or null),
//! `from`, `to` (arrays of `{"name", "email"}`), `recipients`, `subject`,
//! `date` (RFC 3339 UTC: the `Date` header, else the server's INTERNALDATE;
//! or null), `text`, `html`, `links` and `codes`.
//!
//! `watch --nats URL --inbox NAME` (the URL also from the variable
//! `EMAP_NATS` when no IMAP flag is given) needs no IMAP credential: the
//! inbox's bridge holds it. IMAP flags with `--nats`, and `--inbox` or
//! `--stream` without it, are refused.
//!
//! `--also-watch FOLDER` (repeatable; `login`, `watch`, `status`) watches
//! further folders on the same connection: a name, or a special use such
//! as `\Junk`, found by LIST whatever the server calls it. `--folder
//! FOLDER` keeps only mail from those folders (from IMAP as
//! `--also-watch` names them; with `--nats` the server's folder name). A message on the
//! inbox's subject that no bridge published is skipped with a `warning:`
//! line on stderr; it is never printed as mail and does not change the
//! exit status.
//!
//! `status` shows each inbox's state as a table (or `--json`, one document
//! per refresh and line), from an emap-gateway's `/v1/status` or for one
//! credential directly; see `status.rs`.
//!
//! Exit status:
//! - 0: `--count` mails arrived (`watch`), or the credential works (`login`),
//!   or the status was shown (`status`);
//! - 1: an error, with a one-line `error: ...` on stderr — also bad
//!   arguments, so that 2 always means a timeout; for `status`, also a
//!   refused key or scope, an unreachable gateway, or a credential that
//!   failed for good (its row is shown first);
//! - 2: `watch --timeout` passed before `--count` mails arrived (if the
//!   mailbox could not even be opened by then because of a connection
//!   error, that error is reported instead, with status 1; with `--nats`,
//!   a bus that did not answer by then is such an error);
//! - 130: interrupted by Ctrl-C (SIGINT); the subscription is closed and the
//!   session logged out first.
//!
//! Secrets are read only from the environment variable named by
//! `--password-env` or `--oauth-token-env` (a command line is visible to
//! every user through `ps` and stays in shell history); `--password` is
//! refused, and so is `--key`: a gateway's API key comes from
//! `--key-file`, `--key-env` or `EMAP_GATEWAY_KEY`; and a `--nats` URL with
//! credentials in it (`nats://user:pass@host`): such a URL goes in
//! `EMAP_NATS`, and is never printed. The OAuth2 token is read again from
//! the variable at each connect.
//!
//! # Layout
//! One module a concern, so that a reader of one subcommand meets only what
//! it uses:
//! - `args`: the command line (clap) and the refusal of secrets on it;
//! - `credential`: the [`emap::Credential`] the connection flags describe,
//!   with the secret read from the environment;
//! - `login`, `watch`, `status`: one module per subcommand; `watch` holds
//!   what its two sources share (the filter, the readiness line, the
//!   printing loop and its endings) and the IMAP source;
//! - `bus`: `watch --nats`, the source on the bus of an emap-bridge group;
//! - `gateway`: `status`'s HTTP client for an emap-gateway's `/v1/status`,
//!   with its typed errors;
//! - `output`: a mail as a JSON line or a human-readable block;
//! - `time`: durations and times as a user writes and reads them.
//!
//! This file holds what every subcommand shares: the exit statuses, the
//! one-line error report and Ctrl-C.
#![forbid(unsafe_code)]

mod args;
mod bus;
mod credential;
mod gateway;
mod login;
mod output;
mod status;
mod time;
mod watch;

use std::ffi::OsString;
use std::future::pending;
use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command, secret_on_command_line};

/// Exit status: success.
pub(crate) const EXIT_OK: u8 = 0;
/// Exit status: an error (also bad arguments).
pub(crate) const EXIT_ERROR: u8 = 1;
/// Exit status: `watch --timeout` passed.
pub(crate) const EXIT_TIMEOUT: u8 = 2;
/// Exit status: Ctrl-C (128 + SIGINT, as shells report it).
pub(crate) const EXIT_INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if let Some(reason) = secret_on_command_line(&args) {
        eprintln!("error: {reason}");
        return ExitCode::from(EXIT_ERROR);
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version go to stdout and succeed; every other
            // argument error is an error (1), keeping 2 for timeouts.
            return ExitCode::from(if e.use_stderr() { EXIT_ERROR } else { EXIT_OK });
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return ExitCode::from(fail(format!("cannot start the runtime: {e}"))),
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Watch(args) => watch::watch(args).await,
            Command::Login(args) => login::login(args).await,
            Command::Status(args) => status::status(args).await,
        }
    });
    ExitCode::from(code)
}

/// Prints `error: <reason>` as one line on stderr and returns
/// [`EXIT_ERROR`].
pub(crate) fn fail(reason: impl std::fmt::Display) -> u8 {
    eprintln!("error: {}", one_line(&reason.to_string()));
    EXIT_ERROR
}

/// `s` with line breaks and other control characters as spaces.
pub(crate) fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Resolves on the first Ctrl-C; never, if the signal cannot be watched.
pub(crate) async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_reasons() {
        assert_eq!(one_line("a\r\nb\tc "), "a  b c");
    }
}
