//! `emap login`: check that a credential can log in, open its mailbox and
//! find every further folder it watches (`--also-watch`).

use crate::args::ConnArgs;
use crate::credential::credential;
use crate::{EXIT_INTERRUPTED, EXIT_OK, ctrl_c, fail};

/// `emap login`.
pub(crate) async fn login(args: ConnArgs) -> u8 {
    let cred = match credential(&args) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    tokio::select! {
        r = emap::test_login(&cred) => match r {
            Ok(()) => {
                let also: Vec<String> = args.also_watch.iter().map(ToString::to_string).collect();
                let also = if also.is_empty() {
                    String::new()
                } else {
                    format!(" and find {}", also.join(", "))
                };
                println!(
                    "ok: {} can log in to {}:{} and open {}{also}",
                    cred.user, cred.host, cred.port, cred.mailbox
                );
                EXIT_OK
            }
            Err(e) => fail(e),
        },
        () = ctrl_c() => {
            eprintln!("interrupted");
            EXIT_INTERRUPTED
        }
    }
}
