//! A stateful fake IMAP server that serves a *model* mailbox, for the
//! exactly-once scenarios (`tests/exactly_once.rs`).
//!
//! The scripted fake ([`super::fake`]) states the exact command sequence a
//! client must send; recovery code that is being rewritten may send other
//! commands, so these scenarios need a server that answers *whatever* the
//! client asks, correctly, from one model shared by all its connections:
//! the messages (UID, raw bytes, INTERNALDATE), UIDVALIDITY and UIDNEXT.
//! Each connection keeps its own view (the messages it has announced), so
//! sequence numbers, `* n EXISTS` and `* n EXPUNGE` follow RFC 3501.
//!
//! On top of the model, one enum of [`Fault`]s injects what real servers do
//! now and then — per UID and per attempt count ([`Times`]), so "fails the
//! first time only" and "fails every time" are both expressible: a FETCH
//! answered `NO`, a BYE, `BODY[] NIL`, a split or garbled response, an
//! oversized literal, responses out of order or twice, EXISTS slipped into
//! another command's response, a rejected command, a connection closed when
//! a command arrives, a connection that stops answering.
//!
//! Every command line is recorded with its connection number; connections,
//! LOGINs and body FETCHes are counted, and [`MailboxServer::until`]
//! awaits them (each one wakes it) instead of polling.
//!
//! Further mailboxes ([`MailboxServer::add_mailbox`], for the several-folder
//! sequences of `tests/sequences.rs`) each have a model of their own (UIDs,
//! UIDVALIDITY, UIDNEXT), optionally a special-use attribute in LIST; STATUS,
//! EXAMINE/SELECT and [`Fault::FetchIn`] name them. Any other name means the
//! main mailbox, as it always did, and NOTIFY is refused with BAD, so a
//! client that asks for it polls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{mpsc, watch};

/// One message of the model mailbox.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its UID.
    pub uid: u32,
    /// Its bytes.
    pub raw: Vec<u8>,
    /// When the server "received" it (INTERNALDATE).
    pub internal_date: SystemTime,
}

/// The mailbox every connection of a [`MailboxServer`] serves.
#[derive(Debug, Clone)]
pub struct Model {
    /// UIDVALIDITY.
    pub uid_validity: u32,
    /// UIDNEXT: the UID the next appended message gets.
    pub uid_next: u32,
    /// The messages, in UID order.
    pub messages: Vec<Stored>,
}

impl Model {
    fn has(&self, uid: u32) -> bool {
        self.messages.iter().any(|m| m.uid == uid)
    }

    fn get(&self, uid: u32) -> Option<&Stored> {
        self.messages.iter().find(|m| m.uid == uid)
    }

    fn push(&mut self, raw: Vec<u8>, internal_date: SystemTime) -> u32 {
        let uid = self.uid_next;
        self.uid_next += 1;
        self.messages.push(Stored {
            uid,
            raw,
            internal_date,
        });
        uid
    }
}

/// What a new connection is greeted with.
#[derive(Debug, Clone)]
pub enum Greeting {
    /// `* OK [CAPABILITY <capabilities>] ...` (see
    /// [`MailboxServer::set_capabilities`]).
    Normal,
    /// `* OK <text>`: a provider's own greeting, with or without a
    /// CAPABILITY code.
    Text(String),
    /// These bytes, then silence until the client leaves (a wrong port).
    Garbage(Vec<u8>),
    /// `* BYE text`, then close.
    Bye(String),
    /// Nothing at all, ever.
    Silent,
}

/// How LOGIN is answered.
#[derive(Debug, Clone)]
pub enum Login {
    /// Any password.
    Accept,
    /// `NO [AUTHENTICATIONFAILED]` whatever the password.
    Reject,
    /// Only this password; others get `NO [AUTHENTICATIONFAILED]`.
    Password(String),
}

/// On which matching occurrences a fault fires.
#[derive(Debug, Clone, Copy)]
pub enum Times {
    /// The first `n` matches only.
    First(usize),
    /// Every match.
    Always,
}

