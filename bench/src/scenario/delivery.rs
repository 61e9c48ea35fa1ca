//! The delivery engine behind `fanout`, `channels` and `publish`:
//! subscriber connections on some channels, events triggered over the signed
//! HTTP API, each delivery timed from the stamp in its data, and the
//! deliveries that never came counted as lost.

use super::{wait_setup, Common, EndingTally, SetupTally};
use crate::api::{event_body, ApiClient, Outcome};
use crate::frame::{self, BENCH_EVENT};
use crate::report::{Better, Metric, Report};
use crate::stats::{self, human, Latency, RateMeter, Recorder};
use crate::ws::{self, Ending};
use crate::{now_micros, system};
use anyhow::Result;
use futures_util::StreamExt;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Unstamped events each publisher triggers before the measured phase.
const WARM_UP_EVENTS: usize = 2;

/// With a window: no delivery for this long means the run is stuck.
const STALL: Duration = Duration::from_secs(5);

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub scenario: &'static str,
    /// Channel names.
    pub channels: Vec<String>,
    /// For each subscriber connection, the index of its channel.
    pub subscriber_channel: Vec<usize>,
    /// Event `i` goes to channels `(i*k + j) % channels.len()` for `j < k`.
    pub channels_per_event: usize,
    /// Most events to publish.
    pub events: u64,
    /// Longest publishing phase.
    pub duration: Duration,
    /// Events per second to aim for; 0 = as fast as allowed.
    pub rate: f64,
    /// Concurrent HTTP clients (one keep-alive connection each).
    pub publishers: usize,
    /// With rate 0: most events published but not yet fully delivered; 0 = no limit.
    pub window: u64,
    /// Bytes of event data.
    pub payload: usize,
}

/// Published-event bookkeeping shared by the publisher tasks.
#[derive(Default)]
struct PublishState {
    next: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
    /// Deliveries owed by the events accepted (or in flight) so far.
    expected: AtomicU64,
    error_examples: Mutex<BTreeMap<String, u64>>,
}

impl PublishState {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut examples = self.error_examples.lock().expect("lock");
        if examples.len() < 10 || examples.contains_key(&what) {
            *examples.entry(what).or_default() += 1;
        }
    }
}

struct SubscriberResult {
    received: u64,
    ending: Ending,
    pusher_errors: Vec<Option<u64>>,
}

#[allow(clippy::too_many_arguments)]
async fn subscriber(
    index: usize,
    common: Arc<Common>,
    plan: Arc<Plan>,
    ready_per_channel: Arc<Vec<AtomicU64>>,
    recorder: Arc<Recorder>,
    setup: Arc<SetupTally>,
    permits: Arc<Semaphore>,
    stop: CancellationToken,
) -> Option<SubscriberResult> {
    let channel_index = plan.subscriber_channel[index];
    let channel = &plan.channels[channel_index];
    let addr = common.addr().ok()?;
    let permit = permits.acquire().await.ok()?;
    let mut ws = match ws::connect(addr, &common.app_key).await {
        Ok((mut ws, _socket_id)) => match ws::subscribe(&mut ws, channel).await {
            Ok(()) => ws,
            Err(e) => {
                setup.fail(&e);
                return None;
            }
        },
        Err(e) => {
            setup.fail(&e);
            return None;
        }
    };
    drop(permit);
    // Counted before publishing starts: from now on this subscriber is owed
    // every event on its channel.
    ready_per_channel[channel_index].fetch_add(1, Ordering::Relaxed);
    setup.ok();

    let mut received = 0u64;
    let mut pusher_errors = Vec::new();
    let cancelled = stop.cancelled();
    tokio::pin!(cancelled);
    let ending = loop {
        tokio::select! {
            biased;
            item = ws.next() => {
                if let Some(Ok(Message::Text(text))) = &item {
                    if let Some(sent) = frame::stamp(text) {
                        recorder.record(index, sent, now_micros());
                        received += 1;
                    } else {
                        match frame::event_name(text) {
                            Some("pusher:ping") if ws::pong(&mut ws).await.is_err() => {
                                break Ending::Dropped("cannot answer ping".into());
                            }
                            Some("pusher:error") => pusher_errors.push(frame::error_code(text)),
                            _ => {}
                        }
                    }
                    continue;
                }
                if let Some(ending) = ws::ending_of(item) {
                    break ending;
                }
            }
            _ = &mut cancelled => {
                ws::close(ws).await;
                break Ending::ByUs;
            }
        }
    };
    Some(SubscriberResult {
        received,
        ending,
        pusher_errors,
    })
}

