//! Who is calling, and what they may see: API keys and their scopes.
//!
//! The gateway serves every mail of its inboxes (verification codes,
//! password-reset links), so on a network each request must carry an API
//! key (`Authorization: Bearer <key>`) and is kept to that key's scope.
//! A browser cannot send a bearer key, so on the status page (`GET /`)
//! alone the key is also taken as the password of HTTP Basic
//! authentication (any user name): the page asks for it with a Basic
//! challenge. Nowhere else: a browser replays Basic credentials on
//! cross-site requests, which must not spend the key's waits or rate.
//! Keys are held only as SHA-256 digests and compared in constant time;
//! the key itself is never stored, logged or counted — only its id.
//!
//! A scope names the inboxes, the recipient patterns and the endpoints a
//! key may use. Anything outside it gets the same 403 as something that
//! does not exist, so a key learns nothing about what it may not see.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use subtle::ConstantTimeEq;

/// SHA-256 of an API key.
pub type Digest = [u8; 32];

/// The digest of `key`.
pub fn digest(key: &[u8]) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, key);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The endpoints a key may be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Endpoint {
    /// `GET /v1/wait`.
    Wait,
    /// `GET /v1/stream`.
    Stream,
    /// `GET /v1/stats`.
    Stats,
    /// `GET /metrics`.
    Metrics,
    /// `GET /`: the HTML status page, and `GET /v1/status`: its rows as
    /// JSON.
    Status,
}

impl Endpoint {
    /// Every endpoint.
    pub const ALL: [Endpoint; 5] = [
        Endpoint::Wait,
        Endpoint::Stream,
        Endpoint::Stats,
        Endpoint::Metrics,
        Endpoint::Status,
    ];

    /// The name used in the configuration and the audit log.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Wait => "wait",
            Endpoint::Stream => "stream",
            Endpoint::Stats => "stats",
            Endpoint::Metrics => "metrics",
            Endpoint::Status => "status",
        }
    }

    /// The endpoint called `name` in a configuration.
    pub fn parse(name: &str) -> Option<Endpoint> {
        Endpoint::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// A recipient pattern: `*` matches any run of characters except `@`;
/// matching is case-insensitive (ASCII), like emap's own `Filter::to`.
/// The lone pattern `*` matches every request, also one without `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    /// Parses a pattern: `*`, or an address with `@` in which `*` may
    /// stand for any part of the local part or domain.
    pub fn parse(s: &str) -> Result<Pattern, String> {
        let p = s.trim().to_ascii_lowercase();
        if p == "*" {
            return Ok(Pattern(p));
        }
        if p.matches('@').count() != 1 {
            return Err(format!(
                "recipient pattern {s:?}: must be `*` or contain exactly one @"
            ));
        }
        if p.chars().any(|c| c.is_control() || c == ' ') {
            return Err(format!(
                "recipient pattern {s:?}: no spaces or control characters"
            ));
        }
        Ok(Pattern(p))
    }

    /// Whether this is the pattern that allows everything.
    pub fn is_any(&self) -> bool {
        self.0 == "*"
    }

    /// Whether `addr` (already trimmed and lower-cased) matches. The
    /// pattern's one `@` must meet the address's only `@`, so a star
    /// never spans it.
    pub fn matches(&self, addr: &str) -> bool {
        if self.is_any() {
            return true;
        }
        let (Some((pl, pd)), Some((al, ad))) = (self.0.split_once('@'), addr.split_once('@'))
        else {
            return false;
        };
        !ad.contains('@')
            && glob(pl.as_bytes(), al.as_bytes())
            && glob(pd.as_bytes(), ad.as_bytes())
    }
}

