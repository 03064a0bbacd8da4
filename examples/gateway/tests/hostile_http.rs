//! The gateway against clients that misbehave, over real HTTP on TCP: keys
//! over their limits, a flood of 10 000 waits from one key, malformed and
//! hostile requests written byte by byte, clients too slow to send a
//! request, and a stream reader that never reads. Each time the other keys
//! keep being served, the counts that bound memory stay at their limits,
//! and nothing panics.

#[path = "../../../tests/support/mod.rs"]
mod support;

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{Gateway, Setup, deliver, new_key, raw_exchange, status_of};
use support::{EVENTUALLY, dovecot, mail, wait_for};

/// A generous bound on the gateway's peak resident memory under each
/// attack (about 10 MiB idle, about 22 MiB in these tests): far below what buffering the attack
/// would take, far above the allocator's noise.
const MEMORY_BOUND_KIB: u64 = 64 * 1024;

/// This process's soft limit on open files (the gateway inherits it).
fn open_file_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))?
                .split_whitespace()
                .nth(3)?
                .parse()
                .ok()
        })
        .unwrap_or(1024)
}

/// The value of the metric line starting with `series ` in `metrics`.
fn metric(metrics: &str, series: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A `[[key]]` table.
fn key_table(id: &str, var: &str, endpoints: &str, extra: &str) -> String {
    format!(
        "[[key]]\nid = \"{id}\"\nkey_env = \"{var}\"\ninboxes = [\"main\"]\n\
         recipients = [\"*\"]\nendpoints = [{endpoints}]\n{extra}\n\n"
    )
}

/// Starts a long-poll as `key` in a thread: its status and body.
fn long_poll(gw: &Gateway, key: &str, to: &str) -> std::thread::JoinHandle<common::Answer> {
    let url = gw.url(&format!("/v1/wait?inbox=main&to={to}&timeout=60s"));
    let agent = gw.agent();
    let key = key.to_owned();
    std::thread::spawn(move || common::get(&agent, &url, Some(&key)))
}

#[test]
fn rate_and_concurrency_limits_are_per_key() {
    let ca = dovecot().catchall("gwlimits");
    let (tiny, few, other) = (new_key(), new_key(), new_key());
    let tables = [
        key_table("tiny", "GW_TINY", "\"stats\"", "rate = 0.001\nburst = 3"),
        key_table(
            "few",
            "GW_FEW",
            "\"wait\", \"stream\"",
            "max_waiters = 2\nmax_streams = 1",
        ),
        key_table("other", "GW_OTHER", "\"wait\", \"stats\", \"metrics\"", ""),
    ]
    .concat();
    let gw = Gateway::start(
        &ca,
        Setup {
            tables: &tables,
            env: vec![
                ("GW_TINY", tiny.clone()),
                ("GW_FEW", few.clone()),
                ("GW_OTHER", other.clone()),
            ],
            ..Setup::default()
        },
    );

    // Rate: a burst of 3, then 429 with Retry-After; the others unaffected.
    for _ in 0..3 {
        assert_eq!(gw.get_as(Some(&tiny), "/v1/stats").0, 200);
    }
    let (status, headers, body) = gw.request(Some(&tiny), "/v1/stats");
    assert_eq!(status, 429, "{body}");
    let retry = headers
        .iter()
        .find(|(n, _)| n == "retry-after")
        .and_then(|(_, v)| v.parse::<u64>().ok());
    assert!(retry.is_some_and(|s| s >= 1), "{headers:?}");
    assert_eq!(gw.get_as(Some(&other), "/v1/stats").0, 200);

    // Concurrency: two waits and one stream held; the next of each is 429.
    let held: Vec<TcpStream> = (0..2)
        .map(|i| {
            gw.raw(
                Some(&few),
                &format!(
                    "/v1/wait?inbox=main&to={}&timeout=100s",
                    ca.address(&format!("h{i}"))
                ),
            )
        })
        .collect();
    let stream = gw.raw(
        Some(&few),
        &format!("/v1/stream?inbox=main&to={}", ca.address("s")),
    );
    gw.await_subscribers(Some(&other), 3);
    let (status, body) = gw.get_as(
        Some(&few),
        &format!("/v1/wait?inbox=main&to={}&timeout=1s", ca.address("x")),
    );
    assert_eq!((status, body.contains("waits")), (429, true), "{body}");
    let (status, body) = gw.get_as(
        Some(&few),
        &format!("/v1/stream?inbox=main&to={}", ca.address("y")),
    );
    assert_eq!((status, body.contains("streams")), (429, true), "{body}");

    // Another key still waits and gets its mail.
    let waiter = long_poll(&gw, &other, &ca.address("calm"));
    gw.await_subscribers(Some(&other), 4);
    deliver(&ca, "calm", "for the other key");
    let (status, _, body) = waiter.join().unwrap();
    assert_eq!(status, 200, "{body}");

    // Released slots can be taken again.
    drop(held);
    drop(stream);
    gw.await_subscribers(Some(&other), 0);
    let (status, body) = gw.get_as(
        Some(&few),
        &format!("/v1/wait?inbox=main&to={}&timeout=1s", ca.address("x")),
    );
    assert_eq!(status, 408, "{body}");

    let m = gw.metrics(Some(&other));
    let throttled = |key: &str, why: &str| {
        metric(
            &m,
            &format!("emap_gateway_throttled_total{{key=\"{key}\",reason=\"{why}\"}}"),
        )
    };
    assert_eq!(throttled("tiny", "rate"), Some(1), "{m}");
    assert_eq!(throttled("few", "waiters"), Some(1), "{m}");
    assert_eq!(throttled("few", "streams"), Some(1), "{m}");
    assert_eq!(throttled("other", "rate"), Some(0), "{m}");
    assert_eq!(
        metric(
            &m,
            "emap_gateway_requests_total{key=\"tiny\",status=\"429\"}"
        ),
        Some(1),
        "{m}"
    );
}

/// 10 000 concurrent waits (as many at once as the open-file limit allows:
/// all of them on the 20 000 of the test machine) from one key allowed 5:
/// 9 995 get 429 at once,
/// the key never holds more than 5 (sampled throughout), the gateway's
/// subscriptions stay at 5 plus the other key's, and the other key's
/// long-poll gets its mail in the middle of the flood.
#[test]
fn ten_thousand_waiters_from_one_key() {
    const FLOOD: usize = 10_000;
    const LIMIT: u64 = 5;
    let ca = dovecot().catchall("gwflood");
    let (flood, calm) = (new_key(), new_key());
    let tables = [
        key_table(
            "flood",
            "GW_FLOOD",
            "\"wait\"",
            "max_waiters = 5\nrate = 1000000.0\nburst = 1000000",
        ),
        key_table("calm", "GW_CALM", "\"wait\", \"stats\", \"metrics\"", ""),
    ]
    .concat();
    let gw = Gateway::start(
        &ca,
        Setup {
            tables: &tables,
            env: vec![("GW_FLOOD", flood.clone()), ("GW_CALM", calm.clone())],
            // 10 000 audit lines are not what this test reads.
            log_level: Some("warn"),
            ..Setup::default()
        },
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Option<u16>>();
    let request = format!(
        "GET /v1/wait?inbox=main&to={}&timeout=100s HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {flood}\r\nConnection: close\r\n\r\n",
        ca.address("flooded")
    );
    // All at once where the open-file limit allows (both this process and
    // the gateway need one descriptor per connection), else as many as it
    // allows at a time.
    let at_once = open_file_limit().saturating_sub(256).clamp(64, FLOOD);
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(at_once));
    for _ in 0..FLOOD {
        let (tx, addr, request) = (tx.clone(), gw.addr.clone(), request.clone());
        let permits = permits.clone();
        rt.spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _permit = permits.acquire_owned().await;
            let answer = async {
                let mut s = tokio::net::TcpStream::connect(&addr).await.ok()?;
                s.write_all(request.as_bytes()).await.ok()?;
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).await.ok()?;
                status_of(&String::from_utf8_lossy(&buf))
            };
            let _ = tx.send(answer.await);
        });
    }
    drop(tx);

    // The other key, in the middle of the flood.
    let waiter = long_poll(&gw, &calm, &ca.address("calm"));
    let mut max_flood = 0;
    let mut sample = || {
        let m = gw.metrics(Some(&calm));
        let n = metric(&m, "emap_gateway_key_waiters{key=\"flood\"}").unwrap();
        max_flood = max_flood.max(n);
        m
    };
    let calm_waiting = wait_for(EVENTUALLY, || {
        let m = sample();
        (metric(&m, "emap_gateway_key_waiters{key=\"calm\"}") == Some(1)).then_some(())
    });
    assert!(calm_waiting.is_some());
    gw.await_subscribers(Some(&calm), LIMIT + 1);
    deliver(&ca, "calm", "served during the flood");

    let mut statuses = std::collections::BTreeMap::new();
    let mut answered = 0;
    while answered < FLOOD - LIMIT as usize {
        let status = rx
            .recv_timeout(EVENTUALLY)
            .expect("the flood's answers stopped");
        *statuses.entry(status).or_insert(0) += 1;
        answered += 1;
        if answered % 500 == 0 {
            sample();
        }
    }
    let (status, _, body) = waiter.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("served during the flood"), "{body}");

    let m = sample();
    assert_eq!(
        statuses,
        [(Some(429), FLOOD - LIMIT as usize)].into_iter().collect(),
        "every wait beyond the limit is refused at once"
    );
    assert!(max_flood <= LIMIT, "flood held {max_flood} waits");
    assert_eq!(
        metric(&m, "emap_gateway_key_waiters{key=\"flood\"}"),
        Some(LIMIT)
    );
    assert_eq!(metric(&m, "emap_subscribers"), Some(LIMIT), "{m}");
    assert_eq!(
        metric(
            &m,
            "emap_gateway_throttled_total{key=\"flood\",reason=\"waiters\"}"
        ),
        Some((FLOOD as u64) - LIMIT)
    );
    let peak = gw.peak_memory_kib();
    assert!(peak < MEMORY_BOUND_KIB, "the gateway peaked at {peak} KiB");
    // Dropping the held five frees them.
    rt.shutdown_background();
    gw.await_subscribers(Some(&calm), 0);
    let mut gw = gw;
    assert!(gw.alive());
}

