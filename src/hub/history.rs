//! Per-channel history with serials: a bounded ring buffer of already-encoded
//! frames per channel (count `history_size`, age `history_ttl`), the replay
//! a recovering subscriber gets, and the pages of the history API.
//!
//! The buffer logic ([`ChannelHistory`]) is pure; [`AppHistory`] holds one
//! app's channels behind a per-channel mutex. The hub holds that mutex while
//! it assigns a serial, appends and queues the frame to this node's
//! subscribers, and a recovering subscribe holds it while it joins the
//! channel and queues its replay: so a recovery sees every event exactly
//! once, either in the replay or live, never both, never neither.
//!
//! Memory: at most `history_size` events per channel, each at most
//! `max_event_data_bytes` plus its frame, for the channels published on or
//! subscribed to in the last `history_ttl` (a channel whose events all
//! expired is swept every minute). `rusher_history_channels` and `rusher_history_events` count it.

use bytestring::ByteString;
use dashmap::DashMap;
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One event kept in a channel's history.
#[derive(Debug, Clone)]
pub struct HistoryEvent {
    /// Serial in its channel, from 1 (see [`AppHistory`] for restarts).
    pub serial: u64,
    /// Event name.
    pub event: Arc<str>,
    /// Data as published (raw JSON: a string for HTTP API events).
    pub data: Arc<RawValue>,
    /// Unix time in milliseconds when it was published.
    pub time_ms: u64,
    /// The socket excluded (API `socket_id`) or the client event's sender.
    pub socket_id: Option<Arc<str>>,
    /// The frame subscribers got, with its `"serial"`.
    pub frame: ByteString,
    expires: Instant,
}

/// Why a recovery cannot replay what the client missed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// Oldest serial still kept, if any.
    pub oldest: Option<u64>,
    /// Why, in words (sent in `pusher:recovery_failed`).
    pub reason: &'static str,
}

/// A page of the history API: oldest first.
#[derive(Debug, Default, Serialize)]
pub struct Page {
    /// Events with serial > `since`, at most `limit`.
    pub events: Vec<PageEvent>,
    /// The `since` of the next page when more remain, else null.
    pub next: Option<u64>,
    /// Oldest serial kept, null when none.
    pub oldest: Option<u64>,
    /// Latest serial assigned on the channel, null when none.
    pub latest: Option<u64>,
}

/// One event of a [`Page`].
#[derive(Debug, Serialize)]
pub struct PageEvent {
    /// Serial in its channel.
    pub serial: u64,
    /// Event name.
    pub event: String,
    /// Data as published.
    pub data: Box<RawValue>,
    /// Unix time in milliseconds.
    pub time_ms: u64,
    /// Excluded socket or sender, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_id: Option<String>,
}

/// One channel's buffer: pure, so the rules are unit-tested without sockets.
#[derive(Debug)]
pub struct ChannelHistory {
    events: VecDeque<HistoryEvent>,
    /// Serial of the last event appended (the first event gets `first`).
    last: u64,
    first: u64,
    touched: Instant,
    /// Set by the sweep under the lock: a publisher holding a stale handle retries.
    removed: bool,
}

impl ChannelHistory {
    /// An empty history whose first event gets serial `first`.
    pub fn new(first: u64, now: Instant) -> Self {
        ChannelHistory {
            events: VecDeque::new(),
            last: first.saturating_sub(1),
            first,
            touched: now,
            removed: false,
        }
    }