/// `*` matches any run of bytes, everything else itself: the classic
/// single-backtrack wildcard match, linear in practice, no recursion.
fn glob(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p, i));
            p += 1;
        } else if p < pat.len() && pat[p] == s[i] {
            p += 1;
            i += 1;
        } else if let Some((sp, si)) = star {
            // Let the last star swallow one more byte.
            star = Some((sp, si + 1));
            p = sp + 1;
            i = si + 1;
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// What a key may reach.
#[derive(Debug, Clone)]
pub struct Scope {
    /// Inbox names; `None` means every configured inbox.
    pub inboxes: Option<Vec<String>>,
    /// Recipient patterns (see [`Pattern`]).
    pub recipients: Vec<Pattern>,
    /// Endpoints.
    pub endpoints: Vec<Endpoint>,
}

impl Scope {
    /// Everything: the open (loopback, no key) mode.
    pub fn everything() -> Scope {
        Scope {
            inboxes: None,
            recipients: vec![Pattern("*".into())],
            endpoints: Endpoint::ALL.to_vec(),
        }
    }

    /// Nothing at all.
    pub fn nothing() -> Scope {
        Scope {
            inboxes: Some(Vec::new()),
            recipients: Vec::new(),
            endpoints: Vec::new(),
        }
    }

    /// Whether the endpoint is allowed.
    pub fn endpoint(&self, e: Endpoint) -> bool {
        self.endpoints.contains(&e)
    }

    /// Whether the inbox is allowed (it must also exist).
    pub fn inbox(&self, name: &str) -> bool {
        self.inboxes
            .as_ref()
            .is_none_or(|list| list.iter().any(|i| i == name))
    }

    /// Whether a request for `to` (trimmed, lower-cased; `None`: every
    /// recipient) is allowed.
    pub fn recipient(&self, to: Option<&str>) -> bool {
        match to {
            None => self.recipients.iter().any(Pattern::is_any),
            Some(addr) => self.recipients.iter().any(|p| p.matches(addr)),
        }
    }
}

/// Per-key limits (see the `[limits]` table of the configuration).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Concurrent `/v1/wait` requests.
    pub max_waiters: usize,
    /// Concurrent `/v1/stream` requests.
    pub max_streams: usize,
    /// Requests per second, refilled continuously.
    pub rate: f64,
    /// Requests allowed at once before the rate applies.
    pub burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_waiters: 1000,
            max_streams: 100,
            rate: 50.0,
            burst: 100,
        }
    }
}

/// Why a request got 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// The request rate.
    Rate,
    /// Concurrent waits.
    Waiters,
    /// Concurrent streams.
    Streams,
}

impl Throttle {
    /// The label used in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Throttle::Rate => "rate",
            Throttle::Waiters => "waiters",
            Throttle::Streams => "streams",
        }
    }
}

/// A token bucket.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// A key's live counters: its open waits and streams, its rate bucket, and
/// its request counts for the metrics endpoint.
#[derive(Debug)]
pub struct Usage {
    waiters: AtomicUsize,
    streams: AtomicUsize,
    bucket: Mutex<Bucket>,
    statuses: Mutex<BTreeMap<u16, u64>>,
    throttled: [AtomicU64; 3],
}

