//! Socket ids: `{sequence}.{random}`, unique per process and hard to guess.

use std::sync::atomic::{AtomicU64, Ordering};

/// Hands out socket ids.
#[derive(Debug)]
pub struct SocketIds {
    next: AtomicU64,
}

impl Default for SocketIds {
    fn default() -> Self {
        // A random start keeps ids of different nodes (and restarts) apart.
        SocketIds {
            next: AtomicU64::new(u64::from(rand::random::<u32>())),
        }
    }
}

impl SocketIds {
    /// A new unique socket id.
    pub fn next(&self) -> String {
        let sequence = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{sequence}.{}", rand::random::<u32>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_two_integers_and_unique() {
        let ids = SocketIds::default();
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a, b);
        for id in [a, b] {
            let (left, right) = id.split_once('.').unwrap();
            assert!(left.parse::<u64>().is_ok() && right.parse::<u32>().is_ok());
        }
    }
}
