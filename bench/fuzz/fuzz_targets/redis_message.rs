//! A Redis bus message from a peer node, and a stored delivery entry.
//! The invariants live in `rusher::fuzzing::redis_message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rusher::fuzzing::redis_message(data));
