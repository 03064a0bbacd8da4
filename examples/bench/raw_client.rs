//! The benchmark's reference client: the least a client can do to see new
//! mail on one IMAP connection (IDLE; on EXISTS: DONE, `UID FETCH`, IDLE
//! again), on tests/support's [`RawImap`] — "what the server itself allows"
//! in the `limit` scenario — plus the few response parsers it needs, and
//! the LOGIN/APPEND helpers the deliverer and `backlog` use on any server
//! (`--host` too).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::metrics::now_ns;
use crate::support::RawImap;
use crate::support::raw_imap::quoted;

/// Connects to `host:port` with TCP_QUICKACK re-armed before each read
/// (see [`RawImap::set_quickack`]) and a 30 s I/O timeout.
pub fn connect(host: &str, port: u16) -> io::Result<RawImap> {
    let mut c = RawImap::try_connect_to(host, port)?;
    c.set_quickack(true);
    c.set_timeout(Some(Duration::from_secs(30)));
    Ok(c)
}

/// LOGIN; fails unless OK.
pub fn login(c: &mut RawImap, user: &str, password: &str) -> io::Result<()> {
    let (Some(u), Some(p)) = (quoted(user), quoted(password)) else {
        return Err(io::Error::other("user and password must be 7-bit"));
    };
    let r = c.try_command(&format!("LOGIN {u} {p}"))?;
    ok_or_err(&r)
}

/// APPEND to `mailbox`; fails unless OK. Returns when the tagged OK was
/// read (ns, realtime clock).
pub fn append(c: &mut RawImap, mailbox: &str, raw: &[u8]) -> io::Result<u64> {
    let mailbox = quoted(mailbox).ok_or_else(|| io::Error::other("mailbox must be 7-bit"))?;
    let prefix = format!("APPEND {mailbox} ");
    let r = c.try_command_with_literals(&[&prefix, ""], &[raw])?;
    let at = now_ns();
    let r: Vec<String> = r
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    ok_or_err(&r)?;
    Ok(at)
}

/// `Ok` if the tagged (last) response is OK.
pub fn ok_or_err(lines: &[String]) -> io::Result<()> {
    match lines.last() {
        Some(l) if l.split(' ').nth(1) == Some("OK") => Ok(()),
        other => Err(io::Error::other(format!("{other:?}"))),
    }
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
///
/// The mailbox is opened as emap opens it: EXAMINE, except on Courier
/// (greeting `Courier-IMAP`), where emap SELECTs because Courier stores
/// the UIDs it gives new mail only for read-write sessions (INTEROP.md).
/// Without UIDNEXT in the reply (Courier never sends it) the first fetch
/// starts at UID 1: the benchmark's inboxes are empty when it starts.
pub fn raw_idle_client(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    ready: std::sync::mpsc::Sender<()>,
    stop: Arc<AtomicBool>,
    deadline: Instant,
) -> io::Result<Receipts> {
    let mut c = connect(host, port)?;
    login(&mut c, user, password)?;
    let open = if c.greeting().contains("Courier-IMAP") {
        "SELECT"
    } else {
        "EXAMINE"
    };
    let sel = c.try_command(&format!("{open} INBOX"))?;
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
            let Some(r) = c.read_response_bytes_timeout(Duration::from_millis(100))? else {
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
            let r = c.read_response_bytes()?;
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
    c.logout();
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
    }
}
