//! An `xhr_send` body: a JSON array of client frames.
//! The invariants live in `rusher::fuzzing::xhr_send`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rusher::fuzzing::xhr_send(data));
