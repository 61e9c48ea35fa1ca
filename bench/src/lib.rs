//! rusher-bench: a load generator for Pusher-protocol servers, and a bare
//! broadcast server that marks the limit.
//!
//! Layout:
//! - `sign`: HMAC signatures for the HTTP API (PROTOCOL.md §5) and presence auth.
//! - `frame`: cheap scanning of received frames (event name, socket id, stamp),
//!   so the generator does no JSON parsing per delivery.
//! - `ws`: a Pusher WebSocket client connection (connect, subscribe).
//! - `http_session`: a Pusher session over xhr_streaming, xhr_polling or SSE;
//!   `lines` parses their wire formats.
//! - `transport`: `--transport` and one connection type over all transports.
//! - `api`: a keep-alive HTTP/1.1 client that triggers signed events.
//! - `stats`: latency histograms, counters and the progress line.
//! - `report`: the JSON result every scenario prints.
//! - `system`: open-file limit and the server's RSS from /proc.
//! - `scenario`: fanout, channels, publish (one delivery engine), connect, presence,
//!   recovery (reconnecting clients replaying missed history), soak (abrupt
//!   connect/subscribe/close cycles), frame-fuzz (the black-box frame fuzzer).
//! - `mutate`: the fuzzer's seeded cases: random and mutated frames, each with
//!   the answer it must get.
//! - `server_state`: what a server has left after a run (channels, connections,
//!   presence members), read over its API and `/metrics`.
//! - `table`: the markdown comparison table `compare.sh` prints.
//! - `bare`: the bare broadcast server (the `bare-server` binary).

pub mod api;
pub mod bare;
pub mod frame;
pub mod http_session;
pub mod lines;
pub mod mutate;
pub mod report;
pub mod scenario;
pub mod server_state;
pub mod sign;
pub mod stats;
pub mod system;
pub mod table;
pub mod transport;
pub mod ws;

/// Microseconds since the Unix epoch: the clock stamped into event data and
/// read back on delivery (sender and receiver share the machine's clock).
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
