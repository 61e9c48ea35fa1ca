//! Abuse limits: what one client address (or one app) may cost the server
//! before it has proved anything, counted in `rusher_limit_refusals_total`.
//!
//! - [`settings`]: the `[limits]` section of the config.
//! - [`bucket`]: the token bucket (rate + burst) the connection-rate caps use.
//! - [`client_ip`]: who the client is: the TCP peer, or the first untrusted
//!   `X-Forwarded-For` hop when the peer is a trusted proxy.
//! - [`connection_rate`]: new connections per second per client IP and per
//!   app, checked where every transport starts a connection; refused with
//!   HTTP 429 and `Retry-After` before any upgrade or session exists.
//! - [`half_open`]: connections accepted but without a complete request
//!   head yet (slowloris), capped at accept time, globally and per peer.
//! - [`next_head`]: the request header timeout for the next request of a
//!   kept-alive connection (actix-web times only the first).
//!
//! Subscribe/unsubscribe frames per connection are limited in the session
//! (`session/rate.rs`), with the same window as client events.

pub mod bucket;
pub mod client_ip;
pub mod connection_rate;
pub mod half_open;
pub mod next_head;
pub mod settings;

pub use connection_rate::ConnectionRate;
pub use half_open::HalfOpenGate;