/// Requests no well-behaved client sends, written on raw sockets. Each
/// gets a 4xx or a closed connection, never a 5xx; parameters with CR/LF
/// never become response headers or raw log lines.
#[test]
fn hostile_requests_over_raw_tcp() {
    let ca = dovecot().catchall("gwhostile");
    let key = new_key();
    let tables = key_table("k", "GW_K", "\"wait\", \"stream\", \"stats\"", "");
    let mut gw = Gateway::start(
        &ca,
        Setup {
            tables: &tables,
            env: vec![("GW_K", key.clone())],
            ..Setup::default()
        },
    );
    let auth = format!("Authorization: Bearer {key}\r\n");
    let get = |target: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").into_bytes()
    };
    let to = ca.address("t");
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        (
            "query one byte over max_query",
            get(&format!("/v1/wait?inbox=main&to={to}&x={}", "a".repeat(4096))),
            &[414],
        ),
        (
            "a 1 MiB request line",
            get(&format!("/v1/wait?x={}", "a".repeat(1 << 20))),
            &[400, 414, 431],
        ),
        (
            "unknown inbox",
            get(&format!("/v1/wait?inbox=nope&to={to}")),
            &[403],
        ),
        (
            "broken percent-encoding",
            get("/v1/wait?inbox=%ZZ&to=%"),
            &[400, 403],
        ),
        (
            "invalid UTF-8",
            get("/v1/wait?inbox=%FF%FE&to=a@b.test"),
            // Decoded lossily: an inbox that does not exist.
            &[403],
        ),
        (
            "inbox given twice",
            get(&format!("/v1/wait?inbox=main&inbox=main&to={to}")),
            &[400],
        ),
        (
            "CR/LF in to",
            get("/v1/wait?inbox=main&to=a%0d%0aX-Injected:%20yes@b.test&timeout=1s"),
            &[400],
        ),
        (
            "CR/LF in inbox",
            get("/v1/wait?inbox=main%0d%0aSet-Cookie:%20evil=1&to=a@b.test"),
            &[403],
        ),
        (
            "CR/LF in timeout",
            get(&format!("/v1/wait?inbox=main&to={to}&timeout=1s%0d%0aX-Injected:%20yes")),
            &[400],
        ),
        (
            "NUL in subject_contains",
            get(&format!("/v1/wait?inbox=main&to={to}&subject_contains=a%00b")),
            &[400],
        ),
        (
            "a bare CR in the request line",
            format!("GET /v1/wait?inbox=main\rX-Injected: yes HTTP/1.1\r\nHost: x\r\n{auth}\r\n")
                .into_bytes(),
            &[400],
        ),
        (
            "binary garbage",
            b"\x00\x01\x02\xff\xfe HTTP/1.1\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "no HTTP version",
            b"GET /v1/stats\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "200 headers",
            format!(
                "GET /v1/stats HTTP/1.1\r\nHost: x\r\n{auth}{}\r\n",
                "X-Filler: 1\r\n".repeat(200)
            )
            .into_bytes(),
            &[400, 431],
        ),
        (
            "a 1 GB body promised and not sent",
            format!(
                "GET /v1/stats HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 1000000000\r\n\r\n"
            )
            .into_bytes(),
            &[200, 400, 413],
        ),
        (
            "an oversized key",
            format!(
                "GET /v1/stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
                "k".repeat(16 * 1024)
            )
            .into_bytes(),
            &[401, 431],
        ),
    ];
    for (what, raw, allowed) in &cases {
        let answer = raw_exchange(&gw.addr, raw);
        let head = answer.split("\r\n\r\n").next().unwrap_or("");
        let status = status_of(&answer);
        assert!(
            status.is_none_or(|s| allowed.contains(&s)),
            "{what}: {}",
            head
        );
        // Closed without an answer is acceptable only for unparsable bytes.
        assert!(
            status.is_some() || allowed == &[400] || allowed.contains(&431),
            "{what}: no answer"
        );
        for injected in ["x-injected", "set-cookie"] {
            assert!(
                !head.to_ascii_lowercase().contains(injected),
                "{what}: {head}"
            );
        }
        assert!(gw.alive(), "{what}: the gateway died");
    }

    // Still serving, nothing panicked, no raw CR/LF from a parameter in
    // the log: the injected text only ever follows an escaped \r\n.
    assert_eq!(gw.get("/healthz").0, 200);
    assert_eq!(gw.get_as(Some(&key), "/v1/stats").0, 200);
    let log = gw.log();
    assert!(!log.contains("panicked"), "{log}");
    for line in log.lines() {
        assert!(
            !line.starts_with("X-Injected") && !line.starts_with("Set-Cookie"),
            "a parameter split the log: {line}"
        );
    }
    assert!(
        log.contains(r"inbox=main\r\nSet-Cookie: evil=1"),
        "the injection attempt is logged, escaped: {log}"
    );
}

