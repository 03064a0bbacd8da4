//! `emap watch --nats`: the same watch through the bus of an emap-bridge
//! group (crates/emap-nats) instead of an IMAP connection of its own, so a
//! shell script on any machine can wait without the inbox's credential.
//!
//! Only the opening differs from the IMAP watch: connect to NATS, open a
//! consumer on the inbox's subjects with the filter ([`emap_nats::Waiter`]:
//! its recipient picks the subject, `--since`/`--max-age` start it back in
//! the stream), then the shared printing loop of `watch.rs`. A message on
//! the inbox's subject that no bridge published is never printed as mail:
//! a one-line warning on stderr, and the watch goes on.

use emap::Filter;
use emap_nats::{Received, StreamConfig, Waiter};

use crate::args::{Bus, WatchArgs};
use crate::time::describe;
use crate::watch::{End, Ends, print_mails, ready};
use crate::{EXIT_INTERRUPTED, fail, one_line};

/// `emap watch --nats`.
pub(crate) async fn watch(bus: &Bus, filter: Filter, args: &WatchArgs, ends: &mut Ends) -> u8 {
    let config = StreamConfig {
        stream: bus.stream.clone(),
        ..StreamConfig::default()
    };
    // The client retries a refused connection by itself; the timeout or
    // Ctrl-C ends the wait for it.
    let open = async {
        let waiter = Waiter::connect(&bus.url, &config).await?;
        let stream = waiter.watch(&bus.inbox, filter).await?;
        Ok::<_, emap_nats::Error>((waiter, stream))
    };
    // The waiter (its connection) is kept for as long as its stream.
    let (_waiter, mut stream) = tokio::select! {
        r = open => match r {
            Ok(opened) => opened,
            Err(e) => return fail(e),
        },
        end = ends.next() => {
            return match end {
                // Whether mail came is unknown: an error, not a timeout.
                End::TimedOut => fail(format!(
                    "the bus did not answer within {} (is a NATS server with JetStream at \
                     the --nats URL?)",
                    describe(args.timeout.unwrap_or_default())
                )),
                End::Interrupted => {
                    eprintln!("interrupted");
                    EXIT_INTERRUPTED
                }
            };
        }
    };
    // Not the URL: it may carry credentials.
    ready(&format!("inbox {} through NATS", bus.inbox), args);
    print_mails(args, ends, async || {
        loop {
            match stream.next_received().await {
                Some(Ok(Received::Mail(mail))) => return Ok(mail),
                Some(Ok(Received::Skipped { subject, reason })) => eprintln!(
                    "warning: skipped a message on {} that no bridge published ({})",
                    one_line(&subject),
                    one_line(&reason.to_string())
                ),
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("the bus ended the watch".to_owned()),
            }
        }
    })
    .await
}
