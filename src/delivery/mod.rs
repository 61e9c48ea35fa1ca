//! Acknowledged delivery (extension, opt-in per app): the push gateway's
//! at-least-once model on Pusher channels.
//!
//! An event published on a channel matching `[apps.delivery] channels` is
//! encoded once with a top-level `"message_id"` (see
//! [`crate::protocol::frames::delivery_frame`]); every recipient's connection
//! actor records it as pending when it writes it, resends it after
//! `ack_timeout_ms` × `retry_backoff`^n until the client sends `pusher:ack`,
//! and drops it as expired after `max_retries` resends or `message_ttl`.
//!
//! - [`settings`]: the `[apps.delivery]` table and its checks.
//! - [`pending`]: one connection's pending messages and their retry clock (pure).
//! - [`parked`]: a signed-in user's pending messages between two connections.
//! - [`store`]: where those wait: this node's memory or a shared store (Redis).
//!
//! Nothing here is shared on the publish path except an atomic id counter:
//! pending state lives in each connection's actor, so recording a message
//! for 10,000 subscribers is 10,000 independent actor-local inserts.

pub mod parked;
pub mod pending;
pub mod settings;
pub mod store;

use std::sync::atomic::{AtomicU64, Ordering};

/// Message ids unique across nodes and restarts: a random 64-bit node
/// prefix (drawn at start) and a counter, e.g. `"9f3ac01b22d4e871-17"`.
/// Only `[0-9a-f-]`, so an id needs no JSON escaping.
#[derive(Debug)]
pub struct MessageIds {
    node: u64,
    next: AtomicU64,
}

impl Default for MessageIds {
    fn default() -> Self {
        MessageIds {
            node: rand::random(),
            next: AtomicU64::new(1),
        }
    }
}

impl MessageIds {
    /// The next id (one atomic increment, no lock).
    pub fn next_id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}-{n}", self.node)
    }
}

/// The longest message id a `pusher:ack` may name (ours are at most 37
/// characters); an ack with a longer one is refused whole with 4302, so
/// error messages never echo long client input.
pub const MAX_MESSAGE_ID_LEN: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_unique_and_need_no_escaping() {
        let ids = MessageIds::default();
        let (a, b) = (ids.next_id(), ids.next_id());
        assert_ne!(a, b);
        assert!(a.len() <= MAX_MESSAGE_ID_LEN);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
    }
}
