//! Command encoding: how each argument goes on the wire.
//!
//! A user name, password or mailbox name is sent as an atom, a quoted string
//! or a literal, whichever its bytes require. A literal is non-synchronizing
//! (`{n+}`) when the server advertised LITERAL+ (or LITERAL- and the literal
//! is at most 4096 bytes); otherwise it is synchronizing (`{n}`) and the
//! command is split into parts, the client waiting for the server's `+`
//! between them.
//!
//! CR, LF and NUL can never be part of an IMAP string, and a CR LF inside a
//! user-supplied value would let it inject a command of its own. Such values
//! are refused with an [`InputError`] before a single byte is produced.

use base64::Engine as _;

/// A user-supplied value that cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct InputError {
    /// Which value (`"user name"`, `"password"`, `"mailbox"`, ...). Never the
    /// value itself, which may be a secret.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Refuses CR, LF and NUL, which no IMAP string may hold.
pub fn check_value(field: &'static str, value: &[u8]) -> Result<(), InputError> {
    if value.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(InputError {
            field,
            reason: "contains CR, LF or NUL",
        });
    }
    Ok(())
}

/// Which literal forms the server accepts, from its capabilities.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiteralMode {
    /// LITERAL+ (RFC 7888): `{n+}` of any size.
    pub plus: bool,
    /// LITERAL- (RFC 7888): `{n+}` up to 4096 bytes.
    pub minus: bool,
}

impl LiteralMode {
    /// Whether a literal of `len` bytes may be sent without waiting for `+`.
    fn non_synchronizing(self, len: usize) -> bool {
        self.plus || (self.minus && len <= 4096)
    }
}

/// One encoded command, split where a synchronizing literal must wait for
/// the server's `+`.
///
/// Its `Debug` output shows only the sizes of the parts: a part may hold a
/// password.
#[derive(Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The parts, in order. The client sends the first at once and each
    /// later one after a continuation request.
    pub parts: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sizes: Vec<usize> = self.parts.iter().map(Vec::len).collect();
        f.debug_struct("Encoded")
            .field("part_sizes", &sizes)
            .finish()
    }
}

/// Builds one command line.
///
/// Its `Debug` output shows only the literal mode and the sizes of the
/// parts built so far: the bytes may hold a password.
pub struct CommandBuilder {
    mode: LiteralMode,
    parts: Vec<Vec<u8>>,
    cur: Vec<u8>,
}

impl std::fmt::Debug for CommandBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sizes: Vec<usize> = self.parts.iter().map(Vec::len).collect();
        f.debug_struct("CommandBuilder")
            .field("mode", &self.mode)
            .field("part_sizes", &sizes)
            .field("current_size", &self.cur.len())
            .finish()
    }
}

impl CommandBuilder {
    /// Starts `tag NAME`.
    pub fn new(mode: LiteralMode, tag: &str, name: &str) -> Self {
        let mut cur = Vec::with_capacity(64);
        cur.extend_from_slice(tag.as_bytes());
        cur.push(b' ');
        cur.extend_from_slice(name.as_bytes());
        CommandBuilder {
            mode,
            parts: Vec::new(),
            cur,
        }
    }

    /// Appends ` text` verbatim. Only for protocol text written by emap
    /// itself (keywords, numbers, sequence sets), never for user input.
    pub fn raw(mut self, text: &str) -> Self {
        self.cur.push(b' ');
        self.cur.extend_from_slice(text.as_bytes());
        self
    }

    /// Appends a user-supplied string as an atom, quoted string or literal.
    pub fn string(mut self, field: &'static str, value: &[u8]) -> Result<Self, InputError> {
        check_value(field, value)?;
        self.cur.push(b' ');
        match classify(value) {
            Form::Atom => self.cur.extend_from_slice(value),
            Form::Quoted => {
                self.cur.push(b'"');
                for &b in value {
                    if b == b'"' || b == b'\\' {
                        self.cur.push(b'\\');
                    }
                    self.cur.push(b);
                }
                self.cur.push(b'"');
            }
            Form::Literal => {
                let len = value.len();
                if self.mode.non_synchronizing(len) {
                    self.cur
                        .extend_from_slice(format!("{{{len}+}}\r\n").as_bytes());
                } else {
                    self.cur
                        .extend_from_slice(format!("{{{len}}}\r\n").as_bytes());
                    self.parts.push(std::mem::take(&mut self.cur));
                }
                self.cur.extend_from_slice(value);
            }
        }
        Ok(self)
    }

