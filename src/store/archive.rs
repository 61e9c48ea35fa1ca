//! Long retention of channel histories (`history_retention`, README
//! "Long retention in MongoDB"): every event of a channel with history,
//! kept far longer than the hot buffer (the memory ring or the Redis
//! stream), so recovery and the history API can reach older serials.
//!
//! The trait is the seam; [`super::mongo_history`] is its one backend
//! (retention needs `store.backend = "mongodb"`). Writes are idempotent on
//! (app, channel, serial), so a batch retried after a lost reply stores each
//! event once.

use super::StoreError;
use async_trait::async_trait;
use bytestring::ByteString;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::sync::Arc;

/// One event to keep: written from the store's bounded queue.
#[derive(Debug, Clone)]
pub struct ArchivedEvent {
    /// App id.
    pub app_id: Arc<str>,
    /// Channel.
    pub channel: Arc<str>,
    /// Serial in its channel.
    pub serial: u64,
    /// The frame subscribers got, with its `"serial"` (replayed as is).
    pub frame: ByteString,
    /// The excluded socket (API `socket_id`) or a client event's sender.
    pub socket_id: Option<Arc<str>>,
    /// Unix time in milliseconds when it was published.
    pub time_ms: u64,
    /// Unix time in milliseconds when retention drops it.
    pub expires_ms: u64,
}

/// One kept event as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedEntry {
    /// Serial in its channel.
    pub serial: u64,
    /// The frame as delivered.
    pub frame: String,
    /// Unix time in milliseconds.
    pub time_ms: u64,
    /// Excluded socket or sender, when there was one.
    pub socket_id: Option<String>,
}

/// What the archive keeps of a channel after a serial.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchivedRange {
    /// Highest serial kept, `None` when nothing is.
    pub latest: Option<u64>,
    /// Lowest serial kept, `None` when nothing is.
    pub oldest: Option<u64>,
    /// Serials above the asked one, ascending, at most the asked limit.
    pub events: Vec<ArchivedEntry>,
}

/// Where long-retention histories live.
#[async_trait]
pub trait HistoryArchive: Send + Sync + 'static {
    /// Stores events; one already stored (same app, channel, serial) is
    /// left as it is, so a retried batch is harmless.
    async fn append(&self, events: &[ArchivedEvent]) -> Result<(), StoreError>;

    /// Up to `limit` unexpired events of `channel` with serial > `since`,
    /// oldest first, with the channel's oldest and latest kept serials.
    async fn read(
        &self,
        app_id: &str,
        channel: &str,
        since: u64,
        limit: usize,
    ) -> Result<ArchivedRange, StoreError>;

    /// The highest serial stored for `channel`, or for any channel of the
    /// app when `channel` is `None` (0 when none).
    async fn max_serial(&self, app_id: &str, channel: Option<&str>) -> Result<u64, StoreError>;
}

/// The parts of a stored frame a history page shows.
#[derive(Debug, Deserialize)]
pub struct FrameParts {
    /// Event name.
    pub event: String,
    /// Data as published.
    pub data: Box<RawValue>,
}

/// `event` and `data` of a delivered frame; `None` for a frame that is not
/// an event (never written by rusher).
pub fn frame_parts(frame: &str) -> Option<FrameParts> {
    serde_json::from_str(frame).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_gives_its_event_and_raw_data() {
        let parts =
            frame_parts(r#"{"event":"e","channel":"c","data":"{\"i\":1}","serial":3}"#).unwrap();
        assert_eq!(
            (parts.event.as_str(), parts.data.get()),
            ("e", r#""{\"i\":1}""#)
        );
        assert!(frame_parts("not json").is_none());
    }
}
