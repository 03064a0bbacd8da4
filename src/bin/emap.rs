//! STUB: the `emap` command-line tool (being written).
fn main() {}
