//! The node-wide cap on open HTTP sessions (`transports.max_sessions`),
//! shared by every HTTP transport (SSE, xhr_streaming, xhr_polling): a
//! session holds a [`SessionSlot`] for as long as it lives.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// How many HTTP sessions are open on this node, and the most allowed.
/// One instance per server, shared by every worker.
#[derive(Debug)]
pub struct HttpSessions {
    open: AtomicUsize,
    max: usize,
}

impl HttpSessions {
    /// A counter allowing at most `max` sessions at once.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(HttpSessions {
            open: AtomicUsize::new(0),
            max,
        })
    }

    /// Takes a slot, or `None` when `max` sessions are open already.
    pub fn open(self: &Arc<Self>) -> Option<SessionSlot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            })
            .ok()?;
        Some(SessionSlot {
            sessions: self.clone(),
        })
    }

    /// Sessions open now.
    pub fn count(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// The most sessions allowed at once.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// One open HTTP session's place under the cap; dropping it frees the place.
#[derive(Debug)]
pub struct SessionSlot {
    sessions: Arc<HttpSessions>,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.sessions.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_max_slots_and_a_dropped_slot_is_free_again() {
        let sessions = HttpSessions::new(2);
        let a = sessions.open();
        let b = sessions.open();
        assert!(a.is_some() && b.is_some());
        assert!(sessions.open().is_none());
        assert_eq!(sessions.count(), 2);
        drop(a);
        assert_eq!(sessions.count(), 1);
        assert!(sessions.open().is_some());
    }
}