#[allow(clippy::too_many_arguments)]
async fn publisher(
    mut client: ApiClient,
    plan: Arc<Plan>,
    state: Arc<PublishState>,
    ready_per_channel: Arc<Vec<AtomicU64>>,
    recorder: Arc<Recorder>,
    start: tokio::time::Instant,
    deadline: tokio::time::Instant,
    out_of_time: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
) -> hdrhistogram::Histogram<u64> {
    let mut latency = stats::new_histogram();
    let channel_count = plan.channels.len();
    let k = plan.channels_per_event.clamp(1, channel_count);
    loop {
        let i = state.next.fetch_add(1, Ordering::Relaxed);
        if i >= plan.events {
            break;
        }
        if plan.rate > 0.0 {
            let at = start + Duration::from_secs_f64(i as f64 / plan.rate);
            tokio::time::sleep_until(at).await;
        }
        let targets: Vec<usize> = (0..k)
            .map(|j| ((i as usize) * k + j) % channel_count)
            .collect();
        let owed: u64 = targets
            .iter()
            .map(|&c| ready_per_channel[c].load(Ordering::Relaxed))
            .sum();
        if plan.rate <= 0.0 && plan.window > 0 {
            // Keep at most `window` events' deliveries outstanding; give up
            // when deliveries stop coming at all (lost or stuck).
            let limit = plan.window * owed.max(1);
            let mut seen = recorder.delivered();
            let mut since = Instant::now();
            while state.expected.load(Ordering::Relaxed).saturating_sub(seen) > limit
                && tokio::time::Instant::now() < deadline
            {
                if stalled.load(Ordering::Relaxed) {
                    return latency;
                }
                tokio::time::sleep(Duration::from_micros(500)).await;
                let now_seen = recorder.delivered();
                if now_seen != seen {
                    seen = now_seen;
                    since = Instant::now();
                } else if since.elapsed() > STALL {
                    stalled.store(true, Ordering::Relaxed);
                    return latency;
                }
            }
        }
        if stalled.load(Ordering::Relaxed) {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            out_of_time.store(true, Ordering::Relaxed);
            break;
        }
        let names: Vec<&str> = targets.iter().map(|&c| plan.channels[c].as_str()).collect();
        let sent = now_micros();
        let body = event_body(
            BENCH_EVENT,
            &names,
            &frame::event_data(sent, i, plan.payload),
        );
        state.expected.fetch_add(owed, Ordering::Relaxed);
        let began = Instant::now();
        let outcome = client.trigger(body).await;
        let _ = latency.record((began.elapsed().as_micros() as u64).max(1));
        match outcome {
            Ok(Outcome::Ok) => {
                state.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Outcome::Status(status, body)) => {
                state.expected.fetch_sub(owed, Ordering::Relaxed);
                state.error(format!("HTTP {status}: {body}"));
            }
            Err(e) => {
                // The event may or may not have been published; count it as
                // not published, so its deliveries (if any) show as extra.
                state.expected.fetch_sub(owed, Ordering::Relaxed);
                state.error(format!("{e:#}"));
            }
        }
    }
    latency
}