/// Which command a command-level fault applies to.
#[derive(Debug, Clone)]
pub enum On {
    /// A command whose text after the tag starts with this
    /// (case-insensitive), e.g. `"UID SEARCH"`, `"STATUS"`, `"UID FETCH *"`.
    Prefix(&'static str),
    /// The first command after EXAMINE/SELECT that is answered normally
    /// (not failed by another fault), whatever it is.
    AfterSelect,
    /// Any FETCH or UID FETCH that asks for a body.
    BodyFetch,
}

/// What goes wrong with one message's FETCH.
#[derive(Debug, Clone)]
pub enum FetchFault {
    /// The message's response is left out and the command ends `NO text`
    /// (e.g. `"[SERVERBUG] Internal error"`).
    No(String),
    /// The message is expunged right now: left out of the response, which
    /// ends `NO [EXPUNGEISSUED]`; `* n EXPUNGE` follows at the next chance.
    Expunged,
    /// `* BYE`, then the connection closes.
    Bye,
    /// The connection closes without a word, as when the server process
    /// crashes on the message (or a link is cut right then).
    Crash,
    /// `BODY[] NIL`.
    NilBody,
    /// UID in one FETCH response, INTERNALDATE/size/body in a second one
    /// (which carries the UID too only in a UID FETCH, as RFC 3501 wants).
    Split,
    /// A response that does not parse (garbage inside the parentheses).
    Garbage,
    /// A body literal of this many bytes, whatever was asked.
    HugeLiteral(usize),
    /// The response starts normally, then the connection closes in the
    /// middle of the body literal (half of it sent).
    CutLiteral,
}

/// One injected misbehaviour.
#[derive(Debug, Clone)]
pub enum Fault {
    /// The FETCH of message `uid` of the main mailbox (any FETCH asking for
    /// its body) goes wrong.
    Fetch {
        /// Which message.
        uid: u32,
        /// On which attempts.
        times: Times,
        /// How.
        how: FetchFault,
    },
    /// [`Fault::Fetch`] for message `uid` of the further mailbox `mailbox`
    /// ([`MailboxServer::add_mailbox`]).
    FetchIn {
        /// Which mailbox, by the name it was added with.
        mailbox: String,
        /// Which message.
        uid: u32,
        /// On which attempts.
        times: Times,
        /// How.
        how: FetchFault,
    },
    /// Body FETCHes answer in descending UID order.
    Reverse {
        /// On which body FETCHes.
        times: Times,
    },
    /// Body FETCHes answer every message twice.
    Twice {
        /// On which body FETCHes.
        times: Times,
    },
    /// The command is answered `NO text` (or `BAD text`).
    Reject {
        /// Which command.
        on: On,
        /// On which occurrences.
        times: Times,
        /// BAD instead of NO.
        bad: bool,
        /// The text after NO/BAD.
        text: String,
    },
    /// The connection closes, without a word, when the command arrives.
    Close {
        /// Which command.
        on: On,
        /// On which occurrences.
        times: Times,
    },
    /// The command is answered, then `* BYE` and the connection closes.
    ByeAfter {
        /// Which command.
        on: On,
        /// On which occurrences.
        times: Times,
    },
    /// While the command is answered, a new message (`raw`) arrives: its
    /// `* n EXISTS` comes after the command's data, before its tagged OK.
    ExistsDuring {
        /// Which command.
        on: On,
        /// On which occurrences.
        times: Times,
        /// The new message.
        raw: Vec<u8>,
    },
    /// When the command arrives: `* BYE text` (after `+ idling` for an
    /// IDLE), then the connection closes — a provider's own farewell.
    ByeWith {
        /// Which command.
        on: On,
        /// On which occurrences.
        times: Times,
        /// The text after BYE.
        text: String,
    },
    /// IDLE is accepted (`+ idling`) and at once ended by the server with
    /// `tag OK text`, before the client sent DONE.
    EndIdle {
        /// On which IDLE commands.
        times: Times,
        /// The text after OK.
        text: String,
    },
    /// From this command on, the connection never answers again.
    Blackhole {
        /// Which command.
        on: On,
        /// On which occurrences.
        times: Times,
    },
}

/// How EXAMINE/SELECT answers.
#[derive(Debug, Clone, Copy, Default)]
pub struct SelectShape {
    /// Leave out `* n EXISTS`.
    pub omit_exists: bool,
    /// Leave out `[UIDVALIDITY]`.
    pub omit_uid_validity: bool,
    /// Leave out `[UIDNEXT]`.
    pub omit_uid_next: bool,
    /// Answer `NO [NONEXISTENT]` (the mailbox is missing).
    pub missing: bool,
}

/// A further mailbox: its name, special-use attribute and model.
struct Extra {
    name: String,
    special_use: Option<&'static str>,
    model: Model,
}

struct State {
    /// The main mailbox: INBOX, or the name given to `name_main`.
    model: Model,
    /// Another name the main mailbox answers to besides INBOX
    /// ([`MailboxServer::name_main`]).
    main_name: Option<String>,
    /// The further mailboxes ([`MailboxServer::add_mailbox`]).
    extras: Vec<Extra>,
    greeting: Greeting,
    /// Announced in the greeting, CAPABILITY and the LOGIN OK.
    capabilities: String,
    login: Login,
    select: SelectShape,
    /// UID SEARCH ignores the upper end of its UID range.
    sloppy_search: bool,
    faults: Vec<(Fault, usize)>,
    commands: Vec<(usize, String)>,
    connections: usize,
    logins: usize,
    /// Body FETCHes that included each UID, by mailbox (0: the main one,
    /// `i`: further mailbox `i - 1`).
    body_fetches: HashMap<(usize, u32), usize>,
    /// Bumped by [`MailboxServer::kick`].
    kicks: u64,
}

struct Shared {
    state: Mutex<State>,
    /// The model or a kick changed: connections bring their view up to date.
    changed: watch::Sender<u64>,
    /// What the server observed changed (a connection, a command line and
    /// what it counted): wakes [`MailboxServer::until`].
    observed: watch::Sender<u64>,
}

impl State {
    /// Mailbox `i`: 0 the main one, `i` further mailbox `i - 1`.
    fn mailbox(&self, i: usize) -> &Model {
        match i {
            0 => &self.model,
            i => &self.extras[i - 1].model,
        }
    }

    fn mailbox_mut(&mut self, i: usize) -> &mut Model {
        match i {
            0 => &mut self.model,
            i => &mut self.extras[i - 1].model,
        }
    }

    /// The mailbox a command names (an astring): INBOX (any case) the main
    /// one, a further mailbox by its name; `None` for any other name, so
    /// that a client asking for the wrong folder is told it does not
    /// exist rather than served INBOX.
    fn named(&self, arg: &str) -> Option<usize> {
        let name = astrings(arg).into_iter().next().unwrap_or_default();
        if name.eq_ignore_ascii_case("INBOX") || self.main_name.as_deref() == Some(name.as_str()) {
            return Some(0);
        }
        self.extras
            .iter()
            .position(|e| e.name == name)
            .map(|i| i + 1)
    }