/// A client that never finishes its request head, and one that idles on a
/// keep-alive connection, are disconnected (`[http]` timeouts of 1 s); the
/// gateway answers others meanwhile.
#[test]
fn slow_clients_are_timed_out() {
    let ca = dovecot().catchall("gwslow");
    let key = new_key();
    let tables = format!(
        "[http]\nclient_request_timeout = \"1s\"\nkeep_alive = \"1s\"\n\n{}",
        key_table("k", "GW_K", "\"stats\"", "")
    );
    let gw = Gateway::start(
        &ca,
        Setup {
            tables: &tables,
            env: vec![("GW_K", key.clone())],
            ..Setup::default()
        },
    );
    let closed = |mut s: TcpStream| {
        s.set_read_timeout(Some(EVENTUALLY)).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return (true, String::from_utf8_lossy(&got).into_owned()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                // A reset is a close too; a timeout is not.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return (true, String::from_utf8_lossy(&got).into_owned());
                }
                Err(_) => return (false, String::from_utf8_lossy(&got).into_owned()),
            }
        }
    };

    // Half a request head, then silence.
    let mut slow = TcpStream::connect(&gw.addr).unwrap();
    slow.write_all(b"GET /v1/stats HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    assert_eq!(gw.get_as(Some(&key), "/v1/stats").0, 200, "others served");
    let (was_closed, got) = closed(slow);
    assert!(was_closed, "a slow request head was not cut off: {got}");
    assert!(!got.contains("200 OK"), "{got}");

    // A whole request, its answer, then an idle keep-alive connection.
    let mut idle = TcpStream::connect(&gw.addr).unwrap();
    write!(
        idle,
        "GET /v1/stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n"
    )
    .unwrap();
    let (was_closed, got) = closed(idle);
    assert!(was_closed, "an idle keep-alive connection stayed open");
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
}

