//! `emap status --gateway`: read the status rows from an emap-gateway's
//! `GET /v1/status` (the JSON twin of its status page, behind the key's
//! `status` scope).
//!
//! Kept apart from the terminal rendering so that what can go wrong on the
//! way — the gateway down, the key refused, the scope missing, an answer
//! that is not the gateway's — is one typed error with a readable reason.
//! The API key comes from a file or an environment variable, never from
//! the command line, and no message or `Debug` output carries it.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::status::Row;

/// The variable the key is read from when neither `--key-file` nor
/// `--key-env` is given (and it is set).
pub(crate) const DEFAULT_KEY_VAR: &str = "EMAP_GATEWAY_KEY";

/// How long one request to the gateway may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the status could not be read from the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GatewayError {
    /// No answer: refused, unknown host, TLS, timeout.
    Unreachable {
        /// The gateway's base URL.
        url: String,
        /// What failed, in the HTTP client's words.
        reason: String,
    },
    /// 401: no key, or not one the gateway knows.
    KeyRefused {
        /// Whether a key was sent at all.
        sent: bool,
    },
    /// 403: the key is valid but may not read the status.
    ScopeMissing,
    /// 404: not an emap-gateway with `/v1/status` (an older one?).
    NoStatusEndpoint {
        /// The gateway's base URL.
        url: String,
    },
    /// Any other answer, with the gateway's own message if it gave one.
    Refused {
        /// The HTTP status.
        status: u16,
        /// The gateway's `error` text, or a short excerpt of the body.
        message: String,
    },
    /// 200, but not the JSON `/v1/status` promises.
    BadAnswer(String),
}

impl GatewayError {
    /// Whether retrying cannot help (a `--watch` stops on these): the key
    /// or its scope is wrong, or the URL is not a gateway.
    pub(crate) fn is_permanent(&self) -> bool {
        matches!(
            self,
            GatewayError::KeyRefused { .. }
                | GatewayError::ScopeMissing
                | GatewayError::NoStatusEndpoint { .. }
        )
    }
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatewayError::Unreachable { url, reason } => {
                write!(f, "cannot reach the gateway at {url}: {reason}")
            }
            GatewayError::KeyRefused { sent: true } => write!(
                f,
                "the gateway refused the API key (401): check --key-file, --key-env or \
                 {DEFAULT_KEY_VAR}"
            ),
            GatewayError::KeyRefused { sent: false } => write!(
                f,
                "the gateway requires an API key (401): pass --key-file PATH or --key-env VAR, \
                 or set {DEFAULT_KEY_VAR}"
            ),
            GatewayError::ScopeMissing => write!(
                f,
                "the API key may not read the status (403): add \"status\" to the key's \
                 endpoints in the gateway's configuration"
            ),
            GatewayError::NoStatusEndpoint { url } => write!(
                f,
                "{url} has no /v1/status (404): not an emap-gateway, or one older than \
                 `emap status`"
            ),
            GatewayError::Refused { status, message } => {
                write!(f, "the gateway answered {status}: {message}")
            }
            GatewayError::BadAnswer(why) => {
                write!(
                    f,
                    "the gateway's /v1/status answer is not understood: {why}"
                )
            }
        }
    }
}

/// The API key: sent, never shown (no `Debug`, no `Display`).
#[derive(Clone)]
struct Key(Arc<str>);

/// The figures of the gateway itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Overall {
    /// The gateway's version.
    pub(crate) version: String,
    /// Seconds since it started.
    pub(crate) uptime: Duration,
    /// Open waits and streams, gateway-wide.
    pub(crate) waiters: u64,
    /// Keys with an open wait or stream.
    pub(crate) keys_active: u64,
}

/// One answer of `/v1/status`.
#[derive(Debug, Clone)]
pub(crate) struct GatewayStatus {
    /// The gateway itself.
    pub(crate) overall: Overall,
    /// One row per inbox (and session) in the key's scope.
    pub(crate) rows: Vec<Row>,
}

