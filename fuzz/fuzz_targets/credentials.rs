//! `cargo fuzz run credentials`: see `marimo_rs::__fuzz::credentials` for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| marimo_rs::__fuzz::credentials(data));
