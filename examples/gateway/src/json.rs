//! A mail as the JSON the gateway serves.

use std::time::UNIX_EPOCH;

use emap::Mail;
use serde_json::{Value, json};

/// The JSON object for one mail: uid, mailbox (the folder it came from,
/// as the server names it: `INBOX`, or a further folder such as `Junk`), from, to, recipients, subject, date
/// (Unix seconds of INTERNALDATE, else the Date header), text, html, links,
/// codes.
pub fn mail_json(mail: &Mail) -> Value {
    let addrs = |list: &[emap::Address]| list.iter().map(|a| a.email.clone()).collect::<Vec<_>>();
    json!({
        "uid": mail.uid(),
        "mailbox": mail.mailbox(),
        "message_id": mail.message_id(),
        "from": addrs(mail.from()),
        "to": addrs(mail.to()),
        "recipients": mail.recipients(),
        "subject": mail.subject(),
        "date": mail.received_at().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs()),
        "text": mail.text(),
        "html": mail.html(),
        "links": mail.links(),
        "codes": mail.codes(),
        "truncated": mail.is_truncated(),
    })
}
