//! The operator's status page (`GET /`) over real HTTP, with the gateway
//! binary on the test Dovecot: what it shows, to whom, how it is escaped
//! and locked down, and that it is valid HTML by `tidy`'s rules; and the
//! connection age and the next attempt of a backoff, on the page, in
//! `/v1/stats` and in `/v1/status`, on a private Dovecot that the test
//! stops and starts again.

#[path = "../../../tests/support/mod.rs"]
mod support;

mod common;

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{Gateway, Setup, inbox_table, junk_gateway, new_key, read_until, status_of};
use support::{Dovecot, EVENTUALLY, dovecot, wait_for};

/// The text of the cell `data-k="key"` in the row of `inbox` (as written
/// in the page, i.e. escaped), if there is one.
fn cell(page: &str, inbox: &str, key: &str) -> Option<String> {
    let row_start = page.find(&format!("<th scope=\"row\">{inbox}</th>"))?;
    let row = &page[row_start..];
    let row = &row[..row.find("</tr>")?];
    let at = row.find(&format!("data-k=\"{key}\">"))? + key.len() + 10;
    let text = &row[at..];
    Some(text[..text.find('<')?].to_owned())
}

/// Runs `tidy -errors -quiet` on `html`: `Err` with what it reported when
/// it finds an error. Fails the test with a clear message when tidy is
/// not installed (scripts/install-deps installs it; CI runs that).
fn tidy(html: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("status.html");
    std::fs::write(&file, html).unwrap();
    let out = match Command::new("tidy")
        .args(["-errors", "-quiet"])
        .arg(&file)
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!(
            "cannot run `tidy` ({e}): install Debian's tidy package (scripts/install-deps does)"
        ),
    };
    // Exit status: 0 clean, 1 warnings only (not shown under -errors), 2 errors.
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0 | 1) if report.trim().is_empty() => Ok(()),
        _ => Err(format!("{}: {report}", out.status)),
    }
}

#[test]
fn the_page_shows_the_inbox_idling_then_its_reconnect_escaped_locked_down_and_valid() {
    let ca = dovecot().catchall("gwstatus");
    // A second inbox (its own user, so its own session) with markup in
    // its name.
    let other = dovecot().user("gwstatus-other");
    let tables = inbox_table(
        "<i>x&\"y",
        dovecot().imap_port,
        &other.name,
        "GW_OTHER_PASSWORD",
        "",
    );
    let gw = Gateway::start(
        &ca,
        Setup {
            tables: &tables,
            env: vec![("GW_OTHER_PASSWORD", other.password.clone())],
            ..Setup::default()
        },
    );

    // Nobody waits yet: no session, said in plain words.
    let (status, headers, page) = gw.request(None, "/");
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        cell(&page, "main", "state").as_deref(),
        Some("not connected (nobody waiting)"),
        "{page}"
    );
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let csp = header("content-security-policy").expect("a Content-Security-Policy header");
    assert!(csp.starts_with("default-src 'none'; "), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    assert!(
        header("content-type").is_some_and(|t| t.starts_with("text/html")),
        "{headers:?}"
    );
    // No script at all, and the name is escaped wherever it appears.
    assert!(!page.contains("<script"), "{page}");
    assert!(page.contains("&lt;i&gt;x&amp;&quot;y"), "{page}");
    assert!(!page.contains("<i>x"), "{page}");
    tidy(&page).unwrap_or_else(|e| panic!("tidy: {e}\n{page}"));

    // A wait holds the session: the inbox idles, with one open wait.
    let held = gw.raw(
        None,
        &format!(
            "/v1/wait?inbox=main&to={}&timeout=100s",
            ca.address("status")
        ),
    );
    gw.await_subscribers(None, 1);
    let page = gw.get("/").1;
    assert_eq!(
        cell(&page, "main", "state").as_deref(),
        Some("idling"),
        "{page}"
    );
    assert_eq!(
        cell(&page, "main", "mode").as_deref(),
        Some("IDLE"),
        "{page}"
    );
    assert_eq!(cell(&page, "main", "open").as_deref(), Some("1"), "{page}");
    assert_eq!(
        cell(&page, "main", "subscribers").as_deref(),
        Some("1"),
        "{page}"
    );
    tidy(&page).unwrap_or_else(|e| panic!("tidy: {e}\n{page}"));
    let before: u64 = cell(&page, "main", "reconnects")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a reconnect count: {page}"));

    // The server kicks the user: a later page shows the reconnect, and the
    // inbox idling again.
    assert!(dovecot().kick(&ca.user.name), "nothing to kick");
    let after = wait_for(EVENTUALLY, || {
        let page = gw.get("/").1;
        let n: u64 = cell(&page, "main", "reconnects")?.parse().ok()?;
        (n > before && cell(&page, "main", "state").as_deref() == Some("idling")).then_some(page)
    });
    let page = after.unwrap_or_else(|| panic!("no reconnect shown: {}", gw.get("/").1));
    tidy(&page).unwrap_or_else(|e| panic!("tidy: {e}\n{page}"));
    drop(held);
}

