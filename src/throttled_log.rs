//! At most one log line per interval for a failure that can repeat at the
//! rate of traffic (a full queue drops every message until it drains): the
//! metric counts each one, the log says it is happening and how often.

use std::sync::atomic::{AtomicU64, Ordering};

/// Decides when a repeated failure is logged again.
#[derive(Debug)]
pub struct ThrottledLog {
    interval_ms: u64,
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl ThrottledLog {
    /// One line per `interval_ms`.
    pub const fn new(interval_ms: u64) -> Self {
        ThrottledLog {
            interval_ms,
            last_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(occurrences not logged since the last line)` when this
    /// occurrence should be logged; `None` (and counted) otherwise.
    pub fn ready(&self) -> Option<u64> {
        let now = crate::store::now_ms();
        let last = self.last_ms.load(Ordering::Acquire);
        if now.saturating_sub(last) >= self.interval_ms
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::AcqRel))
        } else {
            self.suppressed.fetch_add(1, Ordering::AcqRel);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_once_then_counts_what_it_held_back() {
        let log = ThrottledLog::new(60_000);
        assert_eq!(log.ready(), Some(0));
        assert_eq!(log.ready(), None);
        assert_eq!(log.ready(), None);
        assert_eq!(log.suppressed.load(Ordering::Acquire), 2);
    }
}
