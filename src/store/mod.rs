//! Persistence of offline subscriptions, of the messages published on
//! followed channels, and of notification registrations
//! ([`crate::notify`]), behind one trait.
//!
//! - [`memory`]: in-process maps; the default, lost on restart.
//! - [`mongo`]: MongoDB (the official driver), durable.
//! - [`archive`]: long retention of channel histories (the trait), and
//!   [`mongo_history`], its MongoDB backend.

pub mod archive;
pub mod memory;
pub mod mongo;
pub mod mongo_history;

use crate::notify::registration::{Kind, Registration};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A stored event of a followed channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// Monotonic per app.
    pub seq: u64,
    /// The channel it was published on.
    pub channel: String,
    /// The event name.
    pub event: String,
    /// The data as JSON text, exactly as it appears in a delivered frame.
    pub data: String,
    /// When it was published (unix ms).
    pub time_ms: u64,
}

/// A user following a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Follow {
    /// The user.
    pub user_id: String,
    /// The followed channel.
    pub channel: String,
    /// The app's sequence when the follow began: older messages are not the user's.
    pub from_seq: u64,
}

/// Why the store could not answer.
#[derive(Debug, Clone, Error)]
pub enum StoreError {
    /// The backend is unreachable or failed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// Where offline subscriptions and messages live.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Records that `user_id` follows `channel` (idempotent); true when new.
    async fn follow(&self, app_id: &str, follow: &Follow) -> Result<bool, StoreError>;

    /// Forgets a follow (idempotent); true when it existed.
    async fn unfollow(
        &self,
        app_id: &str,
        user_id: &str,
        channel: &str,
    ) -> Result<bool, StoreError>;

    /// Every follow of an app (to build the in-memory index).
    async fn follows(&self, app_id: &str) -> Result<Vec<Follow>, StoreError>;

    /// The follows of one user.
    async fn subscriptions(&self, app_id: &str, user_id: &str) -> Result<Vec<Follow>, StoreError>;

    /// Stores messages (already sequenced).
    async fn append(&self, app_id: &str, messages: &[StoredMessage]) -> Result<(), StoreError>;

    /// The newest `limit` live messages of `channel` with `seq > after`,
    /// oldest first; expired or over-count messages are never returned.
    async fn messages(
        &self,
        app_id: &str,
        channel: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// The highest sequence stored for the app (0 when none).
    async fn max_seq(&self, app_id: &str) -> Result<u64, StoreError>;

    /// Drops what retention no longer keeps (age and count per channel).
    async fn trim(&self, app_id: &str, channel: &str) -> Result<(), StoreError>;

    /// Records a notification registration, identified by channel, kind
    /// and target (idempotent; a Web Push registration's keys are replaced);
    /// true when new.
    async fn register(&self, app_id: &str, registration: &Registration)
        -> Result<bool, StoreError>;

    /// Forgets a notification registration (idempotent); true when it existed.
    async fn unregister(
        &self,
        app_id: &str,
        channel: &str,
        kind: Kind,
        target: &str,
    ) -> Result<bool, StoreError>;

    /// Every notification registration of an app (to build the index).
    async fn registrations(&self, app_id: &str) -> Result<Vec<Registration>, StoreError>;

    /// The notification registrations of one channel of an app (to reload
    /// it after another node changed it). Default: filtered from
    /// [`Store::registrations`].
    async fn registrations_on(
        &self,
        app_id: &str,
        channel: &str,
    ) -> Result<Vec<Registration>, StoreError> {
        let mut registrations = self.registrations(app_id).await?;
        registrations.retain(|registration| registration.channel == channel);
        Ok(registrations)
    }
}

/// How long and how many messages are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Messages older than this are gone (ms).
    pub ttl_ms: u64,
    /// At most this many per channel.
    pub max_per_channel: usize,
}

/// Unix time in ms.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
