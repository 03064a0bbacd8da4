//! The operator's page: `GET /` renders, on the server, one HTML page that
//! says for each inbox in the key's scope whether it is connected and, if
//! not, why — the view a person wants at 3 a.m., where `/v1/stats` and
//! `/metrics` are for machines.
//!
//! The page has no script and no external asset. Its one inline style
//! sheet is allowed by its SHA-256 hash in a strict Content-Security-Policy
//! (`default-src 'none'`), so nothing else can run or load even if an inbox
//! name slipped past the escaping. It refreshes itself with `<meta
//! http-equiv="refresh">` every [`REFRESH_SECONDS`]: a full reload of a
//! small page with no external resource, so the browser swaps it in one
//! paint.
//!
//! Mail per minute over the last hour comes from a per-inbox ring of
//! per-minute counts that [`sample`] fills once a minute from the session's
//! `fetched` counter; it is drawn as an inline SVG sparkline.
//!
//! An inbox that watches further folders (`also_watch` in its `[[inbox]]`)
//! gets one sub-row per further folder under its row: the folder, the name
//! it was found under, its UIDVALIDITY and watermark, or that it is
//! missing.
//!
//! `GET /v1/status` (same `status` scope) answers the same rows as JSON,
//! for `emap status --gateway` and scripts: one model ([`Line`]), two
//! renderings, so the terminal and the page cannot disagree.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::{HttpRequest, HttpResponse, get, web};
use base64::Engine as _;
use emap::{FolderStats, SessionStats};
use serde_json::{Value, json};

use crate::config::Config;
use crate::gate::caller;
use crate::routes::State;

/// Seconds between the page's own reloads.
pub const REFRESH_SECONDS: u32 = 5;

/// Minutes of mail counts a ring keeps: one hour.
const MINUTES: usize = 60;

/// The page's style sheet (allowed by its hash, see [`csp`]).
const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fff}\
h1{font-size:1.3em;margin:0 0 .5em}\
dl{display:flex;flex-wrap:wrap;gap:.3em 1.5em;margin:0 0 1em}dt{font-weight:600}dd{margin:0 0 0 .3em}\
table{border-collapse:collapse}th,td{padding:.25em .6em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}\
td.n{text-align:right;font-variant-numeric:tabular-nums}\
.ok{color:#176d2c}.warn{color:#8a5a00}.bad{color:#a11}\
.spark{color:#246}.err{max-width:30em;overflow-wrap:anywhere}\
tr.folder th{font-weight:400;padding-left:1.6em}tr.folder td,tr.folder th{border-bottom-style:dotted}";

/// The Content-Security-Policy: nothing but the inline style sheet, whose
/// SHA-256 is computed once.
pub fn csp() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        let hash = ring::digest::digest(&ring::digest::SHA256, STYLE.as_bytes());
        format!(
            "default-src 'none'; style-src 'sha256-{}'; img-src 'none'; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            base64::engine::general_purpose::STANDARD.encode(hash.as_ref())
        )
    })
}

/// Per-minute mail counts of one inbox, newest last.
#[derive(Debug, Default)]
pub struct Ring {
    /// The counter at the previous sample (`None` before the first).
    last: Option<u64>,
    /// Mails per minute, at most [`MINUTES`] of them.
    counts: VecDeque<u64>,
}

impl Ring {
    /// Records the session's `fetched` counter at the end of a minute.
    /// The first sample is only the baseline. A counter below the previous
    /// one means a new session (counters restart at zero): all of it is
    /// new.
    pub fn record(&mut self, total: u64) {
        if let Some(last) = self.last {
            let delta = if total >= last { total - last } else { total };
            if self.counts.len() == MINUTES {
                self.counts.pop_front();
            }
            self.counts.push_back(delta);
        }
        self.last = Some(total);
    }

    /// The counts, oldest first.
    pub fn counts(&self) -> impl Iterator<Item = u64> + '_ {
        self.counts.iter().copied()
    }
}

/// What the page needs beyond the registry: when the gateway started, the
/// rings, and the open waits and streams per inbox.
#[derive(Debug)]
pub struct Status {
    started: Instant,
    rings: Mutex<HashMap<String, Ring>>,
    open: HashMap<String, Arc<AtomicUsize>>,
}

