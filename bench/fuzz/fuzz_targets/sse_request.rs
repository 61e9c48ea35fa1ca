//! An SSE `Last-Event-ID` with its channel list and stream token parameters.
//! The invariants live in `rusher::fuzzing::sse_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rusher::fuzzing::sse_request(data));
