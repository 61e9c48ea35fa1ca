//! Where the apps managed at runtime are kept: this node's memory
//! (`[apps_store] backend = "config"`) or a MongoDB collection
//! (`backend = "mongodb"`), one document per app in the `[[apps]]` shape
//! (serde of [`AppConfig`]) with `_id` = the app id.

use crate::config::AppConfig;
use async_trait::async_trait;
use mongodb::bson::{self, doc, Bson, Document};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;
use thiserror::Error;

/// Why the apps store could not answer.
#[derive(Debug, Error)]
pub enum AppStoreError {
    /// The store cannot be reached or failed (admin API: 503).
    #[error("apps store unavailable: {0}")]
    Unavailable(String),
    /// An app with this id or key is stored already (admin API: 409).
    #[error("an app with this id or key exists already")]
    Duplicate,
}

/// One stored document, read back: the app, or why it cannot be one.
pub type StoredApp = Result<AppConfig, InvalidStoredApp>;

/// A stored document that is not a valid app (skipped, logged, counted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidStoredApp {
    /// The document's `_id`, as text.
    pub id: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The apps store's operations (all of them whole-app: no partial update
/// races with another node's write beyond last-writer-wins).
#[async_trait]
pub trait AppStore: Send + Sync {
    /// Every stored app, in id order.
    async fn list(&self) -> Result<Vec<StoredApp>, AppStoreError>;
    /// Stores a new app; [`AppStoreError::Duplicate`] when its id or key is taken.
    async fn insert(&self, app: &AppConfig) -> Result<(), AppStoreError>;
    /// Replaces the stored app of the same id; false when there is none.
    async fn replace(&self, app: &AppConfig) -> Result<bool, AppStoreError>;
    /// Removes the app; false when there was none.
    async fn delete(&self, id: &str) -> Result<bool, AppStoreError>;
    /// Whether it is shared by every node (MongoDB) or this node's alone.
    fn shared(&self) -> bool;
}

/// Apps in this node's memory: lost on restart, unknown to other nodes.
#[derive(Debug, Default)]
pub struct MemoryAppStore {
    apps: Mutex<BTreeMap<String, AppConfig>>,
}

