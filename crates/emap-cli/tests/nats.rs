//! `emap watch --nats` as a shell script runs it, against real parts: a
//! private `nats-server -js`, the suite's Dovecot and an `emap-bridge`
//! process (the emap-nats tests' helpers, crates/emap-nats/tests/nats),
//! with the `emap` binary of this package (`CARGO_BIN_EXE_emap`).
//!
//! Mail is told apart by Message-ID; "exactly once" is a waiter that exits
//! after `--count` mails having printed each expected one once. Waits are
//! for lines the processes print (the bridge's `stored`/`published`, the
//! watch's `watching ` readiness line) or for their exit, bounded by
//! `EVENTUALLY`; no assertion depends on timing.

#[path = "../../../tests/support/mod.rs"]
mod support;

#[path = "../../emap-nats/tests/nats/mod.rs"]
mod nats;

use std::process::{Command, Stdio};

use emap::Mail;
use emap_nats::subject;
use nats::{Child, NatsServer, bridge, id_of, mail_ids, publish_malformed, waiter};
use support::dovecot::free_ports;
use support::{blocking, dovecot, mail};

const FROM: &str = "Service <noreply@service.test>";

/// The binary under test.
const EMAP: &str = env!("CARGO_BIN_EXE_emap");

/// Delivers one mail to `rcpt` with `subject` and `body`; returns its
/// Message-ID (without brackets).
async fn deliver(rcpt: &str, subject: &str, body: &str) -> String {
    let (rcpt, subject, body) = (rcpt.to_owned(), subject.to_owned(), body.to_owned());
    blocking(move || {
        let raw = mail(FROM, &rcpt, &subject, &body);
        dovecot().deliver(&rcpt, &raw);
        id_of(&raw)
    })
    .await
}

/// The JSON lines `w` printed, parsed.
fn json_lines(w: &Child) -> Vec<serde_json::Value> {
    w.lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

/// `emap args...` run to its end without EMAP_NATS unless `env_nats`:
/// (exit code, stdout, stderr).
fn run(args: &[&str], env_nats: Option<&str>) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(EMAP);
    cmd.args(args)
        .env_remove("EMAP_NATS")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    if let Some(url) = env_nats {
        cmd.env("EMAP_NATS", url);
    }
    let out = cmd.output().expect("emap runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A mail delivered to Dovecot reaches `emap watch --nats` through a
/// running bridge exactly once, as the same JSON as an IMAP watch prints
/// (code and links found); `--to` selects the recipient's mail, a watch
/// without it gets every mail of the inbox; the readiness line names the
/// inbox, never the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_through_a_bridge_is_printed_once_as_json_and_to_selects() {
    let nats = NatsServer::start();
    let catch = dovecot().catchall("clinats");
    let (task, other) = (catch.address("task"), catch.address("other"));
    let b = bridge("b", &nats, "signups", &catch.user);
    b.until("stored", 1).await;
    let mut to = waiter("to", &nats, "signups", Some(&task), &["--count", "2"]);
    let mut all = waiter("all", &nats, "signups", None, &["--count", "3"]);
    to.until_stderr("watching ", 1).await;
    all.until_stderr("watching ", 1).await;

    let o = deliver(&other, "Not for task", "Your code is 111111").await;
    let m1 = deliver(
        &task,
        "Verify your email address",
        "Your verification code is 482913.\nOr open https://service.test/verify?t=abc",
    )
    .await;
    let m2 = deliver(&task, "Welcome", "hello").await;

    assert_eq!(to.exit_code().await, Some(0), "{:?}", to.stderr_lines());
    let lines = json_lines(&to);
    let ids: Vec<&str> = lines
        .iter()
        .map(|l| l["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [m1.as_str(), m2.as_str()]);
    let a = &lines[0];
    assert_eq!(a["subject"], "Verify your email address");
    assert_eq!(a["codes"][0], "482913");
    assert_eq!(
        a["links"],
        serde_json::json!(["https://service.test/verify?t=abc"])
    );
    assert_eq!(a["from"][0]["email"], "noreply@service.test");
    assert!(
        a["recipients"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == task.as_str()),
        "{a}"
    );
    assert!(a["uid"].is_u64() && a["date"].is_string(), "{a}");
    let ready = to
        .stderr_lines()
        .into_iter()
        .find(|l| l.starts_with("watching "))
        .unwrap();
    assert!(
        ready.contains("inbox signups") && ready.contains(&task),
        "{ready}"
    );
    assert!(
        !ready.contains("nats://"),
        "the URL is never printed: {ready}"
    );

    assert_eq!(all.exit_code().await, Some(0), "{:?}", all.stderr_lines());
    let got = mail_ids(&all);
    assert_eq!(got.len(), 3, "{got:?}");
    for id in [&o, &m1, &m2] {
        assert_eq!(got.get(id), Some(&1), "{id} exactly once: {got:?}");
    }
}

/// `--max-age` starts the watch back in the stream: it gets a mail the
/// bridge published before the watch started (through `--folder` naming
/// the bridge's folder); a watch without it starts at new mail (its first
/// mail is the later one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_gets_mail_published_before_the_watch_started() {
    let nats = NatsServer::start();
    let catch = dovecot().catchall("clinatslate");
    let task = catch.address("task");
    let b = bridge("b", &nats, "late", &catch.user);
    b.until("stored", 1).await;
    let early = deliver(&task, "early", "hello").await;
    b.until("published", 1).await;

    let mut replay = waiter(
        "replay",
        &nats,
        "late",
        Some(&task),
        &["--max-age", "10m", "--folder", "INBOX", "--count", "1"],
    );
    assert_eq!(replay.exit_code().await, Some(0));
    let lines = json_lines(&replay);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["message_id"], early.as_str());
    assert_eq!(lines[0]["subject"], "early");

    let mut live = waiter("live", &nats, "late", Some(&task), &["--count", "1"]);
    live.until_stderr("watching ", 1).await;
    let later = deliver(&task, "later", "hello").await;
    assert_eq!(live.exit_code().await, Some(0));
    let ids: Vec<String> = mail_ids(&live).into_keys().collect();
    assert_eq!(ids, [later]);
}

/// Without mail, `--timeout` ends the watch with status 2 and a
/// `timeout:` line, as an IMAP watch; the URL may come from EMAP_NATS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_mail_the_timeout_exits_with_status_2() {
    let nats = NatsServer::start();
    let url = nats.url();
    let (code, out, err) = blocking(move || {
        run(
            &[
                "watch",
                "--inbox",
                "quiet",
                "--to",
                "a@b.test",
                "--timeout",
                "3s",
            ],
            Some(&url),
        )
    })
    .await;
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.starts_with("watching inbox quiet through NATS"),
        "{err}"
    );
    assert!(
        err.trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("timeout: 0 of 1 mail(s)"),
        "{err}"
    );
    assert!(out.is_empty(), "{out}");
}

