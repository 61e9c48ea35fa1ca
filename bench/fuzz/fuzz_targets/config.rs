//! A config file (TOML): parsed, validated, derived values computed.
//! The invariants live in `rusher::fuzzing::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rusher::fuzzing::config(data));