/// Runs `plan` against the server in `common` and reports.
pub async fn run(common: Common, plan: Plan) -> Result<Report> {
    let common = Arc::new(common);
    let plan = Arc::new(plan);
    let subscribers = plan.subscriber_channel.len();
    system::raise_open_files(subscribers as u64 + plan.publishers as u64 + 256);
    common.addr()?;

    let recorder = Arc::new(Recorder::new());
    let setup = Arc::new(SetupTally::default());
    let permits = Arc::new(Semaphore::new(common.connect_concurrency.max(1)));
    let ready_per_channel: Arc<Vec<AtomicU64>> =
        Arc::new(plan.channels.iter().map(|_| AtomicU64::new(0)).collect());
    let stop = CancellationToken::new();

    // Phase 1: subscribers connect and subscribe.
    let setup_started = Instant::now();
    let progress_stop = CancellationToken::new();
    let progress = {
        let setup = setup.clone();
        let recorder = recorder.clone();
        let meter = RateMeter::new();
        let progress_stop = progress_stop.clone();
        stats::spawn_progress(plan.scenario, progress_stop, move || {
            let delivered = recorder.delivered();
            format!(
                "subscribers {}/{} (failed {})  delivered {}  {}/s",
                setup.ready(),
                subscribers,
                setup.failed(),
                human(delivered as f64),
                human(meter.per_second(delivered))
            )
        })
    };
    let mut tasks = Vec::with_capacity(subscribers);
    for index in 0..subscribers {
        tasks.push(tokio::spawn(subscriber(
            index,
            common.clone(),
            plan.clone(),
            ready_per_channel.clone(),
            recorder.clone(),
            setup.clone(),
            permits.clone(),
            stop.clone(),
        )));
    }
    // Every task ends set-up within its own timeout (ready or failed).
    let setup_limit = ws::SETUP_TIMEOUT * 2 + Duration::from_millis(subscribers as u64 * 10);
    let setup_done = wait_setup(&setup, subscribers as u64, setup_limit).await;
    let setup_secs = setup_started.elapsed().as_secs_f64();
    let ready = setup.ready();

    // Warm-up: every publisher opens its HTTP connection and triggers a
    // couple of unstamped events (subscribers do not count them), so the
    // measured phase starts with warm connections on both sides.
    let mut clients = Vec::new();
    for _ in 0..plan.publishers.max(1) {
        let mut client = ApiClient::new(common.addr()?, common.app());
        let channel = plan.channels[0].as_str();
        for _ in 0..WARM_UP_EVENTS {
            let body = event_body(BENCH_EVENT, &[channel], "warm-up");
            if let Err(e) = client.trigger(body).await {
                eprintln!("warning: warm-up trigger failed: {e:#}");
            }
        }
        clients.push(client);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Phase 2: publish.
    let state = Arc::new(PublishState::default());
    let out_of_time = Arc::new(AtomicBool::new(false));
    let stalled = Arc::new(AtomicBool::new(false));
    let publish_start_micros = now_micros();
    let start = tokio::time::Instant::now();
    let deadline = start + plan.duration;
    progress_stop.cancel();
    let _ = progress.await;
    let progress_stop = CancellationToken::new();
    let progress = {
        let state = state.clone();
        let recorder = recorder.clone();
        let meter = RateMeter::new();
        let events = plan.events;
        stats::spawn_progress(plan.scenario, progress_stop.clone(), move || {
            let delivered = recorder.delivered();
            let expected = state.expected.load(Ordering::Relaxed);
            format!(
                "published {}/{} (errors {})  delivered {}/{}  {}/s",
                state.ok.load(Ordering::Relaxed),
                events,
                state.errors.load(Ordering::Relaxed),
                human(delivered as f64),
                human(expected as f64),
                human(meter.per_second(delivered))
            )
        })
    };
    let mut publishers = Vec::new();
    for client in clients {
        publishers.push(tokio::spawn(publisher(
            client,
            plan.clone(),
            state.clone(),
            ready_per_channel.clone(),
            recorder.clone(),
            start,
            deadline,
            out_of_time.clone(),
            stalled.clone(),
        )));
    }
    let mut request_latency = stats::new_histogram();
    for publisher in publishers {
        if let Ok(histogram) = publisher.await {
            request_latency.add(&histogram).expect("same bounds");
        }
    }
    let publish_secs = start.elapsed().as_secs_f64();

    // Phase 3: drain what is still on its way.
    let expected = state.expected.load(Ordering::Relaxed);
    let drain_deadline = tokio::time::Instant::now() + common.drain();
    while recorder.delivered() < expected && tokio::time::Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A moment for duplicates or stragglers to show, when everything came.
    tokio::time::sleep(Duration::from_millis(100)).await;
    progress_stop.cancel();
    let _ = progress.await;
    stop.cancel();

    let mut endings = EndingTally::default();
    let mut received_by_subscribers = 0u64;
    let mut starved = 0u64;
    for task in tasks {
        if let Ok(Some(result)) = task.await {
            received_by_subscribers += result.received;
            if result.received == 0 {
                starved += 1;
            }
            endings.add(&result.ending);
            for code in result.pusher_errors {
                endings.add_pusher_error(code);
            }
        }
    }

    let (latency, last_delivery) = recorder.merged();
    let delivered = recorder.delivered();
    let ok_events = state.ok.load(Ordering::Relaxed);
    let errors = state.errors.load(Ordering::Relaxed);
    let lost = expected.saturating_sub(delivered);
    let extra = delivered.saturating_sub(expected);
    let delivery_secs = if last_delivery > publish_start_micros {
        (last_delivery - publish_start_micros) as f64 / 1e6
    } else {
        publish_secs
    };
    let deliveries_per_s = delivered as f64 / delivery_secs.max(1e-6);
    let publish_per_s = ok_events as f64 / publish_secs.max(1e-6);
    let latency = Latency::of(&latency);
    let request_latency = Latency::of(&request_latency);

    let mut problems = Vec::new();
    if setup.failed() > 0 || !setup_done {
        problems.push(format!(
            "{} of {subscribers} subscribers failed to connect/subscribe: {:?}",
            subscribers as u64 - ready,
            setup.errors()
        ));
    }
    if endings.lost_connections() > 0 {
        problems.push(format!(
            "{} connections were closed by the server during the run: {:?} dropped {} {:?}",
            endings.lost_connections(),
            endings.closed_by_server,
            endings.dropped,
            endings.dropped_examples
        ));
    }
    if !endings.pusher_errors.is_empty() {
        problems.push(format!(
            "pusher:error frames received: {:?}",
            endings.pusher_errors
        ));
    }
    if errors > 0 {
        problems.push(format!(
            "{errors} publish requests failed: {:?}",
            state.error_examples.lock().expect("lock")
        ));
    }
    if lost > 0 {
        problems.push(format!("{lost} of {expected} deliveries lost"));
    }
    if extra > 0 {
        problems.push(format!(
            "{extra} deliveries more than expected (duplicates?)"
        ));
    }
    if delivered == 0 {
        problems.push("nothing was delivered".into());
    }
    if stalled.load(Ordering::Relaxed) {
        problems.push(format!(
            "publishing stopped after {ok_events} events: no delivery for {STALL:?} with the window full"
        ));
    }
    if out_of_time.load(Ordering::Relaxed) {
        eprintln!(
            "note: the duration bound ({:?}) ended publishing after {ok_events} of {} events",
            plan.duration, plan.events
        );
    }

    let lat = |f: fn(&Latency) -> f64| latency.as_ref().map(f);
    let req = |f: fn(&Latency) -> f64| request_latency.as_ref().map(f);
    let mut metrics = Vec::new();
    if plan.scenario == "publish" {
        metrics.push(Metric::new(
            "publish_per_s",
            publish_per_s,
            "req/s",
            Better::Higher,
        ));
        metrics.push(Metric::new(
            "request_p50_ms",
            req(|l| l.p50_ms),
            "ms",
            Better::Lower,
        ));
        metrics.push(Metric::new(
            "request_p99_ms",
            req(|l| l.p99_ms),
            "ms",
            Better::Lower,
        ));
        metrics.push(Metric::new(
            "request_max_ms",
            req(|l| l.max_ms),
            "ms",
            Better::Lower,
        ));
        metrics.push(Metric::new(
            "deliveries_per_s",
            deliveries_per_s,
            "msg/s",
            Better::Higher,
        ));
    } else {
        metrics.push(Metric::new(
            "deliveries_per_s",
            deliveries_per_s,
            "msg/s",
            Better::Higher,
        ));
        metrics.push(Metric::new(
            "latency_p50_ms",
            lat(|l| l.p50_ms),
            "ms",
            Better::Lower,
        ));
        metrics.push(Metric::new(
            "latency_p90_ms",
            lat(|l| l.p90_ms),
            "ms",
            Better::Lower,
        ));
        metrics.push(Metric::new(
            "latency_p99_ms",
            lat(|l| l.p99_ms),
            "ms",
            Better::Lower,
        ));
        metrics.push(Metric::new(
            "latency_max_ms",
            lat(|l| l.max_ms),
            "ms",
            Better::Lower,
        ));
        metrics.push(Metric::new(
            "publish_per_s",
            publish_per_s,
            "req/s",
            Better::Higher,
        ));
    }
    metrics.push(Metric::new("lost", lost as f64, "msgs", Better::Lower));
    metrics.push(Metric::new(
        "dropped_connections",
        endings.lost_connections() as f64,
        "conns",
        Better::Lower,
    ));

    Ok(Report {
        scenario: plan.scenario,
        target: common.target(),
        ok: problems.is_empty(),
        problems,
        params: json!({
            "subscribers": subscribers,
            "channels": plan.channels.len(),
            "channels_per_event": plan.channels_per_event,
            "events": plan.events,
            "duration_s": plan.duration.as_secs_f64(),
            "rate": plan.rate,
            "publishers": plan.publishers,
            "window": plan.window,
            "payload_bytes": plan.payload,
            "connect_concurrency": common.connect_concurrency,
            "drain_s": common.drain_secs,
        }),
        metrics,
        details: json!({
            "setup": {
                "ready": ready,
                "failed": setup.failed(),
                "errors": setup.errors(),
                "seconds": setup_secs,
                "connections_per_s": ready as f64 / setup_secs.max(1e-6),
            },
            "publish": {
                "ok": ok_events,
                "errors": errors,
                "error_examples": *state.error_examples.lock().expect("lock"),
                "seconds": publish_secs,
                "per_s": publish_per_s,
                "request_latency": request_latency,
            },
            "deliveries": {
                "expected": expected,
                "received": delivered,
                "received_by_subscribers": received_by_subscribers,
                "lost": lost,
                "extra": extra,
                "subscribers_with_none": starved,
                "seconds": delivery_secs,
                "per_s": deliveries_per_s,
                "latency": latency,
            },
            "connections": endings,
        }),
    })
}
