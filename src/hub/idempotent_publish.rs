//! The request side of idempotent publish: claim the key through the
//! adapter, wait briefly for a first request still publishing, and release
//! the claim if the request ends without an answer.
//!
//! The rules (README "Idempotent publish"): a key is per app; a repeat within
//! the app's `idempotency_window` (counted from the first claim) is answered
//! with the first request's JSON body and not delivered, whatever its body
//! (the key names the publish, as with Ably's message ids); a repeat that
//! arrives while the first is still publishing waits up to
//! [`IN_FLIGHT_WAIT`] for its answer, then gets a 503 with `Retry-After`.

use super::idempotency::{Answer, Claim, ClaimToken};
use super::Hub;
use crate::adapter::Adapter;
use crate::apps::App;
use prometheus::IntCounter;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a repeat waits for the first request with its key to answer.
/// Publishing takes milliseconds; this covers a slow fan-out or Redis.
pub const IN_FLIGHT_WAIT: Duration = Duration::from_secs(2);

/// Longest pause between two looks at a key still in flight.
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// How a publish with an optional idempotency key goes on.
#[derive(Debug)]
pub enum Begun {
    /// Publish; then give the answer to the guard (there is none without a
    /// key, or with `idempotency_window = 0`).
    Publish(Option<ClaimGuard>),
    /// Answer this (the first request's answer) and deliver nothing.
    Repeat(Answer),
}

/// The first request with this key was still publishing after [`IN_FLIGHT_WAIT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyBusy;

/// A claimed key. [`ClaimGuard::answer`] stores the answer for repeats;
/// dropped without it (the request failed or its client went away), it
/// releases the key so a retry publishes.
pub struct ClaimGuard {
    adapter: Arc<dyn Adapter>,
    /// `rusher_idempotent_publishes_total{result="released"}`.
    released: IntCounter,
    app_id: String,
    key: String,
    token: ClaimToken,
    armed: bool,
}

impl std::fmt::Debug for ClaimGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimGuard")
            .field("app_id", &self.app_id)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ClaimGuard {
    /// Stores `answer` (the JSON body sent) for repeats within the window.
    pub async fn answer(mut self, answer: Answer) {
        self.adapter
            .store_idempotent_answer(&self.app_id, &self.key, self.token, &answer)
            .await;
        // Only now: dropped during the store, the release below deletes the
        // claim only if the answer did not land (it checks the token).
        self.armed = false;
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.released.inc();
        let (adapter, app_id, key, token) = (
            self.adapter.clone(),
            std::mem::take(&mut self.app_id),
            std::mem::take(&mut self.key),
            self.token,
        );
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    adapter.release_idempotency_key(&app_id, &key, token).await;
                });
            }
            Err(_) => {
                tracing::warn!(%app_id, %key, "idempotency key not released (no runtime): it stays claimed until its window ends");
            }
        }
    }
}

impl Hub {
    /// Claims `key` (already validated) for a publish of `app`, or finds the
    /// answer to repeat. `None` or a window of 0: publish without a key.
    ///
    /// Errors: [`KeyBusy`] when the first request with the key is still
    /// publishing after [`IN_FLIGHT_WAIT`].
    pub async fn begin_idempotent(&self, app: &App, key: Option<&str>) -> Result<Begun, KeyBusy> {
        let Some(key) = key.filter(|_| app.idempotency_window > 0) else {
            return Ok(Begun::Publish(None));
        };
        let window = Duration::from_secs(app.idempotency_window);
        let deadline = Instant::now() + IN_FLIGHT_WAIT;
        let mut pause = Duration::from_millis(5);
        loop {
            let token: ClaimToken = rand::random();
            let claimed = self
                .adapter
                .claim_idempotency_key(&app.id, key, token, window)
                .await;
            self.metrics.idempotency_evictions.inc_by(claimed.evicted);
            if claimed.fell_back {
                self.metrics.idempotency_fail_open.inc();
            }
            let result = match claimed.claim {
                Claim::Claimed(token) => Ok(Begun::Publish(Some(ClaimGuard {
                    adapter: self.adapter.clone(),
                    released: self
                        .metrics
                        .idempotent_publishes
                        .with_label_values(&["released"]),
                    app_id: app.id.clone(),
                    key: key.to_owned(),
                    token,
                    armed: true,
                }))),
                Claim::Repeat(answer) => Ok(Begun::Repeat(answer)),
                // Claimed again on the next look if the first one fails.
                Claim::InFlight if Instant::now() < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                    continue;
                }
                Claim::InFlight => Err(KeyBusy),
            };
            let label = match &result {
                Ok(Begun::Publish(_)) => "first",
                Ok(Begun::Repeat(_)) => "repeat",
                Err(KeyBusy) => "busy",
            };
            self.metrics
                .idempotent_publishes
                .with_label_values(&[label])
                .inc();
            return result;
        }
    }
}
