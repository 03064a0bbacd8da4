//! `emap status --gateway` against the real gateway on the test Dovecot:
//! the table and `--json` a person and a script read, the key taken from a
//! file or a variable and never printed, and the typed refusals (key
//! refused, status scope missing, no key, gateway down); `--watch` frame
//! after frame until Ctrl-C.
//!
//! The `emap` binary belongs to the workspace crate crates/emap-cli, so
//! cargo gives this package no `CARGO_BIN_EXE_emap`;
//! `support::workspace::binary` builds it once per test process.

#[path = "../../../tests/support/mod.rs"]
mod support;

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use common::{Gateway, Setup, junk_gateway, new_key};
use support::{EVENTUALLY, dovecot, interrupt, lines_of};

/// The `emap` binary of this workspace, built once (see the module docs).
fn emap_binary() -> PathBuf {
    support::workspace::binary("emap")
}

/// `emap status --gateway <gw> args...` with `env`, and nothing of the
/// caller's key variable.
fn emap(gw: &Gateway, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(emap_binary());
    cmd.args(["status", "--gateway", &gw.base])
        .args(args)
        .env_remove("EMAP_GATEWAY_KEY")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs to the end: status code, stdout, stderr.
fn run(mut cmd: Command) -> (Option<i32>, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("emap runs");
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// A child killed on drop, so a failing test leaves no `--watch` behind.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The row of `inbox` in a table.
fn row<'a>(table: &'a str, inbox: &str) -> Option<&'a str> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(inbox))
}

