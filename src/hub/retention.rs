//! Long retention of channel histories on the hub's side
//! (`history_retention`, README "Long retention in MongoDB"): serials that
//! never restart below the archive, and the archive reads that recovery and
//! the history API fall back to when the hot buffer no longer holds a range.
//!
//! Writes leave through the store's bounded queue
//! ([`Persistence::record_history`]), after the publish released the
//! channel's history lock; reads run outside every lock, bounded by
//! `store.timeout_ms`, and answer "unavailable" at once while the store is
//! known to be down (the same health flag the offline subscriptions use).
//!
//! **Serials.** One node gives serials from its memory ring, which starts a
//! channel above every serial an idle (swept) channel of the app reached,
//! and from 1 in a new process. With retention the archive holds older
//! serials, so: at start each app's floor is raised to its highest archived
//! serial (one indexed query per app), and the first use of a channel (a
//! publish or a subscribe that creates its history) seeds it from that
//! channel's highest archived serial, after the writes queued before it
//! are written, so its serials go on by exactly 1 and a client's old
//! `since` still joins. When that read cannot be trusted (the store is
//! down or slow, or a history write was ever dropped) the channel starts
//! above the app's floor instead: a jump, which a recovery reports as a gap
//! rather than ever taking new events for a continuation.

use super::history::{AppHistory, Fetched, Page, PageEvent};
use super::persistence::Persistence;
use crate::apps::App;
use crate::store::archive::{frame_parts, ArchivedRange, HistoryArchive};
use crate::store::StoreError;
use bytestring::ByteString;
use std::sync::Arc;
use std::time::Duration;

/// The reason sent in `pusher:recovery_failed` (and the 503 of the history
/// API) when the range needs the archive and MongoDB cannot be reached.
pub const ARCHIVE_UNAVAILABLE: &str =
    "history is unavailable: its long-retention store (MongoDB) cannot be reached";

/// The reason sent when the missed events outnumber the connection's free
/// outgoing queue (the client pages the history API instead).
pub const REPLAY_TOO_LONG: &str = "the replay does not fit in the connection's outgoing queue";

/// Longest wait for the writes queued before a read (normally milliseconds).
const SETTLE: Duration = Duration::from_millis(500);

/// What the archive gave a recovery.
#[derive(Debug)]
pub enum Archived {
    /// The events after `since` (all of them, within the asked limit).
    Events(Fetched),
    /// More events than the limit: the replay cannot fit; the oldest kept serial.
    TooMany(Option<u64>),
}

/// The hub's handle on the archive.
pub struct LongHistory {
    persistence: Arc<Persistence>,
    archive: Arc<dyn HistoryArchive>,
    timeout: Duration,
}

impl LongHistory {
    /// A handle over `persistence`'s archive, `None` without one (memory
    /// store); reads wait at most `timeout`.
    pub fn new(persistence: Arc<Persistence>, timeout: Duration) -> Option<Self> {
        let archive = persistence.archive()?.clone();
        Some(LongHistory {
            persistence,
            archive,
            timeout,
        })
    }

    /// Raises `history`'s floor to the app's highest archived serial (start).
    pub async fn raise_floor(&self, app: &App, history: &AppHistory) -> Result<(), StoreError> {
        let max = self.archive.max_serial(&app.id, None).await?;
        history.raise_floor(max);
        Ok(())
    }

