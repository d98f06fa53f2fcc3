//! `brokerbench`: the command-line interface.
fn main() {}
