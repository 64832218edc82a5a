//! `cargo fuzz run router`: see `marimo_rs::__fuzz::router` for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| marimo_rs::__fuzz::router(data));