    fn unavailable(&self, error: StoreError) -> &'static str {
        let _ = self.persistence.outcome::<()>(Err(error));
        ARCHIVE_UNAVAILABLE
    }

    async fn bounded<T>(
        &self,
        read: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, &'static str> {
        match tokio::time::timeout(self.timeout, read).await {
            Ok(result) => self
                .persistence
                .outcome(result)
                .map_err(|_| ARCHIVE_UNAVAILABLE),
            Err(_) => Err(self.unavailable(StoreError::Unavailable(format!(
                "no answer within {} ms (store.timeout_ms)",
                self.timeout.as_millis()
            )))),
        }
    }

    /// Before the first use of `channel` on this node: creates its history
    /// so its serials follow the archive's (see the module doc). Does
    /// nothing for an app without retention or a channel already here.
    pub async fn seed(&self, app: &App, history: &AppHistory, channel: &str) {
        if app.history_retention == 0
            || history.contains(channel)
            || !self.persistence.is_healthy()
            || !self.persistence.history_settled(SETTLE).await
        {
            return;
        }
        let read = self.archive.max_serial(&app.id, Some(channel));
        // Dropped writes may have held higher serials: keep the floor.
        if let (Ok(last), false) = (
            self.bounded(read).await,
            self.persistence.history_dropped_any(),
        ) {
            history.create_after(channel, last);
        }
    }

    async fn read(
        &self,
        app: &App,
        channel: &str,
        since: u64,
        limit: usize,
    ) -> Result<ArchivedRange, &'static str> {
        if !self.persistence.is_healthy() {
            return Err(ARCHIVE_UNAVAILABLE);
        }
        // What this node queued before now is in the archive (or dropped).
        self.persistence.history_settled(SETTLE).await;
        self.bounded(self.archive.read(&app.id, channel, since, limit))
            .await
    }

    /// The archived events of `channel` after `since` for a recovery, at
    /// most `limit` (the connection's free queue), to join with the buffer
    /// under the channel's lock ([`super::history::ChannelHistory::join`]).
    pub async fn fetch(
        &self,
        app: &App,
        channel: &str,
        since: u64,
        limit: usize,
    ) -> Result<Archived, &'static str> {
        let range = self
            .read(app, channel, since, limit.saturating_add(1))
            .await?;
        if range.events.len() > limit {
            return Ok(Archived::TooMany(range.oldest));
        }
        Ok(Archived::Events(Fetched {
            latest: range.latest,
            oldest: range.oldest,
            events: range
                .events
                .into_iter()
                .map(|e| (e.serial, ByteString::from(e.frame)))
                .collect(),
        }))
    }

    /// A history API page from the archive (same shape as the buffer's).
    pub async fn page(
        &self,
        app: &App,
        channel: &str,
        since: u64,
        limit: usize,
    ) -> Result<Page, &'static str> {
        let range = self
            .read(app, channel, since, limit.saturating_add(1))
            .await?;
        let more = range.events.len() > limit;
        let events: Vec<PageEvent> = range
            .events
            .into_iter()
            .take(limit)
            .filter_map(|e| {
                let parts = frame_parts(&e.frame)?;
                Some(PageEvent {
                    serial: e.serial,
                    event: parts.event,
                    data: parts.data,
                    time_ms: e.time_ms,
                    socket_id: e.socket_id,
                })
            })
            .collect();
        Ok(Page {
            next: if more {
                events.last().map(|e| e.serial)
            } else {
                None
            },
            events,
            oldest: range.oldest,
            latest: range.latest,
        })
    }
}

/// An archive page followed by the buffer's events after it (`tail`, read
/// with `room` = the page's free places, at least 1): events still on their
/// way to the archive show, and `next` says whether more remain.
pub fn extend_page(mut page: Page, tail: Page, room: usize) -> Page {
    page.latest = page.latest.max(tail.latest);
    page.oldest = match (page.oldest, tail.oldest) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if page.next.is_some() {
        return page;
    }
    if room == 0 {
        if !tail.events.is_empty() {
            page.next = page.events.last().map(|e| e.serial);
        }
        return page;
    }
    page.next = tail.next;
    page.events.extend(tail.events);
    page
}

/// Whether a read of the hot store after `since` misses its start: events
/// after `since` exist but the first one kept is not `since + 1`.
pub fn needs_older(fetched: &Fetched, since: u64) -> bool {
    fetched.latest.is_some_and(|latest| latest > since)
        && fetched.events.first().is_none_or(|e| e.0 > since + 1)
}