    /// Drops events past their time to live; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.events.len();
        while self.events.front().is_some_and(|e| e.expires <= now) {
            self.events.pop_front();
        }
        before - self.events.len()
    }

    /// Appends the next event, whose frame `encode` builds from its serial;
    /// drops the oldest beyond `size`. Returns (serial, events dropped).
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        now: Instant,
        size: usize,
        ttl: Duration,
        event: &str,
        data: &RawValue,
        socket_id: Option<&str>,
        encode: impl FnOnce(u64) -> ByteString,
    ) -> (u64, usize) {
        let mut dropped = self.expire(now);
        self.last += 1;
        let serial = self.last;
        self.events.push_back(HistoryEvent {
            serial,
            event: event.into(),
            data: Arc::from(data.to_owned()),
            time_ms: crate::store::now_ms(),
            socket_id: socket_id.map(Arc::from),
            frame: encode(serial),
            expires: now + ttl,
        });
        while self.events.len() > size.max(1) {
            self.events.pop_front();
            dropped += 1;
        }
        self.touched = now;
        (serial, dropped)
    }

    /// Mirror of a shared history (the Redis stream): appends an event the
    /// bus delivered with the serial Redis gave it. The mirror stays
    /// contiguous: a serial that does not follow the last one (a bus message
    /// missed, or the stream reset) starts it again at that serial. Returns
    /// the events dropped. Page details (event, data) are not kept: pages
    /// come from the stream.
    pub fn mirror(
        &mut self,
        now: Instant,
        size: usize,
        ttl: Duration,
        serial: u64,
        frame: ByteString,
    ) -> usize {
        let mut dropped = self.expire(now);
        if self.latest().is_none() || serial != self.last + 1 {
            dropped += self.events.len();
            self.events.clear();
            self.first = serial;
        }
        self.last = serial;
        self.events.push_back(HistoryEvent {
            serial,
            event: Arc::from(""),
            data: mirrored_data(),
            time_ms: crate::store::now_ms(),
            socket_id: None,
            frame,
            expires: now + ttl,
        });
        while self.events.len() > size.max(1) {
            self.events.pop_front();
            dropped += 1;
        }
        self.touched = now;
        dropped
    }

    /// Whether this buffer alone can answer a recovery from `since`: it has
    /// seen the channel's serials up to its latest, and keeps every one after
    /// `since` (call [`ChannelHistory::expire`] first).
    pub fn covers(&self, since: u64) -> bool {
        match self.latest() {
            Some(last) if since == last => true,
            Some(last) if since < last => self.oldest().is_some_and(|o| o <= since + 1),
            _ => false,
        }
    }

    /// Frames after `since` from a shared history: the events `fetched` from
    /// the stream, joined with this mirror (which holds every event this node
    /// handled from the bus; later ones reach the subscriber live). Refused
    /// with a [`Gap`] when the channel has no history, `since` is ahead of its
    /// latest serial, or a serial between `since` and the latest is in
    /// neither part (expired, trimmed).
    pub fn join(&self, since: u64, until: u64, fetched: &Fetched) -> Result<Vec<ByteString>, Gap> {
        let latest = fetched.latest.max(self.latest());
        let oldest = fetched.oldest.or(self.oldest());
        let Some(latest) = latest else {
            return Err(Gap {
                oldest: None,
                reason: "the channel has no history",
            });
        };
        if since > latest {
            return Err(Gap {
                oldest,
                reason: "since is ahead of the channel's latest serial (its history was reset)",
            });
        }
        // A socket already subscribed was sent everything above `until`.
        let latest = latest.min(until);
        let mut next = since + 1;
        let mut frames = Vec::new();
        // Each part is contiguous: take from it while it follows on.
        let mut take = |part: &mut dyn Iterator<Item = (u64, &ByteString)>| {
            for (serial, frame) in part {
                if serial > next || serial > latest {
                    break;
                }
                if serial == next {
                    frames.push(frame.clone());
                    next += 1;
                }
            }
        };
        take(&mut fetched.events.iter().map(|(s, f)| (*s, f)));
        take(&mut self.events.iter().map(|e| (e.serial, &e.frame)));
        if next <= latest {
            return Err(Gap {
                oldest,
                reason: "events after since are no longer in the history",
            });
        }
        Ok(frames)
    }

    /// Oldest serial kept.
    pub fn oldest(&self) -> Option<u64> {
        self.events.front().map(|e| e.serial)
    }

    /// The serial of the last event assigned, or the one before this
    /// history's first: a subscriber joining now gets every event above it live.
    pub fn last_serial(&self) -> u64 {
        self.last
    }

    /// Latest serial assigned, if any.
    pub fn latest(&self) -> Option<u64> {
        (self.last >= self.first).then_some(self.last)
    }

    /// Frames with serial > `since`, in order, or why they cannot all be given.
    /// (Call [`ChannelHistory::expire`] first.)
    pub fn replay(&self, since: u64) -> Result<Vec<ByteString>, Gap> {
        self.replay_until(since, self.last)
    }

    /// Frames with `since` < serial ≤ `until`, in order: what a socket
    /// whose live events start after `until` missed (see `hub::recovery`).
    pub fn replay_until(&self, since: u64, until: u64) -> Result<Vec<ByteString>, Gap> {
        let oldest = self.oldest();
        let until = until.min(self.last);
        if since > self.last {
            return Err(Gap {
                oldest,
                reason: "since is ahead of the channel's latest serial (its history was reset)",
            });
        }
        if since >= until {
            return Ok(Vec::new());
        }
        // Missed events exist: the first one missed must still be kept.
        match oldest {
            Some(oldest) if oldest <= since + 1 => Ok(self
                .events
                .iter()
                .filter(|e| e.serial > since && e.serial <= until)
                .map(|e| e.frame.clone())
                .collect()),
            _ => Err(Gap {
                oldest,
                reason: "events after since are no longer in the history",
            }),
        }
    }

    /// Up to `limit` events with serial > `since`, oldest first.
    pub fn page(&self, since: u64, limit: usize) -> Page {
        let mut after = self.events.iter().filter(|e| e.serial > since);
        let events: Vec<PageEvent> = after
            .by_ref()
            .take(limit)
            .map(|e| PageEvent {
                serial: e.serial,
                event: e.event.to_string(),
                data: (*e.data).to_owned(),
                time_ms: e.time_ms,
                socket_id: e.socket_id.as_deref().map(str::to_owned),
            })
            .collect();
        let more = after.next().is_some();
        Page {
            next: if more {
                events.last().map(|e| e.serial)
            } else {
                None
            },
            events,
            oldest: self.oldest(),
            latest: self.latest(),
        }
    }

    /// Events kept.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether no event is kept.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// What a shared history (the Redis stream) holds after a serial, read for
