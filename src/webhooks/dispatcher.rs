//! The batching loop: routes events to the app's endpoints (type and prefix
//! filters), holds back `member_removed` and `channel_vacated` so a quick
//! rejoin (a page reload) makes no noise (a vacated also waits behind the
//! removals of its channel, so a channel is never reported empty before its
//! last member left), and hands full or due batches to one sender lane per
//! receiver, which delivers them one after the other so a retried batch is
//! never overtaken by a newer one.

use super::event::WebhookEvent;
use super::sender::{deliver, Endpoint, RetryPolicy};
use crate::config::WebhookSettings;
use crate::console::tap::{preview, ConsoleEvent, ConsoleTap};
use crate::metrics::Metrics;
use crate::throttled_log::ThrottledLog;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// An endpoint with its filters.
pub struct Route {
    /// Where and how to send.
    pub endpoint: Arc<Endpoint>,
    /// Event types wanted; empty means all.
    pub event_types: HashSet<String>,
    /// Only channels with this prefix.
    pub filter_prefix: Option<String>,
}

impl Route {
    fn wants(&self, event: &WebhookEvent) -> bool {
        (self.event_types.is_empty() || self.event_types.contains(event.name))
            && self
                .filter_prefix
                .as_deref()
                .is_none_or(|prefix| event.channel.starts_with(prefix))
    }
}

/// What the dispatcher receives.
pub enum Command {
    /// An event of an app.
    Event(Arc<str>, WebhookEvent),
    /// An event of an app whose hold-back was already served elsewhere
    /// (by the cluster, see `adapter::redis::held`): routed at once.
    Decided(Arc<str>, WebhookEvent),
    /// Flush everything now and answer when sent (or the deadline passed).
    Shutdown(Instant, oneshot::Sender<()>),
    /// The apps changed at runtime: these are the routes from now on.
    Routes(HashMap<String, Vec<Route>>),
    /// The consoles' tap: each batch sent or given up is shown to them.
    Console(Arc<ConsoleTap>),
}

/// An app's channel.
type ChannelKey = (Arc<str>, String);

/// A receiver: the app and the index of its route.
type RouteKey = (Arc<str>, usize);

/// What is held back for one channel, with when each is due.
#[derive(Debug, Default)]
struct Held {
    /// `member_removed` by user id.
    removals: HashMap<String, Instant>,
    /// The held `channel_vacated`.
    vacated: Option<Instant>,
    /// The `subscription_count` 0 that came with the held vacated: sent
    /// after it, or cancelled with it (the count never dips to 0 for the
    /// receiver on a page reload).
    emptied: bool,
}

impl Held {
    fn is_empty(&self) -> bool {
        self.removals.is_empty() && self.vacated.is_none()
    }
}

/// The state of the batching loop.
pub struct Dispatcher {
    routes: HashMap<String, Vec<Route>>,
    settings: WebhookSettings,
    metrics: Metrics,
    client: reqwest::Client,
    batches: HashMap<RouteKey, Vec<WebhookEvent>>,
    held: HashMap<ChannelKey, Held>,
    /// `member_removed` and `channel_vacated` events in `held`, at most
    /// `settings.queue`: beyond it such an event is sent at once (it can no
    /// longer cancel against a rejoin), so a flood of leaves cannot grow memory.
    held_removals: usize,
    /// Each receiver's queue of signed-to-be bodies, drained by its lane task.
    lanes: HashMap<RouteKey, mpsc::Sender<String>>,
    permits: Arc<Semaphore>,
    outstanding: Arc<AtomicUsize>,
    drop_log: ThrottledLog,
    /// Where batches sent and failed are shown (the hub's, once it is built).
    console: Arc<ConsoleTap>,
}

