#![no_main]
//! See `arena_shared::fuzzing::replay`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| arena_shared::fuzzing::replay(data));
