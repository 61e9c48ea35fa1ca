//! Long-retention histories in MongoDB ([`HistoryArchive`]), collection
//! `history`: one document per event, `{app_id, channel, serial, event,
//! data, socket_id, time_ms, expires_at, frame}`.
//!
//! Indexes: unique (app_id, channel, serial) — a retried write is a
//! duplicate-key error, ignored, so every event is stored once; (app_id,
//! serial) for the app's highest serial at start; a TTL index on
//! `expires_at` (each document carries its app's `history_retention`).
//! MongoDB's TTL monitor is coarse (once a minute), so reads also filter on
//! `expires_at`.

use super::archive::{frame_parts, ArchivedEntry, ArchivedEvent, ArchivedRange, HistoryArchive};
use super::{now_ms, StoreError};
use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Bson, DateTime, Document};
use mongodb::error::ErrorKind;
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};
use std::time::Duration;

/// MongoDB's duplicate key error code.
const DUPLICATE_KEY: i32 = 11000;

/// The `history` collection.
pub struct MongoHistory {
    events: Collection<Document>,
}

fn unavailable(error: mongodb::error::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

/// Whether an insert failed only because some events were already stored.
fn only_duplicates(error: &mongodb::error::Error) -> bool {
    match error.kind.as_ref() {
        ErrorKind::InsertMany(failure) => {
            failure.write_concern_error.is_none()
                && failure
                    .write_errors
                    .as_ref()
                    .is_some_and(|errors| errors.iter().all(|e| e.code == DUPLICATE_KEY))
        }
        ErrorKind::Write(mongodb::error::WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        _ => false,
    }
}

fn number(document: &Document, key: &str) -> u64 {
    document
        .get_i64(key)
        .or_else(|_| document.get_i32(key).map(i64::from))
        .unwrap_or(0)
        .max(0) as u64
}

fn to_document(event: &ArchivedEvent) -> Document {
    let (name, data) = match frame_parts(&event.frame) {
        Some(parts) => (parts.event, parts.data.get().to_owned()),
        None => (String::new(), "null".to_owned()),
    };
    doc! {
        "app_id": &*event.app_id,
        "channel": &*event.channel,
        "serial": event.serial as i64,
        "event": name,
        "data": data,
        "socket_id": event.socket_id.as_deref().map_or(Bson::Null, |s| Bson::String(s.to_owned())),
        "time_ms": event.time_ms as i64,
        "expires_at": DateTime::from_millis(event.expires_ms.min(i64::MAX as u64) as i64),
        "frame": event.frame.to_string(),
    }
}

fn to_entry(document: &Document) -> ArchivedEntry {
    ArchivedEntry {
        serial: number(document, "serial"),
        frame: document.get_str("frame").unwrap_or_default().to_owned(),
        time_ms: number(document, "time_ms"),
        socket_id: document.get_str("socket_id").ok().map(str::to_owned),
    }
}

impl MongoHistory {
    /// The collection in `db`, with its indexes (creating an existing index
    /// is a no-op).
    pub async fn open(db: &Database) -> Result<Self, StoreError> {
        let events: Collection<Document> = db.collection("history");
        let index = |keys: Document, options: Option<IndexOptions>| {
            IndexModel::builder().keys(keys).options(options).build()
        };
        events
            .create_indexes([
                index(
                    doc! { "app_id": 1, "channel": 1, "serial": 1 },
                    Some(IndexOptions::builder().unique(true).build()),
                ),
                index(doc! { "app_id": 1, "serial": -1 }, None),
                index(
                    doc! { "expires_at": 1 },
                    Some(
                        IndexOptions::builder()
                            .expire_after(Duration::from_secs(0))
                            .build(),
                    ),
                ),
            ])
            .await
            .map_err(unavailable)?;
        Ok(MongoHistory { events })
    }

    fn live() -> Document {
        doc! { "$gt": DateTime::from_millis(now_ms() as i64) }
    }

    async fn edge(
        &self,
        app_id: &str,
        channel: &str,
        order: i32,
    ) -> Result<Option<u64>, StoreError> {
        let found = self
            .events
            .find_one(doc! { "app_id": app_id, "channel": channel, "expires_at": Self::live() })
            .sort(doc! { "serial": order })
            .projection(doc! { "serial": 1 })
            .await
            .map_err(unavailable)?;
        Ok(found.map(|d| number(&d, "serial")))
    }
}

#[async_trait]
impl HistoryArchive for MongoHistory {
    async fn append(&self, events: &[ArchivedEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        match self
            .events
            .insert_many(events.iter().map(to_document))
            .ordered(false)
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if only_duplicates(&error) => Ok(()),
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn read(
        &self,
        app_id: &str,
        channel: &str,
        since: u64,
        limit: usize,
    ) -> Result<ArchivedRange, StoreError> {
        let after = async {
            let documents: Vec<Document> = self
                .events
                .find(doc! {
                    "app_id": app_id,
                    "channel": channel,
                    "serial": { "$gt": since.min(i64::MAX as u64) as i64 },
                    "expires_at": Self::live(),
                })
                .sort(doc! { "serial": 1 })
                .limit(limit.min(i64::MAX as usize) as i64)
                .projection(doc! { "serial": 1, "frame": 1, "time_ms": 1, "socket_id": 1 })
                .await
                .map_err(unavailable)?
                .try_collect()
                .await
                .map_err(unavailable)?;
            Ok::<_, StoreError>(documents)
        };
        let (documents, oldest, latest) = tokio::try_join!(
            after,
            self.edge(app_id, channel, 1),
            self.edge(app_id, channel, -1)
        )?;
        let mut events: Vec<ArchivedEntry> = documents.iter().map(to_entry).collect();
        // The unique index makes serials distinct; a server without it
        // (or a test double) must not make a replay repeat an event.
        events.dedup_by_key(|e| e.serial);
        Ok(ArchivedRange {
            latest,
            oldest,
            events,
        })
    }

    async fn max_serial(&self, app_id: &str, channel: Option<&str>) -> Result<u64, StoreError> {
        let mut filter = doc! { "app_id": app_id };
        if let Some(channel) = channel {
            filter.insert("channel", channel);
        }
        // Expired events count too: a serial once given is never given again.
        let newest = self
            .events
            .find_one(filter)
            .sort(doc! { "serial": -1 })
            .projection(doc! { "serial": 1 })
            .await
            .map_err(unavailable)?;
        Ok(newest.map_or(0, |d| number(&d, "serial")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_document_keeps_the_fields_and_the_frame() {
        let frame = r#"{"event":"e","channel":"c","data":"{\"i\":1}","serial":7}"#;
        let event = ArchivedEvent {
            app_id: Arc::from("a"),
            channel: Arc::from("c"),
            serial: 7,
            frame: frame.into(),
            socket_id: Some(Arc::from("1.2")),
            time_ms: 1000,
            expires_ms: 61_000,
        };
        let document = to_document(&event);
        assert_eq!(document.get_str("event").unwrap(), "e");
        assert_eq!(document.get_str("data").unwrap(), r#""{\"i\":1}""#);
        assert_eq!(document.get_i64("serial").unwrap(), 7);
        let entry = to_entry(&document);
        assert_eq!(
            entry,
            ArchivedEntry {
                serial: 7,
                frame: frame.into(),
                time_ms: 1000,
                socket_id: Some("1.2".into()),
            }
        );
    }
}
