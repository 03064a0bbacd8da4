//! The command line: subcommands and flags (clap), and the refusal of a
//! secret passed on it.
//!
//! Kept apart from what the subcommands do, so that every flag, its
//! default and its `--help` text are in one place, and the parsing is
//! unit-tested without a server.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::time::{parse_duration, parse_since};

/// Wait for mail on an IMAP mailbox, or check a credential.
///
/// Exit status: 0 success, 1 error (also bad arguments), 2 `watch` timed
/// out, 130 interrupted (Ctrl-C). Secrets only come from environment
/// variables (--password-env, --oauth-token-env).
#[derive(Parser, Debug)]
#[command(name = "emap", version)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Wait for new mail matching the filters and print it.
    Watch(WatchArgs),
    /// Check that the credential can log in and open the mailbox.
    Login(ConnArgs),
    /// Show each inbox's state: from an emap-gateway (--gateway URL), or
    /// for one credential directly (the connection flags of `watch`).
    Status(StatusArgs),
}

/// Where and as whom to connect.
#[derive(Args, Debug)]
pub(crate) struct ConnArgs {
    /// The IMAP server's host name (also the TLS server name).
    #[arg(long, value_name = "HOST")]
    pub(crate) host: String,
    /// The port [default: 993 with --tls implicit, 143 otherwise].
    #[arg(long, value_name = "N")]
    pub(crate) port: Option<u16>,
    /// How the connection is protected.
    #[arg(long, value_enum, default_value_t = TlsFlag::Implicit)]
    pub(crate) tls: TlsFlag,
    /// Also trust the root certificate(s) in this PEM file.
    #[arg(long, value_name = "PATH")]
    pub(crate) ca_file: Option<PathBuf>,
    /// The user name.
    #[arg(long, value_name = "USER")]
    pub(crate) user: String,
    #[command(flatten)]
    pub(crate) secret: SecretArgs,
    /// The mailbox to watch.
    #[arg(long, value_name = "NAME", default_value = "INBOX")]
    pub(crate) mailbox: String,
}

/// Where the secret comes from: exactly one environment variable.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub(crate) struct SecretArgs {
    /// Read the password from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub(crate) password_env: Option<String>,
    /// Read an OAuth2 access token (XOAUTH2) from this environment variable,
    /// again at each connect.
    #[arg(long, value_name = "VAR")]
    pub(crate) oauth_token_env: Option<String>,
}

/// `--tls` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum TlsFlag {
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
pub(crate) struct WatchArgs {
    #[command(flatten)]
    pub(crate) conn: ConnArgs,
    /// Only mail to this address (To, Cc, Delivered-To, X-Original-To, ...).
    #[arg(long, value_name = "ADDR")]
    pub(crate) to: Option<String>,
    /// Only mail whose From address or name contains this (any case).
    #[arg(long, value_name = "S")]
    pub(crate) from_contains: Option<String>,
    /// Only mail whose subject contains this (any case).
    #[arg(long, value_name = "S")]
    pub(crate) subject_contains: Option<String>,
    /// Only mail received at or after this time (RFC 3339, e.g.
    /// 2024-05-12T10:00:00Z, or Unix seconds); recent mail that arrived
    /// before the watch started is included.
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    pub(crate) since: Option<SystemTime>,
    /// Only mail at most this old (e.g. 30s, 10m, 2h, 1d); recent mail that
    /// arrived before the watch started is included.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) max_age: Option<Duration>,
    /// Exit after this many mails.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) count: u64,
    /// Give up (exit 2) after this long (e.g. 30s, 10m, 2h); none by default.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) timeout: Option<Duration>,
    /// One JSON object per mail and line, instead of a human-readable block.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `emap status` options.
///
/// Either `--gateway URL` (the key from --key-file, --key-env, or the
/// variable EMAP_GATEWAY_KEY), or the connection flags of `watch`.
#[derive(Args, Debug)]
pub(crate) struct StatusArgs {
    /// Read the status of every inbox the key may see from this
    /// emap-gateway (http:// or https:// URL) instead of connecting to IMAP.
    #[arg(
        long,
        value_name = "URL",
        conflicts_with_all = ["host", "port", "ca_file", "user", "password_env", "oauth_token_env"]
    )]
    pub(crate) gateway: Option<String>,
    /// The gateway API key, alone in this file.
    #[arg(
        long,
        value_name = "PATH",
        requires = "gateway",
        conflicts_with_all = ["key_env", "host", "user"]
    )]
    pub(crate) key_file: Option<PathBuf>,
    /// Read the gateway API key from this environment variable [default:
    /// EMAP_GATEWAY_KEY, if set].
    #[arg(long, value_name = "VAR", requires = "gateway", conflicts_with_all = ["host", "user"])]
    pub(crate) key_env: Option<String>,
    /// Trust the root certificate in this PEM file (its first) for the
    /// gateway's HTTPS, instead of the web PKI roots.
    #[arg(long, value_name = "PATH", requires = "gateway", conflicts_with_all = ["host", "user"])]
    pub(crate) gateway_ca_file: Option<PathBuf>,
    /// Without a gateway: the IMAP server's host name, as for `watch`.
    #[arg(long, value_name = "HOST", required_unless_present = "gateway")]
    pub(crate) host: Option<String>,
    /// The port [default: 993 with --tls implicit, 143 otherwise].
    #[arg(long, value_name = "N")]
    pub(crate) port: Option<u16>,
    /// How the connection is protected.
    #[arg(long, value_enum, default_value_t = TlsFlag::Implicit)]
    pub(crate) tls: TlsFlag,
    /// Also trust the root certificate(s) in this PEM file.
    #[arg(long, value_name = "PATH")]
    pub(crate) ca_file: Option<PathBuf>,
    /// The user name.
    #[arg(long, value_name = "USER", required_unless_present = "gateway")]
    pub(crate) user: Option<String>,
    /// Read the password from this environment variable.
    #[arg(long, value_name = "VAR", conflicts_with = "oauth_token_env")]
    pub(crate) password_env: Option<String>,
    /// Read an OAuth2 access token (XOAUTH2) from this environment
    /// variable, again at each connect.
    #[arg(long, value_name = "VAR")]
    pub(crate) oauth_token_env: Option<String>,
    /// The mailbox.
    #[arg(long, value_name = "NAME", default_value = "INBOX")]
    pub(crate) mailbox: String,
    /// Refresh in place every --interval until Ctrl-C.
    #[arg(long)]
    pub(crate) watch: bool,
    /// Time between refreshes with --watch (e.g. 2s, 500ms).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_interval)]
    pub(crate) interval: Duration,
    /// Without a gateway: how long to wait for the connection before
    /// showing the state reached (a first failure shows at once).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub(crate) wait: Duration,
    /// One JSON document per refresh and line, instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

