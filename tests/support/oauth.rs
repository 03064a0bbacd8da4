//! A small OAuth2 authorization server for the test Dovecot: it issues,
//! expires and revokes bearer tokens, and answers Dovecot's `oauth2`
//! passdb when it asks whether a token is good (token introspection).
//!
//! Why: XOAUTH2 and OAUTHBEARER must be proven against a real server's
//! SASL, not only a state machine and a script. Dovecot validates a token
//! by an HTTP request to `introspection_url`; with `introspection_mode =
//! auth` that is `GET <url>` with `Authorization: Bearer <token>`, and the
//! answer is a JSON object. This endpoint answers `{"active": true,
//! "username": "<user>"}` for a live token and `{"active": false}` for an
//! expired, revoked or unknown one (the passdb checks `active_attribute =
//! active`, `active_value = true`, so Dovecot fails the login — a
//! permanent failure, not the temporary one an HTTP error would give).
//!
//! It is plain HTTP/1.1 on 127.0.0.1, one request per connection
//! (`Connection: close`), on a thread of the test process; it lives as
//! long as the process, like the Dovecot it serves.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a token is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenState {
    Active,
    Expired,
    Revoked,
}

#[derive(Debug)]
struct Token {
    user: String,
    state: TokenState,
    /// How often Dovecot asked about it.
    introspections: usize,
}

#[derive(Debug, Default)]
struct Tokens {
    by_value: HashMap<String, Token>,
    /// Requests whose token was not one we issued.
    unknown: usize,
}

/// The authorization server: see the module docs.
#[derive(Debug, Clone)]
pub struct OAuthServer {
    port: u16,
    tokens: Arc<Mutex<Tokens>>,
}

impl OAuthServer {
    /// Listens on a free port of 127.0.0.1 and serves on a thread.
    pub fn start() -> std::io::Result<OAuthServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let server = OAuthServer {
            port: listener.local_addr()?.port(),
            tokens: Arc::default(),
        };
        let tokens = server.tokens.clone();
        std::thread::Builder::new()
            .name("oauth-introspection".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let tokens = tokens.clone();
                    std::thread::spawn(move || serve(stream, &tokens));
                }
            })?;
        Ok(server)
    }

    /// The URL for Dovecot's `introspection_url`.
    pub fn introspection_url(&self) -> String {
        format!("http://127.0.0.1:{}/introspect", self.port)
    }

    /// A fresh, active token for `user`.
    pub fn issue(&self, user: &str) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let token = format!("tok-{}-{n}-{nonce:08x}", std::process::id());
        super::trace::record_token(user, &token);
        self.lock().by_value.insert(
            token.clone(),
            Token {
                user: user.to_owned(),
                state: TokenState::Active,
                introspections: 0,
            },
        );
        token
    }

    /// The token's lifetime is over: introspection says inactive.
    pub fn expire(&self, token: &str) {
        self.set(token, TokenState::Expired);
    }

    /// The token was revoked: introspection says inactive.
    pub fn revoke(&self, token: &str) {
        self.set(token, TokenState::Revoked);
    }

    /// How often Dovecot asked about `token`.
    pub fn introspections(&self, token: &str) -> usize {
        self.lock()
            .by_value
            .get(token)
            .map_or(0, |t| t.introspections)
    }

    /// Requests that carried a token this server never issued.
    pub fn unknown_requests(&self) -> usize {
        self.lock().unknown
    }

    fn set(&self, token: &str, state: TokenState) {
        if let Some(t) = self.lock().by_value.get_mut(token) {
            t.state = state;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tokens> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Answers one request on `stream`, then closes it.
fn serve(stream: TcpStream, tokens: &Mutex<Tokens>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(&stream);
    let mut bearer = None;
    let mut first = true;
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if first {
            first = false;
            if !l.starts_with("GET /introspect") {
                let _ = respond(&stream, "404 Not Found", "{}");
                return;
            }
            continue;
        }
        if let Some((name, value)) = l.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
        {
            bearer = value.trim().strip_prefix("Bearer ").map(str::to_owned);
        }
    }
    let body = {
        let mut t = tokens.lock().unwrap_or_else(|e| e.into_inner());
        match bearer.as_deref().and_then(|b| t.by_value.get_mut(b)) {
            Some(token) => {
                token.introspections += 1;
                if token.state == TokenState::Active {
                    format!(r#"{{"active": true, "username": "{}"}}"#, token.user)
                } else {
                    r#"{"active": false}"#.to_owned()
                }
            }
            None => {
                t.unknown += 1;
                r#"{"active": false}"#.to_owned()
            }
        }
    };
    let _ = respond(&stream, "200 OK", &body);
}

fn respond(mut stream: &TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