/// a recovery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    /// The channel's latest serial, `None` when it has none.
    pub latest: Option<u64>,
    /// Oldest serial still kept (within `history_size` and `history_ttl`).
    pub oldest: Option<u64>,
    /// (serial, frame) after the asked serial, oldest first, at most `history_size`.
    pub events: Vec<(u64, ByteString)>,
}

/// The `data` of a mirrored event (never read: a shared history's pages
/// come from the stream), shared so mirroring allocates nothing for it.
fn mirrored_data() -> Arc<RawValue> {
    static NULL: std::sync::OnceLock<Arc<RawValue>> = std::sync::OnceLock::new();
    NULL.get_or_init(|| {
        Arc::from(RawValue::from_string("null".into()).unwrap_or_else(|_| unreachable!()))
    })
    .clone()
}

/// One app's channel histories on this node.
///
/// Serials restart when an idle channel is swept; so that a client holding
/// an old serial can never mistake the new serials for a continuation, a
/// channel's first serial is one above the highest serial any swept channel
/// of the app reached (1 until something was swept).
#[derive(Debug, Default)]
pub struct AppHistory {
    channels: DashMap<String, Arc<Mutex<ChannelHistory>>>,
    swept_max: AtomicU64,
    events: AtomicU64,
    /// The app's `history_size` and `history_ttl`, for mirroring from the bus.
    limits: (usize, Duration),
}

/// Events counted in and out, for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Channels with a history.
    pub channels: u64,
    /// Events kept.
    pub events: u64,
}

impl AppHistory {
    /// An empty history for an app with `history_size` and `history_ttl`.
    pub fn new(size: usize, ttl: Duration) -> Self {
        AppHistory {
            limits: (size, ttl),
            ..AppHistory::default()
        }
    }

    /// The app's `history_size` and `history_ttl`.
    pub fn limits(&self) -> (usize, Duration) {
        self.limits
    }