#[test]
fn emap_status_reads_the_gateway_with_its_key_and_says_why_it_cannot() {
    // Built first: a build that takes minutes must not outlast the wait
    // below.
    emap_binary();
    let ca = dovecot().catchall("gwcli");
    let (ops, stats_only) = (new_key(), new_key());
    let tables = "[[key]]\nid = \"ops\"\nkey_env = \"GW_OPS\"\ninboxes = [\"*\"]\n\
         recipients = [\"*\"]\nendpoints = [\"status\", \"stats\", \"wait\"]\n\n\
         [[key]]\nid = \"stats-only\"\nkey_env = \"GW_STATS\"\ninboxes = [\"*\"]\n\
         recipients = [\"*\"]\nendpoints = [\"stats\"]\n";
    let gw = Gateway::start(
        &ca,
        Setup {
            tables,
            env: vec![("GW_OPS", ops.clone()), ("GW_STATS", stats_only.clone())],
            ..Setup::default()
        },
    );
    // Outside the gateway's directory, which goes with it at the end.
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("ops.key");
    std::fs::write(&key_file, format!("{ops}\n")).unwrap();
    let key_path = key_file.to_str().unwrap();
    let held = gw.raw(
        Some(&ops),
        &format!("/v1/wait?inbox=main&to={}&timeout=100s", ca.address("cli")),
    );
    gw.await_subscribers(Some(&ops), 1);

    // The table: the gateway's own figures, then the inbox idling.
    let (code, out, err) = run(emap(&gw, &["--key-file", key_path], &[]));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.starts_with(&format!("emap status: gateway {} at ", gw.base)),
        "{out}"
    );
    assert!(out.contains("emap-gateway 0.1.0, up "), "{out}");
    let header = out.lines().find(|l| l.starts_with("INBOX ")).unwrap();
    let main = row(&out, "main").unwrap_or_else(|| panic!("a row for main: {out}"));
    assert_eq!(header.find("STATE"), main.find("idling"), "{out}");
    assert!(main.contains(" IDLE "), "{main}");
    assert!(
        !out.contains(&ops) && !err.contains(&ops),
        "the key is never shown"
    );

    // JSON, with the key from a variable.
    let (code, out, err) = run(emap(
        &gw,
        &["--key-env", "MY_GW_KEY", "--json"],
        &[("MY_GW_KEY", &ops)],
    ));
    assert_eq!(code, Some(0), "{out}{err}");
    let doc: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(doc["gateway"]["version"], "0.1.0", "{doc}");
    assert_eq!(doc["gateway"]["waiters"], 1, "{doc}");
    let main = doc["inboxes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["inbox"] == "main")
        .unwrap_or_else(|| panic!("main: {doc}"));
    assert_eq!(main["state"], "idling", "{main}");
    assert_eq!(main["mode"], "idle", "{main}");
    assert_eq!(main["subscribers"], 1, "{main}");
    assert_eq!(main["open_waits"], 1, "{main}");
    assert!(main["connection_age_s"].is_u64(), "{main}");
    assert!(main["uid_validity"].is_u64(), "{main}");
    assert!(main["reconnects"].is_u64(), "{main}");
    assert!(!out.contains(&ops));

    // The default variable.
    let (code, out, _) = run(emap(&gw, &["--json"], &[("EMAP_GATEWAY_KEY", &ops)]));
    assert_eq!(code, Some(0), "{out}");

    // Refusals, each in its own words, on one line, the key never shown.
    let wrong = new_key();
    let wrong_file = keys.path().join("wrong.key");
    std::fs::write(&wrong_file, &wrong).unwrap();
    let stats_file = keys.path().join("stats.key");
    std::fs::write(&stats_file, &stats_only).unwrap();
    let refused = |args: &[&str], words: &str, secret: &str| {
        let (code, out, err) = run(emap(&gw, args, &[]));
        assert_eq!(code, Some(1), "{args:?}: {out}{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(words),
            "{args:?}: {err}"
        );
        assert!(!out.contains(secret) && !err.contains(secret), "{err}");
    };
    refused(
        &["--key-file", wrong_file.to_str().unwrap()],
        "the gateway refused the API key (401)",
        &wrong,
    );
    refused(
        &["--key-file", stats_file.to_str().unwrap()],
        "may not read the status (403)",
        &stats_only,
    );
    refused(&[], "the gateway requires an API key (401)", &ops);
    // A key on the command line is refused before anything is sent.
    refused(
        &["--key", &wrong],
        "--key-file PATH or --key-env VAR",
        &wrong,
    );

    // --watch: a JSON document per refresh until Ctrl-C.
    let mut cmd = emap(
        &gw,
        &[
            "--key-file",
            key_path,
            "--json",
            "--watch",
            "--interval",
            "100ms",
        ],
        &[],
    );
    let mut child = Killed(cmd.stdout(Stdio::piped()).spawn().unwrap());
    let rx = lines_of(child.0.stdout.take().unwrap());
    for frame in 0..2 {
        let line = rx
            .recv_timeout(EVENTUALLY)
            .unwrap_or_else(|_| panic!("frame {frame} never came"));
        let doc: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(
            doc["inboxes"].as_array().is_some_and(|i| !i.is_empty()),
            "{doc}"
        );
    }
    interrupt(child.0.id());
    assert_eq!(child.0.wait().unwrap().code(), Some(130));

    // The gateway gone: said so, in one line.
    let base = gw.base.clone();
    drop(held);
    drop(gw);
    let (code, out, err) = run({
        let mut cmd = Command::new(emap_binary());
        cmd.args(["status", "--gateway", &base, "--key-file", key_path]);
        cmd
    });
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.starts_with(&format!("error: cannot reach the gateway at {base}: ")),
        "{err}"
    );
}

