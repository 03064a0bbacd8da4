//! A blocking LMTP client: how tests put mail into Dovecot the way an MTA
//! would, so the stored message gets real `Return-Path`, `Delivered-To` and
//! `Received` headers and IDLE clients are notified as in production.
//!
//! One call is one LMTP session: greeting, `LHLO`, `MAIL FROM`, one or more
//! `RCPT TO`, `DATA` (CRLF-normalised and dot-stuffed here), one reply per
//! accepted recipient, `QUIT`. Every read and write has a timeout.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(20);

/// Delivers `raw` from `from` to every address in `rcpts` over LMTP at
/// `127.0.0.1:port`. Returns an error naming the step and the server reply
/// if any recipient or the message is refused.
pub fn deliver(port: u16, from: &str, rcpts: &[&str], raw: &[u8]) -> Result<(), String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("LMTP connect to {addr}: {e}"))?;
    let io_err = |step: &str, e: io::Error| format!("LMTP {step}: {e}");
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| io_err("setup", e))?;
    stream
        .set_write_timeout(Some(TIMEOUT))
        .map_err(|e| io_err("setup", e))?;
    let mut writer = stream.try_clone().map_err(|e| io_err("setup", e))?;
    let mut reader = BufReader::new(stream);

    expect(&mut reader, "greeting", '2')?;
    send(&mut writer, "LHLO emap-tests").map_err(|e| io_err("LHLO", e))?;
    expect(&mut reader, "LHLO", '2')?;
    send(&mut writer, &format!("MAIL FROM:<{from}>")).map_err(|e| io_err("MAIL", e))?;
    expect(&mut reader, "MAIL FROM", '2')?;
    for rcpt in rcpts {
        send(&mut writer, &format!("RCPT TO:<{rcpt}>")).map_err(|e| io_err("RCPT", e))?;
        expect(&mut reader, &format!("RCPT TO:<{rcpt}>"), '2')?;
    }
    send(&mut writer, "DATA").map_err(|e| io_err("DATA", e))?;
    expect(&mut reader, "DATA", '3')?;
    writer
        .write_all(&dot_stuff(raw))
        .and_then(|()| writer.flush())
        .map_err(|e| io_err("message", e))?;
    // LMTP: one reply per accepted recipient.
    for rcpt in rcpts {
        expect(&mut reader, &format!("delivery to {rcpt}"), '2')?;
    }
    let _ = send(&mut writer, "QUIT");
    let _ = read_reply(&mut reader);
    Ok(())
}

/// The DATA payload for `raw`: bare LF and CR become CRLF, lines starting
/// with `.` get a second `.`, and the terminating `CRLF . CRLF` is added.
pub fn dot_stuff(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32 + 8);
    let mut at_line_start = true;
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        match b {
            b'\r' | b'\n' => {
                out.extend_from_slice(b"\r\n");
                if b == b'\r' && raw.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                at_line_start = true;
            }
            _ => {
                if at_line_start && b == b'.' {
                    out.push(b'.');
                }
                out.push(b);
                at_line_start = false;
            }
        }
        i += 1;
    }
    if !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

fn send(writer: &mut TcpStream, line: &str) -> io::Result<()> {
    writer.write_all(format!("{line}\r\n").as_bytes())?;
    writer.flush()
}

/// Reads one (possibly multi-line) reply and checks its first digit.
fn expect(reader: &mut BufReader<TcpStream>, step: &str, class: char) -> Result<String, String> {
    let reply = read_reply(reader).map_err(|e| format!("LMTP {step}: {e}"))?;
    if reply.starts_with(class) {
        Ok(reply)
    } else {
        Err(format!("LMTP {step} refused: {reply}"))
    }
}

fn read_reply(reader: &mut BufReader<TcpStream>) -> io::Result<String> {
    let mut reply = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("connection closed (reply so far: {reply:?})"),
            ));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if !reply.is_empty() {
            reply.push('\n');
        }
        reply.push_str(line);
        // "250-..." continues, "250 ..." ends a reply.
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(reply);
        }
    }
}