    /// Forgets every channel (the mirrors, after bus messages may have been
    /// missed: a mirror must be contiguous, so it restarts with the next one).
    pub fn forget_all(&self) {
        self.channels.retain(|_, handle| {
            let mut locked = handle.lock().unwrap_or_else(|p| p.into_inner());
            self.events
                .fetch_sub(locked.len() as u64, Ordering::Relaxed);
            locked.removed = true;
            false
        });
    }

    /// Raises the serial every new channel starts above (long retention:
    /// the app's highest serial in the archive, read at start).
    pub fn raise_floor(&self, serial: u64) {
        self.swept_max.fetch_max(serial, Ordering::AcqRel);
    }

    /// Whether `channel` has a history on this node.
    pub fn contains(&self, channel: &str) -> bool {
        self.channels.contains_key(channel)
    }

    /// Creates `channel`'s history, when missing, so that its first event
    /// gets `last + 1` (long retention: the channel's highest archived
    /// serial; see `hub::retention`).
    pub fn create_after(&self, channel: &str, last: u64) {
        self.channels.entry(channel.to_owned()).or_insert_with(|| {
            Arc::new(Mutex::new(ChannelHistory::new(
                last.saturating_add(1),
                Instant::now(),
            )))
        });
    }

    fn existing(&self, channel: &str) -> Option<Arc<Mutex<ChannelHistory>>> {
        self.channels.get(channel).map(|found| found.clone())
    }

    fn created(&self, channel: &str) -> Arc<Mutex<ChannelHistory>> {
        if let Some(found) = self.existing(channel) {
            return found;
        }
        let first = self.swept_max.load(Ordering::Acquire) + 1;
        let entry = self
            .channels
            .entry(channel.to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(ChannelHistory::new(first, Instant::now()))));
        entry.clone()
    }

    /// Runs `f` with the channel's history locked, creating it when missing
    /// (publishing, recovering).
    pub fn with_channel<T>(&self, channel: &str, f: impl FnOnce(&mut ChannelHistory) -> T) -> T {
        let mut f = Some(f);
        loop {
            let handle = self.created(channel);
            if let Some(result) = self.run_locked(&handle, &mut f) {
                return result;
            }
        }
    }

    /// Runs `f` with the channel's history locked; `None` when the channel
    /// has no history (reading: the API).
    pub fn with_existing<T>(
        &self,
        channel: &str,
        f: impl FnOnce(&mut ChannelHistory) -> T,
    ) -> Option<T> {
        let mut f = Some(f);
        loop {
            let handle = self.existing(channel)?;
            if let Some(result) = self.run_locked(&handle, &mut f) {
                return Some(result);
            }
        }
    }

    /// `None` when the entry was swept between lookup and lock (`f` is then
    /// kept for the retry on the new entry).
    fn run_locked<T, F: FnOnce(&mut ChannelHistory) -> T>(
        &self,
        handle: &Mutex<ChannelHistory>,
        f: &mut Option<F>,
    ) -> Option<T> {
        // A poisoned lock only means a panic elsewhere mid-update; the
        // buffer is still consistent (each step is a single push or pop).
        let mut locked = handle.lock().unwrap_or_else(|p| p.into_inner());
        if locked.removed {
            return None;
        }
        let f = f.take()?;
        let before = locked.len();
        let result = f(&mut locked);
        let after = locked.len();
        self.events.fetch_add(after as u64, Ordering::Relaxed);
        self.events.fetch_sub(before as u64, Ordering::Relaxed);
        Some(result)
    }

    /// Forgets channels whose events all expired and that saw no publish
    /// for `ttl`.
    pub fn sweep(&self, ttl: Duration) {
        let now = Instant::now();
        self.channels.retain(|_, handle| {
            let mut locked = handle.lock().unwrap_or_else(|p| p.into_inner());
            let before = locked.len();
            locked.expire(now);
            self.events
                .fetch_sub((before - locked.len()) as u64, Ordering::Relaxed);
            let idle = locked.is_empty() && now.duration_since(locked.touched) >= ttl;
            if idle {
                locked.removed = true;
                self.swept_max.fetch_max(locked.last, Ordering::AcqRel);
            }
            !idle
        });
    }

    /// Channels and events kept.
    pub fn counts(&self) -> Counts {
        Counts {
            channels: self.channels.len() as u64,
            events: self.events.load(Ordering::Relaxed),
        }
    }
}

