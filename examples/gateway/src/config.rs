//! The gateway's TOML configuration: where to listen (plain HTTP or TLS),
//! the inboxes (IMAP credentials) it serves, the API keys allowed to use
//! them with their scopes and limits, and the HTTP-level bounds. Secrets
//! are never in this file: each inbox names the environment variable that
//! holds its password or OAuth2 token, and each API key comes from an
//! environment variable, a file, or is given only as its SHA-256 digest.
//!
//! ```toml
//! listen = "0.0.0.0:8443"        # default 127.0.0.1:8080
//! max_waiters = 10000            # gateway-wide waits + streams; more get 503
//! default_timeout = "60s"
//! max_timeout = "10m"
//!
//! [tls]                          # optional: HTTPS on `listen`
//! cert_file = "/etc/emap-gateway/cert.pem"   # PEM chain, leaf first
//! key_file = "/etc/emap-gateway/key.pem"     # PEM private key (PKCS#8, PKCS#1 or SEC1)
//!
//! [http]                         # optional; defaults shown
//! max_query = 4096               # bytes of query string; longer gets 414
//! client_request_timeout = "5s"  # a client must send its request head within this
//! client_disconnect_timeout = "1s"
//! keep_alive = "5s"              # idle keep-alive connections are closed after this
//! tls_handshake_timeout = "3s"
//! max_connections = 25000        # per worker thread
//! backlog = 2048                 # pending TCP connections
//!
//! [limits]                       # per-key defaults; a [[key]] may override each
//! max_waiters = 1000             # concurrent /v1/wait of one key; more get 429
//! max_streams = 100              # concurrent /v1/stream of one key; more get 429
//! rate = 50.0                    # requests per second of one key (token bucket) ...
//! burst = 100                    # ... after this many at once; more get 429 + Retry-After
//!
//! [[key]]
//! id = "signup-farm"             # the name logs and metrics use: [A-Za-z0-9_.-], not "-"
//! key_file = "/etc/emap-gateway/signup-farm.key"   # the key, alone in the file
//! # or: key_env = "GW_KEY_SIGNUP_FARM"             # the key in an environment variable
//! # or: key_sha256 = "<64 hex digits>"             # only its digest: printf %s "$KEY" | sha256sum
//! inboxes = ["signups"]          # inbox names, or ["*"] for all
//! recipients = ["*@signups.example.com", "task-*@example.com"]  # or ["*"]: any, `to` optional
//! endpoints = ["wait", "stream"] # of: wait, stream, stats, metrics, status
//! max_waiters = 5000             # optional: overrides [limits]
//!
//! [[inbox]]
//! name = "signups"
//! host = "imap.example.com"
//! port = 993
//! tls = "implicit"            # implicit | starttls | none
//! user = "catchall@example.com"
//! password_env = "SIGNUPS_PASSWORD"   # or oauth_token_env = "..."
//! mailbox = "INBOX"
//! also_watch = ['\Junk', "Notifications"]  # optional: further folders, same connection
//! ca_file = "/etc/ssl/extra-root.pem" # optional
//! ```
//!
//! API keys are at least 16 characters of visible ASCII (e.g. `openssl rand
//! -hex 32`); from a file or variable, surrounding whitespace is ignored.
//! A recipient pattern's `*` stands for any run of characters except `@`;
//! matching ignores ASCII case, like emap's `Filter::to`. A key whose
//! recipients are not `["*"]` must name `to` in every wait and stream.
//!
//! `also_watch` lists further folders of the inbox, watched on the same
//! IMAP connection as `mailbox` (emap's `Credential::also_watch`): a name
//! (`"Notifications"`), or a special-use attribute (RFC 6154) starting with
//! a backslash — `'\Junk'` in a TOML literal string, `"\\Junk"` in a basic
//! one — which finds the spam folder whatever the provider calls it
//! (`[Gmail]/Spam`, `Junk Email`, `Junk`). Known attributes: `\All`,
//! `\Archive`, `\Drafts`, `\Flagged`, `\Junk`, `\Sent`, `\Trash`; any other
//! backslash name, or an empty name, is refused at start. A waiter on the
//! inbox gets mail from every folder; the status page, `/v1/status` and
//! `/metrics` show each folder's position.
//!
//! With no `[[key]]` the gateway is open to anyone who can connect, so it
//! then refuses to start unless `listen` resolves to loopback addresses
//! only; all requests then share one set of `[limits]`.

use std::collections::{HashMap, HashSet};
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::time::Duration;

use emap::{Auth, Credential, Folder, Secret, TlsMode};
use serde::Deserialize;

