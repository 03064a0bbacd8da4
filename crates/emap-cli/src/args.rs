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
use emap::Folder;

use crate::time::{parse_duration, parse_since};

/// Wait for mail on an IMAP mailbox or through an emap-bridge group's NATS
/// bus, or check a credential.
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
    /// Wait for new mail matching the filters and print it: from an IMAP
    /// mailbox, or with --nats URL --inbox NAME from an emap-bridge group.
    Watch(WatchArgs),
    /// Check that the credential can log in, open the mailbox and find
    /// every --also-watch folder.
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
    /// Also watch this folder on the same connection: a name, or a special
    /// use such as '\Junk' (found by LIST, whatever the server calls it).
    /// Repeatable.
    #[arg(long, value_name = "FOLDER", value_parser = parse_folder)]
    pub(crate) also_watch: Vec<Folder>,
}

/// A folder as `--also-watch` and `--folder` take it (emap's reading:
/// `\Junk`, any case, is the special use; another backslash name is an
/// error; anything else a name).
fn parse_folder(s: &str) -> Result<Folder, String> {
    s.parse::<Folder>().map_err(|e| match e {
        emap::Error::InvalidConfig(why) => why,
        other => other.to_string(),
    })
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

/// `emap watch` options: where the mail comes from (an IMAP mailbox, or
/// the bus of an emap-nats bridge group), which mail, and when to stop.
#[derive(Args, Debug)]
pub(crate) struct WatchArgs {
    /// Exit after this many mails.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) count: u64,
    /// Give up (exit 2) after this long (e.g. 30s, 10m, 2h); none by default.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) timeout: Option<Duration>,
    /// One JSON object per mail and line, instead of a human-readable block.
    #[arg(long)]
    pub(crate) json: bool,
    /// Only mail to this address (To, Cc, Delivered-To, X-Original-To, ...).
    #[arg(long, value_name = "ADDR", help_heading = "Filters")]
    pub(crate) to: Option<String>,
    /// Only mail whose From address or name contains this (any case).
    #[arg(long, value_name = "S", help_heading = "Filters")]
    pub(crate) from_contains: Option<String>,
    /// Only mail whose subject contains this (any case).
    #[arg(long, value_name = "S", help_heading = "Filters")]
    pub(crate) subject_contains: Option<String>,
    /// Only mail received at or after this time (RFC 3339, e.g.
    /// 2024-05-12T10:00:00Z, or Unix seconds); recent mail that arrived
    /// before the watch started is included (with --nats: from the stream).
    #[arg(long, value_name = "TIME", value_parser = parse_since, help_heading = "Filters")]
    pub(crate) since: Option<SystemTime>,
    /// Only mail at most this old (e.g. 30s, 10m, 2h, 1d); recent mail that
    /// arrived before the watch started is included (with --nats: from the
    /// stream).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Filters")]
    pub(crate) max_age: Option<Duration>,
    /// Only mail from this folder (repeatable): one of --mailbox and
    /// --also-watch, or with --nats a folder of the bridge.
    #[arg(long, value_name = "FOLDER", help_heading = "Filters")]
    pub(crate) folder: Vec<String>,
    // Last: each section heading holds for the arguments after it.
    #[command(flatten)]
    pub(crate) imap: WatchImapArgs,
    #[command(flatten)]
    pub(crate) bus: BusArgs,
}

/// `watch`'s IMAP connection flags: the flags of `login`, none required
/// by clap, because `--nats` replaces them all ([`WatchArgs::source`]
/// decides).
#[derive(Args, Debug)]
#[command(next_help_heading = "IMAP connection (without --nats)")]
pub(crate) struct WatchImapArgs {
    /// The IMAP server's host name (also the TLS server name).
    #[arg(long, value_name = "HOST")]
    pub(crate) host: Option<String>,
    /// The port [default: 993 with --tls implicit, 143 otherwise].
    #[arg(long, value_name = "N")]
    pub(crate) port: Option<u16>,
    /// How the connection is protected [default: implicit].
    #[arg(long, value_enum, value_name = "MODE")]
    pub(crate) tls: Option<TlsFlag>,
    /// Also trust the root certificate(s) in this PEM file.
    #[arg(long, value_name = "PATH")]
    pub(crate) ca_file: Option<PathBuf>,
    /// The user name.
    #[arg(long, value_name = "USER")]
    pub(crate) user: Option<String>,
    /// Read the password from this environment variable.
    #[arg(long, value_name = "VAR", conflicts_with = "oauth_token_env")]
    pub(crate) password_env: Option<String>,
    /// Read an OAuth2 access token (XOAUTH2) from this environment variable,
    /// again at each connect.
    #[arg(long, value_name = "VAR")]
    pub(crate) oauth_token_env: Option<String>,
    /// The mailbox to watch [default: INBOX].
    #[arg(long, value_name = "NAME")]
    pub(crate) mailbox: Option<String>,
    /// Also watch this folder on the same connection: a name, or a special
    /// use such as '\Junk' (found by LIST). Repeatable.
    #[arg(long, value_name = "FOLDER", value_parser = parse_folder)]
    pub(crate) also_watch: Vec<Folder>,
}

/// The IMAP flags' ids, which `--nats` conflicts with.
const IMAP_FLAGS: [&str; 9] = [
    "host",
    "port",
    "tls",
    "ca_file",
    "user",
    "password_env",
    "oauth_token_env",
    "mailbox",
    "also_watch",
];

impl WatchImapArgs {
    /// Whether any IMAP flag was given.
    fn any(&self) -> bool {
        let WatchImapArgs {
            host,
            port,
            tls,
            ca_file,
            user,
            password_env,
            oauth_token_env,
            mailbox,
            also_watch,
        } = self;
        host.is_some()
            || port.is_some()
            || tls.is_some()
            || ca_file.is_some()
            || user.is_some()
            || password_env.is_some()
            || oauth_token_env.is_some()
            || mailbox.is_some()
            || !also_watch.is_empty()
    }
}

/// `watch --nats`: the bus of an emap-nats bridge group instead of an IMAP
/// connection.
#[derive(Args, Debug)]
#[command(next_help_heading = "Through NATS (an emap-bridge group)")]
pub(crate) struct BusArgs {
    /// Wait for the mail an emap-bridge publishes, on the NATS server at
    /// this URL, instead of connecting to IMAP: no IMAP credential needed
    /// [default: the variable EMAP_NATS, when no IMAP flag is given].
    #[arg(long, value_name = "URL", conflicts_with_all = IMAP_FLAGS)]
    pub(crate) nats: Option<String>,
    /// With --nats: the inbox's name on the bus (the bridge's --inbox).
    #[arg(long, value_name = "NAME")]
    pub(crate) inbox: Option<String>,
    /// With --nats: the JetStream stream's name (the bridge's --stream)
    /// [default: EMAP].
    #[arg(long, value_name = "NAME")]
    pub(crate) stream: Option<String>,
}

/// Where `watch` reads mail from.
#[derive(Debug)]
pub(crate) enum Source {
    /// An IMAP connection of its own.
    Imap(ConnArgs),
    /// The bus of an emap-nats bridge group.
    Nats(Bus),
}

/// `watch --nats`'s settings.
#[derive(Debug)]
pub(crate) struct Bus {
    /// The NATS server's URL (never printed: it may carry credentials).
    pub(crate) url: String,
    /// The inbox's name on the bus.
    pub(crate) inbox: String,
    /// The stream's name.
    pub(crate) stream: String,
}

/// The variable `--nats` defaults to.
pub(crate) const NATS_VAR: &str = "EMAP_NATS";

impl WatchArgs {
    /// Where the mail comes from: the bus with `--nats URL`, or with
    /// `env_nats` (the value of [`NATS_VAR`]) when no IMAP flag is given;
    /// else IMAP. A flag of the other source, or a missing one, is a
    /// usage error (clap already refused `--nats` with an IMAP flag).
    pub(crate) fn source(&self, env_nats: Option<String>) -> Result<Source, String> {
        let url = match (&self.bus.nats, env_nats.filter(|u| !u.is_empty())) {
            (Some(url), _) => Some(url.clone()),
            (None, Some(url)) if !self.imap.any() => Some(url),
            _ => None,
        };
        if let Some(url) = url {
            let inbox = self.bus.inbox.clone().ok_or(
                "watch --nats needs --inbox NAME: the inbox's name on the bus (the bridge's --inbox)",
            )?;
            return Ok(Source::Nats(Bus {
                url,
                inbox,
                stream: self.bus.stream.clone().unwrap_or_else(|| "EMAP".into()),
            }));
        }
        let nats_only: Vec<&str> = [
            ("--inbox", self.bus.inbox.is_some()),
            ("--stream", self.bus.stream.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect();
        if !nats_only.is_empty() {
            return Err(format!(
                "{} only with --nats URL (or {NATS_VAR}); an IMAP watch reads --mailbox",
                nats_only.join(", ")
            ));
        }
        let i = &self.imap;
        let (Some(host), Some(user)) = (&i.host, &i.user) else {
            return Err(
                "watch needs --host HOST, --user USER and --password-env VAR (or \
                 --oauth-token-env VAR) for IMAP, or --nats URL and --inbox NAME"
                    .into(),
            );
        };
        if i.password_env.is_none() && i.oauth_token_env.is_none() {
            return Err("--password-env VAR or --oauth-token-env VAR is required".into());
        }
        Ok(Source::Imap(ConnArgs {
            host: host.clone(),
            port: i.port,
            tls: i.tls.unwrap_or(TlsFlag::Implicit),
            ca_file: i.ca_file.clone(),
            user: user.clone(),
            secret: SecretArgs {
                password_env: i.password_env.clone(),
                oauth_token_env: i.oauth_token_env.clone(),
            },
            mailbox: i.mailbox.clone().unwrap_or_else(|| "INBOX".into()),
            also_watch: i.also_watch.clone(),
        }))
    }
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
        conflicts_with_all = ["host", "port", "ca_file", "user", "password_env", "oauth_token_env", "also_watch"]
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
    /// Also watch this folder on the same connection (a name, or a special
    /// use such as '\Junk'); each is shown under the row. Repeatable.
    #[arg(long, value_name = "FOLDER", value_parser = parse_folder)]
    pub(crate) also_watch: Vec<Folder>,
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
            also_watch: self.also_watch.clone(),
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
/// or a token flag, or a `--nats` URL with credentials in it. The value is
/// never repeated.
pub(crate) fn secret_on_command_line(args: &[OsString]) -> Option<String> {
    let bus = args.iter().any(|a| {
        let a = a.to_string_lossy();
        a == "--nats" || a.starts_with("--nats=")
    });
    let mut args = args.iter().skip(1).map(|a| a.to_string_lossy());
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_owned())),
            None => (&*arg, None),
        };
        let instead = match flag {
            "--nats" => {
                let url = inline.or_else(|| args.next().map(|v| v.into_owned()));
                if url.as_deref().is_some_and(has_userinfo) {
                    return Some(format!(
                        "credentials in the --nats URL are not accepted: a command line is \
                         visible to other users (ps) and stays in shell history; put the URL \
                         in the environment variable {NATS_VAR} and leave out --nats"
                    ));
                }
                continue;
            }
            "--password" | "--pass" | "--passwd" | "--oauth-token" | "--token"
            | "--access-token"
                if bus =>
            {
                return Some(format!(
                    "{flag} is not accepted: watch --nats reads mail from the bus and needs \
                     no IMAP credential (and a secret on the command line is visible to other \
                     users through ps)"
                ));
            }
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

/// Whether a URL names a user, a password or a token before its host
/// (`nats://user:pass@host`, `nats://token@host`).
fn has_userinfo(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority.contains('@')
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
        assert_eq!(w.max_age, Some(Duration::from_secs(600)));
        let Ok(Source::Imap(conn)) = w.source(None) else {
            panic!("an IMAP watch")
        };
        assert_eq!(conn.tls, TlsFlag::StartTls);
        assert_eq!(conn.mailbox, "INBOX");
        // Exactly one secret source.
        for bad in [
            "emap login --host h --user u",
            "emap login --host h --user u --password-env A --oauth-token-env B",
            "emap watch --host h --user u --password-env A --oauth-token-env B",
            "emap watch --host h --user u --password-env A --count 0",
        ] {
            assert!(Cli::try_parse_from(words(bad)).is_err(), "{bad}");
        }
    }

    /// The source `line` (an `emap watch` command line) names, with
    /// `env_nats` as the value of EMAP_NATS; `Err` for a clap refusal or a
    /// usage error of [`WatchArgs::source`].
    fn source(line: &str, env_nats: Option<&str>) -> Result<Source, String> {
        let cli = Cli::try_parse_from(words(line)).map_err(|e| e.to_string())?;
        let Command::Watch(w) = cli.command else {
            panic!("not watch: {line}")
        };
        w.source(env_nats.map(str::to_owned))
    }

    #[test]
    fn watch_takes_imap_flags_or_the_bus_not_both() {
        let url = "nats://10.0.0.5:4222";
        /// The bus's (url, inbox, stream), or None for IMAP.
        type Want<'a> = Option<(&'a str, &'a str, &'a str)>;
        // (command line, EMAP_NATS, what it names)
        let ok: &[(&str, Option<&str>, Want)] = &[
            (
                "emap watch --nats nats://10.0.0.5:4222 --inbox signups --to a@b.test --max-age 10m --json",
                None,
                Some((url, "signups", "EMAP")),
            ),
            (
                "emap watch --nats=nats://10.0.0.5:4222 --inbox signups --stream MAIL --folder Junk",
                None,
                Some((url, "signups", "MAIL")),
            ),
            // EMAP_NATS stands in for --nats without IMAP flags ...
            (
                "emap watch --inbox signups",
                Some(url),
                Some((url, "signups", "EMAP")),
            ),
            // ... --nats wins over it ...
            (
                "emap watch --nats nats://other:4222 --inbox signups",
                Some(url),
                Some(("nats://other:4222", "signups", "EMAP")),
            ),
            // ... and IMAP flags make an IMAP watch whatever it says.
            (
                "emap watch --host h --user u --password-env P",
                Some(url),
                None,
            ),
            (
                "emap watch --host h --user u --password-env P",
                Some(""),
                None,
            ),
            // A folder filter from IMAP names one of the watched folders.
            (
                "emap watch --host h --user u --password-env P --also-watch \\Junk --folder \\Junk",
                None,
                None,
            ),
        ];
        for (line, env, want) in ok {
            match (source(line, *env), want) {
                (Ok(Source::Nats(bus)), Some((url, inbox, stream))) => {
                    assert_eq!(
                        (bus.url.as_str(), bus.inbox.as_str(), bus.stream.as_str()),
                        (*url, *inbox, *stream),
                        "{line}"
                    );
                }
                (Ok(Source::Imap(conn)), None) => assert_eq!(conn.host, "h", "{line}"),
                (got, _) => panic!("{line} with EMAP_NATS={env:?}: {got:?}"),
            }
        }
        // (command line, EMAP_NATS, a word of the reason)
        let bad: &[(&str, Option<&str>, &str)] = &[
            // The bus needs an inbox.
            (
                "emap watch --nats nats://h:4222 --to a@b.test",
                None,
                "--inbox",
            ),
            ("emap watch --to a@b.test", Some(url), "--inbox"),
            // IMAP flags with --nats (clap's conflict).
            (
                "emap watch --nats nats://h --inbox i --host h",
                None,
                "--host",
            ),
            (
                "emap watch --nats nats://h --inbox i --user u",
                None,
                "--user",
            ),
            (
                "emap watch --nats nats://h --inbox i --password-env P",
                None,
                "--password-env",
            ),
            (
                "emap watch --nats nats://h --inbox i --oauth-token-env T",
                None,
                "--oauth-token-env",
            ),
            (
                "emap watch --nats nats://h --inbox i --tls none",
                None,
                "--tls",
            ),
            (
                "emap watch --nats nats://h --inbox i --port 143",
                None,
                "--port",
            ),
            (
                "emap watch --nats nats://h --inbox i --mailbox Junk",
                None,
                "--mailbox",
            ),
            (
                "emap watch --nats nats://h --inbox i --ca-file ca.pem",
                None,
                "--ca-file",
            ),
            // Bus flags without a bus.
            (
                "emap watch --host h --user u --password-env P --inbox i",
                None,
                "--inbox",
            ),
            (
                "emap watch --nats nats://h --inbox i --also-watch Junk",
                None,
                "--also-watch",
            ),
            (
                "emap watch --host h --user u --password-env P --stream S",
                None,
                "--stream",
            ),
            (
                "emap watch --host h --user u --password-env P --inbox i",
                Some(url),
                "--inbox",
            ),
            // Neither source, or half of one.
            ("emap watch --to a@b.test", None, "--nats"),
            ("emap watch --host h --password-env P", None, "--user"),
            ("emap watch --host h --user u", None, "--password-env"),
        ];
        for (line, env, reason) in bad {
            match source(line, *env) {
                Err(e) => assert!(e.contains(reason), "{line}: {e}"),
                Ok(s) => panic!("{line} with EMAP_NATS={env:?} parsed: {s:?}"),
            }
        }
    }

    /// `--also-watch` on `watch`, `login` and `status`: a special use by
    /// its attribute (any case), a name as given, repeatable; a backslash
    /// name that is no special use is refused with the known ones.
    #[test]
    fn also_watch_takes_names_and_special_uses() {
        use emap::SpecialUse;
        let conn = |line: &str| -> Result<ConnArgs, String> {
            let cli = Cli::try_parse_from(words(line)).map_err(|e| e.to_string())?;
            Ok(match cli.command {
                Command::Watch(w) => match w.source(None)? {
                    Source::Imap(c) => c,
                    Source::Nats(b) => panic!("bus: {b:?}"),
                },
                Command::Login(c) => c,
                Command::Status(s) => s.conn().expect("connection flags"),
            })
        };
        let want = vec![
            Folder::SpecialUse(SpecialUse::Junk),
            Folder::Named("Notifications".into()),
        ];
        for cmd in ["watch", "login", "status"] {
            let line = format!(
                "emap {cmd} --host h --user u --password-env P --also-watch \\junk --also-watch Notifications"
            );
            assert_eq!(conn(&line).unwrap().also_watch, want, "{line}");
            let line = format!("emap {cmd} --host h --user u --password-env P --also-watch \\Spam");
            let e = conn(&line).unwrap_err();
            assert!(
                e.contains("unknown special use") && e.contains("\\Junk"),
                "{line}: {e}"
            );
        }
        let plain = conn("emap watch --host h --user u --password-env P").unwrap();
        assert!(plain.also_watch.is_empty());
    }

    #[test]
    fn a_nats_url_with_credentials_is_refused_on_the_command_line() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        for url in [
            "nats://bot:s3cr3t-pw@nats.example:4222",
            "nats://t0ken-value@nats.example",
            "tls://u:p@[::1]:4222/x",
        ] {
            for line in [
                args(&["emap", "watch", "--nats", url, "--inbox", "i"]),
                args(&["emap", "watch", &format!("--nats={url}"), "--inbox", "i"]),
            ] {
                let msg = secret_on_command_line(&line).expect("refused");
                assert!(msg.contains("EMAP_NATS"), "{msg}");
                assert!(!msg.contains("s3cr3t") && !msg.contains("t0ken"), "{msg}");
            }
        }
        for url in [
            "nats://nats.example:4222",
            "nats://10.0.0.5",
            "nats://h/p@th",
        ] {
            assert_eq!(
                secret_on_command_line(&args(&["emap", "watch", "--nats", url])),
                None,
                "{url}"
            );
        }
        // A password with --nats: refused, and told that none is needed.
        let msg = secret_on_command_line(&args(&[
            "emap",
            "watch",
            "--nats",
            "nats://h",
            "--password=pw1",
        ]))
        .expect("refused");
        assert!(
            msg.contains("no IMAP credential") && !msg.contains("pw1"),
            "{msg}"
        );
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
