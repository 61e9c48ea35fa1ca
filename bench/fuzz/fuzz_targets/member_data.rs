//! Presence `channel_data`, sign-in `user_data`, an SSE token's `user_data`.
//! The invariants live in `rusher::fuzzing::member_data`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rusher::fuzzing::member_data(data));
