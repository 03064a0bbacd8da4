//! A minimal blocking IMAP client over one plain TCP socket, independent
//! of emap: the benchmark's "what the server itself allows" reference
//! (the `limit` scenario's raw IDLE client), its APPEND deliverer for an
//! existing server, and Cyrus administration (CREATE of user mailboxes).
//!
//! A response is one logical server response: a line plus the literals it
//! announces (`{n}` at a line end) and their continuation lines, without
//! the final CRLF. Reads keep partial data across timeouts, so a read
//! timeout is only a chance to check a deadline, never lost bytes.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::metrics::now_ns;

const TIMEOUT: Duration = Duration::from_secs(30);

pub struct Imap {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    pub greeting: String,
    tag: u32,
    pending: Vec<u8>,
    line_start: usize,
    literal_left: usize,
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl Imap {
    pub fn connect(host: &str, port: u16) -> io::Result<Imap> {
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))?
            .next()
            .ok_or_else(|| io::Error::other("no address"))?;
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        let writer = stream.try_clone()?;
        let mut imap = Imap {
            reader: BufReader::new(stream),
            writer,
            greeting: String::new(),
            tag: 0,
            pending: Vec::new(),
            line_start: 0,
            literal_left: 0,
        };
        imap.greeting = String::from_utf8_lossy(&imap.read_response()?).into_owned();
        Ok(imap)
    }

    fn next_tag(&mut self) -> String {
        self.tag += 1;
        format!("b{}", self.tag)
    }

    pub fn send_line(&mut self, line: &str) -> io::Result<()> {
        self.writer.write_all(format!("{line}\r\n").as_bytes())?;
        self.writer.flush()
    }

    /// Sends `<tag> <cmd>`; returns every response up to the tagged one
    /// (last).
    pub fn command(&mut self, cmd: &str) -> io::Result<Vec<String>> {
        let tag = self.next_tag();
        self.send_line(&format!("{tag} {cmd}"))?;
        self.until_tagged(&tag)
    }

    fn until_tagged(&mut self, tag: &str) -> io::Result<Vec<String>> {
        let prefix = format!("{tag} ");
        let mut out = Vec::new();
        loop {
            let r = String::from_utf8_lossy(&self.read_response()?).into_owned();
            let done = r.starts_with(&prefix);
            out.push(r);
            if done {
                return Ok(out);
            }
        }
    }

    /// LOGIN with quoted strings; fails unless OK.
    pub fn login(&mut self, user: &str, password: &str) -> io::Result<()> {
        let r = self.command(&format!("LOGIN {} {}", quote(user), quote(password)))?;
        ok_or_err(&r)
    }

    /// `APPEND mailbox {n}` + message (synchronising literal); fails
    /// unless OK. Returns the time the tagged OK was read.
    pub fn append(&mut self, mailbox: &str, raw: &[u8]) -> io::Result<u64> {
        let tag = self.next_tag();
        self.send_line(&format!(
            "{tag} APPEND {} {{{}}}",
            quote(mailbox),
            raw.len()
        ))?;
        loop {
            let r = self.read_response()?;
            if r.starts_with(b"+") {
                break;
            }
            if r.starts_with(format!("{tag} ").as_bytes()) {
                return Err(io::Error::other(String::from_utf8_lossy(&r).into_owned()));
            }
        }
        self.writer.write_all(raw)?;
        self.writer.write_all(b"\r\n")?;
        self.writer.flush()?;
        let r = self.until_tagged(&tag)?;
        let at = now_ns();
        ok_or_err(&r)?;
        Ok(at)
    }

    /// One response, waiting at most `timeout`; `None` on timeout (partial
    /// data is kept).
    pub fn read_response_timeout(&mut self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        self.writer
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        let r = self.read_response();
        self.writer.set_read_timeout(Some(TIMEOUT))?;
        match r {
            Ok(r) => Ok(Some(r)),
            Err(e) if is_timeout(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn read_response(&mut self) -> io::Result<Vec<u8>> {
        loop {
            quickack(&self.writer);
            if self.literal_left > 0 {
                let mut buf = vec![0u8; self.literal_left.min(64 * 1024)];
                let n = self.reader.read(&mut buf)?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
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
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if !self.pending.ends_with(b"\n") {
                continue;
            }
            if let Some(len) = literal_len(&self.pending[self.line_start..]) {
                self.literal_left = len;
                if len == 0 {
                    self.line_start = self.pending.len();
                }
                continue;
            }
            let mut r = std::mem::take(&mut self.pending);
            self.line_start = 0;
            while r.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                r.pop();
            }
            return Ok(r);
        }
    }
}

/// Asks the kernel to acknowledge received data at once (Linux clears the
/// flag by itself, so it is set before every read). Without it a server
/// that holds small writes back with Nagle until they are acknowledged
/// (Cyrus) waits for our delayed ACK, ~40 ms: emap does this too, and the
/// reference client must not be slower than the server allows.
pub fn quickack(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_quickack(true);
}

fn ok_or_err(lines: &[String]) -> io::Result<()> {
    match lines.last() {
        Some(l) if l.split(' ').nth(1) == Some("OK") => Ok(()),
        other => Err(io::Error::other(format!("{other:?}"))),
    }
}

pub fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The `n` of a line ending in `{n}` CRLF.
fn literal_len(line: &[u8]) -> Option<usize> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = line.strip_suffix(b"}")?;
    let open = line.iter().rposition(|b| *b == b'{')?;
    std::str::from_utf8(&line[open + 1..]).ok()?.parse().ok()
}

/// `* <n> <WORD>` → n, for the word given (EXISTS).
fn untagged_number(r: &[u8], word: &str) -> Option<u32> {
    let s = std::str::from_utf8(r.get(..r.len().min(64))?).ok()?;
    let rest = s.strip_prefix("* ")?;
    let mut it = rest.split(' ');
    let n = it.next()?.parse().ok()?;
    it.next()?.eq_ignore_ascii_case(word).then_some(n)
}

/// The number after `[UIDNEXT ` in a response.
fn uidnext(r: &str) -> Option<u32> {
    let at = r.find("[UIDNEXT ")? + 9;
    r[at..].split(']').next()?.trim().parse().ok()
}

/// The UID of a FETCH response (`UID n` among its items).
fn fetch_uid(r: &[u8]) -> Option<u32> {
    let head = &r[..r.iter().position(|b| *b == b'\n').unwrap_or(r.len())];
    let s = std::str::from_utf8(head).ok()?;
    let at = s.find("UID ")? + 4;
    s[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The benchmark sequence number of a message: `Subject: bench <seq>`.
pub fn subject_seq(raw: &[u8]) -> Option<u32> {
    let pos = raw.windows(15).position(|w| w == b"Subject: bench ")?;
    let rest = &raw[pos + 15..];
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// What the raw client saw: `(seq, received_ns)` per fetched message.
pub type Receipts = Vec<(u32, u64)>;

/// The reference client: one socket; IDLE; on EXISTS: DONE, `UID FETCH
/// <next>:* (UID BODY.PEEK[])`, IDLE again. Runs until `stop` is set or
/// `deadline`, and returns each message's receipt time (when its FETCH
/// response was complete). Nothing else: no parsing beyond the subject, no
/// reconnects — the least work a client can do for the same result.
pub fn raw_idle_client(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    ready: std::sync::mpsc::Sender<()>,
    stop: Arc<AtomicBool>,
    deadline: Instant,
) -> io::Result<Receipts> {
    let mut c = Imap::connect(host, port)?;
    c.login(user, password)?;
    let sel = c.command("EXAMINE INBOX")?;
    ok_or_err(&sel)?;
    let mut exists = sel
        .iter()
        .find_map(|l| untagged_number(l.as_bytes(), "EXISTS"))
        .unwrap_or(0);
    let mut next_uid = sel.iter().find_map(|l| uidnext(l)).unwrap_or(1);
    let mut announced = exists;
    let mut got = Receipts::new();
    let _ = ready.send(());
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        // IDLE until the mailbox grows.
        let tag = c.next_tag();
        c.send_line(&format!("{tag} IDLE"))?;
        let mut idling = true;
        let mut done_sent = false;
        while idling {
            if !done_sent
                && (announced > exists
                    || stop.load(Ordering::Relaxed)
                    || Instant::now() >= deadline)
            {
                c.send_line("DONE")?;
                done_sent = true;
            }
            let Some(r) = c.read_response_timeout(Duration::from_millis(100))? else {
                continue;
            };
            if let Some(n) = untagged_number(&r, "EXISTS") {
                announced = announced.max(n);
            } else if r.starts_with(format!("{tag} ").as_bytes()) {
                idling = false;
            }
        }
        if announced <= exists {
            continue;
        }
        // Fetch what is new by UID and start over.
        let tag = c.next_tag();
        c.send_line(&format!("{tag} UID FETCH {next_uid}:* (UID BODY.PEEK[])"))?;
        loop {
            let r = c.read_response()?;
            if r.starts_with(format!("{tag} ").as_bytes()) {
                break;
            }
            if let Some(n) = untagged_number(&r, "EXISTS") {
                announced = announced.max(n);
                continue;
            }
            let at = now_ns();
            if let Some(uid) = fetch_uid(&r)
                && uid >= next_uid
            {
                next_uid = uid + 1;
                if let Some(seq) = subject_seq(&r) {
                    got.push((seq, at));
                }
            }
        }
        exists = announced;
    }
    let _ = c.command("LOGOUT");
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bits() {
        assert_eq!(untagged_number(b"* 12 EXISTS", "EXISTS"), Some(12));
        assert_eq!(uidnext("* OK [UIDNEXT 42] Predicted"), Some(42));
        assert_eq!(fetch_uid(b"* 3 FETCH (UID 17 BODY[] {5}\r\nab"), Some(17));
        assert_eq!(subject_seq(b"To: x\r\nSubject: bench 981\r\n"), Some(981));
        assert_eq!(literal_len(b"* 1 FETCH (BODY[] {12}\r\n"), Some(12));
    }
}
