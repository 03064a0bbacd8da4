//! `emap watch`: open the watch (an IMAP subscription, or with `--nats` a
//! consumer on the bus of an emap-bridge group), report readiness, print
//! matching mail until `--count`, the timeout, an error or Ctrl-C, and map
//! each ending to its exit status.
//!
//! Both sources share everything but the opening: the filter the flags
//! describe, the readiness line, the printing loop and its endings, so a
//! script sees the same output and exit statuses from either.

use std::future::{Future, pending};
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use emap::{Config, Credential, Filter, Folder, Handle, Mail, Registry};
use tokio::time::Instant;

use crate::args::{ConnArgs, NATS_VAR, Source, WatchArgs};
use crate::credential::credential;
use crate::output::{human_block, json_line};
use crate::time::describe;
use crate::{EXIT_INTERRUPTED, EXIT_OK, EXIT_TIMEOUT, bus, ctrl_c, fail, one_line};

/// How long shutting down (LOGOUT) may take before the process exits
/// anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Resolves at `deadline`; never without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => pending().await,
    }
}

/// What ends a watch from outside: `--timeout` or Ctrl-C. Made once, when
/// the watch starts, and awaited again in each phase.
pub(crate) struct Ends {
    timer: Pin<Box<dyn Future<Output = ()>>>,
    interrupt: Pin<Box<dyn Future<Output = ()>>>,
}

/// Which of [`Ends`] came.
pub(crate) enum End {
    /// `--timeout` passed.
    TimedOut,
    /// Ctrl-C.
    Interrupted,
}

impl Ends {
    fn new(timeout: Option<Duration>) -> Ends {
        Ends {
            timer: Box::pin(sleep_until(timeout.map(|t| Instant::now() + t))),
            interrupt: Box::pin(ctrl_c()),
        }
    }

    /// Resolves when one of them came (again at once, if one came before).
    pub(crate) async fn next(&mut self) -> End {
        tokio::select! {
            () = &mut self.timer => End::TimedOut,
            () = &mut self.interrupt => End::Interrupted,
        }
    }
}

/// `emap watch`.
pub(crate) async fn watch(args: WatchArgs) -> u8 {
    let source = match args.source(std::env::var(NATS_VAR).ok()) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let filter = match filter(&args, matches!(source, Source::Imap(_))) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    let mut ends = Ends::new(args.timeout);
    match source {
        Source::Imap(conn) => imap(&conn, filter, &args, &mut ends).await,
        Source::Nats(b) => bus::watch(&b, filter, &args, &mut ends).await,
    }
}

/// The filter the flags describe. From IMAP, `--folder` names a folder
/// as `--also-watch` does (`\Junk` is the special use); from the bus, a
/// folder is the name the bridge's server gave it.
fn filter(args: &WatchArgs, imap: bool) -> Result<Filter, String> {
    let mut filter = Filter::new();
    if let Some(to) = &args.to {
        filter = filter.to(to);
    }
    if let Some(s) = &args.from_contains {
        filter = filter.from_contains(s);
    }
    if let Some(s) = &args.subject_contains {
        filter = filter.subject_contains(s);
    }
    if let Some(t) = args.since {
        filter = filter.since(t);
    }
    if let Some(age) = args.max_age {
        filter = filter.max_age(age);
    }
    for folder in &args.folder {
        filter = if imap {
            filter.folder(folder.parse::<Folder>().map_err(|e| e.to_string())?)
        } else {
            filter.folder(folder.as_str())
        };
    }
    filter.validate().map_err(|e| e.to_string())?;
    Ok(filter)
}

/// The IMAP watch: a registry of one session in a thread of its own,
/// shut down (LOGOUT) at the end.
async fn imap(conn: &ConnArgs, filter: Filter, args: &WatchArgs, ends: &mut Ends) -> u8 {
    let cred = match credential(conn) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let handle = match Registry::start_in_thread(Config::default()) {
        Ok(h) => h,
        Err(e) => return fail(e),
    };
    let code = run_imap(&handle, cred, filter, args, ends).await;
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, handle.shutdown()).await;
    code
}