impl StatusArgs {
    /// The connection flags, as `watch` takes them, without a gateway.
    pub(crate) fn conn(&self) -> Option<ConnArgs> {
        Some(ConnArgs {
            host: self.host.clone()?,
            port: self.port,
            tls: self.tls,
            ca_file: self.ca_file.clone(),
            user: self.user.clone()?,
            secret: SecretArgs {
                password_env: self.password_env.clone(),
                oauth_token_env: self.oauth_token_env.clone(),
            },
            mailbox: self.mailbox.clone(),
        })
    }
}

/// A refresh interval: at least 100 ms, so that --watch cannot spin.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(100) {
        return Err(format!("interval {s:?} is too short: at least 100ms"));
    }
    Ok(d)
}

/// Why the command line is refused, if it carries a secret: `--password`
/// or a token flag. The value is never repeated.
pub(crate) fn secret_on_command_line(args: &[OsString]) -> Option<String> {
    for arg in args.iter().skip(1) {
        let arg = arg.to_string_lossy();
        if arg == "--" {
            break;
        }
        let flag = arg.split('=').next().unwrap_or("");
        let instead = match flag {
            "--password" | "--pass" | "--passwd" => "--password-env VAR",
            "--oauth-token" | "--token" | "--access-token" => "--oauth-token-env VAR",
            "--key" | "--api-key" | "--gateway-key" => "--key-file PATH or --key-env VAR",
            _ => continue,
        };
        return Some(format!(
            "{flag} is not accepted: a secret on the command line is visible to other users \
             (ps) and stays in shell history; put it in an environment variable and pass {instead}"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let msg = secret_on_command_line(&args(&["emap", "status", "--key=k3y-v4lue"])).unwrap();
        assert!(
            msg.contains("--key-file") && !msg.contains("k3y-v4lue"),
            "{msg}"
        );
        assert!(
            secret_on_command_line(&args(&["emap", "login", "--password-env", "VAR"])).is_none()
        );
        assert!(secret_on_command_line(&args(&["emap", "--", "--password"])).is_none());
    }

    /// `line` split at spaces, as a shell would split it (no quoting).
    fn words(line: &str) -> Vec<&str> {
        line.split(' ').collect()
    }

    #[test]
    fn the_command_line_parses() {
        let cli = Cli::try_parse_from(words(
            "emap watch --host h --user u --password-env P --count 3 --max-age 10m --tls starttls",
        ))
        .unwrap();
        let Command::Watch(w) = cli.command else {
            panic!("not watch")
        };
        assert_eq!(w.count, 3);
        assert_eq!(w.conn.tls, TlsFlag::StartTls);
        assert_eq!(w.max_age, Some(Duration::from_secs(600)));
        // Exactly one secret source.
        for bad in [
            "emap login --host h --user u",
            "emap login --host h --user u --password-env A --oauth-token-env B",
            "emap watch --host h --user u --password-env A --count 0",
        ] {
            assert!(Cli::try_parse_from(words(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_takes_a_gateway_or_a_credential_not_both() {
        let parse = |line: &str| Cli::try_parse_from(words(line)).map(|c| c.command);
        let Ok(Command::Status(s)) = parse(
            "emap status --gateway http://127.0.0.1:8080 --key-file k --watch --interval 500ms",
        ) else {
            panic!("gateway mode parses")
        };
        assert!(s.conn().is_none() && s.watch);
        assert_eq!(s.interval, Duration::from_millis(500));
        let Ok(Command::Status(s)) = parse("emap status --host h --user u --password-env P --json")
        else {
            panic!("direct mode parses")
        };
        assert!(s.gateway.is_none() && s.json);
        let conn = s.conn().expect("connection flags");
        assert_eq!((conn.host.as_str(), conn.user.as_str()), ("h", "u"));
        assert_eq!(conn.secret.password_env.as_deref(), Some("P"));
        for bad in [
            // Both modes.
            "emap status --gateway http://x --host h --user u",
            // A key without a gateway.
            "emap status --host h --user u --password-env P --key-file k",
            // Neither mode.
            "emap status --json",
            // Two secrets.
            "emap status --host h --user u --password-env A --oauth-token-env B",
            // A refresh that would spin.
            "emap status --gateway http://x --interval 1ms",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
