//! The sparkline's history: each app's connection count, sampled every
//! `[console] sample_interval_ms` by one task per node, the last
//! [`SAMPLES`] kept per app. A console opening a live stream gets it first
//! (the `history` event of [`super::live`]), so the page draws the last
//! minutes at once instead of starting empty.
//!
//! Bounded by the number of apps (an app removed is forgotten at the next
//! sample) and costing nothing per connection: a sample is the count the
//! hub already keeps (with the Redis adapter, this node's plus what the
//! other nodes reported, see [`crate::hub::Hub::app_connection_count`]).

use crate::hub::Hub;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Samples kept per app (10 minutes at the default 10 s period).
pub const SAMPLES: usize = 60;

/// Each app's last [`SAMPLES`] connection counts.
pub struct ConnectionHistory {
    interval: Duration,
    /// App id → `(time, Unix ms; count)`, oldest first.
    apps: RwLock<HashMap<String, VecDeque<(u64, u64)>>>,
}

impl ConnectionHistory {
    /// An empty history sampled every `interval`.
    pub fn new(interval: Duration) -> Self {
        ConnectionHistory {
            interval,
            apps: RwLock::new(HashMap::new()),
        }
    }

    /// Records one sample of every app at `time_ms`; apps not among
    /// `counts` are forgotten.
    pub fn record(&self, counts: impl IntoIterator<Item = (String, u64)>, time_ms: u64) {
        let Ok(mut apps) = self.apps.write() else {
            return;
        };
        let mut previous = std::mem::take(&mut *apps);
        for (app_id, count) in counts {
            let mut samples = previous.remove(&app_id).unwrap_or_default();
            if samples.len() >= SAMPLES {
                samples.pop_front();
            }
            samples.push_back((time_ms, count));
            apps.insert(app_id, samples);
        }
    }

    /// The `history` event's JSON for `app_id`:
    /// `{"interval_ms", "samples": [[time_ms, connections], ...]}`, oldest first.
    pub fn json(&self, app_id: &str) -> String {
        let samples: Vec<(u64, u64)> = self
            .apps
            .read()
            .ok()
            .and_then(|apps| apps.get(app_id).map(|s| s.iter().copied().collect()))
            .unwrap_or_default();
        serde_json::json!({
            "interval_ms": self.interval.as_millis() as u64,
            "samples": samples,
        })
        .to_string()
    }
}

/// Samples every app's connection count into `history` for as long as the
/// server runs.
pub async fn sample(history: Arc<ConnectionHistory>, hub: Arc<Hub>) {
    let mut tick = tokio::time::interval(history.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = crate::store::now_ms();
        let counts = hub
            .apps()
            .all()
            .map(|app| (app.id.clone(), hub.app_connection_count(&app.id)));
        history.record(counts, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_app_keeps_its_last_samples_and_removed_apps_are_forgotten() {
        let history = ConnectionHistory::new(Duration::from_secs(10));
        for t in 0..(SAMPLES as u64 + 5) {
            history.record([("a".to_owned(), t), ("b".to_owned(), 1)], t * 10);
        }
        let json: serde_json::Value = serde_json::from_str(&history.json("a")).unwrap_or_default();
        assert_eq!(json["interval_ms"], 10_000);
        let samples = json["samples"].as_array().cloned().unwrap_or_default();
        assert_eq!(samples.len(), SAMPLES);
        assert_eq!(samples[0], serde_json::json!([50, 5]), "the oldest kept");
        assert_eq!(samples[SAMPLES - 1], serde_json::json!([640, 64]));
        history.record([("a".to_owned(), 0)], 1000);
        assert!(history.json("b").contains(r#""samples":[]"#), "b removed");
        assert!(history.json("unknown").contains(r#""samples":[]"#));
    }
}
