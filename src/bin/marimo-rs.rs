//! The `marimo-rs` command line tool.
fn main() {}
