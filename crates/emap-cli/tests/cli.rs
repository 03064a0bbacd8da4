//! The `emap` command-line tool as a user runs it, against the real Dovecot
//! of `tests/support`: exit statuses (0 done, 1 error, 2 timeout, 130
//! Ctrl-C), one-line reasons, secrets only from the environment and never
//! printed, `watch --json` lines a script can parse, implicit TLS with an
//! extra trusted root.
//!
//! Every child process is held by a [`Running`] guard that kills it if the
//! test fails, so a failing test never leaves a `watch` behind.

#[path = "../../../tests/support/mod.rs"]
mod support;

use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{TestUser, dovecot, header_value, interrupt, lines_of, mail};

/// The binary under test, built by cargo for this test target.
const EMAP: &str = env!("CARGO_BIN_EXE_emap");

/// The environment variable the tests pass the password in.
const PASSWORD_VAR: &str = "EMAP_CLI_TEST_PASSWORD";

/// Generous bound for something that must happen; never a timing
/// assertion.
const EVENTUALLY: Duration = Duration::from_secs(30);

/// A running `emap` whose stderr and stdout are read line by line (to
/// wait for the readiness line, or for frames of `status --watch`). Killed
/// on drop if still running.
struct Running {
    child: Child,
    stderr: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
    stdout: mpsc::Receiver<String>,
    stdout_seen: Vec<String>,
}

/// How a run ended.
#[derive(Debug)]
struct Finished {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Running {
    fn spawn(args: &[&str], password: &str) -> Running {
        let mut child = Command::new(EMAP)
            .args(args)
            .env(PASSWORD_VAR, password)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("emap starts");
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        Running {
            child,
            stderr,
            stderr_seen: Vec::new(),
            stdout,
            stdout_seen: Vec::new(),
        }
    }

