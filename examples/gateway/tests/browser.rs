//! The status page in a real browser: headless Chromium (Debian's
//! `chromium`, installed by scripts/install-deps) loads `GET /` from the
//! gateway binary on the test Dovecot; the test asserts on the DOM the
//! browser built (`--dump-dom`), that the browser applied the page's own
//! Content-Security-Policy without refusing its style sheet, and writes
//! the screenshot the README shows (docs/status.png).

#[path = "../../../tests/support/mod.rs"]
mod support;

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{Gateway, Setup};
use support::{EVENTUALLY, dovecot, wait_for};

/// The text of the cell `data-k="key"` in the row of `inbox`, if any.
fn cell(dom: &str, inbox: &str, key: &str) -> Option<String> {
    let row_start = dom.find(&format!("<th scope=\"row\">{inbox}</th>"))?;
    let row = &dom[row_start..];
    let row = &row[..row.find("</tr>")?];
    let at = row.find(&format!("data-k=\"{key}\">"))? + key.len() + 10;
    let text = &row[at..];
    Some(text[..text.find('<')?].to_owned())
}

/// Runs headless Chromium with `args` then `url`, in a fresh profile.
/// Fails the test with a clear message when Chromium is not installed.
fn chromium(args: &[&str], url: &str) -> Output {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("chromium")
        .args([
            "--headless",
            // Tests run as root in CI containers, where the sandbox cannot start.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--enable-logging=stderr",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output();
    match out {
        Ok(o) => o,
        Err(e) => panic!(
            "cannot run `chromium` ({e}): install Debian's chromium package \
             (scripts/install-deps does)"
        ),
    }
}

/// The DOM Chromium built from `url`, and what it logged.
fn dump_dom(url: &str) -> (String, String) {
    let out = chromium(&["--dump-dom"], url);
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn chromium_shows_the_inbox_idling_then_the_reconnect_and_takes_the_screenshot() {
    let ca = dovecot().catchall("gwbrowser");
    let gw = Gateway::start(&ca, Setup::default());
    let url = gw.url("/");

    let held = gw.raw(
        None,
        &format!(
            "/v1/wait?inbox=main&to={}&timeout=100s",
            ca.address("browser")
        ),
    );
    gw.await_subscribers(None, 1);

    let (dom, log) = dump_dom(&url);
    assert_eq!(
        cell(&dom, "main", "state").as_deref(),
        Some("idling"),
        "{dom}"
    );
    assert_eq!(cell(&dom, "main", "mode").as_deref(), Some("IDLE"), "{dom}");
    // The policy allows the inline style sheet by its hash: a wrong hash
    // makes Chromium refuse it and say so on the console.
    assert!(
        !log.contains("Content Security Policy"),
        "the browser refused part of the page: {log}"
    );
    let before: u64 = cell(&dom, "main", "reconnects")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a reconnect count: {dom}"));

    // The server kicks the user: the browser's page shows the reconnect.
    assert!(dovecot().kick(&ca.user.name), "nothing to kick");
    let seen = wait_for(EVENTUALLY, || {
        let (dom, _) = dump_dom(&url);
        let n: u64 = cell(&dom, "main", "reconnects")?.parse().ok()?;
        (n > before && cell(&dom, "main", "state").as_deref() == Some("idling")).then_some(())
    });
    assert!(seen.is_some(), "no reconnect shown: {}", dump_dom(&url).0);

    // The screenshot for the README.
    let png = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/status.png");
    std::fs::create_dir_all(png.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&png);
    let out = chromium(
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1400,260",
        ],
        &url,
    );
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&png).expect("the screenshot was written");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    drop(held);
}
