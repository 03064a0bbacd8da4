//! `emap watch`: subscribe, report readiness, print matching mail until
//! `--count`, the timeout, an error or Ctrl-C, and map each ending to its
//! exit status.

use std::future::pending;
use std::io::Write;
use std::time::Duration;

use emap::{Config, Credential, Filter, Handle, Registry};
use tokio::time::Instant;

use crate::args::WatchArgs;
use crate::credential::credential;
use crate::output::{human_block, json_line};
use crate::time::describe;
use crate::{EXIT_INTERRUPTED, EXIT_OK, EXIT_TIMEOUT, ctrl_c, fail, one_line};

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

/// `emap watch`.
pub(crate) async fn watch(args: WatchArgs) -> u8 {
    let cred = match credential(&args.conn) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
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
    if let Err(e) = filter.validate() {
        return fail(e);
    }
    let handle = match Registry::start_in_thread(Config::default()) {
        Ok(h) => h,
        Err(e) => return fail(e),
    };
    let code = run_watch(&handle, cred, filter, &args).await;
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, handle.shutdown()).await;
    code
}

/// Subscribes, prints the readiness line, then prints mails until
/// `--count`, the timeout, an error or Ctrl-C.
async fn run_watch(handle: &Handle, cred: Credential, filter: Filter, args: &WatchArgs) -> u8 {
    let deadline = args.timeout.map(|t| Instant::now() + t);
    let timer = sleep_until(deadline);
    let interrupt = ctrl_c();
    tokio::pin!(timer, interrupt);
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
            () = &mut timer => {
                let waited = describe(args.timeout.unwrap_or_default());
                return match last_error(handle).await {
                    Some(e) => fail(format!("not connected after {waited}: {e}")),
                    None => {
                        eprintln!("timeout: not connected after {waited}");
                        EXIT_TIMEOUT
                    }
                };
            }
            () = &mut interrupt => {
                eprintln!("interrupted");
                return EXIT_INTERRUPTED;
            }
        }
    };

    let mut ready = format!("watching {watched} for {} mail(s)", args.count);
    if let Some(to) = &args.to {
        ready.push_str(&format!(" to {to}"));
    }
    if let Some(t) = args.timeout {
        ready.push_str(&format!(", timeout {}", describe(t)));
    }
    eprintln!("{ready}");

    let mut stdout = std::io::stdout().lock();
    let mut got = 0;
    while got < args.count {
        tokio::select! {
            m = sub.recv() => match m {
                Some(mail) => {
                    let out = if args.json {
                        json_line(&mail)
                    } else {
                        human_block(&mail, got > 0)
                    };
                    if let Err(e) = stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush()) {
                        sub.close();
                        return fail(format!("cannot write to stdout: {e}"));
                    }
                    got += 1;
                }
                None => {
                    return fail(match sub.error() {
                        Some(e) => e.to_string(),
                        None => "the session ended".to_owned(),
                    });
                }
            },
            () = &mut timer => {
                sub.close();
                eprintln!(
                    "timeout: {got} of {} mail(s) within {}",
                    args.count,
                    describe(args.timeout.unwrap_or_default())
                );
                return EXIT_TIMEOUT;
            }
            () = &mut interrupt => {
                sub.close();
                eprintln!("interrupted after {got} of {} mail(s)", args.count);
                return EXIT_INTERRUPTED;
            }
        }
    }
    sub.close();
    EXIT_OK
}

/// The session's last error, if any (the registry runs one session here).
async fn last_error(handle: &Handle) -> Option<String> {
    let stats = handle.stats().await.ok()?;
    stats.into_iter().find_map(|s| s.last_error)
}
