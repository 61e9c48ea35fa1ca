//! `connect`: open N idle connections as fast as the server takes them,
//! then read the server's memory per idle connection from /proc.

use super::{wait_setup, Common, EndingTally, SetupTally};
use crate::http_session::Endpoint;
use crate::report::{Better, Metric, Report};
use crate::stats::{self, human, Latency, RateMeter};
use crate::system;
use crate::transport::{Conn, Transport};
use crate::ws::{self, Ending};
use anyhow::{bail, Result};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Plan {
    /// How the connections are made.
    pub transport: Transport,
    pub connections: usize,
    /// Also subscribe each connection to one of this many public channels (0 = no).
    pub subscribe_channels: usize,
    /// Seconds to hold the connections open (idle) before measuring memory.
    pub settle: Duration,
}

async fn idle_connection(
    index: usize,
    common: Arc<Common>,
    plan: Arc<Plan>,
    setup: Arc<SetupTally>,
    permits: Arc<Semaphore>,
    handshakes: Arc<Mutex<hdrhistogram::Histogram<u64>>>,
    stop: CancellationToken,
) -> Option<(Ending, Vec<Option<u64>>)> {
    let addr = common.addr().ok()?;
    let permit = permits.acquire().await.ok()?;
    let began = Instant::now();
    let channel = (plan.subscribe_channels > 0)
        .then(|| format!("bench-idle-{}", index % plan.subscribe_channels));
    let at_connect: Vec<&str> = match &channel {
        Some(channel) if plan.transport.channels_at_connect() => vec![channel.as_str()],
        _ => Vec::new(),
    };
    let endpoint = Endpoint {
        addr,
        app_key: common.app_key.clone(),
        app_id: common.app_id.clone(),
    };
    let mut conn = match Conn::open(plan.transport, &endpoint, &at_connect).await {
        Ok((conn, _)) => conn,
        Err(e) => {
            setup.fail(&e);
            return None;
        }
    };
    let _ = handshakes
        .lock()
        .expect("lock")
        .record((began.elapsed().as_micros() as u64).max(1));
    if let Some(channel) = &channel {
        if let Err(e) = conn.subscribe(channel).await {
            setup.fail(&e);
            return None;
        }
    }
    drop(permit);
    setup.ok();
    let (ending, pusher_errors) = conn.listen_until_stopped(&stop, |_| false).await;
    Some((ending, pusher_errors))
}

pub async fn run(common: Common, plan: Plan) -> Result<Report> {
    let common = Arc::new(common);
    let plan = Arc::new(plan);
    let n = plan.connections;
    if plan.transport.channels_at_connect() && plan.subscribe_channels == 0 {
        bail!(
            "--transport {} names its channels when connecting: give --subscribe-channels 1 or more",
            plan.transport.name()
        );
    }
    system::raise_open_files(n as u64 + 256);
    common.addr()?;
    let rss_before = common.server_pid.and_then(system::rss_bytes);
    if common.server_pid.is_some() && rss_before.is_none() {
        eprintln!(
            "warning: cannot read /proc/{}/status; no RSS figures",
            common.server_pid.unwrap_or(0)
        );
    }

    let setup = Arc::new(SetupTally::default());
    let permits = Arc::new(Semaphore::new(common.connect_concurrency.max(1)));
    let handshakes = Arc::new(Mutex::new(stats::new_histogram()));
    let stop = CancellationToken::new();
    let progress_stop = CancellationToken::new();
    let progress = {
        let setup = setup.clone();
        let meter = RateMeter::new();
        let pid = common.server_pid;
        stats::spawn_progress("connect", progress_stop.clone(), move || {
            let ready = setup.ready();
            let rss = pid
                .and_then(system::rss_bytes)
                .map_or_else(String::new, |b| {
                    format!("  server RSS {:.1} MiB", b as f64 / 1048576.0)
                });
            format!(
                "connected {}/{} (failed {})  {}/s{rss}",
                ready,
                n,
                setup.failed(),
                human(meter.per_second(ready))
            )
        })
    };

    let started = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            tokio::spawn(idle_connection(
                i,
                common.clone(),
                plan.clone(),
                setup.clone(),
                permits.clone(),
                handshakes.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let limit = ws::SETUP_TIMEOUT * 2 + Duration::from_millis(n as u64 * 10);
    let setup_done = wait_setup(&setup, n as u64, limit).await;
    let connect_secs = started.elapsed().as_secs_f64();
    let ready = setup.ready();
    let connections_per_s = ready as f64 / connect_secs.max(1e-6);

    // Let the server settle (allocator, deferred work), then measure.
    tokio::time::sleep(plan.settle).await;
    let rss_after = common.server_pid.and_then(system::rss_bytes);
    progress_stop.cancel();
    let _ = progress.await;
    stop.cancel();
    let mut endings = EndingTally::default();
    for task in tasks {
        if let Ok(Some((ending, errors))) = task.await {
            endings.add(&ending);
            for code in errors {
                endings.add_pusher_error(code);
            }
        }
    }

    let rss_per_conn = match (rss_before, rss_after) {
        (Some(before), Some(after)) if ready > 0 => {
            Some(after.saturating_sub(before) as f64 / ready as f64)
        }
        _ => None,
    };
    let handshake = Latency::of(&handshakes.lock().expect("lock"));

    let mut problems = Vec::new();
    if setup.failed() > 0 || !setup_done {
        problems.push(format!(
            "{} of {n} connections failed: {:?}",
            n as u64 - ready,
            setup.errors()
        ));
    }
    problems.extend(endings.lost_problem("idle connections"));
    if ready == 0 {
        problems.push("no connection succeeded".into());
    }

    let hs = |f: fn(&Latency) -> f64| handshake.as_ref().map(f);
    let metrics = vec![
        Metric::new(
            "connections_per_s",
            connections_per_s,
            "conn/s",
            Better::Higher,
        ),
        Metric::new("connect_p50_ms", hs(|l| l.p50_ms), "ms", Better::Lower),
        Metric::new("connect_p99_ms", hs(|l| l.p99_ms), "ms", Better::Lower),
        Metric::new(
            "rss_per_conn_kib",
            rss_per_conn.map(|b| b / 1024.0),
            "KiB",
            Better::Lower,
        ),
        Metric::new(
            "server_rss_mib",
            rss_after.map(|b| b as f64 / 1048576.0),
            "MiB",
            Better::Lower,
        ),
        Metric::new("failed", (n as u64 - ready) as f64, "conns", Better::Lower),
    ];
    Ok(Report {
        scenario: "connect",
        target: common.target(),
        ok: problems.is_empty(),
        problems,
        params: json!({
            "connections": n,
            "transport": plan.transport,
            "subscribe_channels": plan.subscribe_channels,
            "settle_s": plan.settle.as_secs_f64(),
            "connect_concurrency": common.connect_concurrency,
        }),
        metrics,
        details: json!({
            "ready": ready,
            "failed": setup.failed(),
            "errors": setup.errors(),
            "connect_seconds": connect_secs,
            "connections_per_s": connections_per_s,
            "handshake_latency": handshake,
            "server_rss_before_bytes": rss_before,
            "server_rss_after_bytes": rss_after,
            "server_rss_per_connection_bytes": rss_per_conn,
            "connections": endings,
        }),
    })
}
