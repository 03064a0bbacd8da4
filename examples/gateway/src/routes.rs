//! The HTTP endpoints: long-poll wait, Server-Sent Events stream, stats,
//! health and Prometheus metrics.
//!
//! Requests reach these handlers only through the gate (`gate.rs`), which
//! has authenticated the key and checked its endpoint scope; here each
//! request is kept to the key's inboxes and recipient patterns (403, the
//! same answer as for an inbox that does not exist).
//!
//! Every wait or stream holds one of its key's slots (past the key's limit:
//! 429) and one gateway-wide waiter slot (past `max_waiters`: 503), taken
//! at once instead of piling up. A client that goes away drops its request
//! future, which drops its emap subscription: the session forgets the
//! subscriber at once.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse, get};
use emap::{Credential, Error, Filter, Handle};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Caller, Keys, Scope, Throttle};
use crate::config::{Config, parse_duration};
use crate::gate::{caller, error, forbidden};
use crate::json::mail_json;
use crate::status::{Status, unix};

/// How often an idle event stream gets a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Shared by every request.
pub struct State {
    /// The embedded registry.
    pub handle: Handle,
    /// The configuration (without its keys: see `keys`).
    pub config: Config,
    /// The API keys and their live counters.
    pub keys: Keys,
    /// What the status page keeps: start time, mail rates, open waits.
    pub status: Status,
    waiters: AtomicUsize,
    waits_ok: AtomicU64,
    waits_timed_out: AtomicU64,
    rejected_busy: AtomicU64,
}

impl State {
    /// State around a started registry.
    pub fn new(handle: Handle, mut config: Config) -> Self {
        let keys = Keys::new(std::mem::take(&mut config.keys), config.limits);
        State {
            handle,
            status: Status::new(&config),
            config,
            keys,
            waiters: AtomicUsize::new(0),
            waits_ok: AtomicU64::new(0),
            waits_timed_out: AtomicU64::new(0),
            rejected_busy: AtomicU64::new(0),
        }
    }

    /// The inboxes `scope` allows, with their credentials, by name.
    pub fn inboxes_in_scope(&self, scope: &Scope) -> Vec<(&String, &Credential)> {
        let mut inboxes: Vec<_> = self
            .config
            .inboxes
            .iter()
            .filter(|(name, _)| scope.inbox(name))
            .collect();
        inboxes.sort_by_key(|(name, _)| *name);
        inboxes
    }

    /// Open waits and streams, gateway-wide.
    pub fn waiters(&self) -> usize {
        self.waiters.load(Ordering::Relaxed)
    }

    /// Takes a waiter slot, or `None` when all are taken.
    fn slot(self: &Arc<Self>) -> Option<Slot> {
        let mut n = self.waiters.load(Ordering::Relaxed);
        loop {
            if n >= self.config.max_waiters {
                self.rejected_busy.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            match self
                .waiters
                .compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Some(Slot(self.clone())),
                Err(now) => n = now,
            }
        }
    }
}

