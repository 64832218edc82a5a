//! `cargo fuzz run mount_path`: see `marimo_rs::__fuzz::mount_path` for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| marimo_rs::__fuzz::mount_path(data));