impl Dispatcher {
    /// A dispatcher for the apps' routes.
    pub fn new(
        routes: HashMap<String, Vec<Route>>,
        settings: WebhookSettings,
        metrics: Metrics,
    ) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms))
            .build()
            .unwrap_or_default();
        Dispatcher {
            routes,
            permits: Arc::new(Semaphore::new(settings.concurrency)),
            settings,
            metrics,
            client,
            batches: HashMap::new(),
            held: HashMap::new(),
            held_removals: 0,
            lanes: HashMap::new(),
            outstanding: Arc::new(AtomicUsize::new(0)),
            drop_log: ThrottledLog::new(1000),
            console: Arc::default(),
        }
    }

    /// Most batches waiting or in flight; beyond it batches are dropped, so a
    /// dead receiver cannot make memory grow.
    fn max_outstanding(&self) -> usize {
        (self.settings.queue / self.settings.batch_size).max(self.settings.concurrency)
    }

    /// Runs until a shutdown command has been served.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.settings.batch_ms.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Event(app_id, event)) => self.accept(app_id, event),
                    Some(Command::Decided(app_id, event)) => self.route(&app_id, event),
                    Some(Command::Routes(routes)) => self.replace_routes(routes),
                    Some(Command::Console(tap)) => self.console = tap,
                    Some(Command::Shutdown(deadline, done)) => {
                        while let Ok(command) = commands.try_recv() {
                            match command {
                                Command::Event(app_id, event) => self.accept(app_id, event),
                                Command::Decided(app_id, event) => self.route(&app_id, event),
                                Command::Shutdown(..)
                                | Command::Routes(_)
                                | Command::Console(_) => {}
                            }
                        }
                        self.release_removals(None);
                        self.flush_all();
                        self.wait_outstanding(deadline).await;
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
                _ = tick.tick() => {
                    self.release_removals(Some(Instant::now()));
                    self.flush_all();
                }
            }
        }
    }

    /// New routes (apps added, changed or removed): the batches made so far
    /// leave on the old routes, then every lane is closed (each finishes
    /// what it holds) and the next batch opens a lane on the new routes.
    fn replace_routes(&mut self, routes: HashMap<String, Vec<Route>>) {
        self.flush_all();
        self.lanes.clear();
        self.routes = routes;
    }

    /// Takes an event in: held back, cancelled against a held one, or routed.
    ///
    /// A leave is `member_removed` (held `member_removed_delay_ms`) and, for the
    /// last subscriber, `channel_vacated` (held `channel_vacated_delay_ms`,
    /// and behind the removals of its channel) with its `subscription_count`
    /// 0. A rejoin within the delay is `member_added` (cancels that user's
    /// removal) and `channel_occupied` (cancels the held vacated and its 0):
    /// the receiver sees none of them, a consistent story in which nobody
    /// left. A new channel left at once still gets its occupied, then its
    /// vacated: the two always come in pairs.
    fn accept(&mut self, app_id: Arc<str>, event: WebhookEvent) {
        let key: ChannelKey = (app_id.clone(), event.channel.clone());
        let delay = Duration::from_millis(self.settings.member_removed_delay_ms);
        let vacated_delay = Duration::from_millis(self.settings.channel_vacated_delay_ms);
        let user_id = event.user_id.as_deref().unwrap_or_default();
        let room = self.held_removals < self.settings.queue;
        match event.name {
            "member_removed" if self.held_removals < self.settings.queue => {
                let held = self.held.entry(key).or_default();
                let at = Instant::now() + delay;
                if held.removals.insert(user_id.to_owned(), at).is_none() {
                    self.held_removals += 1;
                }
                return;
            }
            "member_added" => {
                if let Some(held) = self.held.get_mut(&key) {
                    if held.removals.remove(user_id).is_some() {
                        self.held_removals -= 1;
                        self.forget_if_empty(&key);
                        return;
                    }
                }
            }
            "channel_vacated" => {
                let behind_removals = self
                    .held
                    .get(&key)
                    .is_some_and(|held| !held.removals.is_empty());
                let wait = match behind_removals {
                    true => vacated_delay.max(delay),
                    false => vacated_delay,
                };
                // Behind held removals it always waits (order); else only
                // with a hold-back and room for it.
                if behind_removals || (!wait.is_zero() && room) {
                    let held = self.held.entry(key).or_default();
                    if held.vacated.replace(Instant::now() + wait).is_none() {
                        self.held_removals += 1;
                    }
                    return;
                }
            }
            "subscription_count" if event.subscription_count == Some(0) => {
                if let Some(held) = self.held.get_mut(&key) {
                    if held.vacated.is_some() {
                        held.emptied = true;
                        return;
                    }
                }
            }
            "channel_occupied" => {
                if let Some(held) = self.held.get_mut(&key) {
                    if held.vacated.take().is_some() {
                        held.emptied = false;
                        self.held_removals -= 1;
                        self.forget_if_empty(&key);
                        return;
                    }
                }
            }
            _ => {}
        }
        self.route(&app_id, event);
    }

    fn forget_if_empty(&mut self, key: &ChannelKey) {
        if self.held.get(key).is_some_and(Held::is_empty) {
            self.held.remove(key);
        }
    }

    /// Sends held-back events that are due (all of them when `now` is
    /// `None`), oldest first; a channel's vacated only once none of its
    /// removals is still held.
    fn release_removals(&mut self, now: Option<Instant>) {
        let is_due = |at: &Instant| now.is_none_or(|now| *at <= now);
        // (due, vacated after removals of the same instant, channel, user)
        let mut due: Vec<(Instant, bool, ChannelKey, Option<String>)> = Vec::new();
        for (key, held) in &self.held {
            let mut all_removals_due = true;
            for (user_id, at) in &held.removals {
                if is_due(at) {
                    due.push((*at, false, key.clone(), Some(user_id.clone())));
                } else {
                    all_removals_due = false;
                }
            }
            if let Some(at) = held.vacated.filter(|at| all_removals_due && is_due(at)) {
                due.push((at, true, key.clone(), None));
            }
        }
        due.sort_by_key(|a| (a.0, a.1));
        for (_, _, key, user_id) in due {
            let Some(held) = self.held.get_mut(&key) else {
                continue;
            };
            let (app_id, channel) = &key;
            let event = match user_id {
                Some(user_id) => {
                    if held.removals.remove(&user_id).is_some() {
                        self.held_removals -= 1;
                    }
                    WebhookEvent::member_removed(channel, &user_id)
                }
                None => {
                    if held.vacated.take().is_some() {
                        self.held_removals -= 1;
                    }
                    WebhookEvent::channel_vacated(channel)
                }
            };
            let emptied = event.name == "channel_vacated" && std::mem::take(&mut held.emptied);
            let app_id = app_id.clone();
            self.forget_if_empty(&key);
            self.route(&app_id, event);
            if emptied {
                self.route(&app_id, WebhookEvent::subscription_count(&key.1, 0));
            }
        }
    }

    fn route(&mut self, app_id: &Arc<str>, event: WebhookEvent) {
        let Some(routes) = self.routes.get(&**app_id) else {
            return;
        };
        let wanted: Vec<usize> = routes
            .iter()
            .enumerate()
            .filter(|(_, route)| route.wants(&event))
            .map(|(index, _)| index)
            .collect();
        for index in wanted {
            let key = (app_id.clone(), index);
            let batch = self.batches.entry(key.clone()).or_default();
            batch.push(event.clone());
            if batch.len() >= self.settings.batch_size {
                if let Some(events) = self.batches.remove(&key) {
                    self.send(&key, events);
                }
            }
        }
    }

    fn flush_all(&mut self) {
        let batches: Vec<_> = self.batches.drain().collect();
        for (key, events) in batches {
            if !events.is_empty() {
                self.send(&key, events);
            }
        }
    }

    fn send(&mut self, key: &RouteKey, events: Vec<WebhookEvent>) {
        let Some(route) = self.routes.get(&*key.0).and_then(|r| r.get(key.1)) else {
            return;
        };
        let endpoint = route.endpoint.clone();
        if self.outstanding.load(Ordering::Acquire) >= self.max_outstanding() {
            self.metrics.webhooks_dropped.inc_by(events.len() as u64);
            if let Some(suppressed) = self.drop_log.ready() {
                tracing::error!(
                    url = %endpoint.url,
                    events = events.len(),
                    batches_also_dropped = suppressed,
                    "webhook backlog full: batch dropped (see rusher_webhooks_dropped_total)"
                );
            }
            return;
        }
        let time_ms = crate::store::now_ms();
        let body = serde_json::json!({ "time_ms": time_ms, "events": events }).to_string();
        let count = events.len() as u64;
        let lane = match self.lanes.get(key) {
            Some(lane) => lane.clone(),
            None => {
                let lane = self.open_lane(key.0.clone(), endpoint);
                self.lanes.insert(key.clone(), lane.clone());
                lane
            }
        };
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        // The lane holds at most `max_outstanding` bodies, the bound checked
        // above, so it is never full here; a closed lane cannot happen either
        // (its task runs as long as the sender exists). Count it all the same.
        if lane.try_send(body).is_err() {
            self.outstanding.fetch_sub(1, Ordering::AcqRel);
            self.metrics.webhooks_dropped.inc_by(count);
        }
    }

    /// Starts the task that delivers one receiver's batches in the order they
    /// were made: the next one is sent only when the previous one was
    /// accepted or dropped after its last attempt. At most `concurrency`
    /// receivers are being sent to at once.
    fn open_lane(&self, app_id: Arc<str>, endpoint: Arc<Endpoint>) -> mpsc::Sender<String> {
        let (lane, mut bodies) = mpsc::channel::<String>(self.max_outstanding());
        let client = self.client.clone();
        let metrics = self.metrics.clone();
        let permits = self.permits.clone();
        let outstanding = self.outstanding.clone();
        let console = self.console.clone();
        let policy = RetryPolicy {
            max_attempts: self.settings.max_attempts,
            backoff: Duration::from_millis(self.settings.backoff_ms),
        };
        tokio::spawn(async move {
            while let Some(body) = bodies.recv().await {
                // The semaphore is never closed, so acquiring cannot fail.
                if let Ok(_permit) = permits.acquire().await {
                    // Only the preview is kept, and only while some console watches.
                    let preview = console.is_watched().then(|| preview(&body));
                    let outcome = deliver(&client, &endpoint, body, policy, &metrics).await;
                    console.emit(&app_id, || {
                        let event = match &outcome {
                            Ok(()) => ConsoleEvent::new("webhook_sent")
                                .detail(endpoint.url.clone(), false),
                            Err(reason) => ConsoleEvent::new("webhook_failed")
                                .detail(format!("{}: {reason}", endpoint.url), true),
                        };
                        event.payload(preview.as_deref().unwrap_or_default())
                    });
                }
                outstanding.fetch_sub(1, Ordering::AcqRel);
            }
        });
        lane
    }

    async fn wait_outstanding(&self, deadline: Instant) {
        while self.outstanding.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dispatcher(event_types: &[&str], filter_prefix: Option<&str>) -> Dispatcher {
        let route = Route {
            endpoint: Arc::new(Endpoint {
                url: "http://127.0.0.1:9/hook".into(),
                headers: Default::default(),
                app_key: "key".into(),
                app_secret: "secret".into(),
            }),
            event_types: event_types.iter().map(|s| s.to_string()).collect(),
            filter_prefix: filter_prefix.map(Into::into),
        };
        let settings = WebhookSettings {
            batch_size: 100,
            ..WebhookSettings::default()
        };
        Dispatcher::new(
            HashMap::from([("app".to_string(), vec![route])]),
            settings,
            Metrics::new(),
        )
    }

    fn batched(d: &Dispatcher) -> Vec<&'static str> {
        d.batches.values().flatten().map(|e| e.name).collect()
    }

    #[test]
    fn type_and_prefix_filters_select_events() {
        let mut d = dispatcher(&["channel_occupied"], Some("presence-"));
        d.accept("app".into(), WebhookEvent::channel_occupied("presence-a"));
        d.accept("app".into(), WebhookEvent::channel_occupied("news"));
        d.accept("app".into(), WebhookEvent::channel_vacated("presence-a"));
        d.accept("other".into(), WebhookEvent::channel_occupied("presence-a"));
        assert_eq!(batched(&d), vec!["channel_occupied"]);
    }

    #[test]
    fn quick_rejoin_cancels_removed_and_added() {
        let mut d = dispatcher(&[], None);
        d.accept(
            "app".into(),
            WebhookEvent::member_removed("presence-a", "u1"),
        );
        d.accept("app".into(), WebhookEvent::member_added("presence-a", "u1"));
        d.release_removals(None);
        assert!(batched(&d).is_empty());
    }

    #[test]
    fn removal_is_sent_once_its_delay_passed() {
        let mut d = dispatcher(&[], None);
        d.accept(
            "app".into(),
            WebhookEvent::member_removed("presence-a", "u1"),
        );
        d.release_removals(Some(Instant::now()));
        assert!(batched(&d).is_empty(), "held back during the delay");
        d.release_removals(Some(Instant::now() + Duration::from_secs(60)));
        assert_eq!(batched(&d), vec!["member_removed"]);
        d.accept("app".into(), WebhookEvent::member_added("presence-a", "u1"));
        assert_eq!(batched(&d), vec!["member_removed", "member_added"]);
    }

    #[test]
    fn removals_beyond_the_queue_bound_are_sent_at_once() {
        let mut d = dispatcher(&[], None);
        d.settings.queue = 2;
        for user in ["u1", "u2", "u3"] {
            d.accept(
                "app".into(),
                WebhookEvent::member_removed("presence-a", user),
            );
        }
        assert_eq!(d.held_removals, 2);
        assert_eq!(batched(&d), vec!["member_removed"], "the third is not held");
        d.accept("app".into(), WebhookEvent::member_added("presence-a", "u1"));
        assert_eq!(d.held_removals, 1, "a rejoin still cancels a held one");
        d.release_removals(None);
        assert_eq!(d.held_removals, 0);
        assert!(d.held.is_empty());
    }

    fn leave_as_last_member(d: &mut Dispatcher, user: &str) {
        d.accept(
            "app".into(),
            WebhookEvent::member_removed("presence-a", user),
        );
        d.accept("app".into(), WebhookEvent::channel_vacated("presence-a"));
    }

    #[test]
    fn vacated_waits_behind_the_held_member_removed() {
        let mut d = dispatcher(&[], None);
        leave_as_last_member(&mut d, "u1");
        d.release_removals(Some(Instant::now()));
        assert!(
            batched(&d).is_empty(),
            "vacated before its last member left"
        );
        d.release_removals(Some(Instant::now() + Duration::from_secs(60)));
        assert_eq!(batched(&d), vec!["member_removed", "channel_vacated"]);
        assert!(d.held.is_empty());
    }

    #[test]
    fn vacated_without_held_removals_or_hold_back_is_not_delayed() {
        let mut d = dispatcher(&[], None);
        d.settings.channel_vacated_delay_ms = 0;
        d.accept("app".into(), WebhookEvent::channel_vacated("news"));
        assert_eq!(batched(&d), vec!["channel_vacated"]);
    }

    #[test]
    fn a_public_channel_reoccupied_within_the_hold_back_sends_nothing() {
        let mut d = dispatcher(&[], None);
        d.accept("app".into(), WebhookEvent::channel_vacated("room"));
        d.accept("app".into(), WebhookEvent::subscription_count("room", 0));
        d.accept("app".into(), WebhookEvent::channel_occupied("room"));
        d.accept("app".into(), WebhookEvent::subscription_count("room", 1));
        d.release_removals(None);
        assert_eq!(batched(&d), vec!["subscription_count"], "no dip to 0");
        assert!(d.held.is_empty());
        assert_eq!(d.held_removals, 0);
    }

    #[test]
    fn a_real_leave_sends_vacated_then_its_zero_count_after_the_hold_back() {
        let mut d = dispatcher(&[], None);
        d.accept("app".into(), WebhookEvent::channel_occupied("room"));
        d.accept("app".into(), WebhookEvent::channel_vacated("room"));
        d.accept("app".into(), WebhookEvent::subscription_count("room", 0));
        d.release_removals(Some(Instant::now()));
        assert_eq!(batched(&d), vec!["channel_occupied"], "held back");
        d.release_removals(Some(Instant::now() + Duration::from_secs(60)));
        assert_eq!(
            batched(&d),
            vec!["channel_occupied", "channel_vacated", "subscription_count"]
        );
        assert_eq!(d.held_removals, 0);
    }

    #[test]
    fn rejoin_of_the_last_member_drops_the_whole_leave() {
        let mut d = dispatcher(&[], None);
        leave_as_last_member(&mut d, "u1");
        // The hub's order on subscribe: member_added, then channel_occupied.
        d.accept("app".into(), WebhookEvent::member_added("presence-a", "u1"));
        d.release_removals(Some(Instant::now()));
        d.accept("app".into(), WebhookEvent::channel_occupied("presence-a"));
        d.release_removals(None);
        assert!(batched(&d).is_empty(), "{:?}", batched(&d));
        assert!(d.held.is_empty());
    }

    #[test]
    fn another_member_joining_after_the_vacate_keeps_the_channel_occupied() {
        let mut d = dispatcher(&[], None);
        leave_as_last_member(&mut d, "u1");
        d.accept("app".into(), WebhookEvent::member_added("presence-a", "u2"));
        d.accept("app".into(), WebhookEvent::channel_occupied("presence-a"));
        d.release_removals(None);
        assert_eq!(batched(&d), vec!["member_added", "member_removed"]);
    }
}