#[test]
fn a_key_sees_only_the_inboxes_in_its_scope_and_needs_the_status_scope() {
    let ca = dovecot().catchall("gwstatus-scope");
    let (one, ops) = (new_key(), new_key());
    let tables = inbox_table(
        "hidden-inbox",
        dovecot().imap_port,
        &ca.user.name,
        "GW_TEST_PASSWORD",
        "",
    ) + "\n[[key]]\nid = \"one\"\nkey_env = \"GW_ONE\"\ninboxes = [\"main\"]\n\
         recipients = [\"*\"]\nendpoints = [\"status\"]\n\n\
         [[key]]\nid = \"ops\"\nkey_env = \"GW_OPS\"\ninboxes = [\"*\"]\n\
         recipients = [\"*\"]\nendpoints = [\"stats\", \"metrics\"]\n";
    let gw = Gateway::start(
        &ca,
        Setup {
            tables: &tables,
            env: vec![("GW_ONE", one.clone()), ("GW_OPS", ops.clone())],
            ..Setup::default()
        },
    );
    assert_eq!(gw.get("/").0, 401);
    // Every inbox, but not the status scope.
    assert_eq!(gw.get_as(Some(&ops), "/").0, 403);
    let (status, page) = gw.get_as(Some(&one), "/");
    assert_eq!(status, 200, "{page}");
    assert!(cell(&page, "main", "state").is_some(), "{page}");
    assert!(!page.contains("hidden-inbox"), "{page}");

    // A browser: the page challenges with Basic, and the key as the
    // password (any user name) opens it, kept to the same scope.
    let (status, headers, _) = gw.request(None, "/");
    assert_eq!(status, 401);
    let challenge = headers
        .iter()
        .find(|(n, _)| n == "www-authenticate")
        .map(|(_, v)| v.as_str());
    assert!(
        challenge.is_some_and(|c| c.starts_with("Basic ")),
        "{headers:?}"
    );
    let (status, _, page) = gw.request_basic("operator", &one, "/");
    assert_eq!(status, 200, "{page}");
    assert!(cell(&page, "main", "state").is_some(), "{page}");
    assert!(!page.contains("hidden-inbox"), "{page}");
    assert_eq!(gw.request_basic("operator", &ops, "/").0, 403);
    assert_eq!(gw.request_basic("operator", "not-a-key", "/").0, 401);
    // Only the page takes Basic: a browser replays it on cross-site
    // requests, which must not spend the key's waits or request rate.
    assert_eq!(gw.request_basic("operator", &ops, "/v1/stats").0, 401);
    assert_eq!(gw.request_basic("operator", &one, "/v1/status").0, 401);
    // The API still challenges with Bearer.
    let (_, headers, _) = gw.request(None, "/v1/stats");
    assert!(
        headers
            .iter()
            .any(|(n, v)| n == "www-authenticate" && v.starts_with("Bearer ")),
        "{headers:?}"
    );
}

