//! `emap`: wait for mail on an IMAP mailbox from the shell, or check a
//! credential.
//!
//! Shell scripts, CI jobs and manual tests of sign-up flows want the same
//! thing as the library's tasks — "the next mail to task42@catchall, and
//! its code" — without writing Rust. This tool wraps
//! [`emap::Registry::start_in_thread`] and [`emap::test_login`]:
//!
//! ```text
//! EMAP_PASSWORD=... emap watch --host imap.example.com --user bot@example.com \
//!     --password-env EMAP_PASSWORD --to task42@catchall.example --timeout 5m --json
//! EMAP_PASSWORD=... emap login --host imap.example.com --user bot@example.com \
//!     --password-env EMAP_PASSWORD
//! ```
//!
//! `watch` prints `watching ...` on stderr once the mailbox is selected (mail
//! delivered after that line is seen), then each matching mail: a short
//! block (uid, from, to, subject, date, first code, links), or with `--json`
//! one JSON object per line with the keys `uid`, `from`, `to` (arrays of
//! `{"name", "email"}`), `recipients`, `subject`, `date` (RFC 3339 UTC: the
//! `Date` header, else the server's INTERNALDATE; or null), `text`, `html`,
//! `links` and `codes`.
//!
//! Exit status:
//! - 0: `--count` mails arrived (`watch`), or the credential works (`login`);
//! - 1: an error, with a one-line `error: ...` on stderr — also bad
//!   arguments, so that 2 always means a timeout;
//! - 2: `watch --timeout` passed before `--count` mails arrived (if the
//!   mailbox could not even be opened by then because of a connection
//!   error, that error is reported instead, with status 1);
//! - 130: interrupted by Ctrl-C (SIGINT); the subscription is closed and the
//!   session logged out first.
//!
//! Secrets are read only from the environment variable named by
//! `--password-env` or `--oauth-token-env` (a command line is visible to
//! every user through `ps` and stays in shell history); `--password` is
//! refused. The OAuth2 token is read again from the variable at each
//! connect.

use std::ffi::OsString;
use std::future::pending;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand, ValueEnum};
use emap::proto::date::{civil_from_days, days_from_civil, days_in_month};
use emap::{Address, Auth, Config, Credential, Filter, Handle, Mail, Registry, Secret, TlsMode};
use serde_json::json;
use tokio::time::Instant;

/// Exit status: success.
const EXIT_OK: u8 = 0;
/// Exit status: an error (also bad arguments).
const EXIT_ERROR: u8 = 1;
/// Exit status: `watch --timeout` passed.
const EXIT_TIMEOUT: u8 = 2;
/// Exit status: Ctrl-C (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: u8 = 130;

/// How long shutting down (LOGOUT) may take before the process exits
/// anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Wait for mail on an IMAP mailbox, or check a credential.
///
/// Exit status: 0 success, 1 error (also bad arguments), 2 `watch` timed
/// out, 130 interrupted (Ctrl-C). Secrets only come from environment
/// variables (--password-env, --oauth-token-env).
#[derive(Parser, Debug)]
#[command(name = "emap", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Wait for new mail matching the filters and print it.
    Watch(WatchArgs),
    /// Check that the credential can log in and open the mailbox.
    Login(ConnArgs),
}

/// Where and as whom to connect.
#[derive(Args, Debug)]
struct ConnArgs {
    /// The IMAP server's host name (also the TLS server name).
    #[arg(long, value_name = "HOST")]
    host: String,
    /// The port [default: 993 with --tls implicit, 143 otherwise].
    #[arg(long, value_name = "N")]
    port: Option<u16>,
    /// How the connection is protected.
    #[arg(long, value_enum, default_value_t = TlsFlag::Implicit)]
    tls: TlsFlag,
    /// Also trust the root certificate(s) in this PEM file.
    #[arg(long, value_name = "PATH")]
    ca_file: Option<PathBuf>,
    /// The user name.
    #[arg(long, value_name = "USER")]
    user: String,
    #[command(flatten)]
    secret: SecretArgs,
    /// The mailbox to watch.
    #[arg(long, value_name = "NAME", default_value = "INBOX")]
    mailbox: String,
}

/// Where the secret comes from: exactly one environment variable.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
struct SecretArgs {
    /// Read the password from this environment variable.
    #[arg(long, value_name = "VAR")]
    password_env: Option<String>,
    /// Read an OAuth2 access token (XOAUTH2) from this environment variable,
    /// again at each connect.
    #[arg(long, value_name = "VAR")]
    oauth_token_env: Option<String>,
}

