//! A signed HTTP API request: the query's signature and parameters, the event bodies.
//! The invariants live in `rusher::fuzzing::http_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rusher::fuzzing::http_request(data));