    /// Waits until `n` stdout lines satisfy `pred` (counting those seen
    /// before) and returns every stdout line so far.
    fn wait_for_stdout(&mut self, n: usize, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + EVENTUALLY;
        while self.stdout_seen.iter().filter(|l| pred(l)).count() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => self.stdout_seen.push(line),
                Err(_) => panic!(
                    "fewer than {n} matching stdout lines; stdout so far: {:?}; exited: {:?}",
                    self.stdout_seen,
                    self.child.try_wait()
                ),
            }
        }
        self.stdout_seen.clone()
    }

    /// Waits for a stderr line starting with `prefix` and returns it.
    fn wait_for_stderr(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + EVENTUALLY;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.stderr_seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no stderr line starting with {prefix:?}; stderr so far: {:?}; exited: {:?}",
                    self.stderr_seen,
                    self.child.try_wait()
                ),
            }
        }
    }

    /// Waits for the process to exit (killing it after [`EVENTUALLY`]) and
    /// collects its output.
    fn finish(&mut self) -> Finished {
        let deadline = Instant::now() + EVENTUALLY;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("emap did not exit in time; stderr: {:?}", self.stderr_seen);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader threads end at EOF, which follows the exit.
        while let Ok(line) = self.stdout.recv_timeout(EVENTUALLY) {
            self.stdout_seen.push(line);
        }
        while let Ok(line) = self.stderr.recv_timeout(EVENTUALLY) {
            self.stderr_seen.push(line);
        }
        let mut stdout = self.stdout_seen.join("\n");
        if !stdout.is_empty() {
            stdout.push('\n');
        }
        Finished {
            code: status.code(),
            stdout,
            stderr: self.stderr_seen.join("\n"),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `emap` to completion.
fn run(args: &[&str], password: &str) -> Finished {
    Running::spawn(args, password).finish()
}

/// Connection flags for `user` over plaintext IMAP.
fn plain(user: &TestUser) -> Vec<String> {
    [
        "--host",
        "127.0.0.1",
        "--port",
        &dovecot().imap_port.to_string(),
        "--tls",
        "none",
        "--user",
        &user.name,
        "--password-env",
        PASSWORD_VAR,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// `cmd`, then the connection flags, then `extra`.
fn args<'a>(cmd: &'a str, conn: &'a [String], extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![cmd];
    v.extend(conn.iter().map(String::as_str));
    v.extend_from_slice(extra);
    v
}

fn assert_one_error_line(f: &Finished) {
    let lines: Vec<&str> = f.stderr.trim().lines().collect();
    assert_eq!(lines.len(), 1, "one-line reason: {:?}", f.stderr);
    assert!(lines[0].starts_with("error: "), "{:?}", f.stderr);
}

#[test]
fn login_exit_codes_and_reasons() {
    let u = dovecot().user("clilogin");
    let conn = plain(&u);
    let ok = run(&args("login", &conn, &[]), &u.password);
    assert_eq!(ok.code, Some(0), "{ok:?}");
    assert!(ok.stdout.starts_with("ok: "), "{ok:?}");
    assert!(!ok.stdout.contains(&u.password) && !ok.stderr.contains(&u.password));

    let wrong = "wrong-Pa55word-zq81";
    let bad = run(&args("login", &conn, &[]), wrong);
    assert_eq!(bad.code, Some(1), "{bad:?}");
    assert_one_error_line(&bad);
    assert!(bad.stderr.contains("authentication failed"), "{bad:?}");
    assert!(!bad.stderr.contains(wrong) && !bad.stdout.contains(wrong));

    // The variable is unset: said so, nothing is sent.
    let unset = run(
        &[
            "login",
            "--host",
            "127.0.0.1",
            "--user",
            &u.name,
            "--oauth-token-env",
            "EMAP_CLI_TEST_SURELY_UNSET",
        ],
        "",
    );
    assert_eq!(unset.code, Some(1), "{unset:?}");
    assert_one_error_line(&unset);
    assert!(
        unset
            .stderr
            .contains("EMAP_CLI_TEST_SURELY_UNSET is not set")
    );
}

#[test]
fn secrets_on_the_command_line_are_refused() {
    let secret = "s3cret-on-the-command-line";
    let joined = format!("--password={secret}");
    for flag in [vec!["--password", secret], vec![joined.as_str()]] {
        for cmd in ["login", "watch"] {
            let mut a = vec![cmd, "--host", "127.0.0.1", "--user", "u"];
            a.extend(&flag);
            let f = run(&a, "");
            assert_eq!(f.code, Some(1), "{f:?}");
            assert_one_error_line(&f);
            assert!(f.stderr.contains("--password-env"), "{f:?}");
            assert!(!f.stderr.contains(secret) && !f.stdout.contains(secret));
        }
    }
}

#[test]
fn watch_prints_two_mails_as_json_lines() {
    let d = dovecot();
    let ca = d.catchall("cliwatch");
    let task = ca.address("task");
    let conn = plain(&ca.user);
    let mut w = Running::spawn(
        &args(
            "watch",
            &conn,
            &["--to", &task, "--count", "2", "--json", "--timeout", "60s"],
        ),
        &ca.user.password,
    );
    let ready = w.wait_for_stderr("watching ");
    assert!(ready.contains(&task), "{ready}");

    // Another address of the same catch-all: not for this watch.
    d.deliver(
        &ca.address("other"),
        &mail(
            "noreply@service.test",
            &ca.address("other"),
            "Your code is 111111",
            "Your code is 111111",
        ),
    );
    let verify = mail(
        "Service <noreply@service.test>",
        &task,
        "Verify your email address",
        "Hello,\n\nYour verification code is 482913.\n\
         Or open https://service.test/verify?t=abc&amp;u=42.\n\n(c) 2024 Service",
    );
    d.deliver(&task, &verify);
    let html = format!(
        "From: Service <noreply@service.test>\r\nTo: {task}\r\nSubject: Sign in\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
         <table><tr><td>Your sign-in code</td></tr><tr><td style=\"color:#123456\">\
         <b>7H3K9Q</b></td></tr><tr><td><a href=\"https://service.test/login?s=1&amp;r=2\">\
         Sign in</a></td></tr></table>\r\n"
    );
    d.deliver(&task, html.as_bytes());

    let f = w.finish();
    assert_eq!(f.code, Some(0), "{f:?}");
    let lines: Vec<serde_json::Value> = f
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert_eq!(lines.len(), 2, "{:?}", f.stdout);
    let (a, b) = (&lines[0], &lines[1]);
    // UID 1 went to "other", which the watch skipped.
    assert_eq!(a["uid"], 2);
    assert_eq!(b["uid"], 3);
    assert_eq!(a["subject"], "Verify your email address");
    assert_eq!(a["mailbox"], "INBOX");
    let id = header_value(&verify, "Message-ID").expect("a Message-ID");
    assert_eq!(a["message_id"], id.trim_matches(['<', '>']), "{a}");
    // The second has no Message-ID header.
    assert!(b["message_id"].is_null(), "{b}");
    assert_eq!(a["codes"][0], "482913");
    assert_eq!(
        a["links"],
        serde_json::json!(["https://service.test/verify?t=abc&u=42"])
    );
    assert_eq!(a["from"][0]["email"], "noreply@service.test");
    assert_eq!(a["from"][0]["name"], "Service");
    assert_eq!(a["to"][0]["email"], task.as_str());
    assert!(
        a["recipients"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == task.as_str()),
        "{a}"
    );
    let date = a["date"].as_str().expect("a date");
    assert!(date.ends_with('Z') && date.len() == 20, "{date}");
    assert!(a["text"].as_str().unwrap().contains("482913"));
    assert!(a["html"].is_null());
    assert_eq!(b["subject"], "Sign in");
    assert_eq!(b["codes"][0], "7H3K9Q");
    assert_eq!(
        b["links"],
        serde_json::json!(["https://service.test/login?s=1&r=2"])
    );
    assert!(b["html"].as_str().unwrap().contains("<b>7H3K9Q</b>"));
    assert!(!f.stderr.contains(&ca.user.password));
}

/// `login --also-watch`: every folder must be found — a name by STATUS,
/// `\\Junk` by LIST; a missing one fails naming it, exit 1.
#[test]
fn login_finds_every_also_watched_folder() {
    let d = dovecot();
    let u = d.user("clilogjunk");
    let conn = plain(&u);
    let missing = run(
        &args("login", &conn, &["--also-watch", "Notificatons"]),
        &u.password,
    );
    assert_eq!(missing.code, Some(1), "{missing:?}");
    assert_one_error_line(&missing);
    assert!(missing.stderr.contains("Notificatons"), "{missing:?}");
    let no_junk = run(
        &args("login", &conn, &["--also-watch", "\\Junk"]),
        &u.password,
    );
    assert_eq!(no_junk.code, Some(1), "{no_junk:?}");
    d.create_junk(&u);
    let ok = run(
        &args("login", &conn, &["--also-watch", "\\Junk"]),
        &u.password,
    );
    assert_eq!(ok.code, Some(0), "{ok:?}");
    assert!(ok.stdout.contains("and find \\Junk"), "{ok:?}");
}

/// `--also-watch '\\Junk'` watches the folder Dovecot marks `\\Junk` on
/// the same connection, and `--folder '\\Junk'` keeps only its mail: the
/// INBOX mail delivered first is not printed, the Junk mail is, with its
/// mailbox named; one connection in all, counted by Dovecot.
#[test]
fn watch_also_watches_junk_and_filters_by_folder() {
    let d = dovecot();
    let u = d.user("clijunk");
    d.create_junk(&u);
    let conn = plain(&u);
    let mut w = Running::spawn(
        &args(
            "watch",
            &conn,
            &[
                "--also-watch",
                "\\Junk",
                "--folder",
                "\\Junk",
                "--json",
                "--timeout",
                "60s",
            ],
        ),
        &u.password,
    );
    w.wait_for_stderr("watching ");
    assert_eq!(d.wait_connections(&u.name, 1, EVENTUALLY), 1);
    d.deliver(
        &u.name,
        &mail("sender@emap.test", &u.name, "to inbox", "hello"),
    );
    d.append(
        &u,
        "Junk",
        &mail("sender@emap.test", &u.name, "to junk", "spam?"),
    );
    let f = w.finish();
    assert_eq!(f.code, Some(0), "{f:?}");
    let lines: Vec<serde_json::Value> = f
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert_eq!(lines.len(), 1, "{:?}", f.stdout);
    assert_eq!(lines[0]["subject"], "to junk", "{}", lines[0]);
    assert_eq!(lines[0]["mailbox"], "Junk", "{}", lines[0]);
}

#[test]
fn watch_without_mail_times_out_with_status_2() {
    let u = dovecot().user("clitimeout");
    let conn = plain(&u);
    let f = run(&args("watch", &conn, &["--timeout", "1s"]), &u.password);
    assert_eq!(f.code, Some(2), "{f:?}");
    assert!(f.stderr.contains("watching "), "{f:?}");
    assert!(
        f.stderr.lines().last().unwrap().starts_with("timeout: "),
        "{f:?}"
    );
    assert!(f.stdout.is_empty(), "{f:?}");
}

#[test]
fn watch_with_a_wrong_password_fails_with_one_line() {
    let u = dovecot().user("cliwatchbad");
    let conn = plain(&u);
    let wrong = "wrong-Pa55word-watch";
    let f = run(&args("watch", &conn, &["--timeout", "20s"]), wrong);
    assert_eq!(f.code, Some(1), "{f:?}");
    assert_one_error_line(&f);
    assert!(f.stderr.contains("authentication failed"), "{f:?}");
    assert!(!f.stderr.contains(wrong) && !f.stdout.contains(wrong));
}

#[test]
fn implicit_tls_with_an_extra_root() {
    let d = dovecot();
    let ca = d.catchall("clitls");
    let port = d.imaps_port.to_string();
    let ca_file = d.ca_path.to_str().unwrap();
    let base = [
        "--host",
        "localhost",
        "--port",
        &port,
        "--user",
        &ca.user.name,
        "--password-env",
        PASSWORD_VAR,
    ];
    let mut login = vec!["login"];
    login.extend(base);
    login.extend(["--ca-file", ca_file]);
    let ok = run(&login, &ca.user.password);
    assert_eq!(ok.code, Some(0), "{ok:?}");

    // Without the test CA the certificate is not trusted.
    let untrusted = run(&login[..login.len() - 2], &ca.user.password);
    assert_eq!(untrusted.code, Some(1), "{untrusted:?}");
    assert_one_error_line(&untrusted);
    assert!(untrusted.stderr.contains("certificate"), "{untrusted:?}");

    // A watch over TLS, printed for humans.
    let task = ca.address("tls-task");
    let mut watch = vec!["watch"];
    watch.extend(base);
    watch.extend(["--ca-file", ca_file, "--to", &task, "--timeout", "60s"]);
    let mut w = Running::spawn(&watch, &ca.user.password);
    w.wait_for_stderr("watching ");
    d.deliver(
        &task,
        &mail(
            "noreply@service.test",
            &task,
            "Your code",
            "Your one-time code: 906114\nhttps://service.test/done",
        ),
    );
    let f = w.finish();
    assert_eq!(f.code, Some(0), "{f:?}");
    for expected in [
        "uid      1",
        "subject  Your code",
        "code     906114",
        "links    https://service.test/done",
    ] {
        assert!(f.stdout.contains(expected), "{expected:?} in {}", f.stdout);
    }
}

#[test]
fn ctrl_c_ends_a_watch_with_status_130() {
    let u = dovecot().user("clisigint");
    let conn = plain(&u);
    let mut w = Running::spawn(&args("watch", &conn, &[]), &u.password);
    w.wait_for_stderr("watching ");
    interrupt(w.pid());
    let f = w.finish();
    assert_eq!(f.code, Some(130), "{f:?}");
    assert!(f.stderr.contains("interrupted"), "{f:?}");
}

#[test]
fn status_of_one_credential_shows_it_idling_as_a_table_and_as_json() {
    let u = dovecot().user("clistatus");
    let conn = plain(&u);
    let table = run(&args("status", &conn, &[]), &u.password);
    assert_eq!(table.code, Some(0), "{table:?}");
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].starts_with("emap status: "), "{table:?}");
    let header = lines
        .iter()
        .find(|l| l.starts_with("INBOX "))
        .unwrap_or_else(|| panic!("a header: {table:?}"));
    for column in [
        "STATE",
        "CONNECTED",
        "MODE",
        "UIDVALIDITY",
        "WATERMARK",
        "DELIVERED",
        "RECONNECTS",
    ] {
        assert!(header.contains(column), "{column} in {header}");
    }
    let row = lines
        .iter()
        .find(|l| l.starts_with(&format!("{}@127.0.0.1:", u.name)))
        .unwrap_or_else(|| panic!("the inbox's row: {table:?}"));
    // Columns line up under their headers.
    assert_eq!(header.find("STATE"), row.find("idling"), "{table:?}");
    assert!(row.contains(" IDLE "), "{row}");
    assert!(!table.stdout.contains(&u.password) && !table.stderr.contains(&u.password));

    let json = run(&args("status", &conn, &["--json"]), &u.password);
    assert_eq!(json.code, Some(0), "{json:?}");
    let docs: Vec<serde_json::Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert_eq!(docs.len(), 1, "one document: {json:?}");
    let inboxes = docs[0]["inboxes"].as_array().expect("inboxes");
    assert_eq!(inboxes.len(), 1, "{}", docs[0]);
    let inbox = &inboxes[0];
    assert_eq!(
        inbox["inbox"],
        format!("{}@127.0.0.1:{}/INBOX", u.name, dovecot().imap_port)
    );
    assert_eq!(inbox["state"], "idling", "{inbox}");
    assert_eq!(inbox["mode"], "idle", "{inbox}");
    assert!(inbox["connection_age_s"].is_u64(), "{inbox}");
    assert!(
        inbox["connected_since"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{inbox}"
    );
    assert!(inbox["next_attempt"].is_null(), "{inbox}");
    assert!(
        inbox["uid_validity"].is_u64() && inbox["watermark"].is_u64(),
        "{inbox}"
    );
    // The command's own probe is not counted as a subscriber.
    assert_eq!(inbox["subscribers"], 0, "{inbox}");
    for counter in ["delivered", "dropped", "skipped", "reconnects"] {
        assert_eq!(inbox[counter], 0, "{counter}: {inbox}");
    }
    assert!(inbox["last_error"].is_null(), "{inbox}");
    // Its folders: the one it watches, with the row's own position.
    let folders = inbox["folders"]
        .as_array()
        .unwrap_or_else(|| panic!("folders: {inbox}"));
    assert_eq!(folders.len(), 1, "{inbox}");
    assert_eq!(folders[0]["folder"], "INBOX", "{inbox}");
    assert_eq!(folders[0]["mailbox"], "INBOX", "{inbox}");
    assert_eq!(folders[0]["uid_validity"], inbox["uid_validity"], "{inbox}");
    assert_eq!(folders[0]["watermark"], inbox["watermark"], "{inbox}");
    assert_eq!(folders[0]["missing"], false, "{inbox}");
}

#[test]
fn status_with_a_wrong_password_shows_the_rejected_login_without_the_password() {
    let u = dovecot().user("clistatusbad");
    let conn = plain(&u);
    let wrong = "wrong-Pa55word-status";
    let f = run(&args("status", &conn, &[]), wrong);
    assert_eq!(f.code, Some(1), "{f:?}");
    let row = f
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("{}@", u.name)))
        .unwrap_or_else(|| panic!("the inbox's row: {f:?}"));
    assert!(row.contains(" failed "), "{row}");
    assert!(
        f.stdout.contains("    last error: authentication failed"),
        "{f:?}"
    );
    assert_one_error_line(&f);
    assert!(
        !f.stdout.contains(wrong) && !f.stderr.contains(wrong),
        "{f:?}"
    );

    let json = run(&args("status", &conn, &["--json"]), wrong);
    assert_eq!(json.code, Some(1), "{json:?}");
    let doc: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap();
    let inbox = &doc["inboxes"][0];
    assert_eq!(inbox["state"], "failed", "{doc}");
    assert!(
        inbox["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("authentication failed")),
        "{doc}"
    );
    assert!(!json.stdout.contains(wrong) && !json.stderr.contains(wrong));
}

#[test]
fn status_watch_prints_frame_after_frame_until_ctrl_c() {
    let u = dovecot().user("clistatuswatch");
    let conn = plain(&u);
    // JSON: one document per refresh and line.
    let mut w = Running::spawn(
        &args(
            "status",
            &conn,
            &["--watch", "--interval", "100ms", "--json"],
        ),
        &u.password,
    );
    let lines = w.wait_for_stdout(2, |l| l.starts_with('{'));
    let docs: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(
        docs.iter()
            .all(|d| d["inboxes"].as_array().is_some_and(|i| i.len() == 1)),
        "{docs:?}"
    );
    // It keeps going until the session idles, then until Ctrl-C.
    w.wait_for_stdout(1, |l| l.contains("\"state\":\"idling\""));
    interrupt(w.pid());
    let f = w.finish();
    assert_eq!(f.code, Some(130), "{f:?}");

    // A table per refresh; not on a terminal, frames follow each other.
    let mut w = Running::spawn(
        &args("status", &conn, &["--watch", "--interval", "100ms"]),
        &u.password,
    );
    let lines = w.wait_for_stdout(2, |l| l.starts_with("emap status: "));
    assert!(
        lines.iter().filter(|l| l.starts_with("INBOX ")).count() >= 1,
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains('\x1b')),
        "no escapes into a pipe: {lines:?}"
    );
    interrupt(w.pid());
    assert_eq!(w.finish().code, Some(130));
}

