//! One live IMAP connection: the async driver around the protocol state
//! machine.
//!
//! It moves bytes between the [`Stream`] and the [`Client`] state machine,
//! sleeps until the machine's next deadline, and runs the start-up flow:
//! dial, TLS or STARTTLS, greeting, capabilities, authentication. It holds
//! no policy of its own beyond that flow; the session decides what to do
//! with the connection.

use std::collections::VecDeque;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Error;
use crate::config::Config;
use crate::credential::{Auth, Credential, OAuthMechanism, Secret, TlsMode};
use crate::error::is_refusal;
use crate::proto::client::{
    Client, CommandKind, Completion, Event, Greeting, Mechanism, SelectInfo,
};
use crate::proto::{ProtoError, Status};
use crate::transport::{self, Stream, Tls};

/// The most events kept aside while waiting for a command's completion. A
/// server that floods untagged data past this is broken or hostile.
const MAX_UNSOLICITED: usize = 100_000;

/// How many bytes one read takes from the socket.
const READ_CHUNK: usize = 16 * 1024;

/// The current time on tokio's clock (virtual under `tokio::time::pause`).
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// A connected, authenticated IMAP connection.
pub(crate) struct Connection {
    stream: Stream,
    client: Client,
    rx: Box<[u8]>,
    unsolicited: VecDeque<Event>,
    /// Bytes taken from the machine and not yet written: kept here so that
    /// a cancelled write (the IDLE loop selects on its orders) loses none.
    out: Vec<u8>,
    out_pos: usize,
    /// Approximate bytes held in `unsolicited`, and their ceiling.
    kept_bytes: usize,
    kept_budget: usize,
    /// Bytes read from the socket so far (for statistics and benchmarks).
    bytes_read: u64,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("client", &self.client)
            .field("bytes_read", &self.bytes_read)
            .finish_non_exhaustive()
    }
}

/// A connection the server greeted (OK or PREAUTH), not yet logged in:
/// what [`Connection::greet`] returns.
#[derive(Debug)]
pub(crate) struct Greeted {
    conn: Connection,
    greeting: Greeting,
}

impl Greeted {
    /// Logs out without logging in: a session told to end while it was
    /// connecting (its linger ended) need not authenticate first.
    pub(crate) async fn logout(self) -> Result<(), Error> {
        self.conn.logout().await
    }

    /// STARTTLS (when the credential asks for it), authentication (unless
    /// PREAUTH) and the capabilities: the rest of the start-up.
    pub(crate) async fn log_in(
        self,
        cred: &Credential,
        cfg: &Config,
        tls: Option<&Tls>,
    ) -> Result<Connection, Error> {
        let Greeted { mut conn, greeting } = self;
        if cred.tls == TlsMode::StartTls {
            if greeting == Greeting::Preauth {
                return Err(Error::StartTlsUnavailable(
                    "server sent PREAUTH over plaintext".into(),
                ));
            }
            conn.starttls(cred, cfg, tls).await?;
        }
        if greeting != Greeting::Preauth {
            conn.authenticate(cred, cfg).await?;
        }
        if conn.client.capabilities().is_none() {
            conn.command(|c, now| c.capability(now)).await?;
        }
        tracing::debug!(user = %cred.user, "authenticated");
        Ok(conn)
    }
}

impl Connection {
    /// The text of the server's greeting (see [`Client::greeting_text`]).
    pub(crate) fn greeting_text(&self) -> &str {
        self.client.greeting_text()
    }

    /// Dials, secures, reads the greeting and authenticates: [`Connection::greet`]
    /// then [`Greeted::log_in`].
    pub(crate) async fn open(
        cred: &Credential,
        cfg: &Config,
        tls: Option<&Tls>,
    ) -> Result<Connection, Error> {
        Connection::greet(cred, cfg, tls)
            .await?
            .log_in(cred, cfg, tls)
            .await
    }