/// A stream whose client never reads (a tiny receive buffer, filled): the
/// gateway stops pulling its mail — emap's bounded queue then drops the
/// oldest, which the session counts — instead of buffering without bound,
/// and another key's long-poll is served meanwhile. When the client goes,
/// its subscription goes.
#[test]
fn sse_client_that_never_reads() {
    let ca = dovecot().catchall("gwsse");
    let (reader, other) = (new_key(), new_key());
    let tables = [
        key_table("reader", "GW_READER", "\"stream\"", ""),
        key_table("other", "GW_OTHER", "\"wait\", \"stats\"", ""),
    ]
    .concat();
    let gw = Gateway::start(
        &ca,
        Setup {
            tables: &tables,
            env: vec![("GW_READER", reader.clone()), ("GW_OTHER", other.clone())],
            ..Setup::default()
        },
    );
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&gw.addr.parse::<std::net::SocketAddr>().unwrap().into())
        .unwrap();
    let mut stuck: TcpStream = sock.into();
    write!(
        stuck,
        "GET /v1/stream?inbox=main&to={} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {reader}\r\n\r\n",
        ca.address("stuck")
    )
    .unwrap();
    gw.await_subscribers(Some(&other), 1);

    // Large mails for the stream until its queue overflows.
    // About 256 KiB of 72-character lines.
    let body =
        "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\n".repeat(3600);
    let rcpt = ca.address("stuck");
    let dropped = |gw: &Gateway| {
        gw.stats(Some(&other))["sessions"][0]["dropped"]
            .as_u64()
            .unwrap_or(0)
    };
    let mut sent = 0;
    while dropped(&gw) == 0 {
        assert!(sent < 200, "200 large mails and nothing dropped");
        for _ in 0..10 {
            dovecot().deliver(
                &rcpt,
                &mail("big@service.test", &rcpt, &format!("big {sent}"), &body),
            );
            sent += 1;
        }
        // Let the session fetch what arrived before counting again.
        let fetched = wait_for(EVENTUALLY, || {
            let s = gw.stats(Some(&other));
            let fetched = s["sessions"][0]["fetched"].as_u64()?;
            (fetched >= sent).then_some(fetched)
        });
        assert!(fetched.is_some(), "the session did not fetch {sent} mails");
    }

    // Another key is served while the stream is stuck.
    let waiter = long_poll(&gw, &other, &ca.address("fine"));
    gw.await_subscribers(Some(&other), 2);
    deliver(&ca, "fine", "not stuck");
    let (status, _, body) = waiter.join().unwrap();
    assert_eq!(status, 200, "{body}");

    let peak = gw.peak_memory_kib();
    assert!(peak < MEMORY_BOUND_KIB, "the gateway peaked at {peak} KiB");
    drop(stuck);
    gw.await_subscribers(Some(&other), 0);
    let mut gw = gw;
    assert!(gw.alive());
}

/// A client that pipelines a second request behind a long-poll and then
/// hangs up: the unread bytes of the second request do not hide its
/// close, so the wait and its subscription are released.
#[test]
fn pipelined_bytes_do_not_hide_a_hang_up() {
    let ca = dovecot().catchall("gwpipe");
    let key = new_key();
    let tables = key_table("k", "GW_K", "\"wait\", \"stats\"", "");
    let gw = Gateway::start(
        &ca,
        Setup {
            tables: &tables,
            env: vec![("GW_K", key.clone())],
            ..Setup::default()
        },
    );
    let mut s = TcpStream::connect(&gw.addr).unwrap();
    let head = |target: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n")
    };
    let wait = format!(
        "/v1/wait?inbox=main&to={}&timeout=100s",
        ca.address("piped")
    );
    write!(s, "{}{}", head(&wait), head("/v1/stats")).unwrap();
    gw.await_subscribers(Some(&key), 1);
    drop(s);
    gw.await_subscribers(Some(&key), 0);
}