/// A client for one gateway: its URL, the key, the TLS roots.
#[derive(Clone)]
pub(crate) struct Client {
    base: String,
    key: Option<Key>,
    agent: ureq::Agent,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The key from `file`, the variable `var`, or [`DEFAULT_KEY_VAR`] when
/// set; `None` when none is given. Errors name the file or variable,
/// never the key.
fn read_key(file: Option<&Path>, var: Option<&str>) -> Result<Option<Key>, String> {
    let (text, from) = match (file, var) {
        (Some(path), _) => (
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the key file {}: {e}", path.display()))?,
            format!("the key file {}", path.display()),
        ),
        (None, Some(var)) => (
            std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?,
            format!("environment variable {var}"),
        ),
        (None, None) => match std::env::var(DEFAULT_KEY_VAR) {
            Ok(v) if !v.trim().is_empty() => (v, format!("environment variable {DEFAULT_KEY_VAR}")),
            _ => return Ok(None),
        },
    };
    let key = text.trim();
    if key.is_empty() {
        return Err(format!("{from} holds no key"));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{from} holds characters an API key cannot have (visible ASCII only)"
        ));
    }
    Ok(Some(Key(key.into())))
}

/// `url` without a trailing `/`, if it is an http(s) URL without a user
/// name or password in it.
fn base_url(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("--gateway {url:?}: use an http:// or https:// URL"))?;
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Err(format!("--gateway {url:?}: no host"));
    }
    if authority.contains('@') {
        // Never echo it: the part before '@' may be a secret.
        return Err(
            "--gateway: a user name or password in the URL is not accepted; pass the key with \
             --key-file or --key-env"
                .into(),
        );
    }
    Ok(url.trim_end_matches('/').to_owned())
}

impl Client {
    /// A client for `url` with the key from `key_file`, `key_env` or
    /// [`DEFAULT_KEY_VAR`], trusting only the root in `ca_file` if given
    /// (else the web PKI roots).
    pub(crate) fn new(
        url: &str,
        key_file: Option<&Path>,
        key_env: Option<&str>,
        ca_file: Option<&Path>,
    ) -> Result<Client, String> {
        let base = base_url(url)?;
        let key = read_key(key_file, key_env)?;
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT));
        if let Some(path) = ca_file {
            let pem =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let cert = ureq::tls::Certificate::from_pem(&pem)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .to_owned();
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&[cert]))
                    .build(),
            );
        }
        Ok(Client {
            base,
            key,
            agent: config.build().into(),
        })
    }

    /// The gateway's base URL (no key in it).
    pub(crate) fn url(&self) -> &str {
        &self.base
    }

    /// `GET /v1/status` (blocking: run it off the async runtime).
    pub(crate) fn fetch(&self) -> Result<GatewayStatus, GatewayError> {
        let mut req = self.agent.get(format!("{}/v1/status", self.base));
        if let Some(Key(k)) = &self.key {
            req = req.header("Authorization", &format!("Bearer {k}"));
        }
        let mut resp = req.call().map_err(|e| GatewayError::Unreachable {
            url: self.base.clone(),
            reason: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(16 << 20)
            .read_to_string()
            .map_err(|e| GatewayError::Unreachable {
                url: self.base.clone(),
                reason: format!("reading the answer: {e}"),
            })?;
        match status {
            200 => parse(&body),
            401 => Err(GatewayError::KeyRefused {
                sent: self.key.is_some(),
            }),
            403 => Err(GatewayError::ScopeMissing),
            404 => Err(GatewayError::NoStatusEndpoint {
                url: self.base.clone(),
            }),
            _ => Err(GatewayError::Refused {
                status,
                message: error_text(&body),
            }),
        }
    }
}

/// The gateway's `{"error": ...}` text, else the start of the body, on one
/// line.
fn error_text(body: &str) -> String {
    let text = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(200).collect());
    crate::one_line(&text)
}

/// Seconds as a duration, if `v` is a number.
fn secs(v: &Value) -> Option<Duration> {
    v.as_u64().map(Duration::from_secs)
}

/// Unix seconds as a time, if `v` is a number.
fn unix(v: &Value) -> Option<SystemTime> {
    secs(v).and_then(|d| UNIX_EPOCH.checked_add(d))
}

fn text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

