//! The in-memory store: the default for `cargo run`, not durable.

use super::{now_ms, Follow, Retention, Store, StoreError, StoredMessage};
use crate::notify::registration::{Kind, PushKeys, Registration};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

#[derive(Default)]
struct AppData {
    /// (user, channel) → from_seq
    follows: BTreeMap<(String, String), u64>,
    messages: HashMap<String, VecDeque<StoredMessage>>,
    max_seq: u64,
    /// (channel, kind, target) → Web Push keys
    registrations: BTreeMap<(String, Kind, String), Option<PushKeys>>,
}

/// Follows and messages in process memory.
pub struct MemoryStore {
    apps: Mutex<HashMap<String, AppData>>,
    retention: Retention,
}

impl MemoryStore {
    /// An empty store with the given retention.
    pub fn new(retention: Retention) -> Self {
        MemoryStore {
            apps: Mutex::default(),
            retention,
        }
    }

    fn with_app<T>(&self, app_id: &str, f: impl FnOnce(&mut AppData) -> T) -> T {
        // A poisoned lock only means another thread panicked mid-update;
        // the maps are still usable.
        let mut apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        f(apps.entry(app_id.to_owned()).or_default())
    }

    fn live(&self, message: &StoredMessage, now: u64) -> bool {
        message.time_ms + self.retention.ttl_ms > now
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn follow(&self, app_id: &str, follow: &Follow) -> Result<bool, StoreError> {
        Ok(self.with_app(app_id, |app| {
            let key = (follow.user_id.clone(), follow.channel.clone());
            match app.follows.entry(key) {
                std::collections::btree_map::Entry::Occupied(_) => false,
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(follow.from_seq);
                    true
                }
            }
        }))
    }

    async fn unfollow(
        &self,
        app_id: &str,
        user_id: &str,
        channel: &str,
    ) -> Result<bool, StoreError> {
        Ok(self.with_app(app_id, |app| {
            app.follows
                .remove(&(user_id.to_owned(), channel.to_owned()))
                .is_some()
        }))
    }

    async fn follows(&self, app_id: &str) -> Result<Vec<Follow>, StoreError> {
        Ok(self.with_app(app_id, |app| {
            app.follows
                .iter()
                .map(|((user_id, channel), from_seq)| Follow {
                    user_id: user_id.clone(),
                    channel: channel.clone(),
                    from_seq: *from_seq,
                })
                .collect()
        }))
    }

    async fn subscriptions(&self, app_id: &str, user_id: &str) -> Result<Vec<Follow>, StoreError> {
        Ok(self
            .follows(app_id)
            .await?
            .into_iter()
            .filter(|f| f.user_id == user_id)
            .collect())
    }

    async fn append(&self, app_id: &str, messages: &[StoredMessage]) -> Result<(), StoreError> {
        let max = self.retention.max_per_channel;
        self.with_app(app_id, |app| {
            for message in messages {
                app.max_seq = app.max_seq.max(message.seq);
                let kept = app.messages.entry(message.channel.clone()).or_default();
                kept.push_back(message.clone());
                while kept.len() > max {
                    kept.pop_front();
                }
            }
        });
        Ok(())
    }

    async fn messages(
        &self,
        app_id: &str,
        channel: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let now = now_ms();
        Ok(self.with_app(app_id, |app| {
            let Some(kept) = app.messages.get(channel) else {
                return Vec::new();
            };
            let mut newest: Vec<StoredMessage> = kept
                .iter()
                .rev()
                .filter(|m| m.seq > after && self.live(m, now))
                .take(limit)
                .cloned()
                .collect();
            newest.reverse();
            newest
        }))
    }

    async fn max_seq(&self, app_id: &str) -> Result<u64, StoreError> {
        Ok(self.with_app(app_id, |app| app.max_seq))
    }

    async fn trim(&self, app_id: &str, channel: &str) -> Result<(), StoreError> {
        let now = now_ms();
        self.with_app(app_id, |app| {
            if let Some(kept) = app.messages.get_mut(channel) {
                // Oldest first: only the expired front needs looking at.
                while kept
                    .front()
                    .is_some_and(|m| m.time_ms + self.retention.ttl_ms <= now)
                {
                    kept.pop_front();
                }
            }
        });
        Ok(())
    }

    async fn register(
        &self,
        app_id: &str,
        registration: &Registration,
    ) -> Result<bool, StoreError> {
        Ok(self.with_app(app_id, |app| {
            let key = (
                registration.channel.clone(),
                registration.kind,
                registration.target.clone(),
            );
            app.registrations
                .insert(key, registration.keys.clone())
                .is_none()
        }))
    }

    async fn unregister(
        &self,
        app_id: &str,
        channel: &str,
        kind: Kind,
        target: &str,
    ) -> Result<bool, StoreError> {
        Ok(self.with_app(app_id, |app| {
            app.registrations
                .remove(&(channel.to_owned(), kind, target.to_owned()))
                .is_some()
        }))
    }

    async fn registrations(&self, app_id: &str) -> Result<Vec<Registration>, StoreError> {
        Ok(self.with_app(app_id, |app| {
            app.registrations
                .iter()
                .map(|((channel, kind, target), keys)| Registration {
                    channel: channel.clone(),
                    kind: *kind,
                    target: target.clone(),
                    keys: keys.clone(),
                })
                .collect()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64, channel: &str, time_ms: u64) -> StoredMessage {
        StoredMessage {
            seq,
            channel: channel.into(),
            event: "e".into(),
            data: "\"d\"".into(),
            time_ms,
        }
    }

    #[tokio::test]
    async fn follows_are_idempotent() {
        let store = MemoryStore::new(Retention {
            ttl_ms: 1000,
            max_per_channel: 10,
        });
        let follow = Follow {
            user_id: "u".into(),
            channel: "c".into(),
            from_seq: 0,
        };
        assert!(store.follow("a", &follow).await.unwrap());
        assert!(!store.follow("a", &follow).await.unwrap());
        assert_eq!(store.subscriptions("a", "u").await.unwrap().len(), 1);
        assert!(store.unfollow("a", "u", "c").await.unwrap());
        assert!(!store.unfollow("a", "u", "c").await.unwrap());
    }

    #[tokio::test]
    async fn retention_by_count_and_age() {
        let store = MemoryStore::new(Retention {
            ttl_ms: 60_000,
            max_per_channel: 3,
        });
        let now = now_ms();
        let batch: Vec<_> = (1..=5).map(|seq| message(seq, "c", now)).collect();
        store.append("a", &batch).await.unwrap();
        let kept = store.messages("a", "c", 0, 10).await.unwrap();
        assert_eq!(
            kept.iter().map(|m| m.seq).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!(store.messages("a", "c", 4, 10).await.unwrap().len(), 1);
        store
            .append("a", &[message(6, "c", now - 120_000)])
            .await
            .unwrap();
        let kept = store.messages("a", "c", 0, 10).await.unwrap();
        assert!(
            kept.iter().all(|m| m.seq != 6),
            "expired message hidden on read"
        );
        assert_eq!(store.max_seq("a").await.unwrap(), 6);
    }
}