#[test]
fn status_of_a_server_that_refuses_connections_shows_the_next_attempt() {
    // A port nothing listens on: the connection is refused, which the
    // session retries after a backoff.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let conn: Vec<String> = [
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--tls",
        "none",
        "--user",
        "nobody",
        "--password-env",
        PASSWORD_VAR,
    ]
    .map(str::to_owned)
    .to_vec();
    let f = run(&args("status", &conn, &["--json"]), "irrelevant-Pa55");
    assert_eq!(f.code, Some(0), "{f:?}");
    let doc: serde_json::Value = serde_json::from_str(f.stdout.trim()).unwrap();
    let inbox = &doc["inboxes"][0];
    assert_eq!(inbox["state"], "backing_off", "{doc}");
    assert!(
        inbox["next_attempt"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{doc}"
    );
    assert!(inbox["next_attempt_in_s"].is_u64(), "{doc}");
    assert!(inbox["connection_age_s"].is_null(), "{doc}");
    assert!(inbox["last_error"].is_string(), "{doc}");
    // The command's own probe is not counted, connected or not.
    assert_eq!(inbox["subscribers"], 0, "{doc}");

    let f = run(&args("status", &conn, &[]), "irrelevant-Pa55");
    assert_eq!(f.code, Some(0), "{f:?}");
    assert!(f.stdout.contains(" backing off, next attempt in "), "{f:?}");
    assert!(f.stdout.contains("    last error: "), "{f:?}");
}

