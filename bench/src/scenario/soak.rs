//! `soak`: many short connect / subscribe / abrupt-close cycles, then proof
//! that the server forgot every one of them.
//!
//! Each cycle connects, waits for `pusher:connection_established`, joins a
//! presence channel (signed auth + channel_data) and a public channel, waits
//! for both `subscription_succeeded`, then goes away: most cycles with a TCP
//! reset (`SO_LINGER` 0, no close frame), some by dropping the socket (FIN,
//! no close frame), some with a clean close handshake. User ids repeat across
//! concurrent cycles, so the same user is a member through several sockets.
//!
//! Afterwards the server must have no occupied channel, `rusher_connections`
//! 0, no presence member, and its RSS within `--rss-tolerance` of the
//! baseline taken after a warm-up (checks are polled until they pass or the
//! deadline ends: reaping an abruptly closed socket takes a moment).

use super::{Common, SetupTally};
use crate::api::ApiClient;
use crate::mutate::Rng;
use crate::report::{Better, Metric, Report};
use crate::server_state::{self, Snapshot};
use crate::stats::{self, human, RateMeter};
use crate::ws::{self, Ws};
use crate::{sign, system};
use anyhow::Result;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Plan {
    pub cycles: u64,
    /// Cycles in flight at once.
    pub concurrency: usize,
    /// Presence channels the cycles spread over (`presence-soak-{n}`).
    pub presence_channels: usize,
    /// Distinct user ids (fewer than `concurrency`: users on several sockets).
    pub users: usize,
    /// Cycles run before the baseline RSS is taken.
    pub warmup: u64,
    /// Longest wait for the checks to pass after the cycles.
    pub deadline: Duration,
    /// Largest allowed RSS growth over the baseline (0.10 = 10 %).
    pub rss_tolerance: f64,
    /// Picks each cycle's way of closing.
    pub seed: u64,
}

/// How a cycle ends its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// `SO_LINGER` 0 then close: the kernel sends RST, no close frame.
    Reset,
    /// The socket is closed (FIN) without a close frame.
    Drop,
    /// A close frame, then the socket.
    Clean,
}

fn ending(seed: u64, cycle: u64) -> Ending {
    match Rng::stream(seed, cycle).below(10) {
        0 => Ending::Drop,
        1 => Ending::Clean,
        _ => Ending::Reset,
    }
}

fn presence_channel(n: usize) -> String {
    format!("presence-soak-{n}")
}

struct Shared {
    common: Arc<Common>,
    plan: Plan,
    next: AtomicU64,
    setup: SetupTally,
    /// Cycles done, by ending: reset, drop, clean.
    ended: [AtomicU64; 3],
}

async fn subscribe_both(shared: &Shared, ws: &mut Ws, socket_id: &str, cycle: u64) -> Result<()> {
    let plan = &shared.plan;
    let c = (cycle % plan.presence_channels.max(1) as u64) as usize;
    let channel = presence_channel(c);
    let user = format!("soak-u{}", cycle % plan.users.max(1) as u64);
    let channel_data = format!(r#"{{"user_id":"{user}","user_info":{{"cycle":{cycle}}}}}"#);
    let common = &shared.common;
    let auth = sign::presence_auth(
        &common.app_key,
        &common.app_secret,
        socket_id,
        &channel,
        &channel_data,
    );
    ws::send_subscribe(ws, &channel, Some(&auth), Some(&channel_data)).await?;
    let public = format!("soak-pub-{c}");
    ws::send_subscribe(ws, &public, None, None).await?;
    ws::await_subscribed(ws, &channel, |_| {}).await?;
    ws::await_subscribed(ws, &public, |_| {}).await
}

async fn close(ws: Ws, how: Ending) {
    match how {
        Ending::Reset => {
            let _ = ws.get_ref().set_zero_linger();
            drop(ws);
        }
        Ending::Drop => drop(ws),
        Ending::Clean => {
            let mut ws = ws;
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                let _ = ws.close(None).await;
                // Read until the server's close answer (or the end).
                while let Ok(_text) = ws::next_text(&mut ws).await {}
            })
            .await;
        }
    }
}

async fn cycle(shared: &Shared, cycle: u64) {
    let common = &shared.common;
    let work = async {
        let (mut ws, socket_id) = ws::connect(common.addr()?, &common.app_key).await?;
        subscribe_both(shared, &mut ws, &socket_id, cycle).await?;
        Ok::<_, anyhow::Error>(ws)
    };
    match work.await {
        Ok(ws) => {
            let how = ending(shared.plan.seed, cycle);
            close(ws, how).await;
            shared.ended[how as usize].fetch_add(1, Ordering::Relaxed);
            shared.setup.ok();
        }
        Err(e) => shared.setup.fail(&e),
    }
}

