//! Tests of the incremental parser: a table of valid responses (real Dovecot
//! transcripts and RFC examples) checked whole, prefix by prefix and byte by
//! byte; chunking; hostile inputs; poisoning; the date helper; and a small
//! deterministic mutation fuzzer that checks chunked feeding against whole
//! feeding.

use super::*;
use crate::proto::types::{
    Code, Condition, Data, ESearch, Fetch, FetchItem, ListEntry, Response, SpecialUse, Status,
    utf7_decode,
};

type Out = Vec<Result<Response, ProtoError>>;

/// Feeds `input` in chunks of `chunk` bytes, draining after each feed, until
/// a non-recoverable error (which must then repeat).
fn run(limits: Limits, input: &[u8], chunk: usize) -> Out {
    let mut p = Parser::new(limits);
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        p.feed(piece);
        loop {
            match p.next() {
                Ok(Some(r)) => out.push(Ok(r)),
                Ok(None) => break,
                Err(e) if e.is_recoverable() => out.push(Err(e)),
                Err(e) => {
                    assert_eq!(p.next(), Err(e.clone()), "poisoned parser must repeat");
                    assert_eq!(p.buffered(), 0, "poisoned parser must release its buffer");
                    out.push(Err(e));
                    return out;
                }
            }
        }
        assert!(
            p.buffered() <= limits.max_line + limits.max_literal,
            "buffered {} past the limits",
            p.buffered()
        );
    }
    out
}

fn whole(input: &[u8]) -> Out {
    run(Limits::default(), input, input.len())
}

fn one(input: &[u8]) -> Response {
    let out = whole(input);
    assert_eq!(
        out.len(),
        1,
        "expected one response from {:?}: {out:?}",
        String::from_utf8_lossy(input)
    );
    match out.into_iter().next() {
        Some(Ok(r)) => r,
        other => panic!("expected a response, got {other:?}"),
    }
}

fn syntax(input: &[u8]) -> &'static str {
    match whole(input).as_slice() {
        [Err(ProtoError::Syntax { reason, .. })] => reason,
        other => panic!(
            "expected one syntax error for {:?}, got {other:?}",
            String::from_utf8_lossy(input)
        ),
    }
}