/// `--tls` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TlsFlag {
    /// TLS from the first byte (usually port 993).
    Implicit,
    /// Plaintext, then STARTTLS; never continues without TLS.
    #[value(name = "starttls")]
    StartTls,
    /// No TLS: only for a server on this machine or a trusted network.
    None,
}

/// `emap watch` options.
#[derive(Args, Debug)]
struct WatchArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Only mail to this address (To, Cc, Delivered-To, X-Original-To, ...).
    #[arg(long, value_name = "ADDR")]
    to: Option<String>,
    /// Only mail whose From address or name contains this (any case).
    #[arg(long, value_name = "S")]
    from_contains: Option<String>,
    /// Only mail whose subject contains this (any case).
    #[arg(long, value_name = "S")]
    subject_contains: Option<String>,
    /// Only mail received at or after this time (RFC 3339, e.g.
    /// 2024-05-12T10:00:00Z, or Unix seconds); recent mail that arrived
    /// before the watch started is included.
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    since: Option<SystemTime>,
    /// Only mail at most this old (e.g. 30s, 10m, 2h, 1d); recent mail that
    /// arrived before the watch started is included.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    max_age: Option<Duration>,
    /// Exit after this many mails.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
    /// Give up (exit 2) after this long (e.g. 30s, 10m, 2h); none by default.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// One JSON object per mail and line, instead of a human-readable block.
    #[arg(long)]
    json: bool,
}

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
            Command::Watch(args) => watch(args).await,
            Command::Login(args) => login(args).await,
        }
    });
    ExitCode::from(code)
}

/// Why the command line is refused, if it carries a secret: `--password`
/// or a token flag. The value is never repeated.
fn secret_on_command_line(args: &[OsString]) -> Option<String> {
    for arg in args.iter().skip(1) {
        let arg = arg.to_string_lossy();
        if arg == "--" {
            break;
        }
        let flag = arg.split('=').next().unwrap_or("");
        let instead = match flag {
            "--password" | "--pass" | "--passwd" => "--password-env VAR",
            "--oauth-token" | "--token" | "--access-token" => "--oauth-token-env VAR",
            _ => continue,
        };
        return Some(format!(
            "{flag} is not accepted: a secret on the command line is visible to other users \
             (ps) and stays in shell history; put it in an environment variable and pass {instead}"
        ));
    }
    None
}

/// Prints `error: <reason>` as one line on stderr and returns
/// [`EXIT_ERROR`].
fn fail(reason: impl std::fmt::Display) -> u8 {
    eprintln!("error: {}", one_line(&reason.to_string()));
    EXIT_ERROR
}

/// `s` with line breaks and other control characters as spaces.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// A non-empty environment variable, or why not. The value never appears
/// in the error.
fn env_secret(var: &str) -> Result<String, String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(v),
        Ok(_) => Err(format!("environment variable {var} is empty")),
        Err(std::env::VarError::NotPresent) => {
            Err(format!("environment variable {var} is not set"))
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(format!("environment variable {var} is not valid UTF-8"))
        }
    }
}

/// The credential the connection flags describe.
fn credential(c: &ConnArgs) -> Result<Credential, String> {
    let auth = match (&c.secret.password_env, &c.secret.oauth_token_env) {
        (Some(var), _) => Auth::password(env_secret(var)?),
        (None, Some(var)) => {
            // Fail now rather than at the first connect.
            env_secret(var)?;
            let var = var.clone();
            Auth::oauth2(move || {
                let var = var.clone();
                async move { env_secret(&var).map(Secret::new) }
            })
        }
        (None, None) => return Err("--password-env or --oauth-token-env is required".into()),
    };
    let (mode, default_port) = match c.tls {
        TlsFlag::Implicit => (TlsMode::Implicit, 993),
        TlsFlag::StartTls => (TlsMode::StartTls, 143),
        TlsFlag::None => (TlsMode::None, 143),
    };
    let mut cred = Credential::new(&c.host, &c.user, auth)
        .port(c.port.unwrap_or(default_port))
        .tls(mode)
        .mailbox(&c.mailbox);
    if let Some(path) = &c.ca_file {
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        cred = cred
            .add_root_pem(&pem)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    cred.validate().map_err(|e| e.to_string())?;
    Ok(cred)
}

/// Resolves on the first Ctrl-C; never, if the signal cannot be watched.
async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        pending::<()>().await;
    }
}

