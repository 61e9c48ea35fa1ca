//! `recovery`: N clients miss E events and all reconnect at once with
//! `since` (rusher's history extension, README "History and recovery").
//!
//! 1. N clients subscribe to one channel with history; one marker event
//!    gives each the serial it last saw.
//! 2. Every client closes; E events are published (one after the other, so
//!    their serials follow their order).
//! 3. All N reconnect at once and subscribe with `since`; each must get the
//!    E events with serials `since+1 ..= since+E`, in that order, without a
//!    `pusher:recovery_failed`.
//!
//! Headline: the time from the first reconnect until the last client holds
//! all E events; the server's RSS before the reconnect, after it, and its
//! peak meanwhile (sampled every 10 ms).

use super::{Common, SetupTally};
use crate::api::{event_body, ApiClient, Outcome};
use crate::frame;
use crate::report::{Better, Metric, Report};
use crate::stats::{self, human, Latency};
use crate::system;
use crate::ws::{self, Ws};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Plan {
    pub clients: usize,
    pub events: u64,
    pub channel: String,
    pub payload: usize,
    /// Longest wait for every client to recover.
    pub timeout: Duration,
}

/// The `"serial"` of an event frame (the last field: searched from the end,
/// so event data cannot fake it).
pub fn serial_of(text: &str) -> Option<u64> {
    let at = text.rfind("\"serial\":")? + "\"serial\":".len();
    let digits = text[at..].trim_start();
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// Reads frames until an event `name` on the channel; returns its serial.
async fn next_event_serial(ws: &mut Ws, name: &str) -> Result<u64> {
    loop {
        let text = ws::next_text(ws).await?;
        match frame::event_name(&text) {
            Some(event) if event == name => {
                return serial_of(&text)
                    .ok_or_else(|| anyhow!("no serial in {text}: is history on for the app?"));
            }
            Some("pusher:ping") => ws::pong(ws).await?,
            _ => {}
        }
    }
}

/// Step 3 for one client: reconnect, subscribe with `since`, and read the
/// replay; the time from `start` until the last event, checked for count
/// and order.
async fn recover(common: &Common, plan: &Plan, since: u64, start: Instant) -> Result<Duration> {
    let addr = common.addr()?;
    let (mut ws, _) = ws::connect(addr, &common.app_key).await?;
    let subscribe = json!({
        "event": "pusher:subscribe",
        "data": { "channel": plan.channel, "since": since },
    });
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        subscribe.to_string(),
    ))
    .await?;
    let mut expected = since + 1;
    let last = since + plan.events;
    while expected <= last {
        let text = ws::next_text(&mut ws).await?;
        match frame::event_name(&text) {
            Some("e") => {
                let serial = serial_of(&text).ok_or_else(|| anyhow!("no serial in {text}"))?;
                if serial != expected {
                    bail!("serial {serial} where {expected} was due (order or gap)");
                }
                expected += 1;
            }
            Some("pusher:recovery_failed") => bail!("recovery failed: {text}"),
            Some("pusher:subscription_error") | Some("pusher:error") => bail!("refused: {text}"),
            Some("pusher:ping") => ws::pong(&mut ws).await?,
            _ => {}
        }
    }
    let took = start.elapsed();
    ws::close(ws).await;
    Ok(took)
}