    /// The index of the further mailbox called `name`; panics if none.
    fn extra(&self, name: &str) -> usize {
        self.extras
            .iter()
            .position(|e| e.name == name)
            .unwrap_or_else(|| panic!("no mailbox {name} was added"))
            + 1
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    fn observed(&self) {
        self.observed.send_modify(|v| *v += 1);
    }
}

/// A running model-mailbox server on 127.0.0.1.
pub struct MailboxServer {
    /// Its port.
    pub port: u16,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MailboxServer {
    fn drop(&mut self) {
        self.task.abort();
        // Ends every connection task too.
        self.shared.lock().kicks += 1;
        self.shared.notify();
    }
}

impl MailboxServer {
    /// Starts a server whose mailbox has UIDVALIDITY `uid_validity` and
    /// messages `old` (each `(uid, raw, age)`, UID ascending), with UIDNEXT
    /// `uid_next`.
    pub async fn start(
        uid_validity: u32,
        uid_next: u32,
        old: Vec<(u32, Vec<u8>, Duration)>,
    ) -> Self {
        super::trace::install();
        let now = SystemTime::now();
        let messages = old
            .into_iter()
            .map(|(uid, raw, age)| Stored {
                uid,
                raw,
                internal_date: now - age,
            })
            .collect();
        let state = State {
            model: Model {
                uid_validity,
                uid_next,
                messages,
            },
            extras: Vec::new(),
            main_name: None,
            greeting: Greeting::Normal,
            capabilities: "IMAP4rev1 IDLE".to_owned(),
            login: Login::Accept,
            select: SelectShape::default(),
            sloppy_search: false,
            faults: Vec::new(),
            commands: Vec::new(),
            connections: 0,
            logins: 0,
            body_fetches: HashMap::new(),
            kicks: 0,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            changed: watch::channel(0).0,
            observed: watch::channel(0).0,
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = {
            let shared = shared.clone();
            tokio::spawn(async move {
                while let Ok((sock, _)) = listener.accept().await {
                    let n = {
                        let mut s = shared.lock();
                        s.connections += 1;
                        s.connections - 1
                    };
                    shared.observed();
                    tokio::spawn(serve(shared.clone(), sock, n));
                }
            })
        };
        MailboxServer { port, shared, task }
    }

    /// Lets the main mailbox answer to `name` too (a credential watching
    /// a provider's folder by name, such as `[Gmail]/Spam`).
    pub fn name_main(&self, name: &str) {
        self.shared.lock().main_name = Some(name.to_owned());
    }

    /// Adds a further mailbox `name`, empty, with `uid_validity` and
    /// `uid_next`, listed with the attribute `special_use` (e.g. `\Junk`)
    /// if given. STATUS, EXAMINE and SELECT of this name serve
    /// it; LIST lists it after INBOX.
    pub fn add_mailbox(
        &self,
        name: &str,
        special_use: Option<&'static str>,
        uid_validity: u32,
        uid_next: u32,
    ) {
        self.shared.lock().extras.push(Extra {
            name: name.to_owned(),
            special_use,
            model: Model {
                uid_validity,
                uid_next,
                messages: Vec::new(),
            },
        });
        self.shared.notify();
    }

    /// Adds a fault.
    pub fn fault(&self, fault: Fault) {
        self.shared.lock().faults.push((fault, 0));
    }

    /// Removes every fault, fired or not, except those of one message's
    /// FETCH ([`Fault::Fetch`], [`Fault::FetchIn`]): from now on the
    /// connection and the mailbox behave, and only those messages fail.
    pub fn clear_command_faults(&self) {
        self.shared
            .lock()
            .faults
            .retain(|(f, _)| matches!(f, Fault::Fetch { .. } | Fault::FetchIn { .. }));
    }

    /// Sets the greeting of connections accepted from now on.
    pub fn set_greeting(&self, greeting: Greeting) {
        self.shared.lock().greeting = greeting;
    }

    /// Sets the capabilities announced from now on (default `IMAP4rev1
    /// IDLE`). With `AUTH=PLAIN`, AUTHENTICATE PLAIN is served (with or
    /// without SASL-IR) and checked like LOGIN.
    pub fn set_capabilities(&self, capabilities: &str) {
        self.shared.lock().capabilities = capabilities.to_owned();
    }

    /// Sets how LOGIN is answered from now on.
    pub fn set_login(&self, login: Login) {
        self.shared.lock().login = login;
    }

    /// Sets how EXAMINE/SELECT answers from now on.
    pub fn set_select(&self, shape: SelectShape) {
        self.shared.lock().select = shape;
    }

    /// Makes UID SEARCH ignore the upper end of its UID range.
    pub fn set_sloppy_search(&self, sloppy: bool) {
        self.shared.lock().sloppy_search = sloppy;
    }

    /// Delivers one message received now; returns its UID. Connections in
    /// IDLE announce it at once, others with their next response.
    pub fn append(&self, raw: Vec<u8>) -> u32 {
        self.append_many(vec![raw])[0]
    }

    /// Delivers several messages at once (one EXISTS announces them all).
    pub fn append_many(&self, raws: Vec<Vec<u8>>) -> Vec<u32> {
        let uids = {
            let mut s = self.shared.lock();
            let now = SystemTime::now();
            raws.into_iter().map(|r| s.model.push(r, now)).collect()
        };
        self.shared.notify();
        uids
    }

    /// Changes the model (UIDVALIDITY, UIDNEXT, messages) directly.
    pub fn edit(&self, f: impl FnOnce(&mut Model)) {
        f(&mut self.shared.lock().model);
        self.shared.notify();
    }

    /// Delivers one message received now to the further mailbox `mailbox`;
    /// returns its UID.
    pub fn append_to(&self, mailbox: &str, raw: Vec<u8>) -> u32 {
        let uid = {
            let mut s = self.shared.lock();
            let i = s.extra(mailbox);
            s.mailbox_mut(i).push(raw, SystemTime::now())
        };
        self.shared.notify();
        uid
    }

    /// Delivers one message received now to the main mailbox (`None`) or
    /// the further mailbox `mailbox`, and at the same moment adds the fault
    /// `fault(uid)` made for its UID (so that mail arriving meanwhile by
    /// [`Fault::ExistsDuring`] cannot take that UID); returns the UID.
    pub fn append_with_fault(
        &self,
        mailbox: Option<&str>,
        raw: Vec<u8>,
        fault: impl FnOnce(u32) -> Fault,
    ) -> u32 {
        let uid = {
            let mut s = self.shared.lock();
            let i = mailbox.map_or(0, |m| s.extra(m));
            let uid = s.mailbox_mut(i).push(raw, SystemTime::now());
            s.faults.push((fault(uid), 0));
            uid
        };
        self.shared.notify();
        uid
    }

    /// [`MailboxServer::edit`] for the further mailbox `mailbox`.
    pub fn edit_mailbox(&self, mailbox: &str, f: impl FnOnce(&mut Model)) {
        {
            let mut s = self.shared.lock();
            let i = s.extra(mailbox);
            f(s.mailbox_mut(i));
        }
        self.shared.notify();
    }

    /// The further mailbox `mailbox` as it is now.
    pub fn model_of(&self, mailbox: &str) -> Model {
        let s = self.shared.lock();
        s.mailbox(s.extra(mailbox)).clone()
    }

    /// Ends every open connection with `* BYE` (a server restart).
    pub fn kick(&self) {
        self.shared.lock().kicks += 1;
        self.shared.notify();
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.lock().connections
    }

    /// LOGIN commands received so far.
    pub fn logins(&self) -> usize {
        self.shared.lock().logins
    }

    /// Every command line received, in order, over all connections.
    pub fn commands(&self) -> Vec<String> {
        self.shared
            .lock()
            .commands
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// Every command line received with its connection number (0-based).
    pub fn commands_by_connection(&self) -> Vec<(usize, String)> {
        self.shared.lock().commands.clone()
    }

    /// How many body FETCHes included message `uid` (of the main mailbox).
    pub fn body_fetches(&self, uid: u32) -> usize {
        self.shared
            .lock()
            .body_fetches
            .get(&(0, uid))
            .copied()
            .unwrap_or(0)
    }

    /// How many body FETCHes included message `uid` of the further mailbox
    /// `mailbox`.
    pub fn body_fetches_in(&self, mailbox: &str, uid: u32) -> usize {
        let s = self.shared.lock();
        let i = s.extra(mailbox);
        s.body_fetches.get(&(i, uid)).copied().unwrap_or(0)
    }

    /// Awaits what the server observes (connections, command lines, LOGINs,
    /// body FETCHes) until `probe` holds; panics naming `what` after
    /// [`EVENTUALLY`](super::EVENTUALLY). Woken by each of them, not by a
    /// timer.
    pub async fn until(&self, what: &str, probe: impl Fn(&MailboxServer) -> bool) {
        let context = || format!("commands: {:?}", self.commands_by_connection());
        super::until_observed(what, &self.shared.observed, || probe(self), context).await;
    }

    /// Whether any command line received so far contains `what`
    /// (case-insensitive).
    pub fn saw(&self, what: &str) -> bool {
        let what = what.to_ascii_uppercase();
        self.shared
            .lock()
            .commands
            .iter()
            .any(|(_, l)| l.to_ascii_uppercase().contains(&what))
    }

    /// The model as it is now.
    pub fn model(&self) -> Model {
        self.shared.lock().model.clone()
    }
}

/// One connection's own state.
struct Conn {
    n: usize,
    /// The UIDs this connection has announced, in sequence order.
    view: Vec<u32>,
    selected: bool,
    /// Which mailbox is selected (see [`State::mailbox`]).
    mailbox: usize,
    /// EXAMINE answered and no command answered normally since.
    after_select: bool,
    idle_tag: Option<String>,
    /// AUTHENTICATE PLAIN sent without an initial response: the next line
    /// is the payload.
    auth_tag: Option<String>,
    kicks_seen: u64,
    blackholed: bool,
}

/// What to do after writing a reply.
enum Then {
    Continue,
    Close,
}

async fn read_lines(r: OwnedReadHalf, tx: mpsc::UnboundedSender<String>) {
    let mut reader = BufReader::new(r);
    loop {
        let mut buf = Vec::new();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(n) if n > 0 => {}
            _ => return,
        }
        let line = String::from_utf8_lossy(&buf)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        if tx.send(line).is_err() {
            return;
        }
    }
}

async fn serve(shared: Arc<Shared>, sock: tokio::net::TcpStream, n: usize) {
    let (r, mut w) = sock.into_split();
    let (tx, mut lines) = mpsc::unbounded_channel();
    let reader = tokio::spawn(read_lines(r, tx));
    let mut changes = shared.changed.subscribe();
    let (greeting, kicks, capabilities) = {
        let s = shared.lock();
        (s.greeting.clone(), s.kicks, s.capabilities.clone())
    };
    let mut conn = Conn {
        n,
        view: Vec::new(),
        selected: false,
        mailbox: 0,
        after_select: false,
        idle_tag: None,
        auth_tag: None,
        kicks_seen: kicks,
        blackholed: false,
    };
    let mut answering = true;
    match greeting {
        Greeting::Normal => {
            let _ = w
                .write_all(
                    format!("* OK [CAPABILITY {capabilities}] model mailbox ready\r\n").as_bytes(),
                )
                .await;
        }
        Greeting::Text(text) => {
            let _ = w.write_all(format!("* OK {text}\r\n").as_bytes()).await;
        }
        Greeting::Garbage(bytes) => {
            let _ = w.write_all(&bytes).await;
            answering = false;
        }
        Greeting::Bye(text) => {
            let _ = w.write_all(format!("* BYE {text}\r\n").as_bytes()).await;
            reader.abort();
            return;
        }
        Greeting::Silent => answering = false,
    }
    loop {
        tokio::select! {
            line = lines.recv() => {
                let Some(line) = line else { break };
                shared.lock().commands.push((n, line.clone()));
                if !answering || conn.blackholed {
                    shared.observed();
                    continue;
                }
                let (out, then) = handle(&shared, &mut conn, &line);
                shared.observed();
                if !out.is_empty() && w.write_all(&out).await.is_err() {
                    break;
                }
                if matches!(then, Then::Close) {
                    break;
                }
            }
            changed = changes.changed() => {
                if changed.is_err() {
                    break;
                }
                let out = {
                    let mut s = shared.lock();
                    if s.kicks > conn.kicks_seen {
                        None
                    } else if answering && !conn.blackholed && conn.selected && conn.idle_tag.is_some() {
                        Some(sync(&mut s, &mut conn, true))
                    } else {
                        Some(Vec::new())
                    }
                };
                match out {
                    None => {
                        let _ = w.write_all(b"* BYE server restarting\r\n").await;
                        break;
                    }
                    Some(out) if !out.is_empty() => {
                        if w.write_all(&out).await.is_err() {
                            break;
                        }
                    }
                    Some(_) => {}
                }
            }
        }
    }
    let _ = w.shutdown().await;
    reader.abort();
}

/// Whether a fault with this counter and `times` fires now (counts the match).
fn fires(count: &mut usize, times: Times) -> bool {
    *count += 1;
    match times {
        Times::First(n) => *count <= n,
        Times::Always => true,
    }
}

fn matches_on(on: &On, conn: &Conn, upper: &str) -> bool {
    match on {
        On::Prefix(p) => upper.starts_with(&p.to_ascii_uppercase()),
        On::AfterSelect => conn.after_select,
        On::BodyFetch => {
            (upper.starts_with("FETCH ") || upper.starts_with("UID FETCH "))
                && upper.contains("BODY")
        }
    }
}

/// Brings the connection's view up to date: `* n EXPUNGE` (when allowed)
/// for messages gone, `* n EXISTS` for new ones.
fn sync(s: &mut State, conn: &mut Conn, expunge: bool) -> Vec<u8> {
    let mut out = String::new();
    if !conn.selected {
        return Vec::new();
    }
    let model = s.mailbox(conn.mailbox);
    if expunge {
        let mut i = conn.view.len();
        while i > 0 {
            i -= 1;
            if !model.has(conn.view[i]) {
                out.push_str(&format!("* {} EXPUNGE\r\n", i + 1));
                conn.view.remove(i);
            }
        }
    }
    let before = conn.view.len();
    for m in &model.messages {
        if !conn.view.contains(&m.uid) {
            conn.view.push(m.uid);
        }
    }
    if conn.view.len() != before {
        out.push_str(&format!("* {} EXISTS\r\n", conn.view.len()));
    }
    out.into_bytes()
}

fn handle(shared: &Shared, conn: &mut Conn, line: &str) -> (Vec<u8>, Then) {
    let mut s = shared.lock();
    if let Some(tag) = conn.auth_tag.take() {
        let tagged = authenticate_plain(&mut s, &tag, line);
        return (tagged.into_bytes(), Then::Continue);
    }
    if let Some(tag) = conn.idle_tag.take()
        && line.eq_ignore_ascii_case("DONE")
    {
        let mut out = sync(&mut s, conn, true);
        out.extend_from_slice(format!("{tag} OK Idle completed\r\n").as_bytes());
        return (out, Then::Continue);
    }
    let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
    let tag = tag.to_owned();
    let upper = rest.to_ascii_uppercase();

    // Faults that replace the answer.
    let mut reject = None;
    let mut exists_during = None;
    let mut bye_after = false;
    let mut end_idle = None;
    for (fault, count) in s.faults.iter_mut() {
        match fault {
            Fault::Close { on, times } if matches_on(on, conn, &upper) && fires(count, *times) => {
                return (Vec::new(), Then::Close);
            }
            Fault::Blackhole { on, times }
                if matches_on(on, conn, &upper) && fires(count, *times) =>
            {
                conn.blackholed = true;
                return (Vec::new(), Then::Continue);
            }
            Fault::ByeWith { on, times, text }
                if matches_on(on, conn, &upper) && fires(count, *times) =>
            {
                let mut out = if upper == "IDLE" {
                    b"+ idling\r\n".to_vec()
                } else {
                    Vec::new()
                };
                out.extend_from_slice(format!("* BYE {text}\r\n").as_bytes());
                return (out, Then::Close);
            }
            Fault::EndIdle { times, text }
                if end_idle.is_none() && upper == "IDLE" && fires(count, *times) =>
            {
                end_idle = Some(text.clone());
            }
            Fault::Reject {
                on,
                times,
                bad,
                text,
            } if reject.is_none() && matches_on(on, conn, &upper) && fires(count, *times) => {
                let word = if *bad { "BAD" } else { "NO" };
                reject = Some(format!("{tag} {word} {text}\r\n"));
            }
            _ => {}
        }
    }
    if let Some(text) = end_idle {
        let mut out = b"+ idling\r\n".to_vec();
        out.extend(sync(&mut s, conn, true));
        out.extend_from_slice(format!("{tag} OK {text}\r\n").as_bytes());
        return (out, Then::Continue);
    }
    if let Some(reply) = reject {
        let mut out = sync(&mut s, conn, false);
        out.extend_from_slice(reply.as_bytes());
        return (out, Then::Continue);
    }
    for (fault, count) in s.faults.iter_mut() {
        match fault {
            Fault::ExistsDuring { on, times, raw }
                if exists_during.is_none()
                    && matches_on(on, conn, &upper)
                    && fires(count, *times) =>
            {
                exists_during = Some(raw.clone());
            }
            Fault::ByeAfter { on, times }
                if matches_on(on, conn, &upper) && fires(count, *times) =>
            {
                bye_after = true;
            }
            _ => {}
        }
    }
    let is_select = upper.starts_with("EXAMINE") || upper.starts_with("SELECT");
    if !is_select {
        conn.after_select = false;
    }

    let (mut out, tagged, then) = answer(&mut s, conn, &tag, rest, &upper);
    if matches!(then, Then::Close) {
        out.extend_from_slice(tagged.as_bytes());
        return (out, then);
    }
    if let Some(raw) = exists_during {
        s.mailbox_mut(conn.mailbox).push(raw, SystemTime::now());
        shared.notify();
    }
    let expunge_ok = !(upper.starts_with("FETCH")
        || upper.starts_with("UID")
        || upper.starts_with("SEARCH")
        || upper.starts_with("STORE"));
    if conn.idle_tag.is_none() {
        out.extend(sync(&mut s, conn, expunge_ok));
    }
    out.extend_from_slice(tagged.as_bytes());
    if bye_after {
        out.extend_from_slice(b"* BYE fault injected\r\n");
        return (out, Then::Close);
    }
    (out, Then::Continue)
}

/// The normal answer: untagged data, the tagged line, and whether to close.
fn answer(
    s: &mut State,
    conn: &mut Conn,
    tag: &str,
    rest: &str,
    upper: &str,
) -> (Vec<u8>, String, Then) {
    let ok = |what: &str| format!("{tag} OK {what} completed\r\n");
    let caps = s.capabilities.clone();
    if upper == "CAPABILITY" {
        return (
            format!("* CAPABILITY {caps}\r\n").into_bytes(),
            ok("Capability"),
            Then::Continue,
        );
    }
    if upper.starts_with("LOGIN ") {
        s.logins += 1;
        let args = astrings(&rest[6..]);
        let password = args.get(1).cloned().unwrap_or_default();
        let accepted = match &s.login {
            Login::Accept => true,
            Login::Reject => false,
            Login::Password(p) => *p == password,
        };
        let tagged = if accepted {
            format!("{tag} OK [CAPABILITY {caps}] Logged in\r\n")
        } else {
            format!("{tag} NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")
        };
        return (Vec::new(), tagged, Then::Continue);
    }
    if upper.starts_with("AUTHENTICATE PLAIN") {
        let initial = rest["AUTHENTICATE PLAIN".len()..].trim();
        if initial.is_empty() {
            conn.auth_tag = Some(tag.to_owned());
            return (b"+ \r\n".to_vec(), String::new(), Then::Continue);
        }
        return (
            Vec::new(),
            authenticate_plain(s, tag, initial),
            Then::Continue,
        );
    }
    if upper.starts_with("EXAMINE") || upper.starts_with("SELECT") {
        let shape = s.select;
        if shape.missing {
            return (
                Vec::new(),
                format!("{tag} NO [NONEXISTENT] Mailbox doesn't exist\r\n"),
                Then::Continue,
            );
        }
        let verb = if upper.starts_with("EXAMINE") { 7 } else { 6 };
        let Some(mailbox) = s.named(&rest[verb..]) else {
            return (
                Vec::new(),
                format!("{tag} NO [NONEXISTENT] No such mailbox\r\n"),
                Then::Continue,
            );
        };
        conn.mailbox = mailbox;
        conn.selected = true;
        conn.after_select = true;
        let model = s.mailbox(conn.mailbox);
        conn.view = model.messages.iter().map(|m| m.uid).collect();
        let mut out = String::from("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n");
        if !shape.omit_exists {
            out.push_str(&format!("* {} EXISTS\r\n* 0 RECENT\r\n", conn.view.len()));
        }
        if !shape.omit_uid_validity {
            out.push_str(&format!(
                "* OK [UIDVALIDITY {}] UIDs valid\r\n",
                model.uid_validity
            ));
        }
        if !shape.omit_uid_next {
            out.push_str(&format!(
                "* OK [UIDNEXT {}] Predicted next UID\r\n",
                model.uid_next
            ));
        }
        let mode = if upper.starts_with("EXAMINE") {
            "READ-ONLY"
        } else {
            "READ-WRITE"
        };
        return (
            out.into_bytes(),
            format!("{tag} OK [{mode}] Select completed\r\n"),
            Then::Continue,
        );
    }
    if upper.starts_with("STATUS ") {
        let name = rest[7..].split(" (").next().unwrap_or("INBOX").to_owned();
        let Some(named) = s.named(&name) else {
            return (
                Vec::new(),
                format!("{tag} NO [NONEXISTENT] No such mailbox\r\n"),
                Then::Continue,
            );
        };
        let model = s.mailbox(named);
        let mut items = Vec::new();
        if upper.contains("MESSAGES") {
            items.push(format!("MESSAGES {}", model.messages.len()));
        }
        if upper.contains("UIDNEXT") {
            items.push(format!("UIDNEXT {}", model.uid_next));
        }
        if upper.contains("UIDVALIDITY") {
            items.push(format!("UIDVALIDITY {}", model.uid_validity));
        }
        return (
            format!("* STATUS {name} ({})\r\n", items.join(" ")).into_bytes(),
            ok("Status"),
            Then::Continue,
        );
    }
    if upper.starts_with("LIST ") {
        let mut out = String::from("* LIST (\\HasNoChildren) \"/\" INBOX\r\n");
        for e in &s.extras {
            let attributes = match e.special_use {
                Some(u) => format!("\\HasNoChildren {u}"),
                None => "\\HasNoChildren".to_owned(),
            };
            out.push_str(&format!("* LIST ({attributes}) \"/\" \"{}\"\r\n", e.name));
        }
        return (out.into_bytes(), ok("List"), Then::Continue);
    }
    if upper.starts_with("NOTIFY") {
        return (
            Vec::new(),
            format!("{tag} BAD NOTIFY not supported\r\n"),
            Then::Continue,
        );
    }
    if upper == "NOOP" || upper == "CHECK" {
        return (Vec::new(), ok("NOOP"), Then::Continue);
    }
    if upper == "IDLE" {
        conn.idle_tag = Some(tag.to_owned());
        let mut out = b"+ idling\r\n".to_vec();
        out.extend(sync(s, conn, true));
        return (out, String::new(), Then::Continue);
    }
    if upper == "LOGOUT" {
        return (b"* BYE Logging out\r\n".to_vec(), ok("Logout"), Then::Close);
    }
    if upper.starts_with("UID FETCH ") {
        return fetch(s, conn, tag, &rest[10..], true);
    }
    if upper.starts_with("FETCH ") {
        return fetch(s, conn, tag, &rest[6..], false);
    }
    if let Some(criteria) = upper.strip_prefix("UID SEARCH ") {
        return search(s, conn, tag, criteria, true);
    }
    if let Some(criteria) = upper.strip_prefix("SEARCH ") {
        return search(s, conn, tag, criteria, false);
    }
    (Vec::new(), ok("Command"), Then::Continue)
}

/// Checks a SASL PLAIN payload (base64 of `authzid NUL user NUL
/// password`) like LOGIN; the tagged answer carries no CAPABILITY (as
/// iCloud's does not), so the client must ask again.
fn authenticate_plain(s: &mut State, tag: &str, payload: &str) -> String {
    use base64::Engine as _;
    s.logins += 1;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(payload.trim())
        .unwrap_or_default();
    let password = decoded
        .rsplit(|b| *b == 0)
        .next()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    let accepted = match &s.login {
        Login::Accept => true,
        Login::Reject => false,
        Login::Password(p) => *p == password,
    };
    if accepted {
        format!("{tag} OK user authenticated\r\n")
    } else {
        format!("{tag} NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")
    }
}

/// The IMAP astrings of `s` (atoms and quoted strings).
fn astrings(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c == ' ' {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut v = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => v.extend(chars.next()),
                    '"' => break,
                    c => v.push(c),
                }
            }
            out.push(v);
        } else {
            let mut v = String::new();
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                v.push(c);
                chars.next();
            }
            out.push(v);
        }
    }
    out
}

