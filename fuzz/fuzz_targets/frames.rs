#![no_main]
//! See `arena_shared::fuzzing::frames`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| arena_shared::fuzzing::frames(data));
