//! Fixed one-second rate windows, as Pusher limits client events (10 a
//! second): [`RateWindow`] counts one kind of frame of one connection (client
//! events, acks, `pusher:subscribe`/`pusher:unsubscribe`), and
//! [`ApiRateLimit`] keeps one per app for HTTP API requests; with the
//! Redis adapter the other nodes' requests are added to it (see
//! [`crate::usage`]), so the limit holds for the deployment.

use dashmap::DashMap;
use std::time::{Duration, Instant};

/// Events of one kind counted in the current one-second window.
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

    /// Adds `n` events counted elsewhere (another node's) at `now`.
    pub fn add(&mut self, n: u64, now: Instant) {
        if now.duration_since(self.started) >= Duration::from_secs(1) {
            *self = RateWindow::new(now);
        }
        self.count = self
            .count
            .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
    }
}

/// Counts HTTP API requests per app in one-second windows.
#[derive(Debug, Default)]
pub struct ApiRateLimit {
    windows: DashMap<String, RateWindow>,
}

impl ApiRateLimit {
    /// Counts a request of `app_id`; false when `limit` (per second, 0 =
    /// unlimited) is already reached in the current window.
    pub fn allow(&self, app_id: &str, limit: u32) -> bool {
        if limit == 0 {
            return true;
        }
        let now = Instant::now();
        let mut window = self
            .windows
            .entry(app_id.to_owned())
            .or_insert_with(|| RateWindow::new(now));
        window.admit(limit, now) == Admission::Allowed
    }

    /// Adds `n` requests another node admitted for `app_id` to its current
    /// window; false (nothing kept) when `limit` is 0 (unlimited).
    pub fn add_remote(&self, app_id: &str, limit: u32, n: u64) -> bool {
        if limit == 0 {
            return false;
        }
        let now = Instant::now();
        self.windows
            .entry(app_id.to_owned())
            .or_insert_with(|| RateWindow::new(now))
            .add(n, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_applies_per_app_and_zero_is_unlimited() {
        let limits = ApiRateLimit::default();
        assert!(limits.allow("a", 2));
        assert!(limits.allow("a", 2));
        assert!(!limits.allow("a", 2));
        assert!(limits.allow("b", 2));
        for _ in 0..100 {
            assert!(limits.allow("c", 0));
        }
    }

    #[test]
    fn other_nodes_requests_fill_the_window() {
        let limits = ApiRateLimit::default();
        assert!(!limits.add_remote("a", 0, 5), "unlimited: not kept");
        assert!(limits.add_remote("a", 3, 2));
        assert!(limits.allow("a", 3));
        assert!(!limits.allow("a", 3));
        let start = Instant::now();
        let mut window = RateWindow::new(start);
        window.add(u64::MAX, start);
        assert_eq!(window.admit(5, start), Admission::Refused { first: true });
        window.add(1, start + Duration::from_secs(1));
        assert_eq!(
            window.admit(2, start + Duration::from_secs(1)),
            Admission::Allowed
        );
        assert!(window.admit(2, start + Duration::from_secs(1)) != Admission::Allowed);
    }

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
