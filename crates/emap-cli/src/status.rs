//! `emap status`: each inbox's state in a terminal — connecting, idling,
//! polling, backing off (with the next attempt), failed — with the
//! connection age, IDLE or poll, UIDVALIDITY and watermark, subscribers,
//! the counters, the last error and the last server alert.
//!
//! A credential that watches further folders (`also_watch`) shows each
//! under its row: the folder, the name the server lists it under, its
//! UIDVALIDITY and watermark, or that it is missing; `--json` lists every
//! folder, the main one first, under `folders`.
//!
//! Two sources, one table: an emap-gateway (`--gateway URL`, every inbox
//! the key may see, read from its `/v1/status`), or one credential directly
//! (this process connects with the flags of `watch`, shows the state it
//! reached, and logs out). `--watch` redraws the table in place every
//! `--interval` until Ctrl-C; `--json` prints one JSON document per
//! refresh and line instead, with the same keys in both modes.
//!
//! Text that comes from a server (errors, alerts, inbox names) is put on
//! one line with control characters replaced, so a hostile server cannot
//! move the cursor or rewrite the terminal.

use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime};

use emap::{Config, Credential, Error, Filter, Handle, Registry, SessionState, SessionStats};
use serde_json::{Value, json};
use tokio::time::{Instant, MissedTickBehavior};

use crate::args::StatusArgs;
use crate::credential::credential;
use crate::gateway::{Client, GatewayError, GatewayStatus, Overall};
use crate::time::{age, rfc3339, time_of_day};
use crate::{EXIT_INTERRUPTED, EXIT_OK, ctrl_c, fail, one_line};

/// How long logging out may take before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// How often the direct mode looks at the session while it waits for the
/// state to settle (not a refresh: nothing is printed).
const SETTLE_POLL: Duration = Duration::from_millis(50);

/// The direct mode's subscription: to an address under `.invalid` (RFC
/// 2606), which no mail is ever sent to, so it holds the session without
/// receiving or counting anything.
const PROBE_ADDRESS: &str = "emap-status-probe@status.invalid";

/// Terminal: cursor home, then clear to the end of the screen.
const REDRAW: &str = "\x1b[H\x1b[J";

/// One inbox (and session) as the table shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Row {
    /// The inbox's name (the gateway's), or `user@host:port/mailbox`.
    pub(crate) inbox: String,
    /// `connecting`, `idling`, `polling`, `backing_off`, `failed`,
    /// `closing` or `not_connected`.
    pub(crate) state: String,
    /// `idle` or `poll`, once known.
    pub(crate) mode: Option<String>,
    /// When the current connection selected the mailbox.
    pub(crate) connected_since: Option<SystemTime>,
    /// Its age, measured where the session runs.
    pub(crate) connection_age: Option<Duration>,
    /// While backing off: when the next attempt starts.
    pub(crate) next_attempt: Option<SystemTime>,
    /// ... and how far away that is, measured where the session runs.
    pub(crate) next_attempt_in: Option<Duration>,
    pub(crate) uid_validity: Option<u64>,
    pub(crate) watermark: Option<u64>,
    pub(crate) subscribers: u64,
    /// Open waits and streams (gateway only).
    pub(crate) open_waits: Option<u64>,
    pub(crate) fetched: Option<u64>,
    pub(crate) delivered: Option<u64>,
    pub(crate) dropped: Option<u64>,
    pub(crate) skipped: Option<u64>,
    pub(crate) reconnects: Option<u64>,
    pub(crate) last_error: Option<String>,
    pub(crate) last_alert: Option<String>,
    /// Every watched folder, the main one first (empty without a session).
    pub(crate) folders: Vec<FolderRow>,
}

/// One watched folder of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FolderRow {
    /// As the credential names it: a name, or a special use (`\Junk`).
    pub(crate) folder: String,
    /// Its name on the server, once found.
    pub(crate) mailbox: Option<String>,
    pub(crate) uid_validity: Option<u64>,
    pub(crate) watermark: Option<u64>,
    /// Missing at the last check.
    pub(crate) missing: bool,
    /// Times it was found missing.
    pub(crate) failures: u64,
}

