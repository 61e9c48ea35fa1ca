//! The MongoDB store (official `mongodb` driver, async).
//!
//! Collections:
//! - `subscriptions`: one document per app/user/channel (unique index);
//! - `messages`: one document per stored event, indexed by app/channel/seq,
//!   with a TTL index on `expires_at`.
//! - `notifications`: one document per notification registration
//!   (app/channel/kind/target unique; `p256dh`/`auth` for Web Push). TTL monitors are coarse (a real
//!   MongoDB sweeps once a minute), so reads also filter on `expires_at`.

use super::{now_ms, Follow, Retention, Store, StoreError, StoredMessage};
use crate::notify::registration::{Kind, PushKeys, Registration};
use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, DateTime, Document};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, IndexModel};
use std::time::Duration;

/// Follows and messages in MongoDB.
pub struct MongoStore {
    db: mongodb::Database,
    subscriptions: Collection<Document>,
    messages: Collection<Document>,
    notifications: Collection<Document>,
    retention: Retention,
}

fn unavailable(error: mongodb::error::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

fn get_i64(document: &Document, key: &str) -> u64 {
    document
        .get_i64(key)
        .or_else(|_| document.get_i32(key).map(i64::from))
        .unwrap_or(0)
        .max(0) as u64
}

fn get_str(document: &Document, key: &str) -> String {
    document.get_str(key).unwrap_or_default().to_owned()
}

impl MongoStore {
    /// Connects, checks the server answers, and creates the indexes.
    pub async fn connect(
        url: &str,
        database: &str,
        retention: Retention,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let mut options = ClientOptions::parse(url).await.map_err(unavailable)?;
        // Fail fast while MongoDB is down: live delivery must not wait.
        options.server_selection_timeout = Some(timeout);
        options.connect_timeout = Some(timeout);
        options.app_name = Some("rusher".into());
        let client = Client::with_options(options).map_err(unavailable)?;
        let db = client.database(database);
        db.run_command(doc! { "ping": 1 })
            .await
            .map_err(unavailable)?;
        let store = MongoStore {
            db: db.clone(),
            subscriptions: db.collection("subscriptions"),
            messages: db.collection("messages"),
            notifications: db.collection("notifications"),
            retention,
        };
        store.create_indexes().await?;
        Ok(store)
    }

    /// The long-retention history collection in the same database
    /// (README "Long retention in MongoDB").
    pub async fn history(&self) -> Result<super::mongo_history::MongoHistory, StoreError> {
        super::mongo_history::MongoHistory::open(&self.db).await
    }

    /// One `createIndexes` per collection (creating an existing index is a no-op).
    async fn create_indexes(&self) -> Result<(), StoreError> {
        let index = |keys: Document, options: Option<IndexOptions>| {
            IndexModel::builder().keys(keys).options(options).build()
        };
        let unique = IndexOptions::builder().unique(true).build();
        // Expired messages are removed by MongoDB itself, at `expires_at`.
        let ttl = IndexOptions::builder()
            .expire_after(Duration::from_secs(0))
            .build();
        self.subscriptions
            .create_indexes([
                index(
                    doc! { "app_id": 1, "user_id": 1, "channel": 1 },
                    Some(unique),
                ),
                index(doc! { "app_id": 1, "channel": 1 }, None),
            ])
            .await
            .map_err(unavailable)?;
        self.notifications
            .create_indexes([index(
                doc! { "app_id": 1, "channel": 1, "kind": 1, "target": 1 },
                Some(IndexOptions::builder().unique(true).build()),
            )])
            .await
            .map_err(unavailable)?;
        self.messages
            .create_indexes([
                index(doc! { "app_id": 1, "channel": 1, "seq": -1 }, None),
                index(doc! { "app_id": 1, "seq": -1 }, None),
                index(doc! { "expires_at": 1 }, Some(ttl)),
            ])
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// A registration document; `None` for an unknown kind (a newer
    /// version's), which is skipped rather than failing the whole load.
    fn registration_from(document: &Document) -> Option<Registration> {
        let kind = Kind::ALL
            .into_iter()
            .find(|kind| document.get_str("kind").ok() == Some(kind.as_str()))?;
        let keys = (kind == Kind::WebPush).then(|| PushKeys {
            p256dh: get_str(document, "p256dh"),
            auth: get_str(document, "auth"),
        });
        Some(Registration {
            channel: get_str(document, "channel"),
            kind,
            target: get_str(document, "target"),
            keys,
        })
    }

    fn follow_from(document: &Document) -> Follow {
        Follow {
            user_id: get_str(document, "user_id"),
            channel: get_str(document, "channel"),
            from_seq: get_i64(document, "from_seq"),
        }
    }

    async fn find_follows(&self, filter: Document) -> Result<Vec<Follow>, StoreError> {
        let documents: Vec<Document> = self
            .subscriptions
            .find(filter)
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)?;
        Ok(documents.iter().map(Self::follow_from).collect())
    }
}

#[async_trait]
impl Store for MongoStore {
    async fn follow(&self, app_id: &str, follow: &Follow) -> Result<bool, StoreError> {
        let result = self
            .subscriptions
            .update_one(
                doc! { "app_id": app_id, "user_id": &follow.user_id, "channel": &follow.channel },
                doc! { "$setOnInsert": {
                    "from_seq": follow.from_seq as i64,
                    "created_at": DateTime::now(),
                } },
            )
            .upsert(true)
            .await
            .map_err(unavailable)?;
        Ok(result.upserted_id.is_some())
    }

    async fn unfollow(
        &self,
        app_id: &str,
        user_id: &str,
        channel: &str,
    ) -> Result<bool, StoreError> {
        let result = self
            .subscriptions
            .delete_one(doc! { "app_id": app_id, "user_id": user_id, "channel": channel })
            .await
            .map_err(unavailable)?;
        Ok(result.deleted_count > 0)
    }

    async fn follows(&self, app_id: &str) -> Result<Vec<Follow>, StoreError> {
        self.find_follows(doc! { "app_id": app_id }).await
    }

    async fn subscriptions(&self, app_id: &str, user_id: &str) -> Result<Vec<Follow>, StoreError> {
        self.find_follows(doc! { "app_id": app_id, "user_id": user_id })
            .await
    }

    async fn append(&self, app_id: &str, messages: &[StoredMessage]) -> Result<(), StoreError> {
        if messages.is_empty() {
            return Ok(());
        }
        let documents = messages.iter().map(|m| {
            doc! {
                "app_id": app_id,
                "channel": &m.channel,
                "seq": m.seq as i64,
                "event": &m.event,
                "data": &m.data,
                "time_ms": m.time_ms as i64,
                "expires_at": DateTime::from_millis((m.time_ms + self.retention.ttl_ms) as i64),
            }
        });
        self.messages
            .insert_many(documents)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn messages(
        &self,
        app_id: &str,
        channel: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let limit = limit.min(self.retention.max_per_channel) as i64;
        // The newest `max_per_channel` are the ones retention keeps; of
        // those, the ones after `after`.
        let documents: Vec<Document> = self
            .messages
            .find(doc! {
                "app_id": app_id,
                "channel": channel,
                "expires_at": { "$gt": DateTime::from_millis(now_ms() as i64) },
            })
            .sort(doc! { "seq": -1 })
            .limit(self.retention.max_per_channel as i64)
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)?;
        let mut newest: Vec<StoredMessage> = documents
            .iter()
            .map(|d| StoredMessage {
                seq: get_i64(d, "seq"),
                channel: get_str(d, "channel"),
                event: get_str(d, "event"),
                data: get_str(d, "data"),
                time_ms: get_i64(d, "time_ms"),
            })
            .filter(|m| m.seq > after)
            .take(limit as usize)
            .collect();
        newest.reverse();
        Ok(newest)
    }

    async fn max_seq(&self, app_id: &str) -> Result<u64, StoreError> {
        let newest = self
            .messages
            .find_one(doc! { "app_id": app_id })
            .sort(doc! { "seq": -1 })
            .await
            .map_err(unavailable)?;
        Ok(newest.map_or(0, |d| get_i64(&d, "seq")))
    }

    async fn trim(&self, app_id: &str, channel: &str) -> Result<(), StoreError> {
        let oldest_kept = self
            .messages
            .find_one(doc! { "app_id": app_id, "channel": channel })
            .sort(doc! { "seq": -1 })
            .skip(self.retention.max_per_channel.saturating_sub(1) as u64)
            .await
            .map_err(unavailable)?;
        if let Some(oldest_kept) = oldest_kept {
            let seq = get_i64(&oldest_kept, "seq") as i64;
            self.messages
                .delete_many(doc! { "app_id": app_id, "channel": channel, "seq": { "$lt": seq } })
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn register(
        &self,
        app_id: &str,
        registration: &Registration,
    ) -> Result<bool, StoreError> {
        let (p256dh, auth) = registration
            .keys
            .as_ref()
            .map_or(("", ""), |keys| (keys.p256dh.as_str(), keys.auth.as_str()));
        let result = self
            .notifications
            .update_one(
                doc! {
                    "app_id": app_id,
                    "channel": &registration.channel,
                    "kind": registration.kind.as_str(),
                    "target": &registration.target,
                },
                doc! {
                    "$set": { "p256dh": p256dh, "auth": auth },
                    "$setOnInsert": { "created_at": DateTime::now() },
                },
            )
            .upsert(true)
            .await
            .map_err(unavailable)?;
        Ok(result.upserted_id.is_some())
    }

    async fn unregister(
        &self,
        app_id: &str,
        channel: &str,
        kind: Kind,
        target: &str,
    ) -> Result<bool, StoreError> {
        let result = self
            .notifications
            .delete_one(doc! {
                "app_id": app_id, "channel": channel, "kind": kind.as_str(), "target": target,
            })
            .await
            .map_err(unavailable)?;
        Ok(result.deleted_count > 0)
    }

    async fn registrations(&self, app_id: &str) -> Result<Vec<Registration>, StoreError> {
        self.find_registrations(doc! { "app_id": app_id }).await
    }

    async fn registrations_on(
        &self,
        app_id: &str,
        channel: &str,
    ) -> Result<Vec<Registration>, StoreError> {
        self.find_registrations(doc! { "app_id": app_id, "channel": channel })
            .await
    }
}

impl MongoStore {
    /// The registrations matching `filter`.
    async fn find_registrations(&self, filter: Document) -> Result<Vec<Registration>, StoreError> {
        let documents: Vec<Document> = self
            .notifications
            .find(filter)
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)?;
        Ok(documents
            .iter()
            .filter_map(Self::registration_from)
            .collect())
    }
}
