//! A minimal, blocking, line-oriented IMAP client for tests.
//!
//! Tests use it to look at the server independently of emap: to check what
//! really landed in a mailbox, to hold extra connections open, to log in
//! with odd passwords, or to speak raw protocol at Dovecot. It is plain TCP
//! (no TLS), every read and write has a timeout, and it understands just
//! enough IMAP syntax to be useful: tagged commands, synchronising literals
//! in both directions, and server responses that carry literals.
//!
//! A *response* here is one logical server response: a line, plus any
//! literals it announces (`{n}` at a line end) and the line continuations
//! after them, without the final CRLF. Non-UTF-8 bytes are replaced when a
//! response is returned as a `String`; use the `*_bytes` variants for
//! exact bytes.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long any single read or write may block, unless changed with
/// [`RawImap::set_timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// One plaintext IMAP connection (to 127.0.0.1 unless made with
/// [`RawImap::try_connect_to`]).
pub struct RawImap {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    greeting: String,
    tag: u32,
    /// Bytes of the response being assembled (kept across read timeouts).
    pending: Vec<u8>,
    /// Where the current line of `pending` starts.
    line_start: usize,
    /// Literal bytes still to read before the response line continues.
    literal_left: usize,
    /// Whether to re-arm TCP_QUICKACK before each read.
    quickack: bool,
}

/// True if the tagged (last) line of `lines` is an `OK` completion.
pub fn is_ok(lines: &[String]) -> bool {
    tagged_status(lines) == Some("OK")
}

/// True if the tagged (last) line of `lines` is a `NO` completion.
pub fn is_no(lines: &[String]) -> bool {
    tagged_status(lines) == Some("NO")
}

/// True if the tagged (last) line of `lines` is a `BAD` completion.
pub fn is_bad(lines: &[String]) -> bool {
    tagged_status(lines) == Some("BAD")
}

fn tagged_status(lines: &[String]) -> Option<&str> {
    lines.last()?.split(' ').nth(1)
}