/// A waiter slot, released on drop (also when the client disconnects).
struct Slot(Arc<State>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The query of `/v1/wait` and `/v1/stream`.
#[derive(Debug, Deserialize)]
pub struct MailQuery {
    inbox: Option<String>,
    to: Option<String>,
    from_contains: Option<String>,
    subject_contains: Option<String>,
    max_age: Option<String>,
    timeout: Option<String>,
}

/// Turns a query into a credential and filter within the caller's scope,
/// or the answer refusing it (400, or the one 403).
fn request(
    state: &State,
    caller: &Caller,
    q: &MailQuery,
) -> Result<(Credential, Filter), Box<HttpResponse>> {
    let bad = |m: &str| Box::new(error(StatusCode::BAD_REQUEST, m));
    let Some(name) = q.inbox.as_deref() else {
        return Err(bad("missing parameter: inbox"));
    };
    let Some(cred) = state
        .config
        .inboxes
        .get(name)
        .filter(|_| caller.scope.inbox(name))
    else {
        return Err(Box::new(forbidden()));
    };
    // The address as emap's Filter::to compares it, so that the scope is
    // checked on exactly what will be matched.
    let to =
        q.to.as_deref()
            .map(|t| t.trim_matches([' ', '\t']).to_ascii_lowercase());
    if to.as_deref().is_some_and(|t| !t.contains('@')) {
        return Err(bad("to: not an e-mail address"));
    }
    if !caller.scope.recipient(to.as_deref()) {
        return Err(Box::new(forbidden()));
    }
    let mut filter = Filter::new();
    if let Some(to) = to {
        filter = filter.to(to);
    }
    if let Some(s) = &q.from_contains {
        filter = filter.from_contains(s);
    }
    if let Some(s) = &q.subject_contains {
        filter = filter.subject_contains(s);
    }
    if let Some(s) = &q.max_age {
        let age = parse_duration(s).ok_or_else(|| bad("max_age: use e.g. 30s, 10m"))?;
        filter = filter.max_age(age);
    } else {
        // Mail from the request on: on a cold inbox the session's first
        // SELECT comes after the request, and a mail the worker triggered
        // in between would sit below the session's starting point; `since`
        // makes the session look back for it (within emap's clock-skew
        // allowance).
        filter = filter.since(std::time::SystemTime::now());
    }
    filter.validate().map_err(|e| bad(&e.to_string()))?;
    Ok((cred.clone(), filter))
}

/// The 429 for a key with all its wait (or stream) slots taken.
fn too_many(why: Throttle) -> HttpResponse {
    error(
        StatusCode::TOO_MANY_REQUESTS,
        match why {
            Throttle::Streams => "too many concurrent streams for this key",
            _ => "too many concurrent waits for this key",
        },
    )
}

fn session_error(e: &Error) -> HttpResponse {
    // The IMAP side failed: permanent (credentials) is a bad gateway;
    // transient is worth retrying.
    let status = if e.is_permanent() {
        StatusCode::BAD_GATEWAY
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    error(status, &e.to_string())
}

/// `GET /v1/wait`: the next matching mail as JSON (200), or 408 when none
/// arrives within `timeout`.
#[get("/v1/wait")]
pub async fn wait(
    req: HttpRequest,
    state: web::Data<State>,
    q: web::Query<MailQuery>,
) -> HttpResponse {
    let caller = caller(&req, &state);
    let (cred, filter) = match request(&state, &caller, &q) {
        Ok(x) => x,
        Err(refused) => return *refused,
    };
    let timeout = match &q.timeout {
        None => state.config.default_timeout,
        Some(s) => match parse_duration(s) {
            Some(t) if t <= state.config.max_timeout => t,
            Some(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("timeout: at most {:?}", state.config.max_timeout),
                );
            }
            None => return error(StatusCode::BAD_REQUEST, "timeout: use e.g. 30s, 2m"),
        },
    };
    let state = state.into_inner();
    let Some(_key_slot) = caller.slot(false) else {
        return too_many(Throttle::Waiters);
    };
    let Some(_slot) = state.slot() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many concurrent waiters",
        );
    };
    let _open = q.inbox.as_deref().and_then(|i| state.status.open(i));
    let waited = tokio::select! {
        w = state.handle.wait_for(cred, filter, timeout) => w,
        _ = crate::peer::hung_up(&req) => {
            // Nobody to answer; dropping the wait releases the subscription.
            return error(StatusCode::REQUEST_TIMEOUT, "client went away");
        }
    };
    match waited {
        Ok(mail) => {
            state.waits_ok.fetch_add(1, Ordering::Relaxed);
            HttpResponse::Ok().json(mail_json(&mail))
        }
        Err(Error::WaitTimedOut) => {
            state.waits_timed_out.fetch_add(1, Ordering::Relaxed);
            error(
                StatusCode::REQUEST_TIMEOUT,
                "no matching mail within the timeout",
            )
        }
        Err(e) => session_error(&e),
    }
}

