//! Idempotent publish on one node: the key rules and a bounded, expiring
//! table of claimed keys with the answer of the request that claimed them.
//!
//! A publish with an `idempotency_key` first *claims* the key (atomically:
//! two requests with the same key, at the same time, cannot both win), then
//! publishes, then *stores* the answer it sent. A repeat within the window
//! finds the stored answer and is answered with it, undelivered; a repeat
//! that comes while the first is still publishing finds the claim pending
//! ([`Claim::InFlight`]). A request that fails after claiming *releases* the
//! key so a corrected retry goes through. This table is the in-memory side
//! of that seam ([`crate::adapter::Adapter::claim_idempotency_key`]); the
//! Redis adapter keeps the same three steps in Redis and falls back to this
//! table while Redis is unreachable.
//!
//! Pure logic, no I/O: the caller passes the time, so tests need no clock.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Longest accepted key, in bytes (Stripe's and Ably's ids fit easily; a
/// UUID is 36).
pub const MAX_KEY_BYTES: usize = 256;

/// Shards of the table: one publish locks one shard, never the table.
const SHARDS: usize = 16;

/// Why a key was refused (answered 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key is `""`.
    #[error("idempotency_key must not be empty")]
    Empty,
    /// Longer than [`MAX_KEY_BYTES`].
    #[error("idempotency_key is longer than {MAX_KEY_BYTES} bytes")]
    TooLong,
    /// Holds a control character (they break logs and are never meant).
    #[error("idempotency_key must not contain control characters")]
    ControlCharacter,
}

/// Checks a key: 1 to [`MAX_KEY_BYTES`] bytes of UTF-8 without control
/// characters.
pub fn validate_key(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        Err(KeyError::Empty)
    } else if key.len() > MAX_KEY_BYTES {
        Err(KeyError::TooLong)
    } else if key.chars().any(char::is_control) {
        Err(KeyError::ControlCharacter)
    } else {
        Ok(())
    }
}

/// The JSON body the first request with a key was answered with.
pub type Answer = Arc<str>;

/// Identifies one claim, so only its owner can store or release it (a
/// claim that expired and was claimed again belongs to someone else).
pub type ClaimToken = u64;

/// What claiming a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is this request's: publish, then store the answer (or release).
    Claimed(ClaimToken),
    /// A request with this key was answered within the window: answer the same.
    Repeat(Answer),
    /// A request with this key is still publishing.
    InFlight,
}

/// One claimed key.
#[derive(Debug)]
struct Entry {
    token: ClaimToken,
    answer: Option<Answer>,
    expires: Instant,
}

/// One shard: the entries, and their keys in claim order (the window is one
/// per app, so claim order is expiry order) for expiry and eviction.
#[derive(Debug, Default)]
struct Shard {
    entries: HashMap<Box<str>, Entry>,
    /// `(key, token)` in claim order; a pair whose entry was released or
    /// claimed again is stale and skipped.
    order: VecDeque<(Box<str>, ClaimToken)>,
}

impl Shard {
    /// Whether the front of `order` is the live entry it names.
    fn is_live(&self, key: &str, token: ClaimToken) -> bool {
        self.entries.get(key).is_some_and(|e| e.token == token)
    }

    /// Drops expired entries (and stale order pairs) from the front.
    fn expire(&mut self, now: Instant) {
        while let Some((key, token)) = self.order.front() {
            let expired = match self.entries.get(key.as_ref()) {
                Some(entry) if entry.token == *token => entry.expires <= now,
                _ => true,
            };
            if !expired {
                break;
            }
            if self.is_live(key, *token) {
                self.entries.remove(key.as_ref());
            }
            self.order.pop_front();
        }
    }

    /// Removes the oldest live entry; whether one was.
    fn evict_oldest(&mut self) -> bool {
        while let Some((key, token)) = self.order.pop_front() {
            if self.is_live(&key, token) {
                self.entries.remove(key.as_ref());
                return true;
            }
        }
        false
    }

    /// Keeps `order` within twice the entries: releases leave stale pairs.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.entries.len() + 16 {
            let entries = &self.entries;
            self.order.retain(|(key, token)| {
                entries.get(key.as_ref()).is_some_and(|e| e.token == *token)
            });
        }
    }
}

/// What a claim did to the table, for the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// What the key's state was.
    pub claim: Claim,
    /// Live keys dropped before their window ended to make room (0 or 1).
    pub evicted: u64,
}

/// Claimed keys of one app on this node, at most `max_keys` (the oldest is
/// evicted first, which is counted: its repeat would be delivered again).
#[derive(Debug)]
pub struct IdempotencyTable {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    per_shard: usize,
}

