//! The "typical client" emap is compared with, written with async-imap
//! (0.12, tokio runtime), run in a child process (see child.rs):
//!
//! - `pertask`: each task opens its own IMAP connection, logs in,
//!   EXAMINEs INBOX and IDLEs; on any news it ends IDLE, fetches everything
//!   new (`UID FETCH <next>:* (UID BODY.PEEK[])`), keeps what is addressed
//!   to it, and IDLEs again — the usual code of a bot waiting for its
//!   verification mail. Tasks beyond the server's per-user cap are refused.
//! - `backlog-typical`: connect, log in, EXAMINE, then sync the mailbox
//!   (`UID FETCH 1:* (UID FLAGS)`) as a client that keeps a local view
//!   does; timed to the end of that sync, with the bytes read (counted
//!   under async-imap by a wrapper around the socket) and the RSS taken.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_imap::extensions::idle::IdleResponse;
use async_imap::types::Flag;
use futures_core::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::child::{self, Args, say};
use crate::client_emap::Receipts;
use crate::metrics::{self, cpu_time, now_ns, rss_kb};
use crate::server::Inbox;

const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// A socket that counts the bytes read through it.
#[derive(Debug)]
struct Counting {
    inner: TcpStream,
    read: Arc<AtomicU64>,
}

impl AsyncRead for Counting {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut me.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            me.read
                .fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for Counting {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

type Session = async_imap::Session<Counting>;

async fn next<S: Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
}

async fn step<T, E: std::fmt::Display>(
    what: &str,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(STEP_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: timed out")),
    }
}

/// Connect, greeting, LOGIN: a session, or why not.
async fn login(
    host: &str,
    port: u16,
    inbox: &Inbox,
    read: Arc<AtomicU64>,
) -> Result<Session, String> {
    let stream = step("connect", TcpStream::connect((host, port))).await?;
    let _ = stream.set_nodelay(true);
    let mut client = async_imap::Client::new(Counting {
        inner: stream,
        read,
    });
    step("greeting", client.read_response())
        .await?
        .ok_or("no greeting")?;
    match tokio::time::timeout(STEP_TIMEOUT, client.login(&inbox.user, &inbox.password)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err((e, _))) => Err(format!("login: {e}")),
        Err(_) => Err("login: timed out".into()),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The `pertask` mode.
pub fn pertask(args: &Args) {
    runtime().block_on(async {
        if let Err(e) = pertask_inner(args).await {
            say(&format!("error {e}"));
        }
    });
}

async fn pertask_inner(args: &Args) -> Result<(), String> {
    let host = args.str("host");
    let port: u16 = args.num("port", 143);
    let inbox = child::inboxes(args).into_iter().next().ok_or("no inbox")?;
    let n: usize = args.num("n", 100);
    let m: usize = args.num("m", 100);
    let receipts = Arc::new(Receipts::new(m));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (conn_tx, mut conn_rx) = tokio::sync::mpsc::unbounded_channel();
    let rss0 = rss_kb();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (host, inbox, receipts) = (host.clone(), inbox.clone(), receipts.clone());
        let (stop, conn_tx) = (stop_rx.clone(), conn_tx.clone());
        tasks.spawn(async move {
            let address = inbox.address(&format!("task{i}"));
            let r = one_task(&host, port, &inbox, &address, &receipts, stop, |ok| {
                let _ = conn_tx.send((i, ok));
            })
            .await;
            if let Err(e) = &r {
                // Refusals are reported through the channel; other errors
                // after connecting are worth a line.
                if !e.starts_with("login") && !e.starts_with("connect") {
                    eprintln!("bench: task {i}: {e}");
                }
            }
        });
    }
    drop(conn_tx);
    let mut connected = Vec::new();
    let mut refused = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while connected.len() + refused.len() < n && Instant::now() < deadline {
        match tokio::time::timeout_at(deadline.into(), conn_rx.recv()).await {
            Ok(Some((i, Ok(())))) => connected.push(i),
            Ok(Some((i, Err(e)))) => refused.push((i, e)),
            _ => break,
        }
    }
    connected.sort_unstable();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = rss_kb();
    let cpu0 = cpu_time();
    let reason = refused.first().map_or(String::new(), |(_, e)| {
        // One token on the protocol line: whitespace becomes '~'.
        e.chars()
            .map(|c| if c.is_whitespace() { '~' } else { c })
            .take(300)
            .collect()
    });
    let ids: Vec<String> = connected.iter().map(usize::to_string).collect();
    say(&format!(
        "ready n={n} connected={} refused={} rss0={rss0} rss1={rss1} reason={reason} ids={}",
        connected.len(),
        refused.len(),
        ids.join(",")
    ));
    let mut commands = child::commands();
    let (count, drain) = loop {
        match commands.recv().await {
            Some(line) => {
                let v: Vec<&str> = line.split_whitespace().collect();
                if let ["expect", c, ms] = v[..] {
                    break (
                        c.parse().unwrap_or(0),
                        Duration::from_millis(ms.parse().unwrap_or(30_000)),
                    );
                }
            }
            None => return Err("the parent went away".into()),
        }
    };
    receipts.wait(count, drain).await;
    let cpu = cpu_time().saturating_sub(cpu0);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(15), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    receipts.report();
    say(&format!(
        "done cpu_us={} hwm={} received={}",
        cpu.as_micros(),
        metrics::hwm_kb(),
        receipts.distinct()
    ));
    Ok(())
}

/// One task's connection: IDLE, fetch what is new, keep its own mail.
async fn one_task(
    host: &str,
    port: u16,
    inbox: &Inbox,
    address: &str,
    receipts: &Receipts,
    mut stop: tokio::sync::watch::Receiver<bool>,
    connected: impl FnOnce(Result<(), String>),
) -> Result<(), String> {
    let setup = async {
        let mut session = login(host, port, inbox, Arc::new(AtomicU64::new(0))).await?;
        let mailbox = step("EXAMINE", session.examine("INBOX")).await?;
        Ok::<_, String>((session, mailbox.uid_next.unwrap_or(1)))
    }
    .await;
    let (mut session, mut next_uid) = match setup {
        Ok(v) => {
            connected(Ok(()));
            v
        }
        Err(e) => {
            connected(Err(e.clone()));
            return Err(e);
        }
    };
    let needle = format!("To: <{address}>");
    while !*stop.borrow() {
        let mut idle = session.idle();
        step("IDLE", idle.init()).await?;
        let res = {
            let (wait, interrupt) = idle.wait_with_timeout(Duration::from_secs(25 * 60));
            let mut interrupt = Some(interrupt);
            tokio::pin!(wait);
            let r = tokio::select! {
                r = &mut wait => r,
                _ = stop.changed() => {
                    drop(interrupt.take());
                    wait.await
                }
            };
            drop(interrupt);
            r
        };
        session = step("DONE", idle.done()).await?;
        match res.map_err(|e| format!("IDLE: {e}"))? {
            IdleResponse::NewData(_) => {}
            IdleResponse::Timeout => continue,
            IdleResponse::ManualInterrupt => break,
        }
        let mut fetches = step(
            "UID FETCH",
            session.uid_fetch(format!("{next_uid}:*"), "(UID BODY.PEEK[])"),
        )
        .await?;
        while let Some(f) = next(&mut fetches).await {
            let f = f.map_err(|e| format!("FETCH: {e}"))?;
            let at = now_ns();
            let Some(uid) = f.uid else { continue };
            if uid < next_uid {
                continue;
            }
            next_uid = uid + 1;
            if let Some(body) = f.body()
                && contains(body, needle.as_bytes())
                && let Some(seq) = crate::raw_client::subject_seq(body)
            {
                receipts.record(seq, at);
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), session.logout()).await;
    Ok(())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// The `backlog-typical` mode.
pub fn backlog(args: &Args) {
    runtime().block_on(async {
        let host = args.str("host");
        let port: u16 = args.num("port", 143);
        let Some(inbox) = child::inboxes(args).into_iter().next() else {
            return say("error no inbox");
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let rss0 = rss_kb();
        metrics::reset_hwm();
        let cpu0 = cpu_time();
        let read = Arc::new(AtomicU64::new(0));
        let t = Instant::now();
        let synced = async {
            let mut session = login(&host, port, &inbox, read.clone()).await?;
            let mailbox = step("EXAMINE", session.examine("INBOX")).await?;
            // What a syncing client keeps, compactly: every UID and its
            // system flags as a bit set.
            let mut view: Vec<(u32, u8)> = Vec::new();
            if mailbox.exists > 0 {
                let mut fetches =
                    step("UID FETCH", session.uid_fetch("1:*", "(UID FLAGS)")).await?;
                while let Some(f) = next(&mut fetches).await {
                    let f = f.map_err(|e| format!("FETCH: {e}"))?;
                    let flags = f.flags().fold(0u8, |bits, fl| {
                        bits | match fl {
                            Flag::Seen => 1,
                            Flag::Answered => 2,
                            Flag::Flagged => 4,
                            Flag::Deleted => 8,
                            Flag::Draft => 16,
                            _ => 32,
                        }
                    });
                    view.push((f.uid.unwrap_or(0), flags));
                }
            }
            Ok::<_, String>((session, view.len()))
        }
        .await;
        let ready = t.elapsed();
        let cpu = cpu_time().saturating_sub(cpu0);
        let hwm = metrics::hwm_kb();
        match synced {
            Ok((mut session, messages)) => {
                say(&format!(
                    "done ready_us={} bytes={} rss0={rss0} hwm={hwm} cpu_us={} messages={messages}",
                    ready.as_micros(),
                    read.load(Ordering::Relaxed),
                    cpu.as_micros()
                ));
                let _ = tokio::time::timeout(Duration::from_secs(5), session.logout()).await;
            }
            Err(e) => say(&format!("error {e}")),
        }
    });
}
