//! `presence`: join/leave churn on presence channels with auth.
//!
//! Each channel `presence-bench-{c}` has `observers` members that stay, and
//! `churners` connections that join (signed subscribe with channel_data) and
//! leave (unsubscribe) in a loop. Every join owes each observer of the
//! channel one `member_added`, every leave one `member_removed`; the
//! observers count them. The churner's user_info carries a send stamp, so
//! `member_added` is timed.

use super::{wait_setup, Common, EndingTally, SetupTally};
use crate::report::{Better, Metric, Report};
use crate::stats::{self, human, Latency, RateMeter, Recorder};
use crate::ws::{self, Ending, Ws};
use crate::{frame, now_micros, sign, system};
use anyhow::Result;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Plan {
    pub channels: usize,
    pub observers: usize,
    pub churners: usize,
    /// Most joins in all (the count bound).
    pub joins: u64,
    pub duration: Duration,
    /// Joins per second to aim for, in all; 0 = as fast as the churners go.
    pub rate: f64,
}

fn channel_name(c: usize) -> String {
    format!("presence-bench-{c}")
}

/// Churners' user ids start with `k`, observers' with `o`.
fn is_churner_event(text: &str) -> bool {
    frame::token_after(text, "user_id").is_some_and(|id| id.starts_with('k'))
}

struct Shared {
    common: Arc<Common>,
    plan: Plan,
    setup: Arc<SetupTally>,
    permits: Semaphore,
    recorder: Recorder,
    observers_ready: Vec<AtomicU64>,
    /// Per channel: joins acknowledged, leaves sent.
    joins: Vec<AtomicU64>,
    leaves: Vec<AtomicU64>,
    removed_seen: AtomicU64,
    next_ticket: AtomicU64,
    churn_errors: Mutex<BTreeMap<String, u64>>,
    start: Mutex<Option<tokio::time::Instant>>,
}