    /// Appends a mailbox name, encoded in modified UTF-7 (RFC 3501 §5.1.3)
    /// when it is not plain ASCII.
    pub fn mailbox(self, name: &str) -> Result<Self, InputError> {
        let encoded = wire_mailbox(name)?;
        self.string("mailbox", &encoded)
    }

    /// Ends the command with CR LF.
    pub fn finish(mut self) -> Encoded {
        self.cur.extend_from_slice(b"\r\n");
        self.parts.push(self.cur);
        Encoded { parts: self.parts }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Form {
    Atom,
    Quoted,
    Literal,
}

/// ATOM-CHAR of RFC 3501: any CHAR except atom-specials.
fn is_atom_char(b: u8) -> bool {
    matches!(b, 0x21..=0x7e) && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
}

fn classify(value: &[u8]) -> Form {
    if !value.is_empty()
        && value.iter().all(|&b| is_atom_char(b))
        && !value.eq_ignore_ascii_case(b"NIL")
    {
        Form::Atom
    } else if value.iter().all(|&b| (0x20..=0x7e).contains(&b)) {
        Form::Quoted
    } else {
        Form::Literal
    }
}

/// A mailbox name as it goes on the wire: `INBOX` in capitals (any case
/// names it, RFC 3501 §5.1), any other name in modified UTF-7 (§5.1.3).
/// An empty name, or one holding CR, LF or NUL, is refused.
pub fn wire_mailbox(name: &str) -> Result<Vec<u8>, InputError> {
    check_value("mailbox", name.as_bytes())?;
    if name.is_empty() {
        return Err(InputError {
            field: "mailbox",
            reason: "is empty",
        });
    }
    Ok(if name.eq_ignore_ascii_case("INBOX") {
        b"INBOX".to_vec()
    } else {
        utf7_encode(name).into_bytes()
    })
}

/// Whether two mailbox names name the same mailbox: exactly, except that
/// `INBOX` is case-insensitive (RFC 3501 §5.1). The one comparison of
/// names, decoded or as sent, wherever two are compared.
pub fn same_mailbox(a: &str, b: &str) -> bool {
    a == b || (a.eq_ignore_ascii_case("INBOX") && b.eq_ignore_ascii_case("INBOX"))
}

/// Modified UTF-7 (RFC 3501 §5.1.3) for mailbox names.
pub fn utf7_encode(name: &str) -> String {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::IMAP_MUTF7,
        base64::engine::general_purpose::NO_PAD,
    );
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        out.push_str(&engine.encode(bytes));
        out.push('-');
        pending.clear();
    };
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut pending, &mut out);
    out
}

