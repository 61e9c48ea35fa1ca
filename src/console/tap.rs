//! The console's tap on the hub: what happens in an app (publishes, client
//! events, subscribes, connections, refusals), copied to the consoles that
//! watch that app, and to nobody else.
//!
//! Free when nobody watches: [`ConsoleTap::emit`] takes a closure that
//! builds the event and does one relaxed atomic load before running it;
//! with no console stream open the closure never runs, so nothing is
//! allocated or encoded on the hot path. With a console open, the event is
//! encoded once as an SSE frame and shared (`Bytes`) by every watcher of
//! the app.
//!
//! Each watcher has a bounded queue (`[console] watcher_queue`): a console
//! that reads more slowly than events come loses the newest ones, counted
//! and shown to it (`dropped` in its stats), so a slow browser can never
//! grow the server's memory or slow a publish down.
//!
//! Across nodes (Redis adapter): a [`ConsoleForward`] set by the adapter
//! learns which apps consoles on other nodes watch; an event of such an app
//! is encoded once here and handed to it (it queues it for the bus, never
//! waiting), and what other nodes forward comes back through
//! [`ConsoleTap::deliver_remote`] to this node's watchers only. Apps watched
//! elsewhere count in the same atomic as local streams, so with no console
//! open anywhere `emit` still costs one relaxed load.

use crate::protocol::error::ErrorCode;
use actix_web::web::Bytes;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use tokio::sync::mpsc;

/// Longest payload preview a console gets, in characters: the log shows a
/// preview, not the event (which may be 10 KB or more).
pub const PREVIEW_CHARS: usize = 200;

/// One thing that happened in an app, as the console's log shows it.
/// Serialized as JSON: `{"kind", "time_ms", "channel"?, "event"?, "data"?,
/// "socket_id"?, "detail"?, "error", "node"?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsoleEvent {
    /// `api_event`, `client_event`, `subscribed`, `unsubscribed`,
    /// `connected`, `disconnected`, `refused`, `webhook_sent`, `webhook_failed`.
    pub kind: &'static str,
    /// Milliseconds since the Unix epoch, when it happened.
    pub time_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The payload's first [`PREVIEW_CHARS`] characters (`…` when cut).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_id: Option<String>,
    /// A refusal's code and reason, a webhook's endpoint and outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Shown highlighted: a refusal, a failed webhook.
    pub error: bool,
    /// The node it happened on, when several nodes share the deployment
    /// (Redis adapter); absent with the local adapter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl ConsoleEvent {
    /// A `kind` event happening now, with nothing else set.
    pub fn new(kind: &'static str) -> Self {
        ConsoleEvent {
            kind,
            time_ms: crate::store::now_ms(),
            channel: None,
            event: None,
            data: None,
            socket_id: None,
            detail: None,
            error: false,
            node: None,
        }
    }

    /// On `channel`.
    pub fn channel(mut self, channel: &str) -> Self {
        self.channel = Some(channel.to_owned());
        self
    }

    /// Named `event`, with a preview of `data`.
    pub fn event(mut self, event: &str, data: &str) -> Self {
        self.event = Some(event.to_owned());
        self.data = Some(preview(data));
        self
    }

    /// With a preview of `data` (a webhook's body).
    pub fn payload(mut self, data: &str) -> Self {
        self.data = Some(preview(data));
        self
    }

    /// A refused connection, highlighted: `{code} {what it means}`.
    pub fn refused(code: ErrorCode) -> Self {
        ConsoleEvent::new("refused").detail(format!("{} {}", code.code(), code.message()), true)
    }

    /// Of the connection `socket_id`.
    pub fn socket(mut self, socket_id: &str) -> Self {
        self.socket_id = Some(socket_id.to_owned());
        self
    }

    /// With `detail`; `error` marks it for highlighting.
    pub fn detail(mut self, detail: impl Into<String>, error: bool) -> Self {
        self.detail = Some(detail.into());
        self.error = error;
        self
    }
}

