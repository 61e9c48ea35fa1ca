//! A token bucket: `rate` tokens a second flow into a bucket holding at most
//! `burst`; each admitted event takes one. A burst of `burst` events passes
//! at once, then `rate` a second. Pure: the caller gives the time.
//!
//! With the Redis adapter a bucket is also debited by what the other nodes
//! admitted ([`TokenBucket::debit`]): it may then hold down to `-burst`
//! tokens, so the deployment as a whole admits `burst` then `rate` a second.

use std::time::{Duration, Instant};

/// One bucket's state. Rate and burst are passed on each call (they live in
/// the configuration, not in every bucket).
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket (a new client gets its whole burst).
    pub fn full(burst: u32, now: Instant) -> Self {
        TokenBucket {
            tokens: f64::from(burst),
            updated: now,
        }
    }

    fn refill(&mut self, rate: u32, burst: u32, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(burst));
        self.updated = now;
    }

    /// Takes a token: `Ok` when there was one, else `Err(wait)`, the time
    /// until the next token (what `Retry-After` tells). `rate` must be > 0.
    pub fn take(&mut self, rate: u32, burst: u32, now: Instant) -> Result<(), Duration> {
        self.refill(rate, burst, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / f64::from(rate.max(1)),
            ))
        }
    }

    /// Takes `n` tokens another node used (see [`crate::usage`]), down to
    /// `-burst` at most: the bucket refills from there at `rate`, so a
    /// deployment flooded through every node still gets `rate` a second,
    /// while a debt is never larger than one burst.
    pub fn debit(&mut self, n: u64, rate: u32, burst: u32, now: Instant) {
        self.refill(rate, burst, now);
        self.tokens = (self.tokens - n as f64).max(-f64::from(burst));
    }

    /// Whether the bucket has refilled to `burst` by `now`: it then says no
    /// more than a new one would, and can be forgotten.
    pub fn is_full(&self, rate: u32, burst: u32, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens + elapsed * f64::from(rate) >= f64::from(burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_and_the_wait_is_told() {
        let start = Instant::now();
        let mut bucket = TokenBucket::full(3, start);
        for _ in 0..3 {
            assert!(bucket.take(2, 3, start).is_ok());
        }
        let wait = bucket.take(2, 3, start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Half a second later one token (rate 2/s) has flowed in.
        let later = start + Duration::from_millis(500);
        assert!(bucket.take(2, 3, later).is_ok());
        assert!(bucket.take(2, 3, later).is_err());
        assert!(!bucket.is_full(2, 3, later));
        assert!(bucket.is_full(2, 3, later + Duration::from_millis(1500)));
    }

    #[test]
    fn a_debit_stops_at_minus_the_burst_and_the_wait_grows() {
        let start = Instant::now();
        let mut bucket = TokenBucket::full(4, start);
        bucket.debit(3, 1, 4, start);
        assert!(bucket.take(1, 4, start).is_ok(), "one token left");
        bucket.debit(1_000, 1, 4, start);
        // -4 tokens: five seconds until one is whole again.
        assert_eq!(
            bucket.take(1, 4, start).unwrap_err(),
            Duration::from_secs(5)
        );
        let later = start + Duration::from_secs(5);
        assert!(bucket.take(1, 4, later).is_ok());
        assert!(bucket.take(1, 4, later).is_err());
        assert!(!bucket.is_full(1, 4, later));
    }

    #[test]
    fn refill_stops_at_the_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::full(2, start);
        let much_later = start + Duration::from_secs(3600);
        assert!(bucket.take(10, 2, much_later).is_ok());
        assert!(bucket.take(10, 2, much_later).is_ok());
        assert!(bucket.take(10, 2, much_later).is_err());
    }
}