/// A bus that does not answer within the timeout is an error (status 1,
/// one line), not a timeout: whether mail came is unknown.
#[test]
fn a_bus_that_does_not_answer_is_an_error() {
    let port = free_ports(1).expect("a free port")[0];
    let url = format!("nats://127.0.0.1:{port}");
    let (code, out, err) = run(
        &["watch", "--nats", &url, "--inbox", "i", "--timeout", "1s"],
        None,
    );
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: the bus did not answer within 1s"),
        "{err}"
    );
    assert!(out.is_empty(), "{out}");
}

/// Messages on the inbox's subject that no bridge published (no headers;
/// a bad UID) are skipped with one warning each on stderr, never printed
/// as mail; the next real mail is, and the exit status is that of the
/// mail (0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_message_is_skipped_with_a_warning() {
    let nats = NatsServer::start();
    let to = "someone@emap.test";
    let mut w = waiter("w", &nats, "bad", Some(to), &["--count", "1"]);
    w.until_stderr("watching ", 1).await;

    let subj = subject::to("emap", "bad", to);
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    publish_malformed(&js, &subj).await;
    let raw = mail(FROM, to, "valid", "hello");
    let good = Mail::parse(5, 9, "INBOX", None, raw.clone(), false);
    let h = subject::headers("bad", &good, &subj, false);
    js.publish_with_headers(subj.clone(), h, raw.clone().into())
        .await
        .unwrap()
        .await
        .unwrap();

    assert_eq!(w.exit_code().await, Some(0), "{:?}", w.stderr_lines());
    let lines = json_lines(&w);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["message_id"], id_of(&raw).as_str());
    assert_eq!(lines[0]["uid"], 5);
    let warnings: Vec<String> = w
        .stderr_lines()
        .into_iter()
        .filter(|l| l.starts_with("warning: skipped a message on "))
        .collect();
    assert_eq!(warnings.len(), 2, "{:?}", w.stderr_lines());
    assert!(warnings.iter().all(|l| l.contains(&subj)), "{warnings:?}");
}

/// Usage errors: status 1 (2 is kept for timeouts) with the reason on
/// stderr, before anything is connected.
#[test]
fn usage_errors_of_watch_nats_exit_1_with_a_reason() {
    let url = "nats://127.0.0.1:4222";
    // --nats without --inbox.
    let (code, _, err) = run(&["watch", "--nats", url, "--to", "a@b.test"], None);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("--inbox"),
        "{err}"
    );
    // EMAP_NATS without --inbox.
    let (code, _, err) = run(&["watch", "--to", "a@b.test"], Some(url));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--inbox"), "{err}");
    // IMAP flags with --nats.
    for flag in [
        &["--host", "imap.example.com"][..],
        &["--user", "u"],
        &["--password-env", "P"],
        &["--tls", "none"],
        &["--mailbox", "Junk"],
    ] {
        let mut args = vec!["watch", "--nats", url, "--inbox", "i"];
        args.extend(flag);
        let (code, _, err) = run(&args, None);
        assert_eq!(code, Some(1), "{flag:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(flag[0]) && err.contains("cannot be used"),
            "{flag:?}: {err}"
        );
    }
    // A password with --nats: refused without repeating it.
    let (code, out, err) = run(
        &[
            "watch",
            "--nats",
            url,
            "--inbox",
            "i",
            "--password",
            "pw-zq81",
        ],
        None,
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no IMAP credential"), "{err}");
    assert!(
        !err.contains("pw-zq81") && !out.contains("pw-zq81"),
        "{err}"
    );
    // Credentials in the URL on the command line.
    let (code, out, err) = run(
        &[
            "watch",
            "--nats",
            "nats://bot:s3cr3t-zq81@127.0.0.1:4222",
            "--inbox",
            "i",
        ],
        None,
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("EMAP_NATS"), "{err}");
    assert!(!err.contains("s3cr3t") && !out.contains("s3cr3t"), "{err}");
    // Bus flags without a bus.
    let (code, _, err) = run(
        &[
            "watch",
            "--host",
            "h",
            "--user",
            "u",
            "--password-env",
            "P",
            "--inbox",
            "i",
        ],
        None,
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--inbox") && err.contains("--nats"), "{err}");
}
