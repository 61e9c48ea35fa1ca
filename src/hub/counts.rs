//! Subscription counting (Pusher's per-app "subscription count" setting):
//! subscribers of a non-presence channel get
//! `pusher_internal:subscription_count` `{"subscription_count":N}` when the
//! channel's count changed, at most once per `subscription_count_interval_ms`
//! per channel; the last change of a burst is always sent (trailing edge).
//!
//! Joins and leaves only mark their channel in [`CountChanges`] (a sharded
//! map, no lock shared by every channel; nothing at all for apps without
//! the option). One task per app ([`CountTicker`] and the hub's
//! `announce_subscription_counts`) wakes four times per interval, takes the
//! marked channels whose last frame is older than the interval, and asks the
//! adapter to send their deployment-wide counts (with Redis: coalesced for
//! the whole cluster, see `adapter::redis::counts`). A new subscriber's
//! join forces a frame even when the count ended where it was sent last, so
//! it learns the count within one interval, as on Pusher where the count is
//! sent on every subscription. An empty channel gets no frame.

use crate::adapter::CountSent;
use dashmap::DashMap;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Channels whose count changed on this node since the last tick, with
/// whether a new subscriber joined (its count must be sent, changed or not).
#[derive(Debug, Default)]
pub struct CountChanges {
    changed: DashMap<String, bool>,
}

impl CountChanges {
    /// Marks `channel` changed; `joined`: a socket subscribed.
    pub fn changed(&self, channel: &str, joined: bool) {
        match self.changed.get_mut(channel) {
            Some(mut entry) => *entry |= joined,
            None => {
                self.changed.insert(channel.to_owned(), joined);
            }
        }
    }

    /// Takes every mark.
    fn take(&self) -> Vec<(String, bool)> {
        let channels: Vec<String> = self.changed.iter().map(|e| e.key().clone()).collect();
        channels
            .into_iter()
            .filter_map(|channel| self.changed.remove(&channel))
            .collect()
    }
}

/// One app's counting state between ticks, owned by its task.
#[derive(Debug)]
pub struct CountTicker {
    /// The least time between two frames of one channel.
    pub gap: Duration,
    /// Channels sent to within the last `gap`, and when.
    sent: HashMap<String, Instant>,
    /// Changed channels still waiting for their turn.
    waiting: HashMap<String, bool>,
}

impl CountTicker {
    /// A ticker sending at most once per `gap` per channel.
    pub fn new(gap: Duration) -> Self {
        CountTicker {
            gap,
            sent: HashMap::new(),
            waiting: HashMap::new(),
        }
    }

    /// How often the task wakes: a quarter of the gap, so a change waits at
    /// most `gap` plus a quarter of it.
    pub fn period(&self) -> Duration {
        (self.gap / 4).max(Duration::from_millis(10))
    }

    /// Takes the marked channels in and returns those whose turn it is
    /// (not sent to within `gap`), with their `force` flag.
    pub fn due(&mut self, changes: &CountChanges, now: Instant) -> Vec<(String, bool)> {
        for (channel, joined) in changes.take() {
            *self.waiting.entry(channel).or_default() |= joined;
        }
        let gap = self.gap;
        self.sent.retain(|_, at| now.duration_since(*at) < gap);
        let due: Vec<String> = self
            .waiting
            .keys()
            .filter(|channel| !self.sent.contains_key(*channel))
            .cloned()
            .collect();
        due.into_iter()
            .filter_map(|channel| self.waiting.remove_entry(&channel))
            .collect()
    }

    /// Records what became of a channel's turn.
    pub fn record(&mut self, channel: String, force: bool, outcome: CountSent, now: Instant) {
        match outcome {
            CountSent::Sent => {
                self.sent.insert(channel, now);
            }
            // Another node sent within the gap: this change is sent after it.
            CountSent::Later => {
                *self.waiting.entry(channel).or_default() |= force;
            }
            CountSent::Done => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_sent_once_then_its_last_change_after_the_gap() {
        let changes = CountChanges::default();
        let mut ticker = CountTicker::new(Duration::from_secs(1));
        let t0 = Instant::now();
        changes.changed("room", true);
        changes.changed("room", false);
        let due = ticker.due(&changes, t0);
        assert_eq!(
            due,
            vec![("room".to_string(), true)],
            "joins and leaves merge"
        );
        ticker.record("room".into(), true, CountSent::Sent, t0);
        // More changes within the gap wait...
        changes.changed("room", false);
        assert!(ticker
            .due(&changes, t0 + Duration::from_millis(500))
            .is_empty());
        // ...and go once it passed: the trailing edge is never lost.
        let due = ticker.due(&changes, t0 + Duration::from_millis(1000));
        assert_eq!(due, vec![("room".to_string(), false)]);
    }

    #[test]
    fn a_turn_another_node_took_is_tried_again() {
        let changes = CountChanges::default();
        let mut ticker = CountTicker::new(Duration::from_secs(1));
        let t0 = Instant::now();
        changes.changed("room", true);
        let due = ticker.due(&changes, t0);
        assert_eq!(due.len(), 1);
        ticker.record("room".into(), true, CountSent::Later, t0);
        assert_eq!(
            ticker.due(&changes, t0 + Duration::from_millis(250)),
            vec![("room".to_string(), true)]
        );
        ticker.record("room".into(), true, CountSent::Done, t0);
        assert!(ticker
            .due(&changes, t0 + Duration::from_millis(500))
            .is_empty());
        assert!(ticker.sent.is_empty() && ticker.waiting.is_empty());
    }
}