impl Status {
    /// For the configured inboxes.
    pub fn new(config: &Config) -> Self {
        Status {
            started: Instant::now(),
            rings: Mutex::new(HashMap::new()),
            open: config
                .inboxes
                .keys()
                .map(|n| (n.clone(), Arc::new(AtomicUsize::new(0))))
                .collect(),
        }
    }

    /// Counts one open wait or stream on `inbox` until the guard drops.
    pub fn open(&self, inbox: &str) -> Option<Open> {
        let n = self.open.get(inbox)?;
        n.fetch_add(1, Ordering::Relaxed);
        Some(Open(n.clone()))
    }

    fn open_of(&self, inbox: &str) -> usize {
        self.open
            .get(inbox)
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }

    fn counts_of(&self, inbox: &str) -> Vec<u64> {
        self.rings
            .lock()
            .ok()
            .and_then(|r| r.get(inbox).map(|r| r.counts().collect()))
            .unwrap_or_default()
    }
}

/// One open wait or stream (see [`Status::open`]).
pub struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Samples every inbox's `fetched` counter once a minute, for ever (run on
/// the actix runtime by `main`).
pub async fn sample(state: Arc<State>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        for (name, cred) in &state.config.inboxes {
            let total = state
                .handle
                .stats_of(cred)
                .await
                .unwrap_or_default()
                .iter()
                .map(|s| s.fetched)
                .sum();
            if let Ok(mut rings) = state.status.rings.lock() {
                rings.entry(name.clone()).or_default().record(total);
            }
        }
    }
}

/// `s` with `& < > " '` escaped for HTML text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Seconds since the Unix epoch (0 before it).
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `t` as `HH:MM:SS UTC`: the time of day an operator compares with a
/// clock (the page is about the next minutes, not dates).
fn time_of_day(t: SystemTime) -> String {
    let s = unix(t);
    format!("{:02}:{:02}:{:02} UTC", s / 3600 % 24, s / 60 % 60, s % 60)
}

/// A duration as a person reads it: `45s`, `3m 12s`, `2h 05m`, `3d 04h`.
pub fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, s / 60 % 60),
        _ => format!("{}d {:02}h", s / 86400, s / 3600 % 24),
    }
}

/// The state in plain words (`SessionStats::state_name`, with the time of the
/// next attempt while backing off) and its colour class.
fn state_words(s: &SessionStats, now: SystemTime) -> (String, &'static str) {
    let token = s.state_name();
    let class = match token {
        "idling" | "polling" => "ok",
        "failed" => "bad",
        _ => "warn",
    };
    let words = match (token, s.next_attempt) {
        ("backing_off", Some(t)) => format!(
            "backing off, next attempt at {} (in {})",
            time_of_day(t),
            age(t.duration_since(now).unwrap_or_default())
        ),
        _ => token.replace('_', " "),
    };
    (words, class)
}

/// How long the current connection has been up, if it is.
fn connection_age(s: &SessionStats, now: SystemTime) -> Option<Duration> {
    s.connected_since
        .map(|t| now.duration_since(t).unwrap_or_default())
}

/// An inline SVG sparkline of `counts` (oldest first) in a 120×24 box.
pub fn sparkline(counts: &[u64]) -> String {
    let (w, h) = (120.0_f64, 24.0_f64);
    let max = counts.iter().copied().max().unwrap_or(0);
    let total: u64 = counts.iter().sum();
    let label = format!(
        "{total} mails in the last {} min, at most {max} per minute",
        counts.len()
    );
    let mut points = String::new();
    let step = w / (MINUTES - 1) as f64;
    // Right-aligned: the newest minute is at the right edge.
    let offset = MINUTES.saturating_sub(counts.len());
    for (i, &c) in counts.iter().enumerate() {
        let x = (offset + i) as f64 * step;
        let y = h - 1.0 - (c as f64 / max.max(1) as f64) * (h - 2.0);
        let _ = write!(points, "{x:.1},{y:.1} ");
    }
    let line = if counts.is_empty() {
        String::new()
    } else {
        format!(
            "<polyline fill=\"none\" stroke=\"currentColor\" stroke-width=\"1.5\" points=\"{}\"/>",
            points.trim_end()
        )
    };
    format!(
        "<svg class=\"spark\" width=\"120\" height=\"24\" viewBox=\"0 0 120 24\" role=\"img\" \
         aria-label=\"{label}\"><title>{label}</title>\
         <line x1=\"0\" y1=\"23.5\" x2=\"120\" y2=\"23.5\" stroke=\"currentColor\" stroke-opacity=\"0.25\"/>\
         {line}</svg>"
    )
}