/// `s` as an IMAP quoted string, if it can be one (7-bit, no CR/LF/NUL).
pub fn quoted(s: &str) -> Option<String> {
    if !s
        .bytes()
        .all(|b| b.is_ascii() && b != b'\r' && b != b'\n' && b != 0)
    {
        return None;
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Some(out)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl RawImap {
    /// Connects to `127.0.0.1:port` and reads the greeting; panics (with
    /// the reason) if that fails.
    pub fn connect(port: u16) -> RawImap {
        RawImap::try_connect(port)
            .unwrap_or_else(|e| panic!("RawImap: connecting to 127.0.0.1:{port} failed: {e}"))
    }

    /// Connects to `127.0.0.1:port` and reads the greeting.
    pub fn try_connect(port: u16) -> io::Result<RawImap> {
        RawImap::connect_addr(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
    }

    /// Connects to `host:port` and reads the greeting (the benchmark's
    /// reference client may face an existing server named with `--host`).
    pub fn try_connect_to(host: &str, port: u16) -> io::Result<RawImap> {
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))?
            .next()
            .ok_or_else(|| io::Error::other(format!("{host}: no address")))?;
        RawImap::connect_addr(addr)
    }

    fn connect_addr(addr: SocketAddr) -> io::Result<RawImap> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(DEFAULT_TIMEOUT))?;
        stream.set_write_timeout(Some(DEFAULT_TIMEOUT))?;
        let writer = stream.try_clone()?;
        let mut imap = RawImap {
            reader: BufReader::new(stream),
            writer,
            greeting: String::new(),
            tag: 0,
            pending: Vec::new(),
            line_start: 0,
            literal_left: 0,
            quickack: false,
        };
        imap.greeting = imap.read_response()?;
        Ok(imap)
    }

    /// The server greeting, e.g. `* OK [CAPABILITY ...] Dovecot ready.`.
    pub fn greeting(&self) -> &str {
        &self.greeting
    }

    /// Sets the read and write timeout (`None` blocks forever: avoid).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        let _ = self.writer.set_read_timeout(timeout);
        let _ = self.writer.set_write_timeout(timeout);
    }

    /// Asks the kernel to acknowledge received data at once, before every
    /// read (Linux clears the flag by itself). Without it a server that
    /// holds small writes back with Nagle until they are acknowledged
    /// (Cyrus) waits for the delayed ACK, ~40 ms: emap does this too, and
    /// the benchmark's reference client must not be slower than the server
    /// allows.
    pub fn set_quickack(&mut self, on: bool) {
        self.quickack = on;
    }

    /// The local address of this connection.
    pub fn local_addr(&self) -> SocketAddr {
        self.writer.local_addr().expect("local_addr")
    }

    /// The next command tag (`a1`, `a2`, ...).
    pub fn next_tag(&mut self) -> String {
        self.tag += 1;
        format!("a{}", self.tag)
    }

    /// Sends `<tag> <cmd>` and returns all responses up to and including
    /// the tagged completion (its last element). Panics on I/O errors,
    /// timeouts and connection loss.
    pub fn command(&mut self, cmd: &str) -> Vec<String> {
        self.try_command(cmd)
            .unwrap_or_else(|e| panic!("RawImap: command {cmd:?} failed: {e}"))
    }

    /// Like [`RawImap::command`], returning I/O errors instead of panicking.
    pub fn try_command(&mut self, cmd: &str) -> io::Result<Vec<String>> {
        Ok(self
            .try_command_with_literals(&[cmd], &[])?
            .into_iter()
            .map(|r| String::from_utf8_lossy(&r).into_owned())
            .collect())
    }

    /// Sends a command that contains synchronising literals and returns the
    /// exact response bytes.
    ///
    /// `pieces` and `literals` interleave: `pieces[0] {len0}` CRLF, wait for
    /// the `+` continuation, `literals[0] pieces[1] {len1}` ... `pieces[n]`
    /// CRLF; so `pieces.len()` must be `literals.len() + 1`. The `{n}`
    /// markers are added here. If the server answers a literal announcement
    /// with a tagged response instead of `+`, that response ends the command.
    pub fn try_command_with_literals(
        &mut self,
        pieces: &[&str],
        literals: &[&[u8]],
    ) -> io::Result<Vec<Vec<u8>>> {
        assert_eq!(
            pieces.len(),
            literals.len() + 1,
            "pieces must surround the literals"
        );
        let tag = self.next_tag();
        let tag_prefix = format!("{tag} ");
        let mut responses = Vec::new();
        let mut out = format!("{tag} ").into_bytes();
        for (i, piece) in pieces.iter().enumerate() {
            out.extend_from_slice(piece.as_bytes());
            let Some(literal) = literals.get(i) else {
                break;
            };
            out.extend_from_slice(format!("{{{}}}\r\n", literal.len()).as_bytes());
            self.send_raw(&out)?;
            out.clear();
            // Wait for the continuation request.
            loop {
                let response = self.read_response_bytes()?;
                if response.starts_with(b"+") {
                    break;
                }
                let done = response.starts_with(tag_prefix.as_bytes());
                responses.push(response);
                if done {
                    return Ok(responses);
                }
            }
            out.extend_from_slice(literal);
        }
        out.extend_from_slice(b"\r\n");
        self.send_raw(&out)?;
        loop {
            let response = self.read_response_bytes()?;
            let done = response.starts_with(tag_prefix.as_bytes());
            responses.push(response);
            if done {
                return Ok(responses);
            }
        }
    }

    /// `LOGIN` with quoted strings when possible, otherwise with literals
    /// (non-ASCII or CR/LF). Returns the responses; check with [`is_ok`].
    pub fn login(&mut self, user: &str, password: &str) -> Vec<String> {
        match (quoted(user), quoted(password)) {
            (Some(u), Some(p)) => self.command(&format!("LOGIN {u} {p}")),
            _ => self.login_literal(user, password),
        }
    }

    /// `LOGIN {n}` CRLF `user {m}` CRLF `password` CRLF: both arguments as
    /// synchronising literals, so spaces, quotes, backslashes and non-ASCII
    /// bytes go over the wire exactly as given.
    pub fn login_literal(&mut self, user: &str, password: &str) -> Vec<String> {
        self.try_command_with_literals(
            &["LOGIN ", " ", ""],
            &[user.as_bytes(), password.as_bytes()],
        )
        .unwrap_or_else(|e| panic!("RawImap: LOGIN (literals) failed: {e}"))
        .into_iter()
        .map(|r| String::from_utf8_lossy(&r).into_owned())
        .collect()
    }

    /// Logs in and panics unless the server says `OK`.
    pub fn login_ok(&mut self, user: &str, password: &str) {
        let lines = self.login(user, password);
        assert!(is_ok(&lines), "LOGIN {user} failed: {lines:?}");
    }

    /// `SELECT mailbox` (quoted); returns the responses.
    pub fn select(&mut self, mailbox: &str) -> Vec<String> {
        let mailbox = quoted(mailbox).expect("mailbox name must be 7-bit");
        self.command(&format!("SELECT {mailbox}"))
    }

    /// The `n` of the last `* n EXISTS` response in `lines`.
    pub fn exists(lines: &[String]) -> Option<u32> {
        lines.iter().rev().find_map(|l| {
            let rest = l.strip_prefix("* ")?;
            let (n, word) = rest.split_once(' ')?;
            word.eq_ignore_ascii_case("EXISTS")
                .then(|| n.parse().ok())
                .flatten()
        })
    }

    /// `APPEND mailbox {n}` + message; returns the responses (the tagged OK
    /// carries `[APPENDUID ...]`).
    pub fn append(&mut self, mailbox: &str, raw: &[u8]) -> Vec<String> {
        let mailbox = quoted(mailbox).expect("mailbox name must be 7-bit");
        let prefix = format!("APPEND {mailbox} ");
        self.try_command_with_literals(&[&prefix, ""], &[raw])
            .unwrap_or_else(|e| panic!("RawImap: APPEND failed: {e}"))
            .into_iter()
            .map(|r| String::from_utf8_lossy(&r).into_owned())
            .collect()
    }

    /// Fetches the full raw bytes (`BODY.PEEK[]`) of every message in the
    /// selected mailbox, in sequence order. Panics unless the FETCH
    /// succeeds.
    pub fn fetch_all(&mut self) -> Vec<Vec<u8>> {
        let responses = self
            .try_command_with_literals(&["FETCH 1:* (BODY.PEEK[])"], &[])
            .unwrap_or_else(|e| panic!("RawImap: FETCH failed: {e}"));
        let (tagged, untagged) = responses.split_last().expect("tagged response");
        let tagged = String::from_utf8_lossy(tagged);
        assert!(
            tagged.split(' ').nth(1) == Some("OK"),
            "FETCH failed: {tagged}"
        );
        untagged
            .iter()
            .filter_map(|r| extract_first_literal(r))
            .collect()
    }

    /// Writes raw bytes as they are (no tag, no CRLF added).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)?;
        self.writer.flush()
    }

    /// Writes `line` followed by CRLF (no tag added), e.g. `DONE`.
    pub fn send_line(&mut self, line: &str) -> io::Result<()> {
        self.send_raw(format!("{line}\r\n").as_bytes())
    }

    /// Reads one logical response (with its literals) as a lossy string.
    /// Errors with `UnexpectedEof` when the server closed the connection.
    pub fn read_response(&mut self) -> io::Result<String> {
        Ok(String::from_utf8_lossy(&self.read_response_bytes()?).into_owned())
    }

    /// Reads one logical response within `timeout`; `Ok(None)` on timeout
    /// (partial data is kept for the next read).
    pub fn read_response_timeout(&mut self, timeout: Duration) -> io::Result<Option<String>> {
        Ok(self
            .read_response_bytes_timeout(timeout)?
            .map(|r| String::from_utf8_lossy(&r).into_owned()))
    }

    /// [`RawImap::read_response_timeout`] as exact bytes.
    pub fn read_response_bytes_timeout(
        &mut self,
        timeout: Duration,
    ) -> io::Result<Option<Vec<u8>>> {
        let old = self.writer.read_timeout()?;
        self.writer
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        let result = self.read_response_bytes();
        self.writer.set_read_timeout(old)?;
        match result {
            Ok(r) => Ok(Some(r)),
            Err(e) if is_timeout(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads responses until one satisfies `pred` (returned last), or
    /// `timeout` elapses (`Err(TimedOut)`, with what was read so far in the
    /// message). Use it to await e.g. `* 1 EXISTS` during IDLE.
    pub fn read_until(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> io::Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no matching response within {timeout:?}; got {seen:?}"),
                ));
            }
            if let Some(response) = self.read_response_timeout(left)? {
                let done = pred(&response);
                seen.push(response);
                if done {
                    return Ok(seen);
                }
            }
        }
    }

    /// Starts `IDLE` and waits for the `+` continuation; returns the tag to
    /// pass to [`RawImap::done`].
    pub fn idle(&mut self) -> String {
        let tag = self.next_tag();
        self.send_line(&format!("{tag} IDLE")).expect("send IDLE");
        let lines = self
            .read_until(DEFAULT_TIMEOUT, |l| {
                l.starts_with('+') || l.starts_with(&format!("{tag} "))
            })
            .expect("IDLE continuation");
        assert!(
            lines.last().is_some_and(|l| l.starts_with('+')),
            "IDLE refused: {lines:?}"
        );
        tag
    }

    /// Ends `IDLE` with `DONE` and returns the responses up to the tagged one.
    pub fn done(&mut self, tag: &str) -> Vec<String> {
        self.send_line("DONE").expect("send DONE");
        self.read_until(DEFAULT_TIMEOUT, |l| l.starts_with(&format!("{tag} ")))
            .expect("IDLE completion")
    }

    /// Sends `LOGOUT` and waits (briefly) for the server to close.
    pub fn logout(mut self) {
        let _ = self.try_command("LOGOUT");
    }

    /// Reads one response as exact bytes.
    pub fn read_response_bytes(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if self.quickack {
                let _ = socket2::SockRef::from(&self.writer).set_quickack(true);
            }
            if self.literal_left > 0 {
                let mut buf = vec![0u8; self.literal_left.min(64 * 1024)];
                let n = self.reader.read(&mut buf)?;
                if n == 0 {
                    return Err(eof());
                }
                self.pending.extend_from_slice(&buf[..n]);
                self.literal_left -= n;
                if self.literal_left == 0 {
                    self.line_start = self.pending.len();
                }
                continue;
            }
            let n = self.reader.read_until(b'\n', &mut self.pending)?;
            if n == 0 {
                return Err(eof());
            }
            if !self.pending.ends_with(b"\n") {
                continue;
            }
            let line = &self.pending[self.line_start..];
            if let Some(len) = literal_announcement(line) {
                self.literal_left = len;
                if len == 0 {
                    self.line_start = self.pending.len();
                }
                continue;
            }
            let mut response = std::mem::take(&mut self.pending);
            self.line_start = 0;
            while response.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                response.pop();
            }
            return Ok(response);
        }
    }
}

fn eof() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the server closed the connection",
    )
}

/// The `n` of a line ending in `{n}` CRLF (an announced literal).
fn literal_announcement(line: &[u8]) -> Option<usize> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = line.strip_suffix(b"}")?;
    let open = line.iter().rposition(|b| *b == b'{')?;
    let digits = &line[open + 1..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The bytes of the first literal in a response (e.g. the body in
/// `* 1 FETCH (BODY[] {n}\r\n...)`).
fn extract_first_literal(response: &[u8]) -> Option<Vec<u8>> {
    let mut start = 0;
    while let Some(pos) = response[start..].windows(2).position(|w| w == b"\r\n") {
        let line_end = start + pos + 2;
        if let Some(len) = literal_announcement(&response[..line_end]) {
            return response.get(line_end..line_end + len).map(<[u8]>::to_vec);
        }
        start = line_end;
    }
    None
}
