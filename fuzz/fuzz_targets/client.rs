//! Fuzz target for the client state machine (`proto::client::Client`): the
//! whole sans-I/O connection, not only its parser, driven by arbitrary
//! server bytes.
//!
//! The parser target proves that bytes become typed responses safely; this
//! one proves that the *machine* survives whatever those responses say:
//! tags that do not match, continuations nobody asked for, IDLE answered
//! in odd ways, timeouts at every moment, a failed connection used again.
//!
//! # Input
//! `[chunk sizes] [flags] [value length] [value ...] [server bytes ...]`
//! - chunk sizes: two sizes (low and high nibble, 1..=16; ×256 when flag
//!   0x80 is set) used in turn to cut the server bytes; each chunk is cut
//!   again after every LF, and commands are issued between the pieces;
//! - flags: the low nibble picks how far the fake clock moves after each
//!   chunk (0 to 10 min, so every deadline fires somewhere); 0x10 uses the
//!   value as the user name, 0x20 as the mailbox, 0x40 sends DONE right
//!   after IDLE (before the server's `+`);
//! - the value (0 to 15 bytes, decoded lossily) is the password, and the
//!   user name or mailbox as flagged: CR, LF and NUL reach the encoder.
//!
//! # The session
//! After the greeting, whenever the machine is idle: CAPABILITY (if
//! unknown), LOGIN (AUTHENTICATE PLAIN under LOGINDISABLED), EXAMINE,
//! STATUS, IDLE (ended with DONE when EXISTS or EXPUNGE arrives, as the
//! watcher does), FETCH, UID SEARCH, NOOP, LOGOUT; a command the state
//! does not allow is skipped.
//!
//! # Asserted
//! - no panic;
//! - every byte sent belongs to the command in flight, is CRLF-framed,
//!   and the user-supplied values decode back exactly from their atom,
//!   quoted string or literal: a CR or LF never reaches the wire inside a
//!   value; a value holding CR, LF or NUL is refused with nothing sent,
//!   and only such a value is refused;
//! - a completion carries the tag and kind of the command in flight, once;
//!   the greeting comes once and first; `IdleStarted` only during IDLE;
//! - `handle_timeout` before the deadline does nothing;
//! - a failure sticks: later calls repeat it and no command starts;
//! - memory: the bytes the machine holds (counted by a global allocator)
//!   stay within a fixed bound after every step, with small limits.
//!
//! The protocol modules are compiled in by path, as in the parser target,
//! so the target builds without tokio, actix and rustls.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;

// At the crate root, as siblings, so that `super::...` inside the modules
// resolves as it does inside `emap::proto`.
#[allow(dead_code)]
#[path = "../../src/proto/client.rs"]
mod client;
#[allow(dead_code)]
#[path = "../../src/proto/encode.rs"]
mod encode;
#[allow(dead_code)]
#[path = "../../src/proto/date.rs"]
mod date;

#[path = "../../src/proto/error.rs"]
mod error;
#[allow(dead_code)]
#[path = "../../src/proto/parser.rs"]
mod parser;
#[allow(dead_code)]
#[path = "../../src/proto/types.rs"]
mod types;

// What `emap::proto` re-exports, for `super::...` in client.rs.
use error::{Excerpt, ProtoError};
use parser::{Limits, Parser};
use types::{Code, Condition, Data, ListEntry, Response, Status, Tagged};

use client::{Client, ClientError, CommandKind, Event, Mechanism, Options, State};

/// Counts the bytes live on the heap, to bound what the machine keeps.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counter is only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Small limits, so that every limit is reached by short inputs.
const LIMITS: Limits = Limits {
    max_line: 256,
    max_literal: 1024,
};

/// The most heap the machine (plus this harness's few small buffers) may
/// hold after any step: the parser's `max_line + max_literal` and a read
/// chunk, capabilities, one ESEARCH result expanded to the cap of
/// `MAX_SEARCH_RESULTS` UIDs (4 MiB), and slack.
const MEMORY_BOUND: usize = client::MAX_SEARCH_RESULTS * 4 + 2 * 1024 * 1024;

/// How far the clock moves after each chunk, picked by the flags.
const STEPS_MS: [u64; 16] = [
    0, 0, 0, 0, 1, 10, 100, 1_000, 5_000, 9_000, 10_000, 29_000, 30_000, 61_000, 300_000, 600_000,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    Capability,
    Login,
    Select,
    Status,
    Idle,
    Fetch,
    Search,
    Noop,
    Logout,
}

const SEQUENCE: [Cmd; 9] = [
    Cmd::Capability,
    Cmd::Login,
    Cmd::Select,
    Cmd::Status,
    Cmd::Idle,
    Cmd::Fetch,
    Cmd::Search,
    Cmd::Noop,
    Cmd::Logout,
];