    /// Dials, secures (implicit TLS) and reads the greeting: the part of
    /// the start-up in which a failure (an unknown host, a garbage or BYE
    /// greeting) speaks about the settings or the server's refusal of us.
    /// The session marks the boundary, so that its policy can tell a BYE
    /// greeting from a kick during the login.
    pub(crate) async fn greet(
        cred: &Credential,
        cfg: &Config,
        tls: Option<&Tls>,
    ) -> Result<Greeted, Error> {
        cred.validate()?;
        let tcp = transport::dial(&cred.host, cred.port, cfg.dial_timeout).await?;
        tracing::debug!(host = %cred.host, port = cred.port, "TCP connected");
        let stream = match (cred.tls, tls) {
            (TlsMode::Implicit, Some(tls)) => {
                tls.handshake(tcp, &cred.host, cfg.greeting_timeout).await?
            }
            (TlsMode::Implicit | TlsMode::StartTls, None) => {
                return Err(Error::InvalidConfig(
                    "TLS mode needs a TLS configuration".into(),
                ));
            }
            _ => Stream::Plain(tcp),
        };
        let mut conn = Connection {
            stream,
            client: Client::new(cfg.client_options(), now()),
            rx: vec![0u8; READ_CHUNK].into_boxed_slice(),
            unsolicited: VecDeque::new(),
            out: Vec::new(),
            out_pos: 0,
            kept_bytes: 0,
            kept_budget: cfg.max_line.saturating_add(cfg.max_literal),
            bytes_read: 0,
        };
        let greeting = conn.greeting().await?;
        Ok(Greeted { conn, greeting })
    }

    async fn greeting(&mut self) -> Result<Greeting, Error> {
        loop {
            while let Some(ev) = self.client.poll_event() {
                match ev {
                    Event::Greeted(Greeting::Bye { code, text }) => {
                        return Err(if is_refusal(code.as_ref(), &text) {
                            Error::Refused(text)
                        } else {
                            Error::Bye(text)
                        });
                    }
                    Event::Greeted(g) => return Ok(g),
                    other => self.keep(other)?,
                }
            }
            self.pump().await?;
        }
    }

    async fn starttls(
        &mut self,
        cred: &Credential,
        cfg: &Config,
        tls: Option<&Tls>,
    ) -> Result<(), Error> {
        if self.client.capabilities().is_none() {
            self.command(|c, now| c.capability(now)).await?;
        }
        if !self.client.has_capability("STARTTLS") {
            return Err(Error::StartTlsUnavailable(
                "the server does not offer STARTTLS".into(),
            ));
        }
        let done = self.run(|c, now| c.starttls(now)).await?;
        if done.status != Status::Ok {
            return Err(Error::StartTlsUnavailable(format!(
                "the server refused STARTTLS: {}",
                done.text
            )));
        }
        if !self.unsolicited.is_empty() || self.client.poll_event().is_some() {
            // Anything after the OK and before the handshake was injected
            // in plaintext (CVE-2011-0411 style): refuse.
            return Err(
                ProtoError::Violation("data after STARTTLS OK before the TLS handshake").into(),
            );
        }
        let Some(tls) = tls else {
            return Err(Error::InvalidConfig(
                "TLS mode needs a TLS configuration".into(),
            ));
        };
        let Some(tcp) = self.stream.take_plain() else {
            return Err(Error::InvalidConfig("STARTTLS on a TLS stream".into()));
        };
        self.stream = tls.handshake(tcp, &cred.host, cfg.greeting_timeout).await?;
        self.client.after_starttls(now());
        tracing::debug!("STARTTLS done");
        Ok(())
    }

    /// Logs in with the credential's password or OAuth2 token. The token
    /// provider is the caller's code and may never answer: it gets
    /// `command_timeout`, like a command, and its expiry is the transient
    /// `Timeout("OAuth2 token")`, so the session retries with backoff.
    async fn authenticate(&mut self, cred: &Credential, cfg: &Config) -> Result<(), Error> {
        if self.client.capabilities().is_none() {
            self.command(|c, now| c.capability(now)).await?;
        }
        let host_port = (cred.host.as_str(), cred.port);
        // What was sent, to scrub from the server's answer: a server that
        // echoes it must not put it into an error.
        let sent: Secret;
        let done = match &cred.auth {
            Auth::Password(password) => {
                sent = password.clone();
                if self.client.has_capability("AUTH=PLAIN") {
                    let p = password.expose();
                    self.run(|c, now| c.authenticate(Mechanism::Plain, &cred.user, p, None, now))
                        .await?
                } else if self.client.has_capability("LOGINDISABLED") {
                    return Err(Error::NoAuthMethod(
                        "the server advertises LOGINDISABLED and no AUTH=PLAIN".into(),
                    ));
                } else {
                    let p = password.expose();
                    self.run(|c, now| c.login(&cred.user, p, now)).await?
                }
            }
            Auth::OAuth2 {
                mechanism,
                provider,
            } => {
                let (mech, cap) = match mechanism {
                    OAuthMechanism::XOAuth2 => (Mechanism::XOAuth2, "AUTH=XOAUTH2"),
                    OAuthMechanism::OAuthBearer => (Mechanism::OAuthBearer, "AUTH=OAUTHBEARER"),
                };
                if !self.client.has_capability(cap) {
                    return Err(Error::NoAuthMethod(format!(
                        "the server does not advertise {cap}"
                    )));
                }
                let token = tokio::time::timeout(cfg.command_timeout, provider())
                    .await
                    .map_err(|_| Error::Timeout("OAuth2 token"))?
                    .map_err(Error::Token)?;
                let t = token.expose();
                let done = self
                    .run(|c, now| c.authenticate(mech, &cred.user, t, Some(host_port), now))
                    .await?;
                sent = token;
                done
            }
        };
        if done.status == Status::Ok {
            return Ok(());
        }
        let scrub = |text: String| {
            let secret = sent.expose();
            if !secret.is_empty() && text.contains(secret) {
                text.replace(secret, "<redacted>")
            } else {
                text
            }
        };
        if is_refusal(done.code.as_ref(), &done.text) {
            return Err(Error::Refused(scrub(done.text)));
        }
        let mut reason = done.text;
        if let Some(sasl) = done.sasl_error {
            reason.push_str(" (");
            reason.push_str(&sasl);
            reason.push(')');
        }
        Err(Error::AuthenticationFailed(scrub(reason)))
    }