impl IdempotencyTable {
    /// A table holding at most about `max_keys` keys (rounded up to a
    /// multiple of the shard count).
    pub fn new(max_keys: usize) -> Self {
        IdempotencyTable {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Shard> {
        let index = (self.hasher.hash_one(key) as usize) % SHARDS;
        // A panic while holding a shard leaves it consistent enough: every
        // change is a single map/deque operation.
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Claims `key` for `window` from `now` with `token`, or says who has it.
    pub fn claim(&self, key: &str, token: ClaimToken, now: Instant, window: Duration) -> Claimed {
        let mut shard = self.shard(key);
        shard.expire(now);
        if let Some(entry) = shard.entries.get(key) {
            if entry.expires > now {
                let claim = match &entry.answer {
                    Some(answer) => Claim::Repeat(answer.clone()),
                    None => Claim::InFlight,
                };
                return Claimed { claim, evicted: 0 };
            }
        }
        let mut evicted = 0;
        if !shard.entries.contains_key(key) && shard.entries.len() >= self.per_shard {
            evicted = u64::from(shard.evict_oldest());
        }
        let expires = now + window;
        shard.entries.insert(
            key.into(),
            Entry {
                token,
                answer: None,
                expires,
            },
        );
        shard.order.push_back((key.into(), token));
        shard.compact();
        Claimed {
            claim: Claim::Claimed(token),
            evicted,
        }
    }

    /// Stores the answer of the claim `token` (ignored if the claim is gone).
    pub fn store(&self, key: &str, token: ClaimToken, answer: Answer) {
        let mut shard = self.shard(key);
        if let Some(entry) = shard.entries.get_mut(key) {
            if entry.token == token {
                entry.answer = Some(answer);
            }
        }
    }

    /// Gives up the claim `token` if it is still unanswered; whether it did.
    pub fn release(&self, key: &str, token: ClaimToken) -> bool {
        let mut shard = self.shard(key);
        let owned = shard
            .entries
            .get(key)
            .is_some_and(|e| e.token == token && e.answer.is_none());
        if owned {
            shard.entries.remove(key);
        }
        owned
    }

    /// Keys held (live or not yet expired by a claim on their shard).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entries
                    .len()
            })
            .sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for IdempotencyTable {
    fn default() -> Self {
        Self::new(100_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(120);

    #[test]
    fn keys_are_one_to_256_bytes_without_control_characters() {
        assert_eq!(validate_key(""), Err(KeyError::Empty));
        assert!(validate_key("a").is_ok());
        assert!(validate_key(&"é".repeat(128)).is_ok());
        assert_eq!(validate_key(&"x".repeat(257)), Err(KeyError::TooLong));
        assert_eq!(validate_key("a\nb"), Err(KeyError::ControlCharacter));
    }

    #[test]
    fn a_repeat_gets_the_stored_answer_and_an_early_one_finds_it_in_flight() {
        let table = IdempotencyTable::new(10);
        let now = Instant::now();
        assert_eq!(table.claim("k", 1, now, WINDOW).claim, Claim::Claimed(1));
        assert_eq!(table.claim("k", 2, now, WINDOW).claim, Claim::InFlight);
        table.store("k", 1, "{}".into());
        assert_eq!(
            table.claim("k", 3, now, WINDOW).claim,
            Claim::Repeat("{}".into())
        );
    }

    #[test]
    fn a_released_key_can_be_claimed_again_but_only_by_its_owner() {
        let table = IdempotencyTable::new(10);
        let now = Instant::now();
        table.claim("k", 1, now, WINDOW);
        assert!(!table.release("k", 2), "not the owner");
        assert!(table.release("k", 1));
        assert_eq!(table.claim("k", 3, now, WINDOW).claim, Claim::Claimed(3));
        table.store("k", 3, "{}".into());
        assert!(!table.release("k", 3), "an answered key stays");
    }

    #[test]
    fn keys_expire_after_the_window() {
        let table = IdempotencyTable::new(10);
        let now = Instant::now();
        table.claim("k", 1, now, WINDOW);
        table.store("k", 1, "{}".into());
        let later = now + WINDOW;
        assert_eq!(table.claim("k", 2, later, WINDOW).claim, Claim::Claimed(2));
        table.claim("other", 3, later + WINDOW, WINDOW);
        assert!(table.len() <= 2);
    }

    #[test]
    fn a_full_table_evicts_the_oldest_and_says_so() {
        let table = IdempotencyTable::new(SHARDS); // one key per shard
        let now = Instant::now();
        let mut evicted = 0;
        for i in 0..(SHARDS as u64 * 4) {
            evicted += table.claim(&format!("k{i}"), i, now, WINDOW).evicted;
        }
        assert!(table.len() <= SHARDS);
        assert_eq!(evicted as usize + table.len(), SHARDS * 4);
    }

    #[test]
    fn releases_do_not_grow_the_order_without_bound() {
        let table = IdempotencyTable::new(SHARDS);
        let now = Instant::now();
        for token in 0..10_000 {
            table.claim("k", token, now, WINDOW);
            table.release("k", token);
        }
        let shard = table.shard("k");
        assert!(shard.order.len() <= 2 * shard.entries.len() + 17);
    }
}