/// The same for a hot store's history page.
pub fn page_needs_older(page: &Page, since: u64) -> bool {
    page.latest.is_some_and(|latest| latest > since)
        && page.events.first().is_none_or(|e| e.serial > since + 1)
}

/// An archive read (`older`) and a hot-store read (`newer`, the Redis
/// stream) of the same channel after the same serial, as one: the archive's
/// events below the stream's first, then the stream's.
pub fn merge_older(older: Fetched, newer: Fetched) -> Fetched {
    let first_newer = newer.events.first().map_or(u64::MAX, |e| e.0);
    let mut events: Vec<(u64, ByteString)> = older
        .events
        .into_iter()
        .filter(|e| e.0 < first_newer)
        .collect();
    events.extend(newer.events);
    Fetched {
        latest: older.latest.max(newer.latest),
        oldest: match (older.oldest, newer.oldest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
        events,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn page(serials: impl IntoIterator<Item = u64>, next: Option<u64>) -> Page {
        let events: Vec<PageEvent> = serials
            .into_iter()
            .map(|serial| PageEvent {
                serial,
                event: "e".into(),
                data: RawValue::from_string("1".into()).unwrap(),
                time_ms: 0,
                socket_id: None,
            })
            .collect();
        Page {
            oldest: events.first().map(|e| e.serial),
            latest: events.last().map(|e| e.serial),
            next,
            events,
        }
    }

    fn serials(page: &Page) -> Vec<u64> {
        page.events.iter().map(|e| e.serial).collect()
    }

    #[test]
    fn an_archive_page_is_followed_by_the_buffer_until_the_limit() {
        let joined = extend_page(page(1..=3, None), page(4..=5, Some(5)), 2);
        assert_eq!(serials(&joined), vec![1, 2, 3, 4, 5]);
        assert_eq!(
            (joined.next, joined.oldest, joined.latest),
            (Some(5), Some(1), Some(5))
        );
        // A full archive page says more remain when the buffer has more.
        let full = extend_page(page(1..=3, None), page(4..=4, None), 0);
        assert_eq!((serials(&full), full.next), (vec![1, 2, 3], Some(3)));
        let done = extend_page(page(1..=3, None), page([], None), 0);
        assert_eq!(done.next, None);
        // An archive page with a next cursor is left as it is.
        let more = extend_page(page(1..=2, Some(2)), page(9..=9, None), 1);
        assert_eq!(
            (serials(&more), more.next, more.latest),
            (vec![1, 2], Some(2), Some(9))
        );
    }

    fn fetched(latest: u64, serials: impl IntoIterator<Item = u64>) -> Fetched {
        let events: Vec<(u64, ByteString)> = serials
            .into_iter()
            .map(|s| (s, format!("f{s}").into()))
            .collect();
        Fetched {
            latest: Some(latest),
            oldest: events.first().map(|e| e.0),
            events,
        }
    }

    #[test]
    fn a_hot_read_needs_the_archive_only_when_it_misses_its_start() {
        assert!(needs_older(&fetched(12, 7..=12), 3));
        assert!(!needs_older(&fetched(12, 4..=12), 3));
        assert!(!needs_older(&fetched(12, []), 12), "nothing missed");
        assert!(needs_older(&fetched(12, []), 5), "the stream expired");
        assert!(page_needs_older(&page(7..=9, None), 3));
        assert!(!page_needs_older(&page(4..=9, None), 3));
    }

    #[test]
    fn an_archive_read_goes_before_the_stream_without_duplicates() {
        let merged = merge_older(fetched(8, 3..=8), fetched(12, 7..=12));
        let got: Vec<u64> = merged.events.iter().map(|e| e.0).collect();
        assert_eq!(got, (3..=12).collect::<Vec<_>>());
        assert_eq!((merged.oldest, merged.latest), (Some(3), Some(12)));
        let only_old = merge_older(fetched(5, 3..=5), Fetched::default());
        assert_eq!(only_old.events.len(), 3);
    }
}
