//! A scripted fake IMAP server, for what a real server will not do on
//! demand: never greet, omit UIDNEXT, change UIDVALIDITY, reject IDLE,
//! announce EXISTS inside a FETCH response, send hostile bytes.
//!
//! Each accepted connection runs the test's script (an async closure given
//! a [`FakeConn`] and the connection's index). The script reads the
//! client's command lines and answers with whatever bytes it likes.

use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;

/// How long a script waits for the client's next line before failing.
const LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// A running fake server.
pub struct FakeServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    accepted: Arc<AtomicUsize>,
    /// Every command line received, over all connections, in order.
    pub commands: Arc<Mutex<Vec<String>>>,
    /// Bumped on every connection accepted and every line received, so
    /// that [`FakeServer::until`] awaits them instead of polling.
    observed: Arc<watch::Sender<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    /// Listens and runs `script` for each connection.
    pub async fn start<F, Fut>(script: F) -> FakeServer
    where
        F: Fn(FakeConn, usize) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        super::trace::install();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let commands = Arc::new(Mutex::new(Vec::new()));
        let observed = Arc::new(watch::channel(0).0);
        let script = Arc::new(script);
        let task = {
            let accepted = accepted.clone();
            let commands = commands.clone();
            let observed = observed.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((sock, _)) = listener.accept().await else {
                        return;
                    };
                    let n = accepted.fetch_add(1, Ordering::SeqCst);
                    observed.send_modify(|v| *v += 1);
                    let (r, w) = sock.into_split();
                    let conn = FakeConn {
                        reader: BufReader::new(r),
                        writer: w,
                        commands: commands.clone(),
                        observed: observed.clone(),
                        idle_tag: None,
                    };
                    let script = script.clone();
                    tokio::spawn(async move { script(conn, n).await });
                }
            })
        };
        FakeServer {
            port,
            accepted,
            commands,
            observed,
            task,
        }
    }

    /// Awaits the server's connections and command lines until `probe`
    /// holds; panics naming `what` after [`EVENTUALLY`](super::EVENTUALLY).
    /// Woken by each connection and line, not by a timer.
    pub async fn until(&self, what: &str, probe: impl Fn(&FakeServer) -> bool) {
        let context = || format!("commands: {:?}", self.commands());
        super::until_observed(what, &self.observed, || probe(self), context).await;
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// A copy of every command line received so far.
    pub fn commands(&self) -> Vec<String> {
        self.commands.lock().unwrap().clone()
    }
}

/// One connection, from the server's side.
pub struct FakeConn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    commands: Arc<Mutex<Vec<String>>>,
    observed: Arc<watch::Sender<u64>>,
    /// The tag of the IDLE accepted last, so that [`FakeConn::drain`] can
    /// complete it when the client sends DONE.
    idle_tag: Option<String>,
}

