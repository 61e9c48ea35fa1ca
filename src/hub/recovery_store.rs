//! Where signed-in users' recovery positions live, chosen once in server.rs:
//! this node's [`super::recovery::UserPositions`] only
//! ([`PositionStore::Local`], one node), or also a store every node shares
//! ([`PositionStore::Shared`]: a Redis hash per user with `adapter =
//! "redis"`), so a user's new socket on any node, even after `kill -9` of
//! the node the old one was on, resumes from the last confirmed position.
//!
//! With a shared store the node's own positions are still kept: they answer
//! when the store cannot be read (fail-open, counted in
//! `rusher_recovery_fail_open_total`). Writes to the shared store never
//! make the caller wait: they are sent in the background with the
//! adapter's operation timeout (a lost write costs duplicates at worst, as
//! a position only moves up when the client confirms).

use crate::apps::App;
use async_trait::async_trait;
use std::sync::Arc;

/// The shared store could not be read (unreachable, or no answer within the
/// adapter's operation timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// How a write changes a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// The socket joined or recovered: its position is exactly this serial.
    Set,
    /// A probe's pong confirmed it: raised, never lowered.
    Raise,
}

/// Signed-in users' positions every node shares (semantics of
/// [`super::recovery::UserPositions`], per app and verified user id). A
/// position lives the app's `recovery_window` after it was last written
/// (set, confirmed, or its socket closed).
#[async_trait]
pub trait SharedPositions: Send + Sync + 'static {
    /// Writes `socket_id`'s positions (channel, serial) in the background.
    fn write(
        &self,
        app: &App,
        user: &str,
        socket_id: &str,
        positions: Vec<(String, u64)>,
        how: Write,
    );

    /// The socket unsubscribed from `channel`: not recovered from (background).
    fn forget(&self, app: &App, user: &str, socket_id: &str, channel: &str);

    /// The socket closed: its positions stay usable `recovery_window` from
    /// now (background).
    fn closed(&self, app: &App, user: &str, socket_id: &str);

    /// Where a new socket of `user` resumes `channel`: the lowest usable
    /// position of the user's other sockets, using up the highest one
    /// (see [`super::recovery::UserPositions::take`]), in one atomic step.
    async fn take(
        &self,
        app: &App,
        user: &str,
        socket_id: &str,
        channel: &str,
    ) -> Result<Option<u64>, Unavailable>;
}

/// Where positions live besides this node's memory.
#[derive(Clone, Default)]
pub enum PositionStore {
    /// This node's memory only (`adapter = "local"`).
    #[default]
    Local,
    /// Also a store every node shares (`adapter = "redis"`).
    Shared(Arc<dyn SharedPositions>),
}

/// The position to resume from when both stores answered: the lower one, so
/// a write the shared store missed (Redis was briefly away) never makes a
/// socket skip events (at least once).
pub fn lower(shared: Option<u64>, local: Option<u64>) -> Option<u64> {
    match (shared, local) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lower_position_wins_and_one_alone_is_kept() {
        assert_eq!(lower(Some(7), Some(5)), Some(5));
        assert_eq!(lower(Some(3), Some(5)), Some(3));
        assert_eq!(lower(None, Some(5)), Some(5));
        assert_eq!(lower(Some(7), None), Some(7));
        assert_eq!(lower(None, None), None);
    }
}
