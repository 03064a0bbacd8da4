//! Putting mail into the server the way an MTA would, and stamping the
//! moment the server accepted it — the start of every latency measured.
//!
//! - LMTP (Dovecot and Cyrus, over TCP): one persistent
//!   session per [`Deliverer`], one transaction per message (`MAIL FROM`,
//!   `RCPT TO`, `DATA`); "accepted" is when the per-recipient 250 reply
//!   after the data was read — the server has stored the message.
//! - Maildir (Courier, which has no LMTP): the message, with the
//!   `Return-Path:` and `Delivered-To:` headers Courier's local delivery
//!   adds, is written into the account's `tmp/` and renamed into `new/`
//!   (tests/support's `Courier::deliver_as`, as the integration suite
//!   delivers); "accepted" is when the rename returned — the moment the
//!   file is where imapd looks.
//! - APPEND (an existing server reached with `--host`): "accepted" is
//!   when the tagged OK was read, on a connection of its own.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::metrics::now_ns;
use crate::raw_client;
use crate::support::RawImap;
use crate::support::courier::Courier;
use crate::support::lmtp::dot_stuff;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Where mail is delivered.
#[derive(Debug, Clone)]
pub enum Route {
    LmtpTcp(u16),
    /// Into the maildir of this Courier account.
    Maildir {
        user: String,
    },
    Append {
        host: String,
        port: u16,
        user: String,
        password: String,
    },
}

pub enum Deliverer {
    Lmtp {
        reader: BufReader<Box<dyn Read + Send>>,
        writer: Box<dyn Write + Send>,
        /// The TCP socket, to re-arm TCP_QUICKACK before each read (so
        /// the acceptance is stamped when the reply arrives, not a delayed
        /// ACK later).
        tcp: Option<TcpStream>,
    },
    Maildir {
        courier: &'static Courier,
        user: String,
    },
    Append(Box<RawImap>),
}

impl Deliverer {
    pub fn connect(route: &Route) -> Result<Deliverer, String> {
        match route {
            Route::LmtpTcp(port) => {
                let s = TcpStream::connect(("127.0.0.1", *port))
                    .map_err(|e| format!("LMTP connect: {e}"))?;
                let _ = s.set_nodelay(true);
                s.set_read_timeout(Some(TIMEOUT))
                    .map_err(|e| e.to_string())?;
                let w = s.try_clone().map_err(|e| e.to_string())?;
                let q = s.try_clone().map_err(|e| e.to_string())?;
                Self::lmtp(Box::new(s), Box::new(w), Some(q))
            }
            Route::Maildir { user } => Ok(Deliverer::Maildir {
                courier: crate::support::courier::try_courier()?,
                user: user.clone(),
            }),
            Route::Append {
                host,
                port,
                user,
                password,
            } => {
                let mut c =
                    raw_client::connect(host, *port).map_err(|e| format!("connect: {e}"))?;
                raw_client::login(&mut c, user, password).map_err(|e| format!("login: {e}"))?;
                Ok(Deliverer::Append(Box::new(c)))
            }
        }
    }

    fn lmtp(
        r: Box<dyn Read + Send>,
        w: Box<dyn Write + Send>,
        tcp: Option<TcpStream>,
    ) -> Result<Deliverer, String> {
        let mut d = Deliverer::Lmtp {
            reader: BufReader::new(r),
            writer: w,
            tcp,
        };
        d.expect("greeting", '2')?;
        d.send("LHLO emap-bench")?;
        d.expect("LHLO", '2')?;
        Ok(d)
    }

    /// Delivers `raw` to `rcpt` (envelope recipient; the `Delivered-To:`
    /// address on Courier; ignored by APPEND);
    /// returns when the server accepted it (ns, realtime clock).
    pub fn deliver(&mut self, rcpt: &str, raw: &[u8]) -> Result<u64, String> {
        match self {
            Deliverer::Append(c) => {
                raw_client::append(c, "INBOX", raw).map_err(|e| format!("APPEND: {e}"))
            }
            Deliverer::Maildir { courier, user } => {
                // The harness panics on a file system error; here that is
                // one failed delivery, counted like a refused one.
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    courier.deliver_as(user, rcpt, raw)
                }))
                .map_err(|_| format!("maildir delivery to {user} failed"))?;
                Ok(now_ns())
            }
            Deliverer::Lmtp { .. } => {
                self.send("MAIL FROM:<bench@emap.bench>")?;
                self.expect("MAIL FROM", '2')?;
                self.send(&format!("RCPT TO:<{rcpt}>"))?;
                self.expect("RCPT TO", '2')?;
                self.send("DATA")?;
                self.expect("DATA", '3')?;
                if let Deliverer::Lmtp { writer, .. } = self {
                    writer
                        .write_all(&dot_stuff(raw))
                        .and_then(|()| writer.flush())
                        .map_err(|e| format!("LMTP data: {e}"))?;
                }
                self.expect("delivery", '2')?;
                Ok(now_ns())
            }
        }
    }

    fn send(&mut self, line: &str) -> Result<(), String> {
        if let Deliverer::Lmtp { writer, .. } = self {
            writer
                .write_all(format!("{line}\r\n").as_bytes())
                .and_then(|()| writer.flush())
                .map_err(|e| format!("LMTP {line}: {e}"))?;
        }
        Ok(())
    }

    fn expect(&mut self, step: &str, class: char) -> Result<(), String> {
        let Deliverer::Lmtp { reader, tcp, .. } = self else {
            return Ok(());
        };
        let reply = read_reply(reader, tcp.as_ref()).map_err(|e| format!("LMTP {step}: {e}"))?;
        if reply.starts_with(class) {
            Ok(())
        } else {
            Err(format!("LMTP {step} refused: {reply}"))
        }
    }

    /// Ends the session politely (best effort).
    pub fn quit(mut self) {
        let _ = self.send("QUIT");
        if let Deliverer::Append(c) = self {
            c.logout();
        }
    }
}

fn read_reply(reader: &mut impl BufRead, tcp: Option<&TcpStream>) -> io::Result<String> {
    let mut reply = String::new();
    loop {
        if let Some(tcp) = tcp {
            let _ = socket2::SockRef::from(tcp).set_quickack(true);
        }
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end();
        reply.push_str(line);
        reply.push('\n');
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(reply);
        }
    }
}

/// The benchmark's message number `seq` to `to`: a small plain-text mail
/// whose subject carries the number (`Subject: bench <seq>`).
pub fn message(seq: u32, to: &str) -> Vec<u8> {
    format!(
        "From: Load <load@emap.bench>\r\n\
         To: <{to}>\r\n\
         Subject: bench {seq}\r\n\
         Date: Thu, 26 Nov 2026 00:00:00 +0000\r\n\
         Message-ID: <bench-{seq}-{ns}@emap.bench>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         \r\n\
         Your verification code is {code:06}.\r\n\
         This message is part of emap's benchmark stream.\r\n",
        ns = now_ns(),
        code = seq.wrapping_mul(7919) % 1_000_000,
    )
    .into_bytes()
}
