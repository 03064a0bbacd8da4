//! The client side of one IMAP connection, as a state machine with no I/O.
//!
//! Bytes from the server go in through [`Client::receive`]; the bytes to send
//! come out of [`Client::poll_transmit`]; what happened comes out of
//! [`Client::poll_event`]; the next deadline comes out of
//! [`Client::poll_timeout`] and is acted on by [`Client::handle_timeout`].
//! The current time is always passed in, so every timeout is testable
//! without waiting.
//!
//! One command is in flight at a time: emap's session is sequential, and
//! this keeps the responses of a command unambiguous. Untagged data that is
//! not part of the running command's result (EXISTS, EXPUNGE, BYE, ALERT,
//! FETCH, ...) is surfaced as an [`Event::Data`] whenever it arrives —
//! during IDLE, inside a FETCH response or inside another command's
//! response — and is never dropped.
//!
//! Timeouts:
//! - no greeting within `greeting_timeout` → [`ProtoError::Timeout`];
//! - no byte for `command_timeout` while a command runs → the link is
//!   presumed dead → [`ProtoError::Timeout`];
//! - a command not complete by its overall deadline → the server is too
//!   slow (trickling bytes keeps the inactivity timer away forever) →
//!   `ProtoError::Timeout(`[`DEADLINE_EXPIRED`]`)`. The deadline starts
//!   with the command: `command_timeout` plus the bytes the command may
//!   legitimately carry at `min_transfer_rate` — for a FETCH, `messages ×
//!   (max_message_size + max_line)`, for any other command `max_line`;
//! - during IDLE, no byte for `idle_inactivity`, or `idle_round` elapsed →
//!   the machine sends `DONE` itself; the server must then answer within
//!   `command_timeout`. IDLE has no overall deadline while it idles (its
//!   round bounds it); the `DONE` exchange gets one, from `DONE`.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::encode::{CommandBuilder, Encoded, InputError, LiteralMode};
use super::{
    Code, Condition, Data, Limits, ListEntry, Parser, ProtoError, Response, Status, Tagged,
};

/// Timeouts and limits of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Parser limits.
    pub limits: Limits,
    /// How long to wait for the greeting.
    pub greeting_timeout: Duration,
    /// How long a running command may go without a byte from the server.
    pub command_timeout: Duration,
    /// How long IDLE may go without a byte before the client ends it with
    /// DONE to check the link.
    pub idle_inactivity: Duration,
    /// How long one IDLE command may last before it is re-issued.
    pub idle_round: Duration,
    /// The most bytes of one message a FETCH returns (the `<0.max>` partial
    /// fetch emap asks for). With `limits.max_line`, what one fetched
    /// message may carry towards a FETCH's overall deadline.
    pub max_message_size: usize,
    /// The slowest transfer a command may make, in bytes per second: its
    /// overall deadline is `command_timeout` plus the bytes it may carry at
    /// this rate. 0 disables overall deadlines (inactivity only).
    pub min_transfer_rate: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            limits: Limits::default(),
            greeting_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(30),
            idle_inactivity: Duration::from_secs(5 * 60),
            idle_round: Duration::from_secs(25 * 60),
            max_message_size: 25 * 1024 * 1024,
            min_transfer_rate: 16 * 1024,
        }
    }
}

/// The connection's protocol state (RFC 3501 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for the server's greeting.
    Greeting,
    /// Greeted, not logged in.
    NotAuthenticated,
    /// Logged in, no mailbox selected.
    Authenticated,
    /// A mailbox is selected.
    Selected,
    /// LOGOUT sent or BYE received.
    Logout,
}

/// What the server greeted with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Greeting {
    /// `* OK`: log in next.
    Ok,
    /// `* PREAUTH`: already authenticated.
    Preauth,
    /// `* BYE`: the server refuses the connection (e.g. too many).
    Bye {
        /// The response code, if any.
        code: Option<Code>,
        /// The server's text.
        text: String,
    },
}

/// The kind of a command, as reported in its [`Completion`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    /// CAPABILITY.
    Capability,
    /// STARTTLS.
    StartTls,
    /// LOGIN.
    Login,
    /// AUTHENTICATE with the named mechanism.
    Authenticate(Mechanism),
    /// SELECT or EXAMINE.
    Select,
    /// STATUS.
    Status,
    /// NOOP.
    Noop,
    /// IDLE (completes after DONE).
    Idle,
    /// FETCH or UID FETCH.
    Fetch,
    /// UID SEARCH.
    Search,
    /// LIST.
    List,
    /// NOTIFY (RFC 5465).
    Notify,
    /// LOGOUT.
    Logout,
}

/// A SASL mechanism the client can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// PLAIN (RFC 4616).
    Plain,
    /// XOAUTH2 (Google, Microsoft).
    XOAuth2,
    /// OAUTHBEARER (RFC 7628).
    OAuthBearer,
}

impl Mechanism {
    /// The mechanism's IMAP name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::XOAuth2 => "XOAUTH2",
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }
}

/// What SELECT or EXAMINE reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectInfo {
    /// `* n EXISTS`.
    pub exists: u32,
    /// `[UIDNEXT n]`, if the server sent it.
    pub uid_next: Option<u32>,
    /// `[UIDVALIDITY n]`, if the server sent it.
    pub uid_validity: Option<u32>,
    /// `[READ-ONLY]` on the completion.
    pub read_only: bool,
    /// `[HIGHESTMODSEQ n]` (CONDSTORE).
    pub highest_modseq: Option<u64>,
    /// An `* n EXISTS` after `[UIDNEXT]` raised the count an earlier EXISTS
    /// of the response gave: mail arrived while the command was answered,
    /// after UIDNEXT was reported, so UIDNEXT is only a lower bound (the
    /// new message's UID is at least UIDNEXT, yet it is counted in
    /// `exists`).
    pub uid_next_stale: bool,
}