use crate::auth::{self, Caller, Endpoint, Limits, Pattern, Scope};

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Option<String>,
    max_waiters: Option<usize>,
    default_timeout: Option<String>,
    max_timeout: Option<String>,
    tls: Option<TlsFile>,
    #[serde(default)]
    http: HttpFile,
    #[serde(default)]
    limits: LimitsFile,
    #[serde(default)]
    key: Vec<KeyFile>,
    #[serde(default)]
    inbox: Vec<InboxFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: PathBuf,
    key_file: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    max_query: Option<usize>,
    client_request_timeout: Option<String>,
    client_disconnect_timeout: Option<String>,
    keep_alive: Option<String>,
    tls_handshake_timeout: Option<String>,
    max_connections: Option<usize>,
    backlog: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    max_waiters: Option<usize>,
    max_streams: Option<usize>,
    rate: Option<f64>,
    burst: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    id: String,
    key_env: Option<String>,
    key_file: Option<PathBuf>,
    key_sha256: Option<String>,
    #[serde(default)]
    inboxes: Vec<String>,
    #[serde(default)]
    recipients: Vec<String>,
    #[serde(default)]
    endpoints: Vec<String>,
    max_waiters: Option<usize>,
    max_streams: Option<usize>,
    rate: Option<f64>,
    burst: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InboxFile {
    name: String,
    host: String,
    port: Option<u16>,
    tls: Option<String>,
    user: String,
    password_env: Option<String>,
    oauth_token_env: Option<String>,
    mailbox: Option<String>,
    #[serde(default)]
    also_watch: Vec<String>,
    ca_file: Option<String>,
}

/// Where the listener's certificate chain and key are.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

/// HTTP-level bounds (actix-web's own settings, plus the query length).
#[derive(Debug, Clone)]
pub struct Http {
    /// Longest query string in bytes; longer gets 414.
    pub max_query: usize,
    /// Time a client has to send its request head.
    pub client_request_timeout: Duration,
    /// Time a client has to acknowledge a connection shutdown.
    pub client_disconnect_timeout: Duration,
    /// Idle keep-alive connections are closed after this.
    pub keep_alive: Duration,
    /// Time a client has to complete the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Concurrent connections per worker thread.
    pub max_connections: usize,
    /// Pending TCP connections the kernel keeps.
    pub backlog: u32,
}

/// The validated configuration.
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// Concurrent waits and streams allowed gateway-wide; more get 503.
    pub max_waiters: usize,
    /// Timeout of `/v1/wait` when the request names none.
    pub default_timeout: Duration,
    /// The longest timeout a request may ask for.
    pub max_timeout: Duration,
    /// TLS on the listener, if configured.
    pub tls: Option<TlsFiles>,
    /// HTTP-level bounds.
    pub http: Http,
    /// Per-key limits where a key sets none (and for the open mode).
    pub limits: Limits,
    /// The API keys (digests only); empty: the open loopback mode.
    pub keys: Vec<Caller>,
    /// Inboxes by name.
    pub inboxes: HashMap<String, Credential>,
}

/// Parses `10s`, `5m`, `2h`, `1500ms` or plain seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

/// A further folder as `also_watch` names it: emap's reading of a folder
/// (`\Junk`, any case, is the special use; another backslash name an error;
/// anything else a folder name, checked further by `Credential::validate`).
pub fn parse_folder(text: &str) -> Result<Folder, String> {
    text.parse::<Folder>().map_err(|e| match e {
        emap::Error::InvalidConfig(why) => format!("also_watch: {why}"),
        other => format!("also_watch: {other}"),
    })
}

/// Shortest API key accepted.
const MIN_KEY_LEN: usize = 16;

/// The digest of a key given as text: visible ASCII, at least
/// [`MIN_KEY_LEN`] characters once surrounding whitespace is trimmed.
/// The error never contains the key.
fn key_digest(text: &str, id: &str) -> Result<auth::Digest, String> {
    let key = text.trim();
    if key.len() < MIN_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "key {id}: the key must be at least {MIN_KEY_LEN} characters of visible ASCII \
             (e.g. `openssl rand -hex 32`)"
        ));
    }
    Ok(auth::digest(key.as_bytes()))
}

fn hex_digest(hex: &str, id: &str) -> Result<auth::Digest, String> {
    let hex = hex.trim();
    let bad = || format!("key {id}: key_sha256 must be 64 hex digits");
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(out)
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id != auth::NOBODY
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// Whether every address `listen` resolves to is a loopback address.
fn loopback_only(listen: &str) -> Result<bool, String> {
    let addrs: Vec<_> = listen
        .to_socket_addrs()
        .map_err(|e| format!("listen {listen:?}: {e}"))?
        .collect();
    Ok(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()))
}

