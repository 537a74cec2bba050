#![no_main]
//! See `arena_shared::fuzzing::tokens`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| arena_shared::fuzzing::tokens(data));