/// `GET /v1/stream`: matching mail as Server-Sent Events (`event: mail`,
/// JSON data), with keep-alive comments; ends with `event: error` if the
/// session fails for good.
#[get("/v1/stream")]
pub async fn stream(
    req: HttpRequest,
    state: web::Data<State>,
    q: web::Query<MailQuery>,
) -> HttpResponse {
    let caller = caller(&req, &state);
    let (cred, filter) = match request(&state, &caller, &q) {
        Ok(x) => x,
        Err(refused) => return *refused,
    };
    let state = state.into_inner();
    let Some(key_slot) = caller.slot(true) else {
        return too_many(Throttle::Streams);
    };
    let Some(slot) = state.slot() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many concurrent waiters",
        );
    };
    let sub = match state.handle.subscribe(cred, filter).await {
        Ok(s) => s,
        Err(e) => return session_error(&e),
    };
    let mut tick = tokio::time::interval(KEEP_ALIVE);
    tick.reset();
    let gone: std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> =
        Box::pin(async move { crate::peer::hung_up(&req).await });
    let open = q.inbox.as_deref().and_then(|i| state.status.open(i));
    let slots = (key_slot, slot, open);
    let events = futures_util::stream::unfold(Some((sub, slots, tick, gone)), |st| async move {
        let (mut sub, slots, mut tick, mut gone) = st?;
        tokio::select! {
            // The client hung up: end the stream, dropping the subscription.
            _ = &mut gone => None,
            m = sub.recv() => match m {
                Some(mail) => {
                    let line = format!("event: mail\ndata: {}\n\n", mail_json(&mail));
                    Some((Ok::<_, actix_web::Error>(Bytes::from(line)), Some((sub, slots, tick, gone))))
                }
                None => {
                    let why = sub.error().map_or_else(|| "closed".to_owned(), |e| e.to_string());
                    let line = format!("event: error\ndata: {}\n\n", json!({ "error": why }));
                    Some((Ok(Bytes::from(line)), None))
                }
            },
            _ = tick.tick() => Some((Ok(Bytes::from_static(b": keep-alive\n\n")), Some((sub, slots, tick, gone)))),
        }
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(events)
}

/// `GET /v1/stats`: per-session statistics of the inboxes in the key's
/// scope, and the key's own open waits and streams.
#[get("/v1/stats")]
pub async fn stats(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    let caller = caller(&req, &state);
    // Only the sessions of the inboxes in the key's scope, asked by
    // credential: the registry matches server, user, TLS and secret. Two
    // inboxes with the same credential share one session: listed once.
    let mut sessions: Vec<emap::SessionStats> = Vec::new();
    for (_, cred) in state.inboxes_in_scope(&caller.scope) {
        for s in state.handle.stats_of(cred).await.unwrap_or_default() {
            if !sessions.iter().any(|seen| seen.key == s.key) {
                sessions.push(s);
            }
        }
    }
    let sessions: Vec<_> = sessions
        .iter()
        .map(|s| {
            json!({
                "session": s.key.to_string(),
                "state": format!("{:?}", s.state),
                "idle": s.idle,
                "watermark": s.watermark,
                "uid_validity": s.uid_validity,
                "subscribers": s.subscribers,
                "fetched": s.fetched,
                "queued": s.queued,
                "dropped": s.dropped,
                "skipped": s.skipped,
                "look_back_failures": s.look_back_failures,
                "uidnext_regressions": s.uidnext_regressions,
                "reconnects": s.reconnects,
                "last_error": s.last_error,
                // Unix seconds: when the connection selected the mailbox
                // (null unless connected), and while backing off when the
                // next attempt starts.
                "connected_since": s.connected_since.map(unix),
                "next_attempt": s.next_attempt.map(unix),
                // Every watched folder, the main one first.
                "folders": crate::status::folders_json(s),
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({
        "waiters": state.waiters.load(Ordering::Relaxed),
        "key": {
            "id": caller.id,
            "waiters": caller.usage.waiters(),
            "streams": caller.usage.streams(),
        },
        "sessions": sessions,
    }))
}

/// `GET /healthz`: the process and its registry answer.
#[get("/healthz")]
pub async fn healthz(state: web::Data<State>) -> HttpResponse {
    match state.handle.stats().await {
        Ok(_) => HttpResponse::Ok().body("ok\n"),
        Err(_) => HttpResponse::ServiceUnavailable().body("registry stopped\n"),
    }
}

/// `GET /metrics`: Prometheus text format: the totals of every session,
/// then per inbox in the key's scope (see [`per_inbox`]).
#[get("/metrics")]
pub async fn metrics(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    let sessions = state.handle.stats().await.unwrap_or_default();
    let sum = |f: fn(&emap::SessionStats) -> u64| sessions.iter().map(f).sum::<u64>();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    };
    metric(
        "emap_sessions",
        "gauge",
        "IMAP sessions (one connection each).",
        sessions.len() as u64,
    );
    metric(
        "emap_subscribers",
        "gauge",
        "Subscribers across all sessions.",
        sum(|s| s.subscribers as u64),
    );
    metric(
        "emap_fetched_total",
        "counter",
        "Mails fetched from the servers.",
        sum(|s| s.fetched),
    );
    metric(
        "emap_deliveries_total",
        "counter",
        "Mails pushed into subscriber queues.",
        sum(|s| s.queued),
    );
    metric(
        "emap_dropped_total",
        "counter",
        "Mails dropped from full subscriber queues.",
        sum(|s| s.dropped),
    );
    metric(
        "emap_skipped_total",
        "counter",
        "Messages given up on after failing to be fetched poison_attempts times.",
        sum(|s| s.skipped),
    );
    metric(
        "emap_reconnects_total",
        "counter",
        "Reconnects after failures.",
        sum(|s| s.reconnects),
    );
    metric(
        "emap_gateway_waiters",
        "gauge",
        "Open waits and streams.",
        state.waiters.load(Ordering::Relaxed) as u64,
    );
    metric(
        "emap_gateway_waits_ok_total",
        "counter",
        "Waits answered with a mail.",
        state.waits_ok.load(Ordering::Relaxed),
    );
    metric(
        "emap_gateway_waits_timed_out_total",
        "counter",
        "Waits that timed out.",
        state.waits_timed_out.load(Ordering::Relaxed),
    );
    metric(
        "emap_gateway_rejected_busy_total",
        "counter",
        "Requests refused with 503 for lack of a waiter slot.",
        state.rejected_busy.load(Ordering::Relaxed),
    );
    per_key(&mut out, &state.keys);
    per_inbox(&mut out, &req, &state).await;
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(out)
}

/// `v` escaped for a Prometheus label value: backslash, double quote and
/// line feed.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The per-inbox series, for the inboxes in the key's scope (labels
/// `inbox`, the configured name, and `session`, 0 for an inbox's first
/// session): how long the connection has been up, while connected; the
/// Unix time of the next connection attempt, while backing off; and each
/// watched folder's watermark and UIDVALIDITY (label `folder`, as the
/// inbox names it: `INBOX`, `\Junk`) and whether it is missing. A series
/// is left out while its value is unknown.
async fn per_inbox(out: &mut String, req: &HttpRequest, state: &State) {
    let caller = caller(req, state);
    let now = std::time::SystemTime::now();
    let (mut age, mut next, mut watermark, mut validity, mut missing) = (
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    );
    for (name, cred) in state.inboxes_in_scope(&caller.scope) {
        let sessions = state.handle.stats_of(cred).await.unwrap_or_default();
        for (i, s) in sessions.iter().enumerate() {
            let at = format!("inbox=\"{}\",session=\"{i}\"", label(name));
            if let Some(t) = s.connected_since {
                let secs = now.duration_since(t).unwrap_or_default().as_secs();
                let _ = writeln!(age, "emap_inbox_connection_age_seconds{{{at}}} {secs}");
            }
            if let Some(t) = s.next_attempt {
                let _ = writeln!(
                    next,
                    "emap_inbox_next_attempt_timestamp_seconds{{{at}}} {}",
                    unix(t)
                );
            }
            for f in &s.folders {
                let at = format!("{at},folder=\"{}\"", label(&f.folder.to_string()));
                if let Some(w) = f.watermark {
                    let _ = writeln!(watermark, "emap_folder_watermark{{{at}}} {w}");
                }
                if let Some(v) = f.uid_validity {
                    let _ = writeln!(validity, "emap_folder_uid_validity{{{at}}} {v}");
                }
                let _ = writeln!(
                    missing,
                    "emap_folder_missing{{{at}}} {}",
                    u8::from(f.missing)
                );
            }
        }
    }
    for (name, help, series) in [
        (
            "emap_inbox_connection_age_seconds",
            "Seconds the inbox's connection has been watching without a break (while connected).",
            age,
        ),
        (
            "emap_inbox_next_attempt_timestamp_seconds",
            "Unix time of the next connection attempt (while backing off).",
            next,
        ),
        (
            "emap_folder_watermark",
            "The lowest UID not yet delivered from a watched folder.",
            watermark,
        ),
        (
            "emap_folder_uid_validity",
            "A watched folder's UIDVALIDITY.",
            validity,
        ),
        (
            "emap_folder_missing",
            "1 when a watched folder was missing at the last check.",
            missing,
        ),
    ] {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{series}");
    }
}

/// The per-key series: requests by status, 429s by reason, open waits and
/// streams. Labels carry the key id only (ids are `[A-Za-z0-9_.-]`, or
/// `-` for requests without a valid key).
fn per_key(out: &mut String, keys: &Keys) {
    let _ = writeln!(
        out,
        "# HELP emap_gateway_requests_total Requests answered, by API key id and status.\n\
         # TYPE emap_gateway_requests_total counter"
    );
    for k in keys.all() {
        for (status, n) in k.usage.statuses() {
            let _ = writeln!(
                out,
                "emap_gateway_requests_total{{key=\"{}\",status=\"{status}\"}} {n}",
                k.id
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP emap_gateway_throttled_total Requests refused with 429, by API key id and reason.\n\
         # TYPE emap_gateway_throttled_total counter"
    );
    for k in keys.all() {
        for why in [Throttle::Rate, Throttle::Waiters, Throttle::Streams] {
            let _ = writeln!(
                out,
                "emap_gateway_throttled_total{{key=\"{}\",reason=\"{}\"}} {}",
                k.id,
                why.name(),
                k.usage.throttled(why)
            );
        }
    }
    for (name, help, get) in [
        (
            "emap_gateway_key_waiters",
            "Open waits, by API key id.",
            (|u: &crate::auth::Usage| u.waiters()) as fn(&crate::auth::Usage) -> usize,
        ),
        (
            "emap_gateway_key_streams",
            "Open streams, by API key id.",
            |u: &crate::auth::Usage| u.streams(),
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for k in keys.all() {
            let _ = writeln!(out, "{name}{{key=\"{}\"}} {}", k.id, get(&k.usage));
        }
    }
}