pub async fn run(common: Common, plan: Plan) -> Result<Report> {
    let n = plan.clients;
    system::raise_open_files(n as u64 * 2 + 256);
    let addr = common.addr()?;
    let common = Arc::new(common);
    let plan = Arc::new(plan);
    let mut api = ApiClient::new(addr, common.app());

    // 1. Subscribe everyone; a marker gives the serial they saw last.
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let (mut ws, _) = ws::connect(addr, &common.app_key).await?;
        ws::subscribe(&mut ws, &plan.channel).await?;
        clients.push(ws);
    }
    match api
        .trigger(event_body("marker", &[&plan.channel], "{}"))
        .await?
    {
        Outcome::Ok => {}
        other => bail!("the marker publish failed: {other:?}"),
    }
    let mut since = None;
    for ws in &mut clients {
        let serial = tokio::time::timeout(ws::SETUP_TIMEOUT, next_event_serial(ws, "marker"))
            .await
            .context("no marker within the set-up timeout")??;
        if since.is_some_and(|s| s != serial) {
            bail!("clients saw different marker serials");
        }
        since = Some(serial);
    }
    let since = since.ok_or_else(|| anyhow!("no client"))?;

    // 2. Everyone leaves; the events are published meanwhile.
    for ws in clients {
        ws::close(ws).await;
    }
    let publish_started = Instant::now();
    for seq in 0..plan.events {
        let data = frame::event_data(crate::now_micros(), seq, plan.payload);
        match api
            .trigger(event_body("e", &[&plan.channel], &data))
            .await?
        {
            Outcome::Ok => {}
            other => bail!("publish {seq} failed: {other:?}"),
        }
    }
    let publish_secs = publish_started.elapsed().as_secs_f64();
    let rss_before = common.server_pid.and_then(system::rss_bytes);

    // 3. Everyone reconnects at once with `since`.
    let peak = Arc::new(AtomicU64::new(rss_before.unwrap_or(0)));
    let sampling = CancellationToken::new();
    let sampler = common.server_pid.map(|pid| {
        let (peak, stop) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                if let Some(rss) = system::rss_bytes(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    });
    let setup = Arc::new(SetupTally::default());
    let times = Arc::new(Mutex::new(stats::new_histogram()));
    let permits = Arc::new(Semaphore::new(common.connect_concurrency.max(1)));
    let progress_stop = CancellationToken::new();
    let progress = {
        let setup = setup.clone();
        stats::spawn_progress("recovery", progress_stop.clone(), move || {
            format!(
                "recovered {}/{n} (failed {})",
                setup.ready(),
                setup.failed()
            )
        })
    };
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (common, plan, setup, times, permits) = (
                common.clone(),
                plan.clone(),
                setup.clone(),
                times.clone(),
                permits.clone(),
            );
            tokio::spawn(async move {
                let Ok(_permit) = permits.acquire().await else {
                    return;
                };
                let work = recover(&common, &plan, since, start);
                match tokio::time::timeout(plan.timeout, work).await {
                    Ok(Ok(took)) => {
                        let _ = times
                            .lock()
                            .expect("lock")
                            .record((took.as_micros() as u64).max(1));
                        setup.ok();
                    }
                    Ok(Err(e)) => setup.fail(&e),
                    Err(_) => setup.fail(&anyhow!("not recovered within {:?}", plan.timeout)),
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    let all_secs = start.elapsed().as_secs_f64();
    sampling.cancel();
    if let Some(sampler) = sampler {
        let _ = sampler.await;
    }
    progress_stop.cancel();
    let _ = progress.await;
    let rss_after = common.server_pid.and_then(system::rss_bytes);
    let rss_peak = common.server_pid.map(|_| peak.load(Ordering::Relaxed));

    let recovered = setup.ready();
    let latency = Latency::of(&times.lock().expect("lock"));
    let mut problems = Vec::new();
    if recovered < n as u64 {
        problems.push(format!(
            "{} of {n} clients did not recover all {} events in order: {:?}",
            n as u64 - recovered,
            plan.events,
            setup.errors()
        ));
    }
    let mib = |b: Option<u64>| b.map(|b| b as f64 / 1048576.0);
    let events_per_s = (recovered * plan.events) as f64 / all_secs.max(1e-6);
    eprintln!(
        "recovery: {} events replayed per second",
        human(events_per_s)
    );
    let metrics = vec![
        Metric::new("recovery_all_s", all_secs, "s", Better::Lower),
        Metric::new(
            "recovery_p50_ms",
            latency.as_ref().map(|l| l.p50_ms),
            "ms",
            Better::Lower,
        ),
        Metric::new(
            "recovery_p99_ms",
            latency.as_ref().map(|l| l.p99_ms),
            "ms",
            Better::Lower,
        ),
        Metric::new("replayed_per_s", events_per_s, "events/s", Better::Higher),
        Metric::new("rss_before_mib", mib(rss_before), "MiB", Better::Lower),
        Metric::new("rss_peak_mib", mib(rss_peak), "MiB", Better::Lower),
        Metric::new("rss_after_mib", mib(rss_after), "MiB", Better::Lower),
        Metric::new(
            "failed",
            (n as u64 - recovered) as f64,
            "clients",
            Better::Lower,
        ),
    ];
    Ok(Report {
        scenario: "recovery",
        target: common.target(),
        ok: problems.is_empty() && recovered > 0,
        problems,
        params: json!({
            "clients": n,
            "events": plan.events,
            "channel": plan.channel,
            "payload": plan.payload,
            "connect_concurrency": common.connect_concurrency,
        }),
        metrics,
        details: json!({
            "since": since,
            "publish_seconds": publish_secs,
            "recovered": recovered,
            "errors": setup.errors(),
            "recovery_latency": latency,
            "server_rss_before_bytes": rss_before,
            "server_rss_peak_bytes": rss_peak,
            "server_rss_after_bytes": rss_after,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_read_from_event_frames() {
        assert_eq!(
            serial_of(r#"{"event":"e","channel":"c","data":"x","serial":42}"#),
            Some(42)
        );
        assert_eq!(serial_of(r#"{"event":"e","channel":"c","data":"x"}"#), None);
    }
}
