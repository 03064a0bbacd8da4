//! The [`Credential`] the connection flags describe, shared by `login` and
//! `watch`.
//!
//! Secrets come only from environment variables (a command line is visible
//! through `ps`); the errors name the variable, never its value.

use emap::{Auth, Credential, Secret, TlsMode};

use crate::args::{ConnArgs, TlsFlag};

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
pub(crate) fn credential(c: &ConnArgs) -> Result<Credential, String> {
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
    for folder in &c.also_watch {
        cred = cred.also_watch(folder.clone());
    }
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