/// Now, in Unix seconds.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Whether `text` reads like an age the page writes (`12s`, `3m 04s`, ...).
fn is_age(text: &str) -> bool {
    text.split(' ').all(|part| {
        part.len() >= 2
            && part[..part.len() - 1].bytes().all(|b| b.is_ascii_digit())
            && part.ends_with(['s', 'm', 'h', 'd'])
    })
}

/// The one entry of `inbox` in `/v1/status`.
fn status_entry(gw: &Gateway, inbox: &str) -> serde_json::Value {
    let (code, body) = gw.get("/v1/status");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut found: Vec<_> = v["inboxes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["inbox"] == inbox)
        .cloned()
        .collect();
    assert_eq!(found.len(), 1, "{v}");
    found.pop().unwrap()
}

#[test]
fn connection_age_while_idling_then_the_next_attempt_while_the_server_is_down() {
    // A Dovecot of this test's own: stopping it disturbs no other test.
    let private = Dovecot::start_with_cap(10).expect("a private Dovecot");
    let user = private.user("gwbackoff");
    let ca = dovecot().catchall("gwbackoff-main");
    let tables = inbox_table(
        "private",
        private.imap_port,
        &user.name,
        "GW_PRIVATE_PASSWORD",
        "",
    );
    let gw = Gateway::start(
        &ca,
        Setup {
            tables: &tables,
            env: vec![("GW_PRIVATE_PASSWORD", user.password.clone())],
            ..Setup::default()
        },
    );
    let held = gw.raw(None, "/v1/wait?inbox=private&timeout=110s");

    // Idling: a connection age on the page, a connection time in the
    // JSON, no next attempt.
    let page = wait_for(EVENTUALLY, || {
        let page = gw.get("/").1;
        (cell(&page, "private", "state").as_deref() == Some("idling")).then_some(page)
    })
    .unwrap_or_else(|| panic!("never idling: {}", gw.get("/").1));
    let shown = cell(&page, "private", "age").unwrap_or_else(|| panic!("an age cell: {page}"));
    assert!(is_age(&shown), "connection age {shown:?} in {page}");
    tidy(&page).unwrap_or_else(|e| panic!("tidy: {e}\n{page}"));
    let stats = gw.stats(None);
    let session = stats["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["state"] == "Watching")
        .unwrap_or_else(|| panic!("a watching session: {stats}"))
        .clone();
    let since = session["connected_since"]
        .as_u64()
        .unwrap_or_else(|| panic!("connected_since: {session}"));
    assert!(since <= unix_now() && since + 600 > unix_now(), "{session}");
    assert!(session["next_attempt"].is_null(), "{session}");
    let entry = status_entry(&gw, "private");
    assert_eq!(entry["state"], "idling", "{entry}");
    assert_eq!(entry["mode"], "idle", "{entry}");
    assert!(entry["connection_age_s"].is_u64(), "{entry}");
    assert!(entry["next_attempt"].is_null(), "{entry}");
    assert_eq!(entry["open_waits"], 1, "{entry}");

    // The server goes away: the page says the session backs off and
    // when it tries next; the age is gone with the connection.
    private.stop();
    let page = wait_for(EVENTUALLY, || {
        let page = gw.get("/").1;
        cell(&page, "private", "state")?
            .starts_with("backing off, next attempt at ")
            .then_some(page)
    })
    .unwrap_or_else(|| panic!("never backing off: {}", gw.get("/").1));
    let state = cell(&page, "private", "state").unwrap();
    assert!(state.contains(" UTC (in "), "{state}");
    assert_eq!(
        cell(&page, "private", "age").as_deref(),
        Some("–"),
        "{page}"
    );
    assert_eq!(
        cell(&page, "private", "mode").as_deref(),
        Some("–"),
        "{page}"
    );
    assert!(
        cell(&page, "private", "error").is_some_and(|e| e != "–"),
        "{page}"
    );
    tidy(&page).unwrap_or_else(|e| panic!("tidy: {e}\n{page}"));
    let backing_off = wait_for(EVENTUALLY, || {
        let stats = gw.stats(None);
        stats["sessions"]
            .as_array()?
            .iter()
            .find(|s| s["state"] == "Backoff")
            .cloned()
    })
    .unwrap_or_else(|| panic!("no Backoff in /v1/stats: {}", gw.stats(None)));
    let next = backing_off["next_attempt"]
        .as_u64()
        .unwrap_or_else(|| panic!("next_attempt: {backing_off}"));
    // The backoff is at most `backoff_max` (60 s) away.
    assert!(
        next + 1 >= since && next <= unix_now() + 61,
        "{backing_off}"
    );
    assert!(backing_off["connected_since"].is_null(), "{backing_off}");
    let entry = wait_for(EVENTUALLY, || {
        let e = status_entry(&gw, "private");
        (e["state"] == "backing_off").then_some(e)
    })
    .unwrap_or_else(|| panic!("never backing_off: {}", status_entry(&gw, "private")));
    assert!(entry["next_attempt"].is_u64(), "{entry}");
    assert!(entry["next_attempt_in_s"].is_u64(), "{entry}");
    assert!(entry["connection_age_s"].is_null(), "{entry}");
    assert!(entry["mode"].is_null(), "{entry}");
    assert!(entry["last_error"].is_string(), "{entry}");

    // Back: idling again on a new connection, the reconnect counted.
    private.start_again();
    let page = wait_for(EVENTUALLY, || {
        let page = gw.get("/").1;
        (cell(&page, "private", "state").as_deref() == Some("idling")).then_some(page)
    })
    .unwrap_or_else(|| panic!("never idling again: {}", gw.get("/").1));
    assert!(
        cell(&page, "private", "age").is_some_and(|a| is_age(&a)),
        "{page}"
    );
    let reconnects: u64 = cell(&page, "private", "reconnects")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a reconnect count: {page}"));
    assert!(reconnects >= 1, "{page}");
    drop(held);
}

/// The cell `data-k="key"` of the sub-row of `folder` (as the inbox names
/// it, escaped) under `inbox`, if there is one.
fn folder_cell(page: &str, inbox: &str, folder: &str, key: &str) -> Option<String> {
    let start = page.find(&format!(
        "<tr class=\"folder\" data-inbox=\"{inbox}\" data-folder=\"{folder}\">"
    ))?;
    let row = &page[start..];
    let row = &row[..row.find("</tr>")?];
    let at = row.find(&format!("data-k=\"{key}\">"))? + key.len() + 10;
    let text = &row[at..];
    Some(text[..text.find('<')?].to_owned())
}

/// The value of the series `name{labels}` in Prometheus text, if present.
fn series(metrics: &str, name_and_labels: &str) -> Option<u64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(name_and_labels)?
            .strip_prefix(' ')?
            .parse()
            .ok()
    })
}

