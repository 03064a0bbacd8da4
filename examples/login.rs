//! Checks an IMAP credential from the command line.
//!
//! ```text
//! EMAP_PASSWORD=... cargo run --example login -- --host imap.example.com \
//!     --user bot@example.com --password-env EMAP_PASSWORD [--port 993] \
//!     [--tls implicit|starttls|none] [--ca-file ca.pem] [--mailbox INBOX]
//! ```
//!
//! Exit status 0 when the server accepts the credential and the mailbox
//! opens; 1 with a one-line reason otherwise (2 for bad arguments). The
//! password is read from the named environment variable, never from the
//! command line, where `ps` would show it.

use std::process::ExitCode;

use emap::{Auth, Credential, TlsMode};

struct Args {
    host: String,
    port: Option<u16>,
    tls: TlsMode,
    ca_file: Option<String>,
    user: String,
    password_env: String,
    mailbox: String,
}

const USAGE: &str = "usage: login --host HOST [--port N] [--tls implicit|starttls|none] \
[--ca-file PATH] --user USER --password-env VAR [--mailbox NAME]";

fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut host, mut port, mut tls, mut ca_file, mut user, mut password_env, mut mailbox) = (
        None,
        None,
        TlsMode::Implicit,
        None,
        None,
        None,
        "INBOX".to_owned(),
    );
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--host" => host = Some(value()?),
            "--port" => {
                port = Some(
                    value()?
                        .parse()
                        .map_err(|_| "--port needs a number".to_owned())?,
                )
            }
            "--tls" => {
                tls = match value()?.as_str() {
                    "implicit" => TlsMode::Implicit,
                    "starttls" => TlsMode::StartTls,
                    "none" => TlsMode::None,
                    other => return Err(format!("unknown --tls mode {other:?}")),
                }
            }
            "--ca-file" => ca_file = Some(value()?),
            "--user" => user = Some(value()?),
            "--password-env" => password_env = Some(value()?),
            "--mailbox" => mailbox = value()?,
            "--password" => return Err("--password is not accepted: use --password-env VAR".into()),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        host: host.ok_or("--host is required")?,
        port,
        tls,
        ca_file,
        user: user.ok_or("--user is required")?,
        password_env: password_env.ok_or("--password-env is required")?,
        mailbox,
    })
}

fn credential(args: &Args) -> Result<Credential, String> {
    let password = std::env::var(&args.password_env)
        .map_err(|_| format!("environment variable {} is not set", args.password_env))?;
    let default_port = match args.tls {
        TlsMode::Implicit => 993,
        _ => 143,
    };
    let mut cred = Credential::new(&args.host, &args.user, Auth::password(password))
        .port(args.port.unwrap_or(default_port))
        .tls(args.tls)
        .mailbox(&args.mailbox);
    if let Some(path) = &args.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        cred = cred.add_root_pem(&pem).map_err(|e| e.to_string())?;
    }
    Ok(cred)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let cred = match credential(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    match emap::test_login(&cred).await {
        Ok(()) => {
            println!("ok: {} can log in and open {}", args.user, args.mailbox);
            ExitCode::SUCCESS
        }
        Err(e) => {
            let kind = if e.is_transient() {
                "transient"
            } else {
                "permanent"
            };
            eprintln!("error ({kind}): {e}");
            ExitCode::from(1)
        }
    }
}
