//! Shared by the examples: a credential from environment variables, so no
//! secret ever appears on a command line.
//!
//! `EMAP_HOST` (default 127.0.0.1), `EMAP_PORT` (default by TLS mode),
//! `EMAP_TLS` (`implicit` (default), `starttls`, `none`), `EMAP_CA_FILE`
//! (an extra trusted root, PEM), `EMAP_USER`, `EMAP_PASSWORD`,
//! `EMAP_MAILBOX` (default INBOX).

use emap::{Auth, Credential, TlsMode};

/// The credential the environment describes, or a one-line reason.
pub fn credential_from_env() -> Result<Credential, String> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let tls = match var("EMAP_TLS").as_deref().unwrap_or("implicit") {
        "implicit" => TlsMode::Implicit,
        "starttls" => TlsMode::StartTls,
        "none" => TlsMode::None,
        other => return Err(format!("EMAP_TLS: unknown mode {other:?}")),
    };
    let port = match var("EMAP_PORT") {
        Some(p) => p
            .parse()
            .map_err(|_| "EMAP_PORT must be a number".to_owned())?,
        None if tls == TlsMode::Implicit => 993,
        None => 143,
    };
    let user = var("EMAP_USER").ok_or("EMAP_USER is not set")?;
    let password = var("EMAP_PASSWORD").ok_or("EMAP_PASSWORD is not set")?;
    let mut cred = Credential::new(
        var("EMAP_HOST").unwrap_or_else(|| "127.0.0.1".into()),
        user,
        Auth::password(password),
    )
    .port(port)
    .tls(tls)
    .mailbox(var("EMAP_MAILBOX").unwrap_or_else(|| "INBOX".into()));
    if let Some(path) = var("EMAP_CA_FILE") {
        let pem = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
        cred = cred.add_root_pem(&pem).map_err(|e| e.to_string())?;
    }
    Ok(cred)
}
