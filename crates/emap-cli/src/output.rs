//! How a mail is printed: one JSON object per line (`--json`, for
//! scripts) or a short human-readable block.
//!
//! The JSON keys are a promise to scripts (the crate docs of the binary
//! list them); `tests/cli.rs` parses them.

use emap::{Address, Mail};
use serde_json::json;

use crate::one_line;
use crate::time::rfc3339;

/// When the mail was sent: the `Date` header, else the server's
/// INTERNALDATE.
fn mail_date(mail: &Mail) -> Option<String> {
    mail.date().or(mail.internal_date()).map(rfc3339)
}

fn address_json(a: &Address) -> serde_json::Value {
    json!({ "name": a.name, "email": a.email })
}

/// One mail as one line of JSON (with the newline).
pub(crate) fn json_line(mail: &Mail) -> String {
    let value = json!({
        "uid": mail.uid(),
        "mailbox": mail.mailbox(),
        "message_id": mail.message_id(),
        "from": mail.from().iter().map(address_json).collect::<Vec<_>>(),
        "to": mail.to().iter().map(address_json).collect::<Vec<_>>(),
        "recipients": mail.recipients(),
        "subject": mail.subject(),
        "date": mail_date(mail),
        "text": mail.text(),
        "html": mail.html(),
        "links": mail.links(),
        "codes": mail.codes(),
    });
    format!("{value}\n")
}

/// Links shown in a human-readable block; the rest are counted.
const HUMAN_LINKS: usize = 10;

/// One mail as a short human-readable block.
pub(crate) fn human_block(mail: &Mail, separate: bool) -> String {
    let join = |list: &[Address]| {
        list.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::new();
    if separate {
        out.push('\n');
    }
    let mut line = |label: &str, value: &str| {
        out.push_str(&format!("{label:<8} {}\n", one_line(value)));
    };
    line("uid", &mail.uid().to_string());
    // Said only when it is news: a watch with --also-watch.
    if !mail.mailbox().eq_ignore_ascii_case("INBOX") {
        line("mailbox", mail.mailbox());
    }
    line("from", &join(mail.from()));
    // On a catch-all the address is often only in Delivered-To.
    let to = if mail.to().is_empty() {
        mail.recipients().join(", ")
    } else {
        join(mail.to())
    };
    line("to", &to);
    line("subject", mail.subject().unwrap_or(""));
    line("date", mail_date(mail).as_deref().unwrap_or("-"));
    line(
        "code",
        mail.codes().first().map(String::as_str).unwrap_or("-"),
    );
    let links = mail.links();
    if links.is_empty() {
        line("links", "-");
    }
    for (i, link) in links.iter().take(HUMAN_LINKS).enumerate() {
        line(if i == 0 { "links" } else { "" }, link);
    }
    if links.len() > HUMAN_LINKS {
        line("", &format!("(and {} more)", links.len() - HUMAN_LINKS));
    }
    out
}