#[test]
fn status_watch_on_a_terminal_redraws_in_place_and_stops_on_ctrl_c() {
    // A terminal from util-linux's `script`; Ctrl-C typed into it reaches
    // emap as SIGINT through the terminal, as from a keyboard. The server
    // is a refused port: the frames show the backoff, no Dovecot needed.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let command = format!(
        "{EMAP} status --host 127.0.0.1 --port {port} --tls none --user nobody \
         --password-env {PASSWORD_VAR} --watch --interval 100ms"
    );
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env(PASSWORD_VAR, "irrelevant-Pa55")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("util-linux `script` runs");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = lines_of(child.stdout.take().unwrap());
    let mut w = Running {
        child,
        stderr: mpsc::channel().1,
        stderr_seen: Vec::new(),
        stdout,
        stdout_seen: Vec::new(),
    };
    // Each frame starts with cursor-home and clear-to-end: drawn over the
    // last one, never scrolled.
    let redraw = "\x1b[H\x1b[Jemap status: ";
    let lines = w.wait_for_stdout(2, |l| l.starts_with(redraw));
    let titles = lines.iter().filter(|l| l.contains("emap status: ")).count();
    let redrawn = lines.iter().filter(|l| l.starts_with(redraw)).count();
    assert_eq!(
        titles, redrawn,
        "every frame is redrawn in place: {lines:?}"
    );
    w.wait_for_stdout(1, |l| l.contains("backing off, next attempt in "));
    std::io::Write::write_all(&mut stdin, b"\x03").unwrap();
    let f = w.finish();
    assert_eq!(f.code, Some(130), "{f:?}");
}
