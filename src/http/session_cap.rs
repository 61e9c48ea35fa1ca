//! The cap on HTTP sessions open at once on this node (`transports.max_sessions`),
//! shared by every HTTP transport: each open session holds a [`SessionPermit`]
//! and gives it back when it ends, however it ends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Counts open HTTP sessions against a maximum.
#[derive(Debug)]
pub struct SessionCap {
    open: AtomicUsize,
    max: usize,
}

/// One open session's place under the cap; dropping it frees the place.
#[derive(Debug)]
pub struct SessionPermit {
    cap: Arc<SessionCap>,
}

impl SessionCap {
    /// A cap of `max` sessions.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(SessionCap {
            open: AtomicUsize::new(0),
            max,
        })
    }

    /// A place for one more session, or `None` when `max` are open.
    pub fn acquire(self: &Arc<Self>) -> Option<SessionPermit> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            })
            .ok()
            .map(|_| SessionPermit { cap: self.clone() })
    }

    /// Sessions open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

impl Drop for SessionPermit {
    fn drop(&mut self) {
        self.cap.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_max_and_freed_on_drop() {
        let cap = SessionCap::new(2);
        let a = cap.acquire();
        let b = cap.acquire();
        assert!(a.is_some() && b.is_some());
        assert!(cap.acquire().is_none());
        drop(a);
        assert_eq!(cap.open(), 1);
        assert!(cap.acquire().is_some());
    }
}
