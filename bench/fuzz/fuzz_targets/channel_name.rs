//! A channel name, as subscribe, client events and the HTTP API give it.
//! The invariants live in `rusher::fuzzing::channel_name`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rusher::fuzzing::channel_name(data));
