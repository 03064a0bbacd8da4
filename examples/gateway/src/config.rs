//! The gateway's TOML configuration: where to listen, how many waiters to
//! allow, and the inboxes (credentials) that remote workers may wait on.
//! Secrets are never in the file: each inbox names the environment variable
//! that holds its password or OAuth2 token.
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! max_waiters = 10000
//! default_timeout = "60s"
//! max_timeout = "10m"
//!
//! [[inbox]]
//! name = "signups"
//! host = "imap.example.com"
//! port = 993
//! tls = "implicit"            # implicit | starttls | none
//! user = "catchall@example.com"
//! password_env = "SIGNUPS_PASSWORD"   # or oauth_token_env = "..."
//! mailbox = "INBOX"
//! ca_file = "/etc/ssl/extra-root.pem" # optional
//! ```

use std::collections::HashMap;
use std::time::Duration;

use emap::{Auth, Credential, Secret, TlsMode};
use serde::Deserialize;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Option<String>,
    max_waiters: Option<usize>,
    default_timeout: Option<String>,
    max_timeout: Option<String>,
    #[serde(default)]
    inbox: Vec<InboxFile>,
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
    ca_file: Option<String>,
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// Concurrent waits and streams allowed; more get 503.
    pub max_waiters: usize,
    /// Timeout of `/v1/wait` when the request names none.
    pub default_timeout: Duration,
    /// The longest timeout a request may ask for.
    pub max_timeout: Duration,
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

impl Config {
    /// Reads and validates the file; secrets are read from the environment.
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
            if let Some(ca) = &i.ca_file {
                let pem = std::fs::read(ca).map_err(|e| format!("inbox {}: {ca}: {e}", i.name))?;
                cred = cred
                    .add_root_pem(&pem)
                    .map_err(|e| format!("inbox {}: {e}", i.name))?;
            }
            cred.validate()
                .map_err(|e| format!("inbox {}: {e}", i.name))?;
            if inboxes.insert(i.name.clone(), cred).is_some() {
                return Err(format!("inbox {} is defined twice", i.name));
            }
        }
        if inboxes.is_empty() {
            return Err("no [[inbox]] configured".into());
        }
        Ok(Config {
            listen: file.listen.unwrap_or_else(|| "127.0.0.1:8080".into()),
            max_waiters: file.max_waiters.unwrap_or(10_000),
            default_timeout: duration(
                file.default_timeout,
                Duration::from_secs(60),
                "default_timeout",
            )?,
            max_timeout: duration(file.max_timeout, Duration::from_secs(600), "max_timeout")?,
            inboxes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