fn opt(v: Option<u32>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| v.to_string())
}

fn uptime(d: Duration) -> String {
    let s = d.as_secs();
    format!(
        "{}d {:02}h {:02}m {:02}s",
        s / 86400,
        s / 3600 % 24,
        s / 60 % 60,
        s % 60
    )
}

/// One line of the status: an inbox and one of its sessions (none when
/// nobody waits on it), with what the gateway itself counts.
pub struct Line {
    /// The inbox's configured name (unescaped).
    pub inbox: String,
    /// Its session's figures, if it has one.
    pub session: Option<SessionStats>,
    /// Open waits and streams on the inbox.
    pub open: usize,
    /// Mails per minute over the last hour, oldest first.
    pub counts: Vec<u64>,
}

/// The lines of the inboxes in the caller's scope, by name.
async fn lines(req: &HttpRequest, state: &State) -> Vec<Line> {
    let caller = caller(req, state);
    let mut out = Vec::new();
    for (name, cred) in state.inboxes_in_scope(&caller.scope) {
        let sessions = state.handle.stats_of(cred).await.unwrap_or_default();
        let open = state.status.open_of(name);
        let counts = state.status.counts_of(name);
        if sessions.is_empty() {
            out.push(Line {
                inbox: name.clone(),
                session: None,
                open,
                counts,
            });
            continue;
        }
        for s in sessions {
            out.push(Line {
                inbox: name.clone(),
                session: Some(s),
                open,
                counts: counts.clone(),
            });
        }
    }
    out
}

/// Keys with an open wait or stream.
fn keys_active(state: &State) -> usize {
    state
        .keys
        .all()
        .filter(|k| k.usage.waiters() + k.usage.streams() > 0)
        .count()
}

/// One line as the page's table row.
fn row(out: &mut String, line: &Line, now: SystemTime) {
    let name = escape(&line.inbox);
    let open = line.open;
    let spark = sparkline(&line.counts);
    let Some(s) = &line.session else {
        let _ = writeln!(
            out,
            "<tr><th scope=\"row\">{name}</th><td data-k=\"state\">not connected (nobody waiting)</td>\
             <td data-k=\"age\">–</td><td>–</td><td class=\"n\">–</td><td class=\"n\">–</td>\
             <td class=\"n\" data-k=\"subscribers\">0</td><td class=\"n\" data-k=\"open\">{open}</td>\
             <td>{spark}</td><td class=\"n\">–</td><td class=\"n\">–</td><td class=\"n\">–</td>\
             <td class=\"n\">–</td><td class=\"n\" data-k=\"reconnects\">–</td><td class=\"err\">–</td></tr>"
        );
        return;
    };
    let (words, class) = state_words(s, now);
    let mode = match s.mode_name() {
        Some("idle") => "IDLE",
        Some(m) => m,
        None => "–",
    };
    let connected = connection_age(s, now).map_or_else(|| "–".to_owned(), age);
    let mut last = match &s.last_error {
        Some(e) => escape(e),
        None => "–".to_owned(),
    };
    if let Some(alert) = &s.last_alert {
        let _ = write!(last, "<br>server alert: {}", escape(alert));
    }
    let _ = writeln!(
        out,
        "<tr><th scope=\"row\">{name}</th><td class=\"{class}\" data-k=\"state\">{words}</td>\
         <td class=\"n\" data-k=\"age\">{connected}</td>\
         <td data-k=\"mode\">{mode}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
         <td class=\"n\" data-k=\"subscribers\">{}</td><td class=\"n\" data-k=\"open\">{open}</td>\
         <td>{spark}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
         <td class=\"n\">{}</td><td class=\"n\" data-k=\"reconnects\">{}</td>\
         <td class=\"err\" data-k=\"error\">{last}</td></tr>",
        opt(s.uid_validity),
        opt(s.watermark),
        s.subscribers,
        s.fetched,
        s.queued,
        s.dropped,
        s.skipped,
        s.reconnects,
    );
    for f in s.folders.iter().skip(1) {
        folder_row(out, &line.inbox, f);
    }
}