#[test]
fn emap_status_shows_an_inbox_s_further_folder_under_it_and_in_the_json() {
    emap_binary();
    let (gw, _user) = junk_gateway("gwclijunk");
    let held = gw.raw(None, "/v1/wait?inbox=junky&timeout=100s");
    // Until Junk is found and its watermark fixed on the new connection.
    let doc = support::wait_for(EVENTUALLY, || {
        let (code, out, _) = run(emap(&gw, &["--json"], &[]));
        let doc: serde_json::Value = serde_json::from_str(out.trim()).ok()?;
        let junky = doc["inboxes"]
            .as_array()?
            .iter()
            .find(|i| i["inbox"] == "junky")?
            .clone();
        (code == Some(0) && junky["folders"][1]["watermark"].is_u64()).then_some(junky)
    })
    .unwrap_or_else(|| panic!("no Junk folder: {}", run(emap(&gw, &["--json"], &[])).1));
    let folders = doc["folders"].as_array().unwrap();
    assert_eq!(folders.len(), 2, "{doc}");
    assert_eq!(folders[0]["folder"], "INBOX", "{doc}");
    assert_eq!(folders[0]["watermark"], doc["watermark"], "{doc}");
    assert_eq!(folders[1]["folder"], "\\Junk", "{doc}");
    assert_eq!(folders[1]["mailbox"], "Junk", "{doc}");
    assert!(folders[1]["uid_validity"].is_u64(), "{doc}");
    assert_eq!(folders[1]["missing"], false, "{doc}");

    // The table: Junk's sub-row right under the inbox, its UIDVALIDITY and
    // watermark in their columns.
    let (code, out, err) = run(emap(&gw, &[], &[]));
    assert_eq!(code, Some(0), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    let header = lines.iter().find(|l| l.starts_with("INBOX ")).unwrap();
    let at = lines
        .iter()
        .position(|l| l.split_whitespace().next() == Some("junky"))
        .unwrap_or_else(|| panic!("a row for junky: {out}"));
    let junk = lines[at + 1];
    assert!(junk.starts_with("  + \\Junk (Junk)"), "{out}");
    assert_eq!(header.find("STATE"), junk.find("watched"), "{out}");
    let validity = folders[1]["uid_validity"].to_string();
    let column = header.find("UIDVALIDITY").unwrap();
    assert_eq!(
        junk[column..].split_whitespace().next(),
        Some(validity.as_str()),
        "{out}"
    );
    drop(held);
}

#[test]
fn emap_status_watch_shows_a_gateway_gone_as_an_error_frame_and_retries_until_ctrl_c() {
    emap_binary();
    let ca = dovecot().catchall("gwcli-gone");
    let gw = Gateway::start(&ca, Setup::default());
    let base = gw.base.clone();
    let mut cmd = emap(&gw, &["--json", "--watch", "--interval", "100ms"], &[]);
    let mut child = Killed(cmd.stdout(Stdio::piped()).spawn().unwrap());
    let frames = lines_of(child.0.stdout.take().unwrap());
    let next = |what: &str| -> serde_json::Value {
        let line = frames
            .recv_timeout(EVENTUALLY)
            .unwrap_or_else(|_| panic!("no {what} frame"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    };
    let doc = next("first");
    assert!(doc["error"].is_null(), "{doc}");
    assert!(
        doc["inboxes"]
            .as_array()
            .is_some_and(|i| i.iter().any(|i| i["inbox"] == "main")),
        "{doc}"
    );

    // The gateway goes away: frames say so, and the watch goes on.
    drop(gw);
    let gone = |doc: &serde_json::Value| {
        doc["error"]
            .as_str()
            .is_some_and(|e| e.starts_with(&format!("cannot reach the gateway at {base}: ")))
    };
    let mut doc = next("error");
    while !gone(&doc) {
        // Frames fetched before the gateway went.
        assert!(doc["error"].is_null(), "{doc}");
        doc = next("error");
    }
    assert_eq!(doc["inboxes"], serde_json::json!([]), "{doc}");
    assert!(doc["gateway"].is_null(), "{doc}");
    let again = next("second error");
    assert!(gone(&again), "retried: {again}");
    assert_eq!(child.0.try_wait().unwrap(), None, "still watching");

    interrupt(child.0.id());
    assert_eq!(child.0.wait().unwrap().code(), Some(130));
}