/// An IMAP search date (`26-Nov-2026`) for a Unix time, in UTC.
pub fn search_date(unix_secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (year, month, day) = super::date::civil_from_days(unix_secs.div_euclid(86_400));
    let name = MONTHS[usize::try_from(month - 1).unwrap_or(0).min(11)];
    format!("{day}-{name}-{year}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(mode: LiteralMode, value: &[u8]) -> Vec<Vec<u8>> {
        CommandBuilder::new(mode, "A1", "LOGIN")
            .string("user name", value)
            .unwrap()
            .finish()
            .parts
    }

    #[test]
    fn atom_quoted_literal_choice() {
        let m = LiteralMode::default();
        assert_eq!(one(m, b"alice"), vec![b"A1 LOGIN alice\r\n".to_vec()]);
        assert_eq!(one(m, b"a b"), vec![b"A1 LOGIN \"a b\"\r\n".to_vec()]);
        assert_eq!(
            one(m, b"q\"\\"),
            vec![b"A1 LOGIN \"q\\\"\\\\\"\r\n".to_vec()]
        );
        assert_eq!(one(m, b""), vec![b"A1 LOGIN \"\"\r\n".to_vec()]);
        // NIL as an atom could be read as nil by a lax server: quote it.
        assert_eq!(one(m, b"nil"), vec![b"A1 LOGIN \"nil\"\r\n".to_vec()]);
        // Atom specials force quoting.
        assert_eq!(one(m, b"a(b"), vec![b"A1 LOGIN \"a(b\"\r\n".to_vec()]);
        assert_eq!(one(m, b"a]"), vec![b"A1 LOGIN \"a]\"\r\n".to_vec()]);
    }

    #[test]
    fn eight_bit_is_a_synchronizing_literal_without_literal_plus() {
        let parts = one(LiteralMode::default(), "pässword".as_bytes());
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], b"A1 LOGIN {9}\r\n".to_vec());
        assert_eq!(parts[1], "pässword\r\n".as_bytes().to_vec());
    }

    #[test]
    fn literal_plus_sends_at_once() {
        let parts = one(
            LiteralMode {
                plus: true,
                minus: false,
            },
            "é".as_bytes(),
        );
        assert_eq!(parts, vec!["A1 LOGIN {2+}\r\né\r\n".as_bytes().to_vec()]);
    }

    #[test]
    fn literal_minus_only_up_to_4096() {
        let mode = LiteralMode {
            plus: false,
            minus: true,
        };
        assert_eq!(one(mode, "é".as_bytes()).len(), 1);
        let big = "é".repeat(3000);
        assert_eq!(one(mode, big.as_bytes()).len(), 2);
    }

    #[test]
    fn injection_refused() {
        for bad in [&b"x\r\nA2 DELETE INBOX"[..], b"x\n", b"x\r", b"x\0y"] {
            let err = CommandBuilder::new(LiteralMode::default(), "A1", "LOGIN")
                .string("password", bad)
                .unwrap_err();
            assert_eq!(err.field, "password");
        }
        assert!(
            CommandBuilder::new(LiteralMode::default(), "A1", "SELECT")
                .mailbox("a\r\nb")
                .is_err()
        );
    }

    #[test]
    fn mailbox_names() {
        let enc = |n: &str| {
            CommandBuilder::new(LiteralMode::default(), "A1", "SELECT")
                .mailbox(n)
                .unwrap()
                .finish()
                .parts
        };
        assert_eq!(enc("inbox"), vec![b"A1 SELECT INBOX\r\n".to_vec()]);
        assert_eq!(
            enc("Sent Items"),
            vec![b"A1 SELECT \"Sent Items\"\r\n".to_vec()]
        );
        // RFC 3501's example.
        assert_eq!(
            utf7_encode("~peter/mail/台北/日本語"),
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        );
        assert_eq!(utf7_encode("a&b"), "a&-b");
        assert!(
            CommandBuilder::new(LiteralMode::default(), "A1", "SELECT")
                .mailbox("")
                .is_err()
        );
    }

    #[test]
    fn search_dates() {
        assert_eq!(search_date(0), "1-Jan-1970");
        assert_eq!(search_date(1_764_115_200), "26-Nov-2025");
        assert_eq!(search_date(951_782_400), "29-Feb-2000");
        assert_eq!(search_date(-86_400), "31-Dec-1969");
    }

    #[test]
    fn debug_hides_contents() {
        // A derived `Debug` would print the bytes as a decimal list.
        let as_list = format!("{:?}", b"hunter2");
        let as_list = &as_list[1..as_list.len() - 1];
        let b = CommandBuilder::new(LiteralMode::default(), "A1", "LOGIN")
            .string("password", b"hunter2")
            .unwrap();
        let d = format!("{b:?}");
        assert!(!d.contains("hunter2") && !d.contains(as_list), "{d}");
        // A synchronizing literal splits the command into parts.
        let b = CommandBuilder::new(LiteralMode::default(), "A1", "LOGIN")
            .string("password", "hunter2é".as_bytes())
            .unwrap()
            .raw("x");
        let d = format!("{b:?}");
        assert!(!d.contains("hunter2") && !d.contains(as_list), "{d}");
        let e = b.finish();
        let d = format!("{e:?}");
        assert!(!d.contains("hunter2") && !d.contains(as_list), "{d}");
    }
}