/// Resolves at `deadline`; never without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => pending().await,
    }
}

/// `emap login`.
async fn login(args: ConnArgs) -> u8 {
    let cred = match credential(&args) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    tokio::select! {
        r = emap::test_login(&cred) => match r {
            Ok(()) => {
                println!(
                    "ok: {} can log in to {}:{} and open {}",
                    cred.user, cred.host, cred.port, cred.mailbox
                );
                EXIT_OK
            }
            Err(e) => fail(e),
        },
        () = ctrl_c() => {
            eprintln!("interrupted");
            EXIT_INTERRUPTED
        }
    }
}

/// `emap watch`.
async fn watch(args: WatchArgs) -> u8 {
    let cred = match credential(&args.conn) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let mut filter = Filter::new();
    if let Some(to) = &args.to {
        filter = filter.to(to);
    }
    if let Some(s) = &args.from_contains {
        filter = filter.from_contains(s);
    }
    if let Some(s) = &args.subject_contains {
        filter = filter.subject_contains(s);
    }
    if let Some(t) = args.since {
        filter = filter.since(t);
    }
    if let Some(age) = args.max_age {
        filter = filter.max_age(age);
    }
    if let Err(e) = filter.validate() {
        return fail(e);
    }
    let handle = match Registry::start_in_thread(Config::default()) {
        Ok(h) => h,
        Err(e) => return fail(e),
    };
    let code = run_watch(&handle, cred, filter, &args).await;
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, handle.shutdown()).await;
    code
}

/// Subscribes, prints the readiness line, then prints mails until
/// `--count`, the timeout, an error or Ctrl-C.
async fn run_watch(handle: &Handle, cred: Credential, filter: Filter, args: &WatchArgs) -> u8 {
    let deadline = args.timeout.map(|t| Instant::now() + t);
    let timer = sleep_until(deadline);
    let interrupt = ctrl_c();
    tokio::pin!(timer, interrupt);
    let watched = format!(
        "{} of {} on {}:{}",
        cred.mailbox, cred.user, cred.host, cred.port
    );
    let capacity = usize::try_from(args.count)
        .unwrap_or(usize::MAX)
        .clamp(8, 1024);

    // Subscribing connects, logs in and selects; transient failures are
    // retried by the session, so report them while waiting.
    let subscribe = handle.subscribe_with_capacity(cred, filter, Some(capacity));
    tokio::pin!(subscribe);
    let mut progress = tokio::time::interval(Duration::from_secs(1));
    let mut reported: Option<String> = None;
    let mut sub = loop {
        tokio::select! {
            r = &mut subscribe => match r {
                Ok(sub) => break sub,
                Err(e) => return fail(e),
            },
            _ = progress.tick() => {
                if let Some(e) = last_error(handle).await
                    && reported.as_ref() != Some(&e)
                {
                    eprintln!("emap: cannot connect yet ({}); retrying", one_line(&e));
                    reported = Some(e);
                }
            }
            () = &mut timer => {
                let waited = describe(args.timeout.unwrap_or_default());
                return match last_error(handle).await {
                    Some(e) => fail(format!("not connected after {waited}: {e}")),
                    None => {
                        eprintln!("timeout: not connected after {waited}");
                        EXIT_TIMEOUT
                    }
                };
            }
            () = &mut interrupt => {
                eprintln!("interrupted");
                return EXIT_INTERRUPTED;
            }
        }
    };

    let mut ready = format!("watching {watched} for {} mail(s)", args.count);
    if let Some(to) = &args.to {
        ready.push_str(&format!(" to {to}"));
    }
    if let Some(t) = args.timeout {
        ready.push_str(&format!(", timeout {}", describe(t)));
    }
    eprintln!("{ready}");

    let mut stdout = std::io::stdout().lock();
    let mut got = 0;
    while got < args.count {
        tokio::select! {
            m = sub.recv() => match m {
                Some(mail) => {
                    let out = if args.json {
                        json_line(&mail)
                    } else {
                        human_block(&mail, got > 0)
                    };
                    if let Err(e) = stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush()) {
                        sub.close();
                        return fail(format!("cannot write to stdout: {e}"));
                    }
                    got += 1;
                }
                None => {
                    return fail(match sub.error() {
                        Some(e) => e.to_string(),
                        None => "the session ended".to_owned(),
                    });
                }
            },
            () = &mut timer => {
                sub.close();
                eprintln!(
                    "timeout: {got} of {} mail(s) within {}",
                    args.count,
                    describe(args.timeout.unwrap_or_default())
                );
                return EXIT_TIMEOUT;
            }
            () = &mut interrupt => {
                sub.close();
                eprintln!("interrupted after {got} of {} mail(s)", args.count);
                return EXIT_INTERRUPTED;
            }
        }
    }
    sub.close();
    EXIT_OK
}

