//! The seam between a connection's protocol state ([`Session`]) and what
//! carries its frames: a WebSocket (`ws/`) or pusher-js's HTTP fallbacks
//! (`xhr/`). The hub never sees it: it queues encoded frames on the
//! connection, the session hands them to its transport.

use super::{ClaimedDeliveries, CloseRequest, Session};
use actix::dev::ToEnvelope;
use actix::{ActorContext, AsyncContext};
use bytestring::ByteString;
use std::time::Duration;

/// Per-connection settings taken from the server config, the same for
/// every transport.
#[derive(Debug, Clone, Copy)]
pub struct SessionSettings {
    /// Silence before the server pings (announced to the client).
    pub activity_timeout: Duration,
    /// Wait for an answer to our ping before closing with 4201.
    pub pong_timeout: Duration,
    /// Largest frame accepted from a client, in bytes.
    pub max_frame_bytes: usize,
    /// How long a subscription waits for the sign-in or presence membership
    /// that would authorise it (see `hub::held`); zero refuses at once.
    pub subscribe_wait: Duration,
}

/// The outgoing side of one connection: how the session's frames, probes
/// and close reach the client. One implementation per transport; every
/// method is called on the session's actor, in order.
pub trait Transport: Sized + Unpin + 'static {
    /// The actor context the session runs in with this transport.
    type Context: ActorContext
        + AsyncContext<Session<Self>>
        + ToEnvelope<Session<Self>, ClaimedDeliveries>
        + ToEnvelope<Session<Self>, CloseRequest>;

    /// The transport's name in logs and metrics (`ws`, `xhr_streaming`, ...).
    const NAME: &'static str;

    /// Writes one encoded Pusher frame (a JSON text) to the client.
    fn text(&mut self, ctx: &mut Self::Context, frame: ByteString);

    /// Asks the client to prove it read everything written so far; the
    /// transport calls [`Session::probe_answered`] with `id` when it has
    /// that proof (a WebSocket pong echoing it, the next HTTP request).
    fn probe(&mut self, ctx: &mut Self::Context, id: u64);

    /// Closes the connection with a Pusher close `code` (4000-4999) and
    /// its `reason`, after the session wrote the matching `pusher:error`.
    /// The session stops its actor right after.
    fn close(&mut self, ctx: &mut Self::Context, code: u16, reason: &str);

    /// The session's actor stopped (any cause): release what the
    /// transport holds.
    fn stopped(&mut self, _ctx: &mut Self::Context) {}
}
