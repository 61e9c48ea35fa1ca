//! The batching loop: routes events to the app's endpoints (type and prefix
//! filters), holds back `member_removed` so a quick rejoin makes no noise,
//! and hands full or due batches to bounded sender tasks.

use super::event::WebhookEvent;
use super::sender::{deliver, Endpoint, RetryPolicy};
use crate::config::WebhookSettings;
use crate::metrics::Metrics;
use crate::throttled_log::ThrottledLog;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
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
    /// Flush everything now and answer when sent (or the deadline passed).
    Shutdown(Instant, oneshot::Sender<()>),
}

type RemovalKey = (Arc<str>, String, String);

/// The state of the batching loop.
pub struct Dispatcher {
    routes: HashMap<String, Vec<Route>>,
    settings: WebhookSettings,
    metrics: Metrics,
    client: reqwest::Client,
    batches: HashMap<(Arc<str>, usize), Vec<WebhookEvent>>,
    pending_removals: HashMap<RemovalKey, Instant>,
    permits: Arc<Semaphore>,
    outstanding: Arc<AtomicUsize>,
    drop_log: ThrottledLog,
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
            pending_removals: HashMap::new(),
            outstanding: Arc::new(AtomicUsize::new(0)),
            drop_log: ThrottledLog::new(1000),
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
                    Some(Command::Shutdown(deadline, done)) => {
                        while let Ok(Command::Event(app_id, event)) = commands.try_recv() {
                            self.accept(app_id, event);
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

    fn accept(&mut self, app_id: Arc<str>, event: WebhookEvent) {
        let key = || {
            (
                app_id.clone(),
                event.channel.clone(),
                event.user_id.clone().unwrap_or_default(),
            )
        };
        match event.name {
            "member_removed" => {
                let delay = Duration::from_millis(self.settings.member_removed_delay_ms);
                self.pending_removals.insert(key(), Instant::now() + delay);
            }
            // A rejoin within the delay: neither the removal nor the addition happened
            // as far as the backend is concerned.
            "member_added" if self.pending_removals.remove(&key()).is_some() => {}
            _ => self.route(&app_id, event),
        }
    }

    /// Sends held-back removals that are due (all of them when `now` is `None`).
    fn release_removals(&mut self, now: Option<Instant>) {
        let due: Vec<RemovalKey> = self
            .pending_removals
            .iter()
            .filter(|(_, deadline)| now.is_none_or(|now| **deadline <= now))
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            self.pending_removals.remove(&key);
            let (app_id, channel, user_id) = key;
            self.route(&app_id, WebhookEvent::member_removed(&channel, &user_id));
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

    fn send(&mut self, key: &(Arc<str>, usize), events: Vec<WebhookEvent>) {
        let Some(route) = self.routes.get(&*key.0).and_then(|r| r.get(key.1)) else {
            return;
        };
        if self.outstanding.load(Ordering::Acquire) >= self.max_outstanding() {
            self.metrics.webhooks_dropped.inc_by(events.len() as u64);
            if let Some(suppressed) = self.drop_log.ready() {
                tracing::error!(
                    url = %route.endpoint.url,
                    events = events.len(),
                    batches_also_dropped = suppressed,
                    "webhook backlog full: batch dropped (see rusher_webhooks_dropped_total)"
                );
            }
            return;
        }
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let body = serde_json::json!({ "time_ms": time_ms, "events": events }).to_string();
        let endpoint = route.endpoint.clone();
        let client = self.client.clone();
        let metrics = self.metrics.clone();
        let permits = self.permits.clone();
        let outstanding = self.outstanding.clone();
        let policy = RetryPolicy {
            max_attempts: self.settings.max_attempts,
            backoff: Duration::from_millis(self.settings.backoff_ms),
        };
        outstanding.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            // The semaphore is never closed, so acquiring cannot fail.
            if let Ok(_permit) = permits.acquire_owned().await {
                deliver(&client, &endpoint, body, policy, &metrics).await;
            }
            outstanding.fetch_sub(1, Ordering::AcqRel);
        });
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
}
