//! rusher: a Pusher-protocol-compatible real-time server.
//!
//! # Layout
//! - [`config`]: typed configuration from a TOML file and the environment.
//! - [`abuse`]: abuse limits: connection rate per IP and app, half-open connections.
//! - [`apps`]: the apps served, found by id or key; changed at runtime
//!   through the admin API and the apps store.
//! - [`protocol`]: the Pusher wire protocol as pure code (frames, channels, signatures, error codes).
//! - [`hub`]: this node's state (channels → subscribers) and the facade ws/ and http/ call.
//! - [`delivery`]: acknowledged delivery (message ids, `pusher:ack`, resends).
//! - [`usage`]: app and abuse limits for the whole deployment: usage shared between nodes (Redis).
//! - [`adapter`]: how published frames reach subscribers and how shared state is kept (in process, or Redis).
//! - [`session`]: one actor per connection: the Pusher protocol, whatever the transport.
//! - [`ws`]: the WebSocket transport of a session.
//! - [`xhr`]: pusher-js's HTTP fallback transports (`xhr_streaming`, `xhr_polling`).
//! - [`sse`]: the Server-Sent Events transport of a session (receive only).
//! - [`console`]: the live console in the browser at `/console` (login, channels, event log, test events).
//! - [`http`]: the HTTP API the server SDKs call, health and metrics.
//! - [`pushi_api`]: pushi's HTTP API under `/pushi/`, for the PyPI `pushi` client.
//! - [`store`]: offline subscriptions and stored messages (memory or MongoDB).
//! - [`webhooks`]: signed, batched, retried webhooks to the apps' backends.
//! - [`notify`]: notifications to followers: HTTP callbacks, e-mail, Web Push (pushi's handlers).
//! - [`metrics`]: Prometheus metrics.
//! - [`throttled_log`]: one log line per interval for failures that repeat at traffic rate.
//! - [`logging`]: the log filter check and the subscriber (colour only on a terminal).
//! - [`listen`]: the listening sockets, with errors naming the address and the key.
//! - [`handover`]: on shutdown, waiting for the process that takes over the port.
//! - [`tls`]: TLS on the listeners: PEM certificate and key, checked, reloaded without a restart.
//! - [`server`]: wires the above into a running server with graceful shutdown.
//! - `fuzzing` (tests and `cargo fuzz` only): the invariants of every parser input reaches, for any input.

pub mod abuse;
pub mod adapter;
pub mod apps;
pub mod config;
pub mod console;
pub mod delivery;
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod fuzzing;
pub mod handover;
pub mod http;
pub mod hub;
pub mod listen;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod protocol;
pub mod pushi_api;
pub mod serve;
pub mod server;
pub mod session;
pub mod sse;
pub mod store;
pub mod throttled_log;
pub mod tls;
pub mod usage;
pub mod webhooks;
pub mod ws;
pub mod xhr;

pub use config::Config;
pub use server::Server;