/// Whether `value` is in the RFC 3501 sequence set `set`, where `*` is
/// `star` (so `a:*` with `a` past the end still includes `star`).
pub fn in_set(set: &str, value: u32, star: u32) -> bool {
    let num = |t: &str| -> Option<u32> { if t == "*" { Some(star) } else { t.parse().ok() } };
    set.split(',').any(|part| match part.split_once(':') {
        Some((a, b)) => match (num(a), num(b)) {
            (Some(a), Some(b)) => (a.min(b)..=a.max(b)).contains(&value),
            _ => false,
        },
        None => num(part) == Some(value),
    })
}

fn fetch(
    s: &mut State,
    conn: &mut Conn,
    tag: &str,
    args: &str,
    by_uid: bool,
) -> (Vec<u8>, String, Then) {
    let (set, items) = args.split_once(' ').unwrap_or((args, ""));
    let items = items.to_ascii_uppercase();
    let want_body = items.contains("BODY");
    let partial = items
        .find("<0.")
        .and_then(|i| items[i + 3..].split('>').next())
        .and_then(|n| n.parse::<usize>().ok());
    // (seq, uid) of every message asked for that still exists.
    let star = if by_uid {
        conn.view.iter().copied().max().unwrap_or(0)
    } else {
        u32::try_from(conn.view.len()).unwrap_or(0)
    };
    let mut hits: Vec<(u32, u32)> = conn
        .view
        .iter()
        .enumerate()
        .map(|(i, &uid)| (u32::try_from(i).unwrap() + 1, uid))
        .filter(|&(seq, uid)| in_set(set, if by_uid { uid } else { seq }, star))
        .filter(|&(_, uid)| s.mailbox(conn.mailbox).has(uid))
        .collect();
    let selected = match conn.mailbox {
        0 => None,
        i => Some(s.extras[i - 1].name.clone()),
    };
    let mut twice = false;
    if want_body {
        for &(_, uid) in &hits {
            *s.body_fetches.entry((conn.mailbox, uid)).or_default() += 1;
        }
        for (fault, count) in s.faults.iter_mut() {
            match fault {
                Fault::Reverse { times } if fires(count, *times) => hits.reverse(),
                Fault::Twice { times } if fires(count, *times) => twice = true,
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    let mut tagged = format!("{tag} OK Fetch completed\r\n");
    for (seq, uid) in hits {
        let mut how = None;
        if want_body {
            for (fault, count) in s.faults.iter_mut() {
                let (u, times, h) = match fault {
                    Fault::Fetch { uid, times, how } if selected.is_none() => (uid, times, how),
                    Fault::FetchIn {
                        mailbox,
                        uid,
                        times,
                        how,
                    } if selected.as_ref() == Some(mailbox) => (uid, times, how),
                    _ => continue,
                };
                if *u == uid && fires(count, *times) {
                    how = Some(h.clone());
                }
            }
        }
        let Some(m) = s.mailbox(conn.mailbox).get(uid).cloned() else {
            continue;
        };
        let date = imap_date(m.internal_date);
        let body = match partial {
            Some(n) => &m.raw[..m.raw.len().min(n)],
            None => &m.raw[..],
        };
        let label = if partial.is_some() {
            "BODY[]<0>"
        } else {
            "BODY[]"
        };
        let mut meta = String::new();
        if by_uid || items.contains("UID") {
            meta.push_str(&format!("UID {uid}"));
        }
        let push_meta = |meta: &mut String, item: String| {
            if !meta.is_empty() {
                meta.push(' ');
            }
            meta.push_str(&item);
        };
        if items.contains("INTERNALDATE") {
            push_meta(&mut meta, format!("INTERNALDATE \"{date}\""));
        }
        if items.contains("RFC822.SIZE") {
            push_meta(&mut meta, format!("RFC822.SIZE {}", m.raw.len()));
        }
        let normal = |meta: &str| -> Vec<u8> {
            let mut r = format!("* {seq} FETCH ({meta}").into_bytes();
            if want_body {
                let sep = if meta.is_empty() { "" } else { " " };
                r.extend_from_slice(format!("{sep}{label} {{{}}}\r\n", body.len()).as_bytes());
                r.extend_from_slice(body);
            }
            r.extend_from_slice(b")\r\n");
            r
        };
        match how {
            None => {
                let r = normal(&meta);
                if twice {
                    out.extend_from_slice(&r);
                }
                out.extend(r);
            }
            Some(FetchFault::No(text)) => {
                tagged = format!("{tag} NO {text}\r\n");
            }
            Some(FetchFault::Expunged) => {
                s.mailbox_mut(conn.mailbox)
                    .messages
                    .retain(|x| x.uid != uid);
                tagged = format!(
                    "{tag} NO [EXPUNGEISSUED] Some of the requested messages no longer exist\r\n"
                );
            }
            Some(FetchFault::Bye) => {
                out.extend_from_slice(b"* BYE Internal error occurred\r\n");
                return (out, String::new(), Then::Close);
            }
            Some(FetchFault::Crash) => return (out, String::new(), Then::Close),
            Some(FetchFault::NilBody) => {
                out.extend_from_slice(format!("* {seq} FETCH ({meta} {label} NIL)\r\n").as_bytes());
            }
            Some(FetchFault::Split) => {
                out.extend_from_slice(format!("* {seq} FETCH (UID {uid})\r\n").as_bytes());
                let mut second = String::new();
                if by_uid {
                    second.push_str(&format!("UID {uid} "));
                }
                second.push_str(&format!(
                    "INTERNALDATE \"{date}\" RFC822.SIZE {}",
                    m.raw.len()
                ));
                out.extend(normal(&second));
            }
            Some(FetchFault::Garbage) => {
                out.extend_from_slice(
                    format!(
                        "* {seq} FETCH (UID {uid} ]]%%garbage(( {label} {{{}}}\r\n",
                        body.len()
                    )
                    .as_bytes(),
                );
                out.extend_from_slice(body);
                out.extend_from_slice(b" !!)\r\n");
            }
            Some(FetchFault::CutLiteral) => {
                out.extend_from_slice(
                    format!("* {seq} FETCH ({meta} {label} {{{}}}\r\n", body.len()).as_bytes(),
                );
                out.extend_from_slice(&body[..body.len() / 2]);
                return (out, String::new(), Then::Close);
            }
            Some(FetchFault::HugeLiteral(n)) => {
                out.extend_from_slice(
                    format!("* {seq} FETCH ({meta} {label} {{{n}}}\r\n").as_bytes(),
                );
                out.extend(std::iter::repeat_n(b'x', n));
                out.extend_from_slice(b")\r\n");
            }
        }
    }
    (out, tagged, Then::Continue)
}

fn search(
    s: &mut State,
    conn: &mut Conn,
    tag: &str,
    criteria: &str,
    by_uid: bool,
) -> (Vec<u8>, String, Then) {
    let words: Vec<&str> = criteria.split_whitespace().collect();
    let uid_set = words
        .iter()
        .position(|w| *w == "UID")
        .and_then(|i| words.get(i + 1))
        .map(|w| w.to_string());
    let model = s.mailbox(conn.mailbox);
    let highest = model.messages.iter().map(|m| m.uid).max().unwrap_or(0);
    let found: Vec<u32> = model
        .messages
        .iter()
        .map(|m| m.uid)
        .filter(|&uid| match &uid_set {
            None => true,
            Some(set) if s.sloppy_search => {
                // Sloppy: honours only the lower end of the first range.
                let low = set
                    .split([':', ','])
                    .next()
                    .and_then(|a| a.parse::<u32>().ok())
                    .unwrap_or(1);
                uid >= low
            }
            Some(set) => in_set(set, uid, highest),
        })
        .collect();
    let listed: Vec<String> = if by_uid {
        found.iter().map(u32::to_string).collect()
    } else {
        found
            .iter()
            .filter_map(|u| conn.view.iter().position(|v| v == u))
            .map(|i| (i + 1).to_string())
            .collect()
    };
    let mut line = String::from("* SEARCH");
    for l in listed {
        line.push(' ');
        line.push_str(&l);
    }
    line.push_str("\r\n");
    (
        line.into_bytes(),
        format!("{tag} OK Search completed\r\n"),
        Then::Continue,
    )
}

/// `dd-Mon-yyyy hh:mm:ss +0000` for IMAP's INTERNALDATE.
pub fn imap_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{day:02}-{}-{year} {:02}:{:02}:{:02} +0000",
        MONTHS[usize::try_from(month - 1).unwrap_or(0)],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