async fn join(
    shared: &Shared,
    ws: &mut Ws,
    socket_id: &str,
    channel: &str,
    user: &str,
    info: &str,
) -> Result<()> {
    let channel_data = format!(r#"{{"user_id":"{user}","user_info":{info}}}"#);
    let common = &shared.common;
    let auth = sign::presence_auth(
        &common.app_key,
        &common.app_secret,
        socket_id,
        channel,
        &channel_data,
    );
    ws::send_subscribe(ws, channel, Some(&auth), Some(&channel_data)).await?;
    ws::await_subscribed(ws, channel, |_| {}).await
}

async fn observer(
    index: usize,
    c: usize,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> Option<(Ending, u64, u64, Vec<Option<u64>>)> {
    let addr = shared.common.addr().ok()?;
    let permit = shared.permits.acquire().await.ok()?;
    let channel = channel_name(c);
    let ws = match ws::connect(addr, &shared.common.app_key).await {
        Ok((mut ws, socket_id)) => {
            match join(
                &shared,
                &mut ws,
                &socket_id,
                &channel,
                &format!("o{c}-{index}"),
                "{}",
            )
            .await
            {
                Ok(()) => ws,
                Err(e) => {
                    shared.setup.fail(&e);
                    return None;
                }
            }
        }
        Err(e) => {
            shared.setup.fail(&e);
            return None;
        }
    };
    drop(permit);
    shared.observers_ready[c].fetch_add(1, Ordering::Relaxed);
    shared.setup.ok();
    let (mut added, mut removed) = (0u64, 0u64);
    let (ending, pusher_errors) =
        ws::listen_until_stopped(ws, &stop, |text| match frame::event_name(text) {
            Some("pusher_internal:member_added") if is_churner_event(text) => {
                added += 1;
                if let Some(sent) = frame::stamp(text) {
                    shared.recorder.record(index, sent, now_micros());
                }
                true
            }
            Some("pusher_internal:member_removed") if is_churner_event(text) => {
                removed += 1;
                shared.removed_seen.fetch_add(1, Ordering::Relaxed);
                true
            }
            _ => false,
        })
        .await;
    Some((ending, added, removed, pusher_errors))
}

async fn churner(
    index: usize,
    c: usize,
    shared: Arc<Shared>,
    go: CancellationToken,
    deadline: Arc<Mutex<Option<tokio::time::Instant>>>,
) -> Option<Ending> {
    let addr = shared.common.addr().ok()?;
    let permit = shared.permits.acquire().await.ok()?;
    let (mut ws, socket_id) = match ws::connect(addr, &shared.common.app_key).await {
        Ok(pair) => pair,
        Err(e) => {
            shared.setup.fail(&e);
            return None;
        }
    };
    drop(permit);
    shared.setup.ok();
    go.cancelled().await;
    let start = shared
        .start
        .lock()
        .expect("lock")
        .expect("start set before go");
    let deadline = deadline
        .lock()
        .expect("lock")
        .expect("deadline set before go");
    let channel = channel_name(c);
    let user = format!("k{c}-{index}");
    let plan = &shared.plan;
    loop {
        let ticket = shared.next_ticket.fetch_add(1, Ordering::Relaxed);
        if ticket >= plan.joins {
            break;
        }
        if plan.rate > 0.0 {
            tokio::time::sleep_until(start + Duration::from_secs_f64(ticket as f64 / plan.rate))
                .await;
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        let info = format!(r#"{{"t":"ts={}"}}"#, now_micros());
        if let Err(e) = join(&shared, &mut ws, &socket_id, &channel, &user, &info).await {
            let key: String = format!("{e:#}").chars().take(160).collect();
            *shared
                .churn_errors
                .lock()
                .expect("lock")
                .entry(key)
                .or_default() += 1;
            break;
        }
        shared.joins[c].fetch_add(1, Ordering::Relaxed);
        if ws::send_unsubscribe(&mut ws, &channel).await.is_err() {
            break;
        }
        shared.leaves[c].fetch_add(1, Ordering::Relaxed);
    }
    ws::close(ws).await;
    Some(Ending::ByUs)
}

pub async fn run(common: Common, plan: Plan) -> Result<Report> {
    let common = Arc::new(common);
    let per_channel = plan.observers + plan.churners;
    let total = plan.channels * per_channel;
    system::raise_open_files(total as u64 + 256);
    common.addr()?;
    let shared = Arc::new(Shared {
        common: common.clone(),
        plan: plan.clone(),
        setup: Arc::new(SetupTally::default()),
        permits: Semaphore::new(common.connect_concurrency.max(1)),
        recorder: Recorder::new(),
        observers_ready: (0..plan.channels).map(|_| AtomicU64::new(0)).collect(),
        joins: (0..plan.channels).map(|_| AtomicU64::new(0)).collect(),
        leaves: (0..plan.channels).map(|_| AtomicU64::new(0)).collect(),
        removed_seen: AtomicU64::new(0),
        next_ticket: AtomicU64::new(0),
        churn_errors: Mutex::new(BTreeMap::new()),
        start: Mutex::new(None),
    });
    let expected = |shared: &Shared| -> u64 {
        (0..shared.plan.channels)
            .map(|c| {
                let events = shared.joins[c].load(Ordering::Relaxed)
                    + shared.leaves[c].load(Ordering::Relaxed);
                events * shared.observers_ready[c].load(Ordering::Relaxed)
            })
            .sum()
    };
    let received =
        |shared: &Shared| shared.recorder.delivered() + shared.removed_seen.load(Ordering::Relaxed);

    let stop = CancellationToken::new();
    let go = CancellationToken::new();
    let deadline = Arc::new(Mutex::new(None));
    let progress_stop = CancellationToken::new();
    let progress = {
        let shared = shared.clone();
        let meter = RateMeter::new();
        stats::spawn_progress("presence", progress_stop.clone(), move || {
            let joins: u64 = shared.joins.iter().map(|j| j.load(Ordering::Relaxed)).sum();
            let got = received(&shared);
            format!(
                "connections {}/{} (failed {})  joins {}  member events {}/{}  {}/s",
                shared.setup.ready(),
                total,
                shared.setup.failed(),
                joins,
                human(got as f64),
                human(expected(&shared) as f64),
                human(meter.per_second(got))
            )
        })
    };

    let setup_started = Instant::now();
    let mut observers = Vec::new();
    let mut churners = Vec::new();
    for c in 0..plan.channels {
        for i in 0..plan.observers {
            observers.push(tokio::spawn(observer(
                c * plan.observers + i,
                c,
                shared.clone(),
                stop.clone(),
            )));
        }
        for i in 0..plan.churners {
            churners.push(tokio::spawn(churner(
                i,
                c,
                shared.clone(),
                go.clone(),
                deadline.clone(),
            )));
        }
    }
    let limit = ws::SETUP_TIMEOUT * 2 + Duration::from_millis(total as u64 * 10);
    let setup_done = wait_setup(&shared.setup, total as u64, limit).await;
    let setup_secs = setup_started.elapsed().as_secs_f64();

    let start = tokio::time::Instant::now();
    let start_micros = now_micros();
    *shared.start.lock().expect("lock") = Some(start);
    *deadline.lock().expect("lock") = Some(start + plan.duration);
    go.cancel();
    for task in churners {
        let _ = task.await;
    }
    let churn_secs = start.elapsed().as_secs_f64();
    let owed = expected(&shared);
    let drain_deadline = tokio::time::Instant::now() + common.drain();
    while received(&shared) < owed && tokio::time::Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    progress_stop.cancel();
    let _ = progress.await;
    stop.cancel();

    let mut endings = EndingTally::default();
    let (mut added, mut removed) = (0u64, 0u64);
    for task in observers {
        if let Ok(Some((ending, a, r, errors))) = task.await {
            endings.add(&ending);
            added += a;
            removed += r;
            for code in errors {
                endings.add_pusher_error(code);
            }
        }
    }
    let got = added + removed;
    let joins: u64 = shared.joins.iter().map(|j| j.load(Ordering::Relaxed)).sum();
    let leaves: u64 = shared
        .leaves
        .iter()
        .map(|j| j.load(Ordering::Relaxed))
        .sum();
    let lost = owed.saturating_sub(got);
    let extra = got.saturating_sub(owed);
    let (latency, last) = shared.recorder.merged();
    let events_secs = if last > start_micros {
        ((last - start_micros) as f64 / 1e6).max(churn_secs)
    } else {
        churn_secs
    };
    let member_events_per_s = got as f64 / events_secs.max(1e-6);
    let joins_per_s = joins as f64 / churn_secs.max(1e-6);
    let latency = Latency::of(&latency);
    let churn_errors = shared.churn_errors.lock().expect("lock").clone();

    let mut problems = Vec::new();
    if shared.setup.failed() > 0 || !setup_done {
        problems.push(format!(
            "{} of {total} connections failed to connect/join: {:?}",
            total as u64 - shared.setup.ready(),
            shared.setup.errors()
        ));
    }
    if !churn_errors.is_empty() {
        problems.push(format!("joins failed: {churn_errors:?}"));
    }
    problems.extend(endings.lost_problem("observers"));
    problems.extend(endings.pusher_error_problem());
    if lost > 0 {
        problems.push(format!("{lost} of {owed} member events lost"));
    }
    if extra > 0 {
        problems.push(format!("{extra} member events more than expected"));
    }
    if got == 0 {
        problems.push("no member event was delivered".into());
    }

    let lat = |f: fn(&Latency) -> f64| latency.as_ref().map(f);
    let metrics = vec![
        Metric::new(
            "member_events_per_s",
            member_events_per_s,
            "events/s",
            Better::Higher,
        ),
        Metric::new("joins_per_s", joins_per_s, "joins/s", Better::Higher),
        Metric::new(
            "member_added_p50_ms",
            lat(|l| l.p50_ms),
            "ms",
            Better::Lower,
        ),
        Metric::new(
            "member_added_p99_ms",
            lat(|l| l.p99_ms),
            "ms",
            Better::Lower,
        ),
        Metric::new("lost", lost as f64, "events", Better::Lower),
    ];
    Ok(Report {
        scenario: "presence",
        target: common.target(),
        ok: problems.is_empty(),
        problems,
        params: json!({
            "channels": plan.channels,
            "observers_per_channel": plan.observers,
            "churners_per_channel": plan.churners,
            "joins": plan.joins,
            "duration_s": plan.duration.as_secs_f64(),
            "rate": plan.rate,
            "connect_concurrency": common.connect_concurrency,
        }),
        metrics,
        details: json!({
            "setup": {
                "ready": shared.setup.ready(),
                "failed": shared.setup.failed(),
                "errors": shared.setup.errors(),
                "seconds": setup_secs,
            },
            "joins": joins,
            "leaves": leaves,
            "churn_seconds": churn_secs,
            "churn_errors": churn_errors,
            "member_events": {
                "expected": owed,
                "received": got,
                "member_added": added,
                "member_removed": removed,
                "lost": lost,
                "extra": extra,
                "per_s": member_events_per_s,
                "member_added_latency": latency,
            },
            "connections": endings,
        }),
    })
}
