//! `emap-bridge`: one process of a bridge group. Run the same command on
//! several machines; for each inbox one process holds the IMAP connection
//! and publishes its new mail to NATS JetStream, the others stand by and
//! take over within the lease TTL plus one try.
//!
//! Each event is one line on standard output (`acquired`, `standby`,
//! `published`, `stored`, `lost`, with `key=value` fields), for operators
//! and for the tests; diagnostics go to standard error.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use emap::{Auth, Credential, TlsMode};
use emap_nats::bridge::{Event, Reporter};
use emap_nats::{Bridge, BridgeConfig, Inbox};

/// Publishes every new mail of an IMAP inbox to NATS JetStream, once,
/// with fail-over between processes.
#[derive(Parser, Debug)]
#[command(name = "emap-bridge", version)]
struct Args {
    /// The NATS server.
    #[arg(long, env = "EMAP_NATS", default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// The inbox's name on the bus (letters, digits, '_', '-').
    #[arg(long)]
    inbox: String,
    /// IMAP server host.
    #[arg(long)]
    host: String,
    /// IMAP server port.
    #[arg(long, default_value_t = 993)]
    port: u16,
    /// implicit, starttls or none.
    #[arg(long, default_value = "implicit")]
    tls: String,
    /// IMAP user.
    #[arg(long)]
    user: String,
    /// The environment variable holding the password (never a flag).
    #[arg(long)]
    password_env: String,
    /// The folder to watch.
    #[arg(long, default_value = "INBOX")]
    mailbox: String,
    /// Lease TTL (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = duration)]
    lease_ttl: Duration,
    /// How often the holder renews (default: TTL / 4).
    #[arg(long, value_parser = duration)]
    renew_every: Option<Duration>,
    /// How often a standby tries to take the lease.
    #[arg(long, default_value = "1s", value_parser = duration)]
    acquire_every: Duration,
    /// The holder stops publishing this long before its lease expires.
    #[arg(long, default_value = "2s", value_parser = duration)]
    safety_margin: Duration,
    /// This process's name in the lease (default: hostname-pid).
    #[arg(long)]
    holder: Option<String>,
    /// The stream's name.
    #[arg(long, default_value = "EMAP")]
    stream: String,
    /// How long the stream keeps mail.
    #[arg(long, default_value = "1h", value_parser = duration)]
    max_age: Duration,
    /// The stream's byte bound.
    #[arg(long, default_value_t = 1 << 30)]
    max_bytes: i64,
    /// Log at debug level on standard error.
    #[arg(long)]
    verbose: bool,
}

fn line(e: &Event) -> String {
    match e {
        Event::Acquired { inbox, revision } => {
            format!("acquired inbox={inbox} revision={revision}")
        }
        Event::Standby { inbox } => format!("standby inbox={inbox}"),
        Event::Published {
            inbox,
            uid,
            duplicates,
        } => format!("published inbox={inbox} uid={uid} duplicates={duplicates}"),
        Event::Stored { inbox, position } => format!(
            "stored inbox={inbox} uidvalidity={} next={}",
            position.uid_validity, position.next_uid
        ),
        Event::Lost { inbox, why } => format!("lost inbox={inbox} why={why:?}"),
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(if args.verbose {
            tracing::Level::DEBUG
        } else {
            tracing::Level::INFO
        })
        .init();
    if let Err(e) = run(args).await {
        eprintln!("emap-bridge: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), emap_nats::Error> {
    let password = std::env::var(&args.password_env).map_err(|_| {
        emap_nats::Error::InvalidConfig(format!("{} is not set", args.password_env))
    })?;
    let tls = match args.tls.as_str() {
        "implicit" => TlsMode::Implicit,
        "starttls" => TlsMode::StartTls,
        "none" => TlsMode::None,
        other => {
            return Err(emap_nats::Error::InvalidConfig(format!(
                "--tls {other}: implicit, starttls or none"
            )));
        }
    };
    let credential = Credential::new(args.host, args.user, Auth::password(password))
        .port(args.port)
        .tls(tls)
        .mailbox(args.mailbox);
    let defaults = BridgeConfig::default();
    let mut config = BridgeConfig {
        lease_ttl: args.lease_ttl,
        renew_every: args.renew_every.unwrap_or(args.lease_ttl / 4),
        acquire_every: args.acquire_every,
        safety_margin: args.safety_margin,
        holder: args.holder.unwrap_or(defaults.holder.clone()),
        ..defaults
    };
    config.stream.stream = args.stream;
    config.stream.max_age = args.max_age;
    config.stream.max_bytes = args.max_bytes;
    let report: Reporter = Arc::new(|e: &Event| println!("{}", line(e)));
    let bridge = Bridge::connect(&args.nats, config, report).await?;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        let _ = stop_tx.send(true);
    });
    bridge
        .run(
            vec![Inbox {
                name: args.inbox,
                credential,
            }],
            stop,
        )
        .await
}

/// `500ms`, `10s`, `5m`, `1h` (a bare number is seconds).
fn duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = n.parse().map_err(|_| format!("not a duration: {s}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        "h" => Ok(Duration::from_secs(n.saturating_mul(3600))),
        _ => Err(format!("unknown unit in {s} (ms, s, m, h)")),
    }
}