/// How a further folder is labelled: as the credential named it, with the
/// name it was found under when that differs (`\Junk (Junk)`).
pub fn folder_label(f: &FolderStats) -> String {
    let named = f.folder.to_string();
    match &f.mailbox {
        Some(m) if *m != named => format!("{named} ({m})"),
        _ => named,
    }
}

/// A further folder's state in plain words, and its colour class.
fn folder_words(f: &FolderStats) -> (String, &'static str) {
    if f.missing {
        let times = if f.failures == 1 { "time" } else { "times" };
        (
            format!(
                "missing ({} {times}), looked for again at the next check",
                f.failures
            ),
            "warn",
        )
    } else if f.mailbox.is_some() {
        ("watched".into(), "ok")
    } else {
        ("not found yet".into(), "warn")
    }
}

/// One further folder as a sub-row under its inbox: the label, its state
/// over the State, Connected for and Mode columns, its UIDVALIDITY and
/// watermark, the rest empty.
fn folder_row(out: &mut String, inbox: &str, f: &FolderStats) {
    let (words, class) = folder_words(f);
    let _ = writeln!(
        out,
        "<tr class=\"folder\" data-inbox=\"{}\" data-folder=\"{}\"><th scope=\"row\">↳ {}</th>\
         <td class=\"{class}\" colspan=\"3\" data-k=\"folder-state\">{}</td>\
         <td class=\"n\" data-k=\"folder-uidvalidity\">{}</td>\
         <td class=\"n\" data-k=\"folder-watermark\">{}</td><td colspan=\"9\"></td></tr>",
        escape(inbox),
        escape(&f.folder.to_string()),
        escape(&folder_label(f)),
        escape(&words),
        opt(f.uid_validity),
        opt(f.watermark),
    );
}

/// Every folder of a session as JSON, the main one first: `folder` (as
/// the credential named it: a name, or a special use such as `\Junk`),
/// `mailbox` (its name on the server, once found), `uid_validity`,
/// `watermark`, `missing`, `failures`.
pub fn folders_json(s: &SessionStats) -> Value {
    s.folders
        .iter()
        .map(|f| {
            json!({
                "folder": f.folder.to_string(),
                "mailbox": f.mailbox,
                "uid_validity": f.uid_validity,
                "watermark": f.watermark,
                "missing": f.missing,
                "failures": f.failures,
            })
        })
        .collect()
}

/// One line as JSON (`/v1/status`): times as Unix seconds and, measured
/// on the gateway's clock, as ages, so a reader on another machine needs
/// no synchronised clock.
pub fn line_json(line: &Line, now: SystemTime) -> Value {
    let mut v = json!({
        "inbox": line.inbox,
        "open_waits": line.open,
        "mail_per_minute": line.counts,
    });
    let Some(s) = &line.session else {
        v["state"] = json!("not_connected");
        v["subscribers"] = json!(0);
        v["folders"] = json!([]);
        return v;
    };
    let fields = json!({
        "session": s.key.to_string(),
        "state": s.state_name(),
        "mode": s.mode_name(),
        "connected_since": s.connected_since.map(unix),
        "connection_age_s": connection_age(s, now).map(|d| d.as_secs()),
        "next_attempt": s.next_attempt.map(unix),
        "next_attempt_in_s": s.next_attempt.map(|t| t.duration_since(now).unwrap_or_default().as_secs()),
        "uid_validity": s.uid_validity,
        "watermark": s.watermark,
        "subscribers": s.subscribers,
        "fetched": s.fetched,
        "delivered": s.queued,
        "dropped": s.dropped,
        "skipped": s.skipped,
        "reconnects": s.reconnects,
        "last_error": s.last_error,
        "last_alert": s.last_alert,
        "folders": folders_json(s),
    });
    if let (Value::Object(v), Value::Object(f)) = (&mut v, fields) {
        v.extend(f);
    }
    v
}