impl Usage {
    fn new(limits: &Limits) -> Usage {
        Usage {
            waiters: AtomicUsize::new(0),
            streams: AtomicUsize::new(0),
            bucket: Mutex::new(Bucket {
                tokens: f64::from(limits.burst),
                last: Instant::now(),
            }),
            statuses: Mutex::new(BTreeMap::new()),
            throttled: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    /// Open waits.
    pub fn waiters(&self) -> usize {
        self.waiters.load(Ordering::Relaxed)
    }

    /// Open streams.
    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }

    /// Requests answered, by status.
    pub fn statuses(&self) -> BTreeMap<u16, u64> {
        self.statuses.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// 429s for `why`.
    pub fn throttled(&self, why: Throttle) -> u64 {
        self.throttled[why as usize].load(Ordering::Relaxed)
    }

    /// Counts one answered request.
    pub fn count(&self, status: u16) {
        if let Ok(mut m) = self.statuses.lock() {
            *m.entry(status).or_default() += 1;
        }
    }

    fn throttle(&self, why: Throttle) {
        self.throttled[why as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// One API key (or, with none configured, the open loopback mode).
pub struct Caller {
    /// The key's id: the only name logs and metrics use.
    pub id: String,
    digest: Digest,
    /// What it may reach.
    pub scope: Scope,
    /// Its limits.
    pub limits: Limits,
    /// Its live counters.
    pub usage: Usage,
}

impl std::fmt::Debug for Caller {
    /// The id, scope and limits; never the digest.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("id", &self.id)
            .field("scope", &self.scope)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Caller {
    /// A key from its configuration.
    pub fn new(id: String, digest: Digest, scope: Scope, limits: Limits) -> Caller {
        let usage = Usage::new(&limits);
        Caller {
            id,
            digest,
            scope,
            limits,
            usage,
        }
    }

    /// Takes one token from the rate bucket; `Err(seconds)` to wait first.
    pub fn take_token(&self, now: Instant) -> Result<(), u64> {
        let Ok(mut b) = self.bucket_lock() else {
            return Ok(());
        };
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.last = now;
        b.tokens = (b.tokens + elapsed * self.limits.rate).min(f64::from(self.limits.burst));
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            self.usage.throttle(Throttle::Rate);
            let wait = if self.limits.rate > 0.0 {
                ((1.0 - b.tokens) / self.limits.rate).ceil()
            } else {
                3600.0
            };
            // Bounded: a float cast saturates.
            Err((wait as u64).clamp(1, 3600))
        }
    }

    fn bucket_lock(&self) -> Result<std::sync::MutexGuard<'_, Bucket>, ()> {
        self.usage.bucket.lock().map_err(|_| ())
    }

    /// Takes one of this key's wait (or stream) slots; `None` when all are
    /// taken (counted as a 429).
    pub fn slot(self: &Arc<Self>, stream: bool) -> Option<KeySlot> {
        let (count, max, why) = if stream {
            (
                &self.usage.streams,
                self.limits.max_streams,
                Throttle::Streams,
            )
        } else {
            (
                &self.usage.waiters,
                self.limits.max_waiters,
                Throttle::Waiters,
            )
        };
        let mut n = count.load(Ordering::Relaxed);
        loop {
            if n >= max {
                self.usage.throttle(why);
                return None;
            }
            match count.compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    return Some(KeySlot {
                        caller: self.clone(),
                        stream,
                    });
                }
                Err(now) => n = now,
            }
        }
    }
}

/// One of a key's wait or stream slots, released on drop.
pub struct KeySlot {
    caller: Arc<Caller>,
    stream: bool,
}

impl Drop for KeySlot {
    fn drop(&mut self) {
        let count = if self.stream {
            &self.caller.usage.streams
        } else {
            &self.caller.usage.waiters
        };
        count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The configured keys.
#[derive(Debug)]
pub struct Keys {
    callers: Vec<Arc<Caller>>,
    /// Counts requests that presented no valid key; with no key
    /// configured, it is the caller of every request (the open mode).
    nobody: Arc<Caller>,
}

/// The id that stands for "no key" in logs and metrics.
pub const NOBODY: &str = "-";

impl Keys {
    /// The keys; with none, the gateway is open (loopback only).
    pub fn new(callers: Vec<Caller>, default_limits: Limits) -> Keys {
        let scope = if callers.is_empty() {
            Scope::everything()
        } else {
            Scope::nothing()
        };
        Keys {
            callers: callers.into_iter().map(Arc::new).collect(),
            nobody: Arc::new(Caller::new(
                NOBODY.to_owned(),
                [0; 32],
                scope,
                default_limits,
            )),
        }
    }

    /// Whether requests need a key.
    pub fn required(&self) -> bool {
        !self.callers.is_empty()
    }

    /// Every key, then the "no key" pseudo-caller.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Caller>> {
        self.callers.iter().chain(std::iter::once(&self.nobody))
    }

    /// The pseudo-caller for requests without a valid key.
    pub fn nobody(&self) -> &Arc<Caller> {
        &self.nobody
    }

    /// The caller of a request, from its `Authorization` header value:
    /// `Bearer <key>`, or, when `basic` (the status page only),
    /// `Basic base64(user:key)` with any user name, as a browser sends it
    /// (schemes case-insensitive). `None`: no valid key.
    pub fn authenticate(&self, authorization: Option<&[u8]>, basic: bool) -> Option<Arc<Caller>> {
        if !self.required() {
            return Some(self.nobody.clone());
        }
        let value = authorization?;
        let key = match bearer_key(value) {
            Some(key) => Cow::Borrowed(key),
            None if basic => Cow::Owned(basic_password(value)?),
            None => return None,
        };
        if key.is_empty() {
            return None;
        }
        let d = digest(&key);
        // Every digest is compared, in constant time, whichever matches.
        let mut found = None;
        for c in &self.callers {
            if bool::from(c.digest.ct_eq(&d)) {
                found = Some(c.clone());
            }
        }
        found
    }
}

/// The key of `Bearer <key>`.
fn bearer_key(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.starts_with(b" ") {
        return None;
    }
    Some(rest.trim_ascii())
}

/// The password of `Basic base64(user:password)` (RFC 7617; the user name
/// is ignored: the key alone says who calls).
fn basic_password(value: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    let (scheme, rest) = value.split_at_checked(5)?;
    if !scheme.eq_ignore_ascii_case(b"basic") || !rest.starts_with(b" ") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some(decoded[colon + 1..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    #[test]
    fn patterns() {
        assert!(p("*@signups.example.com").matches("a@signups.example.com"));
        assert!(p("*@SIGNUPS.example.com").matches("a.b+c@signups.example.com"));
        assert!(!p("*@signups.example.com").matches("a@evil.com@signups.example.com"));
        assert!(!p("*@signups.example.com").matches("a@signups.example.com.evil"));
        assert!(!p("*@signups.example.com").matches("a@xsignups.example.com"));
        assert!(p("task-*@example.com").matches("task-42@example.com"));
        assert!(p("task-*@example.com").matches("task-@example.com"));
        assert!(!p("task-*@example.com").matches("task42@example.com"));
        assert!(!p("task-*@example.com").matches("xtask-1@example.com"));
        assert!(p("*@*.example.com").matches("a@b.example.com"));
        assert!(!p("*@*.example.com").matches("a@example.com"));
        assert!(p("exact@example.com").matches("exact@example.com"));
        assert!(!p("exact@example.com").matches("exact@example.co"));
        assert!(p("*").matches("anything"));
        assert!(Pattern::parse("no-at-sign").is_err());
        assert!(Pattern::parse("a@b@c").is_err());
        assert!(Pattern::parse("a b@c").is_err());
        // Many stars against a long address: no blow-up.
        let many = format!("{}@x", "*a".repeat(50));
        assert!(!p(&many).matches(&format!("{}@x", "a".repeat(49))));
    }

    #[test]
    fn scopes() {
        let s = Scope {
            inboxes: Some(vec!["main".into()]),
            recipients: vec![p("task-*@example.com")],
            endpoints: vec![Endpoint::Wait],
        };
        assert!(s.inbox("main") && !s.inbox("other"));
        assert!(s.recipient(Some("task-1@example.com")));
        assert!(!s.recipient(None), "a restricted key must name a recipient");
        assert!(s.endpoint(Endpoint::Wait) && !s.endpoint(Endpoint::Metrics));
        assert!(Scope::everything().recipient(None));
        assert!(!Scope::nothing().inbox("main"));
    }

    #[test]
    fn bearer_keys() {
        let key = b"0123456789abcdef0123456789abcdef";
        let c = Caller::new(
            "ci".into(),
            digest(key),
            Scope::nothing(),
            Limits::default(),
        );
        let keys = Keys::new(vec![c], Limits::default());
        let auth = |v: &[u8]| keys.authenticate(Some(v), false).map(|c| c.id.clone());
        assert_eq!(
            auth(b"Bearer 0123456789abcdef0123456789abcdef").as_deref(),
            Some("ci")
        );
        assert_eq!(
            auth(b"bearer 0123456789abcdef0123456789abcdef ").as_deref(),
            Some("ci")
        );
        assert_eq!(auth(b"Bearer 0123456789abcdef0123456789abcdee"), None);
        assert_eq!(auth(b"Basic 0123456789abcdef0123456789abcdef"), None);
        assert_eq!(auth(b"Bearer0123456789abcdef0123456789abcdef"), None);
        assert_eq!(auth(b"Bearer "), None);
        assert_eq!(auth(b""), None);
        assert!(keys.authenticate(None, false).is_none());
        assert!(keys.authenticate(None, true).is_none());
        // With no key configured, everyone is the open caller.
        let open = Keys::new(Vec::new(), Limits::default());
        assert_eq!(open.authenticate(None, false).unwrap().id, NOBODY);
    }

    /// A browser's Basic authentication carries the key as the password,
    /// whatever the user name, where it is allowed (the status page);
    /// anything else in it is no key. A Bearer key is taken there too.
    #[test]
    fn basic_passwords_are_keys() {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let key = "0123456789abcdef0123456789abcdef";
        let c = Caller::new(
            "ci".into(),
            digest(key.as_bytes()),
            Scope::nothing(),
            Limits::default(),
        );
        let keys = Keys::new(vec![c], Limits::default());
        let auth = |v: String| {
            keys.authenticate(Some(v.as_bytes()), true)
                .map(|c| c.id.clone())
        };
        assert_eq!(
            auth(format!("Basic {}", b64(&format!("ops:{key}")))).as_deref(),
            Some("ci")
        );
        assert_eq!(
            auth(format!("basic {}", b64(&format!(":{key}")))).as_deref(),
            Some("ci")
        );
        // The key as the user name, a wrong key, no colon, no password,
        // not base64, no space after the scheme: no caller.
        assert_eq!(auth(format!("Basic {}", b64(&format!("{key}:x")))), None);
        assert_eq!(auth(format!("Basic {}", b64(&format!("ops:{key}0")))), None);
        assert_eq!(auth(format!("Basic {}", b64(key))), None);
        assert_eq!(auth(format!("Basic {}", b64("ops:"))), None);
        assert_eq!(auth("Basic !!!".into()), None);
        assert_eq!(auth(format!("Basic{}", b64(&format!("ops:{key}")))), None);
        assert_eq!(auth(format!("Bearer {key}")).as_deref(), Some("ci"));
    }

    /// Where Basic is not allowed (every route but the status page), the
    /// right key as a Basic password is no key: a browser replaying it on
    /// a cross-site request spends nothing of the key's.
    #[test]
    fn basic_is_refused_where_not_allowed() {
        use base64::Engine;
        let key = "0123456789abcdef0123456789abcdef";
        let c = Caller::new(
            "ci".into(),
            digest(key.as_bytes()),
            Scope::nothing(),
            Limits::default(),
        );
        let keys = Keys::new(vec![c], Limits::default());
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("ops:{key}"))
        );
        assert!(keys.authenticate(Some(basic.as_bytes()), true).is_some());
        assert!(keys.authenticate(Some(basic.as_bytes()), false).is_none());
    }

    #[test]
    fn token_bucket() {
        let limits = Limits {
            rate: 1.0,
            burst: 2,
            ..Limits::default()
        };
        let c = Caller::new("k".into(), [1; 32], Scope::nothing(), limits);
        let t0 = Instant::now();
        assert_eq!(c.take_token(t0), Ok(()));
        assert_eq!(c.take_token(t0), Ok(()));
        assert_eq!(c.take_token(t0), Err(1));
        assert_eq!(c.usage.throttled(Throttle::Rate), 1);
        assert_eq!(
            c.take_token(t0 + std::time::Duration::from_millis(1000)),
            Ok(())
        );
    }

    #[test]
    fn slots_are_bounded_and_released() {
        let limits = Limits {
            max_waiters: 2,
            max_streams: 1,
            ..Limits::default()
        };
        let c = Arc::new(Caller::new("k".into(), [1; 32], Scope::nothing(), limits));
        let a = c.slot(false).unwrap();
        let _b = c.slot(false).unwrap();
        assert!(c.slot(false).is_none());
        assert_eq!(c.usage.throttled(Throttle::Waiters), 1);
        let _s = c.slot(true).unwrap();
        assert!(c.slot(true).is_none());
        drop(a);
        assert!(c.slot(false).is_some());
        assert_eq!(c.usage.waiters(), 1);
    }
}