impl Config {
    /// Reads and validates the file; secrets are read from the environment
    /// (and key files), and only API key digests are kept.
    pub fn load(path: &str) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        let file: File = toml::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
        let duration = |v: Option<String>, default: Duration, what: &str| match v {
            None => Ok(default),
            Some(s) => parse_duration(&s).ok_or_else(|| format!("{what}: cannot parse {s:?}")),
        };
        let mut inboxes = HashMap::new();
        for i in file.inbox {
            let tls = match i.tls.as_deref().unwrap_or("implicit") {
                "implicit" => TlsMode::Implicit,
                "starttls" => TlsMode::StartTls,
                "none" => TlsMode::None,
                other => return Err(format!("inbox {}: unknown tls mode {other:?}", i.name)),
            };
            let env = |var: &str| {
                std::env::var(var)
                    .map_err(|_| format!("inbox {}: environment variable {var} is not set", i.name))
            };
            let auth = match (&i.password_env, &i.oauth_token_env) {
                (Some(p), None) => Auth::password(env(p)?),
                (None, Some(t)) => {
                    let var = t.clone();
                    env(&var)?;
                    Auth::oauth2(move || {
                        let var = var.clone();
                        async move {
                            std::env::var(&var)
                                .map(Secret::new)
                                .map_err(|_| format!("{var} is not set"))
                        }
                    })
                }
                _ => {
                    return Err(format!(
                        "inbox {}: set exactly one of password_env, oauth_token_env",
                        i.name
                    ));
                }
            };
            let port = i
                .port
                .unwrap_or(if tls == TlsMode::Implicit { 993 } else { 143 });
            let mut cred = Credential::new(&i.host, &i.user, auth)
                .port(port)
                .tls(tls)
                .mailbox(i.mailbox.as_deref().unwrap_or("INBOX"));
            for f in &i.also_watch {
                cred =
                    cred.also_watch(parse_folder(f).map_err(|e| format!("inbox {}: {e}", i.name))?);
            }
            if let Some(ca) = &i.ca_file {
                let pem = std::fs::read(ca).map_err(|e| format!("inbox {}: {ca}: {e}", i.name))?;
                cred = cred
                    .add_root_pem(&pem)
                    .map_err(|e| format!("inbox {}: {e}", i.name))?;
            }
            cred.validate()
                .map_err(|e| format!("inbox {}: {e}", i.name))?;
            if i.name == "*" {
                return Err("an inbox may not be named \"*\"".into());
            }
            if inboxes.insert(i.name.clone(), cred).is_some() {
                return Err(format!("inbox {} is defined twice", i.name));
            }
        }
        if inboxes.is_empty() {
            return Err("no [[inbox]] configured".into());
        }

        let d = Limits::default();
        let limits = Limits {
            max_waiters: file.limits.max_waiters.unwrap_or(d.max_waiters),
            max_streams: file.limits.max_streams.unwrap_or(d.max_streams),
            rate: file.limits.rate.unwrap_or(d.rate),
            burst: file.limits.burst.unwrap_or(d.burst),
        };
        let check_limits = |l: &Limits, what: &str| {
            if !(l.rate.is_finite() && l.rate > 0.0) || l.burst == 0 {
                return Err(format!("{what}: rate must be > 0 and burst >= 1"));
            }
            Ok(())
        };
        check_limits(&limits, "[limits]")?;