/// Runs cycles `from..to` with `concurrency` workers.
async fn run_cycles(shared: &Arc<Shared>, to: u64) {
    let workers: Vec<_> = (0..shared.plan.concurrency.max(1))
        .map(|_| {
            let shared = shared.clone();
            tokio::spawn(async move {
                loop {
                    let n = shared.next.fetch_add(1, Ordering::Relaxed);
                    if n >= to {
                        break;
                    }
                    cycle(&shared, n).await;
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
    // Workers overshoot by one ticket each; the next phase starts at `to`.
    shared.next.store(to, Ordering::Relaxed);
}

fn mib(bytes: Option<u64>) -> Option<f64> {
    bytes.map(|b| b as f64 / 1048576.0)
}

/// One row of the checks table.
struct Check {
    name: &'static str,
    expected: String,
    got: String,
    ok: bool,
}

fn print_checks(checks: &[Check]) {
    eprintln!("| check | expected | got | ok |");
    eprintln!("|---|---|---|---|");
    for c in checks {
        let ok = if c.ok { "yes" } else { "**NO**" };
        eprintln!("| {} | {} | {} | {ok} |", c.name, c.expected, c.got);
    }
}

pub async fn run(common: Common, plan: Plan) -> Result<Report> {
    system::raise_open_files(plan.concurrency as u64 * 2 + 256);
    let addr = common.addr()?;
    let common = Arc::new(common);
    let presence: Vec<String> = (0..plan.presence_channels.max(1))
        .map(presence_channel)
        .collect();
    let mut api = ApiClient::new(addr, common.app());
    let pid = common.server_pid;
    if pid.is_some_and(|p| system::rss_bytes(p).is_none()) {
        eprintln!("warning: cannot read the server's RSS from /proc; no RSS check");
    }
    let before = server_state::snapshot(&mut api, &presence).await?;
    if !before.is_empty() {
        eprintln!("warning: the server is not empty before the run: {before:?}");
    }

    let shared = Arc::new(Shared {
        common: common.clone(),
        plan: plan.clone(),
        next: AtomicU64::new(0),
        setup: SetupTally::default(),
        ended: Default::default(),
    });

    // Warm-up: the allocator, the tables and the thread pools reach their
    // working size, so the baseline is not the empty process.
    let warmup = plan.warmup.min(plan.cycles);
    run_cycles(&shared, warmup).await;
    let (_, _) = server_state::wait_empty(&mut api, &presence, plan.deadline).await?;
    let rss_baseline = pid.and_then(system::rss_bytes);

    let progress_stop = tokio_util::sync::CancellationToken::new();
    let progress = {
        let shared = shared.clone();
        let meter = RateMeter::new();
        let total = plan.cycles;
        stats::spawn_progress("soak", progress_stop.clone(), move || {
            let done = shared.setup.ready() + shared.setup.failed();
            let rss = pid
                .and_then(system::rss_bytes)
                .map_or_else(String::new, |b| {
                    format!("  server RSS {:.1} MiB", b as f64 / 1048576.0)
                });
            format!(
                "cycles {done}/{total} (failed {})  {}/s{rss}",
                shared.setup.failed(),
                human(meter.per_second(done))
            )
        })
    };
    let started = Instant::now();
    run_cycles(&shared, plan.cycles).await;
    let cycle_secs = started.elapsed().as_secs_f64();
    progress_stop.cancel();
    let _ = progress.await;
    let measured = plan.cycles - warmup;
    let cycles_per_s = measured as f64 / cycle_secs.max(1e-6);

    // Reaping: poll until empty; then give RSS the rest of the deadline to
    // come back (freed memory returns to the allocator, not always at once).
    let (after, reap_time) = server_state::wait_empty(&mut api, &presence, plan.deadline).await?;
    let rss_limit = rss_baseline.map(|b| (b as f64 * (1.0 + plan.rss_tolerance)) as u64);
    let rss_deadline = Instant::now() + plan.deadline;
    let mut rss_after = pid.and_then(system::rss_bytes);
    while let (Some(now), Some(limit)) = (rss_after, rss_limit) {
        if now <= limit || Instant::now() >= rss_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        rss_after = pid.and_then(system::rss_bytes);
    }
    let alive = pid.is_none_or(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
    let rss_ratio = match (rss_baseline, rss_after) {
        (Some(b), Some(a)) if b > 0 => Some(a as f64 / b as f64),
        _ => None,
    };

    let checks = checks(&plan, &shared, &after, alive, rss_ratio);
    print_checks(&checks);
    let ended = |i: usize| shared.ended[i].load(Ordering::Relaxed);
    let mut problems: Vec<String> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: expected {}, got {}", c.name, c.expected, c.got))
        .collect();
    if shared.setup.failed() > 0 {
        problems.push(format!("failed cycles: {:?}", shared.setup.errors()));
    }

    let metrics = vec![
        Metric::new("cycles_per_s", cycles_per_s, "cycles/s", Better::Higher),
        Metric::new("rss_baseline_mib", mib(rss_baseline), "MiB", Better::Lower),
        Metric::new("rss_after_mib", mib(rss_after), "MiB", Better::Lower),
        Metric::new("rss_ratio", rss_ratio, "x", Better::Lower),
        Metric::new("reap_seconds", reap_time.as_secs_f64(), "s", Better::Lower),
        Metric::new(
            "failed",
            shared.setup.failed() as f64,
            "cycles",
            Better::Lower,
        ),
    ];
    Ok(Report {
        scenario: "soak",
        target: common.target(),
        ok: problems.is_empty(),
        problems,
        params: json!({
            "cycles": plan.cycles,
            "warmup": warmup,
            "concurrency": plan.concurrency,
            "presence_channels": plan.presence_channels,
            "users": plan.users,
            "deadline_s": plan.deadline.as_secs_f64(),
            "rss_tolerance": plan.rss_tolerance,
            "seed": plan.seed,
        }),
        metrics,
        details: json!({
            "cycles_done": shared.setup.ready(),
            "failed": shared.setup.failed(),
            "errors": shared.setup.errors(),
            "ended_reset": ended(Ending::Reset as usize),
            "ended_drop": ended(Ending::Drop as usize),
            "ended_clean": ended(Ending::Clean as usize),
            "cycle_seconds": cycle_secs,
            "cycles_per_s": cycles_per_s,
            "reap_seconds": reap_time.as_secs_f64(),
            "after": after,
            "server_alive": alive,
            "server_rss_baseline_bytes": rss_baseline,
            "server_rss_after_bytes": rss_after,
            "server_rss_ratio": rss_ratio,
        }),
    })
}

fn checks(
    plan: &Plan,
    shared: &Shared,
    after: &Snapshot,
    alive: bool,
    rss_ratio: Option<f64>,
) -> Vec<Check> {
    let mut checks = vec![
        Check {
            name: "server process alive",
            expected: "yes".into(),
            got: if alive { "yes" } else { "no" }.into(),
            ok: alive,
        },
        Check {
            name: "cycles completed",
            expected: plan.cycles.to_string(),
            got: shared.setup.ready().to_string(),
            ok: shared.setup.ready() == plan.cycles,
        },
        Check {
            name: "GET /channels",
            expected: "empty".into(),
            got: format!("{} channels", after.channels.len()),
            ok: after.channels.is_empty(),
        },
        Check {
            name: "rusher_connections",
            expected: "0".into(),
            got: after
                .connections
                .map_or_else(|| "n/a".into(), |c| c.to_string()),
            ok: after.connections == Some(0.0),
        },
        Check {
            name: "presence members",
            expected: "0".into(),
            got: format!(
                "{} in {} channels",
                after.member_total(),
                after.members.len()
            ),
            ok: after.member_total() == 0,
        },
    ];
    if let Some(ratio) = rss_ratio {
        checks.push(Check {
            name: "RSS after / baseline",
            expected: format!("≤ {:.2}", 1.0 + plan.rss_tolerance),
            got: format!("{ratio:.3}"),
            ok: ratio <= 1.0 + plan.rss_tolerance,
        });
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endings_are_mostly_resets_and_replayable() {
        let endings: Vec<Ending> = (0..10_000).map(|c| ending(7, c)).collect();
        let resets = endings.iter().filter(|e| **e == Ending::Reset).count();
        let drops = endings.iter().filter(|e| **e == Ending::Drop).count();
        assert!((7_500..8_500).contains(&resets), "{resets}");
        assert!((500..1_500).contains(&drops), "{drops}");
        assert_eq!(endings[123], ending(7, 123));
    }
}