#[test]
fn an_inbox_watching_junk_shows_the_folder_and_its_watermark_moves_when_junk_gets_mail() {
    // An inbox of its own user, watching the folder Dovecot marks \Junk
    // besides INBOX, on the same connection.
    let (gw, user) = junk_gateway("gwjunk");
    let mut held = gw.raw(None, "/v1/wait?inbox=junky&timeout=110s");

    // Idling, with Junk found and its position known: a sub-row on the
    // page, an entry in /v1/status, series in /metrics.
    let page = wait_for(EVENTUALLY, || {
        let page = gw.get("/").1;
        (cell(&page, "junky", "state").as_deref() == Some("idling")
            && folder_cell(&page, "junky", "\\Junk", "folder-watermark")?
                .parse::<u64>()
                .is_ok())
        .then_some(page)
    })
    .unwrap_or_else(|| panic!("no Junk sub-row with a watermark: {}", gw.get("/").1));
    assert!(page.contains("↳ \\Junk (Junk)</th>"), "{page}");
    assert_eq!(
        folder_cell(&page, "junky", "\\Junk", "folder-state").as_deref(),
        Some("watched"),
        "{page}"
    );
    let validity: u64 = folder_cell(&page, "junky", "\\Junk", "folder-uidvalidity")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("Junk's UIDVALIDITY: {page}"));
    let before: u64 = folder_cell(&page, "junky", "\\Junk", "folder-watermark")
        .unwrap()
        .parse()
        .unwrap();
    // The main folder is the inbox's own row, not a sub-row.
    assert!(!page.contains("data-folder=\"INBOX\""), "{page}");
    tidy(&page).unwrap_or_else(|e| panic!("tidy: {e}\n{page}"));

    let entry = status_entry(&gw, "junky");
    let folders = entry["folders"]
        .as_array()
        .unwrap_or_else(|| panic!("{entry}"));
    assert_eq!(folders.len(), 2, "{entry}");
    assert_eq!(folders[0]["folder"], "INBOX", "{entry}");
    assert_eq!(folders[1]["folder"], "\\Junk", "{entry}");
    assert_eq!(folders[1]["mailbox"], "Junk", "{entry}");
    assert_eq!(folders[1]["uid_validity"], validity, "{entry}");
    assert_eq!(folders[1]["missing"], false, "{entry}");

    let metrics = gw.metrics(None);
    for (name, kind) in [
        ("emap_inbox_connection_age_seconds", "gauge"),
        ("emap_inbox_next_attempt_timestamp_seconds", "gauge"),
        ("emap_folder_watermark", "gauge"),
        ("emap_folder_uid_validity", "gauge"),
    ] {
        assert!(
            metrics.contains(&format!("# HELP {name} ")),
            "{name}: {metrics}"
        );
        assert!(
            metrics.contains(&format!("# TYPE {name} {kind}\n")),
            "{name}: {metrics}"
        );
    }
    assert!(
        series(
            &metrics,
            "emap_inbox_connection_age_seconds{inbox=\"junky\",session=\"0\"}"
        )
        .is_some(),
        "{metrics}"
    );
    // Not backing off: no next attempt.
    assert!(
        !metrics.contains("emap_inbox_next_attempt_timestamp_seconds{"),
        "{metrics}"
    );
    let junk = "{inbox=\"junky\",session=\"0\",folder=\"\\\\Junk\"}";
    assert_eq!(
        series(&metrics, &format!("emap_folder_uid_validity{junk}")),
        Some(validity),
        "{metrics}"
    );
    assert_eq!(
        series(&metrics, &format!("emap_folder_watermark{junk}")),
        Some(before),
        "{metrics}"
    );

    // A mail lands in Junk: the waiter gets it, and Junk's watermark moves
    // past it on the page and in /metrics.
    let raw = support::mail("noreply@service.test", &user.name, "junk-move", "spam?");
    dovecot().append(&user, "Junk", &raw);
    let page = wait_for(EVENTUALLY, || {
        let page = gw.get("/").1;
        let now: u64 = folder_cell(&page, "junky", "\\Junk", "folder-watermark")?
            .parse()
            .ok()?;
        (now > before).then_some(page)
    })
    .unwrap_or_else(|| panic!("Junk's watermark never moved: {}", gw.get("/").1));
    tidy(&page).unwrap_or_else(|e| panic!("tidy: {e}\n{page}"));
    let after = series(&gw.metrics(None), &format!("emap_folder_watermark{junk}"));
    assert!(
        after.is_some_and(|w| w > before),
        "{after:?} {}",
        gw.metrics(None)
    );
    let answer = read_until(&mut held, "junk-move");
    assert_eq!(status_of(&answer), Some(200), "{answer}");
    assert!(answer.contains("\"subject\":\"junk-move\""), "{answer}");
    drop(held);
}