/// The first [`PREVIEW_CHARS`] characters of `data`, `…` appended when cut
/// (on a character boundary, never inside a UTF-8 sequence).
pub fn preview(data: &str) -> String {
    match data.char_indices().nth(PREVIEW_CHARS) {
        None => data.to_owned(),
        Some((at, _)) => format!("{}…", &data[..at]),
    }
}

/// An SSE frame: `event: {name}` and one `data:` line of `json` (compact
/// JSON has no newline).
pub fn sse_frame(name: &str, json: &str) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {json}\n\n"))
}

/// Carries console events between nodes (the Redis adapter's
/// `adapter::redis::console`). Called with no lock of the tap held except
/// where said; none of these may wait on I/O.
pub trait ConsoleForward: Send + Sync {
    /// Whether a console on another node watches `app_id`.
    fn watched_elsewhere(&self, app_id: &str) -> bool;
    /// Sends an event of `app_id` (its JSON) to the nodes watching it;
    /// queued without waiting, dropped (and counted) when the queue is full.
    fn forward(&self, app_id: &str, json: &str);
    /// This node's first console stream of `app_id` opened (`true`), or its
    /// last one closed (`false`). Called under the tap's watcher lock, so
    /// the calls of one app come in order.
    fn local_watch_changed(&self, app_id: &str, watching: bool);
}

struct Watcher {
    id: u64,
    app_id: Arc<str>,
    frames: mpsc::Sender<Bytes>,
    dropped: Arc<AtomicU64>,
}

/// The open console streams of this node, by app. Held by the hub.
pub struct ConsoleTap {
    /// Open streams, all apps, plus the apps watched on other nodes: the
    /// one load `emit` does when nobody watches.
    watching: AtomicUsize,
    /// The link to the other nodes (Redis adapter), set once at start.
    forward: OnceLock<Arc<dyn ConsoleForward>>,
    /// This node's name in events, set with `forward`.
    node: OnceLock<String>,
    /// Written only when a console opens or closes a stream.
    watchers: RwLock<Vec<Watcher>>,
    next_id: AtomicU64,
    queue: usize,
}

impl Default for ConsoleTap {
    fn default() -> Self {
        ConsoleTap::new(DEFAULT_WATCHER_QUEUE)
    }
}

/// Frames a watcher's queue holds by default (`[console] watcher_queue`).
pub const DEFAULT_WATCHER_QUEUE: usize = 1024;

/// A console's subscription to an app's events; unsubscribes when dropped.
pub struct Watch {
    tap: Arc<ConsoleTap>,
    id: u64,
    /// The frames for this console, in order.
    pub frames: mpsc::Receiver<Bytes>,
    /// The same queue, for the stream's own frames (stats).
    pub sender: mpsc::Sender<Bytes>,
    /// Events this console lost because its queue was full.
    pub dropped: Arc<AtomicU64>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.tap.unwatch(self.id);
    }
}

impl ConsoleTap {
    /// A tap whose watchers each queue at most `queue` frames.
    pub fn new(queue: usize) -> Self {
        ConsoleTap {
            watching: AtomicUsize::new(0),
            forward: OnceLock::new(),
            node: OnceLock::new(),
            watchers: RwLock::new(Vec::new()),
            next_id: AtomicU64::new(0),
            queue: queue.max(1),
        }
    }

    /// Whether any console stream is open (on any app), here or, once
    /// [`ConsoleTap::link`]ed, on another node.
    pub fn is_watched(&self) -> bool {
        self.watching.load(Ordering::Relaxed) > 0
    }

    /// Links this tap to the other nodes: events of apps watched elsewhere
    /// go to `forward`, and every event names `node`. Once; later calls are
    /// ignored.
    pub fn link(&self, forward: Arc<dyn ConsoleForward>, node: &str) {
        if self.forward.set(forward).is_ok() {
            let _ = self.node.set(node.to_owned());
        }
    }

    /// An app became watched on another node (counted until
    /// [`ConsoleTap::remote_watch_ended`]).
    pub fn remote_watch_started(&self) {
        self.watching.fetch_add(1, Ordering::Relaxed);
    }

    /// An app is no longer watched on any other node.
    pub fn remote_watch_ended(&self) {
        self.watching.fetch_sub(1, Ordering::Relaxed);
    }

