//! Fuzz target for the incremental IMAP response parser.
//!
//! The first input byte picks two chunk sizes (1..=16 each, used in turn);
//! the rest is server bytes. They are fed once whole and once in chunks, and
//! both runs must give the same sequence of responses and errors. Along the
//! way the parser must never panic, must keep its buffer within its limits
//! after every `Ok(None)`, and, once poisoned by a non-recoverable error,
//! must repeat that error and hold no bytes.
//!
//! The protocol modules are compiled in by path rather than through the
//! `emap` crate, so the target builds without tokio, actix and rustls (which
//! `proto` does not use) and with sanitizer instrumentation on the parser
//! only.
#![no_main]

use libfuzzer_sys::fuzz_target;

// At the crate root, as siblings, so that the parser's `super::error` and
// `super::types` resolve as they do inside `emap::proto`.
#[allow(dead_code)]
#[path = "../../src/proto/date.rs"]
mod date;

#[path = "../../src/proto/error.rs"]
mod error;
#[allow(dead_code)]
#[path = "../../src/proto/parser.rs"]
mod parser;
#[allow(dead_code)]
#[path = "../../src/proto/types.rs"]
mod types;

use error::ProtoError;
use parser::{Limits, Parser};
use types::Response;

/// Small limits, so that every limit is reached by short inputs.
const LIMITS: Limits = Limits {
    max_line: 256,
    max_literal: 1024,
};

fn run(input: &[u8], sizes: [usize; 2]) -> Vec<Result<Response, ProtoError>> {
    let mut parser = Parser::new(LIMITS);
    let mut out = Vec::new();
    let mut rest = input;
    let mut turn = 0;
    while !rest.is_empty() {
        let n = sizes[turn % 2].clamp(1, rest.len());
        turn += 1;
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        parser.feed(piece);
        loop {
            match parser.next() {
                Ok(Some(r)) => out.push(Ok(r)),
                Ok(None) => break,
                Err(e) if e.is_recoverable() => out.push(Err(e)),
                Err(e) => {
                    parser.feed(b"* 1 EXISTS\r\n");
                    assert_eq!(parser.next(), Err(e.clone()), "poisoned parser must repeat");
                    assert_eq!(parser.buffered(), 0, "poisoned parser must hold no bytes");
                    out.push(Err(e));
                    return out;
                }
            }
        }
        assert!(
            parser.buffered() <= LIMITS.max_line + LIMITS.max_literal,
            "buffered {} bytes",
            parser.buffered()
        );
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let whole = run(input, [input.len(), input.len()]);
    let sizes = [
        usize::from(selector & 0x0f) + 1,
        usize::from(selector >> 4) + 1,
    ];
    let chunked = run(input, sizes);
    assert_eq!(whole, chunked, "chunk sizes {sizes:?}");
});