/// Data gathered for the running command and handed over on completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandData {
    /// Nothing beyond the status.
    None,
    /// SELECT / EXAMINE.
    Selected(SelectInfo),
    /// UID SEARCH results (from SEARCH or ESEARCH ALL), in server order.
    Search(Vec<u32>),
    /// STATUS items, names upper-cased.
    Status(Vec<(String, u64)>),
    /// LIST responses, in server order.
    List {
        /// The mailboxes listed, at most [`MAX_LIST_ENTRIES`] holding at
        /// most `max_line + max_literal` bytes of names and attributes.
        entries: Vec<ListEntry>,
        /// How many more the server listed past those bounds (dropped).
        dropped: u32,
    },
}

/// A command's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The tag it ran under.
    pub tag: String,
    /// Which command.
    pub kind: CommandKind,
    /// OK, NO or BAD.
    pub status: Status,
    /// The response code of the tagged response.
    pub code: Option<Code>,
    /// The text of the tagged response.
    pub text: String,
    /// What the command gathered.
    pub data: CommandData,
    /// For a failed AUTHENTICATE: the server's error challenge, decoded
    /// (RFC 7628 §3.2.2 JSON for OAUTHBEARER and XOAUTH2).
    pub sasl_error: Option<String>,
}

/// Something that happened on the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The greeting arrived.
    Greeted(Greeting),
    /// Untagged data not consumed by the running command.
    Data(Data),
    /// The server accepted IDLE (`+`); changes are pushed from now on.
    IdleStarted,
    /// The client ended IDLE by itself (inactivity or the round elapsed).
    IdleDoneSent,
    /// A command completed.
    Completed(Completion),
    /// A server response did not parse and was skipped (the stream is
    /// still in sync): whatever it carried is unknown.
    Malformed,
}

