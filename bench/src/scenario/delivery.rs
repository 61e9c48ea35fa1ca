//! The delivery engine behind `fanout`, `channels` and `publish`:
//! subscriber connections on some channels, events triggered over the signed
//! HTTP API, each delivery timed from the stamp in its data, and the
//! deliveries that never came counted as lost.

use super::{wait_setup, Common, EndingTally, SetupTally};
use crate::api::{event_body, ApiClient, Outcome};
use crate::frame::{self, BENCH_EVENT};
use crate::http_session::Endpoint;
use crate::report::{Better, Metric, Report};
use crate::stats::{self, human, Latency, RateMeter, Recorder};
use crate::transport::{Conn, Transport};
use crate::ws::{self, Ending};
use crate::{now_micros, system};
use anyhow::Result;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Unstamped events each publisher triggers before the measured phase.
const WARM_UP_EVENTS: usize = 2;

/// Messages asked for when checking what was stored for a follower (the
/// server's default `store.max_messages_per_channel`).
const STORED_LIMIT: u64 = 1000;

/// With a window: no delivery for this long means the run is stuck.
const STALL: Duration = Duration::from_secs(5);

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub scenario: &'static str,
    /// How subscribers connect.
    pub transport: Transport,
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
    /// Server nodes (ports on `--host`): subscriber `i` connects to node
    /// `i % ports.len()`, events are published to the first. Empty = `--port`.
    pub ports: Vec<u16>,
    /// Users that follow each channel (signed `POST /apps/{id}/subscribe`)
    /// before publishing, so the server stores and forwards every event.
    pub followers: usize,
}

/// The user id of follower `j` of `channel` (its own users per channel, so
/// runs on other channels do not add to what is stored for it).
fn follower_id(channel: &str, j: usize) -> String {
    format!("{channel}-follower-{j}")
}

/// Published-event bookkeeping shared by the publisher tasks.
#[derive(Default)]
struct PublishState {
    next: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
    /// Deliveries owed by the events accepted (or in flight) so far.
    expected: AtomicU64,
    /// The same, per server node.
    expected_per_node: Vec<AtomicU64>,
    error_examples: Mutex<BTreeMap<String, u64>>,
}

/// Ready subscribers, per node and channel: `[node][channel]`.
type Ready = Arc<Vec<Vec<AtomicU64>>>;

impl PublishState {
    fn new(nodes: usize) -> Self {
        PublishState {
            expected_per_node: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            ..PublishState::default()
        }
    }

    fn owe(&self, owed: &[u64]) {
        self.expected
            .fetch_add(owed.iter().sum(), Ordering::Relaxed);
        for (node, n) in owed.iter().enumerate() {
            self.expected_per_node[node].fetch_add(*n, Ordering::Relaxed);
        }
    }

