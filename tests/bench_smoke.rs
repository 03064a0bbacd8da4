//! CI smoke test of the benchmark (examples/bench), so that it cannot rot:
//! builds the example (debug, the same target directory as this test) and
//! runs every scenario with tiny parameters against the benchmark's own
//! Dovecot, then checks that it exited 0, produced a line for each
//! scenario, reported no error and lost no mail.
//!
//! No timing is asserted: CI machines are shared and the figures mean
//! nothing at this size. The benchmark starts a Dovecot of its own with
//! tests/support's starter (compiled into the example by `#[path]`), so it
//! needs the same packages as the integration tests (`scripts/test`
//! installs them). Cyrus is not used here (tests/servers.rs covers it).
//! Courier is, for the `limit` scenario only (its latency figure in
//! BENCHMARKS.md comes from it, and the floor's raw client must keep
//! coping with Courier's replies): the suite's Courier needs root, so that
//! test skips otherwise, as tests/courier.rs does.

mod support;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Building the example from scratch in debug takes a while on 2 cores.
const BUILD_TIMEOUT: Duration = Duration::from_secs(1200);
/// The run itself takes about 40 s; this only bounds a hang.
const RUN_TIMEOUT: Duration = Duration::from_secs(240);

const SCENARIOS: [&str; 7] = [
    "fanout",
    "limit",
    "backlog",
    "pertask",
    "soak",
    "burst",
    "subscribe",
];

/// Runs `cmd` to completion within `timeout`; returns (status ok, stdout,
/// stderr). Kills it (by its own handle) on timeout.
fn run(mut cmd: Command, timeout: Duration) -> (bool, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let ok = loop {
        match child.try_wait().expect("wait") {
            Some(status) => break status.success(),
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{:?} did not finish within {timeout:?}; stderr so far:\n{}",
                    cmd.get_program(),
                    err_t.join().unwrap_or_default()
                );
            }
        }
    };
    (
        ok,
        out_t.join().unwrap_or_default(),
        err_t.join().unwrap_or_default(),
    )
}

/// Builds the example and returns the path of its binary (from cargo's
/// JSON messages, so any target directory works).
fn build_bench() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--example", "bench", "--message-format=json"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    let (ok, stdout, stderr) = run(cmd, BUILD_TIMEOUT);
    assert!(ok, "building examples/bench failed:\n{stderr}");
    stdout
        .lines()
        .filter(|l| l.contains("\"compiler-artifact\"") && l.contains("\"name\":\"bench\""))
        .find_map(|l| {
            let at = l.find("\"executable\":\"")? + "\"executable\":\"".len();
            let end = l[at..].find('"')?;
            Some(PathBuf::from(&l[at..at + end]))
        })
        .expect("cargo reported no executable for the bench example")
}

/// The value of `"key":` in a flat JSON object line, as raw text.
fn json_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let needle = format!("\"{key}\":");
    let at = line.find(&needle)? + needle.len();
    let rest = &line[at..];
    match rest.strip_prefix('"') {
        Some(s) => s.find('"').map(|end| &s[..end]),
        None => rest.find([',', '}']).map(|end| &rest[..end]),
    }
}

#[test]
fn bench_runs_every_scenario_and_loses_no_mail() {
    let bench = build_bench();
    let mut cmd = Command::new(&bench);
    cmd.args([
        "all",
        "--server",
        "dovecot",
        "--quick",
        "--json",
        "--n",
        "200",
        "--k",
        "1,2",
        "--messages",
        "40",
        "--minutes",
        "0.2",
        "--svg",
    ]);
    let svg = std::env::temp_dir().join(format!("emap-bench-svg-{}", std::process::id()));
    cmd.arg(&svg);
    let started = Instant::now();
    let (ok, stdout, stderr) = run(cmd, RUN_TIMEOUT);
    eprintln!("bench ran in {:.0} s", started.elapsed().as_secs_f64());
    assert!(ok, "the benchmark failed:\n{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with('{')).collect();
    for scenario in SCENARIOS {
        assert!(
            lines
                .iter()
                .any(|l| json_field(l, "scenario") == Some(scenario)),
            "no result line for {scenario}:\n{stdout}\n{stderr}"
        );
    }
    // The pictures were drawn, as SVG.
    for name in [
        "rss-dovecot.svg",
        "latency-dovecot.svg",
        "latency-pertask-dovecot.svg",
    ] {
        let text = std::fs::read_to_string(svg.join(name))
            .unwrap_or_else(|e| panic!("{name} was not drawn: {e}"));
        assert!(
            text.starts_with("<svg") && text.contains("<polyline"),
            "{name}: {text}"
        );
    }
    let _ = std::fs::remove_dir_all(&svg);
    for line in &lines {
        assert!(
            json_field(line, "error").is_none(),
            "a scenario reported an error: {line}"
        );
        // emap loses nothing; the per-task client it is compared with may
        // (its loss is part of the comparison, not a defect of emap).
        let compared = json_field(line, "client").is_some_and(|c| c.starts_with("per-task"));
        if let Some(lost) = json_field(line, "lost")
            && !compared
        {
            assert_eq!(lost, "0", "mail was lost: {line}");
        }
        if let Some(delivered) = json_field(line, "delivered") {
            let delivered: u64 = delivered.parse().expect("delivered is a number");
            assert!(delivered > 0, "nothing was delivered: {line}");
        }
    }
}

/// `limit` on the suite's Courier: emap and the floor (the raw one-socket
/// client, which SELECTs there and goes without UIDNEXT) each receive
/// every mail delivered into the maildir, on two connections that Courier
/// counts (its imapd processes).
#[test]
fn bench_limit_runs_on_courier() {
    if let Some(why) = support::courier::unavailable() {
        eprintln!("skipping: {why}");
        return;
    }
    let bench = build_bench();
    let mut cmd = Command::new(&bench);
    cmd.args([
        "limit",
        "--server",
        "courier",
        "--quick",
        "--json",
        "--messages",
        "30",
    ]);
    let (ok, stdout, stderr) = run(cmd, RUN_TIMEOUT);
    assert!(ok, "the benchmark failed on Courier:\n{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with('{')).collect();
    for client in ["raw", "emap"] {
        let line = lines
            .iter()
            .find(|l| json_field(l, "client") == Some(client))
            .unwrap_or_else(|| panic!("no {client} line:\n{stdout}\n{stderr}"));
        assert_eq!(json_field(line, "scenario"), Some("limit"), "{line}");
        assert_eq!(json_field(line, "server"), Some("courier"), "{line}");
        assert!(json_field(line, "error").is_none(), "{line}");
        assert_eq!(json_field(line, "sent"), Some("30"), "{line}");
        assert_eq!(json_field(line, "delivered"), Some("30"), "{line}");
        assert_eq!(json_field(line, "lost"), Some("0"), "{line}");
        // emap's connection and the floor's, as Courier counts them.
        assert_eq!(json_field(line, "conns"), Some("2"), "{line}");
    }
}