/// The session's last error, if any (the registry runs one session here).
async fn last_error(handle: &Handle) -> Option<String> {
    let stats = handle.stats().await.ok()?;
    stats.into_iter().find_map(|s| s.last_error)
}

/// When the mail was sent: the `Date` header, else the server's
/// INTERNALDATE.
fn mail_date(mail: &Mail) -> Option<String> {
    mail.date().or(mail.internal_date()).map(rfc3339)
}

fn address_json(a: &Address) -> serde_json::Value {
    json!({ "name": a.name, "email": a.email })
}

/// One mail as one line of JSON (with the newline).
fn json_line(mail: &Mail) -> String {
    let value = json!({
        "uid": mail.uid(),
        "from": mail.from().iter().map(address_json).collect::<Vec<_>>(),
        "to": mail.to().iter().map(address_json).collect::<Vec<_>>(),
        "recipients": mail.recipients(),
        "subject": mail.subject(),
        "date": mail_date(mail),
        "text": mail.text(),
        "html": mail.html(),
        "links": mail.links(),
        "codes": mail.codes(),
    });
    format!("{value}\n")
}

/// Links shown in a human-readable block; the rest are counted.
const HUMAN_LINKS: usize = 10;

/// One mail as a short human-readable block.
fn human_block(mail: &Mail, separate: bool) -> String {
    let join = |list: &[Address]| {
        list.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::new();
    if separate {
        out.push('\n');
    }
    let mut line = |label: &str, value: &str| {
        out.push_str(&format!("{label:<8} {}\n", one_line(value)));
    };
    line("uid", &mail.uid().to_string());
    line("from", &join(mail.from()));
    // On a catch-all the address is often only in Delivered-To.
    let to = if mail.to().is_empty() {
        mail.recipients().join(", ")
    } else {
        join(mail.to())
    };
    line("to", &to);
    line("subject", mail.subject().unwrap_or(""));
    line("date", mail_date(mail).as_deref().unwrap_or("-"));
    line(
        "code",
        mail.codes().first().map(String::as_str).unwrap_or("-"),
    );
    let links = mail.links();
    if links.is_empty() {
        line("links", "-");
    }
    for (i, link) in links.iter().take(HUMAN_LINKS).enumerate() {
        line(if i == 0 { "links" } else { "" }, link);
    }
    if links.len() > HUMAN_LINKS {
        line("", &format!("(and {} more)", links.len() - HUMAN_LINKS));
    }
    out
}

/// A duration as the user would write it: `1s`, `10m`, `1500ms`.
fn describe(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        _ if ms.is_multiple_of(3_600_000) && ms > 0 => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) && ms > 0 => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

/// Parses `30s`, `10m`, `2h`, `1d`, `500ms`, `1h30m`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("invalid duration {s:?}: use e.g. 30s, 10m, 2h, 1d, 500ms");
    let s = s.trim();
    if s.is_empty() {
        return Err(err());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map(Duration::from_secs).map_err(|_| err());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let unit_len = rest[digits..]
            .bytes()
            .take_while(u8::is_ascii_alphabetic)
            .count();
        if digits == 0 || unit_len == 0 {
            return Err(err());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| err())?;
        let unit_ms: u64 = match &rest[digits..digits + unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(err()),
        };
        let part = n.checked_mul(unit_ms).ok_or_else(err)?;
        total = total
            .checked_add(Duration::from_millis(part))
            .ok_or_else(err)?;
        rest = &rest[digits + unit_len..];
    }
    Ok(total)
}

/// Parses an RFC 3339 time (`2024-05-12T10:00:00Z`,
/// `2024-05-12T12:00:00.5+02:00`) or Unix seconds.
fn parse_since(s: &str) -> Result<SystemTime, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = s.parse().map_err(|_| format!("invalid time {s:?}"))?;
        return UNIX_EPOCH
            .checked_add(Duration::from_secs(secs))
            .ok_or_else(|| format!("invalid time {s:?}"));
    }
    parse_rfc3339(s).ok_or_else(|| {
        format!("invalid time {s:?}: use RFC 3339 (2024-05-12T10:00:00Z) or Unix seconds")
    })
}

fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let at = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));
    if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt ") && at(13, b":") && at(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if at(i, b".") {
        i += 1;
        let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        for (k, &d) in b[i..i + digits].iter().take(9).enumerate() {
            nanos += u32::from(d - b'0') * 10u32.pow(8 - k as u32);
        }
        i += digits;
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && at(i + 3, b":") => {
            let (h, m) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let o = h * 3600 + m * 60;
            if *sign == b'-' { -o } else { o }
        }
        _ => return None,
    };
    let secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second.min(59)
            - offset;
    let t = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs as u64))?
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))?
    };
    t.checked_add(Duration::from_nanos(u64::from(nanos)))
}

/// A time as RFC 3339 in UTC, to the second: `2024-05-12T10:00:00Z`.
fn rfc3339(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX / 2),
    };
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok =
            |s: &str, ms: u64| assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
        ok("30s", 30_000);
        ok("10m", 600_000);
        ok("2h", 7_200_000);
        ok("1d", 86_400_000);
        ok("500ms", 500);
        ok("1h30m", 5_400_000);
        ok("45", 45_000);
        for bad in [
            "",
            "m",
            "10x",
            "1.5s",
            "-1s",
            "s10",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(describe(Duration::from_secs(1)), "1s");
        assert_eq!(describe(Duration::from_secs(600)), "10m");
        assert_eq!(describe(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn times() {
        let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(parse_since("1704103200"), Ok(at(1_704_103_200)));
        assert_eq!(parse_since("2024-01-01T10:00:00Z"), Ok(at(1_704_103_200)));
        assert_eq!(
            parse_since("2024-01-01 12:00:00+02:00"),
            Ok(at(1_704_103_200))
        );
        assert_eq!(
            parse_since("2024-01-01t05:30:00-04:30"),
            Ok(at(1_704_103_200))
        );
        assert_eq!(
            parse_since("2024-01-01T10:00:00.25Z"),
            Ok(at(1_704_103_200) + Duration::from_millis(250))
        );
        for bad in [
            "",
            "2024-01-01",
            "2024-01-01T10:00:00",
            "2024-02-30T10:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T10:00:00+0200",
            "2024-01-01T10:00:00.Z",
            "yesterday",
        ] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
        assert_eq!(rfc3339(at(1_704_103_200)), "2024-01-01T10:00:00Z");
        assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(86_400)),
            "1969-12-31T00:00:00Z"
        );
    }

    #[test]
    fn secrets_on_the_command_line_are_refused() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        let refused = secret_on_command_line(&args(&["emap", "login", "--password", "hunter2"]));
        let msg = refused.expect("refused");
        assert!(msg.contains("--password-env"), "{msg}");
        assert!(!msg.contains("hunter2"));
        let msg = secret_on_command_line(&args(&["emap", "watch", "--password=hunter2"])).unwrap();
        assert!(!msg.contains("hunter2"), "{msg}");
        assert!(secret_on_command_line(&args(&["emap", "--oauth-token", "t"])).is_some());
        assert!(
            secret_on_command_line(&args(&["emap", "login", "--password-env", "VAR"])).is_none()
        );
        assert!(secret_on_command_line(&args(&["emap", "--", "--password"])).is_none());
    }

    #[test]
    fn the_command_line_parses() {
        let cli = Cli::try_parse_from([
            "emap",
            "watch",
            "--host",
            "h",
            "--user",
            "u",
            "--password-env",
            "P",
            "--count",
            "3",
            "--max-age",
            "10m",
            "--tls",
            "starttls",
        ])
        .unwrap();
        let Command::Watch(w) = cli.command else {
            panic!("not watch")
        };
        assert_eq!(w.count, 3);
        assert_eq!(w.conn.tls, TlsFlag::StartTls);
        assert_eq!(w.max_age, Some(Duration::from_secs(600)));
        // Exactly one secret source.
        for bad in [
            &["emap", "login", "--host", "h", "--user", "u"][..],
            &[
                "emap",
                "login",
                "--host",
                "h",
                "--user",
                "u",
                "--password-env",
                "A",
                "--oauth-token-env",
                "B",
            ],
            &[
                "emap",
                "watch",
                "--host",
                "h",
                "--user",
                "u",
                "--password-env",
                "A",
                "--count",
                "0",
            ],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn one_line_reasons() {
        assert_eq!(one_line("a\r\nb\tc "), "a  b c");
    }
}