    fn forgive(&self, owed: &[u64]) {
        self.expected
            .fetch_sub(owed.iter().sum(), Ordering::Relaxed);
        for (node, n) in owed.iter().enumerate() {
            self.expected_per_node[node].fetch_sub(*n, Ordering::Relaxed);
        }
    }

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
    addrs: Arc<Vec<SocketAddr>>,
    common: Arc<Common>,
    plan: Arc<Plan>,
    ready: Ready,
    recorder: Arc<Recorder>,
    setup: Arc<SetupTally>,
    permits: Arc<Semaphore>,
    stop: CancellationToken,
) -> Option<SubscriberResult> {
    let channel_index = plan.subscriber_channel[index];
    let channel = &plan.channels[channel_index];
    let node = index % addrs.len();
    let addr = addrs[node];
    let permit = permits.acquire().await.ok()?;
    let endpoint = Endpoint {
        addr,
        app_key: common.app_key.clone(),
        app_id: common.app_id.clone(),
    };
    let at_connect: &[&str] = if plan.transport.channels_at_connect() {
        &[channel.as_str()]
    } else {
        &[]
    };
    let conn = match Conn::open(plan.transport, &endpoint, at_connect).await {
        Ok((mut conn, _socket_id)) => match conn.subscribe(channel).await {
            Ok(()) => conn,
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
    ready[node][channel_index].fetch_add(1, Ordering::Relaxed);
    setup.ok();

    let mut received = 0u64;
    let (ending, pusher_errors) = conn
        .listen_until_stopped(&stop, |text| {
            let Some(sent) = frame::stamp(text) else {
                return false;
            };
            recorder.record_in(node, index, sent, now_micros());
            received += 1;
            true
        })
        .await;
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
    ready: Ready,
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
        let owed_per_node: Vec<u64> = ready
            .iter()
            .map(|per_channel| {
                targets
                    .iter()
                    .map(|&c| per_channel[c].load(Ordering::Relaxed))
                    .sum()
            })
            .collect();
        let owed: u64 = owed_per_node.iter().sum();
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
        state.owe(&owed_per_node);
        let began = Instant::now();
        let outcome = client.trigger(body).await;
        let _ = latency.record((began.elapsed().as_micros() as u64).max(1));
        match outcome {
            Ok(Outcome::Ok) => {
                state.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Outcome::Status(status, body)) => {
                state.forgive(&owed_per_node);
                state.error(format!("HTTP {status}: {body}"));
            }
            Err(e) => {
                // The event may or may not have been published; count it as
                // not published, so its deliveries (if any) show as extra.
                state.forgive(&owed_per_node);
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
    let base = common.addr()?;
    let ports = if plan.ports.is_empty() {
        vec![common.port]
    } else {
        plan.ports.clone()
    };
    let nodes = ports.len();
    let addrs: Arc<Vec<SocketAddr>> = Arc::new(
        ports
            .iter()
            .map(|&port| SocketAddr::new(base.ip(), port))
            .collect(),
    );
    // Events are published to the first node.
    let publish_addr = addrs[0];

    let recorder = Arc::new(Recorder::with_groups(nodes));
    let setup = Arc::new(SetupTally::default());
    let permits = Arc::new(Semaphore::new(common.connect_concurrency.max(1)));
    let ready: Ready = Arc::new(
        (0..nodes)
            .map(|_| plan.channels.iter().map(|_| AtomicU64::new(0)).collect())
            .collect(),
    );
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
            addrs.clone(),
            common.clone(),
            plan.clone(),
            ready.clone(),
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
    let ready_total = setup.ready();

    // Followers: each channel is followed by `plan.followers` users, so
    // every event published on it is stored and forwarded to their
    // personal channels (nobody is connected to those: offline users).
    let mut follow_ok = 0u64;
    let mut follow_errors: BTreeMap<String, u64> = BTreeMap::new();
    if plan.followers > 0 {
        let mut client = ApiClient::new(publish_addr, common.app());
        let path = format!("/apps/{}/subscribe", common.app_id);
        for channel in &plan.channels {
            for j in 0..plan.followers {
                let body =
                    json!({ "user_id": follower_id(channel, j), "event": channel }).to_string();
                match client.request("POST", &path, &[], body).await {
                    Ok((status, _)) if (200..300).contains(&status) => follow_ok += 1,
                    Ok((status, body)) => {
                        let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
                        *follow_errors
                            .entry(format!("HTTP {status}: {text}"))
                            .or_default() += 1;
                    }
                    Err(e) => *follow_errors.entry(format!("{e:#}")).or_default() += 1,
                }
            }
        }
    }

    // Warm-up: every publisher opens its HTTP connection and triggers a
    // couple of unstamped events (subscribers do not count them), so the
    // measured phase starts with warm connections on both sides.
    let mut clients = Vec::new();
    let mut warm_up_ok = 0u64;
    for _ in 0..plan.publishers.max(1) {
        let mut client = ApiClient::new(publish_addr, common.app());
        let channel = plan.channels[0].as_str();
        for _ in 0..WARM_UP_EVENTS {
            let body = event_body(BENCH_EVENT, &[channel], "warm-up");
            match client.trigger(body).await {
                Ok(Outcome::Ok) => warm_up_ok += 1,
                Ok(Outcome::Status(status, body)) => {
                    eprintln!("warning: warm-up trigger failed: HTTP {status}: {body}")
                }
                Err(e) => eprintln!("warning: warm-up trigger failed: {e:#}"),
            }
        }
        clients.push(client);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Phase 2: publish.
    let state = Arc::new(PublishState::new(nodes));
    let out_of_time = Arc::new(AtomicBool::new(false));
    let stalled = Arc::new(AtomicBool::new(false));
    // CPU used from here to the end of the drain, by the server and by the
    // generator (set-up excluded: it differs by transport).
    let cpu_before = (
        common.server_pid.and_then(system::cpu_seconds),
        system::own_cpu_seconds(),
    );
    let processes_before = common.cpu_of_processes();
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
            ready.clone(),
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
    let cpu_after = (
        common.server_pid.and_then(system::cpu_seconds),
        system::own_cpu_seconds(),
    );
    let processes_after = common.cpu_of_processes();
    // A moment for duplicates or stragglers to show, when everything came.
    tokio::time::sleep(Duration::from_millis(100)).await;
    progress_stop.cancel();
    let _ = progress.await;
    stop.cancel();

    // Persistence: the first follower should have every message published
    // on the (single) channel kept for them, up to the store's per-channel
    // bound; stored asynchronously, so wait for it a while.
    let ok_events = state.ok.load(Ordering::Relaxed);
    let mut stored = None;
    if plan.followers > 0 && follow_ok > 0 && plan.channels.len() == 1 {
        let want = (ok_events + warm_up_ok).min(STORED_LIMIT);
        let mut client = ApiClient::new(publish_addr, common.app());
        let path = format!(
            "/apps/{}/users/{}/messages",
            common.app_id,
            follower_id(&plan.channels[0], 0)
        );
        let limit = STORED_LIMIT.to_string();
        let deadline = tokio::time::Instant::now() + common.drain();
        let mut seen = 0u64;
        let mut error;
        loop {
            match client
                .request("GET", &path, &[("limit", &limit)], String::new())
                .await
            {
                Ok((200, body)) => {
                    seen = memchr::memmem::find_iter(&body, b"\"seq\":").count() as u64;
                    error = None;
                }
                Ok((status, body)) => {
                    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
                    error = Some(format!("HTTP {status}: {text}"));
                }
                Err(e) => error = Some(format!("{e:#}")),
            }
            if seen >= want || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        stored = Some((seen, want, error));
    }

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
    let errors = state.errors.load(Ordering::Relaxed);
    let lost = expected.saturating_sub(delivered);
    let extra = delivered.saturating_sub(expected);
    let delivery_secs = if last_delivery > publish_start_micros {
        (last_delivery - publish_start_micros) as f64 / 1e6
    } else {
        publish_secs
    };
    let deliveries_per_s = delivered as f64 / delivery_secs.max(1e-6);
    let rate_since_start = |count: u64, last: u64| {
        let secs = if last > publish_start_micros {
            (last - publish_start_micros) as f64 / 1e6
        } else {
            publish_secs
        };
        count as f64 / secs.max(1e-6)
    };
    // Per node, and node 0 ("local": where events are published) against
    // all the others ("remote": reached through the cluster's bus).
    let mut per_node = Vec::new();
    let mut remote = (stats::new_histogram(), 0u64, 0u64, 0u64);
    for (node, port) in ports.iter().enumerate() {
        let (histogram, last) = recorder.merged_group(node);
        let received = recorder.group_delivered(node);
        let owed = state.expected_per_node[node].load(Ordering::Relaxed);
        let subscribers_ready: u64 = ready[node].iter().map(|r| r.load(Ordering::Relaxed)).sum();
        if node > 0 {
            remote.0.add(&histogram).expect("same bounds");
            remote.1 = remote.1.max(last);
            remote.2 += received;
            remote.3 += owed;
        }
        per_node.push(json!({
            "port": port,
            "role": if node == 0 { "local (publisher's node)" } else { "remote" },
            "subscribers": subscribers_ready,
            "expected": owed,
            "received": received,
            "lost": owed.saturating_sub(received),
            "per_s": rate_since_start(received, last),
            "latency": Latency::of(&histogram),
        }));
    }
    let publish_per_s = ok_events as f64 / publish_secs.max(1e-6);
    let cpu_used = |before: Option<f64>, after: Option<f64>| Some(after? - before?);
    let server_cpu = cpu_used(cpu_before.0, cpu_after.0);
    let generator_cpu = cpu_used(cpu_before.1, cpu_after.1);
    let processes_cpu: serde_json::Map<String, serde_json::Value> = processes_before
        .into_iter()
        .zip(processes_after)
        .map(|((name, before), (_, after))| (name, json!(cpu_used(before, after))))
        .collect();
    let per_delivery = |cpu: Option<f64>| {
        cpu.filter(|_| delivered > 0)
            .map(|secs| secs * 1e6 / delivered as f64)
    };
    let latency = Latency::of(&latency);
    let request_latency = Latency::of(&request_latency);

    let mut problems = Vec::new();
    if setup.failed() > 0 || !setup_done {
        problems.push(format!(
            "{} of {subscribers} subscribers failed to connect/subscribe: {:?}",
            subscribers as u64 - ready_total,
            setup.errors()
        ));
    }
    problems.extend(endings.lost_problem("connections"));
    problems.extend(endings.pusher_error_problem());
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
    if !follow_errors.is_empty() {
        problems.push(format!(
            "{} follow requests (POST /apps/{{id}}/subscribe) failed: {follow_errors:?}",
            follow_errors.values().sum::<u64>()
        ));
    }
    if let Some((seen, want, error)) = &stored {
        if seen < want {
            problems.push(format!(
                "persistence: {seen} of {want} messages stored for {} after {:?}{}",
                follower_id(&plan.channels[0], 0),
                common.drain(),
                error
                    .as_ref()
                    .map_or_else(String::new, |e| format!(" (last answer: {e})"))
            ));
        }
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
    if nodes > 1 {
        let local = &per_node[0];
        let (remote_latency, remote_last, remote_received, remote_owed) = &remote;
        let remote_latency = Latency::of(remote_latency);
        let f = |v: &serde_json::Value| v.as_f64();
        metrics.push(Metric::new(
            "local_deliveries_per_s",
            f(&local["per_s"]),
            "msg/s",
            Better::Higher,
        ));
        metrics.push(Metric::new(
            "local_p50_ms",
            f(&local["latency"]["p50_ms"]),
            "ms",
            Better::Lower,
        ));
        metrics.push(Metric::new(
            "local_p99_ms",
            f(&local["latency"]["p99_ms"]),
            "ms",
            Better::Lower,
        ));
        metrics.push(Metric::new(
            "remote_deliveries_per_s",
            rate_since_start(*remote_received, *remote_last),
            "msg/s",
            Better::Higher,
        ));
        metrics.push(Metric::new(
            "remote_p50_ms",
            remote_latency.as_ref().map(|l| l.p50_ms),
            "ms",
            Better::Lower,
        ));
        metrics.push(Metric::new(
            "remote_p99_ms",
            remote_latency.as_ref().map(|l| l.p99_ms),
            "ms",
            Better::Lower,
        ));
        metrics.push(Metric::new(
            "remote_lost",
            remote_owed.saturating_sub(*remote_received) as f64,
            "msgs",
            Better::Lower,
        ));
    }
    if plan.scenario != "publish" {
        // CPU per delivery while publishing and draining: what a delivery
        // costs each side (10 ms resolution; meaningful over a long run).
        metrics.push(Metric::new(
            "server_cpu_us_per_delivery",
            per_delivery(server_cpu),
            "µs",
            Better::Lower,
        ));
        metrics.push(Metric::new(
            "generator_cpu_us_per_delivery",
            per_delivery(generator_cpu),
            "µs",
            Better::Lower,
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
            "transport": plan.transport,
            "channels": plan.channels.len(),
            "channels_per_event": plan.channels_per_event,
            "events": plan.events,
            "duration_s": plan.duration.as_secs_f64(),
            "rate": plan.rate,
            "publishers": plan.publishers,
            "window": plan.window,
            "payload_bytes": plan.payload,
            "ports": ports,
            "followers": plan.followers,
            "connect_concurrency": common.connect_concurrency,
            "drain_s": common.drain_secs,
        }),
        metrics,
        details: json!({
            "setup": {
                "ready": ready_total,
                "failed": setup.failed(),
                "errors": setup.errors(),
                "seconds": setup_secs,
                "connections_per_s": ready_total as f64 / setup_secs.max(1e-6),
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
            "cpu_seconds_publish_and_drain": {
                "server": server_cpu,
                "generator": generator_cpu,
                "processes": processes_cpu,
            },
            "connections": endings,
            "nodes": per_node,
            "persistence": {
                "followers": plan.followers,
                "follows_ok": follow_ok,
                "follow_errors": follow_errors,
                "stored_for_first_follower": stored.as_ref().map(|s| s.0),
                "stored_expected": stored.as_ref().map(|s| s.1),
            },
        }),
    })
}
