//! pushi's `pusher:latest`: a channel's newest stored events, newest first,
//! from the channel's history (the same events, buffer and long retention
//! as the history API `GET /apps/{app_id}/channels/{channel}/history`).
//!
//! pushi keeps every persisted event of every channel in MongoDB; rusher
//! keeps the events of channels with history (`history` /
//! `history_channels`), for `history_ttl` (or `history_retention`).

use super::Hub;
use crate::apps::App;
use crate::protocol::pushi::StoredEvent;

impl Hub {
    /// Up to `count` events of `channel`, newest first, after passing over
    /// the `skip` newest. Empty for a channel without history; `Err` with a
    /// reason when the history store cannot be read.
    pub async fn latest_events(
        &self,
        app: &App,
        channel: &str,
        skip: u64,
        count: u64,
    ) -> Result<Vec<StoredEvent>, &'static str> {
        // The first page tells the latest serial; serials are consecutive
        // per channel, so the window below is exact (less when expired).
        let Some(head) = self.history_page(app, channel, 0, 1).await else {
            return Ok(Vec::new());
        };
        let newest = head?.latest.unwrap_or(0).saturating_sub(skip);
        if newest == 0 || count == 0 {
            return Ok(Vec::new());
        }
        let since = newest.saturating_sub(count);
        let limit = usize::try_from(newest - since).unwrap_or(usize::MAX);
        let page = match self.history_page(app, channel, since, limit).await {
            Some(page) => page?,
            None => return Ok(Vec::new()),
        };
        Ok(page
            .events
            .into_iter()
            .filter(|e| e.serial <= newest)
            .rev()
            .map(|e| StoredEvent {
                serial: e.serial,
                event: e.event,
                data: e.data.get().to_owned(),
                time_ms: e.time_ms,
                owner_id: e.socket_id,
            })
            .collect())
    }
}
