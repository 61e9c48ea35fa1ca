//! The scenarios. Each is bounded in time and in count, shows a progress
//! line, and ends with a [`Report`](crate::report::Report).

pub mod connect;
pub mod delivery;
pub mod frame_fuzz;
pub mod presence;
pub mod recovery;
pub mod soak;

use crate::api::AppCredentials;
use crate::report::Target;
use crate::ws::Ending;
use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Flags every scenario shares: where the server is and which app to use.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Server host (the benchmark is meant for 127.0.0.1).
    #[arg(long, default_value = "127.0.0.1", env = "BENCH_HOST")]
    pub host: String,
    /// Server port (WebSocket and HTTP API on the same port).
    #[arg(long, default_value_t = 6001, env = "BENCH_PORT")]
    pub port: u16,
    #[arg(long, default_value = "app-id", env = "BENCH_APP_ID")]
    pub app_id: String,
    #[arg(long, default_value = "app-key", env = "BENCH_APP_KEY")]
    pub app_key: String,
    #[arg(long, default_value = "app-secret", env = "BENCH_APP_SECRET")]
    pub app_secret: String,
    /// Pid of the server, to read its memory (RSS) from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// `NAME=PID` (repeatable): other processes (cluster nodes, Redis) whose
    /// CPU time from the first measured publish to the end of the drain the
    /// delivery scenarios report, per name, in
    /// `details.cpu_seconds_publish_and_drain.processes`.
    #[arg(long = "cpu-pid", value_parser = parse_cpu_pid)]
    pub cpu_pids: Vec<(String, u32)>,
    /// Also write the JSON result to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Connection handshakes in flight at once while setting up.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// Seconds to wait for outstanding deliveries after the last publish.
    #[arg(long, default_value_t = 10.0)]
    pub drain_secs: f64,
}

impl Common {
    pub fn addr(&self) -> Result<SocketAddr> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {}", self.host))?
            .next()
            .with_context(|| format!("no address for {}", self.host))
    }

    pub fn app(&self) -> AppCredentials {
        AppCredentials {
            id: self.app_id.clone(),
            key: self.app_key.clone(),
            secret: self.app_secret.clone(),
        }
    }

    pub fn target(&self) -> Target {
        Target {
            host: self.host.clone(),
            port: self.port,
            server_pid: self.server_pid,
        }
    }

    /// CPU seconds used so far by each `--cpu-pid` process, by name (`None`
    /// when its /proc entry cannot be read).
    pub fn cpu_of_processes(&self) -> Vec<(String, Option<f64>)> {
        self.cpu_pids
            .iter()
            .map(|(name, pid)| (name.clone(), crate::system::cpu_seconds(*pid)))
            .collect()
    }

    pub fn drain(&self) -> Duration {
        Duration::from_secs_f64(self.drain_secs.max(0.0))
    }
}

/// Parses a `--cpu-pid` value, `NAME=PID`.
fn parse_cpu_pid(value: &str) -> Result<(String, u32), String> {
    let (name, pid) = value
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=PID, got {value:?}"))?;
    if name.is_empty() {
        return Err(format!("empty name in {value:?}"));
    }
    let pid = pid
        .parse()
        .map_err(|_| format!("not a pid: {pid:?} in {value:?}"))?;
    Ok((name.to_owned(), pid))
}

/// Connection set-up outcomes, shared by the connection tasks.
#[derive(Debug, Default)]
pub struct SetupTally {
    pub ready: AtomicU64,
    pub failed: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl SetupTally {
    pub fn ok(&self) {
        self.ready.fetch_add(1, Ordering::Relaxed);
    }

    pub fn fail(&self, error: &anyhow::Error) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        // Group errors by their first line; keep the table small.
        let key: String = format!("{error:#}").chars().take(160).collect();
        let mut errors = self.errors.lock().expect("tally lock");
        if errors.len() < 20 || errors.contains_key(&key) {
            *errors.entry(key).or_default() += 1;
        }
    }

    pub fn ready(&self) -> u64 {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().expect("tally lock").clone()
    }
}

/// How connections ended, counted by kind.
#[derive(Debug, Default, Serialize)]
pub struct EndingTally {
    /// Closed by the generator at the end, as planned.
    pub by_us: u64,
    /// Closed by the server during the run, by close code.
    pub closed_by_server: BTreeMap<u16, u64>,
    /// Dropped without a close code during the run.
    pub dropped: u64,
    pub dropped_examples: Vec<String>,
    /// `pusher:error` frames received during the run, by code.
    pub pusher_errors: BTreeMap<String, u64>,
}

impl EndingTally {
    pub fn add(&mut self, ending: &Ending) {
        match ending {
            Ending::ByUs => self.by_us += 1,
            Ending::Closed(code) => *self.closed_by_server.entry(*code).or_default() += 1,
            Ending::Dropped(why) => {
                self.dropped += 1;
                if self.dropped_examples.len() < 5 {
                    self.dropped_examples.push(why.clone());
                }
            }
        }
    }

    pub fn add_pusher_error(&mut self, code: Option<u64>) {
        let key = code.map_or_else(|| "null".to_owned(), |c| c.to_string());
        *self.pusher_errors.entry(key).or_default() += 1;
    }

    /// Connections the server closed or dropped during the run.
    pub fn lost_connections(&self) -> u64 {
        self.closed_by_server.values().sum::<u64>() + self.dropped
    }

    /// The problem line for connections (called `what`) the server closed
    /// or dropped during the run, if any.
    pub fn lost_problem(&self, what: &str) -> Option<String> {
        let lost = self.lost_connections();
        (lost > 0).then(|| {
            format!(
                "{lost} {what} were closed by the server during the run: {:?} dropped {} {:?}",
                self.closed_by_server, self.dropped, self.dropped_examples
            )
        })
    }

    /// The problem line for `pusher:error` frames received, if any.
    pub fn pusher_error_problem(&self) -> Option<String> {
        (!self.pusher_errors.is_empty())
            .then(|| format!("pusher:error frames received: {:?}", self.pusher_errors))
    }
}

/// Waits until every connection task finished set-up (ready or failed),
/// printing progress, or until `timeout`.
pub async fn wait_setup(tally: &SetupTally, total: u64, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tally.ready() + tally.failed() < total {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_pids_are_name_equals_pid() {
        assert_eq!(parse_cpu_pid("node0=42"), Ok(("node0".to_owned(), 42)));
        assert!(parse_cpu_pid("42").is_err());
        assert!(parse_cpu_pid("=42").is_err());
        assert!(parse_cpu_pid("redis=x").is_err());
    }

    #[test]
    fn endings_name_their_problems_only_when_there_are_some() {
        let mut endings = EndingTally::default();
        endings.add(&Ending::ByUs);
        assert_eq!(endings.lost_problem("observers"), None);
        assert_eq!(endings.pusher_error_problem(), None);
        endings.add(&Ending::Closed(4100));
        endings.add(&Ending::Dropped("reset".into()));
        endings.add_pusher_error(Some(4100));
        let lost = endings.lost_problem("observers").unwrap_or_default();
        assert!(lost.starts_with("2 observers were closed"), "{lost}");
        assert!(lost.contains("4100") && lost.contains("reset"), "{lost}");
        assert_eq!(
            endings.pusher_error_problem().as_deref(),
            Some(r#"pusher:error frames received: {"4100": 1}"#)
        );
    }
}