/// A command issued, and what it wrote.
struct Issued {
    tag: String,
    kind: CommandKind,
    /// The user-supplied arguments it must carry, in order.
    values: Vec<Vec<u8>>,
    /// Every byte sent while it was in flight.
    wire: Vec<u8>,
    completed: bool,
}

struct Harness {
    client: Client,
    now: Instant,
    next: usize,
    current: Option<Issued>,
    greeted: bool,
    user: String,
    password: String,
    mailbox: String,
    done_early: bool,
    failed: Option<ProtoError>,
    base: usize,
}

fn forbidden(s: &str) -> bool {
    s.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

impl Harness {
    /// Moves what the machine wants to send into the command's record.
    fn collect(&mut self) {
        while let Some(bytes) = self.client.poll_transmit() {
            match self.current.as_mut() {
                Some(c) => c.wire.extend_from_slice(&bytes),
                None => panic!("bytes sent with no command in flight: {bytes:?}"),
            }
        }
    }

    fn check_memory(&self) {
        let live = LIVE.load(Ordering::Relaxed).saturating_sub(self.base);
        assert!(live <= MEMORY_BOUND, "{live} bytes live");
    }

    /// Takes every event and checks it against the command in flight.
    fn drain(&mut self) {
        while let Some(ev) = self.client.poll_event() {
            match ev {
                Event::Greeted(_) => {
                    assert!(!self.greeted, "greeted twice");
                    assert!(self.current.is_none(), "greeted after a command");
                    self.greeted = true;
                }
                Event::Completed(done) => {
                    let c = self.current.as_mut().expect("completion with no command");
                    assert_eq!(done.tag, c.tag, "completion of another tag");
                    assert_eq!(done.kind, c.kind, "completion of another kind");
                    assert!(!c.completed, "completed twice");
                    c.completed = true;
                    assert!(!self.client.is_busy(), "busy after the completion");
                    if done.kind == CommandKind::Logout {
                        assert_eq!(self.client.state(), State::Logout);
                    }
                }
                Event::IdleStarted => {
                    let c = self.current.as_ref().expect("IDLE started with no command");
                    assert_eq!(c.kind, CommandKind::Idle, "IdleStarted outside IDLE");
                }
                Event::IdleDoneSent => {
                    let c = self.current.as_ref().expect("DONE with no command");
                    assert_eq!(c.kind, CommandKind::Idle, "DONE outside IDLE");
                }
                Event::Data(Data::Exists(_) | Data::Expunge(_)) => {
                    // As the watcher does: news during IDLE ends it.
                    self.client.done(self.now);
                }
                Event::Data(_) => {}
                // A response that did not parse, skipped: the stream is in
                // sync and the command in flight goes on.
                Event::Malformed => {}
            }
        }
        self.collect();
    }

    /// Issues the next commands of the sequence while the machine is idle.
    fn issue(&mut self) {
        loop {
            if self.failed.is_some()
                || self.client.is_busy()
                || !matches!(
                    self.client.state(),
                    State::NotAuthenticated | State::Authenticated | State::Selected
                )
            {
                return;
            }
            let Some(&cmd) = SEQUENCE.get(self.next) else {
                return;
            };
            self.next += 1;
            let now = self.now;
            let (user, password, mailbox) = (
                self.user.clone(),
                self.password.clone(),
                self.mailbox.clone(),
            );
            let (result, kind, values, refusable) = match cmd {
                Cmd::Capability => {
                    if self.client.capabilities().is_some() {
                        continue;
                    }
                    (
                        self.client.capability(now),
                        CommandKind::Capability,
                        vec![],
                        false,
                    )
                }
                Cmd::Login => {
                    let bad = forbidden(&user) || forbidden(&password);
                    if self.client.has_capability("LOGINDISABLED") {
                        (
                            self.client
                                .authenticate(Mechanism::Plain, &user, &password, None, now),
                            CommandKind::Authenticate(Mechanism::Plain),
                            vec![],
                            bad,
                        )
                    } else {
                        (
                            self.client.login(&user, &password, now),
                            CommandKind::Login,
                            vec![user.into_bytes(), password.into_bytes()],
                            bad,
                        )
                    }
                }
                Cmd::Select => {
                    let encoded = if mailbox.eq_ignore_ascii_case("INBOX") {
                        "INBOX".to_owned()
                    } else {
                        encode::utf7_encode(&mailbox)
                    };
                    (
                        self.client.select(&mailbox, true, now),
                        CommandKind::Select,
                        vec![encoded.into_bytes()],
                        forbidden(&mailbox),
                    )
                }
                Cmd::Status => (
                    self.client.status(&mailbox, "UIDNEXT UIDVALIDITY", now),
                    CommandKind::Status,
                    vec![],
                    forbidden(&mailbox),
                ),
                Cmd::Idle => (self.client.idle(now), CommandKind::Idle, vec![], false),
                Cmd::Fetch => (
                    self.client.fetch(
                        false,
                        "1:3",
                        "(UID INTERNALDATE RFC822.SIZE BODY.PEEK[]<0.512>)",
                        now,
                    ),
                    CommandKind::Fetch,
                    vec![],
                    false,
                ),
                Cmd::Search => (
                    self.client.uid_search("UID 1:10 SINCE 1-Jan-2026", now),
                    CommandKind::Search,
                    vec![],
                    false,
                ),
                Cmd::Noop => (self.client.noop(now), CommandKind::Noop, vec![], false),
                Cmd::Logout => (self.client.logout(now), CommandKind::Logout, vec![], false),
            };
            match result {
                Ok(tag) => {
                    assert!(!refusable, "{cmd:?} accepted a value with CR, LF or NUL");
                    self.finish_command();
                    self.current = Some(Issued {
                        tag,
                        kind,
                        values,
                        wire: Vec::new(),
                        completed: false,
                    });
                    if cmd == Cmd::Idle && self.done_early {
                        self.client.done(now);
                    }
                    self.collect();
                    return;
                }
                Err(ClientError::Input(_)) => {
                    assert!(refusable, "{cmd:?} refused a clean value");
                    assert!(self.client.poll_transmit().is_none(), "refused, yet sent");
                }
                Err(ClientError::Misuse(_)) => {
                    assert!(self.client.poll_transmit().is_none(), "misuse, yet sent");
                }
                Err(ClientError::Failed(e)) => {
                    panic!("command refused with {e:?} while the machine had not failed")
                }
            }
        }
    }

    /// Checks what the command in flight wrote, and forgets it.
    fn finish_command(&mut self) {
        if let Some(c) = self.current.take() {
            check_wire(&c);
        }
    }

    /// Records a failure and checks that it sticks.
    fn failed(&mut self, e: ProtoError) {
        assert_eq!(self.client.error(), Some(&e));
        assert_eq!(
            self.client.receive(b"* 1 EXISTS\r\n", self.now),
            Err(e.clone())
        );
        assert_eq!(self.client.handle_timeout(self.now), Err(e.clone()));
        assert_eq!(self.client.poll_timeout(), None);
        assert!(matches!(
            self.client.noop(self.now),
            Err(ClientError::Failed(f)) if f == e
        ));
        assert_eq!(self.client.state(), State::Logout);
        self.failed = Some(e);
    }

    fn receive(&mut self, piece: &[u8]) {
        if let Err(e) = self.client.receive(piece, self.now) {
            self.drain();
            self.failed(e);
        }
        self.drain();
    }

    fn tick(&mut self, step: Duration) {
        self.now += step;
        let deadline = self.client.poll_timeout();
        let early = deadline.is_some_and(|d| self.now < d);
        match self.client.handle_timeout(self.now) {
            Ok(()) if early => {
                assert!(
                    self.client.poll_transmit().is_none(),
                    "sent before the deadline"
                );
                assert!(
                    self.client.poll_event().is_none(),
                    "event before the deadline"
                );
            }
            Ok(()) => {}
            Err(e) => {
                assert!(!early, "failed before the deadline: {e:?}");
                self.drain();
                self.failed(e);
            }
        }
        self.drain();
    }
}

/// Checks one command's bytes: `tag SP words [args] CRLF`, then only the
/// lines its kind allows (DONE for IDLE, SASL responses for AUTHENTICATE),
/// all CRLF-framed, no CR or LF anywhere else, and the user-supplied
/// values decoding back exactly.
fn check_wire(c: &Issued) {
    let w = &c.wire;
    if w.is_empty() {
        return;
    }
    let prefix = format!("{} ", c.tag);
    assert!(
        w.starts_with(prefix.as_bytes()),
        "wire does not start with the tag: {w:?}"
    );
    let mut pos = prefix.len();
    let mut tokens: Vec<Vec<u8>> = Vec::new();
    // The command line, with its literals.
    loop {
        let Some(&b) = w.get(pos) else {
            return; // cut short (a synchronizing literal still waits)
        };
        match b {
            b'\r' => {
                assert_eq!(w.get(pos + 1), Some(&b'\n'), "bare CR in {w:?}");
                pos += 2;
                break;
            }
            b'\n' => panic!("bare LF in {w:?}"),
            b' ' => pos += 1,
            b'"' => {
                let mut out = Vec::new();
                pos += 1;
                loop {
                    let Some(&b) = w.get(pos) else {
                        panic!("unterminated quoted string in {w:?}")
                    };
                    pos += 1;
                    match b {
                        b'"' => break,
                        b'\\' => {
                            let e = *w.get(pos).expect("dangling escape");
                            pos += 1;
                            out.push(e);
                        }
                        b'\r' | b'\n' | 0 => panic!("CR, LF or NUL in a quoted string: {w:?}"),
                        _ => out.push(b),
                    }
                }
                tokens.push(out);
            }
            b'{' => {
                let close = w[pos..]
                    .iter()
                    .position(|&b| b == b'}')
                    .expect("unterminated literal size");
                let digits = &w[pos + 1..pos + close];
                let digits = digits.strip_suffix(b"+").unwrap_or(digits);
                let n: usize = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|d| d.parse().ok())
                    .expect("bad literal size");
                pos += close + 1;
                assert_eq!(
                    w.get(pos..pos + 2),
                    Some(&b"\r\n"[..]),
                    "no CRLF after {{n}}"
                );
                pos += 2;
                let Some(data) = w.get(pos..pos + n) else {
                    return; // the rest waits for the server's `+`
                };
                assert!(
                    !data.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)),
                    "CR, LF or NUL inside a literal value: {w:?}"
                );
                tokens.push(data.to_vec());
                pos += n;
            }
            _ => {
                let end = w[pos..]
                    .iter()
                    .position(|&b| matches!(b, b' ' | b'\r' | b'\n'))
                    .map_or(w.len(), |i| pos + i);
                tokens.push(w[pos..end].to_vec());
                pos = end;
            }
        }
    }
    if !c.values.is_empty() {
        // The verb, then exactly the values.
        let args = tokens.get(1..).unwrap_or_default();
        assert_eq!(args, &c.values[..], "values do not decode back from {w:?}");
    }
    // What may follow the command line.
    for line in w[pos..].split_inclusive(|&b| b == b'\n') {
        let Some(text) = line.strip_suffix(b"\r\n") else {
            panic!("unframed bytes after the command: {w:?}")
        };
        assert!(!text.contains(&b'\r'), "bare CR in {w:?}");
        match c.kind {
            CommandKind::Idle => assert_eq!(text, b"DONE", "{w:?}"),
            CommandKind::Authenticate(_) => assert!(
                text.iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'*')),
                "not a SASL response: {w:?}"
            ),
            _ => panic!("bytes after the command line: {w:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [sizes, flags, len, rest @ ..] = data else {
        return;
    };
    let len = usize::from(len & 0x0f).min(rest.len());
    let (value, server) = rest.split_at(len);
    let value = String::from_utf8_lossy(value).into_owned();
    let scale = if flags & 0x80 != 0 { 256 } else { 1 };
    let sizes = [
        (usize::from(sizes & 0x0f) + 1) * scale,
        (usize::from(sizes >> 4) + 1) * scale,
    ];
    let step = Duration::from_millis(STEPS_MS[usize::from(flags & 0x0f)]);
    let pick = |bit: u8, default: &str| {
        if flags & bit != 0 && !value.is_empty() {
            value.clone()
        } else {
            default.to_owned()
        }
    };
    let opts = Options {
        limits: LIMITS,
        greeting_timeout: Duration::from_secs(10),
        command_timeout: Duration::from_secs(30),
        idle_inactivity: Duration::from_secs(60),
        idle_round: Duration::from_secs(300),
        // Overall command deadlines at the library's defaults, so the
        // fuzzed timeouts exercise them too.
        ..Options::default()
    };
    let now = Instant::now();
    let base = LIVE.load(Ordering::Relaxed);
    let mut h = Harness {
        client: Client::new(opts, now),
        now,
        next: 0,
        current: None,
        greeted: false,
        user: pick(0x10, "user"),
        password: if value.is_empty() {
            "p4ss w0rd".to_owned()
        } else {
            value.clone()
        },
        mailbox: pick(0x20, "INBOX"),
        done_early: flags & 0x40 != 0,
        failed: None,
        base,
    };
    let mut rest = server;
    let mut turn = 0;
    while !rest.is_empty() && h.failed.is_none() {
        let n = sizes[turn % 2].min(rest.len());
        turn += 1;
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        for piece in chunk.split_inclusive(|&b| b == b'\n') {
            h.receive(piece);
            h.issue();
            h.check_memory();
            if h.failed.is_some() {
                break;
            }
        }
        if h.failed.is_none() {
            h.tick(step);
            h.issue();
            h.check_memory();
        }
    }
    // Let every deadline pass.
    if h.failed.is_none() {
        h.tick(Duration::from_secs(3600));
        h.issue();
        h.tick(Duration::from_secs(3600));
    }
    h.finish_command();
});