/// Misuse of the state machine, or an input that cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A user-supplied value cannot be sent.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The connection already failed.
    #[error(transparent)]
    Failed(#[from] ProtoError),
    /// The command does not fit the current state (a bug in the caller).
    #[error("command not allowed now: {0}")]
    Misuse(&'static str),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SaslStep {
    /// No initial response sent yet (no SASL-IR).
    Initial,
    /// The initial response was sent; a `+` now is an error challenge.
    Sent,
    /// The error challenge was answered; the tagged NO follows.
    Aborted,
}

struct Sasl {
    mechanism: Mechanism,
    initial: Vec<u8>,
    step: SaslStep,
    error: Option<String>,
}

struct Pending {
    tag: String,
    kind: CommandKind,
    /// Parts still waiting for a `+` (synchronizing literals).
    parts: VecDeque<Vec<u8>>,
    sasl: Option<Sasl>,
    select: Option<SelectInfo>,
    /// An `* n EXISTS` came in the SELECT response so far.
    select_exists_seen: bool,
    search: Vec<u32>,
    status: Vec<(String, u64)>,
    /// The mailbox a STATUS asked about, as the parser shows a name: only
    /// its `* STATUS` belongs to the command (with NOTIFY, others arrive
    /// unsolicited and are surfaced).
    status_of: Option<String>,
    list: Vec<ListEntry>,
    /// Bytes of names and attributes gathered in `list`.
    list_bytes: usize,
    /// LIST responses dropped past the bounds.
    list_dropped: u32,
    idle: Option<Idle>,
    /// When the command must be complete, whatever its progress (`None`
    /// while IDLE idles, or when the budget is unknown or unbounded).
    deadline: Option<Instant>,
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Parts and SASL payloads may hold secrets: never shown.
        f.debug_struct("Pending")
            .field("tag", &self.tag)
            .field("kind", &self.kind)
            .field("parts_waiting", &self.parts.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy)]
struct Idle {
    accepted: bool,
    done_sent: bool,
    started: Instant,
}

/// The client state machine of one connection.
pub struct Client {
    opts: Options,
    parser: Parser,
    out: Vec<u8>,
    tag_seq: u32,
    state: State,
    caps: Option<Vec<String>>,
    /// The text of the OK or PREAUTH greeting (names the server software).
    greeting_text: String,
    pending: Option<Pending>,
    events: VecDeque<Event>,
    greeting_deadline: Option<Instant>,
    last_rx: Instant,
    failed: Option<ProtoError>,
    bye: Option<String>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("state", &self.state)
            .field("pending", &self.pending)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A new connection, created at `now`, waiting for the greeting.
    pub fn new(opts: Options, now: Instant) -> Self {
        Client {
            opts,
            parser: Parser::new(opts.limits),
            out: Vec::new(),
            tag_seq: 0,
            state: State::Greeting,
            caps: None,
            greeting_text: String::new(),
            pending: None,
            events: VecDeque::new(),
            greeting_deadline: Some(now + opts.greeting_timeout),
            last_rx: now,
            failed: None,
            bye: None,
        }
    }

    /// A new connection that continues after STARTTLS (or after any other
    /// upgrade of the byte stream): already greeted, capabilities forgotten,
    /// tags continuing.
    pub fn after_starttls(&mut self, now: Instant) {
        self.parser = Parser::new(self.opts.limits);
        self.caps = None;
        self.last_rx = now;
    }

    /// The protocol state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The human-readable text of the server's OK or PREAUTH greeting
    /// (empty before it): it often names the server software.
    pub fn greeting_text(&self) -> &str {
        &self.greeting_text
    }

    /// The server's capabilities, upper-cased, if known. They are forgotten
    /// after STARTTLS and after logging in unless the server sent them again.
    pub fn capabilities(&self) -> Option<&[String]> {
        self.caps.as_deref()
    }

    /// Whether the server advertised `cap` (case-insensitive).
    pub fn has_capability(&self, cap: &str) -> bool {
        self.caps
            .as_ref()
            .is_some_and(|c| c.iter().any(|x| x.eq_ignore_ascii_case(cap)))
    }

    /// Whether a command is running.
    pub fn is_busy(&self) -> bool {
        self.pending.is_some()
    }

    /// Whether IDLE is running and accepted by the server.
    pub fn is_idling(&self) -> bool {
        self.pending
            .as_ref()
            .and_then(|p| p.idle)
            .is_some_and(|i| i.accepted && !i.done_sent)
    }

    /// The text of a `* BYE` the server sent, if any.
    pub fn bye(&self) -> Option<&str> {
        self.bye.as_deref()
    }

    /// The error that ended the connection, if any.
    pub fn error(&self) -> Option<&ProtoError> {
        self.failed.as_ref()
    }

    /// Bytes to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.out.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.out))
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Feeds bytes received from the server at `now`. An error ends the
    /// connection: every later call returns it again.
    pub fn receive(&mut self, bytes: &[u8], now: Instant) -> Result<(), ProtoError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if !bytes.is_empty() {
            self.last_rx = now;
        }
        self.parser.feed(bytes);
        loop {
            match self.parser.next() {
                Ok(Some(resp)) => {
                    if let Err(e) = self.handle(resp, now) {
                        return Err(self.fail(e));
                    }
                }
                Ok(None) => return Ok(()),
                Err(ProtoError::Syntax { excerpt, .. }) if self.state == State::Greeting => {
                    // Not IMAP at all (an SMTP banner, binary noise): say so
                    // now rather than wait out the greeting timeout.
                    return Err(self.fail(ProtoError::BadGreeting(excerpt)));
                }
                Err(e) if e.is_recoverable() => {
                    // A malformed response the stream survived: skip it; the
                    // link itself is fine. Say so, so that whoever tracks
                    // what the running command returned knows it is
                    // incomplete.
                    tracing::warn!(error = %e, "skipping malformed server response");
                    self.events.push_back(Event::Malformed);
                }
                Err(e) => return Err(self.fail(e)),
            }
        }
    }

    /// The next moment [`Client::handle_timeout`] must be called, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.failed.is_some() {
            return None;
        }
        if let Some(d) = self.greeting_deadline {
            return Some(d);
        }
        let p = self.pending.as_ref()?;
        match p.idle {
            Some(i) if i.accepted && !i.done_sent => Some(std::cmp::min(
                self.last_rx + self.opts.idle_inactivity,
                i.started + self.opts.idle_round,
            )),
            _ => {
                let inactivity = self.last_rx + self.opts.command_timeout;
                Some(p.deadline.map_or(inactivity, |d| d.min(inactivity)))
            }
        }
    }

    /// Acts on the deadline: fails the connection on a greeting or command
    /// timeout (inactivity or the command's overall deadline), ends IDLE
    /// with DONE when it was quiet or long enough.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ProtoError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let Some(deadline) = self.poll_timeout() else {
            return Ok(());
        };
        if now < deadline {
            return Ok(());
        }
        if self.greeting_deadline.is_some() {
            return Err(self.fail(ProtoError::Timeout("greeting")));
        }
        if self.is_idling() {
            self.send_done(now);
            self.events.push_back(Event::IdleDoneSent);
            return Ok(());
        }
        let overall = self.pending.as_ref().and_then(|p| p.deadline);
        if overall.is_some_and(|d| now >= d) {
            return Err(self.fail(ProtoError::Timeout(DEADLINE_EXPIRED)));
        }
        Err(self.fail(ProtoError::Timeout("command response")))
    }

    fn fail(&mut self, e: ProtoError) -> ProtoError {
        self.failed = Some(e.clone());
        self.state = State::Logout;
        e
    }

    fn literal_mode(&self) -> LiteralMode {
        LiteralMode {
            plus: self.has_capability("LITERAL+"),
            minus: self.has_capability("LITERAL-"),
        }
    }

    fn next_tag(&mut self) -> String {
        self.tag_seq = self.tag_seq.wrapping_add(1);
        format!("A{}", self.tag_seq)
    }

    fn check_ready(&self, allowed: &[State]) -> Result<(), ClientError> {
        if let Some(e) = &self.failed {
            return Err(ClientError::Failed(e.clone()));
        }
        if self.pending.is_some() {
            return Err(ClientError::Misuse("another command is running"));
        }
        if !allowed.contains(&self.state) {
            return Err(ClientError::Misuse("wrong protocol state"));
        }
        Ok(())
    }

    /// The overall deadline of a command started (or a DONE sent) at `now`
    /// that may carry `budget` bytes: `command_timeout` plus the budget at
    /// `min_transfer_rate`. `None` (no overall deadline) when the rate is 0
    /// or the moment is beyond what `Instant` can represent.
    fn overall_deadline(&self, now: Instant, budget: u64) -> Option<Instant> {
        let rate = u128::try_from(self.opts.min_transfer_rate).ok()?;
        if rate == 0 {
            return None;
        }
        let nanos = u128::from(budget) * 1_000_000_000 / rate;
        let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
        let transfer = Duration::new(secs, (nanos % 1_000_000_000) as u32);
        now.checked_add(self.opts.command_timeout)?
            .checked_add(transfer)
    }

    /// What a command other than FETCH may carry: one line's worth.
    fn line_budget(&self) -> u64 {
        u64::try_from(self.opts.limits.max_line).unwrap_or(u64::MAX)
    }

    fn start(&mut self, kind: CommandKind, enc: Encoded, tag: String, now: Instant) -> String {
        let mut parts: VecDeque<Vec<u8>> = enc.parts.into();
        if let Some(first) = parts.pop_front() {
            self.out.extend_from_slice(&first);
        }
        self.last_rx = now;
        let deadline = self.overall_deadline(now, self.line_budget());
        self.pending = Some(Pending {
            tag: tag.clone(),
            kind,
            parts,
            sasl: None,
            select: None,
            select_exists_seen: false,
            search: Vec::new(),
            status: Vec::new(),
            status_of: None,
            list: Vec::new(),
            list_bytes: 0,
            list_dropped: 0,
            idle: None,
            deadline,
        });
        tag
    }

    fn simple(
        &mut self,
        kind: CommandKind,
        name: &str,
        allowed: &[State],
        now: Instant,
    ) -> Result<String, ClientError> {
        self.check_ready(allowed)?;
        let tag = self.next_tag();
        let enc = CommandBuilder::new(self.literal_mode(), &tag, name).finish();
        Ok(self.start(kind, enc, tag, now))
    }

    /// `CAPABILITY`.
    pub fn capability(&mut self, now: Instant) -> Result<String, ClientError> {
        self.simple(CommandKind::Capability, "CAPABILITY", ANY_STATE, now)
    }

    /// `STARTTLS`. On its OK the caller upgrades the stream and calls
    /// [`Client::after_starttls`].
    pub fn starttls(&mut self, now: Instant) -> Result<String, ClientError> {
        self.simple(
            CommandKind::StartTls,
            "STARTTLS",
            &[State::NotAuthenticated],
            now,
        )
    }

    /// `LOGIN user password`. Refused when the server advertised
    /// LOGINDISABLED.
    pub fn login(
        &mut self,
        user: &str,
        password: &str,
        now: Instant,
    ) -> Result<String, ClientError> {
        self.check_ready(&[State::NotAuthenticated])?;
        if self.has_capability("LOGINDISABLED") {
            return Err(ClientError::Misuse("the server advertises LOGINDISABLED"));
        }
        let tag = self.next_tag();
        let enc = CommandBuilder::new(self.literal_mode(), &tag, "LOGIN")
            .string("user name", user.as_bytes())?
            .string("password", password.as_bytes())?
            .finish();
        Ok(self.start(CommandKind::Login, enc, tag, now))
    }

    /// `AUTHENTICATE <mechanism>` with the initial response built from the
    /// user name and the password (PLAIN) or bearer token (XOAUTH2,
    /// OAUTHBEARER). The initial response goes with the command when the
    /// server advertised SASL-IR, otherwise after the first `+`.
    pub fn authenticate(
        &mut self,
        mechanism: Mechanism,
        user: &str,
        secret: &str,
        host_port: Option<(&str, u16)>,
        now: Instant,
    ) -> Result<String, ClientError> {
        self.check_ready(&[State::NotAuthenticated])?;
        super::encode::check_value("user name", user.as_bytes())?;
        let field = match mechanism {
            Mechanism::Plain => "password",
            _ => "token",
        };
        super::encode::check_value(field, secret.as_bytes())?;
        if mechanism != Mechanism::Plain && (user.contains('\x01') || secret.contains('\x01')) {
            return Err(InputError {
                field,
                reason: "contains the SASL separator 0x01",
            }
            .into());
        }
        let payload: Vec<u8> = match mechanism {
            Mechanism::Plain => {
                let mut p = Vec::with_capacity(user.len() + secret.len() + 2);
                p.push(0);
                p.extend_from_slice(user.as_bytes());
                p.push(0);
                p.extend_from_slice(secret.as_bytes());
                p
            }
            Mechanism::XOAuth2 => {
                format!("user={user}\x01auth=Bearer {secret}\x01\x01").into_bytes()
            }
            Mechanism::OAuthBearer => {
                // GS2 authzid: ',' and '=' are escaped (RFC 5801).
                let authzid = user.replace('=', "=3D").replace(',', "=2C");
                let mut s = format!("n,a={authzid},");
                if let Some((host, port)) = host_port {
                    s.push_str(&format!("\x01host={host}\x01port={port}"));
                }
                s.push_str(&format!("\x01auth=Bearer {secret}\x01\x01"));
                s.into_bytes()
            }
        };
        let initial = B64.encode(payload).into_bytes();
        let tag = self.next_tag();
        let sasl_ir = self.has_capability("SASL-IR");
        let mut b =
            CommandBuilder::new(self.literal_mode(), &tag, "AUTHENTICATE").raw(mechanism.name());
        let step = if sasl_ir {
            // An empty initial response is sent as "=" (RFC 4959).
            let ir = if initial.is_empty() {
                "=".to_owned()
            } else {
                String::from_utf8_lossy(&initial).into_owned()
            };
            b = b.raw(&ir);
            SaslStep::Sent
        } else {
            SaslStep::Initial
        };
        let enc = b.finish();
        self.start(CommandKind::Authenticate(mechanism), enc, tag.clone(), now);
        if let Some(p) = self.pending.as_mut() {
            p.sasl = Some(Sasl {
                mechanism,
                initial,
                step,
                error: None,
            });
        }
        Ok(tag)
    }

    /// `SELECT mailbox`, or `EXAMINE mailbox` when `read_only`: the name
    /// as [`encode::wire_mailbox`](super::encode::wire_mailbox) puts it on
    /// the wire.
    pub fn select(
        &mut self,
        mailbox: &str,
        read_only: bool,
        now: Instant,
    ) -> Result<String, ClientError> {
        let raw = super::encode::wire_mailbox(mailbox)?;
        self.select_listed(&raw, read_only, now)
    }

    /// [`Client::select`] of a mailbox by the name as the server listed it
    /// (`ListEntry::raw_name`: modified UTF-7, or UTF-8 on a server that
    /// sends it), sent back byte for byte as an atom, quoted string or
    /// literal, never re-encoded. An empty name, or one holding CR, LF or
    /// NUL, is refused.
    pub fn select_listed(
        &mut self,
        raw_name: &[u8],
        read_only: bool,
        now: Instant,
    ) -> Result<String, ClientError> {
        self.check_mailboxes(&[raw_name])?;
        let tag = self.next_tag();
        let name = if read_only { "EXAMINE" } else { "SELECT" };
        let enc = CommandBuilder::new(self.literal_mode(), &tag, name)
            .string("mailbox", raw_name)?
            .finish();
        let tag = self.start(CommandKind::Select, enc, tag, now);
        if let Some(p) = self.pending.as_mut() {
            p.select = Some(SelectInfo {
                read_only,
                ..SelectInfo::default()
            });
        }
        Ok(tag)
    }

    /// The preamble of a command naming mailboxes by their wire bytes:
    /// ready for it (authenticated or selected, nothing running), and no
    /// name empty (CR, LF and NUL the encoder refuses).
    fn check_mailboxes(&self, raw_names: &[&[u8]]) -> Result<(), ClientError> {
        self.check_ready(&[State::Authenticated, State::Selected])?;
        if raw_names.iter().any(|m| m.is_empty()) {
            return Err(InputError {
                field: "mailbox",
                reason: "is empty",
            }
            .into());
        }
        Ok(())
    }

    /// `LIST reference pattern`, with `RETURN (SPECIAL-USE)` (RFC 6154
    /// §5.1, for servers that advertise SPECIAL-USE) when
    /// `return_special_use`. The responses are gathered into
    /// [`CommandData::List`]. `reference` and `pattern` are sent as quoted
    /// strings or literals (`"" "*"`).
    pub fn list(
        &mut self,
        reference: &str,
        pattern: &str,
        return_special_use: bool,
        now: Instant,
    ) -> Result<String, ClientError> {
        self.check_ready(&[State::Authenticated, State::Selected])?;
        let tag = self.next_tag();
        let mut b = CommandBuilder::new(self.literal_mode(), &tag, "LIST")
            .string("list reference", reference.as_bytes())?
            .string("list pattern", pattern.as_bytes())?;
        if return_special_use {
            b = b.raw("RETURN (SPECIAL-USE)");
        }
        Ok(self.start(CommandKind::List, b.finish(), tag, now))
    }

    /// `STATUS mailbox (items)`, e.g. items `"UIDNEXT UIDVALIDITY"`: the
    /// name as [`encode::wire_mailbox`](super::encode::wire_mailbox) puts
    /// it on the wire.
    pub fn status(
        &mut self,
        mailbox: &str,
        items: &str,
        now: Instant,
    ) -> Result<String, ClientError> {
        let raw = super::encode::wire_mailbox(mailbox)?;
        self.status_listed(&raw, items, now)
    }

    /// `STATUS mailbox (items)` for a mailbox named by the bytes a LIST
    /// response carried (see [`Client::select_listed`]): sent back byte
    /// for byte, never re-encoded. An empty name, or one holding CR, LF or
    /// NUL, is refused.
    pub fn status_listed(
        &mut self,
        raw_name: &[u8],
        items: &str,
        now: Instant,
    ) -> Result<String, ClientError> {
        self.check_mailboxes(&[raw_name])?;
        let tag = self.next_tag();
        let enc = CommandBuilder::new(self.literal_mode(), &tag, "STATUS")
            .string("mailbox", raw_name)?
            .raw(&format!("({items})"))
            .finish();
        let tag = self.start(CommandKind::Status, enc, tag, now);
        if let Some(p) = self.pending.as_mut() {
            p.status_of = Some(String::from_utf8_lossy(raw_name).into_owned());
        }
        Ok(tag)
    }

    /// `NOTIFY SET (selected (MessageNew MessageExpunge)) (mailboxes m
    /// (MessageNew MessageExpunge)) ...` (RFC 5465): the selected mailbox
    /// reports as usual (EXISTS, EXPUNGE), and each of `mailboxes` (names
    /// as they go on the wire: listed bytes, or modified UTF-7) reports new
    /// and expunged mail with an unsolicited `* STATUS`, also during IDLE.
    /// Empty names, or names holding CR, LF or NUL, are refused.
    pub fn notify_set(&mut self, mailboxes: &[&[u8]], now: Instant) -> Result<String, ClientError> {
        self.check_mailboxes(mailboxes)?;
        let tag = self.next_tag();
        let mut b = CommandBuilder::new(self.literal_mode(), &tag, "NOTIFY")
            .raw("SET (selected (MessageNew MessageExpunge))");
        for m in mailboxes {
            b = b
                .raw("(mailboxes")
                .string("mailbox", m)?
                .raw("(MessageNew MessageExpunge))");
        }
        Ok(self.start(CommandKind::Notify, b.finish(), tag, now))
    }

    /// `NOOP`: polls for changes and checks the link.
    pub fn noop(&mut self, now: Instant) -> Result<String, ClientError> {
        self.simple(
            CommandKind::Noop,
            "NOOP",
            &[
                State::NotAuthenticated,
                State::Authenticated,
                State::Selected,
            ],
            now,
        )
    }

    /// `IDLE`. Changes arrive as [`Event::Data`]; end it with
    /// [`Client::done`] (the machine also ends it on its own timers).
    pub fn idle(&mut self, now: Instant) -> Result<String, ClientError> {
        let tag = self.simple(CommandKind::Idle, "IDLE", &[State::Selected], now)?;
        if let Some(p) = self.pending.as_mut() {
            p.idle = Some(Idle {
                accepted: false,
                done_sent: false,
                started: now,
            });
        }
        Ok(tag)
    }

    /// `DONE`: ends a running IDLE. Does nothing when no IDLE runs or DONE
    /// was already sent. Before the server accepted IDLE, DONE is sent as
    /// soon as it does.
    pub fn done(&mut self, now: Instant) {
        let accepted = match self.pending.as_ref().and_then(|p| p.idle) {
            Some(i) if !i.done_sent => i.accepted,
            _ => return,
        };
        if accepted {
            self.send_done(now);
        } else if let Some(p) = self.pending.as_mut() {
            // Sent right after the server's `+`.
            p.parts.push_back(b"DONE\r\n".to_vec());
            if let Some(i) = p.idle.as_mut() {
                i.done_sent = true;
            }
        }
    }

    fn send_done(&mut self, now: Instant) {
        let deadline = self.overall_deadline(now, self.line_budget());
        if let Some(p) = self.pending.as_mut()
            && let Some(idle) = p.idle.as_mut()
        {
            idle.done_sent = true;
            self.out.extend_from_slice(b"DONE\r\n");
            // The command timeout and the overall deadline count from DONE.
            self.last_rx = now;
            p.deadline = deadline;
        }
    }

    /// `FETCH set (items)` or `UID FETCH set (items)`. `set` and `items` are
    /// written by emap (numbers and keywords), not user input.
    ///
    /// The overall deadline counts at most one message per number in `set`
    /// (an upper bound for sequence numbers and UIDs alike). When `set` has
    /// no such bound (`n:*`), the FETCH has only the inactivity timeout:
    /// use [`Client::fetch_sized`] when the caller knows the count.
    pub fn fetch(
        &mut self,
        uid: bool,
        set: &str,
        items: &str,
        now: Instant,
    ) -> Result<String, ClientError> {
        self.start_fetch(uid, set, items, set_size(set), now)
    }

    /// [`Client::fetch`] of at most `messages` messages: the overall
    /// deadline is `command_timeout` plus `messages × (max_message_size +
    /// max_line)` bytes at `min_transfer_rate`.
    pub fn fetch_sized(
        &mut self,
        uid: bool,
        set: &str,
        items: &str,
        messages: u32,
        now: Instant,
    ) -> Result<String, ClientError> {
        self.start_fetch(uid, set, items, Some(u64::from(messages)), now)
    }

    fn start_fetch(
        &mut self,
        uid: bool,
        set: &str,
        items: &str,
        messages: Option<u64>,
        now: Instant,
    ) -> Result<String, ClientError> {
        let name = if uid { "UID FETCH" } else { "FETCH" };
        self.check_ready(&[State::Selected])?;
        let tag = self.next_tag();
        let enc = CommandBuilder::new(self.literal_mode(), &tag, name)
            .raw(set)
            .raw(items)
            .finish();
        let tag = self.start(CommandKind::Fetch, enc, tag, now);
        let per_message = u64::try_from(self.opts.max_message_size)
            .unwrap_or(u64::MAX)
            .saturating_add(self.line_budget());
        let deadline =
            messages.and_then(|m| self.overall_deadline(now, m.saturating_mul(per_message)));
        if let Some(p) = self.pending.as_mut() {
            p.deadline = deadline;
        }
        Ok(tag)
    }

    /// `UID SEARCH criteria`; `criteria` is written by emap.
    pub fn uid_search(&mut self, criteria: &str, now: Instant) -> Result<String, ClientError> {
        self.check_ready(&[State::Selected])?;
        let tag = self.next_tag();
        let enc = CommandBuilder::new(self.literal_mode(), &tag, "UID SEARCH")
            .raw(criteria)
            .finish();
        Ok(self.start(CommandKind::Search, enc, tag, now))
    }

    /// `LOGOUT`.
    pub fn logout(&mut self, now: Instant) -> Result<String, ClientError> {
        self.simple(CommandKind::Logout, "LOGOUT", ANY_STATE, now)
    }

    fn handle(&mut self, resp: Response, now: Instant) -> Result<(), ProtoError> {
        if self.state == State::Greeting {
            return self.handle_greeting(resp);
        }
        match resp {
            Response::Continuation(text) => self.handle_continuation(text, now),
            Response::Tagged(t) => self.handle_tagged(t),
            Response::Untagged(d) => {
                self.handle_untagged(d);
                Ok(())
            }
        }
    }

    fn handle_greeting(&mut self, resp: Response) -> Result<(), ProtoError> {
        let Response::Untagged(Data::Status {
            condition,
            code,
            text,
        }) = resp
        else {
            return Err(ProtoError::BadGreeting(super::Excerpt::new(
                format!("{resp:?}").as_bytes(),
            )));
        };
        self.greeting_deadline = None;
        if let Some(Code::Capability(c)) = &code {
            self.caps = Some(c.clone());
        }
        let greeting = match condition {
            Condition::Ok => {
                self.state = State::NotAuthenticated;
                self.greeting_text = text;
                Greeting::Ok
            }
            Condition::Preauth => {
                self.state = State::Authenticated;
                self.greeting_text = text;
                Greeting::Preauth
            }
            Condition::Bye => {
                self.state = State::Logout;
                self.bye = Some(text.clone());
                Greeting::Bye { code, text }
            }
            Condition::No | Condition::Bad => {
                return Err(ProtoError::BadGreeting(super::Excerpt::new(
                    text.as_bytes(),
                )));
            }
        };
        self.events.push_back(Event::Greeted(greeting));
        Ok(())
    }

    fn handle_continuation(&mut self, text: Vec<u8>, now: Instant) -> Result<(), ProtoError> {
        let done_deadline = self.overall_deadline(now, self.line_budget());
        let Some(p) = self.pending.as_mut() else {
            return Err(ProtoError::UnexpectedContinuation);
        };
        if let Some(part) = p.parts.pop_front() {
            // A synchronizing literal (or a DONE queued before the IDLE `+`).
            self.out.extend_from_slice(&part);
            if let Some(idle) = p.idle.as_mut()
                && !idle.accepted
            {
                idle.accepted = true;
                self.events.push_back(Event::IdleStarted);
                // The queued DONE goes now: its exchange is timed from here.
                self.last_rx = now;
                p.deadline = done_deadline;
            }
            return Ok(());
        }
        if let Some(idle) = p.idle.as_mut() {
            if idle.accepted {
                return Err(ProtoError::UnexpectedContinuation);
            }
            idle.accepted = true;
            idle.started = now;
            // Idling: only IDLE's own timers apply until DONE.
            p.deadline = None;
            self.events.push_back(Event::IdleStarted);
            return Ok(());
        }
        if let Some(sasl) = p.sasl.as_mut() {
            match sasl.step {
                SaslStep::Initial => {
                    let mut line = std::mem::take(&mut sasl.initial);
                    if line.is_empty() {
                        line.push(b'=');
                    }
                    line.extend_from_slice(b"\r\n");
                    self.out.extend_from_slice(&line);
                    sasl.step = SaslStep::Sent;
                }
                SaslStep::Sent => {
                    // An error challenge (RFC 7628 §3.2.2; XOAUTH2 alike):
                    // keep it, and answer so the server sends its NO.
                    let decoded = B64.decode(trim(&text)).unwrap_or_else(|_| text.clone());
                    sasl.error = Some(
                        String::from_utf8_lossy(&decoded)
                            .chars()
                            .take(512)
                            .collect(),
                    );
                    let answer: &[u8] = match sasl.mechanism {
                        Mechanism::OAuthBearer => b"AQ==\r\n",
                        Mechanism::XOAuth2 => b"\r\n",
                        Mechanism::Plain => b"*\r\n",
                    };
                    self.out.extend_from_slice(answer);
                    sasl.step = SaslStep::Aborted;
                }
                SaslStep::Aborted => return Err(ProtoError::UnexpectedContinuation),
            }
            return Ok(());
        }
        Err(ProtoError::UnexpectedContinuation)
    }

    fn handle_tagged(&mut self, t: Tagged) -> Result<(), ProtoError> {
        let matches = self.pending.as_ref().is_some_and(|p| p.tag == t.tag);
        if !matches {
            return Err(ProtoError::UnknownTag(super::Excerpt::new(
                t.tag.as_bytes(),
            )));
        }
        let Some(mut p) = self.pending.take() else {
            return Err(ProtoError::UnknownTag(super::Excerpt::new(
                t.tag.as_bytes(),
            )));
        };
        if let Some(Code::Capability(c)) = &t.code {
            self.caps = Some(c.clone());
        }
        let ok = t.status == Status::Ok;
        let data = match p.kind {
            CommandKind::Select => {
                let mut info = p.select.take().unwrap_or_default();
                match &t.code {
                    Some(Code::ReadOnly) => info.read_only = true,
                    Some(Code::ReadWrite) => info.read_only = false,
                    _ => {}
                }
                if ok {
                    self.state = State::Selected;
                } else if self.state == State::Selected {
                    // A failed SELECT leaves no mailbox selected (RFC 3501).
                    self.state = State::Authenticated;
                }
                CommandData::Selected(info)
            }
            CommandKind::Search => CommandData::Search(std::mem::take(&mut p.search)),
            CommandKind::Status => CommandData::Status(std::mem::take(&mut p.status)),
            CommandKind::List => CommandData::List {
                entries: std::mem::take(&mut p.list),
                dropped: p.list_dropped,
            },
            CommandKind::Login | CommandKind::Authenticate(_) => {
                if ok {
                    self.state = State::Authenticated;
                    if !matches!(t.code, Some(Code::Capability(_))) {
                        // Capabilities may change after login (RFC 9051
                        // §6.2.3); ask again unless they were just sent.
                        self.caps = None;
                    }
                }
                CommandData::None
            }
            CommandKind::Logout => {
                self.state = State::Logout;
                CommandData::None
            }
            _ => CommandData::None,
        };
        let sasl_error = p.sasl.and_then(|s| s.error);
        self.events.push_back(Event::Completed(Completion {
            tag: t.tag,
            kind: p.kind,
            status: t.status,
            code: t.code,
            text: t.text,
            data,
            sasl_error,
        }));
        Ok(())
    }

    fn handle_untagged(&mut self, d: Data) {
        // Capabilities are recorded whenever they arrive, and still surfaced.
        match &d {
            Data::Capability(c) => self.caps = Some(c.clone()),
            Data::Status {
                code: Some(Code::Capability(c)),
                ..
            } => self.caps = Some(c.clone()),
            Data::Status {
                condition: Condition::Bye,
                text,
                ..
            } => {
                self.bye = Some(text.clone());
                self.state = State::Logout;
            }
            _ => {}
        }
        if let Some(p) = self.pending.as_mut() {
            // Data that belongs to the running command's result.
            match (&p.kind, &d) {
                (CommandKind::Select, Data::Exists(n)) => {
                    if let Some(s) = p.select.as_mut() {
                        if p.select_exists_seen && s.uid_next.is_some() && *n > s.exists {
                            s.uid_next_stale = true;
                        }
                        s.exists = *n;
                        p.select_exists_seen = true;
                    }
                    return;
                }
                (
                    CommandKind::Select,
                    Data::Status {
                        condition: Condition::Ok,
                        code: Some(code),
                        ..
                    },
                ) => {
                    if let Some(s) = p.select.as_mut() {
                        match code {
                            Code::UidNext(n) => s.uid_next = Some(*n),
                            Code::UidValidity(n) => s.uid_validity = Some(*n),
                            Code::HighestModSeq(n) => s.highest_modseq = Some(*n),
                            _ => {}
                        }
                    }
                    if !matches!(code, Code::Alert) {
                        return;
                    }
                }
                (CommandKind::Select, Data::Flags(_) | Data::Recent(_)) => return,
                (CommandKind::Search, Data::Search(uids)) => {
                    // Bounded whatever the server sends.
                    let room = MAX_SEARCH_RESULTS.saturating_sub(p.search.len());
                    p.search.extend_from_slice(&uids[..uids.len().min(room)]);
                    return;
                }
                (CommandKind::Search, Data::ESearch(es))
                    if es.tag.as_deref().is_none_or(|t| t == p.tag) =>
                {
                    for &(a, b) in &es.all {
                        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                        // Bounded by the parser's line limit: each range
                        // costs bytes on the wire, but a range can be
                        // huge; cap the expansion.
                        for u in lo..=hi {
                            if p.search.len() >= MAX_SEARCH_RESULTS {
                                break;
                            }
                            p.search.push(u);
                        }
                    }
                    return;
                }
                (CommandKind::Status, Data::MailboxStatus { mailbox, items })
                    if p.status_of
                        .as_deref()
                        .is_none_or(|asked| super::encode::same_mailbox(asked, mailbox)) =>
                {
                    let room = MAX_STATUS_ITEMS.saturating_sub(p.status.len());
                    p.status.extend(items.iter().take(room).cloned());
                    return;
                }
                (CommandKind::List, Data::List(entry)) => {
                    // Bounded whatever the server lists: by count, and by
                    // bytes (one response's worth of limits in all).
                    let size = entry.raw_name.len()
                        + entry.name.len()
                        + entry.attributes.iter().map(String::len).sum::<usize>();
                    let budget = self
                        .opts
                        .limits
                        .max_line
                        .saturating_add(self.opts.limits.max_literal);
                    if p.list.len() < MAX_LIST_ENTRIES && p.list_bytes + size <= budget {
                        p.list_bytes += size;
                        p.list.push(entry.clone());
                    } else {
                        p.list_dropped = p.list_dropped.saturating_add(1);
                    }
                    return;
                }
                (CommandKind::Capability, Data::Capability(_)) => return,
                _ => {}
            }
        }
        self.events.push_back(Event::Data(d));
    }
}