    /// The apps with a console stream open on this node (each once).
    pub fn watched_apps(&self) -> Vec<Arc<str>> {
        let Ok(watchers) = self.watchers.read() else {
            return Vec::new();
        };
        let mut apps: Vec<Arc<str>> = watchers.iter().map(|w| w.app_id.clone()).collect();
        apps.sort();
        apps.dedup();
        apps
    }

    /// An event of `app_id` forwarded by another node (its JSON, `node`
    /// set): to this node's watchers of the app only, never forwarded again.
    pub fn deliver_remote(&self, app_id: &str, json: &str) {
        let Ok(watchers) = self.watchers.read() else {
            return;
        };
        let mut frame = None;
        for watcher in watchers.iter().filter(|w| &*w.app_id == app_id) {
            let frame = frame.get_or_insert_with(|| sse_frame("log", json));
            if watcher.frames.try_send(frame.clone()).is_err() {
                watcher.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Copies the event `build` makes to every console watching `app_id`.
    /// `build` runs only when one does.
    #[inline]
    pub fn emit(&self, app_id: &str, build: impl FnOnce() -> ConsoleEvent) {
        if self.is_watched() {
            self.emit_watched(app_id, build);
        }
    }

    #[cold]
    fn emit_watched(&self, app_id: &str, build: impl FnOnce() -> ConsoleEvent) {
        let Ok(watchers) = self.watchers.read() else {
            return;
        };
        let mut targets = watchers.iter().filter(|w| &*w.app_id == app_id).peekable();
        let elsewhere = self
            .forward
            .get()
            .filter(|forward| forward.watched_elsewhere(app_id));
        if targets.peek().is_none() && elsewhere.is_none() {
            return;
        }
        let mut event = build();
        event.node = self.node.get().cloned();
        let Ok(json) = serde_json::to_string(&event) else {
            return;
        };
        if let Some(forward) = elsewhere {
            forward.forward(app_id, &json);
        }
        if targets.peek().is_none() {
            return;
        }
        let frame = sse_frame("log", &json);
        for watcher in targets {
            if watcher.frames.try_send(frame.clone()).is_err() {
                watcher.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Opens a stream of `app_id`'s events.
    pub fn watch(self: &Arc<Self>, app_id: &str) -> Watch {
        let (sender, frames) = mpsc::channel(self.queue);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let dropped = Arc::new(AtomicU64::new(0));
        if let Ok(mut watchers) = self.watchers.write() {
            let first = !watchers.iter().any(|w| &*w.app_id == app_id);
            if let (true, Some(forward)) = (first, self.forward.get()) {
                forward.local_watch_changed(app_id, true);
            }
            watchers.push(Watcher {
                id,
                app_id: app_id.into(),
                frames: sender.clone(),
                dropped: dropped.clone(),
            });
            self.watching.fetch_add(1, Ordering::Relaxed);
        }
        Watch {
            tap: self.clone(),
            id,
            frames,
            sender,
            dropped,
        }
    }

    fn unwatch(&self, id: u64) {
        if let Ok(mut watchers) = self.watchers.write() {
            let Some(at) = watchers.iter().position(|w| w.id == id) else {
                return;
            };
            let gone = watchers.swap_remove(at);
            self.watching.fetch_sub(1, Ordering::Relaxed);
            let last = !watchers.iter().any(|w| w.app_id == gone.app_id);
            if let (true, Some(forward)) = (last, self.forward.get()) {
                forward.local_watch_changed(&gone.app_id, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_built_when_nobody_watches() {
        let tap = Arc::new(ConsoleTap::new(4));
        tap.emit("a", || panic!("built an event nobody watches"));
        let _watch = tap.watch("b");
        // Watched, but another app: still not built.
        tap.emit("a", || panic!("built an event for an app nobody watches"));
    }

    #[test]
    fn a_watcher_gets_its_apps_events_once_encoded_and_stops_when_dropped() {
        let tap = Arc::new(ConsoleTap::new(4));
        let mut watch = tap.watch("a");
        tap.emit("a", || {
            ConsoleEvent::new("api_event").channel("c").event("e", "{}")
        });
        let frame = watch.frames.try_recv().expect("a frame");
        let text = std::str::from_utf8(&frame).expect("utf-8");
        assert!(
            text.starts_with("event: log\ndata: {\"kind\":\"api_event\""),
            "{text}"
        );
        assert!(text.ends_with("\n\n"));
        drop(watch);
        assert!(!tap.is_watched());
        tap.emit("a", || panic!("built after the watcher left"));
    }

    #[test]
    fn a_full_queue_drops_and_counts_never_grows() {
        let tap = Arc::new(ConsoleTap::new(2));
        let watch = tap.watch("a");
        for _ in 0..5 {
            tap.emit("a", || ConsoleEvent::new("connected"));
        }
        assert_eq!(watch.dropped.load(Ordering::Relaxed), 3);
    }

    /// A forward that records what it is asked, watching app `b` elsewhere.
    #[derive(Default)]
    struct Recorder {
        forwarded: std::sync::Mutex<Vec<(String, String)>>,
        changes: std::sync::Mutex<Vec<(String, bool)>>,
    }

    impl ConsoleForward for Recorder {
        fn watched_elsewhere(&self, app_id: &str) -> bool {
            app_id == "b"
        }
        fn forward(&self, app_id: &str, json: &str) {
            if let Ok(mut forwarded) = self.forwarded.lock() {
                forwarded.push((app_id.to_owned(), json.to_owned()));
            }
        }
        fn local_watch_changed(&self, app_id: &str, watching: bool) {
            if let Ok(mut changes) = self.changes.lock() {
                changes.push((app_id.to_owned(), watching));
            }
        }
    }

    #[test]
    fn events_of_apps_watched_elsewhere_are_forwarded_once_and_remote_ones_stay_local() {
        let tap = Arc::new(ConsoleTap::new(4));
        let recorder = Arc::new(Recorder::default());
        tap.link(recorder.clone(), "n1");
        // Nothing watched anywhere: nothing built.
        tap.emit("b", || panic!("built with nobody watching"));
        tap.remote_watch_started();
        assert!(tap.is_watched());
        tap.emit("a", || panic!("built for an app nobody watches"));
        tap.emit("b", || ConsoleEvent::new("connected"));
        let forwarded = recorder
            .forwarded
            .lock()
            .map(|f| f.clone())
            .unwrap_or_default();
        assert_eq!(forwarded.len(), 1);
        assert_eq!(forwarded[0].0, "b");
        assert!(
            forwarded[0].1.ends_with(r#""error":false,"node":"n1"}"#),
            "{}",
            forwarded[0].1
        );
        tap.remote_watch_ended();
        assert!(!tap.is_watched());

        // Local streams: the first opens the app, the last closes it.
        let mut first = tap.watch("a");
        let second = tap.watch("a");
        tap.deliver_remote("a", r#"{"kind":"connected","node":"n2"}"#);
        tap.deliver_remote("c", r#"{"kind":"connected"}"#);
        let frame = first.frames.try_recv().expect("a forwarded frame");
        assert_eq!(
            &frame[..],
            &b"event: log\ndata: {\"kind\":\"connected\",\"node\":\"n2\"}\n\n"[..]
        );
        assert!(first.frames.try_recv().is_err(), "nothing of app c");
        assert_eq!(tap.watched_apps(), vec![Arc::<str>::from("a")]);
        drop(first);
        drop(second);
        let changes = recorder
            .changes
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        assert_eq!(
            changes,
            vec![("a".to_owned(), true), ("a".to_owned(), false)]
        );
        // Delivered remote events are never forwarded again.
        assert_eq!(recorder.forwarded.lock().map(|f| f.len()).unwrap_or(0), 1);
    }

    #[test]
    fn previews_are_cut_on_a_character_boundary() {
        let long = "é".repeat(PREVIEW_CHARS + 10);
        let cut = preview(&long);
        assert_eq!(cut.chars().count(), PREVIEW_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(preview("short"), "short");
    }
}
