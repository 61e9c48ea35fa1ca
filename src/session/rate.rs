//! The per-connection rate window: at most `limit` frames of one kind per
//! one-second window, as Pusher limits client events (10 a second). Used for
//! client events and for `pusher:subscribe`/`pusher:unsubscribe` frames.

use std::time::{Duration, Instant};

/// Frames of one kind counted in the current one-second window.
#[derive(Debug)]
pub struct RateWindow {
    started: Instant,
    count: u32,
    /// A frame was already refused in this window.
    refused: bool,
}

/// What [`RateWindow::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Within the limit: counted.
    Allowed,
    /// Over the limit; `first` for the first refusal of the window (so the
    /// client can be told once a window, not once a frame).
    Refused {
        /// The first refusal in this window.
        first: bool,
    },
}

impl RateWindow {
    /// An empty window starting `now`.
    pub fn new(now: Instant) -> Self {
        RateWindow {
            started: now,
            count: 0,
            refused: false,
        }
    }

    /// Counts a frame at `now` against `limit` per second (0 = unlimited).
    pub fn admit(&mut self, limit: u32, now: Instant) -> Admission {
        if limit == 0 {
            return Admission::Allowed;
        }
        if now.duration_since(self.started) >= Duration::from_secs(1) {
            *self = RateWindow::new(now);
        }
        if self.count >= limit {
            let first = !std::mem::replace(&mut self.refused, true);
            return Admission::Refused { first };
        }
        self.count += 1;
        Admission::Allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_per_window_then_the_next_window_allows_again() {
        let start = Instant::now();
        let mut window = RateWindow::new(start);
        assert_eq!(window.admit(2, start), Admission::Allowed);
        assert_eq!(window.admit(2, start), Admission::Allowed);
        assert_eq!(window.admit(2, start), Admission::Refused { first: true });
        assert_eq!(window.admit(2, start), Admission::Refused { first: false });
        let next = start + Duration::from_secs(1);
        assert_eq!(window.admit(2, next), Admission::Allowed);
        for _ in 0..1000 {
            assert_eq!(window.admit(0, next), Admission::Allowed);
        }
    }
}