fn s(v: &str) -> String {
    v.to_string()
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn status(condition: Condition, code: Option<Code>, text: &str) -> Response {
    Response::Untagged(Data::Status {
        condition,
        code,
        text: s(text),
    })
}

fn tagged(tag: &str, status: Status, code: Option<Code>, text: &str) -> Response {
    Response::Tagged(Tagged {
        tag: s(tag),
        status,
        code,
        text: s(text),
    })
}

fn fetch(seq: u32, items: Vec<FetchItem>) -> Response {
    Response::Untagged(Data::Fetch(Fetch { seq, items }))
}

fn body(section: &str, origin: Option<u32>, data: Option<&[u8]>) -> FetchItem {
    FetchItem::Body {
        section: s(section),
        origin,
        data: data.map(<[u8]>::to_vec),
    }
}

fn list(attributes: &[&str], delimiter: Option<char>, raw_name: &[u8], name: &str) -> Response {
    Response::Untagged(Data::List(ListEntry {
        attributes: strs(attributes),
        delimiter,
        raw_name: raw_name.to_vec(),
        name: s(name),
    }))
}

fn other(k: &str) -> Response {
    Response::Untagged(Data::Other(s(k)))
}

const DOVECOT_FLAGS: &[&str] = &["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"];

fn table() -> Vec<(&'static [u8], Response)> {
    let dovecot_caps = strs(&[
        "IMAP4REV1",
        "SASL-IR",
        "LOGIN-REFERRALS",
        "ID",
        "ENABLE",
        "IDLE",
        "LITERAL+",
        "STARTTLS",
        "AUTH=PLAIN",
    ]);
    let mut perm = strs(DOVECOT_FLAGS);
    perm.push(s("\\*"));
    vec![
        // Dovecot 2.3 transcript.
        (
            b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN] Dovecot (Debian) ready.\r\n",
            status(Condition::Ok, Some(Code::Capability(dovecot_caps.clone())), "Dovecot (Debian) ready."),
        ),
        (
            b"* CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN\r\n",
            Response::Untagged(Data::Capability(dovecot_caps)),
        ),
        (
            b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n",
            Response::Untagged(Data::Flags(strs(DOVECOT_FLAGS))),
        ),
        (
            b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted.\r\n",
            status(Condition::Ok, Some(Code::PermanentFlags(perm)), "Flags permitted."),
        ),
        (b"* 0 EXISTS\r\n", Response::Untagged(Data::Exists(0))),
        (b"* 0 RECENT\r\n", Response::Untagged(Data::Recent(0))),
        (
            b"* OK [UIDVALIDITY 1764116000] UIDs valid\r\n",
            status(Condition::Ok, Some(Code::UidValidity(1_764_116_000)), "UIDs valid"),
        ),
        (
            b"* OK [UIDNEXT 1] Predicted next UID\r\n",
            status(Condition::Ok, Some(Code::UidNext(1)), "Predicted next UID"),
        ),
        (
            b"* OK [HIGHESTMODSEQ 18446744073709551615] Highest\r\n",
            status(Condition::Ok, Some(Code::HighestModSeq(u64::MAX)), "Highest"),
        ),
        (
            b"a3 OK [READ-WRITE] Select completed (0.001 + 0.000 secs).\r\n",
            tagged("a3", Status::Ok, Some(Code::ReadWrite), "Select completed (0.001 + 0.000 secs)."),
        ),
        (b"* OK Still here\r\n", status(Condition::Ok, None, "Still here")),
        (b"+ idling\r\n", Response::Continuation(b"idling".to_vec())),
        (b"+\r\n", Response::Continuation(Vec::new())),
        (b"+ \r\n", Response::Continuation(Vec::new())),
        (b"+ dGVzdA==\r\n", Response::Continuation(b"dGVzdA==".to_vec())),
        // A continuation never announces a literal.
        (b"+ Ready {5}\r\n", Response::Continuation(b"Ready {5}".to_vec())),
        (
            b"* 1 FETCH (UID 7 BODY[] {123}\r\nReturn-Path: <a@example.org>\r\nFrom: a@example.org\r\nTo: b@example.org\r\nSubject: hello\r\n\r\nHello, this is the body text.\r\n\r\n..)\r\n",
            fetch(
                1,
                vec![
                    FetchItem::Uid(7),
                    body(
                        "",
                        None,
                        Some(b"Return-Path: <a@example.org>\r\nFrom: a@example.org\r\nTo: b@example.org\r\nSubject: hello\r\n\r\nHello, this is the body text.\r\n\r\n.."),
                    ),
                ],
            ),
        ),
        (b"a4 OK Fetch completed (0.001 + 0.000 secs).\r\n", tagged("a4", Status::Ok, None, "Fetch completed (0.001 + 0.000 secs).")),
        (b"* BYE Logging out\r\n", status(Condition::Bye, None, "Logging out")),
        (b"a9 OK Logout completed (0.001 + 0.000 secs).\r\n", tagged("a9", Status::Ok, None, "Logout completed (0.001 + 0.000 secs).")),
        (
            b"a2 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
            tagged("a2", Status::No, Some(Code::AuthenticationFailed), "Authentication failed."),
        ),
        (
            b"* BYE [UNAVAILABLE] Maximum number of connections from user+IP exceeded (mail_max_userip_connections=10)\r\n",
            status(
                Condition::Bye,
                Some(Code::Unavailable),
                "Maximum number of connections from user+IP exceeded (mail_max_userip_connections=10)",
            ),
        ),
        // RFC 3501 examples.
        (b"* PREAUTH IMAP4rev1 server logged in as Smith\r\n", status(Condition::Preauth, None, "IMAP4rev1 server logged in as Smith")),
        (b"* 23 EXISTS\r\n", Response::Untagged(Data::Exists(23))),
        (b"* 5 RECENT\r\n", Response::Untagged(Data::Recent(5))),
        (b"* 3 EXPUNGE\r\n", Response::Untagged(Data::Expunge(3))),
        (b"* OK [UNSEEN 17] Message 17 is the first unseen message\r\n", status(Condition::Ok, Some(Code::Other { name: s("UNSEEN"), arg: Some(s("17")) }), "Message 17 is the first unseen message")),
        (b"* OK [ALERT] System shutdown in 10 minutes\r\n", status(Condition::Ok, Some(Code::Alert), "System shutdown in 10 minutes")),
        (b"A142 OK [READ-ONLY] EXAMINE completed\r\n", tagged("A142", Status::Ok, Some(Code::ReadOnly), "EXAMINE completed")),
        (b"A003 NO [TRYCREATE] No such mailbox\r\n", tagged("A003", Status::No, Some(Code::Other { name: s("TRYCREATE"), arg: None }), "No such mailbox")),
        (b"* NO Disk is 98% full, please delete unnecessary data\r\n", status(Condition::No, None, "Disk is 98% full, please delete unnecessary data")),
        (b"* BAD Command line too long\r\n", status(Condition::Bad, None, "Command line too long")),
        (b"A001 BAD Unknown command\r\n", tagged("A001", Status::Bad, None, "Unknown command")),
        (b"* SEARCH 2 84 882\r\n", Response::Untagged(Data::Search(vec![2, 84, 882]))),
        (b"* SEARCH\r\n", Response::Untagged(Data::Search(vec![]))),
        (b"* SEARCH \r\n", Response::Untagged(Data::Search(vec![]))),
        (
            b"* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)\r\n",
            Response::Untagged(Data::MailboxStatus { mailbox: s("blurdybloop"), items: vec![(s("MESSAGES"), 231), (s("UIDNEXT"), 44292)] }),
        ),
        (
            b"* 12 FETCH (FLAGS (\\Seen) INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" RFC822.SIZE 4286 ENVELOPE (\"Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\" \"IMAP4rev1 WG mtg summary and minutes\" ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) ((NIL NIL \"imap\" \"cac.washington.edu\")) ((NIL NIL \"minutes\" \"CNRI.Reston.VA.US\")(\"John Klensin\" NIL \"KLENSIN\" \"MIT.EDU\")) NIL NIL \"<B27397-0100000@cac.washington.edu>\") BODY (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 3028 92))\r\n",
            fetch(
                12,
                vec![
                    FetchItem::Flags(strs(&["\\Seen"])),
                    FetchItem::InternalDate(s("17-Jul-1996 02:44:25 -0700")),
                    FetchItem::Rfc822Size(4286),
                    FetchItem::Other(s("ENVELOPE")),
                    FetchItem::Other(s("BODY")),
                ],
            ),
        ),
        (b"* 23 FETCH (FLAGS (\\Seen) UID 4827313)\r\n", fetch(23, vec![FetchItem::Flags(strs(&["\\Seen"])), FetchItem::Uid(4_827_313)])),
        (b"* 14 FETCH (FLAGS (\\Seen \\Deleted))\r\n", fetch(14, vec![FetchItem::Flags(strs(&["\\Seen", "\\Deleted"]))])),
        (b"* 2 FETCH (FLAGS ())\r\n", fetch(2, vec![FetchItem::Flags(vec![])])),
        (
            b"* 2 FETCH (BODY[HEADER.FIELDS (TO FROM)] {19}\r\nTo: b@example.org\r\n RFC822.SIZE 99)\r\n",
            fetch(2, vec![body("HEADER.FIELDS (TO FROM)", None, Some(b"To: b@example.org\r\n")), FetchItem::Rfc822Size(99)]),
        ),
        (b"* 3 FETCH (BODY[1.text]<0> \"abc\")\r\n", fetch(3, vec![body("1.TEXT", Some(0), Some(b"abc"))])),
        (b"* 3 FETCH (BODY[TEXT] NIL)\r\n", fetch(3, vec![body("TEXT", None, None)])),
        (b"* 3 FETCH (RFC822 {3}\r\nabc)\r\n", fetch(3, vec![body("", None, Some(b"abc"))])),
        (b"* 3 FETCH (RFC822.HEADER \"h\" RFC822.TEXT \"t\")\r\n", fetch(3, vec![body("HEADER", None, Some(b"h")), body("TEXT", None, Some(b"t"))])),
        (b"* 3 FETCH (BINARY[1] ~{4}\r\n\x00\x01\r\n)\r\n", fetch(3, vec![body("1", None, Some(b"\x00\x01\r\n"))])),
        (b"* 3 FETCH (BINARY[] {3+}\r\nxyz BINARY.SIZE[1] 42)\r\n", fetch(3, vec![body("", None, Some(b"xyz")), FetchItem::Other(s("BINARY.SIZE"))])),
        (b"* 3 FETCH (BODY[] \"a \\\"q\\\" \\\\ b\")\r\n", fetch(3, vec![body("", None, Some(b"a \"q\" \\ b"))])),
        (b"* 3 FETCH (BODY[] {0}\r\n)\r\n", fetch(3, vec![body("", None, Some(b""))])),
        // RFC 7162 / Gmail / RFC 8474 extensions.
        (b"* 4 FETCH (UID 9 MODSEQ (12121231000))\r\n", fetch(4, vec![FetchItem::Uid(9), FetchItem::ModSeq(12_121_231_000)])),
        (
            b"* 4 FETCH (X-GM-LABELS (\\Inbox \"Foo Bar\" {3}\r\nbaz) X-GM-MSGID 1278455344230334865 EMAILID (M6d99ac3275bb4e) UID 5)\r\n",
            fetch(4, vec![FetchItem::Other(s("X-GM-LABELS")), FetchItem::Other(s("X-GM-MSGID")), FetchItem::Other(s("EMAILID")), FetchItem::Uid(5)]),
        ),
        (
            b"* 5 FETCH (BODYSTRUCTURE ((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 10 1 NIL NIL NIL NIL)(\"text\" \"html\" NIL NIL NIL \"7bit\" 20 1 NIL NIL NIL NIL) \"alternative\" (\"boundary\" \"b\") NIL NIL NIL) UID 6)\r\n",
            fetch(5, vec![FetchItem::Other(s("BODYSTRUCTURE")), FetchItem::Uid(6)]),
        ),
        (b"* OK [CLOSED] Previous mailbox closed.\r\n", status(Condition::Ok, Some(Code::Closed), "Previous mailbox closed.")),
        (b"* SEARCH 2 5 6 7 11 (MODSEQ 917162500)\r\n", Response::Untagged(Data::Search(vec![2, 5, 6, 7, 11]))),
        (b"* VANISHED (EARLIER) 41,43:116,118,120:211,214:540\r\n", other("VANISHED")),
        (b"* ENABLED CONDSTORE QRESYNC\r\n", other("ENABLED")),
        // RFC 4731 / RFC 9051 ESEARCH.
        (
            b"* ESEARCH (TAG \"A285\") UID MIN 7 MAX 3800\r\n",
            Response::Untagged(Data::ESearch(ESearch { tag: Some(s("A285")), uid: true, min: Some(7), max: Some(3800), ..ESearch::default() })),
        ),
        (
            b"* ESEARCH (TAG \"A284\") MIN 4 COUNT 3 ALL 4:5,10,20:18\r\n",
            Response::Untagged(Data::ESearch(ESearch { tag: Some(s("A284")), min: Some(4), count: Some(3), all: vec![(4, 5), (10, 10), (18, 20)], ..ESearch::default() })),
        ),
        (b"* ESEARCH (TAG \"A283\")\r\n", Response::Untagged(Data::ESearch(ESearch { tag: Some(s("A283")), ..ESearch::default() }))),
        (b"* ESEARCH\r\n", Response::Untagged(Data::ESearch(ESearch::default()))),
        (
            b"* ESEARCH (TAG \"a5\") UID COUNT 0 MODSEQ 5 PARTIAL (1:10 NIL) ALL 1\r\n",
            Response::Untagged(Data::ESearch(ESearch { tag: Some(s("a5")), uid: true, count: Some(0), all: vec![(1, 1)], ..ESearch::default() })),
        ),
        // RFC 9051 examples.
        (b"* LIST (\\Noselect) \"/\" foo\r\n", list(&["\\Noselect"], Some('/'), b"foo", "foo")),
        (b"* LIST () \"/\" {3}\r\nfoo\r\n", list(&[], Some('/'), b"foo", "foo")),
        // RFC 6154 special use; Gmail's folders (quoted, with brackets).
        (
            b"* LIST (\\HasNoChildren \\Junk) \"/\" \"[Gmail]/Spam\"\r\n",
            list(&["\\HasNoChildren", "\\Junk"], Some('/'), b"[Gmail]/Spam", "[Gmail]/Spam"),
        ),
        (
            b"* LIST (\\All \\HasNoChildren) \"/\" [Gmail]/All\r\n",
            list(&["\\All", "\\HasNoChildren"], Some('/'), b"[Gmail]/All", "[Gmail]/All"),
        ),
        // RFC 3501's modified UTF-7 example, as an atom and with a NIL
        // delimiter; Outlook's "Junk Email" quoted; inbox in lower case.
        (
            b"* LIST (\\Junk) NIL ~peter/mail/&U,BTFw-/&ZeVnLIqe-\r\n",
            list(&["\\Junk"], None, b"~peter/mail/&U,BTFw-/&ZeVnLIqe-", "~peter/mail/\u{53f0}\u{5317}/\u{65e5}\u{672c}\u{8a9e}"),
        ),
        (b"* LIST (\\Junk) \".\" \"Junk Email\"\r\n", list(&["\\Junk"], Some('.'), b"Junk Email", "Junk Email")),
        (b"* list (\\HasChildren) \"\\\\\" inbox\r\n", list(&["\\HasChildren"], Some('\\'), b"inbox", "INBOX")),
        // A server with UTF8=ACCEPT sends UTF-8 (here in a literal).
        (b"* LIST (\\Junk) \"/\" {14}\r\nCourrier ind\xc3\xa9\r\n", list(&["\\Junk"], Some('/'), "Courrier ind\u{e9}".as_bytes(), "Courrier ind\u{e9}")),
        // RFC 5258 extended data is skipped; wildcards leniently in an atom.
        (
            b"* LIST (\\Subscribed) \"/\" \"Fruit/Peach\" (\"CHILDINFO\" (\"SUBSCRIBED\")) (\"OLDNAME\" (\"x\"))\r\n",
            list(&["\\Subscribed"], Some('/'), b"Fruit/Peach", "Fruit/Peach"),
        ),
        (b"* LIST () \"/\" a%b*\r\n", list(&[], Some('/'), b"a%b*", "a%b*")),
        (b"* LIST (\\Noselect \\NonExistent) \"/\" \"&-x\"\r\n", list(&["\\Noselect", "\\NonExistent"], Some('/'), b"&-x", "&x")),
        (b"* LSUB () \"/\" foo\r\n", other("LSUB")),
        (b"* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n", other("NAMESPACE")),
        (b"* 3 XYZ\r\n", other("XYZ")),
        (b"* -1 EXISTS\r\n", other("-1")),
        (b"* 4294967296 XYZ whatever\r\n", other("XYZ")),
        (b"* ID (\"name\" \"Dovecot\")\r\n", other("ID")),
        (
            b"* STATUS \"Sent Items\" (UIDNEXT 5 MESSAGES 2 HIGHESTMODSEQ 4294967300)\r\n",
            Response::Untagged(Data::MailboxStatus { mailbox: s("Sent Items"), items: vec![(s("UIDNEXT"), 5), (s("MESSAGES"), 2), (s("HIGHESTMODSEQ"), 4_294_967_300)] }),
        ),
        (
            b"* STATUS {5}\r\nIN]BX (MESSAGES 1)\r\n",
            Response::Untagged(Data::MailboxStatus { mailbox: s("IN]BX"), items: vec![(s("MESSAGES"), 1)] }),
        ),
        (b"* STATUS INBOX ()\r\n", Response::Untagged(Data::MailboxStatus { mailbox: s("INBOX"), items: vec![] })),
        (b"* OK [CAPABILITY IMAP4rev2 imap4rev1] hi\r\n", status(Condition::Ok, Some(Code::Capability(strs(&["IMAP4REV2", "IMAP4REV1"]))), "hi")),
        (b"A1 NO [LIMIT] Too many\r\n", tagged("A1", Status::No, Some(Code::Limit), "Too many")),
        (b"A1 NO [AUTHORIZATIONFAILED] nope\r\n", tagged("A1", Status::No, Some(Code::AuthorizationFailed), "nope")),
        (b"A1 NO [BADCHARSET (\"UTF-8\" \"x]y\")] bad\r\n", tagged("A1", Status::No, Some(Code::Other { name: s("BADCHARSET"), arg: Some(s("(\"UTF-8\" \"x]y\")")) }), "bad")),
        // Leniency.
        (b"a1 OK\r\n", tagged("a1", Status::Ok, None, "")),
        (b"a1 ok done\n", tagged("a1", Status::Ok, None, "done")),
        (b"a1 OK [READ-WRITE]\r\n", tagged("a1", Status::Ok, Some(Code::ReadWrite), "")),
        (b"* ok [uidnext abc] x\r\n", status(Condition::Ok, Some(Code::Other { name: s("UIDNEXT"), arg: Some(s("abc")) }), "x")),
        (b"* OK [UIDNEXT 4294967296] x\r\n", status(Condition::Ok, Some(Code::Other { name: s("UIDNEXT"), arg: Some(s("4294967296")) }), "x")),
        (b"* OK [PERMANENTFLAGS (\\Seen] x\r\n", status(Condition::Ok, Some(Code::Other { name: s("PERMANENTFLAGS"), arg: Some(s("(\\Seen")) }), "x")),
        (b"* OK [unclosed code\r\n", status(Condition::Ok, None, "[unclosed code")),
        (b"* OK\r\n", status(Condition::Ok, None, "")),
        (b"* 1 fetch (uid 1)\n", fetch(1, vec![FetchItem::Uid(1)])),
        (b"* OK caf\xc3\xa9 \xff\x00 end\r\n", status(Condition::Ok, None, "caf\u{e9} \u{fffd}\0 end")),
        (b"\xff\xfe OK x\r\n", tagged("\u{fffd}\u{fffd}", Status::Ok, None, "x")),
    ]
}

#[test]
fn table_whole() {
    for (input, expected) in table() {
        assert_eq!(
            one(input),
            expected,
            "input {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn table_every_prefix_needs_more() {
    for (input, _) in table() {
        let mut p = Parser::new(Limits::default());
        for (i, &b) in input.iter().enumerate() {
            assert_eq!(
                p.next(),
                Ok(None),
                "prefix {i} of {:?}",
                String::from_utf8_lossy(input)
            );
            p.feed(&[b]);
        }
        assert!(p.next().is_ok_and(|r| r.is_some()));
        assert_eq!(p.next(), Ok(None));
        assert_eq!(p.buffered(), 0);
    }
}

#[test]
fn table_bytewise_equals_whole() {
    for (input, _) in table() {
        let w = whole(input);
        for chunk in [1, 2, 3, 7, 16] {
            assert_eq!(run(Limits::default(), input, chunk), w, "chunk {chunk}");
        }
    }
}

#[test]
fn whole_table_in_one_chunk_and_bytewise() {
    let table = table();
    let all: Vec<u8> = table.iter().flat_map(|(i, _)| i.iter().copied()).collect();
    let expected: Out = table.into_iter().map(|(_, r)| Ok(r)).collect();
    assert_eq!(whole(&all), expected);
    assert_eq!(run(Limits::default(), &all, 1), expected);
    assert_eq!(run(Limits::default(), &all, 13), expected);
}

#[test]
fn several_responses_in_one_chunk() {
    let out = whole(b"* 1 EXISTS\r\n* 1 RECENT\r\n+ idling\r\na1 OK done\r\n* 2 EXISTS");
    assert_eq!(
        out,
        vec![
            Ok(Response::Untagged(Data::Exists(1))),
            Ok(Response::Untagged(Data::Recent(1))),
            Ok(Response::Continuation(b"idling".to_vec())),
            Ok(tagged("a1", Status::Ok, None, "done")),
        ]
    );
}

#[test]
fn split_inside_literal() {
    let mut p = Parser::new(Limits::default());
    p.feed(b"* 1 FETCH (BODY[] {10}\r\n01");
    assert_eq!(p.next(), Ok(None));
    p.feed(b"234");
    assert_eq!(p.next(), Ok(None));
    p.feed(b"56789");
    assert_eq!(p.next(), Ok(None));
    p.feed(b" UID 3)\r");
    assert_eq!(p.next(), Ok(None));
    p.feed(b"\n* 5 EXISTS\r\n");
    assert_eq!(
        p.next(),
        Ok(Some(fetch(
            1,
            vec![body("", None, Some(b"0123456789")), FetchItem::Uid(3)]
        )))
    );
    assert_eq!(p.next(), Ok(Some(Response::Untagged(Data::Exists(5)))));
    assert_eq!(p.next(), Ok(None));
}

#[test]
fn literal_contents_are_opaque() {
    // CRLF, `{5}` and `)` inside a literal do not confuse framing.
    let r = one(b"* 1 FETCH (BODY[] {12}\r\nx {5}\r\n)\r\n\r\n)\r\n");
    assert_eq!(
        r,
        fetch(1, vec![body("", None, Some(b"x {5}\r\n)\r\n\r\n"))])
    );
}

#[test]
fn two_literals_in_one_response() {
    let r = one(b"* 1 FETCH (BODY[HEADER] {2}\r\nab BODY[TEXT] {3}\r\ncde)\r\n");
    assert_eq!(
        r,
        fetch(
            1,
            vec![
                body("HEADER", None, Some(b"ab")),
                body("TEXT", None, Some(b"cde"))
            ]
        )
    );
}

#[test]
fn big_literal_in_16k_chunks_is_linear() {
    let size = 32 * 1024 * 1024;
    let mut p = Parser::new(Limits::default());
    let started = std::time::Instant::now();
    p.feed(format!("* 7 FETCH (UID 9 BODY[] {{{size}}}\r\n").as_bytes());
    let chunk = vec![b'x'; 16 * 1024];
    for _ in 0..size / chunk.len() {
        p.feed(&chunk);
        assert_eq!(p.next(), Ok(None));
    }
    p.feed(b")\r\n");
    let Ok(Some(Response::Untagged(Data::Fetch(f)))) = p.next() else {
        panic!("no fetch")
    };
    assert_eq!(f.uid(), Some(9));
    match f.items.get(1) {
        Some(FetchItem::Body { data: Some(d), .. }) => {
            assert_eq!(d.len(), size);
            assert!(d.iter().all(|&b| b == b'x'));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(p.buffered(), 0);
    // Framing stepped over every byte exactly once.
    assert_eq!(p.scanned, size + 36 + 3);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn long_line_fed_bytewise_is_scanned_once() {
    let mut line = b"* OK ".to_vec();
    line.extend(std::iter::repeat_n(b'x', 60 * 1024));
    line.extend_from_slice(b" {3}\r\nabc\r\n");
    let mut p = Parser::new(Limits::default());
    for (i, &b) in line.iter().enumerate() {
        p.feed(&[b]);
        let r = p.next();
        assert!(
            r.as_ref().is_ok_and(Option::is_none) || i + 1 == line.len(),
            "{r:?}"
        );
        // Asking again without new bytes does no work.
        let before = p.scanned;
        assert_eq!(p.next(), Ok(None));
        assert_eq!(p.scanned, before);
    }
    assert_eq!(p.scanned, line.len());
}

#[test]
fn oversized_literal_announcements() {
    let limits = Limits {
        max_line: 1024,
        max_literal: 1000,
    };
    for (input, size) in [
        (&b"* 1 FETCH (BODY[] {1001}\r\n"[..], 1001),
        (b"* 1 FETCH (BODY[] {4294967296}\r\n", 4_294_967_296),
        (b"* 1 FETCH (BODY[] ~{18446744073709551615}\r\n", u64::MAX),
        (b"* 1 FETCH (BODY[] {99999999999999999999}\r\n", u64::MAX),
        (
            b"* 1 FETCH (BODY[] {123456789012345678901234567890+}\r\n",
            u64::MAX,
        ),
    ] {
        for chunk in [1, 5, input.len()] {
            assert_eq!(
                run(limits, input, chunk),
                vec![Err(ProtoError::LiteralTooLarge { size, limit: 1000 })],
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }
    // At the limit is fine.
    let mut ok = b"* 1 FETCH (BODY[] {1000}\r\n".to_vec();
    ok.extend_from_slice(&[b'a'; 1000]);
    ok.extend_from_slice(b")\r\n");
    assert!(matches!(run(limits, &ok, 100).as_slice(), [Ok(_)]));
}

#[test]
fn literals_summed_past_the_limit() {
    let limits = Limits {
        max_line: 1024,
        max_literal: 10,
    };
    let input = b"* 1 FETCH (BODY[1] {6}\r\nabcdef BODY[2] {5}\r\nghijk)\r\n";
    assert_eq!(
        run(limits, input, 1),
        vec![Err(ProtoError::ResponseTooLarge { limit: 10 })]
    );
    assert_eq!(
        run(limits, input, input.len()),
        vec![Err(ProtoError::ResponseTooLarge { limit: 10 })]
    );
    // The total is per response: two responses of 6 each are fine.
    let two = b"* 1 FETCH (BODY[] {6}\r\nabcdef)\r\n* 2 FETCH (BODY[] {6}\r\nabcdef)\r\n";
    assert_eq!(run(limits, two, 1).len(), 2);
    assert!(run(limits, two, 1).iter().all(Result::is_ok));
}

#[test]
fn endless_line_fails_at_the_limit_and_buffer_stays_bounded() {
    let limits = Limits {
        max_line: 64 * 1024,
        max_literal: 1024,
    };
    let chunk = [b'a'; 4096];
    let mut p = Parser::new(limits);
    p.feed(b"* OK ");
    let mut failed_after = None;
    for i in 0..256 {
        // 1 MiB in all
        p.feed(&chunk);
        match p.next() {
            Ok(None) => assert!(p.buffered() <= limits.max_line + chunk.len()),
            Err(e) => {
                assert_eq!(e, ProtoError::LineTooLong { limit: 64 * 1024 });
                failed_after = Some(i);
                break;
            }
            Ok(Some(r)) => panic!("unexpected {r:?}"),
        }
    }
    assert_eq!(
        failed_after,
        Some(15),
        "must fail as soon as the limit is passed"
    );
    // Poisoned: the same error forever, no more buffering.
    for _ in 0..3 {
        p.feed(b"\r\n* 1 EXISTS\r\n");
        assert_eq!(p.next(), Err(ProtoError::LineTooLong { limit: 64 * 1024 }));
        assert_eq!(p.buffered(), 0);
    }
    assert!(p.poisoned().is_some());
}

#[test]
fn line_limit_counts_all_lines_of_a_response() {
    let limits = Limits {
        max_line: 40,
        max_literal: 100,
    };
    // 24 + 17 = 41 non-literal bytes > 40 (the 10 literal bytes do not count).
    let input = b"* 1 FETCH (BODY[] {10}\r\n0123456789 UID 123456789)\r\n";
    assert_eq!(
        run(limits, input, 1),
        vec![Err(ProtoError::LineTooLong { limit: 40 })]
    );
    assert_eq!(
        run(limits, input, input.len()),
        vec![Err(ProtoError::LineTooLong { limit: 40 })]
    );
    // Exactly at the limit is fine.
    let input = b"* OK 345678901234567890123456789012345\r\n";
    assert_eq!(input.len(), 40);
    assert!(matches!(run(limits, input, 1).as_slice(), [Ok(_)]));
    let input = b"* OK 3456789012345678901234567890123456\r\n";
    assert_eq!(
        run(limits, input, 1),
        vec![Err(ProtoError::LineTooLong { limit: 40 })]
    );
}

#[test]
fn deep_nesting() {
    // A million `(` hits the line limit first.
    let mut input = b"* 1 FETCH (X ".to_vec();
    input.extend(std::iter::repeat_n(b'(', 1_000_000));
    input.extend_from_slice(b"\r\n");
    assert_eq!(
        whole(&input),
        vec![Err(ProtoError::LineTooLong { limit: 64 * 1024 })]
    );
    // With a larger line limit the depth limit answers, without recursion.
    let big = Limits {
        max_line: 4 * 1024 * 1024,
        max_literal: 1024,
    };
    assert_eq!(
        run(big, &input, input.len()),
        vec![Err(ProtoError::TooDeep { limit: MAX_DEPTH })]
    );
    // TooDeep poisons like the other non-recoverable errors.
    let mut p = Parser::new(big);
    p.feed(&input);
    p.feed(b"* 1 EXISTS\r\n");
    assert_eq!(p.next(), Err(ProtoError::TooDeep { limit: MAX_DEPTH }));
    assert_eq!(p.next(), Err(ProtoError::TooDeep { limit: MAX_DEPTH }));
    // Exactly MAX_DEPTH is fine, one more is not.
    let nested = |d: usize| {
        let mut v = b"* 1 FETCH (X ".to_vec();
        v.extend(std::iter::repeat_n(b'(', d));
        v.extend(std::iter::repeat_n(b')', d));
        v.extend_from_slice(b")\r\n");
        v
    };
    assert_eq!(
        one(&nested(MAX_DEPTH)),
        fetch(1, vec![FetchItem::Other(s("X"))])
    );
    assert_eq!(
        whole(&nested(MAX_DEPTH + 1)),
        vec![Err(ProtoError::TooDeep { limit: MAX_DEPTH })]
    );
    // Untyped responses are not examined, so never too deep.
    let mut lsub = b"* LSUB ".to_vec();
    lsub.extend(std::iter::repeat_n(b'(', 1000));
    lsub.extend_from_slice(b"\r\n");
    assert_eq!(one(&lsub), other("LSUB"));
    // LIST is typed: its attributes are a flat list, so nesting is a
    // (recoverable) syntax error, not a descent.
    let mut list = b"* LIST ".to_vec();
    list.extend(std::iter::repeat_n(b'(', 1000));
    list.extend_from_slice(b"\r\n");
    assert_eq!(syntax(&list), "expected a flag");
}

#[test]
fn short_literal_waits() {
    let mut p = Parser::new(Limits::default());
    p.feed(b"* 1 FETCH (BODY[] {100}\r\nonly a few bytes)\r\n* 2 EXISTS\r\n");
    for _ in 0..3 {
        assert_eq!(p.next(), Ok(None));
    }
}

#[test]
fn syntax_errors_consume_the_frame_and_resync() {
    let input = b"* 4294967296 EXISTS\r\n* 1 EXISTS\r\n";
    let out = whole(input);
    assert!(matches!(out.first(), Some(Err(ProtoError::Syntax { .. }))));
    assert_eq!(out.get(1), Some(&Ok(Response::Untagged(Data::Exists(1)))));
    assert_eq!(out.len(), 2);
    let Some(Err(ProtoError::Syntax { excerpt, .. })) = out.first() else {
        unreachable!()
    };
    assert_eq!(excerpt.as_str(), "* 4294967296 EXISTS\\r\\n");
}

#[test]
fn malformed_responses_are_syntax_errors() {
    for input in [
        &b"\r\n"[..],
        b"*\r\n",
        b"* \r\n",
        b"* 3\r\n",
        b"* 3 \r\n",
        b" a1 OK\r\n",
        b"a1\r\n",
        b"a1 MAYBE\r\n",
        b"a1 OKAY\r\n",
        b"a1 BYE x\r\n",
        b"* 4294967296 EXISTS\r\n",
        b"* 99999999999999999999999 FETCH (UID 1)\r\n",
        b"* 1 FETCH (UID 4294967296)\r\n",
        b"* 1 FETCH (RFC822.SIZE -1)\r\n",
        b"* 1 FETCH (MODSEQ (18446744073709551616))\r\n",
        b"* 1 FETCH (UID)\r\n",
        b"* 1 FETCH (UID 1\r\n",
        b"* 1 FETCH UID 1\r\n",
        b"* 1 FETCH (UID 1) x\r\n",
        b"* 1 FETCH (UID 1UID 2)\r\n",
        b"* 1 FETCH (BODY[ \"x\")\r\n",
        b"* 1 FETCH (BODY[]<x> \"x\")\r\n",
        b"* 1 FETCH (BODY[] \"unterminated)\r\n",
        b"* 1 FETCH (BODY[] \"nul\x00\")\r\n",
        b"* 1 FETCH (FLAGS (\\Seen\x00))\r\n",
        b"* 1 FETCH (X \x00)\r\n",
        b"* 1 FETCH (X (a b)\r\n",
        b"* 1 FETCH (INTERNALDATE NIL)\r\n",
        b"* 1 FETCH (BODY[] {5}\r\nabcde\r\n",
        b"* 1 FETCH (BODY[] \"a {3}\r\nabc\")\r\n",
        b"* 1 EXISTS extra\r\n",
        b"* SEARCH 1 x\r\n",
        b"* SEARCH 4294967296\r\n",
        b"* FLAGS \\Seen\r\n",
        b"* FLAGS (\\Seen\r\n",
        b"* ESEARCH ALL 1:*\r\n",
        b"* ESEARCH ALL ,\r\n",
        b"* ESEARCH MIN\r\n",
        b"* ESEARCH (TAG \"x\"\r\n",
        b"* STATUS INBOX\r\n",
        b"* STATUS INBOX (MESSAGES)\r\n",
        b"* STATUS (MESSAGES 1)\r\n",
    ] {
        let reason = syntax(input);
        assert!(!reason.is_empty());
        // Chunked feeding agrees.
        assert_eq!(run(Limits::default(), input, 1), whole(input));
    }
}

#[test]
fn non_utf8_everywhere_never_panics() {
    let inputs: [&[u8]; 8] = [
        b"\xff \xfe\xfd\r\n",
        b"* \xff\r\n",
        b"* 1 FETCH (\xff \xfe)\r\n",
        b"* 1 FETCH (BODY[\xff] \"\xfe\")\r\n",
        b"* OK [\xff \xfe] \xfd\r\n",
        b"* CAPABILITY \xff\xfe\r\n",
        b"* STATUS \"\xc3(\" (MESSAGES 1)\r\n",
        b"+ \xff\x00\x80\r\n",
    ];
    for input in inputs {
        let w = whole(input);
        assert_eq!(w.len(), 1);
        assert_eq!(run(Limits::default(), input, 1), w);
    }
    assert_eq!(
        one(b"+ \xff\x00\x80\r\n"),
        Response::Continuation(b"\xff\x00\x80".to_vec())
    );
    assert_eq!(
        one(b"* 1 FETCH (BODY[\xff] \"\xfe\")\r\n"),
        fetch(1, vec![body("\u{fffd}", None, Some(b"\xfe"))])
    );
    assert_eq!(one(b"* \xff\r\n"), other("\u{fffd}"));
    assert_eq!(
        one(b"* STATUS \"\xc3(\" (MESSAGES 1)\r\n"),
        Response::Untagged(Data::MailboxStatus {
            mailbox: s("\u{fffd}("),
            items: vec![(s("MESSAGES"), 1)]
        })
    );
}

#[test]
fn nul_bytes() {
    // NUL in text is kept; NUL where an atom or quoted string is expected
    // is a syntax error; NUL inside a literal is data.
    assert_eq!(one(b"* OK a\x00b\r\n"), status(Condition::Ok, None, "a\0b"));
    assert!(matches!(
        whole(b"\x00\r\n").as_slice(),
        [Err(ProtoError::Syntax { .. })]
    ));
    assert!(matches!(
        whole(b"* \x00 EXISTS\r\n").as_slice(),
        [Err(ProtoError::Syntax { .. })]
    ));
    assert_eq!(
        one(b"* 1 FETCH (BODY[] {1}\r\n\x00)\r\n"),
        fetch(1, vec![body("", None, Some(b"\0"))])
    );
}

#[test]
fn bare_lf_and_stray_cr() {
    assert_eq!(one(b"* 1 EXISTS\n"), Response::Untagged(Data::Exists(1)));
    assert_eq!(
        one(b"* 1 FETCH (BODY[] {2}\nab)\n"),
        fetch(1, vec![body("", None, Some(b"ab"))])
    );
    assert_eq!(one(b"* OK a\rb\r\n"), status(Condition::Ok, None, "a\rb"));
    assert!(matches!(
        whole(b"* 1 EXISTS\r\r\n").as_slice(),
        [Err(ProtoError::Syntax { .. })]
    ));
}

#[test]
fn feeding_nothing_is_cheap_and_idempotent() {
    let mut p = Parser::new(Limits::default());
    p.feed(b"* 1 EXI");
    for _ in 0..10 {
        p.feed(b"");
        assert_eq!(p.next(), Ok(None));
    }
    assert_eq!(p.buffered(), 7);
    p.feed(b"STS\r\n");
    assert_eq!(p.next(), Ok(Some(Response::Untagged(Data::Exists(1)))));
    assert_eq!(p.buffered(), 0);
}

#[test]
fn compaction_keeps_positions() {
    // Many small responses fed in large chunks cross the compaction
    // threshold several times in the middle of a response.
    let mut input = Vec::new();
    for i in 0..5000u32 {
        input
            .extend_from_slice(format!("* {i} FETCH (UID {i} BODY[] {{3}}\r\nabc)\r\n").as_bytes());
    }
    for chunk in [1000, 4097, 65536] {
        let out = run(Limits::default(), &input, chunk);
        assert_eq!(out.len(), 5000);
        for (i, r) in (0..).zip(out) {
            assert_eq!(
                r,
                Ok(fetch(
                    i,
                    vec![FetchItem::Uid(i), body("", None, Some(b"abc"))]
                ))
            );
        }
    }
}

#[test]
fn internal_date() {
    use std::time::{Duration, UNIX_EPOCH};
    let at = |secs: u64| Some(UNIX_EPOCH + Duration::from_secs(secs));
    // 1996-07-17 09:44:25 UTC
    assert_eq!(
        parse_internal_date("17-Jul-1996 02:44:25 -0700"),
        at(837_596_665)
    );
    assert_eq!(
        parse_internal_date(" 7-Jul-1996 02:44:25 +0000"),
        at(836_707_465)
    );
    assert_eq!(
        parse_internal_date("7-jul-1996 02:44:25 +0000"),
        at(836_707_465)
    );
    assert_eq!(parse_internal_date("01-Jan-1970 00:00:00 +0000"), at(0));
    assert_eq!(parse_internal_date("01-Jan-1970 01:00:00 +0100"), at(0));
    assert_eq!(
        parse_internal_date("29-Feb-2024 12:00:00 +0000"),
        at(1_709_208_000)
    );
    assert_eq!(
        parse_internal_date("31-Dec-1969 23:59:59 +0000"),
        UNIX_EPOCH.checked_sub(Duration::from_secs(1))
    );
    for bad in [
        "",
        "29-Feb-2023 12:00:00 +0000",
        "32-Jan-2020 00:00:00 +0000",
        "00-Jan-2020 00:00:00 +0000",
        "01-Foo-2020 00:00:00 +0000",
        "01-Jan-20 00:00:00 +0000",
        "01-Jan-2020 24:00:00 +0000",
        "01-Jan-2020 00:60:00 +0000",
        "01-Jan-2020 00:00 +0000",
        "01-Jan-2020 00:00:00 0000",
        "01-Jan-2020 00:00:00 +00000",
        "01-Jan-2020 00:00:00 +0060",
        "01-Jan-2020 00:00:00 +0000 x",
        "\u{e9}1-Jan-2020 00:00:00 +0000",
    ] {
        assert_eq!(parse_internal_date(bad), None, "{bad:?}");
    }
}

/// A tiny deterministic fuzzer: mutates the table and checks that feeding
/// in random chunk sizes gives the same results as feeding whole, with small
/// limits so that every error path is reached. The cargo-fuzz target in
/// `fuzz/` does the same at scale.
#[test]
fn mutated_inputs_chunked_equals_whole() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let seeds: Vec<Vec<u8>> = table().into_iter().map(|(i, _)| i.to_vec()).collect();
    let specials = b"(){}[]<>\"\\ \r\n+~*0123456789NIL\x00\xff";
    let limits = Limits {
        max_line: 120,
        max_literal: 64,
    };
    for _ in 0..3000 {
        let mut input = Vec::new();
        for _ in 0..1 + rand() % 3 {
            input.extend_from_slice(&seeds[(rand() % seeds.len() as u64) as usize]);
        }
        for _ in 0..rand() % 6 {
            let pos = (rand() % (input.len() as u64 + 1)) as usize;
            let b = specials[(rand() % specials.len() as u64) as usize];
            match rand() % 3 {
                0 if pos < input.len() => input[pos] = b,
                1 if pos < input.len() => {
                    input.remove(pos);
                }
                _ => input.insert(pos, b),
            }
        }
        let w = run(limits, &input, input.len());
        let chunk = 1 + (rand() % 17) as usize;
        assert_eq!(
            run(limits, &input, chunk),
            w,
            "input {:?}",
            String::from_utf8_lossy(&input)
        );
    }
}

#[test]
fn malformed_list_responses_are_syntax_errors() {
    for (input, reason) in [
        (&b"* LIST\r\n"[..], "expected SP after LIST"),
        (b"* LIST \\Junk \"/\" x\r\n", "expected ( of a flag list"),
        (
            b"* LIST (\\Junk) \"//\" x\r\n",
            "LIST delimiter is not one character",
        ),
        (
            b"* LIST (\\Junk) \"\" x\r\n",
            "LIST delimiter is not one character",
        ),
        (
            b"* LIST (\\Junk) \"/\"\r\n",
            "expected SP after LIST delimiter",
        ),
        (b"* LIST (\\Junk) \"/\" \r\n", "expected a mailbox name"),
        (b"* LIST (\\Junk) \"/\" (x\r\n", "expected a mailbox name"),
        (
            b"* LIST (\\Junk) \"/\" \"x\r\n",
            "unterminated quoted string",
        ),
        (b"* LIST (\\Junk) \"/\" x (\"a\"\r\n", "expected a value"),
    ] {
        assert_eq!(
            syntax(input),
            reason,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    // Extended data nested past the limit is refused, not recursed into.
    let mut deep = b"* LIST () \"/\" x ".to_vec();
    deep.extend(std::iter::repeat_n(b'(', MAX_DEPTH + 1));
    deep.extend(std::iter::repeat_n(b')', MAX_DEPTH + 1));
    deep.extend_from_slice(b"\r\n");
    assert!(matches!(
        whole(&deep).as_slice(),
        [Err(ProtoError::TooDeep { .. })]
    ));
}

#[test]
fn special_use_attributes() {
    let Response::Untagged(Data::List(e)) =
        one(b"* LIST (\\HasNoChildren \\JUNK \\Sent) \"/\" \"Spam\"\r\n")
    else {
        panic!("not a LIST");
    };
    assert_eq!(
        e.special_uses().collect::<Vec<_>>(),
        [SpecialUse::Junk, SpecialUse::Sent]
    );
    assert!(e.is_selectable());
    for u in SpecialUse::ALL {
        assert_eq!(SpecialUse::from_attribute(u.attribute()), Some(u));
        assert_eq!(u.to_string(), u.attribute());
    }
    assert_eq!(SpecialUse::from_attribute("\\Spam"), None);
    assert_eq!(SpecialUse::from_attribute("Junk"), None);
    let Response::Untagged(Data::List(e)) = one(b"* LIST (\\Junk \\NoSelect) \"/\" x\r\n") else {
        panic!("not a LIST");
    };
    assert!(!e.is_selectable());
}

#[test]
fn modified_utf7_round_trips_and_refuses_what_is_not_utf7() {
    use crate::proto::encode::utf7_encode;
    for name in [
        "Junk",
        "Courrier ind\u{e9}sirable",
        "\u{421}\u{43f}\u{430}\u{43c}",
        "\u{8ff7}\u{60d1}\u{90ae}\u{4ef6}",
        "a&b",
        "&",
        "\u{1f4e7} mail",
        "\u{e9}&\u{e9}",
    ] {
        let encoded = utf7_encode(name);
        assert_eq!(
            utf7_decode(encoded.as_bytes()).as_deref(),
            Some(name),
            "{encoded}"
        );
    }
    for bad in [
        &b"&"[..],      // no closing -
        b"&Jjo",        // no closing -
        b"&Jjo!-",      // outside the alphabet
        b"&AGE-",       // an odd byte (and it is ASCII)
        b"&AGEAYg-",    // ASCII encoded: must be sent as itself
        b"&2D3-",       // a lone high surrogate
        b"&AOk,-",      // non-zero padding bits
        b"caf\xc3\xa9", // 8-bit: UTF-8, not UTF-7
        b"tab\there",
    ] {
        assert_eq!(utf7_decode(bad), None, "{:?}", String::from_utf8_lossy(bad));
    }
}

/// Bounded random LIST responses: whatever the attributes, delimiter and
/// name bytes (quoted, literal or atom), the parser returns a LIST or a
/// syntax error, never panics, and a name it accepts decodes back to what
/// `decode_mailbox_name` gives for the same bytes.
#[test]
fn random_list_responses_parse_or_fail_cleanly() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let mut runner = TestRunner::new(Config {
        cases: 2000,
        failure_persistence: None,
        ..Config::default()
    });
    let attrs = proptest::collection::vec(
        prop_oneof![
            Just(b"\\Junk".to_vec()),
            Just(b"\\HasNoChildren".to_vec()),
            Just(b"\\Noselect".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..6),
        ],
        0..4,
    );
    let name = proptest::collection::vec(
        prop_oneof![any::<u8>(), Just(b'&'), Just(b'-'), Just(b'A'), Just(b'"')],
        0..24,
    );
    runner
        .run(
            &(attrs, any::<Option<u8>>(), name, 0u8..3),
            |(attrs, delimiter, name, form)| {
                let mut line = b"* LIST (".to_vec();
                line.extend(attrs.join(&b' '));
                line.extend_from_slice(b") ");
                match delimiter {
                    None => line.extend_from_slice(b"NIL"),
                    Some(d) => line.extend_from_slice(&[b'"', d, b'"']),
                }
                line.push(b' ');
                match form {
                    0 => line.extend_from_slice(&name),
                    1 => {
                        line.push(b'"');
                        line.extend_from_slice(&name);
                        line.push(b'"');
                    }
                    _ => {
                        line.extend_from_slice(format!("{{{}}}\r\n", name.len()).as_bytes());
                        line.extend_from_slice(&name);
                    }
                }
                line.extend_from_slice(b"\r\n");
                let small = Limits {
                    max_line: 64,
                    max_literal: 16,
                };
                for limits in [Limits::default(), small] {
                    let w = run(limits, &line, line.len());
                    prop_assert_eq!(&run(limits, &line, 3), &w);
                    if let [Ok(Response::Untagged(Data::List(e)))] = w.as_slice() {
                        prop_assert_eq!(
                            &e.name,
                            &crate::proto::types::decode_mailbox_name(&e.raw_name)
                        );
                    }
                }
                // Well-formed (known attributes, a plain delimiter, the name
                // in a literal, which carries any bytes but CR LF framing
                // does not care about): always that LIST, byte for byte.
                let plain_delimiter =
                    delimiter.is_none_or(|d| d.is_ascii_graphic() && d != b'"' && d != b'\\');
                let known = attrs.iter().all(|a| {
                    [&b"\\Junk"[..], b"\\HasNoChildren", b"\\Noselect"].contains(&a.as_slice())
                });
                if form == 2 && plain_delimiter && known {
                    match run(Limits::default(), &line, line.len()).as_slice() {
                        [Ok(Response::Untagged(Data::List(e)))] => {
                            prop_assert_eq!(&e.raw_name, &name);
                            prop_assert_eq!(e.attributes.len(), attrs.len());
                            prop_assert_eq!(e.delimiter, delimiter.map(char::from));
                        }
                        other => prop_assert!(false, "{:?} gave {:?}", line, other),
                    }
                }
                Ok(())
            },
        )
        .unwrap();
}
