//! A client text frame (WebSocket message or one `xhr_send` element).
//! The invariants live in `rusher::fuzzing::client_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rusher::fuzzing::client_frame(data));
