//! History writes that could not reach Redis, kept in order for when it is
//! back: bounded (`redis.history_retry_queue`), the oldest dropped first
//! when full (the newest history matters most to a recovering client).
//!
//! Only the outage path touches it, never a healthy publish, so one mutex
//! is enough.

use std::collections::VecDeque;
use std::sync::Mutex;

/// A bounded FIFO of writes waiting for Redis.
#[derive(Debug)]
pub struct RetryQueue<T> {
    items: Mutex<VecDeque<T>>,
    capacity: usize,
}

impl<T> RetryQueue<T> {
    /// A queue holding at most `capacity` writes (0: none are kept).
    pub fn new(capacity: usize) -> Self {
        RetryQueue {
            items: Mutex::new(VecDeque::new()),
            capacity,
        }
    }

    fn locked(&self) -> std::sync::MutexGuard<'_, VecDeque<T>> {
        // Each step is one push or pop: a panic elsewhere cannot leave it half-done.
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends writes in order; returns how many (old or new) were dropped.
    pub fn push(&self, writes: impl IntoIterator<Item = T>) -> u64 {
        let mut items = self.locked();
        let mut dropped = 0;
        for write in writes {
            if self.capacity == 0 {
                dropped += 1;
                continue;
            }
            if items.len() == self.capacity {
                items.pop_front();
                dropped += 1;
            }
            items.push_back(write);
        }
        dropped
    }

    /// Takes up to `most` writes, oldest first.
    pub fn take(&self, most: usize) -> Vec<T> {
        let mut items = self.locked();
        let n = most.min(items.len());
        items.drain(..n).collect()
    }

    /// Writes waiting.
    pub fn len(&self) -> usize {
        self.locked().len()
    }

    /// Whether no write is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_its_oldest_and_gives_the_rest_in_order() {
        let queue = RetryQueue::new(3);
        assert_eq!(queue.push([1, 2]), 0);
        assert_eq!(queue.push([3, 4, 5]), 2);
        assert_eq!(queue.take(2), vec![3, 4]);
        assert_eq!(queue.take(10), vec![5]);
        assert!(queue.is_empty());
        assert_eq!(RetryQueue::new(0).push([1]), 1, "capacity 0 keeps nothing");
    }
}