/// Parses a `/v1/status` answer.
pub(crate) fn parse(body: &str) -> Result<GatewayStatus, GatewayError> {
    let bad = |why: &str| GatewayError::BadAnswer(why.to_owned());
    let v: Value = serde_json::from_str(body).map_err(|e| bad(&e.to_string()))?;
    let inboxes = v["inboxes"]
        .as_array()
        .ok_or_else(|| bad("no \"inboxes\" list"))?;
    let mut rows = Vec::with_capacity(inboxes.len());
    for i in inboxes {
        let inbox = text(&i["inbox"]).ok_or_else(|| bad("an inbox without a name"))?;
        let state = text(&i["state"]).ok_or_else(|| bad("an inbox without a state"))?;
        rows.push(Row {
            inbox,
            state,
            mode: text(&i["mode"]),
            connected_since: unix(&i["connected_since"]),
            connection_age: secs(&i["connection_age_s"]),
            next_attempt: unix(&i["next_attempt"]),
            next_attempt_in: secs(&i["next_attempt_in_s"]),
            uid_validity: i["uid_validity"].as_u64(),
            watermark: i["watermark"].as_u64(),
            subscribers: i["subscribers"].as_u64().unwrap_or(0),
            open_waits: i["open_waits"].as_u64(),
            fetched: i["fetched"].as_u64(),
            delivered: i["delivered"].as_u64(),
            dropped: i["dropped"].as_u64(),
            skipped: i["skipped"].as_u64(),
            reconnects: i["reconnects"].as_u64(),
            last_error: text(&i["last_error"]),
            last_alert: text(&i["last_alert"]),
            folders: crate::status::FolderRow::list_from_json(&i["folders"]),
        });
    }
    Ok(GatewayStatus {
        overall: Overall {
            version: text(&v["version"]).unwrap_or_default(),
            uptime: secs(&v["uptime_s"]).unwrap_or_default(),
            waiters: v["waiters"].as_u64().unwrap_or(0),
            keys_active: v["keys_active"].as_u64().unwrap_or(0),
        },
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_credentials_are_refused_without_echoing_them() {
        assert_eq!(
            base_url("https://gw.example:8443/").unwrap(),
            "https://gw.example:8443"
        );
        let e = base_url("https://ops:hunter2@gw.example/").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(base_url("gw.example:8080").is_err());
        assert!(base_url("http:///x").is_err());
    }

    #[test]
    fn keys_come_from_a_file_and_are_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "  0123456789abcdef-secret\n").unwrap();
        let key = read_key(Some(&file), None).unwrap().unwrap();
        assert_eq!(&*key.0, "0123456789abcdef-secret");
        let client = Client {
            base: "http://x".into(),
            key: Some(key),
            agent: ureq::Agent::new_with_defaults(),
        };
        assert!(!format!("{client:?}").contains("secret"));
        std::fs::write(&file, "two words-secret").unwrap();
        // Refused, naming the file and never the text in it.
        let e = read_key(Some(&file), None).err().unwrap();
        assert!(
            e.contains("the key file") && !e.contains("words-secret"),
            "{e}"
        );
        std::fs::write(&file, "\n").unwrap();
        assert!(read_key(Some(&file), None).is_err());
    }

    #[test]
    fn an_answer_parses_into_rows_and_a_wrong_one_is_a_typed_error() {
        let status = parse(
            r#"{"version":"0.1.0","uptime_s":61,"waiters":2,"keys_active":1,"inboxes":[
                {"inbox":"main","state":"backing_off","next_attempt":1800000000,
                 "next_attempt_in_s":4,"subscribers":1,"open_waits":1,"reconnects":3,
                 "last_error":"connection refused","mode":"idle"},
                {"inbox":"cold","state":"not_connected","subscribers":0,"open_waits":0}]}"#,
        )
        .unwrap();
        assert_eq!(status.overall.waiters, 2);
        assert_eq!(status.rows.len(), 2);
        let main = &status.rows[0];
        assert_eq!(main.state, "backing_off");
        assert_eq!(main.next_attempt_in, Some(Duration::from_secs(4)));
        assert_eq!(main.reconnects, Some(3));
        assert_eq!(status.rows[1].fetched, None);
        assert!(matches!(parse("<html>"), Err(GatewayError::BadAnswer(_))));
        assert!(matches!(parse("{}"), Err(GatewayError::BadAnswer(_))));
    }
}