impl FolderRow {
    /// The folders of a `/v1/status` entry (`folders`); entries without a
    /// `folder` name are left out, a missing list is none.
    pub(crate) fn list_from_json(v: &Value) -> Vec<FolderRow> {
        v.as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|f| {
                        Some(FolderRow {
                            folder: f["folder"].as_str()?.to_owned(),
                            mailbox: f["mailbox"].as_str().map(str::to_owned),
                            uid_validity: f["uid_validity"].as_u64(),
                            watermark: f["watermark"].as_u64(),
                            missing: f["missing"].as_bool().unwrap_or(false),
                            failures: f["failures"].as_u64().unwrap_or(0),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// As the table labels it: `\Junk (Junk)` when found under another
    /// name.
    fn label(&self) -> String {
        match &self.mailbox {
            Some(m) if *m != self.folder => format!("{} ({})", self.folder, m),
            _ => self.folder.clone(),
        }
    }

    /// Its state in plain words.
    fn words(&self) -> String {
        if self.missing {
            format!("missing ({}x)", self.failures)
        } else if self.mailbox.is_some() {
            "watched".to_owned()
        } else {
            "not found yet".to_owned()
        }
    }

    fn json(&self) -> Value {
        json!({
            "folder": self.folder,
            "mailbox": self.mailbox,
            "uid_validity": self.uid_validity,
            "watermark": self.watermark,
            "missing": self.missing,
            "failures": self.failures,
        })
    }
}

impl Row {
    /// A session's figures at `now`, less `own` subscribers that are this
    /// command's probe.
    fn from_stats(inbox: String, s: &SessionStats, own: usize, now: SystemTime) -> Row {
        Row {
            inbox,
            state: s.state_name().to_owned(),
            mode: s.mode_name().map(str::to_owned),
            connected_since: s.connected_since,
            connection_age: s
                .connected_since
                .map(|t| now.duration_since(t).unwrap_or_default()),
            next_attempt: s.next_attempt,
            next_attempt_in: s
                .next_attempt
                .map(|t| t.duration_since(now).unwrap_or_default()),
            uid_validity: s.uid_validity.map(u64::from),
            watermark: s.watermark.map(u64::from),
            subscribers: s.subscribers.saturating_sub(own) as u64,
            open_waits: None,
            fetched: Some(s.fetched),
            delivered: Some(s.queued),
            dropped: Some(s.dropped),
            skipped: Some(s.skipped),
            reconnects: Some(s.reconnects),
            last_error: s.last_error.clone(),
            last_alert: s.last_alert.clone(),
            folders: s
                .folders
                .iter()
                .map(|f| FolderRow {
                    folder: f.folder.to_string(),
                    mailbox: f.mailbox.clone(),
                    uid_validity: f.uid_validity.map(u64::from),
                    watermark: f.watermark.map(u64::from),
                    missing: f.missing,
                    failures: f.failures,
                })
                .collect(),
        }
    }

    /// A row with only a state (and maybe an error): no session to ask.
    fn bare(inbox: String, state: &str, last_error: Option<String>) -> Row {
        Row {
            inbox,
            state: state.to_owned(),
            last_error,
            ..Row::default()
        }
    }

    /// The state in plain words, with the next attempt while backing off.
    fn state_words(&self) -> String {
        match self.state.as_str() {
            "backing_off" => match (self.next_attempt_in, self.next_attempt) {
                (Some(d), Some(t)) => format!(
                    "backing off, next attempt in {} ({})",
                    age(d),
                    time_of_day(t)
                ),
                _ => "backing off".to_owned(),
            },
            "not_connected" => "not connected (nobody waiting)".to_owned(),
            other => one_line(other).replace('_', " "),
        }
    }

    /// The row as JSON (`--json`): the same keys in both modes.
    fn json(&self) -> Value {
        json!({
            "inbox": self.inbox,
            "state": self.state,
            "mode": self.mode,
            "connected_since": self.connected_since.map(rfc3339),
            "connection_age_s": self.connection_age.map(|d| d.as_secs()),
            "next_attempt": self.next_attempt.map(rfc3339),
            "next_attempt_in_s": self.next_attempt_in.map(|d| d.as_secs()),
            "uid_validity": self.uid_validity,
            "watermark": self.watermark,
            "subscribers": self.subscribers,
            "open_waits": self.open_waits,
            "fetched": self.fetched,
            "delivered": self.delivered,
            "dropped": self.dropped,
            "skipped": self.skipped,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
            "last_alert": self.last_alert,
            "folders": self.folders.iter().map(FolderRow::json).collect::<Vec<_>>(),
        })
    }
}

/// What one refresh shows.
struct Frame {
    /// Where the figures come from, for the title.
    source: String,
    /// The gateway's own figures (gateway mode).
    overall: Option<Overall>,
    rows: Vec<Row>,
    /// Why there is nothing to show this time (a `--watch` that lost the
    /// gateway for a moment).
    problem: Option<String>,
    at: SystemTime,
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

impl Frame {
    /// The frame as a table, with the last error and alert of a row on
    /// lines of their own under it.
    fn table(&self) -> String {
        let mut out = format!("emap status: {} at {}\n", self.source, rfc3339(self.at));
        if let Some(o) = &self.overall {
            out.push_str(&format!(
                "emap-gateway {}, up {}, {} waiter(s), {} key(s) active\n",
                one_line(&o.version),
                age(o.uptime),
                o.waiters,
                o.keys_active
            ));
        }
        if let Some(p) = &self.problem {
            out.push_str(&format!("error: {}\n", one_line(p)));
            return out;
        }
        out.push('\n');
        let header = [
            "INBOX",
            "STATE",
            "CONNECTED",
            "MODE",
            "UIDVALIDITY",
            "WATERMARK",
            "SUBSCRIBERS",
            "WAITS",
            "DELIVERED",
            "DROPPED",
            "SKIPPED",
            "RECONNECTS",
        ];
        // Each row, then a sub-row per further folder (the main folder's
        // figures are the row's own).
        let blank = || "".to_owned();
        let sub = |f: &FolderRow| -> [String; 12] {
            [
                format!("  + {}", one_line(&f.label())),
                f.words(),
                blank(),
                blank(),
                opt(f.uid_validity),
                opt(f.watermark),
                blank(),
                blank(),
                blank(),
                blank(),
                blank(),
                blank(),
            ]
        };
        let cells: Vec<([String; 12], Vec<[String; 12]>)> = self
            .rows
            .iter()
            .map(|r| {
                let main = [
                    one_line(&r.inbox),
                    r.state_words(),
                    r.connection_age.map_or_else(|| "-".to_owned(), age),
                    r.mode
                        .as_deref()
                        .map_or("-", |m| match m {
                            "idle" => "IDLE",
                            _ => "poll",
                        })
                        .to_owned(),
                    opt(r.uid_validity),
                    opt(r.watermark),
                    r.subscribers.to_string(),
                    opt(r.open_waits),
                    opt(r.delivered),
                    opt(r.dropped),
                    opt(r.skipped),
                    opt(r.reconnects),
                ];
                (main, r.folders.iter().skip(1).map(sub).collect())
            })
            .collect();
        let mut widths = header.map(|h| h.chars().count());
        for row in cells
            .iter()
            .flat_map(|(main, subs)| std::iter::once(main).chain(subs))
        {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cols: &[&str]| {
            let mut l = String::new();
            for (i, (c, w)) in cols.iter().zip(widths).enumerate() {
                if i + 1 == cols.len() {
                    l.push_str(c);
                    // Sub-rows leave the last columns empty: no trailing blanks.
                    let kept = l.trim_end().len();
                    l.truncate(kept);
                } else {
                    l.push_str(&format!("{c:<w$}  "));
                }
            }
            l.push('\n');
            l
        };
        out.push_str(&line(&header));
        if self.rows.is_empty() {
            out.push_str("(no inbox)\n");
        }
        for (r, (c, subs)) in self.rows.iter().zip(&cells) {
            out.push_str(&line(&c.each_ref().map(String::as_str)));
            for s in subs {
                out.push_str(&line(&s.each_ref().map(String::as_str)));
            }
            if let Some(e) = &r.last_error {
                out.push_str(&format!("    last error: {}\n", one_line(e)));
            }
            if let Some(a) = &r.last_alert {
                out.push_str(&format!("    server alert: {}\n", one_line(a)));
            }
        }
        out
    }

    /// The frame as one line of JSON.
    fn json(&self) -> String {
        let v = json!({
            "source": self.source,
            "at": rfc3339(self.at),
            "gateway": self.overall.as_ref().map(|o| json!({
                "version": o.version,
                "uptime_s": o.uptime.as_secs(),
                "waiters": o.waiters,
                "keys_active": o.keys_active,
            })),
            "error": self.problem,
            "inboxes": self.rows.iter().map(Row::json).collect::<Vec<_>>(),
        });
        format!("{v}\n")
    }
}

/// Prints frames: as a table (redrawn in place on a terminal under
/// `--watch`) or as JSON lines.
struct Printer {
    json: bool,
    redraw: bool,
    frames: u64,
}

impl Printer {
    fn new(args: &StatusArgs) -> Printer {
        Printer {
            json: args.json,
            redraw: args.watch && !args.json && std::io::stdout().is_terminal(),
            frames: 0,
        }
    }

    fn print(&mut self, frame: &Frame) -> Result<(), String> {
        let mut text = if self.json {
            frame.json()
        } else {
            frame.table()
        };
        if self.redraw {
            text.insert_str(0, REDRAW);
        } else if self.frames > 0 && !self.json {
            // Not a terminal: frames one after the other, apart.
            text.insert(0, '\n');
        }
        self.frames += 1;
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| format!("cannot write to stdout: {e}"))
    }
}

/// `emap status`.
pub(crate) async fn status(args: StatusArgs) -> u8 {
    match (&args.gateway, args.conn()) {
        (Some(url), _) => {
            let client = match Client::new(
                url,
                args.key_file.as_deref(),
                args.key_env.as_deref(),
                args.gateway_ca_file.as_deref(),
            ) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            from_gateway(client, &args).await
        }
        (None, Some(conn)) => {
            let cred = match credential(&conn) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            let handle = match Registry::start_in_thread(Config::default()) {
                Ok(h) => h,
                Err(e) => return fail(e),
            };
            let code = direct(&handle, cred, &args).await;
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, handle.shutdown()).await;
            code
        }
        (None, None) => fail(
            "emap status needs --gateway URL, or the connection flags of `emap watch` \
             (--host, --user, --password-env or --oauth-token-env)",
        ),
    }
}

/// One `/v1/status`, off the async runtime (the client blocks).
async fn fetch(client: &Client) -> Result<GatewayStatus, GatewayError> {
    let client = client.clone();
    match tokio::task::spawn_blocking(move || client.fetch()).await {
        Ok(r) => r,
        Err(e) => Err(GatewayError::BadAnswer(format!(
            "the request task failed: {e}"
        ))),
    }
}

/// Gateway mode: one frame, or one per `--interval` until Ctrl-C. A
/// gateway that cannot be reached is shown and retried under `--watch`; a
/// refused key or scope ends it.
async fn from_gateway(client: Client, args: &StatusArgs) -> u8 {
    let mut printer = Printer::new(args);
    let mut ticks = tokio::time::interval(args.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let interrupt = ctrl_c();
    tokio::pin!(interrupt);
    let source = format!("gateway {}", client.url());
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = &mut interrupt => return EXIT_INTERRUPTED,
        }
        let got = tokio::select! {
            r = fetch(&client) => r,
            () = &mut interrupt => return EXIT_INTERRUPTED,
        };
        let frame = match got {
            Ok(s) => Frame {
                source: source.clone(),
                overall: Some(s.overall),
                rows: s.rows,
                problem: None,
                at: SystemTime::now(),
            },
            Err(e) if !args.watch || e.is_permanent() => return fail(e),
            Err(e) => Frame {
                source: source.clone(),
                overall: None,
                rows: Vec::new(),
                problem: Some(e.to_string()),
                at: SystemTime::now(),
            },
        };
        if let Err(e) = printer.print(&frame) {
            return fail(e);
        }
        if !args.watch {
            return EXIT_OK;
        }
    }
}

/// The direct mode's rows at `now`: `sessions` (the registry's figures for
/// the credential, asked once per frame, so that the row shows the state
/// the frame was decided on), or what is left without one.
fn direct_rows(
    sessions: &[SessionStats],
    name: &str,
    probing: bool,
    failed: Option<&Error>,
    now: SystemTime,
) -> Vec<Row> {
    if sessions.is_empty() {
        // A session that failed for good is forgotten by the registry:
        // what is left to show is the failure.
        return vec![match failed {
            Some(e) => Row::bare(name.to_owned(), "failed", Some(e.to_string())),
            None => Row::bare(name.to_owned(), "connecting", None),
        }];
    }
    sessions
        .iter()
        .map(|s| {
            let mut row = Row::from_stats(name.to_owned(), s, usize::from(probing), now);
            if row.last_error.is_none() {
                row.last_error = failed.map(ToString::to_string);
            }
            row
        })
        .collect()
}

/// Direct mode: holds the session of `cred` with a probe that no mail
/// matches; shows the state reached once it settles — watching, failed, or
/// backing off after a first failure — or after `--wait`; under `--watch`
/// shows a frame at once and every `--interval`. A credential that fails
/// for good ends it with status 1.
async fn direct(handle: &Handle, cred: Credential, args: &StatusArgs) -> u8 {
    let name = format!("{}@{}:{}/{}", cred.user, cred.host, cred.port, cred.mailbox);
    let source = format!("{name} (direct)");
    let mut printer = Printer::new(args);
    let subscribe =
        handle.subscribe_with_capacity(cred.clone(), Filter::new().to(PROBE_ADDRESS), Some(1));
    tokio::pin!(subscribe);
    let interrupt = ctrl_c();
    tokio::pin!(interrupt);
    let mut probe: Option<emap::Subscription> = None;
    let mut failed: Option<Error> = None;
    let mut ticks = tokio::time::interval(args.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut settle = tokio::time::interval(SETTLE_POLL);
    let give_up = Instant::now() + args.wait;
    loop {
        let mut show = false;
        let mut settled: Option<Vec<SessionStats>> = None;
        tokio::select! {
            r = &mut subscribe, if probe.is_none() && failed.is_none() => match r {
                Ok(sub) => {
                    probe = Some(sub);
                    show = !args.watch;
                }
                Err(e) => {
                    failed = Some(e);
                    show = true;
                }
            },
            // A subscription ends only when the session failed for good;
            // no mail reaches the probe.
            m = async {
                match probe.as_mut() {
                    Some(p) => p.recv().await,
                    None => std::future::pending().await,
                }
            }, if probe.is_some() => {
                if m.is_none() {
                    failed = Some(
                        probe
                            .take()
                            .and_then(|p| p.error())
                            .unwrap_or(Error::Closed),
                    );
                    show = true;
                }
            }
            _ = ticks.tick(), if args.watch => show = true,
            _ = settle.tick(), if !args.watch => {
                let stats = handle.stats_of(&cred).await.unwrap_or_default();
                let backing_off = stats.iter().any(|s| s.state == SessionState::Backoff);
                if backing_off || Instant::now() >= give_up {
                    settled = Some(stats);
                    show = true;
                }
            }
            () = &mut interrupt => return EXIT_INTERRUPTED,
        }
        if !show {
            continue;
        }
        // The figures the settle tick decided on, or asked now: shown as
        // they were, not asked again (the state may have moved on).
        let sessions = match settled.take() {
            Some(s) => s,
            None => handle.stats_of(&cred).await.unwrap_or_default(),
        };
        // The probe counts among the session's subscribers from the
        // subscribe on, until the session fails.
        let rows = direct_rows(
            &sessions,
            &name,
            failed.is_none(),
            failed.as_ref(),
            SystemTime::now(),
        );
        let frame = Frame {
            source: source.clone(),
            overall: None,
            rows,
            problem: None,
            at: SystemTime::now(),
        };
        if let Err(e) = printer.print(&frame) {
            return fail(e);
        }
        if let Some(e) = &failed {
            return fail(e);
        }
        if !args.watch {
            return EXIT_OK;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: &str) -> Row {
        Row::bare("main".into(), state, None)
    }

    #[test]
    fn states_read_in_plain_words_with_the_next_attempt() {
        assert_eq!(row("idling").state_words(), "idling");
        assert_eq!(
            row("not_connected").state_words(),
            "not connected (nobody waiting)"
        );
        let mut r = row("backing_off");
        assert_eq!(r.state_words(), "backing off");
        r.next_attempt_in = Some(Duration::from_secs(4));
        r.next_attempt =
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(20 * 3600 + 41 * 60 + 7));
        assert_eq!(
            r.state_words(),
            "backing off, next attempt in 4s (20:41:07 UTC)"
        );
    }

    #[test]
    fn the_table_aligns_and_keeps_server_text_on_one_line() {
        let mut a = row("idling");
        a.connection_age = Some(Duration::from_secs(192));
        a.mode = Some("idle".into());
        a.delivered = Some(12);
        let mut b = row("failed");
        b.inbox = "a-much-longer-inbox-name".into();
        b.last_error = Some("authentication failed: \x1b[2Jno\r\nway".into());
        b.last_alert = Some("maintenance at 22:00".into());
        let frame = Frame {
            source: "test".into(),
            overall: None,
            rows: vec![a, b],
            problem: None,
            at: SystemTime::UNIX_EPOCH,
        };
        let table = frame.table();
        assert!(!table.contains('\x1b'), "{table:?}");
        let lines: Vec<&str> = table.lines().collect();
        let header = lines.iter().find(|l| l.starts_with("INBOX")).unwrap();
        let first = lines.iter().find(|l| l.starts_with("main ")).unwrap();
        // Columns line up: STATE starts at the same place in every row.
        assert_eq!(header.find("STATE"), first.find("idling"), "{table}");
        assert!(
            first.contains("3m 12s") && first.contains("IDLE"),
            "{table}"
        );
        assert!(
            table.contains("    last error: authentication failed:  [2Jno  way"),
            "{table}"
        );
        assert!(
            table.contains("    server alert: maintenance at 22:00"),
            "{table}"
        );
        let json: Value = serde_json::from_str(frame.json().trim()).unwrap();
        assert_eq!(json["inboxes"][0]["connection_age_s"], 192);
        assert_eq!(json["inboxes"][1]["state"], "failed");
    }

    #[test]
    fn further_folders_show_under_their_row_and_in_the_json() {
        let folder = |name: &str, mailbox: Option<&str>, w: Option<u64>| FolderRow {
            folder: name.into(),
            mailbox: mailbox.map(Into::into),
            uid_validity: w.map(|_| 77),
            watermark: w,
            missing: false,
            failures: 0,
        };
        let mut a = row("idling");
        a.watermark = Some(5);
        a.folders = vec![
            folder("INBOX", Some("INBOX"), Some(5)),
            folder("\\Junk", Some("Junk\x1b[2J"), Some(9)),
            FolderRow {
                missing: true,
                failures: 3,
                ..folder("Gone", None, None)
            },
        ];
        let frame = Frame {
            source: "test".into(),
            overall: None,
            rows: vec![a],
            problem: None,
            at: SystemTime::UNIX_EPOCH,
        };
        let table = frame.table();
        assert!(!table.contains('\x1b'), "{table:?}");
        let lines: Vec<&str> = table.lines().collect();
        let header = lines.iter().find(|l| l.starts_with("INBOX")).unwrap();
        let junk = lines
            .iter()
            .find(|l| l.starts_with("  + \\Junk (Junk [2J)"))
            .unwrap_or_else(|| panic!("a Junk sub-row: {table}"));
        assert_eq!(header.find("STATE"), junk.find("watched"), "{table}");
        assert_eq!(header.find("WATERMARK"), junk.find('9'), "{table}");
        assert!(junk.ends_with('9'), "no trailing blanks: {junk:?}");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("  + Gone") && l.contains("missing (3x)")),
            "{table}"
        );
        // The main folder is the row itself, not a sub-row.
        assert!(!table.contains("+ INBOX"), "{table}");
        let json: Value = serde_json::from_str(frame.json().trim()).unwrap();
        let folders = &json["inboxes"][0]["folders"];
        assert_eq!(folders[0]["folder"], "INBOX");
        assert_eq!(folders[1]["folder"], "\\Junk");
        assert_eq!(folders[1]["watermark"], 9);
        assert_eq!(folders[2]["missing"], true);
        // What the gateway answers reads back the same.
        assert_eq!(FolderRow::list_from_json(folders), frame.rows[0].folders,);
    }
}