    /// SELECT (or EXAMINE when `read_only`) the mailbox.
    pub(crate) async fn select(
        &mut self,
        mailbox: &str,
        read_only: bool,
    ) -> Result<SelectInfo, Error> {
        let done = self
            .command(|c, now| c.select(mailbox, read_only, now))
            .await?;
        match done.data {
            crate::proto::client::CommandData::Selected(info) => Ok(info),
            _ => Err(ProtoError::Violation("SELECT completed without its data").into()),
        }
    }

    /// LOGOUT, tolerating a server that closes right after its BYE.
    pub(crate) async fn logout(mut self) -> Result<(), Error> {
        match self.run(|c, now| c.logout(now)).await {
            Ok(_) | Err(Error::Bye(_)) | Err(Error::Closed) => {}
            Err(e) => return Err(e),
        }
        let _ = self.stream.shutdown().await;
        Ok(())
    }

    /// Whether the server advertised `cap`.
    pub(crate) fn has_capability(&self, cap: &str) -> bool {
        self.client.has_capability(cap)
    }

    /// Bytes read from the socket since the connection opened.
    pub(crate) fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Runs a command that must succeed; NO and BAD become errors.
    pub(crate) async fn command(
        &mut self,
        start: impl FnOnce(&mut Client, Instant) -> Result<String, crate::proto::client::ClientError>,
    ) -> Result<Completion, Error> {
        let done = self.run(start).await?;
        if done.status == Status::Ok {
            return Ok(done);
        }
        Err(Error::CommandFailed {
            command: command_name(done.kind),
            temporary: is_refusal(done.code.as_ref(), &done.text),
            text: done.text,
        })
    }

    /// Starts a command and waits for its completion, whatever its status.
    /// Untagged data that arrives meanwhile is kept for
    /// [`Connection::next_event`].
    pub(crate) async fn run(
        &mut self,
        start: impl FnOnce(&mut Client, Instant) -> Result<String, crate::proto::client::ClientError>,
    ) -> Result<Completion, Error> {
        let tag = self.start(start)?;
        loop {
            while let Some(ev) = self.client.poll_event() {
                match ev {
                    Event::Completed(c) if c.tag == tag => return Ok(c),
                    other => self.keep(other)?,
                }
            }
            self.pump().await?;
        }
    }

    /// Starts a command without waiting; its events come from
    /// [`Connection::next_event`].
    pub(crate) fn start(
        &mut self,
        start: impl FnOnce(&mut Client, Instant) -> Result<String, crate::proto::client::ClientError>,
    ) -> Result<String, Error> {
        start(&mut self.client, now()).map_err(|e| match e {
            crate::proto::client::ClientError::Input(i) => Error::InvalidInput(i),
            crate::proto::client::ClientError::Failed(p) => Error::Protocol(p),
            crate::proto::client::ClientError::Misuse(m) => {
                Error::Protocol(ProtoError::Violation(m))
            }
        })
    }

