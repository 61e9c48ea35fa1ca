//! Latency histograms, delivery counters and the progress line.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Highest latency a histogram records (60 s, in micros); more is clamped.
const MAX_MICROS: u64 = 60_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

#[derive(Debug)]
struct Shard {
    latency: Histogram<u64>,
    last_micros: u64,
}

/// Records deliveries from many connection tasks with little contention:
/// each connection writes to one of a few shards.
///
/// Deliveries can be split into groups (e.g. by server node): each group has
/// its own shards and count, and [`Recorder::merged`] covers them all.
#[derive(Debug)]
pub struct Recorder {
    shards: Vec<Mutex<Shard>>,
    delivered: AtomicU64,
    group_delivered: Vec<AtomicU64>,
}

/// Shards per group.
const SHARDS: usize = 16;

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self::with_groups(1)
    }

    /// A recorder whose deliveries fall in `groups` groups (at least one).
    pub fn with_groups(groups: usize) -> Self {
        let groups = groups.max(1);
        let shards = (0..SHARDS * groups)
            .map(|_| {
                Mutex::new(Shard {
                    latency: new_histogram(),
                    last_micros: 0,
                })
            })
            .collect();
        Recorder {
            shards,
            delivered: AtomicU64::new(0),
            group_delivered: (0..groups).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// One delivery seen by connection `conn`, sent at `sent_micros`, seen at `now_micros`.
    pub fn record(&self, conn: usize, sent_micros: u64, now_micros: u64) {
        self.record_in(0, conn, sent_micros, now_micros);
    }

    /// [`Recorder::record`] for a delivery of group `group`.
    pub fn record_in(&self, group: usize, conn: usize, sent_micros: u64, now_micros: u64) {
        let latency = now_micros.saturating_sub(sent_micros).clamp(1, MAX_MICROS);
        let group = group.min(self.group_delivered.len() - 1);
        {
            let mut shard = self.shards[group * SHARDS + conn % SHARDS]
                .lock()
                .expect("recorder lock");
            let _ = shard.latency.record(latency);
            if now_micros > shard.last_micros {
                shard.last_micros = now_micros;
            }
        }
        self.group_delivered[group].fetch_add(1, Ordering::Relaxed);
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }

    /// Deliveries of group `group` so far.
    pub fn group_delivered(&self, group: usize) -> u64 {
        self.group_delivered
            .get(group)
            .map_or(0, |d| d.load(Ordering::Relaxed))
    }

    /// The latencies of group `group` merged, and the time of its last
    /// delivery (unix micros).
    pub fn merged_group(&self, group: usize) -> (Histogram<u64>, u64) {
        let mut all = new_histogram();
        let mut last = 0;
        for shard in self.shards.iter().skip(group * SHARDS).take(SHARDS) {
            let shard = shard.lock().expect("recorder lock");
            all.add(&shard.latency).expect("same bounds");
            last = last.max(shard.last_micros);
        }
        (all, last)
    }

    /// Deliveries so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// All latencies merged, and the time of the last delivery (unix micros).
    pub fn merged(&self) -> (Histogram<u64>, u64) {
        let mut all = new_histogram();
        let mut last = 0;
        for shard in &self.shards {
            let shard = shard.lock().expect("recorder lock");
            all.add(&shard.latency).expect("same bounds");
            last = last.max(shard.last_micros);
        }
        (all, last)
    }
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    pub fn of(histogram: &Histogram<u64>) -> Option<Latency> {
        if histogram.is_empty() {
            return None;
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Some(Latency {
            count: histogram.len(),
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
            mean_ms: histogram.mean() / 1000.0,
        })
    }
}

/// Prints `status()` on one line of stderr every second until `stop`:
/// rewritten in place on a terminal, one line per second otherwise.
pub fn spawn_progress(
    name: &'static str,
    stop: CancellationToken,
    status: impl Fn() -> String + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let line = format!(
                "[{name} {:6.1}s] {}",
                started.elapsed().as_secs_f64(),
                status()
            );
            let mut err = std::io::stderr().lock();
            if tty {
                let _ = write!(err, "\r{line}\x1b[K");
            } else {
                let _ = writeln!(err, "{line}");
            }
            let _ = err.flush();
        }
        if tty {
            eprintln!();
        }
    })
}

/// A rate counter for the progress line: the increase per second since the
/// last call.
pub struct RateMeter {
    last: Mutex<(Instant, u64)>,
}

impl RateMeter {
    pub fn new() -> Arc<Self> {
        Arc::new(RateMeter {
            last: Mutex::new((Instant::now(), 0)),
        })
    }

    pub fn per_second(&self, now_total: u64) -> f64 {
        let mut last = self.last.lock().expect("rate lock");
        let elapsed = last.0.elapsed().as_secs_f64().max(1e-6);
        let rate = now_total.saturating_sub(last.1) as f64 / elapsed;
        *last = (Instant::now(), now_total);
        rate
    }
}

/// `1234567` → `1.23M`, for the progress line.
pub fn human(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}