impl MemoryAppStore {
    fn apps(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, AppConfig>> {
        self.apps
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl AppStore for MemoryAppStore {
    async fn list(&self) -> Result<Vec<StoredApp>, AppStoreError> {
        Ok(self.apps().values().cloned().map(Ok).collect())
    }

    async fn insert(&self, app: &AppConfig) -> Result<(), AppStoreError> {
        let mut apps = self.apps();
        if apps.contains_key(&app.id) || apps.values().any(|a| a.key == app.key) {
            return Err(AppStoreError::Duplicate);
        }
        apps.insert(app.id.clone(), app.clone());
        Ok(())
    }

    async fn replace(&self, app: &AppConfig) -> Result<bool, AppStoreError> {
        Ok(match self.apps().get_mut(&app.id) {
            Some(stored) => {
                *stored = app.clone();
                true
            }
            None => false,
        })
    }

    async fn delete(&self, id: &str) -> Result<bool, AppStoreError> {
        Ok(self.apps().remove(id).is_some())
    }

    fn shared(&self) -> bool {
        false
    }
}

/// Apps in a MongoDB collection (unique index on `key`).
pub struct MongoAppStore {
    apps: Collection<Document>,
}

fn unavailable(error: impl std::fmt::Display) -> AppStoreError {
    AppStoreError::Unavailable(error.to_string())
}

impl MongoAppStore {
    /// Connects (failing within `timeout` while MongoDB is down) and makes
    /// sure of the unique index on `key`.
    pub async fn connect(
        url: &str,
        database: &str,
        collection: &str,
        timeout: Duration,
    ) -> Result<Self, AppStoreError> {
        let mut options = ClientOptions::parse(url).await.map_err(unavailable)?;
        options.server_selection_timeout = Some(timeout);
        options.connect_timeout = Some(timeout);
        options.app_name = Some("rusher-apps".into());
        let client = Client::with_options(options).map_err(unavailable)?;
        let apps = client.database(database).collection::<Document>(collection);
        let unique = mongodb::options::IndexOptions::builder()
            .unique(true)
            .build();
        let index = mongodb::IndexModel::builder()
            .keys(doc! { "key": 1 })
            .options(unique)
            .build();
        apps.create_index(index).await.map_err(unavailable)?;
        Ok(MongoAppStore { apps })
    }

    /// The collection, for change streams ([`super::sync`]).
    pub fn collection(&self) -> &Collection<Document> {
        &self.apps
    }
}

/// The document of an app: its fields, `_id` = its id.
pub fn to_document(app: &AppConfig) -> Result<Document, AppStoreError> {
    let mut document = bson::to_document(app)
        .map_err(|e| AppStoreError::Unavailable(format!("cannot encode app `{}`: {e}", app.id)))?;
    document.insert("_id", app.id.clone());
    Ok(document)
}

/// The app of a stored document (its `_id` dropped: the `id` field rules).
pub fn from_document(mut document: Document) -> StoredApp {
    let id = match document.remove("_id") {
        Some(Bson::String(id)) => id,
        Some(other) => other.to_string(),
        None => String::new(),
    };
    bson::from_document::<AppConfig>(document).map_err(|e| InvalidStoredApp {
        id,
        reason: e.to_string(),
    })
}

fn is_duplicate(error: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match &*error.kind {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == 11000,
        ErrorKind::Command(e) => e.code == 11000,
        _ => error.to_string().contains("E11000"),
    }
}

#[async_trait]
impl AppStore for MongoAppStore {
    async fn list(&self) -> Result<Vec<StoredApp>, AppStoreError> {
        use futures_util::TryStreamExt;
        let cursor = self
            .apps
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .await
            .map_err(unavailable)?;
        let documents: Vec<Document> = cursor.try_collect().await.map_err(unavailable)?;
        Ok(documents.into_iter().map(from_document).collect())
    }

    async fn insert(&self, app: &AppConfig) -> Result<(), AppStoreError> {
        match self.apps.insert_one(to_document(app)?).await {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate(&e) => Err(AppStoreError::Duplicate),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn replace(&self, app: &AppConfig) -> Result<bool, AppStoreError> {
        match self
            .apps
            .replace_one(doc! { "_id": &app.id }, to_document(app)?)
            .await
        {
            Ok(result) => Ok(result.matched_count > 0),
            Err(e) if is_duplicate(&e) => Err(AppStoreError::Duplicate),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn delete(&self, id: &str) -> Result<bool, AppStoreError> {
        let result = self
            .apps
            .delete_one(doc! { "_id": id })
            .await
            .map_err(unavailable)?;
        Ok(result.deleted_count > 0)
    }

    fn shared(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_app_survives_its_document_shape() {
        let app = AppConfig {
            name: Some("shop".into()),
            max_connections: 7,
            webhooks: vec![crate::config::WebhookConfig {
                url: "http://127.0.0.1:1/hook".into(),
                event_types: vec!["channel_occupied".into()],
                filter_prefix: None,
                headers: Default::default(),
            }],
            subscription_rate: None,
            ..AppConfig::with_credentials("a1", "k1", "s1")
        };
        let document = to_document(&app).expect("encodes");
        assert_eq!(document.get_str("_id").ok(), Some("a1"));
        let back = from_document(document).expect("decodes");
        assert_eq!(back.name.as_deref(), Some("shop"));
        assert_eq!(back.max_connections, 7);
        assert_eq!(back.webhooks, app.webhooks);
        assert_eq!(back.history_size, app.history_size);
    }

    #[test]
    fn a_document_that_is_no_app_is_reported_not_fatal() {
        let bad = doc! { "_id": "x", "id": "x", "key": "k", "secret": "s", "nope": 1 };
        let error = from_document(bad).expect_err("unknown field");
        assert_eq!(error.id, "x");
        assert!(error.reason.contains("nope"), "{}", error.reason);
    }

    #[tokio::test]
    async fn the_memory_store_refuses_a_taken_id_or_key() {
        let store = MemoryAppStore::default();
        let app = AppConfig::with_credentials("a", "k", "s");
        assert!(store.insert(&app).await.is_ok());
        let same_key = AppConfig::with_credentials("b", "k", "s");
        assert!(matches!(
            store.insert(&same_key).await,
            Err(AppStoreError::Duplicate)
        ));
        assert!(store.delete("a").await.unwrap_or(false));
        assert!(!store.replace(&app).await.unwrap_or(true));
    }
}