    /// Starts a FETCH of `set` (UIDs when `uid`) that may return up to
    /// `messages` messages of at most `Config::max_message_size` bytes each;
    /// its events come from [`Connection::next_event`]. The command's
    /// overall deadline scales with the bytes it may carry.
    pub(crate) fn start_fetch(
        &mut self,
        uid: bool,
        set: &str,
        items: &str,
        messages: u32,
    ) -> Result<String, Error> {
        self.start(|c, now| c.fetch_sized(uid, set, items, messages, now))
    }

    /// Ends a running IDLE (no-op otherwise).
    pub(crate) fn done(&mut self) {
        self.client.done(now());
    }

    /// The next event: kept ones first, then whatever the server sends.
    pub(crate) async fn next_event(&mut self) -> Result<Event, Error> {
        loop {
            if let Some(ev) = self.unsolicited.pop_front() {
                self.kept_bytes = self.kept_bytes.saturating_sub(approx_size(&ev));
                return Ok(ev);
            }
            if let Some(ev) = self.client.poll_event() {
                return Ok(ev);
            }
            self.pump().await?;
        }
    }

    /// Keeps an event for later, within a count and a byte budget: a
    /// server may not park more than one response's worth of limits
    /// (`max_line + max_literal`) in untagged data while a command runs.
    fn keep(&mut self, ev: Event) -> Result<(), Error> {
        let size = approx_size(&ev);
        if self.unsolicited.len() >= MAX_UNSOLICITED || self.kept_bytes + size > self.kept_budget {
            return Err(ProtoError::Violation("server flooded untagged responses").into());
        }
        self.kept_bytes += size;
        self.unsolicited.push_back(ev);
        Ok(())
    }

    /// Sends what the machine has to send, then reads once or handles the
    /// machine's deadline.
    async fn pump(&mut self) -> Result<(), Error> {
        self.flush().await?;
        let deadline = self.client.poll_timeout();
        let read = self.stream.read(&mut self.rx);
        let n = match deadline {
            Some(d) => match tokio::time::timeout_at(tokio::time::Instant::from_std(d), read).await
            {
                Ok(r) => r?,
                Err(_) => {
                    self.client.handle_timeout(now())?;
                    return self.flush().await;
                }
            },
            None => read.await?,
        };
        if n == 0 {
            return Err(match self.client.bye() {
                Some(t) => Error::Bye(t.to_owned()),
                None => Error::Closed,
            });
        }
        self.bytes_read += n as u64;
        if let Some(tcp) = self.stream.tcp() {
            transport::quickack(tcp);
        }
        self.client.receive(&self.rx[..n], now())?;
        Ok(())
    }

    /// Writes what the machine has to send. Cancel-safe: progress is kept
    /// in `out_pos`, so a cancelled call loses no byte.
    async fn flush(&mut self) -> Result<(), Error> {
        while let Some(bytes) = self.client.poll_transmit() {
            self.out.extend_from_slice(&bytes);
        }
        if self.out.is_empty() {
            return Ok(());
        }
        while self.out_pos < self.out.len() {
            let n = self.stream.write(&self.out[self.out_pos..]).await?;
            if n == 0 {
                return Err(Error::Closed);
            }
            self.out_pos += n;
        }
        self.out.clear();
        self.out_pos = 0;
        self.stream.flush().await?;
        Ok(())
    }
}

/// Roughly what an event holds in memory: its literal bodies plus a fixed
/// overhead.
fn approx_size(ev: &Event) -> usize {
    const OVERHEAD: usize = 64;
    match ev {
        Event::Data(crate::proto::Data::Fetch(f)) => f
            .items
            .iter()
            .map(|i| match i {
                crate::proto::FetchItem::Body { data: Some(d), .. } => d.len(),
                _ => 16,
            })
            .sum::<usize>()
            .saturating_add(OVERHEAD),
        _ => OVERHEAD,
    }
}

fn command_name(kind: CommandKind) -> &'static str {
    match kind {
        CommandKind::Capability => "CAPABILITY",
        CommandKind::StartTls => "STARTTLS",
        CommandKind::Login => "LOGIN",
        CommandKind::Authenticate(_) => "AUTHENTICATE",
        CommandKind::Select => "SELECT",
        CommandKind::Status => "STATUS",
        CommandKind::Noop => "NOOP",
        CommandKind::Idle => "IDLE",
        CommandKind::Fetch => "FETCH",
        CommandKind::Search => "UID SEARCH",
        CommandKind::List => "LIST",
        CommandKind::Notify => "NOTIFY",
        CommandKind::Logout => "LOGOUT",
    }
}