/// What [`ProtoError::Timeout`] names when a command was not complete by
/// its overall deadline (as opposed to `"command response"`: no byte for
/// `command_timeout`).
pub const DEADLINE_EXPIRED: &str = "response within the command deadline";

/// An upper bound on the messages a FETCH of `set` returns: one per number
/// (`*` alone is one), or `None` when a range is open (`n:*`) or `set` is
/// not a sequence set.
fn set_size(set: &str) -> Option<u64> {
    let number = |s: &str| s.parse::<u32>().ok();
    let mut total: u64 = 0;
    for item in set.split(',') {
        let n = match item.split_once(':') {
            None if item == "*" => 1,
            None => number(item).map(|_| 1)?,
            Some(("*", "*")) => 1,
            Some((a, b)) => u64::from(number(a)?.abs_diff(number(b)?)) + 1,
        };
        total = total.saturating_add(n);
    }
    Some(total)
}

/// The most UIDs one search gathers (SEARCH, or ESEARCH ALL expanded);
/// more are dropped.
pub const MAX_SEARCH_RESULTS: usize = 1_000_000;

/// The most STATUS items one command gathers; more are dropped.
pub const MAX_STATUS_ITEMS: usize = 64;

/// The most mailboxes one LIST gathers; more are dropped and counted.
pub const MAX_LIST_ENTRIES: usize = 100_000;

const ANY_STATE: &[State] = &[
    State::NotAuthenticated,
    State::Authenticated,
    State::Selected,
];

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

#[cfg(test)]
mod tests;
