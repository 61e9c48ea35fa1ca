//! A per-app fixed-window rate limit for HTTP API requests.

use dashmap::DashMap;
use std::time::{Duration, Instant};

/// Counts requests per app in one-second windows.
#[derive(Debug, Default)]
pub struct ApiRateLimit {
    windows: DashMap<String, (Instant, u32)>,
}

impl ApiRateLimit {
    /// Counts a request of `app_id`; false when `limit` (per second, 0 =
    /// unlimited) is already reached in the current window.
    pub fn allow(&self, app_id: &str, limit: u32) -> bool {
        if limit == 0 {
            return true;
        }
        let now = Instant::now();
        let mut window = self.windows.entry(app_id.to_owned()).or_insert((now, 0));
        if now.duration_since(window.0) >= Duration::from_secs(1) {
            *window = (now, 0);
        }
        if window.1 >= limit {
            return false;
        }
        window.1 += 1;
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
}