/// Subscribes, prints the readiness line, then prints mails until
/// `--count`, the timeout, an error or Ctrl-C.
async fn run_imap(
    handle: &Handle,
    cred: Credential,
    filter: Filter,
    args: &WatchArgs,
    ends: &mut Ends,
) -> u8 {
    let watched = format!(
        "{} of {} on {}:{}",
        cred.mailbox, cred.user, cred.host, cred.port
    );
    let capacity = usize::try_from(args.count)
        .unwrap_or(usize::MAX)
        .clamp(8, 1024);

    // Subscribing connects, logs in and selects; transient failures are
    // retried by the session, so report them while waiting.
    let subscribe = handle.subscribe_with_capacity(cred, filter, Some(capacity));
    tokio::pin!(subscribe);
    let mut progress = tokio::time::interval(Duration::from_secs(1));
    let mut reported: Option<String> = None;
    let mut sub = loop {
        tokio::select! {
            r = &mut subscribe => match r {
                Ok(sub) => break sub,
                Err(e) => return fail(e),
            },
            _ = progress.tick() => {
                if let Some(e) = last_error(handle).await
                    && reported.as_ref() != Some(&e)
                {
                    eprintln!("emap: cannot connect yet ({}); retrying", one_line(&e));
                    reported = Some(e);
                }
            }
            end = ends.next() => {
                return match end {
                    End::TimedOut => {
                        let waited = describe(args.timeout.unwrap_or_default());
                        match last_error(handle).await {
                            Some(e) => fail(format!("not connected after {waited}: {e}")),
                            None => {
                                eprintln!("timeout: not connected after {waited}");
                                EXIT_TIMEOUT
                            }
                        }
                    }
                    End::Interrupted => {
                        eprintln!("interrupted");
                        EXIT_INTERRUPTED
                    }
                };
            }
        }
    };

    ready(&watched, args);
    let code = print_mails(args, ends, async || match sub.recv().await {
        Some(mail) => Ok(mail),
        None => Err(match sub.error() {
            Some(e) => e.to_string(),
            None => "the session ended".to_owned(),
        }),
    })
    .await;
    sub.close();
    code
}

/// Prints the readiness line on stderr: `watching <what> for N mail(s)
/// [to ADDR][, timeout T]`. Mail that arrives after it is seen.
pub(crate) fn ready(what: &str, args: &WatchArgs) {
    let mut ready = format!("watching {what} for {} mail(s)", args.count);
    if let Some(to) = &args.to {
        ready.push_str(&format!(" to {to}"));
    }
    if let Some(t) = args.timeout {
        ready.push_str(&format!(", timeout {}", describe(t)));
    }
    eprintln!("{ready}");
}

/// Prints each mail `next` hands out (`--json` lines or blocks) until
/// `--count` of them (0), the timeout (2), Ctrl-C (130), an error of
/// `next` or of stdout (1); the one loop of both sources.
pub(crate) async fn print_mails(
    args: &WatchArgs,
    ends: &mut Ends,
    mut next: impl AsyncFnMut() -> Result<Arc<Mail>, String>,
) -> u8 {
    let mut stdout = std::io::stdout().lock();
    let mut got = 0;
    while got < args.count {
        tokio::select! {
            m = next() => match m {
                Ok(mail) => {
                    let out = if args.json {
                        json_line(&mail)
                    } else {
                        human_block(&mail, got > 0)
                    };
                    if let Err(e) = stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush()) {
                        return fail(format!("cannot write to stdout: {e}"));
                    }
                    got += 1;
                }
                Err(e) => return fail(e),
            },
            end = ends.next() => {
                return match end {
                    End::TimedOut => {
                        eprintln!(
                            "timeout: {got} of {} mail(s) within {}",
                            args.count,
                            describe(args.timeout.unwrap_or_default())
                        );
                        EXIT_TIMEOUT
                    }
                    End::Interrupted => {
                        eprintln!("interrupted after {got} of {} mail(s)", args.count);
                        EXIT_INTERRUPTED
                    }
                };
            }
        }
    }
    EXIT_OK
}

/// The session's last error, if any (the registry runs one session here).
async fn last_error(handle: &Handle) -> Option<String> {
    let stats = handle.stats().await.ok()?;
    stats.into_iter().find_map(|s| s.last_error)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};

    /// A mail to `to` with `subject`, as read from `folder`.
    fn mail(to: &str, folder: &str, subject: &str) -> Mail {
        let raw = format!(
            "From: Service <noreply@service.test>\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nhello\r\n"
        );
        Mail::parse(1, 1, folder, None, raw.into_bytes(), false)
    }

    #[test]
    fn the_filter_flags_make_one_filter_for_both_sources() {
        let line = "emap watch --nats nats://h --inbox i --to task@x.test --from-contains \
                    service --subject-contains code --folder Junk --folder Spam";
        let cli = Cli::try_parse_from(line.split_whitespace()).unwrap();
        let Command::Watch(args) = cli.command else {
            panic!("not watch")
        };
        let f = filter(&args, false).unwrap();
        let now = std::time::SystemTime::now();
        assert!(f.matches(&mail("task@x.test", "Junk", "Your code"), now));
        assert!(f.matches(&mail("task@x.test", "Spam", "Your code"), now));
        for (to, folder, subject) in [
            ("other@x.test", "Junk", "Your code"),
            ("task@x.test", "INBOX", "Your code"),
            ("task@x.test", "Junk", "Welcome"),
        ] {
            assert!(
                !f.matches(&mail(to, folder, subject), now),
                "{to} {folder} {subject}"
            );
        }
        // A filter emap refuses (an empty recipient) is a usage error.
        let cli = Cli::try_parse_from(["emap", "watch", "--nats", "nats://h", "--to", ""]).unwrap();
        let Command::Watch(args) = cli.command else {
            panic!("not watch")
        };
        assert!(filter(&args, false).is_err());
    }
}
