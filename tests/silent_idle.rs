//! A server whose IDLE push silently stops: it accepts IDLE, then says
//! nothing while mail arrives, and reports the new mail only when asked
//! with NOOP. Courier 5.0 does this for the rest of a connection once its
//! FAM watch breaks (INTEROP.md, "IDLE"); emap must not wait forever on
//! such a connection.

mod support;

use std::time::Duration;

use emap::{Config, Filter};
use support::emap::{fake_cred, next_subject, scripted_config, start};
use support::fake::{FakeConn, FakeServer};
use support::message;

/// Serves a connection whose IDLE never reports anything: IDLE is accepted
/// and stays silent, DONE completes it without news, the first NOOP finds
/// nothing and the second reports the one mail (`* 1 EXISTS`) — so a
/// client must NOOP after every quiet round, not only the first — FETCH
/// returns it, anything else is answered OK.
async fn silent_idle_server(mut c: FakeConn) {
    c.greet_and_login("IDLE").await;
    c.examine(0, Some(1), Some(1)).await;
    let raw = message("found by NOOP");
    let mut idle_tag = None;
    let mut noops = 0;
    while let Some(line) = c.line().await {
        if line.eq_ignore_ascii_case("DONE") {
            if let Some(tag) = idle_tag.take() {
                c.send(format!("{tag} OK Idle completed\r\n")).await;
            }
            continue;
        }
        let (tag, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let verb = rest.to_ascii_uppercase();
        if verb == "IDLE" {
            c.send("+ idling\r\n").await;
            idle_tag = Some(tag.to_owned());
        } else if verb == "NOOP" {
            noops += 1;
            let news = if noops >= 2 { "* 1 EXISTS\r\n" } else { "" };
            c.send(format!("{news}{tag} OK NOOP completed\r\n")).await;
        } else if verb.starts_with("FETCH") {
            c.send(FakeConn::fetch_ok(tag, &[(1, 1, &raw)])).await;
        } else if verb == "LOGOUT" {
            c.send(format!("* BYE fake closing\r\n{tag} OK bye\r\n"))
                .await;
            return;
        } else {
            c.send(format!("{tag} OK done\r\n")).await;
        }
    }
}

/// Subscribes against [`silent_idle_server`] with `config` and awaits the
/// mail only a NOOP reveals; it must come on the one connection.
async fn found_by_noop_after_a_round(config: Config) {
    let server = FakeServer::start(|c: FakeConn, _| silent_idle_server(c)).await;
    let h = start(config);
    let mut sub = h
        .subscribe(fake_cred(server.port), Filter::new())
        .await
        .unwrap();
    assert_eq!(next_subject(&mut sub).await, "found by NOOP");
    assert_eq!(server.accepted(), 1, "found on the same connection");
    h.shutdown().await;
}

/// An IDLE round the client ends itself because the server said nothing
/// for `idle_inactivity` is followed by NOOP, so that mail a server failed
/// to push is found one `idle_inactivity` late, not never. Fails on a
/// client that re-issues IDLE straight after such a round: this server
/// then never reports the mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_idle_round_is_followed_by_noop() {
    found_by_noop_after_a_round(Config {
        idle_inactivity: Duration::from_millis(200),
        ..scripted_config()
    })
    .await;
}

/// Likewise when `idle_round` ends the IDLE first (as it does against a
/// server whose keep-alive lines, such as Dovecot's `* OK Still here`,
/// keep `idle_inactivity` from firing): the round's end is followed by
/// NOOP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_an_idle_round_is_followed_by_noop() {
    found_by_noop_after_a_round(Config {
        idle_round: Duration::from_millis(200),
        ..scripted_config()
    })
    .await;
}