impl FakeConn {
    /// Sends raw bytes.
    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        let _ = self.writer.write_all(bytes.as_ref()).await;
        let _ = self.writer.flush().await;
    }

    /// The client's next line, without CRLF; `None` on EOF or timeout.
    pub async fn line(&mut self) -> Option<String> {
        self.line_within(LINE_TIMEOUT).await
    }

    async fn line_within(&mut self, timeout: Duration) -> Option<String> {
        let mut buf = Vec::new();
        match tokio::time::timeout(timeout, self.reader.read_until(b'\n', &mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return None,
        }
        let s = String::from_utf8_lossy(&buf)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        self.commands.lock().unwrap().push(s.clone());
        self.observed.send_modify(|v| *v += 1);
        Some(s)
    }

    /// Reads a command and checks its verb (the words after the tag, e.g.
    /// `"UID FETCH"`); returns `(tag, rest of the line)`. Panics on a
    /// different command, so a script states what the client must send.
    pub async fn expect(&mut self, verb: &str) -> (String, String) {
        let line = self
            .line()
            .await
            .unwrap_or_else(|| panic!("client closed; expected {verb}"));
        let (tag, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        assert!(
            rest.to_ascii_uppercase()
                .starts_with(&verb.to_ascii_uppercase()),
            "expected {verb}, got {line:?}"
        );
        (tag.to_string(), rest[verb.len()..].trim().to_string())
    }

    /// Greeting, then LOGIN answered OK with capabilities `caps`.
    pub async fn greet_and_login(&mut self, caps: &str) {
        self.send(format!("* OK [CAPABILITY IMAP4rev1 {caps}] fake ready\r\n"))
            .await;
        let (tag, _) = self.expect("LOGIN").await;
        self.send(format!(
            "{tag} OK [CAPABILITY IMAP4rev1 {caps}] Logged in\r\n"
        ))
        .await;
    }

    /// Answers EXAMINE with `exists`, and UIDNEXT / UIDVALIDITY when given.
    pub async fn examine(&mut self, exists: u32, uid_next: Option<u32>, uid_validity: Option<u32>) {
        let (tag, _) = self.expect("EXAMINE").await;
        let mut out = format!("* FLAGS (\\Seen)\r\n* {exists} EXISTS\r\n* 0 RECENT\r\n");
        if let Some(v) = uid_validity {
            out.push_str(&format!("* OK [UIDVALIDITY {v}] UIDs valid\r\n"));
        }
        if let Some(n) = uid_next {
            out.push_str(&format!("* OK [UIDNEXT {n}] Predicted next UID\r\n"));
        }
        out.push_str(&format!("{tag} OK [READ-ONLY] Examine completed\r\n"));
        self.send(out).await;
    }

    /// Waits for IDLE and accepts it; returns its tag.
    pub async fn idle(&mut self) -> String {
        let (tag, _) = self.expect("IDLE").await;
        self.send("+ idling\r\n").await;
        self.idle_tag = Some(tag.clone());
        tag
    }

    /// Waits for DONE and completes the IDLE command `tag`.
    pub async fn done(&mut self, tag: &str) {
        let line = self.line().await.expect("client closed; expected DONE");
        assert_eq!(line.to_ascii_uppercase(), "DONE", "expected DONE");
        self.send(format!("{tag} OK Idle completed\r\n")).await;
    }

    /// A FETCH response for message `seq` with `uid` and `raw` as BODY[]<0>.
    pub fn fetch_response(seq: u32, uid: u32, raw: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "* {seq} FETCH (UID {uid} INTERNALDATE \"26-Nov-2026 00:00:00 +0000\" RFC822.SIZE {} BODY[]<0> {{{}}}\r\n",
            raw.len(),
            raw.len()
        )
        .into_bytes();
        out.extend_from_slice(raw);
        out.extend_from_slice(b")\r\n");
        out
    }

    /// [`FakeConn::fetch_response`] for each `(seq, uid, raw)` of `mails`,
    /// then the tagged OK that completes FETCH `tag`.
    pub fn fetch_ok(tag: &str, mails: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (seq, uid, raw) in mails {
            out.extend(FakeConn::fetch_response(*seq, *uid, raw));
        }
        out.extend(format!("{tag} OK Fetch completed\r\n").as_bytes());
        out
    }

    /// Holds the connection open until the client leaves: completes IDLE
    /// on DONE, answers LOGOUT with BYE and OK, and anything else with OK.
    pub async fn drain(&mut self) {
        while let Some(line) = self.line_within(Duration::from_secs(3600)).await {
            if line.eq_ignore_ascii_case("DONE") {
                if let Some(tag) = self.idle_tag.take() {
                    self.send(format!("{tag} OK Idle completed\r\n")).await;
                }
                continue;
            }
            let (tag, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            if rest.eq_ignore_ascii_case("LOGOUT") {
                self.send(format!("* BYE fake closing\r\n{tag} OK bye\r\n"))
                    .await;
                return;
            }
            self.send(format!("{tag} OK done\r\n")).await;
        }
    }

    /// Holds the connection open without ever answering (a blackhole).
    pub async fn blackhole(&mut self) {
        while self.line_within(Duration::from_secs(3600)).await.is_some() {}
    }
}

/// Helpers for the hostile-server scripts (`tests/hostile.rs`): writes
/// whose failure is observed, floods that count what the client let
/// through, and the IDLE → EXISTS → FETCH round trip.
impl FakeConn {
    /// Sends raw bytes; returns whether the write succeeded (it fails once
    /// the client has closed the connection).
    pub async fn try_send(&mut self, bytes: impl AsRef<[u8]>) -> bool {
        self.writer.write_all(bytes.as_ref()).await.is_ok() && self.writer.flush().await.is_ok()
    }

    /// Writes `unit` over and over, in batches of about 64 KiB, until a
    /// write fails (the client closed the connection) or at least `max`
    /// bytes were written. Returns how many bytes were written: well below
    /// `max` means the client stopped reading and hung up.
    pub async fn flood(&mut self, unit: &[u8], max: usize) -> usize {
        let batch = unit.repeat((64 * 1024 / unit.len().max(1)).max(1));
        let mut written = 0;
        while written < max {
            if self.writer.write_all(&batch).await.is_err() {
                break;
            }
            written += batch.len();
        }
        written
    }

    /// Accepts IDLE, announces `* exists EXISTS`, completes IDLE when the
    /// client sends DONE, and waits for the FETCH that follows. Returns the
    /// FETCH's `(tag, arguments)`.
    pub async fn announce(&mut self, exists: u32) -> (String, String) {
        let tag = self.idle().await;
        self.send(format!("* {exists} EXISTS\r\n")).await;
        self.done(&tag).await;
        self.expect("FETCH").await
    }

    /// Expects `verb` (`"FETCH"` or `"UID FETCH"`) and answers it with
    /// `mails` as [`FakeConn::fetch_ok`] does; returns the command's
    /// arguments.
    pub async fn answer_fetch(&mut self, verb: &str, mails: &[(u32, u32, &[u8])]) -> String {
        let (tag, args) = self.expect(verb).await;
        self.send(FakeConn::fetch_ok(&tag, mails)).await;
        args
    }

    /// The last mail of a script: announces message `exists` during IDLE,
    /// answers its FETCH with UID `uid` and subject `sentinel`, then serves
    /// the client until it leaves. A test that receives the sentinel right
    /// after the mails it expects knows that nothing else was delivered,
    /// without waiting for something not to happen.
    pub async fn sentinel(&mut self, exists: u32, uid: u32) {
        let (tag, _) = self.announce(exists).await;
        let raw = super::message("sentinel");
        self.send(FakeConn::fetch_ok(&tag, &[(exists, uid, &raw)]))
            .await;
        self.serve().await;
    }

    /// Reads and records the client's lines until it closes the connection
    /// (or stays silent for the line timeout); returns them.
    pub async fn until_closed(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(line) = self.line().await {
            lines.push(line);
        }
        lines
    }
}

impl FakeConn {
    /// Serves a well-behaved client until it leaves: accepts IDLE with `+`
    /// and completes it on DONE, answers LOGOUT with BYE and OK and any
    /// other command with OK. Unlike [`FakeConn::drain`], IDLE is really
    /// accepted, so a client re-issuing IDLE rounds is served properly.
    pub async fn serve(&mut self) {
        while let Some(line) = self.line_within(Duration::from_secs(3600)).await {
            if line.eq_ignore_ascii_case("DONE") {
                if let Some(tag) = self.idle_tag.take() {
                    self.send(format!("{tag} OK Idle completed\r\n")).await;
                }
                continue;
            }
            let (tag, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            if rest.eq_ignore_ascii_case("IDLE") {
                self.idle_tag = Some(tag.to_owned());
                self.send("+ idling\r\n").await;
            } else if rest.eq_ignore_ascii_case("LOGOUT") {
                self.send(format!("* BYE fake closing\r\n{tag} OK bye\r\n"))
                    .await;
                return;
            } else {
                self.send(format!("{tag} OK done\r\n")).await;
            }
        }
    }
}

/// Helpers for the careful re-fetch (issue 9): after an incomplete or
/// failed FETCH the client searches the UIDs still pending and fetches the
/// lowest one alone.
impl FakeConn {
    /// Expects `UID SEARCH`, answers `* SEARCH` with `found` and a tagged
    /// OK; returns the search criteria (e.g. `"UID 10:*"`).
    pub async fn search(&mut self, found: &[u32]) -> String {
        let (tag, criteria) = self.expect("UID SEARCH").await;
        let list: String = found.iter().map(|u| format!(" {u}")).collect();
        self.send(format!("* SEARCH{list}\r\n{tag} OK Search completed\r\n"))
            .await;
        criteria
    }
}
