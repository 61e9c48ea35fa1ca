//! The last event of each cache channel, kept for a time to live.

use bytestring::ByteString;
use dashmap::DashMap;
use std::time::{Duration, Instant};

/// Last encoded event per cache channel.
#[derive(Debug)]
pub struct EventCache {
    entries: DashMap<String, (ByteString, Instant)>,
    ttl: Duration,
}

impl EventCache {
    /// A cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        EventCache {
            entries: DashMap::new(),
            ttl,
        }
    }

    /// Remembers `frame` as the channel's last event.
    pub fn put(&self, channel: &str, frame: ByteString) {
        self.entries
            .insert(channel.to_owned(), (frame, Instant::now() + self.ttl));
    }

    /// The channel's last event and its remaining life, when still fresh.
    pub fn get(&self, channel: &str) -> Option<(ByteString, Duration)> {
        let now = Instant::now();
        let hit = self.entries.get(channel).and_then(|entry| {
            let (frame, expires) = entry.value();
            (*expires > now).then(|| (frame.clone(), *expires - now))
        });
        if hit.is_none() {
            self.entries
                .remove_if(channel, |_, (_, expires)| *expires <= now);
        }
        hit
    }

    /// Drops expired entries, so channels nobody reads do not pile up.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.entries.retain(|_, (_, expires)| *expires > now);
    }

    /// Entries held (fresh or not yet swept).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_entries_hit_and_expired_ones_miss() {
        let cache = EventCache::new(Duration::from_millis(30));
        cache.put("cache-a", "x".into());
        let (frame, left) = cache.get("cache-a").unwrap();
        assert_eq!(&*frame, "x");
        assert!(left <= Duration::from_millis(30));
        assert!(cache.get("cache-b").is_none());
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.get("cache-a").is_none());
        assert!(cache.is_empty());
        cache.put("cache-c", "y".into());
        std::thread::sleep(Duration::from_millis(40));
        cache.sweep();
        assert_eq!(cache.len(), 0);
    }
}