/// Whether `channel` keeps history under the app's `history_channels`
/// prefixes (empty = all); user and personal channels never do.
pub fn applies(enabled: bool, prefixes: &[String], channel: &str) -> bool {
    enabled
        && !channel.starts_with("#server-to-user-")
        && !channel.starts_with("personal-")
        && (prefixes.is_empty() || prefixes.iter().any(|p| channel.starts_with(p.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    fn push(h: &mut ChannelHistory, now: Instant, size: usize) -> u64 {
        let data = RawValue::from_string("\"d\"".into()).unwrap();
        h.push(now, size, TTL, "e", &data, None, |s| format!("f{s}").into())
            .0
    }

    #[test]
    fn serials_start_at_first_and_increase_by_one() {
        let now = Instant::now();
        let mut h = ChannelHistory::new(1, now);
        assert_eq!(h.latest(), None);
        assert_eq!((push(&mut h, now, 3), push(&mut h, now, 3)), (1, 2));
        assert_eq!((h.oldest(), h.latest()), (Some(1), Some(2)));
    }

    #[test]
    fn the_buffer_keeps_the_newest_size_events() {
        let now = Instant::now();
        let mut h = ChannelHistory::new(1, now);
        for _ in 0..5 {
            push(&mut h, now, 3);
        }
        assert_eq!((h.oldest(), h.latest(), h.len()), (Some(3), Some(5), 3));
    }

    #[test]
    fn expired_events_are_dropped() {
        let now = Instant::now();
        let mut h = ChannelHistory::new(1, now);
        push(&mut h, now, 3);
        push(&mut h, now + TTL / 2, 3);
        assert_eq!(h.expire(now + TTL), 1);
        assert_eq!(h.oldest(), Some(2));
        assert_eq!(h.latest(), Some(2), "the serial is kept");
    }

    #[test]
    fn replay_gives_what_follows_since_or_names_the_gap() {
        let now = Instant::now();
        let mut h = ChannelHistory::new(1, now);
        for _ in 0..5 {
            push(&mut h, now, 3);
        }
        let frames = |r: Result<Vec<ByteString>, Gap>| r.map(|v| v.concat());
        assert_eq!(frames(h.replay(3)), Ok("f4f5".into()));
        assert_eq!(frames(h.replay(2)), Ok("f3f4f5".into()));
        assert_eq!(frames(h.replay(5)), Ok(String::new()));
        assert_eq!(frames(h.replay_until(2, 4)), Ok("f3f4".into()));
        assert_eq!(frames(h.replay_until(4, 4)), Ok(String::new()));
        assert_eq!(frames(h.replay_until(4, 2)), Ok(String::new()));
        assert!(h.replay_until(1, 2).is_err(), "serial 2 is gone");
        let gap = h.replay(1).unwrap_err();
        assert_eq!(gap.oldest, Some(3));
        assert!(h.replay(6).is_err(), "a serial from the future");
        h.expire(now + TTL);
        assert_eq!(h.replay(4).unwrap_err().oldest, None);
        assert_eq!(frames(h.replay(5)), Ok(String::new()));
    }

    #[test]
    fn pages_are_oldest_first_with_a_next_cursor() {
        let now = Instant::now();
        let mut h = ChannelHistory::new(1, now);
        for _ in 0..5 {
            push(&mut h, now, 10);
        }
        let first = h.page(0, 2);
        let serials: Vec<u64> = first.events.iter().map(|e| e.serial).collect();
        assert_eq!((serials, first.next), (vec![1, 2], Some(2)));
        let last = h.page(4, 2);
        assert_eq!((last.events.len(), last.next), (1, None));
        assert_eq!((last.oldest, last.latest), (Some(1), Some(5)));
        assert!(h.page(5, 2).events.is_empty());
    }

    #[test]
    fn a_swept_channel_restarts_above_every_old_serial() {
        let history = AppHistory::default();
        history.with_channel("c", |h| push(h, Instant::now(), 3));
        history.with_channel("c", |h| push(h, Instant::now(), 3));
        assert_eq!(
            history.counts(),
            Counts {
                channels: 1,
                events: 2
            }
        );
        history.with_existing("c", |h| h.expire(Instant::now() + TTL));
        history.sweep(Duration::ZERO);
        assert_eq!(history.counts(), Counts::default());
        assert!(history.with_existing("c", |_| ()).is_none());
        let serial = history.with_channel("c", |h| push(h, Instant::now(), 3));
        assert_eq!(serial, 3);
    }

    fn mirrored(serials: impl IntoIterator<Item = u64>) -> ChannelHistory {
        let now = Instant::now();
        let mut h = ChannelHistory::new(1, now);
        for s in serials {
            h.mirror(now, 10, TTL, s, format!("f{s}").into());
        }
        h
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
    fn a_mirror_is_contiguous_and_restarts_after_a_missed_serial() {
        let h = mirrored([4, 5, 6]);
        assert_eq!((h.oldest(), h.latest()), (Some(4), Some(6)));
        assert!(h.covers(3) && h.covers(6) && !h.covers(2) && !h.covers(7));
        let h = mirrored([4, 5, 8, 9]);
        assert_eq!((h.oldest(), h.latest()), (Some(8), Some(9)));
        assert!(!h.covers(5) && h.covers(7));
        assert!(!mirrored([]).covers(0), "an empty mirror knows nothing");
    }

    #[test]
    fn a_join_takes_the_stream_then_the_mirror_without_duplicates() {
        let frames = |r: Result<Vec<ByteString>, Gap>| r.map(|v| v.concat());
        let mirror = mirrored([8, 9, 10]);
        // The stream part overlaps the mirror; each serial once.
        assert_eq!(
            frames(mirror.join(5, u64::MAX, &fetched(10, 6..=9))),
            Ok("f6f7f8f9f10".into())
        );
        // Nothing mirrored yet (a node just started): the stream alone.
        assert_eq!(
            frames(mirrored([]).join(1, u64::MAX, &fetched(3, 2..=3))),
            Ok("f2f3".into())
        );
        // Events published after the fetch are in the mirror.
        assert_eq!(
            frames(mirror.join(9, u64::MAX, &fetched(9, []))),
            Ok("f10".into())
        );
        // A socket already subscribed was sent everything above `until`.
        assert_eq!(
            frames(mirror.join(5, 8, &fetched(10, 6..=9))),
            Ok("f6f7f8".into())
        );
    }

    #[test]
    fn a_join_names_holes_resets_and_missing_history() {
        let mirror = mirrored([8, 9]);
        let gap = mirror.join(2, u64::MAX, &fetched(9, 5..=6)).unwrap_err();
        assert_eq!(
            (gap.oldest, gap.reason.contains("no longer")),
            (Some(5), true)
        );
        let ahead = mirror.join(12, u64::MAX, &fetched(9, [])).unwrap_err();
        assert!(ahead.reason.contains("ahead"), "{ahead:?}");
        let none = mirrored([])
            .join(0, u64::MAX, &Fetched::default())
            .unwrap_err();
        assert_eq!(none.reason, "the channel has no history");
        assert_eq!(
            mirrored([]).join(4, u64::MAX, &fetched(4, [])),
            Ok(Vec::new())
        );
    }

    #[test]
    fn prefixes_choose_channels_but_never_user_or_personal_ones() {
        let none: Vec<String> = Vec::new();
        assert!(applies(true, &none, "news"));
        assert!(!applies(false, &none, "news"));
        assert!(!applies(true, &none, "#server-to-user-1"));
        assert!(!applies(true, &none, "personal-1"));
        let some = vec!["private-".to_string()];
        assert!(applies(true, &some, "private-a") && !applies(true, &some, "news"));
    }
}