/// `GET /`: the status page of the inboxes in the key's scope.
#[get("/")]
pub async fn page(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    let now = SystemTime::now();
    let mut body = String::new();
    for line in lines(&req, &state).await {
        row(&mut body, &line, now);
    }
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>emap gateway status</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>emap gateway status</h1>\n<dl>\
         <dt>Waiters</dt><dd data-k=\"waiters\">{}</dd>\
         <dt>Keys active</dt><dd data-k=\"keys-active\">{}</dd>\
         <dt>Uptime</dt><dd>{}</dd>\
         <dt>Version</dt><dd>emap-gateway {}</dd></dl>\n\
         <table>\n<caption>Inboxes at {} (refreshed every {REFRESH_SECONDS} s)</caption>\n<thead><tr>\
         <th scope=\"col\">Inbox</th><th scope=\"col\">State</th><th scope=\"col\">Connected for</th>\
         <th scope=\"col\">Mode</th>\
         <th scope=\"col\">UIDVALIDITY</th><th scope=\"col\">Watermark</th>\
         <th scope=\"col\">Subscribers</th><th scope=\"col\">Open waits</th>\
         <th scope=\"col\">Mail/min, last hour</th><th scope=\"col\">Fetched</th>\
         <th scope=\"col\">Delivered</th><th scope=\"col\">Dropped</th><th scope=\"col\">Skipped</th>\
         <th scope=\"col\">Reconnects</th><th scope=\"col\">Last error</th></tr></thead>\n\
         <tbody>\n{body}</tbody>\n</table>\n</body>\n</html>\n",
        state.waiters(),
        keys_active(&state),
        uptime(state.status.started.elapsed()),
        env!("CARGO_PKG_VERSION"),
        time_of_day(now),
    );
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Content-Security-Policy", csp()))
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .body(html)
}

/// `GET /v1/status`: the page's rows as JSON, behind the same `status`
/// scope: `version`, `uptime_s`, `waiters`, `keys_active` and `inboxes`,
/// one object per inbox and session (see [`line_json`]).
#[get("/v1/status")]
pub async fn status_json(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    let now = SystemTime::now();
    let inboxes: Vec<Value> = lines(&req, &state)
        .await
        .iter()
        .map(|l| line_json(l, now))
        .collect();
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": state.status.started.elapsed().as_secs(),
            "waiters": state.waiters(),
            "keys_active": keys_active(&state),
            "inboxes": inboxes,
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_counts_per_minute_and_keeps_an_hour() {
        let mut r = Ring::default();
        r.record(10); // baseline only
        assert_eq!(r.counts().count(), 0);
        r.record(13);
        r.record(13);
        // A new session restarted its counter at zero: 2 new mails.
        r.record(2);
        assert_eq!(r.counts().collect::<Vec<_>>(), [3, 0, 2]);
        for i in 0..100 {
            r.record(2 + i);
        }
        assert_eq!(r.counts().count(), MINUTES);
        assert!(r.counts().all(|c| c == 1));
    }

    #[test]
    fn ages_and_times_read_as_a_person_reads_them() {
        assert_eq!(age(Duration::from_secs(0)), "0s");
        assert_eq!(age(Duration::from_secs(59)), "59s");
        assert_eq!(age(Duration::from_secs(192)), "3m 12s");
        assert_eq!(age(Duration::from_secs(2 * 3600 + 5 * 60 + 9)), "2h 05m");
        assert_eq!(age(Duration::from_secs(3 * 86400 + 4 * 3600)), "3d 04h");
        let t = UNIX_EPOCH + Duration::from_secs(20_000 * 86400 + 20 * 3600 + 41 * 60 + 7);
        assert_eq!(time_of_day(t), "20:41:07 UTC");
    }

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(escape("a<b>&\"c'\n"), "a&lt;b&gt;&amp;&quot;c&#39;\u{fffd}");
    }

    #[test]
    fn sparkline_scales_to_the_busiest_minute() {
        let svg = sparkline(&[0, 4, 2]);
        assert!(
            svg.contains("6 mails in the last 3 min, at most 4 per minute"),
            "{svg}"
        );
        // The busiest minute touches the top (y = 1), an empty one the bottom.
        assert!(svg.contains(",1.0"), "{svg}");
        assert!(svg.contains(",23.0"), "{svg}");
        assert!(!sparkline(&[]).contains("polyline"));
    }

    #[test]
    fn the_policy_allows_only_the_style_sheet() {
        let csp = csp();
        assert!(
            csp.starts_with("default-src 'none'; style-src 'sha256-"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe"), "{csp}");
    }
}