        let mut keys = Vec::new();
        let mut ids = HashSet::new();
        let mut digests = HashSet::new();
        for k in file.key {
            let id = k.id.clone();
            if !valid_id(&id) {
                return Err(format!(
                    "key id {id:?}: use 1 to 64 of A-Z a-z 0-9 _ . - (and not \"-\" alone)"
                ));
            }
            if !ids.insert(id.clone()) {
                return Err(format!("key {id} is defined twice"));
            }
            let digest = match (&k.key_env, &k.key_file, &k.key_sha256) {
                (Some(var), None, None) => {
                    let v = std::env::var(var)
                        .map_err(|_| format!("key {id}: environment variable {var} is not set"))?;
                    key_digest(&v, &id)?
                }
                (None, Some(f), None) => {
                    let v = std::fs::read_to_string(f)
                        .map_err(|e| format!("key {id}: {}: {e}", f.display()))?;
                    key_digest(&v, &id)?
                }
                (None, None, Some(hex)) => hex_digest(hex, &id)?,
                _ => {
                    return Err(format!(
                        "key {id}: set exactly one of key_env, key_file, key_sha256"
                    ));
                }
            };
            if !digests.insert(digest) {
                return Err(format!("key {id}: the same key as another [[key]]"));
            }
            let inbox_scope = if k.inboxes.iter().any(|i| i == "*") {
                None
            } else {
                for i in &k.inboxes {
                    if !inboxes.contains_key(i) {
                        return Err(format!("key {id}: unknown inbox {i:?}"));
                    }
                }
                Some(k.inboxes.clone())
            };
            let recipients = k
                .recipients
                .iter()
                .map(|r| Pattern::parse(r).map_err(|e| format!("key {id}: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            let endpoints = k
                .endpoints
                .iter()
                .map(|e| {
                    Endpoint::parse(e).ok_or_else(|| {
                        format!(
                            "key {id}: unknown endpoint {e:?} (wait, stream, stats, metrics, status)"
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let key_limits = Limits {
                max_waiters: k.max_waiters.unwrap_or(limits.max_waiters),
                max_streams: k.max_streams.unwrap_or(limits.max_streams),
                rate: k.rate.unwrap_or(limits.rate),
                burst: k.burst.unwrap_or(limits.burst),
            };
            check_limits(&key_limits, &format!("key {id}"))?;
            let scope = Scope {
                inboxes: inbox_scope,
                recipients,
                endpoints,
            };
            keys.push(Caller::new(id, digest, scope, key_limits));
        }

        let listen = file.listen.unwrap_or_else(|| "127.0.0.1:8080".into());
        if keys.is_empty() && !loopback_only(&listen)? {
            return Err(format!(
                "refusing to listen on {listen:?}: it is not a loopback address and no [[key]] \
                 is configured, so anyone who can reach it would read every inbox"
            ));
        }

        let h = file.http;
        let http = Http {
            max_query: h.max_query.unwrap_or(4096),
            client_request_timeout: duration(
                h.client_request_timeout,
                Duration::from_secs(5),
                "http.client_request_timeout",
            )?,
            client_disconnect_timeout: duration(
                h.client_disconnect_timeout,
                Duration::from_secs(1),
                "http.client_disconnect_timeout",
            )?,
            keep_alive: duration(h.keep_alive, Duration::from_secs(5), "http.keep_alive")?,
            tls_handshake_timeout: duration(
                h.tls_handshake_timeout,
                Duration::from_secs(3),
                "http.tls_handshake_timeout",
            )?,
            max_connections: h.max_connections.unwrap_or(25_000),
            backlog: h.backlog.unwrap_or(2048),
        };

        Ok(Config {
            listen,
            max_waiters: file.max_waiters.unwrap_or(10_000),
            default_timeout: duration(
                file.default_timeout,
                Duration::from_secs(60),
                "default_timeout",
            )?,
            max_timeout: duration(file.max_timeout, Duration::from_secs(600), "max_timeout")?,
            tls: file.tls.map(|t| TlsFiles {
                cert_file: t.cert_file,
                key_file: t.key_file,
            }),
            http,
            limits,
            keys,
            inboxes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use emap::SpecialUse;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1500ms"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_duration("5d"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn key_material() {
        assert!(key_digest("short", "k").is_err());
        assert!(key_digest("0123456789abcdef\u{7f}", "k").is_err());
        let d = key_digest(" 0123456789abcdef\n", "k").unwrap();
        assert_eq!(d, auth::digest(b"0123456789abcdef"));
        // The hex form of the same digest is the same key.
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex_digest(&hex, "k").unwrap(), d);
        assert_eq!(hex_digest(&hex.to_uppercase(), "k").unwrap(), d);
        assert!(hex_digest(&hex[1..], "k").is_err());
        assert!(hex_digest(&format!("{}zz", &hex[2..]), "k").is_err());
        // The error names the key id, never the key.
        let e = key_digest("tiny", "k").unwrap_err();
        assert!(!e.contains("tiny"), "{e}");
    }

    #[test]
    fn further_folders_by_name_or_special_use() {
        assert_eq!(
            parse_folder("\\Junk"),
            Ok(Folder::SpecialUse(SpecialUse::Junk))
        );
        assert_eq!(
            parse_folder("\\junk"),
            Ok(Folder::SpecialUse(SpecialUse::Junk))
        );
        assert_eq!(
            parse_folder("Notifications"),
            Ok(Folder::Named("Notifications".into()))
        );
        let e = parse_folder("\\Spam").unwrap_err();
        assert!(
            e.contains("unknown special use") && e.contains("\\Junk"),
            "{e}"
        );
        assert!(parse_folder("").is_err());
    }

    #[test]
    fn ids_and_loopback() {
        assert!(valid_id("ci-farm_1.a"));
        assert!(!valid_id("-"));
        assert!(!valid_id(""));
        assert!(!valid_id("a b"));
        assert!(!valid_id("a\nb"));
        assert_eq!(loopback_only("127.0.0.1:0"), Ok(true));
        assert_eq!(loopback_only("[::1]:0"), Ok(true));
        assert_eq!(loopback_only("0.0.0.0:0"), Ok(false));
        assert_eq!(loopback_only("[::]:0"), Ok(false));
        assert!(loopback_only("no port").is_err());
    }
}
